r"""Side-by-side benchmark of the EmoBed train step: JAX (this project) vs PyTorch.

For every setting and shape it builds the project's real model and train step
(``train.create_train_state`` + ``train.bound_train_step``, run with
``parallel.pmap_train_step`` over the local devices or with ``jax.jit`` on
one), an equivalent PyTorch model (``bench_torch.py``: same layer sizes, same
losses, same optimiser), checks that both give the same loss on identical
weights and inputs (step 0, and step 1 after one optimiser update), then
times both in the same run, taking turns round by round after warm-up: the
median of ``--rounds * --steps_per_round`` (>= 20) steps, each ended by
``block_until_ready`` (JAX) or a finished backward/optimiser call (PyTorch).
PyTorch runs in a child process of its own by default (``TorchProcess``:
sharing one heap with JAX changed PyTorch's speed by up to 2x either way),
with the same malloc settings (``configure_malloc``, on by default).
It also times forward-only evaluation of whole recordings (``--eval_len``
frames, ``--eval_batches``) of the target branch.

Runs on this CPU machine (default) and on a GPU (``launch/gpu_check.sh``)::

  pip install -e .[bench]        # torch==2.13.0, CPU build
  python launch/benchmark.py                      # all settings, default shapes
  python launch/benchmark.py --settings=mono --shapes=32x300 --eval_batches=9
  python launch/benchmark.py --variants=pmap:scan,pmap:flax_cell   # A/B

``--variants``: comma-separated ``MODE:RNN`` JAX variants, each timed in the
same interleaved rounds as PyTorch.  MODE: ``pmap``
(``parallel.pmap_train_step`` over ``--devices`` devices, the global batch
split between them) or ``jit`` (one device).  RNN: a
``ModelConfig.rnn_impl`` value (``scan``, ``pallas``, ``wavefront``,
``auto``: the project's model with that setting) or ``flax_cell`` (the
library baseline: the same model with Flax's own
``nn.RNN(nn.OptimizedLSTMCell)`` layers, input projection inside every
step, autodiff); an ``_u<N>`` suffix sets ``ModelConfig.unroll=N``
(``scan_u8``).  Variants measured and rejected earlier (cuDNN through
``jax.experimental.rnn``, the autodiff reference scan, Pallas warps,
``shard_map``) are recorded in PERF_NOTES.md and ``benchmarks/``.

CPU devices: on the CPU platform ``--devices`` (default: the number of cores
this process may use) sets ``--xla_force_host_platform_device_count`` in
``XLA_FLAGS`` *before JAX creates its backends*, so ``pmap`` runs one replica per
core (the recurrence is a chain of small matmuls, latency-bound on one core).
On a GPU the real device count is used.

Output: one table on stdout and the same rows as JSON (``--json_out``).
Columns: frames/s (B*T / median step seconds) of each framework and their
ratio, JAX compile seconds (first call minus a step), peak RSS of the JAX
process so far (PyTorch's in the JSON), recompiles after the first call,
cores used (process CPU seconds / wall seconds while that framework
ran), and the share of the measured matmul peak (``--peak_size`` square
matmul) that the step's matmul FLOPs reach (training counted as 3x the
forward matmul FLOPs).  :func:`pipeline_rows` times the project's
grain input pipeline at the same shapes.
"""

from __future__ import annotations

import functools
import importlib.util
import dataclasses
import itertools
import json
import multiprocessing
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import _cli  # noqa: F401  (sys.path guard)
import numpy as np
from absl import app
from absl import flags

from emobed_jax.hostenv import configure_malloc  # jax-free (shared with train.py)

# JAX, and every emobed_jax module that imports it, is imported inside the
# functions below (the config module imports JAX, which is fine: XLA reads
# XLA_FLAGS when the backends are created, by configure_xla's time not yet).

SETTINGS = ("mono", "joint", "crossmodal", "emobed")

_SETTINGS = flags.DEFINE_list("settings", list(SETTINGS), "Settings to benchmark.")
_SHAPES = flags.DEFINE_list(
    "shapes", ["32x300", "128x300", "8x1500"],
    "Training shapes BxT (global batch x frames).")
_VARIANTS = flags.DEFINE_list(
    "variants", ["pmap:scan"],
    "JAX variants MODE:RNN, MODE in {pmap, jit}, RNN an --rnn_impl value (auto, "
    "scan, pallas, wavefront) or flax_cell (Flax's own LSTM cell, the baseline); "
    "optional _u<N> suffix for unroll=N (scan_u8).")
_DEVICES = flags.DEFINE_integer(
    "devices", 0, "CPU: number of host devices to create (0 = number of usable "
    "cores). Ignored on GPU (the real devices are used).")
_XLA_FLAGS = flags.DEFINE_string("xla_flags", "", "Extra XLA_FLAGS (set before JAX import).")
_MALLOC = flags.DEFINE_bool(
    "malloc_tuning", True, "glibc malloc: one arena, no mmap, no trimming (see "
    "configure_malloc); applies to both frameworks (one process).")
_ROUNDS = flags.DEFINE_integer("rounds", 6, "Interleaved timing rounds.")
_STEPS_PER_ROUND = flags.DEFINE_integer("steps_per_round", 4,
                                        "Timed steps per framework per round.")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed steps per framework after the first call.")
_TORCH = flags.DEFINE_bool("torch", True, "Benchmark PyTorch too (needs the `bench` extra).")
_TORCH_DEVICE = flags.DEFINE_string("torch_device", "auto", "cpu, cuda or auto.")
_TORCH_PROCESS = flags.DEFINE_enum(
    "torch_process", "separate", ["separate", "same"],
    "Run PyTorch in a child process of its own (default; see TorchProcess) or "
    "in this process. Either way the two frameworks take turns.")
_TORCH_THREADS = flags.DEFINE_integer("torch_threads", 0,
                                      "torch.set_num_threads (0 = usable cores).")
_EVAL_BATCHES = flags.DEFINE_list("eval_batches", ["1", "9"],
                                  "Evaluation batch sizes (recordings).")
_EVAL_LEN = flags.DEFINE_integer("eval_len", 7501, "Frames per evaluated recording.")
_EVAL_REPEATS = flags.DEFINE_integer("eval_repeats", 10, "Timed evaluation calls per framework.")
_EVAL_MODE = flags.DEFINE_enum("eval_mode", "auto", ["auto", "jit", "pmap"],
                               "JAX evaluation: auto = pmap over the devices when "
                               "B >= devices (the batch padded to a multiple of them), "
                               "what evaluate.evaluate_recordings and "
                               "Predictor.predict_many do; jit = one device; pmap = always.")
