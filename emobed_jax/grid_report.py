"""Tables, pictures and TensorBoard HParams of a grid, from its finished
workdirs (``launch/report.py``; ``launch/reproduce.py`` calls the same).

Writes under ``<grid_dir>``::

    tables/   <dataset>_{results,gains}.{md,csv}, <dataset>_reference.md,
              tables.md, summary.json            (emobed_jax.grid_stats)
    figures/  <dataset>_bars.png, <dataset>_curves.png, <dataset>_traces.png,
              <dataset>_embeddings.png, <dataset>_confusion.png (OMG)
    hparams/<dataset>/<setting>-<modality>/seed_<k>/   one HParams session per cell

Traces and embeddings restore checkpoints and run the model (JAX), on the
first target modality and the smallest seed that every setting has.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emobed_jax import grid_stats
from emobed_jax.grid_stats import ReportError

__all__ = ["ReportError", "make_report", "write_hparams"]


def make_report(grid_dir: str | Path, *, reference: str | Path | None = None,
                figures: bool = True, model_figures: bool = True, hparams: bool = True,
                n_resamples: int = 5000) -> list[Path]:
  """(Re)write the grid's tables, pictures and HParams; returns the paths written.

  Raises:
    ReportError: no finished cell, a malformed results file or reference
      file (the message names it).
    ImportError: matplotlib is missing (``pip install -e ".[audio]"``).
  """
  grid_dir = Path(grid_dir)
  results = grid_stats.load_results(grid_dir)
  ref = grid_stats.read_reference(reference) if reference else None
  agg = grid_stats.aggregate(results, n_resamples=n_resamples)
  written = grid_stats.write_tables(agg, grid_dir / "tables", ref)
  if hparams:
    written += write_hparams(results, grid_dir / "hparams")
  if figures:
    written += draw_figures(grid_dir, results, agg, model_figures=model_figures)
  return written


# --- TensorBoard HParams ----------------------------------------------------

def _flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  out = {}
  for k, v in d.items():
    if isinstance(v, Mapping):
      out.update(_flat(v, f"{prefix}{k}."))
    elif isinstance(v, (bool, int, float, str)):
      out[prefix + k] = v
    elif isinstance(v, (list, tuple)):
      out[prefix + k] = ",".join(map(str, v))
  return out


def hparams_of(results: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, float]]:
  """A cell's hyper-parameters (its config.json, flattened: ``optim.learning_rate``,
  plus ``setting``, ``modality``, ``seed``) and final metrics
  (``hparam/<metric>`` of results.json, and ``hparam/best_val_<metric>``)."""
  wd = Path(results["_workdir"])
  cfg = json.loads((wd / "config.json").read_text()) if (wd / "config.json").exists() else {}
  cfg.pop("provenance", None)
  h = {"dataset": results["dataset"], "setting": results["setting"],
       "modality": results["modality"], "seed": int(results["seed"])}
  h.update({k: v for k, v in _flat(cfg).items() if k not in ("seed",) and
            not k.endswith(("data_dir", "manual_dir"))})
  m = {f"hparam/{k}": float(v) for k, v in results["metrics"].items()
       if isinstance(v, (int, float))}
  for k, v in (results.get("selection") or {}).items():
    if k.startswith("best_val_") and isinstance(v, (int, float)):
      m[f"hparam/{k}"] = float(v)
  return h, m


def write_hparams(results: Sequence[Mapping[str, Any]], out_dir: str | Path) -> list[Path]:
  """One TensorBoard HParams session per finished cell in
  ``<out_dir>/<dataset>/<setting>-<modality>/seed_<k>/`` (replaced if there),
  via ``tensorboardX.summary.hparams``: ``tensorboard --logdir=<grid_dir>``
  then lists the cells in its HParams tab."""
  from tensorboardX import SummaryWriter  # noqa: PLC0415
  from tensorboardX.summary import hparams  # noqa: PLC0415
  out_dir = Path(out_dir)
  written = []
  for r in results:
    d = out_dir / r["dataset"] / f"{r['setting']}-{r['modality']}" / f"seed_{r['seed']}"
    if d.exists():
      shutil.rmtree(d)  # our own folder: a rerun replaces the session, never duplicates it
    h, m = hparams_of(r)
    exp, ssi, sei = hparams(h, m)
    w = SummaryWriter(logdir=str(d))
    try:
      for s in (exp, ssi, sei):
        w.file_writer.add_summary(s)
      for k, v in m.items():
        w.add_scalar(k, v, int(r.get("best_step") or 0))
    finally:
      w.close()
    written.append(d)
  return written


# --- pictures ---------------------------------------------------------------

def draw_figures(grid_dir: Path, results: Sequence[Mapping[str, Any]],
                 agg: Mapping[str, Any], *, model_figures: bool = True) -> list[Path]:
  from emobed_jax import (
    figures,  # noqa: PLC0415  (matplotlib: optional)
    writers,  # noqa: PLC0415
  )
  out = grid_dir / "figures"
  written = []
  for name, ds in agg.items():
    rs = [r for r in results if r["dataset"] == name]
    primary = ds["primary"]
    per_seed = {}
    for r in rs:
      per_seed.setdefault((r["setting"], r["modality"]), []).append(r["metrics"][primary])
    seeds = ds["protocol"]["seeds"]
    tag = f"{name}, {len(seeds)} seed{'s' * (len(seeds) > 1)}"
    written.append(figures.bar_chart(
        {**ds, "_per_seed": per_seed}, out / f"{name}_bars.png",
        f"{name}: {primary} on {ds['protocol']['eval_split']} by setting and target "
        f"modality ({tag}; bars: mean, whiskers: 95% t CI, dots: seeds)"))
    curves = [{"setting": r["setting"], "modality": r["modality"], "seed": r["seed"],
               "records": writers.read_jsonl(Path(r["_workdir"]) / "metrics.jsonl")}
              for r in rs if (Path(r["_workdir"]) / "metrics.jsonl").exists()]
    if curves:
      val = "uar" if primary == "uar" else "ccc_mean"
      written.append(figures.curves(curves, out / f"{name}_curves.png",
                                    f"{name}: training curves of every cell ({tag})", val))
    if ds["task"] == "classification":
      written += _confusions(rs, out / f"{name}_confusion.png", name)
      if model_figures:
        written += _utterance_embedding_figure(rs, out, name)
    elif model_figures and any(r.get("per_recording") for r in rs):
      written += _model_figures(rs, out, name)
  return written


def _confusions(rs, path: Path, name: str) -> list[Path]:
  from emobed_jax import figures  # noqa: PLC0415
  rs = [r for r in rs if r.get("confusion")]
  if not rs:
    return []
  mats = {}
  for r in rs:
    key = (r["setting"], r["modality"])
    mats[key] = mats.get(key, 0) + np.asarray(r["confusion"], np.int64)
  order = {s: i for i, s in enumerate(("mono", "joint", "crossmodal", "emobed"))}
  keys = sorted(mats, key=lambda k: (k[1], order.get(k[0], 9), k[0]))
  panels = [{"title": f"{s}, target {m} ({rs[0]['eval_split']})", "counts": mats[s, m]}
            for s, m in keys]
  return [figures.confusion(panels, rs[0].get("class_names") or [
      str(i) for i in range(len(rs[0]["confusion"]))], path,
      f"{name}: confusion matrices, counts summed over seeds, colour = share of the gold row")]


def _choose(rs, modality=None):
  """The first target modality and the smallest seed every setting has there."""
  mods = list(dict.fromkeys(r["modality"] for r in rs))
  modality = modality or mods[0]
  by = {}
  for r in rs:
    if r["modality"] == modality:
      by.setdefault(int(r["seed"]), {})[r["setting"]] = r
  full = [s for s in sorted(by) if len(by[s]) == max(len(v) for v in by.values())]
  return modality, by[full[0]]


def _model_figures(rs, out: Path, name: str) -> list[Path]:
  from emobed_jax import figures  # noqa: PLC0415
  written = []
  modality, cells = _choose(rs)
  order = [s for s in ("mono", "joint", "crossmodal", "emobed") if s in cells]
  seed = cells[order[0]]["seed"]
  runs = [cell_trace(Path(cells[s]["_workdir"])) for s in order]
  rec = runs[0]["recording"]
  written.append(figures.traces(runs, out / f"{name}_traces.png",
                                f"{name}: predicted vs gold on {rec} (target {modality}, "
                                f"seed {seed}, best checkpoint; CCC of this recording)"))
  if "mono" in cells and ("emobed" in cells or "crossmodal" in cells):
    other = "emobed" if "emobed" in cells else "crossmodal"
    panels = [cell_embeddings(Path(cells["mono"]["_workdir"])),
              cell_embeddings(Path(cells[other]["_workdir"]))]
    written.append(figures.embeddings(
        panels, out / f"{name}_embeddings.png",
        f"{name}: 2-D PCA of 2-s segment representations of the "
        f"{cells['mono']['eval_split']} recordings (target {modality}, seed {seed}; each "
        "panel its own PCA), colour: arousal bin of the segment (training-label tertiles)"))
  return written


def _utterance_embedding_figure(rs, out: Path, name: str) -> list[Path]:
  """OMG-Emotion: utterance embeddings of mono and EmoBed (or crossmodal)
  side by side, coloured by class."""
  from emobed_jax import figures  # noqa: PLC0415
  modality, cells = _choose(rs)
  if "mono" not in cells or not ({"emobed", "crossmodal"} & set(cells)):
    return []
  other = "emobed" if "emobed" in cells else "crossmodal"
  dirs = [Path(cells[s]["_workdir"]) for s in ("mono", other)]
  if not all((d / "checkpoints").is_dir() for d in dirs):  # results.json alone: no model
    return []
  panels = [cell_utterance_embeddings(d) for d in dirs]
  return [figures.embeddings(
      panels, out / f"{name}_embeddings.png",
      f"{name}: 2-D PCA of utterance representations of the {cells['mono']['eval_split']} "
      f"split (target {modality}, seed {cells['mono']['seed']}; each panel its own PCA), "
      "colour: gold class")]


# --- running a cell's model (JAX) -------------------------------------------

@dataclasses.dataclass
class _Cell:
  config: Any
  stats: dict
  model: Any
  params: Any


def restore_cell(workdir: Path) -> _Cell:
  """A finished cell's config, stats, model and best parameters (all branches)."""
  from emobed_jax.predict import restore_run  # noqa: PLC0415
  return _Cell(*restore_run(workdir, best=True))


