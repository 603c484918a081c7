"""A small synthetic corpus in the on-disk format of OMG-Emotion.

`write_demo_omg_corpus` writes, under `root`, what a user has after the
organisers' download script plus OpenFace (docs/DATA.md)::

    omg_TrainVideos.csv, omg_ValidationVideos.csv, omg_TestVideos_WithLabels.csv
    <split>/<video>/utterance_<k>.wav   (beside where utterance_<k>.mp4 would be)
    <split>/<video>/utterance_<k>.csv   (OpenFace 2.0 format)

CSVs: the official header ``link,start,end,video,utterance,arousal,valence,
EmotionMaxVote``; the utterance column names ``utterance_<k>.mp4`` as the
real one does, and the builder takes the ``.wav`` beside it.  A few rows per
split are dead (listed, no files: ``dead_rows``), the train CSV has one blank
row, one video has a name that looks like a number (``00042``).

How the numbers are made (nothing is tuned to favour a training setting):

* class counts per split: the weights `CLASS_WEIGHTS` (Anger 10, Disgust 4,
  Fear 2, Happy 19, Neutral 35, Sad 7, Surprise 1: neutral 35x surprise, as
  in the real train split, 893 vs 26) apportioned to the split size, at least
  one utterance per class; order shuffled by seed;
* arousal/valence in the CSV: the class's circumplex position plus noise;
* audio (16 kHz, 1-3 s): a harmonic tone with syllable-like bursts whose
  pitch level, pitch range, loudness and syllable rate depend on the class
  (`AUDIO_CUES`: an arousal-like cue; Anger and Happy are nearly the same,
  and so are Sad and Disgust), with per-speaker pitch and per-utterance
  jitter;
* video at 30 frames/s: AU intensities from a class prototype (`AU_CUES`:
  Happy smiles, Sad has lip-corner depressors; Anger and Disgust share brow
  lowering, Fear and Surprise share raised brows: a valence-like cue) times
  a per-utterance intensity, plus per-utterance noise on each AU, times a
  slow envelope, plus per-speaker bias and per-frame noise; AU presences = intensity > 1; gaze and pose noise; about a third of
  the utterances have a short run of frames with ``success`` 0 (zeros, as
  OpenFace writes).

So audio separates Anger/Disgust and Sad/Happy where video is ambiguous, and
video separates Anger/Happy and Sad/Disgust where audio is: each modality can
help the other.  Output is a pure function of the arguments.
"""

from __future__ import annotations

import json
import os
import shutil
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np
from emobed_datasets.common import check_demo_marker, exclusive_lock

__all__ = [
  "CLASS_WEIGHTS",
  "DEFAULT_SIZES",
  "demo_omg_paths",
  "ensure_demo_omg_corpus",
  "prepare_demo_omg",
  "write_demo_omg_corpus",
]

