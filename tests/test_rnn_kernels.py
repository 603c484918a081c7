"""The hand-written LSTM backward pass equals autodiff of the reference scan."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from emobed_jax import rnn_kernels

# (T, B, H) with the mask kind each is tested under.
CASES = [(1, 1, 1, "ones"), (7, 3, 4, "random"), (20, 5, 8, "trailing"),
         (33, 2, 16, "random"), (50, 4, 32, "ones"), (40, 3, 8, "trailing")]


def _inputs(t, b, h, seed, mask_kind):
  rs = np.random.RandomState(seed)
  xw = rs.randn(t, b, 4 * h).astype(np.float32)
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
  return jnp.asarray(xw), jnp.asarray(u), jnp.asarray(mask), jnp.asarray(dy)


def _value_and_grads(fn, xw, u, mask, dy):
  def loss(a, w):
    return jnp.sum(fn(a, w, mask) * dy)
  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(xw, u)


@pytest.mark.parametrize("t,b,h,mask_kind", CASES)
def test_values_and_gradients_match_autodiff_reference(t, b, h, mask_kind):
  xw, u, mask, dy = _inputs(t, b, h, seed=t * 100 + h, mask_kind=mask_kind)
  ys = rnn_kernels.lstm_scan(xw, u, mask)
  ys_ref = rnn_kernels.lstm_scan_reference(xw, u, mask)
  np.testing.assert_allclose(np.asarray(ys), np.asarray(ys_ref), rtol=1e-5, atol=1e-6)
  val, (gx, gu) = _value_and_grads(rnn_kernels.lstm_scan, xw, u, mask, dy)
  val_ref, (gx_ref, gu_ref) = _value_and_grads(rnn_kernels.lstm_scan_reference, xw, u, mask, dy)
  np.testing.assert_allclose(float(val), float(val_ref), rtol=1e-5, atol=1e-5)
  for g, r in ((gx, gx_ref), (gu, gu_ref)):
    g, r = np.asarray(g), np.asarray(r)
    np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(r).max()))


def test_masked_frames_hold_the_carry_and_get_no_gradient():
  xw, u, mask, dy = _inputs(12, 3, 4, seed=1, mask_kind="random")
  ys = np.asarray(rnn_kernels.lstm_scan(xw, u, mask))
  m = np.asarray(mask)[..., 0]
  for t in range(1, 12):
    for b in range(3):
      if m[t, b] == 0:
        np.testing.assert_array_equal(ys[t, b], ys[t - 1, b])
  _, (gx, _) = _value_and_grads(rnn_kernels.lstm_scan, xw, u, mask, dy)
  assert np.all(np.asarray(gx)[m == 0] == 0.0)


def test_unroll_gives_the_same_gradients():
  xw, u, mask, dy = _inputs(17, 2, 8, seed=3, mask_kind="random")
  ref = _value_and_grads(rnn_kernels.lstm_scan, xw, u, mask, dy)
  out = _value_and_grads(lambda a, w, m: rnn_kernels.lstm_scan(a, w, m, 3), xw, u, mask, dy)
  for a, b in zip(jax.tree_util.tree_leaves(out), jax.tree_util.tree_leaves(ref)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)


def test_composes_with_vmap_and_jit():
  """The custom VJP composes with vmap (per-example gradients) and jit."""
  xw, u, mask, dy = _inputs(9, 4, 4, seed=5, mask_kind="random")

  def per_example(fn):
    def loss(a, w, m, d):
      return jnp.sum(fn(a[:, None], w, m[:, None]) * d[:, None])
    return jax.jit(jax.vmap(jax.grad(loss, argnums=1), in_axes=(1, None, 1, 1)))(xw, u, mask, dy)

  np.testing.assert_allclose(np.asarray(per_example(rnn_kernels.lstm_scan)),
                             np.asarray(per_example(rnn_kernels.lstm_scan_reference)),
                             rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("t,b,p,h,mask_kind", [(1, 1, 3, 2, "ones"), (9, 3, 5, 4, "random"),
                                               (30, 4, 16, 8, "trailing")])
def test_lstm_layer_matches_projection_plus_reference_scan(t, b, p, h, mask_kind):
  """lstm_layer(x, kernel, bias, u) == lstm_scan_reference(x @ kernel + bias, u),
  values and gradients w.r.t. all four inputs."""
  _, u, mask, dy = _inputs(t, b, h, seed=7 * t + p, mask_kind=mask_kind)
  rs = np.random.RandomState(t + 1)
  x = jnp.asarray(rs.randn(t, b, p).astype(np.float32))
  kernel = jnp.asarray((rs.randn(p, 4 * h) / np.sqrt(p)).astype(np.float32))
  bias = jnp.asarray(0.3 * rs.randn(4 * h).astype(np.float32))

  def ref(x, k, bb, w):
    return rnn_kernels.lstm_scan_reference(x @ k + bb, w, mask)

  def new(x, k, bb, w):
    return rnn_kernels.lstm_layer(x, k, bb, w, mask)

  np.testing.assert_allclose(np.asarray(new(x, kernel, bias, u)),
                             np.asarray(ref(x, kernel, bias, u)), rtol=1e-5, atol=1e-6)
  grads = [jax.jit(jax.grad(lambda *a, f=f: jnp.sum(f(*a) * dy), argnums=(0, 1, 2, 3)))(
      x, kernel, bias, u) for f in (new, ref)]
  for g, r in zip(*grads):
    g, r = np.asarray(g), np.asarray(r)
    np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(r).max()))