_EQUIV_RTOL = flags.DEFINE_float("equiv_rtol", 1e-4, "Tolerance of the step-0/1 loss check.")
_PEAK_SIZE = flags.DEFINE_integer("peak_size", 2048, "Square matmul size of the peak measurement.")
_JSON_OUT = flags.DEFINE_string("json_out", "runs/benchmark.json",
                                "Where the JSON table goes ('' = none).")
_SEED = flags.DEFINE_integer("seed", 0, "Data and init seed.")
_LOOP_STEPS = flags.DEFINE_integer(
    "loop_steps", 30, "Timed steps of each training-loop row (loop_rows; printed first); "
    "0 = no loop rows.")
_LOOP_FEEDS = flags.DEFINE_list("loop_feeds", ["serial", "prefetch", "device_windows"],
                                "How the loop rows' loop gets its batches (see loop_rows).")
_ONLY_LOOP = flags.DEFINE_bool("only_loop", False, "Loop (and pipeline) rows only.")
_LOOP_ROUNDS = flags.DEFINE_integer("loop_rounds", 2, "Rounds of the loop rows (best kept).")
_LOOP_DIMS = flags.DEFINE_list("loop_dims", ["176", "336"],
                               "Target,aux feature widths of the loop and pipeline rows "
                               "(default: the real RECOLA widths, both variants).")


def usable_cores() -> int:
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # pragma: no cover - not Linux
    return os.cpu_count() or 1


def configure_xla(devices: int, extra: str = "") -> int:
  """Put the host device count (and extra flags) into XLA_FLAGS.

  Must run before JAX creates its backends (first device use); returns the
  device count requested.
  """
  # XLA reads XLA_FLAGS when JAX creates its backends, not on import (the
  # config module imports JAX, and _cli imports it).
  xb = sys.modules.get("jax._src.xla_bridge")
  if xb is not None and xb.backends_are_initialized():
    raise RuntimeError("configure_xla: JAX is already imported and its backends "
                       "initialised; XLA_FLAGS would be ignored")
  n = devices or usable_cores()
  parts = [p for p in os.environ.get("XLA_FLAGS", "").split()
           if not p.startswith("--xla_force_host_platform_device_count")]
  parts.append(f"--xla_force_host_platform_device_count={n}")
  parts += extra.split()
  os.environ["XLA_FLAGS"] = " ".join(parts)
  return n


#: The real RECOLA feature widths with both variants (arousal + valence
#: functionals side by side): audio 2 x 88, video 2 x 168.
REAL_DIMS = (176, 336)


def synthetic_recordings(dims=REAL_DIMS, num: int = 9, frames: int = 7501, seed: int = 0):
  """``num`` random recordings of RECOLA's shape (``frames`` frames, target
  and aux widths ``dims``, two labels), as ``input_pipeline.Recording``."""
  from emobed_jax import input_pipeline
  rs = np.random.RandomState(seed)
  return [input_pipeline.Recording(f"train_{i}", rs.randn(frames, dims[0]).astype(np.float32),
                                   rs.randn(frames, dims[1]).astype(np.float32),
                                   rs.randn(frames, 2).astype(np.float32)) for i in range(num)]


def pipeline_rows(batch: int = 32, window: int = 300, hop: int = 50,
                  steps: int = 60, dims=REAL_DIMS, frames: int = 7501) -> list[dict[str, Any]]:
  """Host input pipeline frames/s on RECOLA shapes, one thread.

  Nine synthetic ``frames``-frame recordings (widths ``dims``, by default the real
  176 audio / 336 video, two labels) windowed by
  ``input_pipeline.WindowSource``; rows: grain's ``train_batches`` (the
  batches of the loop before issue 11) and ``WindowBatches`` (the same
  batches), each read by step and split with ``shard_batch``;
  both put on the local devices as the host feed's thread did before
  (``place``) and does now (``WindowBatches.shards``, one aligned block per
  device, ``place_shards``); the device feed's window positions as grain computes them
  and from ``device_windows.WindowIds``'s table once filled; frames/s =
  B * T * steps / seconds (for positions: the frames they stand for).
  """
  import jax
  from emobed_jax import device_windows, input_pipeline, parallel, prefetch
  source = input_pipeline.WindowSource(synthetic_recordings(dims, frames=frames), window, hop)
  n_dev = jax.local_device_count()
  fast = input_pipeline.WindowBatches(source, batch, 0, 10)
  rows = []

  def measure(name: str, n: int, read: Callable[[int], Any]) -> None:
    read(0)
    start = time.perf_counter()
    for s in range(1, n):
      read(s)
    sec = time.perf_counter() - start
    rows.append(dict(name=name, B=batch, T=window, dims=list(dims),
                     frames_per_s=batch * window * (n - 1) / sec))

  grain_ds = input_pipeline.train_batches(source, batch, 0, 10)
  n = min(steps, len(fast))
  measure("grain windows (train_batches)", n, lambda s: parallel.shard_batch(grain_ds[s], 1))
  measure("WindowBatches", n, lambda s: parallel.shard_batch(fast[s], 1))
  placer = prefetch.DevicePrefetch(fast, 0, 0)   # its place / place_shards only
  placer.close()
  measure(f"WindowBatches + device_put ({n_dev} devices; host feed before)", n,
          lambda s: jax.block_until_ready(placer.place(fast[s])))
  measure(f"WindowBatches.shards + device_put ({n_dev} devices; host feed)", n,
          lambda s: jax.block_until_ready(placer.place_shards(fast.shards(s, n_dev))))
  measure("window positions from grain (device feed, filling)", n, fast.window_ids)
  positions = device_windows.WindowIds(fast)
  positions[n - 1]   # filled
  measure("window positions, filled table (device feed)", n, positions.__getitem__)
  positions.close()
  return rows


# ---------------------------------------------------------------------------
# The real training loop.

#: Loop variants: how train._train_loop gets its batches.
LOOP_FEEDS = ("serial", "prefetch", "device_windows")


class _NoCheckpoints:
  """The Checkpointer calls of ``train._train_loop``, doing nothing."""

  def all_steps(self):
    return []

  def save(self, *args):
    pass

  def wait(self):
    pass


class _SerialFeed:
  """The loop before issue 11: grain's host batch of the step, split over
  the devices (``pmap`` copies it to them when the step is called)."""

  def __init__(self, batches, n: int):
    self.batches, self.n = batches, n

  def __getitem__(self, step):
    from emobed_jax import parallel
    return parallel.shard_batch(self.batches[step], self.n)

  def close(self):
    pass


