"""The LSTM implementations (scan, Pallas kernels, wavefront stack) agree.

Every implementation is compared with an independent reference: the plain
autodiff LSTM ``lstm_reference.lstm_autodiff(x @ kernel + bias, u, mask)``
(tests/lstm_reference.py) applied layer by layer (values and gradients), or
a float64 numpy loop for the Pallas kernels themselves.  On CPU the Pallas kernels run in interpret
mode (~1 s a call), so the shapes are tiny.
"""

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from emobed_jax import lstm_cell, models, rnn_kernels, rnn_pallas, train
from emobed_jax.config import RNN_IMPLS, ConfigError, ModelConfig, from_dict, to_dict
from lstm_reference import lstm_layers_autodiff
from tests_support import small_config, synthetic_batch

pytestmark = pytest.mark.usefixtures("fast_compile")  # nothing timed; tolerances hold

H = 16   # the smallest hidden size the Pallas kernels support


def _mask(t, lengths, holes=()):
  """``[T, B, 1]`` trailing padding of ``lengths``, plus ``(t, b)`` holes."""
  lengths = np.asarray(lengths)
  mask = (np.arange(t)[:, None] < lengths[None, :]).astype(np.float32)
  for ti, bi in holes:
    mask[ti, bi] = 0.0
  return mask[..., None]


def _lengths(rs, t, b):
  """Random lengths with a full row, a length-0 row and a length-1 row."""
  lengths = rs.randint(0, t + 1, b)
  lengths[0], lengths[1], lengths[-1] = t, 0, 1
  return lengths


def _layer(rs, p, h):
  kernel = (rs.randn(p, 4 * h) / np.sqrt(p)).astype(np.float32)
  bias = (0.3 * rs.randn(4 * h)).astype(np.float32)
  u = (rs.randn(h, 4 * h) / np.sqrt(h)).astype(np.float32)
  return jnp.asarray(kernel), jnp.asarray(bias), jnp.asarray(u)


def _stack_inputs(seed, t, b, p, h, num_layers, holes=()):
  rs = np.random.RandomState(seed)
  x = jnp.asarray(rs.randn(t, b, p).astype(np.float32))
  layers = tuple(_layer(rs, p if l == 0 else h, h) for l in range(num_layers))
  mask = jnp.asarray(_mask(t, _lengths(rs, t, b), holes))
  r = jnp.asarray(rs.randn(t, b, h).astype(np.float32))
  return x, layers, mask, r


def _reference(x, layers, mask):
  return lstm_layers_autodiff(x, layers, mask)


def _layer_by_layer(impl):
  def fn(x, layers, mask):
    for kernel, bias, u in layers:
      x = rnn_kernels.lstm_layer(x, kernel, bias, u, mask, impl=impl)
    return x
  return fn


def _value_and_grads(fn, x, layers, mask, r):
  """``sum(fn(x, layers) * r)`` and its gradients w.r.t. ``x`` and every
  layer's kernel, bias and recurrent kernel."""
  def loss(x, layers):
    return jnp.sum(fn(x, layers, mask) * r)
  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(x, layers)


def _assert_trees_close(out, ref, rtol=1e-5):
  out_leaves, out_def = jax.tree_util.tree_flatten(out)
  ref_leaves, ref_def = jax.tree_util.tree_flatten(ref)
  assert out_def == ref_def
  for i, (a, b) in enumerate(zip(out_leaves, ref_leaves)):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, i
    assert np.all(np.isfinite(a)), i
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * max(1.0, np.abs(b).max()),
                               err_msg=f"leaf {i}")


def _sigmoid(z):
  return 1.0 / (1.0 + np.exp(-z))


# ---------------------------------------------------------------------------
# The Pallas kernels on their own.


def test_supported_hidden_sizes():
  assert rnn_pallas.supported is lstm_cell.pallas_supports_hidden   # one definition
  for h in (16, 32, 64, 128, 256):
    assert rnn_pallas.supported(h), h
  for h in (0, 1, 2, 8, 15, 24, 48, 96, 100, -16, 16.0, "16", None):
    assert not rnn_pallas.supported(h), h


