"""Pictures of a grid (PNG, matplotlib with the headless Agg backend).

Each function draws from plain arrays / dicts (no JAX) and writes one PNG;
:mod:`emobed_jax.grid_report` gathers the data.  matplotlib is an optional
dependency (``pip install -e ".[audio]"``): importing this module without it
raises :class:`ImportError` with that command.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

try:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
except ImportError as e:  # pragma: no cover  (matplotlib is in the test extra)
  raise ImportError("the grid's pictures need matplotlib: pip install -e \".[audio]\"") from e

SETTING_COLORS = {"mono": "#7f7f7f", "joint": "#1f77b4", "crossmodal": "#ff7f0e",
                  "emobed": "#2ca02c"}
DPI = 90


def _save(fig, path: Path) -> Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=DPI, bbox_inches="tight")
  plt.close(fig)
  return path


def bar_chart(ds: Mapping[str, Any], path: Path, title: str) -> Path:
  """Settings x target modality: mean of the primary metric over seeds, error
  bars the 95% t interval (none with one seed), the seeds as dots."""
  cells = ds["cells"]
  modalities = list(dict.fromkeys(c["modality"] for c in cells))
  settings = list(dict.fromkeys(c["setting"] for c in cells))
  by = {(c["setting"], c["modality"]): c for c in cells}
  primary = ds["primary"]
  width = 0.8 / max(len(settings), 1)
  fig, ax = plt.subplots(figsize=(1.6 + 1.9 * len(modalities), 3.2))
  for i, s in enumerate(settings):
    xs, means, err = [], [], [[], []]
    for j, m in enumerate(modalities):
      c = by.get((s, m))
      if c is None:
        continue
      st = c["metrics"][primary]
      x = j + (i - (len(settings) - 1) / 2) * width
      xs.append(x)
      means.append(st["mean"])
      err[0].append(0 if st["ci_low"] is None else st["mean"] - st["ci_low"])
      err[1].append(0 if st["ci_high"] is None else st["ci_high"] - st["mean"])
      seeds = ds.get("_per_seed", {}).get((s, m), [])
      ax.scatter([x] * len(seeds), seeds, s=9, color="black", zorder=3)
    ax.bar(xs, means, width * 0.95, yerr=err, capsize=3, label=s,
           color=SETTING_COLORS.get(s), alpha=0.85)
  ax.set_xticks(range(len(modalities)))
  ax.set_xticklabels([f"target {m}" for m in modalities])
  ax.set_ylabel(f"{primary} ({ds['protocol']['eval_split']})")
  ax.axhline(0, color="black", lw=0.6)
  ax.set_title(textwrap.fill(title, 70), fontsize=8)
  ax.legend(fontsize=7, ncol=2)
  return _save(fig, path)


def traces(runs: Sequence[Mapping[str, Any]], path: Path, title: str) -> Path:
  """Predicted vs gold arousal/valence over one recording, one row per setting.

  ``runs``: ``{"label", "pred" [N, D], "gold" [N, D], "dims", "frame_s"}``."""
  dims = runs[0]["dims"]
  fig, axes = plt.subplots(len(runs), len(dims), figsize=(4.2 * len(dims), 1.7 * len(runs)),
                           squeeze=False, sharex=True)
  for i, r in enumerate(runs):
    t = np.arange(r["gold"].shape[0]) * r["frame_s"]
    for j, d in enumerate(dims):
      ax = axes[i, j]
      ax.plot(t, r["gold"][:, j], color="black", lw=1, label="gold")
      ax.plot(t, r["pred"][:, j], color=SETTING_COLORS.get(r["setting"], "C0"), lw=1,
              label="predicted")
      ax.set_title(f"{r['label']}: {d} (CCC {r['ccc'][j]:.2f})", fontsize=8)
      if i == len(runs) - 1:
        ax.set_xlabel("time (s)")
  axes[0, 0].legend(fontsize=7)
  fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  return _save(fig, path)


def pca_2d(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Rows of ``x [N, F]`` projected on their first two principal components
  (numpy SVD of the centred data; sklearn is not a dependency for one SVD).
  Returns (``[N, 2]``, explained variance ratio ``[2]``)."""
  x = np.asarray(x, np.float64)
  xc = x - x.mean(0)
  _, s, vt = np.linalg.svd(xc, full_matrices=False)
  var = s ** 2
  return xc @ vt[:2].T, var[:2] / var.sum()


