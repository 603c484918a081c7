"""Launcher flags and start-up of a multi-process run, for any ``launch/`` script.

  import _multihost
  _multihost.define_flags(FLAGS)          # beside the script's other launcher flags
  p = _multihost.plan(FLAGS)              # after parsing: P processes? (no JAX yet)
  ...                                     # set XLA_FLAGS; then, before JAX is used:
  info = _multihost.start(FLAGS, p)       # one "distributed: ..." line, or nothing

A single-machine run (no flag, no SLURM/Open MPI/TPU-pod environment) starts
nothing and prints nothing (emobed_jax.distributed.plan says when).
"""

from __future__ import annotations

import _cli
from absl import flags

from emobed_jax import distributed

#: The launcher flags, for a script's ``--help`` group.
NAMES = ("coordinator_address", "num_processes", "process_id", "distributed_timeout")


def define_flags(flag_values: flags.FlagValues) -> None:
  """Define :data:`NAMES` in ``flag_values`` (launcher flags: not part of
  the run's identity; a resumed run may use other values)."""
  kw = {"flag_values": flag_values}
  flags.DEFINE_string("coordinator_address", "", "host:port of process 0 in a multi-process "
                      "run started by hand (with --num_processes and --process_id); empty: "
                      "auto-detected on SLURM (srun), Open MPI and Cloud TPU VMs, else one "
                      "process.", **kw)
  flags.DEFINE_integer("num_processes", 0, "Processes of a multi-process run started by hand "
                       "(0: not given).", **kw)
  flags.DEFINE_integer("process_id", -1, "This process's index in 0..num_processes-1 "
                       "(-1: not given).", **kw)
  flags.DEFINE_integer("distributed_timeout", distributed.DEFAULT_TIMEOUT_S, "Seconds to wait "
                       "for every process of a multi-process run to connect.", lower_bound=1,
                       **kw)


def plan(flag_values: flags.FlagValues) -> distributed.Plan:
  """:func:`emobed_jax.distributed.plan` from the launcher flags and the
  environment (no JAX yet); a bad flag is one ``error:`` line, exit 1."""
  fv = flag_values
  try:
    return distributed.plan(fv.coordinator_address, fv.num_processes, fv.process_id)
  except distributed.DistributedError as e:
    _cli.fail(e)


def start(flag_values: flags.FlagValues, p: distributed.Plan | None = None) -> dict | None:
  """Initialise JAX's distributed runtime if this is a multi-process run
  (``p``, default :func:`plan`; call before any JAX backend use) and print
  one line saying where this process stands; None for a single-process run.
  A failed start is one ``error:`` line, exit 1."""
  p = p or plan(flag_values)
  try:
    distributed.initialize(p, flag_values.distributed_timeout)
  except distributed.DistributedError as e:
    _cli.fail(e)
  if not p.multi_process:
    return None
  info = distributed.describe()
  _cli.say(f"distributed ({p.method}): process {info['process_index']} of "
           f"{info['process_count']}, {info['local_devices']} local of {info['devices']} "
           f"{info['platform']} devices")
  return info


def main_only(report, info: dict, labelled=None):
  """``report`` on process 0.  The other processes print only warnings and
  their train-loss and final lines, through ``labelled`` (a reporter whose
  lines name the process; default ``report``), so a log shows that all
  processes agree without repeating every line."""
  if info["process_index"] == 0:
    return report
  labelled = labelled or report
  return lambda kind, data: (labelled(kind, data) if kind in ("warning", "train", "done")
                             else None)


#: Steps between two checks, agreed among processes, of a stop request.
STOP_CHECK_EVERY = 8


def agreed_stop(stop_requested, every: int = STOP_CHECK_EVERY):
  """``stop_requested`` agreed among all processes.

  The training loop polls its ``stop_requested`` once before every step, in
  every process.  A signal reaches each process at a different moment; if
  one process stopped to checkpoint while the others ran the next step,
  both would wait for ever in different collectives.  So every ``every``-th
  poll all processes exchange their flags (one small all-gather) and all
  stop when any was asked to; between exchanges the answer is False.  The
  stop therefore comes at most ``every`` steps after the signal.
  """
  import numpy as np  # noqa: PLC0415
  from jax.experimental import multihost_utils  # noqa: PLC0415  (after initialize)
  calls = 0
  decided = False

  def poll() -> bool:
    nonlocal calls, decided
    if decided:
      return True
    calls += 1
    if calls % every:
      return False
    flags_ = multihost_utils.process_allgather(np.int32(bool(stop_requested())))
    decided = bool(np.any(flags_))
    return decided
  return poll