def _np_lstm(xw, u, mask):
  """float64 sigmoid-form LSTM: hidden states, cell states and the gates'
  tanh-form activations ``[2i-1, 2f-1, g, 2o-1]`` of every step."""
  t, b, _ = xw.shape
  h = u.shape[0]
  c, hp = np.zeros((b, h)), np.zeros((b, h))
  ys, cs, acts = [], [], []
  for k in range(t):
    z = xw[k] + hp @ u
    i, f = _sigmoid(z[:, :h]), _sigmoid(z[:, h:2 * h] + 1.0)
    g, o = np.tanh(z[:, 2 * h:3 * h]), _sigmoid(z[:, 3 * h:])
    c_new = f * c + i * g
    h_new = o * np.tanh(c_new)
    keep = mask[k] > 0
    c, hp = np.where(keep, c_new, c), np.where(keep, h_new, hp)
    ys.append(hp)
    cs.append(c)
    acts.append(np.concatenate([2 * i - 1, 2 * f - 1, g, 2 * o - 1], axis=-1))
  return np.stack(ys), np.stack(cs), np.stack(acts)


@pytest.mark.parametrize("t,b", [(7, 5), (9, 17)])
def test_cell_scan_matches_numpy_lstm(t, b):
  """The forward kernel (batch padded to 16 inside) on the tanh-form inputs
  gives the sigmoid-form LSTM's states and gate activations."""
  rs = np.random.RandomState(t * b)
  xw = rs.randn(t, b, 4 * H)
  u = rs.randn(H, 4 * H) / np.sqrt(H)
  mask = _mask(t, _lengths(rs, t, b), holes=[(2, 0)])
  ys_ref, cs_ref, acts_ref = _np_lstm(xw, u, mask)
  xi, xf, xg, xo = (xw[..., k * H:(k + 1) * H] for k in range(4))
  xs = tuple(jnp.asarray(a, jnp.float32)
             for a in (0.5 * xi, 0.5 * (xf + 1.0), xg, 0.5 * xo))
  scale = np.repeat([0.5, 0.5, 1.0, 0.5], H)
  us = jnp.asarray(u * scale, jnp.float32)
  m = jnp.asarray(mask)
  ys, cs, acts = rnn_pallas.cell_scan(xs, us, m, store=True, interpret=True)
  assert ys.shape == cs.shape == (t, b, H) and acts.shape == (t, b, 4 * H)
  for got, want in ((ys, ys_ref), (cs, cs_ref), (acts, acts_ref)):
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=2e-6)
  ys_only = rnn_pallas.cell_scan(xs, us, m, store=False, interpret=True)
  np.testing.assert_array_equal(np.asarray(ys_only), np.asarray(ys))


def test_cell_scan_rejects_unsupported_hidden_size():
  xs = tuple(jnp.zeros((3, 2, 8)) for _ in range(4))
  with pytest.raises(ValueError, match="hidden size 8"):
    rnn_pallas.cell_scan(xs, jnp.zeros((8, 32)), jnp.ones((3, 2, 1)), store=False,
                         interpret=True)
  factors = [jnp.zeros((3, 2, 8))] * 6
  with pytest.raises(ValueError, match="hidden size 8"):
    rnn_pallas.cell_backward_loop(jnp.zeros((8, 32)), jnp.zeros((3, 2, 8)), factors,
                                  jnp.zeros((3, 2, 1)), interpret=True)


