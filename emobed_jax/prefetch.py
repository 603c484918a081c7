"""Device batches a few steps ahead: host batching overlapped with the step.

``DevicePrefetch(batches, start, stop)`` reads ``batches[step]`` for
``step = start, start + 1, ...`` in one background thread, splits each batch
over the local devices (:func:`emobed_jax.parallel.shard_batch`) and puts it
on them (``jax.device_put``, sharded along :data:`parallel.AXIS`, the layout
``pmap`` takes without a copy), at most ``depth`` steps ahead of the
training loop.  The loop then reads ``feed[step]`` in the same order, so the
data order is exactly that of ``batches`` (a pure function of the seed and
the step: one producer, a FIFO queue, steps checked on the way out).

``batches`` is anything indexable by the step that returns a host batch
(a dict of numpy arrays with a common leading size, e.g.
:class:`emobed_jax.input_pipeline.WindowBatches` or a grain ``MapDataset``);
the shapes may differ from batch to batch (length buckets).  If it also has
``shards(step, n)`` (per-device blocks of rows in separate buffers, as
``WindowBatches`` has), each block is put on its device directly: on a CPU
a 64-byte-aligned block becomes the device buffer without a copy, one copy
of every batch less per step (the producer's host work per emobed batch,
widths 176/336, T=300, one thread: 8.7 -> 6.3 ms at B=32, 35 -> 23 ms at
B=128, measured 2026-11-30; PERF_NOTES.md, "Input, second pass").

Why a thread of our own and not grain's prefetch: grain's
``MapDataset.to_iter_dataset().prefetch``/``mp_prefetch`` produce host
elements of a sequential iterator (its state would have to be checkpointed
to resume, and ``mp_prefetch`` copies every batch between processes); here
the producer also does the host-to-device copy, and resuming needs nothing
but the step.  Flax's ``jax_utils.prefetch_to_device`` is the same idea for
an iterator, without error propagation or a clean stop.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Mapping
from typing import Any, Self

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from emobed_jax import parallel

_POLL_S = 0.1  # how often a blocked producer/consumer checks that the other is alive


class _Failed:
  """The producer's exception, delivered to the consumer at that step."""

  def __init__(self, error: BaseException):
    self.error = error