def _eval_recordings(cell: _Cell, with_aux: bool):
  """The evaluation split's recordings, standardised and aligned as in training."""
  from emobed_jax import input_pipeline  # noqa: PLC0415
  d = cell.config.data
  tfds_dir = input_pipeline.resolve_prepared_dir(d)
  recs = input_pipeline.load_recordings(tfds_dir, d.eval_split, d, with_aux=with_aux,
                                        with_labels=True)
  std = input_pipeline.Standardizer.from_json(cell.stats["standardizer"])
  full = {r.name: r.labels for r in recs}
  return [input_pipeline.align(std.apply(r), d.delay_frames, d.frame_step)
          for r in sorted(recs, key=lambda r: r.name)], full


def cell_trace(workdir: Path) -> dict[str, Any]:
  """Predictions of a cell's best checkpoint (target branch alone) on its
  first evaluation recording (by name), at the full frame rate."""
  from emobed_jax import input_pipeline, models  # noqa: PLC0415
  cell = restore_cell(workdir)
  recs, full = _eval_recordings(cell, with_aux=False)
  rec = recs[0]
  x = rec.target[None]
  pred = np.asarray(cell.model.apply({"params": cell.params}, x, np.ones(x.shape[:2], np.float32),
                                     method=models.EmoBed.predict))[0]
  gold = full[rec.name]
  pred = input_pipeline.upsample(pred, cell.config.data.frame_step, gold.shape[0])
  dims = list(cell.config.data.dimensions)
  setting = cell.config.core.task.setting
  return {"label": setting, "setting": setting, "recording": rec.name, "pred": pred,
          "gold": gold, "dims": dims, "frame_s": 0.04,
          "ccc": [grid_stats._ccc(pred[:, j].astype(np.float64), gold[:, j].astype(np.float64))
                  for j in range(len(dims))]}


