"""Statistics of a grid: per cell mean, std and t confidence interval over
seeds; the gain of each setting over ``mono`` with a paired t-test across
seeds and a paired bootstrap over recordings / utterances; and the tables
(Markdown, CSV, JSON) with their protocol.

The statistics come from scipy (``scipy.stats.t``, ``ttest_rel``,
``bootstrap``): well-kept and checked; only the bookkeeping is ours.
Nothing here is, or is labelled as, a number of the EmoBed paper.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

#: Confidence level of every interval.
LEVEL = 0.95
#: Below this many paired seeds the t-test is flagged as weak.
WEAK_BELOW = 5
#: Below this many items (recordings) the bootstrap is flagged as coarse: the
#: resamples can take only a few distinct values.
FEW_ITEMS = 10
METRIC_ORDER = ("ccc_mean", "ccc_arousal", "ccc_valence", "uar", "macro_f1", "accuracy")
METRIC_LABELS = {"ccc_mean": "CCC mean", "ccc_arousal": "CCC arousal",
                 "ccc_valence": "CCC valence", "uar": "UAR", "macro_f1": "macro F1",
                 "accuracy": "accuracy"}


class ReportError(ValueError):
  """A grid folder or results file that cannot be aggregated (the message names it)."""


def _finite(x: float) -> float | None:
  """A statistic for JSON: None where it is undefined or infinite (a t statistic
  of identical non-zero differences), never a made-up number."""
  x = float(x)
  return x if math.isfinite(x) else None


# --- statistics -------------------------------------------------------------

def summarize(values: Sequence[float], level: float = LEVEL) -> dict[str, Any]:
  """Mean, sample std (``ddof=1``) and the Student-t confidence interval of
  the mean: ``mean ± t_{(1+level)/2, n-1} · std / sqrt(n)``.

  Returns ``{n, mean, std, ci_low, ci_high}``; ``std`` and the interval are
  None for fewer than 2 values (undefined, not zero).

  Raises:
    ValueError: no values, or a NaN/inf among them.
  """
  x = np.asarray(values, np.float64)
  if x.size == 0:
    raise ValueError("summarize: no values")
  if not np.all(np.isfinite(x)):
    raise ValueError(f"summarize: non-finite values {x.tolist()}")
  n, mean = x.size, float(x.mean())
  if n < 2:
    return {"n": n, "mean": mean, "std": None, "ci_low": None, "ci_high": None}
  std = float(x.std(ddof=1))
  half = float(stats.t.ppf((1 + level) / 2, n - 1)) * std / math.sqrt(n)
  return {"n": n, "mean": mean, "std": std, "ci_low": mean - half, "ci_high": mean + half}


def paired_t(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
  """Paired two-sided t-test of ``a - b`` (``scipy.stats.ttest_rel``): ``a``
  and ``b`` are one value per seed, in the same seed order.

  Returns ``{test, n, df, mean_diff, t, p, weak}``; ``t``/``p`` are None
  with fewer than 2 pairs or when every difference is equal (undefined);
  ``weak``: fewer than :data:`WEAK_BELOW` pairs (little power, the normality
  assumption cannot be checked).
  """
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.shape != b.shape:
    raise ValueError(f"paired_t: {a.shape} and {b.shape} values are not pairs")
  n = int(a.size)
  out = {"test": "paired t-test (two-sided, scipy.stats.ttest_rel)", "n": n,
         "df": n - 1, "mean_diff": float(np.mean(a - b)) if n else None, "t": None,
         "p": None, "weak": n < WEAK_BELOW}
  if n >= 2 and np.ptp(a - b) > 0:  # equal differences: t undefined / infinite
    r = stats.ttest_rel(a, b)
    t = _finite(r.statistic)
    out["t"], out["p"] = t, (None if t is None else _finite(r.pvalue))
  return out


def paired_bootstrap(statistic: Callable[[np.ndarray], float], n_items: int, *,
                     n_resamples: int = 5000, seed: int = 0,
                     level: float = LEVEL) -> dict[str, Any]:
  """Paired bootstrap over items (recordings or utterances).

  ``statistic(idx)``: the difference (setting − mono) computed on the items
  ``idx`` (int array, items drawn with replacement); both systems see the
  same items, which is what makes it paired.  Resampling and the percentile
  interval are ``scipy.stats.bootstrap`` (``method="percentile"``) with
  ``rng=np.random.default_rng(seed)``; the two-sided p-value is
  ``min(1, 2 · min(P*(d <= 0), P*(d >= 0)))`` over the bootstrap
  distribution (how often resampling the items flips the sign).

  Returns ``{method, n_items, n_resamples, seed, estimate, ci_low, ci_high, p}``.
  """
  if n_items < 1:
    raise ValueError("paired_bootstrap: no items")
  idx = np.arange(n_items)
  estimate = float(statistic(idx))
  res = stats.bootstrap((idx,), lambda i: statistic(np.asarray(i, int)), vectorized=False,
                        n_resamples=n_resamples, confidence_level=level,
                        method="percentile", rng=np.random.default_rng(seed))
  d = np.asarray(res.bootstrap_distribution, np.float64)
  p = min(1.0, 2 * min(float(np.mean(d <= 0)), float(np.mean(d >= 0))))
  return {"method": "paired bootstrap over items, percentile interval "
                    "(scipy.stats.bootstrap)", "n_items": n_items,
          "n_resamples": n_resamples, "seed": seed, "estimate": estimate,
          "ci_low": _finite(res.confidence_interval.low),
          "ci_high": _finite(res.confidence_interval.high), "p": p}


# --- per-item scores of a run -----------------------------------------------

def _ccc(x: np.ndarray, y: np.ndarray) -> float:
  """Lin's CCC with population moments (ddof=0), as emobed_jax.metrics."""
  mx, my = x.mean(), y.mean()
  vx, vy = x.var(), y.var()
  cov = np.mean((x - mx) * (y - my))
  return float(2 * cov / (vx + vy + (mx - my) ** 2))


