"""Typed, frozen configuration of a run, with validation that names the field.

The library only ever sees these dataclasses; ``launch/`` maps absl flags to
them.  ``validate()`` raises :class:`ConfigError` (a ``ValueError``) whose
message names the field (the flag of the same name) and what was expected.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

SETTINGS = ("mono", "joint", "crossmodal", "emobed")
TASKS = ("regression", "classification")
RNN_TYPES = ("lstm", "gru")
POOLINGS = ("mean", "attention")
MINING_MODES = ("batch_all", "batch_hard", "semi_hard")

#: Which parts each setting has (DESIGN.md, "Training settings").
#: aux: an auxiliary encoder; shared_head: the aux branch goes through the
#: target's head; aux_head: a head of its own for the aux branch;
#: triplet: the crossmodal triplet loss on a shared embedding space.
SETTING_PARTS = {
    "mono": dict(aux=False, shared_head=False, aux_head=False, triplet=False),
    "joint": dict(aux=True, shared_head=True, aux_head=False, triplet=False),
    "crossmodal": dict(aux=True, shared_head=False, aux_head=True, triplet=True),
    "emobed": dict(aux=True, shared_head=True, aux_head=False, triplet=True),
}


class ConfigError(ValueError):
  """A configuration value is invalid; the message names the field."""


def _check(cond: bool, name: str, expected: str, value: Any) -> None:
  if not cond:
    raise ConfigError(f"--{name}: expected {expected}, got {value!r}")


@dataclass(frozen=True)
class ModelConfig:
  """Encoder / head / embedding sizes (METHOD.md: our choices, all flags)."""
  rnn: str = "lstm"
  num_layers: int = 2
  hidden: int = 64
  proj_dim: int = 64
  dropout: float = 0.0
  head_hidden: int = 32
  embed_dim: int = 32
  pooling: str = "mean"
  #: Time-unrolling of the recurrence scan (1 = no unrolling).
  unroll: int = 1

  def validate(self) -> "ModelConfig":
    _check(self.rnn in RNN_TYPES, "rnn", f"one of {RNN_TYPES}", self.rnn)
    _check(self.num_layers in (1, 2, 3), "num_layers", "1, 2 or 3", self.num_layers)
    for name in ("hidden", "proj_dim", "head_hidden", "embed_dim", "unroll"):
      v = getattr(self, name)
      _check(isinstance(v, int) and v > 0, name, "a positive integer", v)
    _check(0.0 <= self.dropout < 1.0, "dropout", "a value in [0, 1)", self.dropout)
    _check(self.pooling in POOLINGS, "pooling", f"one of {POOLINGS}", self.pooling)
    return self


@dataclass(frozen=True)
class LossConfig:
  """Loss weights and triplet settings."""
  lambda_aux: float = 1.0
  lambda_tri: float = 1.0
  margin: float = 0.2
  mining: str = "batch_hard"
  symmetric: bool = True
  #: K quantile bins per continuous dimension ("same emotion" = same bin).
  num_bins: int = 3
  #: For sequence tasks: frames pooled into one embedding for the triplet
  #: loss (50 frames = 2 s at 40 ms); windows give T / segment embeddings.
  triplet_segment: int = 50

  def validate(self) -> "LossConfig":
    _check(self.lambda_aux >= 0, "lambda_aux", "a value >= 0", self.lambda_aux)
    _check(self.lambda_tri >= 0, "lambda_tri", "a value >= 0", self.lambda_tri)
    _check(isinstance(self.margin, (int, float)) and self.margin > 0, "margin",
           "a number > 0", self.margin)
    _check(self.mining in MINING_MODES, "mining", f"one of {MINING_MODES}",
           self.mining)
    _check(isinstance(self.num_bins, int) and self.num_bins >= 2, "num_bins",
           "an integer >= 2", self.num_bins)
    _check(isinstance(self.triplet_segment, int) and self.triplet_segment > 0,
           "triplet_segment", "a positive integer", self.triplet_segment)
    return self


@dataclass(frozen=True)
class OptimConfig:
  optimizer: str = "adam"
  learning_rate: float = 1e-3
  clip_norm: float = 1.0
  weight_decay: float = 0.0

  def validate(self) -> "OptimConfig":
    _check(self.optimizer in ("adam", "adamw", "sgd"), "optimizer",
           "one of ('adam', 'adamw', 'sgd')", self.optimizer)
    _check(self.learning_rate > 0, "learning_rate", "a value > 0", self.learning_rate)
    _check(self.clip_norm >= 0, "clip_norm", "a value >= 0 (0 = off)", self.clip_norm)
    _check(self.weight_decay >= 0, "weight_decay", "a value >= 0", self.weight_decay)
    return self


@dataclass(frozen=True)
class TaskConfig:
  """What the model predicts and from what.

  ``num_outputs``: regression dimensions (e.g. 2 = arousal, valence) or the
  number of classes.  ``target_dim`` / ``aux_dim``: input feature widths of
  the target and auxiliary modality.
  """
  setting: str = "emobed"
  task: str = "regression"
  num_outputs: int = 2
  target_dim: int = 88
  aux_dim: int = 168

  @property
  def parts(self) -> dict[str, bool]:
    return SETTING_PARTS[self.setting]

  def validate(self) -> "TaskConfig":
    _check(self.setting in SETTINGS, "setting", f"one of {SETTINGS}", self.setting)
    _check(self.task in TASKS, "task", f"one of {TASKS}", self.task)
    _check(isinstance(self.num_outputs, int) and self.num_outputs > 0,
           "num_outputs", "a positive integer", self.num_outputs)
    if self.task == "classification":
      _check(self.num_outputs >= 2, "num_outputs", ">= 2 classes", self.num_outputs)
    _check(isinstance(self.target_dim, int) and self.target_dim > 0, "target_dim",
           "a positive feature width", self.target_dim)
    if self.parts["aux"]:
      _check(isinstance(self.aux_dim, int) and self.aux_dim > 0, "aux_dim",
             "a positive feature width", self.aux_dim)
    return self


@dataclass(frozen=True)
class CoreConfig:
  """Everything the model and the train step need (no data, no paths)."""
  task: TaskConfig = field(default_factory=TaskConfig)
  model: ModelConfig = field(default_factory=ModelConfig)
  loss: LossConfig = field(default_factory=LossConfig)
  optim: OptimConfig = field(default_factory=OptimConfig)

  def validate(self) -> "CoreConfig":
    self.task.validate()
    self.model.validate()
    self.loss.validate()
    self.optim.validate()
    return self

  def replace(self, **groups: dict[str, Any]) -> "CoreConfig":
    """``cfg.replace(model=dict(hidden=32))`` -> a new, validated config."""
    new = {k: dataclasses.replace(getattr(self, k), **v) for k, v in groups.items()}
    return dataclasses.replace(self, **new).validate()


def to_dict(cfg: Any) -> dict[str, Any]:
  return dataclasses.asdict(cfg)


def from_dict(cls: type, d: dict[str, Any]):
  """Rebuild a (nested) config dataclass from :func:`to_dict` output."""
  kwargs = {}
  fields = {f.name: f for f in dataclasses.fields(cls)}
  for k, v in d.items():
    if k not in fields:
      raise ConfigError(f"config: unknown field {k!r} for {cls.__name__}")
    ftype = fields[k].type
    sub = _DATACLASSES.get(ftype if isinstance(ftype, str) else getattr(ftype, "__name__", ""))
    kwargs[k] = from_dict(sub, v) if sub is not None and isinstance(v, dict) else v
  return cls(**kwargs)


_DATACLASSES = {c.__name__: c for c in (ModelConfig, LossConfig, OptimConfig,
                                        TaskConfig, CoreConfig)}
