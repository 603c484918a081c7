"""The sequential part of the recurrent layers, as pure functions.

``models.Recurrent`` computes the input projection of all time steps in one
matmul and hands the recurrence to these functions.  They are kept apart so
their speed can be worked on (custom backward passes, fused gates) without
touching the modules or the parameter layout.

Shapes: ``xw [T, B, G*H]`` (time-major input projections incl. bias),
``u [H, G*H]`` recurrent kernel, ``mask [T, B, 1]`` (a masked step holds the
carry), returns ``ys [T, B, H]``.  LSTM gate order: i, f, g, o; the forget
gate gets +1 bias inside.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


def lstm_scan(xw, u, mask, unroll: int = 1):
  """LSTM recurrence over time; returns all hidden states ``[T, B, H]``."""
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