def _uar(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> float:
  """Unweighted average recall over the classes present in ``labels``."""
  recalls = [np.mean(preds[labels == k] == k) for k in range(num_classes) if np.any(labels == k)]
  return float(np.mean(recalls))


def item_scorer(results: Mapping[str, Any]) -> tuple[list[str], Callable]:
  """The items of a run and a function ``(item_ids, idx) -> metric`` that
  scores the run on the items ``idx`` of ``item_ids``.

  RECOLA/demo: items are dev recordings, the metric the mean over them of
  the per-recording CCC mean (``per_recording``); OMG classification:
  utterances, UAR; OMG regression: utterances, CCC mean of arousal and
  valence over them.

  Raises:
    ReportError: the results hold no per-item record.
  """
  if results.get("per_recording"):
    per = results["per_recording"]

    def score(ids, idx):
      return float(np.mean([per[ids[i]]["ccc_mean"] for i in idx]))
    return sorted(per), score
  pu = results.get("per_utterance")
  if not pu:
    raise ReportError(f"{results.get('_workdir', '?')}/results.json: no per_recording or "
                      "per_utterance record to bootstrap over")
  first = next(iter(pu.values()))
  if "label" in first:
    k = len(results.get("class_names") or []) or 1 + max(max(v["label"], v["pred"])
                                                         for v in pu.values())

    def score(ids, idx):
      lab = np.array([pu[ids[i]]["label"] for i in idx])
      pred = np.array([pu[ids[i]]["pred"] for i in idx])
      return _uar(lab, pred, k)
    return sorted(pu), score
  dims = [d for d in ("arousal", "valence") if d in first]

  def score(ids, idx):
    out = []
    for d in dims:
      pg = np.array([pu[ids[i]][d] for i in idx], np.float64)
      out.append(_ccc(pg[:, 0], pg[:, 1]))
    return float(np.mean(out))
  return sorted(pu), score


# --- the grid ---------------------------------------------------------------

def load_results(grid_dir: str | Path) -> list[dict[str, Any]]:
  """Every finished cell's ``results.json`` under ``grid_dir``
  (``<dataset>/<setting>-<modality>/seed_<k>/results.json``), each with
  ``_workdir`` added.

  Raises:
    ReportError: a results file that is not JSON, or none at all.
  """
  grid_dir = Path(grid_dir)
  out = []
  for path in sorted(grid_dir.glob("*/*/seed_*/results.json")):
    try:
      r = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise ReportError(f"{path}: not a results.json written by launch/train.py ({e})") from None
    if not isinstance(r, dict) or "metrics" not in r or "setting" not in r:
      raise ReportError(f"{path}: expected a results.json written by launch/train.py "
                        "(with 'setting' and 'metrics')")
    r["_workdir"] = str(path.parent)
    out.append(r)
  if not out:
    raise ReportError(f"--grid_dir={grid_dir}: no finished cell (no "
                      "<dataset>/<setting>-<modality>/seed_<k>/results.json)")
  return out


def _task(r: Mapping[str, Any]) -> str:
  return r.get("task") or ("classification" if "uar" in r["metrics"] else "regression")


def aggregate(results: Sequence[Mapping[str, Any]], *, n_resamples: int = 5000,
              seed: int = 0) -> dict[str, Any]:
  """Tables of one or more datasets' cells.

  Returns ``{dataset: {"task", "primary", "cells": [...], "gains": [...],
  "protocol": {...}}}``: ``cells`` per (setting, modality) with
  :func:`summarize` of every metric and the seeds; ``gains`` per
  (setting != mono, modality) of the primary metric against mono of the
  same target modality, paired by seed (:func:`paired_t`) and by item
  (:func:`paired_bootstrap`, over the seeds both have: the per-seed
  differences are averaged on each resample).
  """
  by_ds: dict[str, list] = {}
  for r in results:
    by_ds.setdefault(r["dataset"], []).append(r)
  out = {}
  for ds, rs in sorted(by_ds.items()):
    task = _task(rs[0])
    primary = "uar" if task == "classification" else "ccc_mean"
    groups: dict[tuple[str, str], dict[int, Mapping]] = {}
    for r in rs:
      groups.setdefault((r["setting"], r["modality"]), {})[int(r["seed"])] = r
    order = {s: i for i, s in enumerate(("mono", "joint", "crossmodal", "emobed"))}
    keys = sorted(groups, key=lambda k: (k[1], order.get(k[0], 9), k[0]))
    cells = []
    for k in keys:
      g = groups[k]
      seeds = sorted(g)
      metrics = [m for m in METRIC_ORDER if m in g[seeds[0]]["metrics"]]
      row = {"setting": k[0], "modality": k[1], "seeds": seeds,
             "metrics": {m: summarize([g[s]["metrics"][m] for s in seeds]) for m in metrics}}
      if "metrics_per_recording_mean" in g[seeds[0]]:
        row["ccc_mean_per_recording_mean"] = summarize(
            [g[s]["metrics_per_recording_mean"]["ccc_mean"] for s in seeds])
      cells.append(row)
    gains = []
    for k in keys:
      if k[0] == "mono" or ("mono", k[1]) not in groups:
        continue
      g, base = groups[k], groups[("mono", k[1])]
      seeds = sorted(set(g) & set(base))
      if not seeds:
        continue
      row = {"setting": k[0], "modality": k[1], "metric": primary, "seeds": seeds,
             "t_test": paired_t([g[s]["metrics"][primary] for s in seeds],
                                [base[s]["metrics"][primary] for s in seeds])}
      ids, _ = item_scorer(g[seeds[0]])
      scorers = [(item_scorer(g[s])[1], item_scorer(base[s])[1]) for s in seeds]

      def diff(idx, ids=ids, scorers=scorers):
        return float(np.mean([a(ids, idx) - b(ids, idx) for a, b in scorers]))
      row["bootstrap"] = paired_bootstrap(diff, len(ids), n_resamples=n_resamples, seed=seed)
      row["bootstrap"]["items"] = ("recordings" if g[seeds[0]].get("per_recording")
                                   else "utterances")
      gains.append(row)
    out[ds] = {"task": task, "primary": primary, "cells": cells, "gains": gains,
               "protocol": protocol(rs)}
  return out


def protocol(rs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
  """What the numbers of one dataset's cells mean, read off their results."""
  r0 = rs[0]
  seeds = sorted({int(r["seed"]) for r in rs})
  p = {"dataset": r0["dataset"], "task": _task(r0), "eval_split": r0.get("eval_split"),
       "seeds": seeds, "model_selection": dict(r0.get("selection") or {}),
       "std": "sample standard deviation over seeds (ddof=1)",
       "ci": f"{LEVEL:.0%} Student-t interval of the mean over seeds",
       "paired_test": f"paired t-test across seeds (two-sided, scipy.stats.ttest_rel); "
                      f"weak with fewer than {WEAK_BELOW} seeds",
       "bootstrap": ("paired bootstrap over evaluation items, percentile interval; "
                     "its Δ is the item-level statistic (RECOLA: mean of per-recording "
                     "CCCs), not the table's concatenated CCC")}
  p["model_selection"].pop("best_val_ccc_mean", None)
  p["model_selection"].pop("best_val_uar", None)
  if p["task"] == "classification":
    p["metrics"] = ("accuracy, macro F1, UAR (unweighted average recall) over "
                    f"{r0.get('metric_granularity', 'utterance')}s; primary: UAR")
  elif r0.get("per_recording"):
    p["metrics"] = (f"CCC ({r0.get('ccc_granularity', 'concatenated')}: predictions and "
                    "gold of all evaluation recordings joined, then one CCC per "
                    "dimension); the bootstrap uses the per-recording CCC mean")
  else:
    p["metrics"] = f"CCC over {r0.get('ccc_granularity', 'utterance')}s"
  if r0.get("data", {}).get("utterances"):
    p["utterances_available"] = r0["data"]["utterances"]
  if r0.get("majority_baseline"):
    p["majority_baseline"] = r0["majority_baseline"]
  return p


# --- formatting -------------------------------------------------------------

def _f(x: Any, digits: int = 3) -> str:
  return "n/a" if x is None else f"{x:.{digits}f}"


def _p(x: Any, n_resamples: int | None = None) -> str:
  """A p-value; a bootstrap p of 0 is written ``< 1/n_resamples`` (its resolution)."""
  if x is None:
    return "n/a"
  if x == 0 and n_resamples:
    return f"< {1 / n_resamples:.1g}"
  return f"{x:.2g}" if x < 0.001 else f"{x:.3f}"


def _mean_std(s: Mapping[str, Any]) -> str:
  return _f(s["mean"]) + ("" if s["std"] is None else f" ± {_f(s['std'])}")


def _ci(s: Mapping[str, Any]) -> str:
  return "n/a" if s["ci_low"] is None else f"[{_f(s['ci_low'])}, {_f(s['ci_high'])}]"


def protocol_text(p: Mapping[str, Any]) -> str:
  sel = p.get("model_selection") or {}
  lines = [
      f"Protocol: {p['dataset']}, evaluated on the `{p['eval_split']}` split; {p['metrics']}.",
      f"Model selection: best checkpoint on `{sel.get('split', '?')}`"
      + (f" by {sel['metric']}" if sel.get("metric") else "") + ".",
      (f"Seeds: {', '.join(map(str, p['seeds']))} ({len(p['seeds'])}); mean ± "
      f"{p['std']}; {p['ci']}."),
      f"Gains: {p['paired_test']}; {p['bootstrap']}."]
  if p.get("utterances_available"):
    lines.append("Utterances available: " + ", ".join(
        f"{k} {v}" for k, v in p["utterances_available"].items()) + ".")
  if p.get("majority_baseline"):
    mb = p["majority_baseline"]
    lines.append("Majority-class baseline: " + ", ".join(
        f"{k} {_f(mb[k])}" for k in ("accuracy", "macro_f1", "uar") if k in mb) + ".")
  lines.append("These are numbers measured by this code; none of them is a number "
               "from the EmoBed paper.")
  return "\n".join(lines)


def results_markdown(ds: Mapping[str, Any]) -> str:
  metrics = [m for m in METRIC_ORDER if ds["cells"] and m in ds["cells"][0]["metrics"]]
  head = ["setting", "target", "seeds"] + [
      f"{METRIC_LABELS[m]} (mean ± std)" for m in metrics] + [
      f"{METRIC_LABELS[ds['primary']]} {LEVEL:.0%} CI"]
  rows = [[c["setting"], c["modality"], str(len(c["seeds"]))]
          + [_mean_std(c["metrics"][m]) for m in metrics] + [_ci(c["metrics"][ds["primary"]])]
          for c in ds["cells"]]
  return _md_table(head, rows) + "\n\n" + protocol_text(ds["protocol"]) + "\n"


def gains_markdown(ds: Mapping[str, Any]) -> str:
  label = METRIC_LABELS[ds["primary"]]
  head = ["setting", "target", f"Δ {label} vs mono", "paired t (df)", "p (t-test)",
          "bootstrap Δ [95% CI]", "p (bootstrap)", "note"]
  rows = []
  for g in ds["gains"]:
    t, b = g["t_test"], g["bootstrap"]
    rows.append([g["setting"], g["modality"], f"{t['mean_diff']:+.3f}",
                 f"{_f(t['t'], 2)} ({t['df']})", _p(t["p"]),
                 f"{b['estimate']:+.3f} " + (
                     "[n/a]" if b["ci_low"] is None
                     else f"[{b['ci_low']:+.3f}, {b['ci_high']:+.3f}]"),
                 _p(b["p"], b["n_resamples"]),
                 (f"weak: {t['n']} seeds < {WEAK_BELOW}; " if t["weak"] else "")
                 + f"{b['n_items']} {b['items']}, {b['n_resamples']} resamples"
                 + (f" (coarse: fewer than {FEW_ITEMS} {b['items']}; the bootstrap "
                    "understates the uncertainty)" if b["n_items"] < FEW_ITEMS else "")])
  return _md_table(head, rows) + "\n\n" + protocol_text(ds["protocol"]) + "\n"


def _md_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  lines += ["| " + " | ".join(r) + " |" for r in rows]
  return "\n".join(lines)


def results_csv(ds: Mapping[str, Any]) -> str:
  buf = io.StringIO()
  w = csv.writer(buf, lineterminator="\n")
  w.writerow(["setting", "modality", "seeds", "metric", "n", "mean", "std_ddof1",
              "ci95_low", "ci95_high"])
  for c in ds["cells"]:
    for m, s in c["metrics"].items():
      w.writerow([c["setting"], c["modality"], " ".join(map(str, c["seeds"])), m, s["n"],
                   s["mean"], _csv(s["std"]), _csv(s["ci_low"]), _csv(s["ci_high"])])
  return buf.getvalue()


def gains_csv(ds: Mapping[str, Any]) -> str:
  buf = io.StringIO()
  w = csv.writer(buf, lineterminator="\n")
  w.writerow(["setting", "modality", "metric", "seeds", "mean_diff", "t", "df", "p_t",
              "weak", "boot_items", "boot_n", "boot_ci95_low", "boot_ci95_high", "p_boot"])
  for g in ds["gains"]:
    t, b = g["t_test"], g["bootstrap"]
    w.writerow([g["setting"], g["modality"], g["metric"], " ".join(map(str, g["seeds"])),
                t["mean_diff"], _csv(t["t"]), t["df"], _csv(t["p"]), t["weak"],
                b["n_items"], b["n_resamples"], _csv(b["ci_low"]), _csv(b["ci_high"]), b["p"]])
  return buf.getvalue()


def _csv(x):
  return "" if x is None else x


# --- the RECOLA reference table ---------------------------------------------

#: Published RECOLA systems a reader may want beside ours.  Their numbers are
#: NOT included: none could be confirmed from a source readable while this was
#: written, and a wrong number would be worse than none.  Add them (or the
#: EmoBed paper's) with --reference=FILE.json.
REFERENCE_SOURCES = (
    ("AVEC 2016 baseline: M. Valstar et al., \"AVEC 2016 – Depression, Mood, and Emotion "
    "Recognition Workshop and Challenge\", Proc. AVEC'16 (ACM MM), 2016, arXiv:1605.01600 "
    "(per-modality SVR baselines on the same features, dev and test CCC)."),
    ("End2You: P. Tzirakis et al., \"End2You – The Imperial Toolkit for Multimodal Profiling "
    "by End-to-End Learning\", arXiv:1802.01115, 2018 (raw-signal models on RECOLA)."),
    ("SpeechBrain: M. Ravanelli et al., \"SpeechBrain: A General-Purpose Speech Toolkit\", "
    "arXiv:2106.04624, 2021 (check its recipes for a RECOLA one before citing numbers)."),
)


#: Published RECOLA numbers confirmed from their source (each with it): a
#: challenge entry fusing every modality, i.e. a different protocol from a
#: monomodal model at inference (theirs: AVEC 2016 features plus bottleneck
#: and text features, multimodal fusion; CCC as the challenge computed it).
PUBLISHED_POINTS = (
    {"system": "Povolný et al. 2016, AVEC 2016 entry: audio + video + physiology "
               "(+ ASR text) fusion", "split": "dev", "ccc_arousal": 0.855,
     "ccc_valence": 0.713},
    {"system": "Povolný et al. 2016, AVEC 2016 entry: audio + video + physiology "
               "(+ ASR text) fusion", "split": "test", "ccc_arousal": 0.719,
     "ccc_valence": 0.596},
)
PUBLISHED_SOURCE = ("F. Povolný, P. Matějka, M. Hradiš, A. Popková, L. Otrusina, P. Smrž, "
                    "I. Wood, C. Robin, L. Lamel, \"Multimodal Emotion Recognition for AVEC "
                    "2016 Challenge\", Proc. AVEC'16 (ACM MM), 2016 — numbers from its abstract")


def read_reference(path: str | Path) -> dict[str, Any]:
  """A user's reference numbers (docs/RESULTS.md, "Reference numbers")::

      {"name": "EmoBed paper, Table 3", "source": "Han et al., IEEE TAC 2021",
       "protocol": "test split, ...",
       "rows": [{"setting": "emobed", "modality": "audio",
                 "metrics": {"ccc_arousal": 0.0, "ccc_valence": 0.0}}]}

  Raises:
    ReportError: not JSON or another shape (names the file and what was expected).
  """
  path = Path(path)
  try:
    ref = json.loads(path.read_text())
  except (OSError, json.JSONDecodeError) as e:
    raise ReportError(f"--reference={path}: cannot read it as JSON ({e})") from None
  ok = (isinstance(ref, dict) and isinstance(ref.get("name"), str)
        and isinstance(ref.get("source"), str) and isinstance(ref.get("rows"), list)
        and all(isinstance(r, dict) and {"setting", "modality", "metrics"} <= set(r)
                and all(isinstance(v, (int, float)) for v in r["metrics"].values())
                for r in ref["rows"]))
  if not ok:
    raise ReportError(f"--reference={path}: expected {{\"name\": str, \"source\": str, "
                      "\"rows\": [{\"setting\", \"modality\", \"metrics\": {name: "
                      "number}}]}} (docs/RESULTS.md)")
  return ref


def reference_markdown(ds: Mapping[str, Any], ref: Mapping[str, Any] | None) -> str:
  """Ours beside the user's reference column (if any), and the published
  reference points, named and cited, without numbers (see
  :data:`REFERENCE_SOURCES`)."""
  metrics = ["ccc_arousal", "ccc_valence", "ccc_mean"]
  refrows = {(r["setting"], r["modality"]): r["metrics"] for r in (ref or {}).get("rows", [])}
  head = ["setting", "target"] + [f"ours: {METRIC_LABELS[m]}" for m in metrics]
  if ref:
    head += [f"{ref['name']}: {METRIC_LABELS[m]}" for m in metrics]
  rows = []
  keys = [(c["setting"], c["modality"]) for c in ds["cells"]]
  keys += [k for k in refrows if k not in keys]
  cells = {(c["setting"], c["modality"]): c for c in ds["cells"]}
  for k in keys:
    c = cells.get(k)
    row = list(k) + [_mean_std(c["metrics"][m]) if c and m in c["metrics"] else "—"
                     for m in metrics]
    if ref:
      row += [_f(refrows[k][m]) if k in refrows and m in refrows[k] else "—" for m in metrics]
    rows.append(row)
  text = _md_table(head, rows) + "\n\n"
  if ref:
    text += (f"Reference column \"{ref['name']}\": {ref['source']}"
             + (f"; its protocol: {ref['protocol']}" if ref.get("protocol") else "")
             + ". Supplied with --reference by the user; a different protocol from ours "
               "unless stated.\n\n")
  text += ("Published RECOLA numbers, confirmed from their source (a different "
           "protocol: multimodal fusion at inference, other features and models):\n\n"
           + _md_table(["system", "split", "CCC arousal", "CCC valence"],
                       [[p["system"], p["split"], _f(p["ccc_arousal"]), _f(p["ccc_valence"])]
                        for p in PUBLISHED_POINTS])
           + f"\n\nSource: {PUBLISHED_SOURCE}.\n\n")
  text += ("Other published RECOLA reference points (different protocols: other features, "
           "models, splits or CCC granularity; their numbers are not reproduced here "
           "because none could be confirmed from a source readable when this table was "
           "written; add them with --reference):\n\n"
           + "\n".join(f"- {s}" for s in REFERENCE_SOURCES) + "\n\n")
  return text + protocol_text(ds["protocol"]) + "\n"


# --- writing ----------------------------------------------------------------

def write_tables(agg: Mapping[str, Any], out_dir: str | Path,
                 reference: Mapping[str, Any] | None = None) -> list[Path]:
  """``<out_dir>/<dataset>_{results,gains}.{md,csv}``, ``<dataset>_reference.md``
  (RECOLA-format datasets), ``summary.json`` (everything) and ``tables.md``
  (all Markdown tables in one file).  Returns the paths written."""
  out_dir = Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  written, md_all = [], []
  for name, ds in agg.items():
    files = {f"{name}_results.md": results_markdown(ds), f"{name}_results.csv": results_csv(ds),
             f"{name}_gains.md": gains_markdown(ds), f"{name}_gains.csv": gains_csv(ds)}
    md_all += [f"## {name}: results\n\n" + files[f"{name}_results.md"],
               f"## {name}: gain over mono\n\n" + files[f"{name}_gains.md"]]
    if name in ("recola", "demo"):
      files[f"{name}_reference.md"] = reference_markdown(ds, reference)
      md_all.append(f"## {name}: beside reference points\n\n" + files[f"{name}_reference.md"])
    for fname, text in files.items():
      (out_dir / fname).write_text(text)
      written.append(out_dir / fname)
  (out_dir / "tables.md").write_text("\n".join(md_all))
  (out_dir / "summary.json").write_text(json.dumps(agg, indent=1, sort_keys=True) + "\n")
  return written + [out_dir / "tables.md", out_dir / "summary.json"]
