"""Small configs and synthetic batches shared by the tests."""

import numpy as np

from emobed_jax.config import CoreConfig, TaskConfig


def small_config(setting, task="regression", level="frame", **loss):
  cfg = CoreConfig(task=TaskConfig(setting=setting, task=task, level=level,
                                   num_outputs=2 if task == "regression" else 4,
                                   target_dim=5, aux_dim=7))
  return cfg.replace(model=dict(hidden=8, proj_dim=8, head_hidden=8, embed_dim=6),
                     loss=dict(triplet_segment=5, **loss))


def synthetic_batch(seed, b, t, task="regression", num_classes=4, aux_len=None,
                    level="frame"):
  """``aux_len``: the auxiliary modality gets its own length, frame rate
  (every other latent frame when ``aux_len < t``) and mask ``aux_mask``, as
  on OMG-Emotion; ``level="utterance"``: regression labels ``[b, 2]`` (the
  mean latent of each utterance)."""
  rs = np.random.RandomState(seed)
  lengths = rs.randint(t // 2, t + 1, b)
  lengths[0] = t
  mask = (np.arange(t)[None] < lengths[:, None]).astype(np.float32)
  y = np.cumsum(rs.randn(b, t, 2), axis=1).astype(np.float32) / np.sqrt(t)
  batch = dict(target=(y @ rs.randn(2, 5) + 0.5 * rs.randn(b, t, 5)).astype(np.float32),
               aux=(y @ rs.randn(2, 7) + 0.5 * rs.randn(b, t, 7)).astype(np.float32),
               mask=mask, labels=y)
  mean = (y * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
  if aux_len is not None:
    step = max(t // aux_len, 1)
    ya = np.zeros((b, aux_len, 2), np.float32)
    ya[:, :len(y[0, ::step][:aux_len])] = y[:, ::step][:, :aux_len]
    alen = np.maximum(np.minimum(-(-lengths // step), aux_len) - rs.randint(0, 3, b), 1)
    batch["aux_mask"] = (np.arange(aux_len)[None] < alen[:, None]).astype(np.float32)
    batch["aux_mask"][1, ::3] = 0.0  # frames without a face, masked inside the sequence
    batch["aux"] = (ya @ rs.randn(2, 7) + 0.5 * rs.randn(b, aux_len, 7)).astype(np.float32)
  if task == "classification":
    # A class that the features carry: quadrant of the mean latent (y0, y1).
    batch["labels"] = ((mean[:, 0] > 0) * 2 + (mean[:, 1] > 0)) % num_classes
  elif level == "utterance":
    batch["labels"] = mean.astype(np.float32)
  return batch
