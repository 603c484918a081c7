"""The training input path (issue 11): input_pipeline.WindowBatches and
prefetch.DevicePrefetch give the batches of grain's train_batches bit for bit,
in the same order, also across a resume; errors and stops reach the loop."""

import dataclasses
import threading

import jax
import numpy as np
import pytest
from launch_support import FAST, parsed_config

from emobed_jax import input_pipeline as ip
from emobed_jax import parallel, prefetch, train

pytestmark = pytest.mark.usefixtures("fast_compile")  # nothing timed


def rec(name, n, seed, dt=5, da=3):
  rs = np.random.RandomState(seed)
  return ip.Recording(name, rs.randn(n, dt).astype(np.float32),
                      rs.randn(n, da).astype(np.float32), rs.randn(n, 2).astype(np.float32))


def source():
  # Lengths around the window: one shorter (padded), one exactly a window.
  recs = [rec("a", 57, 0), rec("b", 7, 1), rec("c", 12, 2), rec("d", 31, 3)]
  for r in recs:
    r.target[0, 0] = -0.0  # the sign of zero must survive too
  return ip.WindowSource(recs, window=12, hop=5)


def assert_same(a, b):
  assert sorted(a) == sorted(b)
  for k in a:
    x, y = np.asarray(a[k]), np.asarray(b[k])
    assert x.dtype == y.dtype and x.shape == y.shape, k
    np.testing.assert_array_equal(x, y, err_msg=k)
    np.testing.assert_array_equal(np.signbit(x), np.signbit(y), err_msg=k)


@pytest.mark.parametrize("process_index,process_count", [(0, 1), (1, 2)])
def test_window_batches_equal_grains_batches_bit_for_bit(process_index, process_count):
  src = source()
  ref = ip.train_batches(src, 4, seed=3, num_epochs=3, process_index=process_index,
                         process_count=process_count)
  fast = ip.WindowBatches(src, 4, seed=3, num_epochs=3, process_index=process_index,
                          process_count=process_count)
  assert len(fast) == len(ref) > 8
  for step in range(len(ref)):
    assert_same(fast[step], ref[step])
  with pytest.raises(IndexError):
    fast[len(ref)]
  # Without an auxiliary modality: no 'aux' key, as grain's.
  mono = ip.WindowSource([dataclasses.replace(r, aux=None) for r in src.recordings], 12, 5)
  assert_same(ip.WindowBatches(mono, 4, 3, 2)[1], ip.train_batches(mono, 4, 3, 2)[1])


def test_prefetched_device_batches_equal_host_batches_across_a_resume():
  """What the loop gets at each step: the host batch of that step, split
  over the 8 test devices, before and after a resume at step k."""
  src = source()
  ref = ip.train_batches(src, 8, seed=5, num_epochs=5)
  batches = ip.WindowBatches(src, 8, seed=5, num_epochs=5)
  n, k, stop = jax.local_device_count(), 3, 7

  def check(feed, step):
    got = feed[step]
    for v in got.values():
      assert v.sharding.is_equivalent_to(feed._sharding, v.ndim)
    assert_same(got, parallel.shard_batch(ref[step], n))

  with prefetch.DevicePrefetch(batches, 0, stop, depth=2) as feed:
    for step in range(k):            # interrupted after step k - 1
      check(feed, step)
  with prefetch.DevicePrefetch(batches, k, stop, depth=3) as feed:  # resumed
    for step in range(k, stop):
      check(feed, step)
    with pytest.raises(IndexError, match="ends at step 7"):
      feed[stop]


class Boom(Exception):
  pass


class Flaky:
  """Batches that fail at one step; records what was read."""

  def __init__(self, inner, bad_step):
    self.inner, self.bad, self.read = inner, bad_step, []

  def __getitem__(self, step):
    self.read.append(step)
    if step == self.bad:
      raise Boom(f"bad batch {step}")
    return self.inner[step]


