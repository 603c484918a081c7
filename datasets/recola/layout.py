"""The on-disk layout of the AVEC 2016 RECOLA package, checked and read.

`check_layout` inspects a manual_dir without parsing any ARFF file and raises
`DataError` (naming the path and what was expected) for anything that would
make the TFDS build fail or produce an inconsistent dataset.  `read_recording`
reads every file of one recording and checks that their row counts agree.

The package holds, at its root (see docs/DATA.md)::

    ratings_gold_standard/{arousal,valence}/{train,dev}_<n>.arff
    features_audio/{arousal,valence}/{train,dev,test}_<n>.arff      88 dims
    features_video_appearance/...                                   168 dims
    features_video_geometric/...                                    632 dims
    features_ECG/ features_HRHRV/ features_EDA/ features_SCL/ features_SCR/
                                                      19, 10, 8, 8, 8 dims

Every feature folder is optional, but at least one must be present, and a
present folder must hold both variants (``arousal/`` and ``valence/``) for
every recording.  Gold standards exist for train and dev only; test gold
standard files, if any, are ignored (the test split is always unlabelled).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np

from emobed_datasets.arff import read_arff
from emobed_datasets.common import RECOLA_FEATURE_SETS
from emobed_datasets.errors import DataError

__all__ = [
    "FEATURE_SETS", "VARIANTS", "DIMENSIONS", "SPLITS", "LABELED_SPLITS",
    "GOLD_FOLDER", "GOLD_ATTRIBUTE", "Layout", "check_layout",
    "read_recording", "feature_key",
]

#: Feature set name -> (folder in the package, number of dimensions).
FEATURE_SETS: dict[str, tuple[str, int]] = RECOLA_FEATURE_SETS
#: Each feature folder comes in one variant per emotion dimension.
VARIANTS: tuple[str, ...] = ("arousal", "valence")
#: Label dimensions (gold standard sub-folders).
DIMENSIONS: tuple[str, ...] = ("arousal", "valence")
SPLITS: tuple[str, ...] = ("train", "dev", "test")
LABELED_SPLITS: tuple[str, ...] = ("train", "dev")
GOLD_FOLDER = "ratings_gold_standard"
GOLD_ATTRIBUTE = "GoldStandard"

_FILE_RE = re.compile(r"^(train|dev|test)_([0-9]+)\.arff$")


def feature_key(feature_set: str, variant: str) -> str:
  """The example key of one feature matrix, e.g. ``'audio_arousal'``."""
  return f"{feature_set}_{variant}"


def recording_sort_key(recording: str) -> tuple[int, int]:
  """Sorts ``train_2`` before ``train_10`` and train before dev before test."""
  split, _, number = recording.partition("_")
  return SPLITS.index(split), int(number)


@dataclasses.dataclass(frozen=True)
class Layout:
  """A checked manual_dir.

  Attributes:
    manual_dir: root of the unpacked package.
    feature_sets: the feature sets whose folders are present, in
      `FEATURE_SETS` order.
    recordings: split -> recording ids (``'train_1'``, ...), sorted by number.
  """

  manual_dir: Path
  feature_sets: tuple[str, ...]
  recordings: dict[str, tuple[str, ...]]

  def feature_path(self, feature_set: str, variant: str, recording: str) -> Path:
    """Path of one feature ARFF file."""
    folder = FEATURE_SETS[feature_set][0]
    return self.manual_dir / folder / variant / f"{recording}.arff"

  def gold_path(self, dimension: str, recording: str) -> Path:
    """Path of one gold standard ARFF file."""
    return self.manual_dir / GOLD_FOLDER / dimension / f"{recording}.arff"


def check_layout(manual_dir: str | Path | None) -> Layout:
  """Checks the folder structure of an AVEC 2016 RECOLA package.

  Only names are inspected (no file is parsed), so this is fast.

  Args:
    manual_dir: root of the unpacked package.

  Returns:
    The `Layout` (present feature sets, recordings per split).

  Raises:
    DataError: a folder or file is missing or misnamed; the message names the
      path and what was expected there.
  """
  if manual_dir is None or str(manual_dir) == "":
    raise DataError("no manual_dir given, expected the folder of the unpacked "
                    "AVEC 2016 RECOLA package")
  root = Path(manual_dir).expanduser()
  if not root.exists():
    raise DataError(
        "folder not found, expected the unpacked AVEC 2016 RECOLA package "
        f"(with {GOLD_FOLDER}/ and features_*/ folders)", path=root)
  if not root.is_dir():
    raise DataError("not a folder, expected the unpacked AVEC 2016 RECOLA "
                    "package", path=root)
  gold_root = root / GOLD_FOLDER
  if not gold_root.is_dir():
    raise DataError(
        "folder not found, expected the gold standard folder of the AVEC 2016 "
        "package with arousal/ and valence/ sub-folders", path=gold_root)

  present = tuple(
      name for name, (folder, _) in FEATURE_SETS.items()
      if (root / folder).exists()
  )
  if not present:
    folders = ", ".join(folder for folder, _ in FEATURE_SETS.values())
    raise DataError(f"no feature folder found, expected at least one of "
                    f"{folders}", path=root)

  # recording -> a file that proves it exists (for error messages).
  seen_in: dict[str, Path] = {}
  feature_files: dict[tuple[str, str], set[str]] = {}
  for name in present:
    folder = root / FEATURE_SETS[name][0]
    for variant in VARIANTS:
      sub = folder / variant
      found = _list_recordings(sub, f"features of {name!r} ({variant} "
                                    "variant)")
      feature_files[(name, variant)] = set(found)
      for recording, path in found.items():
        seen_in.setdefault(recording, path)

  for (name, variant), found in feature_files.items():
    for recording in sorted(set(seen_in) - found, key=recording_sort_key):
      folder = FEATURE_SETS[name][0]
      raise DataError(
          f"file not found, expected {name} features for recording "
          f"{recording} (present in {seen_in[recording]}); every feature "
          "folder must hold the same recordings",
          path=root / folder / variant / f"{recording}.arff")

  for dimension in DIMENSIONS:
    sub = gold_root / dimension
    found = _list_recordings(sub, f"{dimension} gold standards")
    labelled = {r: p for r, p in found.items()
                if r.split("_")[0] in LABELED_SPLITS}
    for recording, path in sorted(labelled.items()):
      if recording not in seen_in:
        raise DataError(
            f"gold standard without features: no features_*/*/{recording}.arff"
            " found, expected features for every labelled recording",
            path=path)
    for recording in sorted(seen_in, key=recording_sort_key):
      if recording.split("_")[0] in LABELED_SPLITS and recording not in labelled:
        raise DataError(
            f"file not found, expected the {dimension} gold standard of "
            f"{recording}, which has features ({seen_in[recording]})",
            path=sub / f"{recording}.arff")

  recordings: dict[str, tuple[str, ...]] = {}
  for split in SPLITS:
    ids = sorted((r for r in seen_in if r.split("_")[0] == split),
                 key=recording_sort_key)
    if not ids:
      first = root / FEATURE_SETS[present[0]][0] / VARIANTS[0]
      raise DataError(
          f"no recordings of split {split!r}, expected files named "
          f"{split}_<n>.arff", path=first)
    recordings[split] = tuple(ids)
  return Layout(manual_dir=root, feature_sets=present, recordings=recordings)


def _list_recordings(folder: Path, what: str) -> dict[str, Path]:
  """Maps recording id -> file for the ``<split>_<n>.arff`` files in `folder`."""
  if not folder.is_dir():
    raise DataError(f"folder not found, expected the {what}", path=folder)
  found: dict[str, Path] = {}
  for entry in sorted(folder.iterdir()):
    if entry.name.startswith(".") or entry.suffix.lower() != ".arff":
      continue
    match = _FILE_RE.match(entry.name)
    if match is None:
      raise DataError(
          "unexpected file name, expected <split>_<n>.arff with split train, "
          "dev or test", path=entry)
    if not entry.is_file():
      raise DataError("not a file, expected an ARFF file", path=entry)
    found[entry.name[: -len(".arff")]] = entry
  return found


def read_recording(layout: Layout, recording: str) -> dict[str, object]:
  """Reads every file of one recording into one example.

  Returns:
    A dict with, for every feature set ``s`` and variant ``v``,
    ``f'{s}_{v}'``: float32 ``[frames, D_s]`` (``[0, D_s]`` for an absent
    set); ``'arousal'``, ``'valence'``: float32 ``[frames]`` (``[0]`` on the
    unlabelled test split); ``'has_labels'``: bool; ``'recording'``: str;
    ``'num_frames'``: int.

  Raises:
    DataError: a file is malformed, has the wrong number of attributes, no
      rows, or a row count that differs from another file of the recording.
  """
  labelled = recording.split("_")[0] in LABELED_SPLITS
  example: dict[str, object] = {}
  row_counts: list[tuple[Path, int]] = []

  for dimension in DIMENSIONS:
    if labelled:
      path = layout.gold_path(dimension, recording)
      table = read_arff(path)
      if GOLD_ATTRIBUTE not in table.names:
        raise DataError(
            f"no numeric attribute {GOLD_ATTRIBUTE!r}, expected a gold "
            f"standard file (found {', '.join(table.names) or 'none'})",
            path=path)
      row_counts.append((path, table.num_rows))
      example[dimension] = np.ascontiguousarray(
          table.data[:, table.names.index(GOLD_ATTRIBUTE)])
    else:
      example[dimension] = np.zeros((0,), np.float32)

  for name, (_, dim) in FEATURE_SETS.items():
    for variant in VARIANTS:
      key = feature_key(name, variant)
      if name not in layout.feature_sets:
        example[key] = np.zeros((0, dim), np.float32)
        continue
      path = layout.feature_path(name, variant, recording)
      table = read_arff(path, expected_numeric=dim)
      row_counts.append((path, table.num_rows))
      example[key] = table.data

  example["has_labels"] = labelled
  example["recording"] = recording
  example["num_frames"] = _common_row_count(recording, row_counts)
  return example


def _common_row_count(recording: str, row_counts: list[tuple[Path, int]]) -> int:
  """The row count shared by all files; DataError naming an odd one out.

  The odd file is judged against the most common count (ties: the first
  file's), so a single truncated file is the one that gets named.
  """
  for path, rows in row_counts:
    if rows == 0:
      raise DataError("no data rows, expected one row per 40 ms frame",
                      path=path)
  counts = [rows for _, rows in row_counts]
  common = max(counts, key=lambda c: (counts.count(c), -counts.index(c)))
  reference = next(path for path, rows in row_counts if rows == common)
  for path, rows in row_counts:
    if rows != common:
      raise DataError(
          f"{rows} frames, but {reference} has {common}; expected every file "
          f"of recording {recording} to have the same number of rows",
          path=path)
  return common
