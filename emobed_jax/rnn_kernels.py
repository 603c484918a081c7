"""The sequential part of the recurrent layers, as pure functions.

``models.Recurrent`` and ``models.Encoder`` compute the input projections in
bulk and hand the recurrence to these functions.  They are kept apart so
their speed can be worked on (custom backward passes, fused gates) without
touching the modules or the parameter layout.  The cell's maths (tanh form,
gate scales, state update, backward factors) is :mod:`emobed_jax.lstm_cell`,
shared with the Pallas kernels (:mod:`emobed_jax.rnn_pallas`).

Shapes (time-major): ``x [T, B, P]`` a layer's input, ``kernel [P, 4H]``,
``bias [4H]`` its input projection, ``u [H, 4H]`` the recurrent kernel,
``mask [T, B, 1]`` (a masked step holds the carry); outputs ``ys [T, B,
H]``.  LSTM gate order: i, f, g, o; the forget gate gets +1 bias inside.

* :func:`lstm_layer` - one LSTM layer, projection included, under one
  hand-written backward pass (``jax.custom_vjp``):

  - forward: four per-gate projections straight into ``[T, B, H]`` arrays,
    then one ``lax.scan`` with one ``[B, H] @ [H, 4H]`` matmul per step;
    every gate nonlinearity is a ``tanh``; for training it also stores the
    gates' ``tanh`` activations ``[T, B, 4H]`` and the cell states ``[T, B,
    H]`` (the hidden states are the output itself);
  - backward: every factor that does not depend on the incoming cotangent
    (gate derivatives, ``tanh(c)``, the mask) is computed for all steps at
    once, outside the recurrence; the reverse scan only does a few
    elementwise products and one ``[B, 4H] @ [4H, H]`` matmul per step; the
    gate cotangent ``dz`` is rebuilt in bulk and the weight gradients are
    one matmul each (instead of T small outer products inside the loop).

* :func:`lstm_stack` - a stack of LSTM layers as one wavefront recurrence.
* :func:`gru_scan` - the GRU recurrence (autodiff).

``impl="pallas"`` runs the loops as Pallas kernels (for GPUs), same inputs,
outputs and bulk parts.  The tests compare all of them with an autodiff
LSTM and float64 loops (``tests/``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from emobed_jax import rnn_pallas
from emobed_jax.lstm_cell import (backward_factors, cell_update, gate_factors, gate_scale,
                                  scaled, shift_in_zero)

#: Implementations of the loops (``lstm_layer(..., impl=)``, ``lstm_stack``).
LSTM_IMPLS = ("scan", "pallas")


# ---------------------------------------------------------------------------
# One layer's loops.
#
# Layout notes (XLA:CPU, measured in PERF_NOTES.md): inside a scan body every
# op is one kernel launch (~1-2 us each), and an elementwise fusion that
# slices a dynamic-slice of the wide ``[T, B, 4H]`` input is emitted slowly.
# So the input projections enter the scan as four per-gate ``[T, B, H]``
# arrays, the recurrent matmul is one ``[B, H] @ [H, 4H]`` dot, and the loop
# bodies stack as few outputs as possible.


def _cell_scan(xs, us, mask, unroll, store: bool, impl: str = "scan"):
  """The forward recurrence on per-gate inputs ``xs = (xi, xf, xg, xo)``
  (``[T, B, H]`` each, already scaled: 1/2 on the sigmoid gates, the forget
  bias included) and the scaled recurrent kernel ``us [H, 4H]``.

  Every gate nonlinearity is one ``tanh``: ``sigmoid(z) = (1 + tanh(z/2))/2``,
  so a step evaluates five ``tanh`` per unit and no ``exp``/divide.
  ``store``: also return the cell states ``[T, B, H]`` and the gates'
  ``tanh`` activations ``[T, B, 4H]`` (one stacked output per step: measured
  cheaper than four).  ``impl="pallas"``: the same recurrence as one Pallas
  kernel (:func:`rnn_pallas.cell_scan`, for GPUs).
  """
  if impl == "pallas":
    return rnn_pallas.cell_scan(xs, us, mask, store)
  h = us.shape[0]
  batch = xs[0].shape[1]

  def step(carry, inp):
    c, hprev = carry
    xi, xf, xg, xo, mt = inp
    z = hprev @ us
    ai = jnp.tanh(xi + z[:, :h])
    af = jnp.tanh(xf + z[:, h:2 * h])
    g = jnp.tanh(xg + z[:, 2 * h:3 * h])
    ao = jnp.tanh(xo + z[:, 3 * h:])
    c_new, h_new = cell_update(ai, af, g, ao, c, hprev, mt > 0)
    if store:
      return (c_new, h_new), (h_new, c_new, jnp.concatenate([ai, af, g, ao], axis=-1))
    return (c_new, h_new), h_new

  zeros = jnp.zeros((batch, h), us.dtype)
  _, out = lax.scan(step, (zeros, zeros), tuple(xs) + (mask,), unroll=unroll)
  return out


def _cell_backward(u, mask, cs, acts, dys, unroll, impl: str = "scan"):
  """Reverse recurrence; returns the gate cotangent ``dz [T, B, 4H]`` (with
  respect to the unscaled pre-activations ``x @ W + b + h @ u``).

  Per step, with ``i, f, g, o`` the gates and ``tc = tanh(c)``; a masked
  step has no gate gradient and passes the carry's cotangent through::

    dh      = dy + dh_next
    dc_new  = dc_next + dh * a                 a  = o (1 - tc^2)
    dz      = [dc_new ci, dc_new cf, dc_new cg, dh co]
              ci = g i(1-i), cf = c_prev f(1-f), cg = i (1-g^2), co = tc o(1-o)
    dh_prev = dz @ u.T                         (masked: dh)
    dc_prev = dc_new f                         (masked: dc_next)

  The factors that do not depend on the cotangent (``a``, ``f``, ``ci`` ..
  ``co``, the mask; :func:`lstm_cell.gate_factors`) are computed for all
  steps at once before the loop, so the loop body is a few multiply-adds,
  one ``[B, 4H] @ [4H, H]`` matmul and two stacked ``[B, H]`` outputs;
  ``dz`` is rebuilt in bulk afterwards.  (Computing the factors inside the
  loop instead was measured 0-10% slower.)
  """
  a, fk, ci, cf, cg, co, passthrough = backward_factors(mask, cs, acts)
  if impl == "pallas":
    dcs, dhs = rnn_pallas.cell_backward_loop(u, dys, (a, fk, ci, cf, cg, co), passthrough)
    return jnp.concatenate([dcs * ci, dcs * cf, dcs * cg, dhs * co], axis=-1)
  ut = u.T

  def step(carry, inp):
    dc, dh_next = carry
    dy, a_t, fk_t, ci_t, cf_t, cg_t, co_t, p_t = inp
    dh = dy + dh_next
    dc_new = dc + dh * a_t
    dz = jnp.concatenate([dc_new * ci_t, dc_new * cf_t, dc_new * cg_t, dh * co_t], axis=-1)
    return (dc_new * fk_t, dz @ ut + dh * p_t), (dc_new, dh)

  zeros = jnp.zeros(dys.shape[1:], dys.dtype)
  _, (dcs, dhs) = lax.scan(step, (zeros, zeros),
                           (dys, a, fk, ci, cf, cg, co, passthrough),
                           reverse=True, unroll=unroll)
  return jnp.concatenate([dcs * ci, dcs * cf, dcs * cg, dhs * co], axis=-1)


# ---------------------------------------------------------------------------
# A whole LSTM layer, time-major, input projection included.
#
# ``lstm_layer(x, kernel, bias, u, mask)`` computes an LSTM layer (Dense
# ``x @ kernel + bias`` then the recurrence) on time-major ``x [T, B, P]``,
# with one ``custom_vjp`` over the projection as well, so that:
#
# * the projection is four per-gate matmuls writing the ``[T, B, H]`` arrays
#   the scan reads directly (no ``[T, B, 4H]`` transposed/sliced copies; the
#   tanh-form's scales and the forget bias are folded into the kernels);
# * the backward pass gets ``dx``, ``dkernel``, ``dbias`` and ``du`` from the
#   gate cotangent with four matmuls.


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def _lstm_layer_vjp(x, kernel, bias, u, mask, unroll, impl):
  return _layer_forward(x, kernel, bias, u, mask, unroll, impl, store=False)


def _layer_forward(x, kernel, bias, u, mask, unroll, impl, store: bool):
  t, b, p = x.shape
  h = u.shape[0]
  s = gate_scale(h, x.dtype)
  us, bs = scaled(u, bias)
  ks = kernel * s
  x2 = x.reshape(t * b, p)
  # Four projections, each straight into the [T, B, H] array the scan reads
  # (measured: 5-15% faster in training than one [P, 4H] matmul + slices).
  xs = tuple((x2 @ ks[:, k * h:(k + 1) * h] + bs[k * h:(k + 1) * h]).reshape(t, b, h)
             for k in range(4))
  return _cell_scan(xs, us, mask, unroll, store, impl)


def _layer_fwd(x, kernel, bias, u, mask, unroll, impl):
  ys, cs, acts = _layer_forward(x, kernel, bias, u, mask, unroll, impl, store=True)
  return ys, (x, kernel, u, mask, ys, cs, acts)


def _layer_bwd(unroll, impl, res, dys):
  x, kernel, u, mask, ys, cs, acts = res
  t, b, p = x.shape
  h = u.shape[0]
  dz = _cell_backward(u, mask, cs, acts, dys, unroll, impl).reshape(t * b, 4 * h)
  dx = (dz @ kernel.T).reshape(t, b, p)
  dkernel = x.reshape(t * b, p).T @ dz
  dbias = jnp.sum(dz, axis=0)
  du = shift_in_zero(ys).reshape(t * b, h).T @ dz
  return dx, dkernel, dbias, du, jnp.zeros_like(mask)


_lstm_layer_vjp.defvjp(_layer_fwd, _layer_bwd)


def _check_layer(fn: str, l: int, kernel, bias, u, in_width: int, h: int) -> None:
  """``ValueError`` naming layer ``l`` unless its shapes are ``kernel [in_width,
  4H]``, ``bias [4H]``, ``u [H, 4H]``."""
  if u.shape != (h, 4 * h) or bias.shape != (4 * h,) or kernel.shape != (in_width, 4 * h):
    raise ValueError(f"{fn}: layer {l} has kernel {kernel.shape}, bias {bias.shape}, "
                     f"recurrent {u.shape}; expected ({in_width}, {4 * h}), ({4 * h},), "
                     f"({h}, {4 * h}) (input width {in_width}, layer width {h})")


def lstm_layer(x, kernel, bias, u, mask, unroll: int = 1, impl: str = "scan"):
  """One LSTM layer on time-major input, with a hand-written backward pass.

  Computes ``h_t = o_t * tanh(c_t)``, ``c_t = f_t * c_{t-1} + i_t * g_t``
  with ``[i, f, g, o] = [sig, sig(. + 1), tanh, sig](x_t @ kernel + bias +
  h_{t-1} @ u)`` (gate order i, f, g, o; +1 forget bias inside), from zero
  states; a masked step holds ``(c, h)``.  Differentiable (``jax.grad``,
  ``vmap``, ``jit``) with respect to ``x``, ``kernel``, ``bias`` and ``u``
  by its own VJP; ``mask`` gets a zero cotangent.

  Args:
    x: ``[T, B, P]`` float32 inputs, time-major (``T`` frames, ``B``
      sequences, ``P`` features).
    kernel: ``[P, 4H]`` input kernel (``models.Recurrent``'s
      ``input/kernel``).
    bias: ``[4H]`` input bias (``input/bias``).
    u: ``[H, 4H]`` recurrent kernel (``recurrent``).
    mask: ``[T, B, 1]`` float, 1 for a real frame, 0 for padding or a hole
      (the state holds; its output repeats the previous one, zeros before
      the first real frame).
    unroll: time steps per ``lax.scan`` iteration (``impl="scan"``; a
      speed knob, same values).
    impl: ``"scan"`` (``lax.scan`` loops) or ``"pallas"`` (the two loops as
      Pallas kernels, :mod:`emobed_jax.rnn_pallas`: Triton on a GPU,
      interpret mode elsewhere).

  Returns:
    ``ys [T, B, H]``, the hidden states, in ``x``'s dtype (float32 with
    ``impl="pallas"``).

  Raises:
    ValueError: ``impl`` is not one of ``LSTM_IMPLS``; the shapes of
      ``kernel``, ``bias``, ``u`` do not match ``x`` and each other;
      ``impl="pallas"`` with a hidden size the kernels do not take
      (:func:`lstm_cell.pallas_supports_hidden`).
  """
  if impl not in LSTM_IMPLS:
    raise ValueError(f"lstm_layer: impl {impl!r}, expected one of {LSTM_IMPLS}")
  _check_layer("lstm_layer", 0, kernel, bias, u, x.shape[-1], u.shape[0])
  return _lstm_layer_vjp(x, kernel, bias, u, mask, unroll, impl)


# ---------------------------------------------------------------------------
# GRU.


def gru_scan(xw, u, bu, mask, unroll: int = 1):
  """GRU recurrence (reset gate applied after the recurrent matmul)."""
  h = u.shape[0]
  batch = xw.shape[1]

  def step(hprev, inp):
    xt, mt = inp
    hu = hprev @ u + bu
    xr, xz, xn = jnp.split(xt, 3, axis=-1)
    hr, hz, hn = jnp.split(hu, 3, axis=-1)
    r = jax.nn.sigmoid(xr + hr)
    zg = jax.nn.sigmoid(xz + hz)
    n = jnp.tanh(xn + r * hn)
    h_new = (1.0 - zg) * n + zg * hprev
    h_new = jnp.where(mt > 0, h_new, hprev)
    return h_new, h_new

  _, ys = lax.scan(step, jnp.zeros((batch, h), xw.dtype), (xw, mask), unroll=unroll)
  return ys


# ---------------------------------------------------------------------------
# A stack of LSTM layers as one wavefront recurrence.
#
# ``lstm_stack(x, layers, mask)`` computes what ``lstm_layer`` applied layer
# after layer computes, but in ONE loop of ``T + L - 1`` steps: at step ``k``
# layer ``l`` processes time ``t = k - l`` (layer ``l``'s input, the hidden
# state of layer ``l - 1`` at time ``t``, was produced one step earlier).  All
# layers' states live in one ``[B, L, H]`` carry, and a step is one
# ``[B, L*H] @ [L*H, 4*L*H]`` matmul against a block matrix (``u_l`` on the
# diagonal, the next layer's input kernel ``k_{l+1}`` beside it) plus one
# elementwise gate fusion for all layers.  On a latency-bound CPU core (or a
# GPU, where each step is a few kernel launches) this halves the number of
# sequential steps of a 2-layer stack; the matmul does 4/3 of the FLOPs
# needed (the zero block), measured worth it (PERF_NOTES.md).
#
# Column layout of the block matrix and of every per-step gate array:
# ``[gate (i, f, g, o), layer, unit]``.  Steps outside ``0 <= t < T`` for a
# layer are masked, so its state holds (zeros before the start).
#
# The backward pass is the same wavefront in reverse: at step ``k`` the
# product ``dz @ W.T`` gives, for each layer, its recurrent cotangent and
# the input cotangent from the layer above, both for time ``t - 1``, which
# that layer handles at the next reverse step.


def _wave_mask(mask, num_layers):
  """``mask [T, B, 1]`` -> ``[T+L-1, B, L, 1]``: layer ``l`` sees ``mask[k-l]``."""
  pad = num_layers - 1
  cols = [jnp.pad(mask, ((l, pad - l), (0, 0), (0, 0))) for l in range(num_layers)]
  return jnp.stack(cols, axis=2)


def _block_matrix(layers, scale):
  """``[L*H, 4*L*H]`` with ``u_l`` at (l, l) and ``k_l`` at (l-1, l); column
  order (gate, layer, unit).  ``scale [4H]`` multiplies every block's columns."""
  nl = len(layers)
  h = layers[0][2].shape[0]
  w = jnp.zeros((nl, h, 4, nl, h), layers[0][2].dtype)
  for l, (k, _, u) in enumerate(layers):
    w = w.at[l, :, :, l, :].set((u * scale).reshape(h, 4, h))
    if l > 0:
      w = w.at[l - 1, :, :, l, :].set((k * scale).reshape(h, 4, h))
  return w.reshape(nl * h, 4 * nl * h)


