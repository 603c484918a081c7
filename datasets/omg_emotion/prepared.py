"""Preparing and reading OMG-Emotion (TFDS array_record, read without TensorFlow).

``prepare(manual_dir, data_dir)`` builds ``<data_dir>/omg_emotion/<audio
features>/1.0.0`` once (TFDS writes into a temporary folder and renames it
when everything, metadata and manifest included, is written; the lock and
the removal of leftovers of killed builds are those of
`emobed_datasets.recola.prepare`).  ``load_split`` reads it back with
``array_record`` through TFDS's data source: no TensorFlow.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import multiprocessing
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from emobed_datasets.common import exclusive_lock
from emobed_datasets.errors import DataError
from emobed_datasets.omg_emotion import extract as extract_lib
from emobed_datasets.omg_emotion.extract import (
  AUDIO_FEATURES,
  HELP,
  missing_corpus_message,
)
from emobed_datasets.omg_emotion.omg_emotion_dataset_builder import (
  MANIFEST_FILE,
  Builder,
)

# The TFDS plumbing shared with RECOLA (quiet output, leftovers of killed
# builds, TFDS's empty downloads/ folder): one copy, in recola.prepare.
from emobed_datasets.recola.prepare import (
  _remove_empty_dirs,
  _remove_incomplete_builds,
  _tfds_output,
)

__all__ = [
  "HELP",
  "info",
  "is_prepared",
  "load_split",
  "missing_corpus_message",
  "prepare",
  "prepared_path",
]

def _check_kind(audio_features: str) -> None:
  if audio_features not in AUDIO_FEATURES:
    raise DataError(f"audio_features {audio_features!r}: expected one of "
                    f"{', '.join(AUDIO_FEATURES)}")


def prepared_path(data_dir: str | os.PathLike[str],
                  audio_features: str = "egemaps_lld") -> Path:
  """The version folder a finished build creates:
  ``<data_dir>/omg_emotion/<audio_features>/1.0.0``."""
  _check_kind(audio_features)
  return Path(data_dir).expanduser() / Builder.name / audio_features / str(Builder.VERSION)


def is_prepared(data_dir: str | os.PathLike[str], audio_features: str = "egemaps_lld") -> bool:
  """Whether a finished build for `audio_features` exists under `data_dir`."""
  return (prepared_path(data_dir, audio_features) / "dataset_info.json").is_file()


def _check_corpus(manual_dir: str | os.PathLike[str] | None) -> Path:
  if not manual_dir or not Path(manual_dir).expanduser().is_dir():
    raise DataError(missing_corpus_message(manual_dir))
  root = Path(manual_dir).expanduser()
  if not any((root / name).is_file() for name in extract_lib.CSV_NAMES.values()):
    raise DataError(missing_corpus_message(manual_dir))
  return root


def prepare(
    manual_dir: str | os.PathLike[str] | None,
    data_dir: str | os.PathLike[str],
    *,
    audio_features: str = "egemaps_lld",
    split_dirs: Sequence[str] = extract_lib.SPLITS,
    workers: int | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int, float], None] | None = None,
) -> dict[str, Any]:
  """Builds the OMG-Emotion dataset for one audio feature choice (once).

  Args:
    manual_dir: folder with the three official CSVs and the split folders
      (``<split_dir>/<video>/<utterance>`` clips, ``<stem>.wav`` optional,
      ``<stem>.csv`` from OpenFace); not read when already prepared.
    data_dir: TFDS data folder.
    audio_features: ``egemaps_lld`` | ``egemaps_functionals`` | ``compare_lld``
      (`emobed_jax.features.utterance_features`).
    split_dirs: the folders of the train, validation and test clips.
    workers: processes extracting features (default: CPU count); 1 extracts
      in this process.
    overwrite: rebuild even if a finished build exists.
    progress: called as ``progress(done, total, elapsed_s)`` after each clip.

  Returns:
    ``{'prepared': str (version folder), 'already_prepared': bool,
    'seconds': float (0 when already prepared), 'audio_features': str,
    'splits': {split: {'csv', 'folder', 'rows' (data rows in the CSV), 'kept',
    'skipped': {reason: count}, 'warnings': [line, ...]}}}``.  Reasons:
    'blank row', 'row with empty fields', 'duplicate row', 'missing clip',
    'missing OpenFace CSV', 'unreadable audio'.

  Raises:
    DataError: the corpus is missing (`HELP`), a CSV is missing or malformed
      (names file and line), a label is out of range, an OpenFace CSV is
      malformed, ffmpeg is needed and missing, or a split ends up empty.
  """
  _check_kind(audio_features)
  split_dirs = tuple(split_dirs)
  if len(split_dirs) != 3 or not all(split_dirs):
    raise DataError(f"split_dirs {split_dirs!r}: expected three folder names "
                    "(train, validation, test)")
  data_root = Path(data_dir).expanduser()
  if is_prepared(data_root, audio_features) and not overwrite:
    return _summary(data_root, audio_features, already=True)
  root = _check_corpus(manual_dir)
  data_root.mkdir(parents=True, exist_ok=True)
  start = time.perf_counter()
  with exclusive_lock(data_root / f".{Builder.name}.{audio_features}.prepare.lock"):
    _remove_incomplete_builds(data_root / Builder.name / audio_features)
    if is_prepared(data_root, audio_features) and not overwrite:
      return _summary(data_root, audio_features, already=True)
    if overwrite:
      shutil.rmtree(prepared_path(data_root, audio_features), ignore_errors=True)
    builder = Builder(config=audio_features, data_dir=os.fspath(data_root),
                      file_format="array_record")
    builder.split_dirs = split_dirs
    builder.progress = _unsilenced(progress)
    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    if workers < 1:
      raise DataError(f"workers {workers}: expected at least 1")
    executor = None
    if workers > 1:
      # spawn, not fork: the parent may hold threads (TFDS, absl) that a
      # forked child would inherit in a locked state.
      executor = concurrent.futures.ProcessPoolExecutor(
          workers, mp_context=multiprocessing.get_context("spawn"))
    builder.executor = executor
    download_dir = data_root / "downloads"
    try:
      with _tfds_output(False):
        builder.download_and_prepare(
            file_format="array_record", download_dir=os.fspath(download_dir),
            download_config=tfds.download.DownloadConfig(
                manual_dir=os.fspath(root), try_download_gcs=False))
    finally:
      if executor is not None:
        executor.shutdown(wait=True, cancel_futures=True)
    _remove_empty_dirs(download_dir)
  return _summary(data_root, audio_features, already=False,
                  seconds=time.perf_counter() - start)


def _unsilenced(progress):
  """`progress` with the caller's stdout, which TFDS's quiet mode redirects."""
  if progress is None:
    return None
  stdout = sys.stdout

  def call(done: int, total: int, elapsed: float) -> None:
    with contextlib.redirect_stdout(stdout):
      progress(done, total, elapsed)
  return call


def _metadata(data_root: Path, audio_features: str) -> dict[str, Any]:
  path = prepared_path(data_root, audio_features) / "metadata.json"
  try:
    return json.loads(path.read_text(encoding="utf-8"))
  except (OSError, ValueError) as e:
    raise DataError(f"unreadable dataset metadata ({e}), expected JSON written by "
                    "emobed_datasets.omg_emotion.prepare", path=path) from None


def _summary(data_root: Path, audio_features: str, *, already: bool,
             seconds: float = 0.0) -> dict[str, Any]:
  metadata = _metadata(data_root, audio_features)
  return {"prepared": str(prepared_path(data_root, audio_features)),
          "already_prepared": already, "seconds": seconds,
          "audio_features": audio_features,
          "splits": {s: metadata["summary"][s] for s in extract_lib.SPLITS}}


def _not_prepared(data_root: Path, audio_features: str) -> DataError:
  return DataError(
      "prepared OMG-Emotion dataset not found, expected the output of `python "
      f"launch/prepare_data.py --dataset=omg --omg_audio_features={audio_features}` "
      "(or emobed_datasets.omg_emotion.prepare())",
      path=prepared_path(data_root, audio_features))


class Utterances:
  """A prepared split: ``len(split)`` utterances, ``split[i]`` a dict.

  ``split[i]`` holds ``utterance_id`` / ``video_id`` (str), ``label`` (int
  0..6), ``arousal`` / ``valence`` (float), ``audio`` float32 ``[Ta, Da]``,
  ``audio_mask`` float32 ``[Ta]``, ``video`` float32 ``[Tv, 47]``,
  ``video_mask`` float32 ``[Tv]``.  Negative indices count from the end.
  ``dataset_info`` is TFDS's `DatasetInfo`.
  """

  def __init__(self, source: Any) -> None:
    self._source = source
    self.dataset_info = source.dataset_info

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> dict[str, Any]:
    n = len(self)
    if not isinstance(index, (int, np.integer)):
      raise TypeError(f"index must be an int, got {type(index).__name__}")
    if not -n <= index < n:
      raise IndexError(f"utterance {index} of {n}")
    raw = self._source[int(index) % n]
    return {
        "utterance_id": _text(raw["utterance_id"]), "video_id": _text(raw["video_id"]),
        "label": int(raw["label"]), "arousal": float(raw["arousal"]),
        "valence": float(raw["valence"]),
        "audio": np.asarray(raw["audio"], np.float32),
        "audio_mask": np.asarray(raw["audio_mask"], np.float32),
        "video": np.asarray(raw["video"], np.float32),
        "video_mask": np.asarray(raw["video_mask"], np.float32),
    }

  def __iter__(self):
    return (self[i] for i in range(len(self)))


def _text(value: Any) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def load_split(data_dir: str | os.PathLike[str], split: str,
               audio_features: str = "egemaps_lld") -> Utterances:
  """A prepared split, random access, CSV order, no TensorFlow.

  Args:
    data_dir: the `data_dir` given to `prepare`.
    split: ``'train'``, ``'validation'`` or ``'test'``.
    audio_features: which prepared copy.

  Returns:
    `Utterances`.

  Raises:
    DataError: nothing prepared for `audio_features` under `data_dir`, or an
      unknown split (names the folder).
  """
  data_root = Path(data_dir).expanduser()
  _check_kind(audio_features)
  if not is_prepared(data_root, audio_features):
    raise _not_prepared(data_root, audio_features)
  if split not in extract_lib.SPLITS:
    raise DataError(f"unknown split {split!r}, expected one of "
                    f"{', '.join(extract_lib.SPLITS)}",
                    path=prepared_path(data_root, audio_features))
  builder = Builder(config=audio_features, data_dir=os.fspath(data_root))
  return Utterances(builder.as_data_source(split=split))


def info(data_dir: str | os.PathLike[str], audio_features: str = "egemaps_lld") -> dict[str, Any]:
  """What a prepared copy holds.

  Returns:
    ``{'audio_features': str, 'feature_names': {'audio': [...], 'video':
    [...]}, 'feature_dims': {'audio': Da, 'video': 47}, 'audio_frame_rate':
    float Hz (100.0 for LLDs, 10.0 for functionals), 'video_frame_rate': float
    Hz (median over clips of OpenFace's timestamp step; informative) or None,
    'counts': {split: utterances}, 'splits': the `prepare` summary per split,
    'split_dirs': [...], 'source': {'path', 'fingerprint', 'num_files',
    'total_bytes', 'split_dirs'}, 'manifest': str path of manifest.json,
    'prepared': str path}``.

  Raises:
    DataError: nothing is prepared there.
  """
  data_root = Path(data_dir).expanduser()
  _check_kind(audio_features)
  if not is_prepared(data_root, audio_features):
    raise _not_prepared(data_root, audio_features)
  metadata = _metadata(data_root, audio_features)
  names = metadata["feature_names"]
  version_dir = prepared_path(data_root, audio_features)
  return {
      "audio_features": audio_features,
      "feature_names": names,
      "feature_dims": {m: len(n) for m, n in names.items()},
      "audio_frame_rate": metadata["audio_frame_rate"],
      "video_frame_rate": metadata.get("video_frame_rate"),
      "counts": {s: metadata["summary"][s]["kept"] for s in extract_lib.SPLITS},
      "splits": metadata["summary"],
      "split_dirs": metadata["split_dirs"],
      "source": metadata["source"],
      "manifest": str(version_dir / MANIFEST_FILE),
      "prepared": str(version_dir),
  }
