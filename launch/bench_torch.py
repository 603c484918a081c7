"""PyTorch reference of the EmoBed model and train step, for benchmarks only.

Same layers as ``emobed_jax.models.EmoBed`` (Dense -> LayerNorm -> 2 x LSTM
per encoder, Dense -> relu -> Dense head, Dense embeddings), same losses
(1 - CCC with population moments, batch-hard symmetric crossmodal triplet
loss on segment-pooled, L2-normalised embeddings with quantile-bin labels),
same optimiser (clip the global gradient norm, then Adam).

``load_flax_params`` copies a Flax parameter tree into the torch model so
that both compute the same loss on the same inputs (the benchmark checks
this at step 0 and after one optimiser step).  Mapping of one LSTM layer:

  flax ``rnn_i/input`` kernel ``[P, 4H]`` (gates i, f, g, o), bias ``[4H]``
    -> torch ``weight_ih_l{i} = kernel.T``,
       ``bias_ih_l{i} = bias + 1`` on the forget block (flax adds the +1
       forget bias inside the recurrence),
  flax ``rnn_i/recurrent`` ``[H, 4H]`` -> ``weight_hh_l{i} = recurrent.T``,
    ``bias_hh_l{i} = 0`` and frozen (flax has no second bias).

Differences that do not matter for timing: torch's ``nn.LSTM`` has no
per-frame mask that holds the carry, so the benchmark uses full windows
(all frames real, as in fixed-length RECOLA training crops); masks are still
applied in the losses exactly as in the JAX code.

Only torch is imported here; numpy arrays cross the boundary.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

SETTING_PARTS = {
    "mono": dict(aux=False, shared_head=False, aux_head=False, triplet=False),
    "joint": dict(aux=True, shared_head=True, aux_head=False, triplet=False),
    "crossmodal": dict(aux=True, shared_head=False, aux_head=True, triplet=True),
    "emobed": dict(aux=True, shared_head=True, aux_head=False, triplet=True),
}


class Encoder(nn.Module):
  def __init__(self, in_dim: int, proj_dim: int, hidden: int, num_layers: int,
               ln_eps: float):
    super().__init__()
    self.proj = nn.Linear(in_dim, proj_dim)
    self.norm = nn.LayerNorm(proj_dim, eps=ln_eps)
    self.rnn = nn.LSTM(proj_dim, hidden, num_layers=num_layers, batch_first=True)
    # The Flax layer has one bias per gate (the input Dense's); torch has two.
    # Freeze bias_hh at 0, so both models have the same trainable parameters
    # (Adam would otherwise move the sum of the two biases twice as fast).
    with torch.no_grad():
      for i in range(num_layers):
        getattr(self.rnn, f"bias_hh_l{i}").zero_()
        getattr(self.rnn, f"bias_hh_l{i}").requires_grad_(False)

  def forward(self, x):
    return self.rnn(self.norm(self.proj(x)))[0]


class Head(nn.Module):
  def __init__(self, hidden: int, head_hidden: int, num_outputs: int):
    super().__init__()
    self.hidden = nn.Linear(hidden, head_hidden)
    self.out = nn.Linear(head_hidden, num_outputs)

  def forward(self, x):
    return self.out(torch.relu(self.hidden(x)))


class TorchEmoBed(nn.Module):
  """The four settings of EmoBed (regression task) in torch."""

  def __init__(self, setting: str, target_dim: int = 88, aux_dim: int = 168,
               num_outputs: int = 2, proj_dim: int = 64, hidden: int = 64,
               num_layers: int = 2, head_hidden: int = 32, embed_dim: int = 32,
               ln_eps: float = 1e-6):
    super().__init__()
    self.setting = setting
    self.parts = SETTING_PARTS[setting]
    self.target_encoder = Encoder(target_dim, proj_dim, hidden, num_layers, ln_eps)
    self.head = Head(hidden, head_hidden, num_outputs)
    if self.parts["aux"]:
      self.aux_encoder = Encoder(aux_dim, proj_dim, hidden, num_layers, ln_eps)
    if self.parts["aux_head"]:
      self.aux_head = Head(hidden, head_hidden, num_outputs)
    if self.parts["triplet"]:
      self.target_embed = nn.Linear(hidden, embed_dim)
      self.aux_embed = nn.Linear(hidden, embed_dim)

  def predict(self, target):
    return self.head(self.target_encoder(target))

  def forward(self, target, aux=None):
    out = {}
    h_t = self.target_encoder(target)
    out["target_pred"] = self.head(h_t)
    if self.parts["aux"]:
      h_a = self.aux_encoder(aux)
      out["aux_pred"] = (self.head if self.parts["shared_head"] else self.aux_head)(h_a)
      if self.parts["triplet"]:
        out["h_t"], out["h_a"] = h_t, h_a
    return out


# ---------------------------------------------------------------------------
# Losses (mirror emobed_jax.losses).


def ccc_loss(pred, target, mask):
  """``[D]`` 1 - CCC per dimension, population moments, masked frames out."""
  m = mask[..., None]
  pred = torch.where(m > 0, pred, torch.zeros_like(pred))
  target = torch.where(m > 0, target, torch.zeros_like(target))
  red = tuple(range(pred.ndim - 1))
  n = torch.clamp(m.sum(dim=red), min=1.0)
  mp = pred.sum(dim=red) / n
  mt = target.sum(dim=red) / n
  dp = (pred - mp) * m
  dt = (target - mt) * m
  vp = (dp * dp).sum(dim=red) / n
  vt = (dt * dt).sum(dim=red) / n
  cov = (dp * dt).sum(dim=red) / n
  denom = vp + vt + (mp - mt) ** 2
  ok = denom > 1e-12
  ccc = torch.where(ok, 2.0 * cov / torch.where(ok, denom, torch.ones_like(denom)),
                    torch.zeros_like(denom))
  return 1.0 - ccc


def segment_pool(x, mask, segment: int):
  b, t, f = x.shape
  s = -(-t // segment)
  pad = s * segment - t
  if pad:
    x = torch.nn.functional.pad(x, (0, 0, 0, pad))
    mask = torch.nn.functional.pad(mask, (0, pad))
  xs = x.reshape(b * s, segment, f)
  ms = mask.reshape(b * s, segment)
  m = ms[..., None]
  pooled = (torch.where(m > 0, xs, torch.zeros_like(xs)) * m).sum(1) / torch.clamp(m.sum(1), min=1.0)
  return pooled, (ms.sum(1) > 0).float()


def l2_normalize(x, eps: float = 1e-12):
  return x * torch.rsqrt(torch.clamp((x * x).sum(-1, keepdim=True), min=eps))


def bin_labels(values, edges):
  k = edges.shape[1] + 1
  b = (values[..., :, None] >= edges).sum(-1)
  scale = torch.tensor([k ** d for d in range(edges.shape[0])], dtype=b.dtype, device=b.device)
  return (b * scale).sum(-1)


def _batch_hard(a, la, ma, c, lc, mc, margin):
  d = torch.clamp((a * a).sum(-1)[:, None] + (c * c).sum(-1)[None, :] - 2.0 * a @ c.T, min=0.0)
  valid = (ma[:, None] > 0) & (mc[None, :] > 0)
  same = la[:, None] == lc[None, :]
  pos = same & valid
  neg = (~same) & valid
  far = torch.full_like(d, 1e4)
  hp = torch.where(pos, d, -far).max(1).values
  hn = torch.where(neg, d, far).min(1).values
  has = (pos.sum(1) > 0) & (neg.sum(1) > 0)
  loss = torch.relu(hp - hn + margin)
  s = torch.where(has, loss, torch.zeros_like(loss)).sum()
  return s / torch.clamp(has.sum().float(), min=1.0)


def triplet_loss(a, c, labels, valid, margin: float, symmetric: bool = True):
  a, c = l2_normalize(a), l2_normalize(c)
  out = [_batch_hard(a, labels, valid, c, labels, valid, margin)]
  if symmetric:
    out.append(_batch_hard(c, labels, valid, a, labels, valid, margin))
  return sum(out) / len(out)


class TorchStep:
  """Model + loss + optimiser; ``step(batch)`` does one training step."""

  def __init__(self, model: TorchEmoBed, bin_edges=None, lr: float = 1e-3,
               clip_norm: float = 1.0, lambda_aux: float = 1.0,
               lambda_tri: float = 1.0, margin: float = 0.2,
               triplet_segment: int = 50):
    self.model = model
    self.parts = model.parts
    self.edges = None if bin_edges is None else torch.as_tensor(np.asarray(bin_edges, np.float32))
    self.params = [p for p in model.parameters() if p.requires_grad]
    self.opt = torch.optim.Adam(self.params, lr=lr, eps=1e-8)
    self.clip_norm = clip_norm
    self.lambda_aux, self.lambda_tri = lambda_aux, lambda_tri
    self.margin, self.segment = margin, triplet_segment

  def losses(self, batch: Mapping[str, torch.Tensor]):
    out = self.model(batch["target"], batch.get("aux"))
    mask, labels = batch["mask"], batch["labels"]
    total = ccc_loss(out["target_pred"], labels, mask).mean()
    if self.parts["aux"]:
      la = ccc_loss(out["aux_pred"], labels, mask).mean()
      total = total + (self.lambda_aux if self.parts["shared_head"] else 1.0) * la
    if self.parts["triplet"]:
      pt, valid = segment_pool(out["h_t"], mask, self.segment)
      pa, _ = segment_pool(out["h_a"], mask, self.segment)
      et = l2_normalize(self.model.target_embed(pt))
      ea = l2_normalize(self.model.aux_embed(pa))
      seg_labels, _ = segment_pool(labels, mask, self.segment)
      lab = bin_labels(seg_labels, self.edges)
      total = total + self.lambda_tri * triplet_loss(et, ea, lab, valid, self.margin)
    return total

  def step(self, batch):
    self.opt.zero_grad(set_to_none=True)
    loss = self.losses(batch)
    loss.backward()
    if self.clip_norm > 0:
      torch.nn.utils.clip_grad_norm_(self.params, self.clip_norm)
    self.opt.step()
    return loss.detach()


def to_torch(batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
  return {k: torch.as_tensor(np.ascontiguousarray(v)) for k, v in batch.items()}


def load_flax_params(model: TorchEmoBed, params: Mapping[str, Any]) -> None:
  """Copy a Flax EmoBed parameter tree (numpy leaves) into ``model``."""

  def t(x):
    return torch.as_tensor(np.array(x, np.float32))

  def dense(lin: nn.Linear, p):
    lin.weight.copy_(t(p["kernel"]).T)
    lin.bias.copy_(t(p["bias"]))

  with torch.no_grad():
    for name in ("target_encoder", "aux_encoder"):
      if not hasattr(model, name):
        continue
      enc, p = getattr(model, name), params[name]
      dense(enc.proj, p["proj"])
      enc.norm.weight.copy_(t(p["norm"]["scale"]))
      enc.norm.bias.copy_(t(p["norm"]["bias"]))
      for i in range(enc.rnn.num_layers):
        lp = p[f"rnn_{i}"]
        h = enc.rnn.hidden_size
        bias = np.array(lp["input"]["bias"], np.float32).copy()
        bias[h:2 * h] += 1.0  # forget gate bias flax adds inside the scan
        getattr(enc.rnn, f"weight_ih_l{i}").copy_(t(lp["input"]["kernel"]).T)
        getattr(enc.rnn, f"bias_ih_l{i}").copy_(t(bias))
        getattr(enc.rnn, f"weight_hh_l{i}").copy_(t(lp["recurrent"]).T)
        getattr(enc.rnn, f"bias_hh_l{i}").zero_()
    for name in ("head", "aux_head"):
      if hasattr(model, name):
        dense(getattr(model, name).hidden, params[name]["hidden"])
        dense(getattr(model, name).out, params[name]["out"])
    for name in ("target_embed", "aux_embed"):
      if hasattr(model, name):
        dense(getattr(model, name), params[name])
