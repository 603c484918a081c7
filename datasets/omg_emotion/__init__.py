"""OMG-Emotion (IJCNN 2018) as a TFDS dataset, read without TensorFlow.

    from emobed_datasets import omg_emotion
    summary = omg_emotion.prepare(manual_dir, data_dir)   # once; no-op after
    train = omg_emotion.load_split(data_dir, "train")      # random access
    train[0]["audio"].shape                                 # (frames, 25)
    omg_emotion.info(data_dir)["manifest"]                  # which utterances

The readers, constants and `HELP` import without TensorFlow Datasets; the
names that need it (`Builder`, `prepare`, `load_split`, `info`, ...) import it
on first use (feature extraction runs in worker processes that import this
package, and should not pay for TFDS).  Using `Builder` registers the TFDS
builder ``omg_emotion`` (one config per audio feature choice).

What is read and computed: docs/DATA.md (OMG-Emotion).
"""

from __future__ import annotations

import importlib

from emobed_datasets.omg_emotion.extract import (
    AUDIO_FEATURES,
    CSV_NAMES,
    HELP,
    SPLITS,
    missing_corpus_message,
)
from emobed_datasets.omg_emotion.readers import (
    CLASS_NAMES,
    CSV_COLUMNS,
    OPENFACE_COLUMNS,
    parse_omg_csv,
    parse_openface,
    read_omg_csv,
    read_openface,
)

_LAZY = {
    "Builder": "omg_emotion_dataset_builder",
    "corpus_fingerprint": "source", "check_source": "source",
    "Utterances": "prepared", "info": "prepared", "is_prepared": "prepared",
    "load_split": "prepared", "prepare": "prepared", "prepared_path": "prepared",
}


def __getattr__(name: str):
  if name in _LAZY:
    module = importlib.import_module(f"emobed_datasets.omg_emotion.{_LAZY[name]}")
    return getattr(module, name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
  "AUDIO_FEATURES",
  "CLASS_NAMES",
  "CSV_COLUMNS",
  "CSV_NAMES",
  "HELP",
  "OPENFACE_COLUMNS",
  "SPLITS",
  "Builder",
  "Utterances",
  "corpus_fingerprint",
  "info",
  "is_prepared",
  "load_split",
  "missing_corpus_message",
  "parse_omg_csv",
  "parse_openface",
  "prepare",
  "prepared_path",
  "read_omg_csv",
  "read_openface",
]
