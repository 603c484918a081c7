"""Orbax checkpoints of the (unreplicated) train state plus JSON metadata.

One ``orbax.checkpoint.CheckpointManager`` under one directory, one save per
validation step.  Its preservation policy keeps the newest ``max_to_keep``
checkpoints (a rerun resumes from the newest) and the one with the best
validation score (final metrics are computed from it); orbax's own metric
bookkeeping says which step is best.  Ties go to the earlier step.

Each checkpoint holds ``state`` (the TrainState pytree) and ``meta`` (plain
JSON: best score so far, training seconds, ...).  Orbax writes to a
temporary folder and renames it when complete, so a checkpoint interrupted
mid-write is never restored, and since latest and best are one save, a kill
can never leave them disagreeing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from emobed_jax.parallel import unreplicate


def _rank(metrics: dict[str, float]) -> tuple[float, int]:
  # Higher score first; on a tie the earlier step ranks higher (a later
  # checkpoint must be strictly better to become the best).
  return (metrics["score"], -metrics["step"])


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
        enable_async_checkpointing=async_save, create=True))

  def save(self, step: int, state: Any, meta: dict[str, Any], score: float) -> None:
    """Save ``state`` (any placement; copied to host) and ``meta`` at
    ``step``, ranked by ``score`` (higher is better, e.g. validation CCC)."""
    args = ocp.args.Composite(state=ocp.args.StandardSave(unreplicate(state)),
                              meta=ocp.args.JsonSave(meta))
    self._mgr.save(int(step), args=args, metrics={"score": float(score), "step": int(step)},
                   force=True)

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
    return out["state"], dict(out["meta"])

  def wait(self) -> None:
    self._mgr.wait_until_finished()

  def close(self) -> None:
    self._mgr.close()
