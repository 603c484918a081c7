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


# ----------------------------------------------------------------------------
# Cross-checks of the files of one recording (issue 12, item 4).


def _rewrite_rows(path: Path, edit) -> None:
  """Applies `edit(fields, frame)` to each data row (a list of strings)."""
  lines = path.read_text().splitlines()
  start = next(i for i, line in enumerate(lines) if line.lower() == "@data")
  for frame, i in enumerate(range(start + 1, len(lines))):
    fields = lines[i].split(",")
    edit(fields, frame)
    lines[i] = ",".join(fields)
  path.write_text("\n".join(lines) + "\n")


def _set_field(col: int, value: str, frames=None):
  def edit(fields, frame):
    if frames is None or frame in frames:
      fields[col] = value
  return edit


def _shift_times(seconds: float):
  def edit(fields, frame):
    fields[1] = f"{float(fields[1]) + seconds:g}"
  return edit


def _drop_row(path: Path, frame: int) -> None:
  lines = path.read_text().splitlines()
  start = next(i for i, line in enumerate(lines) if line.lower() == "@data")
  del lines[start + 1 + frame]
  path.write_text("\n".join(lines) + "\n")


# (id, edit(manual), offending file, line, other file named, fragments)
CROSS_CASES = [
    ("instance-name-of-another-recording",
     lambda m: _rewrite_rows(m / AUDIO_A / "train_2.arff",
                             _set_field(0, "train_3")),
     AUDIO_A / "train_2.arff", 93, GOLD_A / "train_2.arff",
     ("instance name 'train_3' at frame 0", "expected 'train_2'")),
    ("instance-name-changes-mid-file",
     lambda m: _rewrite_rows(m / GOLD_V / "dev_1.arff",
                             _set_field(0, "dev_2", frames={17})),
     GOLD_V / "dev_1.arff", 23, GOLD_A / "dev_1.arff",
     ("'dev_2' at frame 17",)),
    ("frame-times-shifted",
     lambda m: _rewrite_rows(m / VIDEO_V / "dev_2.arff", _shift_times(0.02)),
     VIDEO_V / "dev_2.arff", 173, GOLD_A / "dev_2.arff",
     ("frame 0 at 0.02 s", "has 0 s", "within 5 ms")),
    ("one-frame-time-wrong",
     lambda m: _rewrite_rows(m / AUDIO_A / "test_1.arff",
                             _set_field(1, "9.99", frames={30})),
     AUDIO_A / "test_1.arff", 123, Path("features_audio/valence/test_1.arff"),
     ("frame 30 at 9.99 s", "has 1.2 s")),
    ("frame-missing-in-the-middle",
     lambda m: _drop_row(m / GOLD_A / "train_1.arff", 10),
     GOLD_A / "train_1.arff", 16, GOLD_V / "train_1.arff",
     ("frame 10 at 0.44 s", "has 0.4 s")),
    ("extra-frame-at-the-end",
     lambda m: (m / AUDIO_A / "dev_1.arff").write_text(
         (m / AUDIO_A / "dev_1.arff").read_text()
         + (m / AUDIO_A / "dev_1.arff").read_text().splitlines()[-1]
         .replace(",2.36,", ",2.4,") + "\n"),
     AUDIO_A / "dev_1.arff", None, GOLD_A / "dev_1.arff",
     ("61 frames, but", "has 60", "frame 60", "dev_1.arff:153)")),
]


@pytest.mark.parametrize(
    "edit, offending, line, other, fragments",
    [c[1:] for c in CROSS_CASES], ids=[c[0] for c in CROSS_CASES])
def test_files_of_a_recording_are_cross_checked(corpus, tmp_path, edit,
                                                offending, line, other,
                                                fragments):
  manual = _copy(corpus, tmp_path)
  edit(manual)
  data_dir = tmp_path / "data"
  with pytest.raises(DataError) as info:
    recola.prepare(manual, data_dir)
  message = str(info.value)
  assert "\n" not in message
  where = f"{manual / offending}:{line}:" if line else f"{manual / offending}:"
  assert message.startswith(where), message
  assert str(manual / other) in message, message
  for fragment in fragments:
    assert fragment in message, message
  assert not recola.is_prepared(data_dir)