def embeddings(panels: Sequence[Mapping[str, Any]], path: Path, title: str) -> Path:
  """2-D PCA side by side. ``panels``: ``{"title", "points": {modality: [N, F]},
  "colour": {modality: [N] int}, "colour_names": [...]}``; each panel's
  points of all its modalities are projected together."""
  markers = ["o", "^", "s", "x"]
  fig, axes = plt.subplots(1, len(panels), figsize=(4.3 * len(panels), 4), squeeze=False)
  for ax, p in zip(axes[0], panels):
    mods = list(p["points"])
    allx = np.concatenate([p["points"][m] for m in mods])
    z, ratio = pca_2d(allx)
    start = 0
    # ordered bins: a sequential map; classes (OMG-Emotion): distinct colours
    cmap = (plt.get_cmap("tab10") if len(p["colour_names"]) > 3
            else plt.get_cmap("viridis", max(len(p["colour_names"]), 2)))
    for k, m in enumerate(mods):
      n = p["points"][m].shape[0]
      zz, col = z[start:start + n], p["colour"][m]
      start += n
      for c, cname in enumerate(p["colour_names"]):
        sel = col == c
        if np.any(sel):
          ax.scatter(zz[sel, 0], zz[sel, 1], s=10, marker=markers[k % len(markers)],
                     color=cmap(c), alpha=0.6,
                     label=f"{m}, {cname}" if len(mods) > 1 else cname)
    ax.set_title(p["title"], fontsize=8)
    ax.set_xlabel(f"PC1 ({ratio[0]:.0%})")
    ax.set_ylabel(f"PC2 ({ratio[1]:.0%})")
    ax.legend(fontsize=6, markerscale=1.5)
  fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  return _save(fig, path)


def curves(cells: Sequence[Mapping[str, Any]], path: Path, title: str, val_metric: str) -> Path:
  """Training curves of every cell: train loss (top) and the validation
  metric (bottom) against the step, one column per target modality, colour
  by setting, one line per seed.  ``cells``: ``{"setting", "modality",
  "seed", "records": metrics.jsonl records}``; the loss drawn is the
  target task's (``task_target``) where logged."""
  modalities = list(dict.fromkeys(c["modality"] for c in cells))
  fig, axes = plt.subplots(2, len(modalities), figsize=(4.5 * len(modalities), 5.2),
                           squeeze=False, sharex="col")
  seen = set()
  # The target task's loss: the total adds other terms per setting (auxiliary
  # task, triplet), so only the target term compares across settings.
  key = "task_target" if any("task_target" in r for c in cells for r in c["records"]) else "loss"
  for c in cells:
    j = modalities.index(c["modality"])
    tr = [r for r in c["records"] if r.get("split") == "train" and key in r]
    va = [r for r in c["records"] if r.get("split") == "val" and val_metric in r]
    label = c["setting"] if (c["setting"], j) not in seen else None
    seen.add((c["setting"], j))
    kw = {"color": SETTING_COLORS.get(c["setting"]), "lw": 0.9, "alpha": 0.8}
    axes[0, j].plot([r["step"] for r in tr], [r[key] for r in tr], label=label, **kw)
    axes[1, j].plot([r["step"] for r in va], [r[val_metric] for r in va], **kw)
  for j, m in enumerate(modalities):
    axes[0, j].set_title(f"target {m}: training loss ({key})", fontsize=8)
    axes[1, j].set_title(f"target {m}: validation {val_metric}", fontsize=8)
    axes[1, j].set_xlabel("step")
    axes[0, j].legend(fontsize=7)
  fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  return _save(fig, path)


def confusion(mats: Sequence[Mapping[str, Any]], class_names: Sequence[str], path: Path,
              title: str) -> Path:
  """Confusion matrices (rows gold, columns predicted), normalised per gold
  row, counts summed over seeds.  ``mats``: ``{"title", "counts" [K, K]}``."""
  fig, axes = plt.subplots(1, len(mats), figsize=(3.6 * len(mats), 3.6), squeeze=False)
  for ax, m in zip(axes[0], mats):
    cnt = np.asarray(m["counts"], np.float64)
    rows = cnt.sum(1, keepdims=True)
    norm = np.divide(cnt, rows, out=np.zeros_like(cnt), where=rows > 0)
    ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
    k = len(class_names)
    ax.set_xticks(range(k))
    ax.set_xticklabels(class_names, rotation=90, fontsize=6)
    ax.set_yticks(range(k))
    ax.set_yticklabels(class_names, fontsize=6)
    for a in range(k):
      for b in range(k):
        ax.text(b, a, f"{int(cnt[a, b])}", ha="center", va="center", fontsize=5,
                color="white" if norm[a, b] > 0.5 else "black")
    ax.set_title(m["title"], fontsize=8)
    ax.set_xlabel("predicted", fontsize=7)
    ax.set_ylabel("gold", fontsize=7)
  fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  return _save(fig, path)
