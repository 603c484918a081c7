"""launch/benchmark.py on tiny shapes: every variant builds and steps, JAX
and PyTorch agree, rows are complete, a bad variant is a FAILED row."""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "launch"))
import benchmark  # noqa: E402

pytestmark = pytest.mark.usefixtures("fast_compile")  # nothing timed; tolerances hold

ARGS = dict(seed=0, rounds=2, steps_per_round=1, warmup=0, equiv_rtol=1e-4,
            peak=100.0, eval_repeats=2, eval_mode="auto")


def _batch():
  return benchmark.synthetic_batch(8, 12, "mono")   # pmap: 8 test devices


@pytest.fixture(scope="module")
def scan_steps():
  """jit:scan's first two losses (the reference of the other variants)."""
  jv = benchmark.JaxVariant("mono", _batch(), "jit", "scan")
  losses, compile_s = benchmark.first_two_steps(jv)
  return jv, losses, compile_s


def test_pipeline_rows_time_grain_and_window_batches_at_the_real_widths():
  rows = benchmark.pipeline_rows(batch=8, window=50, steps=4, frames=400)
  assert [r["name"] for r in rows] == [
      "grain windows (train_batches)", "WindowBatches",
      f"WindowBatches + device_put ({jax.local_device_count()} devices; host feed before)",
      f"WindowBatches.shards + device_put ({jax.local_device_count()} devices; host feed)",
      "window positions from grain (device feed, filling)",
      "window positions, filled table (device feed)"]
  for row in rows:
    assert row["B"] == 8 and row["T"] == 50 and row["dims"] == [176, 336]
    assert row["frames_per_s"] > 0


def test_loop_rows_run_the_training_loop_with_every_feed():
  """The loop rows: the real train._train_loop with each feed, beside the
  step alone (tiny widths here; nothing timed is asserted)."""
  rows = benchmark.loop_rows("mono", 8, 20, ARGS, dims=(6, 4), steps=2, rounds=1, warm=2,
                             frames=200)
  assert [r["variant"] for r in rows] == list(benchmark.LOOP_FEEDS)
  for r in rows:
    assert "error" not in r, r
    assert r["kind"] == "loop" and r["steps_timed"] == 2 and r["devices"] == 8
    assert r["fps_jax"] > 0 and r["fps_step"] > 0
    assert r["loop_ratio"] == pytest.approx(r["fps_jax"] / r["fps_step"])
  assert "loop/step" in benchmark.format_table(rows)
  json.dumps(rows)


def test_device_windows_cut_the_host_batches_bit_for_bit():
  """Option (a): the windows cut on the device are WindowBatches' (and so
  grain's) batches, padding of a short recording included."""
  from emobed_jax import device_windows as dw
  from emobed_jax import input_pipeline as ip
  recs = benchmark.synthetic_recordings((5, 3), num=3, frames=40)
  recs.append(benchmark.synthetic_recordings((5, 3), num=1, frames=9, seed=1)[0])
  wb = ip.WindowBatches(ip.WindowSource(recs, 16, 7), 4, seed=2, num_epochs=2)
  frames = dw.pad_frames(wb.frames, 16)
  cut = jax.jit(lambda f, s, n: dw.cut_windows(f, s, n, 16))
  for step in range(len(wb)):
    pos = dw.WindowIds(wb)[step]
    got = cut(frames, pos["start"], pos["length"])
    want = wb[step]
    assert sorted(got) == sorted(want)
    for k in want:
      np.testing.assert_array_equal(np.asarray(got[k]), want[k], err_msg=k)


def test_configure_xla_refuses_after_jax_import():
  with pytest.raises(RuntimeError, match="already imported"):
    benchmark.configure_xla(2)


def test_loss_check_names_the_disagreement():
  benchmark.check_losses("x", [1.0, 0.9], [1.0, 0.9 + 1e-6], 1e-4)
  with pytest.raises(AssertionError, match="disagree"):
    benchmark.check_losses("mono B=2", [1.0, 0.9], [1.0, 0.95], 1e-4)


