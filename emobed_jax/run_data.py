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
from typing import Any, Mapping

import numpy as np

from emobed_datasets import recola

from emobed_jax import input_pipeline, losses
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


def load_run_data(config: RunConfig, stats: Mapping[str, Any] | None = None) -> RunData:
  """Prepared corpus -> :class:`RunData` for ``config``.

  Args:
    config: a validated :class:`~emobed_jax.config.RunConfig`.
    stats: the content of an existing ``stats.json`` (reused), or None to
      fit the standardisation on the training recordings.

  Raises:
    emobed_datasets.errors.DataError: the prepared corpus is missing or
      malformed (the message names the path).
    RunError: ``--val_recordings`` leaves no training recording.
  """
  t0 = time.perf_counter()
  dcfg = config.data
  parts = config.core.task.parts
  tfds_dir = input_pipeline.resolve_prepared_dir(dcfg)
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
