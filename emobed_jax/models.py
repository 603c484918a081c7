"""Flax modules of EmoBed: per-modality encoders, heads, embedding, the wrapper.

Shapes: sequences are ``[batch, time, features]``; ``mask`` is
``[batch, time]`` with 1 for real frames.  A masked frame leaves the
recurrent state untouched (the carry is held), is excluded from every
pooling, and so changes nothing downstream of it.

The recurrent layers compute the input projection of *all* time steps
outside the scan (per-gate matmuls over the whole sequence), so the
sequential part is only ``h @ U`` per step; the LSTM's backward pass is
hand-written (:mod:`emobed_jax.rnn_kernels`).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from emobed_jax import rnn_kernels, rnn_pallas
from emobed_jax.config import CoreConfig
from emobed_jax.losses import l2_normalize


def sequence_mask(lengths, max_len: int):
  """``[batch]`` lengths -> ``[batch, max_len]`` float mask."""
  return (jnp.arange(max_len)[None, :] < jnp.asarray(lengths)[:, None]).astype(jnp.float32)


def masked_mean(x, mask, axis: int = 1):
  """Mean of ``x [B, T, F]`` over time where ``mask [B, T]`` is 1."""
  m = mask[..., None].astype(x.dtype)
  x = jnp.where(m > 0, x, 0.0)
  return jnp.sum(x * m, axis=axis) / jnp.maximum(jnp.sum(m, axis=axis), 1.0)


class DenseParams(nn.Module):
  """A Dense layer's ``kernel``/``bias`` (same names and init as ``nn.Dense``),
  returned instead of applied, so a fused kernel can use them."""
  features: int

  @nn.compact
  def __call__(self, in_dim: int):
    k = self.param("kernel", nn.initializers.lecun_normal(), (in_dim, self.features))
    b = self.param("bias", nn.initializers.zeros, (self.features,))
    return k, b


def recurrent_kernel_init(gates: int):
  """Init of a fused ``[H, gates*H]`` recurrent kernel: one orthogonal block per gate."""
  init = nn.initializers.orthogonal()

  def fn(key, shape, dtype=jnp.float32):
    h = shape[0]
    return jnp.concatenate([init(k, (h, h), dtype) for k in jax.random.split(key, gates)],
                           axis=1)
  return fn


def resolve_rnn_impl(impl: str, cell: str, hidden: int) -> str:
  """``ModelConfig.rnn_impl`` -> what runs here: ``"auto"`` is ``"pallas"``
  on a GPU for an LSTM whose hidden size the kernels support, else
  ``"scan"``."""
  if impl != "auto":
    return impl
  if cell == "lstm" and jax.default_backend() == "gpu" and rnn_pallas.supported(hidden):
    return "pallas"
  return "scan"


class LSTMParams(nn.Module):
  """One LSTM layer's parameters, created exactly as :class:`Recurrent`
  creates them (same names, order and init) but returned, not applied: the
  wavefront stack runs all layers' recurrences in one loop."""
  hidden: int

  @nn.compact
  def __call__(self, in_dim: int):
    h = self.hidden
    u = self.param("recurrent", recurrent_kernel_init(4), (h, 4 * h))
    kernel, bias = DenseParams(4 * h, name="input")(in_dim)
    return kernel, bias, u


class Recurrent(nn.Module):
  """One LSTM or GRU layer with the input projection outside the recurrence.

  Parameters: ``input/{kernel,bias}`` (``[D, G*H]``, G = 4 LSTM gates i, f,
  g, o or 3 GRU gates r, z, n), ``recurrent`` (``[H, G*H]``) and, for the
  GRU, ``recurrent_bias``.  Input ``[B, T, D]`` and mask ``[B, T]``, or
  time-major ``[T, B, D]`` and ``[T, B, 1]`` with ``time_major=True`` (what
  :class:`Encoder` uses: one transpose for the whole stack).  The LSTM runs
  :func:`rnn_kernels.lstm_layer` (projection and recurrence under one
  hand-written backward pass; see PERF_NOTES.md).
  """
  hidden: int
  cell: str = "lstm"
  unroll: int = 1
  time_major: bool = False
  impl: str = "scan"

  @nn.compact
  def __call__(self, x, mask):
    h = self.hidden
    gates = 4 if self.cell == "lstm" else 3
    u = self.param("recurrent", recurrent_kernel_init(gates), (h, gates * h))
    if not self.time_major:
      x = jnp.swapaxes(x, 0, 1)
      mask = jnp.swapaxes(mask, 0, 1)[..., None]
    mask = mask.astype(x.dtype)
    if self.cell == "lstm":
      kernel, bias = DenseParams(gates * h, name="input")(x.shape[-1])
      impl = resolve_rnn_impl(self.impl, self.cell, h)
      ys = rnn_kernels.lstm_layer(x, kernel, bias, u, mask, self.unroll,
                                  "scan" if impl == "wavefront" else impl)
    else:
      bu = self.param("recurrent_bias", nn.initializers.zeros, (gates * h,))
      xw = nn.Dense(gates * h, name="input")(x)
      ys = rnn_kernels.gru_scan(xw, u, bu, mask, self.unroll)
    return ys if self.time_major else jnp.swapaxes(ys, 0, 1)


