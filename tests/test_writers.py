"""Workdir writers: atomic JSON, JSON lines, TensorBoard events read back by TensorBoard."""

import math
import subprocess
import sys
import time

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from emobed_jax import writers


def _scalars(logdir):
  """``{tag: [(step, value), ...]}`` as TensorBoard's own reader loads ``logdir``."""
  acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0})  # 0: keep all
  acc.Reload()
  return {tag: [(e.step, e.value) for e in acc.Scalars(tag)]
          for tag in acc.Tags()["scalars"]}


def _f32(x):
  return float(np.float32(x))


def test_summary_writer_round_trip_through_tensorboard(tmp_path):
  logdir = tmp_path / "tb"
  w = writers.SummaryWriter(logdir)
  w.scalars(5, {"train/loss": 0.1, "val/ccc": np.float32(0.3), "skip": None})
  w.scalars(10, {"train/loss": 1 / 3, "val/ccc": np.float64(-0.7)})
  w.scalars(np.int64(15), {"train/loss": 1e-7})
  w.close()
  got = _scalars(logdir)
  # float32 values, compared exactly; a None value writes nothing.
  assert got == {
      "train/loss": [(5, _f32(0.1)), (10, _f32(1 / 3)), (15, _f32(1e-7))],
      "val/ccc": [(5, _f32(0.3)), (10, _f32(-0.7))],
  }
  w.close()  # a second close is harmless


def test_non_finite_values_are_written_as_such(tmp_path):
  w = writers.SummaryWriter(tmp_path)
  w.scalars(1, {"loss": float("nan"), "up": float("inf"), "down": np.float32(-np.inf)})
  w.scalars(2, {"loss": 0.5, "up": 1.0, "down": -1.0})
  w.close()
  got = _scalars(tmp_path)
  (s1, nan), (s2, half) = got["loss"]
  assert (s1, s2, half) == (1, 2, 0.5) and math.isnan(nan)
  assert got["up"] == [(1, math.inf), (2, 1.0)]
  assert got["down"] == [(1, -math.inf), (2, -1.0)]


def test_resumed_run_appends_a_second_event_file(tmp_path):
  # Two writers on one logdir within the same second (a fast restart): both
  # files survive and TensorBoard reads them together, in order.
  first = writers.SummaryWriter(tmp_path)
  first.scalars(1, {"train/loss": 4.0})
  first.scalars(2, {"train/loss": 3.0, "val/ccc": 0.25})
  first.close()
  second = writers.SummaryWriter(tmp_path)
  second.scalars(3, {"train/loss": 2.0})
  second.scalars(4, {"train/loss": 1.0, "val/ccc": 0.5})
  second.close()
  assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 2
  assert _scalars(tmp_path) == {
      "train/loss": [(1, 4.0), (2, 3.0), (3, 2.0), (4, 1.0)],
      "val/ccc": [(2, 0.25), (4, 0.5)],
  }


def test_values_reach_disk_while_the_writer_is_open(tmp_path):
  w = writers.SummaryWriter(tmp_path, flush_secs=1)
  w.scalars(7, {"a": 2.5})
  deadline = time.monotonic() + 10
  while _scalars(tmp_path) != {"a": [(7, 2.5)]}:
    assert time.monotonic() < deadline, "scalar not on disk 10 s after scalars()"
    time.sleep(0.1)
  w.close()


def test_import_needs_no_tensorflow():
  code = ("import sys, emobed_jax.writers; "
          "assert 'tensorflow' not in sys.modules, 'tensorflow imported'")
  subprocess.run([sys.executable, "-c", code], check=True)


def test_json_is_atomic_and_jsonl_skips_torn_line(tmp_path):
  p = tmp_path / "r.json"
  writers.write_json(p, {"a": np.float32(1.5), "b": np.arange(3), "c": float("inf")})
  assert writers.read_json(p) == {"a": 1.5, "b": [0, 1, 2], "c": None}
  assert [x.name for x in tmp_path.iterdir()] == ["r.json"]
  j = tmp_path / "m.jsonl"
  writers.append_jsonl(j, {"step": 1})
  writers.append_jsonl(j, {"step": 2})
  with open(j, "a") as f:
    f.write('{"step": 3, "lo')  # killed mid-write
  assert writers.read_jsonl(j) == [{"step": 1}, {"step": 2}]
  assert writers.read_jsonl(tmp_path / "missing.jsonl") == []
