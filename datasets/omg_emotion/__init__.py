"""OMG-Emotion (IJCNN 2018) as a TFDS dataset, read without TensorFlow.

Importing this package registers the TFDS builder ``omg_emotion`` (one
config per audio feature choice).

    from emobed_datasets import omg_emotion
    summary = omg_emotion.prepare(manual_dir, data_dir)   # once; no-op after
    train = omg_emotion.load_split(data_dir, "train")      # random access
    train[0]["audio"].shape                                 # (frames, 25)
    omg_emotion.info(data_dir)["manifest"]                  # which utterances

What is read and computed: docs/DATA.md (OMG-Emotion).
"""

from emobed_datasets.omg_emotion.readers import (
    CLASS_NAMES,
    CSV_COLUMNS,
    OPENFACE_COLUMNS,
    parse_omg_csv,
    parse_openface,
    read_omg_csv,
    read_openface,
)
from emobed_datasets.omg_emotion.extract import CSV_NAMES, SPLITS
from emobed_datasets.omg_emotion.omg_emotion_dataset_builder import AUDIO_FEATURES, Builder
from emobed_datasets.omg_emotion.source import corpus_fingerprint
from emobed_datasets.omg_emotion.prepare import (
    HELP,
    Utterances,
    info,
    is_prepared,
    load_split,
    missing_corpus_message,
    prepare,
    prepared_path,
)

__all__ = [
    "AUDIO_FEATURES", "Builder", "CLASS_NAMES", "CSV_COLUMNS", "CSV_NAMES", "HELP",
    "OPENFACE_COLUMNS", "SPLITS", "Utterances", "corpus_fingerprint", "info",
    "is_prepared", "load_split", "missing_corpus_message", "parse_omg_csv",
    "parse_openface", "prepare", "prepared_path", "read_omg_csv", "read_openface",
]
