"""Data parallelism: pmap wrapping, device batches, multi-host initialisation.

The step is a pure function whose collectives name the axis ``'batch'``;
here it is run with ``jax.pmap`` over all local devices.  The train state is
*not* replicated by hand: it is passed with ``in_axes=None`` /
``out_axes=None`` (the Flax ImageNet way) and placed once, replicated, on the
mesh pmap uses, so the first and every later call see the same input
shardings and nothing recompiles.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS = "batch"


def local_mesh(devices=None) -> Mesh:
  return Mesh(np.asarray(devices or jax.local_devices()), (AXIS,))


def replicate(tree: Any, devices=None) -> Any:
  """Place a pytree replicated on ``devices`` (default: all local devices),
  the placement pmap gives its unmapped outputs.

  The values are copied through the host so that the result never aliases
  ``tree``'s buffers: the train step donates its state, which must not
  delete the caller's copy.
  """
  return jax.device_put(jax.device_get(tree), NamedSharding(local_mesh(devices), PartitionSpec()))


def unreplicate(tree: Any) -> Any:
  """A host (numpy) copy of a replicated pytree, e.g. for checkpoints."""
  return jax.tree_util.tree_map(np.asarray, jax.device_get(tree))


def shard_batch(batch: dict[str, np.ndarray], num_devices: int | None = None):
  """``[global_b, ...]`` host arrays -> ``[devices, global_b / devices, ...]``."""
  n = num_devices or jax.local_device_count()
  out = {}
  for k, v in batch.items():
    if v.shape[0] % n:
      raise ValueError(f"batch[{k!r}]: leading size {v.shape[0]} is not divisible "
                       f"by the {n} local devices")
    out[k] = v.reshape((n, v.shape[0] // n) + v.shape[1:])
  return out


def pmap_train_step(step_fn: Callable, donate: bool = True, devices=None) -> Callable:
  """``pmap`` a bound train step: state and rng unmapped, batch mapped.

  Pass the state placed with :func:`replicate` (same ``devices``).
  """
  return jax.pmap(step_fn, axis_name=AXIS, in_axes=(None, 0, None),
                  out_axes=(None, None), donate_argnums=(0,) if donate else (),
                  devices=devices)


def pmap_eval_step(eval_fn: Callable, devices=None) -> Callable:
  """``pmap`` an eval step ``(params, target, mask) -> preds``."""
  return jax.pmap(eval_fn, axis_name=AXIS, in_axes=(None, 0, 0), devices=devices)


def initialize_multihost(coordinator: str | None, num_processes: int | None,
                         process_id: int | None) -> None:
  """``jax.distributed.initialize`` when running on several hosts.

  Must be called before any other JAX call.  With all arguments None this is
  a no-op unless a cluster environment (SLURM, TPU pod) is auto-detected by
  JAX, in which case the call with no arguments initialises from it.
  """
  if coordinator is None and num_processes is None and process_id is None:
    return
  if num_processes is None:
    raise ValueError("num_processes: required with a coordinator address")
  jax.distributed.initialize(coordinator, num_processes=num_processes,
                             process_id=process_id)
