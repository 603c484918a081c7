r"""Train EmoBed (or one of its ablations) and evaluate the best checkpoint.

  python launch/train.py --flagfile=demo.flags                    # demo corpus
  python launch/train.py --modality=audio --flagfile=recola.flags  # real RECOLA
  python launch/train.py --help                                   # every flag

Flags are the fields of emobed_jax.config.RunConfig (one flag per field);
a flagfile named without a path is also looked for in launch/, and a flag
given on the command line wins over a flagfile's value, whatever the order.
The workdir (--workdir, default runs/<dataset>_<setting>_<modality>_seed<seed>)
receives config.json, stats.json, metrics.jsonl, tensorboard/, checkpoints/
and results.json (docs/DESIGN.md). Running the same command again resumes;
a finished run is not redone. Errors are one "error: ..." line, exit 1
(exit 2 for a malformed flag).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import _cli  # noqa: F401  (first: the sys.path guard)
import _multihost
from absl import flags

from emobed_datasets.errors import DataError
from emobed_jax import config as C  # no JAX backend yet: --cpu_devices comes first
from emobed_jax.hostenv import configure_malloc

USAGE = """\
Train one EmoBed run and evaluate its best checkpoint on the target modality alone.

  python launch/train.py --flagfile=demo.flags [--setting=mono] [--modality=video] ...
  python launch/train.py --modality=audio --flagfile=recola.flags

