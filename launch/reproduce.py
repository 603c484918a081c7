r"""Reproduce the experiments with one command: every setting x target modality x
seed, each a launch/train.py run, then tables, statistics, pictures and
TensorBoard HParams (launch/report.py draws the same from finished workdirs).

  python launch/reproduce.py --dataset=demo                      # 4 x 2 x 3 cells
  python launch/reproduce.py --dataset=recola --seeds=5 --parallel=1
  python launch/reproduce.py --dataset=demo --dry_run            # list cells, run nothing
  python launch/reproduce.py --dataset=demo --epochs=5 --hidden=32   # train.py flags pass through

Every flag that is not one of this script's own (below) is passed to every
cell's launch/train.py, after the dataset's flagfiles (demo: demo.flags then
grid_demo.flags; recola: recola.flags; omg/demo_omg: <dataset>.flags if it
exists), and is checked with launch/train.py's own parser before anything
runs.  --setting, --modality, --seed, --workdir and --cpu_devices belong to
the grid.  Workdirs: <grid_dir>/<dataset>/<setting>-<modality>/seed_<k>/
(log: seed_<k>.log beside it).  Finished cells are skipped, interrupted ones
resumed; Ctrl-C or SIGTERM stops the running cells at their next step with a
checkpoint (exit 75) and the same command resumes.  Exit status: 0 all cells
done, 1 a cell failed (named), 2 a flag error, 75 interrupted.
"""

from __future__ import annotations

import importlib.util
import signal
import sys
from pathlib import Path

import _cli  # noqa: F401  (first: the sys.path guard)
from absl import flags

from emobed_jax import config as C
from emobed_jax import grid

FLAGS = _cli.script_flags()
flags.DEFINE_enum("dataset", "demo", list(C.DATASETS), "Corpus of the grid.",
                  flag_values=FLAGS)
flags.DEFINE_string("seeds", "3", "Seeds: a count N (seeds 0..N-1) or a comma-separated "
                    "list of seeds (e.g. 0,1,2,7).", flag_values=FLAGS)
flags.DEFINE_list("settings", list(grid.SETTINGS), "Settings to train (mono is the "
                  "baseline every gain is measured against).", flag_values=FLAGS)
flags.DEFINE_list("modalities", list(grid.MODALITIES), "Target modalities.",
                  flag_values=FLAGS)
flags.DEFINE_integer("parallel", 0, "Cells run at once, dividing the host's cores (CPU) "
                     "or GPUs between them; 0 = one per GPU on a GPU host, else one per "
                     "core for the demo corpora and 1 for the real ones.", flag_values=FLAGS)
flags.DEFINE_string("grid_dir", "", "Root of the grid's workdirs, tables and figures "
                    "(default runs/grid).", flag_values=FLAGS)
flags.DEFINE_string("reference", "", "JSON file of reference numbers to place beside "
                    "ours (format: docs/RESULTS.md, 'Reference numbers').", flag_values=FLAGS)
flags.DEFINE_bool("dry_run", False, "List the cells, their status, workdirs and command; "
                  "run nothing.", flag_values=FLAGS)
flags.DEFINE_bool("report", True, "Write tables, figures and HParams at the end.",
                  flag_values=FLAGS)
OWN = ("dataset", "seeds", "settings", "modalities", "parallel", "grid_dir", "reference",
       "dry_run", "report")
#: train.py flags the grid sets per cell.
RESERVED = ("setting", "modality", "seed", "workdir", "cpu_devices")
DEFAULT_FLAGFILES = {"demo": ("demo.flags", "grid_demo.flags"), "recola": ("recola.flags",),
                     "omg": ("omg.flags",), "demo_omg": ("demo_omg.flags",)}
TRAIN_SCRIPT = _cli.LAUNCH_DIR / "train.py"


def _flag_name(arg: str) -> str | None:
  if not arg.startswith("-") or arg in ("-", "--"):
    return None
  return arg.lstrip("-").split("=", 1)[0]


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
  """``argv`` -> (this script's argv, the pass-through launch/train.py
  arguments).  A flag is ours if its name (or ``no<name>``) is in OWN."""
  own, passed = argv[:1], []
  for a in argv[1:]:
    name = _flag_name(a)
    ours = name is not None and (name in OWN or (name.startswith("no") and name[2:] in OWN)
                                 or a in _cli.HELP_ARGS)
    (own if ours else passed).append(a)
  return own, passed