@pytest.mark.parametrize("t,b", [(8, 3), (6, 18)])
def test_cell_backward_loop_matches_numpy_loop(t, b):
  """The reverse-loop kernel equals the recurrence of its docstring."""
  rs = np.random.RandomState(100 + t * b)
  u = rs.randn(H, 4 * H) / np.sqrt(H)
  dys = rs.randn(t, b, H)
  factors = [rs.randn(t, b, H) for _ in range(6)]
  passthrough = (rs.rand(t, b, 1) > 0.7).astype(np.float64)
  a, fk, ci, cf, cg, co = factors
  dc, dh_next = np.zeros((b, H)), np.zeros((b, H))
  dcs_ref, dhs_ref = np.zeros((t, b, H)), np.zeros((t, b, H))
  for k in reversed(range(t)):
    dh = dys[k] + dh_next
    dc_new = dc + dh * a[k]
    dz = np.concatenate([dc_new * ci[k], dc_new * cf[k], dc_new * cg[k], dh * co[k]], -1)
    dcs_ref[k], dhs_ref[k] = dc_new, dh
    dc, dh_next = dc_new * fk[k], dz @ u.T + dh * passthrough[k]

  def f32(v):
    return jnp.asarray(v, jnp.float32)

  dcs, dhs = rnn_pallas.cell_backward_loop(f32(u), f32(dys), [f32(f) for f in factors],
                                           f32(passthrough), interpret=True)
  assert dcs.shape == dhs.shape == (t, b, H)
  for got, want in ((dcs, dcs_ref), (dhs, dhs_ref)):
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5,
                               atol=1e-5 * np.abs(want).max())


# ---------------------------------------------------------------------------
# lstm_layer(impl="pallas").


@pytest.mark.parametrize("t,b,p", [(9, 5, 6), (7, 17, 3)])
def test_lstm_layer_pallas_matches_reference(t, b, p):
  """Values and gradients w.r.t. x, kernel, bias and u; batches that are not
  a multiple of the kernels' 16-row blocks; lengths 0, 1, T and a hole."""
  x, layers, mask, r = _stack_inputs(t + b, t, b, p, H, 1, holes=[(1, 0)])
  out = _value_and_grads(_layer_by_layer("pallas"), x, layers, mask, r)
  ref = _value_and_grads(_reference, x, layers, mask, r)
  _assert_trees_close(out, ref)
  ys = rnn_kernels.lstm_layer(x, *layers[0], mask, impl="pallas")
  _assert_trees_close(ys, _reference(x, layers, mask))
  # A length-0 row stays zero.
  np.testing.assert_array_equal(np.asarray(ys)[:, 1], 0.0)


def test_lstm_layer_rejects_unknown_impl():
  x, layers, mask, _ = _stack_inputs(0, 3, 2, 4, H, 1)
  with pytest.raises(ValueError, match="impl 'wavefront'"):
    rnn_kernels.lstm_layer(x, *layers[0], mask, impl="wavefront")


# ---------------------------------------------------------------------------
# lstm_stack (wavefront).


@pytest.mark.parametrize("impl", ["scan", "pallas"])
@pytest.mark.parametrize("num_layers,t,b,p,unroll", [(1, 7, 3, 5, 1), (2, 12, 5, 4, 1),
                                                     (3, 20, 4, 6, 1), (2, 8, 17, 16, 3)])
def test_lstm_stack_matches_layer_by_layer_reference(num_layers, t, b, p, unroll, impl):
  x, layers, mask, r = _stack_inputs(num_layers * 10 + t, t, b, p, H, num_layers,
                                     holes=[(2, 0), (3, 2)])

  def stack(x, layers, mask):
    return rnn_kernels.lstm_stack(x, layers, mask, unroll, impl)

  ys = stack(x, layers, mask)
  assert ys.shape == (t, b, H)
  _assert_trees_close(ys, _reference(x, layers, mask))
  out = _value_and_grads(stack, x, layers, mask, r)
  ref = _value_and_grads(_reference, x, layers, mask, r)
  _assert_trees_close(out, ref)


def test_lstm_stack_accepts_a_list_of_lists():
  x, layers, mask, _ = _stack_inputs(3, 6, 2, 4, H, 2)
  np.testing.assert_array_equal(
      np.asarray(rnn_kernels.lstm_stack(x, [list(l) for l in layers], mask)),
      np.asarray(rnn_kernels.lstm_stack(x, layers, mask)))