CLASS_NAMES = ("Anger", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise")
CSV_NAMES = {"train": "omg_TrainVideos.csv", "validation": "omg_ValidationVideos.csv",
             "test": "omg_TestVideos_WithLabels.csv"}
HEADER = "link,start,end,video,utterance,arousal,valence,EmotionMaxVote"
#: Relative class frequencies of every split (neutral = 35 x surprise).
CLASS_WEIGHTS = (10, 4, 2, 19, 35, 7, 1)
#: Default sizes: 390 utterances, 1-3 s each (100-300 LLD frames).
DEFAULT_SIZES = {"num_train": 234, "num_validation": 78, "num_test": 78,
                 "dead_rows": 3, "min_seconds": 1.0, "max_seconds": 3.0}
DEMO_MARKER = "DEMO_OMG_CORPUS.json"
SAMPLE_RATE = 16000
VIDEO_FPS = 30.0
_FORMAT_VERSION = 1

#: Class -> (arousal, valence) centre in the CSV.
_CIRCUMPLEX = ((0.8, -0.6), (0.45, -0.55), (0.75, -0.45), (0.75, 0.65), (0.35, 0.0),
               (0.2, -0.55), (0.7, 0.3))
#: Class -> (pitch factor, pitch range in semitones, loudness, syllables/s).
AUDIO_CUES = ((1.25, 4.0, 0.9, 4.5), (0.9, 2.0, 0.35, 2.7), (1.35, 3.0, 0.6, 5.2),
              (1.25, 4.5, 0.9, 4.4), (1.0, 2.0, 0.5, 3.5), (0.85, 1.5, 0.3, 2.5),
              (1.3, 7.0, 0.7, 3.5))
_AU_R = ("01", "02", "04", "05", "06", "07", "09", "10", "12", "14", "15", "17", "20",
         "23", "25", "26", "45")
_AU_C = ("01", "02", "04", "05", "06", "07", "09", "10", "12", "14", "15", "17", "20",
         "23", "25", "26", "28", "45")
#: Class -> AU intensity prototype (AU -> intensity 0..5; others 0.2).
AU_CUES = (
    {"04": 2.5, "07": 2.0, "23": 1.5, "09": 0.8, "10": 0.6},
    {"04": 2.2, "07": 1.8, "09": 1.2, "10": 1.0, "23": 1.2},
    {"01": 2.4, "02": 2.2, "05": 2.0, "26": 1.8, "25": 1.2, "20": 0.8, "04": 0.6},
    {"06": 2.5, "12": 3.0, "25": 1.0},
    {},
    {"01": 1.5, "04": 1.5, "15": 2.0, "17": 1.5},
    {"01": 2.5, "02": 2.5, "05": 2.0, "26": 2.0, "25": 1.5},
)
_OPENFACE_HEADER = (
    ["frame", "face_id", "timestamp", "confidence", "success"]
    + [f"gaze_{e}_{c}" for e in (0, 1) for c in "xyz"] + ["gaze_angle_x", "gaze_angle_y"]
    + [f"pose_{k}{c}" for k in "TR" for c in "xyz"]
    + [f"AU{a}_r" for a in _AU_R] + [f"AU{a}_c" for a in _AU_C])


def _class_counts(total: int) -> list[int]:
  """Largest-remainder apportionment of `total` to CLASS_WEIGHTS; a class
  that would get none takes one from the largest (every class in every
  split).  78 k utterances give exactly k x CLASS_WEIGHTS."""
  if total < len(CLASS_WEIGHTS):
    raise ValueError(f"{total} utterances: at least {len(CLASS_WEIGHTS)} needed "
                     "(every class in every split)")
  w = np.asarray(CLASS_WEIGHTS, np.float64)
  share = total * w / w.sum()
  counts = np.floor(share).astype(int)
  order = np.argsort(-(share - counts), kind="stable")
  counts[order[: total - counts.sum()]] += 1
  for c in np.flatnonzero(counts == 0):
    counts[int(np.argmax(counts))] -= 1
    counts[c] = 1
  return [int(c) for c in counts]


def _voice(rng: np.random.Generator, label: int, seconds: float, base_f0: float) -> np.ndarray:
  pitch, semitones, loudness, rate = AUDIO_CUES[label]
  pitch *= np.exp(rng.normal(0, 0.06))
  semitones *= np.exp(rng.normal(0, 0.25))
  loudness *= np.exp(rng.normal(0, 0.25))
  rate *= np.exp(rng.normal(0, 0.12))
  t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
  glide = np.sin(2 * np.pi * rng.uniform(0.3, 0.9) * t + rng.uniform(0, 2 * np.pi))
  f0 = base_f0 * pitch * 2.0 ** (semitones / 12 * 0.5 * glide)
  phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
  voiced = sum(np.sin(k * phase) / k for k in range(1, 13))
  syllables = np.clip(np.sin(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi)), 0, None) ** 0.5
  x = 0.3 * loudness * syllables * voiced / 3 + 0.01 * rng.standard_normal(t.size)
  return np.clip(x, -1.0, 1.0)


def _write_wav(path: Path, x: np.ndarray) -> None:
  pcm = np.round(x * 32767).astype("<i2")
  with wave.open(str(path), "wb") as w:
    w.setnchannels(1)
    w.setsampwidth(2)
    w.setframerate(SAMPLE_RATE)
    w.writeframes(pcm.tobytes())


