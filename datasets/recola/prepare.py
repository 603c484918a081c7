"""Preparing and reading the RECOLA TFDS dataset without TensorFlow.

``prepare(manual_dir, data_dir)`` checks the package layout, then runs the
TFDS build into ``<data_dir>/recola/1.0.0`` (array_record files plus
``dataset_info.json``/``features.json``/``metadata.json``).

Idempotency and atomicity (checked against tensorflow-datasets 4.9.10):

* TFDS writes into ``<data_dir>/recola/incomplete.<RANDOM>_1.0.0/`` and
  renames it to ``1.0.0`` only after every split and the dataset info are
  written, so the version folder exists if and only if the build finished.
  `prepare` returns at once when it exists (no file is read or rewritten).
* An exception during the build removes the temporary folder; a killed
  process leaves it behind.  `prepare` takes an exclusive lock
  (``<data_dir>/.recola.prepare.lock``, `fcntl.flock`) for the build, and
  while holding it deletes such leftovers: no live build can own them, and no
  reader ever looks at them.
* To rebuild after the package changed, pass ``overwrite=True`` (the old
  version folder is deleted first) or delete ``<data_dir>/recola/1.0.0``.
* Provenance: the build records the package it read (resolved path and a
  fingerprint of its file names and sizes) in ``metadata.json`` under
  ``'source'``, inside the temporary folder, so it is renamed with the rest.
  `prepared_source` reads it back and `check_source` compares it with a given
  manual_dir.  `prepare` itself does not compare: on an existing copy it
  returns at once whatever `manual_dir` is (callers that were given a
  manual_dir call `check_source` first).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import tensorflow_datasets as tfds
from tensorflow_datasets.core.utils import tqdm_utils

from emobed_datasets.common import exclusive_lock
from emobed_datasets.errors import DataError
from emobed_datasets.recola import layout as layout_lib
from emobed_datasets.recola.recola_dataset_builder import (
    FEATURE_SETS_METADATA_KEY, Builder)

__all__ = ["prepare", "load_split", "available_feature_sets",
           "is_prepared", "prepared_path"]

_INCOMPLETE_PREFIX = "incomplete."


def prepared_path(data_dir: str | os.PathLike[str]) -> Path:
  """The version folder that a finished build creates under `data_dir`."""
  return Path(data_dir).expanduser() / Builder.name / str(Builder.VERSION)


def is_prepared(data_dir: str | os.PathLike[str]) -> bool:
  """Whether a finished build exists under `data_dir`."""
  return (prepared_path(data_dir) / "dataset_info.json").is_file()


def prepare(
    manual_dir: str | os.PathLike[str] | None,
    data_dir: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    show_progress: bool = False,
) -> Builder:
  """Builds the RECOLA dataset from the AVEC 2016 package (once).

  Args:
    manual_dir: root of the unpacked package (see
      `Builder.MANUAL_DOWNLOAD_INSTRUCTIONS`); not read when the dataset is
      already prepared and `overwrite` is False.
    data_dir: TFDS data folder; the result lands in
      ``<data_dir>/recola/1.0.0``.
    overwrite: rebuild even if a finished build exists.
    show_progress: let TFDS print its banner and progress bars (for command
      line tools); by default they are silenced.

  Returns:
    The builder, ready for `Builder.as_data_source`; its
    ``info.metadata['source']`` records the package it was built from (see
    `emobed_datasets.recola.source`).

  Raises:
    DataError: the package is missing, incomplete or malformed (the message
      names the file and what was expected).
  """
  data_root = Path(data_dir).expanduser()
  if is_prepared(data_root) and not overwrite:
    return _open_builder(data_root)
  layout = layout_lib.check_layout(manual_dir)  # clear errors before TFDS
  data_root.mkdir(parents=True, exist_ok=True)
  with exclusive_lock(data_root / f".{Builder.name}.prepare.lock"):
    _remove_incomplete_builds(data_root / Builder.name)
    if is_prepared(data_root) and not overwrite:  # built while we waited
      return _open_builder(data_root)
    if overwrite:
      shutil.rmtree(prepared_path(data_root), ignore_errors=True)
    builder = Builder(data_dir=os.fspath(data_root), file_format="array_record")
    download_dir = data_root / "downloads"
    with _tfds_output(show_progress):
      builder.download_and_prepare(
          file_format="array_record",
          download_dir=os.fspath(download_dir),
          download_config=tfds.download.DownloadConfig(
              manual_dir=os.fspath(layout.manual_dir),
              try_download_gcs=False,
          ),
      )
    _remove_empty_dirs(download_dir)  # TFDS leaves an empty downloads/extracted
  return _open_builder(data_root)


def load_split(data_dir: str | os.PathLike[str], split: str) -> Any:
  """Random-access data source of one prepared split (no TensorFlow).

  Args:
    data_dir: the `data_dir` given to `prepare`.
    split: ``'train'``, ``'dev'`` or ``'test'`` (TFDS slicing such as
      ``'train[:2]'`` also works).

  Returns:
    A TFDS ``ArrayRecordDataSource``: ``len(ds)`` recordings, ``ds[i]`` a dict
    of NumPy arrays (``recording`` as bytes); ``ds.dataset_info`` holds the
    metadata.

  Raises:
    DataError: nothing is prepared under `data_dir`, or the split is unknown.
  """
  data_root = Path(data_dir).expanduser()
  if not is_prepared(data_root):
    raise DataError(
        "prepared RECOLA dataset not found, expected the output of "
        "`python launch/prepare_data.py --dataset=recola` (or prepare())",
        path=prepared_path(data_root))
  builder = _open_builder(data_root)
  base = split.split("[", 1)[0]
  if base not in builder.info.splits:
    raise DataError(
        f"unknown split {split!r}, expected one of "
        f"{', '.join(builder.info.splits)}", path=prepared_path(data_root))
  return builder.as_data_source(split=split)


def available_feature_sets(source: Any) -> tuple[str, ...]:
  """The feature sets present in a prepared dataset.

  Args:
    source: a `Builder`, a data source from `load_split` /
      `Builder.as_data_source`, a dict of such data sources, or a
      `tfds.core.DatasetInfo`.

  Returns:
    Feature set names (e.g. ``('audio', 'video_appearance')``) in
    `FEATURE_SETS` order; features of other sets are stored as ``[0, D]``.

  Raises:
    DataError: the dataset carries no ``feature_sets`` metadata.
    TypeError: `source` is none of the above.
  """
  info = _dataset_info(source)
  metadata = info.metadata or {}
  if FEATURE_SETS_METADATA_KEY not in metadata:
    raise DataError(
        f"dataset {info.full_name} has no {FEATURE_SETS_METADATA_KEY!r} "
        "metadata, expected data prepared by emobed_datasets.recola.prepare",
        path=info.data_dir)
  present = set(metadata[FEATURE_SETS_METADATA_KEY])
  return tuple(name for name in layout_lib.FEATURE_SETS if name in present)


def _dataset_info(source: Any) -> tfds.core.DatasetInfo:
  if isinstance(source, tfds.core.DatasetInfo):
    return source
  if isinstance(source, tfds.core.DatasetBuilder):
    return source.info
  info = getattr(source, "dataset_info", None)
  if isinstance(info, tfds.core.DatasetInfo):
    return info
  if isinstance(source, Mapping) and source:
    return _dataset_info(next(iter(source.values())))
  raise TypeError(
      "expected a RECOLA Builder, a data source, a dict of data sources or a "
      f"DatasetInfo, got {type(source).__name__}")


def _open_builder(data_root: Path) -> Builder:
  return Builder(data_dir=os.fspath(data_root))


@contextlib.contextmanager
def _tfds_output(show: bool) -> Iterator[None]:
  """Silences TFDS's stdout banner and progress bars unless `show`."""
  if show:
    yield
    return
  was_active = getattr(tqdm_utils, "_active", True)
  tqdm_utils.display_progress_bar(False)
  try:
    with contextlib.redirect_stdout(io.StringIO()):
      yield
  finally:
    tqdm_utils.display_progress_bar(was_active)


def _remove_empty_dirs(folder: Path) -> None:
  """Removes `folder` and its sub-folders if they hold no file."""
  if not folder.is_dir():
    return
  for sub in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
    if sub.is_dir():
      with contextlib.suppress(OSError):
        sub.rmdir()
  with contextlib.suppress(OSError):
    folder.rmdir()


def _remove_incomplete_builds(dataset_dir: Path) -> list[Path]:
  """Deletes TFDS temporary build folders left by killed processes.

  Call only while holding the prepare lock.  Returns the deleted paths.
  """
  removed: list[Path] = []
  if not dataset_dir.is_dir():
    return removed
  for entry in sorted(dataset_dir.iterdir()):
    if entry.name.startswith(_INCOMPLETE_PREFIX) and entry.is_dir():
      shutil.rmtree(entry, ignore_errors=True)
      removed.append(entry)
  return removed