def _stack_forward(x, layers, mask, unroll, store: bool):
  t, b, p = x.shape
  nl = len(layers)
  h = layers[0][2].shape[0]
  s = gate_scale(h, x.dtype)
  k0, b0, u0 = layers[0]
  _, bs0 = scaled(u0, b0)
  x2 = x.reshape(t * b, p)
  # Layer 0's projections, [T+L-1, B, 4, H] (zeros in the drain steps).
  x0 = (x2 @ (k0 * s) + bs0).reshape(t, b, 4, h)
  x0 = jnp.pad(x0, ((0, nl - 1), (0, 0), (0, 0), (0, 0)))
  # The other layers' biases, [4, L, H] (layer 0's slot is zero).
  bias = jnp.stack([jnp.zeros((4 * h,), x.dtype)] +
                   [scaled(u, bl)[1] for _, bl, u in layers[1:]], axis=0)
  bias = bias.reshape(nl, 4, h).transpose(1, 0, 2)
  w = _block_matrix(layers, s)
  mw = _wave_mask(mask, nl)

  def step(carry, inp):
    c, hprev = carry
    xt, mt = inp
    z = (hprev.reshape(b, nl * h) @ w).reshape(b, 4, nl, h)
    pre = z + bias + jnp.pad(xt[:, :, None, :], ((0, 0), (0, 0), (0, nl - 1), (0, 0)))
    acts = jnp.tanh(pre)
    c_new, h_new = cell_update(acts[:, 0], acts[:, 1], acts[:, 2], acts[:, 3], c, hprev,
                               mt > 0)
    if store:
      return (c_new, h_new), (h_new, c_new, acts)
    return (c_new, h_new), h_new[:, nl - 1]

  zeros = jnp.zeros((b, nl, h), x.dtype)
  _, out = lax.scan(step, (zeros, zeros), (x0, mw), unroll=unroll)
  if store:
    hs, cs, acts = out
    return hs[nl - 1:, :, nl - 1], (hs, cs, acts, mw)
  return out[nl - 1:]


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _lstm_stack_vjp(x, layers, mask, unroll):
  return _stack_forward(x, layers, mask, unroll, store=False)