def loop_rows(setting: str, b: int, t: int, args, dims=REAL_DIMS,
              feeds=LOOP_FEEDS, steps: int = 30, rounds: int = 2, warm: int = 10,
              frames: int = 7501, variant: str = "pmap:scan") -> list[dict[str, Any]]:
  """Frames/s of the real training loop beside the step alone, same process.

  ``train._train_loop`` (data, step, on-device metric sums, a log line
  every 10 steps to metrics.jsonl and TensorBoard, no checkpoints, no
  validation) on :func:`synthetic_recordings` of widths ``dims`` (nine of
  ``frames`` frames; without the auxiliary modality for ``mono``, as
  ``run_data`` loads them; before 2026-11-30 the mono rows also cut the
  unused aux windows), windows of ``t`` frames every 50, global batch ``b``
  over all local devices, for ``steps`` timed steps after ``warm`` untimed
  ones (from the log line after step ``warm``, which waits for the device,
  to the end of the last step; a log line every ``warm`` steps).  Feeds:
  ``serial`` (grain's host batch read and copied in the loop: before issue
  11), ``prefetch`` (what ``train_and_evaluate`` does now:
  ``WindowBatches`` through ``prefetch.DevicePrefetch``) and
  ``device_windows`` (``--input_feed=device``:
  :func:`emobed_jax.device_windows.pmap_window_step`).  The step alone: the
  same pmapped step on one batch already on the devices, ``steps`` calls,
  blocked at the end.  ``rounds`` rounds (step, feeds, feeds reversed on
  odd rounds, step once more at the end); each row keeps the best of its
  runs (a shared machine only ever slows a run down): ``loop_ratio`` is
  best loop / best step; ``loop_ratio_paired`` the median over the rounds
  of each loop run / the mean of the step-alone runs just before and after
  it.  Every run starts
  from the same initial state and data order.  ``variant``: its RNN (and
  ``_u<N>``) is the model's; the loop always runs ``pmap`` over the local
  devices, as ``train_and_evaluate`` does.
  """
  import tempfile

  import jax
  from emobed_jax import device_windows, input_pipeline, losses, parallel, prefetch, train
  from emobed_jax import workdir as wd
  from emobed_jax.config import DataConfig, RunConfig
  _, rnn, unroll = parse_variant(variant)
  cfg = core_config(setting, rnn, unroll, dims=dims)
  recs = synthetic_recordings(dims, frames=frames, seed=args["seed"])
  if not cfg.task.parts["aux"]:  # as run_data loads them: no auxiliary modality
    recs = [dataclasses.replace(r, aux=None) for r in recs]
  source = input_pipeline.WindowSource(recs, t, 50)
  spe = 10 ** 9   # no epoch ends: no validation
  num_epochs = -(-(warm + steps + 1) * b // len(source)) + 1
  grain_batches = input_pipeline.train_batches(source, b, args["seed"], num_epochs)
  fast = input_pipeline.WindowBatches(source, b, args["seed"], num_epochs)
  stop = min(len(fast), warm + steps)
  config = RunConfig(core=cfg, data=DataConfig(window=t), batch_size=b, log_every=warm)
  model, state0 = train.create_train_state(cfg, jax.random.key(args["seed"]))
  host0 = jax.device_get(state0)
  edges = losses.fit_bin_edges(np.concatenate([r.labels for r in recs]), cfg.loss.num_bins)
  step_fn = train.bound_train_step(model, cfg, edges, parallel.AXIS)
  devices = jax.local_devices()
  n = len(devices)
  p_step = parallel.pmap_train_step(step_fn)
  rng = jax.random.key(args["seed"] + 1)

  def step_only() -> float:
    st = parallel.replicate(host0)
    batch = prefetch.DevicePrefetch(fast, 0, 1).place(fast[0])
    st, m = p_step(st, batch, rng)
    jax.block_until_ready(m)
    t0 = time.perf_counter()
    for _ in range(steps):
      st, m = p_step(st, batch, rng)
    jax.block_until_ready((st, m))
    return b * t * steps / (time.perf_counter() - t0)

  compiled = {}

  def run_loop(feed_name: str) -> tuple[float, float]:
    step, positions = p_step, None
    if feed_name == "serial":
      feed = _SerialFeed(grain_batches, n)
    elif feed_name == "prefetch":
      feed = prefetch.DevicePrefetch(fast, 0, stop)
    else:
      if "device_windows" not in compiled:   # one pmap (and one copy of the frames)
        compiled["device_windows"] = device_windows.pmap_window_step(
            step_fn, fast.frames, t, devices)
      step = compiled["device_windows"]
      positions = device_windows.WindowIds(fast)
      feed = prefetch.DevicePrefetch(positions, 0, stop)
    marks = []   # (wall, CPU seconds) at each log line

    def report(kind, info):
      if kind == "train":
        marks.append((time.perf_counter(), _cpu_seconds()))
    polls = itertools.count()   # polled once before every step, from step 0
    with tempfile.TemporaryDirectory() as tmp:
      log = wd.MetricsLog(Path(tmp))
      try:
        train._train_loop(
            parallel.replicate(host0), feed, rng, config=config, p_step=step,
            validate=None, ckpt=_NoCheckpoints(), log=log, report=report,
            steps_per_epoch=spe, meta={"best_score": None, "best_step": None},
            stop_requested=lambda: next(polls) >= stop)
      except train.RunInterrupted:
        pass
      finally:
        feed.close()
        if positions is not None:
          positions.close()
        log.close()
    sec = time.perf_counter() - marks[0][0]   # the stop waited for the last step
    return b * t * (stop - warm) / sec, (_cpu_seconds() - marks[0][1]) / max(sec, 1e-9)

  rows = []
  try:
    step_fps, measured = [], {f: [] for f in feeds}
    for r in range(rounds):
      step_fps.append(step_only())
      for f in (feeds if r % 2 == 0 else feeds[::-1]):
        measured[f].append(run_loop(f))
    step_fps.append(step_only())
  except Exception as e:  # one broken row must not lose the others
    return [failed_row("loop", setting, b, t, ",".join(feeds), e)]
  best = max(step_fps)
  for f, runs in measured.items():
    fps, cores = max(runs)
    # Paired: round r's loop run against the step-alone runs just before and
    # after it (a load that comes and goes hits both alike); the median over
    # the rounds, beside the ratio of the bests.
    paired = [run[0] / (0.5 * (step_fps[r] + step_fps[r + 1])) for r, run in enumerate(runs)]
    rows.append(dict(kind="loop", setting=setting, B=b, T=t, variant=f, rnn=rnn, devices=n,
                     dims=list(dims), fps_jax=fps, fps_step=best, loop_ratio=fps / best,
                     loop_ratio_paired=float(np.median(paired)), loop_ratio_runs=paired,
                     fps_runs=[r[0] for r in runs], fps_step_runs=step_fps, cores_jax=cores,
                     steps_timed=stop - warm, peak_rss_mb=peak_rss_mb()))
  return rows


# ---------------------------------------------------------------------------
# Data and models.


def synthetic_batch(b: int, t: int, setting: str, target_dim: int = 88,
                    aux_dim: int = 168, num_outputs: int = 2, seed: int = 0):
  """Random features, smooth random-walk labels, every frame real (numpy)."""
  rs = np.random.RandomState(seed)
  y = (np.cumsum(rs.randn(b, t, num_outputs), axis=1) / np.sqrt(t)).astype(np.float32)
  batch = dict(target=rs.randn(b, t, target_dim).astype(np.float32),
               mask=np.ones((b, t), np.float32), labels=y)
  if setting != "mono":
    batch["aux"] = rs.randn(b, t, aux_dim).astype(np.float32)
  return batch


MODES = ("pmap", "jit")
#: The library baseline: Flax's own LSTM cell (:func:`flax_cell_model`).
BASELINE = "flax_cell"


def parse_variant(variant: str) -> tuple[str, str, int]:
  """``"pmap:scan_u8"`` -> ``("pmap", "scan", 8)``: the mode, the RNN (a
  ``ModelConfig.rnn_impl`` value or ``flax_cell``) and the unroll (``_u<N>``,
  default 1).  Raises ``ValueError`` naming the variant."""
  from emobed_jax.config import RNN_IMPLS
  mode, sep, rnn = variant.partition(":")
  if not sep or mode not in MODES:
    raise ValueError(f"--variants: {variant!r}: expected MODE:RNN with MODE one of {MODES}")
  base, sep, unroll = rnn.partition("_u")
  if base not in RNN_IMPLS + (BASELINE,) or (sep and not unroll.isdigit()) or unroll == "0":
    raise ValueError(f"--variants: {variant!r}: unknown RNN {rnn!r}, expected one of "
                     f"{RNN_IMPLS + (BASELINE,)} with an optional _u<N> (unroll) suffix")
  return mode, base, int(unroll or 1)


def core_config(setting: str, rnn: str = "scan", unroll: int = 1, dims=None):
  """The benchmarked config: the defaults, ``rnn_impl=rnn`` (``flax_cell``
  ignores it: ``scan``), ``unroll`` and feature widths ``dims`` (target,
  aux; None: the defaults, 88/168)."""
  from emobed_jax.config import CoreConfig, ModelConfig, TaskConfig
  impl = "scan" if rnn == BASELINE else rnn
  widths = {} if dims is None else dict(target_dim=dims[0], aux_dim=dims[1])
  return CoreConfig(model=ModelConfig(rnn_impl=impl, unroll=unroll),
                    task=TaskConfig(setting=setting, **widths)).validate()


@functools.cache
def flax_cell_model():
  """``models.EmoBed`` whose encoders run Flax's own LSTM cell: ``Dense ->
  LayerNorm -> nn.RNN(nn.OptimizedLSTMCell)`` per layer (dropout between as
  configured), batch-major, the input projection inside every step and the
  backward pass by autodiff: the straightforward Flax model, a subclass (no
  library module is patched).  Its own parameter tree."""
  import flax.linen as nn
  import jax.numpy as jnp

  from emobed_jax import models

  class FlaxCellEncoder(nn.Module):
    proj_dim: int
    hidden: int
    num_layers: int
    dropout: float = 0.0
    unroll: int = 1

    @nn.compact
    def __call__(self, x, mask, *, train: bool = False):
      x = nn.LayerNorm(name="norm")(nn.Dense(self.proj_dim, name="proj")(x))
      lengths = jnp.sum(mask, axis=1).astype(jnp.int32)
      for i in range(self.num_layers):
        cell = nn.OptimizedLSTMCell(self.hidden, name=f"rnn_{i}")
        x = nn.RNN(cell, unroll=self.unroll)(x, seq_lengths=lengths)
        if self.dropout > 0:
          x = nn.Dropout(self.dropout, deterministic=not train)(x)
      return x

  class FlaxCellEmoBed(models.EmoBed):
    def _encoder(self, name: str) -> nn.Module:
      m = self.config.model
      return FlaxCellEncoder(m.proj_dim, m.hidden, m.num_layers, m.dropout, m.unroll,
                             name=name)

  return FlaxCellEmoBed


def create_state(cfg, rnn: str, seed: int):
  """``(model, train state)`` of variant ``rnn``: ``train.create_train_state``,
  or for ``flax_cell`` the same state (optimiser, step type) over
  :func:`flax_cell_model`'s parameters."""
  import jax
  from emobed_jax import models, train
  model, state = train.create_train_state(cfg, jax.random.key(seed))
  if rnn == BASELINE:
    model, params = models.init_params(cfg, jax.random.key(seed),
                                       model=flax_cell_model()(cfg))
    state = state.replace(apply_fn=model.apply, params=params, opt_state=state.tx.init(params))
  return model, state


class JaxVariant:
  """One JAX train step (the project's), placed and ready to time."""

  def __init__(self, setting: str, batch, mode: str, rnn: str, devices=None,
               seed: int = 0):
    import jax
    from emobed_jax import losses, parallel, train
    self.name = f"{mode}:{rnn}"
    self.mode, self.base, unroll = parse_variant(self.name)
    self.cfg = core_config(setting, self.base, unroll)
    self.traces = 0
    self.model, state = create_state(self.cfg, self.base, seed)
    self.params0 = jax.device_get(state.params)
    self.edges = losses.fit_bin_edges(batch["labels"], self.cfg.loss.num_bins)
    self.devices = list(devices or jax.local_devices())
    n = len(self.devices) if mode == "pmap" else 1
    if batch["target"].shape[0] % n:
      raise ValueError(f"batch {batch['target'].shape[0]} not divisible by {n} devices")
    self.n = n
    fn = train.bound_train_step(self.model, self.cfg, self.edges,
                                axis_name=parallel.AXIS if mode == "pmap" else None)

    def counted(*args):
      self.traces += 1  # runs once per trace, not per call
      return fn(*args)

    self.rng = jax.random.key(seed + 1)
    if mode == "pmap":
      from jax.sharding import NamedSharding, PartitionSpec
      self.step_fn = parallel.pmap_train_step(counted, devices=self.devices)
      self.state = parallel.replicate(state, self.devices)
      sharding = NamedSharding(parallel.local_mesh(self.devices), PartitionSpec(parallel.AXIS))
      self.batch = {k: jax.device_put(v, sharding)
                    for k, v in parallel.shard_batch(batch, n).items()}
    else:
      self.step_fn = jax.jit(counted, donate_argnums=(0,))
      dev = self.devices[0]
      self.state = jax.device_put(jax.device_get(state), dev)
      self.batch = jax.device_put(batch, dev)

  def step(self):
    import jax
    self.state, metrics = self.step_fn(self.state, self.batch, self.rng)
    jax.block_until_ready(self.state)
    return metrics


class TorchRunner:
  """The PyTorch reference step on the same data, ready to time."""

  def __init__(self, setting: str, batch, edges, params=None, device: str = "cpu"):
    import torch
    import bench_torch
    self.torch = torch
    self.device = device
    self.model = bench_torch.TorchEmoBed(setting).to(device)
    if params is not None:
      bench_torch.load_flax_params(self.model, params)
    self.runner = bench_torch.TorchStep(self.model, edges)
    if self.runner.edges is not None:
      self.runner.edges = self.runner.edges.to(device)
    self.batch = {k: v.to(device) for k, v in bench_torch.to_torch(batch).items()}

  def sync(self):
    if self.device.startswith("cuda"):
      self.torch.cuda.synchronize()

  def step(self):
    loss = self.runner.step(self.batch)
    self.sync()
    return loss


def resolve_torch_device(device: str, platform: str) -> str:
  import torch
  if device == "auto":
    return "cuda" if platform == "gpu" and torch.cuda.is_available() else "cpu"
  return device


def make_torch_backend(where: str, device: str, platform: str, malloc: bool, threads: int):
  """PyTorch for the benchmark: ``separate`` process (default) or ``same``."""
  if where == "separate":
    return TorchProcess(malloc, threads, device, platform)
  import torch
  torch.set_num_threads(threads)
  return TorchLocal(resolve_torch_device(device, platform))


class TorchLocal:
  """PyTorch in this process (``--torch_process=same``)."""

  def __init__(self, device: str):
    import torch
    self.device = device
    self.version = torch.__version__
    self.fn: Callable[[], Any] | None = None

  def train(self, setting: str, batch, edges, params) -> list[float]:
    """Build the step from ``params``; return the losses of its first two steps."""
    tr = TorchRunner(setting, batch, edges, params=params, device=self.device)
    self.fn = tr.step
    return [scalar(tr.step()), scalar(tr.step())]

  def eval(self, x, params):
    """Build the target branch from ``params``; return its predictions for ``x``."""
    import torch
    import bench_torch
    tm = bench_torch.TorchEmoBed("mono").to(self.device).eval()
    bench_torch.load_flax_params(tm, params)
    xt = torch.as_tensor(x).to(self.device)
    device = self.device

    def run():
      with torch.inference_mode():
        y = tm.predict(xt)
      if device.startswith("cuda"):
        torch.cuda.synchronize()
      return y

    self.fn = run
    return run().cpu().numpy()

  def timed(self, n: int) -> tuple[list[float], float]:
    t = Timer()
    t.run(self.fn, n)
    return t.times, t.cpu

  def peak_rss_mb(self) -> float:
    return peak_rss_mb()

  def close(self):
    pass


def _torch_server(conn, malloc: bool, threads: int, device: str, platform: str) -> None:
  """Child process loop of :class:`TorchProcess`."""
  configure_malloc(malloc)
  import torch
  torch.set_num_threads(threads)
  local = TorchLocal(resolve_torch_device(device, platform))
  while True:
    cmd, args = conn.recv()
    try:
      if cmd == "quit":
        conn.send(("ok", None))
        return
      out = (local.version, local.device) if cmd == "ping" else getattr(local, cmd)(*args)
      conn.send(("ok", out))
    except Exception as e:  # noqa: BLE001  (reported to the parent)
      conn.send(("error", f"{type(e).__name__}: {e}"))


class TorchProcess:
  """PyTorch in a process of its own (``--torch_process=separate``, default).

  Same interface as :class:`TorchLocal`; the child times its own steps.
  Measured: PyTorch's CPU step in a process that has also run JAX is up to
  ~35% slower than alone (and with default malloc ~20% faster): the two
  frameworks' allocations share one heap.  A child of its own, with the
  same malloc settings, keeps each framework's memory to itself while the
  runs stay interleaved (only one of the two computes at a time).
  """

  def __init__(self, malloc: bool, threads: int, device: str = "cpu", platform: str = "cpu"):
    ctx = multiprocessing.get_context("spawn")
    self.conn, child = ctx.Pipe()
    self.proc = ctx.Process(target=_torch_server,
                            args=(child, malloc, threads, device, platform), daemon=True)
    self.proc.start()
    self.version, self.device = self._call("ping")

  def _call(self, cmd: str, *args):
    self.conn.send((cmd, args))
    status, out = self.conn.recv()
    if status != "ok":
      raise RuntimeError(f"torch process: {cmd}: {out}")
    return out

  def train(self, setting, batch, edges, params):
    return self._call("train", setting, batch, edges, params)

  def eval(self, x, params):
    return self._call("eval", x, params)

  def timed(self, n):
    return self._call("timed", n)

  def peak_rss_mb(self):
    return self._call("peak_rss_mb")

  def close(self):
    try:
      self._call("quit")
    finally:
      self.proc.join(timeout=10)


# ---------------------------------------------------------------------------
# Timing.


def _cpu_seconds() -> float:
  r = resource.getrusage(resource.RUSAGE_SELF)
  return r.ru_utime + r.ru_stime


def peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class Timer:
  """Per-step wall times and the CPU seconds spent while they ran."""

  def __init__(self):
    self.times: list[float] = []
    self.cpu = 0.0

  def run(self, fn, n: int) -> None:
    """Time ``n`` calls of ``fn``, or let ``fn.timed(n)`` (another process)
    time them."""
    if hasattr(fn, "timed"):
      times, cpu = fn.timed(n)
      self.times += times
      self.cpu += cpu
      return
    c0 = _cpu_seconds()
    for _ in range(n):
      t0 = time.perf_counter()
      fn()
      self.times.append(time.perf_counter() - t0)
    self.cpu += _cpu_seconds() - c0

  @property
  def median(self) -> float:
    return statistics.median(self.times)

  @property
  def cores(self) -> float:
    return self.cpu / max(sum(self.times), 1e-9)


def interleaved(runners: dict[str, Any], rounds: int, per_round: int,
                warmup: int) -> dict[str, Timer]:
  """Warm every runner up, then time them in alternating order, round by round."""
  for fn in runners.values():
    if warmup:
      Timer().run(fn, warmup)
  timers = {k: Timer() for k in runners}
  names = list(runners)
  for r in range(rounds):
    order = names if r % 2 == 0 else names[::-1]
    for k in order:
      timers[k].run(runners[k], per_round)
  return timers


def matmul_flops_per_frame(cfg) -> float:
  """Forward matmul FLOPs per frame (2 * multiply-adds) of the model of
  ``cfg`` (a ``CoreConfig``): each encoder's projection, input and recurrent
  kernels, the head(s), and the embeddings once per triplet segment."""
  m, t = cfg.model, cfg.task

  def enc(d):
    return (d * m.proj_dim + m.proj_dim * 4 * m.hidden + m.hidden * 4 * m.hidden
            + (m.num_layers - 1) * 2 * m.hidden * 4 * m.hidden)

  head = m.hidden * m.head_hidden + m.head_hidden * t.num_outputs
  f = enc(t.target_dim) + head
  if t.parts["aux"]:
    f += enc(t.aux_dim) + head
  if t.parts["triplet"]:
    f += 2 * m.hidden * m.embed_dim / cfg.loss.triplet_segment
  return 2.0 * f


def matmul_peak_gflops(size: int = 2048, repeats: int = 5) -> float:
  """Best observed GFLOP/s of a square f32 matmul on JAX's default device."""
  import jax
  import jax.numpy as jnp
  a = jnp.asarray(np.random.RandomState(0).randn(size, size).astype(np.float32))
  mm = jax.jit(lambda x: x @ x)
  jax.block_until_ready(mm(a))
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(mm(a))
    best = min(best, time.perf_counter() - t0)
  return 2.0 * size ** 3 / best / 1e9


# ---------------------------------------------------------------------------
# Rows.


def check_losses(name: str, jax_losses, torch_losses, rtol: float) -> dict[str, float]:
  """Step-0 and step-1 losses of JAX and PyTorch from the same weights/inputs.

  Step 0: the loss at the shared initial weights; step 1: after one
  optimiser update each (checks gradients, clipping and Adam as well).
  """
  out = dict(loss0_jax=float(jax_losses[0]), loss0_torch=float(torch_losses[0]),
             loss1_jax=float(jax_losses[1]), loss1_torch=float(torch_losses[1]))
  for a, b in zip(jax_losses, torch_losses):
    if not abs(float(a) - float(b)) <= rtol * max(1.0, abs(float(b))):
      raise AssertionError(f"{name}: JAX and PyTorch losses disagree: {out} (rtol {rtol})")
  return out


def first_two_steps(runner) -> tuple[list[float], float]:
  """Two steps of a fresh runner: their losses and the compile seconds
  (first call minus second)."""
  t0 = time.perf_counter()
  l0 = runner.step()
  first = time.perf_counter() - t0
  t0 = time.perf_counter()
  l1 = runner.step()
  second = time.perf_counter() - t0
  return [scalar(l0), scalar(l1)], max(first - second, 0.0)


def scalar(x) -> float:
  """A step's loss (JAX metrics, a device array or a torch tensor) as float."""
  x = getattr(x, "loss", x)
  if hasattr(x, "detach"):
    x = x.detach().cpu().numpy()
  return float(np.asarray(x).reshape(-1)[0])


def train_rows(setting: str, b: int, t: int, variants: list[str], torch_backend,
               args) -> list[dict[str, Any]]:
  """One row per JAX variant; ``torch_backend``: a :class:`TorchProcess`,
  :class:`TorchLocal` or None (JAX only)."""
  batch = synthetic_batch(b, t, setting, seed=args["seed"])
  jvs, first_losses, compile_s, failed = [], {}, {}, []
  for v in variants:
    mode, _, rnn = v.partition(":")
    try:
      jv = JaxVariant(setting, batch, mode, rnn, seed=args["seed"])
      first_losses[jv.name], compile_s[jv.name] = first_two_steps(jv)
    except Exception as e:  # one broken variant must not lose the others' rows
      failed.append(failed_row("train", setting, b, t, v, e))
      continue
    jvs.append(jv)
  if not jvs:
    return failed
  runners: dict[str, Any] = {jv.name: jv.step for jv in jvs}
  tr, torch_losses = torch_backend, None
  if tr is not None:
    ref = next((jv for jv in jvs if jv.base != BASELINE), jvs[0])
    torch_losses = tr.train(setting, batch, ref.edges, ref.params0)
    runners["torch"] = tr
  equiv = {jv.name: check_losses(f"{setting} B={b} T={t} {jv.name}", first_losses[jv.name],
                                 torch_losses, args["equiv_rtol"])
           for jv in jvs if tr is not None and jv.base != BASELINE}
  timers = interleaved(runners, args["rounds"], args["steps_per_round"], args["warmup"])
  flops = 3.0 * matmul_flops_per_frame(jvs[0].cfg)
  rows = []
  for jv in jvs:
    tj = timers[jv.name]
    row = dict(kind="train", setting=setting, B=b, T=t, variant=jv.name,
               devices=jv.n, fps_jax=b * t / tj.median, step_ms_jax=1e3 * tj.median,
               compile_s=compile_s[jv.name], recompiles=jv.traces - 1,
               cores_jax=tj.cores, steps_timed=len(tj.times),
               pct_peak_jax=100.0 * flops * b * t / tj.median / 1e9 / args["peak"])
    if tr is not None:
      tt = timers["torch"]
      row.update(fps_torch=b * t / tt.median, step_ms_torch=1e3 * tt.median,
                 ratio=tt.median / tj.median, cores_torch=tt.cores,
                 pct_peak_torch=100.0 * flops * b * t / tt.median / 1e9 / args["peak"],
                 peak_rss_mb_torch=tr.peak_rss_mb(), **equiv.get(jv.name, {}))
    row["peak_rss_mb"] = peak_rss_mb()
    rows.append(row)
  return rows + failed


def failed_row(kind: str, setting: str, b: int, t: int, variant: str, e: Exception):
  """The row of a variant that raised: printed now, reported in the table and
  the JSON, and makes the run exit 1 at the end."""
  msg = f"{type(e).__name__}: {e}".splitlines()[0][:300]
  print(f"  {kind} {setting} B={b} T={t} {variant}: FAILED: {msg}", flush=True)
  return dict(kind=kind, setting=setting, B=b, T=t, variant=variant, error=msg)


def eval_rows(b: int, t: int, variants: list[str], torch_backend,
              args) -> list[dict[str, Any]]:
  """Forward-only evaluation of whole recordings (target branch), one row per
  JAX variant (its RNN; the mode is ``--eval_mode``), timed interleaved with
  PyTorch."""
  import jax
  batch = synthetic_batch(b, t, "mono", seed=args["seed"] + 7)
  x, mask = batch["target"], batch["mask"]
  devices = jax.local_devices()
  mode = args["eval_mode"]
  if mode == "auto":
    mode = "pmap" if len(devices) > 1 and b >= len(devices) else "jit"
  n = len(devices) if mode == "pmap" else 1
  runners: dict[str, Any] = {}
  outputs, firsts, params, failed = {}, {}, None, []
  for rnn in dict.fromkeys(v.partition(":")[2] for v in variants):
    try:
      if parse_variant(f"{mode}:{rnn}")[1] == BASELINE:   # its own parameters: no torch twin
        continue
      run, out, first, params = _eval_runner(rnn, x, mask, b, mode, n, devices, args)
    except Exception as e:  # one broken variant must not lose the others' rows
      failed.append(failed_row("eval", "target branch", b, t, f"{mode}:{rnn}", e))
      continue
    outputs[rnn], firsts[rnn], runners[rnn] = out, first, run
  if not runners:
    return failed
  diffs = {}
  if torch_backend is not None:
    y_t = torch_backend.eval(x, params)
    diffs = {k: float(np.max(np.abs(y_t - y))) for k, y in outputs.items()}
    runners["torch"] = torch_backend
  timers = interleaved(runners, 2, max(args["eval_repeats"] // 2, 1), 1)
  flops = matmul_flops_per_frame(core_config("mono"))
  rows = []
  for rnn in outputs:
    tj = timers[rnn]
    row: dict[str, Any] = dict(
        kind="eval", setting="target branch", B=b, T=t, variant=f"{mode}:{rnn}", devices=n,
        fps_jax=b * t / tj.median, step_ms_jax=1e3 * tj.median,
        compile_s=max(firsts[rnn] - tj.median, 0.0), cores_jax=tj.cores,
        steps_timed=len(tj.times),
        pct_peak_jax=100.0 * flops * b * t / tj.median / 1e9 / args["peak"])
    if "torch" in timers:
      tt = timers["torch"]
      row.update(fps_torch=b * t / tt.median, step_ms_torch=1e3 * tt.median,
                 ratio=tt.median / tj.median, cores_torch=tt.cores,
                 pct_peak_torch=100.0 * flops * b * t / tt.median / 1e9 / args["peak"],
                 max_abs_diff=diffs[rnn], peak_rss_mb_torch=torch_backend.peak_rss_mb())
    row["peak_rss_mb"] = peak_rss_mb()
    rows.append(row)
  return rows + failed


def _eval_runner(rnn: str, x, mask, b: int, mode: str, n: int, devices, args):
  """The target branch of variant ``rnn`` placed and run once: (runner,
  outputs, first-call seconds, params)."""
  import jax
  from emobed_jax import parallel, train
  _, base, unroll = parse_variant(f"{mode}:{rnn}")
  model, state = create_state(core_config("mono", base, unroll), base, args["seed"])
  params = jax.device_get(state.params)

  def eval_fn(p, xx, mm):
    return train.eval_step(p, xx, mm, model=model)

  if mode == "pmap":
    from jax.sharding import NamedSharding, PartitionSpec
    pad = -b % n
    xp = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)]) if pad else x
    mp = np.concatenate([mask, np.zeros((pad,) + mask.shape[1:], mask.dtype)]) if pad else mask
    fn = parallel.pmap_eval_step(eval_fn, devices=devices)
    sh = NamedSharding(parallel.local_mesh(devices), PartitionSpec(parallel.AXIS))
    p_dev = parallel.replicate(params, devices)
    xs = jax.device_put(parallel.shard_batch({"x": xp}, n)["x"], sh)
    ms = jax.device_put(parallel.shard_batch({"m": mp}, n)["m"], sh)
    unshard = lambda y: np.asarray(y).reshape((-1,) + y.shape[2:])[:b]  # noqa: E731
  else:
    fn = jax.jit(eval_fn)
    p_dev, xs, ms = jax.device_put((params, x, mask), devices[0])
    unshard = np.asarray

  def run():
    return jax.block_until_ready(fn(p_dev, xs, ms))

  t0 = time.perf_counter()
  out = unshard(run())
  return run, out, time.perf_counter() - t0, params


