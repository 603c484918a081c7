"""Train state, the pure train/eval steps of all four settings.

``train_step(state, batch, rng, *, model, config, bin_edges, axis_name)`` is a
pure function of its inputs; :mod:`emobed_jax.parallel` wraps it in
``jax.pmap(axis_name='batch')``.  Inside, every loss is computed over the
*global* batch (moments, sums and counts are psum'd over ``axis_name``; the
triplet candidates are all_gather'd before mining), and the gradients are
``pmean``'d over the same axis -- which, with the collectives inside the
loss, is exactly the gradient of the global loss (see ``losses.py``).

``train_and_evaluate(config, workdir)`` is the loop: a whole RECOLA-style
run (data from :mod:`emobed_jax.run_data`, model selection and
``results.json`` from :mod:`emobed_jax.evaluate`, files from
:mod:`emobed_jax.workdir`, checkpoints from :mod:`emobed_jax.checkpoint`).

A batch is a dict of arrays (per device):

* ``target``: ``[b, T, target_dim]``; ``aux``: ``[b, T, aux_dim]`` (settings
  with an auxiliary modality);
* ``mask``: ``[b, T]`` (1 = real frame; padding examples are all 0);
* ``labels``: ``[b, T, D]`` float (regression) or ``[b]`` int (classification).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from flax.training import train_state

from emobed_jax import (checkpoint, device_windows, evaluate, losses, parallel, prefetch,
                        run_data, utterances)
from emobed_jax import workdir as wd
from emobed_jax.config import CoreConfig, OptimConfig, RunConfig
from emobed_jax.input_pipeline import WindowBatches, WindowSource, eval_arrays, steps_per_epoch
from emobed_jax.models import EmoBed, init_params, segment_pool


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
    if "aux_mask" in batch:  # its own frame rate: its own length and mask
      at = tuple(a.shape[:-1])
      if at[:-1] != bt[:-1] or tuple(batch["aux_mask"].shape) != at:
        raise ValueError(f"batch['aux'], batch['aux_mask']: expected shapes "
                         f"{bt[:-1] + ('Ta', t.aux_dim)} and {bt[:-1] + ('Ta',)}, got "
                         f"{tuple(a.shape)} and {tuple(batch['aux_mask'].shape)}")
    elif tuple(a.shape[:-1]) != bt:
      raise ValueError(f"batch['aux']: expected shape {bt + (t.aux_dim,)}, got {tuple(a.shape)}")
    if a.shape[-1] != t.aux_dim:
      raise ValueError(f"batch['aux']: feature width {a.shape[-1]} differs from the "
                       f"model's aux_dim {t.aux_dim}")
  y = batch["labels"]
  if t.task == "classification":
    want = bt[:-1]
  else:
    want = bt[:-1] + (t.num_outputs,) if t.per_utterance else bt + (t.num_outputs,)
  if tuple(y.shape) != want:
    raise ValueError(f"batch['labels']: expected shape {want}, got {tuple(y.shape)}")
  if not np.any(np.asarray(batch["mask"]) > 0):
    raise ValueError("batch['mask']: every frame of the batch is masked")


def task_loss(config: CoreConfig, pred, labels, mask, axis_name, class_weights=None):
  """The task loss of one branch, over the global batch.

  Regression: ``1 - CCC`` per dimension (:func:`emobed_jax.losses.ccc_loss`,
  Lin 1989, population moments over all valid frames of the batch, or over
  its utterances with at least one valid frame for utterance-level
  regression), averaged over the D dimensions.  Classification: mean
  cross-entropy over the utterances with at least one valid frame.

  Args:
    config: gives ``task.task`` (regression or classification) and
      ``task.level``.
    pred: ``[b, T, D]`` float32 per-frame predictions, ``[b, D]`` per
      utterance, or ``[b, C]`` logits.
    labels: ``[b, T, D]`` or ``[b, D]`` float32 gold standard, or ``[b]``
      int32 classes.
    mask: ``[b, T]`` float32, 1 for real frames, 0 for padding.
    axis_name: the pmap axis the moments / sums are psum'd over, or None.
    class_weights: optional ``[C]`` float32 weights (classification).

  Returns:
    A float32 scalar.
  """
  valid = (jnp.sum(mask, axis=1) > 0).astype(jnp.float32)
  if config.task.task == "regression":
    if config.task.per_utterance:  # one "frame" per utterance
      pred, labels, mask = pred[:, None], labels[:, None], valid[:, None]
    return jnp.mean(losses.ccc_loss(pred, labels, mask, axis_name=axis_name))
  return losses.cross_entropy(pred, labels, valid, class_weights, axis_name=axis_name)


def embedding_labels(config: CoreConfig, labels, mask, bin_edges):
  """Labels of the triplet embeddings (docs/METHOD.md, "Same emotion").

  Classification: the ``[b]`` classes.  Utterance-level regression: the
  utterance's labels binned with ``bin_edges`` (``[D, num_bins - 1]``) into
  one joint bin, ``[b]``.  Frame-level regression: per segment of
  ``loss.triplet_segment`` frames, the mean label of its valid frames, so
  binned: ``[b, T // segment]`` int32.
  """
  if config.task.task == "classification":
    return labels
  if config.task.per_utterance:
    return losses.bin_labels(labels, bin_edges)
  seg_labels, _ = segment_pool(labels, mask, config.loss.triplet_segment)
  return losses.bin_labels(seg_labels, bin_edges)


def compute_losses(params, batch, rng, *, model: EmoBed, config: CoreConfig,
                   bin_edges, axis_name: str | None, train: bool = True,
                   class_weights=None):
  """Total loss of a setting and its parts, over the global batch.

  ``total = task(target) + w_aux * task(aux) + lambda_tri * triplet`` with
  the parts each setting has (:data:`emobed_jax.config.SETTING_PARTS`):
  ``w_aux`` is ``lambda_aux`` for the shared head (joint, emobed) and 1 for
  crossmodal's own heads; absent parts are 0.

  Args:
    params: the model's parameters.
    batch: per-device arrays (module docstring): ``target [b, T, F_t]``,
      ``aux [b, T, F_a]`` (settings with an auxiliary modality), ``mask
      [b, T]``, ``labels [b, T, D]`` or ``[b, D]`` float32 or ``[b]`` int32;
      utterance corpora add ``aux_mask [b, Ta]`` (``aux`` is then ``[b, Ta,
      F_a]``, at the auxiliary modality's own frame rate).
    rng: dropout key.
    model, config: the :class:`EmoBed` module and its config.
    bin_edges: ``[D, num_bins - 1]`` float32 (regression with a triplet loss).
    axis_name: the pmap axis, or None on one device.
    train: dropout on.
    class_weights: optional ``[C]`` float32 (classification).

  Returns:
    ``(total, (task_target, task_aux, triplet))``, float32 scalars.
  """
  parts = config.task.parts
  lc = config.loss
  out = model.apply({"params": params}, batch["target"], batch.get("aux"),
                    batch["mask"], batch.get("aux_mask"), train=train, rngs={"dropout": rng})
  mask, labels = batch["mask"], batch["labels"]
  aux_mask = batch.get("aux_mask", mask)
  zero = jnp.zeros((), jnp.float32)
  l_target = task_loss(config, out["target_pred"], labels, mask, axis_name, class_weights)
  l_aux, l_tri = zero, zero
  total = l_target
  if parts["aux"]:
    l_aux = task_loss(config, out["aux_pred"], labels, aux_mask, axis_name, class_weights)
    # joint/emobed weight the auxiliary task; crossmodal trains both heads fully.
    total = total + (lc.lambda_aux if parts["shared_head"] else 1.0) * l_aux
  if parts["triplet"]:
    emb_labels = embedding_labels(config, labels, mask, bin_edges)
    l_tri = losses.triplet_loss(
        out["target_emb"], emb_labels, out["aux_emb"], emb_labels,
        margin=lc.margin, mining=lc.mining, anchor_mask=out["emb_valid"],
        cand_mask=out["aux_emb_valid"], symmetric=lc.symmetric, axis_name=axis_name)
    total = total + lc.lambda_tri * l_tri
  return total, (l_target, l_aux, l_tri)


def train_step(state: TrainState, batch, rng, *, model: EmoBed, config: CoreConfig,
               bin_edges=None, axis_name: str | None = None, class_weights=None,
               skip_nonfinite: bool = False):
  """One optimisation step on the global batch.

  Args:
    state: the :class:`TrainState` (under pmap: unmapped, replicated).
    batch: this device's share of the batch (see :func:`compute_losses`).
    rng: a JAX key; the dropout key is ``fold_in(fold_in(rng, step),
      device index)``, so a resumed run draws the same numbers as an
      uninterrupted one.
    model, config, bin_edges, class_weights: see :func:`compute_losses`.
    axis_name: the pmap axis (gradients are ``pmean``'d over it), or None.
    skip_nonfinite: when the loss or the gradient norm is NaN or inf, keep
      the parameters and optimiser state (the step counter still advances,
      so the data order is unchanged); without it they are updated as is.

  Returns:
    ``(new_state, StepMetrics)``; every metric is a float32 scalar of the
    global batch (``grad_norm``: L2 norm of the averaged gradient, before
    clipping).
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
  grad_norm = optax.tree.norm(grads)
  new_state = state.apply_gradients(grads=grads)
  if skip_nonfinite:
    ok = jnp.isfinite(total) & jnp.isfinite(grad_norm)
    keep = functools.partial(jax.tree_util.tree_map, lambda new, old: jnp.where(ok, new, old))
    new_state = new_state.replace(params=keep(new_state.params, state.params),
                                  opt_state=keep(new_state.opt_state, state.opt_state))
  metrics = StepMetrics(loss=total, task_target=lt, task_aux=la, triplet=ltri,
                        grad_norm=grad_norm)
  return new_state, metrics


def eval_step(params, target, mask, *, model: EmoBed):
  """Predictions of the target branch alone (no auxiliary input or weights).

  Args:
    params: the model's parameters (only ``target_encoder`` and ``head``
      are read).
    target: ``[b, T, F]`` float32 standardised features of the target modality.
    mask: ``[b, T]`` float32, 1 for real frames.

  Returns:
    ``[b, T, D]`` float32 per-frame predictions (regression) or ``[b, C]``
    logits (classification).
  """
  return model.apply({"params": params}, target, mask, method=EmoBed.predict)


def bound_train_step(model: EmoBed, config: CoreConfig, bin_edges=None,
                     axis_name: str | None = None, class_weights=None,
                     skip_nonfinite: bool = False):
  """``train_step`` with its dependencies bound (keyword-only, Scenic style)."""
  if config.task.parts["triplet"] and config.task.task == "regression" and bin_edges is None:
    raise ValueError("bin_edges: settings with a triplet loss on continuous "
                     "labels need bin edges (losses.fit_bin_edges on train labels)")
  edges = None if bin_edges is None else jnp.asarray(bin_edges, jnp.float32)
  cw = None if class_weights is None else jnp.asarray(class_weights, jnp.float32)
  return functools.partial(train_step, model=model, config=config, bin_edges=edges,
                           axis_name=axis_name, class_weights=cw,
                           skip_nonfinite=skip_nonfinite)


# ---------------------------------------------------------------------------
# The loop: data -> training with model selection -> results.json.

Report = Callable[[str, dict], None]

#: Loss terms of StepMetrics, and the setting part each optional one needs.
_TERMS = ("loss", "task_target", "task_aux", "triplet")
_OPTIONAL = {"task_aux": "aux", "triplet": "triplet"}


class RunInterrupted(Exception):
  """The run was asked to stop (``stop_requested``); it saved a checkpoint at
  ``step`` and the same command resumes from there."""

  def __init__(self, step: int):
    super().__init__(f"stopped at step {step}; the same command resumes from there")
    self.step = step


def logged_terms(config: CoreConfig) -> tuple[str, ...]:
  """Names of the :class:`StepMetrics` a setting logs: its loss terms only
  (``mono`` has no ``task_aux`` or ``triplet``), then ``grad_norm``."""
  parts = config.task.parts
  return tuple(t for t in _TERMS if parts.get(_OPTIONAL.get(t, ""), True)) + ("grad_norm",)


@struct.dataclass
class _Interval:
  """Train metrics accumulated on the device between two log lines."""
  sums: StepMetrics          # over the steps whose values were all finite
  finite: jax.Array          # int32: such steps
  nonfinite: jax.Array       # int32: the others
  first_bad: jax.Array       # int32: the first step (1-based) with a non-finite value, or -1
  bad_terms: jax.Array       # bool [5]: which of loss, task_*, triplet, grad_norm it was

  @staticmethod
  def empty() -> "_Interval":
    z = jnp.zeros((), jnp.float32)
    return _Interval(StepMetrics(z, z, z, z, z), jnp.int32(0), jnp.int32(0), jnp.int32(-1),
                     jnp.zeros((5,), bool))


@jax.jit
def _accumulate(acc: _Interval, m: StepMetrics, done) -> _Interval:
  values = jnp.stack([m.loss, m.task_target, m.task_aux, m.triplet, m.grad_norm])
  bad = ~jnp.isfinite(values)
  ok = ~jnp.any(bad)
  first = (acc.first_bad < 0) & ~ok
  return _Interval(
      jax.tree_util.tree_map(lambda s, v: s + jnp.where(ok, v, 0.0), acc.sums, m),
      acc.finite + ok, acc.nonfinite + ~ok, jnp.where(first, done, acc.first_bad),
      jnp.where(first, bad, acc.bad_terms))


def _nonfinite_error(acc: dict[str, Any], terms: tuple[str, ...]) -> FloatingPointError:
  names = [n for n, b in zip(_TERMS + ("grad_norm",), acc["bad_terms"]) if b and n in terms]
  return FloatingPointError(
      f"the training loss became non-finite at step {int(acc['first_bad'])} "
      f"({', '.join(names) or 'loss'} NaN or inf); nothing after the last finite checkpoint "
      "was saved; try a lower --learning_rate or --clip_norm, or --skip_nonfinite to skip "
      "such batches")


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


def input_feed(config: RunConfig, platform: str | None = None) -> str:
  """``--input_feed`` resolved: ``"host"`` or ``"device"``
  (:mod:`emobed_jax.device_windows`).  ``auto`` is ``device`` on a GPU or
  TPU (``platform``, default ``jax.default_backend()``), where one host
  thread cannot cut windows as fast as the step consumes them, and ``host``
  on a CPU, where both do the same copy on the same cores.  Utterance
  corpora (OMG-Emotion) use ``host`` (padded length buckets; ``device`` is
  refused for them by :meth:`RunConfig.validate`)."""
  if config.input_feed != "auto":
    return config.input_feed
  if config.data.utterances or (platform or jax.default_backend()) == "cpu":
    return "host"
  return "device"


def _train_loop(st: TrainState, batches, rng, *, config: RunConfig,
                p_step: Callable, validate: Callable[[Any, str], dict[str, float]],
                ckpt: checkpoint.Checkpointer,
                log: wd.MetricsLog, report: Report, steps_per_epoch: int,
                meta: dict[str, Any], stop_requested: Callable[[], bool]) -> None:
  """Steps from ``st.step`` to the end.

  Train metrics are means over each log interval (summed on device); loss
  and gradient norm are checked for NaN/inf at every log line and before
  every save (no host sync per step).  Validation and one checkpoint every
  ``eval_every_epochs`` epochs and at the last step; a checkpoint without
  validation when ``stop_requested()`` turns true (then RunInterrupted).
  ``validate(params, where)`` returns the validation metrics (flat); model
  selection maximises :func:`emobed_jax.evaluate.selection_score` of them.
  """
  spe, total_steps = steps_per_epoch, steps_per_epoch * config.epochs
  core = config.core
  terms = logged_terms(core)
  rate = _Rate()
  start_step = int(st.step)
  segment_start = time.perf_counter()
  acc = _Interval.empty()
  skipped_total = int(meta.get("skipped_nonfinite", 0))

  def healthy() -> dict[str, Any]:
    """The interval so far, on the host; raises on a non-finite step
    unless --skip_nonfinite."""
    got = jax.device_get(acc)
    if int(got.first_bad) >= 0 and not config.skip_nonfinite:
      raise _nonfinite_error(dataclasses.asdict(got), terms)
    return got

  def save(done: int, score: float | None) -> None:
    nonlocal segment_start
    now = time.perf_counter()
    meta["train_seconds"] = meta.get("train_seconds", 0.0) + now - segment_start
    meta["steps_per_second"] = rate.value
    meta["skipped_nonfinite"] = skipped_total + int(healthy().nonfinite)
    segment_start = now
    ckpt.save(done, st, dict(meta), score)

  for step in range(start_step, total_steps):
    if stop_requested():
      if step not in ckpt.all_steps():  # else: resumed from it, nothing new
        save(step, None)
      ckpt.wait()
      raise RunInterrupted(step)
    st, m = p_step(st, batches[step], rng)  # on the devices already (prefetch.DevicePrefetch)
    rate.tick(m.loss)
    done = step + 1
    acc = _accumulate(acc, m, done)
    if done % config.log_every == 0 or done == total_steps:
      got = healthy()
      n = int(got.finite)  # steps whose values were finite (all, unless skipped)
      sums = dataclasses.asdict(got.sums)
      values = {k: float(sums[k]) / n if n else math.nan for k in terms}
      skipped_total += int(got.nonfinite)
      rec = {"step": done, "epoch": done / spe, "split": "train", **values,
             "steps_per_second": rate.value or 0.0}
      if config.skip_nonfinite:
        rec.update(skipped_nonfinite=int(got.nonfinite), skipped_nonfinite_total=skipped_total)
      acc = _Interval.empty()
      log.log(rec, "train", values)
      report("train", {**rec, "total_steps": total_steps,
                       "eta_seconds": (total_steps - done) / rate.value if rate.value else None})
    if done % spe == 0 and ((done // spe) % config.eval_every_epochs == 0
                            or done == total_steps):
      healthy()
      val = validate(st.params, f"step {done}")
      _, score = evaluate.selection_score(config, val)
      is_best = meta["best_score"] is None or score > meta["best_score"]
      if is_best:
        meta.update(best_score=score, best_step=done)
      rec = {"step": done, "epoch": done // spe, "split": "val", **val,
             "best_step": meta["best_step"]}
      log.log(rec, "val", val)
      save(done, score)
      report("eval", {**rec, "is_best": is_best})
  ckpt.wait()


def train_and_evaluate(config: RunConfig, workdir: str | Path, report: Report | None = None,
                       stop_requested: Callable[[], bool] | None = None) -> dict[str, Any]:
  """Train one run and write its workdir (docs/DESIGN.md, run contract).

  Every start-up check (config, devices, corpus, feature sets, an existing
  run in the workdir) happens before anything is written; a workdir with no
  checkpoint yet counts as fresh.  One run at a time per workdir (a lock).

  Args:
    config: a :class:`emobed_jax.config.RunConfig`.
    workdir: receives ``config.json``, ``stats.json``, ``metrics.jsonl``,
      TensorBoard events, ``checkpoints/`` and finally ``results.json``.  If
      it holds a checkpoint of the same run, training resumes from the newest
      intact one; if it holds ``results.json``, nothing is redone.
    report: optional ``report(kind, info)`` callback for progress (``kind``
      in prepare / data / resume / warning / train / eval / done); the library never
      prints.
    stop_requested: polled before every step; when it returns True the run
      saves a checkpoint and raises :class:`RunInterrupted` (e.g. SIGTERM).

  Returns:
    The content of ``results.json``.

  Raises:
    emobed_jax.config.ConfigError: an invalid config (names the flag).
    emobed_jax.workdir.RunError: the workdir holds another run, is in use or
      cannot be written; the batch does not divide over the devices; no
      checkpoint restores.
    emobed_datasets.errors.DataError: the prepared corpus is missing or bad.
    FloatingPointError: the train loss, the gradient or a prediction became
      NaN or inf (names the step).
    RunInterrupted: ``stop_requested()`` turned true.
  """
  report = report or (lambda kind, info: None)
  stop_requested = stop_requested or (lambda: False)
  config.validate()
  workdir = Path(workdir).expanduser()
  wd.check_same_run(workdir, config)
  if (results := wd.finished_results(workdir)) is not None:
    report("done", {"results": results, "already": True})
    return results
  if config.batch_size % jax.device_count():
    raise wd.RunError(f"--batch_size={config.batch_size} is not divisible by the "
                      f"{jax.device_count()} devices (--cpu_devices on a CPU)")
  is_main = jax.process_index() == 0
  data = run_data.load_run_data(
      config, wd.read_stats(workdir),
      progress=lambda done, total, secs: report("prepare", {"done": done, "total": total,
                                                            "seconds": secs}))
  config, core = data.config, data.config.core
  utt = config.data.utterances
  if utt:
    # Length-bucketed, padded utterances; the order is a pure function of (seed, step).
    utt_batches = utterances.UtteranceBatches(
        data.train, config.batch_size, config.seed, config.data.length_buckets,
        core.task.task, jax.process_index(), jax.process_count())
    spe, examples = utt_batches.steps_per_epoch, len(data.train)
  else:
    source = WindowSource(data.train, config.data.window, config.data.hop)
    if len(source) < config.batch_size:
      raise wd.RunError(f"--batch_size={config.batch_size} is larger than the {len(source)} "
                        f"training windows (--window={config.data.window} --hop="
                        f"{config.data.hop} over {len(data.train)} recordings); lower "
                        "--batch_size or --window")
    spe, examples = steps_per_epoch(len(source), config.batch_size), len(source)
  total_steps = spe * config.epochs
  model, state = create_train_state(core, jax.random.key(config.seed))
  wd.create(workdir)  # the first write
  # Multi-process (emobed_jax.distributed): the processes share the workdir;
  # process 0 alone holds its lock (the others would be refused by it).
  with wd.locked(workdir) if is_main else contextlib.nullcontext():
    if not wd.has_checkpoint(workdir) and is_main:
      wd.write_start(workdir, config, data.stats, data.source)
    batches = utt_batches if utt else WindowBatches(
        source, config.batch_size, config.seed, config.epochs + 1, jax.process_index(),
        jax.process_count())
    report("data", {"train": len(data.train), "val": len(data.val), "eval": len(data.eval),
                    "unit": "utterances" if utt else "recordings", "corpus": data.corpus,
                    "windows": examples, "steps_per_epoch": spe,
                    "total_steps": total_steps, "devices": jax.device_count(),
                    "input_feed": input_feed(config),
                    "seconds": data.seconds, "selection_split": data.selection_split})
    ckpt = checkpoint.Checkpointer(workdir / "checkpoints")
    meta = {"best_score": None, "best_step": None, "train_seconds": 0.0}
    if ckpt.latest_step() is not None:
      try:
        state, meta, lost = ckpt.restore_latest(state)
      except checkpoint.CheckpointError as e:
        raise wd.RunError(f"--workdir={workdir}: {e}; use a new --workdir") from None
      if lost:
        report("warning", {"message": f"checkpoints of step(s) {', '.join(map(str, lost))} "
                           f"are damaged; resuming from step {int(state.step)} instead"})
      report("resume", {"step": int(state.step), "best_step": meta["best_step"]})
    step_fn = bound_train_step(model, core, data.bin_edges, parallel.AXIS,
                               class_weights=data.class_weights,
                               skip_nonfinite=config.skip_nonfinite)
    p_step = parallel.pmap_train_step(step_fn)
    p_eval = parallel.pmap_eval_step(functools.partial(eval_step, model=model))
    n_local = jax.local_device_count()

    padded: dict[str, Any] = {}  # each split padded once, not at every validation

    def evaluate_split(params, which: str, where: str) -> dict[str, Any]:
      items = getattr(data, which)
      if which not in padded:
        padded[which] = (utterances.eval_batches(items, n_local, config.data.length_buckets)
                         if utt else eval_arrays(items, n_local))
      if utt:
        return evaluate.evaluate_utterances(p_eval, params, items, config, n_local,
                                            where=where, chunks=padded[which])
      return evaluate.evaluate_recordings(p_eval, params, items,
                                          getattr(data, f"full_{which}_labels"), config.data,
                                          n_local, where=where, arrays=padded[which])

    def validate(params, where: str) -> dict[str, float]:
      v = evaluate_split(params, "val", where)
      return v["metrics"] if utt else v["concatenated"]

    log = wd.MetricsLog(workdir, is_main, start_step=int(state.step))
    closers: list[Callable[[], None]] = []
    if input_feed(config) == "device":
      check_batch(batches[int(state.step)], core)   # the host batch once, as the host feed does
      p_step = device_windows.pmap_window_step(step_fn, batches.frames, config.data.window)
      positions = device_windows.WindowIds(batches, int(state.step))
      feed = prefetch.DevicePrefetch(positions, int(state.step), total_steps)
      closers.append(positions.close)
    else:
      feed = prefetch.DevicePrefetch(batches, int(state.step), total_steps,
                                     check=functools.partial(check_batch, config=core))
    try:
      _train_loop(parallel.replicate(state), feed, jax.random.key(config.seed + 1),
                  config=config, p_step=p_step, validate=validate, ckpt=ckpt, log=log,
                  report=report, steps_per_epoch=spe, meta=meta,
                  stop_requested=stop_requested)
      best_state, best_meta = ckpt.restore(state, best=True)
      best_params = parallel.replicate(best_state.params)
      final = evaluate_split(best_params, "eval", "the best checkpoint")
      common = dict(selection_split=data.selection_split, best_meta=best_meta,
                    latest_meta=ckpt.restore(state)[1], total_steps=total_steps,
                    devices=jax.device_count(), processes=jax.process_count(),
                    provenance=wd.provenance(data.source))
      if utt:
        from emobed_datasets.omg_emotion import CLASS_NAMES  # noqa: PLC0415  (OMG runs only)
        results = evaluate.utterance_results_record(
            config, final, evaluate_split(best_params, "val", "the best checkpoint"),
            majority_class=data.majority_class, class_names=CLASS_NAMES, counts=data.counts,
            manifest=data.source.get("manifest"), **common)
      else:
        results = evaluate.results_record(config, final, **common)
      # Logged at the best step: these metrics are the best checkpoint's.
      log.log({"step": results["best_step"], "split": config.data.eval_split,
               "checkpoint": "best", **results["metrics"]},
              config.data.eval_split, results["metrics"])
      if is_main:
        wd.write_results(workdir, results)
    finally:
      feed.close()
      for close in closers:
        close()
      log.close()
      ckpt.close()
  report("done", {"results": results, "already": False})
  return results
