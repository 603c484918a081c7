"""TFDS builder for RECOLA as packaged for the AVEC 2016 challenge.

One example per recording (``train_1`` ... ``test_9``), with every feature
set of the package, both window variants, and the gold standard labels::

    <set>_<variant>  float32 [frames, D]  set in FEATURE_SETS, variant in
                                          {arousal, valence}; [0, D] when the
                                          package lacks that feature folder
    arousal, valence float32 [frames]     gold standard; [0] on test
    has_labels       bool                 False on test (labels never released)
    recording        text                 e.g. "train_3" (bytes when read back)
    num_frames       int32                rows of every file of the recording

The present feature sets are stored in the dataset metadata under the key
``'feature_sets'`` (see `available_feature_sets`), and the package the copy
was built from under ``'source'`` (resolved path, fingerprint of file names
and sizes; see `emobed_datasets.recola.source`).  Examples keep the order of
the recordings (``disable_shuffling``), stored as array_record for random
access without TensorFlow.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from emobed_datasets.recola import layout as layout_lib
from emobed_datasets.recola import source as source_lib

__all__ = ["Builder", "FEATURE_SETS_METADATA_KEY"]

#: Key in `DatasetInfo.metadata` listing the feature sets that are present.
FEATURE_SETS_METADATA_KEY = "feature_sets"

_DESCRIPTION = """\
RECOLA (REmote COLlaborative and Affective interactions) as packaged for the
AVEC 2016 challenge: 27 five-minute recordings of French speakers (9 train,
9 dev, 9 test), with audio, video and physiological features at 40 ms frames
and continuous arousal/valence gold standards (mean of 6 centred raters) for
train and dev.  Test labels were never released.
"""

_CITATION = """\
@inproceedings{ringeval2013recola,
  title={Introducing the {RECOLA} multimodal corpus of remote collaborative
         and affective interactions},
  author={Ringeval, Fabien and Sonderegger, Andreas and Sauer, Juergen and
          Lalanne, Denis},
  booktitle={10th IEEE International Conference and Workshops on Automatic
             Face and Gesture Recognition (FG)},
  year={2013}
}
@inproceedings{valstar2016avec,
  title={{AVEC} 2016: Depression, Mood, and Emotion Recognition Workshop and
         Challenge},
  author={Valstar, Michel and others},
  booktitle={Proceedings of the 6th International Workshop on Audio/Visual
             Emotion Challenge (AVEC)},
  year={2016}
}
"""


class Builder(tfds.core.GeneratorBasedBuilder):
  """DatasetBuilder for the AVEC 2016 RECOLA package (manual download)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {
      "1.0.0": "AVEC 2016 layout: all feature sets and variants, gold "
               "standards for train/dev, unlabelled test.",
  }
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  RECOLA is distributed under a licence and cannot be downloaded by a program.
  Request the AVEC 2016 package of RECOLA from its owners at the Universite de
  Fribourg (https://diuf.unifr.ch/main/diva/recola/), sign the end-user
  licence agreement, unpack the package you receive, and pass its root folder
  as manual_dir.  That folder must contain `ratings_gold_standard/{arousal,
  valence}/{train,dev}_<n>.arff` and at least one of the feature folders
  `features_audio`, `features_video_appearance`, `features_video_geometric`,
  `features_ECG`, `features_HRHRV`, `features_EDA`, `features_SCL`,
  `features_SCR`, each with `arousal/` and `valence/` sub-folders holding
  `{train,dev,test}_<n>.arff`.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    features: dict[str, tfds.features.FeatureConnector] = {}
    for name, (_, dim) in layout_lib.FEATURE_SETS.items():
      for variant in layout_lib.VARIANTS:
        features[layout_lib.feature_key(name, variant)] = tfds.features.Tensor(
            shape=(None, dim), dtype=np.float32,
            encoding=tfds.features.Encoding.BYTES)
    for dimension in layout_lib.DIMENSIONS:
      features[dimension] = tfds.features.Tensor(
          shape=(None,), dtype=np.float32,
          encoding=tfds.features.Encoding.BYTES)
    features["has_labels"] = tfds.features.Scalar(dtype=np.bool_)
    features["recording"] = tfds.features.Text()
    features["num_frames"] = tfds.features.Scalar(dtype=np.int32)
    return self.dataset_info_from_configs(
        description=_DESCRIPTION,
        features=tfds.features.FeaturesDict(features),
        supervised_keys=None,
        homepage="https://diuf.unifr.ch/main/diva/recola/",
        citation=_CITATION,
        metadata=tfds.core.MetadataDict(),
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    layout = layout_lib.check_layout(dl_manager.manual_dir)
    # Fingerprinted before any file is read; lands in metadata.json of the
    # temporary build folder, renamed with it when the build completes.
    self.info.metadata[source_lib.SOURCE_METADATA_KEY] = (
        source_lib.package_fingerprint(layout.manual_dir))
    self.info.metadata[FEATURE_SETS_METADATA_KEY] = list(layout.feature_sets)
    self.info.metadata["feature_dims"] = {
        name: dim for name, (_, dim) in layout_lib.FEATURE_SETS.items()}
    self.info.metadata["labeled_splits"] = list(layout_lib.LABELED_SPLITS)
    self.info.metadata["num_recordings"] = {
        split: len(ids) for split, ids in layout.recordings.items()}
    return {
        split: self._generate_examples(layout, split)
        for split in layout_lib.SPLITS
    }

  def _generate_examples(self, layout: layout_lib.Layout, split: str):
    for recording in layout.recordings[split]:
      yield recording, layout_lib.read_recording(layout, recording)
