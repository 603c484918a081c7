"""The sequential part of the recurrent layers, as pure functions.

``models.Recurrent`` computes the input projection of all time steps in one
matmul and hands the recurrence to these functions.  They are kept apart so
their speed can be worked on (custom backward passes, fused gates) without
touching the modules or the parameter layout.

Shapes: ``xw [T, B, G*H]`` (time-major input projections incl. bias),
``u [H, G*H]`` recurrent kernel, ``mask [T, B, 1]`` (a masked step holds the
carry), returns ``ys [T, B, H]``.  LSTM gate order: i, f, g, o; the forget
gate gets +1 bias inside.

``lstm_scan`` has a hand-written backward pass (``jax.custom_vjp``):

* forward: one ``lax.scan`` over four per-gate ``[T, B, H]`` inputs and one
  ``[B, H] @ [H, 4H]`` matmul per step; every gate nonlinearity is a
  ``tanh`` (``sigmoid(z) = (1 + tanh(z/2))/2``); for training it also stores
  the gates' ``tanh`` activations ``[T, B, 4H]`` and the cell states
  ``[T, B, H]`` (the hidden states are the output itself);
* backward: every factor that does not depend on the incoming cotangent
  (gate derivatives, ``tanh(c)``, the mask) is computed for all steps at
  once, outside the recurrence; the reverse scan only does a few elementwise
  products and one ``[B, 4H] @ [4H, H]`` matmul per step and stacks two
  ``[B, H]`` arrays; the gate cotangent ``dz`` is rebuilt in bulk and the
  recurrent kernel's gradient is one ``[H, T*B] @ [T*B, 4H]`` matmul (instead
  of T small outer products inside the loop).

``lstm_layer`` is a whole layer on time-major input (projection included,
same parameters as ``models.Recurrent``), for an encoder that stays
time-major; see its section below and PERF_NOTES.md.

``lstm_scan_reference`` is the plain autodiff version (the previous
implementation), kept as the reference the tests compare values and
gradients with.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

#: Implementations of one layer's loops (``lstm_layer(..., impl=)``).
LSTM_IMPLS = ("scan", "pallas")


# ---------------------------------------------------------------------------
# LSTM: autodiff reference.


def lstm_scan_reference(xw, u, mask, unroll: int = 1):
  """LSTM recurrence over time (autodiff backward); ``[T, B, H]``."""
  h = u.shape[0]
  batch = xw.shape[1]

  def step(carry, inp):
    c, hprev = carry
    xt, mt = inp
    z = xt + hprev @ u
    i, f, g, o = jnp.split(z, 4, axis=-1)
    c_new = jax.nn.sigmoid(f + 1.0) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h_new = jax.nn.sigmoid(o) * jnp.tanh(c_new)
    keep = mt > 0
    c_new = jnp.where(keep, c_new, c)
    h_new = jnp.where(keep, h_new, hprev)
    return (c_new, h_new), h_new

  zeros = jnp.zeros((batch, h), xw.dtype)
  _, ys = lax.scan(step, (zeros, zeros), (xw, mask), unroll=unroll)
  return ys


# ---------------------------------------------------------------------------
# LSTM: hand-written backward pass.
#
# Layout notes (XLA:CPU, measured in PERF_NOTES.md): inside a scan body every
# op is one kernel launch (~1-2 us each), and an elementwise fusion that
# slices a dynamic-slice of the wide ``[T, B, 4H]`` input is emitted slowly.
# So the input projections enter the scan as four per-gate ``[T, B, H]``
# arrays, the recurrent matmul is one ``[B, H] @ [H, 4H]`` dot, and the loop
# bodies stack as few outputs as possible.


def _split_gates(x):
  h = x.shape[-1] // 4
  return tuple(x[..., k * h:(k + 1) * h] for k in range(4))


_SIG_SCALE = (0.5, 0.5, 1.0, 0.5)   # i, f, g, o: tanh argument scale
_FORGET_BIAS = 1.0


def _gate_scale(h, dtype):
  return jnp.concatenate([jnp.full((h,), s, dtype) for s in _SIG_SCALE])


def cell_update(ai, af, g, ao, c, hprev, keep):
  """One LSTM state update from the gates' ``tanh`` activations (tanh form:
  ``sigmoid(z) = (1 + tanh(z/2)) / 2``); where ``keep`` is false the state
  holds.  Returns ``(c_new, h_new)``.  Shared by every implementation (the
  Pallas kernels too)."""
  c_new = (0.5 * af + 0.5) * c + (0.5 * ai + 0.5) * g
  h_new = (0.5 * ao + 0.5) * jnp.tanh(c_new)
  return jnp.where(keep, c_new, c), jnp.where(keep, h_new, hprev)


def _cell_scan(xs, us, mask, unroll, store: bool, impl: str = "scan"):
  """The forward recurrence on per-gate inputs ``xs = (xi, xf, xg, xo)``
  (``[T, B, H]`` each, already scaled: 1/2 on the sigmoid gates, the forget
  bias included) and the scaled recurrent kernel ``us [H, 4H]``.

  Every gate nonlinearity is one ``tanh``: ``sigmoid(z) = (1 + tanh(z/2))/2``,
  so a step evaluates five ``tanh`` per unit and no ``exp``/divide.
  ``store``: also return the cell states ``[T, B, H]`` and the gates'
  ``tanh`` activations ``[T, B, 4H]`` (one stacked output per step: measured
  cheaper than four).  ``impl="pallas"``: the same recurrence as one Pallas
  kernel (:mod:`emobed_jax.rnn_pallas`, for GPUs).
  """
  if impl == "pallas":
    from emobed_jax import rnn_pallas
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


def _shift_in_zero(x):
  """``x[t-1]`` along axis 0, zeros at ``t = 0``."""
  return jnp.concatenate([jnp.zeros_like(x[:1]), x[:-1]], axis=0)


def _backward_factors(mask, cs, acts):
  """The backward pass's per-step factors that do not depend on the
  cotangent (see :func:`_cell_backward`), for all steps at once:
  ``(a, fk, ci, cf, cg, co)`` ``[T, B, H]`` and ``passthrough [T, B, 1]``."""
  return _gate_factors(mask, cs, *_split_gates(acts))


def _gate_factors(mask, cs, ai, af, g, ao):
  """:func:`_backward_factors` from the gates' ``tanh`` activations; any
  layout whose leading axis is time (the wavefront's ``[K, B, L, H]`` too)."""
  keep = (mask > 0).astype(cs.dtype)
  i, f, o = 0.5 * ai + 0.5, 0.5 * af + 0.5, 0.5 * ao + 0.5
  c_prev = _shift_in_zero(cs)
  tc = jnp.tanh(cs)
  a = keep * o * (1.0 - tc * tc)
  fk = keep * f + (1.0 - keep)
  ci = keep * g * i * (1.0 - i)
  cf = keep * c_prev * f * (1.0 - f)
  cg = keep * i * (1.0 - g * g)
  co = keep * tc * o * (1.0 - o)
  return a, fk, ci, cf, cg, co, 1.0 - keep


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
  ``co``, the mask) are computed for all steps at once before the loop, so
  the loop body is a few multiply-adds, one ``[B, 4H] @ [4H, H]`` matmul and
  two stacked ``[B, H]`` outputs; ``dz`` is rebuilt in bulk afterwards.
  (Computing the factors inside the loop instead was measured 0-10% slower.)
  """
  a, fk, ci, cf, cg, co, passthrough = _backward_factors(mask, cs, acts)
  if impl == "pallas":
    from emobed_jax import rnn_pallas
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


def _scaled(u, bias=None):
  """Fold the tanh-form's 1/2 (sigmoid gates) into ``u`` and, when given,
  into ``bias`` together with the forget gate's +1."""
  h = u.shape[0]
  s = _gate_scale(h, u.dtype)
  if bias is None:
    return u * s
  off = jnp.zeros((4 * h,), bias.dtype).at[h:2 * h].set(_FORGET_BIAS)
  return u * s, (bias + off) * s


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _lstm_scan_vjp(xw, u, mask, unroll):
  return _lstm_forward(xw, u, mask, unroll, store=False)


