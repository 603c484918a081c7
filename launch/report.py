r"""(Re)draw a grid's tables, statistics, pictures and TensorBoard HParams from
its finished workdirs, without training (launch/reproduce.py ends with the same).

  python launch/report.py --grid_dir=runs/grid
  python launch/report.py --grid_dir=runs/grid --reference=paper.json   # add a column
  tensorboard --logdir=runs/grid                                         # HParams tab

Writes <grid_dir>/tables/ (Markdown, CSV, JSON), <grid_dir>/figures/ (PNG) and
<grid_dir>/hparams/ (docs/RESULTS.md).  Cells without results.json are left
out.  Errors are one "error: ..." line, exit 1 (2 for a malformed flag).
"""

from __future__ import annotations

from pathlib import Path

import _cli  # noqa: F401  (first: the sys.path guard)
from absl import flags

FLAGS = _cli.script_flags()
flags.DEFINE_string("grid_dir", "runs/grid", "The grid's root (launch/reproduce.py "
                    "--grid_dir).", flag_values=FLAGS)
flags.DEFINE_string("reference", "", "JSON file of reference numbers to place beside "
                    "ours (format: docs/RESULTS.md, 'Reference numbers').", flag_values=FLAGS)
flags.DEFINE_bool("figures", True, "Draw the PNGs.", flag_values=FLAGS)
flags.DEFINE_bool("model_figures", True, "Draw the pictures that run the models (traces, "
                  "embeddings); they restore checkpoints and read the corpus.",
                  flag_values=FLAGS)
flags.DEFINE_integer("bootstrap_resamples", 5000, "Resamples of the paired bootstrap.",
                     flag_values=FLAGS)


def main(argv: list[str]) -> None:
  _cli.start(argv, FLAGS)
  grid_dir = Path(FLAGS.grid_dir)
  if not grid_dir.is_dir():
    _cli.fail(f"--grid_dir={grid_dir}: no such folder", 2)
  try:
    from emobed_jax import grid_report  # noqa: PLC0415  (JAX: after flag parsing)
  except ImportError as e:  # matplotlib missing: the module's message names the extra
    _cli.fail(e)
  try:
    written = grid_report.make_report(
        grid_dir, reference=FLAGS.reference or None, figures=FLAGS.figures,
        model_figures=FLAGS.model_figures, n_resamples=FLAGS.bootstrap_resamples)
  except grid_report.ReportError as e:
    _cli.fail(e)
  except ImportError as e:
    _cli.fail(e)
  for p in written:
    if p.suffix in (".md", ".png"):
      _cli.say(f"wrote {p}")
  _cli.say(f"report: {len(written)} files and folders under {grid_dir}")


if __name__ == "__main__":
  _cli.run_script(main, FLAGS)
