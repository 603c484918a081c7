r"""Predict emotion with a trained run, target modality only.

  python launch/predict.py --workdir=runs/demo_emobed_audio_seed0 --input=me.wav
  python launch/predict.py --workdir=RUN --input=features_audio/arousal/dev_1.arff
  python launch/predict.py --workdir=RUN --input=FOLDER --output=predictions/
  python launch/predict.py --workdir=runs/demo_omg_emobed_audio_seed0 --input=clip.mp4
  python launch/predict.py --workdir=runs/demo_omg_emobed_video_seed0 --input=clip.csv

Loads the run's best checkpoint and training statistics
(emobed_jax.predict.load_predictor) and writes, per input, into --output
(default: next to the input):
  RECOLA models: <name>.prediction.csv (time_s,arousal,valence at 40 ms; the
    run's dimensions) and <name>.prediction.png (the traces over time);
  OMG-Emotion models: <name>.prediction.csv, one row: the class, its name and
    the seven class probabilities (or arousal,valence for a regression model),
    and <name>.prediction.png (a bar chart of the probabilities).
  Outputs never take an input's name (a clip's OpenFace CSV beside it stays).

Needs the audio extra (pip install -e ".[audio]": opensmile, matplotlib).
Inputs:
  RECOLA audio models: a WAV (the AVEC 2016 audio features are computed with
    openSMILE, emobed_jax.features);
  RECOLA models: a feature file in the corpus format (ARFF, or CSV with a
    header, ';' or ',' separated, as AVEC later shipped them), the run's
    modality and width; for a model trained on both variants side by side,
    give the arousal-variant file features_<set>/arousal/<rec>.arff and its
    valence/<rec>.arff sibling is read too;
  OMG-Emotion audio models: a WAV, or a clip ffmpeg can read (.mp4 ...): the
    run's openSMILE features are computed from its sound track;
  OMG-Emotion video models: the clip's OpenFace 2.0 CSV (frames without a
    face are masked);
  or a folder of them (not recursive; for an OMG-Emotion model only the files
  of its modality; a progress line per input). Errors are one "error: ..."
line, exit 1 (2 for a malformed flag); nothing is half-written.
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
flags.DEFINE_string("input", "", "A WAV file, a corpus-format feature file (.arff/.csv), "
                    "a clip or OpenFace CSV (OMG-Emotion models), or a folder of them.",
                    flag_values=FLAGS)
flags.DEFINE_string("output", "", "Folder for <name>.prediction.csv and .png (default: the "
                    "input's folder).", flag_values=FLAGS)

WAV = (".wav",)
FEATURE_FILES = (".arff", ".csv")
CLIPS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4a", ".flac", ".mp3")
#: Feature-file columns that are not features (as the ARFF reader drops them).
_NOT_FEATURES = {"name", "instance_name", "frametime", "frame_time", "time"}


class InputError(ValueError):
  """An input that cannot be predicted on; one line."""


#: Suffix of what predict writes (``<name>.prediction.csv/.png``): never the
#: name of an input (an OpenFace CSV or a feature CSV beside it stays intact).
OUTPUT_SUFFIX = ".prediction"


def accepted(p: Path, predictor=None) -> bool:
  """Whether a folder's file ``p`` is an input for ``predictor``'s run: for an
  OMG-Emotion model only files of its modality (a folder of clips holds each
  clip's OpenFace CSV beside it), never predict's own outputs."""
  name = p.name.lower()
  if OUTPUT_SUFFIX + "." in name:
    return False
  suffix = p.suffix.lower()
  if predictor is not None and predictor.per_utterance:
    return suffix in ((".csv",) if predictor.config.data.modality == "video" else WAV + CLIPS)
  return suffix in WAV + FEATURE_FILES


def inputs(path: Path, predictor=None) -> list[Path]:
  """The files to predict on: ``path`` itself, or a folder's input files
  (:func:`accepted`, sorted; for a two-variant model, a folder of ARFFs is an
  arousal-variant folder ``features_<set>/arousal/``)."""
  if path.is_file():
    if OUTPUT_SUFFIX + "." in path.name.lower():
      raise InputError(f"--input={path}: this is a prediction written by predict.py")
    return [path]
  if path.is_dir():
    files = sorted(p for p in path.iterdir() if p.is_file() and accepted(p, predictor))
    if not files:
      what = (("OpenFace .csv" if predictor.config.data.modality == "video"
               else ".wav or clip") if predictor is not None and predictor.per_utterance
              else ".wav, .arff or .csv")
      raise InputError(f"--input={path}: no {what} file in this folder (not searched "
                       "recursively)")
    return files
  raise InputError(f"--input={path}: not found")


def read_feature_csv(path: Path):
  """A feature CSV with a header row (``;`` or ``,`` separated): the numeric
  columns other than name/time columns, ``[rows, D]`` float32.  Kept here
  (not a library) because it is a dozen lines over the csv module."""
  import csv

  import numpy as np
  try:
    text = path.read_text(encoding="utf-8-sig")
  except (OSError, UnicodeDecodeError) as e:
    raise InputError(f"{path}: cannot read as UTF-8 text ({e})") from None
  lines = [ln for ln in text.splitlines() if ln.strip()]
  if len(lines) < 2:
    raise InputError(f"{path}: expected a header row and at least one row of features")
  sep = ";" if lines[0].count(";") > lines[0].count(",") else ","
  rows = list(csv.reader(lines, delimiter=sep, skipinitialspace=True))
  header = [h.strip().strip("'\"") for h in rows[0]]
  keep = [i for i, h in enumerate(header) if h.lower() not in _NOT_FEATURES]
  out = np.empty((len(rows) - 1, len(keep)), np.float32)
  for r, row in enumerate(rows[1:]):
    if len(row) != len(header):
      raise InputError(f"{path}:{r + 2}: {len(row)} fields; the header has {len(header)}")
    try:
      out[r] = [float(row[i]) for i in keep]
    except ValueError:
      raise InputError(f"{path}:{r + 2}: a feature value is not a number") from None
  if not np.all(np.isfinite(out)):
    raise InputError(f"{path}: NaN or inf feature values")
  return out


def utterance_features_for(path: Path, predictor):
  """``([frames, target_dim], [frames] mask)`` of one input for an
  OMG-Emotion (utterance) model."""
  d = predictor.config.data
  suffix = path.suffix.lower()
  if d.modality == "audio":
    if suffix not in WAV + CLIPS:
      raise InputError(f"{path}: this run's model takes audio; give a WAV or a clip "
                       f"({', '.join(CLIPS)}) whose sound track ffmpeg can read")
    from emobed_jax import features
    try:
      x, _, _ = features.utterance_features(path, d.omg_audio_features)
    except FileNotFoundError as e:
      raise InputError(f"{path}: reading a clip's sound track needs ffmpeg "
                       f"(apt-get install ffmpeg), not found ({e.filename})") from None
    return x, None
  if suffix != ".csv":
    raise InputError(f"{path}: this run's model takes video: give the clip's OpenFace 2.0 "
                     "CSV (FeatureExtraction output)")
  from emobed_datasets.errors import DataError
  from emobed_datasets.omg_emotion import readers
  try:
    face = readers.read_openface(path)
  except DataError as e:
    raise InputError(str(e)) from None
  return face.features, face.mask


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
    raise InputError(f"{path}: expected a .wav, .arff or .csv file")
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
    if f.suffix.lower() == ".csv":
      parts.append(read_feature_csv(f))
      continue
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
  csv, png = (out_dir / f"{name}{OUTPUT_SUFFIX}.csv", out_dir / f"{name}{OUTPUT_SUFFIX}.png")
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


def summary(pred, predictor) -> str:
  """``"Happy (p 0.71)"`` or ``"arousal 0.41 valence -0.10"``."""
  cfg = predictor.config
  if cfg.core.task.task == "classification":
    from emobed_datasets.omg_emotion import CLASS_NAMES
    return f"{CLASS_NAMES[int(pred.argmax())]} (p {float(pred.max()):.2f})"
  return " ".join(f"{d} {v:.2f}" for d, v in zip(cfg.data.dimensions, pred))


def write_utterance_outputs(name: str, pred, out_dir: Path, predictor) -> tuple[Path, Path]:
  """OMG-Emotion models: ``<name>.csv`` (one row) and ``<name>.png`` (class
  probabilities as bars, or the arousal/valence values), written atomically."""
  try:
    import matplotlib
  except ImportError:
    raise InputError('writing the plots needs matplotlib: pip install -e ".[audio]"') from None
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  cfg = predictor.config
  classification = cfg.core.task.task == "classification"
  if classification:
    from emobed_datasets.omg_emotion import CLASS_NAMES
    labels = list(CLASS_NAMES)
  else:
    labels = list(cfg.data.dimensions)
  out_dir.mkdir(parents=True, exist_ok=True)
  csv, png = (out_dir / f"{name}{OUTPUT_SUFFIX}.csv", out_dir / f"{name}{OUTPUT_SUFFIX}.png")
  best = int(pred.argmax())

  def plot(tmp):
    fig, ax = plt.subplots(figsize=(7, 3.4), dpi=100)
    colors = ["tab:orange" if i == best and classification else "tab:blue"
              for i in range(len(labels))]
    ax.bar(labels, pred, color=colors)
    for i, v in enumerate(pred):
      ax.text(i, v, f"{v:.2f}", ha="center", va="bottom", fontsize=8)
    ax.set(ylabel="probability" if classification else "prediction",
           ylim=(0, 1.08) if classification else None,
           title=f"{name}: {cfg.core.task.setting} model, {cfg.data.modality} input "
                 f"({cfg.data.dataset})" + (f" -> {labels[best]}" if classification else ""))
    fig.tight_layout()
    fig.savefig(tmp, format="png")
    plt.close(fig)

  def table(tmp):
    if classification:
      head = "input,class,class_name," + ",".join(f"p_{n}" for n in labels)
      row = f"{name},{best},{labels[best]}," + ",".join(f"{v:.6f}" for v in pred)
    else:
      head = "input," + ",".join(labels)
      row = f"{name}," + ",".join(f"{v:.6f}" for v in pred)
    Path(tmp).write_text(head + "\n" + row + "\n")
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
  if not Path(FLAGS.input).expanduser().exists():  # before the (slow) checkpoint restore
    _cli.fail(f"--input={Path(FLAGS.input).expanduser()}: not found")
  try:
    predictor = load_predictor(workdir)
    files = inputs(Path(FLAGS.input).expanduser(), predictor)
  except (FileNotFoundError, RunError, C.ConfigError, InputError) as e:
    _cli.fail(e)
  except Exception as e:  # noqa: BLE001  (orbax: no or damaged checkpoint)
    _cli.fail(f"--workdir={workdir}: cannot restore the best checkpoint ({e})")
  import jax
  start = time.perf_counter()
  # Recordings go one per local device per call (Predictor.predict_many);
  # utterance models one file at a time.
  n = 1 if predictor.per_utterance else jax.local_device_count()
  for g in range(0, len(files), n):
    group = files[g:g + n]
    done = []   # (file, csv, png, what)
    f = group[0]
    try:
      if predictor.per_utterance:
        out_dir = Path(FLAGS.output).expanduser() if FLAGS.output else f.parent
        x, mask = utterance_features_for(f, predictor)
        pred = predictor.predict_utterance(x, mask)
        csv, png = write_utterance_outputs(f.stem, pred, out_dir, predictor)
        done.append((f, csv, png, f"{x.shape[0]} frames, {summary(pred, predictor)}"))
      else:
        feats = []
        for f in group:
          feats.append(features_for(f, predictor))
        preds = (predictor.predict_many(feats, [str(x) for x in group]) if len(group) > 1
                 else [predictor(feats[0])])
        for f, pred in zip(group, preds):
          out_dir = Path(FLAGS.output).expanduser() if FLAGS.output else f.parent
          csv, png = write_outputs(f.stem, pred, out_dir, predictor)
          done.append((f, csv, png, f"{pred.shape[0]} frames"))
    except (InputError, AudioError, ValueError) as e:
      _cli.fail(e if any(str(x) in str(e) for x in group) else f"{f}: {e}")
    except OSError as e:
      _cli.fail(f"{e.strerror or e}: {e.filename}" if e.filename else e)
    for i, (f, csv, png, what) in enumerate(done, g + 1):
      eta = (time.perf_counter() - start) / i * (len(files) - i)
      _cli.say(f"[{i}/{len(files)}] {f.name}: {what} -> {csv} and {png} "
               f"({time.perf_counter() - start:.1f} s, ETA {_cli.fmt_seconds(eta)})")


if __name__ == "__main__":
  _cli.run_script(main, FLAGS)