def test_parse_variant():
  assert benchmark.parse_variant("pmap:scan") == ("pmap", "scan", 1)
  assert benchmark.parse_variant("jit:scan_u8") == ("jit", "scan", 8)
  assert benchmark.parse_variant("jit:flax_cell") == ("jit", "flax_cell", 1)
  for v in ("auto", "pallas_u2", "wavefront_u16"):
    assert benchmark.parse_variant(f"jit:{v}")[1] == v.split("_u")[0]


def test_scan_builds_steps_once_and_learns(scan_steps):
  jv, losses, compile_s = scan_steps
  assert jv.cfg.model.rnn_impl == "scan" and jv.cfg.model.unroll == 1
  assert all(np.isfinite(losses)) and losses[1] != losses[0]
  assert jv.traces == 1 and compile_s > 0


@pytest.mark.parametrize("variant,impl,unroll", [
    ("jit:pallas", "pallas", 1), ("jit:wavefront", "wavefront", 1), ("jit:auto", "auto", 1),
    ("jit:scan_u2", "scan", 2), ("pmap:scan", "scan", 1)])
def test_every_cpu_variant_builds_and_steps_from_scans_loss(variant, impl, unroll, scan_steps):
  """Every --rnn_impl variant is the project's model with that config (same
  parameters), compiles once and takes two steps with scan's losses."""
  mode, rnn = variant.split(":")
  jv = benchmark.JaxVariant("mono", _batch(), mode, rnn)
  assert (jv.cfg.model.rnn_impl, jv.cfg.model.unroll) == (impl, unroll)
  assert jv.n == (8 if mode == "pmap" else 1)
  ref_jv, ref_losses, _ = scan_steps
  jax.tree_util.tree_map(np.testing.assert_array_equal, jv.params0, ref_jv.params0)
  losses, _ = benchmark.first_two_steps(jv)
  assert jv.traces == 1
  np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)


def test_flax_cell_baseline_is_the_same_model():
  """flax_cell builds and steps; with the project's weights mapped into its
  Flax cells (+1 forget bias into the cell's bias) it predicts what the
  project's model predicts."""
  jv = benchmark.JaxVariant("mono", _batch(), "jit", "flax_cell")
  losses, _ = benchmark.first_two_steps(jv)
  assert all(np.isfinite(losses)) and jv.traces == 1
  assert isinstance(jv.model, benchmark.flax_cell_model())
  cfg = jv.cfg
  ours, state = benchmark.create_state(cfg, "scan", 0)
  p = jax.device_get(state.params)
  h = cfg.model.hidden
  mapped = dict(jv.params0)
  enc = dict(mapped["target_encoder"])
  enc["proj"], enc["norm"] = p["target_encoder"]["proj"], p["target_encoder"]["norm"]
  for i in range(cfg.model.num_layers):
    rnn = p["target_encoder"][f"rnn_{i}"]
    k, bias, u = rnn["input"]["kernel"], rnn["input"]["bias"], rnn["recurrent"]
    cell = {}
    for j, g in enumerate("ifgo"):
      sl = slice(j * h, (j + 1) * h)
      cell[f"i{g}"] = {"kernel": k[:, sl]}
      cell[f"h{g}"] = {"kernel": u[:, sl], "bias": bias[sl] + (1.0 if g == "f" else 0.0)}
    assert (jax.tree_util.tree_structure(cell)
            == jax.tree_util.tree_structure(dict(enc[f"rnn_{i}"])))
    enc[f"rnn_{i}"] = cell
  mapped["target_encoder"], mapped["head"] = enc, p["head"]
  assert jax.tree_util.tree_structure(mapped) == jax.tree_util.tree_structure(jv.params0)
  batch = _batch()
  x, mask = jnp.asarray(batch["target"]), jnp.asarray(batch["mask"])
  want = jax.jit(lambda q: ours.apply({"params": q}, x, mask, method="predict"))(p)
  got = jax.jit(lambda q: jv.model.apply({"params": q}, x, mask, method="predict"))(mapped)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)


