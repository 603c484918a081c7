"""Finding the clips of an OMG-Emotion copy and computing their features.

Light (no TFDS import): `extract_clip` runs in worker processes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from emobed_datasets.errors import DataError
from emobed_datasets.omg_emotion import readers

__all__ = [
  "AUDIO_FEATURES",
  "CSV_NAMES",
  "HELP",
  "MISSING_CLIP",
  "MISSING_OPENFACE",
  "SPLITS",
  "UNREADABLE_AUDIO",
  "Clip",
  "SplitScan",
  "extract_clip",
  "missing_corpus_message",
  "scan_split",
]

SPLITS = ("train", "validation", "test")
CSV_NAMES = {"train": "omg_TrainVideos.csv", "validation": "omg_ValidationVideos.csv",
             "test": "omg_TestVideos_WithLabels.csv"}

#: Audio feature choices (= emobed_jax.config.OMG_AUDIO_FEATURES) -> width
#: (emobed_jax.features.utterance_features).
AUDIO_FEATURES = {"egemaps_lld": 25, "egemaps_functionals": 88, "compare_lld": 65}

#: The one-line message for a missing corpus (`missing_corpus_message` adds the
#: folder looked in).
HELP = ("OMG-Emotion not found (looked in --manual_dir, default $OMG_DIR): expected "
        "omg_TrainVideos.csv, omg_ValidationVideos.csv, omg_TestVideos_WithLabels.csv "
        "and the clips in train/, validation/, test/; the clips come from YouTube "
        "through the organisers' download script "
        "(github.com/knowledgetechnologyuhh/OMGEmotionChallenge), with an OpenFace 2.0 "
        "CSV beside each; to try the pipeline without it: "
        "python launch/train.py --flagfile=demo_omg.flags")


def missing_corpus_message(manual_dir: str | os.PathLike[str] | None) -> str:
  """`HELP` with the folder that was looked in (or that none was given)."""
  where = (f"in {Path(manual_dir).expanduser()}" if manual_dir
           else "nowhere: neither --manual_dir nor $OMG_DIR is set")
  return HELP.replace("(looked in --manual_dir, default $OMG_DIR)",
                      f"(looked {where}; --manual_dir, default $OMG_DIR)")


#: Skip reasons (keys of the summary's ``skipped``), besides the CSV ones of
#: `readers.parse_omg_csv` ('blank row', 'row with empty fields', 'duplicate row').
MISSING_CLIP = "missing clip"
MISSING_OPENFACE = "missing OpenFace CSV"
UNREADABLE_AUDIO = "unreadable audio"


@dataclass(frozen=True)
class Clip:
  """One CSV row whose files are present: audio from ``audio`` (the
  ``<stem>.wav`` beside the clip if present, else the clip itself), video
  features from ``openface`` (``<stem>.csv``)."""

  row: readers.Row
  audio: str
  openface: str


@dataclass
class SplitScan:
  """A split's CSV and which of its rows have their files."""

  split: str
  csv: str
  folder: str
  num_rows: int
  clips: list[Clip]
  skipped: dict[str, int] = field(default_factory=dict)
  skipped_ids: dict[str, list[str]] = field(default_factory=dict)
  warnings: list[str] = field(default_factory=list)

  def skip(self, reason: str, what: str) -> None:
    self.skipped[reason] = self.skipped.get(reason, 0) + 1
    self.skipped_ids.setdefault(reason, []).append(what)


def scan_split(manual_dir: Path, split: str, split_dir: str) -> SplitScan:
  """Reads a split's CSV and checks which rows have a clip and an OpenFace CSV.

  A row's files: ``<manual_dir>/<split_dir>/<video>/<utterance>`` (the clip),
  ``<stem>.wav`` beside it (used for audio instead of the clip when present)
  and ``<stem>.csv`` (OpenFace).  No audio source -> 'missing clip'; audio
  but no OpenFace CSV -> 'missing OpenFace CSV'.

  Raises:
    DataError: the CSV is missing or malformed (`readers.read_omg_csv`).
  """
  csv_path = manual_dir / CSV_NAMES[split]
  if not csv_path.is_file():
    raise DataError(f"{split} split CSV not found, expected the organisers' "
                    f"{CSV_NAMES[split]}", path=csv_path)
  table = readers.read_omg_csv(csv_path)
  folder = manual_dir / split_dir
  scan = SplitScan(split, str(csv_path), str(folder), table.num_rows, [],
                   warnings=list(table.warnings))
  for reason, count in table.skipped.items():
    scan.skipped[reason] = count
  for warning in table.warnings:  # "<path>:<line>: skipped <reason>..."
    reason = next(r for r in table.skipped if f"skipped {r}" in warning)
    scan.skipped_ids.setdefault(reason, []).append(warning.split(": skipped", 1)[0])
  for row in table.rows:
    clip_dir = folder / row.video
    clip = clip_dir / row.utterance
    stem = Path(row.utterance).stem
    wav = clip_dir / f"{stem}.wav"
    openface = clip_dir / f"{stem}.csv"
    audio = wav if wav.is_file() else clip if clip.is_file() else None
    if audio is None:
      scan.skip(MISSING_CLIP, row.utterance_id)
    elif not openface.is_file():
      scan.skip(MISSING_OPENFACE, row.utterance_id)
    else:
      scan.clips.append(Clip(row, str(audio), str(openface)))
  return scan


def extract_clip(clip: Clip, audio_features: str) -> dict[str, Any]:
  """Features of one clip, or why it is skipped.

  Returns:
    ``{'audio' [Ta, Da] float32, 'video' [Tv, 47] float32, 'video_mask' [Tv]
    float32, 'video_frame_rate' float | None}``, or ``{'skip': reason,
    'warning': line}`` when the audio cannot be read (a broken download:
    counted as 'unreadable audio', like a missing clip).

  Raises:
    DataError: ffmpeg is needed and missing; the OpenFace CSV is malformed or
      has no frame.
  """
  from emobed_jax import features  # here: workers import it once, lazily

  try:
    audio, _, _ = features.utterance_features(clip.audio, audio_features)
  except features.AudioError as e:
    message = str(e) if str(e).startswith(clip.audio) else f"{clip.audio}: {e}"
    return {"skip": UNREADABLE_AUDIO, "warning": f"skipped {UNREADABLE_AUDIO}: {message}"}
  except FileNotFoundError as e:
    if e.filename == "ffmpeg":
      raise DataError("ffmpeg not found on PATH: it is needed to read the sound track "
                      "of the clip (apt-get install ffmpeg, or put <stem>.wav beside "
                      "the clip)", path=clip.audio) from None
    raise
  face = readers.read_openface(clip.openface)
  if face.features.shape[0] == 0:
    raise DataError("OpenFace CSV has a header but no frame", path=clip.openface)
  return {"audio": np.ascontiguousarray(audio, np.float32),
          "video": face.features, "video_mask": face.mask,
          "video_frame_rate": face.frame_rate()}


def files_of(manual_dir: Path, split_dirs: tuple[str, ...]) -> list[Path]:
  """The files a build may read (relative to `manual_dir`): the three CSVs and
  every file under the split folders; for the source fingerprint."""
  found = [Path(CSV_NAMES[s]) for s in SPLITS if (manual_dir / CSV_NAMES[s]).is_file()]
  for split_dir in split_dirs:
    base = manual_dir / split_dir
    for dirpath, _, filenames in os.walk(base):
      for name in filenames:
        found.append((Path(dirpath) / name).relative_to(manual_dir))
  return found
