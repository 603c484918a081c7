"""Models: masking, inference without the auxiliary branch, parts per setting."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from emobed_jax import models, train
from emobed_jax.config import SETTING_PARTS, SETTINGS, ConfigError, CoreConfig, TaskConfig
from tests_support import small_config, synthetic_batch

pytestmark = pytest.mark.usefixtures("fast_compile")  # nothing timed; tolerances hold


EXPECTED_PARAMS = {
    "mono": {"target_encoder", "head"},
    "joint": {"target_encoder", "aux_encoder", "head"},
    "crossmodal": {"target_encoder", "aux_encoder", "head", "aux_head", "target_embed", "aux_embed"},
    "emobed": {"target_encoder", "aux_encoder", "head", "target_embed", "aux_embed"},
}


@pytest.mark.parametrize("setting", SETTINGS)
def test_parameters_match_the_setting_table(setting):
  _, params = models.init_params(small_config(setting), jax.random.key(0))
  assert set(params) == EXPECTED_PARAMS[setting]
  assert SETTING_PARTS[setting]["aux"] == ("aux_encoder" in params)


@pytest.mark.parametrize("rnn", ["lstm", "gru"])
@pytest.mark.parametrize("task,pooling", [("regression", "mean"), ("classification", "mean"),
                                          ("classification", "attention")])
def test_masked_frames_change_nothing(rnn, task, pooling):
  cfg = small_config("emobed", task).replace(model=dict(rnn=rnn, pooling=pooling))
  model, params = models.init_params(cfg, jax.random.key(1))
  batch = synthetic_batch(2, 4, 23, task)
  mask = batch["mask"]
  assert (mask == 0).any()
  noisy = dict(batch)
  rs = np.random.RandomState(3)
  for k in ("target", "aux"):
    x = batch[k].copy()
    x[mask == 0] = 1e3 * rs.randn(int((mask == 0).sum()), x.shape[-1])
    noisy[k] = x
  if task == "regression":
    y = batch["labels"].copy()
    y[mask == 0] = -50.0
    noisy["labels"] = y
  fwd = jax.jit(lambda b: model.apply({"params": params}, b["target"], b["aux"], b["mask"]))
  out1, out2 = fwd(batch), fwd(noisy)
  for key in out1:
    a, b = np.asarray(out1[key]), np.asarray(out2[key])
    if key.endswith("pred") and task == "regression":
      a, b = a[mask > 0], b[mask > 0]
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6, err_msg=key)
  edges = np.array([[-0.3, 0.3], [-0.3, 0.3]], np.float32)
  def loss(p, bt):
    return train.compute_losses(p, bt, jax.random.key(0), model=model, config=cfg,
                                bin_edges=edges, axis_name=None)[0]
  vg = jax.jit(jax.value_and_grad(loss))
  l1, g1 = vg(params, batch)
  l2, g2 = vg(params, noisy)
  np.testing.assert_allclose(float(l1), float(l2), rtol=1e-6)
  for x, y in zip(jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(g2)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-7)


def test_pooling_equals_mean_of_valid_frames():
  rs = np.random.RandomState(0)
  x = rs.randn(3, 10, 4).astype(np.float32)
  mask = models.sequence_mask(np.array([10, 4, 1]), 10)
  pooled = np.asarray(models.masked_mean(x, mask))
  for i, n in enumerate([10, 4, 1]):
    np.testing.assert_allclose(pooled[i], x[i, :n].mean(0), rtol=1e-6)
  seg, valid = models.segment_pool(jnp.asarray(x), mask, 3)
  assert seg.shape == (3 * 4, 4)
  np.testing.assert_array_equal(np.asarray(valid).reshape(3, 4),
                                [[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]])
  np.testing.assert_allclose(np.asarray(seg)[5], x[1, 3:4].mean(0), rtol=1e-6)


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("task", ["regression", "classification"])
def test_inference_needs_only_the_target_branch(setting, task):
  cfg = small_config(setting, task)
  model, params = models.init_params(cfg, jax.random.key(0))
  batch = synthetic_batch(0, 3, 12, task)
  branch = models.target_branch(params)
  assert set(branch) == {"target_encoder", "head"}
  pred = model.apply({"params": branch}, batch["target"], batch["mask"], method=models.EmoBed.predict)
  full = model.apply({"params": params}, batch["target"], batch["aux"], batch["mask"])
  np.testing.assert_allclose(np.asarray(pred), np.asarray(full["target_pred"]), rtol=1e-6)
  # The same through train.eval_step, with no auxiliary input at all.
  ev = train.eval_step(branch, batch["target"], batch["mask"], model=model)
  np.testing.assert_allclose(np.asarray(ev), np.asarray(pred), rtol=1e-6)


def test_settings_with_aux_require_aux_input():
  cfg = small_config("joint")
  model, params = models.init_params(cfg, jax.random.key(0))
  with pytest.raises(ValueError, match="aux"):
    model.apply({"params": params}, jnp.zeros((1, 4, 5)), None, jnp.ones((1, 4)))


@pytest.mark.parametrize("group,field,value,match", [
    ("task", "setting", "fusion", "--setting"),
    ("task", "task", "ranking", "--task"),
    ("loss", "mining", "hardest", "--mining"),
    ("loss", "margin", 0.0, "--margin"),
    ("loss", "margin", -0.5, "--margin"),
    ("model", "rnn", "transformer", "--rnn"),
    ("model", "hidden", 0, "--hidden"),
    ("loss", "num_bins", 1, "--num_bins"),
    ("task", "target_dim", 0, "--target_dim"),
])
def test_config_errors_name_the_flag(group, field, value, match):
  with pytest.raises(ConfigError, match=match):
    CoreConfig().replace(**{group: {field: value}})


@pytest.mark.parametrize("mutate,match", [
    (lambda b: b.update(target=b["target"][..., :4]), "target_dim"),
    (lambda b: b.update(aux=b["aux"][..., :3]), "aux_dim"),
    (lambda b: b.update(target=b["target"][0]), r"batch\['target'\]"),
    (lambda b: b.update(mask=np.zeros_like(b["mask"])), "masked"),
    (lambda b: b.update(labels=b["labels"][..., :1]), r"batch\['labels'\]"),
    (lambda b: b.update(mask=b["mask"][:, :5]), r"batch\['mask'\]"),
    (lambda b: b.pop("aux"), "'aux'"),
])
def test_check_batch_rejects_bad_input(mutate, match):
  cfg = small_config("emobed")
  batch = synthetic_batch(0, 4, 10)
  train.check_batch(batch, cfg)  # the unmodified batch is fine
  mutate(batch)
  with pytest.raises(ValueError, match=match):
    train.check_batch(batch, cfg)


def test_task_config_defaults_are_valid():
  assert CoreConfig().validate().task == TaskConfig()
