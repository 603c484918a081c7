"""The bad-input matrix: each bad input gets a non-zero exit (or the
project's typed exception), one line naming the file or flag and what was
expected, no traceback, and nothing half-written that a later run would
take as complete.  launch/train.py rows run in process (``cli``)."""

import errno
import shutil

import numpy as np
import pytest

from emobed_datasets import demo, recola
from emobed_datasets.errors import DataError
from emobed_jax import evaluate, predict, writers
from emobed_jax.config import DataConfig
from launch_support import FAST, main_in_process

# Nothing timed, and every comparison is between runs of this module.
pytestmark = pytest.mark.usefixtures("fast_compile")


def assert_one_error_line(p, *needles, code=None):
  assert p.returncode != 0 if code is None else p.returncode == code, (p.returncode, p.stderr)
  assert "Traceback" not in p.stderr + p.stdout, p.stderr[-2000:]
  lines = [l for l in p.stderr.splitlines() if l.strip()]
  assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr[-2000:]
  for n in needles:
    assert n in lines[0], (n, lines[0])


# ---------------------------------------------------------------------------
# The corpus as users have it (RECOLA layout), through launch/train.py.


@pytest.fixture(scope="module")
def package(tmp_path_factory):
  root = tmp_path_factory.mktemp("pkg") / "AVEC2016"
  demo.write_demo_corpus(root, seed=3, num_train=4, num_dev=2, num_test=1, num_frames=300)
  return root


def _edit_data_line(path, fn):
  lines = path.read_text().splitlines(keepends=True)
  i = next(i for i, l in enumerate(lines) if l.strip().lower() == "@data") + 3
  lines[i] = fn(lines[i])
  path.write_text("".join(lines))


def _drop_rows(path, n):
  lines = path.read_text().splitlines(True)
  path.write_text("".join(lines[:-n]))


def _drop_last_attribute(path):
  lines = path.read_text().splitlines(True)
  i = max(i for i, l in enumerate(lines) if l.lower().startswith("@attribute"))
  del lines[i]
  path.write_text("".join(lines))


BAD_CORPORA = {
    "missing_folder": (lambda p: shutil.rmtree(p / "ratings_gold_standard"),
                       "ratings_gold_standard"),
    "missing_gold_for_one_recording": (
        lambda p: (p / "ratings_gold_standard/valence/train_2.arff").unlink(), "train_2"),
    "truncated_arff": (lambda p: _drop_rows(p / "features_audio/arousal/dev_1.arff", 5),
                       "dev_1"),
    "wrong_attribute_count": (lambda p: _drop_last_attribute(
        p / "features_video_appearance/valence/train_1.arff"), "train_1.arff"),
    "non_numeric_value": (lambda p: _edit_data_line(
        p / "features_audio/valence/train_3.arff",
        lambda l: l.rsplit(",", 1)[0] + ",abc\n"), "train_3.arff"),
    "nan_value": (lambda p: _edit_data_line(
        p / "features_audio/arousal/train_1.arff",
        lambda l: l.rsplit(",", 1)[0] + ",nan\n"), "train_1.arff"),
    "float32_overflow": (lambda p: _edit_data_line(
        p / "features_audio/arousal/train_2.arff",
        lambda l: l.rsplit(",", 1)[0] + ",1e39\n"), "train_2.arff"),
    "empty_file": (lambda p: (p / "ratings_gold_standard/arousal/dev_2.arff").write_text(""),
                   "dev_2.arff"),
    "utf16_file": (lambda p: (p / "ratings_gold_standard/arousal/dev_1.arff").write_bytes(
        (p / "ratings_gold_standard/arousal/dev_1.arff").read_text().encode("utf-16")),
        "dev_1.arff"),
    "mismatched_frames_across_modalities": (lambda p: _drop_rows(
        p / "features_video_appearance/arousal/train_2.arff", 3), "train_2"),
    "empty_dev_split": (lambda p: [f.unlink() for f in p.rglob("dev_*.arff")], "dev"),
}


