"""Training windows cut on the devices: the training split placed once, each
step's windows taken from it inside the pmapped step (``--input_feed=device``).

The host then sends only each step's window positions (``start``, ``length``:
``[b]`` int32 per step, from :meth:`WindowBatches.window_ids`, so the order is
still grain's, a pure function of ``(seed, step)``), instead of the windows
themselves (``b x W x (Dt + Da + D)`` float32: 20 MB per step at B=32, W=300,
RECOLA widths 176/336).  That matters where the step is fast and the host
slow to feed it: the host path (``input_pipeline.WindowBatches`` through
``prefetch.DevicePrefetch``, one producer thread) cuts and places 1.5-2.1 M
frames/s at these widths on this project's 2-core machine (``pipeline`` rows
of ``launch/benchmark.py``, 2026-11-30), while the H200 step of
``benchmarks/`` consumes 2.3-7.9 M frames/s.  On a CPU both paths do the same
copy on the same cores (see ``launch/benchmark.py``'s loop rows, which measure
both), so ``--input_feed=auto`` keeps the host path there.

Memory: every device holds the whole training split of its process at both
widths (RECOLA train: about 0.14 GB), plus ``W`` zero rows.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from emobed_jax import parallel


def pad_frames(frames: Mapping[str, np.ndarray], window: int) -> dict[str, np.ndarray]:
  """``WindowBatches.frames`` plus ``window`` zero rows at the end, so that no
  window's ``dynamic_slice`` is clamped (``lax.dynamic_slice`` shifts a
  slice that would leave the array back inside it)."""
  return {k: np.concatenate([v, np.zeros((window,) + v.shape[1:], v.dtype)])
          for k, v in frames.items()}


def cut_windows(frames: Mapping[str, jax.Array], start: jax.Array, length: jax.Array,
                window: int) -> dict[str, jax.Array]:
  """The windows ``[start, start + length)`` of :func:`pad_frames`'s arrays.

  Args:
    frames: ``{name: [N + window, ...]}`` (``target``, ``labels``, ``aux``).
    start: ``[b]`` int32 first frame of each window in ``frames``.
    length: ``[b]`` int32 real frames of each window (<= ``window``).
    window: ``W``.

  Returns:
    ``{name: [b, W, ...]}`` with the frames past ``length`` zero, and
    ``mask [b, W]`` float32 (1 for real frames): the values of
    ``WindowBatches[step]`` for its ``window_ids(step)``, bit for bit.
  """
  valid = jnp.arange(window)[None, :] < length[:, None]

  def one(x, s):
    return jax.lax.dynamic_slice(x, (s,) + (0,) * (x.ndim - 1), (window,) + x.shape[1:])
  out = {k: jnp.where(valid[..., None], jax.vmap(one, (None, 0))(x, start), 0.0)
         for k, x in frames.items()}
  out["mask"] = valid.astype(jnp.float32)
  return out


class WindowIds:
  """A :class:`~emobed_jax.input_pipeline.WindowBatches`'s windows of each
  step as positions, for :class:`emobed_jax.prefetch.DevicePrefetch`:
  ``ids[step]`` -> ``{"start", "length"}`` ``[b]`` int32 (this process's rows).

  The table of every step from ``start`` on is filled by a background thread
  from construction, while the step compiles: grain's shuffle costs 25-90 us
  per window (a C++ call per index plus its per-element bookkeeping; 2 ms per
  B=32 and 6 ms per B=128 step on this project's 2-core machine), which
  would cap one thread at 4.4-6.5 M frames/s of positions at T=300, below the
  fastest H200 step of ``benchmarks/`` (7.9 M frames/s).  Reading a filled
  step is a table lookup; a step not yet filled waits for it.  The table
  holds ``2 x b`` int32 per step (a RECOLA run of 30 epochs at B=32: 0.3 MB).

  Args:
    batches: the run's ``WindowBatches``.
    start: the first step read (a resumed run: the restored step).

  Raises (from ``ids[step]``): ``IndexError`` for a step outside
  ``[start, len(batches))``; whatever ``batches.window_ids`` raised while
  filling (at the step that failed).
  """

  def __init__(self, batches, start: int = 0):
    self.batches, self.start = batches, start
    b = len(batches.window_ids(start)) if start < len(batches) else 0
    self._table = np.zeros((max(len(batches) - start, 0), 2, b), np.int32)
    self._filled = 0                      # steps start .. start + _filled - 1 are in
    self._error: BaseException | None = None
    self._cond = threading.Condition()
    self._closing = threading.Event()
    self._thread = threading.Thread(target=self._fill, name="WindowIds", daemon=True)
    self._thread.start()

  def _fill(self) -> None:
    for i in range(len(self._table)):
      if self._closing.is_set():
        return
      try:
        ids = self.batches.window_ids(self.start + i)
        self._table[i, 0] = self.batches.start[ids]
        self._table[i, 1] = self.batches.length[ids]
      except BaseException as e:  # noqa: BLE001 - re-raised by __getitem__ at its step
        with self._cond:
          self._error = e
          self._cond.notify_all()
        return
      with self._cond:
        self._filled = i + 1
        self._cond.notify_all()

  def __len__(self) -> int:
    return len(self.batches)

  def __getitem__(self, step: int) -> dict[str, np.ndarray]:
    i = step - self.start
    if not 0 <= i < len(self._table):
      raise IndexError(f"step {step}: positions are filled for steps {self.start} to "
                       f"{len(self.batches) - 1}")
    with self._cond:
      while self._filled <= i:
        if self._error is not None:
          raise self._error
        if self._closing.is_set():
          raise RuntimeError(f"step {step}: WindowIds was closed")
        self._cond.wait()
    return {"start": self._table[i, 0].copy(), "length": self._table[i, 1].copy()}

  def close(self) -> None:
    """Stop filling (a run that ends early); returns once the thread ended."""
    self._closing.set()
    with self._cond:
      self._cond.notify_all()
    self._thread.join()


def pmap_window_step(step_fn: Callable, frames: Mapping[str, np.ndarray], window: int,
                     devices=None) -> Callable[[Any, Mapping[str, jax.Array], Any], Any]:
  """The pmapped train step fed by window positions instead of windows.

  Args:
    step_fn: ``(state, batch, rng) -> (state, metrics)`` as for
      :func:`emobed_jax.parallel.pmap_train_step`.
    frames: ``WindowBatches.frames`` (host numpy); copied to every device
      once, here.
    window: ``W``, the training window length in frames.
    devices: as in :func:`emobed_jax.parallel.local_mesh`.

  Returns:
    ``p_step(state, ids, rng)`` with ``ids`` = :class:`WindowIds`'s
    ``{"start", "length"}`` split over the devices (``[n, b / n]``); state
    replicated and donated, outputs unmapped, like ``pmap_train_step``'s.
  """
  on_dev = parallel.replicate(pad_frames(frames, window), devices)

  def fn(state, fr, ids, rng):
    return step_fn(state, cut_windows(fr, ids["start"], ids["length"], window), rng)
  p = jax.pmap(fn, axis_name=parallel.AXIS, in_axes=(None, None, 0, None),
               out_axes=(None, None), donate_argnums=(0,), devices=devices)
  return lambda state, ids, rng: p(state, on_dev, ids, rng)