# ---------------------------------------------------------------------------
# Output.

COLUMNS = [
    ("kind", "{}"), ("setting", "{}"), ("B", "{}"), ("T", "{}"), ("variant", "{}"),
    ("devices", "{}"), ("fps_jax", "{:.0f}"), ("fps_step", "{:.0f}"), ("loop_ratio", "{:.2f}"),
    ("loop_ratio_paired", "{:.2f}"),
    ("fps_torch", "{:.0f}"), ("ratio", "{:.2f}"),
    ("compile_s", "{:.1f}"), ("recompiles", "{}"), ("cores_jax", "{:.2f}"),
    ("cores_torch", "{:.2f}"), ("pct_peak_jax", "{:.1f}"), ("pct_peak_torch", "{:.1f}"),
    ("peak_rss_mb", "{:.0f}"),
]
HEADERS = {"fps_jax": "frames/s JAX", "fps_step": "step alone", "loop_ratio": "loop/step",
           "loop_ratio_paired": "paired median",
           "fps_torch": "frames/s PyTorch",
           "ratio": "JAX/PyTorch", "compile_s": "compile s", "cores_jax": "cores JAX",
           "cores_torch": "cores PT", "pct_peak_jax": "%peak JAX",
           "pct_peak_torch": "%peak PT", "peak_rss_mb": "peak RSS MB",
           "devices": "dev"}


