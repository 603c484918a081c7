"""Tests for emobed_jax.metrics against independent float64 references."""
import audmetric
import jax.numpy as jnp
import numpy as np
import pytest

from emobed_jax import metrics
from emobed_jax.metrics import (
  CCC_EPS,
  ccc,
  ccc_by_recording,
  confusion_matrix,
  accuracy,
  macro_f1,
  uar,
  scores_from_confusion,
)


# ---------------------------------------------------------------------------
# Independent references.
# ---------------------------------------------------------------------------


def ref_ccc_1d(p, t):
  """CCC from np.cov with population moments (bias=True)."""
  p = np.asarray(p, np.float64)
  t = np.asarray(t, np.float64)
  c = np.cov(p, t, bias=True)
  denom = c[0, 0] + c[1, 1] + (p.mean() - t.mean()) ** 2
  return 2.0 * c[0, 1] / max(denom, CCC_EPS)


def ref_ccc_2d(p, t):
  return np.array([ref_ccc_1d(p[:, d], t[:, d]) for d in range(p.shape[1])])


def brute_confusion(labels, preds, c):
  cm = np.zeros((c, c), dtype=np.int64)
  for y, p in zip(labels, preds):
    cm[y, p] += 1
  return cm


def brute_scores(labels, preds):
  """sklearn-style scores from precision/recall (a different formula path)."""
  labels, preds = list(labels), list(preds)
  classes = sorted(set(labels) | set(preds))
  f1s, recalls = [], []
  for k in classes:
    tp = sum(1 for y, p in zip(labels, preds) if y == k and p == k)
    fp = sum(1 for y, p in zip(labels, preds) if y != k and p == k)
    fn = sum(1 for y, p in zip(labels, preds) if y == k and p != k)
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    f1s.append(2 * prec * rec / (prec + rec) if prec + rec else 0.0)
    if tp + fn:
      recalls.append(rec)
  acc = sum(1 for y, p in zip(labels, preds) if y == p) / len(labels)
  return acc, float(np.mean(f1s)), float(np.mean(recalls))


# ---------------------------------------------------------------------------
# CCC: values.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("n,d", [(2, 1), (7, 3), (100, 2), (5000, 4)])
def test_ccc_matches_references_per_dimension(n, d):
  rng = np.random.default_rng(n * 10 + d)
  t = rng.normal(size=(n, d)) * rng.uniform(0.1, 3, size=d) + rng.normal(size=d)
  p = 0.6 * t + rng.normal(scale=0.8, size=(n, d)) + 0.3
  got = ccc(p, t)
  assert got.shape == (d,) and got.dtype == np.float64
  np.testing.assert_allclose(got, ref_ccc_2d(p, t), rtol=0, atol=1e-10)
  aud = np.array([audmetric.concordance_cc(t[:, k], p[:, k]) for k in range(d)])
  np.testing.assert_allclose(got, aud, rtol=0, atol=1e-10)
  # Not trivially 0 or 1.
  assert np.all(np.abs(got) < 0.999)


def test_ccc_1d_returns_float_and_known_value():
  # audmetric docstring example: ccc([0, 1, 2], [0, 1, 1]) = 2/3.
  got = ccc([0.0, 1.0, 1.0], [0.0, 1.0, 2.0])
  assert isinstance(got, float)
  assert got == pytest.approx(2.0 / 3.0, abs=1e-12)


def test_ccc_is_symmetric_and_perfect_for_identity():
  rng = np.random.default_rng(0)
  x = rng.normal(size=50)
  y = rng.normal(size=50) + x
  assert ccc(x, y) == pytest.approx(ccc(y, x), abs=1e-14)
  assert ccc(x, x) == pytest.approx(1.0, abs=1e-14)
  xc = x - x.mean()
  assert ccc(xc, -xc) == pytest.approx(-1.0, abs=1e-14)
  # A mean shift lowers concordance but not correlation.
  assert ccc(x, x + 1.0) == pytest.approx(2 * x.var() / (2 * x.var() + 1.0), abs=1e-14)


