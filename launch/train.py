r"""Train EmoBed (or one of its ablations) and evaluate the best checkpoint.

  python launch/train.py --flagfile=demo.flags                    # demo corpus
  python launch/train.py --modality=audio --flagfile=recola.flags  # real RECOLA

A bare ``--flagfile=NAME`` that is not in the working directory is read from
``launch/``.  Later flags override earlier ones (put ``--modality`` after the
flagfile to override it there).  The workdir (``--workdir``, default
``runs/<dataset>_<setting>_<modality>_seed<seed>``) receives config.json,
stats.json, metrics.jsonl, tensorboard/, checkpoints/ and results.json.
Running the same command again resumes; a finished run is not redone.

This file is intentionally thin: it maps flags to a typed config and calls
``emobed_jax.train.train_and_evaluate``.  JAX is imported only after the
flags are parsed, so that ``--cpu_devices`` can set up the host devices.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parents[1]
# `python launch/train.py` must not make ./datasets shadow Hugging Face's
# `datasets`: drop the repo root from sys.path (our builders are `emobed_datasets`).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _REPO_ROOT]

from absl import app, flags, logging  # noqa: E402

F = flags
# Data.
F.DEFINE_enum("dataset", "demo", ["recola", "demo"], "Corpus: real RECOLA or the generated demo.")
F.DEFINE_string("data_dir", "", "Prepared data. Default: $EMOBED_DATA_DIR, else ~/emobed_data.")
F.DEFINE_string("manual_dir", "", "recola: the unpacked AVEC 2016 package (default: $RECOLA_DIR).")
F.DEFINE_integer("demo_seed", 0, "demo: corpus seed.")
F.DEFINE_string("modality", "audio", "Target (inference) modality: audio, video, or a RECOLA "
                "feature set (video_appearance, video_geometric, ecg, hrhrv, eda, scl, scr).")
F.DEFINE_string("aux_modality", "", "Auxiliary (training-only) modality. Default: video for "
                "an audio target, audio otherwise.")
F.DEFINE_list("dimensions", ["arousal", "valence"], "Emotion dimensions to predict.")
F.DEFINE_enum("feature_variant", "auto", ["auto", "arousal", "valence", "concat"],
              "Which RECOLA feature variant: auto = matching one, both for 2 dimensions.")
F.DEFINE_integer("window", 300, "Training window length in frames (40 ms each).")
F.DEFINE_integer("hop", 50, "Hop between training windows in frames.")
F.DEFINE_integer("frame_step", 1, "Keep every k-th frame.")
F.DEFINE_float("delay_s", 2.0, "Label delay compensation in seconds.")
F.DEFINE_integer("val_recordings", 2, "Train recordings held out for model selection "
                 "(0 = select on the evaluation split).")
F.DEFINE_enum("eval_split", "dev", ["dev"], "Split of the final metrics.")
# Setting and losses.
F.DEFINE_enum("setting", "emobed", ["mono", "joint", "crossmodal", "emobed"], "Training setting.")
F.DEFINE_float("lambda_aux", 1.0, "Weight of the auxiliary task loss (joint, emobed).")
F.DEFINE_float("lambda_tri", 1.0, "Weight of the triplet loss (crossmodal, emobed).")
F.DEFINE_float("margin", 0.2, "Triplet margin (squared L2 on unit vectors).")
F.DEFINE_enum("mining", "batch_hard", ["batch_all", "batch_hard", "semi_hard"], "Triplet mining.")
F.DEFINE_bool("symmetric", True, "Also use auxiliary embeddings as anchors.")
F.DEFINE_integer("num_bins", 3, "Quantile bins per dimension defining 'same emotion'.")
F.DEFINE_integer("triplet_segment", 50, "Frames pooled into one embedding.")
# Model.
F.DEFINE_enum("rnn", "lstm", ["lstm", "gru"], "Recurrent cell.")
F.DEFINE_integer("num_layers", 2, "Recurrent layers per encoder.")
F.DEFINE_integer("hidden", 64, "Recurrent width.")
F.DEFINE_integer("proj_dim", 64, "Input projection width.")
F.DEFINE_float("dropout", 0.0, "Dropout after each recurrent layer.")
F.DEFINE_integer("head_hidden", 32, "Hidden width of the head.")
F.DEFINE_integer("embed_dim", 32, "Embedding width.")
F.DEFINE_integer("unroll", 1, "Unrolling of the recurrence scan (scan and wavefront impls).")
F.DEFINE_enum("rnn_impl", "auto", ["auto", "scan", "pallas", "wavefront"],
              "How the LSTM recurrence runs (same values and parameters either way): "
              "auto = pallas on a GPU (one Pallas kernel per pass), scan elsewhere; "
              "see PERF_NOTES.md.")
# Optimisation and loop.
F.DEFINE_enum("optimizer", "adam", ["adam", "adamw", "sgd"], "Optimiser.")
F.DEFINE_float("learning_rate", 1e-3, "Learning rate.")
F.DEFINE_float("clip_norm", 1.0, "Global gradient-norm clipping (0 = off).")
F.DEFINE_float("weight_decay", 0.0, "adamw weight decay.")
F.DEFINE_integer("batch_size", 32, "Global batch size (windows).")
F.DEFINE_integer("epochs", 30, "Epochs.")
F.DEFINE_integer("seed", 0, "Seed of initialisation, data order and dropout.")
F.DEFINE_integer("log_every", 10, "Steps between progress lines.")
F.DEFINE_string("workdir", "", "Run folder (default runs/<dataset>_<setting>_<modality>_seed<seed>).")
F.DEFINE_bool("malloc_tuning", True, "Keep freed memory in the process (glibc mallopt): "
              "avoids page-faulting the step's buffers in again every step (PERF_NOTES.md).")
F.DEFINE_integer("cpu_devices", 0, "Host (CPU) devices to run pmap over; 0 = one per core "
                 "(at most, dividing --batch_size). Ignored on GPU/TPU.")

FLAGS = F.FLAGS


def _resolve_flagfiles(argv: list[str]) -> list[str]:
  """``--flagfile=NAME`` -> ``launch/NAME`` when NAME is not in the cwd."""
  out = []
  for a in argv:
    if a.startswith("--flagfile="):
      name = a.split("=", 1)[1]
      if not Path(name).exists() and (Path(__file__).parent / name).exists():
        a = f"--flagfile={Path(__file__).parent / name}"
    out.append(a)
  return out


def _say(msg: str) -> None:
  print(msg, flush=True)


def _fmt_seconds(s: float | None) -> str:
  if s is None:
    return "?"
  s = int(s)
  return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _reporter():
  def report(kind: str, info: dict) -> None:
    if kind == "data":
      _say(f"data: {info['train']} train / {info['val']} validation / {info['eval']} "
           f"evaluation recordings, {info['windows']} windows, {info['steps_per_epoch']} "
           f"steps/epoch, {info['total_steps']} steps on {info['devices']} devices "
           f"(ready in {info['seconds']:.1f} s); model selection on {info['selection_split']}")
    elif kind == "resume":
      _say(f"resuming from step {info['step']} (best so far: step {info['best_step']})")
    elif kind == "train":
      _say(f"step {info['step']}/{info['total_steps']} epoch {info['epoch']:.1f} "
           f"loss {info['loss']:.4f} (target {info['task_target']:.4f} aux {info['task_aux']:.4f} "
           f"triplet {info['triplet']:.4f}) {info['steps_per_second']:.1f} steps/s "
           f"ETA {_fmt_seconds(info['eta_seconds'])}")
    elif kind == "eval":
      dims = " ".join(f"{k} {v:.3f}" for k, v in info.items() if k.startswith("ccc_"))
      _say(f"validation after epoch {info['epoch']}: {dims}{' (best)' if info['is_best'] else ''}")
    elif kind == "done":
      r = info["results"]
      m = " ".join(f"{k} {v:.3f}" for k, v in r["metrics"].items())
      what = "already finished" if info["already"] else "finished"
      _say(f"{what}: {r['setting']} {r['modality']} -> {r['eval_split']} "
           f"({r['ccc_granularity']}): {m}; best step {r['best_step']}")
  return report


def build_config():
  from emobed_jax import config as C
  modality = FLAGS.modality
  aux = FLAGS.aux_modality or ("video" if modality == "audio" else "audio")
  data = C.DataConfig(
      dataset=FLAGS.dataset, data_dir=FLAGS.data_dir, manual_dir=FLAGS.manual_dir,
      demo_seed=FLAGS.demo_seed, modality=modality, aux_modality=aux,
      dimensions=tuple(FLAGS.dimensions), feature_variant=FLAGS.feature_variant,
      window=FLAGS.window, hop=FLAGS.hop, frame_step=FLAGS.frame_step, delay_s=FLAGS.delay_s,
      val_recordings=FLAGS.val_recordings, eval_split=FLAGS.eval_split)
  core = C.CoreConfig(
      task=C.TaskConfig(setting=FLAGS.setting, num_outputs=len(FLAGS.dimensions)),
      model=C.ModelConfig(rnn=FLAGS.rnn, num_layers=FLAGS.num_layers, hidden=FLAGS.hidden,
                          proj_dim=FLAGS.proj_dim, dropout=FLAGS.dropout,
                          head_hidden=FLAGS.head_hidden, embed_dim=FLAGS.embed_dim,
                          unroll=FLAGS.unroll, rnn_impl=FLAGS.rnn_impl),
      loss=C.LossConfig(lambda_aux=FLAGS.lambda_aux, lambda_tri=FLAGS.lambda_tri,
                        margin=FLAGS.margin, mining=FLAGS.mining, symmetric=FLAGS.symmetric,
                        num_bins=FLAGS.num_bins, triplet_segment=FLAGS.triplet_segment),
      optim=C.OptimConfig(optimizer=FLAGS.optimizer, learning_rate=FLAGS.learning_rate,
                          clip_norm=FLAGS.clip_norm, weight_decay=FLAGS.weight_decay))
  run = C.RunConfig(core=core, data=data, batch_size=FLAGS.batch_size, epochs=FLAGS.epochs,
                    seed=FLAGS.seed, log_every=FLAGS.log_every)
  return run.validate()


def default_workdir(cfg) -> Path:
  d = cfg.data
  return Path("runs") / f"{d.dataset}_{cfg.core.task.setting}_{d.modality}_seed{cfg.seed}"


def _auto_cpu_devices(cores: int, batch_size: int) -> int:
  """One host device per core (the recurrence is latency-bound per core),
  reduced to the largest count that divides the batch."""
  return max(n for n in range(1, max(cores, 1) + 1) if batch_size % n == 0)


def _fail(msg: str, code: int = 1) -> None:
  print("error: " + " ".join(str(msg).split()), file=sys.stderr, flush=True)
  sys.exit(code)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    _fail(f"unexpected arguments {' '.join(argv[1:])!r} (flags are written --name=value)", 2)
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  cores = FLAGS.cpu_devices or _auto_cpu_devices(os.cpu_count() or 1, FLAGS.batch_size)
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + f" --xla_force_host_platform_device_count={cores}").strip()
  from emobed_jax.hostenv import configure_malloc
  configure_malloc(FLAGS.malloc_tuning)  # before JAX starts its threads
  from emobed_datasets.errors import DataError
  from emobed_jax.config import ConfigError
  from emobed_jax.train import RunError, train_and_evaluate

  try:
    cfg = build_config()
  except ConfigError as e:
    _fail(e)
  workdir = Path(FLAGS.workdir) if FLAGS.workdir else default_workdir(cfg)
  _say(f"emobed-jax: {cfg.core.task.setting} on {cfg.data.dataset}, target {cfg.data.modality}"
       f"{'' if cfg.core.task.setting == 'mono' else ', auxiliary ' + cfg.data.aux_modality}; "
       f"workdir {workdir}")
  start = time.perf_counter()
  try:
    train_and_evaluate(cfg, workdir, report=_reporter())
  except (DataError, ConfigError, RunError) as e:
    _fail(e)
  except FloatingPointError as e:
    _fail(e)
  _say(f"results: {workdir / 'results.json'} (wall time {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
  sys.argv = _resolve_flagfiles(sys.argv)
  app.run(main)
