"""Losses against independent float64 references (numpy, audmetric)."""

import audmetric
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from emobed_jax import losses, metrics


def np_ccc(p, t):
  """Float64 reference: population moments, from np.cov(bias=True)."""
  p = np.asarray(p, np.float64)
  t = np.asarray(t, np.float64)
  c = np.cov(p, t, bias=True)
  denom = c[0, 0] + c[1, 1] + (p.mean() - t.mean()) ** 2
  return 0.0 if denom <= losses.CCC_EPS else 2 * c[0, 1] / denom


@pytest.mark.parametrize("shape", [(50, 2), (4, 300, 2), (3, 17, 1)])
def test_ccc_loss_matches_numpy_and_audmetric(shape):
  rs = np.random.RandomState(sum(shape))
  t = rs.randn(*shape).astype(np.float32)
  p = (0.6 * t + 0.5 * rs.randn(*shape) + 0.3).astype(np.float32)
  got = np.asarray(losses.ccc_loss(jnp.asarray(p), jnp.asarray(t)))
  pf, tf = p.reshape(-1, shape[-1]), t.reshape(-1, shape[-1])
  for d in range(shape[-1]):
    ref = np_ccc(pf[:, d], tf[:, d])
    aud = audmetric.concordance_cc(tf[:, d].astype(np.float64), pf[:, d].astype(np.float64))
    assert ref == pytest.approx(aud, abs=1e-12)
    assert 1 - got[d] == pytest.approx(ref, abs=1e-5)
    assert metrics.ccc(pf[:, d], tf[:, d]) == pytest.approx(ref, abs=1e-12)


def test_ccc_near_constant_inputs_are_precise_and_finite():
  rs = np.random.RandomState(0)
  t = (5.0 + 1e-3 * rs.randn(2000)).astype(np.float32)
  p = (5.0 + 1e-3 * (0.5 * (t - 5.0) / 1e-3 + rs.randn(2000))).astype(np.float32)
  ref = np_ccc(p, t)  # from the float32 values, in float64
  got = 1 - float(losses.ccc_loss(jnp.asarray(p)[:, None], jnp.asarray(t)[:, None])[0])
  assert np.isfinite(got)
  assert got == pytest.approx(ref, abs=1e-5)
  assert metrics.ccc(p, t) == pytest.approx(ref, abs=1e-10)
  assert audmetric.concordance_cc(t.astype(np.float64), p.astype(np.float64)) == pytest.approx(ref, abs=1e-10)


@pytest.mark.parametrize("p,t,expected", [
    (np.full(30, 0.3), np.full(30, 0.3), 0.0),    # both constant, equal: defined 0
    (np.full(30, 0.3), np.full(30, -1.0), 0.0),   # both constant, different
    (np.full(30, 0.3), np.linspace(-1, 1, 30), 0.0),  # constant prediction
])
def test_ccc_degenerate_cases(p, t, expected):
  p32, t32 = jnp.asarray(p, jnp.float32)[:, None], jnp.asarray(t, jnp.float32)[:, None]
  loss, grad = jax.value_and_grad(lambda x: losses.ccc_loss(x, t32)[0])(p32)
  assert 1 - float(loss) == pytest.approx(expected, abs=1e-6)
  assert np.all(np.isfinite(np.asarray(grad)))
  assert metrics.ccc(p, t) == pytest.approx(expected, abs=1e-12)


def test_ccc_loss_ignores_masked_frames_even_nan():
  rs = np.random.RandomState(1)
  t = rs.randn(3, 40, 2).astype(np.float32)
  p = rs.randn(3, 40, 2).astype(np.float32)
  lengths = [40, 25, 7]
  mask = (np.arange(40)[None] < np.asarray(lengths)[:, None]).astype(np.float32)
  p2, t2 = p.copy(), t.copy()
  p2[mask == 0] = np.nan
  t2[mask == 0] = 1e6
  f = lambda a, b: losses.ccc_loss(a, b, jnp.asarray(mask))
  l1, g1 = jax.value_and_grad(lambda a: f(a, t).sum())(jnp.asarray(p))
  l2, g2 = jax.value_and_grad(lambda a: f(a, t2).sum())(jnp.asarray(p2))
  np.testing.assert_array_equal(np.asarray(l1), np.asarray(l2))
  np.testing.assert_array_equal(np.asarray(g1)[mask > 0], np.asarray(g2)[mask > 0])
  assert np.all(np.asarray(g2)[mask == 0] == 0)
  flat_p = np.concatenate([p[i, :n] for i, n in enumerate(lengths)])
  flat_t = np.concatenate([t[i, :n] for i, n in enumerate(lengths)])
  for d in range(2):
    assert 1 - float(f(p, t)[d]) == pytest.approx(np_ccc(flat_p[:, d], flat_t[:, d]), abs=1e-5)


