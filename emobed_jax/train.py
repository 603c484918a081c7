"""Train state, the pure train/eval steps of all four settings.

``train_step(state, batch, rng, *, model, config, bin_edges, axis_name)`` is a
pure function of its inputs; :mod:`emobed_jax.parallel` wraps it in
``jax.pmap(axis_name='batch')``.  Inside, every loss is computed over the
*global* batch (moments, sums and counts are psum'd over ``axis_name``; the
triplet candidates are all_gather'd before mining), and the gradients are
``pmean``'d over the same axis -- which, with the collectives inside the
loss, is exactly the gradient of the global loss (see ``losses.py``).

A batch is a dict of arrays (per device):

* ``target``: ``[b, T, target_dim]``; ``aux``: ``[b, T, aux_dim]`` (settings
  with an auxiliary modality);
* ``mask``: ``[b, T]`` (1 = real frame; padding examples are all 0);
* ``labels``: ``[b, T, D]`` float (regression) or ``[b]`` int (classification).
"""

from __future__ import annotations

import functools
from typing import Any, Mapping

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
