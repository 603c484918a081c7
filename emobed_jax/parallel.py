"""Data parallelism: pmap wrapping, device batches, replicated placement.

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
  """A 1-d :class:`~jax.sharding.Mesh` with axis :data:`AXIS` over ``devices``.

  Args:
    devices: a non-empty list or tuple of ``jax.Device``; None (or empty): all
      of this process's devices, ``jax.local_devices()``.
  """
  return Mesh(np.asarray(devices or jax.local_devices()), (AXIS,))


def replicate(tree: Any, devices=None) -> Any:
  """Place a pytree replicated on ``devices`` (default: all local devices),
  the placement pmap gives its unmapped outputs.

  The values are copied through the host so that the result never aliases
  ``tree``'s buffers: the train step donates its state, which must not
  delete the caller's copy.

  Args:
    tree: a pytree of arrays (numpy or JAX, any shapes and dtypes).
    devices: as in :func:`local_mesh`.

  Returns:
    the same structure, each leaf a ``jax.Array`` with the same shape and
    dtype, one full copy per device (``NamedSharding`` with an empty
    ``PartitionSpec``).  Costs one device-to-host and one host-to-device
    copy of the whole tree.
  """
  return jax.device_put(jax.device_get(tree), NamedSharding(local_mesh(devices), PartitionSpec()))


def unreplicate(tree: Any) -> Any:
  """A host (numpy) copy of a replicated pytree, e.g. for checkpoints.

  Each leaf becomes an ``np.ndarray`` of the same shape and dtype (a
  replicated ``jax.Array`` is read once, not once per device); non-array
  leaves go through ``np.asarray``.
  """
  return jax.tree_util.tree_map(np.asarray, jax.device_get(tree))


def shard_batch(batch: dict[str, np.ndarray], num_devices: int | None = None):
  """Split a batch among devices: ``[B, ...]`` -> ``[n, B / n, ...]``.

  ``B`` is this process's share of the global batch (the whole global batch
  on one host).  Row ``i`` of the input lands on device ``i // (B / n)``, so
  the device order of ``pmap`` sees contiguous blocks of rows.

  Args:
    batch: ``{name: array}``, each at least 1-d with the same leading size
      ``B`` (host numpy arrays; JAX arrays work too), any dtype.
    num_devices: ``n``; None (or 0): ``jax.local_device_count()``.

  Returns:
    a new dict with the same keys, each value reshaped to
    ``[n, B / n] + shape[1:]`` (a view of the input for contiguous numpy
    arrays; nothing is copied to a device).

  Raises:
    ValueError: a leading size is not divisible by ``n`` (the message names
      the key).
  """
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

  Args:
    step_fn: ``(state, batch, rng) -> (new_state, metrics)``, whose
      collectives name the axis :data:`AXIS` (e.g.
      ``train.bound_train_step(..., axis_name=parallel.AXIS)``).
    donate: donate the state's buffers to the step (the input state is
      deleted by the call; pass the state returned by the previous call).
    devices: as in :func:`local_mesh`; None: all local devices.

  Returns:
    ``p_step(state, batch, rng)``: ``state`` placed with :func:`replicate`
    (same ``devices``), ``batch`` from :func:`shard_batch` (leading axis =
    number of devices), ``rng`` one PRNG key; returns ``(new_state,
    metrics)`` unmapped (``out_axes=None``: the step must return values
    that are equal on every device, e.g. psum'd / pmean'd).
  """
  return jax.pmap(step_fn, axis_name=AXIS, in_axes=(None, 0, None),
                  out_axes=(None, None), donate_argnums=(0,) if donate else (),
                  devices=devices)


def pmap_eval_step(eval_fn: Callable, devices=None) -> Callable:
  """``pmap`` an eval step ``(params, target, mask) -> preds``.

  Args:
    eval_fn: ``(params, target, mask) -> preds`` for one device's rows.
    devices: as in :func:`local_mesh`; None: all local devices.

  Returns:
    ``p_eval(params, target, mask)``: ``params`` unmapped (placed with
    :func:`replicate`), ``target [n, b, ...]`` and ``mask [n, b, ...]``
    mapped over the leading device axis (e.g. from
    ``input_pipeline.eval_arrays``); the predictions come back mapped,
    ``[n, b, ...]``.
  """
  return jax.pmap(eval_fn, axis_name=AXIS, in_axes=(None, 0, 0), devices=devices)