def cell_embeddings(workdir: Path, max_points: int = 600) -> dict[str, Any]:
  """Segment embeddings of a cell on its evaluation recordings: in the shared
  space (``target_embed`` / ``aux_embed`` of masked-mean-pooled segments,
  both modalities) when the setting has one, else the target encoder's
  pooled states (mono, joint: no shared space; target modality only).
  Coloured by the arousal bin (``stats.json`` bin edges) of the segment's
  mean gold arousal."""
  from emobed_jax import models  # noqa: PLC0415
  cell = restore_cell(workdir)
  parts = cell.config.core.task.parts
  shared = bool(parts["triplet"])
  recs, _ = _eval_recordings(cell, with_aux=shared)
  seg = cell.config.core.loss.triplet_segment
  setting = cell.config.core.task.setting
  d = cell.config.data
  points: dict[str, list] = {}
  colour: dict[str, list] = {}
  edges = np.asarray(cell.stats["bin_edges"], np.float64)[0]

  def encode(m, x, mask, which):
    enc = m.target_encoder if which == "target" else m.aux_encoder
    h = enc(x, mask)
    if shared:
      proj = m.target_embed if which == "target" else m.aux_embed
      return m._embed(proj, h, mask)
    return models.segment_pool(h, mask, seg)

  for rec in recs:
    n = rec.labels.shape[0]
    s = -(-n // seg)
    lab = np.pad(rec.labels[:, 0].astype(np.float64), (0, s * seg - n), constant_values=np.nan)
    seg_lab = np.nanmean(lab.reshape(s, seg), axis=1)
    bins = np.digitize(seg_lab, edges)
    for which, x in (("target", rec.target), ("aux", rec.aux)):
      if x is None or (which == "aux" and not shared):
        continue
      mask = np.ones((1, x.shape[0]), np.float32)
      e, valid = cell.model.apply({"params": cell.params}, x[None], mask, which,
                                  method=encode)
      e, valid = np.asarray(e), np.asarray(valid) > 0
      mod = d.modality if which == "target" else d.aux_modality
      points.setdefault(mod, []).append(e[valid])
      colour.setdefault(mod, []).append(bins[valid])
  rng = np.random.default_rng(0)
  pts, cols = {}, {}
  for mod, chunks in points.items():
    p, c = np.concatenate(chunks), np.concatenate(colour[mod])
    keep = np.sort(rng.permutation(len(p))[:max_points])
    pts[mod], cols[mod] = p[keep], c[keep]
  k = len(edges) + 1
  names = ["low", "mid", "high"] if k == 3 else [f"bin {i}" for i in range(k)]
  what = ("the shared embedding space (target_embed / aux_embed)" if shared else
          "the target encoder's pooled states")
  title = (f"{setting}: shared embedding space, both modalities" if shared else
           f"{setting}: no shared space; target encoder's pooled states ({d.modality} only)")
  return {"title": title, "points": pts, "colour": cols, "colour_names": names,
          "what": what}


def cell_utterance_embeddings(workdir: Path) -> dict[str, Any]:
  """Utterance embeddings of an OMG-Emotion cell on its evaluation split: in
  the shared space (``target_embed`` / ``aux_embed`` of the masked mean over
  the utterance, both modalities) when the setting has one, else the target
  encoder's masked-mean states (target modality only).  Coloured by the
  gold class (``emobed_datasets.omg_emotion.CLASS_NAMES``)."""
  from emobed_datasets.omg_emotion import CLASS_NAMES  # noqa: PLC0415

  from emobed_jax import input_pipeline, models, utterances  # noqa: PLC0415
  cell = restore_cell(workdir)
  shared = bool(cell.config.core.task.parts["triplet"])
  d = cell.config.data
  utts = utterances.load_utterances(input_pipeline.resolve_prepared_dir(d), d.eval_split, d,
                                    with_aux=shared)
  std = input_pipeline.Standardizer.from_json(cell.stats["standardizer"])
  utts = [utterances.standardize(u, std) for u in utts]
  labels = np.asarray([u.label for u in utts])

  def encode(m, x, mask, which):
    h = (m.target_encoder if which == "target" else m.aux_encoder)(x, mask)
    if shared:
      return m._embed(m.target_embed if which == "target" else m.aux_embed, h, mask)
    return models.masked_mean(h, mask), (mask.sum(1) > 0).astype(np.float32)

  points, colour = {}, {}
  for which in ("target", "aux") if shared else ("target",):
    us = utts if which == "target" else [
        dataclasses.replace(u, target=u.aux, target_mask=u.aux_mask) for u in utts]
    emb = np.zeros((len(us), 0), np.float32)
    ok = np.zeros(len(us), bool)
    for idx, arrays in utterances.eval_batches(us, 1, cell.config.data.length_buckets):
      x, mask = arrays["target"][0], arrays["mask"][0]
      e, valid = cell.model.apply({"params": cell.params}, x, mask, which, method=encode)
      e, valid = np.asarray(e)[:len(idx)], np.asarray(valid)[:len(idx)] > 0
      if emb.shape[1] == 0:
        emb = np.zeros((len(us), e.shape[1]), np.float32)
      emb[idx], ok[idx] = e, valid
    mod = d.modality if which == "target" else d.aux_modality
    points[mod], colour[mod] = emb[ok], labels[ok]
  setting = cell.config.core.task.setting
  title = (f"{setting}: shared embedding space, both modalities" if shared else
           f"{setting}: no shared space; target encoder's pooled states ({d.modality} only)")
  return {"title": title, "points": points, "colour": colour,
          "colour_names": list(CLASS_NAMES), "what": "utterances"}
