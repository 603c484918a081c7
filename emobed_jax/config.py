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
RNN_IMPLS = ("auto", "scan", "pallas", "wavefront")


def pallas_supports_hidden(hidden: int) -> bool:
  """Whether the Pallas LSTM kernels take this hidden size (Triton: a power
  of two >= 16)."""
  return isinstance(hidden, int) and hidden >= 16 and hidden & (hidden - 1) == 0
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
  #: How the LSTM recurrence runs (RNN_IMPLS): "scan" (lax.scan loops, the
  #: CPU default), "pallas" (one Pallas kernel per layer and pass: the GPU
  #: default), "wavefront" (all layers in one scan, no dropout between
  #: layers), "auto" (pallas on a GPU when the hidden size allows it, else
  #: scan).  Same parameters and values either way (PERF_NOTES.md).
  rnn_impl: str = "auto"

  def validate(self) -> "ModelConfig":
    _check(self.rnn in RNN_TYPES, "rnn", f"one of {RNN_TYPES}", self.rnn)
    _check(self.num_layers in (1, 2, 3), "num_layers", "1, 2 or 3", self.num_layers)
    for name in ("hidden", "proj_dim", "head_hidden", "embed_dim", "unroll"):
      v = getattr(self, name)
      _check(isinstance(v, int) and v > 0, name, "a positive integer", v)
    _check(0.0 <= self.dropout < 1.0, "dropout", "a value in [0, 1)", self.dropout)
    _check(self.pooling in POOLINGS, "pooling", f"one of {POOLINGS}", self.pooling)
    _check(self.rnn_impl in RNN_IMPLS, "rnn_impl", f"one of {RNN_IMPLS}", self.rnn_impl)
    if self.rnn_impl in ("pallas", "wavefront"):
      _check(self.rnn == "lstm", "rnn_impl", "'auto' or 'scan' with --rnn=gru", self.rnn_impl)
    if self.rnn_impl == "pallas":
      _check(pallas_supports_hidden(self.hidden), "hidden",
             "a power of two >= 16 with --rnn_impl=pallas", self.hidden)
    if self.rnn_impl == "wavefront":
      _check(self.dropout == 0.0, "dropout", "0 with --rnn_impl=wavefront "
             "(no dropout between wavefront layers)", self.dropout)
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


DATASETS = ("recola", "demo")
#: Modality names: a RECOLA feature set, or an alias.
MODALITY_ALIASES = {"audio": "audio", "video": "video_appearance"}
FEATURE_SET_NAMES = ("audio", "video_appearance", "video_geometric", "ecg",
                     "hrhrv", "eda", "scl", "scr")
FEATURE_VARIANTS = ("auto", "arousal", "valence", "concat")


@dataclass(frozen=True)
class DataConfig:
  """Where the data is and how it is cut into examples (RECOLA: 40 ms frames).

  ``modality`` / ``aux_modality``: ``audio``, ``video`` (= the appearance
  features) or any RECOLA feature set name.  ``feature_variant``: RECOLA
  ships every feature set computed twice (windows tuned for arousal and for
  valence); ``auto`` takes the matching one for a single dimension and
  concatenates both for two.
  """
  dataset: str = "demo"
  data_dir: str = ""
  manual_dir: str = ""
  demo_seed: int = 0
  modality: str = "audio"
  aux_modality: str = "video"
  dimensions: tuple[str, ...] = ("arousal", "valence")
  feature_variant: str = "auto"
  window: int = 300
  hop: int = 50
  frame_step: int = 1
  delay_s: float = 2.0
  frame_rate: float = 25.0
  #: Training recordings held out (the last ones of the train split) for
  #: model selection; 0 selects on the evaluation split (then say so).
  val_recordings: int = 2
  eval_split: str = "dev"

  def feature_set(self, which: str) -> str:
    name = getattr(self, which)
    return MODALITY_ALIASES.get(name, name)

  def variants(self) -> tuple[str, ...]:
    if self.feature_variant == "auto":
      return tuple(self.dimensions)
    if self.feature_variant == "concat":
      return ("arousal", "valence")
    return (self.feature_variant,)

  @property
  def delay_frames(self) -> int:
    return int(round(self.delay_s * self.frame_rate))

  def validate(self) -> "DataConfig":
    _check(self.dataset in DATASETS, "dataset", f"one of {DATASETS}", self.dataset)
    names = tuple(MODALITY_ALIASES) + FEATURE_SET_NAMES
    _check(self.modality in names, "modality", f"one of {names}", self.modality)
    _check(self.aux_modality in names, "aux_modality", f"one of {names}", self.aux_modality)
    _check(self.feature_set("aux_modality") != self.feature_set("modality"), "aux_modality",
           f"a modality other than the target {self.modality!r}", self.aux_modality)
    dims = ("arousal", "valence")
    _check(len(self.dimensions) > 0 and len(set(self.dimensions)) == len(self.dimensions)
           and all(d in dims for d in self.dimensions), "dimensions",
           f"a comma-separated subset of {dims}", ",".join(self.dimensions))
    _check(self.feature_variant in FEATURE_VARIANTS, "feature_variant",
           f"one of {FEATURE_VARIANTS}", self.feature_variant)
    for name in ("window", "hop", "frame_step"):
      v = getattr(self, name)
      _check(isinstance(v, int) and v > 0, name, "a positive integer", v)
    _check(self.delay_s >= 0, "delay_s", "a delay >= 0 seconds", self.delay_s)
    _check(self.val_recordings >= 0, "val_recordings", "an integer >= 0", self.val_recordings)
    _check(self.eval_split in ("dev", "train"), "eval_split",
           "'dev' (RECOLA test labels were never released)", self.eval_split)
    return self


@dataclass(frozen=True)
class RunConfig:
  """A whole training run: the core (model, losses, optimiser) plus data and loop."""
  core: CoreConfig = field(default_factory=CoreConfig)
  data: DataConfig = field(default_factory=DataConfig)
  batch_size: int = 32
  epochs: int = 30
  seed: int = 0
  log_every: int = 10
  eval_every_epochs: int = 1

  def validate(self) -> "RunConfig":
    self.core.validate()
    self.data.validate()
    _check(isinstance(self.batch_size, int) and self.batch_size > 0, "batch_size",
           "a positive integer", self.batch_size)
    _check(isinstance(self.epochs, int) and self.epochs > 0, "epochs", "a positive integer",
           self.epochs)
    _check(self.log_every > 0, "log_every", "a positive integer", self.log_every)
    _check(self.eval_every_epochs > 0, "eval_every_epochs", "a positive integer",
           self.eval_every_epochs)
    return self


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
    if sub is not None and isinstance(v, dict):
      v = from_dict(sub, v)
    elif isinstance(v, list):
      v = tuple(v)  # JSON has no tuples
    kwargs[k] = v
  return cls(**kwargs)


_DATACLASSES = {c.__name__: c for c in (ModelConfig, LossConfig, OptimConfig,
                                        TaskConfig, CoreConfig, DataConfig, RunConfig)}
