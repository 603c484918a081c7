"""The grid's statistics and tables against hand-computed values, scipy and
audmetric; its HParams read back with TensorBoard's own reader.  No JAX."""

import json
import math

import audmetric
import numpy as np
import pytest
from scipy import stats

from emobed_jax import grid_report, grid_stats


def test_summarize_hand_computed():
  s = grid_stats.summarize([0.3, 0.5, 0.4, 0.6])
  # mean 0.45; std (ddof=1) = sqrt((.15^2 + .05^2 + .05^2 + .15^2) / 3) = sqrt(.05 / 3)
  assert s["n"] == 4 and s["mean"] == pytest.approx(0.45)
  assert s["std"] == pytest.approx(math.sqrt(0.05 / 3))
  # t_{0.975, 3} = 3.182446305 (statistical tables)
  half = 3.182446305 * math.sqrt(0.05 / 3) / 2
  assert (s["ci_low"], s["ci_high"]) == pytest.approx((0.45 - half, 0.45 + half))
  one = grid_stats.summarize([0.7])
  assert one["std"] is None and one["ci_low"] is None and one["mean"] == 0.7
  with pytest.raises(ValueError, match="non-finite"):
    grid_stats.summarize([0.1, float("nan")])


def test_paired_t_hand_computed_and_scipy():
  a, b = [0.50, 0.42, 0.61, 0.55], [0.40, 0.41, 0.52, 0.50]
  r = grid_stats.paired_t(a, b)
  d = np.subtract(a, b)  # .10 .01 .09 .05
  t = d.mean() / (d.std(ddof=1) / 2)
  assert r["t"] == pytest.approx(t) and r["df"] == 3
  assert r["p"] == pytest.approx(2 * stats.t.sf(abs(t), 3))
  ref = stats.ttest_rel(a, b)
  assert (r["t"], r["p"]) == pytest.approx((ref.statistic, ref.pvalue))
  assert r["mean_diff"] == pytest.approx(0.0625) and r["weak"]
  assert not grid_stats.paired_t([1, 2, 3, 4, 6], [0, 2, 1, 3, 3])["weak"]
  const = grid_stats.paired_t([0.5, 0.6, 0.7], [0.4, 0.5, 0.6])  # zero-variance differences
  assert const["t"] is None and const["p"] is None
  assert grid_stats.paired_t([0.5], [0.4])["t"] is None


def test_bootstrap_known_cases():
  # A constant difference: every resample gives it; the sign never flips.
  r = grid_stats.paired_bootstrap(lambda i: 0.25, 6, n_resamples=500, seed=3)
  assert (r["estimate"], r["ci_low"], r["ci_high"], r["p"]) == (0.25, 0.25, 0.25, 0.0)
  # The mean of per-item differences: the same interval as scipy's own
  # bootstrap of the mean with the same seed, and seeded = repeatable.
  d = np.random.default_rng(1).normal(0.05, 0.1, 40)
  r = grid_stats.paired_bootstrap(lambda i: d[i].mean(), 40, n_resamples=2000, seed=7)
  ref = stats.bootstrap((d,), np.mean, n_resamples=2000, method="percentile",
                        rng=np.random.default_rng(7))
  assert (r["ci_low"], r["ci_high"]) == pytest.approx(
      (ref.confidence_interval.low, ref.confidence_interval.high), abs=1e-12)
  assert r == grid_stats.paired_bootstrap(lambda i: d[i].mean(), 40, n_resamples=2000, seed=7)
  # ... and close to the normal approximation for 40 items.
  se = d.std(ddof=1) / math.sqrt(40)
  assert r["ci_low"] == pytest.approx(d.mean() - 1.96 * se, abs=0.3 * se)
  assert r["p"] == pytest.approx(2 * stats.norm.sf(d.mean() / se), abs=0.02)


def _recola(setting, seed, per_rec, modality="audio"):
  per = {f"dev_{i + 1}": {"ccc_arousal": v, "ccc_valence": v, "ccc_mean": v}
         for i, v in enumerate(per_rec)}
  m = float(np.mean(per_rec))
  return {"dataset": "recola", "task": "regression", "setting": setting,
          "modality": modality, "seed": seed, "eval_split": "dev",
          "metrics": {"ccc_arousal": m + 0.1, "ccc_valence": m - 0.1, "ccc_mean": m},
          "ccc_granularity": "concatenated",
          "metrics_per_recording_mean": {"ccc_mean": m}, "per_recording": per,
          "selection": {"split": "train (held out: train_9)", "best_val_ccc_mean": 0.5}}