def format_table(rows: list[dict[str, Any]]) -> str:
  head = [HEADERS.get(k, k) for k, _ in COLUMNS]
  body = [[fmt.format(r[k]) if r.get(k) is not None else "-" for k, fmt in COLUMNS]
          for r in rows]
  widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h)
            for i, h in enumerate(head)]
  line = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths))  # noqa: E731
  return "\n".join([line(head), line(["-" * w for w in widths])] + [line(b) for b in body])


def main(argv):
  del argv
  malloc = configure_malloc(_MALLOC.value)
  configure_xla(_DEVICES.value, _XLA_FLAGS.value)
  import jax  # noqa: F401  (after XLA_FLAGS)

  platform = jax.default_backend()
  versions = {"jax": jax.__version__}
  torch_backend, torch_device = None, "-"
  if _TORCH.value:
    if importlib.util.find_spec("torch") is None:
      print("torch is not installed (pip install -e .[bench]); JAX only.")
    else:
      torch_backend = make_torch_backend(_TORCH_PROCESS.value, _TORCH_DEVICE.value, platform,
                                         bool(malloc), _TORCH_THREADS.value or usable_cores())
      versions["torch"], torch_device = torch_backend.version, torch_backend.device
  variants = list(_VARIANTS.value)
  if platform != "cpu":
    one = jax.local_device_count() == 1
    variants = [v for v in variants if not (one and v.partition(":")[0] == "pmap")]
    variants = variants or ["jit:scan"]
  peak = matmul_peak_gflops(_PEAK_SIZE.value)
  args = dict(seed=_SEED.value, rounds=_ROUNDS.value, steps_per_round=_STEPS_PER_ROUND.value,
              warmup=_WARMUP.value, equiv_rtol=_EQUIV_RTOL.value, peak=peak,
              eval_repeats=_EVAL_REPEATS.value, eval_mode=_EVAL_MODE.value)
  meta = dict(platform=platform, devices=jax.local_device_count(),
              device_kind=jax.local_devices()[0].device_kind, cores=usable_cores(),
              xla_flags=os.environ.get("XLA_FLAGS", ""), torch_device=torch_device,
              torch_process=_TORCH_PROCESS.value if torch_backend else None,
              matmul_peak_gflops=peak, variants=variants, malloc_tuning=malloc,
              loadavg_start=os.getloadavg(), **versions)
  print(f"platform {platform}, {meta['devices']} device(s) ({meta['device_kind']}), "
        f"{meta['cores']} cores, torch on {torch_device} ({meta['torch_process']} process); "
        f"malloc tuning {'on' if malloc and all(malloc.values()) else 'off'}; "
        f"matmul peak {peak:.0f} GFLOP/s; XLA_FLAGS={meta['xla_flags']!r}; load average "
        f"{' '.join(f'{x:.2f}' for x in meta['loadavg_start'])}", flush=True)
  rows: list[dict[str, Any]] = []
  out = Path(_JSON_OUT.value) if _JSON_OUT.value else None

  def save(pipe=None):
    # Written after every row group, so a run cut short keeps what it measured.
    if out is not None:
      out.parent.mkdir(parents=True, exist_ok=True)
      out.write_text(json.dumps(dict(meta=meta, rows=rows, pipeline=pipe or []), indent=1))

  shapes = [tuple(int(v) for v in s.lower().split("x")) for s in _SHAPES.value]
  dims = tuple(int(d) for d in _LOOP_DIMS.value)
  bad = [f for f in _LOOP_FEEDS.value if f not in LOOP_FEEDS]
  if bad or len(dims) != 2:
    raise app.UsageError(f"--loop_feeds: expected some of {LOOP_FEEDS}, got {bad}" if bad
                         else f"--loop_dims: expected two widths, got {_LOOP_DIMS.value}")
  for setting in _SETTINGS.value if _LOOP_STEPS.value > 0 else ():
    for b, t in shapes:
      new = loop_rows(setting, b, t, args, dims, tuple(_LOOP_FEEDS.value), _LOOP_STEPS.value,
                      _LOOP_ROUNDS.value, variant=variants[0])
      rows += new
      for r in new:
        if "error" not in r:
          print(f"  loop {setting} B={b} T={t} {r['variant']}: {r['fps_jax']:.0f} fr/s, "
                f"step alone {r['fps_step']:.0f} fr/s, loop/step {r['loop_ratio']:.2f} "
                f"(paired median {r['loop_ratio_paired']:.2f})",
                flush=True)
      save()
  for setting in _SETTINGS.value if not _ONLY_LOOP.value else ():
    for b, t in shapes:
      new = train_rows(setting, b, t, variants, torch_backend, args)
      rows += new
      for r in new:
        if "error" in r:
          continue
        print(f"  {setting} B={b} T={t} {r['variant']}: JAX {r['fps_jax']:.0f} fr/s"
              + (f", PyTorch {r['fps_torch']:.0f} fr/s, ratio {r['ratio']:.2f}"
                 if "fps_torch" in r else ""), flush=True)
      save()
  for b in _EVAL_BATCHES.value if not _ONLY_LOOP.value else ():
    new = eval_rows(int(b), _EVAL_LEN.value, variants, torch_backend, args)
    rows += new
    for r in new:
      if "error" in r:
        continue
      print(f"  eval B={b} T={_EVAL_LEN.value} {r['variant']}: JAX {r['fps_jax']:.0f} fr/s"
            + (f", PyTorch {r['fps_torch']:.0f} fr/s, ratio {r['ratio']:.2f}"
               if "fps_torch" in r else ""), flush=True)
    save()
  pipe = []
  if importlib.util.find_spec("grain") is not None:
    for b, t in shapes:
      pipe += pipeline_rows(b, t, dims=dims)
  else:
    print("input pipeline: not measured (grain is not installed here)")
  print()
  print(format_table(rows))
  print()
  for p in pipe:
    # The step at the same widths (loop rows' step alone) if measured.
    step_fps = [r["fps_step"] for r in rows
                if r["kind"] == "loop" and r["B"] == p["B"] and r["T"] == p["T"]]
    need = max(step_fps) if step_fps else None
    print(f"input pipeline ({p['name']}, B={p['B']}, T={p['T']}, widths "
          f"{p['dims'][0]}/{p['dims'][1]}, one thread): {p['frames_per_s']:.0f} frames/s"
          + (f" = {p['frames_per_s'] / need:.1f}x the fastest step's consumption at these "
             f"widths ({need:.0f} frames/s)" if need else ""))
  print("loop rows: frames/s of train._train_loop (data, step, logging; widths "
        f"{dims[0]}/{dims[1]}); step alone = the same step on a batch already on the "
        "devices; loop/step = the ratio of the best runs; paired median = the median over "
        "rounds of each loop run / the mean of the step-alone runs just before and after it "
        "(robust to load that comes and goes).  train/eval rows: widths 88/168.")
  print("ratio = JAX frames/s / PyTorch frames/s; %peak = matmul FLOP/s "
        f"(training = 3x forward) / measured {_PEAK_SIZE.value}^2 matmul peak "
        f"({peak:.0f} GFLOP/s); cores = CPU seconds / wall seconds; "
        "peak RSS = the JAX process so far (PyTorch's: peak_rss_mb_torch in the JSON).")
  meta["loadavg_end"] = os.getloadavg()
  print("load average (1, 5, 15 min) at the start "
        f"{' '.join(f'{x:.2f}' for x in meta['loadavg_start'])}, at the end "
        f"{' '.join(f'{x:.2f}' for x in meta['loadavg_end'])} (other processes slow every row)")
  errors = [r for r in rows if "error" in r]
  for r in errors:
    print(f"FAILED: {r['kind']} {r['setting']} B={r['B']} T={r['T']} {r['variant']}: {r['error']}")
  if out is not None:
    save(pipe)
    print(f"JSON: {out}")
  if torch_backend is not None:
    torch_backend.close()
  return 1 if errors else 0


if __name__ == "__main__":
  app.run(main)