def _stack_fwd(x, layers, mask, unroll):
  ys, (hs, cs, acts, mw) = _stack_forward(x, layers, mask, unroll, store=True)
  return ys, (x, layers, mask, hs, cs, acts, mw)


def _stack_bwd(unroll, res, dys):
  x, layers, mask, hs, cs, acts, mw = res
  t, b, p = x.shape
  nl = len(layers)
  h = layers[0][2].shape[0]
  # [K, B, L, H] factors (the wave mask mw [K, B, L, 1]).
  a, fk, ci, cf, cg, co, passthrough = gate_factors(
      mw, cs, acts[:, :, 0], acts[:, :, 1], acts[:, :, 2], acts[:, :, 3])
  wt = _block_matrix(layers, jnp.ones((4 * h,), x.dtype)).T   # [4LH, LH]
  dyw = jnp.pad(dys, ((nl - 1, 0), (0, 0), (0, 0)))           # [K, B, H]

  def step(carry, inp):
    dc, dh_next = carry
    dy, a_t, fk_t, ci_t, cf_t, cg_t, co_t, p_t = inp
    dh = dh_next + jnp.pad(dy[:, None, :], ((0, 0), (nl - 1, 0), (0, 0)))
    dc_new = dc + dh * a_t
    dz = jnp.stack([dc_new * ci_t, dc_new * cf_t, dc_new * cg_t, dh * co_t], axis=1)
    back = (dz.reshape(b, 4 * nl * h) @ wt).reshape(b, nl, h)
    return (dc_new * fk_t, back + dh * p_t), (dc_new, dh)

  zeros = jnp.zeros((b, nl, h), x.dtype)
  _, (dcs, dhs) = lax.scan(step, (zeros, zeros), (dyw, a, fk, ci, cf, cg, co, passthrough),
                           reverse=True, unroll=unroll)
  dz = jnp.stack([dcs * ci, dcs * cf, dcs * cg, dhs * co], axis=2)   # [K, B, 4, L, H]
  kk = dz.shape[0]
  dw = (shift_in_zero(hs).reshape(kk * b, nl * h).T @ dz.reshape(kk * b, 4 * nl * h))
  dw = dw.reshape(nl, h, 4, nl, h)
  dbias = jnp.sum(dz, axis=(0, 1))                                    # [4, L, H]
  dz0 = dz[:t, :, :, 0].reshape(t * b, 4 * h)
  k0 = layers[0][0]
  grads = []
  for l in range(nl):
    du = dw[l, :, :, l].reshape(h, 4 * h)
    db = dbias[:, l].reshape(4 * h)
    if l == 0:
      dk = x.reshape(t * b, p).T @ dz0
    else:
      dk = dw[l - 1, :, :, l].reshape(h, 4 * h)
    grads.append((dk, db, du))
  dx = (dz0 @ k0.T).reshape(t, b, p)
  return dx, tuple(grads), jnp.zeros_like(mask)


