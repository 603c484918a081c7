"""Tests of the RECOLA TFDS builder over a tiny generated AVEC 2016 corpus."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from emobed_datasets import demo, recola
from emobed_datasets.arff import read_arff, write_arff
from emobed_datasets.errors import DataError

SIZES = dict(num_train=3, num_dev=2, num_test=1, num_frames=60)
SETS = ("audio", "video_appearance")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
  root = tmp_path_factory.mktemp("corpus") / "avec2016"
  return demo.write_demo_corpus(root, seed=3, feature_sets=SETS, **SIZES)


@pytest.fixture(scope="module")
def prepared(corpus, tmp_path_factory) -> Path:
  data_dir = tmp_path_factory.mktemp("data")
  recola.prepare(corpus, data_dir)
  return data_dir


def _copy(corpus: Path, tmp_path: Path) -> Path:
  target = tmp_path / "manual"
  shutil.copytree(corpus, target)
  return target


def test_split_sizes_and_shapes(prepared):
  expected = {"train": 3, "dev": 2, "test": 1}
  for split, count in expected.items():
    source = recola.load_split(prepared, split)
    assert len(source) == count
    for i in range(count):
      example = source[i]
      assert example["num_frames"] == 60
      assert example["recording"] == f"{split}_{i + 1}".encode()
      for name, (_, dim) in recola.FEATURE_SETS.items():
        for variant in recola.VARIANTS:
          array = example[recola.feature_key(name, variant)]
          assert array.dtype == np.float32
          rows = 60 if name in SETS else 0
          assert array.shape == (rows, dim), (name, variant)
  assert set(recola.FEATURE_KEYS) <= set(source[0])


def test_labels_round_trip_exactly(prepared, corpus):
  for split in ("train", "dev"):
    source = recola.load_split(prepared, split)
    for i in range(len(source)):
      example = source[i]
      name = example["recording"].decode()
      assert example["has_labels"]
      for dimension in recola.DIMENSIONS:
        gold = read_arff(corpus / "ratings_gold_standard" / dimension /
                         f"{name}.arff")
        np.testing.assert_array_equal(example[dimension], gold.data[:, 0])
        assert example[dimension].dtype == np.float32
      audio = read_arff(corpus / "features_audio" / "valence" / f"{name}.arff")
      np.testing.assert_array_equal(example["audio_valence"], audio.data)


def test_test_split_has_no_labels(prepared, corpus):
  assert not (corpus / "ratings_gold_standard" / "arousal" /
              "test_1.arff").exists()
  example = recola.load_split(prepared, "test")[0]
  assert not example["has_labels"]
  assert example["arousal"].shape == (0,) and example["valence"].shape == (0,)
  assert example["video_appearance_arousal"].shape == (60, 168)


def test_feature_sets_metadata(prepared):
  source = recola.load_split(prepared, "train")
  assert recola.available_feature_sets(source) == SETS
  builder = recola.prepare(None, prepared)  # prepared: manual_dir unused
  assert recola.available_feature_sets(builder) == SETS
  assert recola.available_feature_sets(builder.as_data_source()) == SETS
  assert recola.available_feature_sets(builder.info) == SETS
  metadata = builder.info.metadata
  assert metadata[recola.FEATURE_SETS_METADATA_KEY] == list(SETS)
  assert metadata["num_recordings"] == {"train": 3, "dev": 2, "test": 1}
  with pytest.raises(TypeError):
    recola.available_feature_sets(object())


def test_registered_with_tfds(prepared):
  builder = tfds.builder("recola", data_dir=str(prepared))
  assert builder.info.splits["train"].num_examples == 3
  assert builder.info.file_format.value == "array_record"


def test_prepare_twice_does_not_rebuild(prepared, corpus, monkeypatch):
  version_dir = recola.prepared_path(prepared)
  before = {p.name: p.stat().st_mtime_ns for p in version_dir.iterdir()}

  def fail(*args, **kwargs):
    raise AssertionError("download_and_prepare called on a prepared dataset")

  monkeypatch.setattr(recola.Builder, "download_and_prepare", fail)
  builder = recola.prepare(corpus, prepared)
  assert builder.info.splits["dev"].num_examples == 2
  after = {p.name: p.stat().st_mtime_ns for p in version_dir.iterdir()}
  assert before == after


def test_interrupted_prepare_leaves_nothing_complete(corpus, tmp_path):
  manual = _copy(corpus, tmp_path)
  data_dir = tmp_path / "data"
  # A killed earlier run left a TFDS temporary folder behind.
  stale = data_dir / "recola" / "incomplete.ABC123_1.0.0"
  stale.mkdir(parents=True)
  (stale / "recola-train.array_record-00000-of-00001").write_bytes(b"junk")
  # This run fails on the last split (dev is fine, test is truncated).
  bad = manual / "features_audio" / "arousal" / "test_1.arff"
  bad.write_text("".join(bad.read_text().splitlines(True)[:-5]))
  with pytest.raises(DataError, match="test_1.arff"):
    recola.prepare(manual, data_dir)
  assert not recola.is_prepared(data_dir)
  assert not stale.exists()
  assert sorted(p.name for p in (data_dir / "recola").iterdir()) == []
  with pytest.raises(DataError, match="prepared RECOLA dataset not found"):
    recola.load_split(data_dir, "train")
  shutil.copy(corpus / "features_audio" / "arousal" / "test_1.arff", bad)
  recola.prepare(manual, data_dir)
  assert recola.is_prepared(data_dir)
  assert len(recola.load_split(data_dir, "test")) == 1


def test_unknown_split(prepared):
  with pytest.raises(DataError, match="unknown split 'validation'"):
    recola.load_split(prepared, "validation")


def test_check_layout(corpus):
  layout = recola.check_layout(corpus)
  assert layout.feature_sets == SETS
  assert layout.recordings == {
      "train": ("train_1", "train_2", "train_3"),
      "dev": ("dev_1", "dev_2"), "test": ("test_1",)}


# ----------------------------------------------------------------------------
# Bad input: each case breaks a copy of the corpus; prepare must raise a
# DataError whose message names the offending path.


def _remove(path: Path) -> None:
  if path.is_dir():
    shutil.rmtree(path)
  else:
    path.unlink()


def _truncate(path: Path, drop_rows: int = 3) -> None:
  lines = path.read_text().splitlines(True)
  path.write_text("".join(lines[:-drop_rows]))


def _rewrite_with_attributes(path: Path, dim: int) -> None:
  table = read_arff(path)
  write_arff(path, "features", [f"f{i}" for i in range(dim)],
             table.data[:, :dim], instance_name="train_2",
             frame_time=table.frame_time)


def _replace_value(path: Path, line_number: int, value: str) -> None:
  lines = path.read_text().splitlines()
  fields = lines[line_number - 1].split(",")
  fields[5] = value
  lines[line_number - 1] = ",".join(fields)
  path.write_text("\n".join(lines) + "\n")


GOLD_A = Path("ratings_gold_standard/arousal")
GOLD_V = Path("ratings_gold_standard/valence")
AUDIO_A = Path("features_audio/arousal")
VIDEO_V = Path("features_video_appearance/valence")

# (case id, function(manual) -> path that the message must name, fragment)
BAD_CASES = [
    ("missing-manual-dir",
     lambda m: (_remove(m), m)[1], "folder not found"),
    ("manual-dir-is-a-file",
     lambda m: (_remove(m), m.write_text("x"), m)[2], "not a folder"),
    ("missing-gold-folder",
     lambda m: (_remove(m / "ratings_gold_standard"),
                m / "ratings_gold_standard")[1], "gold standard folder"),
    ("missing-gold-dimension",
     lambda m: (_remove(m / GOLD_V), m / GOLD_V)[1], "valence gold standards"),
    ("no-feature-folder",
     lambda m: (_remove(m / "features_audio"),
                _remove(m / "features_video_appearance"), m)[2],
     "no feature folder"),
    ("missing-variant-folder",
     lambda m: (_remove(m / "features_audio/valence"),
                m / "features_audio/valence")[1], "valence variant"),
    ("missing-gold-for-one-recording",
     lambda m: (_remove(m / GOLD_V / "train_2.arff"),
                m / GOLD_V / "train_2.arff")[1], "valence gold standard"),
    ("gold-without-features",
     lambda m: (shutil.copy(m / GOLD_A / "dev_1.arff", m / GOLD_A / "dev_7.arff"),
                m / GOLD_A / "dev_7.arff")[1], "without features"),
    ("missing-feature-file",
     lambda m: (_remove(m / VIDEO_V / "dev_2.arff"),
                m / VIDEO_V / "dev_2.arff")[1], "video_appearance features"),
    ("misnamed-file",
     lambda m: ((m / AUDIO_A / "train_1.arff").rename(
         m / AUDIO_A / "Train_1.arff"), m / AUDIO_A / "Train_1.arff")[1],
     "expected <split>_<n>.arff"),
    ("split-without-recordings",
     lambda m: ([_remove(p) for p in m.glob("features_*/*/test_*.arff")],
                m / AUDIO_A)[1], "no recordings of split 'test'"),
    ("truncated-gold",
     lambda m: (_truncate(m / GOLD_A / "dev_2.arff"),
                m / GOLD_A / "dev_2.arff")[1], "57 frames"),
    ("truncated-features-vs-other-modality",
     lambda m: (_truncate(m / VIDEO_V / "train_3.arff", 1),
                m / VIDEO_V / "train_3.arff")[1], "59 frames, but"),
    ("wrong-attribute-count",
     lambda m: (_rewrite_with_attributes(m / AUDIO_A / "train_2.arff", 87),
                m / AUDIO_A / "train_2.arff")[1], "expected 88 numeric"),
    ("non-numeric-value",
     lambda m: (_replace_value(m / VIDEO_V / "dev_1.arff", 200, "abc"),
                m / VIDEO_V / "dev_1.arff")[1], "expected a number"),
    ("missing-value",
     lambda m: (_replace_value(m / AUDIO_A / "train_1.arff", 100, "?"),
                m / AUDIO_A / "train_1.arff")[1], "missing value"),
    ("empty-file",
     lambda m: ((m / GOLD_V / "train_1.arff").write_text(""),
                m / GOLD_V / "train_1.arff")[1], "empty file"),
    ("gold-without-goldstandard-column",
     lambda m: (write_arff(m / GOLD_A / "dev_1.arff", "GOLDSTANDARD", ["Rating"],
                           np.zeros((60, 1)), instance_name="dev_1"),
                m / GOLD_A / "dev_1.arff")[1], "'GoldStandard'"),
    ("no-data-rows",
     lambda m: ((m / AUDIO_A / "dev_1.arff").write_text(
         "@relation a\n@attribute Instance_name string\n"
         + "".join(f"@attribute a{i} numeric\n" for i in range(88))
         + "@data\n"), m / AUDIO_A / "dev_1.arff")[1], "no data rows"),
]


@pytest.mark.parametrize("make_bad, fragment",
                         [c[1:] for c in BAD_CASES], ids=[c[0] for c in BAD_CASES])
def test_bad_input_raises_data_error(corpus, tmp_path, make_bad, fragment):
  manual = _copy(corpus, tmp_path)
  named = make_bad(manual)
  data_dir = tmp_path / "data"
  with pytest.raises(DataError) as info:
    recola.prepare(manual, data_dir)
  message = str(info.value)
  assert "\n" not in message
  assert str(named) in message, message
  assert fragment in message, message
  assert not recola.is_prepared(data_dir)


def test_mismatch_message_names_both_files(corpus, tmp_path):
  manual = _copy(corpus, tmp_path)
  _truncate(manual / VIDEO_V / "train_3.arff", 2)
  with pytest.raises(DataError) as info:
    recola.prepare(manual, tmp_path / "data")
  message = str(info.value)
  assert str(manual / VIDEO_V / "train_3.arff") in message
  assert str(manual / GOLD_A / "train_3.arff") in message
  assert "58 frames" in message and "has 60" in message


def test_missing_manual_dir_is_not_a_tfds_assertion(tmp_path):
  with pytest.raises(DataError, match="no manual_dir given"):
    recola.prepare(None, tmp_path / "data")
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(DataError) as info:
    recola.prepare(empty, tmp_path / "data")
  assert str(empty) in str(info.value)