class Encoder(nn.Module):
  """Dense -> LayerNorm -> RNN layers (with dropout between), ``[B,T,D]->[B,T,H]``.

  The recurrent stack runs time-major (one transpose in, one out).  With
  ``impl="wavefront"`` the LSTM layers run as one wavefront ``lax.scan``
  (:func:`rnn_kernels.lstm_stack`, same parameters; no dropout between);
  ``impl="pallas"`` runs them as one wavefront Pallas kernel per pass when
  there is no dropout between them, else one Pallas kernel per layer.
  """
  proj_dim: int
  hidden: int
  num_layers: int
  cell: str = "lstm"
  dropout: float = 0.0
  unroll: int = 1
  impl: str = "scan"

  @nn.compact
  def __call__(self, x, mask, *, train: bool = False):
    x = nn.Dense(self.proj_dim, name="proj")(x)
    x = nn.LayerNorm(name="norm")(x)
    x = jnp.swapaxes(x, 0, 1)
    m = jnp.swapaxes(mask, 0, 1)[..., None].astype(x.dtype)
    impl = resolve_rnn_impl(self.impl, self.cell, self.hidden)
    if impl == "wavefront" and (self.cell != "lstm" or self.dropout > 0):
      raise ValueError("Encoder: impl='wavefront' needs an LSTM without dropout, "
                       f"got cell={self.cell!r}, dropout={self.dropout}")
    if impl == "wavefront" or (impl == "pallas" and self.dropout == 0 and self.num_layers > 1):
      # All layers in one wavefront loop: lax.scan or one Pallas kernel per pass.
      layers = []
      for i in range(self.num_layers):
        layers.append(LSTMParams(self.hidden, name=f"rnn_{i}")(
            x.shape[-1] if i == 0 else self.hidden))
      x = rnn_kernels.lstm_stack(x, layers, m, self.unroll,
                                 "pallas" if impl == "pallas" else "scan")
    else:
      for i in range(self.num_layers):
        x = Recurrent(self.hidden, self.cell, self.unroll, time_major=True,
                      impl=self.impl, name=f"rnn_{i}")(x, m)
        if self.dropout > 0:
          x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return jnp.swapaxes(x, 0, 1)


class Pool(nn.Module):
  """Masked temporal pooling ``[B, T, H] -> [B, H]``: mean or attention."""
  kind: str = "mean"

  @nn.compact
  def __call__(self, x, mask):
    if self.kind == "mean":
      return masked_mean(x, mask)
    score = nn.Dense(1, name="score")(jnp.tanh(nn.Dense(x.shape[-1], name="attn")(x)))[..., 0]
    score = jnp.where(mask > 0, score, -1e9)
    w = jax.nn.softmax(score, axis=1) * (mask > 0)
    w = w / jnp.maximum(jnp.sum(w, axis=1, keepdims=True), 1e-9)
    return jnp.einsum("bt,bth->bh", w, jnp.where(mask[..., None] > 0, x, 0.0))


class Head(nn.Module):
  """Recognition head.  Per frame ``[B,T,H] -> [B,T,D]``; per utterance
  (``pooled``: classification, utterance-level regression): pooled
  ``[B,T,H] -> [B,D]`` values or ``[B,C]`` logits."""
  pooled: bool
  num_outputs: int
  hidden: int
  pooling: str = "mean"

  @nn.compact
  def __call__(self, x, mask):
    if self.pooled:
      x = Pool(self.pooling, name="pool")(x, mask)
    x = nn.relu(nn.Dense(self.hidden, name="hidden")(x))
    return nn.Dense(self.num_outputs, name="out")(x)