_lstm_stack_vjp.defvjp(_stack_fwd, _stack_bwd)


def lstm_stack(x, layers, mask, unroll: int = 1, impl: str = "scan"):
  """A stack of LSTM layers on time-major input, as one wavefront recurrence.

  Same values as applying :func:`lstm_layer` layer after layer (to float
  rounding), with all layers advancing together in ``T + L - 1`` loop steps
  (layer ``l`` at time ``k - l``) and a hand-written backward pass in the
  same wavefront.  Differentiable with respect to ``x`` and every layer's
  parameters; ``mask`` gets a zero cotangent.  No dropout between layers.

  Args:
    x: ``[T, B, P]`` float32 inputs, time-major.
    layers: a sequence (tuple or list) of ``L >= 1`` ``(kernel, bias, u)``,
      one per layer (the parameters of :func:`lstm_layer`): layer 0's
      ``kernel [P, 4H]``, later layers' ``[H, 4H]``; ``bias [4H]``; ``u [H,
      4H]``; every layer has the same ``H``.
    mask: ``[T, B, 1]`` float, 1 for a real frame, 0 for padding or a hole
      (every layer's state holds there).
    unroll: time steps per ``lax.scan`` iteration (``impl="scan"`` only).
    impl: ``"scan"`` (one ``lax.scan``, a block-matrix step, above) or
      ``"pallas"`` (one Pallas kernel per pass,
      :func:`rnn_pallas.stack_forward`; Triton on a GPU, interpret mode
      elsewhere).

  Returns:
    ``ys [T, B, H]``, the last layer's hidden states (float32 with
    ``impl="pallas"``, else ``x``'s dtype).

  Raises:
    ValueError: ``impl`` is not one of ``LSTM_IMPLS``; ``layers`` is empty;
      a layer's shapes do not match (the message names the layer);
      ``impl="pallas"`` with a hidden size the kernels do not take.
  """
  if impl not in LSTM_IMPLS:
    raise ValueError(f"lstm_stack: impl {impl!r}, expected one of {LSTM_IMPLS}")
  layers = tuple(tuple(l) for l in layers)
  if not layers:
    raise ValueError("lstm_stack: layers is empty; expected at least one (kernel, bias, u)")
  h = layers[0][2].shape[0]
  for l, (k, bl, u) in enumerate(layers):
    _check_layer("lstm_stack", l, k, bl, u, x.shape[-1] if l == 0 else h, h)
  if impl == "pallas":
    return _pallas_stack_vjp(x, layers, mask)
  return _lstm_stack_vjp(x, layers, mask, unroll)