def test_lstm_stack_rejects_mismatched_widths():
  rs = np.random.RandomState(0)
  x = jnp.zeros((4, 2, 5))
  mask = jnp.ones((4, 2, 1))
  l0 = _layer(rs, 5, 8)
  with pytest.raises(ValueError, match="layer 1"):   # a narrower second layer
    rnn_kernels.lstm_stack(x, [l0, _layer(rs, 8, 4)], mask)
  with pytest.raises(ValueError, match="layer 1"):   # input kernel of the wrong width
    rnn_kernels.lstm_stack(x, [l0, _layer(rs, 5, 8)], mask)
  k, _, u = _layer(rs, 8, 8)
  with pytest.raises(ValueError, match="layer 1"):   # bias of the wrong size
    rnn_kernels.lstm_stack(x, [l0, (k, jnp.zeros((16,)), u)], mask)
  with pytest.raises(ValueError, match="layer 0"):   # layer 0's recurrent kernel
    rnn_kernels.lstm_stack(x, [(l0[0], l0[1], jnp.zeros((8, 16)))], mask)
  with pytest.raises(ValueError, match="layer 0"):   # layer 0's kernel vs the input width
    rnn_kernels.lstm_stack(x, [_layer(rs, 6, 8)], mask)
  with pytest.raises(ValueError, match="empty"):
    rnn_kernels.lstm_stack(x, [], mask)


# ---------------------------------------------------------------------------
# Masked frames, for the new implementations.

IMPLS = {
    "pallas": _layer_by_layer("pallas"),
    "wavefront": lambda x, layers, mask: rnn_kernels.lstm_stack(x, layers, mask),
    "pallas_wavefront": lambda x, layers, mask: rnn_kernels.lstm_stack(x, layers, mask,
                                                                        impl="pallas"),
}


@pytest.mark.parametrize("impl", sorted(IMPLS))
def test_masked_frames_change_nothing(impl):
  """Garbage in masked input frames changes no output (masked steps hold the
  carry) and, when finite, no gradient; masked frames get zero gradient.

  (NaN inputs do reach the gradients, of every implementation including the
  autodiff reference: ``dkernel = x.T @ dz`` multiplies them by zeros.)
  """
  t, b = 10, 5
  num_layers = 2 if impl == "wavefront" else 1   # pallas: per layer, so one is enough
  x, layers, mask, r = _stack_inputs(7, t, b, 4, H, num_layers, holes=[(3, 0), (0, 2)])
  fn = IMPLS[impl]
  m = np.asarray(mask)[..., 0] == 0
  assert m.any() and not m.all()
  rs = np.random.RandomState(8)
  big = np.asarray(x).copy()
  big[m] = 1e4 * rs.randn(int(m.sum()), x.shape[-1])
  nan = np.asarray(x).copy()
  nan[m] = np.nan
  ys = np.asarray(fn(x, layers, mask))
  for noisy in (big, nan):
    np.testing.assert_array_equal(np.asarray(fn(jnp.asarray(noisy), layers, mask)), ys)
  ref = _value_and_grads(fn, x, layers, mask, r)
  out = _value_and_grads(fn, jnp.asarray(big), layers, mask, r)
  _assert_trees_close(out, ref, rtol=1e-6)
  gx = np.asarray(out[1][0])
  assert np.all(gx[m] == 0.0)
  # And both equal the reference on the clean input.
  _assert_trees_close(ref, _value_and_grads(_reference, x, layers, mask, r))


# ---------------------------------------------------------------------------
# The Encoder and the train step.


def _encoder(impl, num_layers=2, **kw):
  return models.Encoder(proj_dim=8, hidden=H, num_layers=num_layers, impl=impl, **kw)


