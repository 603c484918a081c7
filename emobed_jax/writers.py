"""What a run writes: atomic JSON, a JSON-lines log, TensorBoard event files.

Everything is plain JSON (or TensorBoard's own format), written by process 0
only (callers check ``jax.process_index()``), and JSON files are replaced
atomically (written to a temporary file in the same folder, then renamed),
so a killed run never leaves a half-written ``results.json``.

TensorBoard event files are written by ``tensorboardX``, which needs no
TensorFlow; they are read back with TensorBoard's own reader in
``tests/test_writers.py``.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Mapping

import tensorboardX


def _jsonable(x: Any) -> Any:
  if isinstance(x, Mapping):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if hasattr(x, "tolist"):  # numpy / jax scalars and arrays
    return _jsonable(x.tolist())
  if isinstance(x, float) and not math.isfinite(x):
    return None
  return x


def write_json(path: str | Path, data: Any) -> None:
  """Write ``data`` as JSON to ``path`` atomically."""
  path = Path(path)
  tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
  with open(tmp, "w") as f:
    json.dump(_jsonable(data), f, indent=1, sort_keys=False)
    f.write("\n")
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def read_json(path: str | Path) -> Any:
  with open(path) as f:
    return json.load(f)


def append_jsonl(path: str | Path, record: Mapping[str, Any]) -> None:
  """Append one JSON object as a line (flushed; a torn last line is skipped on read)."""
  with open(path, "a") as f:
    f.write(json.dumps(_jsonable(record)) + "\n")
    f.flush()


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
  """Records of a JSON-lines file; a torn final line (killed writer) is dropped."""
  out = []
  if not Path(path).exists():
    return out
  with open(path) as f:
    for line in f:
      try:
        out.append(json.loads(line))
      except json.JSONDecodeError:
        continue
  return out


# ---------------------------------------------------------------------------
# TensorBoard scalars.


class SummaryWriter:
  """Scalars to TensorBoard event files (``events.out.tfevents.*``) in ``logdir``.

  A thin wrapper over :class:`tensorboardX.SummaryWriter`.  Each writer
  creates a new event file, so a resumed run (a second writer on the same
  ``logdir``) adds a file next to the first one and TensorBoard reads them
  together, in file-name order.  The name carries the creation time in
  nanoseconds and the process id after tensorboardX's ``<seconds>.<host>``,
  so two writers opened within the same second neither overwrite each other
  nor read back out of order.

  Visibility: events are written by tensorboardX's background thread;
  :meth:`scalars` asks for a flush, so a running TensorBoard normally shows
  them within seconds (at the latest after ``flush_secs``), but only
  :meth:`close` guarantees that every value is on disk when it returns.
  """

  def __init__(self, logdir: str | Path, flush_secs: int = 10,
               purge_step: int | None = None):
    """Args:
      logdir: folder of the event files; created if missing.
      flush_secs: how often (seconds) the background thread flushes to disk.
      purge_step: a resumed run's first step: TensorBoard then discards the
        events of earlier files at this step and later (written by a run
        that was killed after its last checkpoint).
    """
    self.logdir = Path(logdir)
    self.logdir.mkdir(parents=True, exist_ok=True)
    self._w = tensorboardX.SummaryWriter(
        logdir=str(self.logdir), flush_secs=flush_secs, purge_step=purge_step,
        filename_suffix=f".{time.time_ns()}.{os.getpid()}")

  def scalars(self, step: int, values: Mapping[str, Any]) -> None:
    """Write one scalar per tag at ``step``.

    Args:
      step: the global step (an integer) shown on TensorBoard's x axis.
      values: ``{tag: value}``; a value is anything ``float()`` accepts (a
        Python number, a numpy or JAX scalar) and is stored as float32.
        NaN and +-inf are written as such (TensorBoard shows them); a
        ``None`` value is skipped (nothing to plot).  Tags that TensorBoard
        does not accept are cleaned by tensorboardX (invalid characters
        become ``_``).
    """
    step = int(step)
    for tag, v in values.items():
      if v is not None:
        self._w.add_scalar(tag, float(v), global_step=step)
    self._w.flush()

  def close(self) -> None:
    """Write everything still queued to disk and close the file (idempotent)."""
    self._w.close()
