"""The LSTM recurrence as Pallas kernels: one kernel launch per layer and pass.

On a GPU the ``lax.scan`` recurrence of :mod:`emobed_jax.rnn_kernels` costs a
few kernel launches per time step (~12 us per step on an H200, measured in
PERF_NOTES.md), whatever the batch size.  These kernels run the whole time
loop inside one kernel instead: each program owns a block of ``BLOCK_B``
sequences, keeps its recurrent weights and its ``[BLOCK_B, H]`` state on
chip, and per step does four ``[BLOCK_B, H] @ [H, H]`` dots (one per gate)
and the gate arithmetic, reading that step's precomputed input projections.

They compute exactly what the scan loops of ``rnn_kernels`` compute, with
the same inputs and outputs (so the hand-written backward pass and the
bulk matmuls around them are shared, and the cell's maths is
:mod:`emobed_jax.lstm_cell`'s):

* :func:`stack_forward` - the forward recurrence of a stack of layers as
  one wavefront (``rnn_kernels.lstm_stack``); :func:`cell_scan` is one layer
  (``rnn_kernels._cell_scan``);
* :func:`stack_backward_loop` - the reverse recurrence of the backward pass;
  :func:`cell_backward_loop` is one layer (the loop of
  ``rnn_kernels._cell_backward``).

Backends: Triton (``jax.experimental.pallas.triton``) on GPUs; on any other
platform, or with ``interpret=True``, Pallas's interpret mode runs the same
kernel as ordinary XLA loops (measured on this CPU: training as fast as
``scan``, evaluation 0.77x; ``rnn_impl="auto"`` picks ``scan`` there).
Constraints of the Triton backend: ``H`` a power of two >= 16
(:func:`supported`); the batch is padded to a multiple of ``BLOCK_B``
(padded rows are masked, so they stay zero).  Inputs may be any float
dtype; the kernels compute and return float32.  Matmul precision is the platform
default (TF32 on recent NVIDIA GPUs, as XLA's dots and cuDNN's RNNs under
PyTorch's defaults).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from emobed_jax.lstm_cell import cell_update, pallas_supports_hidden

BLOCK_B = 16   # rows per program (the smallest M of a Triton dot)
#: Warps per program (Triton), a constant: 1 warp measured 3-4x slower
#: (PERF_NOTES.md, idea 21).
NUM_WARPS = 4


#: Whether the kernels take this hidden size (a power of two >= 16).
supported = pallas_supports_hidden


def _compiler_params(num_warps: int):
  return pltriton.CompilerParams(num_warps=num_warps, num_stages=1)


def _check_hidden(h: int) -> None:
  if not supported(h):
    raise ValueError(f"rnn_pallas: hidden size {h} is not a power of two >= 16")


def _interpret(interpret: bool | None) -> bool:
  if interpret is not None:
    return interpret
  return jax.default_backend() != "gpu"


def _pad_batch(x, b_pad, value=0.0):
  b = x.shape[1]
  if b_pad == b:
    return x
  pad = [(0, 0)] * x.ndim
  pad[1] = (0, b_pad - b)
  return jnp.pad(x, pad, constant_values=value)


def _padded(b: int) -> int:
  return -(-b // BLOCK_B) * BLOCK_B


# ---------------------------------------------------------------------------
# One layer: the stack kernels below with L = 1.


def cell_scan(xs, us, mask, store: bool, interpret: bool | None = None):
  """One LSTM layer's forward recurrence (:func:`stack_forward` with one
  layer); same contract as ``rnn_kernels._cell_scan``.

  Args:
    xs: four ``[T, B, H]`` gate inputs ``(xi, xf, xg, xo)`` in the tanh form
      (:mod:`emobed_jax.lstm_cell`: ``x @ kernel + bias`` scaled by
      ``gate_scale``, forget bias included).
    us: ``[H, 4H]`` recurrent kernel, scaled (``lstm_cell.scaled(u)``).
    mask: ``[T, B, 1]``, 1 for a real frame, 0 where the state holds.
    store: also return what the backward pass needs.
    interpret: Pallas interpret mode; ``None``: off on a GPU, on elsewhere.

  Returns:
    float32 ``ys [T, B, H]`` (hidden states) or, with ``store``, ``(ys, cs
    [T, B, H] cell states, acts [T, B, 4H] the gates' tanh activations)``.

  Raises:
    ValueError: ``H`` is not a power of two >= 16 (:func:`supported`).
  """
  out = stack_forward(xs, mask, [us], [], [], store, interpret)
  return out[0] if store else out


def cell_backward_loop(u, dys, factors, passthrough, interpret: bool | None = None):
  """One LSTM layer's reverse loop (the loop of
  ``rnn_kernels._cell_backward``; :func:`stack_backward_loop` with one layer).

  Args:
    u: ``[H, 4H]`` recurrent kernel (unscaled).
    dys: ``[T, B, H]`` cotangent of the layer's outputs.
    factors: ``(a, fk, ci, cf, cg, co)``, each ``[T, B, H]``
      (``lstm_cell.backward_factors``).
    passthrough: ``[T, B, 1]``, 1 on masked steps.
    interpret: as in :func:`cell_scan`.

  Returns:
    float32 ``(dc, dh)``, each ``[T, B, H]``: per step, the cell state's and
    the hidden state's cotangent.

  Raises:
    ValueError: ``H`` is not a power of two >= 16.
  """
  return stack_backward_loop([u], [], dys, [factors], passthrough, interpret)[0]


# ---------------------------------------------------------------------------
# A stack of layers as one wavefront kernel.
#
# At loop step ``k`` layer ``l`` processes time ``t = k - l``: its input, the
# hidden state of layer ``l - 1`` at time ``t``, is that layer's state from
# the previous step (still in the carry).  So all layers advance together in
# ``T + L - 1`` steps of one kernel, and a step's ``4 L`` (forward) or
# ``4 (2L - 1)`` (backward) small dots are independent of each other.  A
# layer is masked outside ``0 <= t < T`` (its state holds), and stores only
# inside it.  Per-layer outputs are time-aligned ``[T, B, H]`` arrays.


def _wave_step_mask(k, l, steps):
  t = k - l
  valid = jnp.logical_and(t >= 0, t < steps)
  tc = jnp.clip(t, 0, steps - 1)
  return t, tc, valid


def _stack_fwd_kernel(*refs, num_layers: int, store: bool):
  nl = num_layers
  x_refs, m_ref = refs[:4], refs[4]
  w = refs[5:]
  u_refs = [w[4 * l:4 * l + 4] for l in range(nl)]            # per layer, per gate
  k_refs = [None] + [w[4 * nl + 4 * (l - 1):4 * nl + 4 * l] for l in range(1, nl)]
  nb = 4 * nl + 4 * (nl - 1)
  b_refs = [None] + [w[nb + 4 * (l - 1):nb + 4 * l] for l in range(1, nl)]
  outs = w[nb + 4 * (nl - 1):]
  steps, bb, h = x_refs[0].shape
  us = [[r[...] for r in u_refs[l]] for l in range(nl)]
  ks = [None] + [[r[...] for r in k_refs[l]] for l in range(1, nl)]
  bs = [None] + [[r[...][None, :] for r in b_refs[l]] for l in range(1, nl)]

  def body(k, carry):
    new = []
    for l in range(nl):
      c, hprev = carry[2 * l], carry[2 * l + 1]
      t, tc, valid = _wave_step_mask(k, l, steps)
      pre = []
      for g in range(4):
        z = jnp.dot(hprev, us[l][g])
        if l == 0:
          z = z + x_refs[g][tc]
        else:
          z = z + jnp.dot(carry[2 * l - 1], ks[l][g]) + bs[l][g]
        pre.append(jnp.tanh(z))
      ai, af, g_, ao = pre
      keep = jnp.logical_and(valid, m_ref[tc] > 0)[:, None]
      c_new, h_new = cell_update(ai, af, g_, ao, c, hprev, keep)
      new += [c_new, h_new]

      if store:
        o = outs[6 * l:6 * l + 6]

        @pl.when(valid)
        def _(o=o, tc=tc, h_new=h_new, c_new=c_new, acts=(ai, af, g_, ao)):
          o[0][tc] = h_new
          o[1][tc] = c_new
          for j in range(4):
            o[2 + j][tc] = acts[j]
      elif l == nl - 1:
        @pl.when(valid)
        def _(tc=tc, h_new=h_new):
          outs[0][tc] = h_new
    return tuple(new)

  zeros = jnp.zeros((bb, h), jnp.float32)
  lax.fori_loop(0, steps + nl - 1, body, (zeros,) * (2 * nl))


def _gate_tiles(w, h):
  return [w[:, k * h:(k + 1) * h].astype(jnp.float32) for k in range(4)]


def stack_forward(x0s, mask, us, ks, bs, store: bool, interpret: bool | None = None):
  """Forward recurrence of an LSTM stack of ``L`` layers as one wavefront
  kernel (one launch; ``B`` padded to a multiple of :data:`BLOCK_B`).

  Args:
    x0s: layer 0's four ``[T, B, H]`` gate inputs in the tanh form (as
      :func:`cell_scan`'s ``xs``).
    mask: ``[T, B, 1]``, 1 for a real frame, 0 where every layer's state
      holds.
    us: ``L`` scaled recurrent kernels ``[H, 4H]`` (``lstm_cell.scaled``).
    ks: ``L - 1`` scaled input kernels ``[H, 4H]`` of layers 1..L-1
      (kernel times ``lstm_cell.gate_scale``).
    bs: ``L - 1`` scaled biases ``[4H]`` of layers 1..L-1, forget bias
      included (``lstm_cell.scaled(u, bias)[1]``).
    store: also return every layer's states and activations.
    interpret: as in :func:`cell_scan`.

  Returns:
    float32: the last layer's ``ys [T, B, H]`` or, with ``store``, per layer
    ``(hs [T, B, H], cs [T, B, H], acts [T, B, 4H])``, time-aligned.

  Raises:
    ValueError: ``H`` is not a power of two >= 16.
  """
  t, b, h = x0s[0].shape
  nl = len(us)
  _check_hidden(h)
  bp = _padded(b)
  x0s = [_pad_batch(x.astype(jnp.float32), bp) for x in x0s]
  m = _pad_batch(mask[..., 0].astype(jnp.float32), bp)
  weights = [tile for u in us for tile in _gate_tiles(u, h)]
  weights += [tile for k in ks for tile in _gate_tiles(k, h)]
  biases = [bl[k * h:(k + 1) * h].astype(jnp.float32) for bl in bs for k in range(4)]
  seq = pl.BlockSpec((t, BLOCK_B, h), lambda i: (0, i, 0))
  mspec = pl.BlockSpec((t, BLOCK_B), lambda i: (0, i))
  wspec = pl.BlockSpec((h, h), lambda i: (0, 0))
  bspec = pl.BlockSpec((h,), lambda i: (0,))
  n_out = 6 * nl if store else 1
  out = pl.pallas_call(
      functools.partial(_stack_fwd_kernel, num_layers=nl, store=store),
      out_shape=[jax.ShapeDtypeStruct((t, bp, h), jnp.float32)] * n_out,
      grid=(bp // BLOCK_B,),
      in_specs=[seq] * 4 + [mspec] + [wspec] * len(weights) + [bspec] * len(biases),
      out_specs=[seq] * n_out,
      compiler_params=_compiler_params(NUM_WARPS),
      interpret=_interpret(interpret),
      name="lstm_stack_forward",
  )(*x0s, m, *weights, *biases)
  out = [o[:, :b] for o in out]
  if not store:
    return out[0]
  return [(out[6 * l], out[6 * l + 1], jnp.concatenate(out[6 * l + 2:6 * l + 6], axis=-1))
          for l in range(nl)]


def _stack_bwd_kernel(*refs, num_layers: int):
  nl = num_layers
  dy_ref, p_ref = refs[0], refs[1]
  f_refs = [refs[2 + 6 * l:2 + 6 * l + 6] for l in range(nl)]  # a, fk, ci, cf, cg, co
  w = refs[2 + 6 * nl:]
  ut_refs = [w[4 * l:4 * l + 4] for l in range(nl)]
  kt_refs = [None] + [w[4 * nl + 4 * (l - 1):4 * nl + 4 * l] for l in range(1, nl)]
  outs = w[4 * nl + 4 * (nl - 1):]
  steps, bb, h = dy_ref.shape
  uts = [[r[...] for r in ut_refs[l]] for l in range(nl)]
  kts = [None] + [[r[...] for r in kt_refs[l]] for l in range(1, nl)]
  total = steps + nl - 1

  def body(j, carry):
    k = total - 1 - j
    dzs, dhs, new_dc = [], [], []
    for l in range(nl):
      dc, dh_next = carry[2 * l], carry[2 * l + 1]
      t, tc, valid = _wave_step_mask(k, l, steps)
      v = valid.astype(jnp.float32)
      a, fk, ci, cf, cg, co = (r[tc] for r in f_refs[l])
      dh = dh_next
      if l == nl - 1:
        dh = dh + dy_ref[tc] * v
      dc_new = dc + dh * (a * v)
      dzs.append((dc_new * (ci * v), dc_new * (cf * v), dc_new * (cg * v), dh * (co * v)))
      dhs.append(dh)
      new_dc.append(jnp.where(valid, dc_new * fk, dc_new))

      @pl.when(valid)
      def _(l=l, tc=tc, dc_new=dc_new, dh=dh):
        outs[2 * l][tc] = dc_new
        outs[2 * l + 1][tc] = dh
    new = []
    for l in range(nl):
      t, tc, valid = _wave_step_mask(k, l, steps)
      p = jnp.where(valid, p_ref[tc], 1.0)[:, None]
      back = dhs[l] * p
      for g in range(4):
        back = back + jnp.dot(dzs[l][g], uts[l][g])
        if l + 1 < nl:
          back = back + jnp.dot(dzs[l + 1][g], kts[l + 1][g])
      new += [new_dc[l], back]
    return tuple(new)

  zeros = jnp.zeros((bb, h), jnp.float32)
  lax.fori_loop(0, total, body, (zeros,) * (2 * nl))


def stack_backward_loop(us, ks, dys, factors, passthrough, interpret: bool | None = None):
  """The reverse wavefront loop of an LSTM stack of ``L`` layers (one launch).

  Args:
    us: ``L`` recurrent kernels ``[H, 4H]`` (unscaled).
    ks: ``L - 1`` input kernels ``[H, 4H]`` of layers 1..L-1 (unscaled).
    dys: ``[T, B, H]`` cotangent of the last layer's outputs.
    factors: per layer ``(a, fk, ci, cf, cg, co)``, each ``[T, B, H]``
      time-aligned (``lstm_cell.backward_factors``).
    passthrough: ``[T, B, 1]``, 1 on masked steps.
    interpret: as in :func:`cell_scan`.

  Returns:
    float32, per layer ``(dc, dh)``, each ``[T, B, H]``.

  Raises:
    ValueError: ``H`` is not a power of two >= 16.
  """
  t, b, h = dys.shape
  nl = len(us)
  _check_hidden(h)
  bp = _padded(b)
  dys = _pad_batch(dys.astype(jnp.float32), bp)
  flat = [_pad_batch(jnp.broadcast_to(f, (t, b, h)).astype(jnp.float32), bp)
          for fs in factors for f in fs]
  p = _pad_batch(passthrough[..., 0].astype(jnp.float32), bp, value=1.0)
  weights = [tile.T for u in us for tile in _gate_tiles(u, h)]
  weights += [tile.T for k in ks for tile in _gate_tiles(k, h)]
  seq = pl.BlockSpec((t, BLOCK_B, h), lambda i: (0, i, 0))
  mspec = pl.BlockSpec((t, BLOCK_B), lambda i: (0, i))
  wspec = pl.BlockSpec((h, h), lambda i: (0, 0))
  out = pl.pallas_call(
      functools.partial(_stack_bwd_kernel, num_layers=nl),
      out_shape=[jax.ShapeDtypeStruct((t, bp, h), jnp.float32)] * (2 * nl),
      grid=(bp // BLOCK_B,),
      in_specs=[seq, mspec] + [seq] * len(flat) + [wspec] * len(weights),
      out_specs=[seq] * (2 * nl),
      compiler_params=_compiler_params(NUM_WARPS),
      interpret=_interpret(interpret),
      name="lstm_stack_backward",
  )(dys, p, *flat, *weights)
  out = [o[:, :b] for o in out]
  return [(out[2 * l], out[2 * l + 1]) for l in range(nl)]
