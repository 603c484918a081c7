"""Reliability (issue 12): non-finite values, failed starts, one run per
workdir, damaged checkpoints, unsafe files.  In process, through the same
parser and ``main`` as ``launch/train.py`` (``cli`` in conftest).
"""

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from emobed_jax import losses, train, workdir
from emobed_jax.metrics import ccc
from launch_support import FAST, main_in_process, read_jsonl
from tests_support import small_config, synthetic_batch

# Nothing timed, and every comparison is between runs of this module.
pytestmark = pytest.mark.usefixtures("fast_compile")


# ---------------------------------------------------------------------------
# 1. Non-finite values propagate; only a finite near-zero denominator is CCC 0.


def test_nan_or_inf_prediction_gives_nan_ccc_not_a_loss_of_one():
  rs = np.random.RandomState(0)
  y = rs.randn(2, 30, 2).astype(np.float32)
  mask = np.ones((2, 30), np.float32)
  for bad in (np.nan, np.inf, -np.inf):
    p = y + 0.1 * rs.randn(*y.shape).astype(np.float32)
    p[1, 7, 0] = bad  # dimension 0 only
    loss = np.asarray(losses.ccc_loss(jnp.asarray(p), jnp.asarray(y), jnp.asarray(mask)))
    assert np.isnan(loss[0]) and np.isfinite(loss[1]), (bad, loss)
    g = jax.grad(lambda q: losses.ccc_loss(q, jnp.asarray(y), jnp.asarray(mask))[0])(
        jnp.asarray(p))
    assert np.any(~np.isfinite(np.asarray(g)))
    # float64 metrics use the same definition: NaN there too, via concordance.
    assert np.isnan(losses.concordance(np.nan, 0.0, 1.0, 1.0, 0.5, xp=np))
    assert np.isnan(losses.concordance(0.0, 0.0, np.inf, 1.0, 0.5, xp=np))


def test_constant_equal_sequences_stay_ccc_zero_with_zero_gradient():
  y = np.full((1, 20, 1), 3.0, np.float32)
  mask = np.ones((1, 20), np.float32)
  loss_fn = lambda q: losses.ccc_loss(q, jnp.asarray(y), jnp.asarray(mask))[0]
  assert float(loss_fn(jnp.asarray(y))) == 1.0
  assert np.all(np.asarray(jax.grad(loss_fn)(jnp.asarray(y))) == 0)
  assert ccc(y[0], y[0])[0] == 0.0


def test_skip_nonfinite_keeps_the_state_and_still_advances_the_step():
  cfg = small_config("mono")
  model, state = train.create_train_state(cfg, jax.random.key(0))
  batch = synthetic_batch(0, 4, 10)
  batch["target"][0, 0, 0] = np.nan  # an unmasked frame
  rng = jax.random.key(1)
  for skip in (True, False):
    fn = jax.jit(train.bound_train_step(model, cfg, skip_nonfinite=skip))
    new, m = fn(state, batch, rng)
    assert not np.isfinite(float(m.loss))
    assert int(new.step) == 1
    same = jax.tree_util.tree_all(jax.tree_util.tree_map(
        lambda a, b: bool(np.array_equal(a, b, equal_nan=True)), new.params, state.params))
    assert same == skip


@pytest.mark.parametrize("shape,needle", [
    # 4 steps per epoch: step 2's loss is NaN, found at the log line of step 2.
    (["--window=50", "--hop=25"], "error: the training loss became non-finite at step 2 ("),
    # 1 step per epoch: the parameters are inf after step 1; validation finds it.
    ([], "error: the predictions for recording train_4 became NaN or inf at step 1;"),
])
def test_a_diverging_run_stops_with_one_line_and_saves_no_nonfinite_state(
    demo_dir, cli, tmp_path, shape, needle):
  wd = tmp_path / "run"
  p = cli("--flagfile=demo.flags", f"--data_dir={demo_dir}", f"--workdir={wd}", "--epochs=3",
          "--setting=mono", "--learning_rate=1e30", "--clip_norm=0", *FAST, *shape)
  assert p.returncode == 1
  lines = p.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith(needle), p.stderr
  assert not workdir.has_checkpoint(wd)
  assert not (wd / "results.json").exists()
  # Logged values are never a NaN turned into a number.
  records = read_jsonl(wd / "metrics.jsonl") if (wd / "metrics.jsonl").exists() else []
  for r in records:
    assert all(v is None or np.isfinite(v) for k, v in r.items() if k in ("loss", "grad_norm"))


