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
bulk matmuls around them are shared):

* :func:`cell_scan` - the forward recurrence (``rnn_kernels._cell_scan``);
* :func:`cell_backward_loop` - the reverse recurrence of the backward pass
  (the loop of ``rnn_kernels._cell_backward``).

Backends: Triton (``jax.experimental.pallas.triton``) on GPUs; on any other
platform, or with ``interpret=True``, the Pallas interpreter runs the same
kernel (slowly: for tests).  Constraints of the Triton backend: ``H`` a
power of two >= 16; the batch is padded to a multiple of ``BLOCK_B`` (padded
rows are masked, so they stay zero).  Matmul precision is the platform
default (TF32 on recent NVIDIA GPUs, as XLA's dots and cuDNN's RNNs under
PyTorch's defaults).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

BLOCK_B = 16   # rows per program (the smallest M of a Triton dot)


def supported(hidden: int) -> bool:
  """Whether the kernels support this hidden size (a power of two >= 16)."""
  return hidden >= 16 and hidden & (hidden - 1) == 0


def _pallas():
  from jax.experimental import pallas as pl
  return pl


def _compiler_params():
  from jax.experimental.pallas import triton as pltriton
  return pltriton.CompilerParams(num_warps=4, num_stages=1)


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
# Forward.


def _fwd_kernel(xi_ref, xf_ref, xg_ref, xo_ref, m_ref, ui_ref, uf_ref, ug_ref, uo_ref,
                *out_refs, store: bool):
  steps, bb, h = xi_ref.shape
  ui, uf, ug, uo = ui_ref[...], uf_ref[...], ug_ref[...], uo_ref[...]

  def body(t, carry):
    c, hprev = carry
    ai = jnp.tanh(xi_ref[t] + jnp.dot(hprev, ui))
    af = jnp.tanh(xf_ref[t] + jnp.dot(hprev, uf))
    g = jnp.tanh(xg_ref[t] + jnp.dot(hprev, ug))
    ao = jnp.tanh(xo_ref[t] + jnp.dot(hprev, uo))
    c_new = (0.5 * af + 0.5) * c + (0.5 * ai + 0.5) * g
    h_new = (0.5 * ao + 0.5) * jnp.tanh(c_new)
    keep = m_ref[t][:, None] > 0
    c_new = jnp.where(keep, c_new, c)
    h_new = jnp.where(keep, h_new, hprev)
    out_refs[0][t] = h_new
    if store:
      out_refs[1][t] = c_new
      out_refs[2][t] = ai
      out_refs[3][t] = af
      out_refs[4][t] = g
      out_refs[5][t] = ao
    return c_new, h_new

  zeros = jnp.zeros((bb, h), jnp.float32)
  lax.fori_loop(0, steps, body, (zeros, zeros))


def cell_scan(xs, us, mask, store: bool, interpret: bool | None = None):
  """Forward recurrence; same contract as ``rnn_kernels._cell_scan``.

  ``xs``: four ``[T, B, H]`` scaled gate inputs; ``us [H, 4H]`` the scaled
  recurrent kernel; ``mask [T, B, 1]``.  Returns ``ys`` or, with ``store``,
  ``(ys, cs, acts [T, B, 4H])``.
  """
  pl = _pallas()
  t, b, h = xs[0].shape
  if not supported(h):
    raise ValueError(f"rnn_pallas: hidden size {h} is not a power of two >= 16")
  bp = _padded(b)
  xs = [_pad_batch(x.astype(jnp.float32), bp) for x in xs]
  m = _pad_batch(mask[..., 0].astype(jnp.float32), bp)
  u4 = [us[:, k * h:(k + 1) * h].astype(jnp.float32) for k in range(4)]
  seq = pl.BlockSpec((t, BLOCK_B, h), lambda i: (0, i, 0))
  mspec = pl.BlockSpec((t, BLOCK_B), lambda i: (0, i))
  wspec = pl.BlockSpec((h, h), lambda i: (0, 0))
  n_out = 6 if store else 1
  out = pl.pallas_call(
      functools.partial(_fwd_kernel, store=store),
      out_shape=[jax.ShapeDtypeStruct((t, bp, h), jnp.float32)] * n_out,
      grid=(bp // BLOCK_B,),
      in_specs=[seq] * 4 + [mspec] + [wspec] * 4,
      out_specs=[seq] * n_out,
      compiler_params=_compiler_params(),
      interpret=_interpret(interpret),
      name="lstm_forward",
  )(*xs, m, *u4)
  out = [o[:, :b] for o in out]
  if not store:
    return out[0]
  ys, cs, ai, af, g, ao = out
  return ys, cs, jnp.concatenate([ai, af, g, ao], axis=-1)


# ---------------------------------------------------------------------------
# Backward (the reverse loop only).


def _bwd_kernel(dy_ref, a_ref, fk_ref, ci_ref, cf_ref, cg_ref, co_ref, p_ref,
                ui_ref, uf_ref, ug_ref, uo_ref, dc_out, dh_out):
  steps, bb, h = dy_ref.shape
  ui, uf, ug, uo = ui_ref[...], uf_ref[...], ug_ref[...], uo_ref[...]

  def body(k, carry):
    dc, dh_next = carry
    t = steps - 1 - k
    dh = dy_ref[t] + dh_next
    dc_new = dc + dh * a_ref[t]
    back = (jnp.dot(dc_new * ci_ref[t], ui) + jnp.dot(dc_new * cf_ref[t], uf) +
            jnp.dot(dc_new * cg_ref[t], ug) + jnp.dot(dh * co_ref[t], uo))
    dc_out[t] = dc_new
    dh_out[t] = dh
    return dc_new * fk_ref[t], back + dh * p_ref[t][:, None]

  zeros = jnp.zeros((bb, h), jnp.float32)
  lax.fori_loop(0, steps, body, (zeros, zeros))


def cell_backward_loop(u, dys, factors, passthrough, interpret: bool | None = None):
  """The reverse loop of ``rnn_kernels._cell_backward``.

  ``u [H, 4H]`` (unscaled), ``dys [T, B, H]``, ``factors = (a, fk, ci, cf,
  cg, co)`` each ``[T, B, H]``, ``passthrough [T, B, 1]``.  Returns the
  per-step ``(dc, dh)`` stacks, ``[T, B, H]`` each.
  """
  pl = _pallas()
  t, b, h = dys.shape
  bp = _padded(b)
  dys = _pad_batch(dys.astype(jnp.float32), bp)
  factors = [_pad_batch(jnp.broadcast_to(f, (t, b, h)).astype(jnp.float32), bp)
             for f in factors]
  p = _pad_batch(passthrough[..., 0].astype(jnp.float32), bp, value=1.0)
  ut = [u[:, k * h:(k + 1) * h].T.astype(jnp.float32) for k in range(4)]
  seq = pl.BlockSpec((t, BLOCK_B, h), lambda i: (0, i, 0))
  mspec = pl.BlockSpec((t, BLOCK_B), lambda i: (0, i))
  wspec = pl.BlockSpec((h, h), lambda i: (0, 0))
  dcs, dhs = pl.pallas_call(
      _bwd_kernel,
      out_shape=[jax.ShapeDtypeStruct((t, bp, h), jnp.float32)] * 2,
      grid=(bp // BLOCK_B,),
      in_specs=[seq] * 7 + [mspec] + [wspec] * 4,
      out_specs=[seq] * 2,
      compiler_params=_compiler_params(),
      interpret=_interpret(interpret),
      name="lstm_backward",
  )(dys, *factors, p, *ut)
  return dcs[:, :b], dhs[:, :b]