Command-line flags win over flagfile values. Writes the workdir described in
docs/DESIGN.md; rerunning the same command resumes.
"""

FLAGS = _cli.script_flags()
_cli.define_config_flags(C.RunConfig, FLAGS)
flags.DEFINE_string("workdir", "", "Run folder (default "
                    "runs/<dataset>_<setting>_<modality>_seed<seed>).", flag_values=FLAGS)
flags.DEFINE_integer("cpu_devices", 0, "Host (CPU) devices to run pmap over; 0 = one per "
                     "core (at most, dividing --batch_size). Ignored on GPU/TPU.",
                     flag_values=FLAGS)
flags.DEFINE_bool("malloc_tuning", True, "Keep freed memory in the process (glibc "
                  "mallopt): no page faults on the step's buffers every step.",
                  flag_values=FLAGS)
_multihost.define_flags(FLAGS)
LAUNCHER = [("Launcher", ("workdir", "cpu_devices", "malloc_tuning") + _multihost.NAMES)]


def skipped(info: dict) -> str:
  n = info.get("skipped_nonfinite")
  return "" if n is None else f" skipped {n} non-finite (total {info['skipped_nonfinite_total']})"


def _reporter(terms: tuple[str, ...], prefix: str = ""):
  last = [0.0]  # when the last preparation line was printed

  def say(message: str) -> None:
    _cli.say(message, prefix)

  def report(kind: str, info: dict) -> None:
    if kind == "data":
      unit = info.get("unit", "recordings")
      say(f"data: {info['train']} train / {info['val']} validation / {info['eval']} "
          f"evaluation {unit}"
          f"{'' if unit == 'utterances' else ', ' + str(info['windows']) + ' windows'}, "
          f"{info['steps_per_epoch']} steps/epoch, {info['total_steps']} steps on "
          f"{info['devices']} devices (ready in {info['seconds']:.1f} s); model "
          f"selection on {info['selection_split']}"
          f"{'' if unit == 'utterances' else '; windows cut on the ' + info['input_feed']}")
      for split, n in (info.get("corpus") or {}).items():  # OMG: the subset measured
        why = ", ".join(f"{k} {v}" for k, v in n["skipped"].items()) or "none"
        say(f"corpus {split}: {n['kept']} utterances of {n['rows']} CSV rows "
            f"(skipped: {why})")
    elif kind == "prepare":  # OMG-Emotion: features of every clip, once
      done, total, secs = info["done"], info["total"], info["seconds"]
      if not last[0]:  # an ETA from the first clip alone is a guess: wait 5 s
        last[0] = time.perf_counter()
      elif done == total or time.perf_counter() - last[0] >= 5:
        last[0] = time.perf_counter()
        eta = secs / done * (total - done) if done else None
        say(f"preparing the corpus: {done}/{total} clips, {secs:.0f} s, "
            f"ETA {_cli.fmt_seconds(eta)}")
    elif kind == "warning":
      print(f"{prefix}warning: {info['message']}", file=sys.stderr, flush=True)
    elif kind == "resume":
      best = info["best_step"]
      say(f"resuming from step {info['step']} (best so far: "
          f"{'step ' + str(best) if best is not None else 'none yet'})")
    elif kind == "train":
      parts = " ".join(f"{t.replace('task_', '')} {info[t]:.4f}" for t in terms
                       if t not in ("loss", "task_target", "grad_norm"))
      say(f"step {info['step']}/{info['total_steps']} epoch {info['epoch']:.1f} "
          f"loss {info['loss']:.4f} (target {info['task_target']:.4f}"
          f"{' ' + parts if parts else ''})"
          f"{skipped(info)} {info['steps_per_second']:.1f} steps/s "
          f"ETA {_cli.fmt_seconds(info['eta_seconds'])}")
    elif kind == "eval":
      dims = " ".join(f"{k} {v:.3f}" for k, v in info.items()
                      if k.startswith("ccc_") or k in ("accuracy", "macro_f1", "uar"))
      say(f"validation after epoch {info['epoch']}: {dims}"
          f"{' (best)' if info['is_best'] else ''}")
    elif kind == "done":
      r = info["results"]
      m = " ".join(f"{k} {v:.3f}" for k, v in r["metrics"].items())
      what = "already finished" if info["already"] else "finished"
      say(f"{what}: {r['setting']} {r['modality']} -> {r['eval_split']} "
          f"({r.get('ccc_granularity') or r.get('metric_granularity')}): {m}; "
          f"best step {r['best_step']}"
          + (f"; majority-class baseline uar {r['majority_baseline']['uar']:.3f}"
             if "majority_baseline" in r else ""))
  return report


#: Exit status of a run stopped by SIGTERM/SIGINT after saving a checkpoint
#: (sysexits.h EX_TEMPFAIL: "try again later"); the same command resumes.
EXIT_INTERRUPTED = 75


class _StopOnSignal:
  """SIGTERM and SIGINT ask the run to stop: it saves a checkpoint before the
  next step and exits with EXIT_INTERRUPTED.  A second signal stops at once."""

  def __init__(self):
    self.name = None
    self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}

  def _handle(self, signum, frame):
    if self.name is not None:  # the second one: do not wait for the checkpoint
      self.restore()
      signal.raise_signal(signum)
    self.name = signal.Signals(signum).name
    print(f"{self.name}: saving a checkpoint before the next step, then stopping "
          "(send it again to stop at once)", file=sys.stderr, flush=True)

  def __call__(self) -> bool:
    return self.name is not None

  def restore(self) -> None:
    for s, h in self._old.items():
      signal.signal(s, h)


def default_workdir(cfg: C.RunConfig) -> Path:
  d = cfg.data
  return Path("runs") / f"{d.dataset}_{cfg.core.task.setting}_{d.modality}_seed{cfg.seed}"


def _auto_cpu_devices(cores: int, batch_size: int) -> int:
  """One host device per core (the recurrence is latency-bound per core),
  reduced to the largest count that divides the batch."""
  return max(n for n in range(1, max(cores, 1) + 1) if batch_size % n == 0)


def main(argv: list[str]) -> None:
  _cli.start(argv, FLAGS)
  try:
    cfg = _cli.config_from_flags(C.RunConfig, FLAGS).validate()
  except C.ConfigError as e:
    _cli.fail(e)
  plan = _multihost.plan(FLAGS)  # several processes? (a bad flag: one line, exit 1)
  per_process = cfg.batch_size // (plan.num_processes or 1)  # each splits its share
  cores = FLAGS.cpu_devices or _auto_cpu_devices(os.cpu_count() or 1, per_process)
  if not FLAGS.cpu_devices and cores < (os.cpu_count() or 1):
    _cli.say(f"note: {cores} host device{'s' if cores > 1 else ''} (not one per core: "
             f"the largest count that divides --batch_size={cfg.batch_size}); set "
             "--cpu_devices to choose")
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + f" --xla_force_host_platform_device_count={cores}").strip()
  configure_malloc(FLAGS.malloc_tuning)  # before JAX starts its threads
  # Several processes (hosts, or one per GPU): join them before any JAX
  # backend use; nothing happens on a single machine.
  multi = _multihost.start(FLAGS, plan)
  # JAX is imported only now, after XLA_FLAGS is final (one host device per core).
  from emobed_jax.train import RunInterrupted, logged_terms, train_and_evaluate  # noqa: PLC0415
  from emobed_jax.features import AudioError  # noqa: PLC0415  (OMG: opensmile missing)
  from emobed_jax.workdir import RunError  # noqa: PLC0415

  workdir = Path(FLAGS.workdir) if FLAGS.workdir else default_workdir(cfg)
  setting = cfg.core.task.setting
  _cli.say(f"emobed-jax: {setting} on {cfg.data.dataset}, target {cfg.data.modality}"
           f"{'' if setting == 'mono' else ', auxiliary ' + cfg.data.aux_modality}; "
           f"workdir {workdir}")
  start = time.perf_counter()
  stop = _StopOnSignal()
  report = _reporter(logged_terms(cfg.core))
  stop_requested = stop
  if multi:  # every process stops at the same step; the others print less
    report = _multihost.main_only(report, multi, _reporter(
        logged_terms(cfg.core), f"[process {multi['process_index']}] "))
    stop_requested = _multihost.agreed_stop(stop)
  try:
    train_and_evaluate(cfg, workdir, report=report, stop_requested=stop_requested)
  except RunInterrupted as e:
    _cli.say(f"{stop.name}: {e} ({workdir})")
    sys.exit(EXIT_INTERRUPTED)
  except (DataError, C.ConfigError, RunError, FloatingPointError, AudioError) as e:
    _cli.fail(e)
  except OSError as e:  # a full disk, a permission: name the file; nothing is half-written
    _cli.fail(f"{e.strerror or e}: {e.filename}" if e.filename else e)
  finally:
    stop.restore()
  if not multi or multi["process_index"] == 0:
    _cli.say(f"results: {workdir / 'results.json'} (this command: "
             f"{time.perf_counter() - start:.0f} s wall)")


if __name__ == "__main__":
  _cli.run(main, USAGE, C.RunConfig, LAUNCHER, FLAGS)
