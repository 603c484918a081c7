"""Facts and helpers shared by the builders and the demo writer, without TFDS.

Importing this module (unlike ``emobed_datasets.recola``) does not import
TensorFlow Datasets, so the demo writer stays light.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

#: RECOLA (AVEC 2016) feature set name -> (folder in the package, dimensions).
RECOLA_FEATURE_SETS: dict[str, tuple[str, int]] = {
    "audio": ("features_audio", 88),
    "video_appearance": ("features_video_appearance", 168),
    "video_geometric": ("features_video_geometric", 632),
    "ecg": ("features_ECG", 19),
    "hrhrv": ("features_HRHRV", 10),
    "eda": ("features_EDA", 8),
    "scl": ("features_SCL", 8),
    "scr": ("features_SCR", 8),
}


def default_data_dir() -> Path:
  """Where prepared data goes by default: ``$EMOBED_DATA_DIR`` if set and
  non-empty (``~`` expanded), else ``~/emobed_data``.

  Only computes the path: nothing is created or checked.
  """
  env = os.environ.get("EMOBED_DATA_DIR", "").strip()
  return Path(env).expanduser() if env else Path.home() / "emobed_data"


@contextlib.contextmanager
def exclusive_lock(lock_path: Path) -> Iterator[None]:
  """Holds an exclusive ``flock`` on ``lock_path`` (blocks until available)."""
  with open(lock_path, "a+b") as handle:
    fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