def test_accumulated_interval_counts_and_names_the_first_nonfinite_step():
  m = lambda *v: train.StepMetrics(*map(jnp.float32, v))
  acc = train._Interval.empty()
  acc = train._accumulate(acc, m(1.0, 0.5, 0.25, 0.25, 2.0), 1)
  acc = train._accumulate(acc, m(np.nan, 0.5, 0.25, np.nan, 2.0), 2)
  acc = train._accumulate(acc, m(3.0, 1.5, 0.75, 0.75, np.inf), 3)
  acc = train._accumulate(acc, m(2.0, 1.0, 0.5, 0.5, 4.0), 4)
  got = jax.device_get(acc)
  assert (int(got.finite), int(got.nonfinite), int(got.first_bad)) == (2, 2, 2)
  assert got.bad_terms.tolist() == [True, False, False, True, False]
  assert float(got.sums.loss) == 3.0 and float(got.sums.grad_norm) == 6.0


@pytest.fixture
def nan_in_one_training_recording(monkeypatch):
  """NaN features in frames 10-12 of the first training recording: the
  batches holding a window over them get a NaN loss."""
  from emobed_jax import run_data
  load = run_data.load_run_data

  def patched(*a, **k):
    data = load(*a, **k)
    data.train[0].target[10:13] = np.nan
    return data
  monkeypatch.setattr(run_data, "load_run_data", patched)


def test_skip_nonfinite_skips_and_counts_the_bad_batches(
    demo_dir, cli, tmp_path, nan_in_one_training_recording):
  args = ["--flagfile=demo.flags", f"--data_dir={demo_dir}", "--epochs=3", "--setting=mono",
          *FAST[:-1], "--log_every=1"]
  p = cli(*args, f"--workdir={tmp_path / 'stop'}")
  assert p.returncode == 1 and "became non-finite at step 1 (loss, task_target" in p.stderr
  wd = tmp_path / "skip"
  p = cli(*args, f"--workdir={wd}", "--skip_nonfinite")
  assert p.returncode == 0, p.stderr
  recs = [r for r in read_jsonl(wd / "metrics.jsonl") if r["split"] == "train"]
  skipped = [r["skipped_nonfinite"] for r in recs]
  assert sum(skipped) >= 1 and skipped.count(0) >= 1  # some batches skipped, not all
  for r in recs:  # a skipped step's values are never logged as numbers
    assert (r["loss"] is None) == (r["skipped_nonfinite"] == 1)
  results = json.loads((wd / "results.json").read_text())
  assert results["skipped_nonfinite"] == sum(skipped) == recs[-1]["skipped_nonfinite_total"]
  assert all(np.isfinite(v) for v in results["metrics"].values())


# ---------------------------------------------------------------------------
# 2. Nothing half-initialised; 6. one run per workdir.


def test_a_failed_start_writes_nothing_and_the_corrected_rerun_trains(demo_dir, cli, tmp_path):
  wd = tmp_path / "run"
  common = ["--flagfile=demo.flags", f"--data_dir={demo_dir}", f"--workdir={wd}",
            "--setting=mono", "--epochs=1", *FAST]
  p = cli(*common, "--batch_size=12")  # 8 devices
  assert p.returncode == 1 and "--batch_size=12" in p.stderr
  assert not wd.exists()
  p = cli(*common, "--modality=video_geometric")  # not in the demo corpus
  assert p.returncode == 1 and not wd.exists()
  # A workdir left with config.json and stats.json but no checkpoint (an
  # older version, or a start killed before its first save) counts as fresh.
  wd.mkdir()
  (wd / "config.json").write_text(json.dumps({"batch_size": 32}))
  (wd / "stats.json").write_text("{}")
  p = cli(*common)
  assert p.returncode == 0, p.stderr
  assert json.loads((wd / "config.json").read_text())["batch_size"] == 8


