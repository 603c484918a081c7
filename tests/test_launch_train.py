"""launch/train.py as a user runs it.

Two tests run the real command line in a subprocess (the main job, and
resume after SIGKILL); the rest call the same parser and ``main`` in this
process (``cli``), which needs no interpreter and JAX start-up per case.
"""

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import REPO_ROOT
from emobed_datasets import demo
from emobed_jax import config as C

TRAIN = str(REPO_ROOT / "launch" / "train.py")
SMALL = dict(num_train=4, num_dev=2, num_test=1, num_frames=300)
FAST = ["--window=100", "--hop=50", "--batch_size=8", "--val_recordings=1", "--hidden=16",
        "--proj_dim=16", "--log_every=2"]

sys.path.insert(0, str(REPO_ROOT / "launch"))
_spec = importlib.util.spec_from_file_location("launch_train", TRAIN)
train_cli = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(train_cli)
import _cli  # noqa: E402  (launch/ is on sys.path now)


def run(args, cwd=REPO_ROOT, timeout=300, env=None):
  e = dict(os.environ)
  e.pop("XLA_FLAGS", None)  # the script sets up its own host devices
  e.update(env or {})
  return subprocess.run([sys.executable, TRAIN, *args], cwd=cwd, capture_output=True,
                        text=True, timeout=timeout, env=e)


class Result:
  def __init__(self, returncode, stdout, stderr):
    self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def cli(capsys, monkeypatch):
  """``cli(*args)`` runs ``launch/train.py args`` in this process (8 devices)."""
  monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))  # main() appends to it

  def call(*args):
    train_cli.FLAGS.unparse_flags()
    try:
      rest = _cli.parse_argv(["train.py", *args, "--nomalloc_tuning"], train_cli.USAGE,
                             C.RunConfig, train_cli.LAUNCHER, train_cli.FLAGS)
      train_cli.main(rest)
      code = 0
    except SystemExit as e:
      code = e.code
    out, err = capsys.readouterr()
    return Result(code, out, err)
  return call


def parsed_config(*args):
  train_cli.FLAGS.unparse_flags()
  _cli.parse_argv(["train.py", *args], train_cli.USAGE, C.RunConfig, train_cli.LAUNCHER,
                  train_cli.FLAGS)
  return _cli.config_from_flags(C.RunConfig, train_cli.FLAGS).validate()


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
  """A small demo corpus, prepared where `--dataset=demo --data_dir=...` looks."""
  d = tmp_path_factory.mktemp("data")
  demo.prepare_demo(d, 0, **SMALL)
  return d


def test_main_job_writes_the_contract_files_and_does_not_redo(demo_dir, tmp_path):
  """The real command line, in a subprocess of its own."""
  wd = tmp_path / "run"
  args = ["--flagfile=demo.flags", f"--data_dir={demo_dir}", f"--workdir={wd}", "--epochs=2",
          *FAST]
  p = run(args)
  assert p.returncode == 0, p.stderr[-3000:]
  assert "step 2/" in p.stdout and "steps/s" in p.stdout and "ETA" in p.stdout
  assert "aux " in p.stdout and "triplet " in p.stdout
  for name in ("config.json", "stats.json", "metrics.jsonl", "results.json"):
    assert (wd / name).is_file(), name
  assert list((wd / "tensorboard").glob("events.out.tfevents.*"))
  r = json.loads((wd / "results.json").read_text())
  assert r["dataset"] == "demo" and r["setting"] == "emobed" and r["modality"] == "audio"
  assert r["aux_modality"] == "video" and r["eval_split"] == "dev"
  assert set(r["metrics"]) == {"ccc_arousal", "ccc_valence", "ccc_mean"}
  assert set(r["per_recording"]) == {"dev_1", "dev_2"}
  assert r["ccc_granularity"] == "concatenated" and r["devices"] >= 1 and r["processes"] == 1
  assert -1 <= r["metrics"]["ccc_mean"] <= 1 and r["train_seconds"] > 0
  assert (wd / "checkpoints" / str(r["best_step"])).is_dir()
  cfg = json.loads((wd / "config.json").read_text())
  # Two dimensions: both RECOLA feature variants, concatenated (88*2, 168*2).
  assert cfg["core"]["task"]["target_dim"] == 176 and cfg["core"]["task"]["aux_dim"] == 336
  # The target branch alone, loaded from the workdir, reproduces the metrics.
  check_predictor_reproduces_results(wd, demo_dir, r)
  # How the recurrence ran is not part of the run: a run that says it was
  # trained with Pallas kernels (on a GPU) predicts here with scan, and the
  # same command still finds the run finished.
  cfg["core"]["model"].update(rnn_impl="pallas", unroll=8)
  (wd / "config.json").write_text(json.dumps(cfg))
  from emobed_jax import predict
  assert predict.load_predictor(wd).config.core.model.rnn_impl == "auto"
  check_predictor_reproduces_results(wd, demo_dir, r)
  # A second run of the same command does nothing but report.
  before = (wd / "results.json").stat().st_mtime_ns
  p2 = run(args)
  assert p2.returncode == 0 and "already finished" in p2.stdout
  assert (wd / "results.json").stat().st_mtime_ns == before


