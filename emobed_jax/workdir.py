"""A run's folder: identity check, config/stats files and the metrics log.

What ``launch/train.py`` writes into a workdir (docs/DESIGN.md, "run
contract"): ``config.json`` (the resolved config), ``stats.json``
(train-split standardisation and triplet bin edges), ``metrics.jsonl`` and
``tensorboard/`` (:class:`MetricsLog`), ``checkpoints/``
(:mod:`emobed_jax.checkpoint`) and finally ``results.json``.  Only process 0
writes (callers check ``jax.process_index()``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Mapping

import emobed_jax
from emobed_jax import config as C
from emobed_jax import writers

CONFIG = "config.json"
STATS = "stats.json"
RESULTS = "results.json"
METRICS = "metrics.jsonl"


class RunError(ValueError):
  """A user-facing problem with a run (workdir, flags vs data); one line."""


def _read_json(path: Path) -> Any:
  """JSON only (never pickle or eval); a file that is not JSON is a RunError."""
  try:
    return writers.read_json(path)
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise RunError(f"{path}: not a JSON file written by emobed-jax ({e.__class__.__name__}: "
                   f"{e}); move it away or use a new --workdir") from None


def has_checkpoint(workdir: Path) -> bool:
  """Whether ``workdir/checkpoints`` holds a finished checkpoint (a step folder)."""
  d = Path(workdir) / "checkpoints"
  return d.is_dir() and any(p.name.isdigit() for p in d.iterdir())


def _first_difference(a: Any, b: Any, prefix: str = "") -> str:
  if isinstance(a, dict) and isinstance(b, dict):
    for k in sorted(set(a) | set(b)):
      if a.get(k) != b.get(k):
        return _first_difference(a.get(k), b.get(k), f"{prefix}{k}.")
  return f"{prefix.rstrip('.')}: {a!r} there, {b!r} now"


def check_same_run(workdir: Path, config: C.RunConfig) -> None:
  """Refuse a workdir that holds a run of another config.

  Only fields that change results count (:func:`emobed_jax.config.identity`):
  ``--log_every``, ``--rnn_impl``, ``--unroll`` or another ``--data_dir`` may
  differ on resume.  A workdir with neither a checkpoint nor results (a
  start that failed before training) counts as fresh: nothing to compare.

  Raises:
    RunError: ``workdir/config.json`` holds another run; the message names
      the first differing field.
  """
  path = Path(workdir) / CONFIG
  if not path.exists() or not (has_checkpoint(workdir) or (Path(workdir) / RESULTS).exists()):
    return
  try:
    old = C.identity(read_config(workdir))
  except (C.ConfigError, TypeError, ValueError) as e:
    raise RunError(f"{path}: not a config written by this version of emobed-jax ({e}); "
                   "use a new --workdir") from None
  old, new = writers._jsonable(old), writers._jsonable(C.identity(config))
  if old != new:
    raise RunError(f"--workdir={workdir} holds a run with another config "
                   f"({_first_difference(old, new)}); use a new --workdir to start a "
                   "different run")


def read_config(workdir: Path) -> C.RunConfig:
  """The run's config from ``config.json`` (its ``provenance`` entry aside).

  Raises:
    RunError: the file is not JSON.
    emobed_jax.config.ConfigError: a field this version does not know.
  """
  d = _read_json(Path(workdir) / CONFIG)
  if not isinstance(d, dict):
    raise RunError(f"{Path(workdir) / CONFIG}: expected a JSON object written by emobed-jax")
  d.pop("provenance", None)
  return C.from_dict(C.RunConfig, d)


def provenance(source: Mapping[str, Any]) -> dict[str, Any]:
  """What produced a run: the project's version and the data actually read."""
  return {"emobed_jax_version": emobed_jax.__version__, "data_source": dict(source)}


def finished_results(workdir: Path) -> dict[str, Any] | None:
  """``results.json`` of a finished run, else None."""
  path = Path(workdir) / RESULTS
  return _read_json(path) if path.exists() else None