def test_bad_variants_are_failed_rows_not_a_crash(capsys):
  """Unknown RNNs (the removed cudnn, reference, custom, _w<N> variants
  too), modes and suffixes are FAILED rows."""
  bad = ["jit:bogus_u2", "jit:cudnn", "jit:reference", "jit:custom", "jit:pallas_w1",
         "jit:scan_u0", "shmap:scan", "scan"]
  rows = benchmark.train_rows("mono", 2, 8, bad, None, ARGS)
  assert [r["variant"] for r in rows] == bad
  for r in rows:
    assert "fps_jax" not in r and r["error"].startswith("ValueError: --variants:"), r
  assert "unknown RNN 'bogus_u2'" in rows[0]["error"]
  assert "MODE one of" in rows[-2]["error"]
  out = capsys.readouterr().out
  assert out.count("FAILED") == len(bad)


def test_eval_rows_without_torch_skip_the_baseline():
  """JAX-only evaluation rows: one per variant with the project's
  parameters (flax_cell has no torch twin); a bad variant is a FAILED row."""
  rows = benchmark.eval_rows(1, 30, ["jit:scan", "jit:flax_cell", "jit:bogus"], None, ARGS)
  assert [r["variant"] for r in rows] == ["jit:scan", "jit:bogus"]
  assert rows[0]["kind"] == "eval" and rows[0]["fps_jax"] > 0 and rows[0]["devices"] == 1
  assert "unknown RNN" in rows[1]["error"]


def test_a_failing_variant_leaves_the_others_rows():
  """JAX only (no torch needed): the good variant is timed, the bad one is a
  FAILED row."""
  rows = benchmark.train_rows("mono", 8, 8, ["jit:scan", "jit:bogus_u2"], None, ARGS)
  assert [r["variant"] for r in rows] == ["jit:scan", "jit:bogus_u2"]
  assert rows[0]["fps_jax"] > 0 and "error" in rows[1]
  assert rows[0]["steps_timed"] == 2 and rows[0]["recompiles"] == 0 and "fps_torch" not in rows[0]
  flops = 3.0 * benchmark.matmul_flops_per_frame(benchmark.core_config("mono"))
  assert rows[0]["pct_peak_jax"] == pytest.approx(
      100.0 * flops * 64 / (rows[0]["step_ms_jax"] / 1e3) / 1e9 / ARGS["peak"])


def test_matmul_flops_per_frame_counts_the_model():
  """2 * multiply-adds per frame, from the config's sizes (defaults: P=64,
  H=64, 2 layers, head 32, 2 outputs, embeddings 32 per 50-frame segment)."""
  enc = lambda d: d * 64 + 64 * 256 + 64 * 256 + 2 * 64 * 256   # noqa: E731
  head = 64 * 32 + 32 * 2
  assert benchmark.matmul_flops_per_frame(benchmark.core_config("mono")) == 2 * (enc(88) + head)
  assert benchmark.matmul_flops_per_frame(benchmark.core_config("joint")) == 2 * (
      enc(88) + enc(168) + 2 * head)
  assert benchmark.matmul_flops_per_frame(benchmark.core_config("emobed")) == pytest.approx(
      2 * (enc(88) + enc(168) + 2 * head + 2 * 64 * 32 / 50))


def test_jax_and_torch_agree_at_step_0_and_1():
  """emobed covers every loss term (target and aux CCC, shared head, triplet)."""
  pytest.importorskip("torch")
  setting, b, t = "emobed", 4, 100
  rows = benchmark.train_rows(setting, b, t, ["jit:scan"], benchmark.TorchLocal("cpu"), ARGS)
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
    (row,) = benchmark.eval_rows(1, 30, ["jit:scan"], torch_process, ARGS)
  finally:
    torch_process.close()
  assert not torch_process.proc.is_alive()
  assert row["kind"] == "eval" and row["variant"] == "jit:scan"
  assert row["max_abs_diff"] < 1e-4
  assert row["fps_jax"] > 0 and row["fps_torch"] > 0
