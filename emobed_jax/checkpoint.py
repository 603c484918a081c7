"""Orbax checkpoints of the (unreplicated) train state plus JSON metadata.

One ``orbax.checkpoint.CheckpointManager`` under one directory, one save per
validation step.  Its preservation policy keeps the newest ``max_to_keep``
checkpoints (a rerun resumes from the newest) and the one with the best
validation score (final metrics are computed from it); orbax's own metric
bookkeeping says which step is best.  Ties go to the earlier step.

Each checkpoint holds ``state`` (the TrainState pytree) and ``meta`` (plain
JSON: best score so far, training seconds, ..., and ``state_sha256``, a
digest of the state's bytes).  Orbax writes to a temporary folder and
renames it when complete, so a checkpoint interrupted mid-write is never
restored (its temporary folder is removed when the manager is next opened),
and since latest and best are one save, a kill can never leave them
disagreeing.  A checkpoint whose files were removed or whose bytes changed
fails to restore or to match its digest: :meth:`Checkpointer.restore_latest`
then falls back to the previous one.

A checkpoint saved without a validation score (an interrupted run, see
``emobed_jax.train``) is kept as the latest but never counts as the best.
"""

from __future__ import annotations

import hashlib
import math
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from emobed_jax.parallel import unreplicate


#: The score of a checkpoint saved without validation: below every CCC.
NO_SCORE = -1e30


def _rank(metrics: dict[str, float]) -> tuple[float, int]:
  # Higher score first; on a tie the earlier step ranks higher (a later
  # checkpoint must be strictly better to become the best).
  return (metrics["score"], -metrics["step"])


def state_digest(tree: Any) -> str:
  """SHA-256 over the shapes, dtypes and bytes of a host pytree's leaves."""
  h = hashlib.sha256()
  for leaf in jax.tree_util.tree_leaves(tree):
    a = np.ascontiguousarray(np.asarray(leaf))
    h.update(f"{a.dtype}{a.shape}".encode())
    h.update(a.tobytes())
  return h.hexdigest()


class CheckpointError(RuntimeError):
  """No checkpoint of a directory could be restored (the message says why)."""


class Checkpointer:
  """Save/restore of ``(state, meta)``; the latest and the best are kept."""

  def __init__(self, directory: str | Path, max_to_keep: int = 2,
               async_save: bool = True):
    self.directory = Path(directory).absolute()
    policy = policies.AnyPreservationPolicy([
        policies.LatestN(n=max_to_keep),
        policies.BestN(get_metric_fn=_rank, n=1),
    ])
    self._mgr = ocp.CheckpointManager(self.directory, options=ocp.CheckpointManagerOptions(
        preservation_policy=policy, best_fn=_rank, best_mode="max",
        enable_async_checkpointing=async_save, create=True, cleanup_tmp_directories=True))

  def save(self, step: int, state: Any, meta: dict[str, Any],
           score: float | None) -> None:
    """Save ``state`` (any placement; copied to host) and ``meta`` at ``step``.

    Args:
      score: ranks the checkpoint for "best" (higher is better, e.g. the
        validation CCC); None for a checkpoint saved without validation.

    Raises:
      ValueError: ``score`` is NaN or inf (a non-finite state is never saved).
    """
    if score is not None and not math.isfinite(score):
      raise ValueError(f"checkpoint at step {step}: score {score} is not finite")
    host = unreplicate(state)
    meta = dict(meta, state_sha256=state_digest(host))
    args = ocp.args.Composite(state=ocp.args.StandardSave(host), meta=ocp.args.JsonSave(meta))
    score = NO_SCORE if score is None else float(score)
    self._mgr.save(int(step), args=args, metrics={"score": score, "step": int(step)},
                   force=True)

  def all_steps(self) -> list[int]:
    return sorted(self._mgr.all_steps())

  def latest_step(self) -> int | None:
    return self._mgr.latest_step()

  def best_step(self) -> int | None:
    self._mgr.wait_until_finished()
    return self._mgr.best_step()

  def restore(self, template: Any, step: int | None = None, *,
              best: bool = False) -> tuple[Any, dict[str, Any]]:
    """Restore into the structure of ``template`` (e.g. a fresh TrainState):
    ``step``, else the best (``best=True``) or the latest checkpoint.

    Returns ``(state, meta)`` with host arrays.

    Raises:
      FileNotFoundError: nothing to restore (names the directory).
    """
    self._mgr.wait_until_finished()
    if step is None:
      step = self._mgr.best_step() if best else self._mgr.latest_step()
    if step is None:
      raise FileNotFoundError(f"{self.directory}: no checkpoint to restore")
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, unreplicate(template))
    out = self._mgr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    state, meta = out["state"], dict(out["meta"])
    got_shapes = jax.tree_util.tree_map(lambda a: (tuple(np.shape(a)), str(np.asarray(a).dtype)),
                                        state)
    want_shapes = jax.tree_util.tree_map(lambda a: (tuple(a.shape), str(a.dtype)), abstract)
    if jax.tree_util.tree_structure(state) != jax.tree_util.tree_structure(abstract) or (
        got_shapes != want_shapes):
      raise CheckpointError(f"{self.directory / str(step)}: saved from a model of other "
                            "shapes (another config)")
    want = meta.pop("state_sha256", None)
    if want is not None and state_digest(unreplicate(state)) != want:
      raise CheckpointError(f"{self.directory / str(step)}: the restored state does not "
                            "match its digest (bytes changed)")
    return state, meta

  def restore_latest(self, template: Any) -> tuple[Any, dict[str, Any], list[int]]:
    """The newest checkpoint that restores intact, for resuming.

    Returns:
      ``(state, meta, lost)``: ``lost`` lists the newer steps that were
      damaged (files missing, bytes changed) and skipped, newest first;
      their folders are renamed ``<step>.damaged-<time>`` (kept, ignored).

    Raises:
      FileNotFoundError: there is no checkpoint at all.
      CheckpointError: none restores (e.g. saved from a model of other
        shapes); the message gives each step's error.
    """
    self._mgr.wait_until_finished()
    steps = sorted(self._mgr.all_steps(), reverse=True)
    if not steps:
      raise FileNotFoundError(f"{self.directory}: no checkpoint to restore")
    errors = []
    for step in steps:
      try:
        state, meta = self.restore(template, step)
      except Exception as e:  # noqa: BLE001  (any failure: try the one before)
        errors.append((step, " ".join(str(e).split())[:200]))
        continue
      lost = [s for s, _ in errors]
      for s in lost:  # set aside (kept for inspection), so that step can be saved anew
        path = self.directory / str(s)
        if jax.process_index() == 0:  # multi-process: one renames, all then see it
          path.rename(path.with_name(f"{s}.damaged-{time.strftime('%Y%m%d-%H%M%S')}"))
      if lost:
        if jax.process_count() > 1:
          ocp.multihost.sync_global_processes("emobed_jax_set_aside_damaged")
        self._mgr.reload()
      return state, meta, lost
    raise CheckpointError(f"{self.directory}: no checkpoint restores into this run's state ("
                          + "; ".join(f"step {s}: {e}" for s, e in errors) + ")")

  def wait(self) -> None:
    self._mgr.wait_until_finished()

  def close(self) -> None:
    self._mgr.close()
