"""Typed, frozen configuration of a run: every setting is declared once, here.

Each field carries its default, its help text, its allowed values (the
tuples below) and whether it belongs to the run's identity, through
:func:`option` (a :func:`dataclasses.field` with metadata).  ``launch/``
derives the flat command-line flags (``--hidden``, ``--margin``, ...) and the
config from these fields (``launch/_cli.py``); adding a field adds its flag.
Fields made with :func:`derived` are read off the data (feature widths,
number of outputs) and have no flag.

The library only ever sees these dataclasses.  ``validate()`` raises
:class:`ConfigError` (a ``ValueError``) whose message names the field (the
flag of the same name) and what was expected.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

# (imports jax.numpy but creates no backend: XLA_FLAGS set afterwards still apply)
from emobed_jax.lstm_cell import pallas_supports_hidden

SETTINGS = ("mono", "joint", "crossmodal", "emobed")
TASKS = ("regression", "classification")
LEVELS = ("frame", "utterance")
RNN_TYPES = ("lstm", "gru")
POOLINGS = ("mean", "attention")
RNN_IMPLS = ("auto", "scan", "pallas", "wavefront")
OPTIMIZERS = ("adam", "adamw", "sgd")
EVAL_SPLITS = ("auto", "dev", "train", "validation", "test")
#: Tasks a run may ask for; ``auto`` is the corpus's own (RECOLA: regression,
#: OMG-Emotion: the paper's 7-class classification).
TASK_CHOICES = ("auto",) + TASKS
CLASS_WEIGHTS = ("none", "inverse")
#: Audio features of OMG-Emotion utterances (emobed_datasets.omg_emotion).
OMG_AUDIO_FEATURES = ("egemaps_lld", "egemaps_functionals", "compare_lld")
#: --input_feed (emobed_jax.device_windows): where training windows are cut.
INPUT_FEEDS = ("auto", "host", "device")


def option(default: Any, help: str, *, choices: tuple[str, ...] | None = None,
           identity: bool = True) -> Any:
  """A config field that is also a command-line flag of the same name.

  Args:
    default: the default value (immutable: str, int, float, bool or tuple).
    help: one line for ``--help``.
    choices: the allowed values of a string field (a flag enum).
    identity: whether the value changes results, i.e. whether a workdir
      holding a run with another value is "another run" (see
      :func:`identity`).  False for fields that only change where files are
      or how fast the step runs (``log_every``, ``rnn_impl``, ``data_dir``).
  """
  return field(default=default, metadata=dict(help=help, choices=choices,
                                               identity=identity, flag=True))


def derived(default: Any) -> Any:
  """A config field read off the data (e.g. feature widths): no flag."""
  return field(default=default, metadata=dict(flag=False, identity=True))


MINING_MODES = ("batch_all", "batch_hard", "semi_hard")

#: Which parts each setting has (docs/DESIGN.md, "Training settings").
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
  """Encoder / head / embedding sizes (docs/METHOD.md: our choices)."""
  rnn: str = option("lstm", "Recurrent cell.", choices=RNN_TYPES)
  num_layers: int = option(2, "Recurrent layers per encoder.")
  hidden: int = option(64, "Recurrent width.")
  proj_dim: int = option(64, "Input projection width (Dense before the recurrent layers).")
  dropout: float = option(0.0, "Dropout after each recurrent layer.")
  head_hidden: int = option(32, "Hidden width of the recognition head.")
  embed_dim: int = option(32, "Width of the (L2-normalised) emotion embedding.")
  pooling: str = option("mean", "Pooling of utterance-level tasks (classification).",
                         choices=POOLINGS)
  unroll: int = option(1, "Time-unrolling of the recurrence loop (scan and wavefront "
                        "impls; 1 = none).", identity=False)
  rnn_impl: str = option(
      "auto", "How the LSTM recurrence runs: auto = pallas on a GPU, scan elsewhere; "
      "scan = lax.scan loops; pallas = Pallas (Triton) kernels; wavefront = all layers "
      "in one loop. Same parameters; values agree to about 1e-4 on a CPU, looser with "
      "TF32 matrix products on a GPU (PERF_NOTES.md).",
      choices=RNN_IMPLS, identity=False)

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
  lambda_aux: float = option(1.0, "Weight of the auxiliary task loss (joint, emobed).")
  lambda_tri: float = option(1.0, "Weight of the triplet loss (crossmodal, emobed).")
  margin: float = option(0.2, "Triplet margin (squared L2 distance of unit vectors).")
  mining: str = option("batch_hard", "Triplet mining.", choices=MINING_MODES)
  symmetric: bool = option(True, "Also use auxiliary embeddings as anchors.")
  num_bins: int = option(3, "Quantile bins per dimension defining 'same emotion' "
                          "(regression: same joint bin).")
  triplet_segment: int = option(50, "Frames pooled into one embedding for the triplet "
                                 "loss (50 frames = 2 s at 40 ms; utterance tasks embed "
                                 "whole utterances).")
  class_weights: str = option("none", "Classification: per-class loss weights against "
                              "class imbalance: none, or inverse = N / (C * N_c) over the "
                              "training utterances.", choices=CLASS_WEIGHTS)

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
    _check(self.class_weights in CLASS_WEIGHTS, "class_weights", f"one of {CLASS_WEIGHTS}",
           self.class_weights)
    return self


@dataclass(frozen=True)
class OptimConfig:
  """Optimiser (optax)."""
  optimizer: str = option("adam", "Optimiser.", choices=OPTIMIZERS)
  learning_rate: float = option(1e-3, "Learning rate.")
  clip_norm: float = option(1.0, "Global gradient-norm clipping (0 = off).")
  weight_decay: float = option(0.0, "adamw weight decay.")

  def validate(self) -> "OptimConfig":
    _check(self.optimizer in OPTIMIZERS, "optimizer", f"one of {OPTIMIZERS}",
           self.optimizer)
    _check(self.learning_rate > 0, "learning_rate", "a value > 0", self.learning_rate)
    _check(self.clip_norm >= 0, "clip_norm", "a value >= 0 (0 = off)", self.clip_norm)
    _check(self.weight_decay >= 0, "weight_decay", "a value >= 0", self.weight_decay)
    return self


@dataclass(frozen=True)
class TaskConfig:
  """What the model predicts and from what.

  ``num_outputs``: regression dimensions (e.g. 2 = arousal, valence) or the
  number of classes.  ``target_dim`` / ``aux_dim``: input feature widths of
  the target and auxiliary modality.  ``level``: ``frame`` (one prediction
  per frame, RECOLA) or ``utterance`` (one per utterance, OMG-Emotion;
  classification is always per utterance).
  """
  setting: str = option("emobed", "Training setting: mono, joint (shared head), "
                         "crossmodal (triplet loss), emobed (both).", choices=SETTINGS)
  task: str = derived("regression")
  level: str = derived("frame")
  num_outputs: int = derived(2)
  target_dim: int = derived(88)
  aux_dim: int = derived(168)

  @property
  def parts(self) -> dict[str, bool]:
    return SETTING_PARTS[self.setting]

  @property
  def per_utterance(self) -> bool:
    """One prediction per utterance (classification, or utterance-level
    regression), not one per frame."""
    return self.task == "classification" or self.level == "utterance"

  def validate(self) -> "TaskConfig":
    _check(self.setting in SETTINGS, "setting", f"one of {SETTINGS}", self.setting)
    _check(self.task in TASKS, "task", f"one of {TASKS}", self.task)
    _check(isinstance(self.num_outputs, int) and self.num_outputs > 0,
           "num_outputs", "a positive integer", self.num_outputs)
    _check(self.level in LEVELS, "level", f"one of {LEVELS}", self.level)
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


DATASETS = ("recola", "demo", "omg", "demo_omg")
#: Corpora of utterances (one label per utterance), the others are
#: continuous recordings (a label every frame).
UTTERANCE_DATASETS = ("omg", "demo_omg")
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
  dataset: str = option("demo", "Corpus: recola, omg (OMG-Emotion), or the generated "
                         "demo corpora in their formats: demo (RECOLA), demo_omg.",
                         choices=DATASETS)
  task: str = option("auto", "What to predict: auto = the corpus's own (recola: "
                     "arousal/valence per frame; omg: the paper's 7 classes per utterance); "
                     "omg also takes regression (arousal/valence per utterance, CCC over "
                     "utterances, the challenge's task).", choices=TASK_CHOICES)
  data_dir: str = option("", "Prepared data. Default: $EMOBED_DATA_DIR, else "
                          "~/emobed_data.", identity=False)
  manual_dir: str = option("", "recola: the unpacked AVEC 2016 package (default: "
                            "$RECOLA_DIR); omg: the folder with the organisers' CSVs and "
                            "clips (default: $OMG_DIR).", identity=False)
  omg_split_dirs: tuple[str, ...] = option(
      ("train", "validation", "test"), "omg: folders of the train, validation and test "
      "clips under --manual_dir (the organisers' download script takes the target folder "
      "as an argument).", identity=False)
  omg_audio_features: str = option(
      "egemaps_lld", "omg: audio features computed from the clips with openSMILE: "
      "egemaps_lld (25 low-level descriptors every 10 ms), egemaps_functionals (88 "
      "functionals of sliding windows), compare_lld (ComParE 2016, 65 descriptors every "
      "10 ms).", choices=OMG_AUDIO_FEATURES)
  demo_seed: int = option(0, "demo: corpus seed.")
  modality: str = option("audio", "Target (inference) modality: audio, video, or a "
                          "RECOLA feature set (video_appearance, video_geometric, ecg, "
                          "hrhrv, eda, scl, scr).")
  aux_modality: str = option("", "Auxiliary (training-only) modality. Default: video "
                              "for an audio target, audio otherwise.")
  dimensions: tuple[str, ...] = option(("arousal", "valence"),
                                        "Emotion dimensions to predict (comma-separated).")
  feature_variant: str = option("auto", "Which RECOLA feature variant: auto = the "
                                 "matching one, both for 2 dimensions.",
                                 choices=FEATURE_VARIANTS)
  window: int = option(300, "Training window length in frames (40 ms each).")
  hop: int = option(50, "Hop between training windows in frames.")
  frame_step: int = option(1, "Keep every k-th frame.")
  delay_s: float = option(2.0, "Label delay compensation in seconds.")
  frame_rate: float = derived(25.0)
  val_recordings: int = option(2, "Train recordings held out (the last ones) for "
                                "model selection; 0 = select on the evaluation split.")
  eval_split: str = option("auto", "Split of the final metrics: auto = dev on RECOLA "
                            "(its test labels were never released), test on OMG-Emotion "
                            "(labelled test; model selection on validation).",
                            choices=EVAL_SPLITS)
  length_buckets: int = option(4, "omg: training batches are cut from utterances of "
                               "similar length, padded to one of this many lengths "
                               "(quantiles of the training lengths; one compile each).")

  def __post_init__(self):
    if not self.aux_modality:  # the other of audio/video
      object.__setattr__(self, "aux_modality",
                         "video" if self.modality == "audio" else "audio")
    # "auto" resolves to the corpus's own, so config.json names what ran.
    utt = self.dataset in UTTERANCE_DATASETS
    if self.task == "auto":
      object.__setattr__(self, "task", "classification" if utt else "regression")
    if self.eval_split == "auto":
      object.__setattr__(self, "eval_split", "test" if utt else "dev")

  @property
  def utterances(self) -> bool:
    """An utterance corpus (OMG-Emotion or its demo): one label per utterance."""
    return self.dataset in UTTERANCE_DATASETS

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
    if self.utterances:
      _check(self.modality in ("audio", "video"), "modality", "audio or video on OMG-Emotion",
             self.modality)
      _check(self.aux_modality in ("audio", "video"), "aux_modality",
             "audio or video on OMG-Emotion", self.aux_modality)
      _check(self.eval_split in ("validation", "test"), "eval_split",
             "'validation' or 'test' on OMG-Emotion", self.eval_split)
      _check(len(self.omg_split_dirs) == 3 and all(self.omg_split_dirs), "omg_split_dirs",
             "three folder names (train, validation, test)", ",".join(self.omg_split_dirs))
      _check(self.omg_audio_features in OMG_AUDIO_FEATURES, "omg_audio_features",
             f"one of {OMG_AUDIO_FEATURES}", self.omg_audio_features)
      _check(isinstance(self.length_buckets, int) and self.length_buckets >= 1,
             "length_buckets", "a positive integer", self.length_buckets)
    else:
      _check(self.task == "regression", "task", "regression (or auto) on RECOLA, whose "
             "gold standard is continuous", self.task)
      _check(self.eval_split in ("dev", "train"), "eval_split",
             "'dev' (RECOLA test labels were never released)", self.eval_split)
    return self


@dataclass(frozen=True)
class RunConfig:
  """A whole training run: the core (model, losses, optimiser) plus data and loop."""
  core: CoreConfig = field(default_factory=CoreConfig)
  data: DataConfig = field(default_factory=DataConfig)
  batch_size: int = option(32, "Global batch size (windows), divided over all devices.")
  epochs: int = option(30, "Epochs.")
  seed: int = option(0, "Seed of initialisation, data order and dropout.")
  log_every: int = option(10, "Steps between progress lines (train metrics are means "
                           "over these steps).", identity=False)
  eval_every_epochs: int = option(1, "Epochs between validations (model selection).")
  skip_nonfinite: bool = option(False, "Skip (do not apply) a batch whose loss or gradient "
                                "is NaN or inf, and count it in metrics.jsonl; without "
                                "it such a batch stops the run.", identity=False)
  input_feed: str = option(
      "auto", "Where training windows are cut: host (a background thread cuts each batch "
      "into one block per device and puts it there; on a CPU without a copy), device (the training split is copied to every "
      "device once and each step's windows are cut there from their positions), auto = "
      "device on a GPU/TPU, host on a CPU and for OMG utterances (device is refused "
      "for them). The data order and values are the same either way.",
      choices=INPUT_FEEDS, identity=False)

  def validate(self) -> "RunConfig":
    self.core.validate()
    self.data.validate()
    _check(isinstance(self.batch_size, int) and self.batch_size > 0, "batch_size",
           "a positive integer", self.batch_size)
    _check(isinstance(self.epochs, int) and self.epochs > 0, "epochs", "a positive integer",
           self.epochs)
    _check(self.log_every > 0, "log_every", "a positive integer", self.log_every)
    _check(self.input_feed in INPUT_FEEDS, "input_feed", f"one of {', '.join(INPUT_FEEDS)}",
           self.input_feed)
    _check(not (self.data.utterances and self.input_feed == "device"), "input_feed",
           "host or auto for OMG-Emotion (utterances are padded on the host)", self.input_feed)
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


@dataclass(frozen=True)
class Option:
  """One leaf field of a nested config: where it sits and what its flag is."""
  path: tuple[str, ...]        # e.g. ("core", "model", "hidden")
  section: type                # the dataclass that declares it
  field: dataclasses.Field
  type: Any                    # the resolved annotation (int, float, str, bool, tuple)

  @property
  def name(self) -> str:
    return self.path[-1]

  @property
  def help(self) -> str:
    return self.field.metadata.get("help", "")

  @property
  def choices(self) -> tuple[str, ...] | None:
    return self.field.metadata.get("choices")

  @property
  def is_flag(self) -> bool:
    return bool(self.field.metadata.get("flag", False))

  @property
  def in_identity(self) -> bool:
    return bool(self.field.metadata.get("identity", True))


def options(cls: type = None, prefix: tuple[str, ...] = ()) -> list[Option]:
  """Every leaf field of the config dataclass ``cls`` (default
  :class:`RunConfig`), depth first in declaration order.

  Raises:
    ConfigError: two flag fields share a name (flags are flat, so their
      names must be unique across sections; a :func:`derived` field may share
      its name with a flag, e.g. ``data.task`` asked for and ``core.task.task``
      resolved from it).
  """
  cls = cls or RunConfig
  hints = typing.get_type_hints(cls)
  out: list[Option] = []
  for f in dataclasses.fields(cls):
    t = hints[f.name]
    if dataclasses.is_dataclass(t):
      out.extend(options(t, prefix + (f.name,)))
    else:
      out.append(Option(prefix + (f.name,), cls, f, t))
  if not prefix:
    seen: dict[str, Option] = {}
    for o in out:
      if not o.is_flag:
        continue
      if o.name in seen:
        raise ConfigError(f"config: field name {o.name!r} is used by both "
                          f"{'.'.join(seen[o.name].path)} and {'.'.join(o.path)}")
      seen[o.name] = o
  return out


def from_flat(values: dict[str, Any], cls: type = None) -> Any:
  """Build the nested config ``cls`` (default :class:`RunConfig`) from flat
  ``{field name: value}`` (e.g. parsed flags); absent names keep defaults.
  Lists become tuples.  Not validated (call ``.validate()``)."""
  cls = cls or RunConfig
  nested: dict[str, Any] = {}
  for o in options(cls):
    if o.is_flag and o.name in values:
      d = nested
      for p in o.path[:-1]:
        d = d.setdefault(p, {})
      v = values[o.name]
      d[o.name] = tuple(v) if isinstance(v, list) else v
  return from_dict(cls, nested)


def identity(cfg: Any) -> dict[str, Any]:
  """What makes two runs the same run: the config as a nested dict without
  the fields declared ``identity=False`` (they change where files are or
  how fast the step runs, not the results) and without the fields read off
  the data (:func:`derived`)."""
  d = to_dict(cfg)
  for o in options(type(cfg)):
    if not o.in_identity or not o.is_flag:
      parent = d
      for p in o.path[:-1]:
        parent = parent[p]
      parent.pop(o.name, None)
  return d