def test_ccc_loss_rejects_bad_shapes():
  with pytest.raises(ValueError, match="pred and target"):
    losses.ccc_loss(jnp.zeros((4, 2)), jnp.zeros((4, 3)))
  with pytest.raises(ValueError, match="mask"):
    losses.ccc_loss(jnp.zeros((4, 2)), jnp.zeros((4, 2)), jnp.ones((5,)))


def test_cross_entropy_matches_numpy():
  rs = np.random.RandomState(2)
  logits = rs.randn(20, 7).astype(np.float32)
  labels = rs.randint(0, 7, 20)
  mask = (rs.rand(20) > 0.3).astype(np.float32)
  w = rs.rand(7).astype(np.float32) + 0.5
  lp = logits.astype(np.float64) - np.log(np.exp(logits.astype(np.float64)).sum(1, keepdims=True))
  nll = -lp[np.arange(20), labels]
  ref = (w[labels] * mask * nll).sum() / (w[labels] * mask).sum()
  got = losses.cross_entropy(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(mask), w)
  assert float(got) == pytest.approx(ref, rel=1e-5)
  ref_plain = (mask * nll).sum() / mask.sum()
  assert float(losses.cross_entropy(logits, labels, mask)) == pytest.approx(ref_plain, rel=1e-5)
  with pytest.raises(ValueError, match="class_weights"):
    losses.cross_entropy(logits, labels, mask, np.ones(3))
  with pytest.raises(ValueError, match="labels"):
    losses.cross_entropy(logits, labels[:5])


# ---------------------------------------------------------------------------
# Triplet loss against brute-force enumeration.


def brute_triplet(a, la, ma, c, lc, mc, margin, mining):
  """Loop over every anchor / positive / negative in float64."""
  a = np.asarray(a, np.float64)
  c = np.asarray(c, np.float64)
  a = a / np.linalg.norm(a, axis=1, keepdims=True)
  c = c / np.linalg.norm(c, axis=1, keepdims=True)
  terms = []
  for i in range(len(a)):
    if not ma[i]:
      continue
    d = [float(np.sum((a[i] - c[j]) ** 2)) for j in range(len(c))]
    pos = [j for j in range(len(c)) if mc[j] and lc[j] == la[i]]
    neg = [j for j in range(len(c)) if mc[j] and lc[j] != la[i]]
    if not pos or not neg:
      continue
    if mining == "batch_hard":
      terms.append(max(0.0, max(d[j] for j in pos) - min(d[j] for j in neg) + margin))
    for p in pos:
      if mining == "batch_all":
        terms += [max(0.0, d[p] - d[n] + margin) for n in neg]
      elif mining == "semi_hard":
        farther = [d[n] for n in neg if d[n] > d[p]]
        dn = min(farther) if farther else min(d[n] for n in neg)
        terms.append(max(0.0, d[p] - dn + margin))
  return float(np.mean(terms)) if terms else 0.0


def random_triplet_inputs(seed, n=14, m=18, e=6, k=3):
  rs = np.random.RandomState(seed)
  return (rs.randn(n, e).astype(np.float32), rs.randint(0, k, n),
          (rs.rand(n) > 0.15).astype(np.float32),
          rs.randn(m, e).astype(np.float32), rs.randint(0, k, m),
          (rs.rand(m) > 0.15).astype(np.float32))