class DevicePrefetch:
  """``batches[step]`` sharded over the local devices, ``depth`` steps ahead.

  Args:
    batches: indexable by the step (``batches[step]`` -> ``{name: array
      [B, ...]}`` host numpy arrays, ``B`` divisible by the device count).
    start: the first step read (a resumed run: the restored step).
    stop: one past the last step read.
    depth: how many batches may wait on the devices ahead of the loop
      (>= 1).  Each costs one batch of device memory.
    devices: the devices of the ``pmap`` (default: all local devices).
    check: optional ``check(host_batch)`` run on the first batch before it is
      placed (e.g. :func:`emobed_jax.train.check_batch`); what it raises
      reaches the consumer at ``start``.

  Reading: ``feed[step]`` returns ``{name: jax.Array [n, B / n, ...]}``
  (sharded over the ``n`` devices along the leading axis; dtypes as in the
  host batch).  Steps must be read in order, from ``start``; another step
  raises ``ValueError``, and reading past ``stop`` raises ``IndexError``.
  An exception raised by ``batches[step]`` (or ``check``) is raised by
  ``feed[step]``, with its own traceback, and nothing after it is read.

  Stopping: :meth:`close` (or leaving a ``with`` block, also on an
  exception or ``KeyboardInterrupt``) stops the thread and drops the batches
  read ahead; it returns once the thread has ended (at most one
  ``batches[step]`` later).
  """

  def __init__(self, batches: Any, start: int, stop: int, *, depth: int = 2,
               devices=None, check: Callable[[Mapping[str, Any]], None] | None = None):
    if depth < 1:
      raise ValueError(f"depth: expected >= 1, got {depth}")
    self._devices = list(devices or jax.local_devices())
    self._sharding = NamedSharding(parallel.local_mesh(self._devices),
                                   PartitionSpec(parallel.AXIS))
    self._batches, self._check = batches, check
    # Batches that can cut each device's block into its own aligned buffers
    # (input_pipeline.WindowBatches) skip a host copy per step (place_shards).
    self._by_shard = callable(getattr(batches, "shards", None))
    self._next, self._stop = start, stop
    self._queue: queue.Queue = queue.Queue(maxsize=depth)
    self._closing = threading.Event()
    self._thread = threading.Thread(target=self._produce, args=(start, stop),
                                    name="DevicePrefetch", daemon=True)
    self._thread.start()

  def place(self, batch: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
    """One host batch -> ``[n, B / n, ...]`` arrays on the devices (the
    producer's work for one step; public for tests and the benchmark)."""
    sharded = parallel.shard_batch(dict(batch), len(self._devices))
    return jax.device_put(sharded, self._sharding)

  def place_shards(self, shards: list[Mapping[str, np.ndarray]]) -> dict[str, jax.Array]:
    """Per-device host blocks (``shards[i]`` for device ``i``, e.g.
    :meth:`emobed_jax.input_pipeline.WindowBatches.shards`) -> the arrays
    :meth:`place` makes of their concatenation.  Each block goes to its own
    device with one ``device_put``; on a CPU, 64-byte-aligned blocks become
    the device buffers without a copy."""
    if len(shards) != len(self._devices):
      raise ValueError(f"{len(shards)} shards for {len(self._devices)} devices")
    out = {}
    for k in shards[0]:
      parts = [jax.device_put(s[k][None], d) for s, d in zip(shards, self._devices)]
      shape = (len(parts),) + tuple(shards[0][k].shape)
      out[k] = jax.make_array_from_single_device_arrays(shape, self._sharding, parts)
    return out

  def _put(self, item) -> bool:
    while not self._closing.is_set():
      try:
        self._queue.put(item, timeout=_POLL_S)
        return True
      except queue.Full:
        continue
    return False

  def _produce(self, start: int, stop: int) -> None:
    for step in range(start, stop):
      if self._closing.is_set():
        return
      try:
        if self._by_shard:
          if step == start and self._check is not None:
            self._check(self._batches[step])   # the whole batch, once
          item = (step, self.place_shards(self._batches.shards(step, len(self._devices))))
        else:
          host = self._batches[step]
          if step == start and self._check is not None:
            self._check(host)
          item = (step, self.place(host))
      except BaseException as e:  # noqa: BLE001 - delivered to the consumer, re-raised there
        self._put((step, _Failed(e)))
        return
      if not self._put(item):
        return

  def __getitem__(self, step: int) -> dict[str, jax.Array]:
    if step >= self._stop:
      raise IndexError(f"step {step}: the feed ends at step {self._stop}")
    if step != self._next:
      raise ValueError(f"step {step}: the feed is read in order; expected step {self._next}")
    while True:
      try:
        got_step, item = self._queue.get(timeout=_POLL_S)
        break
      except queue.Empty:
        if not self._thread.is_alive() and self._queue.empty():
          raise RuntimeError(f"step {step}: the prefetch thread ended without a batch "
                             "(closed?)") from None
    if isinstance(item, _Failed):
      self._next = self._stop  # nothing more will come
      raise item.error
    assert got_step == step, (got_step, step)  # one producer, FIFO: never fails
    self._next = step + 1
    return item

  def close(self) -> None:
    """Stop the producer, drop what it read ahead, wait for it to end."""
    self._closing.set()
    while self._thread.is_alive():
      try:
        while True:
          self._queue.get_nowait()
      except queue.Empty:
        pass
      self._thread.join(timeout=_POLL_S)

  def __enter__(self) -> Self:
    return self

  def __exit__(self, *exc) -> None:
    self.close()