def test_a_busy_workdir_is_refused_and_a_killed_holder_leaves_no_stuck_lock(
    demo_dir, cli, tmp_path):
  wd = tmp_path / "run"
  args = ["--flagfile=demo.flags", f"--data_dir={demo_dir}", f"--workdir={wd}",
          "--setting=mono", "--epochs=1", *FAST]
  wd.mkdir()
  holder = subprocess.Popen(
      [sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a+'); "
       "fcntl.flock(f, fcntl.LOCK_EX); f.write('4242'); f.flush(); print('held', flush=True); "
       "time.sleep(60)", str(wd / ".lock")], stdout=subprocess.PIPE, text=True)
  assert holder.stdout.readline().strip() == "held"
  p = cli(*args)
  assert p.returncode == 1 and "in use by another run (pid 4242)" in p.stderr, p.stderr
  assert len(p.stderr.strip().splitlines()) == 1
  assert not (wd / "config.json").exists()
  holder.send_signal(signal.SIGKILL)
  holder.wait()
  p = cli(*args)
  assert p.returncode == 0, p.stderr


# ---------------------------------------------------------------------------
# 7. Damaged state; 10. no unsafe loading.


@pytest.fixture(scope="module")
def finished_run(demo_dir, tmp_path_factory):
  """A finished 4-epoch mono run (one checkpoint per epoch, 1 step each)."""
  wd = tmp_path_factory.mktemp("finished") / "run"
  args = ["--flagfile=demo.flags", f"--data_dir={demo_dir}", f"--workdir={wd}",
          "--setting=mono", "--epochs=4", *FAST]
  assert main_in_process(*args) == 0
  return wd, args


def _copy_unfinished(src, dst):
  shutil.copytree(src, dst)
  (dst / "results.json").unlink()
  return dst


@pytest.mark.parametrize("damage", ["bytes_changed", "files_removed"])
def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_one(
    finished_run, cli, tmp_path, damage):
  src, args = finished_run
  wd = _copy_unfinished(src, tmp_path / "run")
  latest = max(int(p.name) for p in (wd / "checkpoints").iterdir() if p.name.isdigit())
  files = sorted(p for p in (wd / "checkpoints" / str(latest) / "state").rglob("*")
                 if p.is_file() and p.stat().st_size > 64)
  assert files
  if damage == "bytes_changed":
    target = max(files, key=lambda p: p.stat().st_size)
    data = bytearray(target.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 16):
      data[i] ^= 0xFF
    target.write_bytes(bytes(data))
  else:
    for f in files:
      f.unlink()
  p = cli(*[a for a in args if not a.startswith("--workdir")], f"--workdir={wd}")
  assert p.returncode == 0, p.stderr
  assert f"warning: checkpoints of step(s) {latest} are damaged; resuming from step " in p.stderr
  want = json.loads((src / "results.json").read_text())
  got = json.loads((wd / "results.json").read_text())
  assert got["metrics"] == want["metrics"] and got["best_step"] == want["best_step"]


def test_checkpoints_of_other_shapes_are_refused_not_loaded(finished_run, cli, tmp_path):
  src, args = finished_run
  wd = _copy_unfinished(src, tmp_path / "run")
  (wd / "config.json").unlink()  # nothing left to compare the config with
  p = cli(*[a for a in args if not a.startswith(("--workdir", "--hidden"))],
          f"--workdir={wd}", "--hidden=32")
  assert p.returncode == 1 and "no checkpoint restores into this run's state" in p.stderr
  assert len(p.stderr.strip().splitlines()) == 1


class _Payload:
  def __reduce__(self):
    return (open, ("/tmp/emobed_pickle_was_executed", "w"))


@pytest.mark.parametrize("name", ["stats.json", "config.json", "results.json"])
def test_a_pickle_where_json_is_expected_is_refused_not_executed(
    finished_run, cli, tmp_path, name):
  src, args = finished_run
  wd = _copy_unfinished(src, tmp_path / "run")
  if name == "results.json":
    (wd / name).write_bytes(b"")
  marker = "/tmp/emobed_pickle_was_executed"
  if os.path.exists(marker):
    os.unlink(marker)
  (wd / name).write_bytes(pickle.dumps(_Payload()))
  p = cli(*[a for a in args if not a.startswith("--workdir")], f"--workdir={wd}")
  assert p.returncode == 1 and f"{wd / name}: not a JSON file" in p.stderr, p.stderr
  assert len(p.stderr.strip().splitlines()) == 1
  assert not os.path.exists(marker)