def read_stats(workdir: Path) -> dict[str, Any] | None:
  """``stats.json`` (standardisation, bin edges) of a run that has a
  checkpoint (the resumed run must standardise as the first start did);
  None for a fresh workdir.

  Raises:
    RunError: the file is not JSON, or lacks the standardisation.
  """
  path = Path(workdir) / STATS
  if not (path.exists() and has_checkpoint(workdir)):
    return None
  stats = _read_json(path)
  if not isinstance(stats, dict) or "standardizer" not in stats:
    raise RunError(f"{path}: expected the JSON object written by emobed-jax (with "
                   "'standardizer'); move it away or use a new --workdir")
  return stats


def create(workdir: Path) -> None:
  """Create ``workdir`` (and parents) and check that it can be written.

  Raises:
    RunError: the folder cannot be created or written (names ``--workdir``).
  """
  workdir = Path(workdir)
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    probe = workdir / f".write_test{os.getpid()}"
    probe.write_text("ok")
    probe.unlink()
  except OSError as e:
    raise RunError(f"--workdir={workdir}: cannot write there ({e.strerror or e})") from None
  if (workdir / "checkpoints" / "latest").is_dir():
    raise RunError(f"--workdir={workdir}: its checkpoints/latest and checkpoints/best were "
                   "written by emobed-jax before 2026-11-29 (two checkpoint managers); "
                   "use a new --workdir")


@contextlib.contextmanager
def locked(workdir: Path) -> Iterator[None]:
  """Hold ``workdir/.lock`` (an exclusive ``flock``) while a run uses it.

  The kernel releases the lock when the process ends, however it ends, so a
  killed run never leaves it stuck.

  Raises:
    RunError: another process holds it (names the workdir and its pid).
  """
  path = Path(workdir) / ".lock"
  with open(path, "a+") as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      f.seek(0)
      pid = f.read().strip() or "?"
      raise RunError(f"--workdir={workdir} is in use by another run (pid {pid}); wait for "
                     "it to finish or use a new --workdir") from None
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def write_start(workdir: Path, config: C.RunConfig, stats: Mapping[str, Any],
                source: Mapping[str, Any]) -> None:
  """Write ``config.json`` (the config plus its ``provenance``) and
  ``stats.json`` of a fresh run (replacing those of a start that never
  reached a checkpoint)."""
  writers.write_json(Path(workdir) / CONFIG,
                     {**C.to_dict(config), "provenance": provenance(source)})
  writers.write_json(Path(workdir) / STATS, stats)


def write_results(workdir: Path, results: Mapping[str, Any]) -> None:
  writers.write_json(Path(workdir) / RESULTS, results)


class MetricsLog:
  """``metrics.jsonl`` (one JSON object per record) plus TensorBoard scalars.

  A run that resumes at ``start_step`` continues both logs from there:
  records of later steps (written after the checkpoint it resumes from) are
  dropped from metrics.jsonl, and TensorBoard is told to purge them, so no
  step is logged twice and no curve jumps back.  ``enabled=False``
  (processes other than 0) makes every call a no-op.
  """

  def __init__(self, workdir: Path, enabled: bool = True, start_step: int = 0):
    self.path = Path(workdir) / METRICS
    self._tb = None
    if not enabled:
      return
    if self.path.exists():
      keep = [r for r in writers.read_jsonl(self.path) if r.get("step", 0) <= start_step]
      tmp = self.path.with_name(f".{self.path.name}.tmp{os.getpid()}")
      with open(tmp, "w") as f:
        f.writelines(json.dumps(writers._jsonable(r)) + "\n" for r in keep)
      os.replace(tmp, self.path)
    self._tb = writers.SummaryWriter(Path(workdir) / "tensorboard", purge_step=start_step + 1)

  def log(self, record: Mapping[str, Any], tag_prefix: str | None = None,
          scalars: Mapping[str, float] | None = None) -> None:
    """Append ``record`` to metrics.jsonl; write ``scalars`` as TensorBoard
    scalars ``<tag_prefix>/<name>`` at ``record["step"]``."""
    if self._tb is None:
      return
    writers.append_jsonl(self.path, record)
    if tag_prefix and scalars:
      self._tb.scalars(int(record["step"]),
                       {f"{tag_prefix}/{k}": v for k, v in scalars.items()})

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