def _write(grid_dir, r):
  d = grid_dir / r["dataset"] / f"{r['setting']}-{r['modality']}" / f"seed_{r['seed']}"
  d.mkdir(parents=True)
  (d / "results.json").write_text(json.dumps(r))


def test_aggregate_recola(tmp_path):
  mono = {0: [0.40, 0.50, 0.30], 1: [0.42, 0.48, 0.33], 2: [0.38, 0.52, 0.31]}
  emob = {0: [0.45, 0.55, 0.30], 1: [0.44, 0.50, 0.36], 2: [0.45, 0.53, 0.35]}
  for k in range(3):
    _write(tmp_path, _recola("mono", k, mono[k]))
    _write(tmp_path, _recola("emobed", k, emob[k]))
  agg = grid_stats.aggregate(grid_stats.load_results(tmp_path), n_resamples=1000)
  ds = agg["recola"]
  assert [(c["setting"], c["modality"]) for c in ds["cells"]] == [("mono", "audio"),
                                                                  ("emobed", "audio")]
  means_e = [np.mean(emob[k]) for k in range(3)]
  means_m = [np.mean(mono[k]) for k in range(3)]
  e = ds["cells"][1]["metrics"]["ccc_mean"]
  assert e["mean"] == pytest.approx(np.mean(means_e))
  assert e["std"] == pytest.approx(np.std(means_e, ddof=1))
  (g,) = ds["gains"]
  ref = stats.ttest_rel(means_e, means_m)
  assert (g["t_test"]["t"], g["t_test"]["p"]) == pytest.approx((ref.statistic, ref.pvalue))
  # bootstrap estimate: mean over recordings of the seed-averaged differences
  diff = np.mean([np.subtract(emob[k], mono[k]) for k in range(3)], axis=0)
  assert g["bootstrap"]["estimate"] == pytest.approx(diff.mean())
  assert g["bootstrap"]["n_items"] == 3 and g["bootstrap"]["items"] == "recordings"
  ref_file = tmp_path / "ref.json"
  ref_file.write_text(json.dumps({"name": "my column", "source": "somewhere, 2020",
                                  "rows": [{"setting": "emobed", "modality": "audio",
                                            "metrics": {"ccc_arousal": 0.123}}]}))
  written = grid_stats.write_tables(agg, tmp_path / "tables",
                                    grid_stats.read_reference(ref_file))
  names = {p.name for p in written}
  assert {"recola_results.md", "recola_results.csv", "recola_gains.md", "recola_gains.csv",
          "recola_reference.md", "summary.json", "tables.md"} <= names
  gains_md = (tmp_path / "tables" / "recola_gains.md").read_text()
  assert "paired t-test" in gains_md and "weak: 3 seeds < 5" in gains_md
  assert "none of them is a number from the EmoBed paper" in gains_md
  refmd = (tmp_path / "tables" / "recola_reference.md").read_text()
  assert "my column: CCC arousal" in refmd and "0.123" in refmd and "AVEC 2016" in refmd
  # the confirmed published point, with its source, marked as another protocol
  assert "| dev | 0.855 | 0.713 |" in refmd and "Povolný" in refmd and "fusion" in refmd
  summary = json.loads((tmp_path / "tables" / "summary.json").read_text())
  assert summary["recola"]["gains"][0]["t_test"]["p"] == pytest.approx(ref.pvalue)
  bad = tmp_path / "bad.json"
  bad.write_text('{"name": "x", "rows": []}')
  with pytest.raises(grid_stats.ReportError, match="bad.json: expected"):
    grid_stats.read_reference(bad)


CLASSES = ["anger", "disgust", "fear", "happy", "neutral", "sad", "surprise"]