def _lstm_forward(xw, u, mask, unroll, store: bool):
  xi, xf, xg, xo = _split_gates(xw)
  xs = (0.5 * xi, 0.5 * (xf + _FORGET_BIAS), xg, 0.5 * xo)
  return _cell_scan(xs, _scaled(u), mask, unroll, store)


def _lstm_fwd(xw, u, mask, unroll):
  ys, cs, acts = _lstm_forward(xw, u, mask, unroll, store=True)
  return ys, (u, mask, ys, cs, acts)


def _lstm_bwd(unroll, res, dys):
  u, mask, ys, cs, acts = res
  dz = _cell_backward(u, mask, cs, acts, dys, unroll)
  t, b, h4 = dz.shape
  h = u.shape[0]
  du = _shift_in_zero(ys).reshape(t * b, h).T @ dz.reshape(t * b, h4)
  return dz, du, jnp.zeros_like(mask)


_lstm_scan_vjp.defvjp(_lstm_fwd, _lstm_bwd)


def lstm_scan(xw, u, mask, unroll: int = 1):
  """LSTM recurrence over time; returns all hidden states ``[T, B, H]``.

  Same values as :func:`lstm_scan_reference`; its gradient is the
  hand-written backward pass described in the module docstring.
  """
  return _lstm_scan_vjp(xw, u, mask, unroll)


