r"""Re-evaluate a saved run's best checkpoint on a split.

  python launch/evaluate.py --workdir=runs/demo_emobed_audio_seed0              # dev
  python launch/evaluate.py --workdir=runs/demo_emobed_audio_seed0 --split=test
  python launch/evaluate.py --workdir=runs/demo_omg_emobed_audio_seed0 --split=validation

OMG-Emotion runs (--split=validation or test, default test): accuracy, macro
F1, UAR and the confusion matrix over the split's utterances through
emobed_jax.evaluate.evaluate_utterances, written to <workdir>/eval_<split>.json
in the results.json format.

--split=dev: the target branch's CCCs on whole dev recordings through
emobed_jax.evaluate.evaluate_recordings, the code that ends training, written
to <workdir>/eval_dev.json in the results.json format (the same numbers as
results.json when its eval_split is dev). --split=test (RECOLA test labels
were never released): predictions in the AVEC 2016 submission layout, one
ARFF per recording and dimension, <workdir>/predictions_test/<dimension>/
<rec>.arff (Instance_name, frameTime, prediction), listed in eval_test.json.
The prepared data is read from the run's --data_dir, or from --data_dir here.
On CPU it runs on as many host devices as the run did (results.json), which
makes the dev numbers identical to the digit.
Errors are one "error: ..." line, exit 1 (2 for a malformed flag).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import _cli
from absl import flags

FLAGS = _cli.script_flags()
flags.DEFINE_string("workdir", "", "The run folder written by launch/train.py.",
                    flag_values=FLAGS)
flags.DEFINE_enum("split", None, ["dev", "test", "validation"], "Split to evaluate on "
                  "(default: dev for RECOLA runs, test for OMG-Emotion runs).",
                  flag_values=FLAGS)
flags.DEFINE_string("data_dir", "", "Prepared data (default: the run's own).",
                    flag_values=FLAGS)


def evaluate(workdir: Path, split: str, data_dir: str = "") -> dict:
  """Evaluate ``workdir``'s best checkpoint on ``split``; returns what was
  written to ``eval_<split>.json``."""
  import functools

  import jax
  import numpy as np
  from emobed_datasets.arff import write_arff

  from emobed_jax import checkpoint, input_pipeline, parallel, run_data, train, writers
  from emobed_jax import evaluate as ev
  from emobed_jax import workdir as wd

  for name in (wd.CONFIG, wd.STATS):
    if not (workdir / name).is_file():
      raise wd.RunError(f"{workdir / name}: not found; expected a workdir written by "
                        "launch/train.py")
  if not wd.has_checkpoint(workdir):
    raise wd.RunError(f"--workdir={workdir}: no checkpoint yet")
  config = wd.read_config(workdir)
  if data_dir:
    config = dataclasses.replace(config, data=dataclasses.replace(config.data,
                                                                  data_dir=data_dir))
  utt = config.data.utterances
  if utt and split not in ("validation", "test"):
    raise wd.RunError(f"--split={split}: an OMG-Emotion run is evaluated on validation or test")
  if not utt and split not in ("dev", "test"):
    raise wd.RunError(f"--split={split}: a RECOLA run is evaluated on dev (or test, "
                      "predictions only)")
  config = dataclasses.replace(config, data=dataclasses.replace(
      config.data, eval_split=split if utt else "dev")).validate()
  data = run_data.load_run_data(config, wd.read_stats(workdir))
  config = data.config
  model, template = train.create_train_state(config.core, jax.random.key(config.seed))
  ckpt = checkpoint.Checkpointer(workdir / "checkpoints", async_save=False)
  try:
    best, best_meta = ckpt.restore(template, best=True)
    latest_meta = ckpt.restore(template)[1]
  finally:
    ckpt.close()
  p_eval = parallel.pmap_eval_step(functools.partial(train.eval_step, model=model))
  params = parallel.replicate(best.params)
  n_dev = jax.local_device_count()
  dcfg = config.data
  if utt:
    from emobed_datasets.omg_emotion import CLASS_NAMES
    final = ev.evaluate_utterances(p_eval, params, data.eval, config, n_dev,
                                   where="the best checkpoint")
    val = ev.evaluate_utterances(p_eval, params, data.val, config, n_dev,
                                 where="the best checkpoint")
    results = wd.finished_results(workdir) or {}
    record = ev.utterance_results_record(
        config, final, val, majority_class=data.majority_class, class_names=CLASS_NAMES,
        counts=data.counts, selection_split=data.selection_split, best_meta=best_meta,
        latest_meta=latest_meta, total_steps=results.get("total_steps"),
        devices=jax.device_count(), processes=jax.process_count(),
        provenance=wd.provenance(data.source), manifest=data.source.get("manifest"))
  elif split == "dev":
    final = ev.evaluate_recordings(p_eval, params, data.eval, data.full_eval_labels, dcfg,
                                   n_dev, where="the best checkpoint")
    results = wd.finished_results(workdir) or {}
    record = ev.results_record(
        config, final, selection_split=data.selection_split, best_meta=best_meta,
        latest_meta=latest_meta, total_steps=results.get("total_steps"),
        devices=jax.device_count(), processes=jax.process_count(),
        provenance=wd.provenance(data.source))
  else:
    tfds_dir = input_pipeline.resolve_prepared_dir(dcfg)
    std = input_pipeline.Standardizer.from_json(data.stats["standardizer"])
    raw = input_pipeline.load_recordings(tfds_dir, "test", dcfg, with_aux=False,
                                         with_labels=False)
    recs = [input_pipeline.align(std.apply(r), dcfg.delay_frames, dcfg.frame_step)
            for r in raw]
    arrays = input_pipeline.eval_arrays(recs, n_dev)
    preds = np.asarray(p_eval(params, arrays["target"], arrays["mask"]))
    preds = preds.reshape((-1,) + preds.shape[2:])
    out = workdir / "predictions_test"
    tmp = workdir / f".predictions_test.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    files = {}
    try:
      for i, (r, full) in enumerate(zip(recs, raw)):
        n = full.target.shape[0]
        p = input_pipeline.upsample(preds[i, :r.num_frames], dcfg.frame_step, n)
        if not np.all(np.isfinite(p)):
          raise FloatingPointError(f"the predictions for recording {r.name} are NaN or inf")
        for j, dim in enumerate(dcfg.dimensions):
          write_arff(tmp / dim / f"{r.name}.arff", "PREDICTION", ["prediction"], p[:, j:j + 1],
                     instance_name=r.name, frame_time=np.arange(n) * 0.04)
          files.setdefault(dim, []).append(f"predictions_test/{dim}/{r.name}.arff")
      shutil.rmtree(out, ignore_errors=True)
      os.replace(tmp, out)
    finally:
      shutil.rmtree(tmp, ignore_errors=True)
    record = {"dataset": dcfg.dataset, "setting": config.core.task.setting,
              "modality": dcfg.modality, "eval_split": "test", "seed": config.seed,
              "best_step": best_meta["best_step"], "predictions": files,
              "provenance": wd.provenance(data.source)}
  writers.write_json(workdir / f"eval_{split}.json", record)
  return record


def host_devices(workdir: Path) -> None:
  """On CPU, evaluate on as many host devices as the run did (results.json's
  ``devices``): the evaluation batch is split over them, and XLA's CPU
  kernels round differently for other batch shapes (about 1e-8), so the same
  count gives the same digits.  Only effective before JAX starts (the
  command line); a test process keeps its devices."""
  try:
    devices = int(json.loads((workdir / "results.json").read_text())["devices"])
  except (OSError, ValueError, KeyError, TypeError):
    return
  flag = "--xla_force_host_platform_device_count"
  if flag not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + f" {flag}={devices}").strip()


def main(argv: list[str]) -> None:
  _cli.start(argv, FLAGS)
  if not FLAGS.workdir:
    _cli.fail("--workdir is required (see --help)", 2)
  from emobed_datasets.errors import DataError

  from emobed_jax import config as C
  from emobed_jax.workdir import RunError
  workdir = Path(FLAGS.workdir).expanduser()
  if not workdir.is_dir():
    _cli.fail(f"--workdir={workdir}: not found; expected a workdir written by launch/train.py")
  host_devices(workdir)
  split = FLAGS.split
  if split is None:
    try:
      split = "test" if json.loads((workdir / "config.json").read_text())["data"][
          "dataset"] in ("omg", "demo_omg") else "dev"
    except (OSError, ValueError, KeyError, TypeError):
      split = "dev"  # evaluate() names what is missing
  try:
    r = evaluate(workdir, split, FLAGS.data_dir)
  except (DataError, C.ConfigError, RunError, FloatingPointError) as e:
    _cli.fail(e)
  except OSError as e:
    _cli.fail(f"{e.strerror or e}: {e.filename}" if e.filename else e)
  if "metrics" in r:
    m = " ".join(f"{k} {v:.3f}" for k, v in r["metrics"].items())
    g = r.get("ccc_granularity") or r.get("metric_granularity")
    _cli.say(f"{r['setting']} {r['modality']} -> {split} ({g}): {m}; "
             f"best step {r['best_step']}; {workdir / f'eval_{split}.json'}")
  else:
    n = sum(len(v) for v in r["predictions"].values())
    _cli.say(f"{n} prediction files under {workdir / 'predictions_test'}; "
             f"{workdir / 'eval_test.json'}")


if __name__ == "__main__":
  _cli.run_script(main, FLAGS)
