"""launch/train.py as a user runs it.

Two tests run the real command line in a subprocess (the main job, and
resume after SIGKILL); the rest call the same parser and ``main`` in this
process (``cli``), which needs no interpreter and JAX start-up per case.
"""

import json
import os
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
from launch_support import (FAST, TRAIN, main_in_process, parsed_config, read_jsonl,
                            run, train_cli)


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


def test_kills_and_sigterm_lose_nothing(demo_dir, tmp_path):
  """SIGKILL at random (seeded) moments and a SIGTERM, each followed
  by the same command: the final results equal an uninterrupted run's, bit
  for bit (same device count), and metrics.jsonl has no step twice.
  SIGTERM saves a checkpoint and exits with 75 and one line, within 30 s."""
  common = ["--flagfile=demo.flags", f"--data_dir={demo_dir}", "--epochs=20",
            "--setting=mono", "--cpu_devices=8", *FAST]
  # The reference is a subprocess too: bit-for-bit equality holds between runs
  # of the same program in the same environment, and a pytest worker is not
  # that (CI once saw its in-process reference differ in the 8th digit).
  ref = run([*common, f"--workdir={tmp_path / 'ref'}"])
  assert ref.returncode == 0, ref.stderr[-3000:]
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
  # TensorBoard too (events after a resumed step are purged): the same steps
  # as the uninterrupted run, and the same validation values.  (A train
  # record right after a resume averages only the steps since the resume.)
  for tag in ("train/loss", "val/ccc_mean"):
    curves = []
    for d in (wd, tmp_path / "ref"):
      ea = EventAccumulator(str(d / "tensorboard"))
      ea.Reload()
      curves.append([(e.step, e.value) for e in ea.Scalars(tag)])
    assert [s for s, _ in curves[0]] == [s for s, _ in curves[1]], tag
    if tag.startswith("val/"):
      assert curves[0] == curves[1], tag


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
  assert main_in_process(*args) == 0
  return wd, args


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
