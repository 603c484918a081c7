"""Our recurrent layers against Flax's own cells run with nn.RNN (a second implementation).

models.Recurrent hoists the input projection out of the scan and fuses the
gates; with the weights mapped over, it must compute exactly what
``nn.RNN(nn.OptimizedLSTMCell)`` / ``nn.RNN(nn.GRUCell)`` compute, and a
mask must act like nn.RNN's ``seq_lengths`` on the valid frames.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from emobed_jax import models

pytestmark = pytest.mark.usefixtures("fast_compile")  # nothing timed; tolerances hold

H, D, B, T = 6, 4, 3, 11


def _inputs():
  rs = np.random.RandomState(0)
  x = jnp.asarray(rs.randn(B, T, D), jnp.float32)
  lengths = np.array([T, 7, 2])
  return x, lengths, models.sequence_mask(lengths, T)


def _ours(cell):
  layer = models.Recurrent(H, cell)
  x, lengths, mask = _inputs()
  params = layer.init(jax.random.key(1), x, mask)["params"]
  params = jax.tree_util.tree_map(  # non-trivial biases
      lambda p: p + 0.1 * jax.random.normal(jax.random.key(2), p.shape), params)
  return layer, params, x, lengths, mask


def _check(ours, ref, lengths):
  ours, ref = np.asarray(ours), np.asarray(ref)
  for b, n in enumerate(lengths):
    np.testing.assert_allclose(ours[b, :n], ref[b, :n], rtol=1e-5, atol=1e-6)


def test_lstm_matches_flax_optimized_lstm_cell():
  layer, p, x, lengths, mask = _ours("lstm")
  k, bias, u = p["input"]["kernel"], p["input"]["bias"], p["recurrent"]
  ref_params = {"cell": {}}
  for j, g in enumerate("ifgo"):
    sl = slice(j * H, (j + 1) * H)
    # Our forget gate adds +1 inside the nonlinearity; Flax has no such offset.
    ref_params["cell"][f"i{g}"] = {"kernel": k[:, sl]}
    ref_params["cell"][f"h{g}"] = {"kernel": u[:, sl], "bias": bias[sl] + (1.0 if g == "f" else 0.0)}
  rnn = nn.RNN(nn.OptimizedLSTMCell(H))
  ref = rnn.apply({"params": ref_params}, x, seq_lengths=jnp.asarray(lengths))
  _check(layer.apply({"params": p}, x, mask), ref, lengths)


def test_gru_matches_flax_gru_cell():
  layer, p, x, lengths, mask = _ours("gru")
  k, bias, u, bu = (p["input"]["kernel"], p["input"]["bias"], p["recurrent"],
                    p["recurrent_bias"])
  sl = [slice(j * H, (j + 1) * H) for j in range(3)]  # r, z, n
  # Flax GRUCell: r = σ(W_ir x + b_ir + W_hr h), z likewise,
  # n = tanh(W_in x + b_in + r * (W_hn h + b_hn)); h kernels of r, z have no bias.
  ref_params = {"cell": {
      "ir": {"kernel": k[:, sl[0]], "bias": bias[sl[0]] + bu[sl[0]]},
      "iz": {"kernel": k[:, sl[1]], "bias": bias[sl[1]] + bu[sl[1]]},
      "in": {"kernel": k[:, sl[2]], "bias": bias[sl[2]]},
      "hr": {"kernel": u[:, sl[0]]}, "hz": {"kernel": u[:, sl[1]]},
      "hn": {"kernel": u[:, sl[2]], "bias": bu[sl[2]]},
  }}
  rnn = nn.RNN(nn.GRUCell(H))
  shapes = jax.tree_util.tree_map(jnp.shape, rnn.init(jax.random.key(0), x)["params"])
  assert shapes == jax.tree_util.tree_map(jnp.shape, ref_params), shapes
  ref = rnn.apply({"params": ref_params}, x, seq_lengths=jnp.asarray(lengths))
  _check(layer.apply({"params": p}, x, mask), ref, lengths)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_padding_after_the_end_does_not_leak_back(cell):
  layer, p, x, lengths, mask = _ours(cell)
  noisy = np.asarray(x).copy()
  noisy[np.asarray(mask) == 0] = 1e3
  _check(layer.apply({"params": p}, x, mask), layer.apply({"params": p}, jnp.asarray(noisy), mask),
         lengths)