def test_encoder_impls_share_parameters_and_outputs():
  """Same parameter tree and initial values for every impl (checkpoints are
  interchangeable), and the same outputs."""
  num_layers = 2
  rs = np.random.RandomState(num_layers)
  t = 9
  x = jnp.asarray(rs.randn(3, t, 5).astype(np.float32))
  mask = jnp.asarray(models.sequence_mask(np.array([t, 0, 1]), t))
  rng = jax.random.key(4)
  params, outs = {}, {}
  for impl in ("scan", "pallas", "wavefront", "auto"):
    model = _encoder(impl, num_layers)
    params[impl] = model.init(rng, x, mask)["params"]
    if impl != "auto":   # "auto" is "scan" here (tested in test_resolve_rnn_impl)
      outs[impl] = np.asarray(model.apply({"params": params["scan"]}, x, mask))
  assert set(params["scan"]) == {"proj", "norm"} | {f"rnn_{i}" for i in range(num_layers)}
  for i in range(num_layers):
    rnn = params["scan"][f"rnn_{i}"]
    assert set(rnn) == {"recurrent", "input"}
    assert rnn["recurrent"].shape == (H, 4 * H)
    assert rnn["input"]["kernel"].shape == (8 if i == 0 else H, 4 * H)
    assert rnn["input"]["bias"].shape == (4 * H,)
  ref_leaves = jax.tree_util.tree_flatten_with_path(params["scan"])[0]
  ref_def = jax.tree_util.tree_structure(params["scan"])
  for impl, p in params.items():
    assert jax.tree_util.tree_structure(p) == ref_def, impl
    for (path, a), (_, b) in zip(jax.tree_util.tree_flatten_with_path(p)[0], ref_leaves):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b),
                                    err_msg=f"{impl} {jax.tree_util.keystr(path)}")
  assert outs["scan"].shape == (3, t, H)
  np.testing.assert_array_equal(outs["scan"][1], 0.0)   # the length-0 row
  for impl in ("pallas", "wavefront"):
    np.testing.assert_allclose(outs[impl], outs["scan"], rtol=1e-5, atol=1e-6, err_msg=impl)


def test_encoder_wavefront_needs_lstm_without_dropout():
  x, mask = jnp.zeros((2, 4, 3)), jnp.ones((2, 4))
  with pytest.raises(ValueError, match="wavefront"):
    _encoder("wavefront", dropout=0.1).init(jax.random.key(0), x, mask)
  with pytest.raises(ValueError, match="wavefront"):
    _encoder("wavefront", cell="gru").init(jax.random.key(0), x, mask)


def test_lstm_params_are_created_like_recurrent():
  rng = jax.random.key(2)
  k, b, u = models.LSTMParams(H).init_with_output(rng, 5)[0]
  ref = models.Recurrent(H).init(rng, jnp.zeros((1, 3, 5)), jnp.ones((1, 3)))["params"]
  np.testing.assert_array_equal(np.asarray(u), np.asarray(ref["recurrent"]))
  np.testing.assert_array_equal(np.asarray(k), np.asarray(ref["input"]["kernel"]))
  np.testing.assert_array_equal(np.asarray(b), np.asarray(ref["input"]["bias"]))


def test_resolve_rnn_impl(monkeypatch):
  for impl in ("scan", "pallas", "wavefront"):
    assert models.resolve_rnn_impl(impl, "lstm", H) == impl
  if jax.default_backend() != "gpu":
    assert models.resolve_rnn_impl("auto", "lstm", H) == "scan"
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  assert models.resolve_rnn_impl("auto", "lstm", 16) == "pallas"
  assert models.resolve_rnn_impl("auto", "lstm", 64) == "pallas"
  assert models.resolve_rnn_impl("auto", "lstm", 48) == "scan"
  assert models.resolve_rnn_impl("auto", "lstm", 8) == "scan"
  assert models.resolve_rnn_impl("auto", "gru", 16) == "scan"


_EDGES = np.array([[-0.3, 0.3], [-0.3, 0.3]], np.float32)


def _train_step_results(impl):
  """Initial params, gradients, updated params and metrics of one train step
  (emobed: two 2-layer encoders, triplet loss) with ``rnn_impl=impl``."""
  batch = synthetic_batch(5, 4, 12)
  rng = jax.random.key(1)
  cfg = small_config("emobed").replace(model=dict(hidden=H, rnn_impl=impl))
  assert cfg.model.num_layers == 2
  model, state = train.create_train_state(cfg, jax.random.key(0))
  step = train.bound_train_step(model, cfg, _EDGES)

  def grads_and_step(state):
    def loss(p):   # the step's own loss (same dropout key, unused at dropout 0)
      return train.compute_losses(p, batch, jax.random.fold_in(rng, state.step), model=model,
                                  config=cfg, bin_edges=jnp.asarray(_EDGES), axis_name=None)[0]
    return jax.grad(loss)(state.params), step(state, batch, rng)

  grads, (new_state, metrics) = jax.jit(grads_and_step)(state)   # one compile
  return state.params, grads, new_state.params, metrics


