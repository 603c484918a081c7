"""Evaluation of the target branch, and ``results.json``.

Recordings (RECOLA, demo): every number is a CCC
(:func:`emobed_jax.metrics.ccc`, population moments, Lin 1989) of
predictions against the gold standard at the full frame rate, named with its
granularity: ``concatenated`` (all recordings of a split joined, the AVEC
2016 convention) or ``per_recording`` (one CCC per recording;
``per_recording_mean`` is their mean).

Utterances (OMG-Emotion, demo_omg): classification is scored with accuracy,
macro F1 and unweighted average recall (UAR, the mean of the per-class
recalls: the metric that does not reward predicting the majority class) from
one confusion matrix over the split's utterances; utterance-level regression
with CCC over the utterances (granularity ``utterance``, as the OMG-Emotion
challenge scored arousal and valence).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np

from emobed_jax import input_pipeline, metrics, utterances
from emobed_jax.config import DataConfig, RunConfig


def dims_metrics(values: Any, dims: Sequence[str]) -> dict[str, float]:
  """``[D]`` CCCs -> ``{"ccc_<dim>": ..., "ccc_mean": ...}`` (Python floats)."""
  out = {f"ccc_{d}": float(v) for d, v in zip(dims, np.atleast_1d(values))}
  out["ccc_mean"] = float(np.mean(np.atleast_1d(values)))
  return out


def evaluate_recordings(p_eval: Callable, params: Any, recordings: Sequence[Any],
                        full_labels: Mapping[str, np.ndarray], data_cfg: DataConfig,
                        num_devices: int, where: str = "",
                        arrays: Mapping[str, np.ndarray] | None = None) -> dict[str, Any]:
  """CCC of the target branch on whole recordings, both granularities.

  Args:
    p_eval: pmapped :func:`emobed_jax.train.eval_step`
      ``(params, target [n_dev, b, T, F], mask [n_dev, b, T]) -> [n_dev, b, T, D]``.
    params: the (replicated) parameters; only the target branch is used.
    recordings: aligned (delayed, subsampled) recordings, each with
      ``target [frames, F] float32``.
    full_labels: ``{name: [N, D] float32}`` gold standard at the full frame
      rate (40 ms frames for RECOLA); predictions are upsampled to ``N``.
    data_cfg: gives ``dimensions`` (names of the D outputs) and ``frame_step``.
    num_devices: local devices ``p_eval`` maps over.
    where: what is evaluated, for the error message (e.g. ``"step 40"``).
    arrays: :func:`emobed_jax.input_pipeline.eval_arrays` of ``recordings``
      made once by a caller that evaluates them again, or None.

  Returns:
    ``{"concatenated": {...}, "per_recording_mean": {...}, "per_recording":
    {name: {...}}}`` with ``ccc_<dim>`` and ``ccc_mean`` entries (floats).

  Raises:
    KeyError: a recording has no entry in ``full_labels``.
    FloatingPointError: a prediction on a real frame is NaN or inf (names
      the recording and ``where``).
  """
  if arrays is None:
    arrays = input_pipeline.eval_arrays(recordings, num_devices)
  preds = np.asarray(p_eval(params, arrays["target"], arrays["mask"]))
  preds = preds.reshape((-1,) + preds.shape[2:])
  for i, rec in enumerate(recordings):
    if not np.all(np.isfinite(preds[i, :rec.num_frames])):
      raise FloatingPointError(
          f"the predictions for recording {rec.name} became NaN or inf"
          f"{' at ' + where if where else ''}; try a lower --learning_rate or --clip_norm")
  by_name = {}
  for i, rec in enumerate(recordings):
    y = full_labels[rec.name]
    by_name[rec.name] = input_pipeline.upsample(preds[i, :rec.num_frames],
                                                data_cfg.frame_step, y.shape[0])
  dims = data_cfg.dimensions
  conc = metrics.ccc_by_recording(by_name, full_labels, "concatenated")
  per = metrics.ccc_by_recording(by_name, full_labels, "per_recording")
  return {"concatenated": dims_metrics(conc.value, dims),
          "per_recording_mean": dims_metrics(per.value, dims),
          "per_recording": {k: dims_metrics(v, dims) for k, v in per.per_recording.items()}}


def results_record(config: Any, final: Mapping[str, Any], *, selection_split: str,
                   best_meta: Mapping[str, Any], latest_meta: Mapping[str, Any],
                   total_steps: int, devices: int, processes: int,
                   provenance: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """The content of ``results.json`` (docs/DESIGN.md, run contract).

  ``final``: :func:`evaluate_recordings` of the best checkpoint on the
  evaluation split; ``best_meta``/``latest_meta``: the JSON metadata saved
  with the best and the latest checkpoint; ``provenance``: the project's
  version and the data source (:func:`emobed_jax.workdir.provenance`).
  """
  dcfg, task = config.data, config.core.task
  return {
      "dataset": dcfg.dataset, "task": task.task, "setting": task.setting,
      "modality": dcfg.modality,
      "aux_modality": dcfg.aux_modality if task.parts["aux"] else None,
      "eval_split": dcfg.eval_split, "seed": config.seed, "best_step": best_meta["best_step"],
      "metrics": final["concatenated"], "ccc_granularity": "concatenated",
      "metrics_per_recording_mean": final["per_recording_mean"],
      "per_recording": final["per_recording"],
      "selection": {"split": selection_split,
                    "best_val_ccc_mean": best_meta["best_score"]},
      "train_seconds": latest_meta.get("train_seconds"),
      "steps_per_second": latest_meta.get("steps_per_second"),
      "skipped_nonfinite": latest_meta.get("skipped_nonfinite", 0),
      "total_steps": total_steps, "devices": devices, "processes": processes,
      "provenance": dict(provenance or {}),
  }


def utterance_predictions(p_eval: Callable, params: Any, utts: Sequence[Any], num_devices: int,
                          num_buckets: int, where: str = "", chunks: Sequence | None = None
                          ) -> np.ndarray:
  """Target-branch outputs per utterance: ``[U, C]`` logits or ``[U, D]`` values.

  ``chunks``: :func:`emobed_jax.utterances.eval_batches` of ``utts`` made
  once by a caller that evaluates the same split again (every validation),
  or None to make them here.

  Raises:
    FloatingPointError: an output is NaN or inf (names the utterance and ``where``).
  """
  out = None
  if chunks is None:
    chunks = utterances.eval_batches(utts, num_devices, num_buckets)
  for idx, arrays in chunks:
    pred = np.asarray(p_eval(params, arrays["target"], arrays["mask"]))
    pred = pred.reshape((-1,) + pred.shape[2:])[:len(idx)]
    if out is None:
      out = np.zeros((len(utts),) + pred.shape[1:], np.float32)
    out[idx] = pred
  bad = ~np.all(np.isfinite(out), axis=-1)
  if np.any(bad):
    raise FloatingPointError(
        f"the predictions for utterance {utts[int(np.argmax(bad))].name} became NaN or inf"
        f"{' at ' + where if where else ''}; try a lower --learning_rate or --clip_norm")
  return out


def classification_metrics(labels: np.ndarray, preds: np.ndarray,
                           num_classes: int) -> dict[str, Any]:
  """``{"accuracy", "macro_f1", "uar"}`` floats and ``"confusion"`` ``[C, C]``
  counts (rows gold, columns predicted) of ``[U]`` gold and predicted ids."""
  cm = metrics.confusion_matrix(labels, preds, num_classes)
  s = metrics.scores_from_confusion(cm)
  return {"accuracy": s.accuracy, "macro_f1": s.macro_f1, "uar": s.uar,
          "confusion": cm.tolist()}


def evaluate_utterances(p_eval: Callable, params: Any, utts: Sequence[Any], config: RunConfig,
                        num_devices: int, where: str = "", chunks: Sequence | None = None
                        ) -> dict[str, Any]:
  """Scores of the target branch on a split's utterances.

  Args:
    p_eval: pmapped :func:`emobed_jax.train.eval_step`.
    params: the (replicated) parameters; only the target branch is used.
    utts: standardised :class:`~emobed_jax.utterances.Utterance` s.
    config: the run's resolved config (task, dimensions, length_buckets).
    num_devices: local devices ``p_eval`` maps over.
    where: what is evaluated, for the error message.
    chunks: the split's padded chunks, made once (:func:`utterance_predictions`).

  Returns:
    classification: ``{"metrics": {"accuracy", "macro_f1", "uar"},
    "confusion": [[int]], "per_utterance": {name: {"label", "pred",
    "probs"}}}``; regression: ``{"metrics": {"ccc_<dim>", "ccc_mean"},
    "per_utterance": {name: {dim: [pred, gold]}}}`` (CCC over utterances).

  Raises:
    FloatingPointError: a NaN or inf output.
  """
  out = utterance_predictions(p_eval, params, utts, num_devices, config.data.length_buckets,
                              where, chunks)
  gold = utterances.arrays_of(utts)
  if config.core.task.task == "classification":
    probs = np.exp(out - out.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    pred = probs.argmax(-1)
    scores = classification_metrics(gold["labels"], pred, out.shape[-1])
    return {"metrics": {k: scores[k] for k in ("accuracy", "macro_f1", "uar")},
            "confusion": scores["confusion"],
            "per_utterance": {u.name: {"label": int(y), "pred": int(p),
                                       "probs": [round(float(q), 6) for q in pr]}
                              for u, y, p, pr in zip(utts, gold["labels"], pred, probs)}}
  dims = config.data.dimensions
  return {"metrics": dims_metrics(metrics.ccc(out, gold["values"]), dims),
          "per_utterance": {u.name: {d: [float(out[i, j]), float(gold["values"][i, j])]
                                     for j, d in enumerate(dims)}
                            for i, u in enumerate(utts)}}


def selection_score(config: RunConfig, metrics: Mapping[str, float]) -> tuple[str, float]:
  """The validation number model selection maximises, from a split's flat
  metrics: ``ccc_mean`` (regression; concatenated CCC on recordings), ``uar``
  (classification: UAR, because OMG-Emotion's classes are very unbalanced)."""
  name = "uar" if config.core.task.task == "classification" else "ccc_mean"
  return name, float(metrics[name])


def utterance_results_record(config: RunConfig, final: Mapping[str, Any],
                             validation: Mapping[str, Any], *, majority_class: int | None,
                             class_names: Sequence[str], counts: Mapping[str, int],
                             selection_split: str, best_meta: Mapping[str, Any],
                             latest_meta: Mapping[str, Any], total_steps: int, devices: int,
                             processes: int, provenance: Mapping[str, Any] | None = None,
                             manifest: str | None = None) -> dict[str, Any]:
  """The content of ``results.json`` for an utterance corpus (docs/DESIGN.md).

  ``final``/``validation``: :func:`evaluate_utterances` of the best
  checkpoint on the evaluation and the validation split.  Classification
  adds the majority-class baseline (always predicting the most frequent
  training class) scored the same way.
  """
  dcfg, task = config.data, config.core.task
  classification = task.task == "classification"
  split = dcfg.eval_split
  rec = {
      "dataset": dcfg.dataset, "task": task.task, "setting": task.setting,
      "modality": dcfg.modality, "aux_modality": dcfg.aux_modality if task.parts["aux"] else None,
      "eval_split": split, "seed": config.seed, "best_step": best_meta["best_step"],
      "metrics": final["metrics"],
      ("metric_granularity" if classification else "ccc_granularity"): "utterance",
      "metrics_by_split": {"validation": validation["metrics"], split: final["metrics"]},
  }
  if classification:
    rec.update(confusion=final["confusion"], class_names=list(class_names),
               confusion_by_split={"validation": validation["confusion"],
                                   split: final["confusion"]})
    labels = np.asarray([v["label"] for v in final["per_utterance"].values()])
    base = classification_metrics(labels, np.full_like(labels, majority_class),
                                  len(class_names))
    rec["majority_baseline"] = {"class": class_names[majority_class],
                                **{k: base[k] for k in ("accuracy", "macro_f1", "uar")}}
  metric = "uar" if classification else "ccc_mean"
  rec.update({
      "per_utterance": final["per_utterance"],
      "selection": {"split": selection_split, "metric": metric,
                    f"best_val_{metric}": best_meta["best_score"]},
      "data": {"utterances": dict(counts), "manifest": manifest},
      "train_seconds": latest_meta.get("train_seconds"),
      "steps_per_second": latest_meta.get("steps_per_second"),
      "skipped_nonfinite": latest_meta.get("skipped_nonfinite", 0),
      "total_steps": total_steps, "devices": devices, "processes": processes,
      "provenance": dict(provenance or {}),
  })
  return rec