def test_ccc_leading_axes_are_all_frames():
  rng = np.random.default_rng(1)
  p = rng.normal(size=(4, 6, 2))
  t = rng.normal(size=(4, 6, 2)) + p
  np.testing.assert_allclose(ccc(p, t), ref_ccc_2d(p.reshape(-1, 2), t.reshape(-1, 2)), atol=1e-12)


def test_ccc_accepts_jax_arrays():
  rng = np.random.default_rng(2)
  p = rng.normal(size=(30, 2)).astype(np.float32)
  t = (rng.normal(size=(30, 2)) + p).astype(np.float32)
  got = ccc(jnp.asarray(p), jnp.asarray(t), mask=jnp.ones(30, dtype=bool))
  np.testing.assert_allclose(got, ref_ccc_2d(p.astype(np.float64), t.astype(np.float64)), atol=1e-12)


# ---------------------------------------------------------------------------
# CCC: degenerate and near-constant inputs.
# ---------------------------------------------------------------------------


def test_ccc_identical_constants_is_zero():
  assert ccc(np.full(10, 3.0), np.full(10, 3.0)) == 0.0
  got = ccc(np.full(10, 0.1), np.full(10, 0.1))
  assert np.isfinite(got) and abs(got) < 1e-12


def test_ccc_different_constants_is_zero():
  assert ccc(np.full(10, 1.0), np.full(10, 2.0)) == 0.0


def test_ccc_constant_pred_varying_target_is_zero():
  t = np.linspace(-1.0, 1.0, 25)
  assert ccc(np.full(25, 2.0), t) == 0.0
  got = ccc(np.full((25, 2), 0.1), np.stack([t, t**2], -1))
  assert np.all(np.isfinite(got)) and np.all(np.abs(got) < 1e-12)


def test_ccc_single_frame_is_zero():
  assert ccc([1.5], [0.5]) == 0.0


def test_ccc_near_constant_is_finite_and_bounded():
  rng = np.random.default_rng(3)
  p = 1e6 + 1e-9 * rng.normal(size=200)
  t = 1e6 + 1e-9 * rng.normal(size=200)
  got = ccc(p, t)
  assert np.isfinite(got) and abs(got) <= 1.0


def test_ccc_large_offset_is_numerically_stable():
  # A one-pass E[x^2] - E[x]^2 formula loses everything here.
  rng = np.random.default_rng(4)
  base_p = rng.normal(size=1000) * 1e-2
  base_t = 0.8 * base_p + rng.normal(size=1000) * 5e-3
  offset = 1e8
  p, t = base_p + offset, base_t + offset
  # Shifting both by the same constant leaves the CCC unchanged.
  expected = ref_ccc_1d(p - offset, t - offset)
  got = ccc(p, t)
  assert 0.5 < expected < 1.0
  assert got == pytest.approx(expected, abs=1e-6)


# ---------------------------------------------------------------------------
# CCC: masking.
# ---------------------------------------------------------------------------


def test_ccc_masked_frames_change_nothing():
  rng = np.random.default_rng(5)
  lengths = [17, 9, 30]
  tmax, d = 30, 3
  p = np.full((3, tmax, d), np.nan)
  t = np.full((3, tmax, d), 1e30)
  prefixes_p, prefixes_t = [], []
  for i, n in enumerate(lengths):
    p[i, :n] = rng.normal(size=(n, d))
    t[i, :n] = p[i, :n] + rng.normal(size=(n, d))
    prefixes_p.append(p[i, :n])
    prefixes_t.append(t[i, :n])
  mask = np.arange(tmax)[None, :] < np.array(lengths)[:, None]
  got = ccc(p, t, mask=mask)
  expected = ccc(np.concatenate(prefixes_p), np.concatenate(prefixes_t))
  np.testing.assert_array_equal(got, expected)
  np.testing.assert_allclose(got, ref_ccc_2d(np.concatenate(prefixes_p), np.concatenate(prefixes_t)), atol=1e-12)
  # Integer 0/1 masks behave like boolean masks.
  np.testing.assert_array_equal(ccc(p, t, mask=mask.astype(np.int32)), expected)


def test_ccc_masked_frames_1d():
  rng = np.random.default_rng(6)
  p = rng.normal(size=40)
  t = p + rng.normal(size=40)
  pg, tg = p.copy(), t.copy()
  pg[25:] = -1e9
  tg[25:] = np.inf
  mask = np.arange(40) < 25
  assert ccc(pg, tg, mask=mask) == ccc(p[:25], t[:25])


