"""Which OMG-Emotion copy a prepared dataset was built from.

Recorded in ``metadata.json`` under ``'source'`` like RECOLA's
(`emobed_datasets.recola.source`)::

    "source": {"path": "/abs/resolved/manual_dir",
               "fingerprint": "sha256:<64 hex digits>",
               "num_files": 5320, "total_bytes": 123456789,
               "split_dirs": ["train", "validation", "test"]}

The fingerprint is the SHA-256 of the sorted lines ``"<relative path>\\t<size
in bytes>\\n"`` of the three CSVs and every file under the three split
folders: names and sizes only (fast; unchanged by copying or moving).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from emobed_datasets.errors import DataError
from emobed_datasets.omg_emotion import extract as extract_lib

__all__ = ["check_source", "corpus_fingerprint"]


def corpus_fingerprint(manual_dir: str | os.PathLike[str],
                       split_dirs: tuple[str, ...] = extract_lib.SPLITS) -> dict[str, Any]:
  """Fingerprints an OMG-Emotion folder by file names and sizes.

  Raises:
    DataError: `manual_dir` is not a folder, or a file cannot be stat'ed.
  """
  root = Path(manual_dir).expanduser()
  if not root.is_dir():
    raise DataError("folder not found, expected the OMG-Emotion CSVs and clips", path=root)
  root = root.resolve()
  lines = []
  total = 0
  for relative in extract_lib.files_of(root, tuple(split_dirs)):
    try:
      size = (root / relative).stat().st_size
    except OSError as e:
      raise DataError(f"cannot read file size ({e.strerror})", path=root / relative) from None
    total += size
    lines.append(f"{relative.as_posix()}\t{size}\n")
  digest = hashlib.sha256("".join(sorted(lines)).encode("utf-8")).hexdigest()
  return {"path": str(root), "fingerprint": f"sha256:{digest}", "num_files": len(lines),
          "total_bytes": total, "split_dirs": list(split_dirs)}


def check_source(recorded: dict[str, Any], manual_dir: str | os.PathLike[str],
                 where: str | os.PathLike[str]) -> None:
  """Checks that a prepared copy (built from `recorded`, its metadata's
  ``'source'``) was built from `manual_dir`: same fingerprint, wherever the
  folder is now.

  Raises:
    DataError: one line naming both folders and how to rebuild
      (``--overwrite``); also when `manual_dir` is not a folder.
  """
  given = Path(manual_dir).expanduser()
  split_dirs = tuple(recorded.get("split_dirs") or extract_lib.SPLITS)
  current = corpus_fingerprint(given, split_dirs)
  if current["fingerprint"] == recorded.get("fingerprint"):
    return
  raise DataError(
      f"prepared data at {where} was built from {recorded.get('path')} "
      f"({recorded.get('num_files', '?')} files), not {current['path']} "
      f"({current['num_files']} files, other names or sizes): rerun with --overwrite "
      "to rebuild it from the new folder, or drop --manual_dir / $OMG_DIR")