def _tables_for(texts: dict[str, str], tmp_path: Path):
  tables = []
  for name, text in texts.items():
    path = tmp_path / name
    path.write_text(text)
    tables.append(read_arff(path))
  return tables


def test_cross_check_tolerances_and_opensmile_names(tmp_path):
  head = ("@relation r\n@attribute {name} string\n@attribute frameTime numeric\n"
          "@attribute v numeric\n@data\n")
  texts = {
      "gold.arff": head.format(name="Instance_name")
      + "train_1,0,1\ntrain_1,0.04,2\n",
      # 3 ms off, an extension on the name: both accepted.
      "feat.arff": head.format(name="Instance_name")
      + "train_1.wav,0.003,1\ntrain_1.wav,0.037,2\n",
      # openSMILE output without -N: the placeholder carries no name.
      "smile.arff": head.format(name="name") + "'unknown',0,1\n'unknown',0.04,2\n",
  }
  tables = _tables_for(texts, tmp_path)
  assert recola.layout.check_recording_files("train_1", tables) == 2


def test_cross_check_blames_the_odd_file_not_the_reference(tmp_path):
  row = "x,{t},1\n"
  head = ("@relation r\n@attribute frameTime numeric\n@attribute a string\n"
          "@attribute v numeric\n@data\n").replace(
              "@attribute frameTime numeric\n@attribute a string\n",
              "@attribute a string\n@attribute frameTime numeric\n")
  good = head + "".join(row.format(t=k * 0.04) for k in range(4))
  odd = head + "".join(row.format(t=k * 0.04 + (0.1 if k == 2 else 0))
                       for k in range(4))
  tables = _tables_for({"odd.arff": odd, "a.arff": good, "b.arff": good},
                       tmp_path)
  with pytest.raises(DataError) as info:
    recola.layout.check_recording_files("train_1", tables)
  assert str(info.value).startswith(f"{tmp_path / 'odd.arff'}:8: frame 2")
  assert f"{tmp_path / 'a.arff'}:8 has 0.08 s" in str(info.value)


# ----------------------------------------------------------------------------
# Provenance: the prepared copy records the package it was built from.


def test_prepared_copy_records_its_source(prepared, corpus):
  source = recola.prepared_source(prepared)
  assert source == recola.package_fingerprint(corpus)
  assert source["path"] == str(corpus.resolve())
  assert source["fingerprint"].startswith("sha256:")
  assert len(source["fingerprint"]) == len("sha256:") + 64
  # 3 train + 2 dev recordings with 2 gold files; 6 recordings x 2 sets x 2.
  assert source["num_files"] == 5 * 2 + 6 * 2 * 2
  metadata = recola.prepared_path(prepared) / "metadata.json"
  assert '"fingerprint"' in metadata.read_text()
  builder = recola.prepare(None, prepared)
  assert builder.info.metadata[recola.SOURCE_METADATA_KEY] == source


def test_fingerprint_is_names_and_sizes_only(corpus, tmp_path):
  base = recola.package_fingerprint(corpus)
  manual = _copy(corpus, tmp_path)
  moved = recola.package_fingerprint(manual)
  assert moved["fingerprint"] == base["fingerprint"]
  assert moved["path"] != base["path"]
  # Files the build does not read do not count.
  (manual / "README.txt").write_text("notes")
  (manual / "ratings_individual").mkdir()
  (manual / "ratings_individual" / "x.csv").write_text("1;2")
  (manual / GOLD_A / ".hidden.arff").write_text("x")
  assert recola.package_fingerprint(manual)["fingerprint"] == base["fingerprint"]
  # A resized file does.
  path = manual / AUDIO_A / "train_1.arff"
  path.write_text(path.read_text() + "\n")
  assert recola.package_fingerprint(manual)["fingerprint"] != base["fingerprint"]


def test_check_source_accepts_the_same_package(prepared, corpus):
  assert recola.check_source(prepared, corpus) == recola.prepared_source(
      prepared)


def test_check_source_accepts_a_moved_package(prepared, corpus, tmp_path):
  moved = _copy(corpus, tmp_path)
  assert recola.check_source(prepared, moved)["path"] == str(corpus.resolve())


