"""A run's folder: identity check, config/stats files and the metrics log.

What ``launch/train.py`` writes into a workdir (docs/DESIGN.md, "run
contract"): ``config.json`` (the resolved config), ``stats.json``
(train-split standardisation and triplet bin edges), ``metrics.jsonl`` and
``tensorboard/`` (:class:`MetricsLog`), ``checkpoints/``
(:mod:`emobed_jax.checkpoint`) and finally ``results.json``.  Only process 0
writes (callers check ``jax.process_index()``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from emobed_jax import config as C
from emobed_jax import writers

CONFIG = "config.json"
STATS = "stats.json"
RESULTS = "results.json"
METRICS = "metrics.jsonl"


class RunError(ValueError):
  """A user-facing problem with a run (workdir, flags vs data); one line."""


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
  differ on resume.

  Raises:
    RunError: ``workdir/config.json`` holds another run; the message names
      the first differing field.
  """
  path = Path(workdir) / CONFIG
  if not path.exists():
    return
  try:
    old = C.identity(C.from_dict(C.RunConfig, writers.read_json(path)))
  except (C.ConfigError, TypeError, ValueError) as e:
    raise RunError(f"{path}: not a config written by this version of emobed-jax ({e}); "
                   "use a new --workdir") from None
  old, new = writers._jsonable(old), writers._jsonable(C.identity(config))
  if old != new:
    raise RunError(f"--workdir={workdir} holds a run with another config "
                   f"({_first_difference(old, new)}); use a new --workdir to start a "
                   "different run")


def finished_results(workdir: Path) -> dict[str, Any] | None:
  """``results.json`` of a finished run, else None."""
  path = Path(workdir) / RESULTS
  return writers.read_json(path) if path.exists() else None


def read_stats(workdir: Path) -> dict[str, Any] | None:
  """``stats.json`` (standardisation, bin edges) if a previous start wrote it."""
  path = Path(workdir) / STATS
  return writers.read_json(path) if path.exists() else None


def prepare(workdir: Path, config: C.RunConfig, stats: Mapping[str, Any]) -> None:
  """Create ``workdir`` and write ``config.json`` and ``stats.json`` if absent.

  Raises:
    RunError: the folder cannot be created or written (names ``--workdir``).
  """
  workdir = Path(workdir)
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    probe = workdir / ".write_test"
    probe.write_text("ok")
    probe.unlink()
  except OSError as e:
    raise RunError(f"--workdir={workdir}: cannot write there ({e.strerror or e})") from None
  if (workdir / "checkpoints" / "latest").is_dir():
    raise RunError(f"--workdir={workdir}: its checkpoints/latest and checkpoints/best were "
                   "written by emobed-jax before 2026-11-29 (two checkpoint managers); "
                   "use a new --workdir")
  if not (workdir / CONFIG).exists():
    writers.write_json(workdir / CONFIG, C.to_dict(config))
  if not (workdir / STATS).exists():
    writers.write_json(workdir / STATS, stats)


def write_results(workdir: Path, results: Mapping[str, Any]) -> None:
  writers.write_json(Path(workdir) / RESULTS, results)


class MetricsLog:
  """``metrics.jsonl`` (one JSON object per record) plus TensorBoard scalars.

  ``enabled=False`` (processes other than 0) makes every call a no-op.
  """

  def __init__(self, workdir: Path, enabled: bool = True):
    self.path = Path(workdir) / METRICS
    self._tb = writers.SummaryWriter(Path(workdir) / "tensorboard") if enabled else None

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
