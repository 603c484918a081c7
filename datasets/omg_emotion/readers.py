"""Readers of the OMG-Emotion CSV files and of OpenFace 2.0 CSVs, without TFDS.

Both readers take the bytes users actually have (docs/DATA.md, OMG section)
and give either a result or a one-line `DataError` naming the file and line:
``tests/test_omg_fuzz.py`` feeds them arbitrary bytes.

The stdlib ``csv`` module does the splitting (quoted fields, ``\\r\\n``); we
keep our own row checks because each quirk is handled by kind (skipped with a
counted warning, or an error), which no CSV library does for us.
"""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from emobed_datasets.errors import DataError

__all__ = [
  "CLASS_NAMES",
  "CSV_COLUMNS",
  "OPENFACE_COLUMNS",
  "CsvResult",
  "Row",
  "parse_omg_csv",
  "parse_openface",
  "read_omg_csv",
  "read_openface",
]

#: EmotionMaxVote 0..6 (docs/DATA.md).
CLASS_NAMES = ("Anger", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise")
#: The official header of the OMG CSVs.
CSV_COLUMNS = ("link", "start", "end", "video", "utterance", "arousal", "valence",
               "EmotionMaxVote")
#: The columns read (matched regardless of case and surrounding spaces).
_USED = ("video", "utterance", "arousal", "valence", "EmotionMaxVote")

_AUS_R = ("01", "02", "04", "05", "06", "07", "09", "10", "12", "14", "15", "17",
          "20", "23", "25", "26", "45")
_AUS_C = ("01", "02", "04", "05", "06", "07", "09", "10", "12", "14", "15", "17",
          "20", "23", "25", "26", "28", "45")
#: OpenFace columns read as video features, in this order (47): the 17 AU
#: intensities, the 18 AU presences (OpenFace 2.0's sets), both eye gaze
#: vectors and the head pose.  ``gaze_angle_*`` (2.0 only) is left out so that
#: files of OpenFace 1.x, which have the rest, read the same.
OPENFACE_COLUMNS: tuple[str, ...] = (
    tuple(f"AU{a}_r" for a in _AUS_R) + tuple(f"AU{a}_c" for a in _AUS_C)
    + tuple(f"gaze_{e}_{c}" for e in (0, 1) for c in "xyz")
    + tuple(f"pose_{k}{c}" for k in "TR" for c in "xyz"))


@dataclass(frozen=True)
class Row:
  """One usable row of an OMG CSV (``line`` is 1-based in the file)."""

  line: int
  video: str
  utterance: str
  arousal: float
  valence: float
  label: int

  @property
  def utterance_id(self) -> str:
    return f"{self.video}/{self.utterance}"


@dataclass
class CsvResult:
  """What `read_omg_csv` found: usable rows in file order, and the rows
  skipped by kind (``'blank row'``, ``'row with empty fields'``,
  ``'duplicate row'``) with one warning line each."""

  rows: list[Row] = field(default_factory=list)
  skipped: dict[str, int] = field(default_factory=dict)
  warnings: list[str] = field(default_factory=list)
  num_rows: int = 0  # data rows in the file, blank ones included

  def skip(self, reason: str, path: str, line: int, detail: str = "") -> None:
    self.skipped[reason] = self.skipped.get(reason, 0) + 1
    self.warnings.append(f"{path}:{line}: skipped {reason}{detail}")


def _decode(data: bytes, path: str) -> str:
  try:
    return data.decode("utf-8-sig")
  except UnicodeDecodeError as e:
    raise DataError(f"not UTF-8 text (byte {e.start}), expected a CSV file",
                    path=path) from None


def _records(text: str, path: str, expected: str):
  """``(line, fields)`` per CSV record, 1-based starting line."""
  reader = csv.reader(io.StringIO(text, newline=""))
  line = 1
  try:
    for fields in reader:
      yield line, fields
      line = reader.line_num + 1
  except csv.Error as e:
    raise DataError(f"unreadable CSV ({e}), expected {expected}", path=path,
                    line=reader.line_num or 1) from None


def _number(text: str, what: str, path: str, line: int) -> float:
  try:
    value = float(text)
  except ValueError:
    raise DataError(f"{what} {text.strip()[:40]!r} is not a number", path=path,
                    line=line) from None
  if not math.isfinite(value):
    raise DataError(f"{what} is {text.strip()[:40]!r}, expected a finite number",
                    path=path, line=line)
  return value


def read_omg_csv(path: str | os.PathLike[str]) -> CsvResult:
  """Reads an OMG-Emotion CSV (``omg_TrainVideos.csv`` ...).

  Raises:
    DataError: the file is missing or unreadable (see `parse_omg_csv`).
  """
  try:
    data = Path(path).read_bytes()
  except OSError as e:
    raise DataError(f"cannot read ({e.strerror}), expected an OMG-Emotion CSV with "
                    f"header {','.join(CSV_COLUMNS)}", path=path) from None
  return parse_omg_csv(data, os.fspath(path))


def parse_omg_csv(data: bytes, path: str = "<csv>") -> CsvResult:
  """Parses the bytes of an OMG-Emotion CSV.

  The header is the first non-blank line; its names are matched regardless
  of case and surrounding spaces, in any order, extra columns ignored; only
  ``video, utterance, arousal, valence, EmotionMaxVote`` are required.
  Then per data row:

  * blank row (every field empty or spaces): skipped, counted, warned;
  * a used field empty or missing (short row): skipped, counted, warned;
  * a repeated ``<video>/<utterance>``: skipped, counted, warned (kept once);
  * ``video`` / ``utterance`` kept as strings (``'0042'`` stays ``'0042'``),
    stripped of surrounding spaces;
  * ``EmotionMaxVote`` an integer 0..6 (``'4.0'`` accepted), ``arousal`` in
    [0, 1], ``valence`` in [-1, 1] (docs/DATA.md): anything else is an error.

  Args:
    data: the file's bytes (UTF-8, optional BOM).
    path: named in errors and warnings.

  Returns:
    A `CsvResult`.

  Raises:
    DataError: not UTF-8; not CSV; no header or a header missing a required
      column; a video or utterance name that is not a plain file name
      (``/``, ``\\``, ``.`` or ``..``); a label that is not a number or out of
      range.  The message names the file and line.
  """
  text = _decode(data, path)
  expected = f"an OMG-Emotion CSV with header {','.join(CSV_COLUMNS)}"
  result = CsvResult()
  index: dict[str, int] | None = None
  seen: set[str] = set()
  for line, fields in _records(text, path, expected):
    blank = all(not f.strip() for f in fields)
    if index is None:
      if blank:
        continue
      names = [f.strip().lower() for f in fields]
      missing = [c for c in _USED if c.lower() not in names]
      if missing:
        raise DataError(f"header lacks {', '.join(missing)}; expected "
                        f"{','.join(CSV_COLUMNS)}", path=path, line=line)
      index = {c: names.index(c.lower()) for c in _USED}
      continue
    result.num_rows += 1
    if blank:
      result.skip("blank row", path, line)
      continue
    values = {c: fields[i].strip() if i < len(fields) else "" for c, i in index.items()}
    empty = [c for c, v in values.items() if not v]
    if empty:
      result.skip("row with empty fields", path, line, f" (no {', '.join(empty)})")
      continue
    for c in ("video", "utterance"):
      name = values[c]
      if "/" in name or "\\" in name or name in (".", "..") or "\0" in name:
        raise DataError(f"{c} {name[:60]!r} is not a plain file name", path=path,
                        line=line)
    arousal = _number(values["arousal"], "arousal", path, line)
    valence = _number(values["valence"], "valence", path, line)
    vote = _number(values["EmotionMaxVote"], "EmotionMaxVote", path, line)
    if vote != int(vote) or not 0 <= vote <= 6:
      raise DataError(f"EmotionMaxVote {values['EmotionMaxVote'][:40]!r}, expected an "
                      "integer class 0..6", path=path, line=line)
    if not 0.0 <= arousal <= 1.0:
      raise DataError(f"arousal {arousal:g} outside [0, 1]", path=path, line=line)
    if not -1.0 <= valence <= 1.0:
      raise DataError(f"valence {valence:g} outside [-1, 1]", path=path, line=line)
    row = Row(line, values["video"], values["utterance"], arousal, valence, int(vote))
    if row.utterance_id in seen:
      result.skip("duplicate row", path, line, f" ({row.utterance_id})")
      continue
    seen.add(row.utterance_id)
    result.rows.append(row)
  if index is None:
    raise DataError(f"no header, expected {expected}", path=path)
  return result


@dataclass(frozen=True)
class OpenFace:
  """Video features of one clip from its OpenFace CSV.

  Attributes:
    features: float32 ``[T, 47]``, `OPENFACE_COLUMNS` as read (rows with
      ``success == 0`` too: OpenFace writes its own values there).
    mask: float32 ``[T]``: 1.0 where ``success == 1``, else 0.0.
    timestamps: float64 ``[T]`` seconds.
  """

  features: np.ndarray
  mask: np.ndarray
  timestamps: np.ndarray

  def frame_rate(self) -> float | None:
    """Frames per second from the median timestamp step, None if unknown."""
    steps = np.diff(self.timestamps)
    steps = steps[steps > 0]
    return float(1.0 / np.median(steps)) if steps.size else None


def read_openface(path: str | os.PathLike[str]) -> OpenFace:
  """Reads an OpenFace CSV (``FeatureExtraction`` output).

  Raises:
    DataError: missing or unreadable file (see `parse_openface`).
  """
  try:
    data = Path(path).read_bytes()
  except OSError as e:
    raise DataError(f"cannot read ({e.strerror}), expected an OpenFace CSV",
                    path=path) from None
  return parse_openface(data, os.fspath(path))


def parse_openface(data: bytes, path: str = "<openface>") -> OpenFace:
  """Parses the bytes of an OpenFace 2.0 (or 1.x) CSV.

  OpenFace writes ``, `` between fields and in the header (``frame, face_id,
  timestamp, confidence, success, gaze_0_x, ...``); names are stripped and
  columns selected by name: `OPENFACE_COLUMNS`, ``timestamp`` and
  ``success``; other columns (landmarks, ``face_id`` ...) are ignored, so the
  column sets of different OpenFace versions read the same.

  Returns:
    An `OpenFace` with one row per data line (a file with a header only gives
    ``T = 0``).

  Raises:
    DataError: not UTF-8 / not CSV; no header; a needed column missing (all
      the missing ones named); a row with too few fields; a value that is not
      a finite number; ``success`` other than 0 or 1.  Names file and line.
  """
  text = _decode(data, path)
  names: list[str] | None = None
  rows: list[list[float]] = []
  stamps: list[float] = []
  success: list[float] = []
  columns: list[int] = []
  for line, fields in _records(text, path, "an OpenFace CSV"):
    if all(not f.strip() for f in fields):
      continue
    if names is None:
      names = [f.strip() for f in fields]
      lookup = {n: i for i, n in reversed(list(enumerate(names)))}
      need = ("timestamp", "success") + OPENFACE_COLUMNS
      missing = [n for n in need if n not in lookup]
      if missing:
        raise DataError(f"OpenFace CSV lacks column(s) {', '.join(missing)} "
                        f"(found {len(names)} columns)", path=path, line=line)
      columns = [lookup[n] for n in OPENFACE_COLUMNS]
      t_col, s_col = lookup["timestamp"], lookup["success"]
      width = max(columns + [t_col, s_col]) + 1
      continue
    if len(fields) < width:
      raise DataError(f"{len(fields)} fields, expected {len(names)} as in the header",
                      path=path, line=line)
    ok = _number(fields[s_col], "success", path, line)
    if ok not in (0.0, 1.0):
      raise DataError(f"success {fields[s_col].strip()[:20]!r}, expected 0 or 1",
                      path=path, line=line)
    success.append(ok)
    stamps.append(_number(fields[t_col], "timestamp", path, line))
    rows.append([_number(fields[i], names[i], path, line) for i in columns])
  if names is None:
    raise DataError("no header, expected an OpenFace CSV (frame, face_id, timestamp, "
                    "confidence, success, ...)", path=path)
  features = np.asarray(rows, np.float32).reshape(len(rows), len(OPENFACE_COLUMNS))
  if not np.all(np.isfinite(features)):  # a finite float64 can overflow float32
    raise DataError("a value overflows float32", path=path)
  return OpenFace(features, np.asarray(success, np.float32),
                  np.asarray(stamps, np.float64))