def test_an_error_reaches_the_loop_at_its_step_and_stops_the_producer():
  batches = Flaky(ip.WindowBatches(source(), 8, seed=0, num_epochs=4), bad_step=2)
  feed = prefetch.DevicePrefetch(batches, 0, 6, depth=4)
  feed[0]
  feed[1]
  with pytest.raises(Boom, match="bad batch 2"):
    feed[2]
  feed.close()
  assert batches.read == [0, 1, 2]   # nothing read after the failure
  # The check runs on the first (host) batch; its error comes out at `start`.
  calls = []
  with prefetch.DevicePrefetch(batches.inner, 4, 6, check=calls.append) as feed:
    feed[4]
    feed[5]
  assert len(calls) == 1 and calls[0]["target"].shape == (8, 12, 5)

  def bad_check(b):
    raise ValueError("batch['target']: wrong")
  with (prefetch.DevicePrefetch(batches.inner, 1, 6, check=bad_check) as feed,
        pytest.raises(ValueError, match="wrong")):
    feed[1]


def test_reads_in_order_only_and_close_ends_the_thread():
  batches = ip.WindowBatches(source(), 8, seed=0, num_epochs=4)
  feed = prefetch.DevicePrefetch(batches, 2, 5, depth=1)
  with pytest.raises(ValueError, match="expected step 2"):
    feed[3]
  feed[2]
  feed.close()   # the producer is blocked on a full queue: close unblocks it
  assert not any(t.name == "DevicePrefetch" and t.is_alive() for t in threading.enumerate())
  with pytest.raises(ValueError, match="depth"):
    prefetch.DevicePrefetch(batches, 0, 1, depth=0)
  # An interrupt in the loop leaves the with block: the thread ends too.
  with pytest.raises(KeyboardInterrupt), prefetch.DevicePrefetch(batches, 0, 5, depth=2) as feed:
    feed[0]
    raise KeyboardInterrupt
  assert not any(t.name == "DevicePrefetch" and t.is_alive() for t in threading.enumerate())


def test_the_training_loop_steps_on_grains_batches_across_a_resume(
    demo_dir, tmp_path, monkeypatch):
  """The real loop (train_and_evaluate): the batch each step receives equals
  grain's train_batches(...)[step], split over the devices, in a run
  interrupted at step k and resumed from its checkpoint."""
  seen = {}
  real_pmap = parallel.pmap_train_step

  def spy_pmap(step_fn, *a, **kw):
    p_step = real_pmap(step_fn, *a, **kw)

    def call(st, batch, rng):
      seen[int(jax.device_get(st.step))] = jax.device_get(batch)
      return p_step(st, batch, rng)
    return call
  monkeypatch.setattr(parallel, "pmap_train_step", spy_pmap)
  cfg = parsed_config("--flagfile=demo.flags", f"--data_dir={demo_dir}", *FAST,
                      "--epochs=4", "--setting=mono")
  k = 2
  with pytest.raises(train.RunInterrupted):
    train.train_and_evaluate(cfg, tmp_path / "w", stop_requested=lambda: len(seen) >= k)
  assert sorted(seen) == list(range(k))
  train.train_and_evaluate(cfg, tmp_path / "w")
  data_cfg = cfg.data
  from emobed_jax import run_data
  data = run_data.load_run_data(cfg, None)
  src = ip.WindowSource(data.train, data_cfg.window, data_cfg.hop)
  ref = ip.train_batches(src, cfg.batch_size, cfg.seed, cfg.epochs + 1)
  total = ip.steps_per_epoch(len(src), cfg.batch_size) * cfg.epochs
  assert sorted(seen) == list(range(total)) and total > k + 1
  n = jax.local_device_count()
  for step in range(total):
    assert_same(seen[step], parallel.shard_batch(ref[step], n))


