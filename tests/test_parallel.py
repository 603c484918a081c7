"""The same global batch gives the same losses and gradients on 1 and 8 devices."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from emobed_jax import losses, parallel, train
from emobed_jax.config import SETTINGS
from tests_support import small_config, synthetic_batch

AX = parallel.AXIS
pytestmark = pytest.mark.usefixtures("fast_compile")


def test_eight_fake_devices():
  assert jax.local_device_count() == 8


def _pmap(fn, n):
  """pmap over the first n devices, every output taken from device 0."""
  return jax.pmap(fn, axis_name=AX, devices=jax.local_devices()[:n])


def _split(x, n):
  return x.reshape((n, x.shape[0] // n) + x.shape[1:])


@pytest.mark.parametrize("n", [1, 2, 8])
def test_ccc_loss_and_gradient_independent_of_device_count(n):
  rs = np.random.RandomState(0)
  p = rs.randn(16, 30, 2).astype(np.float32)
  t = (0.5 * p + rs.randn(16, 30, 2)).astype(np.float32)
  mask = (rs.rand(16, 30) > 0.2).astype(np.float32)
  f = lambda pp, tt, mm, ax: jnp.sum(losses.ccc_loss(pp, tt, mm, axis_name=ax))
  ref, gref = jax.value_and_grad(f)(p, t, mask, None)

  def dev(pp, tt, mm):
    return jax.value_and_grad(f)(pp, tt, mm, AX)

  val, g = _pmap(dev, n)(_split(p, n), _split(t, n), _split(mask, n))
  np.testing.assert_allclose(np.asarray(val), float(ref), rtol=1e-5)
  # Each device's gradient w.r.t. its own slice, scaled by 1/n as pmean of
  # parameter gradients would, equals the global gradient of that slice.
  np.testing.assert_allclose(np.asarray(g).reshape(p.shape) / n, np.asarray(gref),
                             rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("n", [1, 8])
def test_cross_entropy_independent_of_device_count(n):
  rs = np.random.RandomState(1)
  logits = rs.randn(24, 7).astype(np.float32)
  labels = rs.randint(0, 7, 24)
  mask = np.ones(24, np.float32)
  mask[-5:] = 0
  w = jnp.asarray(rs.rand(7) + 0.5, jnp.float32)
  ref = losses.cross_entropy(logits, labels, mask, w)
  val = _pmap(lambda a, b, c: losses.cross_entropy(a, b, c, w, axis_name=AX), n)(
      _split(logits, n), _split(labels, n), _split(mask, n))
  np.testing.assert_allclose(np.asarray(val), float(ref), rtol=1e-6)


@pytest.mark.parametrize("mining", losses.MINING_MODES)
@pytest.mark.parametrize("symmetric", [False, True])
def test_triplet_gathers_candidates_across_devices(mining, symmetric):
  rs = np.random.RandomState(2)
  a = rs.randn(32, 8).astype(np.float32)
  c = rs.randn(32, 8).astype(np.float32)
  lab = rs.randint(0, 4, 32)
  mask = (rs.rand(32) > 0.1).astype(np.float32)
  kw = dict(margin=0.3, mining=mining, symmetric=symmetric)
  f = lambda aa, cc, ll, mm, ax: losses.triplet_loss(
      aa, ll, cc, ll, anchor_mask=mm, cand_mask=mm, axis_name=ax, **kw)
  ref, (ga, gc) = jax.value_and_grad(f, argnums=(0, 1))(a, c, lab, mask, None)
  dev = lambda aa, cc, ll, mm: jax.value_and_grad(f, argnums=(0, 1))(aa, cc, ll, mm, AX)
  val, (da, dc) = _pmap(dev, 8)(*(_split(x, 8) for x in (a, c, lab, mask)))
  np.testing.assert_allclose(np.asarray(val), float(ref), rtol=1e-5)
  # A device's cotangent for its own rows, averaged (pmean) = global gradient.
  np.testing.assert_allclose(np.asarray(da).reshape(a.shape) / 8, np.asarray(ga), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(np.asarray(dc).reshape(c.shape) / 8, np.asarray(gc), rtol=1e-4, atol=1e-6)
  # Mining inside each device's slice alone would give another value.
  local = np.mean([float(f(*(_split(x, 8)[i] for x in (a, c, lab, mask)), None)) for i in range(8)])
  assert abs(local - float(ref)) > 1e-3


def grads_fn(model, cfg, edges, axis_name):
  def fn(params, batch):
    (total, parts), g = jax.value_and_grad(
        functools.partial(train.compute_losses, model=model, config=cfg, bin_edges=edges,
                          axis_name=axis_name), has_aux=True)(params, batch, jax.random.key(0))
    if axis_name is not None:
      g = jax.lax.pmean(g, axis_name)
    return total, parts, g
  return fn


CASES = ([(s, "regression", 1) for s in SETTINGS]
         + [("emobed", "regression", 3), ("mono", "classification", 3),
            ("crossmodal", "classification", 1), ("emobed", "classification", 2)]
         # utterances (OMG): the auxiliary modality at its own length and mask
         + [("emobed", "classification/utterance", 2), ("joint", "regression/utterance", 2)])


@pytest.mark.parametrize("setting,task,per_device", CASES)
def test_total_loss_and_gradients_same_on_1_and_8_devices(setting, task, per_device):
  task, _, level = task.partition("/")
  level = level or "frame"
  cfg = small_config(setting, task, level, mining="batch_all")
  model, state = train.create_train_state(cfg, jax.random.key(0))
  batch = synthetic_batch(0, 8 * per_device, 20, task, aux_len=11 if level == "utterance" else None,
                          level=level)
  if level == "utterance":
    train.check_batch(batch, cfg)
  edges = losses.fit_bin_edges(batch["labels"].reshape(-1, 2), 3) if task == "regression" else None
  ref_total, ref_parts, ref_g = jax.jit(grads_fn(model, cfg, edges, None))(state.params, batch)
  sharded = parallel.shard_batch(batch, 8)
  total, parts, g = jax.pmap(grads_fn(model, cfg, edges, AX), axis_name=AX,
                             in_axes=(None, 0), out_axes=None)(state.params, sharded)
  np.testing.assert_allclose(float(total), float(ref_total), rtol=1e-5)
  for a, b in zip(parts, ref_parts):
    np.testing.assert_allclose(float(a), float(b), rtol=1e-5, atol=1e-7)
  if cfg.task.parts["triplet"]:
    assert float(ref_parts[2]) > 0
  # The whole gradient, relative (measured <= 3.2e-7 in float32).
  gl = np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(g)])
  rl = np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(ref_g)])
  assert np.linalg.norm(gl - rl) <= 1e-5 * np.linalg.norm(rl)
  flat_g = jax.tree_util.tree_leaves_with_path(g)
  flat_ref = dict(jax.tree_util.tree_leaves_with_path(ref_g))
  for path, leaf in flat_g:
    r = np.asarray(flat_ref[path])
    np.testing.assert_allclose(np.asarray(leaf), r, rtol=1e-4, atol=1e-5 * np.abs(r).max() + 1e-9,
                               err_msg=jax.tree_util.keystr(path))


def test_shard_batch_rejects_indivisible_batch():
  with pytest.raises(ValueError, match="divisible"):
    parallel.shard_batch(dict(x=np.zeros((10, 3))), 8)