def check_predictor_reproduces_results(wd, data_dir, results):
  from emobed_jax import input_pipeline, metrics, predict
  predictor = predict.load_predictor(wd)
  assert set(predictor.params) == {"target_encoder", "head"}
  cfg = predictor.config.data
  tfds_dir = demo.demo_paths(data_dir, cfg.demo_seed)[1]
  recs = input_pipeline.load_recordings(tfds_dir, "dev", cfg, with_aux=False, with_labels=True)
  for rec in recs:
    pred = predictor(rec.target)
    assert pred.shape == rec.labels.shape
    got = metrics.ccc(pred, rec.labels)
    want = [results["per_recording"][rec.name][f"ccc_{d}"] for d in cfg.dimensions]
    np.testing.assert_allclose(got, want, atol=1e-5)
  with pytest.raises(ValueError, match="features"):
    predictor(np.zeros((10, 3), np.float32))


def _start(args):
  e = dict(os.environ)
  e.pop("XLA_FLAGS", None)
  return subprocess.Popen([sys.executable, TRAIN, *args], cwd=REPO_ROOT, env=e,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_checkpoint_after(ckpts, step, timeout=240):
  deadline = time.time() + timeout
  while time.time() < deadline:
    steps = [int(p.name) for p in ckpts.glob("*") if p.name.isdigit()] if ckpts.is_dir() else []
    if steps and max(steps) > step:
      return max(steps)
    time.sleep(0.05)
  raise AssertionError(f"no checkpoint after step {step} in {ckpts}")


def test_kills_and_sigterm_lose_nothing(demo_dir, tmp_path, cli):
  """SIGKILL at random (seeded) moments and a SIGTERM, each followed
  by the same command: the final results equal an uninterrupted run's, bit
  for bit (same device count), and metrics.jsonl has no step twice.
  SIGTERM saves a checkpoint and exits with 75 and one line, within 30 s."""
  common = ["--flagfile=demo.flags", f"--data_dir={demo_dir}", "--epochs=20",
            "--setting=mono", "--cpu_devices=8", *FAST]
  ref = cli(*common, f"--workdir={tmp_path / 'ref'}")
  assert ref.returncode == 0, ref.stderr
  want = json.loads((tmp_path / "ref" / "results.json").read_text())

  wd = tmp_path / "run"
  args = [*common, f"--workdir={wd}"]
  rng = np.random.default_rng(0)
  seen = 0
  # Three kills and a SIGTERM with EMOBED_SLOW_TESTS=1 (about 2.5 min on 2
  # cores); one of each by default.
  signals = (("KILL", "TERM", "KILL", "KILL") if os.environ.get("EMOBED_SLOW_TESTS")
             else ("KILL", "TERM"))
  for what in signals:
    proc = _start(args)
    seen = _wait_for_checkpoint_after(wd / "checkpoints", seen)
    time.sleep(rng.uniform(0.0, 0.6))  # mid-step, mid-save or mid-validation
    t0 = time.perf_counter()
    proc.send_signal(getattr(signal, "SIG" + what))
    out, _ = proc.communicate(timeout=60)
    took = time.perf_counter() - t0
    if what == "TERM":
      assert proc.returncode == 75, out[-2000:]
      assert took < 30, took
      last = out.strip().splitlines()[-1]
      assert last.startswith("SIGTERM: stopped at step ") and "resumes" in last, out[-2000:]
      stopped = int(last.split("stopped at step ")[1].split(";")[0])
      assert stopped in [int(p.name) for p in (wd / "checkpoints").iterdir()
                         if p.name.isdigit()]
    assert not (wd / "results.json").exists()
    seen = max(int(p.name) for p in (wd / "checkpoints").iterdir() if p.name.isdigit())
  p = run(args)
  assert p.returncode == 0, p.stderr[-3000:]
  assert "resuming from step" in p.stdout
  got = json.loads((wd / "results.json").read_text())
  for k in ("metrics", "metrics_per_recording_mean", "per_recording", "best_step"):
    assert got[k] == want[k], k
  steps = [(r["split"], r["step"]) for r in read_jsonl(wd / "metrics.jsonl")]
  assert len(steps) == len(set(steps))
  assert steps == [(r["split"], r["step"]) for r in read_jsonl(tmp_path / "ref" / "metrics.jsonl")]
  assert not list((wd / "checkpoints").glob("*.orbax-checkpoint-tmp*"))


# ---------------------------------------------------------------------------
# In-process: flags, logging, run identity.


def test_command_line_flags_win_over_the_flagfile_in_any_order():
  for args in (["--modality=video", "--flagfile=demo.flags"],
               ["--flagfile=demo.flags", "--modality=video"],
               ["--modality=video", "--flagfile", "demo.flags"],
               ["-flagfile=demo.flags", "--modality=video"]):
    cfg = parsed_config(*args)
    assert (cfg.data.modality, cfg.data.aux_modality, cfg.data.dataset) == (
        "video", "audio", "demo"), args
    assert cfg.core.task.setting == "emobed", args
  assert parsed_config("--flagfile=demo.flags").data.modality == "audio"
  assert parsed_config("--setting=mono", "--flagfile=demo.flags").core.task.setting == "mono"


def test_every_config_field_is_a_flag_with_its_default():
  cfg = parsed_config()
  assert cfg == C.RunConfig().validate()
  names = {o.name for o in C.options() if o.is_flag}
  # The flags users have always had keep their names.
  assert {"modality", "aux_modality", "margin", "rnn_impl", "dimensions", "dataset",
          "batch_size", "lambda_aux", "lambda_tri", "mining", "hidden"} <= names
  for o in C.options():
    if o.is_flag:
      assert train_cli.FLAGS[o.name].default == (
          list(o.field.default) if isinstance(o.field.default, tuple) else o.field.default)
  cfg = parsed_config("--hidden=16", "--dimensions=valence", "--nosymmetric",
                      "--learning_rate=0.01", "--eval_every_epochs=2")
  assert (cfg.core.model.hidden, cfg.data.dimensions, cfg.core.loss.symmetric,
          cfg.core.optim.learning_rate, cfg.eval_every_epochs) == (16, ("valence",), False,
                                                                    0.01, 2)


def test_help_is_grouped_and_exits_zero(cli):
  p = cli("--help")
  assert p.returncode == 0, p.stderr
  titles = [l for l in p.stdout.splitlines() if l and not l.startswith(" ") and l.endswith(":")]
  assert titles == ["Data:", "Setting and losses:", "Model:", "Optimiser:", "Training loop:",
                    "Launcher:"]
  flag_lines = [l.split()[0].split("=")[0] for l in p.stdout.splitlines()
                if l.startswith("  --")]
  assert len(flag_lines) == len(set(flag_lines))
  assert set(flag_lines) >= {"--modality", "--margin", "--rnn_impl", "--workdir"}
  assert "Traceback" not in p.stdout


def test_a_bad_enum_lists_each_choice_once(cli):
  p = cli("--flagfile=demo.flags", "--rnn_impl=cudnn")
  assert p.returncode == 2
  assert len(p.stderr.strip().splitlines()) == 1 and p.stderr.startswith("error:")
  for choice in C.RNN_IMPLS:
    assert p.stderr.count(choice) == 1, (choice, p.stderr)


@pytest.fixture(scope="module")
def mono_run(demo_dir, tmp_path_factory):
  """A short mono run (in process) and its workdir."""
  wd = tmp_path_factory.mktemp("mono") / "run"
  args = ["--flagfile=demo.flags", f"--data_dir={demo_dir}", f"--workdir={wd}",
          "--setting=mono", "--epochs=7", *FAST[:-1], "--log_every=1", "--nomalloc_tuning"]
  train_cli.FLAGS.unparse_flags()
  rest = _cli.parse_argv(["train.py", *args], train_cli.USAGE, C.RunConfig,
                         train_cli.LAUNCHER, train_cli.FLAGS)
  saved = os.environ.get("XLA_FLAGS", "")
  try:
    train_cli.main(rest)
  finally:
    os.environ["XLA_FLAGS"] = saved
  return wd, args


def read_jsonl(path):
  return [json.loads(l) for l in path.read_text().splitlines()]


def test_mono_logs_only_its_loss_terms_and_final_metrics_at_the_best_step(mono_run):
  wd, _ = mono_run
  records = read_jsonl(wd / "metrics.jsonl")
  train = [r for r in records if r["split"] == "train"]
  assert train and all({"loss", "task_target", "grad_norm"} <= set(r) for r in train)
  assert not any("task_aux" in r or "triplet" in r for r in train)
  results = json.loads((wd / "results.json").read_text())
  final = [r for r in records if r["split"] == "dev"]
  assert len(final) == 1 and final[0]["step"] == results["best_step"]
  assert final[0]["checkpoint"] == "best"
  ea = EventAccumulator(str(wd / "tensorboard"))
  ea.Reload()
  tags = set(ea.Tags()["scalars"])
  assert {"train/loss", "train/task_target", "train/grad_norm"} <= tags
  assert not any("task_aux" in t or "triplet" in t for t in tags)
  dev = ea.Scalars("dev/ccc_mean")
  assert [e.step for e in dev] == [results["best_step"]]
  assert dev[0].value == np.float32(results["metrics"]["ccc_mean"])


def test_train_metrics_are_means_over_the_log_interval(mono_run, cli, tmp_path):
  """The same run logged every 3 steps: each record is the mean of the
  per-step records of the log_every=1 run since the previous record (3
  steps, and 1 for the last of 7); runs are deterministic."""
  wd1, args = mono_run
  every1 = {r["step"]: r for r in read_jsonl(wd1 / "metrics.jsonl") if r["split"] == "train"}
  wd3 = tmp_path / "run3"
  p = cli(*[a for a in args if not a.startswith(("--workdir", "--log_every"))],
          f"--workdir={wd3}", "--log_every=3")
  assert p.returncode == 0, p.stderr
  every3 = [r for r in read_jsonl(wd3 / "metrics.jsonl") if r["split"] == "train"]
  assert [r["step"] for r in every3] == [3, 6, 7]
  previous = 0
  for r in every3:
    steps, previous = range(previous + 1, r["step"] + 1), r["step"]
    for k in ("loss", "task_target", "grad_norm"):
      want = np.mean([every1[s][k] for s in steps])
      np.testing.assert_allclose(r[k], want, rtol=1e-6, err_msg=(k, r["step"]))
  assert json.loads((wd3 / "results.json").read_text())["metrics"] == json.loads(
      (wd1 / "results.json").read_text())["metrics"]


def test_run_identity_ignores_what_does_not_change_results(mono_run, cli):
  wd, args = mono_run
  p = cli(*[a for a in args if not a.startswith("--log_every")], "--log_every=5",
          "--rnn_impl=scan")
  assert p.returncode == 0 and "already finished" in p.stdout, p.stderr
  p = cli(*args, "--margin=0.3")
  assert p.returncode == 1 and "another config" in p.stderr and "margin" in p.stderr
  assert len(p.stderr.strip().splitlines()) == 1


def test_emobed_event_files_hold_every_loss_term_and_validation_ccc(demo_dir, cli, tmp_path):
  wd = tmp_path / "run"
  p = cli("--flagfile=demo.flags", f"--data_dir={demo_dir}", f"--workdir={wd}", "--epochs=2",
          *FAST)
  assert p.returncode == 0, p.stderr
  records = read_jsonl(wd / "metrics.jsonl")
  ea = EventAccumulator(str(wd / "tensorboard"))
  ea.Reload()
  for split, names in (("train", ("loss", "task_target", "task_aux", "triplet", "grad_norm")),
                       ("val", ("ccc_arousal", "ccc_valence", "ccc_mean"))):
    recs = [r for r in records if r["split"] == split]
    assert recs
    for name in names:
      events = ea.Scalars(f"{split}/{name}")
      assert [e.step for e in events] == [r["step"] for r in recs], (split, name)
      assert [e.value for e in events] == [np.float32(r[name]) for r in recs], (split, name)


# ---------------------------------------------------------------------------
# Bad input: a non-zero exit, the file or flag named, no traceback.


@pytest.fixture(scope="module")
def package(tmp_path_factory):
  root = tmp_path_factory.mktemp("pkg") / "AVEC2016"
  demo.write_demo_corpus(root, seed=3, num_train=3, num_dev=2, num_test=1, num_frames=60)
  return root


def _copy(package, tmp_path):
  dst = tmp_path / "AVEC2016"
  shutil.copytree(package, dst)
  return dst


def _edit_data_line(path, fn):
  lines = path.read_text().splitlines(keepends=True)
  i = next(i for i, l in enumerate(lines) if l.strip().lower() == "@data") + 3
  lines[i] = fn(lines[i])
  path.write_text("".join(lines))


BAD_CORPORA = {
    "missing_folder": (lambda p: __import__("shutil").rmtree(p / "ratings_gold_standard"),
                       "ratings_gold_standard"),
    "missing_gold_for_one_recording": (
        lambda p: (p / "ratings_gold_standard/valence/train_2.arff").unlink(), "train_2"),
    "truncated_arff": (lambda p: (p / "features_audio/arousal/dev_1.arff").write_text(
        "".join((p / "features_audio/arousal/dev_1.arff").read_text().splitlines(True)[:-5])),
        "dev_1"),
    "wrong_attribute_count": (lambda p: _drop_last_attribute(
        p / "features_video_appearance/valence/train_1.arff"), "train_1.arff"),
    "non_numeric_value": (lambda p: _edit_data_line(
        p / "features_audio/valence/train_3.arff",
        lambda l: l.rsplit(",", 1)[0] + ",abc\n"), "train_3.arff"),
    "nan_value": (lambda p: _edit_data_line(
        p / "features_audio/arousal/train_1.arff",
        lambda l: l.rsplit(",", 1)[0] + ",nan\n"), "train_1.arff"),
    "empty_file": (lambda p: (p / "ratings_gold_standard/arousal/dev_2.arff").write_text(""),
                   "dev_2.arff"),
    "mismatched_frames_across_modalities": (lambda p: _drop_rows(
        p / "features_video_appearance/arousal/train_2.arff", 3), "train_2"),
}


def _drop_rows(path, n):
  lines = path.read_text().splitlines(True)
  path.write_text("".join(lines[:-n]))


def _drop_last_attribute(path):
  lines = path.read_text().splitlines(True)
  i = max(i for i, l in enumerate(lines) if l.lower().startswith("@attribute"))
  del lines[i]
  path.write_text("".join(lines))


def assert_user_error(p, *needles):
  assert p.returncode != 0
  assert "Traceback" not in p.stderr + p.stdout, p.stderr[-2000:]
  for n in needles:
    assert n in p.stderr, (n, p.stderr[-2000:])


@pytest.mark.parametrize("case", sorted(BAD_CORPORA))
def test_bad_corpus_is_named(case, package, tmp_path, cli):
  mutate, needle = BAD_CORPORA[case]
  pkg = _copy(package, tmp_path)
  mutate(pkg)
  p = cli("--dataset=recola", f"--manual_dir={pkg}", f"--data_dir={tmp_path / 'data'}",
          f"--workdir={tmp_path / 'wd'}", *FAST)
  assert_user_error(p, "error:", needle)
  assert len([l for l in p.stderr.splitlines() if l.startswith("error:")]) == 1
  assert not (tmp_path / "data" / "recola" / "1.0.0").exists()  # nothing half-prepared


def test_missing_recola_says_where_it_looked_and_how_to_get_it(tmp_path, cli, monkeypatch):
  monkeypatch.setenv("RECOLA_DIR", "")
  p = cli("--modality=audio", "--flagfile=recola.flags", f"--data_dir={tmp_path}")
  assert_user_error(p, str(tmp_path), "licence-restricted", "demo.flags")
  assert len(p.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("flags_,needle", [
    (["--modality=smell"], "--modality"),
    (["--dimensions=dominance"], "--dimensions"),
    (["--modality=video_geometric"], "--modality=video_geometric"),
    (["--setting=fusion"], "--setting"),
    (["--margin=0"], "--margin"),
    (["--batch_size=7"], "--batch_size"),
    (["--aux_modality=audio"], "--aux_modality"),
    (["--rnn_impl=pallas", "--hidden=48"], "--hidden"),
    (["--rnn_impl=wavefront", "--dropout=0.1"], "--dropout"),
    (["--rnn_impl=cudnn"], "--rnn_impl"),
])
def test_bad_flags_are_named(flags_, needle, demo_dir, tmp_path, cli):
  p = cli("--flagfile=demo.flags", f"--data_dir={demo_dir}", f"--workdir={tmp_path / 'wd'}",
          *FAST, *flags_)
  assert_user_error(p, needle)


def test_unwritable_workdir_is_named(demo_dir, tmp_path, cli):
  blocker = tmp_path / "a_file"
  blocker.write_text("x")
  p = cli("--flagfile=demo.flags", f"--data_dir={demo_dir}", f"--workdir={blocker / 'run'}",
          *FAST)
  assert_user_error(p, "--workdir", str(blocker))