def segment_pool(x, mask, segment: int):
  """Masked mean over consecutive segments of ``segment`` frames.

  ``x [B, T, F]``, ``mask [B, T]`` -> (``[B*S, F]``, ``[B*S]`` valid), with
  ``S = ceil(T / segment)``; the tail is padded with masked frames.
  """
  b, t, f = x.shape
  s = -(-t // segment)
  pad = s * segment - t
  if pad:
    x = jnp.pad(x, ((0, 0), (0, pad), (0, 0)))
    mask = jnp.pad(mask, ((0, 0), (0, pad)))
  xs = x.reshape(b * s, segment, f)
  ms = mask.reshape(b * s, segment)
  return masked_mean(xs, ms), (jnp.sum(ms, axis=1) > 0).astype(jnp.float32)


class EmoBed(nn.Module):
  """The four settings in one module (docs/DESIGN.md, "Training settings").

  Parameters (top-level names, stable for checkpoints):
    ``target_encoder``, ``head``: always (the target branch; inference needs
      only these).
    ``aux_encoder``: joint, crossmodal, emobed.
    ``aux_head``: crossmodal (its own head for the auxiliary modality).
    ``target_embed``, ``aux_embed``: crossmodal, emobed (projections of each
      encoder into the one shared embedding space).
  """
  config: CoreConfig

  def setup(self):
    cfg = self.config
    m, t = cfg.model, cfg.task
    parts = t.parts

    def head(name):
      return Head(t.per_utterance, t.num_outputs, m.head_hidden, m.pooling, name=name)

    self.target_encoder = self._encoder("target_encoder")
    self.head = head("head")
    if parts["aux"]:
      self.aux_encoder = self._encoder("aux_encoder")
    if parts["aux_head"]:
      self.aux_head = head("aux_head")
    if parts["triplet"]:
      self.target_embed = nn.Dense(m.embed_dim, name="target_embed")
      self.aux_embed = nn.Dense(m.embed_dim, name="aux_embed")

  def _encoder(self, name: str) -> nn.Module:
    """One branch's encoder, as configured (a subclass may build another one
    with the same interface: ``launch/benchmark.py``'s ``flax_cell``
    baseline)."""
    m = self.config.model
    return Encoder(m.proj_dim, m.hidden, m.num_layers, m.rnn, m.dropout,
                   m.unroll, m.rnn_impl, name=name)

  def _embed(self, proj, h, mask):
    """Embeddings of a branch: per utterance or per segment of frames."""
    if self.config.task.per_utterance:
      return l2_normalize(proj(masked_mean(h, mask))), (jnp.sum(mask, 1) > 0).astype(jnp.float32)
    pooled, valid = segment_pool(h, mask, self.config.loss.triplet_segment)
    return l2_normalize(proj(pooled)), valid

  def __call__(self, target, aux=None, mask=None, aux_mask=None, *,
               train: bool = False) -> dict[str, Any]:
    """Training forward pass.

    Args:
      target: ``[B, T, target_dim]`` target-modality features.
      aux: ``[B, Ta, aux_dim]`` auxiliary features (ignored in ``mono``);
        ``Ta = T`` for frame-level tasks (synchronous recordings), its own
        length for utterance tasks (each modality at its own frame rate).
      mask: ``[B, T]`` float32, 1 for real frames.
      aux_mask: ``[B, Ta]``; None = ``mask`` (synchronous modalities).

    Returns:
      dict with ``target_pred`` and, per setting, ``aux_pred``,
      ``target_emb`` / ``aux_emb`` (``[N, E]``), ``emb_valid`` and
      ``aux_emb_valid`` (``[N]``: the target's / the auxiliary's embedding
      has at least one real frame).
    """
    parts = self.config.task.parts
    if mask is None:
      mask = jnp.ones(target.shape[:2], jnp.float32)
    out = {}
    h_t = self.target_encoder(target, mask, train=train)
    out["target_pred"] = self.head(h_t, mask)
    if not parts["aux"]:
      return out
    if aux is None:
      raise ValueError(f"aux: setting {self.config.task.setting!r} needs the "
                       "auxiliary modality's features")
    if aux_mask is None:
      aux_mask = mask
    h_a = self.aux_encoder(aux, aux_mask, train=train)
    out["aux_pred"] = (self.head if parts["shared_head"] else self.aux_head)(h_a, aux_mask)
    if parts["triplet"]:
      out["target_emb"], out["emb_valid"] = self._embed(self.target_embed, h_t, mask)
      out["aux_emb"], out["aux_emb_valid"] = self._embed(self.aux_embed, h_a, aux_mask)
    return out

  def predict(self, target, mask=None):
    """Inference on the target modality alone (no auxiliary input or params)."""
    if mask is None:
      mask = jnp.ones(target.shape[:2], jnp.float32)
    return self.head(self.target_encoder(target, mask, train=False), mask)


def init_params(config: CoreConfig, rng, seq_len: int = 8, model: EmoBed | None = None):
  """Initialise parameters with dummy inputs of the configured widths.

  Returns ``(model, params)``; ``model`` defaults to ``EmoBed(config)`` (a
  subclass of it, e.g. another encoder, may be given instead)."""
  t = config.task
  if model is None:
    model = EmoBed(config)
  x = jnp.zeros((1, seq_len, t.target_dim), jnp.float32)
  a = jnp.zeros((1, seq_len, t.aux_dim), jnp.float32) if t.parts["aux"] else None
  variables = model.init({"params": rng, "dropout": rng}, x, a, jnp.ones((1, seq_len)))
  return model, variables["params"]


def target_branch(params) -> dict[str, Any]:
  """The parameters inference needs: the target encoder and its head."""
  return {k: params[k] for k in ("target_encoder", "head")}
