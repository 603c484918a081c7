"""The on-disk layout of the AVEC 2016 RECOLA package, checked and read.

`check_layout` inspects a manual_dir without parsing any ARFF file and raises
`DataError` (naming the path and what was expected) for anything that would
make the TFDS build fail or produce an inconsistent dataset.  `read_recording`
reads every file of one recording and cross-checks them
(`check_recording_files`: row counts, instance names against the file name,
frame times within a few milliseconds).

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

from emobed_datasets.arff import ArffTable, read_arff
from emobed_datasets.common import RECOLA_FEATURE_SETS
from emobed_datasets.errors import DataError

__all__ = [
    "FEATURE_SETS", "VARIANTS", "DIMENSIONS", "SPLITS", "LABELED_SPLITS",
    "GOLD_FOLDER", "GOLD_ATTRIBUTE", "Layout", "check_layout",
    "read_recording", "check_recording_files", "feature_key",
    "FRAME_TIME_TOLERANCE_S",
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

#: Names of the package's ARFF files: ``<split>_<n>.arff``.
FILE_RE = re.compile(r"^(train|dev|test)_([0-9]+)\.arff$")
_FILE_RE = FILE_RE


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
  """Reads every file of one recording into one example, cross-checked.

  Returns:
    A dict with, for every feature set ``s`` and variant ``v``,
    ``f'{s}_{v}'``: float32 ``[frames, D_s]`` (``[0, D_s]`` for an absent
    set); ``'arousal'``, ``'valence'``: float32 ``[frames]`` (``[0]`` on the
    unlabelled test split); ``'has_labels'``: bool; ``'recording'``: str;
    ``'num_frames'``: int.

  Raises:
    DataError: a file is malformed, has the wrong number of attributes or no
      rows, or disagrees with the other files of the recording (see
      `check_recording_files`); the message names the file(s) and line.
  """
  labelled = recording.split("_")[0] in LABELED_SPLITS
  example: dict[str, object] = {}
  tables: list[ArffTable] = []

  for dimension in DIMENSIONS:
    if labelled:
      path = layout.gold_path(dimension, recording)
      table = read_arff(path)
      if GOLD_ATTRIBUTE not in table.names:
        raise DataError(
            f"no numeric attribute {GOLD_ATTRIBUTE!r}, expected a gold "
            f"standard file (found {', '.join(table.names) or 'none'})",
            path=path)
      tables.append(table)
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
      tables.append(table)
      example[key] = table.data

  example["has_labels"] = labelled
  example["recording"] = recording
  example["num_frames"] = check_recording_files(recording, tables)
  return example


#: Frame times of the files of one recording may differ by this much (s).
FRAME_TIME_TOLERANCE_S = 0.005
#: openSMILE's instance name when none is given (``-N``): carries no name.
_NO_INSTANCE_NAME = "unknown"


def check_recording_files(recording: str, tables: list[ArffTable]) -> int:
  """Cross-checks the files of one recording; returns their common row count.

  Checks, in this order:

  1. every file has at least one row;
  2. where a file has instance names (``Instance_name``, or openSMILE's
     ``name``), every row's name is the recording id, i.e. the file name
     without ``.arff`` (a name with an extension such as ``train_1.wav`` also
     matches; openSMILE's placeholder ``unknown`` counts as no name);
  3. where two files have frame times, they agree within
     `FRAME_TIME_TOLERANCE_S` on every frame that both have;
  4. all files have the same number of rows.

  The reference for 3 is, among the files with the most common row count,
  the one whose frame times agree with the most other files; for 4 it is the
  first file with the most common row count (ties: the first file).  So a
  single truncated or shifted file is the one blamed, wherever it is.

  Args:
    recording: the recording id, e.g. ``'train_3'``.
    tables: the parsed files of the recording (gold standards first).

  Returns:
    The common number of rows (frames).

  Raises:
    DataError: one line naming the offending file and line, the reference
      file (and its line) and the first differing frame.
  """
  for table in tables:
    if table.num_rows == 0:
      raise DataError("no data rows, expected one row per 40 ms frame",
                      path=table.path)
  for table in tables:
    _check_instance_names(recording, table, tables)

  counts = [table.num_rows for table in tables]
  common = max(counts, key=lambda c: (counts.count(c), -counts.index(c)))
  timed = [t for t in tables if t.frame_time is not None]
  if len(timed) > 1:
    reference = _time_reference(timed, common)
    for table in timed:
      if table is not reference:
        _check_frame_times(recording, table, reference)

  reference = next(t for t in tables if t.num_rows == common)
  for table in tables:
    rows = table.num_rows
    if rows != common:
      longer = reference if common > rows else table
      first = min(rows, common)
      raise DataError(
          f"{rows} frames, but {reference.path} has {common}: frame {first} "
          f"({longer.path}:{int(longer.data_line_numbers[first])}) is the "
          f"first without a counterpart; expected every file of recording "
          f"{recording} to have the same number of rows",
          path=table.path)
  return common


def _check_instance_names(recording: str, table: ArffTable,
                          tables: list[ArffTable]) -> None:
  names = table.instance_names
  if names is None or set(names) <= {recording, _NO_INSTANCE_NAME}:
    return
  for frame, name in enumerate(names):
    if name == recording or name == _NO_INSTANCE_NAME:
      continue
    if Path(name.replace("\\", "/")).stem == recording:
      continue
    agreeing = [t.path for t in tables if t is not table
                and t.instance_names is not None
                and t.instance_names[0] == recording]
    also = f", as in {agreeing[0]}" if agreeing else ""
    raise DataError(
        f"instance name {name!r} at frame {frame}, expected {recording!r} "
        f"(the file name{also}); is this file from another recording?",
        path=table.path, line=int(table.data_line_numbers[frame]))


def _times_agree(a: ArffTable, b: ArffTable) -> bool:
  n = min(a.num_rows, b.num_rows)
  return bool(np.all(np.abs(a.frame_time[:n] - b.frame_time[:n])
                     <= FRAME_TIME_TOLERANCE_S))


def _time_reference(timed: list[ArffTable], common: int) -> ArffTable:
  """The file with frame times that most others agree with (see above)."""
  candidates = [t for t in timed if t.num_rows == common] or timed
  scores = [sum(_times_agree(c, t) for t in timed if t is not c)
            for c in candidates]
  return candidates[scores.index(max(scores))]


def _check_frame_times(recording: str, table: ArffTable,
                       reference: ArffTable) -> None:
  n = min(table.num_rows, reference.num_rows)
  mine = table.frame_time[:n]
  theirs = reference.frame_time[:n]
  off = np.flatnonzero(np.abs(mine - theirs) > FRAME_TIME_TOLERANCE_S)
  if off.size == 0:
    return
  frame = int(off[0])
  raise DataError(
      f"frame {frame} at {mine[frame]:.6g} s, but "
      f"{reference.path}:{int(reference.data_line_numbers[frame])} has "
      f"{theirs[frame]:.6g} s; expected the same frame times (within "
      f"{FRAME_TIME_TOLERANCE_S * 1000:g} ms) in every file of recording "
      f"{recording}", path=table.path,
      line=int(table.data_line_numbers[frame]))
