r"""Prepares a dataset for training (TFDS array_record, read without TensorFlow).

Real RECOLA (the unpacked AVEC 2016 package, obtained from its owners):

  python launch/prepare_data.py --dataset=recola --manual_dir=/path/to/AVEC2016

Synthetic demo corpus in the same on-disk format (written once, then
prepared; a few seconds):

  python launch/prepare_data.py --dataset=demo

Where things go (``--data_dir``, default ``$EMOBED_DATA_DIR`` if set, else
``~/emobed_data``):

  recola: <data_dir>/recola/1.0.0/                 prepared dataset
  demo:   <data_dir>/demo_manual/seed_<seed>/      corpus (RECOLA format)
          <data_dir>/demo/seed_<seed>/recola/1.0.0/ prepared dataset

Running it again is a no-op once the data is prepared (``--overwrite``
rebuilds).  A user error (missing folder, malformed file) prints one line
``error: ...`` on stderr and exits with status 1.  The corpus layouts and
what is read from them: docs/DATA.md.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import _cli  # noqa: F401  (first: the sys.path guard)
from absl import flags

from emobed_datasets import demo, recola
from emobed_datasets.common import default_data_dir
from emobed_datasets.errors import DataError

FLAGS = _cli.script_flags()  # its own set: one-line flag errors, importable beside others
_DATASET = flags.DEFINE_enum(
    "dataset", None, ["recola", "demo"], "Which dataset to prepare.", flag_values=FLAGS)
_MANUAL_DIR = flags.DEFINE_string(
    "manual_dir", None,
    "recola: the unpacked AVEC 2016 RECOLA package (with "
    "ratings_gold_standard/ and features_*/). Default: $RECOLA_DIR.", flag_values=FLAGS)
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None,
    "Where prepared data goes. Default: $EMOBED_DATA_DIR, else ~/emobed_data.", flag_values=FLAGS)
_SEED = flags.DEFINE_integer("seed", 0, "demo: corpus seed.", flag_values=FLAGS)
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "Rebuild even if the prepared data exists.", flag_values=FLAGS)
flags.mark_flag_as_required("dataset", flag_values=FLAGS)


def _say(message: str) -> None:
  _cli.say(message, "[prepare_data] ")


def _summary(builder) -> None:
  sizes = ", ".join(
      f"{name}: {split.num_examples} recordings"
      for name, split in builder.info.splits.items())
  sets = ", ".join(recola.available_feature_sets(builder))
  _say(f"splits: {sizes}")
  _say(f"feature sets: {sets}; labelled splits: train, dev")
  _say(f"prepared data: {builder.data_dir}")


def _prepare(data_dir: Path):
  if _DATASET.value == "recola":
    manual = _MANUAL_DIR.value or os.environ.get("RECOLA_DIR", "")
    if not manual:
      raise _UsageError(
          "--manual_dir (or $RECOLA_DIR) is required with --dataset=recola (the "
          "unpacked AVEC 2016 RECOLA package)")
    manual_dir = Path(manual).expanduser()
    if recola.is_prepared(data_dir) and not _OVERWRITE.value:
      recola.check_source(data_dir, manual_dir)  # the copy is of this package
      _say(f"already prepared at {recola.prepared_path(data_dir)} from {manual_dir}; "
           "nothing to do (--overwrite rebuilds)")
      return recola.prepare(manual_dir, data_dir)
    _say(f"checking {manual_dir}")
    layout = recola.check_layout(manual_dir)
    counts = ", ".join(f"{s}: {len(r)}" for s, r in layout.recordings.items())
    _say(f"found feature sets {', '.join(layout.feature_sets)}; "
         f"recordings {counts}")
    _say(f"preparing into {data_dir} (array_record)")
    start = time.perf_counter()
    builder = recola.prepare(manual_dir, data_dir, overwrite=_OVERWRITE.value,
                             show_progress=_show_tfds_progress())
    _say(f"prepared in {time.perf_counter() - start:.1f} s")
    return builder

  manual_dir, tfds_dir = demo.demo_paths(data_dir, _SEED.value)
  if recola.is_prepared(tfds_dir) and not _OVERWRITE.value:
    _say(f"demo already prepared at {recola.prepared_path(tfds_dir)}; "
         "nothing to do (--overwrite rebuilds)")
    return recola.prepare(manual_dir, tfds_dir)
  start = time.perf_counter()
  _say(f"writing demo corpus (seed {_SEED.value}) to {manual_dir}")
  demo.ensure_demo_corpus(manual_dir, _SEED.value)
  _say(f"demo corpus ready in {time.perf_counter() - start:.1f} s")
  start = time.perf_counter()
  _say(f"preparing into {tfds_dir} (array_record)")
  builder = recola.prepare(manual_dir, tfds_dir, overwrite=_OVERWRITE.value,
                           show_progress=_show_tfds_progress())
  _say(f"prepared in {time.perf_counter() - start:.1f} s")
  return builder


def _show_tfds_progress() -> bool:
  """TFDS progress bars only on a terminal (not in logs or pipes)."""
  return sys.stderr.isatty()


class _UsageError(Exception):
  """A flag combination the user got wrong."""


def main(argv: list[str]) -> None:
  _cli.start(argv, FLAGS)
  data_dir = (Path(_DATA_DIR.value).expanduser() if _DATA_DIR.value
              else default_data_dir())
  try:
    builder = _prepare(data_dir)
    _summary(builder)
  except (DataError, _UsageError) as e:
    _cli.fail(str(e))
  except OSError as e:  # permissions, full disk, ...: name the path
    _cli.fail(f"{e.strerror or e}: {e.filename}" if e.filename else str(e))


if __name__ == "__main__":
  _cli.run_script(main, FLAGS)
