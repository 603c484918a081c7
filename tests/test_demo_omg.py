"""The demo OMG-Emotion corpus (issue 9, item 4) and launch/prepare_data.py
on it and without the corpus."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from emobed_datasets import demo_omg, omg_emotion
from emobed_datasets.errors import DataError

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY = dict(num_train=7, num_validation=7, num_test=8, dead_rows=1,
            min_seconds=1.0, max_seconds=1.1)


def _files(root: Path) -> dict[str, bytes]:
  return {p.relative_to(root).as_posix(): p.read_bytes()
          for p in sorted(root.rglob("*")) if p.is_file()}


def test_deterministic_by_seed(tmp_path):
  a = demo_omg.write_demo_omg_corpus(tmp_path / "a", 1, **TINY)
  b = demo_omg.write_demo_omg_corpus(tmp_path / "b", 1, **TINY)
  c = demo_omg.write_demo_omg_corpus(tmp_path / "c", 2, **TINY)
  fa, fb, fc = (_files(tmp_path / x) for x in "abc")
  assert a == b and fa == fb
  assert fa != fc and c == a  # same class counts, other content


def test_format_and_class_counts(tmp_path):
  root = tmp_path / "raw"
  counts = demo_omg.write_demo_omg_corpus(root, 0, **TINY)
  for split, name in omg_emotion.CSV_NAMES.items():
    text = (root / name).read_text()
    assert text.splitlines()[0] == "link,start,end,video,utterance,arousal,valence,EmotionMaxVote"
    rows = [r for r in csv.DictReader(text.splitlines()) if r["video"]]
    alive = [r for r in rows
             if (root / split / r["video"] / r["utterance"].replace(".mp4", ".wav")).is_file()]
    assert len(rows) - len(alive) == TINY["dead_rows"]
    assert all(r["utterance"].startswith("utterance_") and r["utterance"].endswith(".mp4")
               for r in rows)
    got = [sum(int(r["EmotionMaxVote"]) == k for r in alive) for k in range(7)]
    assert got == counts[split] and min(got) >= 1
  assert not list(root.rglob("*.mp4"))  # WAVs beside where the clips would be
  faces = sorted(root.rglob("*.csv"))[3:]
  header = faces[0].read_text().splitlines()[0]
  assert header.startswith("frame, face_id, timestamp, confidence, success, gaze_0_x")
  assert any(line.split(", ")[4] == "0"  # some frames without a face
             for f in faces for line in f.read_text().splitlines()[1:])
  # The default sizes: neutral 35x surprise in train, every class everywhere.
  assert demo_omg._class_counts(234) == [30, 12, 6, 57, 105, 21, 3]
  assert demo_omg._class_counts(78) == list(demo_omg.CLASS_WEIGHTS)


def _script(*args: str) -> subprocess.CompletedProcess:
  env = {k: v for k, v in os.environ.items() if k != "OMG_DIR"}
  return subprocess.run([sys.executable, "launch/prepare_data.py", *args], cwd=REPO_ROOT,
                        env=env, capture_output=True, text=True, timeout=300, check=False)


def test_prepare_data_demo_report_and_missing_corpus(tmp_path):
  data = tmp_path / "data"
  # Two worker processes (the parallel path) and another audio feature choice.
  prepared = demo_omg.prepare_demo_omg(data, 4, audio_features="compare_lld", workers=2,
                                       **TINY)
  assert prepared == demo_omg.demo_omg_paths(data, 4)[1]
  test = omg_emotion.load_split(prepared, "test", "compare_lld")
  meta = omg_emotion.info(prepared, "compare_lld")
  assert len(test) == 8 and test[-1]["audio"].shape[1] == 65 == meta["feature_dims"]["audio"]
  manifest = json.loads(Path(meta["manifest"]).read_text())
  assert [e["utterance_id"] for e in test] == manifest["splits"]["test"]["kept"]
  done = _script("--dataset=demo_omg", "--seed=4", f"--data_dir={data}",
                 "--omg_audio_features=compare_lld")
  assert done.returncode == 0, done.stderr
  assert "train: 7 utterances kept of 9 CSV rows; skipped: 1 blank row, 1 missing clip" \
      in done.stdout
  assert "omg_TrainVideos.csv:8: skipped blank row" in done.stdout

  missing = tmp_path / "no_omg"
  done = _script("--dataset=omg", f"--manual_dir={missing}", f"--data_dir={data}")
  assert done.returncode == 1 and "Traceback" not in done.stderr
  lines = done.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: OMG-Emotion not found")
  for part in (str(missing), "$OMG_DIR", "knowledgetechnologyuhh/OMGEmotionChallenge",
               "python launch/train.py --flagfile=demo_omg.flags"):
    assert part in lines[0]


def test_check_source(tmp_path):
  raw = tmp_path / "raw"
  demo_omg.write_demo_omg_corpus(raw, 0, **TINY)
  recorded = omg_emotion.corpus_fingerprint(raw)
  moved = tmp_path / "moved"
  raw.rename(moved)
  omg_emotion.check_source(recorded, moved, "P")  # same files elsewhere: fine
  next(moved.rglob("*.wav")).unlink()
  with pytest.raises(DataError, match="prepared data at P was built from .*rerun with --overwrite"):
    omg_emotion.check_source(recorded, moved, "P")


def test_an_existing_folder_is_reused_only_if_it_is_the_same_corpus(tmp_path):
  """The marker check shared with the RECOLA demo (common.check_demo_marker):
  the same corpus is reused as is, other sizes or a foreign folder are refused
  with the folder named, an empty folder is written."""
  root = tmp_path / "raw"
  demo_omg.ensure_demo_omg_corpus(root, 0, **TINY)
  before = _files(root)
  demo_omg.ensure_demo_omg_corpus(root, 0, **TINY)
  assert _files(root) == before
  with pytest.raises(DataError, match="demo OMG corpus made with .*num_train.: 7"):
    demo_omg.ensure_demo_omg_corpus(root, 0, **dict(TINY, num_train=9))
  foreign = tmp_path / "foreign"
  foreign.mkdir()
  (foreign / "notes.txt").write_text("mine")
  with pytest.raises(DataError, match="not a complete demo OMG corpus"):
    demo_omg.ensure_demo_omg_corpus(foreign, 0, **TINY)
  assert (foreign / "notes.txt").read_text() == "mine"
  empty = tmp_path / "empty"
  empty.mkdir()
  demo_omg.ensure_demo_omg_corpus(empty, 0, **TINY)
  assert (empty / demo_omg.DEMO_MARKER).is_file()
