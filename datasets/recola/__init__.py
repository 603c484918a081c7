"""RECOLA (AVEC 2016 package) as a TFDS dataset, read without TensorFlow.

Importing this package registers the TFDS builder ``recola``.

    from emobed_datasets import recola
    builder = recola.prepare(manual_dir, data_dir)     # once; no-op after
    train = recola.load_split(data_dir, "train")        # random access
    recola.available_feature_sets(train)                # ('audio', ...)
    recola.prepared_source(data_dir)                    # {'path': ..., ...}
    recola.check_source(data_dir, manual_dir)           # DataError if changed
    train[0]["audio_arousal"].shape                     # (frames, 88)
"""

from emobed_datasets.recola.layout import (
    DIMENSIONS,
    FEATURE_SETS,
    LABELED_SPLITS,
    SPLITS,
    VARIANTS,
    Layout,
    check_layout,
    feature_key,
    read_recording,
)
from emobed_datasets.recola.recola_dataset_builder import (
    FEATURE_SETS_METADATA_KEY,
    Builder,
)
from emobed_datasets.recola.source import (
    SOURCE_METADATA_KEY,
    check_source,
    package_fingerprint,
    prepared_source,
)
from emobed_datasets.recola.prepare import (
    available_feature_sets,
    is_prepared,
    load_split,
    prepare,
    prepared_path,
)

#: Every feature key of an example, e.g. 'audio_arousal', in a fixed order.
FEATURE_KEYS: tuple[str, ...] = tuple(
    feature_key(name, variant) for name in FEATURE_SETS for variant in VARIANTS
)

__all__ = [
    "Builder", "DIMENSIONS", "FEATURE_KEYS", "FEATURE_SETS",
    "FEATURE_SETS_METADATA_KEY", "LABELED_SPLITS", "Layout", "SPLITS",
    "SOURCE_METADATA_KEY", "VARIANTS", "available_feature_sets",
    "check_layout", "check_source", "feature_key", "is_prepared",
    "load_split", "package_fingerprint", "prepare", "prepared_path",
    "prepared_source", "read_recording",
]
