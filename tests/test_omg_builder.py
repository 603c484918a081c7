"""OMG-Emotion builder (issue 9, items 1-4): a generated corpus with the
quirks users hit, prepared once; counts, examples and masks checked against
what the CSVs and openSMILE give directly."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile
from emobed_datasets import demo_omg, omg_emotion
from emobed_datasets.errors import DataError

SIZES = dict(num_train=7, num_validation=8, num_test=7, dead_rows=1,
             min_seconds=1.0, max_seconds=1.3)


def _csv_rows(path):
  with open(path, newline="") as f:
    rows = [r for r in csv.reader(f)]
  header = [h.strip().lower() for h in rows[0]]
  return [dict(zip(header, r)) for r in rows[1:] if r and all(x.strip() for x in r)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  """A tiny demo corpus, made awkward, and prepared (in process, 1 worker)."""
  root = tmp_path_factory.mktemp("omg") / "raw"
  demo_omg.write_demo_omg_corpus(root, seed=3, **SIZES)
  # Header with other case and spaces; a malformed row (an empty field).
  val_csv = root / omg_emotion.CSV_NAMES["validation"]
  lines = val_csv.read_text().splitlines()
  lines[0] = " LINK, Start ,end,Video, utterance ,AROUSAL,valence, emotionmaxvote "
  lines.insert(3, "https://www.youtube.com/watch?v=x,0,1,abc,utterance_9.mp4,0.5,,4")
  val_csv.write_text("\n".join(lines) + "\n")
  # One validation clip without its OpenFace CSV.
  rows = _csv_rows(val_csv)
  alive = [r for r in rows
           if (root / "validation" / r["video"] / r["utterance"].replace(".mp4", ".wav")).is_file()]
  no_face = alive[1]
  (root / "validation" / no_face["video"] / no_face["utterance"].replace(".mp4", ".csv")).unlink()
  # One test OpenFace file with failed frames (success 0, values kept).
  test_rows = [r for r in _csv_rows(root / omg_emotion.CSV_NAMES["test"])
               if (root / "test" / r["video"] / r["utterance"].replace(".mp4", ".csv")).is_file()]
  face_csv = root / "test" / test_rows[0]["video"] / test_rows[0]["utterance"].replace(".mp4", ".csv")
  face_lines = face_csv.read_text().splitlines()
  for i in (2, 3, 5):
    fields = face_lines[i].split(", ")
    fields[4] = "0"
    face_lines[i] = ", ".join(fields)
  face_csv.write_text("\n".join(face_lines) + "\n")
  data = root.parent / "data"
  progress = []
  summary = omg_emotion.prepare(root, data, workers=1,
                                progress=lambda *a: progress.append(a))
  return dict(root=root, data=data, summary=summary, progress=progress,
              no_face=f"{no_face['video']}/{no_face['utterance']}", face_csv=face_csv,
              face_id=f"{test_rows[0]['video']}/{test_rows[0]['utterance']}")


def test_counts_are_reported_exactly(corpus):
  s = corpus["summary"]["splits"]
  # train: 7 clips + 1 dead row + the demo's blank row
  assert (s["train"]["rows"], s["train"]["kept"]) == (9, 7)
  assert s["train"]["skipped"] == {"blank row": 1, "missing clip": 1}
  assert s["train"]["warnings"][0].endswith(":8: skipped blank row")
  # validation: 8 clips + 1 dead + 1 malformed, one without OpenFace
  assert (s["validation"]["rows"], s["validation"]["kept"]) == (10, 7)
  assert s["validation"]["skipped"] == {"row with empty fields": 1, "missing clip": 1,
                                        "missing OpenFace CSV": 1}
  assert ":4: skipped row with empty fields (no valence)" in s["validation"]["warnings"][0]
  assert (s["test"]["rows"], s["test"]["kept"]) == (8, 7)
  assert s["test"]["skipped"] == {"missing clip": 1}
  done = [p[0] for p in corpus["progress"]]
  assert done == list(range(1, 22)) and {p[1] for p in corpus["progress"]} == {21}
  manifest = json.loads(Path(omg_emotion.info(corpus["data"])["manifest"]).read_text())
  assert corpus["no_face"] in manifest["splits"]["validation"]["skipped"]["missing OpenFace CSV"]
  # prepare again: a no-op that returns the same summary
  again = omg_emotion.prepare(None, corpus["data"])
  assert again["already_prepared"] and again["splits"] == corpus["summary"]["splits"]


def test_examples_match_csv_and_opensmile(corpus):
  import opensmile

  root, data = corpus["root"], corpus["data"]
  smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                          feature_level=opensmile.FeatureLevel.LowLevelDescriptors)
  meta = omg_emotion.info(data)
  assert meta["feature_dims"] == {"audio": 25, "video": 47}
  assert meta["audio_frame_rate"] == 100.0
  assert meta["video_frame_rate"] == pytest.approx(30.0, rel=0.05)
  assert meta["counts"] == {"train": 7, "validation": 7, "test": 7}
  assert meta["source"]["path"] == str(root.resolve())
  manifest = json.loads(Path(meta["manifest"]).read_text())
  for split in omg_emotion.SPLITS:
    ds = omg_emotion.load_split(data, split)
    rows = {f"{r['video']}/{r['utterance']}": r
            for r in _csv_rows(root / omg_emotion.CSV_NAMES[split])}
    ids = [ds[i]["utterance_id"] for i in range(len(ds))]
    assert ids == manifest["splits"][split]["kept"]
    assert ids == [i for i in rows if i in set(ids)]  # CSV order
    for i in range(len(ds)):
      ex = ds[i]
      row = rows[ex["utterance_id"]]
      assert isinstance(ex["video_id"], str) and ex["video_id"] == row["video"]
      assert ex["label"] == int(row["emotionmaxvote"])
      assert ex["arousal"] == pytest.approx(float(row["arousal"]), abs=1e-6)
      assert ex["valence"] == pytest.approx(float(row["valence"]), abs=1e-6)
      folder = root / split / row["video"]
      stem = row["utterance"].replace(".mp4", "")
      signal, rate = soundfile.read(folder / f"{stem}.wav", dtype="float32")
      want = smile.process_signal(signal, rate).to_numpy(np.float32)
      np.testing.assert_allclose(ex["audio"], want, rtol=1e-6, atol=1e-6)
      assert ex["audio_mask"].dtype == np.float32 and np.all(ex["audio_mask"] == 1.0)
      table = np.genfromtxt(folder / f"{stem}.csv", delimiter=",", names=True,
                            autostrip=True, ndmin=1)
      cols = [table[name] for name in omg_emotion.OPENFACE_COLUMNS]
      np.testing.assert_allclose(ex["video"], np.stack(cols, 1), rtol=1e-6)
      np.testing.assert_array_equal(ex["video_mask"], table["success"].astype(np.float32))
      if ex["utterance_id"] == corpus["face_id"]:
        assert ex["video_mask"][[1, 2, 4]].tolist() == [0.0, 0.0, 0.0]
        assert np.any(ex["video"][1] != 0)  # kept as read, only masked
  all_ids = [i for s in manifest["splits"].values() for i in s["kept"]]
  assert any(i.startswith("00042/") for i in all_ids)  # a numeric-looking name stays a string


def test_read_errors(corpus, tmp_path):
  with pytest.raises(DataError, match="unknown split 'dev'"):
    omg_emotion.load_split(corpus["data"], "dev")
  with pytest.raises(DataError, match="prepared OMG-Emotion dataset not found"):
    omg_emotion.load_split(tmp_path, "train")
  with pytest.raises(DataError, match="prepared OMG-Emotion dataset not found"):
    omg_emotion.load_split(corpus["data"], "train", audio_features="compare_lld")
  with pytest.raises(DataError, match="OMG-Emotion not found .*knowledgetechnologyuhh"):
    omg_emotion.prepare(tmp_path / "nothing", tmp_path / "data")


def test_empty_split_is_an_error(corpus, tmp_path):
  raw = tmp_path / "raw"
  shutil.copytree(corpus["root"], raw)
  shutil.rmtree(raw / "test")
  with pytest.raises(DataError, match=r"test split is empty.*under .*raw/test"):
    omg_emotion.prepare(raw, tmp_path / "data", workers=1)
  assert not omg_emotion.is_prepared(tmp_path / "data")


@pytest.mark.parametrize("text, match", [
    ("video,utterance,arousal,valence,EmotionMaxVote\nv,u.mp4,0.5,0.1,7\n", ":2: EmotionMaxVote"),
    ("video,utterance,arousal,valence,EmotionMaxVote\nv,u.mp4,1.5,0.1,3\n", ":2: arousal 1.5"),
    ("video,utterance,arousal,valence,EmotionMaxVote\n\nv,u.mp4,0.5,-1.2,3\n", ":3: valence"),
    ("video,utterance,arousal,EmotionMaxVote\n", ":1: header lacks valence"),
    ("video,utterance,arousal,valence,EmotionMaxVote\n../x,u.mp4,0.5,0.1,3\n", "plain file name"),
])
def test_csv_label_errors_name_file_and_line(text, match):
  with pytest.raises(DataError, match=match) as e:
    omg_emotion.parse_omg_csv(text.encode(), "omg.csv")
  assert str(e.value).startswith("omg.csv:")


def test_csv_quirks():
  text = ("Link , START,end, VIDEO ,utterance,arousal,valence,EmotionMaxVote\n"
          "l,0,1,0042,utterance_1.mp4,0.5,0.1,4.0\n"
          ",,,,,,,\n"
          "l,0,1,0042,utterance_1.mp4,0.5,0.1,4\n"
          "l,0,1,7,utterance_2.mp4,0.5,0.1\n")
  out = omg_emotion.parse_omg_csv(text.encode(), "x.csv")
  assert [(r.video, r.utterance, r.label) for r in out.rows] == [("0042", "utterance_1.mp4", 4)]
  assert out.skipped == {"blank row": 1, "duplicate row": 1, "row with empty fields": 1}
  assert out.num_rows == 4


def test_openface_versions_and_missing_columns():
  names = list(omg_emotion.OPENFACE_COLUMNS)
  # OpenFace 1.x-like: no face_id, no gaze_angle, extra landmark columns, shuffled.
  header = ["frame", "timestamp", "confidence", "success", "x_0", *reversed(names)]
  row = ["1", "0.0", "0.9", "1", "3.5", *[str(i) for i in range(len(names))][::-1]]
  text = ", ".join(header) + "\n" + ", ".join(row) + "\n"
  face = omg_emotion.parse_openface(text.encode(), "f.csv")
  np.testing.assert_array_equal(face.features[0], np.arange(len(names), dtype=np.float32))
  bad = text.replace("AU45_c", "AU45c").replace("pose_Tx", "poseTx")
  with pytest.raises(DataError, match="f.csv:1: .*lacks column.*pose_Tx.*AU45_c|"
                                      "f.csv:1: .*lacks column.*AU45_c.*pose_Tx"):
    omg_emotion.parse_openface(bad.encode(), "f.csv")