def _face(rng: np.random.Generator, label: int, seconds: float, bias: np.ndarray,
          pose: np.ndarray) -> str:
  """One utterance's OpenFace 2.0 CSV text."""
  n = max(2, int(seconds * VIDEO_FPS))
  t = np.arange(n) / VIDEO_FPS
  proto = np.array([AU_CUES[label].get(a, 0.2) for a in _AU_R])
  proto = proto * rng.uniform(0.5, 1.2) + rng.normal(0, 0.4, proto.size)  # this utterance
  envelope = 0.75 + 0.25 * np.sin(2 * np.pi * rng.uniform(0.2, 0.6) * t
                                  + rng.uniform(0, 2 * np.pi))
  au_r = (proto[None] * envelope[:, None] + bias[None]
          + rng.normal(0, 0.35, (n, proto.size)))
  au_r = np.clip(au_r, 0.0, 5.0)
  r_of = dict(zip(_AU_R, au_r.T))
  au_c = np.stack([(r_of[a] > 1.0) if a in r_of else rng.random(n) < 0.05 for a in _AU_C],
                  axis=1).astype(np.float64)
  gaze = rng.normal(0, 0.1, (n, 6)) + np.array([0, 0, -1, 0, 0, -1])
  angles = rng.normal(0, 0.05, (n, 2))
  head = pose[None] + rng.normal(0, 1.0, (n, 6)) * np.array([2, 2, 5, 0.02, 0.02, 0.02])
  success = np.ones(n, int)
  if rng.random() < 0.35:  # a short stretch without a face
    start = int(rng.integers(0, n - 1))
    success[start:start + int(rng.integers(2, 10))] = 0
  confidence = np.where(success == 1, rng.uniform(0.85, 0.98, n), 0.0)
  lines = [", ".join(_OPENFACE_HEADER)]
  for values in (gaze, angles, head, au_r, au_c):  # OpenFace writes zeros there
    values[success == 0] = 0.0
  for i in range(n):
    values = ([f"{v:.6f}" for v in gaze[i]] + [f"{v:.3f}" for v in angles[i]]
              + [f"{v:.6f}" for v in head[i]] + [f"{v:.2f}" for v in au_r[i]]
              + [f"{v:.2f}" for v in au_c[i]])
    lines.append(", ".join([str(i + 1), "0", f"{t[i]:.3f}", f"{confidence[i]:.2f}",
                            str(success[i])] + values))
  return "\n".join(lines) + "\n"


def write_demo_omg_corpus(
    root: str | os.PathLike[str],
    seed: int = 0,
    *,
    num_train: int = DEFAULT_SIZES["num_train"],
    num_validation: int = DEFAULT_SIZES["num_validation"],
    num_test: int = DEFAULT_SIZES["num_test"],
    dead_rows: int = DEFAULT_SIZES["dead_rows"],
    min_seconds: float = DEFAULT_SIZES["min_seconds"],
    max_seconds: float = DEFAULT_SIZES["max_seconds"],
) -> dict[str, list[int]]:
  """Writes a demo OMG corpus at `root` (see the module docstring).

  Args:
    root: target folder (created; files in it are overwritten).
    seed: everything is a pure function of the arguments.
    num_train, num_validation, num_test: utterances with files per split
      (each at least 7: every class in every split).
    dead_rows: extra CSV rows per split whose clip is missing.
    min_seconds, max_seconds: utterance length range.

  Returns:
    Class counts of the utterances with files, per split (index = class).
  """
  root = Path(root)
  root.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(seed)
  counts: dict[str, list[int]] = {}
  sizes = {"train": num_train, "validation": num_validation, "test": num_test}
  video_number = 0
  for split, size in sizes.items():
    per_class = _class_counts(size)
    counts[split] = per_class
    labels = rng.permutation(np.repeat(np.arange(7), per_class))
    alive = np.ones(size + dead_rows, bool)
    alive[rng.choice(size + dead_rows, dead_rows, replace=False)] = False
    lines = [HEADER]
    i = 0  # index into labels
    row = 0
    while row < size + dead_rows:
      video_number += 1
      video = "00042" if video_number == 2 else f"{rng.integers(16 ** 8):08x}"
      base_f0 = rng.uniform(100, 220)
      bias = rng.normal(0, 0.35, len(_AU_R))
      pose = np.concatenate([rng.normal([0, 0, 500], [30, 30, 80]), rng.normal(0, 0.1, 3)])
      start = 0.0
      for k in range(int(rng.integers(2, 7))):
        if row >= size + dead_rows:
          break
        seconds = float(rng.uniform(min_seconds, max_seconds))
        if alive[row]:
          label = int(labels[i])
          i += 1
        else:
          label = int(rng.integers(0, 7))
        a_c, v_c = _CIRCUMPLEX[label]
        arousal = float(np.clip(a_c + rng.normal(0, 0.1), 0, 1))
        valence = float(np.clip(v_c + rng.normal(0, 0.12), -1, 1))
        utterance = f"utterance_{k + 1}.mp4"
        lines.append(f"https://www.youtube.com/watch?v=demo{video},{start:.2f},"
                     f"{start + seconds:.2f},{video},{utterance},{arousal:.6f},"
                     f"{valence:.6f},{label}")
        if split == "train" and row == 5:
          lines.append("")  # the blank row some public copies carry
        if alive[row]:
          folder = root / split / video
          folder.mkdir(parents=True, exist_ok=True)
          _write_wav(folder / f"utterance_{k + 1}.wav", _voice(rng, label, seconds, base_f0))
          (folder / f"utterance_{k + 1}.csv").write_text(
              _face(rng, label, seconds, bias, pose))
        start += seconds + float(rng.uniform(0.5, 3.0))
        row += 1
    (root / CSV_NAMES[split]).write_text("\n".join(lines) + "\n")
  return counts


