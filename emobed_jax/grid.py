"""The reproduction grid: cells (setting x target modality x seed), their
workdirs and status, and a runner that trains them as ``launch/train.py``
subprocesses, several at once.

Layout (``launch/reproduce.py``)::

    <grid_dir>/<dataset>/<setting>-<modality>/seed_<k>/      one launch/train.py workdir
    <grid_dir>/<dataset>/<setting>-<modality>/seed_<k>.log   its stdout and stderr
    <grid_dir>/tables/  <grid_dir>/figures/  <grid_dir>/hparams/   (emobed_jax.grid_report)

A cell is finished when its workdir holds ``results.json``; a cell with a
checkpoint but no results was interrupted, and the same ``launch/train.py``
command resumes it (docs/DESIGN.md).  The runner never prints: it calls
``report(kind, info)`` for every event.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

SETTINGS = ("mono", "joint", "crossmodal", "emobed")
MODALITIES = ("audio", "video")
#: launch/train.py's exit status for a run stopped by a signal after saving a
#: checkpoint (launch/train.py EXIT_INTERRUPTED).
EXIT_INTERRUPTED = 75


@dataclasses.dataclass(frozen=True)
class Cell:
  """One run of the grid: ``setting`` trained for target ``modality`` with ``seed``."""
  dataset: str
  setting: str
  modality: str
  seed: int

  @property
  def group(self) -> str:
    """``<setting>-<modality>``: the cell without its seed (a table row)."""
    return f"{self.setting}-{self.modality}"

  @property
  def name(self) -> str:
    return f"{self.dataset}/{self.group}/seed_{self.seed}"

  def workdir(self, grid_dir: str | Path) -> Path:
    return Path(grid_dir) / self.dataset / self.group / f"seed_{self.seed}"

  def log_path(self, grid_dir: str | Path) -> Path:
    return Path(grid_dir) / self.dataset / self.group / f"seed_{self.seed}.log"


def cells(dataset: str, settings: Sequence[str], modalities: Sequence[str],
          seeds: Sequence[int]) -> list[Cell]:
  """Every cell, seed-major (all settings of seed 0 first: an interrupted grid
  has complete seeds to aggregate), then modality, then setting.

  Raises:
    ValueError: an unknown setting or an empty list (names the flag).
  """
  for name, values, known in (("--settings", settings, SETTINGS),
                              ("--modalities", modalities, None)):
    if not values:
      raise ValueError(f"{name}: expected at least one value")
    bad = [v for v in values if known and v not in known]
    if bad:
      raise ValueError(f"{name}: unknown {', '.join(bad)}; expected some of "
                       f"{', '.join(known)}")
  if not seeds:
    raise ValueError("--seeds: expected at least one seed")
  return [Cell(dataset, s, m, k) for k in seeds for m in modalities for s in settings]


def status(cell: Cell, grid_dir: str | Path) -> str:
  """``done`` (results.json), ``interrupted`` (a checkpoint, no results) or ``new``."""
  wd = cell.workdir(grid_dir)
  if (wd / "results.json").is_file():
    return "done"
  ckpt = wd / "checkpoints"
  if ckpt.is_dir() and any(ckpt.iterdir()):
    return "interrupted"
  return "new"


def local_gpus() -> list[str]:
  """The GPU ids this process may use: ``$CUDA_VISIBLE_DEVICES`` if set, else
  the ones ``nvidia-smi -L`` lists, else none (a CPU host).  JAX is not
  started: it would claim the GPUs' memory that the cells need."""
  env = os.environ.get("CUDA_VISIBLE_DEVICES")
  if env is not None:
    return [g for g in env.split(",") if g.strip() and g.strip() != "-1"]
  try:
    out = subprocess.run(["nvidia-smi", "-L"], check=False, capture_output=True, text=True, timeout=20)
  except (OSError, subprocess.TimeoutExpired):
    return []
  return [str(i) for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU ")]


def available_cores() -> list[int]:
  """The CPU cores this process may run on (its affinity)."""
  try:
    return sorted(os.sched_getaffinity(0))
  except AttributeError:  # not Linux
    return list(range(os.cpu_count() or 1))


@dataclasses.dataclass(frozen=True)
class Slot:
  """What one concurrently running cell gets: CPU cores, host devices, GPUs."""
  cores: tuple[int, ...]
  cpu_devices: int
  gpus: tuple[str, ...] = ()

  def describe(self) -> str:
    if self.gpus:
      return f"GPU {','.join(self.gpus)}"
    return f"{len(self.cores)} core{'s' * (len(self.cores) > 1)}, {self.cpu_devices} device" + (
        "s" * (self.cpu_devices > 1))


def slots(parallel: int, batch_size: int, cores: Sequence[int] | None = None,
          gpus: Sequence[str] | None = None) -> list[Slot]:
  """Divide the host between ``parallel`` cells.

  GPU host: each cell gets ``len(gpus) // parallel`` GPUs, in contiguous
  groups (``parallel`` at most the number of GPUs).  CPU host: each cell gets
  ``len(cores) // parallel`` cores (pinned with ``sched_setaffinity``) and
  as many host devices as divides ``batch_size`` (launch/train.py's rule).

  Raises:
    ValueError: ``parallel`` < 1, or more cells than cores / GPUs.
  """
  cores = list(available_cores() if cores is None else cores)
  gpus = list(local_gpus() if gpus is None else gpus)
  if parallel < 1:
    raise ValueError(f"--parallel={parallel}: expected at least 1")
  if gpus:
    if parallel > len(gpus):
      raise ValueError(f"--parallel={parallel}: this host has {len(gpus)} GPU(s); run at "
                       "most one cell per GPU")
    per = len(gpus) // parallel
    return [Slot((), 0, tuple(gpus[i * per:(i + 1) * per])) for i in range(parallel)]
  if parallel > len(cores):
    raise ValueError(f"--parallel={parallel}: this process may use {len(cores)} core(s); "
                     "run at most one cell per core")
  per = len(cores) // parallel
  devices = max(n for n in range(1, per + 1) if batch_size % n == 0)
  return [Slot(tuple(cores[i * per:(i + 1) * per]), devices) for i in range(parallel)]


def cell_command(cell: Cell, grid_dir: str | Path, train_args: Sequence[str], slot: Slot,
                 train_script: str | Path) -> list[str]:
  """The ``launch/train.py`` command line of ``cell``: the pass-through
  ``train_args`` (flagfiles first), then the cell's own flags, which win."""
  cmd = [sys.executable, str(train_script), *train_args,
         f"--dataset={cell.dataset}", f"--setting={cell.setting}",
         f"--modality={cell.modality}", f"--seed={cell.seed}",
         f"--workdir={cell.workdir(grid_dir)}"]
  if slot.cpu_devices:
    cmd.append(f"--cpu_devices={slot.cpu_devices}")
  return cmd


def _cell_preexec(cores) -> None:
  """In the cell's process before exec: pin to ``cores``; SIGTERM when the
  launcher dies (Linux ``prctl(PR_SET_PDEATHSIG)``; elsewhere nothing)."""
  if cores:
    os.sched_setaffinity(0, cores)
  if sys.platform.startswith("linux"):
    import ctypes  # noqa: PLC0415
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def log_tail(path: Path, lines: int = 15) -> str:
  """The last ``lines`` lines of a cell's log ('' if there is none)."""
  try:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
  except OSError:
    return ""


@dataclasses.dataclass
class Outcome:
  """How a grid launch ended: the cells finished now, already done, failed
  (``{cell name: exit status}``), interrupted (stopped by a signal and
  resumable), and never started."""
  finished: list[Cell] = dataclasses.field(default_factory=list)
  skipped: list[Cell] = dataclasses.field(default_factory=list)
  failed: dict[str, int] = dataclasses.field(default_factory=dict)
  interrupted: list[Cell] = dataclasses.field(default_factory=list)
  not_started: list[Cell] = dataclasses.field(default_factory=list)


def run_grid(grid: Sequence[Cell], grid_dir: str | Path, train_args: Sequence[str],
             host_slots: Sequence[Slot], *, train_script: str | Path,
             report: Callable[[str, Mapping], None] = lambda kind, info: None,
             stop_requested: Callable[[], bool] = lambda: False,
             poll_s: float = 0.2, env: Mapping[str, str] | None = None) -> Outcome:
  """Train every unfinished cell of ``grid``, ``len(host_slots)`` at a time.

  Each cell runs ``launch/train.py`` (:func:`cell_command`) in its own
  session (a Ctrl-C in the terminal reaches the launcher only, which then
  sends each cell one SIGTERM: it checkpoints and exits 75), its output in
  :meth:`Cell.log_path`.  When ``stop_requested()`` turns true (or 1) no
  cell is started any more, running ones are sent SIGTERM and waited for;
  when it returns 2 (a second request) they are sent SIGTERM once more,
  which makes ``launch/train.py`` stop at once without its checkpoint.

  ``report(kind, info)`` events: ``skip`` (cell already done), ``start``
  (cell, slot, resumed), ``done`` (cell, seconds, done, total,
  eta_seconds: from the mean wall time of the cells finished in this launch),
  ``failed`` (cell, code, log, tail), ``interrupted`` (cell).
  """
  grid_dir = Path(grid_dir)
  out = Outcome()
  todo: list[Cell] = []
  for c in grid:
    if status(c, grid_dir) == "done":
      out.skipped.append(c)
      report("skip", {"cell": c})
    else:
      todo.append(c)
  total, finished_s = len(grid), []
  free = list(host_slots)
  running: dict[subprocess.Popen, tuple[Cell, Slot, float, object]] = {}
  stopping, forced = False, False
  base_env = dict(os.environ if env is None else env)
  base_env.pop("XLA_FLAGS", None)  # each cell sets its own host device count
  try:
    while todo or running:
      level = int(stop_requested())
      if (level >= 1 and not stopping) or (level >= 2 and not forced):
        # The first request: each cell saves a checkpoint and exits 75.  A
        # second one is passed on too: launch/train.py then stops at once.
        forced, stopping = stopping, True
        for p in running:
          p.send_signal(signal.SIGTERM)
      while todo and free and not stopping:
        c, s = todo.pop(0), free.pop(0)
        resumed = status(c, grid_dir) == "interrupted"
        log = c.log_path(grid_dir)
        log.parent.mkdir(parents=True, exist_ok=True)
        fh = open(log, "a")  # noqa: SIM115  (closed when the cell ends)
        e = dict(base_env)
        if s.gpus:
          e["CUDA_VISIBLE_DEVICES"] = ",".join(s.gpus)
        pin = s.cores if s.cores and hasattr(os, "sched_setaffinity") else None
        # preexec_fn pins the cell to its cores (Python 3.11's Popen has no
        # affinity argument) and asks for SIGTERM should the launcher die
        # (even by SIGKILL): the cell then checkpoints and exits 75 instead of
        # running on, orphaned, holding its workdir's lock.  The launcher runs
        # no threads of its own.
        p = subprocess.Popen(
            cell_command(c, grid_dir, train_args, s, train_script), stdout=fh,
            stderr=subprocess.STDOUT, env=e, start_new_session=True,
            preexec_fn=lambda cores=pin: _cell_preexec(cores))  # noqa: PLW1509
        running[p] = (c, s, time.monotonic(), fh)
        report("start", {"cell": c, "slot": s, "resumed": resumed, "log": log})
      for p in [p for p in running if p.poll() is not None]:
        c, s, t0, fh = running.pop(p)
        fh.close()
        free.append(s)
        code = p.returncode
        if code == 0 and status(c, grid_dir) == "done":
          seconds = time.monotonic() - t0
          finished_s.append(seconds)
          out.finished.append(c)
          done = len(out.finished) + len(out.skipped)
          left = total - done - len(out.failed)
          per = sum(finished_s) / len(finished_s)
          report("done", {"cell": c, "seconds": seconds, "done": done, "total": total,
                          "eta_seconds": per * left / max(len(host_slots), 1)})
        elif code == EXIT_INTERRUPTED or (stopping and code < 0):
          out.interrupted.append(c)
          report("interrupted", {"cell": c})
        else:
          out.failed[c.name] = code
          report("failed", {"cell": c, "code": code, "log": c.log_path(grid_dir),
                            "tail": log_tail(c.log_path(grid_dir))})
      if stopping and not running:
        break
      time.sleep(poll_s)
  finally:  # the launcher itself failed: leave no orphan cell behind
    for p, (_, _, _, fh) in running.items():
      p.send_signal(signal.SIGTERM)
      p.wait()
      fh.close()
  out.not_started = todo
  return out


def read_results(workdir: str | Path) -> dict:
  """``results.json`` of a finished cell.

  Raises:
    FileNotFoundError, ValueError: missing or not JSON (the message names the file).
  """
  import json  # noqa: PLC0415
  path = Path(workdir) / "results.json"
  try:
    return json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}: not JSON ({e})") from None


def primary_metric(results: Mapping) -> str:
  """The metric a grid compares settings on: ``ccc_mean`` (regression), ``uar``
  (classification: unweighted average recall, robust to OMG's class imbalance)."""
  return "uar" if "uar" in results.get("metrics", {}) else "ccc_mean"