@pytest.mark.parametrize("mining", losses.MINING_MODES)
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("margin", [0.2, 1.0])
def test_triplet_matches_brute_force(mining, seed, margin):
  a, la, ma, c, lc, mc = random_triplet_inputs(seed)
  got = losses.triplet_loss(a, la, c, lc, margin=margin, mining=mining,
                            anchor_mask=ma, cand_mask=mc)
  ref = brute_triplet(a, la, ma, c, lc, mc, margin, mining)
  assert ref > 0
  assert float(got) == pytest.approx(ref, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("mining", losses.MINING_MODES)
def test_triplet_symmetric_is_mean_of_both_directions(mining):
  a, la, ma, c, lc, mc = random_triplet_inputs(5)
  got = losses.triplet_loss(a, la, c, lc, margin=0.3, mining=mining,
                            anchor_mask=ma, cand_mask=mc, symmetric=True)
  ref = 0.5 * (brute_triplet(a, la, ma, c, lc, mc, 0.3, mining)
               + brute_triplet(c, lc, mc, a, la, ma, 0.3, mining))
  assert float(got) == pytest.approx(ref, rel=1e-5)


def test_triplet_masked_candidates_change_nothing():
  a, la, ma, c, lc, mc = random_triplet_inputs(3)
  c2 = c.copy()
  c2[mc == 0] = 100.0 * np.random.RandomState(9).randn(int((mc == 0).sum()), c.shape[1])
  for mining in losses.MINING_MODES:
    f = lambda cc, mining=mining: losses.triplet_loss(
        a, la, cc, lc, margin=0.2, mining=mining, anchor_mask=ma, cand_mask=mc)
    l1, g1 = jax.value_and_grad(f)(jnp.asarray(c))
    l2, g2 = jax.value_and_grad(f)(jnp.asarray(c2))
    assert float(l1) == float(l2)
    np.testing.assert_array_equal(np.asarray(g1)[mc > 0], np.asarray(g2)[mc > 0])
    assert np.all(np.asarray(g2)[mc == 0] == 0)


def test_triplet_no_valid_anchor_is_zero():
  e = np.random.RandomState(0).randn(4, 3).astype(np.float32)
  same = np.zeros(4, int)
  assert float(losses.triplet_loss(e, same, e, same, margin=0.2, mining="batch_hard")) == 0.0


@pytest.mark.parametrize("kwargs,match", [
    (dict(margin=0.0, mining="batch_hard"), "margin"),
    (dict(margin=-1.0, mining="batch_hard"), "margin"),
    (dict(margin=0.2, mining="hardest"), "mining"),
])
def test_triplet_rejects_bad_arguments(kwargs, match):
  e = np.zeros((4, 3), np.float32)
  lab = np.zeros(4, int)
  with pytest.raises(ValueError, match=match):
    losses.triplet_loss(e, lab, e, lab, **kwargs)


def test_triplet_rejects_mismatched_shapes():
  e = np.zeros((4, 3), np.float32)
  lab = np.zeros(4, int)
  with pytest.raises(ValueError, match="cand_emb"):
    losses.triplet_loss(e, lab, np.zeros((4, 5), np.float32), lab, margin=0.2, mining="batch_all")
  with pytest.raises(ValueError, match="anchor_emb"):
    losses.triplet_loss(e, lab[:3], e, lab, margin=0.2, mining="batch_all")


# ---------------------------------------------------------------------------
# Label binning.


def test_bin_edges_are_quantiles_and_bins_are_joint():
  rs = np.random.RandomState(0)
  y = rs.randn(3000, 2)
  edges = losses.fit_bin_edges(y, 3)
  assert edges.shape == (2, 2)
  np.testing.assert_allclose(edges, np.quantile(y, [1 / 3, 2 / 3], axis=0).T, rtol=1e-6)
  b = np.asarray(losses.bin_labels(jnp.asarray(y, jnp.float32), edges))
  ref = (np.sum(y[:, :1] >= edges[0], 1) + 3 * np.sum(y[:, 1:] >= edges[1], 1))
  np.testing.assert_array_equal(b, ref)
  counts = np.bincount(b, minlength=9).reshape(3, 3)
  np.testing.assert_allclose(counts.sum(0), 1000, atol=2)  # balanced per dimension
  with pytest.raises(ValueError, match="num_bins"):
    losses.fit_bin_edges(y, 1)
  with pytest.raises(ValueError, match="edges"):
    losses.bin_labels(jnp.zeros((5, 3)), edges)
