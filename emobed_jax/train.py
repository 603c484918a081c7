"""Train state, the pure train/eval steps of all four settings.

``train_step(state, batch, rng, *, model, config, bin_edges, axis_name)`` is a
pure function of its inputs; :mod:`emobed_jax.parallel` wraps it in
``jax.pmap(axis_name='batch')``.  Inside, every loss is computed over the
*global* batch (moments, sums and counts are psum'd over ``axis_name``; the
triplet candidates are all_gather'd before mining), and the gradients are
``pmean``'d over the same axis -- which, with the collectives inside the
loss, is exactly the gradient of the global loss (see ``losses.py``).

``train_and_evaluate(config, workdir)`` runs a whole RECOLA-style training
(data, model selection, checkpoints, ``results.json``) around these steps.

A batch is a dict of arrays (per device):

* ``target``: ``[b, T, target_dim]``; ``aux``: ``[b, T, aux_dim]`` (settings
  with an auxiliary modality);
* ``mask``: ``[b, T]`` (1 = real frame; padding examples are all 0);
* ``labels``: ``[b, T, D]`` float (regression) or ``[b]`` int (classification).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from flax.training import train_state

from emobed_jax import losses
from emobed_jax.config import CoreConfig, OptimConfig
from emobed_jax.models import EmoBed, init_params


class TrainState(train_state.TrainState):
  """Flax TrainState (step, params, opt_state; apply_fn and tx are static)."""


@struct.dataclass
class StepMetrics:
  """Metrics of one step, already reduced over the global batch."""
  loss: jax.Array
  task_target: jax.Array
  task_aux: jax.Array
  triplet: jax.Array
  grad_norm: jax.Array


def make_optimizer(cfg: OptimConfig) -> optax.GradientTransformation:
  parts = []
  if cfg.clip_norm > 0:
    parts.append(optax.clip_by_global_norm(cfg.clip_norm))
  if cfg.optimizer == "adam":
    parts.append(optax.adam(cfg.learning_rate))
  elif cfg.optimizer == "adamw":
    parts.append(optax.adamw(cfg.learning_rate, weight_decay=cfg.weight_decay))
  else:
    parts.append(optax.sgd(cfg.learning_rate))
  return optax.chain(*parts)


def create_train_state(config: CoreConfig, rng) -> tuple[EmoBed, TrainState]:
  """A fresh, unreplicated train state for ``config``."""
  config.validate()
  model, params = init_params(config, rng)
  state = TrainState.create(apply_fn=model.apply, params=params,
                            tx=make_optimizer(config.optim))
  # A strongly typed step counter: a state restored from a checkpoint (numpy
  # int32) then has exactly the types of a fresh one, and nothing retraces.
  return model, state.replace(step=jnp.asarray(0, jnp.int32))


def check_batch(batch: Mapping[str, Any], config: CoreConfig,
                leading: tuple[int, ...] = ()) -> None:
  """Validate a host batch before it reaches the (traced) step.

  ``leading`` is the expected device axis prefix, e.g. ``(n_devices,)``.
  Raises ``ValueError`` naming the key and what was expected.
  """
  t = config.task
  nl = len(leading)
  for key in ("target", "mask", "labels"):
    if key not in batch:
      raise ValueError(f"batch: missing key {key!r}")
  x = batch["target"]
  if x.ndim != nl + 3 or tuple(x.shape[:nl]) != tuple(leading):
    raise ValueError(f"batch['target']: expected shape {leading + ('b', 'T', t.target_dim)}, "
                     f"got {tuple(x.shape)}")
  if x.shape[-1] != t.target_dim:
    raise ValueError(f"batch['target']: feature width {x.shape[-1]} differs from "
                     f"the model's target_dim {t.target_dim}")
  bt = tuple(x.shape[:-1])
  if tuple(batch["mask"].shape) != bt:
    raise ValueError(f"batch['mask']: expected shape {bt}, got {tuple(batch['mask'].shape)}")
  if t.parts["aux"]:
    if "aux" not in batch:
      raise ValueError(f"batch: setting {t.setting!r} needs key 'aux'")
    a = batch["aux"]
    if tuple(a.shape[:-1]) != bt:
      raise ValueError(f"batch['aux']: expected shape {bt + (t.aux_dim,)}, got {tuple(a.shape)}")
    if a.shape[-1] != t.aux_dim:
      raise ValueError(f"batch['aux']: feature width {a.shape[-1]} differs from the "
                       f"model's aux_dim {t.aux_dim}")
  y = batch["labels"]
  want = bt + (t.num_outputs,) if t.task == "regression" else bt[:-1]
  if tuple(y.shape) != want:
    raise ValueError(f"batch['labels']: expected shape {want}, got {tuple(y.shape)}")
  if not np.any(np.asarray(batch["mask"]) > 0):
    raise ValueError("batch['mask']: every frame of the batch is masked")


def task_loss(config: CoreConfig, pred, labels, mask, axis_name, class_weights=None):
  """CCC loss (mean over dimensions) or cross-entropy of one branch."""
  if config.task.task == "regression":
    return jnp.mean(losses.ccc_loss(pred, labels, mask, axis_name=axis_name))
  valid = (jnp.sum(mask, axis=1) > 0).astype(jnp.float32)
  return losses.cross_entropy(pred, labels, valid, class_weights, axis_name=axis_name)


def embedding_labels(config: CoreConfig, labels, mask, bin_edges):
  """Labels of the triplet embeddings: classes, or binned segment means."""
  if config.task.task == "classification":
    return labels
  from emobed_jax.models import segment_pool
  seg_labels, _ = segment_pool(labels, mask, config.loss.triplet_segment)
  return losses.bin_labels(seg_labels, bin_edges)


def compute_losses(params, batch, rng, *, model: EmoBed, config: CoreConfig,
                   bin_edges, axis_name: str | None, train: bool = True,
                   class_weights=None):
  """Total loss of a setting and its parts (all global-batch values)."""
  parts = config.task.parts
  lc = config.loss
  out = model.apply({"params": params}, batch["target"], batch.get("aux"),
                    batch["mask"], train=train, rngs={"dropout": rng})
  mask, labels = batch["mask"], batch["labels"]
  zero = jnp.zeros((), jnp.float32)
  l_target = task_loss(config, out["target_pred"], labels, mask, axis_name, class_weights)
  l_aux, l_tri = zero, zero
  total = l_target
  if parts["aux"]:
    l_aux = task_loss(config, out["aux_pred"], labels, mask, axis_name, class_weights)
    # joint/emobed weight the auxiliary task; crossmodal trains both heads fully.
    total = total + (lc.lambda_aux if parts["shared_head"] else 1.0) * l_aux
  if parts["triplet"]:
    emb_labels = embedding_labels(config, labels, mask, bin_edges)
    l_tri = losses.triplet_loss(
        out["target_emb"], emb_labels, out["aux_emb"], emb_labels,
        margin=lc.margin, mining=lc.mining, anchor_mask=out["emb_valid"],
        cand_mask=out["emb_valid"], symmetric=lc.symmetric, axis_name=axis_name)
    total = total + lc.lambda_tri * l_tri
  return total, (l_target, l_aux, l_tri)


def train_step(state: TrainState, batch, rng, *, model: EmoBed, config: CoreConfig,
               bin_edges=None, axis_name: str | None = None, class_weights=None):
  """One optimisation step; returns ``(new_state, StepMetrics)``.

  The dropout key is ``fold_in(fold_in(rng, step), device index)``: a resumed
  run draws the same numbers as an uninterrupted one.
  """
  step_rng = jax.random.fold_in(rng, state.step)
  if axis_name is not None:
    step_rng = jax.random.fold_in(step_rng, jax.lax.axis_index(axis_name))

  def loss_fn(params):
    return compute_losses(params, batch, step_rng, model=model, config=config,
                          bin_edges=bin_edges, axis_name=axis_name,
                          class_weights=class_weights)

  (total, (lt, la, ltri)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  if axis_name is not None:
    # Losses are global (psum'd inside); the mean of the per-device
    # gradients over the 'batch' axis is the global gradient.
    grads = jax.lax.pmean(grads, axis_name)
  new_state = state.apply_gradients(grads=grads)
  metrics = StepMetrics(loss=total, task_target=lt, task_aux=la, triplet=ltri,
                        grad_norm=optax.tree.norm(grads))
  return new_state, metrics


def eval_step(params, target, mask, *, model: EmoBed):
  """Predictions of the target branch alone: ``[b, T, D]`` or ``[b, C]``."""
  return model.apply({"params": params}, target, mask, method=EmoBed.predict)


def bound_train_step(model: EmoBed, config: CoreConfig, bin_edges=None,
                     axis_name: str | None = None, class_weights=None):
  """``train_step`` with its dependencies bound (keyword-only, Scenic style)."""
  if config.task.parts["triplet"] and config.task.task == "regression" and bin_edges is None:
    raise ValueError("bin_edges: settings with a triplet loss on continuous "
                     "labels need bin edges (losses.fit_bin_edges on train labels)")
  edges = None if bin_edges is None else jnp.asarray(bin_edges, jnp.float32)
  cw = None if class_weights is None else jnp.asarray(class_weights, jnp.float32)
  return functools.partial(train_step, model=model, config=config, bin_edges=edges,
                           axis_name=axis_name, class_weights=cw)


# ---------------------------------------------------------------------------
# The whole run: data -> training with model selection -> results.json.

Report = Callable[[str, dict], None]


class RunError(ValueError):
  """A user-facing problem with a run (workdir, flags vs data); one line."""


def _dims_metrics(values, dims) -> dict[str, float]:
  out = {f"ccc_{d}": float(v) for d, v in zip(dims, np.atleast_1d(values))}
  out["ccc_mean"] = float(np.mean(np.atleast_1d(values)))
  return out


def evaluate_recordings(p_eval, params, recordings, full_labels, data_cfg, num_devices):
  """CCC of the target branch on whole recordings, both granularities.

  Args:
    p_eval: pmapped :func:`eval_step`.
    params: the (replicated) parameters; only the target branch is used.
    recordings: aligned (delayed, subsampled) recordings.
    full_labels: ``{name: [N, D]}`` gold standard at the full frame rate.

  Returns:
    ``{"concatenated": {...}, "per_recording_mean": {...}, "per_recording":
    {name: {...}}}`` with ``ccc_<dim>`` and ``ccc_mean`` entries.
  """
  from emobed_jax import input_pipeline, metrics
  arrays = input_pipeline.eval_arrays(recordings, num_devices)
  preds = np.asarray(p_eval(params, arrays["target"], arrays["mask"]))
  preds = preds.reshape((-1,) + preds.shape[2:])
  by_name = {}
  for i, rec in enumerate(recordings):
    y = full_labels[rec.name]
    by_name[rec.name] = input_pipeline.upsample(preds[i, :rec.num_frames],
                                                data_cfg.frame_step, y.shape[0])
  dims = data_cfg.dimensions
  conc = metrics.ccc_by_recording(by_name, full_labels, "concatenated")
  per = metrics.ccc_by_recording(by_name, full_labels, "per_recording")
  return {"concatenated": _dims_metrics(conc.value, dims),
          "per_recording_mean": _dims_metrics(per.value, dims),
          "per_recording": {k: _dims_metrics(v, dims) for k, v in per.per_recording.items()}}


#: Fields of the resolved config that are read off the data, not chosen.
_DERIVED = ("target_dim", "aux_dim", "num_outputs", "task")
#: Model fields that change how the step runs, not its values or parameters
#: (a run may resume with another, e.g. trained on a GPU, resumed on a CPU).
_EXECUTION_ONLY = ("unroll", "rnn_impl")


def _first_difference(a, b, prefix="") -> str:
  if isinstance(a, dict) and isinstance(b, dict):
    for k in sorted(set(a) | set(b)):
      if a.get(k) != b.get(k):
        return _first_difference(a.get(k), b.get(k), f"{prefix}{k}.")
  return f"{prefix.rstrip('.')}: {a!r} there, {b!r} now"


def _check_same_run(workdir: Path, config) -> None:
  """Refuse a workdir that holds a run of another config (derived fields aside)."""
  from emobed_jax import writers
  from emobed_jax.config import to_dict
  cfg_path = workdir / "config.json"
  if not cfg_path.exists():
    return
  old = writers.read_json(cfg_path)
  new = writers._jsonable(to_dict(config))
  for k in _DERIVED:
    new["core"]["task"][k] = old.get("core", {}).get("task", {}).get(k)
  for k in _EXECUTION_ONLY:   # how the recurrence runs, not what it computes
    for cfg in (old, new):
      cfg.get("core", {}).get("model", {}).pop(k, None)
  if old != new:
    raise RunError(f"--workdir={workdir} holds a run with another config "
                   f"({_first_difference(old, new)}); use a new --workdir to start a "
                   "different run")


def _prepare_workdir(workdir: Path, resolved: dict[str, Any]) -> None:
  from emobed_jax import writers
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    probe = workdir / ".write_test"
    probe.write_text("ok")
    probe.unlink()
  except OSError as e:
    raise RunError(f"--workdir={workdir}: cannot write there ({e.strerror or e})") from None
  if not (workdir / "config.json").exists():
    writers.write_json(workdir / "config.json", resolved)


@dataclasses.dataclass
class RunData:
  """Everything the loop needs from the data, ready to use."""
  config: Any  # the resolved RunConfig (feature widths read off the data)
  train: list
  val: list
  eval: list
  full_val_labels: dict[str, np.ndarray]
  full_eval_labels: dict[str, np.ndarray]
  bin_edges: np.ndarray
  selection_split: str
  seconds: float


def load_run_data(config, workdir: Path, is_main: bool) -> RunData:
  """Prepared corpus -> aligned, standardised recordings; writes config/stats.json.

  Standardisation statistics and triplet bin edges come from the training
  recordings only and are stored in ``stats.json`` (reused on resume).
  """
  from emobed_jax import input_pipeline, writers
  from emobed_jax.config import to_dict
  t0 = time.perf_counter()
  dcfg = config.data
  parts = config.core.task.parts
  tfds_dir = input_pipeline.resolve_prepared_dir(dcfg)
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
  if is_main:
    _prepare_workdir(workdir, to_dict(config))

  stats_path = workdir / "stats.json"
  if stats_path.exists():
    standardizer = input_pipeline.Standardizer.from_json(
        writers.read_json(stats_path)["standardizer"])
  else:
    standardizer = input_pipeline.Standardizer.fit(train)

  def prep(recs):
    return [input_pipeline.align(standardizer.apply(r), dcfg.delay_frames, dcfg.frame_step)
            for r in recs]
  train_a = prep(train)
  bin_edges = losses.fit_bin_edges(np.concatenate([r.labels for r in train_a]),
                                   core.loss.num_bins)
  if is_main and not stats_path.exists():
    writers.write_json(stats_path, {"standardizer": standardizer.to_json(),
                                    "bin_edges": bin_edges.tolist(),
                                    "dimensions": list(dcfg.dimensions)})
  return RunData(config, train_a, prep(val), prep(evals), {r.name: r.labels for r in val},
                 {r.name: r.labels for r in evals}, bin_edges, selection,
                 time.perf_counter() - t0)


class _Logger:
  """metrics.jsonl + TensorBoard, written by process 0 only."""

  def __init__(self, workdir: Path, enabled: bool):
    from emobed_jax import writers
    self._writers = writers
    self.path = workdir / "metrics.jsonl"
    self.tb = writers.SummaryWriter(workdir / "tensorboard") if enabled else None

  def log(self, record: dict, scalars_prefix: str | None = None, scalars=None) -> None:
    if self.tb is None:
      return
    self._writers.append_jsonl(self.path, record)
    if scalars_prefix:
      self.tb.scalars(record["step"], {f"{scalars_prefix}/{k}": v for k, v in scalars.items()})

  def close(self) -> None:
    if self.tb is not None:
      self.tb.close()


class _Rate:
  """Steps per second, not counting the first (compiling) step."""

  def __init__(self):
    self.start, self.steps = None, 0

  def tick(self, first_output) -> None:
    if self.start is None:
      jax.block_until_ready(first_output)
      self.start = time.perf_counter()
    else:
      self.steps += 1

  @property
  def value(self) -> float | None:
    if not self.steps:
      return None
    return self.steps / max(time.perf_counter() - self.start, 1e-9)


def train_and_evaluate(config, workdir, report: Report | None = None) -> dict[str, Any]:
  """Train one run and write its workdir (DESIGN.md, contract of launch/train.py).

  Args:
    config: a :class:`emobed_jax.config.RunConfig`.
    workdir: receives ``config.json``, ``stats.json``, ``metrics.jsonl``,
      TensorBoard events, ``checkpoints/`` and finally ``results.json``.  If
      it holds a checkpoint of the same config, training resumes from it; if
      it holds ``results.json``, nothing is redone; another config is refused.
    report: optional ``report(kind, info)`` callback for progress
      (``kind`` in data / resume / train / eval / done); the library itself
      never prints.

  Returns:
    The content of ``results.json``.
  """
  from emobed_jax import checkpoint, input_pipeline, parallel, writers

  report = report or (lambda kind, info: None)
  config.validate()
  workdir = Path(workdir).expanduser()
  _check_same_run(workdir, config)
  if (workdir / "results.json").exists():
    results = writers.read_json(workdir / "results.json")
    report("done", {"results": results, "already": True})
    return results
  is_main = jax.process_index() == 0
  data = load_run_data(config, workdir, is_main)
  config, core, dcfg = data.config, data.config.core, data.config.data
  if config.batch_size % jax.device_count():
    raise RunError(f"--batch_size={config.batch_size} is not divisible by the "
                   f"{jax.device_count()} devices")
  source = input_pipeline.WindowSource(data.train, dcfg.window, dcfg.hop)
  spe = input_pipeline.steps_per_epoch(len(source), config.batch_size)
  total_steps = spe * config.epochs
  batches = input_pipeline.train_batches(source, config.batch_size, config.seed,
                                         config.epochs + 1, jax.process_index(),
                                         jax.process_count())
  report("data", {"train": len(data.train), "val": len(data.val), "eval": len(data.eval),
                  "windows": len(source), "steps_per_epoch": spe, "total_steps": total_steps,
                  "devices": jax.device_count(), "seconds": data.seconds,
                  "selection_split": data.selection_split})

  model, state = create_train_state(core, jax.random.PRNGKey(config.seed))
  ckpt = checkpoint.Checkpointer(workdir / "checkpoints")
  meta = {"best_score": None, "best_step": None, "train_seconds": 0.0}
  if ckpt.latest_step() is not None:
    state, meta = ckpt.restore(state)
    report("resume", {"step": int(state.step), "best_step": meta["best_step"]})
  p_step = parallel.pmap_train_step(bound_train_step(model, core, data.bin_edges,
                                                     parallel.AXIS))
  p_eval = parallel.pmap_eval_step(functools.partial(eval_step, model=model))
  num_devices = jax.local_device_count()
  logger = _Logger(workdir, is_main)
  rate = _Rate()
  st = parallel.replicate(state)
  rng = jax.random.PRNGKey(config.seed + 1)
  start_step = int(state.step)
  segment_start = time.perf_counter()
  for step in range(start_step, total_steps):
    batch = batches[step]
    if step == start_step:
      check_batch(batch, core)
    st, m = p_step(st, parallel.shard_batch(batch, num_devices), rng)
    rate.tick(m.loss)
    done = step + 1
    if done % config.log_every == 0 or done == total_steps:
      values = {k: float(v) for k, v in dataclasses.asdict(jax.device_get(m)).items()}
      if not np.isfinite(values["loss"]):
        raise FloatingPointError(f"loss became {values['loss']} at step {done}; try a lower "
                                 "--learning_rate or --clip_norm")
      rec = {"step": done, "epoch": done / spe, "split": "train", **values,
             "steps_per_second": rate.value or 0.0}
      logger.log(rec, "train", values)
      report("train", {**rec, "total_steps": total_steps,
                       "eta_seconds": (total_steps - done) / rate.value if rate.value else None})
    epoch_end = done % spe == 0
    if epoch_end and ((done // spe) % config.eval_every_epochs == 0 or done == total_steps):
      val = evaluate_recordings(p_eval, st.params, data.val, data.full_val_labels, dcfg,
                                num_devices)
      score = val["concatenated"]["ccc_mean"]
      is_best = meta["best_score"] is None or score > meta["best_score"]
      if is_best:
        meta.update(best_score=score, best_step=done)
      now = time.perf_counter()
      meta["train_seconds"] = meta.get("train_seconds", 0.0) + now - segment_start
      meta["steps_per_second"] = rate.value
      segment_start = now
      if is_best:
        ckpt.save(done, st, dict(meta), best=True)
      ckpt.save(done, st, dict(meta))
      rec = {"step": done, "epoch": done // spe, "split": "val", **val["concatenated"],
             "best_step": meta["best_step"]}
      logger.log(rec, "val", val["concatenated"])
      report("eval", {**rec, "is_best": is_best})
  ckpt.wait()
  results = _final_results(ckpt, state, p_eval, data, total_steps)
  if is_main:
    writers.write_json(workdir / "results.json", results)
  logger.log({"step": total_steps, "split": dcfg.eval_split, **results["metrics"],
              "best_step": results["best_step"]}, dcfg.eval_split, results["metrics"])
  logger.close()
  ckpt.close()
  report("done", {"results": results, "already": False})
  return results


def _final_results(ckpt, template, p_eval, data: RunData, total_steps: int) -> dict[str, Any]:
  """Metrics of the best checkpoint on the evaluation split (results.json)."""
  from emobed_jax import parallel
  config, dcfg = data.config, data.config.data
  best_state, best_meta = ckpt.restore(template, best=True)
  final = evaluate_recordings(p_eval, parallel.replicate(best_state.params), data.eval,
                              data.full_eval_labels, dcfg, jax.local_device_count())
  latest_meta = ckpt.restore(template)[1]
  parts = config.core.task.parts
  return {
      "dataset": dcfg.dataset, "setting": config.core.task.setting, "modality": dcfg.modality,
      "aux_modality": dcfg.aux_modality if parts["aux"] else None,
      "eval_split": dcfg.eval_split, "seed": config.seed, "best_step": best_meta["best_step"],
      "metrics": final["concatenated"], "ccc_granularity": "concatenated",
      "metrics_per_recording_mean": final["per_recording_mean"],
      "per_recording": final["per_recording"],
      "selection": {"split": data.selection_split,
                    "best_val_ccc_mean": best_meta["best_score"]},
      "train_seconds": latest_meta.get("train_seconds"),
      "steps_per_second": latest_meta.get("steps_per_second"),
      "total_steps": total_steps, "devices": jax.device_count(),
      "processes": jax.process_count(),
  }
