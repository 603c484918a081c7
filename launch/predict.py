r"""Predict arousal and valence over time with a trained run, target modality only.

  python launch/predict.py --workdir=runs/demo_emobed_audio_seed0 --input=me.wav
  python launch/predict.py --workdir=RUN --input=features_audio/arousal/dev_1.arff
  python launch/predict.py --workdir=RUN --input=FOLDER --output=predictions/

Loads the run's best checkpoint and training statistics
(emobed_jax.predict.load_predictor) and writes, per input, <name>.csv
(time_s,arousal,valence at 40 ms; the run's dimensions) and <name>.png
(the traces over time) into --output (default: next to the input).

Needs the audio extra (pip install -e ".[audio]": opensmile, matplotlib).
Inputs: a WAV (audio models; the RECOLA audio features are computed with
openSMILE, emobed_jax.features), a feature file in the corpus format (ARFF,
the run's modality and width; for a model trained on both variants side by
side, give the arousal-variant file features_<set>/arousal/<rec>.arff and its
valence/<rec>.arff sibling is read too), or a folder of them. Errors are one
"error: ..." line, exit 1 (2 for a malformed flag); nothing is half-written.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import _cli
from absl import flags

FLAGS = _cli.script_flags()
flags.DEFINE_string("workdir", "", "The run folder written by launch/train.py.",
                    flag_values=FLAGS)
flags.DEFINE_string("input", "", "A WAV file, a corpus-format feature file (.arff), or a "
                    "folder of them.", flag_values=FLAGS)
flags.DEFINE_string("output", "", "Folder for <name>.csv and <name>.png (default: the "
                    "input's folder).", flag_values=FLAGS)

WAV = (".wav",)
FEATURE_FILES = (".arff",)


class InputError(ValueError):
  """An input that cannot be predicted on; one line."""


def inputs(path: Path) -> list[Path]:
  """The files to predict on: ``path`` itself, or a folder's WAV/ARFF files
  (sorted; for a two-variant model, a folder of ARFFs is an arousal-variant
  folder ``features_<set>/arousal/``)."""
  if path.is_file():
    return [path]
  if path.is_dir():
    files = sorted(p for p in path.iterdir()
                   if p.is_file() and p.suffix.lower() in WAV + FEATURE_FILES)
    if not files:
      raise InputError(f"--input={path}: no .wav or .arff file in this folder")
    return files
  raise InputError(f"--input={path}: not found")


def features_for(path: Path, predictor) -> np.ndarray:  # noqa: F821
  """``[frames, target_dim]`` raw features of one input for ``predictor``'s run."""
  import numpy as np
  d = predictor.config.data
  want = predictor.config.core.task.target_dim
  variants = d.variants()
  if path.suffix.lower() in WAV:
    if d.feature_set("modality") != "audio":
      raise InputError(f"{path}: a WAV file, but this run's model takes {d.modality!r} "
                       "features; give it a feature file of that modality")
    from emobed_jax import features
    return features.audio_features(path, variants)
  if path.suffix.lower() not in FEATURE_FILES:
    raise InputError(f"{path}: expected a .wav or .arff file")
  from emobed_datasets.arff import read_arff
  from emobed_datasets.errors import DataError
  files = [path]
  if len(variants) > 1:
    if path.parent.name != variants[0]:
      raise InputError(
          f"{path}: this run's model takes the {' and '.join(variants)} variants side by "
          f"side ({want} columns); give the {variants[0]}-variant file "
          f"features_<set>/{variants[0]}/<rec>.arff (its {'/'.join(variants[1:])} "
          "sibling is read too)")
    files += [path.parent.parent / v / path.name for v in variants[1:]]
  parts = []
  for f in files:
    if not f.is_file():
      raise InputError(f"{f}: not found (the {f.parent.name}-variant sibling of {path})")
    try:
      parts.append(read_arff(f).data)
    except DataError as e:
      raise InputError(str(e)) from None
  if len({p.shape[0] for p in parts}) > 1:
    raise InputError(f"{path}: the variant files have {[p.shape[0] for p in parts]} rows; "
                     "expected the same number")
  x = np.concatenate(parts, axis=1).astype(np.float32)
  if x.shape[1] != want:
    raise InputError(
        f"{path}: {x.shape[1]} feature columns"
        f"{' over ' + str(len(files)) + ' variant files' if len(files) > 1 else ''}; "
        f"this run's {d.modality} model takes {want} ({len(variants)} variant(s) "
        f"{', '.join(variants)} of {want // len(variants)})")
  return x