def test_window_batch_shards_are_aligned_blocks_placed_without_a_copy():
  """WindowBatches.shards: the step's batch split into per-device blocks in
  64-byte-aligned buffers; DevicePrefetch places them as they are (on the
  CPU the device buffer is the host block itself) and equal to place()."""
  batches = ip.WindowBatches(source(), 8, seed=1, num_epochs=3)
  n = jax.local_device_count()
  for step in (0, 3):
    shards = batches.shards(step, n)
    whole = batches[step]
    assert len(shards) == n
    for k, v in whole.items():
      np.testing.assert_array_equal(np.concatenate([s[k] for s in shards]), v)
      assert all(s[k].ctypes.data % ip.ALIGN_BYTES == 0 for s in shards)
  feed = prefetch.DevicePrefetch(batches, 0, 1)
  feed.close()
  shards = batches.shards(2, n)
  placed = feed.place_shards(shards)
  assert_same(placed, feed.place(batches[2]))
  for k, v in placed.items():
    assert v.sharding.is_equivalent_to(feed._sharding, v.ndim)
    for i, shard in enumerate(sorted(v.addressable_shards, key=lambda s: s.index[0].start)):
      assert shard.device == jax.local_devices()[i]
      assert shard.data.unsafe_buffer_pointer() == shards[i][k].ctypes.data, k
  with pytest.raises(ValueError, match="not divisible into 3 shards"):
    batches.shards(0, 3)
  with pytest.raises(ValueError, match="3 shards for"):
    feed.place_shards(batches.shards(0, 1) * 3)


def test_windows_cut_on_the_devices_train_the_same_run(demo_dir, tmp_path):
  """--input_feed=device (the training split on the devices, windows cut in
  the step) trains the run --input_feed=host trains: same train losses and
  results to float32 rounding; auto picks device on a GPU/TPU only."""
  import json

  from emobed_jax.config import ConfigError
  runs = {}
  for feed in ("host", "device"):
    cfg = parsed_config("--flagfile=demo.flags", f"--data_dir={demo_dir}", *FAST,
                        "--epochs=2", "--log_every=1", "--setting=emobed",
                        f"--input_feed={feed}")
    runs[feed] = train.train_and_evaluate(cfg, tmp_path / feed)
    assert train.input_feed(cfg) == feed
  losses = {f: [json.loads(line)["loss"] for line in open(tmp_path / f / "metrics.jsonl")
                if json.loads(line)["split"] == "train"] for f in runs}
  assert len(losses["host"]) >= 2
  np.testing.assert_allclose(losses["device"], losses["host"], rtol=1e-5)
  host, dev = runs["host"]["metrics"], runs["device"]["metrics"]
  assert host.keys() == dev.keys()
  for k in host:
    np.testing.assert_allclose(dev[k], host[k], rtol=1e-4, atol=1e-6, err_msg=k)
  auto = parsed_config("--flagfile=demo.flags", f"--data_dir={demo_dir}")
  assert [train.input_feed(auto, p) for p in ("cpu", "gpu", "tpu")] == ["host", "device",
                                                                       "device"]
  omg = parsed_config("--flagfile=demo_omg.flags")
  assert train.input_feed(omg, "gpu") == "host"
  with pytest.raises(ConfigError, match="--input_feed: expected host or auto for OMG"):
    parsed_config("--flagfile=demo_omg.flags", "--input_feed=device").validate()


def test_window_positions_are_filled_ahead_and_fail_at_their_step():
  """device_windows.WindowIds: each step's window positions are
  WindowBatches.window_ids' (from a resumed step too); an error while
  filling comes out at its step; close() stops the filling thread."""
  from emobed_jax import device_windows as dw
  batches = ip.WindowBatches(source(), 8, seed=4, num_epochs=3)
  for start in (0, 2):
    ids = dw.WindowIds(batches, start)
    for step in range(start, len(batches)):
      got, rows = ids[step], batches.window_ids(step)
      np.testing.assert_array_equal(got["start"], batches.start[rows])
      np.testing.assert_array_equal(got["length"], batches.length[rows])
      assert got["start"].dtype == np.int32
    other = dw.WindowIds(batches, 2)
    with pytest.raises(IndexError, match="steps 2 to"):
      other[1]
    other.close()
    ids.close()
    assert not ids._thread.is_alive() and not other._thread.is_alive()

  class Failing:
    def __init__(self, inner):
      self.inner, self.start, self.length = inner, inner.start, inner.length

    def __len__(self):
      return len(self.inner)

    def window_ids(self, step):
      if step == 3:
        raise Boom("ids 3")
      return self.inner.window_ids(step)
  ids = dw.WindowIds(Failing(batches))
  ids[2]
  with pytest.raises(Boom, match="ids 3"):
    ids[3]
  ids.close()
  assert not ids._thread.is_alive()