def _omg(setting, seed, labels, preds):
  pu = {f"v{i}/u{i}": {"label": int(a), "pred": int(b)} for i, (a, b) in
        enumerate(zip(labels, preds))}
  conf = np.zeros((7, 7), int)
  np.add.at(conf, (labels, preds), 1)
  uar = audmetric.unweighted_average_recall(labels, preds, labels=list(range(7)))
  return {"dataset": "demo_omg", "task": "classification", "setting": setting,
          "modality": "audio", "seed": seed, "eval_split": "test",
          "metrics": {"accuracy": float(np.mean(labels == preds)), "macro_f1": 0.0,
                      "uar": float(uar)},
          "metric_granularity": "utterance", "confusion": conf.tolist(),
          "class_names": CLASSES, "per_utterance": pu,
          "majority_baseline": {"class": 4, "accuracy": 0.3, "macro_f1": 0.07, "uar": 1 / 7},
          "selection": {"split": "validation", "metric": "uar", "best_val_uar": 0.3},
          "data": {"utterances": {"train": 100, "validation": 20, "test": len(labels)},
                   "manifest": "m.json"}}


def test_aggregate_omg_classification_and_hparams(tmp_path):
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 7, 60)
  runs = {}
  for k in range(2):
    for s, p_ok in (("mono", 0.4), ("emobed", 0.6)):
      preds = np.where(rng.random(60) < p_ok, labels, rng.integers(0, 7, 60))
      runs[s, k] = preds
      _write(tmp_path, _omg(s, k, labels, preds))
  results = grid_stats.load_results(tmp_path)
  ds = grid_stats.aggregate(results, n_resamples=300)["demo_omg"]
  assert ds["primary"] == "uar"
  (g,) = ds["gains"]
  want = np.mean([audmetric.unweighted_average_recall(labels, runs["emobed", k])
                  - audmetric.unweighted_average_recall(labels, runs["mono", k])
                  for k in range(2)])
  assert g["bootstrap"]["estimate"] == pytest.approx(want)
  assert g["bootstrap"]["items"] == "utterances" and g["bootstrap"]["n_items"] == 60
  text = grid_stats.protocol_text(ds["protocol"])
  assert "Utterances available: train 100, validation 20, test 60" in text
  assert "Majority-class baseline" in text
  written = grid_report.make_report(tmp_path, n_resamples=200)
  assert (tmp_path / "figures" / "demo_omg_confusion.png").stat().st_size > 1000
  assert (tmp_path / "figures" / "demo_omg_bars.png").stat().st_size > 1000
  # HParams read back with TensorBoard's own reader and plugin protos.
  from tensorboard.backend.event_processing import event_accumulator as ea
  from tensorboard.plugins.hparams import plugin_data_pb2
  hp_dir = tmp_path / "hparams" / "demo_omg" / "emobed-audio" / "seed_1"
  assert hp_dir in written
  acc = ea.EventAccumulator(str(hp_dir))
  acc.Reload()
  content = acc.PluginTagToContent("hparams")
  infos = [plugin_data_pb2.HParamsPluginData.FromString(c) for c in content.values()]
  start = next(i.session_start_info for i in infos if i.HasField("session_start_info"))
  assert start.hparams["setting"].string_value == "emobed"
  assert start.hparams["seed"].number_value == 1
  r = next(r for r in results if r["setting"] == "emobed" and r["seed"] == 1)
  assert acc.Scalars("hparam/uar")[0].value == pytest.approx(r["metrics"]["uar"])
  exp = next(i.experiment for i in infos if i.HasField("experiment"))
  assert "hparam/uar" in {m.name.tag for m in exp.metric_infos}


def test_omg_regression_items():
  rng = np.random.default_rng(2)
  gold = rng.normal(size=(30, 2))
  pred = gold + rng.normal(scale=0.5, size=(30, 2))
  pu = {f"u{i}": {"arousal": [pred[i, 0], gold[i, 0]], "valence": [pred[i, 1], gold[i, 1]]}
        for i in range(30)}
  ids, score = grid_stats.item_scorer({"per_utterance": pu})
  idx = np.arange(30)
  want = np.mean([audmetric.concordance_cc(gold[:, j], pred[:, j]) for j in range(2)])
  order = [ids.index(f"u{i}") for i in range(30)]
  assert score(ids, np.asarray(order)[idx]) == pytest.approx(want)


def test_no_results_is_one_error(tmp_path):
  with pytest.raises(grid_stats.ReportError, match="no finished cell"):
    grid_stats.load_results(tmp_path)
  d = tmp_path / "demo" / "mono-audio" / "seed_0"
  d.mkdir(parents=True)
  (d / "results.json").write_text("{not json")
  with pytest.raises(grid_stats.ReportError, match="seed_0/results.json: not a results.json"):
    grid_stats.load_results(tmp_path)
