"""Losses of EmoBed: CCC regression loss, cross-entropy, crossmodal triplet loss.

Every loss here is exact under data parallelism: when ``axis_name`` names a
``pmap``/``shard_map`` axis, the statistics a loss is built from (moments,
sums, counts) are ``psum``'d over that axis, so each device returns the loss
of the *global* batch.  Averaging the per-device gradients with
``lax.pmean(grads, axis_name)`` then gives exactly the gradient of the global
loss (each device's cotangent flows back through the collective), whatever
the number of devices.  ``tests/test_parallel.py`` checks this on 1 and 8
devices.

Shapes are written ``[batch, time, dims]``; a ``mask`` is 1.0 for a real
frame and 0.0 for padding, and a masked entry never changes a value or a
gradient (masked entries are replaced by zeros *before* any arithmetic, so
even NaN padding is harmless).  Masks are 0/1 indicators, not weights: a
value > 0 counts as 1 in some statistics and as itself in others.

Conventions of every function below: inputs may be JAX or numpy arrays of
any float dtype (cast to float32 inside); shapes are checked eagerly and a
mismatch raises ``ValueError`` naming the argument; values (labels in
range, finite inputs) are not checked, since they are traced.  The choices
(losses, mining, binning) are described in ``docs/METHOD.md`` ("Losses").
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

#: Below this denominator the CCC is defined as 0 (see :func:`concordance`).
CCC_EPS = 1e-12

MINING_MODES = ("batch_all", "batch_hard", "semi_hard")

# A distance larger than any squared distance between unit vectors (<= 4):
# used to push invalid candidates out of reach in sorted searches.
_FAR = 1e4


def concordance(mean_x, mean_y, var_x, var_y, cov, xp: Any = jnp):
  """The one definition of the CCC used by the whole project.

  ``ccc = 2 cov / (var_x + var_y + (mean_x - mean_y)^2)`` from *population*
  moments (ddof=0): Lin's concordance correlation coefficient (L. I. Lin,
  "A concordance correlation coefficient to evaluate reproducibility",
  Biometrics 45(1):255-268, 1989, estimated with population moments).
  Degenerate case: when the denominator is finite and not above
  :data:`CCC_EPS` (both sequences constant and equal) no concordance can be
  measured and the CCC is defined as 0; the gradient there is 0 as well.
  A NaN or inf moment (a NaN or inf in the data) gives NaN: a diverged
  model never looks like an ordinary "CCC 0".

  Args:
    mean_x, mean_y: means of the two sequences.
    var_x, var_y: their population variances (ddof=0), >= 0.
    cov: their population covariance.
    xp: the array module, ``jax.numpy`` (losses, traceable) or ``numpy``
      (float64 metrics in :mod:`emobed_jax.metrics`).

  All five are scalars or arrays of one broadcastable shape (e.g. ``[D]``,
  one entry per output dimension), in the units of the data (variances and
  covariance in squared units; the CCC itself is unitless).

  Returns:
    The CCC, broadcast shape, dtype of the inputs, in ``[-1, 1]`` up to
    rounding.  Raises nothing itself.
  """
  denom = var_x + var_y + (mean_x - mean_y) ** 2
  ok = denom > CCC_EPS
  safe = xp.where(ok, denom, 1.0)
  # Only a finite denominator at or below CCC_EPS is the degenerate case; a
  # NaN or inf one (a NaN/inf input) gives NaN, never an ordinary number.
  degenerate = denom <= CCC_EPS
  return xp.where(degenerate, 0.0, xp.where(xp.isfinite(denom), 2.0 * cov / safe, xp.nan))


def _check_mask(mask, shape: tuple[int, ...], name: str = "mask"):
  if mask is None:
    return jnp.ones(shape, jnp.float32)
  if tuple(mask.shape) != tuple(shape):
    raise ValueError(f"{name}: expected shape {tuple(shape)}, got {tuple(mask.shape)}")
  return mask.astype(jnp.float32)


def _psum(x, axis_name):
  return x if axis_name is None else lax.psum(x, axis_name)


def ccc_loss(pred, target, mask=None, axis_name: str | None = None):
  """1 - CCC per output dimension, over all unmasked frames at once.

  The CCC is :func:`concordance` (Lin, 1989) of the frames pooled over every
  leading axis (all windows of the batch together, not a mean over
  windows); see ``docs/METHOD.md`` ("Task loss, regression").

  Args:
    pred: ``[..., D]`` predictions, e.g. ``[batch, time, D]``, any float
      dtype (computed in float32), in label units.
    target: gold standard, same shape as ``pred``.
    mask: ``[...]`` = ``pred.shape[:-1]``, 1.0 for frames that count and
      0.0 for padding (any numeric dtype); None: every frame counts.
    axis_name: if given, the name of a ``pmap``/``shard_map`` axis the call
      runs under: moments are psum'd over it, so the value is the CCC of the
      global batch (not a mean of per-device CCCs).  Outside such a
      transform JAX raises ``NameError`` (unbound axis name).

  Returns:
    ``[D]`` float32, ``1 - ccc`` for each dimension, in ``[0, 2]``; 1.0 for a
    dimension with no unmasked frame, about 1.0 when either sequence is
    constant.
    Moments are computed in two passes (global mean first, then centred
    sums) so near-constant inputs lose no precision.

  Raises:
    ValueError: ``pred`` is 0-d or its shape differs from ``target``'s;
      ``mask`` is not ``pred.shape[:-1]``.
  """
  if pred.ndim < 1 or pred.shape != target.shape:
    raise ValueError(
        f"ccc_loss: pred and target must have the same shape [..., D]; got "
        f"pred {tuple(pred.shape)} and target {tuple(target.shape)}")
  m = _check_mask(mask, pred.shape[:-1])[..., None]
  pred = jnp.where(m > 0, pred, 0.0).astype(jnp.float32)
  target = jnp.where(m > 0, target, 0.0).astype(jnp.float32)
  red = tuple(range(pred.ndim - 1))
  n = _psum(jnp.sum(m, axis=red), axis_name)
  n_safe = jnp.maximum(n, 1.0)
  mean_p = _psum(jnp.sum(pred, axis=red), axis_name) / n_safe
  mean_t = _psum(jnp.sum(target, axis=red), axis_name) / n_safe
  dp = (pred - mean_p) * m
  dt = (target - mean_t) * m
  var_p = _psum(jnp.sum(dp * dp, axis=red), axis_name) / n_safe
  var_t = _psum(jnp.sum(dt * dt, axis=red), axis_name) / n_safe
  cov = _psum(jnp.sum(dp * dt, axis=red), axis_name) / n_safe
  return 1.0 - concordance(mean_p, mean_t, var_p, var_t, cov)


def cross_entropy(logits, labels, mask=None, class_weights=None,
                  axis_name: str | None = None):
  """Mean (optionally class-weighted) softmax cross-entropy, in nats.

  ``nll_i = -log softmax(logits_i)[y_i]``; the result is
  ``sum_i m_i w_{y_i} nll_i / sum_i m_i w_{y_i}`` over unmasked examples,
  the usual weighted mean (the reduction of PyTorch's
  ``CrossEntropyLoss(weight=w, reduction='mean')``; ``w = 1`` without
  ``class_weights``).

  Args:
    logits: ``[N, C]`` unnormalised scores (any leading shape ``[..., C]``),
      any float dtype (computed in float32).
    labels: ``[N]`` (``logits.shape[:-1]``) integer class ids in ``[0, C)``.
      Not range-checked (traced): in this JAX version a label >= C gives
      NaN and a negative one wraps around; do not rely on either.
    mask: ``[N]``, 1.0 for examples that count, 0.0 for padding; None: all.
    class_weights: ``[C]`` non-negative per-class weights (float32), or None.
    axis_name: if given, a ``pmap``/``shard_map`` axis over which the
      numerator and denominator are psum'd (exact global mean).

  Returns:
    scalar float32 >= 0; 0.0 when no example counts (the denominator is
    floored at 1e-12).

  Raises:
    ValueError: ``labels`` is not ``logits.shape[:-1]``, ``mask`` is not
      ``labels.shape``, or ``class_weights`` is not ``[C]``.
  """
  if logits.ndim < 1 or tuple(labels.shape) != tuple(logits.shape[:-1]):
    raise ValueError(
        f"cross_entropy: labels must have shape logits.shape[:-1]; got logits "
        f"{tuple(logits.shape)} and labels {tuple(labels.shape)}")
  num_classes = logits.shape[-1]
  m = _check_mask(mask, labels.shape)
  labels = jnp.where(m > 0, labels, 0).astype(jnp.int32)
  logits = jnp.where(m[..., None] > 0, logits, 0.0).astype(jnp.float32)
  logp = jax.nn.log_softmax(logits, axis=-1)
  nll = -jnp.take_along_axis(logp, labels[..., None], axis=-1)[..., 0]
  w = m
  if class_weights is not None:
    class_weights = jnp.asarray(class_weights, jnp.float32)
    if class_weights.shape != (num_classes,):
      raise ValueError(f"class_weights: expected shape ({num_classes},), got "
                       f"{tuple(class_weights.shape)}")
    w = w * class_weights[labels]
  total = _psum(jnp.sum(w * nll), axis_name)
  weight = _psum(jnp.sum(w), axis_name)
  return total / jnp.maximum(weight, 1e-12)


# --------------------------------------------------------------------------
# Triplet loss.


def l2_normalize(x, axis: int = -1, eps: float = 1e-12):
  """``x / sqrt(max(sum(x**2, axis), eps))``: unit L2 norm along ``axis``.

  Same shape and dtype as ``x``; a vector with squared norm below ``eps``
  (e.g. all zeros) is scaled by ``1/sqrt(eps)`` instead (zeros stay zeros),
  so neither the value nor the gradient is ever NaN.
  """
  return x * lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=axis, keepdims=True), eps))


def pairwise_sq_dist(a, b):
  """Squared L2 distances ``[N, M]`` between rows of ``a [N, E]`` and ``b [M, E]``.

  Computed as ``|a|^2 + |b|^2 - 2 a.b`` (one matmul) and clipped at 0
  against rounding; dtype of the inputs.  Shapes are not checked here (a
  width mismatch fails in the matmul).
  """
  d = (jnp.sum(a * a, -1)[:, None] + jnp.sum(b * b, -1)[None, :]
       - 2.0 * a @ b.T)
  return jnp.maximum(d, 0.0)


def _triplet_sums(anchor, anchor_labels, anchor_mask, cand, cand_labels,
                  cand_mask, margin, mining):
  """Per-direction (sum of losses, number of terms) over local anchors."""
  d = pairwise_sq_dist(anchor, cand)  # [N, M]
  valid = (anchor_mask[:, None] > 0) & (cand_mask[None, :] > 0)
  same = anchor_labels[:, None] == cand_labels[None, :]
  pos = same & valid
  neg = (~same) & valid
  n_pos = jnp.sum(pos, axis=1)
  n_neg = jnp.sum(neg, axis=1)

  if mining == "batch_hard":
    hardest_pos = jnp.max(jnp.where(pos, d, -_FAR), axis=1)
    hardest_neg = jnp.min(jnp.where(neg, d, _FAR), axis=1)
    has = (n_pos > 0) & (n_neg > 0)
    loss = jax.nn.relu(hardest_pos - hardest_neg + margin)
    return jnp.sum(jnp.where(has, loss, 0.0)), jnp.sum(has).astype(jnp.float32)

  # Both remaining modes look up, for every (anchor, positive) pair, negatives
  # of the same anchor by distance: sort each anchor's negative distances once
  # (invalid ones pushed to _FAR) and search, O(N M log M) memory O(N M),
  # instead of materialising the [N, M, M] triplet cube.
  neg_d = jnp.sort(jnp.where(neg, d, _FAR), axis=1)  # [N, M]
  pair = pos & (n_neg[:, None] > 0)  # (anchor, positive) pairs with a negative
  if mining == "batch_all":
    # sum_n relu(d_ap + margin - d_an) = k * (d_ap + margin) - sum of the k
    # smallest d_an, where k = #{n : d_an < d_ap + margin}.
    thr = d + margin  # [N, M] per (anchor, positive)
    k = jax.vmap(lambda s, t: jnp.searchsorted(s, t, side="left"))(neg_d, thr)
    csum = jnp.concatenate(
        [jnp.zeros_like(neg_d[:, :1]), jnp.cumsum(neg_d, axis=1)], axis=1)
    below = jnp.take_along_axis(csum, k, axis=1)
    contrib = k.astype(d.dtype) * thr - below
    count = jnp.sum(jnp.where(pair, n_neg[:, None], 0)).astype(jnp.float32)
    return jnp.sum(jnp.where(pair, contrib, 0.0)), count
  if mining == "semi_hard":
    # Semi-hard negative: the closest negative farther than the positive;
    # if there is none, the hardest (closest) negative.
    idx = jax.vmap(lambda s, t: jnp.searchsorted(s, t, side="right"))(neg_d, d)
    idx = jnp.minimum(idx, neg_d.shape[1] - 1)
    semi = jnp.take_along_axis(neg_d, idx, axis=1)
    chosen = jnp.where(semi < _FAR, semi, neg_d[:, :1])
    loss = jax.nn.relu(d - chosen + margin)
    return (jnp.sum(jnp.where(pair, loss, 0.0)),
            jnp.sum(pair).astype(jnp.float32))
  raise ValueError(f"mining: expected one of {MINING_MODES}, got {mining!r}")


def triplet_loss(anchor_emb, anchor_labels, cand_emb, cand_labels, *,
                 margin: float, mining: str, anchor_mask=None, cand_mask=None,
                 symmetric: bool = False, axis_name: str | None = None):
  """Crossmodal triplet loss with online mining.

  Anchors come from one modality, positives and negatives (the candidates)
  from the other.  Distances are squared L2 between L2-normalised
  embeddings (unitless, in ``[0, 4]``); a candidate is a positive when its
  label equals the anchor's (for continuous targets, use :func:`bin_labels`).

  Mining modes (each averages over its terms, see below):

  * ``batch_all``: every valid (anchor, positive, negative) triplet,
    ``relu(d_ap - d_an + margin)``, averaged over all of them (zero terms
    included).
  * ``batch_hard``: per anchor with >= 1 positive and >= 1 negative,
    ``relu(max_p d_ap - min_n d_an + margin)``, averaged over those anchors.
  * ``semi_hard``: per (anchor, positive) pair with >= 1 negative, the
    closest negative with ``d_an > d_ap`` (if none, the closest negative),
    ``relu(d_ap - d_an + margin)``, averaged over those pairs.

  Sources: the triplet hinge and semi-hard mining follow F. Schroff,
  D. Kalenichenko, J. Philbin, "FaceNet", CVPR 2015;
  batch-hard and batch-all follow A. Hermans, L. Beyer, B. Leibe, "In
  Defense of the Triplet Loss for Person Re-Identification",
  arXiv:1703.07737, 2017.  Squared distances, the semi-hard
  fallback and the averaging are this project's choices (EmoBed's paper
  could not be confirmed on them): ``docs/METHOD.md`` ("Triplet loss").

  Args:
    anchor_emb: ``[N, E]`` anchors (this device's), any float dtype
      (normalised in float32).
    anchor_labels: ``[N]`` integer class ids (compared by equality only).
    cand_emb: ``[M, E]`` candidates (this device's), same width ``E``.
    cand_labels: ``[M]`` integer class ids.
    margin: a Python number > 0, in squared-distance units (``[0, 4]``).
    mining: one of :data:`MINING_MODES`.
    anchor_mask, cand_mask: ``[N]`` / ``[M]``, 1.0 for real embeddings and
      0.0 for padding; None: all real.
    symmetric: also use the candidates' modality as anchors (the mean of the
      two directions).
    axis_name: if given, candidates are ``all_gather``'d over this device
      axis *before mining* (so mining sees the global batch and the loss does
      not weaken as devices grow) and sums/counts are psum'd.  Anchors stay
      local; gradients reach the gathered candidates on their own devices.
      Every device must hold the same ``M``.

  Returns:
    scalar float32 >= 0; 0 when no anchor has both a positive and a negative.

  Raises:
    ValueError: ``mining`` unknown; ``margin`` not a number > 0; an
      embedding not 2-d or its labels not ``[N]``; widths differ; a mask of
      the wrong shape.
  """
  if mining not in MINING_MODES:
    raise ValueError(f"mining: expected one of {MINING_MODES}, got {mining!r}")
  if not isinstance(margin, (int, float)) or not margin > 0:
    raise ValueError(f"margin: expected a number > 0, got {margin!r}")
  for name, emb, lab in (("anchor", anchor_emb, anchor_labels),
                         ("cand", cand_emb, cand_labels)):
    if emb.ndim != 2 or lab.shape != emb.shape[:1]:
      raise ValueError(
          f"{name}_emb/{name}_labels: expected [N, E] and [N]; got "
          f"{tuple(emb.shape)} and {tuple(lab.shape)}")
  if anchor_emb.shape[1] != cand_emb.shape[1]:
    raise ValueError(
        f"cand_emb: embedding width {cand_emb.shape[1]} differs from "
        f"anchor_emb's {anchor_emb.shape[1]}")
  a_mask = _check_mask(anchor_mask, anchor_labels.shape, "anchor_mask")
  c_mask = _check_mask(cand_mask, cand_labels.shape, "cand_mask")
  a = l2_normalize(anchor_emb.astype(jnp.float32))
  c = l2_normalize(cand_emb.astype(jnp.float32))

  def gather(x):
    return x if axis_name is None else lax.all_gather(x, axis_name, tiled=True)

  directions = [(a, anchor_labels, a_mask, c, cand_labels, c_mask)]
  if symmetric:
    directions.append((c, cand_labels, c_mask, a, anchor_labels, a_mask))
  losses = []
  for qa, qla, qma, qc, qlc, qmc in directions:
    s, n = _triplet_sums(qa, qla, qma, gather(qc), gather(qlc), gather(qmc),
                         margin, mining)
    s, n = _psum(s, axis_name), _psum(n, axis_name)
    losses.append(s / jnp.maximum(n, 1.0))
  return sum(losses) / len(losses)


# --------------------------------------------------------------------------
# Label binning for continuous targets ("same emotion" = same bin).


def fit_bin_edges(values, num_bins: int, mask=None) -> np.ndarray:
  """Quantile edges for each dimension, fitted on training labels.

  The edges are the ``1/K, 2/K, ..., (K-1)/K`` quantiles of each
  dimension's unmasked values, computed in float64 by ``np.quantile``'s
  default (linear interpolation, Hyndman & Fan 1996 definition 7), so the
  K bins hold about equally many training frames (``docs/METHOD.md``,
  "Same emotion for continuous labels").

  Args:
    values: ``[..., D]`` continuous labels (host array or anything
      ``np.asarray`` accepts), in label units.
    num_bins: K, a Python ``int`` >= 2, bins per dimension.
    mask: ``[...]`` (any shape with ``prod(values.shape[:-1])`` entries),
      nonzero for frames to use; None: all frames.

  Returns:
    ``[D, K-1]`` float32 inner edges, non-decreasing along the last axis,
    in label units.

  Raises:
    ValueError: ``num_bins`` is not an ``int`` >= 2, ``values`` is 0-d, or
      no frame is left after masking.
    IndexError: (from numpy) ``mask`` has the wrong number of entries.
  """
  if not isinstance(num_bins, int) or num_bins < 2:
    raise ValueError(f"num_bins: expected an integer >= 2, got {num_bins!r}")
  v = np.asarray(values, np.float64)
  if v.ndim < 1:
    raise ValueError(f"values: expected [..., D], got shape {v.shape}")
  v = v.reshape(-1, v.shape[-1])
  if mask is not None:
    v = v[np.asarray(mask).reshape(-1) > 0]
  if v.shape[0] == 0:
    raise ValueError("values: no (unmasked) labels to fit bin edges on")
  q = np.arange(1, num_bins) / num_bins
  return np.quantile(v, q, axis=0).T.astype(np.float32)


def bin_labels(values, edges):
  """Joint bin id of continuous labels.

  Each dimension d is mapped to ``b_d = #{edges[d] <= value}`` in
  ``[0, K)`` (a value equal to an edge goes to the upper bin); dimensions
  are combined as ``sum_d b_d * K**d`` so that two frames are "the same
  emotion" only when every dimension shares a bin.

  Args:
    values: ``[..., D]`` array (JAX or numpy; needs ``.shape``) in label
      units.
    edges: ``[D, K-1]`` from :func:`fit_bin_edges`, same units.

  Returns:
    ``[...]`` int32 ids in ``[0, K**D)``.

  Raises:
    ValueError: ``edges`` is not 2-d or its ``D`` differs from
      ``values.shape[-1]``.
  """
  edges = jnp.asarray(edges)
  if edges.ndim != 2 or values.shape[-1] != edges.shape[0]:
    raise ValueError(
        f"edges: expected [D, K-1] with D = values.shape[-1] = "
        f"{values.shape[-1]}, got {tuple(edges.shape)}")
  k = edges.shape[1] + 1
  b = jnp.sum(values[..., :, None] >= edges, axis=-1).astype(jnp.int32)
  scale = jnp.asarray(k ** np.arange(edges.shape[0]), jnp.int32)
  return jnp.sum(b * scale, axis=-1)
