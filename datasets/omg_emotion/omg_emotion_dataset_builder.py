"""TFDS builder for OMG-Emotion as users have it after the organisers' script.

One example per CSV row whose clip and OpenFace CSV are present, in CSV
order (``disable_shuffling``), stored as array_record::

    utterance_id  text      "<video>/<utterance>" (bytes when read back raw)
    video_id      text
    label         int64     EmotionMaxVote, 0 Anger ... 6 Surprise
    arousal       float32   in [0, 1]
    valence       float32   in [-1, 1]
    audio         float32 [Ta, Da]  openSMILE (emobed_jax.features.utterance_features)
    audio_mask    float32 [Ta]      all 1.0
    video         float32 [Tv, 47]  OpenFace columns readers.OPENFACE_COLUMNS
    video_mask    float32 [Tv]      1.0 where OpenFace success == 1

One builder config per audio feature choice (``egemaps_lld``,
``egemaps_functionals``, ``compare_lld``): each is its own prepared copy
under ``<data_dir>/omg_emotion/<choice>/1.0.0``.  The metadata records the
source (resolved folder and a fingerprint of file names and sizes), the
feature names, frame rates and the skip summary; ``manifest.json`` beside it
lists per split the utterances kept and those skipped, by reason.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from emobed_datasets.errors import DataError
from emobed_datasets.omg_emotion import extract as extract_lib
from emobed_datasets.omg_emotion import readers
from etils import epath

__all__ = ["AUDIO_FEATURES", "MANIFEST_FILE", "MANIFEST_KEY", "Builder"]

AUDIO_FEATURES = extract_lib.AUDIO_FEATURES
MANIFEST_FILE = "manifest.json"
MANIFEST_KEY = "manifest"

_DESCRIPTION = """\
OMG-Emotion (One-Minute Gradual Emotion, IJCNN 2018): YouTube monologue
utterances with arousal [0, 1], valence [-1, 1] and a 7-class EmotionMaxVote
label; audio features computed with openSMILE, video features read from
OpenFace 2.0 CSVs beside the clips.
"""

_CITATION = """\
@inproceedings{barros2018omg,
  title={The {OMG}-Emotion Behavior Dataset},
  author={Barros, Pablo and Churamani, Nikhil and Lakomkin, Egor and Siqueira,
          Henrique and Sutherland, Alexander and Wermter, Stefan},
  booktitle={International Joint Conference on Neural Networks (IJCNN)},
  year={2018}
}
"""


class _Metadata(tfds.core.MetadataDict):
  """Metadata that writes its ``'manifest'`` entry to ``manifest.json``
  instead of ``metadata.json`` (both inside TFDS's temporary build folder,
  renamed with it when the build completes)."""

  def save_metadata(self, data_dir):
    rest = {k: v for k, v in self.items() if k != MANIFEST_KEY}
    if MANIFEST_KEY in self:
      with (epath.Path(data_dir) / MANIFEST_FILE).open("w") as f:
        json.dump(self[MANIFEST_KEY], f, indent=1)
    with (epath.Path(data_dir) / "metadata.json").open("w") as f:
      json.dump(rest, f)


class Builder(tfds.core.GeneratorBasedBuilder):
  """DatasetBuilder for OMG-Emotion (manual download)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Utterances with openSMILE audio and OpenFace video features."}
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name=name, description=f"audio features: {name}")
      for name in AUDIO_FEATURES
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  OMG-Emotion is a list of YouTube links: download and cut the clips with the
  organisers' script (github.com/knowledgetechnologyuhh/OMGEmotionChallenge),
  run OpenFace 2.0 FeatureExtraction on each clip (its CSV beside the clip,
  named by the clip's stem), and pass the folder holding omg_TrainVideos.csv,
  omg_ValidationVideos.csv, omg_TestVideos_WithLabels.csv and the split
  folders train/, validation/, test/ (<split>/<video>/<utterance>) as
  manual_dir.
  """

  # Set by `prepare` before `download_and_prepare` (not part of the config:
  # they change how the copy is built, not what it holds).
  split_dirs: tuple[str, ...] = extract_lib.SPLITS
  executor: Any = None  # a concurrent.futures executor, or None: in process
  progress: Callable[[int, int, float], None] | None = None

  def _info(self) -> tfds.core.DatasetInfo:
    dim = AUDIO_FEATURES[self.builder_config.name]
    matrix = lambda d: tfds.features.Tensor(
        shape=(None, d), dtype=np.float32, encoding=tfds.features.Encoding.BYTES)
    vector = tfds.features.Tensor(shape=(None,), dtype=np.float32,
                                  encoding=tfds.features.Encoding.BYTES)
    features = tfds.features.FeaturesDict({
        "utterance_id": tfds.features.Text(),
        "video_id": tfds.features.Text(),
        "label": tfds.features.ClassLabel(names=readers.CLASS_NAMES),
        "arousal": tfds.features.Scalar(dtype=np.float32),
        "valence": tfds.features.Scalar(dtype=np.float32),
        "audio": matrix(dim),
        "audio_mask": vector,
        "video": matrix(len(readers.OPENFACE_COLUMNS)),
        "video_mask": vector,
    })
    return self.dataset_info_from_configs(
        description=_DESCRIPTION, features=features, supervised_keys=None,
        homepage="https://www2.informatik.uni-hamburg.de/wtm/omgchallenges/omg_emotion.html",
        citation=_CITATION, metadata=_Metadata(), disable_shuffling=True)

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    from emobed_datasets.omg_emotion import source as source_lib

    from emobed_jax import features

    manual_dir = Path(dl_manager.manual_dir)
    kind = self.builder_config.name
    self.info.metadata["source"] = source_lib.corpus_fingerprint(manual_dir, self.split_dirs)
    scans = {split: extract_lib.scan_split(manual_dir, split, folder)
             for split, folder in zip(extract_lib.SPLITS, self.split_dirs)}
    self.info.metadata.update({
        "audio_features": kind,
        "split_dirs": list(self.split_dirs),
        "feature_names": {"audio": features.utterance_feature_names(kind),
                          "video": list(readers.OPENFACE_COLUMNS)},
        "audio_frame_rate": features.utterance_frame_rate(kind),
        "summary": {},
        MANIFEST_KEY: {"audio_features": kind, "source": str(manual_dir), "splits": {}},
    })
    self._total = sum(len(s.clips) for s in scans.values())
    self._done = 0
    self._start = time.perf_counter()
    self._video_rates: list[float] = []
    return {split: self._generate_examples(scan) for split, scan in scans.items()}

  def _extracted(self, clips: list[extract_lib.Clip]):
    kind = self.builder_config.name
    if self.executor is None:
      return (extract_lib.extract_clip(c, kind) for c in clips)
    return self.executor.map(extract_lib.extract_clip, clips, [kind] * len(clips))

  def _generate_examples(self, scan: extract_lib.SplitScan):
    kept: list[str] = []
    for clip, out in zip(scan.clips, self._extracted(scan.clips)):
      self._done += 1
      if self.progress is not None:
        self.progress(self._done, self._total, time.perf_counter() - self._start)
      if "skip" in out:
        scan.skip(out["skip"], clip.row.utterance_id)
        scan.warnings.append(out["warning"])
        continue
      if out["video_frame_rate"] is not None:
        self._video_rates.append(out["video_frame_rate"])
      row = clip.row
      kept.append(row.utterance_id)
      yield row.utterance_id, {
          "utterance_id": row.utterance_id, "video_id": row.video, "label": row.label,
          "arousal": np.float32(row.arousal), "valence": np.float32(row.valence),
          "audio": out["audio"],
          "audio_mask": np.ones(out["audio"].shape[0], np.float32),
          "video": out["video"], "video_mask": out["video_mask"],
      }
    if not kept:
      raise DataError(
          f"{scan.split} split is empty: none of its {scan.num_rows} CSV rows has its "
          f"clip (or <stem>.wav) and OpenFace <stem>.csv under {scan.folder} "
          f"(skipped: {_counts(scan.skipped)})", path=scan.csv)
    metadata = self.info.metadata
    metadata["summary"][scan.split] = {
        "csv": scan.csv, "folder": scan.folder, "rows": scan.num_rows,
        "kept": len(kept), "skipped": dict(scan.skipped), "warnings": scan.warnings}
    metadata[MANIFEST_KEY]["splits"][scan.split] = {
        "csv": scan.csv, "folder": scan.folder, "kept": kept,
        "skipped": scan.skipped_ids}
    metadata["video_frame_rate"] = (float(np.median(self._video_rates))
                                    if self._video_rates else None)


def _counts(skipped: dict[str, int]) -> str:
  return ", ".join(f"{n} {reason}" for reason, n in skipped.items()) or "nothing"