# ---------------------------------------------------------------------------
# CCC by recording: granularity.
# ---------------------------------------------------------------------------


def _two_recordings():
  x = np.sin(np.linspace(0, 6 * np.pi, 200))
  preds = {"a": x[:, None].copy(), "b": x[:, None].copy()}
  # Recording b's gold standard is offset by 1: per-recording CCC drops,
  # and the concatenated target has a step the prediction lacks.
  targets = {"a": x[:, None].copy(), "b": x[:, None] + 1.0}
  return preds, targets


def test_ccc_by_recording_per_recording_vs_concatenated():
  preds, targets = _two_recordings()
  per = ccc_by_recording(preds, targets, "per_recording")
  cat = ccc_by_recording(preds, targets, "concatenated")

  ref_a = ref_ccc_2d(preds["a"], targets["a"])
  ref_b = ref_ccc_2d(preds["b"], targets["b"])
  ref_cat = ref_ccc_2d(np.concatenate([preds["a"], preds["b"]]), np.concatenate([targets["a"], targets["b"]]))

  assert per.granularity == "per_recording" and cat.granularity == "concatenated"
  np.testing.assert_allclose(per.per_recording["a"], ref_a, atol=1e-12)
  np.testing.assert_allclose(per.per_recording["b"], ref_b, atol=1e-12)
  np.testing.assert_allclose(per.value, (ref_a + ref_b) / 2, atol=1e-12)
  np.testing.assert_allclose(cat.value, ref_cat, atol=1e-12)
  np.testing.assert_allclose(cat.per_recording["b"], ref_b, atol=1e-12)
  assert ref_a[0] == pytest.approx(1.0)
  assert abs(per.value[0] - cat.value[0]) > 0.05


def test_ccc_by_recording_length_weighting_differs():
  # Concatenation weighs long recordings more; the per-recording mean does not.
  rng = np.random.default_rng(7)
  long_t = rng.normal(size=(2000, 1))
  short_t = rng.normal(size=(20, 1))
  short_t -= short_t.mean()  # so that -short_t is perfectly discordant
  preds = {"long": long_t + 0.05 * rng.normal(size=(2000, 1)), "short": -short_t}
  targets = {"long": long_t, "short": short_t}
  per = ccc_by_recording(preds, targets, "per_recording").value
  cat = ccc_by_recording(preds, targets, "concatenated").value
  ref_long = ref_ccc_1d(preds["long"][:, 0], long_t[:, 0])
  ref_short = ref_ccc_1d(preds["short"][:, 0], short_t[:, 0])
  assert ref_long > 0.99 and ref_short < -0.9
  assert per[0] == pytest.approx((ref_long + ref_short) / 2, abs=1e-12)
  assert cat[0] > 0.9 and per[0] < 0.1


def test_ccc_by_recording_1d_and_masks():
  rng = np.random.default_rng(8)
  a_t, b_t = rng.normal(size=50), rng.normal(size=30)
  a_p, b_p = a_t + rng.normal(size=50), 0.5 * b_t + 1.0
  b_p_pad = np.concatenate([b_p, np.full(20, np.nan)])
  b_t_pad = np.concatenate([b_t, np.full(20, 7.0)])
  res = ccc_by_recording(
    {"a": a_p, "b": b_p_pad},
    {"a": a_t, "b": b_t_pad},
    "concatenated",
    masks={"b": np.arange(50) < 30},
  )
  assert isinstance(res.value, float)
  assert res.value == pytest.approx(ref_ccc_1d(np.r_[a_p, b_p], np.r_[a_t, b_t]), abs=1e-12)
  assert res.per_recording["b"] == pytest.approx(ref_ccc_1d(b_p, b_t), abs=1e-12)
  res_per = ccc_by_recording({"a": a_p, "b": b_p_pad}, {"a": a_t, "b": b_t_pad}, "per_recording",
                masks={"b": np.arange(50) < 30})
  assert res_per.value == pytest.approx((ref_ccc_1d(a_p, a_t) + ref_ccc_1d(b_p, b_t)) / 2, abs=1e-12)


