"""launch/reproduce.py end to end on a tiny grid (subprocesses, like a user):
the dry-run listing, a flag typo refused before anything runs, a grid that
finishes and writes its tables, a rerun that trains nothing, and a launcher
stopped by SIGTERM whose cell resumes."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO_ROOT
from launch_support import FAST

REPRODUCE = str(REPO_ROOT / "launch" / "reproduce.py")


def reproduce(*args, timeout=300):
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)
  return subprocess.run([sys.executable, REPRODUCE, *args], cwd=REPO_ROOT, check=False,
                        capture_output=True, text=True, timeout=timeout, env=env)


def grid_args(grid_dir, demo_dir, *extra):
  return ["--dataset=demo", f"--grid_dir={grid_dir}", f"--data_dir={demo_dir}", *FAST, *extra]


def test_dry_run_lists_cells(tmp_path):
  r = reproduce("--dataset=demo", f"--grid_dir={tmp_path}", "--seeds=2",
                "--settings=mono,emobed", "--modalities=audio", "--dry_run", "--parallel=1")
  assert r.returncode == 0, r.stderr
  lines = [line for line in r.stdout.splitlines() if line.startswith("new")]
  assert [line.split()[1] for line in lines] == [
      "demo/mono-audio/seed_0", "demo/emobed-audio/seed_0",
      "demo/mono-audio/seed_1", "demo/emobed-audio/seed_1"]
  assert str(tmp_path / "demo" / "emobed-audio" / "seed_1") in lines[-1]
  assert "grid_demo.flags" in r.stdout and not any(tmp_path.iterdir())


@pytest.mark.parametrize("args, message", [
    (["--epoch=3"], "Unknown command line flag 'epoch'"),
    (["--seed=3"], "the grid sets --seed"),
    (["--settings=mono,fusion"], "--settings: unknown fusion"),
    (["--learning_rate=-1"], "learning_rate"),
])
def test_bad_flags_fail_before_running(tmp_path, args, message):
  r = reproduce("--dataset=demo", f"--grid_dir={tmp_path / 'g'}", *args)
  assert r.returncode == 2 and message in r.stderr, r.stderr
  assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "g").exists()


def test_tiny_grid_finishes_then_does_nothing(tmp_path, demo_dir):
  g = tmp_path / "grid"
  args = grid_args(g, demo_dir, "--settings=mono,emobed", "--modalities=audio", "--seeds=2",
                   "--epochs=1", "--parallel=2")
  r = reproduce(*args)
  assert r.returncode == 0, r.stdout + r.stderr
  done = [line for line in r.stdout.splitlines() if line.startswith("[")]
  assert len(done) == 4 and done[-1].startswith("[4/4]") and "ETA" in done[-1]
  tables = g / "tables"
  for name in ("demo_results.md", "demo_results.csv", "demo_gains.md", "demo_gains.csv",
               "summary.json", "demo_reference.md"):
    assert (tables / name).stat().st_size > 0
  for name in ("bars", "curves", "traces", "embeddings"):
    assert (g / "figures" / f"demo_{name}.png").stat().st_size > 1000
  summary = json.loads((tables / "summary.json").read_text())["demo"]
  assert [c["seeds"] for c in summary["cells"]] == [[0, 1], [0, 1]]
  assert summary["gains"][0]["t_test"]["n"] == 2
  assert (g / "hparams" / "demo" / "emobed-audio" / "seed_1").is_dir()
  mtime = (g / "demo" / "mono-audio" / "seed_0" / "results.json").stat().st_mtime
  again = reproduce(*args, "--noreport")
  assert again.returncode == 0, again.stderr
  assert "0 trained now, 4 already done" in again.stdout and "start" not in again.stdout
  assert (g / "demo" / "mono-audio" / "seed_0" / "results.json").stat().st_mtime == mtime


def _launch(args):
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)
  return subprocess.Popen([sys.executable, REPRODUCE, *args], cwd=REPO_ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(condition, seconds=240):
  deadline = time.monotonic() + seconds
  while not condition() and time.monotonic() < deadline:
    time.sleep(0.3)


def test_sigterm_stops_cells_and_the_rerun_resumes(tmp_path, demo_dir):
  """SIGTERM to the launcher: the running cell checkpoints and exits 75, the
  launcher exits 75; the same command resumes the cell from its checkpoint
  (stopped again once it has: the resumed training itself is train.py's
  tested contract)."""
  g = tmp_path / "grid"
  args = grid_args(g, demo_dir, "--settings=emobed", "--modalities=audio", "--seeds=1",
                   "--epochs=400", "--parallel=1", "--noreport")
  ckpt = g / "demo" / "emobed-audio" / "seed_0" / "checkpoints"
  log = g / "demo" / "emobed-audio" / "seed_0.log"
  p = _launch(args)
  _wait_for(lambda: ckpt.is_dir() and any(ckpt.glob("[0-9]*")))
  p.send_signal(signal.SIGTERM)
  out, err = p.communicate(timeout=120)
  assert p.returncode == 75, out + err
  assert "interrupted: demo/emobed-audio/seed_0" in out
  assert "SIGTERM" in log.read_text()
  listing = reproduce(*args, "--dry_run").stdout
  assert "interrupted demo/emobed-audio/seed_0" in " ".join(listing.split()), listing
  p = _launch(args)
  _wait_for(lambda: "resuming from step" in log.read_text())
  p.send_signal(signal.SIGTERM)
  out, err = p.communicate(timeout=120)
  assert p.returncode == 75, out + err
  assert "start demo/emobed-audio/seed_0 (resumed" in out
  assert "resuming from step" in log.read_text()


def test_failed_cells_are_reported_and_the_grid_goes_on(tmp_path):
  empty = tmp_path / "empty"
  empty.mkdir()
  r = reproduce("--dataset=recola", "--settings=mono,joint", "--modalities=audio", "--seeds=1",
                f"--grid_dir={tmp_path / 'g'}", f"--data_dir={empty}", f"--manual_dir={empty}",
                "--parallel=2")
  assert r.returncode == 1, r.stdout + r.stderr
  for cell in ("recola/mono-audio/seed_0", "recola/joint-audio/seed_0"):
    assert f"failed: {cell} (exit 1)" in r.stderr
  assert "  | error: " in r.stderr and "ratings_gold_standard" in r.stderr  # the log's tail
  assert r.stderr.strip().splitlines()[-1].startswith("error: 2 cell(s) failed: recola/")


FAKE_TRAIN = """
import signal, sys, time, pathlib
wd = pathlib.Path([a for a in sys.argv if a.startswith("--workdir=")][0].split("=", 1)[1])
wd.mkdir(parents=True, exist_ok=True)
def first(signum, frame):
  print("first signal", flush=True)
  signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the second one kills, as train.py's does
