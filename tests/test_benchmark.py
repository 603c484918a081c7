"""launch/benchmark.py on tiny shapes: JAX and PyTorch agree, rows are complete."""

import json
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "launch"))
import benchmark  # noqa: E402

ARGS = dict(seed=0, rounds=2, steps_per_round=1, warmup=0, equiv_rtol=1e-4,
            peak=100.0, eval_repeats=2, eval_mode="auto")


def test_pipeline_row_times_the_project_pipeline():
  (row,) = benchmark.pipeline_rows(batch=8, window=50, steps=4)
  assert row["B"] == 8 and row["T"] == 50
  assert row["frames_per_s"] > 0


def test_configure_xla_refuses_after_jax_import():
  import jax  # noqa: F401
  with pytest.raises(RuntimeError, match="already imported"):
    benchmark.configure_xla(2)


def test_loss_check_names_the_disagreement():
  benchmark.check_losses("x", [1.0, 0.9], [1.0, 0.9 + 1e-6], 1e-4)
  with pytest.raises(AssertionError, match="disagree"):
    benchmark.check_losses("mono B=2", [1.0, 0.9], [1.0, 0.95], 1e-4)


@pytest.mark.parametrize("variant", ["jit:custom", "jit:reference", "jit:flax_cell",
                                     "jit:scan_u2", "jit:wavefront", "jit:pallas", "jit:auto",
                                     "pmap:scan"])
def test_every_cpu_variant_builds_and_steps(variant):
  """Every --variants RNN that runs on a CPU builds the project's step and
  takes two steps; the shipped-model variants (same parameters) start from
  the same loss as scan (flax_cell has its own parameters)."""
  batch = benchmark.synthetic_batch(8, 12, "mono")   # pmap: 8 test devices
  mode, rnn = variant.split(":")
  jv = benchmark.JaxVariant("mono", batch, mode, rnn, devices=None)
  losses, _ = benchmark.first_two_steps(jv)
  assert all(np.isfinite(losses)) and jv.traces == 1
  if rnn != "flax_cell":
    ref, _ = benchmark.first_two_steps(benchmark.JaxVariant("mono", batch, "jit", "scan"))
    np.testing.assert_allclose(losses, ref, rtol=1e-5)


def test_bad_variant_is_a_failed_row_not_a_crash(capsys):
  (row,) = benchmark.train_rows("mono", 2, 8, ["jit:bogus_u2"], None, ARGS)
  assert row["variant"] == "jit:bogus_u2" and "fps_jax" not in row
  assert "suffixes apply" in row["error"]
  assert "FAILED" in capsys.readouterr().out


def test_a_failing_variant_leaves_the_others_rows():
  pytest.importorskip("torch")   # train_rows times the good variant against torch's model code
  rows = benchmark.train_rows("mono", 8, 8, ["jit:scan", "jit:bogus_u2"], None, ARGS)
  assert [r["variant"] for r in rows] == ["jit:scan", "jit:bogus_u2"]
  assert rows[0]["fps_jax"] > 0 and "error" in rows[1]


def test_jax_and_torch_agree_at_step_0_and_1():
  """emobed covers every loss term (target and aux CCC, shared head, triplet)."""
  pytest.importorskip("torch")
  setting, b, t = "emobed", 4, 100
  rows = benchmark.train_rows(setting, b, t, ["jit:custom"], benchmark.TorchLocal("cpu"), ARGS)
  (row,) = rows
  assert row["loss0_jax"] == pytest.approx(row["loss0_torch"], rel=1e-4)
  assert row["loss1_jax"] == pytest.approx(row["loss1_torch"], rel=1e-4)
  assert row["loss1_jax"] != row["loss0_jax"]  # the update did something
  assert row["recompiles"] == 0
  assert row["steps_timed"] == 2
  for key in ("fps_jax", "fps_torch", "ratio", "compile_s", "peak_rss_mb"):
    assert row[key] > 0, key
  table = benchmark.format_table(rows)
  assert "frames/s JAX" in table and setting in table
  json.dumps(rows)


def test_eval_rows_agree_with_torch_in_its_own_process():
  pytest.importorskip("torch")
  torch_process = benchmark.TorchProcess(malloc=False, threads=1)
  try:
    (row,) = benchmark.eval_rows(1, 30, ["jit:custom"], torch_process, ARGS)
  finally:
    torch_process.close()
  assert not torch_process.proc.is_alive()
  assert row["kind"] == "eval" and row["variant"] == "jit:custom"
  assert row["max_abs_diff"] < 1e-4
  assert row["fps_jax"] > 0 and row["fps_torch"] > 0


def test_cudnn_weight_packing_matches_the_project_lstm():
  """The GPU variant's flat cuDNN weights, run by jax.experimental.rnn's
  reference LSTM (CPU), give models.Recurrent's outputs."""
  import jax.numpy as jnp
  import numpy as np
  from jax.experimental import rnn as jrnn
  from emobed_jax import rnn_kernels
  t, b, p, h = 6, 2, 5, 3
  rs = np.random.RandomState(0)
  x = jnp.asarray(rs.randn(b, t, p).astype(np.float32))
  kernel = jnp.asarray(rs.randn(p, 4 * h).astype(np.float32))
  bias = jnp.asarray(rs.randn(4 * h).astype(np.float32))
  u = jnp.asarray(rs.randn(h, 4 * h).astype(np.float32))
  w = benchmark.cudnn_weights(kernel, bias, u)
  assert w.shape == (jrnn.get_num_params_in_lstm(p, h, 1, False),)
  w_ih, w_hh, b_ih, b_hh = jrnn.unpack_lstm_weights(w, p, h, 1, False)
  z = jnp.zeros((1, b, h))
  y, _, _ = jrnn.lstm_ref(x, z, z, w_ih, w_hh, b_ih, b_hh, jnp.full((b,), t, jnp.int32),
                          p, h, 1, 0.0, False)
  want = rnn_kernels.lstm_scan_reference(jnp.swapaxes(x @ kernel + bias, 0, 1), u,
                                         jnp.ones((t, b, 1)))
  np.testing.assert_allclose(np.asarray(y), np.asarray(jnp.swapaxes(want, 0, 1)),
                             rtol=1e-5, atol=1e-5)
