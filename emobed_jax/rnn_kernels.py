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

* forward: one ``lax.scan`` that also stores the activated gates
  ``[T, B, 4H]`` and the cell states ``[T, B, H]`` (nothing else; the hidden
  states are the output ``ys`` itself);
* backward: every factor that does not depend on the incoming cotangent
  (gate derivatives, ``tanh(c)``, the mask) is computed for all steps at once,
  outside the recurrence; the reverse scan then only does, per step, a few
  elementwise products and one ``[B, 4H] @ [4H, H]`` matmul; the gradient of
  the recurrent kernel is one ``[H, T*B] @ [T*B, 4H]`` matmul after the scan
  (instead of T small outer products inside it).

``lstm_scan_reference`` is the plain autodiff version (the previous
implementation), kept as the reference the tests compare values and
gradients with.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax


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


def _lstm_forward(xw, u, mask, unroll, store: bool):
  """Forward scan.  ``store``: also return activated gates and cell states."""
  h = u.shape[0]
  batch = xw.shape[1]

  def step(carry, inp):
    c, hprev = carry
    xi, xf, xg, xo, mt = inp
    z = hprev @ u
    zi, zf, zg, zo = _split_gates(z)
    i = jax.nn.sigmoid(xi + zi)
    f = jax.nn.sigmoid(xf + zf + 1.0)
    g = jnp.tanh(xg + zg)
    o = jax.nn.sigmoid(xo + zo)
    c_new = f * c + i * g
    h_new = o * jnp.tanh(c_new)
    keep = mt > 0
    c_new = jnp.where(keep, c_new, c)
    h_new = jnp.where(keep, h_new, hprev)
    if store:
      return (c_new, h_new), (h_new, c_new, jnp.concatenate([i, f, g, o], axis=-1))
    return (c_new, h_new), h_new

  zeros = jnp.zeros((batch, h), xw.dtype)
  _, out = lax.scan(step, (zeros, zeros), _split_gates(xw) + (mask,), unroll=unroll)
  return out


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _lstm_scan_vjp(xw, u, mask, unroll):
  return _lstm_forward(xw, u, mask, unroll, store=False)


def _lstm_fwd(xw, u, mask, unroll):
  ys, cs, gates = _lstm_forward(xw, u, mask, unroll, store=True)
  return ys, (u, mask, ys, cs, gates)


def _shift_in_zero(x):
  """``x[t-1]`` along axis 0, zeros at ``t = 0``."""
  return jnp.concatenate([jnp.zeros_like(x[:1]), x[:-1]], axis=0)


def _lstm_bwd(unroll, res, dys):
  u, mask, ys, cs, gates = res
  keep = (mask > 0).astype(gates.dtype)              # [T, B, 1]
  i, f, g, o = _split_gates(gates)
  c_prev = _shift_in_zero(cs)
  tc = jnp.tanh(cs)
  # Everything the reverse recurrence needs that does not depend on the
  # cotangent, for all steps at once.  A masked step has no gate gradient
  # and passes the carry's cotangent through unchanged:
  #   dh     = dy + dh_next
  #   dc_new = dc_next + dh * a                      (a = keep * o * (1 - tc^2))
  #   dz     = [dc_new * ci, dc_new * cf, dc_new * cg, dh * co]
  #   dh_prev = dz @ u.T + dh * (1 - keep),   dc_prev = dc_new * fk
  a = keep * o * (1.0 - tc * tc)
  fk = keep * f + (1.0 - keep)
  ci = keep * g * i * (1.0 - i)
  cf = keep * c_prev * f * (1.0 - f)
  cg = keep * i * (1.0 - g * g)
  co = keep * tc * o * (1.0 - o)
  passthrough = jnp.broadcast_to(1.0 - keep, a.shape)
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
  # The gate cotangents again, in bulk (cheaper than stacking them per step).
  dz = jnp.concatenate([dcs * ci, dcs * cf, dcs * cg, dhs * co], axis=-1)
  du = jnp.einsum("tbh,tbg->hg", _shift_in_zero(ys), dz)
  return dz, du, jnp.zeros_like(mask)


_lstm_scan_vjp.defvjp(_lstm_fwd, _lstm_bwd)


def lstm_scan(xw, u, mask, unroll: int = 1):
  """LSTM recurrence over time; returns all hidden states ``[T, B, H]``.

  Same values as :func:`lstm_scan_reference`; its gradient is the
  hand-written backward pass described in the module docstring.
  """
  return _lstm_scan_vjp(xw, u, mask, unroll)


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