def ensure_demo_omg_corpus(root: str | os.PathLike[str], seed: int = 0, **sizes) -> Path:
  """Writes the demo corpus at `root` once (temporary folder, marker, rename;
  a lock serialises concurrent callers); a no-op when it is there.

  Raises:
    DataError: `root` exists but is not a demo OMG corpus with these sizes.
  """
  root = Path(root).expanduser()
  params = {"format_version": _FORMAT_VERSION, "seed": int(seed), **DEFAULT_SIZES, **sizes}
  if _check_existing(root, params):
    return root
  root.parent.mkdir(parents=True, exist_ok=True)
  with exclusive_lock(root.parent / f".{root.name}.lock"):
    if _check_existing(root, params):
      return root
    for stale in root.parent.glob(f".{root.name}.tmp-*"):
      shutil.rmtree(stale, ignore_errors=True)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}"
    counts = write_demo_omg_corpus(tmp, seed, **sizes)
    (tmp / DEMO_MARKER).write_text(
        json.dumps({**params, "class_counts": counts}, sort_keys=True) + "\n")
    if root.is_dir() and not any(root.iterdir()):
      root.rmdir()
    os.rename(tmp, root)
  return root


def _check_existing(root: Path, params: dict) -> bool:
  return check_demo_marker(root, DEMO_MARKER, params, "demo OMG corpus",
                           ignore=("class_counts",))


def demo_omg_paths(data_dir: str | os.PathLike[str], seed: int = 0) -> tuple[Path, Path]:
  """``(raw_dir, prepared_dir)``: the corpus at
  ``<data_dir>/demo_omg_manual/seed_<seed>`` and the TFDS data folder at
  ``<data_dir>/demo_omg/seed_<seed>`` (pass it to
  ``emobed_datasets.omg_emotion.load_split``)."""
  root = Path(data_dir).expanduser()
  return root / "demo_omg_manual" / f"seed_{seed}", root / "demo_omg" / f"seed_{seed}"


def prepare_demo_omg(
    data_dir: str | os.PathLike[str],
    seed: int = 0,
    *,
    audio_features: str = "egemaps_lld",
    workers: int | None = None,
    progress: Callable[[int, int, float], None] | None = None,
    **sizes,
) -> Path:
  """Writes the demo corpus (once) and prepares it (once per audio features).

  A copy prepared already (perhaps with other sizes, e.g. by a test) is used
  as is.

  Returns:
    The prepared data folder (``demo_omg_paths(data_dir, seed)[1]``).
  """
  from emobed_datasets import omg_emotion  # imports TFDS: keep it lazy

  raw_dir, prepared_dir = demo_omg_paths(data_dir, seed)
  if omg_emotion.is_prepared(prepared_dir, audio_features):
    return prepared_dir
  ensure_demo_omg_corpus(raw_dir, seed, **sizes)
  omg_emotion.prepare(raw_dir, prepared_dir, audio_features=audio_features,
                      workers=workers, progress=progress)
  return prepared_dir
