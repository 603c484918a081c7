"""Utterance corpora (OMG-Emotion and its demo): prepared data -> padded, masked batches.

One example per utterance, one label per utterance (a class, or arousal and
valence), each modality at its own frame rate (audio low-level descriptors
every 10 ms, OpenFace video frames at the clip's rate) with its own length
and mask: video frames where OpenFace found no face are masked, never
zero-filled silently.

Training batches are cut from utterances of similar length (length
buckets, the usual way to bound padding): the training utterances are
sorted by target length and split into ``length_buckets`` groups of equal
size; a bucket's batches are padded to the longest target and auxiliary
sequence of that bucket, so the train step compiles once per bucket.  Each
epoch shuffles the utterances within every bucket and the order of all
batches, from ``(seed, epoch)`` only: batch ``step`` is a pure function of
``(seed, step)`` and a resumed run reads exactly what an uninterrupted one
would (as for RECOLA windows, :mod:`emobed_jax.input_pipeline`).  A
bucket's last batch is completed with empty rows (mask 0, excluded from
every loss), so every utterance is seen once per epoch.

Evaluation pads each bucket of the evaluated split to its own longest
sequences and splits the rows over the local devices.

Units: lengths in frames of each modality; labels as stored (OMG: classes
0 Anger ... 6 Surprise; arousal in [0, 1], valence in [-1, 1];
``docs/DATA.md``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from emobed_datasets.errors import DataError

from emobed_jax.config import DataConfig
from emobed_jax.input_pipeline import Recording, Standardizer


@dataclasses.dataclass
class Utterance:
  """One utterance, host numpy.

  ``name``: ``"<video>/<utterance>"``; ``target [Tt, Dt]`` / ``target_mask
  [Tt]`` float32 (1.0 = a real frame); ``aux [Ta, Da]`` / ``aux_mask [Ta]``
  or None; ``label``: class id (int); ``values``: ``[D]`` float32 arousal
  and valence in ``cfg.dimensions`` order.
  """
  name: str
  target: np.ndarray
  target_mask: np.ndarray
  aux: np.ndarray | None
  aux_mask: np.ndarray | None
  label: int
  values: np.ndarray

  @property
  def num_frames(self) -> int:
    return int(self.target.shape[0])


def load_utterances(prepared_dir: Path, split: str, cfg: DataConfig, *,
                    with_aux: bool) -> list[Utterance]:
  """Read a prepared OMG-Emotion split into memory.

  Args:
    prepared_dir: the folder :func:`emobed_jax.input_pipeline.resolve_prepared_dir`
      returns for an utterance corpus.
    split: ``train``, ``validation`` or ``test``.
    cfg: ``modality`` / ``aux_modality`` (``audio`` or ``video``),
      ``omg_audio_features`` and ``dimensions`` are read.
    with_aux: also read the auxiliary modality.

  Returns:
    one :class:`Utterance` per prepared utterance, in stored order.

  Raises:
    DataError: not prepared, an unknown split, an utterance with NaN or inf
      features or labels on a real frame, an utterance without a single
      frame of the target modality, or an empty split.
  """
  from emobed_datasets import omg_emotion  # noqa: PLC0415  (imports the builder's TFDS parts)
  source = omg_emotion.load_split(prepared_dir, split, cfg.omg_audio_features)
  out = []
  for i in range(len(source)):
    ex = source[i]
    name = str(ex["utterance_id"])

    def modality(key, ex=ex, name=name):
      x = np.asarray(ex[key], np.float32)
      m = np.asarray(ex[f"{key}_mask"], np.float32)
      if x.ndim != 2 or m.shape != x.shape[:1]:
        raise DataError(f"utterance {name} ({split}): {key} features of shape {x.shape} "
                        f"with a mask of shape {m.shape}; expected [frames, D] and [frames]")
      if not np.all(np.isfinite(x[m > 0])):
        raise DataError(f"utterance {name} ({split}): {key} features hold NaN or inf values")
      return x, m
    target, target_mask = modality(cfg.modality)
    if target.shape[0] == 0:
      raise DataError(f"utterance {name} ({split}): no {cfg.modality} frames")
    aux, aux_mask = modality(cfg.aux_modality) if with_aux else (None, None)
    values = np.asarray([ex[d] for d in cfg.dimensions], np.float32)
    if not np.all(np.isfinite(values)):
      raise DataError(f"utterance {name} ({split}): labels hold NaN or inf values")
    out.append(Utterance(name, target, target_mask, aux, aux_mask, int(ex["label"]), values))
  if not out:
    raise DataError(f"split {split!r} at {prepared_dir} has no utterances")
  return out


# ---------------------------------------------------------------------------
# Standardisation with training statistics (real frames only).


def fit_standardizer(utterances: Sequence[Utterance]) -> Standardizer:
  """Population mean and std per feature over the real (unmasked) frames of
  the training utterances, per modality (:meth:`Standardizer.fit`, whose
  JSON form ``stats.json`` keeps)."""
  def valid(x, m):
    return None if x is None else x[m > 0]
  return Standardizer.fit([Recording(u.name, valid(u.target, u.target_mask),
                                     valid(u.aux, u.aux_mask), None) for u in utterances])


def standardize(u: Utterance, standardizer: Standardizer) -> Utterance:
  """``(x - mean) / std`` on real frames; masked frames become 0 (a new
  :class:`Utterance`)."""
  def f(x, m, key):
    if x is None:
      return None
    return np.where(m[:, None] > 0, (x - standardizer.mean[key]) / standardizer.std[key],
                    0.0).astype(np.float32)
  return dataclasses.replace(u, target=f(u.target, u.target_mask, "target"),
                             aux=f(u.aux, u.aux_mask, "aux"))


# ---------------------------------------------------------------------------
# Length buckets and batches.


def length_buckets(utterances: Sequence[Utterance], num_buckets: int) -> tuple[np.ndarray, list]:
  """Bucket of each utterance and each bucket's padded lengths.

  The utterances, sorted by target length (ties by position), are split
  into ``min(num_buckets, len(utterances))`` groups of (nearly) equal size.

  Returns:
    ``(bucket [U] int, shapes)`` where ``shapes[k] = (Tt_k, Ta_k)``, the
    longest target and auxiliary sequence of bucket ``k`` (``Ta_k = 0``
    without an auxiliary modality).
  """
  lengths = np.asarray([u.num_frames for u in utterances])
  order = np.argsort(lengths, kind="stable")
  groups = [g for g in np.array_split(order, min(num_buckets, len(order))) if len(g)]
  bucket = np.empty(len(order), np.int64)
  shapes = []
  for k, g in enumerate(groups):
    bucket[g] = k
    shapes.append((int(max(utterances[i].num_frames for i in g)),
                   int(max((0 if utterances[i].aux is None else utterances[i].aux.shape[0])
                           for i in g))))
  return bucket, shapes


def pad_batch(utterances: Sequence[Utterance], rows: Sequence[int | None], shape: tuple[int, int],
              task: str) -> dict[str, np.ndarray]:
  """Rows of a padded batch: ``rows[i]`` is an utterance index, or None for
  an empty row (all masks 0).

  Returns float32 ``target [b, Tt, Dt]``, ``mask [b, Tt]``, and when the
  utterances have an auxiliary modality ``aux [b, Ta, Da]``, ``aux_mask
  [b, Ta]``; ``labels``: ``[b]`` int32 classes (``task ==
  "classification"``) or ``[b, D]`` float32 values.
  """
  tt, ta = shape
  first = utterances[next(r for r in rows if r is not None)] if any(
      r is not None for r in rows) else utterances[0]
  b = len(rows)
  out = {"target": np.zeros((b, tt, first.target.shape[1]), np.float32),
         "mask": np.zeros((b, tt), np.float32)}
  has_aux = first.aux is not None
  if has_aux:
    out["aux"] = np.zeros((b, ta, first.aux.shape[1]), np.float32)
    out["aux_mask"] = np.zeros((b, ta), np.float32)
  if task == "classification":
    out["labels"] = np.zeros((b,), np.int32)
  else:
    out["labels"] = np.zeros((b, first.values.shape[0]), np.float32)
  for j, r in enumerate(rows):
    if r is None:
      continue
    u = utterances[r]
    n = u.num_frames
    out["target"][j, :n] = u.target
    out["mask"][j, :n] = u.target_mask
    if has_aux:
      na = u.aux.shape[0]
      out["aux"][j, :na] = u.aux
      out["aux_mask"][j, :na] = u.aux_mask
    out["labels"][j] = u.label if task == "classification" else u.values
  return out


class UtteranceBatches:
  """Training batches of utterances, indexed by the step (module docstring).

  ``batches[step]`` is this process's share (its contiguous block
  ``process_index`` of ``global_batch / process_count`` rows, as
  :func:`emobed_jax.input_pipeline.train_batches` cuts windows) of global
  batch ``step``, a dict as
  :func:`pad_batch` returns.  ``steps_per_epoch`` is the same every epoch:
  ``sum_k ceil(U_k / global_batch)`` over the buckets.
  """

  def __init__(self, utterances: Sequence[Utterance], global_batch: int, seed: int,
               num_buckets: int, task: str, process_index: int = 0, process_count: int = 1):
    if global_batch % process_count:
      raise ValueError(f"batch_size: {global_batch} is not divisible by the "
                       f"{process_count} processes")
    self.utterances = list(utterances)
    self.global_batch, self.seed, self.task = global_batch, seed, task
    self.process_index, self.process_count = process_index, process_count
    self.bucket, self.shapes = length_buckets(self.utterances, num_buckets)
    sizes = np.bincount(self.bucket, minlength=len(self.shapes))
    self.steps_per_epoch = int(sum(-(-int(s) // global_batch) for s in sizes))
    self._plans: dict[int, list] = {}

  def _plan(self, epoch: int) -> list[tuple[int, list[int | None]]]:
    if epoch in self._plans:
      return self._plans[epoch]
    rng = np.random.default_rng([self.seed, epoch])
    batches = []
    for k in range(len(self.shapes)):
      members = rng.permutation(np.flatnonzero(self.bucket == k)).tolist()
      for s in range(0, len(members), self.global_batch):
        rows = members[s:s + self.global_batch]
        batches.append((k, rows + [None] * (self.global_batch - len(rows))))
    self._plans = {epoch: [batches[i] for i in rng.permutation(len(batches))]}  # one epoch kept
    return self._plans[epoch]

  def __getitem__(self, step: int) -> dict[str, np.ndarray]:
    epoch, j = divmod(int(step), self.steps_per_epoch)
    k, rows = self._plan(epoch)[j]
    per = self.global_batch // self.process_count  # process p: its contiguous block p,
    mine = rows[self.process_index * per:(self.process_index + 1) * per]  # as train_batches
    return pad_batch(self.utterances, mine, self.shapes[k], self.task)


def eval_batches(utterances: Sequence[Utterance], num_devices: int, num_buckets: int,
                 max_rows: int = 256) -> list[tuple[list[int], dict[str, np.ndarray]]]:
  """The target modality of ``utterances`` in padded chunks spread over devices.

  Returns:
    ``[(indices, {"target": [n, r, Tt, Dt], "mask": [n, r, Tt]})]``: each
    chunk's utterance indices (row ``i`` of the flattened ``[n*r, ...]``
    arrays is ``indices[i]``; rows beyond ``len(indices)`` are empty) with
    ``n = num_devices``; chunks are length buckets of at most ``max_rows``
    utterances, so few shapes compile.
  """
  target_only = [dataclasses.replace(u, aux=None, aux_mask=None) for u in utterances]
  bucket, shapes = length_buckets(target_only, num_buckets)
  out = []
  for k, shape in enumerate(shapes):
    members = np.flatnonzero(bucket == k).tolist()
    for s in range(0, len(members), max_rows):
      idx = members[s:s + max_rows]
      rows = -(-len(idx) // num_devices) * num_devices
      b = pad_batch(target_only, idx + [None] * (rows - len(idx)), shape, "classification")
      per = rows // num_devices
      out.append((idx, {"target": b["target"].reshape((num_devices, per) + b["target"].shape[1:]),
                        "mask": b["mask"].reshape(num_devices, per, -1)}))
  return out


def class_weights(utterances: Sequence[Utterance], num_classes: int) -> np.ndarray:
  """``w_c = N / (C * N_c)`` over the training utterances ("inverse"
  frequency, the weighting of scikit-learn's ``class_weight='balanced'``);
  a class absent from training gets weight 0.  ``[C]`` float32."""
  counts = np.bincount([u.label for u in utterances], minlength=num_classes).astype(np.float64)
  w = np.where(counts > 0, counts.sum() / (num_classes * np.maximum(counts, 1)), 0.0)
  return w.astype(np.float32)


def majority_class(utterances: Sequence[Utterance], num_classes: int) -> int:
  """The most frequent training class (the majority-class baseline predicts it)."""
  return int(np.argmax(np.bincount([u.label for u in utterances], minlength=num_classes)))


def arrays_of(utterances: Sequence[Utterance]) -> dict[str, Any]:
  """Labels of a split as arrays: ``labels [U]`` int, ``values [U, D]``."""
  return {"labels": np.asarray([u.label for u in utterances], np.int64),
          "values": np.stack([u.values for u in utterances])}
