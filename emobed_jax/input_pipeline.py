"""Prepared TFDS data -> aligned, standardised recordings -> grain windows -> device batches.

RECOLA (and the demo corpus in its format) are long synchronous recordings:
training uses windows of ``window`` frames every ``hop`` frames; evaluation
uses whole recordings, padded to a common length with a mask.

Alignment: raters react late, so the features at frame ``t`` are paired with
the gold standard at ``t + delay`` (``delay_s`` seconds): the feature
sequence is delayed by ``delay`` frames, its first vector repeated, so that
every gold-standard frame is predicted and scored.  ``frame_step`` keeps
every k-th frame (predictions are repeated back to the full rate to score).

The data order is a pure function of ``(seed, step)``: the grain
``MapDataset`` is shuffled per epoch by grain from the seed, and batch
``step`` is read by random access, so a resumed run reads exactly the batches
an uninterrupted one would, with nothing to save but the step.

Units: lengths and offsets are in frames (RECOLA: 40 ms, 25 frames/s),
except ``delay_s`` (seconds) in the config.  The corpora are described in
``docs/DATA.md``, the data choices in ``docs/METHOD.md`` ("Data and
sequences (RECOLA)").
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import grain
import numpy as np

from emobed_datasets import demo, recola
from emobed_datasets.common import default_data_dir
from emobed_datasets.errors import DataError
from emobed_jax.config import DataConfig


class CorpusNotFoundError(DataError):
  """The licensed corpus is not there; the message says how to get it."""


RECOLA_HELP = (
    "RECOLA is licence-restricted: request the AVEC 2016 RECOLA package from its "
    "owners (https://diuf.unifr.ch/main/diva/recola/), unpack it and pass "
    "--manual_dir=/path/to/it (or set RECOLA_DIR); to try the toolkit without it, "
    "run the demo: python launch/train.py --flagfile=demo.flags")


def resolve_prepared_dir(cfg: DataConfig, progress: Callable[[int, int, float], None] | None = None
                         ) -> Path:
  """Prepare the data if needed (demo: generate it first); return the TFDS data dir.

  ``progress(done, total, elapsed_s)`` is called as OMG-Emotion clips are
  processed (feature extraction is the long part of preparing it).

  Args:
    cfg: ``dataset`` (``demo`` or ``recola``), ``data_dir`` (empty:
      :func:`default_data_dir`), ``manual_dir`` (empty: ``$RECOLA_DIR``) and
      ``demo_seed`` are read.

  Returns:
    the folder to pass to :func:`load_recordings` (for RECOLA, ``data_dir``
    itself; for the demo, ``<data_dir>/demo/seed_<demo_seed>``).  Preparing
    writes under ``data_dir`` once; later calls find it prepared.

  Raises:
    CorpusNotFoundError: RECOLA is neither prepared nor given as a manual dir
      (or the manual dir is not a folder); the message says how to get it.
    DataError: the corpus is malformed (from the builder), or a prepared
      copy exists but was built from another package than the given
      ``manual_dir``/``$RECOLA_DIR`` (:func:`emobed_datasets.recola.check_source`).
  """
  data_dir = Path(cfg.data_dir).expanduser() if cfg.data_dir else default_data_dir()
  if data_dir.exists() and not data_dir.is_dir():
    raise DataError(f"--data_dir={data_dir}: expected a folder (prepared data goes there), "
                    "found a file")
  if cfg.dataset == "demo":
    demo.prepare_demo(data_dir, cfg.demo_seed)
    return demo.demo_paths(data_dir, cfg.demo_seed)[1]
  if cfg.utterances:
    return _resolve_omg(cfg, data_dir, progress)
  manual = cfg.manual_dir or os.environ.get("RECOLA_DIR", "")
  if recola.is_prepared(data_dir):
    if manual:  # the copy must come from the package the user named
      recola.check_source(data_dir, manual)
    return data_dir
  recola.prepare(_manual_dir(manual, "RECOLA", "RECOLA_DIR", recola.prepared_path(data_dir),
                             RECOLA_HELP), data_dir)
  return data_dir


def _manual_dir(manual: str, corpus: str, env: str, prepared: Path, help_text: str) -> Path:
  """The manual folder to prepare ``corpus`` from, or CorpusNotFoundError
  saying where the prepared copy was looked for and how to get the corpus."""
  if not manual:
    raise CorpusNotFoundError(
        f"{corpus} not found: no prepared copy at {prepared} (--data_dir) and no "
        f"--manual_dir or {env} given. {help_text}")
  manual_path = Path(manual).expanduser()
  if not manual_path.is_dir():
    raise CorpusNotFoundError(
        f"{corpus} not found: {manual_path} (--manual_dir/{env}) is not a folder, "
        f"and no prepared copy at {prepared}. {help_text}")
  return manual_path


def _resolve_omg(cfg: DataConfig, data_dir: Path, progress) -> Path:
  """:func:`resolve_prepared_dir` for OMG-Emotion and its demo (the demo
  corpus is generated in the organisers' formats, then prepared)."""
  # Imported here: the OMG builder pulls in openSMILE only when preparing.
  from emobed_datasets import demo_omg, omg_emotion  # noqa: PLC0415
  features = cfg.omg_audio_features
  if cfg.dataset == "demo_omg":
    return Path(demo_omg.prepare_demo_omg(data_dir, cfg.demo_seed, audio_features=features,
                                          progress=progress))
  manual = cfg.manual_dir or os.environ.get("OMG_DIR", "")
  if omg_emotion.is_prepared(data_dir, features):
    return data_dir
  manual_path = Path(manual).expanduser() if manual else None
  if manual_path is None or not manual_path.is_dir():  # the builder's message says the rest
    raise CorpusNotFoundError(
        f"no prepared copy at {omg_emotion.prepared_path(data_dir, features)} (--data_dir); "
        f"{omg_emotion.missing_corpus_message(manual)}")
  omg_emotion.prepare(manual_path, data_dir, audio_features=features,
                      split_dirs=cfg.omg_split_dirs, progress=progress)
  return data_dir


@dataclasses.dataclass
class Recording:
  """One recording: ``target [N, Dt]``, ``aux [N, Da]`` or None, ``labels [N, D]`` or None.

  ``N`` frames (one per 40 ms on RECOLA); arrays are float32 host numpy.
  ``target`` holds the target modality's features, ``aux`` the auxiliary
  modality's (training only), ``labels`` one column per configured
  dimension, in ``cfg.dimensions`` order.
  """
  name: str
  target: np.ndarray
  aux: np.ndarray | None
  labels: np.ndarray | None

  @property
  def num_frames(self) -> int:
    return self.target.shape[0]


def _features(example: dict[str, Any], feature_set: str, variants: Sequence[str]) -> np.ndarray:
  return np.concatenate([np.asarray(example[f"{feature_set}_{v}"], np.float32)
                         for v in variants], axis=1)


def load_recordings(tfds_dir: Path, split: str, cfg: DataConfig, *, with_aux: bool,
                    with_labels: bool) -> list[Recording]:
  """Read a prepared split into memory (features of the configured modalities).

  Args:
    tfds_dir: the folder returned by :func:`resolve_prepared_dir`.
    split: ``'train'``, ``'dev'`` or ``'test'`` (TFDS slicing such as
      ``'train[:2]'`` works too).
    cfg: ``modality``/``aux_modality`` (feature sets), ``feature_variant``
      and ``dimensions`` are read.
    with_aux: also read the auxiliary modality (``Recording.aux``).
    with_labels: also read the gold standard (``Recording.labels``).

  Returns:
    one :class:`Recording` per recording of the split, in stored order:
    ``target [N, Dt]`` float32 where ``Dt`` is the feature set's width times
    the number of variants (``cfg.variants()``, concatenated in that order),
    ``aux [N, Da]`` likewise or None, ``labels [N, len(cfg.dimensions)]``
    float32 or None.  Values are as stored (not standardised, not delayed).

  Raises:
    DataError: nothing is prepared at ``tfds_dir`` or the split is unknown
      (from the builder); a requested feature set is not in the prepared
      corpus; labels are asked for on a split without them (RECOLA
      ``test``); an array holds NaN or inf; the split has no recordings.
  """
  source = recola.load_split(tfds_dir, split)
  present = recola.available_feature_sets(source)
  wanted = [("modality", cfg.feature_set("modality"))]
  if with_aux:
    wanted.append(("aux_modality", cfg.feature_set("aux_modality")))
  for flag, fs in wanted:
    if fs not in present:
      raise DataError(
          f"--{flag}={getattr(cfg, flag)}: feature set {fs!r} is not in the prepared "
          f"corpus at {recola.prepared_path(tfds_dir)}, which has {', '.join(present)}")
  variants = cfg.variants()
  out = []
  for i in range(len(source)):
    ex = source[i]
    name = ex["recording"]
    name = name.decode() if isinstance(name, bytes) else str(name)
    labels = None
    if with_labels:
      if not bool(ex["has_labels"]):
        raise DataError(f"split {split!r} has no labels (recording {name}); RECOLA "
                        "test labels were never released: evaluate on 'dev'")
      labels = np.stack([np.asarray(ex[d], np.float32) for d in cfg.dimensions], axis=-1)
    target = _features(ex, wanted[0][1], variants)
    aux = _features(ex, wanted[1][1], variants) if with_aux else None
    for what, arr in (("features", target), ("aux features", aux), ("labels", labels)):
      if arr is not None and not np.all(np.isfinite(arr)):
        raise DataError(f"recording {name} ({split}): {what} hold NaN or inf values")
    out.append(Recording(name, target, aux, labels))
  if not out:
    raise DataError(f"split {split!r} at {recola.prepared_path(tfds_dir)} has no recordings")
  return out


# ---------------------------------------------------------------------------
# Standardisation with training statistics.


@dataclasses.dataclass
class Standardizer:
  """Per-dimension mean/std of each modality, fitted on training frames.

  ``mean[key]`` and ``std[key]`` are float64 ``[D_key]`` arrays for
  ``key`` in ``("target", "aux")`` (``aux`` only when the training
  recordings had it), in feature units.
  """
  mean: dict[str, np.ndarray]
  std: dict[str, np.ndarray]

  @classmethod
  def fit(cls, recordings: Sequence[Recording]) -> "Standardizer":
    """Population mean and std (ddof=0) over every frame of ``recordings``.

    Computed in float64 over the concatenated frames.  A dimension whose std
    is <= 1e-8 gets std 1.0, so it is only centred.  Recordings without
    ``aux`` are left out of the ``aux`` statistics.  ``recordings`` must be
    non-empty (an empty sequence fits nothing, and :meth:`apply` then
    raises ``KeyError``).
    """
    mean, std = {}, {}
    for key in ("target", "aux"):
      arrs = [getattr(r, key) for r in recordings if getattr(r, key) is not None]
      if not arrs:
        continue
      x = np.concatenate(arrs, axis=0).astype(np.float64)
      mean[key] = x.mean(0)
      sd = x.std(0)
      std[key] = np.where(sd > 1e-8, sd, 1.0)  # constant dims pass through centred
    return cls(mean, std)

  def apply(self, rec: Recording) -> Recording:
    """``(x - mean) / std`` of ``target`` and ``aux``, as float32; labels unchanged.

    Returns a new :class:`Recording` (the input is not modified).  Raises
    ``KeyError`` when ``rec`` has a modality the statistics were not fitted
    on, ``ValueError`` (numpy broadcasting) on a feature-width mismatch.
    """
    def f(key):
      x = getattr(rec, key)
      if x is None:
        return None
      return ((x - self.mean[key]) / self.std[key]).astype(np.float32)
    return dataclasses.replace(rec, target=f("target"), aux=f("aux"))

  def to_json(self) -> dict[str, Any]:
    """``{"mean": {key: [floats]}, "std": {key: [floats]}}`` (plain JSON)."""
    return {"mean": {k: v.tolist() for k, v in self.mean.items()},
            "std": {k: v.tolist() for k, v in self.std.items()}}

  @classmethod
  def from_json(cls, d: dict[str, Any]) -> "Standardizer":
    """Inverse of :meth:`to_json`; values come back exactly (float64).

    Raises ``KeyError`` when ``"mean"`` or ``"std"`` is missing.
    """
    return cls({k: np.asarray(v) for k, v in d["mean"].items()},
               {k: np.asarray(v) for k, v in d["std"].items()})


def align(rec: Recording, delay_frames: int, frame_step: int) -> Recording:
  """Delay features by ``delay_frames`` (first vector repeated), keep every ``frame_step``-th frame.

  Args:
    rec: a recording with ``N`` frames.
    delay_frames: >= 0, ``DataConfig.delay_frames`` =
      ``round(delay_s * frame_rate)``; the features at frame ``t`` become
      those of ``t - delay_frames`` (frames before 0 repeat frame 0), so
      they are paired with the gold standard at ``t``.  Labels are not
      shifted.  A delay >= ``N`` repeats frame 0 everywhere.
    frame_step: >= 1; frames ``0, k, 2k, ...`` are kept
      (``ceil(N / k)`` of them), from features and labels alike.

  Returns:
    a new :class:`Recording` with ``ceil(N / frame_step)`` frames.
    Arguments are not validated here (``DataConfig.validate`` checks them).
  """
  def shift(x):
    if x is None or delay_frames == 0:
      return x
    d = min(delay_frames, x.shape[0])
    return np.concatenate([np.repeat(x[:1], d, axis=0), x[:x.shape[0] - d]], axis=0)

  def sub(x):
    return None if x is None else x[::frame_step]
  return Recording(rec.name, sub(shift(rec.target)), sub(shift(rec.aux)), sub(rec.labels))


def upsample(pred: np.ndarray, frame_step: int, num_frames: int) -> np.ndarray:
  """Predictions at every ``frame_step``-th frame -> every frame (repeated).

  Args:
    pred: ``[ceil(N / k), ...]`` predictions of the frames kept by
      :func:`align` with ``frame_step = k``.
    frame_step: ``k`` >= 1.
    num_frames: ``N``, the full-rate length to return.

  Returns:
    ``[N, ...]``, same dtype: each prediction repeated ``k`` times, cut to
    ``N`` (fewer rows if ``pred`` is too short; not checked).
  """
  return np.repeat(pred, frame_step, axis=0)[:num_frames]


# ---------------------------------------------------------------------------
# Training windows.


def window_starts(num_frames: int, window: int, hop: int) -> list[int]:
  """Window starts every ``hop`` frames; the last window ends at the last frame.

  Args:
    num_frames: recording length ``N`` in frames.
    window: window length in frames, >= 1.
    hop: distance between starts in frames, >= 1.

  Returns:
    sorted start frames: ``0, hop, 2 hop, ...`` while a window fits, plus
    ``N - window`` when the last of those does not reach the end; ``[0]``
    (one window, padded by :class:`WindowSource`) when ``N <= window``.
    Arguments are not validated here (``DataConfig.validate`` checks them).
  """
  if num_frames <= window:
    return [0]
  starts = list(range(0, num_frames - window + 1, hop))
  if starts[-1] + window < num_frames:
    starts.append(num_frames - window)
  return starts


class WindowSource:
  """Random-access source of training windows (a grain data source).

  Windows are indexed recording by recording, each at
  :func:`window_starts`.  Item ``i`` is a dict of float32 arrays:
  ``target [window, Dt]``, ``labels [window, D]``, ``mask [window]`` (1.0
  for real frames, 0.0 for the zero padding of a recording shorter than a
  window) and, when the recordings have it, ``aux [window, Da]``.  Every
  recording must have ``labels``; all or none must have ``aux``.
  """

  def __init__(self, recordings: Sequence[Recording], window: int, hop: int):
    self.recordings = list(recordings)
    self.window = window
    self.index = [(r, s) for r, rec in enumerate(self.recordings)
                  for s in window_starts(rec.num_frames, window, hop)]

  def __len__(self) -> int:
    return len(self.index)

  def __getitem__(self, i: int) -> dict[str, np.ndarray]:
    r, s = self.index[i]
    rec = self.recordings[r]
    t = self.window
    n = min(t, rec.num_frames - s)

    def cut(x):
      out = np.zeros((t,) + x.shape[1:], np.float32)
      out[:n] = x[s:s + n]
      return out
    ex = {"target": cut(rec.target), "labels": cut(rec.labels),
          "mask": (np.arange(t) < n).astype(np.float32)}
    if rec.aux is not None:
      ex["aux"] = cut(rec.aux)
    return ex


def train_batches(source: WindowSource, global_batch: int, seed: int, num_epochs: int,
                  process_index: int = 0, process_count: int = 1) -> grain.MapDataset:
  """Batches of this process, in a global order that depends on ``seed`` only.

  Windows are shuffled per epoch (grain reshuffles each repetition), the
  epochs concatenated, and batch ``k`` is windows ``[kB, (k+1)B)`` of that
  order; process ``p`` of ``P`` takes its contiguous block ``p`` of ``B/P``
  rows, so the union over processes is the global batch and global device
  ``p * L + l`` (pmap's order) gets the rows device ``p * L + l`` of one
  process with ``P * L`` devices would (same dropout keys too).  Indexing
  the result by the step is the whole iterator state.
  """
  if global_batch % process_count:
    raise ValueError(f"batch_size: {global_batch} is not divisible by the "
                     f"{process_count} processes")
  ds = grain.MapDataset.source(source).shuffle(seed=seed).repeat(num_epochs)
  # Multi-process (emobed_jax.distributed): sub-batches of B/P rows; global
  # batch k is sub-batches kP..kP+P-1, so process p takes every P-th from p.
  ds = ds.batch(global_batch // process_count, drop_remainder=True)
  if process_count > 1:
    ds = ds.slice(slice(process_index, None, process_count))
  return ds


class WindowBatches:
  """Batch ``step`` of :func:`train_batches`, cut with one gather per array.

  Same batches, bit for bit (order and values), as
  ``train_batches(source, ...)[step]``: the window ids of each batch come
  from :func:`train_batches` itself, applied to the window ids instead of the
  windows (grain's shuffle permutes positions whatever the items are), so
  the order stays grain's, a pure function of ``(seed, step)``.  The
  windows are then copied from every recording's frames concatenated once,
  straight into the batch arrays (one contiguous copy per window and array;
  grain's path copies each window twice, into its own array and by the
  stack, through per-element Python: 2.5-3x slower at B=32 and 128, real
  RECOLA widths 176/336, measured on 2 cores, see PERF_NOTES.md, "Input").

  The concatenated copy costs as much host memory as the training split
  (RECOLA train at both widths: about 0.14 GB).

  Indexing: ``batches[step]`` for ``0 <= step < len(batches)`` is a dict
  of float32 ``target [b, W, Dt]``, ``labels [b, W, D]``, ``mask [b, W]``
  and, when the recordings have it, ``aux [b, W, Da]``, ``b`` = this
  process's share of ``global_batch``; ``IndexError`` outside that range.
  Thread-safe (nothing is mutated after construction).
  """

  def __init__(self, source: WindowSource, global_batch: int, seed: int, num_epochs: int,
               process_index: int = 0, process_count: int = 1):
    self.window = source.window
    self._ids = train_batches(range(len(source)), global_batch, seed, num_epochs,
                              process_index, process_count)
    recs = source.recordings
    offsets = np.cumsum([0] + [r.num_frames for r in recs])
    keys = ("target", "labels") + (("aux",) if recs[0].aux is not None else ())

    self.frames = {k: np.concatenate([getattr(r, k) for r in recs]).astype(np.float32, copy=False)
                   for k in keys}
    self.start = np.asarray([offsets[r] + s for r, s in source.index], np.int64)
    self.length = np.asarray([min(source.window, recs[r].num_frames - s)
                              for r, s in source.index], np.int64)

  def __len__(self) -> int:
    return len(self._ids)

  def window_ids(self, step: int) -> np.ndarray:
    """``[b]`` int64: the :class:`WindowSource` items of batch ``step``."""
    if not 0 <= step < len(self):
      raise IndexError(f"step {step} outside the {len(self)} batches")
    return np.asarray(self._ids[step], np.int64)

  def __getitem__(self, step: int) -> dict[str, np.ndarray]:
    return self._cut(self.window_ids(step), np.empty)

  def shards(self, step: int, num_shards: int) -> list[dict[str, np.ndarray]]:
    """Batch ``step`` split into ``num_shards`` blocks of rows, each in its
    own 64-byte-aligned buffers (:func:`aligned_empty`).

    Shard ``i`` holds rows ``[i b / n, (i + 1) b / n)`` of ``self[step]``
    (the same values; :func:`emobed_jax.parallel.shard_batch`'s split), so
    it is what device ``i`` of the ``pmap`` gets.  Used by
    :class:`emobed_jax.prefetch.DevicePrefetch`: JAX's CPU client takes
    aligned host buffers as device buffers without copying them, which
    saves one copy of every batch per step; separate per-device buffers
    also stay under glibc's 32 MB mmap threshold at B=128, so they are
    reused instead of being faulted in afresh at every step.

    Raises:
      IndexError: ``step`` outside ``[0, len(self))``.
      ValueError: ``b`` is not divisible by ``num_shards``.
    """
    ids = self.window_ids(step)
    if num_shards < 1 or len(ids) % num_shards:
      raise ValueError(f"batch of {len(ids)} rows: not divisible into {num_shards} shards")
    per = len(ids) // num_shards
    return [self._cut(ids[i * per:(i + 1) * per], aligned_empty) for i in range(num_shards)]

  def _cut(self, ids: np.ndarray, empty: Callable[..., np.ndarray]) -> dict[str, np.ndarray]:
    """The windows ``ids`` as a batch, in arrays made by ``empty(shape, dtype)``."""
    w, starts, lengths = self.window, self.start[ids], self.length[ids]
    out = {}
    for k, v in self.frames.items():
      # One contiguous copy per window (faster than np.take's row gather).
      x = empty((len(ids), w) + v.shape[1:], np.float32)
      for i, (s, n) in enumerate(zip(starts, lengths)):
        x[i, :n] = v[s:s + n]
        x[i, n:] = 0.0
      out[k] = x
    mask = empty((len(ids), w), np.float32)
    np.less(np.arange(w)[None, :], lengths[:, None], out=mask, casting="unsafe")
    out["mask"] = mask
    return out


#: Alignment (bytes) of :func:`aligned_empty`: JAX's CPU client uses a host
#: buffer aligned to this as the device buffer itself (measured with jax
#: 0.10.2: ``unsafe_buffer_pointer()`` equals the numpy data pointer; a
#: buffer at 16 or 32 bytes past a 64-byte boundary is copied).
ALIGN_BYTES = 64


def aligned_empty(shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
  """An uninitialised C-contiguous numpy array whose data starts on an
  :data:`ALIGN_BYTES` boundary (numpy itself guarantees only 16)."""
  dtype = np.dtype(dtype)
  nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
  raw = np.empty(nbytes + ALIGN_BYTES, np.uint8)
  skip = -raw.ctypes.data % ALIGN_BYTES
  return raw[skip:skip + nbytes].view(dtype).reshape(shape)


def steps_per_epoch(num_windows: int, global_batch: int) -> int:
  """Full global batches in one pass over ``num_windows`` windows, at least 1.

  (The remainder of an epoch is not dropped: the epochs are concatenated
  before batching by :func:`train_batches`.)
  """
  return max(num_windows // global_batch, 1)


# ---------------------------------------------------------------------------
# Evaluation on whole recordings.


def eval_arrays(recordings: Sequence[Recording], num_devices: int) -> dict[str, np.ndarray]:
  """Whole recordings padded to a common length and to a multiple of ``num_devices``.

  Args:
    recordings: ``R`` >= 1 recordings (their ``target`` is read, all with
      the same width ``Dt``).
    num_devices: ``n`` >= 1, the device count of the eval ``pmap``.

  Returns:
    ``{"target": [n, R'/n, N, Dt], "mask": [n, R'/n, N]}`` float32, where
    ``N`` is the longest recording and ``R'`` is ``R`` rounded up to a
    multiple of ``n``.  Row ``i`` of the flattened ``[R', ...]`` arrays is
    recording ``i``; padding frames and padding rows are 0 with mask 0.

  Raises:
    ValueError: ``recordings`` is empty (from ``max``).
  """
  n = max(r.num_frames for r in recordings)
  rows = -(-len(recordings) // num_devices) * num_devices
  dt = recordings[0].target.shape[1]
  target = np.zeros((rows, n, dt), np.float32)
  mask = np.zeros((rows, n), np.float32)
  for i, r in enumerate(recordings):
    target[i, :r.num_frames] = r.target
    mask[i, :r.num_frames] = 1.0
  per = rows // num_devices
  return {"target": target.reshape(num_devices, per, n, dt),
          "mask": mask.reshape(num_devices, per, n)}
