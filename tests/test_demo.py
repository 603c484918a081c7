"""Tests of the synthetic demo corpus (emobed_datasets.demo)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from emobed_datasets import demo
from emobed_datasets.arff import read_arff
from emobed_datasets.errors import DataError

SMALL = dict(num_train=2, num_dev=1, num_test=1, num_frames=120)


def _digest(root: Path) -> dict[str, str]:
  return {
      str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
      for p in sorted(root.rglob("*")) if p.is_file()
  }


def test_same_seed_gives_identical_bytes(tmp_path):
  a = demo.write_demo_corpus(tmp_path / "a", seed=5, **SMALL)
  b = demo.write_demo_corpus(tmp_path / "b", seed=5, **SMALL)
  c = demo.write_demo_corpus(tmp_path / "c", seed=6, **SMALL)
  assert _digest(a) == _digest(b)
  assert _digest(a).keys() == _digest(c).keys()
  assert _digest(a) != _digest(c)


def test_layout_and_gold_standard_format(tmp_path):
  root = demo.write_demo_corpus(
      tmp_path / "c", seed=0, num_train=2, num_dev=1, num_test=1,
      num_frames=80, feature_sets=("audio", "video_appearance", "ecg"))
  files = sorted(str(p.relative_to(root)) for p in root.rglob("*.arff"))
  gold = [f for f in files if f.startswith("ratings_gold_standard/")]
  assert gold == [f"ratings_gold_standard/{d}/{r}.arff"
                  for d in ("arousal", "valence")
                  for r in ("dev_1", "train_1", "train_2")]
  for folder in ("features_audio", "features_video_appearance", "features_ECG"):
    for variant in ("arousal", "valence"):
      for rec in ("train_1", "train_2", "dev_1", "test_1"):
        assert f"{folder}/{variant}/{rec}.arff" in files
  text = (root / "ratings_gold_standard/valence/dev_1.arff").read_text()
  assert text.startswith(
      "@relation GOLDSTANDARD\n@attribute Instance_name string\n"
      "@attribute frameTime numeric\n@attribute GoldStandard numeric\n@data\n"
      "dev_1,0,")
  assert "\ndev_1,0.04," in text
  for path in root.glob("ratings_gold_standard/*/*.arff"):
    table = read_arff(path, expected_numeric=1)
    assert table.names == ["GoldStandard"]
    assert table.num_rows == 80
    assert np.all(np.abs(table.data) <= 1.0)
    assert table.data.std() > 0.01
    np.testing.assert_allclose(table.frame_time, np.arange(80) * 0.04)
  ecg = read_arff(root / "features_ECG/arousal/test_1.arff", expected_numeric=19)
  assert ecg.data.shape == (80, 19)


def test_video_has_no_face_stretches_and_variants_differ(tmp_path):
  root = demo.write_demo_corpus(tmp_path / "c", seed=1, num_train=2,
                                num_dev=1, num_test=1, num_frames=400)
  video = read_arff(root / "features_video_appearance/arousal/train_1.arff",
                    expected_numeric=168).data
  video_v = read_arff(root / "features_video_appearance/valence/train_1.arff",
                      expected_numeric=168).data
  audio = read_arff(root / "features_audio/arousal/train_1.arff",
                    expected_numeric=88).data
  zero_rows = np.all(video == 0, axis=1)
  assert 0 < zero_rows.sum() < 100
  np.testing.assert_array_equal(zero_rows, np.all(video_v == 0, axis=1))
  assert not np.all(audio == 0, axis=1).any()
  assert not np.array_equal(video[~zero_rows], video_v[~zero_rows])
  # Windowed features: the first frames repeat the first full-window vector.
  np.testing.assert_array_equal(audio[0], audio[1])


def _ridge_r2(x_train, y_train, x_test, y_test, lam=1000.0) -> np.ndarray:
  mean, std = x_train.mean(0), x_train.std(0) + 1e-6
  a = np.c_[(x_train - mean) / std, np.ones(len(x_train))]
  b = np.c_[(x_test - mean) / std, np.ones(len(x_test))]
  w = np.linalg.solve(a.T @ a + lam * np.eye(a.shape[1]), a.T @ y_train)
  residual = ((b @ w - y_test) ** 2).sum(0)
  return 1.0 - residual / ((y_test - y_test.mean(0)) ** 2).sum(0)


def test_audio_tracks_arousal_and_video_tracks_valence(tmp_path):
  """Linear read-out on held-out recordings: each modality favours its own
  dimension, and together they explain both (the auxiliary modality carries
  what the target lacks)."""
  root = demo.write_demo_corpus(tmp_path / "c", seed=0, num_train=4,
                                num_dev=2, num_test=1, num_frames=1501)
  lag = int(round(demo.RATER_LAG_S / demo.FRAME_STEP_S))

  def load(split, count, folder):
    xs, ys = [], []
    for i in range(1, count + 1):
      rec = f"{split}_{i}"
      x = read_arff(root / folder / "arousal" / f"{rec}.arff").data
      y = np.stack([read_arff(root / "ratings_gold_standard" / d /
                              f"{rec}.arff").data[:, 0]
                    for d in ("arousal", "valence")], axis=1)
      xs.append(x[:-lag])
      ys.append(y[lag:])  # compensate the rater lag
    return np.concatenate(xs), np.concatenate(ys)

  audio_tr, y_tr = load("train", 4, "features_audio")
  audio_te, y_te = load("dev", 2, "features_audio")
  video_tr, _ = load("train", 4, "features_video_appearance")
  video_te, _ = load("dev", 2, "features_video_appearance")
  audio = _ridge_r2(audio_tr, y_tr, audio_te, y_te)
  video = _ridge_r2(video_tr, y_tr, video_te, y_te)
  both = _ridge_r2(np.c_[audio_tr, video_tr], y_tr, np.c_[audio_te, video_te],
                   y_te)
  assert audio[0] > audio[1] + 0.2, (audio, video)
  assert video[1] > video[0] + 0.2, (audio, video)
  assert audio[0] > 0.3 and video[1] > 0.3, (audio, video)
  assert both[1] > audio[1] + 0.2 and both[0] > video[0] + 0.2, both


def test_ensure_demo_corpus_writes_once(tmp_path, monkeypatch):
  root = tmp_path / "demo_manual"
  # Leftover of a writer that was killed half-way.
  stale = tmp_path / ".demo_manual.tmp-99999"
  (stale / "features_audio").mkdir(parents=True)
  path = demo.ensure_demo_corpus(root, 0, **SMALL)
  assert path == root and not stale.exists()
  marker = json.loads((root / demo.DEMO_MARKER).read_text())
  assert marker["seed"] == 0 and marker["num_frames"] == 120
  before = _digest(root)
  mtimes = {p: p.stat().st_mtime_ns for p in root.rglob("*")}

  def fail(*args, **kwargs):
    raise AssertionError("corpus written twice")

  monkeypatch.setattr(demo, "write_demo_corpus", fail)
  assert demo.ensure_demo_corpus(root, 0, **SMALL) == root
  assert _digest(root) == before
  assert mtimes == {p: p.stat().st_mtime_ns for p in root.rglob("*")}
  with pytest.raises(DataError, match="expected"):
    demo.ensure_demo_corpus(root, 1, **SMALL)
  assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []


def test_ensure_demo_corpus_refuses_a_foreign_folder(tmp_path):
  root = tmp_path / "mine"
  root.mkdir()
  (root / "notes.txt").write_text("hello")
  with pytest.raises(DataError) as info:
    demo.ensure_demo_corpus(root, 0, **SMALL)
  assert str(root) in str(info.value)
  empty = tmp_path / "empty"
  empty.mkdir()
  assert demo.ensure_demo_corpus(empty, 0, **SMALL) == empty
  assert (empty / demo.DEMO_MARKER).is_file()


def test_prepare_demo(tmp_path):
  builder = demo.prepare_demo(tmp_path, seed=2, **SMALL)
  manual, tfds_dir = demo.demo_paths(tmp_path, 2)
  assert manual == tmp_path / "demo_manual" / "seed_2"
  assert (manual / demo.DEMO_MARKER).is_file()
  assert builder.info.splits["train"].num_examples == 2
  from emobed_datasets import recola
  assert recola.is_prepared(tfds_dir)
  example = recola.load_split(tfds_dir, "dev")[0]
  assert example["audio_arousal"].shape == (120, 88)
  # The demo goes through recola.prepare, so it records its source too.
  source = recola.prepared_source(tfds_dir)
  assert source == recola.package_fingerprint(manual)
  assert source["path"] == str(manual.resolve())
  # 2 train + 1 dev: 2 gold each; 4 recordings x 2 sets x 2 variants.
  assert source["num_files"] == 3 * 2 + 4 * 2 * 2
  assert recola.check_source(tfds_dir, manual) == source


def test_rejects_bad_arguments(tmp_path):
  with pytest.raises(ValueError, match="unknown feature set"):
    demo.write_demo_corpus(tmp_path / "x", feature_sets=("lidar",))
  with pytest.raises(ValueError):
    demo.write_demo_corpus(tmp_path / "x", num_test=0)