@pytest.fixture(scope="module")
def scan_train_step():
  return _train_step_results("scan")


@pytest.mark.parametrize("impl", ["wavefront", "pallas"])
def test_train_step_matches_scan(impl, scan_train_step):
  """One full train step: same initial params, loss, gradients and updated
  parameters as rnn_impl="scan"."""
  p0, g0, n0, m0 = scan_train_step
  p1, g1, n1, m1 = _train_step_results(impl)
  jax.tree_util.tree_map(np.testing.assert_array_equal, p1, p0)
  for field in ("loss", "task_target", "task_aux", "triplet", "grad_norm"):
    np.testing.assert_allclose(float(getattr(m1, field)), float(getattr(m0, field)),
                               rtol=1e-5, atol=1e-6, err_msg=field)
  assert float(m0.grad_norm) > 0 and float(m0.triplet) > 0
  _assert_trees_close(g1, g0)
  _assert_trees_close(n1, n0)


# ---------------------------------------------------------------------------
# Config.


def test_rnn_impl_config_defaults_and_valid_combinations():
  assert ModelConfig().rnn_impl == "auto"
  assert RNN_IMPLS == ("auto", "scan", "pallas", "wavefront")
  for impl in RNN_IMPLS:
    ModelConfig(rnn_impl=impl).validate()
    assert from_dict(ModelConfig, to_dict(ModelConfig(rnn_impl=impl))).rnn_impl == impl
  ModelConfig(rnn="gru", rnn_impl="auto").validate()
  ModelConfig(rnn="gru", rnn_impl="scan").validate()
  ModelConfig(hidden=48, rnn_impl="wavefront").validate()
  ModelConfig(hidden=48, rnn_impl="auto").validate()
  ModelConfig(hidden=16, dropout=0.2, rnn_impl="pallas").validate()
  ModelConfig(dropout=0.2, rnn_impl="scan").validate()


@pytest.mark.parametrize("kw,flag", [
    (dict(rnn_impl="cudnn"), "--rnn_impl"),
    (dict(rnn_impl="Scan"), "--rnn_impl"),
    (dict(rnn="gru", rnn_impl="pallas"), "--rnn_impl"),
    (dict(rnn="gru", rnn_impl="wavefront"), "--rnn_impl"),
    (dict(hidden=48, rnn_impl="pallas"), "--hidden"),
    (dict(hidden=8, rnn_impl="pallas"), "--hidden"),
    (dict(dropout=0.1, rnn_impl="wavefront"), "--dropout"),
])
def test_rnn_impl_config_errors_name_the_flag(kw, flag):
  with pytest.raises(ConfigError, match="^" + flag):
    ModelConfig(**kw).validate()
  with pytest.raises(ConfigError, match="^" + flag):
    small_config("mono").replace(model=kw)


def test_encoder_pallas_with_dropout_runs_per_layer_kernels():
  """With dropout between layers, impl='pallas' runs one kernel per layer
  (no wavefront); with the same dropout rng it equals scan."""
  rs = np.random.RandomState(5)
  x = jnp.asarray(rs.randn(3, 9, 5).astype(np.float32))
  mask = jnp.asarray(models.sequence_mask(np.array([9, 4, 1]), 9))
  outs = {}
  for impl in ("scan", "pallas"):
    model = _encoder(impl, 2, dropout=0.3)
    params = model.init(jax.random.key(0), x, mask)
    outs[impl] = np.asarray(model.apply(params, x, mask, train=True,
                                        rngs={"dropout": jax.random.key(1)}))
  assert np.any(outs["scan"] == 0.0)   # dropout did drop
  np.testing.assert_allclose(outs["pallas"], outs["scan"], rtol=1e-5, atol=1e-6)


