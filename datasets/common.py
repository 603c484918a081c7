"""Facts and helpers shared by the builders and the demo writer, without TFDS.

Importing this module (unlike ``emobed_datasets.recola``) does not import
TensorFlow Datasets, so the demo writer stays light.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path

from emobed_datasets.errors import DataError

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


def check_demo_marker(root: Path, marker_name: str, params: dict, what: str,
                      ignore: tuple[str, ...] = ()) -> bool:
  """Whether ``root`` holds a complete generated corpus made with ``params``.

  A generated corpus (``demo``, ``demo_omg``) is finished by writing its
  marker file ``marker_name`` (JSON of the parameters it was made with).

  Args:
    root: the corpus folder.
    marker_name: the marker's file name.
    params: the parameters asked for now.
    what: the corpus's name for messages, e.g. ``"demo corpus"``.
    ignore: marker keys that are facts about the corpus, not parameters.

  Returns:
    False when ``root`` is missing or an empty folder (to be written); True
    when its marker holds ``params``.

  Raises:
    DataError: ``root`` holds something else (no marker), an unreadable
      marker, or a corpus made with other parameters (names the folder).
  """
  if not root.exists():
    return False
  marker = root / marker_name
  if not marker.is_file():
    if root.is_dir() and not any(root.iterdir()):
      return False
    raise DataError(f"exists but is not a complete {what} (no {marker_name}): delete it "
                    "or choose another folder", path=root)
  try:
    found = json.loads(marker.read_text())
  except (OSError, ValueError):
    raise DataError("unreadable demo marker, expected JSON; delete the folder to "
                    "regenerate it", path=marker) from None
  for key in ignore:
    found.pop(key, None)
  if found != params:
    raise DataError(f"{what} made with {found}, expected {params}; delete the folder "
                    "or choose another one", path=root)
  return True