def _check_refused(prepared: Path, corpus: Path, given: Path, *fragments: str):
  with pytest.raises(DataError) as info:
    recola.check_source(prepared, given)
  message = str(info.value)
  assert "\n" not in message
  assert message.startswith(
      f"prepared data at {recola.prepared_path(prepared)} was built from "
      f"{corpus.resolve()} (fingerprint sha256:"), message
  assert f"not {given}" in message, message
  assert (f"rerun `python launch/prepare_data.py --dataset=recola "
          f"--manual_dir={given} --data_dir={prepared} --overwrite` or drop "
          "--manual_dir") in message, message
  for fragment in fragments:
    assert fragment in message, message


# (id, make(tmp_path, copy of the corpus) -> the manual_dir given, fragments)
SOURCE_CASES = [
    ("missing-folder", lambda t, m: t / "no" / "such" / "package",
     ("(folder not found)",)),
    ("a-file-not-a-folder",
     lambda t, m: (t / "file.txt").write_text("x") and t / "file.txt",
     ("(not a folder)",)),
    ("removed-dev-recording",
     lambda t, m: ([_remove(p) for p in m.rglob("dev_2.arff")], m)[1],
     ("files)",)),
    ("removed-one-dev-file",
     lambda t, m: (_remove(m / GOLD_V / "dev_1.arff"), m)[1], ("files)",)),
    ("added-train-recording",
     lambda t, m: ([shutil.copy(p, p.with_name("train_4.arff"))
                    for p in list(m.rglob("train_3.arff"))], m)[1],
     ("files)",)),
    ("resized-feature-file",
     lambda t, m: ((m / VIDEO_V / "test_1.arff").write_text(
         (m / VIDEO_V / "test_1.arff").read_text() + "%\n"), m)[1],
     ("files)",)),
    ("another-package", lambda t, m: demo.write_demo_corpus(
        t / "other", seed=4, feature_sets=("audio",), **SIZES),
     ("files)",)),
    ("empty-folder", lambda t, m: (t / "empty").mkdir() or t / "empty",
     ("0 files)",)),
]


@pytest.mark.parametrize("make, fragments", [c[1:] for c in SOURCE_CASES],
                         ids=[c[0] for c in SOURCE_CASES])
def test_check_source_refuses_a_different_package(prepared, corpus, tmp_path,
                                                  make, fragments):
  given = make(tmp_path, _copy(corpus, tmp_path))
  _check_refused(prepared, corpus, given, *fragments)


def test_check_source_on_a_copy_without_a_record(corpus, tmp_path):
  data_dir = tmp_path / "data"
  recola.prepare(corpus, data_dir)
  metadata = recola.prepared_path(data_dir) / "metadata.json"
  import json
  content = json.loads(metadata.read_text())
  del content[recola.SOURCE_METADATA_KEY]
  metadata.write_text(json.dumps(content))
  assert recola.prepared_source(data_dir) is None
  with pytest.raises(DataError) as info:
    recola.check_source(data_dir, corpus)
  message = str(info.value)
  assert "unrecorded package" in message and f"not {corpus}" in message
  assert "--overwrite" in message
  recola.prepare(corpus, data_dir, overwrite=True)
  assert recola.check_source(data_dir, corpus)["num_files"] == 34


def test_source_of_nothing_prepared(tmp_path):
  with pytest.raises(DataError) as info:
    recola.prepared_source(tmp_path)
  assert str(recola.prepared_path(tmp_path)) in str(info.value)
  with pytest.raises(DataError):
    recola.check_source(tmp_path, tmp_path)
  with pytest.raises(DataError) as info:
    recola.package_fingerprint(tmp_path / "nope")
  assert str(tmp_path / "nope") in str(info.value)


def test_overwrite_replaces_the_record(corpus, tmp_path):
  data_dir = tmp_path / "data"
  recola.prepare(corpus, data_dir)
  changed = _copy(corpus, tmp_path)
  for path in changed.rglob("dev_2.arff"):
    path.unlink()
  with pytest.raises(DataError):
    recola.check_source(data_dir, changed)
  recola.prepare(changed, data_dir, overwrite=True)
  assert recola.check_source(data_dir, changed)["path"] == str(changed.resolve())
  with pytest.raises(DataError):
    recola.check_source(data_dir, corpus)