@pytest.mark.parametrize("case", sorted(BAD_CORPORA))
def test_a_bad_corpus_is_named_and_nothing_is_half_prepared(case, package, tmp_path, cli):
  mutate, needle = BAD_CORPORA[case]
  pkg = tmp_path / "AVEC2016"
  shutil.copytree(package, pkg)
  mutate(pkg)
  p = cli("--dataset=recola", f"--manual_dir={pkg}", f"--data_dir={tmp_path / 'data'}",
          f"--workdir={tmp_path / 'wd'}", *FAST)
  assert_one_error_line(p, needle, code=1)
  assert not recola.is_prepared(tmp_path / "data")
  assert not (tmp_path / "wd").exists()


def test_a_changed_package_is_not_silently_replaced_by_the_prepared_copy(
    package, tmp_path, cli):
  """../shared/cases/manual-dir-ignored: the prepared copy is tied to its source."""
  pkg = tmp_path / "AVEC2016"
  shutil.copytree(package, pkg)
  data = tmp_path / "data"
  args = ["--dataset=recola", f"--data_dir={data}", "--setting=mono", "--epochs=1", *FAST]
  recola.prepare(pkg, data)  # as the first run (or prepare_data.py) does
  for bad in ("no/such/package", None):
    if bad is None:  # the same folder, changed: a dev recording removed
      for f in pkg.rglob("dev_2.arff"):
        f.unlink()
    p = cli(*args, f"--manual_dir={bad or pkg}", f"--workdir={tmp_path / 'b'}")
    assert_one_error_line(p, "was built from", str(bad or pkg), "--overwrite", code=1)
    assert not (tmp_path / "b").exists()


def test_missing_recola_says_where_it_looked_and_how_to_get_it(tmp_path, cli, monkeypatch):
  monkeypatch.setenv("RECOLA_DIR", "")
  p = cli("--modality=audio", "--flagfile=recola.flags", f"--data_dir={tmp_path}")
  assert_one_error_line(p, str(tmp_path), "licence-restricted", "demo.flags", code=1)


# ---------------------------------------------------------------------------
# Flags and folders.


@pytest.mark.parametrize("flags_,needle,code", [
    (["--modality=smell"], "--modality", 1),
    (["--dimensions=dominance"], "--dimensions", 1),
    (["--dimensions=arousal,arousal"], "--dimensions", 1),
    (["--modality=video_geometric"], "--modality=video_geometric", 1),
    (["--setting=fusion"], "--setting", 2),
    (["--margin=0"], "--margin", 1),
    (["--margin=-0.5"], "--margin", 1),
    (["--batch_size=7"], "--batch_size", 1),
    (["--batch_size=0"], "--batch_size", 1),
    (["--epochs=0"], "--epochs", 1),
    (["--window=0"], "--window", 1),
    (["--dropout=1.5"], "--dropout", 1),
    (["--learning_rate=-1"], "--learning_rate", 1),
    (["--num_bins=1"], "--num_bins", 1),
    (["--num_layers=4"], "--num_layers", 1),
    (["--val_recordings=9"], "--val_recordings", 1),
    (["--aux_modality=audio"], "--aux_modality", 1),
    (["--rnn_impl=pallas", "--hidden=48"], "--hidden", 1),
    (["--rnn_impl=wavefront", "--dropout=0.1"], "--dropout", 1),
    (["--rnn_impl=wavefront", "--rnn=gru"], "--rnn_impl", 1),
    (["--rnn_impl=cudnn"], "--rnn_impl", 2),
    (["--eval_split=test"], "--eval_split", 1),        # a split RECOLA has without labels
    (["--task=classification"], "--task", 1),         # RECOLA labels are continuous
    (["--eval_split=nonsense"], "--eval_split", 2),
    (["--hidden=sixteen"], "--hidden", 2),
    (["--hiden=16"], "hiden", 2),                      # a mistyped flag
    (["stray_argument"], "stray_argument", 2),          # a stray positional argument
    (["--flagfile=no_such.flags"], "no_such.flags", 2),
])
def test_a_bad_flag_is_named(flags_, needle, code, demo_dir, tmp_path, cli):
  p = cli("--flagfile=demo.flags", f"--data_dir={demo_dir}", f"--workdir={tmp_path / 'wd'}",
          *FAST, *flags_)
  assert_one_error_line(p, needle, code=code)
  assert not (tmp_path / "wd").exists()