def test_ccc_by_recording_errors():
  preds, targets = _two_recordings()
  with pytest.raises(ValueError, match="granularity.*per_recording.*concatenated"):
    ccc_by_recording(preds, targets, "mean")
  with pytest.raises(ValueError, match="targets.*missing.*'b'"):
    ccc_by_recording(preds, {"a": targets["a"]}, "concatenated")
  with pytest.raises(ValueError, match="preds"):
    ccc_by_recording({}, {}, "concatenated")
  with pytest.raises(ValueError, match="masks.*'zzz'"):
    ccc_by_recording(preds, targets, "concatenated", masks={"zzz": np.ones(200)})
  with pytest.raises(ValueError, match=r"masks\['a'\].*every frame"):
    ccc_by_recording(preds, targets, "per_recording", masks={"a": np.zeros(200)})
  bad_p = dict(preds, b=np.zeros((200, 2)))
  bad_t = dict(targets, b=np.ones((200, 2)))
  with pytest.raises(ValueError, match=r"preds\['b'\].*output dimensions"):
    ccc_by_recording(bad_p, bad_t, "concatenated")
  with pytest.raises(ValueError, match=r"targets\['b'\].*\(199, 1\).*\(200, 1\)"):
    ccc_by_recording(preds, dict(targets, b=targets["b"][:199]), "concatenated")


# ---------------------------------------------------------------------------
# CCC: errors.
# ---------------------------------------------------------------------------


def test_ccc_errors():
  x = np.zeros((10, 2))
  with pytest.raises(ValueError, match=r"target.*\(10, 3\).*pred.*\(10, 2\)"):
    ccc(x, np.zeros((10, 3)))
  with pytest.raises(ValueError, match="mask.*every frame"):
    ccc(x, x, mask=np.zeros(10))
  with pytest.raises(ValueError, match=r"mask.*\(7,\).*\(10,\)"):
    ccc(x, x, mask=np.ones(7))
  with pytest.raises(ValueError, match="pred.*scalar"):
    ccc(1.0, 1.0)
  with pytest.raises(ValueError, match="pred.*no frames"):
    ccc(np.zeros((0, 2)), np.zeros((0, 2)))
  with pytest.raises(ValueError, match="pred.*NaN or inf"):
    ccc(np.array([1.0, np.nan, 2.0]), np.array([1.0, 2.0, 3.0]))
  with pytest.raises(ValueError, match="target.*NaN or inf"):
    ccc(np.array([1.0, 0.0, 2.0]), np.array([1.0, np.inf, 3.0]))


# ---------------------------------------------------------------------------
# Classification.
# ---------------------------------------------------------------------------


def test_classification_hand_example():
  labels = [0, 0, 1, 1, 2, 2, 2]
  preds = [0, 1, 1, 1, 2, 0, 2]
  cm = confusion_matrix(labels, preds, num_classes=4)
  expected = np.array([[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 2, 0], [0, 0, 0, 0]])
  np.testing.assert_array_equal(cm, expected)
  assert cm.dtype == np.int64
  assert accuracy(labels, preds, 4) == pytest.approx(5 / 7)
  # F1: class 0 = 2/4, class 1 = 4/5, class 2 = 4/5; class 3 absent -> excluded.
  assert macro_f1(labels, preds, 4) == pytest.approx((0.5 + 0.8 + 0.8) / 3)
  # Recall: 1/2, 2/2, 2/3.
  assert uar(labels, preds, 4) == pytest.approx((0.5 + 1.0 + 2 / 3) / 3)


def test_classification_class_predicted_but_absent_from_labels():
  labels = [0, 0, 1]
  preds = [0, 2, 1]
  # F1: class 0 = 2/3, class 1 = 1, class 2 (no support, one prediction) = 0.
  assert macro_f1(labels, preds, 3) == pytest.approx((2 / 3 + 1.0 + 0.0) / 3)
  # UAR only over classes with support: (1/2 + 1) / 2.
  assert uar(labels, preds, 3) == pytest.approx(0.75)
  assert accuracy(labels, preds, 3) == pytest.approx(2 / 3)
  s = scores_from_confusion(confusion_matrix(labels, preds, 3))
  assert (s.accuracy, s.macro_f1, s.uar) == pytest.approx((2 / 3, 5 / 9, 0.75))


