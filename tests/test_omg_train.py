"""OMG-Emotion end to end on a tiny generated corpus: launch/train.py writes a
complete results.json whose scores re-count from its own per-utterance
predictions; launch/predict.py gives the same class probabilities from the
raw clip files; a missing corpus is one line."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from launch_support import main_in_process, read_jsonl

pytest.importorskip("opensmile")

from emobed_datasets import demo_omg, omg_emotion

from emobed_jax import metrics

pytestmark = pytest.mark.usefixtures("fast_compile")

SIZES = dict(num_train=42, num_validation=14, num_test=14, dead_rows=1, min_seconds=0.6,
             max_seconds=1.2)
SMALL_MODEL = ["--batch_size=8", "--hidden=16", "--proj_dim=16", "--log_every=2",
               "--length_buckets=2"]


@pytest.fixture(scope="module")
def omg_dir(tmp_path_factory):
  d = tmp_path_factory.mktemp("omg_data")
  demo_omg.prepare_demo_omg(d, 0, **SIZES)
  return d


def _train(omg_dir, wd, *flags):
  return main_in_process("--flagfile=demo_omg.flags", f"--data_dir={omg_dir}",
                         f"--workdir={wd}", "--epochs=2", *SMALL_MODEL, *flags)


def test_classification_results_recount_from_their_predictions(omg_dir, tmp_path, capsys):
  wd = tmp_path / "run"
  assert _train(omg_dir, wd) == 0
  out = capsys.readouterr().out
  assert "evaluation utterances" in out and "majority-class baseline uar" in out
  r = json.loads((wd / "results.json").read_text())
  assert (r["task"], r["eval_split"], r["metric_granularity"]) == ("classification", "test",
                                                                    "utterance")
  assert r["selection"]["split"] == "validation" and r["selection"]["metric"] == "uar"
  per = r["per_utterance"]
  assert len(per) == r["data"]["utterances"]["test"] == sum(map(sum, r["confusion"]))
  y = np.array([v["label"] for v in per.values()])
  p = np.array([v["pred"] for v in per.values()])
  probs = np.array([v["probs"] for v in per.values()])
  np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-4)
  np.testing.assert_array_equal(p, probs.argmax(1))
  recall = [np.mean(p[y == c] == c) for c in range(7) if np.any(y == c)]
  assert r["metrics"]["accuracy"] == pytest.approx(np.mean(p == y))
  assert r["metrics"]["uar"] == pytest.approx(np.mean(recall))
  assert r["metrics"]["macro_f1"] == pytest.approx(metrics.macro_f1(y, p, 7))
  # the majority-class baseline: the most frequent training class, scored the same way
  train = omg_emotion.load_split(demo_omg.demo_omg_paths(omg_dir, 0)[1], "train")
  major = int(np.bincount([train[i]["label"] for i in range(len(train))], minlength=7).argmax())
  assert r["majority_baseline"]["class"] == omg_emotion.CLASS_NAMES[major]
  assert r["majority_baseline"]["accuracy"] == pytest.approx(np.mean(y == major))
  assert r["majority_baseline"]["uar"] == pytest.approx(1 / len(recall))
  vals = [x for x in read_jsonl(wd / "metrics.jsonl") if x["split"] == "val"]
  assert len(vals) == 2 and all("uar" in x for x in vals)
  assert r["selection"]["best_val_uar"] == max(x["uar"] for x in vals)
  assert r["metrics_by_split"]["validation"]["uar"] == pytest.approx(
      r["selection"]["best_val_uar"])
  cfg = json.loads((wd / "config.json").read_text())
  assert cfg["core"]["task"]["task"] == "classification"
  assert cfg["core"]["task"]["level"] == "utterance"

  # launch/predict.py on the raw test files: the audio model's class
  # probabilities from the clip's WAV equal the evaluation's.
  import importlib.util

  from conftest import REPO_ROOT
  from launch_support import _cli
  spec = importlib.util.spec_from_file_location("launch_predict_omg",
                                                REPO_ROOT / "launch" / "predict.py")
  predict_cli = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(predict_cli)
  raw = demo_omg.demo_omg_paths(omg_dir, 0)[0]
  name, want = next(iter(per.items()))
  video, utt = name.split("/")
  wav = raw / "test" / video / (utt.rsplit(".", 1)[0] + ".wav")
  predict_cli.FLAGS.unparse_flags()
  predict_cli.main(_cli.parse_flags(["predict.py", f"--workdir={wd}", f"--input={wav}",
                                     f"--output={tmp_path / 'pred'}"], predict_cli.FLAGS))
  row = (tmp_path / "pred" / f"{wav.stem}.prediction.csv").read_text().splitlines()
  assert row[0].startswith("input,class,class_name,p_Anger")
  got = np.array([float(x) for x in row[1].split(",")[3:]])
  np.testing.assert_allclose(got, want["probs"], atol=2e-5)
  assert (tmp_path / "pred" / f"{wav.stem}.prediction.png").stat().st_size > 1000
  # Beside the clips (no --output), in the corpus layout where each clip's
  # OpenFace CSV shares its stem: a folder gives the audio files only, and
  # the OpenFace CSVs stay as they were.
  folder = tmp_path / "clips"
  shutil.copytree(wav.parent, folder)
  before = {p.name: p.read_bytes() for p in folder.glob("*.csv")}
  assert before
  predict_cli.FLAGS.unparse_flags()
  predict_cli.main(_cli.parse_flags(["predict.py", f"--workdir={wd}", f"--input={folder}"],
                                    predict_cli.FLAGS))
  assert {p.name: p.read_bytes() for p in folder.glob("*.csv")
          if ".prediction." not in p.name} == before
  assert len(list(folder.glob("*.prediction.csv"))) == len(list(folder.glob("*.wav")))

  # the grid report's utterance embeddings (shared space: both modalities)
  from emobed_jax import grid_report
  emb = grid_report.cell_utterance_embeddings(wd)
  assert set(emb["points"]) == {"audio", "video"}
  assert emb["points"]["audio"].shape == (len(per), cfg["core"]["model"]["embed_dim"])
  np.testing.assert_allclose(np.linalg.norm(emb["points"]["audio"], axis=1), 1.0, rtol=1e-5)
  assert sorted(emb["colour"]["audio"].tolist()) == sorted(y.tolist())

  # launch/evaluate.py re-evaluates the saved run: the same numbers as results.json
  spec = importlib.util.spec_from_file_location("launch_evaluate_omg",
                                                REPO_ROOT / "launch" / "evaluate.py")
  evaluate_cli = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(evaluate_cli)
  evaluate_cli.FLAGS.unparse_flags()
  evaluate_cli.main(_cli.parse_flags(["evaluate.py", f"--workdir={wd}"], evaluate_cli.FLAGS))
  again = json.loads((wd / "eval_test.json").read_text())
  assert again["metrics"] == r["metrics"] and again["confusion"] == r["confusion"]


def test_regression_per_utterance_is_scored_by_ccc_over_utterances(omg_dir, tmp_path):
  wd = tmp_path / "reg"
  assert _train(omg_dir, wd, "--task=regression", "--setting=mono", "--modality=video") == 0
  r = json.loads((wd / "results.json").read_text())
  assert r["task"] == "regression" and r["ccc_granularity"] == "utterance"
  per = r["per_utterance"].values()
  pairs = {d: np.array([v[d] for v in per]) for d in ("arousal", "valence")}
  for d, pg in pairs.items():
    assert r["metrics"][f"ccc_{d}"] == pytest.approx(metrics.ccc(pg[:, 0], pg[:, 1]), abs=1e-6)


def test_without_the_corpus_one_line_names_where_and_the_demo(tmp_path, capsys, monkeypatch):
  monkeypatch.delenv("OMG_DIR", raising=False)
  code = main_in_process("--flagfile=omg.flags", "--modality=audio",
                         f"--data_dir={tmp_path / 'none'}", f"--workdir={tmp_path / 'wd'}")
  err = capsys.readouterr().err.strip()
  assert code == 1 and len(err.splitlines()) == 1, err
  assert "OMG_DIR" in err and "demo_omg.flags" in err and "YouTube" in err
  assert not (tmp_path / "wd").exists()