# The same stack with the wavefront loops as Pallas kernels.  Residuals and
# gradients are per layer and time-aligned (the kernels store each layer's
# states at its own time index), so the bulk parts are the per-layer ones of
# ``lstm_layer``.


def _pallas_stack_forward(x, layers, mask, store: bool):
  t, b, p = x.shape
  h = layers[0][2].shape[0]
  s = gate_scale(h, x.dtype)
  k0, b0, u0 = layers[0]
  _, bs0 = scaled(u0, b0)
  x2 = x.reshape(t * b, p)
  ks0 = k0 * s
  x0s = tuple((x2 @ ks0[:, g * h:(g + 1) * h] + bs0[g * h:(g + 1) * h]).reshape(t, b, h)
              for g in range(4))
  us = [scaled(u) for _, _, u in layers]
  ks = [k * s for k, _, _ in layers[1:]]
  bs = [scaled(u, bl)[1] for _, bl, u in layers[1:]]
  return rnn_pallas.stack_forward(x0s, mask, us, ks, bs, store)


@jax.custom_vjp
def _pallas_stack_vjp(x, layers, mask):
  return _pallas_stack_forward(x, layers, mask, store=False)


def _pallas_stack_fwd(x, layers, mask):
  per_layer = _pallas_stack_forward(x, layers, mask, store=True)
  return per_layer[-1][0], (x, layers, mask, per_layer)


