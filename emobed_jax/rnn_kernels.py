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


def _lstm_forward(xw, u, mask, unroll):
  """Forward scan; returns ``ys``, activated gates ``[T,B,4H]``, cells ``[T,B,H]``."""
  h = u.shape[0]
  batch = xw.shape[1]

  def step(carry, inp):
    c, hprev = carry
    xt, mt = inp
    z = xt + hprev @ u
    i, f, g, o = jnp.split(z, 4, axis=-1)
    i = jax.nn.sigmoid(i)
    f = jax.nn.sigmoid(f + 1.0)
    g = jnp.tanh(g)
    o = jax.nn.sigmoid(o)
    c_new = f * c + i * g
    h_new = o * jnp.tanh(c_new)
    keep = mt > 0
    c_new = jnp.where(keep, c_new, c)
    h_new = jnp.where(keep, h_new, hprev)
    return (c_new, h_new), (h_new, jnp.concatenate([i, f, g, o], axis=-1), c_new)

  zeros = jnp.zeros((batch, h), xw.dtype)
  _, (ys, gates, cs) = lax.scan(step, (zeros, zeros), (xw, mask), unroll=unroll)
  return ys, gates, cs


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _lstm_scan_vjp(xw, u, mask, unroll):
  # Without differentiation nothing needs storing: the plain scan.
  return lstm_scan_reference(xw, u, mask, unroll)


def _lstm_fwd(xw, u, mask, unroll):
  ys, gates, cs = _lstm_forward(xw, u, mask, unroll)
  return ys, (u, mask, ys, gates, cs)


def _shift_in_zero(x):
  """``x[t-1]`` along axis 0, zeros at ``t = 0``."""
  return jnp.concatenate([jnp.zeros_like(x[:1]), x[:-1]], axis=0)


def _lstm_bwd(unroll, res, dys):
  u, mask, ys, gates, cs = res
  keep = (mask > 0).astype(gates.dtype)              # [T, B, 1]
  i, f, g, o = jnp.split(gates, 4, axis=-1)
  c_prev = _shift_in_zero(cs)
  h_prev = _shift_in_zero(ys)
  tc = jnp.tanh(cs)
  # Everything the reverse recurrence needs that does not depend on the
  # cotangent, for all steps at once (masked steps: no gate gradient, the
  # carry's cotangent passes through unchanged).
  # dc_new = dc_carry + dh * a;   dc_prev = dc_new * fk + dh * 0;
  # dz = [dc_new, dc_new, dc_new, dh] * coef;  dh_prev = dz @ u.T + dh * pass
  a = keep * o * (1.0 - tc * tc)
  fk = keep * f + (1.0 - keep)
  coef = keep * jnp.concatenate(
      [g * i * (1.0 - i),               # d/dz_i
       c_prev * f * (1.0 - f),          # d/dz_f
       i * (1.0 - g * g),               # d/dz_g
       tc * o * (1.0 - o)], axis=-1)    # d/dz_o (times dh)
  passthrough = 1.0 - keep
  ut = u.T

  def step(carry, inp):
    dc, dh_next = carry
    dy, a_t, f_t, coef_t, p_t = inp
    dh = dy + dh_next
    dc_new = dc + dh * a_t
    dz = jnp.concatenate([dc_new, dc_new, dc_new, dh], axis=-1) * coef_t
    dh_prev = dz @ ut + dh * p_t
    return (dc_new * f_t, dh_prev), dz

  zeros = jnp.zeros(dys.shape[1:], dys.dtype)
  _, dz = lax.scan(step, (zeros, zeros), (dys, a, fk, coef, passthrough),
                   reverse=True, unroll=unroll)
  du = jnp.einsum("tbh,tbg->hg", h_prev, dz)
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
