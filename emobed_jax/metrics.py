"""Host-side evaluation metrics in float64 numpy.

Regression (RECOLA): the concordance correlation coefficient (CCC), with the
granularity over recordings an explicit argument.  Classification
(OMG-Emotion): confusion matrix, accuracy, macro F1 and unweighted average
recall (UAR).

Inputs may be numpy or JAX arrays; they are copied to host numpy.  Every
function validates its inputs and raises ``ValueError`` naming the offending
argument.  Padded frames are excluded through ``mask`` (nonzero = valid); a
masked frame changes nothing, whatever value it holds (NaN included).

The one CCC definition of this project (population moments, ``ddof=0``)::

  ccc = 2 * cov(p, t) / (var(p) + var(t) + (mean(p) - mean(t))**2)

and 0 when that denominator is below ``CCC_EPS`` (both sequences constant:
no concordance can be measured).  The formula lives in one place,
:func:`emobed_jax.losses.concordance`, shared with the training loss.
A constant prediction against a varying target also gives 0.  Because
``|2 cov| <= var(p) + var(t)``, the value always lies in [-1, 1] (up to
rounding), so near-constant inputs never produce NaN or inf.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

import numpy as np

__all__ = [
  "CCC_EPS",
  "GRANULARITIES",
  "CCCResult",
  "ClassificationScores",
  "ccc",
  "ccc_by_recording",
  "confusion_matrix",
  "accuracy",
  "macro_f1",
  "uar",
  "scores_from_confusion",
]

from emobed_jax.losses import CCC_EPS, concordance  # noqa: E402  (one definition)

#: Allowed values of ``ccc_by_recording(..., granularity=...)``.
GRANULARITIES = ("per_recording", "concatenated")


# ---------------------------------------------------------------------------
# Helpers.
# ---------------------------------------------------------------------------


def _as_float64(x: Any, name: str) -> np.ndarray:
  try:
    return np.asarray(x, dtype=np.float64)
  except (TypeError, ValueError) as e:
    raise ValueError(f"`{name}` must be convertible to a float64 array: {e}") from e


def _frame_mask(mask: Any, frame_shape: tuple, name: str) -> np.ndarray:
  """Boolean mask of shape `frame_shape` (nonzero = valid frame)."""
  if mask is None:
    return np.ones(frame_shape, dtype=bool)
  m = np.asarray(mask)
  try:
    m = np.broadcast_to(m, frame_shape)
  except ValueError:
    raise ValueError(
      f"`{name}` has shape {m.shape}, which does not broadcast to the "
      f"frame shape {frame_shape}"
    ) from None
  return m != 0


def _select_frames(
  pred: Any, target: Any, mask: Any, names: tuple = ("pred", "target", "mask")
) -> tuple:
  """Valid frames of `pred` and `target` as float64 arrays of shape [N, D].

  Returns (p, t, is_1d). For 1-D inputs D == 1 and `is_1d` is True.
  """
  pred_name, target_name, mask_name = names
  p = _as_float64(pred, pred_name)
  t = _as_float64(target, target_name)
  if p.ndim == 0:
    raise ValueError(f"`{pred_name}` must have at least 1 dimension, got a scalar")
  if p.shape != t.shape:
    raise ValueError(
      f"`{target_name}` has shape {t.shape} but `{pred_name}` has shape "
      f"{p.shape}; they must be equal"
    )
  shape = p.shape
  is_1d = p.ndim == 1
  if is_1d:
    p, t = p[:, None], t[:, None]
  frame_shape = p.shape[:-1]
  m = _frame_mask(mask, frame_shape, mask_name)
  if m.size == 0:
    raise ValueError(f"`{pred_name}` has no frames (shape {shape})")
  if not m.any():
    raise ValueError(f"`{mask_name}` masks out every frame; at least one frame must be valid")
  p, t = p[m], t[m]  # [N, D]
  for arr, name in ((p, pred_name), (t, target_name)):
    if not np.all(np.isfinite(arr)):
      raise ValueError(f"`{name}` contains NaN or inf in unmasked frames")
  return p, t, is_1d


def _ccc_frames(p: np.ndarray, t: np.ndarray) -> np.ndarray:
  """CCC per column of [N, D] float64 arrays (two-pass, population moments)."""
  mean_p = p.mean(axis=0)
  mean_t = t.mean(axis=0)
  dp = p - mean_p
  dt = t - mean_t
  var_p = np.mean(dp * dp, axis=0)
  var_t = np.mean(dt * dt, axis=0)
  cov = np.mean(dp * dt, axis=0)
  return concordance(mean_p, mean_t, var_p, var_t, cov, xp=np)


# ---------------------------------------------------------------------------
# Regression: CCC.
# ---------------------------------------------------------------------------


def ccc(pred: Any, target: Any, mask: Any = None):
  """Concordance correlation coefficient per output dimension.

  Args:
   pred: predictions, shape [..., D] (frames in the leading axes, output
    dimensions in the last axis) or [T] for a single dimension.
   target: gold standard, same shape as `pred`.
   mask: optional validity mask (nonzero = valid frame), broadcastable to
    `pred.shape[:-1]` (for 1-D inputs: to `pred.shape`). Masked frames
    are ignored entirely, whatever they contain.

  Returns:
   float64 array of shape [D] for inputs of 2 or more dimensions; a Python
   float for 1-D inputs.

  Definition (population moments over all valid frames)::

   2 * cov / (var_p + var_t + (mean_p - mean_t)**2), 0 below CCC_EPS

  When both sequences are constant the CCC is defined as 0 (no
  concordance can be measured); a constant prediction against a varying
  target is 0 as well.

  Raises:
   ValueError: on shape mismatch, a mask that does not broadcast, a mask
    that removes every frame, empty input, or NaN/inf in valid frames.
  """
  p, t, is_1d = _select_frames(pred, target, mask)
  value = _ccc_frames(p, t)
  return float(value[0]) if is_1d else value


@dataclasses.dataclass(frozen=True)
class CCCResult:
  """CCC over a set of recordings.

  Attributes:
   value: the score at the requested granularity; float64 [D] (or a float
    for 1-D recordings).
   granularity: "per_recording" (unweighted mean over recordings of each
    recording's CCC) or "concatenated" (one CCC over all valid frames of
    all recordings).
   per_recording: each recording's own CCC, keyed by recording name, in
    the order of `preds`; filled for both granularities.
  """

  value: Any
  granularity: str
  per_recording: dict


def ccc_by_recording(
  preds: Mapping[str, Any],
  targets: Mapping[str, Any],
  granularity: str,
  masks: Optional[Mapping[str, Any]] = None,
) -> CCCResult:
  """CCC over recordings, at an explicit granularity.

  Args:
   preds: recording name -> predictions [T, D] (or [T]); lengths may
    differ between recordings, the trailing shape may not.
   targets: recording name -> gold standard, same keys and shapes.
   granularity: "per_recording": mean over recordings of the per-recording
    CCC (every recording weighs the same, whatever its length);
    "concatenated": concatenate the valid frames of all recordings and
    compute one CCC.
   masks: optional recording name -> mask (as in `ccc`); recordings
    absent from `masks` use all their frames.

  Returns:
   A `CCCResult`.

  Raises:
   ValueError: unknown granularity, mismatched keys or shapes, empty
    input, or a recording whose mask removes every frame.
  """
  if granularity not in GRANULARITIES:
    raise ValueError(
      f"`granularity` must be one of {GRANULARITIES}, got {granularity!r}"
    )
  if len(preds) == 0:
    raise ValueError("`preds` holds no recordings")
  if set(preds) != set(targets):
    missing = sorted(set(preds) - set(targets))
    extra = sorted(set(targets) - set(preds))
    raise ValueError(
      f"`targets` must have the same recordings as `preds`; missing from "
      f"`targets`: {missing}, not in `preds`: {extra}"
    )
  masks = {} if masks is None else masks
  unknown = sorted(set(masks) - set(preds))
  if unknown:
    raise ValueError(f"`masks` names recordings not in `preds`: {unknown}")

  frames_p, frames_t, per_recording = [], [], {}
  trailing, is_1d = None, None
  for name in preds:
    p, t, rec_1d = _select_frames(
      preds[name],
      targets[name],
      masks.get(name),
      names=(f"preds[{name!r}]", f"targets[{name!r}]", f"masks[{name!r}]"),
    )
    if trailing is None:
      trailing, is_1d = p.shape[1:], rec_1d
    elif p.shape[1:] != trailing or rec_1d != is_1d:
      raise ValueError(
        f"`preds[{name!r}]` has shape {np.shape(preds[name])}, whose output "
        f"dimensions differ from the other recordings (expected "
        f"{'[T]' if is_1d else f'[..., {trailing[0]}]'})"
      )
    value = _ccc_frames(p, t)
    per_recording[name] = float(value[0]) if rec_1d else value
    frames_p.append(p)
    frames_t.append(t)

  if granularity == "per_recording":
    value = np.mean(np.stack([np.atleast_1d(v) for v in per_recording.values()]), axis=0)
  else:
    value = _ccc_frames(np.concatenate(frames_p), np.concatenate(frames_t))
  value = float(value[0]) if is_1d else value
  return CCCResult(value=value, granularity=granularity, per_recording=per_recording)


# ---------------------------------------------------------------------------
# Classification.
# ---------------------------------------------------------------------------


def _class_ids(x: Any, name: str, num_classes: int, valid: np.ndarray) -> np.ndarray:
  """Valid entries of `x` as int64, checked to be integers in [0, C)."""
  a = np.asarray(x)
  if a.dtype.kind not in "biuf":
    raise ValueError(f"`{name}` must hold integer class ids, got dtype {a.dtype}")
  a = a[valid]
  if a.dtype.kind == "f":
    if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
      raise ValueError(f"`{name}` must hold integer class ids, got non-integer values")
  a = a.astype(np.int64)
  if a.size and (a.min() < 0 or a.max() >= num_classes):
    raise ValueError(
      f"`{name}` holds class ids in [{a.min()}, {a.max()}], outside "
      f"[0, {num_classes}) for num_classes={num_classes}"
    )
  return a


def confusion_matrix(labels: Any, preds: Any, num_classes: int, mask: Any = None) -> np.ndarray:
  """Confusion matrix, int64 [C, C]: rows are true classes, columns predicted.

  Args:
   labels: true class ids, any shape (e.g. [N] or [B, T]).
   preds: predicted class ids, same shape as `labels`.
   num_classes: C >= 1; ids must lie in [0, C).
   mask: optional validity mask broadcastable to `labels.shape`; masked
    entries are ignored (they may hold any value, e.g. -1 padding).

  Raises:
   ValueError: bad `num_classes`, shape mismatch, non-integer or
    out-of-range ids in valid entries, or no valid entry.
  """
  if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
    raise ValueError(f"`num_classes` must be a positive integer, got {num_classes!r}")
  num_classes = int(num_classes)
  labels_shape, preds_shape = np.shape(labels), np.shape(preds)
  if labels_shape != preds_shape:
    raise ValueError(
      f"`preds` has shape {preds_shape} but `labels` has shape "
      f"{labels_shape}; they must be equal"
    )
  valid = _frame_mask(mask, labels_shape, "mask")
  if valid.size == 0:
    raise ValueError(f"`labels` is empty (shape {labels_shape})")
  if not valid.any():
    raise ValueError("`mask` masks out every entry; at least one entry must be valid")
  y = _class_ids(labels, "labels", num_classes, valid)
  p = _class_ids(preds, "preds", num_classes, valid)
  counts = np.bincount(y * num_classes + p, minlength=num_classes * num_classes)
  return counts.reshape(num_classes, num_classes).astype(np.int64)


@dataclasses.dataclass(frozen=True)
class ClassificationScores:
  """Accuracy, macro F1 and UAR from one confusion matrix."""

  accuracy: float
  macro_f1: float
  uar: float


def _check_confusion(cm: Any) -> np.ndarray:
  c = np.asarray(cm)
  if c.ndim != 2 or c.shape[0] != c.shape[1] or c.shape[0] == 0:
    raise ValueError(f"`confusion` must be a non-empty square [C, C] matrix, got shape {c.shape}")
  if np.any(c < 0) or c.sum() == 0:
    raise ValueError("`confusion` must hold non-negative counts with a positive total")
  return c.astype(np.float64)


def _accuracy_cm(c: np.ndarray) -> float:
  return float(np.trace(c) / c.sum())


def _macro_f1_cm(c: np.ndarray) -> float:
  tp = np.diag(c)
  support = c.sum(axis=1)  # true count per class
  predicted = c.sum(axis=0)  # predicted count per class
  present = (support + predicted) > 0
  # F1 = 2TP / (2TP + FP + FN) = 2TP / (support + predicted); > 0 denominators on `present`.
  f1 = 2.0 * tp[present] / (support[present] + predicted[present])
  return float(f1.mean())


def _uar_cm(c: np.ndarray) -> float:
  support = c.sum(axis=1)
  has_support = support > 0
  return float(np.mean(np.diag(c)[has_support] / support[has_support]))


def scores_from_confusion(confusion: Any) -> ClassificationScores:
  """Accuracy, macro F1 and UAR from a confusion matrix [C, C] (rows true).

  Useful to accumulate one matrix over batches and score once.
  """
  c = _check_confusion(confusion)
  return ClassificationScores(accuracy=_accuracy_cm(c), macro_f1=_macro_f1_cm(c), uar=_uar_cm(c))


def accuracy(labels: Any, preds: Any, num_classes: int, mask: Any = None) -> float:
  """Fraction of valid entries whose predicted class equals the true class.

  Arguments and errors as in `confusion_matrix`.
  """
  return _accuracy_cm(confusion_matrix(labels, preds, num_classes, mask).astype(np.float64))


def macro_f1(labels: Any, preds: Any, num_classes: int, mask: Any = None) -> float:
  """Unweighted mean of per-class F1.

  Convention (matches scikit-learn ``f1_score(average="macro",
  zero_division=0)`` with default labels): the mean runs over the classes
  present in `labels` OR `preds` among valid entries; classes absent from
  both are excluded. A present class with no true positives scores 0.
  Arguments and errors as in `confusion_matrix`.
  """
  return _macro_f1_cm(confusion_matrix(labels, preds, num_classes, mask).astype(np.float64))


def uar(labels: Any, preds: Any, num_classes: int, mask: Any = None) -> float:
  """Unweighted average recall: mean per-class recall over classes with support.

  Classes that never occur in `labels` (valid entries) are excluded, as in
  scikit-learn ``balanced_accuracy_score``. Arguments and errors as in
  `confusion_matrix`.
  """
  return _uar_cm(confusion_matrix(labels, preds, num_classes, mask).astype(np.float64))
