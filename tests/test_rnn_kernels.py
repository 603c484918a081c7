"""rnn_kernels.lstm_layer (hand-written backward pass) equals autodiff of an
independent LSTM (tests/lstm_reference.py) on the same projection."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from emobed_jax import rnn_kernels
from lstm_reference import lstm_autodiff

pytestmark = pytest.mark.usefixtures("fast_compile")  # nothing timed; tolerances hold

# (T, B, P, H) with the mask kind each is tested under.
CASES = [(1, 1, 3, 1, "ones"), (1, 1, 3, 2, "ones"), (7, 3, 5, 4, "random"),
         (9, 3, 5, 4, "random"), (20, 5, 6, 8, "trailing"), (33, 2, 4, 16, "random"),
         (50, 4, 8, 32, "ones"), (40, 3, 16, 8, "trailing"), (30, 4, 16, 8, "trailing")]


def _inputs(t, b, p, h, seed, mask_kind):
  rs = np.random.RandomState(seed)
  x = rs.randn(t, b, p).astype(np.float32)
  kernel = (rs.randn(p, 4 * h) / np.sqrt(p)).astype(np.float32)
  bias = (0.3 * rs.randn(4 * h)).astype(np.float32)
  u = (rs.randn(h, 4 * h) / np.sqrt(h)).astype(np.float32)
  if mask_kind == "ones":
    mask = np.ones((t, b, 1), np.float32)
  elif mask_kind == "random":
    # Holes anywhere (the carry is held across them), incl. leading frames.
    mask = (rs.rand(t, b, 1) > 0.3).astype(np.float32)
  else:  # trailing padding of different lengths, one all-padding row
    lengths = rs.randint(0, t + 1, b)
    lengths[0] = t
    if b > 1:
      lengths[-1] = 0
    mask = (np.arange(t)[:, None, None] < lengths[None, :, None]).astype(np.float32)
  dy = rs.randn(t, b, h).astype(np.float32)
  params = tuple(jnp.asarray(a) for a in (x, kernel, bias, u))
  return params, jnp.asarray(mask), jnp.asarray(dy)


def _layer(unroll=1):
  return lambda x, k, bb, w, mask: rnn_kernels.lstm_layer(x, k, bb, w, mask, unroll)


def _reference(x, k, bb, w, mask):
  return lstm_autodiff(x @ k + bb, w, mask)


def _value_and_grads(fn, params, mask, dy):
  """``sum(fn(...) * dy)`` and its gradients w.r.t. x, kernel, bias and u."""
  def loss(*p):
    return jnp.sum(fn(*p, mask) * dy)
  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3)))(*params)


@pytest.mark.parametrize("t,b,p,h,mask_kind", CASES)
def test_values_and_gradients_match_autodiff_reference(t, b, p, h, mask_kind):
  """lstm_layer(x, kernel, bias, u) == autodiff LSTM of x @ kernel + bias,
  values and gradients w.r.t. all four inputs."""
  params, mask, dy = _inputs(t, b, p, h, seed=t * 100 + h + p, mask_kind=mask_kind)
  ys = rnn_kernels.lstm_layer(*params, mask)
  assert ys.shape == (t, b, h) and ys.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(ys), np.asarray(_reference(*params, mask)),
                             rtol=1e-5, atol=1e-6)
  val, grads = _value_and_grads(_layer(), params, mask, dy)
  val_ref, grads_ref = _value_and_grads(_reference, params, mask, dy)
  np.testing.assert_allclose(float(val), float(val_ref), rtol=1e-5, atol=1e-5)
  for g, r in zip(grads, grads_ref):
    g, r = np.asarray(g), np.asarray(r)
    assert g.shape == r.shape
    np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(r).max()))


def test_masked_frames_hold_the_carry_and_get_no_gradient():
  params, mask, dy = _inputs(12, 3, 5, 4, seed=1, mask_kind="random")
  ys = np.asarray(rnn_kernels.lstm_layer(*params, mask))
  m = np.asarray(mask)[..., 0]
  assert (m == 0).any()
  for t in range(1, 12):
    for b in range(3):
      if m[t, b] == 0:
        np.testing.assert_array_equal(ys[t, b], ys[t - 1, b])
  _, (gx, *_) = _value_and_grads(_layer(), params, mask, dy)
  assert np.all(np.asarray(gx)[m == 0] == 0.0)
  assert np.all(np.asarray(gx)[m > 0] != 0.0)


def test_unroll_gives_the_same_gradients():
  params, mask, dy = _inputs(17, 2, 5, 8, seed=3, mask_kind="random")
  ref = _value_and_grads(_layer(), params, mask, dy)
  out = _value_and_grads(_layer(3), params, mask, dy)
  for a, b in zip(jax.tree_util.tree_leaves(out), jax.tree_util.tree_leaves(ref)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)


def test_composes_with_vmap_and_jit():
  """The custom VJP composes with vmap (per-example gradients) and jit."""
  (x, kernel, bias, u), mask, dy = _inputs(9, 4, 3, 4, seed=5, mask_kind="random")

  def per_example(fn):
    def loss(a, k, bb, w, m, d):
      return jnp.sum(fn(a[:, None], k, bb, w, m[:, None]) * d[:, None])
    return jax.jit(jax.vmap(jax.grad(loss, argnums=(1, 3)),
                            in_axes=(1, None, None, None, 1, 1)))(x, kernel, bias, u, mask, dy)

  out, ref = per_example(_layer()), per_example(_reference)
  for a, b in zip(out, ref):
    assert a.shape[0] == 4
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_lstm_layer_rejects_mismatched_shapes():
  (x, kernel, bias, u), mask, _ = _inputs(4, 2, 5, 8, seed=0, mask_kind="ones")
  with pytest.raises(ValueError, match="lstm_layer: layer 0 has kernel"):
    rnn_kernels.lstm_layer(x[..., :4], kernel, bias, u, mask)   # input width
  with pytest.raises(ValueError, match="lstm_layer: layer 0"):
    rnn_kernels.lstm_layer(x, kernel, bias[:16], u, mask)
  with pytest.raises(ValueError, match="lstm_layer: layer 0"):
    rnn_kernels.lstm_layer(x, kernel, bias, u[:4], mask)
