"""The input side of a training run: prepared corpus -> ready recordings.

:func:`load_run_data` reads the prepared corpus (:mod:`emobed_jax.input_pipeline`),
holds out the validation recordings, reads the feature widths off the data
into the config, standardises every recording with statistics of the
training recordings only, aligns labels (delay, frame step) and fits the
triplet bin edges on the training labels.  It writes nothing: the statistics
come back in ``RunData.stats`` for ``stats.json``, and a ``stats`` dict read
from an earlier start is reused as is (a resumed run standardises exactly as
the first start did).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
from emobed_datasets import recola

from emobed_jax import input_pipeline, losses, utterances
from emobed_jax.config import RunConfig
from emobed_jax.workdir import RunError


@dataclasses.dataclass
class RunData:
  """Everything the loop needs from the data, ready to use.

  ``train``/``val``/``eval``: aligned, standardised
  :class:`~emobed_jax.input_pipeline.Recording` lists; ``full_*_labels``:
  ``{recording: [N, D] float32}`` gold standard at the full frame rate (what
  CCC is computed against); ``bin_edges``: ``[D, num_bins - 1]``;
  ``stats``: the JSON content of ``stats.json``; ``source``: the package the
  prepared copy was built from (resolved path, fingerprint of file names and
  sizes, prepared path; :func:`emobed_datasets.recola.prepared_source`).
  """
  config: RunConfig  # the resolved config (feature widths read off the data)
  train: list
  val: list
  eval: list
  full_val_labels: dict[str, np.ndarray]
  full_eval_labels: dict[str, np.ndarray]
  bin_edges: np.ndarray
  selection_split: str
  stats: dict[str, Any]
  source: dict[str, Any]
  seconds: float
  #: Utterance corpora: ``[C]`` float32 loss weights (``--class_weights``)
  #: or None; the majority training class; utterances per split.
  class_weights: np.ndarray | None = None
  majority_class: int | None = None
  counts: dict[str, int] | None = None
  #: Utterance corpora: per split, the CSV rows, the utterances kept and the
  #: rows skipped by reason (the preparation's summary).
  corpus: dict[str, Any] | None = None


def load_run_data(config: RunConfig, stats: Mapping[str, Any] | None = None,
                  progress: Callable[[int, int, float], None] | None = None) -> RunData:
  """Prepared corpus -> :class:`RunData` for ``config``.

  Args:
    config: a validated :class:`~emobed_jax.config.RunConfig`.
    stats: the content of an existing ``stats.json`` (reused), or None to
      fit the standardisation on the training recordings.
    progress: ``progress(done, total, elapsed_s)`` while a corpus of
      utterances is prepared (:func:`emobed_jax.input_pipeline.resolve_prepared_dir`).

  Raises:
    emobed_datasets.errors.DataError: the prepared corpus is missing or
      malformed (the message names the path).
    RunError: ``--val_recordings`` leaves no training recording.
  """
  t0 = time.perf_counter()
  dcfg = config.data
  parts = config.core.task.parts
  tfds_dir = input_pipeline.resolve_prepared_dir(dcfg, progress)
  if dcfg.utterances:
    return _utterance_data(config, stats, tfds_dir, t0)
  source = dict(recola.prepared_source(tfds_dir) or {}, prepared=str(
      recola.prepared_path(tfds_dir).resolve()))
  train = input_pipeline.load_recordings(tfds_dir, "train", dcfg, with_aux=parts["aux"],
                                         with_labels=True)
  evals = input_pipeline.load_recordings(tfds_dir, dcfg.eval_split, dcfg, with_aux=False,
                                         with_labels=True)
  if dcfg.val_recordings:
    if dcfg.val_recordings >= len(train):
      raise RunError(f"--val_recordings={dcfg.val_recordings}: the train split has only "
                     f"{len(train)} recordings; hold out fewer")
    train, val = train[:-dcfg.val_recordings], train[-dcfg.val_recordings:]
    selection = f"train (held out: {', '.join(r.name for r in val)})"
  else:
    val = evals
    selection = f"{dcfg.eval_split} (also the evaluation split)"
  core = config.core.replace(task=dict(
      target_dim=int(train[0].target.shape[1]),
      aux_dim=int(train[0].aux.shape[1]) if parts["aux"] else config.core.task.aux_dim,
      num_outputs=len(dcfg.dimensions), task="regression"))
  config = dataclasses.replace(config, core=core)

  if stats is not None:
    standardizer = input_pipeline.Standardizer.from_json(stats["standardizer"])
  else:
    standardizer = input_pipeline.Standardizer.fit(train)

  def prep(recs):
    return [input_pipeline.align(standardizer.apply(r), dcfg.delay_frames, dcfg.frame_step)
            for r in recs]
  train_a = prep(train)
  bin_edges = losses.fit_bin_edges(np.concatenate([r.labels for r in train_a]),
                                   core.loss.num_bins)
  if stats is None:
    stats = {"standardizer": standardizer.to_json(), "bin_edges": bin_edges.tolist(),
             "dimensions": list(dcfg.dimensions)}
  return RunData(config, train_a, prep(val), prep(evals), {r.name: r.labels for r in val},
                 {r.name: r.labels for r in evals}, bin_edges, selection, dict(stats),
                 source, time.perf_counter() - t0)


#: OMG-Emotion's classes (EmotionMaxVote), docs/DATA.md.
NUM_CLASSES = 7


def _utterance_data(config: RunConfig, stats: Mapping[str, Any] | None, prepared: Any,
                    t0: float) -> RunData:
  """:func:`load_run_data` for an utterance corpus (OMG-Emotion, demo_omg):
  train on ``train``, select on ``validation``, evaluate on ``eval_split``."""
  from emobed_datasets import omg_emotion  # noqa: PLC0415  (see utterances.load_utterances)
  dcfg = config.data
  parts = config.core.task.parts
  classification = dcfg.task == "classification"
  train = utterances.load_utterances(prepared, "train", dcfg, with_aux=parts["aux"])
  val = utterances.load_utterances(prepared, "validation", dcfg, with_aux=False)
  evals = (val if dcfg.eval_split == "validation"
           else utterances.load_utterances(prepared, dcfg.eval_split, dcfg, with_aux=False))
  info = omg_emotion.info(prepared, dcfg.omg_audio_features)
  core = config.core.replace(task=dict(
      target_dim=int(train[0].target.shape[1]),
      aux_dim=int(train[0].aux.shape[1]) if parts["aux"] else config.core.task.aux_dim,
      num_outputs=NUM_CLASSES if classification else len(dcfg.dimensions),
      task=dcfg.task, level="utterance"))
  config = dataclasses.replace(config, core=core)
  if stats is not None:
    standardizer = input_pipeline.Standardizer.from_json(stats["standardizer"])
  else:
    standardizer = utterances.fit_standardizer(train)
  train_s, val_s, eval_s = ([utterances.standardize(u, standardizer) for u in us]
                            for us in (train, val, evals))
  bin_edges = losses.fit_bin_edges(np.stack([u.values for u in train]), core.loss.num_bins)
  if stats is None:
    stats = {"standardizer": standardizer.to_json(), "bin_edges": bin_edges.tolist(),
             "dimensions": list(dcfg.dimensions)}
  weights = (utterances.class_weights(train, NUM_CLASSES)
             if classification and core.loss.class_weights == "inverse" else None)
  source = dict(info.get("source") or {}, prepared=str(Path(prepared).resolve()),
                manifest=info.get("manifest"))
  counts = {"train": len(train), "validation": len(val), dcfg.eval_split: len(evals)}
  corpus = {split: {"kept": v.get("kept"), "rows": v.get("rows"),
                    "skipped": dict(v.get("skipped") or {})}
            for split, v in (info.get("splits") or {}).items()}
  return RunData(config, train_s, val_s, eval_s, {}, {}, bin_edges,
                 "validation", dict(stats), source,
                 time.perf_counter() - t0, weights,
                 utterances.majority_class(train, NUM_CLASSES), counts, corpus)