def _atomic(path: Path, write) -> None:
  tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
  try:
    write(tmp)
    os.replace(tmp, path)
  finally:
    tmp.unlink(missing_ok=True)


def write_outputs(name: str, pred, out_dir: Path, predictor) -> tuple[Path, Path]:
  """``<name>.csv`` and ``<name>.png`` in ``out_dir`` (each written to a
  temporary name, then renamed; the CSV only once the plot exists)."""
  try:
    import matplotlib
  except ImportError:
    raise InputError('writing the plots needs matplotlib: pip install -e ".[audio]"') from None
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import numpy as np

  from emobed_jax.features import FRAME_S
  dims = predictor.dimensions
  t = np.arange(pred.shape[0]) * FRAME_S
  out_dir.mkdir(parents=True, exist_ok=True)
  csv, png = out_dir / f"{name}.csv", out_dir / f"{name}.png"
  cfg = predictor.config

  def plot(tmp):
    fig, ax = plt.subplots(figsize=(9, 3.2), dpi=100)
    for i, d in enumerate(dims):
      ax.plot(t, pred[:, i], label=d, lw=1.2)
    ax.axhline(0, color="0.6", lw=0.6)
    ax.set(xlabel="time (s)", ylabel="prediction", xlim=(0, max(t[-1], FRAME_S)),
           title=f"{name}: {cfg.core.task.setting} model, {cfg.data.modality} input "
                 f"({cfg.data.dataset})")
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(tmp, format="png")
    plt.close(fig)

  def table(tmp):
    rows = np.column_stack([t, pred])
    np.savetxt(tmp, rows, delimiter=",", fmt=["%.2f"] + ["%.6f"] * len(dims),
               header=",".join(("time_s",) + tuple(dims)), comments="")
  _atomic(png, plot)
  _atomic(csv, table)
  return csv, png


def main(argv: list[str]) -> None:
  _cli.start(argv, FLAGS)
  if not FLAGS.workdir or not FLAGS.input:
    _cli.fail("--workdir and --input are required (see --help)", 2)
  from emobed_jax import config as C
  from emobed_jax.features import AudioError
  from emobed_jax.predict import load_predictor
  from emobed_jax.workdir import RunError
  workdir = Path(FLAGS.workdir).expanduser()
  if not workdir.is_dir():
    _cli.fail(f"--workdir={workdir}: not found; expected a workdir written by launch/train.py")
  try:
    predictor = load_predictor(workdir)
    files = inputs(Path(FLAGS.input).expanduser())
  except (FileNotFoundError, RunError, C.ConfigError, InputError) as e:
    _cli.fail(e)
  except Exception as e:  # noqa: BLE001  (orbax: no or damaged checkpoint)
    _cli.fail(f"--workdir={workdir}: cannot restore the best checkpoint ({e})")
  import jax
  start = time.perf_counter()
  n = jax.local_device_count()  # one recording per device per call (predict_many)
  for g in range(0, len(files), n):
    group = files[g:g + n]
    try:
      feats = [features_for(f, predictor) for f in group]
      preds = (predictor.predict_many(feats, [str(f) for f in group]) if len(group) > 1
               else [predictor(feats[0])])
    except (InputError, AudioError, ValueError) as e:
      _cli.fail(e)
    except OSError as e:
      _cli.fail(f"{e.strerror or e}: {e.filename}" if e.filename else e)
    for i, (f, pred) in enumerate(zip(group, preds), g + 1):
      out_dir = Path(FLAGS.output).expanduser() if FLAGS.output else f.parent
      try:
        csv, png = write_outputs(f.stem, pred, out_dir, predictor)
      except OSError as e:
        _cli.fail(f"{e.strerror or e}: {e.filename}" if e.filename else e)
      _cli.say(f"[{i}/{len(files)}] {f.name}: {pred.shape[0]} frames -> {csv} and "
               f"{png.name} ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
  _cli.run_script(main, FLAGS)