def _pallas_stack_bwd(res, dys):
  x, layers, mask, per_layer = res
  t, b, p = x.shape
  h = layers[0][2].shape[0]
  factors, passthrough = [], None
  for _, cs, acts in per_layer:
    *f, passthrough = backward_factors(mask, cs, acts)
    factors.append(tuple(f))
  loops = rnn_pallas.stack_backward_loop([u for _, _, u in layers],
                                         [k for k, _, _ in layers[1:]],
                                         dys, factors, passthrough)
  grads, dx = [], None
  for l, ((dcs, dhs), (_, _, ci, cf, cg, co), (hs, _, _)) in enumerate(
      zip(loops, factors, per_layer)):
    dz = jnp.concatenate([dcs * ci, dcs * cf, dcs * cg, dhs * co], axis=-1).reshape(t * b, 4 * h)
    du = shift_in_zero(hs).reshape(t * b, h).T @ dz
    layer_in = x.reshape(t * b, p) if l == 0 else per_layer[l - 1][0].reshape(t * b, h)
    grads.append((layer_in.T @ dz, jnp.sum(dz, axis=0), du))
    if l == 0:
      dx = (dz @ layers[0][0].T).reshape(t, b, p)
  return dx, tuple(grads), jnp.zeros_like(mask)


_pallas_stack_vjp.defvjp(_pallas_stack_fwd, _pallas_stack_bwd)