def _train_module():
  spec = importlib.util.spec_from_file_location("launch_train_for_grid", TRAIN_SCRIPT)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def train_args_for(dataset: str, passed: list[str]) -> list[str]:
  """The dataset's default flagfiles (those that exist in launch/), then the
  user's pass-through arguments (flagfiles resolved to absolute paths)."""
  files = [f"--flagfile={_cli.LAUNCH_DIR / f}" for f in DEFAULT_FLAGFILES.get(dataset, ())
           if (_cli.LAUNCH_DIR / f).exists()]
  return files + _cli.resolve_flagfiles(["reproduce.py", *passed])[1:]


def validate_train_args(train_args: list[str], cells: list[grid.Cell]) -> C.RunConfig:
  """Parse and validate every distinct (setting, modality) config of the
  grid with launch/train.py's own parser: a typo or a bad value is one
  ``error:`` line (exit 2) before anything runs.  Returns the first config."""
  for a in train_args:
    if _flag_name(a) in RESERVED:
      _cli.fail(f"{a}: the grid sets --{_flag_name(a)} for each cell; use --settings, "
                "--modalities, --seeds or --grid_dir instead", 2)
  train = _train_module()
  first = None
  for c in {(c.setting, c.modality): c for c in cells}.values():
    train.FLAGS.unparse_flags()
    rest = _cli.parse_argv(["train.py", *train_args, f"--dataset={c.dataset}",
                            f"--setting={c.setting}", f"--modality={c.modality}"],
                           train.USAGE, C.RunConfig, train.LAUNCHER, train.FLAGS)
    if len(rest) > 1:
      _cli.fail(f"unexpected arguments {' '.join(rest[1:])!r} (flags are written "
                "--name=value)", 2)
    try:
      cfg = _cli.config_from_flags(C.RunConfig, train.FLAGS).validate()
    except C.ConfigError as e:
      _cli.fail(f"{e} ({c.setting} {c.modality})", 2)
    first = first or cfg
  return first


def parse_seeds(text: str) -> list[int]:
  try:
    values = [int(v) for v in text.split(",") if v.strip()]
  except ValueError:
    _cli.fail(f"--seeds={text}: expected a count or a comma-separated list of integers", 2)
  if len(values) == 1 and "," not in text:
    if values[0] < 1:
      _cli.fail(f"--seeds={text}: expected at least 1 seed", 2)
    return list(range(values[0]))
  if len(set(values)) != len(values) or not values:
    _cli.fail(f"--seeds={text}: expected distinct seeds", 2)
  return values


def default_parallel(dataset: str, cores: int, gpus: int) -> int:
  if gpus:
    return gpus
  return cores if dataset in ("demo", "demo_omg") else 1


class _Stop:
  """SIGINT/SIGTERM: stop starting cells and ask the running ones to checkpoint;
  a second signal makes them stop at once (launch/train.py's second signal)."""

  def __init__(self):
    self.name, self.count = None, 0
    self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}

  def _handle(self, signum, frame):
    self.count += 1
    if self.name is None:
      self.name = signal.Signals(signum).name
      print(f"{self.name}: stopping the running cells at their next step (they save a "
            "checkpoint; send it again to stop them at once); the same command resumes",
            file=sys.stderr, flush=True)
    elif self.count == 2:
      print(f"{signal.Signals(signum).name}: stopping the running cells at once (work "
            "since their last checkpoint is lost)", file=sys.stderr, flush=True)

  def __call__(self) -> int:
    return min(self.count, 2)

  def restore(self):
    for s, h in self._old.items():
      signal.signal(s, h)


