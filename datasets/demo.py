"""A small synthetic corpus in the exact on-disk format of AVEC 2016 RECOLA.

`write_demo_corpus` writes, under `root`::

    ratings_gold_standard/{arousal,valence}/{train,dev}_<n>.arff
    features_<set>/{arousal,valence}/{train,dev,test}_<n>.arff

with the folder names, file names, gold standard header (``@relation
GOLDSTANDARD``, ``Instance_name``, ``frameTime``, ``GoldStandard``) and 40 ms
frames of the real package, so that the real builder reads it unchanged.  The
test split has features only.  Feature files start with ``Instance_name`` and
``frameTime`` like the gold standard (docs/DATA.md leaves open whether the real
feature files carry ``frameTime``; the reader handles both); their relation
and attribute names (``features_audio``, ``audio_001`` ...) are placeholders.

How the numbers are made (per recording = one speaker):

* latent arousal and valence: smooth random trajectories (low-pass filtered
  noise, time scale of a few seconds) plus a per-recording mean, squashed with
  ``tanh`` into (-1, 1);
* gold standard: the latent delayed by a rater reaction lag of 2 s, plus a
  little smooth rater noise, 6 decimals;
* features of a set: ``w_arousal * arousal + w_valence * valence`` plus
  set-specific nuisance factors, mixed at random into the D dimensions (some
  dimensions through ``tanh``), plus per-dimension smooth noise, with
  per-speaker gains/offsets and per-dimension scales; audio is driven mostly
  by arousal (weights 1.0 / 0.35), video mostly by valence (0.35 / 1.0),
  physiology mostly by arousal (0.8 / 0.2).  The noise is strong enough that
  the weakly driven dimension is only partly recoverable from one modality, so
  the auxiliary modality carries information the target lacks.  Nothing here
  is tuned to favour any training setting;
* each variant (``arousal/``, ``valence/``) is smoothed with a centred moving
  window of its own length (audio 4 s / 6 s, appearance 6 s / 4 s, geometric
  4 s / 8 s, physiology 4 s / 4 s), the first and last full-window vectors
  repeated at the edges, as in the real package;
* video: a few short stretches of all-zero frames (no face found).

Output is a pure function of the arguments: the same seed gives byte-identical
files.  `ensure_demo_corpus` writes a corpus once, atomically (temporary
folder, marker file, rename) and is a no-op afterwards; `prepare_demo` also
builds the TFDS dataset from it.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from emobed_datasets.arff import write_arff
from emobed_datasets.common import (
  RECOLA_FEATURE_SETS,
  check_demo_marker,
  exclusive_lock,
)

__all__ = [
    "write_demo_corpus", "ensure_demo_corpus", "prepare_demo", "demo_paths",
    "FRAME_STEP_S", "RATER_LAG_S", "DEMO_MARKER",
]

FRAME_STEP_S = 0.04
RATER_LAG_S = 2.0
DEMO_MARKER = ".emobed_demo_complete.json"
_FORMAT_VERSION = 1

_FEATURE_SETS = RECOLA_FEATURE_SETS
_VIDEO_SETS = ("video_appearance", "video_geometric")
# Set -> (weight of arousal, weight of valence) in the features.
_DRIVE = {
    "audio": (1.0, 0.35),
    "video_appearance": (0.35, 1.0),
    "video_geometric": (0.35, 1.0),
}
_PHYSIO_DRIVE = (0.8, 0.2)
# Set -> window length in seconds for the (arousal, valence) variants.
_WINDOW_S = {
    "audio": (4.0, 6.0),
    "video_appearance": (6.0, 4.0),
    "video_geometric": (4.0, 8.0),
}
_PHYSIO_WINDOW_S = (4.0, 4.0)
# Set -> std of the per-dimension smooth noise (relative to the drives).
_NOISE = {"audio": 1.6, "video_appearance": 1.8, "video_geometric": 2.2}
_PHYSIO_NOISE = 1.0
_NUM_NUISANCE = 4
_SPLITS = ("train", "dev", "test")


# ----------------------------------------------------------------------------
# Signal helpers (all deterministic, float64).


def _moving_sum_valid(x: np.ndarray, width: int) -> np.ndarray:
  """Sum over windows of `width` rows: ``[n, ...] -> [n - width + 1, ...]``."""
  c = np.cumsum(x, axis=0)
  out = c[width - 1:].copy()
  out[1:] -= c[:-width]
  return out


def _smooth_noise(
    rng: np.random.Generator, num_frames: int, channels: int, width: int
) -> np.ndarray:
  """Unit-variance low-pass noise ``[num_frames, channels]``.

  White noise through three box filters of `width` frames (close to a
  Gaussian kernel with sigma ~ width / 2).
  """
  width = max(1, int(width))
  x = rng.standard_normal((num_frames + 3 * (width - 1), channels))
  for _ in range(3):
    x = _moving_sum_valid(x, width)
  kernel = np.ones(width)
  kernel = np.convolve(np.convolve(kernel, kernel), kernel)
  return x / np.sqrt(np.sum(kernel**2))


def _window_features(x: np.ndarray, width: int) -> np.ndarray:
  """Centred moving mean of `width` frames, edge vectors repeated.

  ``[n, D] -> [n, D]``: frame t holds the mean of the window centred on t
  where the window fits; before (after) that, the first (last) full-window
  vector is repeated, as the AVEC 2016 features do.
  """
  n = x.shape[0]
  width = max(1, min(int(width), n))
  valid = _moving_sum_valid(x, width) / width
  start = (width - 1) // 2
  out = np.empty_like(x)
  out[start:start + valid.shape[0]] = valid
  out[:start] = valid[0]
  out[start + valid.shape[0]:] = valid[-1]
  return out


def _frames(seconds: float) -> int:
  return max(1, int(round(seconds / FRAME_STEP_S)))


# ----------------------------------------------------------------------------
# The corpus.


def _recording_names(num_train: int, num_dev: int, num_test: int) -> list[str]:
  counts = {"train": num_train, "dev": num_dev, "test": num_test}
  return [f"{split}_{i}" for split in _SPLITS
          for i in range(1, counts[split] + 1)]


def _latent(rng: np.random.Generator, num_frames: int) -> np.ndarray:
  """Latent [arousal, valence] ``[num_frames, 2]`` in (-1, 1)."""
  slow = _smooth_noise(rng, num_frames, 2, _frames(4.0))
  fast = _smooth_noise(rng, num_frames, 2, _frames(1.2))
  mean = rng.normal(0.0, 0.25, size=(1, 2))
  return np.tanh(mean + 0.45 * slow + 0.15 * fast)


def _gold(rng: np.random.Generator, latent: np.ndarray) -> np.ndarray:
  """Rated trace: the latent delayed by the rater lag plus rater noise."""
  lag = _frames(RATER_LAG_S)
  n = latent.shape[0]
  delayed = np.concatenate([np.repeat(latent[:1], min(lag, n), axis=0),
                            latent[: max(n - lag, 0)]], axis=0)
  noise = 0.05 * _smooth_noise(rng, n, latent.shape[1], _frames(0.6))
  return np.clip(delayed + noise, -1.0, 1.0)


class _SetModel:
  """Speaker-independent parameters of one feature set."""

  def __init__(self, rng: np.random.Generator, name: str) -> None:
    dim = _FEATURE_SETS[name][1]
    self.name = name
    self.dim = dim
    self.drive = np.asarray(_DRIVE.get(name, _PHYSIO_DRIVE))
    self.windows = tuple(_frames(s) for s in _WINDOW_S.get(name, _PHYSIO_WINDOW_S))
    self.noise = _NOISE.get(name, _PHYSIO_NOISE)
    sources = 2 + _NUM_NUISANCE
    self.mixing = rng.standard_normal((sources, dim)) / np.sqrt(2.0)
    self.squash = rng.random(dim) < 0.5
    self.scale = np.exp(rng.normal(0.0, 1.0, size=dim))
    self.offset = rng.normal(0.0, 2.0, size=dim)

  def features(
      self, rng: np.random.Generator, latent: np.ndarray, nuisance: np.ndarray
  ) -> np.ndarray:
    """Frame-level features ``[num_frames, dim]`` before windowing."""
    n = latent.shape[0]
    drives = latent * self.drive
    raw = np.concatenate([drives, 0.6 * nuisance], axis=1) @ self.mixing
    raw = np.where(self.squash, np.tanh(raw), raw)
    raw += self.noise * _smooth_noise(rng, n, self.dim, _frames(0.8))
    raw += 0.5 * rng.standard_normal((n, self.dim))
    gain = np.exp(rng.normal(0.0, 0.2, size=self.dim))
    shift = rng.normal(0.0, 0.2, size=self.dim)
    return (raw * gain + shift) * self.scale + self.offset


def _face_missing(rng: np.random.Generator, num_frames: int) -> np.ndarray:
  """Bool ``[num_frames]``: a few short stretches with no face found."""
  missing = np.zeros(num_frames, bool)
  for _ in range(int(rng.integers(1, 4))):
    length = int(rng.integers(_frames(0.4), _frames(2.0) + 1))
    start = int(rng.integers(0, max(1, num_frames - length)))
    missing[start:start + length] = True
  return missing


def write_demo_corpus(
    root: str | os.PathLike[str],
    *,
    seed: int = 0,
    num_train: int = 8,
    num_dev: int = 4,
    num_test: int = 2,
    num_frames: int = 1501,
    feature_sets: Sequence[str] = ("audio", "video_appearance"),
) -> Path:
  """Writes a synthetic corpus in the AVEC 2016 RECOLA layout.

  Args:
    root: folder to write into (created; existing files are overwritten).
    seed: the corpus is a pure function of the arguments.
    num_train, num_dev, num_test: recordings per split (test: no labels).
    num_frames: frames (40 ms) per recording; 1501 = 60 s.
    feature_sets: any of audio, video_appearance, video_geometric, ecg,
      hrhrv, eda, scl, scr.

  Returns:
    `root` as a Path.

  Raises:
    ValueError: unknown feature set or non-positive sizes.
  """
  unknown = [s for s in feature_sets if s not in _FEATURE_SETS]
  if unknown:
    raise ValueError(f"unknown feature set(s) {unknown}, expected some of "
                     f"{', '.join(_FEATURE_SETS)}")
  if not feature_sets:
    raise ValueError("feature_sets is empty, expected at least one set")
  if min(num_train, num_dev, num_test) < 1 or num_frames < 1:
    raise ValueError("num_train, num_dev, num_test and num_frames must be >= 1")
  ordered = [s for s in _FEATURE_SETS if s in feature_sets]
  out = Path(root)
  out.mkdir(parents=True, exist_ok=True)

  global_rng = np.random.default_rng(np.random.SeedSequence([seed, 0]))
  models = {name: _SetModel(global_rng, name) for name in _FEATURE_SETS}
  frame_time = np.round(np.arange(num_frames) * FRAME_STEP_S, 2)

  names = _recording_names(num_train, num_dev, num_test)
  for index, recording in enumerate(names, start=1):
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1, index]))
    latent = _latent(rng, num_frames)
    gold = _gold(rng, latent)
    missing = _face_missing(rng, num_frames)
    if not recording.startswith("test_"):
      for k, dimension in enumerate(("arousal", "valence")):
        write_arff(
            out / "ratings_gold_standard" / dimension / f"{recording}.arff",
            "GOLDSTANDARD", ["GoldStandard"], gold[:, k:k + 1],
            instance_name=recording, frame_time=frame_time,
            float_format="%.6f",
        )
    for name in ordered:
      # Each set has its own stream: a set's values do not depend on which
      # other sets are written.
      model = models[name]
      set_rng = np.random.default_rng(np.random.SeedSequence(
          [seed, 2, index, list(_FEATURE_SETS).index(name)]))
      nuisance = _smooth_noise(set_rng, num_frames, _NUM_NUISANCE, _frames(1.0))
      frames = model.features(set_rng, latent, nuisance)
      folder, dim = _FEATURE_SETS[name]
      attributes = [f"{name}_{i:03d}" for i in range(1, dim + 1)]
      for variant, width in zip(("arousal", "valence"), model.windows):
        values = _window_features(frames, width)
        if name in _VIDEO_SETS:
          values[missing] = 0.0
        write_arff(
            out / folder / variant / f"{recording}.arff",
            folder, attributes, values, instance_name=recording,
            frame_time=frame_time, float_format="%.4g",
        )
  return out


# ----------------------------------------------------------------------------
# Write once, atomically.


def ensure_demo_corpus(
    root: str | os.PathLike[str],
    seed: int = 0,
    *,
    num_train: int = 8,
    num_dev: int = 4,
    num_test: int = 2,
    num_frames: int = 1501,
    feature_sets: Sequence[str] = ("audio", "video_appearance"),
) -> Path:
  """Writes the demo corpus at `root` unless it is already there.

  The corpus is written into a temporary sibling folder, a marker file with
  the parameters is added, and the folder is renamed to `root`; so `root`
  exists only when complete.  A process-level lock (``.<root>.lock`` beside
  it) serialises concurrent callers, and leftovers of killed writers are
  removed under that lock.

  Returns:
    `root` as a Path.

  Raises:
    DataError: `root` exists but is not a demo corpus with these parameters.
  """
  root = Path(root).expanduser()
  params = {
      "format_version": _FORMAT_VERSION, "seed": int(seed),
      "num_train": num_train, "num_dev": num_dev, "num_test": num_test,
      "num_frames": num_frames,
      "feature_sets": [s for s in _FEATURE_SETS if s in feature_sets],
  }
  if _check_existing(root, params):
    return root
  root.parent.mkdir(parents=True, exist_ok=True)
  with exclusive_lock(root.parent / f".{root.name}.lock"):
    if _check_existing(root, params):  # written while we waited
      return root
    for stale in root.parent.glob(f".{root.name}.tmp-*"):
      shutil.rmtree(stale, ignore_errors=True)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}"
    write_demo_corpus(
        tmp, seed=seed, num_train=num_train, num_dev=num_dev,
        num_test=num_test, num_frames=num_frames, feature_sets=feature_sets)
    (tmp / DEMO_MARKER).write_text(json.dumps(params, sort_keys=True) + "\n")
    if root.is_dir() and not any(root.iterdir()):
      root.rmdir()
    os.rename(tmp, root)
  return root


def _check_existing(root: Path, params: dict[str, object]) -> bool:
  """True if `root` is a complete corpus with `params`; raises if foreign."""
  return check_demo_marker(root, DEMO_MARKER, params, "demo corpus")


def demo_paths(
    data_dir: str | os.PathLike[str], seed: int = 0
) -> tuple[Path, Path]:
  """Where the demo lives under `data_dir`.

  Returns:
    ``(manual_dir, tfds_data_dir)``: the corpus in the RECOLA package format
    at ``<data_dir>/demo_manual/seed_<seed>`` and the TFDS data folder at
    ``<data_dir>/demo/seed_<seed>`` (prepared data in its ``recola/1.0.0``).
  """
  root = Path(data_dir).expanduser()
  return root / "demo_manual" / f"seed_{seed}", root / "demo" / f"seed_{seed}"


def prepare_demo(
    data_dir: str | os.PathLike[str],
    seed: int = 0,
    *,
    show_progress: bool = False,
    **corpus_kwargs,
):
  """Writes the demo corpus (once) and prepares it with the RECOLA builder.

  Args:
    data_dir: root data folder (see `demo_paths`).
    seed: demo corpus seed.
    show_progress: let TFDS print its progress bars.
    **corpus_kwargs: passed to `ensure_demo_corpus` (sizes, feature sets).

  Returns:
    The prepared `emobed_datasets.recola.Builder`; read splits with
    ``emobed_datasets.recola.load_split(demo_paths(data_dir, seed)[1], split)``.
  """
  from emobed_datasets import recola  # imports TFDS; keep it lazy.

  manual_dir, tfds_dir = demo_paths(data_dir, seed)
  if recola.is_prepared(tfds_dir):
    # Prepared already (perhaps with other sizes, e.g. by a test): use it as is.
    return recola.prepare(None, tfds_dir)
  ensure_demo_corpus(manual_dir, seed, **corpus_kwargs)
  return recola.prepare(manual_dir, tfds_dir, show_progress=show_progress)
