"""launch/train.py as a user runs it: the main job, resume after SIGKILL, bad input."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO_ROOT
from emobed_datasets import demo

TRAIN = str(REPO_ROOT / "launch" / "train.py")
SMALL = dict(num_train=4, num_dev=2, num_test=1, num_frames=300)
FAST = ["--window=100", "--hop=50", "--batch_size=8", "--val_recordings=1", "--hidden=16",
        "--proj_dim=16", "--log_every=2"]


def run(args, cwd=REPO_ROOT, timeout=300, env=None):
  e = dict(os.environ)
  e.pop("XLA_FLAGS", None)  # the script sets up its own host devices
  e.update(env or {})
  return subprocess.run([sys.executable, TRAIN, *args], cwd=cwd, capture_output=True,
                        text=True, timeout=timeout, env=e)


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
  """A small demo corpus, prepared where `--dataset=demo --data_dir=...` looks."""
  d = tmp_path_factory.mktemp("data")
  demo.prepare_demo(d, 0, **SMALL)
  return d


def test_main_job_writes_the_contract_files_and_does_not_redo(demo_dir, tmp_path):
  wd = tmp_path / "run"
  args = ["--flagfile=demo.flags", f"--data_dir={demo_dir}", f"--workdir={wd}", "--epochs=2",
          *FAST]
  p = run(args)
  assert p.returncode == 0, p.stderr[-3000:]
  assert "step 2/" in p.stdout and "steps/s" in p.stdout and "ETA" in p.stdout
  for name in ("config.json", "stats.json", "metrics.jsonl", "results.json"):
    assert (wd / name).is_file(), name
  assert list((wd / "tensorboard").glob("events.out.tfevents.*"))
  assert (wd / "checkpoints" / "best").is_dir()
  r = json.loads((wd / "results.json").read_text())
  assert r["dataset"] == "demo" and r["setting"] == "emobed" and r["modality"] == "audio"
  assert r["aux_modality"] == "video" and r["eval_split"] == "dev"
  assert set(r["metrics"]) == {"ccc_arousal", "ccc_valence", "ccc_mean"}
  assert set(r["per_recording"]) == {"dev_1", "dev_2"}
  assert r["ccc_granularity"] == "concatenated" and r["devices"] >= 1 and r["processes"] == 1
  assert -1 <= r["metrics"]["ccc_mean"] <= 1 and r["train_seconds"] > 0
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
  # The same workdir with another config is refused.
  p3 = run(args[:-1] + ["--setting=mono", "--log_every=2"])
  assert p3.returncode != 0 and "another config" in p3.stderr and "Traceback" not in p3.stderr


def check_predictor_reproduces_results(wd, data_dir, results):
  import numpy as np

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


def test_sigkill_then_rerun_resumes_and_finishes(demo_dir, tmp_path):
  wd = tmp_path / "run"
  args = ["--flagfile=demo.flags", f"--data_dir={demo_dir}", f"--workdir={wd}", "--epochs=40",
          "--setting=mono", *FAST]
  e = dict(os.environ)
  e.pop("XLA_FLAGS", None)
  proc = subprocess.Popen([sys.executable, TRAIN, *args], cwd=REPO_ROOT, env=e,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  latest = wd / "checkpoints" / "latest"
  deadline = time.time() + 240
  while time.time() < deadline:
    steps = [int(p.name) for p in latest.glob("*") if p.name.isdigit()] if latest.is_dir() else []
    if steps and max(steps) >= 6:
      break
    time.sleep(0.2)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not (wd / "results.json").exists()
  p = run(args)
  assert p.returncode == 0, p.stderr[-3000:]
  assert "resuming from step" in p.stdout
  r = json.loads((wd / "results.json").read_text())
  assert r["total_steps"] == 40  # 15 windows // batch 8 = 1 step per epoch


# ---------------------------------------------------------------------------
# Bad input: a non-zero exit, the file or flag named, no traceback.


@pytest.fixture(scope="module")
def package(tmp_path_factory):
  root = tmp_path_factory.mktemp("pkg") / "AVEC2016"
  demo.write_demo_corpus(root, seed=3, num_train=3, num_dev=2, num_test=1, num_frames=60)
  return root


def _copy(package, tmp_path):
  import shutil
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
def test_bad_corpus_is_named(case, package, tmp_path):
  mutate, needle = BAD_CORPORA[case]
  pkg = _copy(package, tmp_path)
  mutate(pkg)
  p = run(["--dataset=recola", f"--manual_dir={pkg}", f"--data_dir={tmp_path / 'data'}",
           f"--workdir={tmp_path / 'wd'}", *FAST])
  assert_user_error(p, "error:", needle)
  assert len([l for l in p.stderr.splitlines() if l.startswith("error:")]) == 1
  assert not (tmp_path / "data" / "recola" / "1.0.0").exists()  # nothing half-prepared


def test_missing_recola_says_where_it_looked_and_how_to_get_it(tmp_path):
  p = run(["--modality=audio", "--flagfile=recola.flags", f"--data_dir={tmp_path}"],
          env={"RECOLA_DIR": ""})
  assert_user_error(p, str(tmp_path), "licence-restricted", "demo.flags")
  assert len(p.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("flags_,needle", [
    (["--modality=smell"], "--modality"),
    (["--dimensions=dominance"], "--dimensions"),
    (["--modality=video_geometric"], "--modality=video_geometric"),
    (["--setting=fusion"], "--setting"),
    (["--margin=0"], "--margin"),
    (["--batch_size=7", "--cpu_devices=2"], "--batch_size"),
    (["--aux_modality=audio"], "--aux_modality"),
    (["--rnn_impl=pallas", "--hidden=48"], "--hidden"),
    (["--rnn_impl=wavefront", "--dropout=0.1"], "--dropout"),
    (["--rnn_impl=cudnn"], "--rnn_impl"),
])
def test_bad_flags_are_named(flags_, needle, demo_dir, tmp_path):
  p = run(["--flagfile=demo.flags", f"--data_dir={demo_dir}", f"--workdir={tmp_path / 'wd'}",
           *FAST, *flags_])
  assert_user_error(p, needle)


def test_unwritable_workdir_is_named(demo_dir, tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("x")
  p = run(["--flagfile=demo.flags", f"--data_dir={demo_dir}", f"--workdir={blocker / 'run'}",
           *FAST])
  assert_user_error(p, "--workdir", str(blocker))