def _reporter(grid_dir: Path):
  def report(kind, info):
    c = info.get("cell")
    if kind == "start":
      _cli.say(f"start {c.name} ({'resumed, ' if info['resumed'] else ''}"
               f"{info['slot'].describe()}; log {info['log']})")
    elif kind == "done":
      r = grid.read_results(c.workdir(grid_dir))
      key = grid.primary_metric(r)
      _cli.say(f"[{info['done']}/{info['total']}] {c.name}: {key} {r['metrics'][key]:.3f} "
               f"in {info['seconds']:.0f} s; ETA {_cli.fmt_seconds(info['eta_seconds'])}")
    elif kind == "failed":
      print(f"failed: {c.name} (exit {info['code']}); log {info['log']}, last lines:\n"
            + "\n".join("  | " + line for line in info["tail"].splitlines()),
            file=sys.stderr, flush=True)
    elif kind == "interrupted":
      _cli.say(f"interrupted: {c.name} (checkpoint saved; the same command resumes it)")
  return report


def main(argv: list[str]) -> None:
  _cli.start(argv, FLAGS)
  passed = PASSED
  seeds = parse_seeds(FLAGS.seeds)
  try:
    cells = grid.cells(FLAGS.dataset, FLAGS.settings, FLAGS.modalities, seeds)
  except ValueError as e:
    _cli.fail(e, 2)
  grid_dir = Path(FLAGS.grid_dir or "runs/grid")
  if FLAGS.reference and not Path(FLAGS.reference).is_file():
    _cli.fail(f"--reference={FLAGS.reference}: no such file", 2)
  train_args = train_args_for(FLAGS.dataset, passed)
  cfg = validate_train_args(train_args, cells)
  gpus = grid.local_gpus()
  cores = grid.available_cores()
  parallel = FLAGS.parallel or default_parallel(FLAGS.dataset, len(cores), len(gpus))
  try:
    host_slots = grid.slots(parallel, cfg.batch_size, cores, gpus)
  except ValueError as e:
    _cli.fail(e, 2)
  states = {c: grid.status(c, grid_dir) for c in cells}
  n_done = sum(s == "done" for s in states.values())
  _cli.say(f"grid: {len(cells)} cells ({len(FLAGS.settings)} settings x "
           f"{len(FLAGS.modalities)} modalities x {len(seeds)} seeds) on {FLAGS.dataset} "
           f"in {grid_dir}; {n_done} done, "
           f"{sum(s == 'interrupted' for s in states.values())} to resume; {parallel} at "
           f"once ({host_slots[0].describe()} each)")
  if FLAGS.dry_run:
    for c in cells:
      _cli.say(f"{states[c]:<11} {c.name:<40} {c.workdir(grid_dir)}")
    _cli.say("command of each cell: " + " ".join(grid.cell_command(
        cells[0], grid_dir, train_args, host_slots[0], TRAIN_SCRIPT)[1:]))
    return
  stop = _Stop()
  try:
    out = grid.run_grid(cells, grid_dir, train_args, host_slots, train_script=TRAIN_SCRIPT,
                        report=_reporter(grid_dir), stop_requested=stop)
  finally:
    stop.restore()
  if FLAGS.report and (out.finished or out.skipped):
    from emobed_jax import grid_report  # noqa: PLC0415  (JAX, matplotlib: only now)
    try:
      written = grid_report.make_report(grid_dir, reference=FLAGS.reference or None)
    except (grid_report.ReportError, ImportError) as e:  # ImportError: names the extra
      _cli.fail(e)
    _cli.say(f"report: {len(written)} files in {grid_dir / 'tables'} and "
             f"{grid_dir / 'figures'}; HParams in {grid_dir / 'hparams'}")
  if out.failed:
    _cli.fail(f"{len(out.failed)} cell(s) failed: " + ", ".join(
        f"{n} (exit {code})" for n, code in out.failed.items()) + "; fix and rerun the "
        "same command (finished cells are kept)")
  if out.interrupted or out.not_started:
    _cli.say(f"{stop.name or 'stopped'}: {len(out.interrupted)} cell(s) interrupted, "
             f"{len(out.not_started)} not started; rerun the same command to go on")
    sys.exit(grid.EXIT_INTERRUPTED)
  _cli.say(f"grid done: {len(out.finished)} trained now, {len(out.skipped)} already done")


PASSED: list[str] = []

if __name__ == "__main__":
  own_argv, PASSED = split_argv(sys.argv)
  sys.argv = own_argv
  _cli.run_script(main, FLAGS)