@pytest.mark.parametrize("seed,n,c", [(0, 10, 3), (1, 57, 7), (2, 400, 5), (3, 3, 6)])
def test_classification_matches_brute_force(seed, n, c):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, c, size=n)
  preds = np.where(rng.random(n) < 0.5, labels, rng.integers(0, c, size=n))
  np.testing.assert_array_equal(confusion_matrix(labels, preds, c), brute_confusion(labels, preds, c))
  acc, f1, rec = brute_scores(labels.tolist(), preds.tolist())
  assert accuracy(labels, preds, c) == pytest.approx(acc, abs=1e-12)
  assert macro_f1(labels, preds, c) == pytest.approx(f1, abs=1e-12)
  assert uar(labels, preds, c) == pytest.approx(rec, abs=1e-12)


def test_classification_mask_ignores_padding_and_accepts_jax():
  rng = np.random.default_rng(9)
  labels = rng.integers(0, 7, size=(4, 12))
  preds = rng.integers(0, 7, size=(4, 12))
  lengths = np.array([12, 5, 1, 8])
  mask = np.arange(12)[None, :] < lengths[:, None]
  lab_pad = np.where(mask, labels, -1)  # padding out of range: must be ignored
  pred_pad = np.where(mask, preds, 99)
  flat_l, flat_p = labels[mask], preds[mask]
  np.testing.assert_array_equal(
    confusion_matrix(jnp.asarray(lab_pad), jnp.asarray(pred_pad), 7, mask=jnp.asarray(mask)),
    brute_confusion(flat_l, flat_p, 7),
  )
  acc, f1, rec = brute_scores(flat_l.tolist(), flat_p.tolist())
  assert accuracy(lab_pad, pred_pad, 7, mask=mask) == pytest.approx(acc, abs=1e-12)
  assert macro_f1(lab_pad, pred_pad, 7, mask=mask) == pytest.approx(f1, abs=1e-12)
  assert uar(lab_pad, pred_pad, 7, mask=mask) == pytest.approx(rec, abs=1e-12)


def test_classification_errors():
  with pytest.raises(ValueError, match=r"labels.*\[0, 3\].*num_classes=3"):
    confusion_matrix([0, 3], [0, 1], 3)
  with pytest.raises(ValueError, match=r"labels.*\[-1, 1\]"):
    accuracy([-1, 1], [0, 1], 3)
  with pytest.raises(ValueError, match=r"preds.*\[0, 5\]"):
    macro_f1([0, 1], [0, 5], 3)
  with pytest.raises(ValueError, match=r"preds.*\(3,\).*labels.*\(2,\)"):
    uar([0, 1], [0, 1, 2], 3)
  with pytest.raises(ValueError, match="num_classes"):
    confusion_matrix([0], [0], 0)
  with pytest.raises(ValueError, match="num_classes"):
    confusion_matrix([0], [0], 2.0)
  with pytest.raises(ValueError, match="labels.*integer"):
    confusion_matrix([0.5, 1.0], [0, 1], 2)
  with pytest.raises(ValueError, match="mask.*every entry"):
    accuracy([0, 1], [0, 1], 2, mask=[0, 0])
  with pytest.raises(ValueError, match=r"mask.*\(3,\).*\(2,\)"):
    accuracy([0, 1], [0, 1], 2, mask=[1, 1, 1])
  with pytest.raises(ValueError, match="labels.*empty"):
    accuracy([], [], 2)
  with pytest.raises(ValueError, match="confusion"):
    scores_from_confusion(np.zeros((2, 3)))
  with pytest.raises(ValueError, match="confusion"):
    scores_from_confusion(np.zeros((2, 2)))


def test_float_class_ids_with_integer_values_are_accepted():
  assert accuracy(np.array([0.0, 1.0, 2.0]), np.array([0.0, 2.0, 2.0]), 3) == pytest.approx(2 / 3)


def test_public_constants():
  assert metrics.CCC_EPS == 1e-12
  assert metrics.GRANULARITIES == ("per_recording", "concatenated")