# ---------------------------------------------------------------------------
# A whole LSTM layer, time-major, input projection included.
#
# ``lstm_layer(x, kernel, bias, u, mask)`` computes exactly what
# ``models.Recurrent`` computes (Dense ``x @ kernel + bias`` then
# ``lstm_scan``), but on time-major ``x [T, B, P]`` and with one
# ``custom_vjp`` over the projection as well, so that:
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
  s = _gate_scale(h, x.dtype)
  us, bs = _scaled(u, bias)
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
  du = _shift_in_zero(ys).reshape(t * b, h).T @ dz
  return dx, dkernel, dbias, du, jnp.zeros_like(mask)


_lstm_layer_vjp.defvjp(_layer_fwd, _layer_bwd)


def lstm_layer(x, kernel, bias, u, mask, unroll: int = 1, impl: str = "scan"):
  """One LSTM layer on time-major ``x [T, B, P]``; returns ``ys [T, B, H]``.

  Same values as ``lstm_scan_reference(x @ kernel + bias, u, mask)`` (to
  float rounding), with a hand-written backward pass for ``x``, ``kernel``,
  ``bias`` and ``u``.  ``mask``: ``[T, B, 1]``, a masked step holds the carry.
  ``impl``: ``"scan"`` (``lax.scan`` loops) or ``"pallas"`` (the two loops as
  Pallas kernels, :mod:`emobed_jax.rnn_pallas`; for GPUs).
  """
  if impl not in LSTM_IMPLS:
    raise ValueError(f"lstm_layer: impl {impl!r}, expected one of {LSTM_IMPLS}")
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
  s = _gate_scale(h, x.dtype)
  k0, b0, u0 = layers[0]
  _, bs0 = _scaled(u0, b0)
  x2 = x.reshape(t * b, p)
  # Layer 0's projections, [T+L-1, B, 4, H] (zeros in the drain steps).
  x0 = (x2 @ (k0 * s) + bs0).reshape(t, b, 4, h)
  x0 = jnp.pad(x0, ((0, nl - 1), (0, 0), (0, 0), (0, 0)))
  # The other layers' biases, [4, L, H] (layer 0's slot is zero).
  bias = jnp.stack([jnp.zeros((4 * h,), x.dtype)] +
                   [_scaled(u, bl)[1] for _, bl, u in layers[1:]], axis=0)
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
  a, fk, ci, cf, cg, co, passthrough = _gate_factors(
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
  dw = (_shift_in_zero(hs).reshape(kk * b, nl * h).T @ dz.reshape(kk * b, 4 * nl * h))
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
  """A stack of LSTM layers on time-major ``x [T, B, P]`` -> ``[T, B, H]``.

  ``layers``: a sequence of ``(kernel, bias, u)`` per layer (the parameters
  of :func:`lstm_layer`; every layer has the same ``H``).  Same values as
  applying :func:`lstm_layer` layer after layer (to float rounding), with
  the layers run as one wavefront recurrence and a hand-written backward:
  ``impl="scan"`` one ``lax.scan`` (block-matrix step, above),
  ``impl="pallas"`` one Pallas kernel per pass
  (:func:`rnn_pallas.stack_forward`, for GPUs; ``unroll`` unused).
  """
  if impl not in LSTM_IMPLS:
    raise ValueError(f"lstm_stack: impl {impl!r}, expected one of {LSTM_IMPLS}")
  layers = tuple(tuple(l) for l in layers)
  if not layers:
    raise ValueError("lstm_stack: layers is empty; expected at least one (kernel, bias, u)")
  h = layers[0][2].shape[0]
  for l, (k, bl, u) in enumerate(layers):
    k_in = x.shape[-1] if l == 0 else h
    if u.shape != (h, 4 * h) or bl.shape != (4 * h,) or k.shape != (k_in, 4 * h):
      raise ValueError(f"lstm_stack: layer {l} has kernel {k.shape}, bias {bl.shape}, "
                       f"recurrent {u.shape}; expected ({k_in}, {4 * h}), ({4 * h},), "
                       f"({h}, {4 * h}) (input width {x.shape[-1]}, every layer of width {h})")
  if impl == "pallas":
    return _pallas_stack_vjp(x, layers, mask)
  return _lstm_stack_vjp(x, layers, mask, unroll)


# The same stack with the wavefront loops as Pallas kernels.  Residuals and
# gradients are per layer and time-aligned (the kernels store each layer's
# states at its own time index), so the bulk parts are the per-layer ones of
# ``lstm_layer``.


def _pallas_stack_forward(x, layers, mask, store: bool):
  from emobed_jax import rnn_pallas
  t, b, p = x.shape
  h = layers[0][2].shape[0]
  s = _gate_scale(h, x.dtype)
  k0, b0, u0 = layers[0]
  _, bs0 = _scaled(u0, b0)
  x2 = x.reshape(t * b, p)
  ks0 = k0 * s
  x0s = tuple((x2 @ ks0[:, g * h:(g + 1) * h] + bs0[g * h:(g + 1) * h]).reshape(t, b, h)
              for g in range(4))
  us = [_scaled(u) for _, _, u in layers]
  ks = [k * s for k, _, _ in layers[1:]]
  bs = [_scaled(u, bl)[1] for _, bl, u in layers[1:]]
  return rnn_pallas.stack_forward(x0s, mask, us, ks, bs, store)


@jax.custom_vjp
def _pallas_stack_vjp(x, layers, mask):
  return _pallas_stack_forward(x, layers, mask, store=False)


def _pallas_stack_fwd(x, layers, mask):
  per_layer = _pallas_stack_forward(x, layers, mask, store=True)
  return per_layer[-1][0], (x, layers, mask, per_layer)


def _pallas_stack_bwd(res, dys):
  from emobed_jax import rnn_pallas
  x, layers, mask, per_layer = res
  t, b, p = x.shape
  h = layers[0][2].shape[0]
  factors, passthrough = [], None
  for _, cs, acts in per_layer:
    *f, passthrough = _backward_factors(mask, cs, acts)
    factors.append(tuple(f))
  loops = rnn_pallas.stack_backward_loop([u for _, _, u in layers],
                                         [k for k, _, _ in layers[1:]],
                                         dys, factors, passthrough)
  grads, dx = [], None
  for l, ((dcs, dhs), (_, _, ci, cf, cg, co), (hs, _, _)) in enumerate(
      zip(loops, factors, per_layer)):
    dz = jnp.concatenate([dcs * ci, dcs * cf, dcs * cg, dhs * co], axis=-1).reshape(t * b, 4 * h)
    du = _shift_in_zero(hs).reshape(t * b, h).T @ dz
    layer_in = x.reshape(t * b, p) if l == 0 else per_layer[l - 1][0].reshape(t * b, h)
    grads.append((layer_in.T @ dz, jnp.sum(dz, axis=0), du))
    if l == 0:
      dx = (dz @ layers[0][0].T).reshape(t, b, p)
  return dx, tuple(grads), jnp.zeros_like(mask)


_pallas_stack_vjp.defvjp(_pallas_stack_fwd, _pallas_stack_bwd)
