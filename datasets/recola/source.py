"""Which package a prepared RECOLA copy was built from, and checking it.

A build records its source in the dataset metadata (``metadata.json`` in the
version folder, written by TFDS inside its temporary build folder before the
rename, so a finished copy always carries it)::

    "source": {"path": "/abs/resolved/manual_dir",
               "fingerprint": "sha256:<64 hex digits>",
               "num_files": 52, "total_bytes": 71234567}

The fingerprint is the SHA-256 of the sorted lines ``"<relative path>\\t<size
in bytes>\\n"`` (POSIX separators) of the files a build reads: every
``<split>_<n>.arff`` in ``ratings_gold_standard/{arousal,valence}/`` (train and
dev only; test gold standards are never read) and in
``features_*/{arousal,valence}/`` of the known feature folders.  Only names
and sizes enter it, so it is fast (no file is opened) and does not change when
the package is copied or moved; an edit that keeps every size the same goes
unnoticed.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from emobed_datasets.errors import DataError
from emobed_datasets.recola import layout as layout_lib

__all__ = ["SOURCE_METADATA_KEY", "package_fingerprint", "prepared_source",
           "check_source"]

#: Key in `DatasetInfo.metadata` (``metadata.json``) holding the source record.
SOURCE_METADATA_KEY = "source"
_METADATA_FILE = "metadata.json"


def _package_files(root: Path) -> list[Path]:
  """The files a build of `root` reads, as paths relative to `root`.

  Works on incomplete packages too (it only lists what is there), so that a
  changed package can be compared even when it would no longer build.
  """
  folders = [Path(layout_lib.GOLD_FOLDER) / dim for dim in layout_lib.DIMENSIONS]
  folders += [Path(folder) / variant
              for folder, _ in layout_lib.FEATURE_SETS.values()
              for variant in layout_lib.VARIANTS]
  found: list[Path] = []
  for folder in folders:
    gold = folder.parts[0] == layout_lib.GOLD_FOLDER
    try:
      entries = sorted((root / folder).iterdir())
    except OSError:  # absent or unreadable folder: nothing read from it
      continue
    for entry in entries:
      match = layout_lib.FILE_RE.match(entry.name)
      if match is None or not entry.is_file():
        continue
      if gold and match.group(1) not in layout_lib.LABELED_SPLITS:
        continue
      found.append(folder / entry.name)
  return found


def package_fingerprint(manual_dir: str | os.PathLike[str]) -> dict[str, Any]:
  """Fingerprints an AVEC 2016 RECOLA package by file names and sizes.

  Args:
    manual_dir: root of the unpacked package (``~`` is expanded).

  Returns:
    ``{'path': str, 'fingerprint': 'sha256:<hex>', 'num_files': int,
    'total_bytes': int}``; ``path`` is the resolved absolute folder.  A
    folder without any package file gives ``num_files`` 0 (no error: the
    layout is checked elsewhere).

  Raises:
    DataError: `manual_dir` does not exist or is not a folder.
  """
  root = Path(manual_dir).expanduser()
  if not root.is_dir():
    what = "not a folder" if root.exists() else "folder not found"
    raise DataError(f"{what}, expected the unpacked AVEC 2016 RECOLA package",
                    path=root)
  root = root.resolve()
  lines = []
  total = 0
  for relative in _package_files(root):
    try:
      size = (root / relative).stat().st_size
    except OSError as e:
      raise DataError(f"cannot read file size ({e.strerror})",
                      path=root / relative) from None
    total += size
    lines.append(f"{relative.as_posix()}\t{size}\n")
  digest = hashlib.sha256("".join(sorted(lines)).encode("utf-8")).hexdigest()
  return {"path": str(root), "fingerprint": f"sha256:{digest}",
          "num_files": len(lines), "total_bytes": total}


def prepared_source(data_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
  """What a prepared copy under `data_dir` was built from.

  Args:
    data_dir: the `data_dir` given to `prepare` (the copy is in its
      ``recola/1.0.0``).

  Returns:
    The record written at build time (keys as `package_fingerprint`), or
    None for a copy prepared before sources were recorded.

  Raises:
    DataError: nothing is prepared under `data_dir`, or its metadata is not
      readable JSON.
  """
  from emobed_datasets.recola.prepare import is_prepared, prepared_path

  version_dir = prepared_path(data_dir)
  if not is_prepared(data_dir):
    raise DataError(
        "prepared RECOLA dataset not found, expected the output of "
        "`python launch/prepare_data.py --dataset=recola` (or prepare())",
        path=version_dir)
  metadata_file = version_dir / _METADATA_FILE
  if not metadata_file.is_file():
    return None
  try:
    metadata = json.loads(metadata_file.read_text(encoding="utf-8"))
  except (OSError, UnicodeDecodeError, ValueError) as e:
    raise DataError(f"unreadable dataset metadata ({e}), expected JSON "
                    "written by prepare()", path=metadata_file) from None
  record = (metadata.get(SOURCE_METADATA_KEY)
            if isinstance(metadata, dict) else None)
  if not isinstance(record, dict) or "fingerprint" not in record:
    return None
  return dict(record)


def check_source(
    data_dir: str | os.PathLike[str], manual_dir: str | os.PathLike[str]
) -> dict[str, Any]:
  """Checks that the prepared copy under `data_dir` was built from `manual_dir`.

  The package counts as the same when its fingerprint (file names and sizes,
  see the module docstring) equals the recorded one, even if it was moved or
  copied to another path since; a different path with a different
  fingerprint, a changed package at the same path (a file added, removed or
  resized) and a missing folder are errors.

  Args:
    data_dir: the `data_dir` given to `prepare`.
    manual_dir: the package the caller was asked to use (``--manual_dir`` or
      ``$RECOLA_DIR``).

  Returns:
    The recorded source (`prepared_source`) of the prepared copy: the data
    that will actually be read.

  Raises:
    DataError: one line: "prepared data at <P> was built from <X> (fingerprint
      ..), not <Y> (...): rerun `python launch/prepare_data.py
      --dataset=recola --manual_dir=<Y> --data_dir=<data_dir> --overwrite` or
      drop --manual_dir"; also when nothing is prepared, or when the copy
      predates source records (then it cannot be checked).
  """
  from emobed_datasets.recola.prepare import prepared_path

  recorded = prepared_source(data_dir)
  given = Path(manual_dir).expanduser()
  version_dir = prepared_path(data_dir)
  rerun = (f"rerun `python launch/prepare_data.py --dataset=recola "
           f"--manual_dir={given} --data_dir={Path(data_dir).expanduser()} "
           "--overwrite` or drop --manual_dir")
  if recorded is None:
    built = "an unrecorded package (prepared before sources were recorded)"
  else:
    built = (f"{recorded.get('path')} (fingerprint "
             f"{_short(recorded['fingerprint'])}, "
             f"{recorded.get('num_files', '?')} files)")
  if not given.is_dir():
    state = "not a folder" if given.exists() else "folder not found"
    raise DataError(f"prepared data at {version_dir} was built from {built}, "
                    f"not {given} ({state}): {rerun}")
  current = package_fingerprint(given)
  if recorded is not None and current["fingerprint"] == recorded["fingerprint"]:
    return recorded
  raise DataError(
      f"prepared data at {version_dir} was built from {built}, not "
      f"{current['path']} (fingerprint {_short(current['fingerprint'])}, "
      f"{current['num_files']} files): {rerun}")


def _short(fingerprint: str) -> str:
  """``'sha256:0123456789abcdef...'`` -> ``'sha256:0123456789ab'``."""
  algorithm, _, digest = str(fingerprint).partition(":")
  return f"{algorithm}:{digest[:12]}" if digest else str(fingerprint)[:19]
