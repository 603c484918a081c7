"""An independent LSTM for the tests: the textbook sigmoid-form recurrence,
differentiated by JAX's autodiff (no custom VJP, no tanh form, nothing
shared with ``emobed_jax.lstm_cell``)."""

import jax
import jax.numpy as jnp
from jax import lax


def lstm_autodiff(xw, u, mask, unroll: int = 1):
  """Hidden states ``[T, B, H]`` of an LSTM on the input projections ``xw
  [T, B, 4H]`` (gates i, f, g, o; +1 forget bias), recurrent kernel ``u [H,
  4H]``; where ``mask [T, B, 1]`` is 0 the state holds."""
  h = u.shape[0]

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

  zeros = jnp.zeros((xw.shape[1], h), xw.dtype)
  _, ys = lax.scan(step, (zeros, zeros), (xw, mask), unroll=unroll)
  return ys


def lstm_layers_autodiff(x, layers, mask):
  """A stack of layers ``(kernel, bias, u)`` on time-major ``x [T, B, P]``."""
  for kernel, bias, u in layers:
    x = lstm_autodiff(x @ kernel + bias, u, mask)
  return x