def test_lstm_stack_rejects_unknown_impl():
  x, layers, mask, _ = _stack_inputs(3, 6, 2, 4, H, 2)
  with pytest.raises(ValueError, match="impl"):
    rnn_kernels.lstm_stack(x, layers, mask, impl="cudnn")


# ---------------------------------------------------------------------------
# Runs: rnn_impl/unroll are execution choices, not part of a run's identity.


def test_a_run_resumes_with_another_rnn_impl(tmp_path):
  """A workdir trained with one rnn_impl/unroll (say pallas on a GPU) may be
  resumed with another (scan on a CPU); any other model change is refused.
  Configs written before rnn_impl existed (no such key) are accepted too."""
  import json
  from emobed_jax import workdir, writers
  from emobed_jax.config import RunConfig
  run = RunConfig().validate()
  (tmp_path / "checkpoints" / "1").mkdir(parents=True)  # a started run (else: fresh)
  gpu = dataclasses.replace(run, core=run.core.replace(model=dict(rnn_impl="pallas", unroll=8)))
  writers.write_json(tmp_path / "config.json", writers._jsonable(to_dict(gpu)))
  workdir.check_same_run(tmp_path, run)           # scan/auto, unroll 1: same run
  old = json.loads((tmp_path / "config.json").read_text())
  del old["core"]["model"]["rnn_impl"]            # a config from before rnn_impl
  (tmp_path / "config.json").write_text(json.dumps(old))
  workdir.check_same_run(tmp_path, run)
  other = dataclasses.replace(run, core=run.core.replace(model=dict(hidden=32)))
  with pytest.raises(workdir.RunError, match="another config"):
    workdir.check_same_run(tmp_path, other)


# ---------------------------------------------------------------------------
# The Pallas kernels lower to Triton (no GPU needed to check that).


@pytest.mark.parametrize("num_layers", [1, 2])
def test_pallas_kernels_lower_to_triton_for_cuda(monkeypatch, num_layers):
  """The kernels' jaxprs lower to Triton IR for a CUDA target (what the GPU
  runs; compiling the IR to PTX needs the GPU): one kernel for inference, a
  forward and a backward kernel for training, per layer or per stack."""
  monkeypatch.setattr(rnn_pallas, "_interpret", lambda interpret: False)
  t, b, p = 40, 20, 8
  x, layers, mask, _ = _stack_inputs(1, t, b, p, H, num_layers)

  def count(fn):
    txt = jax.jit(fn).trace(x, layers).lower(lowering_platforms=("cuda",)).as_text()
    return txt.count("xla.gpu.triton")

  def loss(f):
    return lambda x, ls: jnp.sum(f(x, ls) ** 2)

  def stack(x, ls):
    return rnn_kernels.lstm_stack(x, ls, mask, impl="pallas")

  def per_layer(x, ls):
    for k, bias, u in ls:
      x = rnn_kernels.lstm_layer(x, k, bias, u, mask, impl="pallas")
    return x

  assert count(stack) == 1
  assert count(jax.grad(loss(stack), (0, 1))) == 2
  assert count(per_layer) == num_layers
  assert count(jax.grad(loss(per_layer), (0, 1))) == 2 * num_layers


def test_check_kernels_passes_here(capsys):
  """launch/check_kernels.py (the check to run on a new accelerator) runs
  and passes on this CPU (Pallas in interpret mode); in process."""
  import importlib.util
  import launch_support  # noqa: F401  (puts launch/ on sys.path)
  root = Path(__file__).resolve().parents[1]
  spec = importlib.util.spec_from_file_location("check_kernels",
                                                root / "launch" / "check_kernels.py")
  ck = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(ck)
  ck.FLAGS(["check_kernels.py", "--shapes=3x9", "--hidden=16"])
  assert ck.main([]) == 0
  out = capsys.readouterr().out
  lines = [l for l in out.splitlines() if l.strip().startswith(("pallas", "wavefront"))]
  assert len(lines) == 2 and all(l.endswith("ok") for l in lines), out
  assert out.strip().endswith("PASS")
