r"""Prepares a dataset for training (TFDS array_record, read without TensorFlow).

Real RECOLA (the unpacked AVEC 2016 package, obtained from its owners):

  python launch/prepare_data.py --dataset=recola --manual_dir=/path/to/AVEC2016

Synthetic demo corpus in the same on-disk format (written once, then
prepared; a few seconds):

  python launch/prepare_data.py --dataset=demo

OMG-Emotion (the organisers' CSVs, the clips from their download script, an
OpenFace 2.0 CSV beside each clip) and its synthetic demo:

  python launch/prepare_data.py --dataset=omg --manual_dir=/path/to/omg
  python launch/prepare_data.py --dataset=demo_omg

(``--omg_audio_features=egemaps_lld|egemaps_functionals|compare_lld``,
``--omg_split_dirs=train,validation,test``, ``--workers=N``; a progress line
with ETA, then per split the utterances kept and the rows skipped by reason.)

Where things go (``--data_dir``, default ``$EMOBED_DATA_DIR`` if set, else
``~/emobed_data``):

  recola: <data_dir>/recola/1.0.0/                 prepared dataset
  demo:   <data_dir>/demo_manual/seed_<seed>/      corpus (RECOLA format)
          <data_dir>/demo/seed_<seed>/recola/1.0.0/ prepared dataset
  omg:    <data_dir>/omg_emotion/<audio features>/1.0.0/  (+ manifest.json)
  demo_omg: <data_dir>/demo_omg_manual/seed_<seed>/  corpus (OMG format)
          <data_dir>/demo_omg/seed_<seed>/omg_emotion/<audio features>/1.0.0/

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

from emobed_datasets import demo, demo_omg, omg_emotion, recola
from emobed_datasets.common import default_data_dir
from emobed_datasets.errors import DataError

FLAGS = _cli.script_flags()  # its own set: one-line flag errors, importable beside others
_DATASET = flags.DEFINE_enum(
    "dataset", None, ["recola", "demo", "omg", "demo_omg"], "Which dataset to prepare.",
    flag_values=FLAGS)
_MANUAL_DIR = flags.DEFINE_string(
    "manual_dir", None,
    "recola: the unpacked AVEC 2016 RECOLA package (with "
    "ratings_gold_standard/ and features_*/). Default: $RECOLA_DIR. omg: the folder with "
    "the organisers' CSVs and the split folders of clips. Default: $OMG_DIR.",
    flag_values=FLAGS)
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None,
    "Where prepared data goes. Default: $EMOBED_DATA_DIR, else ~/emobed_data.", flag_values=FLAGS)
_SEED = flags.DEFINE_integer("seed", 0, "demo: corpus seed.", flag_values=FLAGS)
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "Rebuild even if the prepared data exists.", flag_values=FLAGS)
_SPLIT_DIRS = flags.DEFINE_list(
    "omg_split_dirs", list(omg_emotion.SPLITS),
    "omg: folders of the train, validation and test clips under --manual_dir.",
    flag_values=FLAGS)
_AUDIO_FEATURES = flags.DEFINE_enum(
    "omg_audio_features", "egemaps_lld", list(omg_emotion.AUDIO_FEATURES),
    "omg, demo_omg: audio features computed with openSMILE (eGeMAPS LLDs every 10 ms; "
    "eGeMAPS functionals over 1 s windows every 100 ms; ComParE_2016 LLDs).",
    flag_values=FLAGS)
_WORKERS = flags.DEFINE_integer(
    "workers", None, "omg, demo_omg: processes extracting features (default: CPU count).",
    lower_bound=1, flag_values=FLAGS)
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


class _Progress:
  """``progress(done, total, elapsed_s)`` for prepare(): a line every 10 %
  or 10 s, with the ETA; none before 5 % of the clips or 10 s (the first
  clips include the workers' start-up, so an ETA from them is far too
  high)."""

  def __init__(self) -> None:
    self._last_time = 0.0
    self._last_tenth = -1

  def __call__(self, done: int, total: int, elapsed: float) -> None:
    tenth = 10 * done // max(total, 1)
    if done < total and done < max(2, total // 20) and elapsed < 10:
      return
    if done < total and tenth == self._last_tenth and elapsed - self._last_time < 10:
      return
    self._last_time, self._last_tenth = elapsed, tenth
    eta = elapsed / done * (total - done) if done else None
    _say(f"features: {done}/{total} clips, {_cli.fmt_seconds(elapsed)} elapsed, "
         f"ETA {_cli.fmt_seconds(eta)}")


def _omg_report(summary: dict) -> None:
  """The end-of-prepare report: kept and skipped per reason per split."""
  if summary["already_prepared"]:
    _say(f"already prepared at {summary['prepared']}; nothing to do (--overwrite rebuilds)")
  else:
    _say(f"prepared in {summary['seconds']:.1f} s")
  warnings = [w for s in summary["splits"].values() for w in s["warnings"]]
  for line in warnings[:20]:
    _say(f"warning: {line}")
  if len(warnings) > 20:
    _say(f"warning: ... and {len(warnings) - 20} more (metadata.json, 'summary')")
  for split, s in summary["splits"].items():
    skipped = ", ".join(f"{n} {reason}" for reason, n in s["skipped"].items()) or "none"
    _say(f"{split}: {s['kept']} utterances kept of {s['rows']} CSV rows; skipped: {skipped}")
  _say(f"prepared data: {summary['prepared']} (manifest.json lists the utterances used)")


def _prepare_omg(data_dir: Path) -> None:
  kind = _AUDIO_FEATURES.value
  if _DATASET.value == "omg":
    manual = _MANUAL_DIR.value or os.environ.get("OMG_DIR", "")
    if omg_emotion.is_prepared(data_dir, kind) and not _OVERWRITE.value:
      if manual:  # the copy must be of the folder the user names
        omg_emotion.check_source(omg_emotion.info(data_dir, kind)["source"], manual,
                                 omg_emotion.prepared_path(data_dir, kind))
    elif manual:
      _say(f"reading {manual}; audio features {kind}")
    summary = omg_emotion.prepare(
        manual or None, data_dir, audio_features=kind, split_dirs=_SPLIT_DIRS.value,
        workers=_WORKERS.value, overwrite=_OVERWRITE.value, progress=_Progress())
    _omg_report(summary)
    return
  raw_dir, prepared_dir = demo_omg.demo_omg_paths(data_dir, _SEED.value)
  if not omg_emotion.is_prepared(prepared_dir, kind) or _OVERWRITE.value:
    start = time.perf_counter()
    _say(f"writing demo OMG corpus (seed {_SEED.value}) to {raw_dir}")
    demo_omg.ensure_demo_omg_corpus(raw_dir, _SEED.value)
    _say(f"demo corpus ready in {time.perf_counter() - start:.1f} s")
  summary = omg_emotion.prepare(
      raw_dir, prepared_dir, audio_features=kind, workers=_WORKERS.value,
      overwrite=_OVERWRITE.value, progress=_Progress())
  _omg_report(summary)


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
    if _DATASET.value in ("omg", "demo_omg"):
      _prepare_omg(data_dir)
    else:
      _summary(_prepare(data_dir))
  except (DataError, _UsageError) as e:
    _cli.fail(str(e))
  except OSError as e:  # permissions, full disk, ...: name the path
    _cli.fail(f"{e.strerror or e}: {e.filename}" if e.filename else str(e))


if __name__ == "__main__":
  _cli.run_script(main, FLAGS)
