"""The LSTM cell's maths, shared by every recurrence implementation.

:mod:`emobed_jax.rnn_kernels` (``lax.scan`` loops) and
:mod:`emobed_jax.rnn_pallas` (Pallas kernels) both import this module and
nothing of each other's maths, so the two compute the same cell.

The tanh form: every gate nonlinearity is one ``tanh``, ``sigmoid(z) = (1 +
tanh(z / 2)) / 2``.  The input and recurrent kernels and the bias are
pre-scaled (:func:`scaled`: 1/2 on the sigmoid gates i, f, o; the forget
gate's +1 bias folded into the bias), so a step takes the ``tanh`` of the
scaled pre-activations: ``ai = 2 i - 1``, ``af = 2 f - 1``, ``g``, ``ao = 2 o
- 1``.  Gate order: i, f, g, o, each a block of ``H`` columns.
"""

from __future__ import annotations

import jax.numpy as jnp

#: The forget gate's bias offset (added inside the sigmoid).
FORGET_BIAS = 1.0
#: The tanh argument scale of each gate (i, f, g, o): 1/2 on the sigmoid gates.
SIG_SCALE = (0.5, 0.5, 1.0, 0.5)


def pallas_supports_hidden(hidden: int) -> bool:
  """Whether the Pallas LSTM kernels take this hidden size (Triton: a power
  of two >= 16).  Pure Python (no JAX call), for config validation."""
  return isinstance(hidden, int) and hidden >= 16 and hidden & (hidden - 1) == 0


def split_gates(x):
  """``[..., 4H]`` -> the four gates' ``[..., H]`` blocks (i, f, g, o)."""
  h = x.shape[-1] // 4
  return tuple(x[..., k * h:(k + 1) * h] for k in range(4))


def gate_scale(h: int, dtype):
  """``[4H]``: each gate's :data:`SIG_SCALE` repeated over its ``H`` columns."""
  return jnp.concatenate([jnp.full((h,), s, dtype) for s in SIG_SCALE])


def scaled(u, bias=None):
  """Fold the tanh form's 1/2 (sigmoid gates) into ``u [H, 4H]`` and, when
  given, into ``bias [4H]`` together with the forget gate's +1.  Returns the
  scaled ``u``, or ``(u, bias)`` scaled."""
  h = u.shape[0]
  s = gate_scale(h, u.dtype)
  if bias is None:
    return u * s
  off = jnp.zeros((4 * h,), bias.dtype).at[h:2 * h].set(FORGET_BIAS)
  return u * s, (bias + off) * s


def cell_update(ai, af, g, ao, c, hprev, keep):
  """One LSTM state update from the gates' ``tanh`` activations (``[..., H]``
  each); where ``keep`` is false the state ``(c, hprev)`` holds.  Returns
  ``(c_new, h_new)``."""
  c_new = (0.5 * af + 0.5) * c + (0.5 * ai + 0.5) * g
  h_new = (0.5 * ao + 0.5) * jnp.tanh(c_new)
  return jnp.where(keep, c_new, c), jnp.where(keep, h_new, hprev)


def shift_in_zero(x):
  """``x[t-1]`` along axis 0, zeros at ``t = 0``."""
  return jnp.concatenate([jnp.zeros_like(x[:1]), x[:-1]], axis=0)


def gate_factors(mask, cs, ai, af, g, ao):
  """The backward pass's per-step factors that do not depend on the
  cotangent, for all steps at once (see ``rnn_kernels._cell_backward``).

  ``mask``: ``[T, ..., 1]`` (a masked step holds the carry); ``cs``: the
  cell states ``[T, ..., H]``; ``ai, af, g, ao``: the gates' ``tanh``
  activations, same shape (any layout whose leading axis is time: the
  wavefront's ``[K, B, L, H]`` too).  Returns ``(a, fk, ci, cf, cg, co)``
  shaped like ``cs`` and ``passthrough`` (1 on masked steps) shaped like
  ``mask``.
  """
  keep = (mask > 0).astype(cs.dtype)
  i, f, o = 0.5 * ai + 0.5, 0.5 * af + 0.5, 0.5 * ao + 0.5
  c_prev = shift_in_zero(cs)
  tc = jnp.tanh(cs)
  a = keep * o * (1.0 - tc * tc)
  fk = keep * f + (1.0 - keep)
  ci = keep * g * i * (1.0 - i)
  cf = keep * c_prev * f * (1.0 - f)
  cg = keep * i * (1.0 - g * g)
  co = keep * tc * o * (1.0 - o)
  return a, fk, ci, cf, cg, co, 1.0 - keep


def backward_factors(mask, cs, acts):
  """:func:`gate_factors` from the stacked activations ``acts [T, B, 4H]``."""
  return gate_factors(mask, cs, *split_gates(acts))
