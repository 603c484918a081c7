"""Evaluation of the target branch on whole recordings, and ``results.json``.

Every number here is a CCC (:func:`emobed_jax.metrics.ccc`, population
moments, Lin 1989) of predictions against the gold standard at the full
frame rate, named with its granularity: ``concatenated`` (all recordings of
a split joined, the AVEC 2016 convention) or ``per_recording`` (one CCC per
recording; ``per_recording_mean`` is their mean).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np

from emobed_jax import input_pipeline, metrics
from emobed_jax.config import DataConfig


def dims_metrics(values: Any, dims: Sequence[str]) -> dict[str, float]:
  """``[D]`` CCCs -> ``{"ccc_<dim>": ..., "ccc_mean": ...}`` (Python floats)."""
  out = {f"ccc_{d}": float(v) for d, v in zip(dims, np.atleast_1d(values))}
  out["ccc_mean"] = float(np.mean(np.atleast_1d(values)))
  return out


def evaluate_recordings(p_eval: Callable, params: Any, recordings: Sequence[Any],
                        full_labels: Mapping[str, np.ndarray], data_cfg: DataConfig,
                        num_devices: int, where: str = "") -> dict[str, Any]:
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

  Returns:
    ``{"concatenated": {...}, "per_recording_mean": {...}, "per_recording":
    {name: {...}}}`` with ``ccc_<dim>`` and ``ccc_mean`` entries (floats).

  Raises:
    KeyError: a recording has no entry in ``full_labels``.
    FloatingPointError: a prediction on a real frame is NaN or inf (names
      the recording and ``where``).
  """
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
      "dataset": dcfg.dataset, "setting": task.setting, "modality": dcfg.modality,
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
