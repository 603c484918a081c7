"""Small configs and synthetic batches shared by the tests."""

import numpy as np

from emobed_jax.config import CoreConfig, TaskConfig


def small_config(setting, task="regression", **loss):
  cfg = CoreConfig(task=TaskConfig(setting=setting, task=task,
                                   num_outputs=2 if task == "regression" else 4,
                                   target_dim=5, aux_dim=7))
  return cfg.replace(model=dict(hidden=8, proj_dim=8, head_hidden=8, embed_dim=6),
                     loss=dict(triplet_segment=5, **loss))


def synthetic_batch(seed, b, t, task="regression", num_classes=4):
  rs = np.random.RandomState(seed)
  lengths = rs.randint(t // 2, t + 1, b)
  lengths[0] = t
  mask = (np.arange(t)[None] < lengths[:, None]).astype(np.float32)
  y = np.cumsum(rs.randn(b, t, 2), axis=1).astype(np.float32) / np.sqrt(t)
  batch = dict(target=(y @ rs.randn(2, 5) + 0.5 * rs.randn(b, t, 5)).astype(np.float32),
               aux=(y @ rs.randn(2, 7) + 0.5 * rs.randn(b, t, 7)).astype(np.float32),
               mask=mask, labels=y)
  if task == "classification":
    # A class that the features carry: quadrant of the mean latent (y0, y1).
    mean = (y * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    batch["labels"] = ((mean[:, 0] > 0) * 2 + (mean[:, 1] > 0)) % num_classes
  return batch