def test_an_unwritable_workdir_is_named(demo_dir, tmp_path, cli):
  blocker = tmp_path / "a_file"
  blocker.write_text("x")
  p = cli("--flagfile=demo.flags", f"--data_dir={demo_dir}", f"--workdir={blocker / 'run'}",
          *FAST)
  assert_one_error_line(p, "--workdir", str(blocker), code=1)


def test_a_data_dir_that_is_a_file_is_named(tmp_path, cli):
  f = tmp_path / "not_a_folder"
  f.write_text("x")
  p = cli("--flagfile=demo.flags", f"--data_dir={f}", f"--workdir={tmp_path / 'wd'}", *FAST)
  assert_one_error_line(p, str(f), code=1)


def test_a_full_disk_is_one_line_and_leaves_no_half_written_file(
    demo_dir, tmp_path, cli, monkeypatch):
  real = writers.write_json

  def full(path, data):
    if str(path).endswith("results.json"):
      raise OSError(errno.ENOSPC, "No space left on device", str(path))
    return real(path, data)
  monkeypatch.setattr(writers, "write_json", full)
  wd = tmp_path / "wd"
  p = cli("--flagfile=demo.flags", f"--data_dir={demo_dir}", f"--workdir={wd}",
          "--setting=mono", "--epochs=1", *FAST)
  assert_one_error_line(p, "No space left on device", "results.json", code=1)
  assert not (wd / "results.json").exists()
  monkeypatch.setattr(writers, "write_json", real)
  p = cli("--flagfile=demo.flags", f"--data_dir={demo_dir}", f"--workdir={wd}",
          "--setting=mono", "--epochs=1", *FAST)   # the same command, with space again
  assert p.returncode == 0 and (wd / "results.json").exists(), p.stderr


# ---------------------------------------------------------------------------
# Builders, evaluation and prediction: the project's typed exceptions.


@pytest.mark.parametrize("what", ["missing", "a_file", "empty_folder"])
def test_prepare_with_a_bad_package_raises_data_error_naming_it(tmp_path, what):
  pkg = tmp_path / "pkg"
  if what == "a_file":
    pkg.write_text("x")
  elif what == "empty_folder":
    pkg.mkdir()
  with pytest.raises(DataError) as e:
    recola.prepare(pkg, tmp_path / "out")
  assert str(pkg) in str(e.value) and "\n" not in str(e.value)
  assert not recola.is_prepared(tmp_path / "out")


def test_nonfinite_predictions_at_evaluation_are_named():
  from emobed_jax.input_pipeline import Recording
  rec = Recording("dev_9", np.zeros((10, 3), np.float32), None, np.zeros((10, 2), np.float32))
  p_eval = lambda params, x, m: np.full(x.shape[:3] + (2,), np.nan, np.float32)
  with pytest.raises(FloatingPointError, match="dev_9 became NaN or inf at step 7"):
    evaluate.evaluate_recordings(p_eval, None, [rec], {"dev_9": rec.labels},
                                 DataConfig(), 1, where="step 7")


@pytest.fixture(scope="module")
def finished(demo_dir, tmp_path_factory):
  wd = tmp_path_factory.mktemp("pred") / "run"
  assert main_in_process("--flagfile=demo.flags", f"--data_dir={demo_dir}", f"--workdir={wd}",
                         "--setting=mono", "--epochs=1", *FAST) == 0
  return wd


@pytest.mark.parametrize("remove", ["config.json", "stats.json"])
def test_predict_from_an_incomplete_workdir_names_the_file(finished, tmp_path, remove):
  wd = tmp_path / "run"
  shutil.copytree(finished, wd)
  (wd / remove).unlink()
  with pytest.raises(FileNotFoundError, match=remove):
    predict.load_predictor(wd)


@pytest.mark.parametrize("features,needle", [
    (np.zeros((50, 3), np.float32), r"expected \[frames, 176\]"),
    (np.zeros((50,), np.float32), r"expected \[frames, 176\]"),
    (np.full((50, 176), np.nan, np.float32), "NaN or inf"),
])
def test_predict_on_bad_features_names_them(finished, features, needle):
  predictor = predict.load_predictor(finished)
  with pytest.raises(ValueError, match=needle):
    predictor(features)
