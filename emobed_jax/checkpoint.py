"""Orbax checkpoints of the (unreplicated) train state plus JSON metadata.

Two managers under one directory:

* ``<dir>/latest``: saved on a schedule, the newest ``max_to_keep`` kept; a
  rerun resumes from the newest.
* ``<dir>/best``: the state with the best validation score so far (one kept);
  final metrics are computed from it.

Each checkpoint holds ``state`` (the TrainState pytree) and ``meta`` (plain
JSON: epoch, position in the data order, best score, ...).  Orbax writes to a
temporary folder and renames it when complete, so a checkpoint interrupted
mid-write is never restored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from emobed_jax.parallel import unreplicate


class Checkpointer:
  """Save/restore of ``(state, meta)`` with a latest and a best slot."""

  def __init__(self, directory: str | Path, max_to_keep: int = 2,
               async_save: bool = True):
    self.directory = Path(directory).absolute()
    opts = dict(enable_async_checkpointing=async_save, create=True)
    self._latest = ocp.CheckpointManager(
        self.directory / "latest",
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, **opts))
    self._best = ocp.CheckpointManager(
        self.directory / "best",
        options=ocp.CheckpointManagerOptions(max_to_keep=1, **opts))

  def _manager(self, best: bool) -> ocp.CheckpointManager:
    return self._best if best else self._latest

  def save(self, step: int, state: Any, meta: dict[str, Any], *, best: bool = False) -> None:
    """Save ``state`` (any placement; copied to host) and ``meta`` at ``step``."""
    args = ocp.args.Composite(state=ocp.args.StandardSave(unreplicate(state)),
                              meta=ocp.args.JsonSave(meta))
    mgr = self._manager(best)
    if int(step) in mgr.all_steps():
      # Left by a run killed between its best and latest saves of this step:
      # it resumed from the step before and has just recomputed this one.
      mgr.wait_until_finished()
      mgr.delete(int(step))
    mgr.save(int(step), args=args, force=True)

  def latest_step(self, *, best: bool = False) -> int | None:
    return self._manager(best).latest_step()

  def restore(self, template: Any, step: int | None = None, *,
              best: bool = False) -> tuple[Any, dict[str, Any]]:
    """Restore into the structure of ``template`` (e.g. a fresh TrainState).

    Returns ``(state, meta)`` with host arrays; raises ``FileNotFoundError``
    naming the directory when there is nothing to restore.
    """
    mgr = self._manager(best)
    mgr.wait_until_finished()
    step = mgr.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"{mgr.directory}: no checkpoint to restore")
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, unreplicate(template))
    out = mgr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    return out["state"], dict(out["meta"])

  def wait(self) -> None:
    self._latest.wait_until_finished()
    self._best.wait_until_finished()

  def close(self) -> None:
    self._latest.close()
    self._best.close()