signal.signal(signal.SIGTERM, first)
print("started", flush=True)
time.sleep(30)
"""


def test_runner_second_stop_request_stops_cells_at_once(tmp_path):
  """The runner alone, with a stand-in for launch/train.py that ignores the
  first SIGTERM: a second stop request must reach the cells."""
  from emobed_jax import grid
  script = tmp_path / "fake_train.py"
  script.write_text(FAKE_TRAIN)
  cells = grid.cells("demo", ["mono", "emobed"], ["audio"], [0])
  slots = grid.slots(2, 8, cores=[0, 1], gpus=[])
  events, t0 = [], time.monotonic()

  def stop():
    started = sum(k == "start" for k, _ in events)
    logs = [c.log_path(tmp_path).read_text() if c.log_path(tmp_path).exists() else ""
            for c in cells]
    if started < 2 or not all("started" in s for s in logs):
      return 0
    return 2 if all("first signal" in s for s in logs) else 1

  out = grid.run_grid(cells, tmp_path, [], slots, train_script=script,
                      report=lambda kind, info: events.append((kind, info)), stop_requested=stop)
  assert time.monotonic() - t0 < 25
  assert sorted(c.setting for c in out.interrupted) == ["emobed", "mono"]
  assert not out.finished and not out.failed and not out.not_started
