"""Input pipeline: alignment, standardisation, windows, data order, eval padding."""

import numpy as np
import pytest

from emobed_datasets.errors import DataError
from emobed_jax import input_pipeline as ip
from emobed_jax import writers
from emobed_jax.config import DataConfig


def rec(name, n, dt=3, da=2, seed=0):
  rs = np.random.RandomState(seed)
  return ip.Recording(name, rs.randn(n, dt).astype(np.float32) * 3 + 1,
                      rs.randn(n, da).astype(np.float32), rs.randn(n, 2).astype(np.float32))


def test_align_delays_features_and_keeps_every_label():
  r = rec("a", 10)
  out = ip.align(r, delay_frames=3, frame_step=1)
  assert out.num_frames == 10
  np.testing.assert_array_equal(out.labels, r.labels)
  np.testing.assert_array_equal(out.target[3:], r.target[:7])   # label t <- features t-3
  np.testing.assert_array_equal(out.target[:3], np.repeat(r.target[:1], 3, 0))
  np.testing.assert_array_equal(out.aux[5], r.aux[2])
  sub = ip.align(r, 0, 3)
  np.testing.assert_array_equal(sub.target, r.target[::3])
  np.testing.assert_array_equal(ip.upsample(sub.labels, 3, 10), np.repeat(r.labels[::3], 3, 0)[:10])


def test_standardizer_uses_training_frames_and_round_trips_json():
  recs = [rec("a", 50, seed=1), rec("b", 30, seed=2)]
  s = ip.Standardizer.fit(recs)
  allx = np.concatenate([r.target for r in recs]).astype(np.float64)
  np.testing.assert_allclose(s.mean["target"], allx.mean(0), rtol=1e-6)
  z = np.concatenate([s.apply(r).target for r in recs])
  np.testing.assert_allclose(z.mean(0), 0, atol=1e-5)
  np.testing.assert_allclose(z.std(0), 1, rtol=1e-4)
  s2 = ip.Standardizer.from_json(writers._jsonable(s.to_json()))
  np.testing.assert_array_equal(s2.apply(recs[0]).target, s.apply(recs[0]).target)
  # A constant feature passes through centred instead of dividing by zero.
  c = rec("c", 20)
  c.target[:, 0] = 5.0
  sc = ip.Standardizer.fit([c])
  assert np.all(np.isfinite(sc.apply(c).target))


@pytest.mark.parametrize("n,window,hop,expected", [
    (10, 4, 3, [0, 3, 6]),
    (11, 4, 3, [0, 3, 6, 7]),   # last window ends at the last frame
    (3, 4, 2, [0]),             # shorter than a window: one padded window
    (7501, 300, 50, list(range(0, 7201, 50)) + [7201]),
])
def test_window_starts(n, window, hop, expected):
  assert ip.window_starts(n, window, hop) == expected


def test_window_source_pads_and_masks_short_recordings():
  src = ip.WindowSource([rec("a", 5), rec("b", 12)], window=8, hop=4)
  assert len(src) == 1 + 2
  ex = src[0]
  assert ex["target"].shape == (8, 3) and ex["aux"].shape == (8, 2) and ex["labels"].shape == (8, 2)
  np.testing.assert_array_equal(ex["mask"], [1, 1, 1, 1, 1, 0, 0, 0])
  assert np.all(ex["target"][5:] == 0)
  np.testing.assert_array_equal(src[2]["labels"], src.recordings[1].labels[4:12])


def test_data_order_is_a_pure_function_of_seed_and_step():
  src = ip.WindowSource([rec(f"r{i}", 40, seed=i) for i in range(3)], window=10, hop=5)
  a = ip.train_batches(src, 4, seed=7, num_epochs=3)
  b = ip.train_batches(src, 4, seed=7, num_epochs=3)
  c = ip.train_batches(src, 4, seed=8, num_epochs=3)
  for step in (0, 3, 9):
    np.testing.assert_array_equal(a[step]["target"], b[step]["target"])
  assert not np.array_equal(a[0]["target"], c[0]["target"])
  # Each epoch visits every window once, in a different order.
  spe = ip.steps_per_epoch(len(src), 4)
  assert spe == len(src) // 4
  def keys(ds, steps):
    return [tuple(x[:, 0]) for s in steps for x in ds[s]["target"]]
  e0, e1 = keys(a, range(spe)), keys(a, range(spe, 2 * spe))
  assert len(set(e0)) == len(e0)
  assert e0 != e1


def test_process_sharding_partitions_the_global_batch():
  src = ip.WindowSource([rec(f"r{i}", 40, seed=i) for i in range(3)], window=10, hop=5)
  full = ip.train_batches(src, 6, seed=1, num_epochs=2)
  parts = [ip.train_batches(src, 6, seed=1, num_epochs=2, process_index=p, process_count=3)
           for p in range(3)]
  for step in (0, 2):
    rows = sorted(tuple(x[:, 0]) for p in parts for x in p[step]["target"])
    assert rows == sorted(tuple(x[:, 0]) for x in full[step]["target"])
    assert parts[0][step]["target"].shape[0] == 2
    # Process p holds the contiguous block p: pmap's global device order
    # then sees the rows one process with all the devices would.
    np.testing.assert_array_equal(np.concatenate([p[step]["target"] for p in parts]),
                                  full[step]["target"])
  with pytest.raises(ValueError, match="batch_size"):
    ip.train_batches(src, 5, seed=1, num_epochs=1, process_count=2)


def test_eval_arrays_pad_recordings_and_devices():
  recs = [rec("a", 7), rec("b", 4), rec("c", 9)]
  arr = ip.eval_arrays(recs, num_devices=2)
  assert arr["target"].shape == (2, 2, 9, 3)
  flat_mask = arr["mask"].reshape(4, 9)
  np.testing.assert_array_equal(flat_mask.sum(1), [7, 4, 9, 0])
  np.testing.assert_array_equal(arr["target"].reshape(4, 9, 3)[1, :4], recs[1].target)


def test_missing_corpus_raises_the_project_data_error(tmp_path, monkeypatch):
  assert ip.DataError is DataError and issubclass(ip.CorpusNotFoundError, DataError)
  monkeypatch.delenv("RECOLA_DIR", raising=False)
  cfg = DataConfig(dataset="recola", data_dir=str(tmp_path), manual_dir="")
  with pytest.raises(ip.CorpusNotFoundError, match="RECOLA not found.*--manual_dir"):
    ip.resolve_prepared_dir(cfg)
  cfg = DataConfig(dataset="recola", data_dir=str(tmp_path), manual_dir=str(tmp_path / "nope"))
  with pytest.raises(ip.CorpusNotFoundError, match="is not a folder"):
    ip.resolve_prepared_dir(cfg)
