"""Monomodal inference from a finished (or running) workdir: the target branch alone.

    predictor = load_predictor("runs/demo_emobed_audio_seed0")
    pred = predictor(features)          # [frames, target_dim] -> [frames, D]

    omg = load_predictor("runs/demo_omg_emobed_audio_seed0")
    probs = omg.predict_utterance(x)    # [frames, target_dim] -> [7] class probabilities

The predictor reads ``config.json`` and ``stats.json`` of the run, restores
the best checkpoint and keeps only the target encoder and the head: no
auxiliary modality, input or parameter is needed.  Features are
standardised with the run's training statistics and delayed like the
training data, so ``pred[t]`` estimates the gold standard at frame ``t``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import numpy as np

from emobed_jax import checkpoint, input_pipeline, models, parallel, train, utterances, writers
from emobed_jax import workdir as workdir_lib
from emobed_jax.config import RunConfig


@dataclasses.dataclass
class Predictor:
  """Target-branch inference with the run's standardisation and label delay."""
  config: RunConfig
  params: dict[str, Any]
  standardizer: input_pipeline.Standardizer
  model: models.EmoBed

  def __post_init__(self):
    self._apply = jax.jit(lambda p, x, m: self.model.apply(
        {"params": p}, x, m, method=models.EmoBed.predict))
    self._p_apply = None   # pmapped twin for predict_many, built on first use

  @property
  def dimensions(self) -> tuple[str, ...]:
    return self.config.data.dimensions

  @property
  def per_utterance(self) -> bool:
    """One prediction per utterance (OMG-Emotion models): use
    :meth:`predict_utterance`."""
    return self.config.data.utterances

  @property
  def layout(self) -> str:
    """What one input row holds, e.g. ``[frames, 176]: the arousal-variant
    then the valence-variant audio features of docs/DATA.md side by side``."""
    d = self.config.data
    want = self.config.core.task.target_dim
    if self.per_utterance:
      if d.modality == "audio":
        return (f"[frames, {want}]: the {d.omg_audio_features} audio features of "
                "emobed_jax.features.utterance_features")
      return (f"[frames, {want}]: the OpenFace columns "
              "emobed_datasets.omg_emotion.readers.OPENFACE_COLUMNS, in that order")
    v = d.variants()
    if len(v) == 1:
      what = f"the {v[0]}-variant {d.modality} features of docs/DATA.md"
    else:
      what = (f"the {'-variant then the '.join(v)}-variant {d.modality} features of "
              f"docs/DATA.md side by side ({want // len(v)} columns each)")
    return f"[frames, {want}]: {what}"

  def _checked(self, features: Any) -> np.ndarray:
    if self.per_utterance:
      raise ValueError("this run's model predicts one value per utterance: use "
                       "predict_utterance")
    features = np.asarray(features, np.float32)
    want = self.config.core.task.target_dim
    if features.ndim != 2 or features.shape[1] != want:
      raise ValueError(f"features: expected {self.layout}; got {features.shape}")
    if not np.all(np.isfinite(features)):
      raise ValueError("features: NaN or inf values")
    return features

  def _aligned(self, features: np.ndarray, name: str = "input") -> input_pipeline.Recording:
    d = self.config.data
    rec = input_pipeline.Recording(name, features, None, None)
    return input_pipeline.align(self.standardizer.apply(rec), d.delay_frames, d.frame_step)

  def predict_many(self, features: list[np.ndarray],
                   names: list[str] | None = None) -> list[np.ndarray]:
    """Several recordings at once, spread over all local devices.

    Each item as for :meth:`__call__` (``[frames_i, target_dim]`` raw
    features); returns one ``[frames_i, D]`` float32 array per item, in
    order.  The recordings are padded to the longest and split over the
    devices (``input_pipeline.eval_arrays``, the pmapped eval step
    ``train.eval_step``, one device call and one copy back per
    ``jax.local_device_count()`` recordings), as
    ``evaluate.evaluate_recordings`` does; the values equal
    :meth:`__call__`'s up to float32 rounding of other batch shapes.

    Raises:
      ValueError: an item of another shape (the message names the layout
        and the item: ``names[i]`` if given, else its index), NaN or inf.
    """
    feats = []
    for i, f in enumerate(features):
      try:
        feats.append(self._checked(f))
      except ValueError as e:
        raise ValueError(f"{names[i] if names else f'item {i}'}: {e}") from None
    if self._p_apply is None:
      self._p_apply = parallel.pmap_eval_step(
          lambda p, x, m: train.eval_step(p, x, m, model=self.model))
      self._p_params = parallel.replicate(self.params)
    d, n = self.config.data, jax.local_device_count()
    out = []
    for g in range(0, len(feats), n):
      group = feats[g:g + n]
      recs = [self._aligned(f, f"input_{g + i}") for i, f in enumerate(group)]
      arrays = input_pipeline.eval_arrays(recs, n)
      preds = np.asarray(self._p_apply(self._p_params, arrays["target"], arrays["mask"]))
      preds = preds.reshape((-1,) + preds.shape[2:])
      out += [input_pipeline.upsample(preds[i, :r.num_frames], d.frame_step, f.shape[0])
              for i, (r, f) in enumerate(zip(recs, group))]
    return out

  def __call__(self, features: np.ndarray) -> np.ndarray:
    """Raw (unstandardised) features of one recording -> ``[frames, D]`` predictions.

    ``features``: ``[frames, target_dim]`` float, one row per 40 ms frame, the
    run's target modality in the corpus's layout (:attr:`layout`): for each
    variant of ``config.data.variants()`` in that order, that variant's
    feature file's columns, side by side.  A RECOLA audio model trained on
    both dimensions with ``feature_variant=auto`` takes ``[frames, 176]``:
    ``features_audio/arousal/<rec>.arff`` (88 eGeMAPS functionals, 4 s
    windows) then ``features_audio/valence/<rec>.arff`` (6 s windows);
    :func:`emobed_jax.features.audio_features` computes it from a WAV.
    Returns ``[frames, D]`` float32, D = ``config.data.dimensions``.

    Raises:
      ValueError: another shape (the message names the layout), NaN or inf;
        an utterance model (use :meth:`predict_utterance`).
    """
    features = self._checked(features)
    d = self.config.data
    x = self._aligned(features).target[None]
    pred = np.asarray(self._apply(self.params, x, np.ones(x.shape[:2], np.float32)))[0]
    return input_pipeline.upsample(pred, d.frame_step, features.shape[0])


  def predict_utterance(self, features: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Raw features of one utterance -> its prediction (OMG-Emotion models).

    Args:
      features: ``[frames, target_dim]`` float in :attr:`layout`.
      mask: ``[frames]``, 1 for real frames (OpenFace ``success``), or None
        (all real).

    Returns:
      classification: ``[C]`` float32 class probabilities (softmax of the
      logits; class names in ``emobed_datasets.omg_emotion.CLASS_NAMES``);
      regression: ``[D]`` float32 values of ``config.data.dimensions``.

    Raises:
      ValueError: another shape (names the layout), NaN or inf on a real
        frame, no real frame, or a model of recordings (use ``__call__``).
    """
    if not self.per_utterance:
      raise ValueError("this run's model predicts every frame of a recording: call it")
    x = np.asarray(features, np.float32)
    want = self.config.core.task.target_dim
    if x.ndim != 2 or x.shape[1] != want or x.shape[0] == 0:
      raise ValueError(f"features: expected {self.layout}; got {x.shape}")
    m = np.ones(x.shape[0], np.float32) if mask is None else np.asarray(mask, np.float32)
    if m.shape != x.shape[:1]:
      raise ValueError(f"mask: expected [{x.shape[0]}], got {m.shape}")
    if not np.any(m > 0):
      raise ValueError("no real frame (every frame is masked: OpenFace found no face)")
    if not np.all(np.isfinite(x[m > 0])):
      raise ValueError("features: NaN or inf values")
    u = utterances.standardize(
        utterances.Utterance("input", x, m, None, None, 0, np.zeros(0, np.float32)),
        self.standardizer)
    out = np.asarray(self._apply(self.params, u.target[None], u.target_mask[None]))[0]
    if self.config.core.task.task == "classification":
      e = np.exp(out - out.max())
      return (e / e.sum()).astype(np.float32)
    return out.astype(np.float32)


def load_predictor(workdir: str | Path, *, best: bool = True,
                   rnn_impl: str = "auto") -> Predictor:
  """The target branch of a run's best (or latest) checkpoint.

  ``rnn_impl``: how the recurrence runs here (``ModelConfig.rnn_impl``; the
  run's own choice is ignored, it does not change values: a run trained
  with Pallas kernels on a GPU predicts with ``scan`` on a CPU).

  Raises:
    FileNotFoundError: the workdir lacks config.json, stats.json or a checkpoint.
  """
  config, stats, model, params = restore_run(workdir, best=best, rnn_impl=rnn_impl)
  return Predictor(config, models.target_branch(params),
                   input_pipeline.Standardizer.from_json(stats["standardizer"]), model)


def restore_run(workdir: str | Path, *, best: bool = True, rnn_impl: str = "auto"
                ) -> tuple[RunConfig, dict[str, Any], models.EmoBed, dict[str, Any]]:
  """A run's resolved config, ``stats.json``, model and the parameters of its
  best (or latest) checkpoint, every branch (``rnn_impl`` as in
  :func:`load_predictor`).

  Raises:
    FileNotFoundError: the workdir lacks config.json, stats.json or a checkpoint.
  """
  workdir = Path(workdir).expanduser()
  for name in ("config.json", "stats.json"):
    if not (workdir / name).is_file():
      raise FileNotFoundError(f"{workdir / name}: not found; expected a workdir written "
                              "by launch/train.py")
  config = workdir_lib.read_config(workdir)
  config = dataclasses.replace(
      config, core=config.core.replace(model=dict(rnn_impl=rnn_impl))).validate()
  stats = writers.read_json(workdir / "stats.json")
  model, template = train.create_train_state(config.core, jax.random.key(0))
  ckpt = checkpoint.Checkpointer(workdir / "checkpoints", async_save=False)
  try:
    state, _ = ckpt.restore(template, best=best)
  finally:
    ckpt.close()
  return config, stats, model, state.params
