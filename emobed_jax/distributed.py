"""Multi-process (multi-host) start-up: when and how ``jax.distributed.initialize`` runs.

A run spans several processes (hosts, or one process per GPU) when either

* the launcher says so explicitly (``--coordinator_address=host:port
  --num_processes=P --process_id=i``, :func:`plan`), or
* the process runs inside a multi-process job that JAX itself recognises
  (``jax.distributed.initialize()`` with no arguments): a SLURM job step with
  more than one task (``srun``), an Open MPI job (``mpirun``) with more than
  one rank, or a Cloud TPU VM (JAX asks the TPU metadata which worker of the
  slice it is; on a single-host TPU VM that is "1 process", which changes
  nothing).

Anything else is a plain single-process run: nothing is initialised, so a run
on one machine behaves exactly as before.

The detection mirrors JAX's own cluster classes (``jax._src.clusters``, JAX
0.10): SLURM needs ``SLURM_JOB_ID``, ``SLURM_STEP_NODELIST``,
``SLURM_NTASKS``, ``SLURM_PROCID`` and ``SLURM_LOCALID``; Open MPI needs
``OMPI_MCA_orte_hnp_uri``.  We add one condition JAX does not check: more than
one task in the *step* (``SLURM_STEP_NUM_TASKS``, else ``SLURM_NTASKS``;
``OMPI_COMM_WORLD_SIZE``), so that ``python launch/train.py`` typed in an
``sbatch`` script without ``srun`` (the batch step: one process) or in an
interactive single-task allocation does not wait for peers that never come.

On SLURM, JAX also restricts each process to the GPU ``SLURM_LOCALID``
(``local_device_ids``): one task per GPU is the launch this project
documents (``launch/slurm/train.sbatch``, ``docs/CLUSTER.md``).

CPU collectives across processes: JAX 0.10's default
``jax_cpu_collectives_implementation`` is already ``"gloo"`` (TCP through the
distributed runtime), so nothing needs setting; the environment variable
``JAX_CPU_COLLECTIVES_IMPLEMENTATION=mpi`` still selects MPI.

Nothing here prints or parses flags (``launch/`` does); JAX is imported only
inside :func:`initialize`, so :func:`plan` can run before ``XLA_FLAGS`` is
final.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import time
from collections.abc import Mapping

#: Seconds ``jax.distributed.initialize`` waits for every process to connect
#: to the coordinator before it gives up (JAX's own default is 300).
DEFAULT_TIMEOUT_S = 300


class DistributedError(ValueError):
  """A bad multi-process setting or a failed start-up (one line; names the
  flag or environment variable)."""


@dataclasses.dataclass(frozen=True)
class Plan:
  """How this process joins a run.

  Attributes:
    method: ``"explicit"`` (launcher flags), ``"slurm"``, ``"ompi"`` or
      ``"tpu"`` (JAX's auto-detection), or ``""`` (single process: nothing
      to initialise).
    coordinator_address: ``host:port`` (explicit only; else JAX finds it).
    num_processes: P (explicit, SLURM, Open MPI), or None (TPU: JAX asks
      the metadata server).
    process_id: this process's index in ``[0, P)``, or None (TPU).
  """
  method: str = ""
  coordinator_address: str | None = None
  num_processes: int | None = None
  process_id: int | None = None

  @property
  def multi_process(self) -> bool:
    return bool(self.method)


_ADDRESS = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+):([0-9]{1,5})$")

_SLURM_VARS = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID",
               "SLURM_LOCALID")


def _int_env(env: Mapping[str, str], name: str) -> int:
  try:
    return int(env[name])
  except ValueError:
    raise DistributedError(f"environment variable {name}={env[name]!r}: expected an "
                           "integer") from None


def _tpu_chips() -> int:
  """TPU chips on this machine's PCI bus (0 on anything but a Cloud TPU VM).

  Uses JAX's own check (``jax._src.hardware_utils``, a file scan of
  ``/sys/bus/pci``, no network and no backend); a JAX without it counts as 0.
  """
  try:
    from jax._src import hardware_utils  # noqa: PLC0415  (private; guarded)
    return int(hardware_utils.num_available_tpu_chips_and_device_id()[0])
  except Exception:  # noqa: BLE001  (a moved private helper: no TPU auto-detection)
    return 0


def plan(coordinator_address: str = "", num_processes: int = 0, process_id: int = -1,
         environ: Mapping[str, str] | None = None, tpu_chips: int | None = None) -> Plan:
  """Decide whether and how to initialise JAX's distributed runtime.

  Args:
    coordinator_address: ``host:port`` of process 0's coordinator service
      (flag ``--coordinator_address``); ``""`` = none given.
    num_processes: P >= 1 (flag ``--num_processes``); 0 = not given.
    process_id: this process's index in ``[0, P)`` (flag ``--process_id``);
      -1 = not given.
    environ: the environment to inspect (default ``os.environ``).
    tpu_chips: TPU chips on this machine (default: counted on the PCI bus).

  Returns:
    a :class:`Plan`; ``Plan()`` (single process) when nothing asks for more.

  Raises:
    DistributedError: the three flags are given incompletely or are
      inconsistent, or a SLURM / Open MPI variable is not an integer.
  """
  env = os.environ if environ is None else environ
  given = [n for n, v in (("--coordinator_address", coordinator_address),
                          ("--num_processes", num_processes),
                          ("--process_id", process_id >= 0)) if v]
  if given:
    if len(given) < 3:
      missing = sorted({"--coordinator_address", "--num_processes", "--process_id"}
                       - set(given))
      raise DistributedError(f"{', '.join(given)} given without {', '.join(missing)}: a "
                             "multi-process run needs all three")
    if not _ADDRESS.match(coordinator_address):
      raise DistributedError(f"--coordinator_address={coordinator_address}: expected "
                             "host:port (e.g. node001:12345 or 10.0.0.1:12345)")
    if not 0 < int(coordinator_address.rsplit(":", 1)[1]) < 65536:
      raise DistributedError(f"--coordinator_address={coordinator_address}: the port must "
                             "be in 1..65535")
    if num_processes < 1:
      raise DistributedError(f"--num_processes={num_processes}: expected at least 1")
    if not 0 <= process_id < num_processes:
      raise DistributedError(f"--process_id={process_id}: expected 0..{num_processes - 1} "
                             f"(--num_processes={num_processes})")
    return Plan("explicit", coordinator_address, num_processes, process_id)
  if all(v in env for v in _SLURM_VARS):
    tasks = _int_env(env, "SLURM_STEP_NUM_TASKS" if "SLURM_STEP_NUM_TASKS" in env
                     else "SLURM_NTASKS")
    if tasks > 1:
      n, i = _int_env(env, "SLURM_NTASKS"), _int_env(env, "SLURM_PROCID")
      if n != tasks:
        raise DistributedError(f"SLURM_NTASKS={n} differs from SLURM_STEP_NUM_TASKS="
                               f"{tasks}: start the processes with srun (one per task)")
      return Plan("slurm", None, n, i)
  if "OMPI_MCA_orte_hnp_uri" in env and "OMPI_COMM_WORLD_SIZE" in env:
    n = _int_env(env, "OMPI_COMM_WORLD_SIZE")
    if n > 1:
      return Plan("ompi", None, n, _int_env(env, "OMPI_COMM_WORLD_RANK"))
  if (_tpu_chips() if tpu_chips is None else tpu_chips) > 0:
    return Plan("tpu")
  return Plan()


def _preflight(p: Plan, timeout_s: float) -> int:
  """Check the coordinator address before JAX's runtime uses it; returns the
  seconds left of ``timeout_s`` (at least 1).  Raises DistributedError."""
  host, port = p.coordinator_address.rsplit(":", 1)
  host = host.strip("[]")
  deadline = time.monotonic() + timeout_s
  if p.process_id == 0:
    try:  # the service binds every address on this port ('[::]:port')
      with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As gRPC does: a port left in TIME_WAIT by a previous run is free.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("", int(port)))
    except OSError as e:
      raise DistributedError(f"--coordinator_address={p.coordinator_address}: process 0 "
                             f"cannot listen on port {port} ({e.strerror or e}); choose a "
                             "free port") from None
    return max(1, int(timeout_s))
  while True:
    try:
      with socket.create_connection((host, int(port)), timeout=2):
        break
    except OSError as e:
      if time.monotonic() >= deadline:
        raise DistributedError(
            f"--coordinator_address={p.coordinator_address}: no coordinator answered "
            f"within {timeout_s:g} s ({e.strerror or e}); start process 0 there, or check "
            "the host, the port and the firewall (--distributed_timeout to wait "
            "longer)") from None
      time.sleep(0.2)
  return max(1, int(deadline - time.monotonic()))


def initialize(p: Plan, timeout_s: int = DEFAULT_TIMEOUT_S) -> None:
  """Start JAX's distributed runtime as ``p`` says (nothing for a single
  process).  Must run before anything touches a JAX backend (devices,
  arrays, ``jax.random.key``).

  Args:
    p: from :func:`plan`.
    timeout_s: seconds to wait for all processes to connect (>= 1).

  Raises:
    DistributedError: (explicit addresses) process 0 cannot listen on the
      coordinator's port, or another process finds no coordinator there
      within ``timeout_s``; or JAX's initialisation raised (auto-detection
      failed, the backend was already in use); the message says which and
      how this process was started.

  Not caught (JAX ends the process with a fatal error after ``timeout_s``):
  the coordinator is up but not every process registers with it (a wrong
  ``--num_processes``, a task that never started).
  """
  if not p.multi_process:
    return
  import jax  # noqa: PLC0415  (only now: XLA_FLAGS is final)
  if p.method == "explicit":
    args = {"coordinator_address": p.coordinator_address,
            "num_processes": p.num_processes, "process_id": p.process_id}
    where = (f"process {p.process_id} of {p.num_processes}, coordinator "
             f"{p.coordinator_address}")
  else:  # JAX's own detection (SLURM, Open MPI, Cloud TPU), as documented for it
    args = {}
    where = (f"{p.method} process {p.process_id} of {p.num_processes}"
             if p.num_processes else f"{p.method} (process count from the TPU metadata)")
  if p.method == "explicit":
    # JAX aborts the process (a C++ fatal error, not an exception) when the
    # coordinator cannot be reached in time, so this process checks first
    # what it can: process 0 that the port is free, the others that the
    # coordinator answers, both within the timeout.
    timeout_s = _preflight(p, timeout_s)
  try:
    jax.distributed.initialize(initialization_timeout=int(timeout_s), **args)
  except Exception as e:  # noqa: BLE001  (XLA raises plain RuntimeErrors / XlaRuntimeError)
    msg = " ".join(str(e).split())
    if "DEADLINE_EXCEEDED" in msg or "timed out" in msg.lower() or "deadline" in msg.lower():
      msg = (f"not all processes connected within {timeout_s} s (is the coordinator "
             f"reachable and are all {p.num_processes or 'the'} processes started?)")
    raise DistributedError(f"jax.distributed.initialize ({where}): {msg[:300]}") from None


def describe() -> dict[str, object]:
  """This process's place in the run (after :func:`initialize`): process
  index and count, local and global device counts and the platform."""
  import jax  # noqa: PLC0415
  return {"process_index": jax.process_index(), "process_count": jax.process_count(),
          "local_devices": jax.local_device_count(), "devices": jax.device_count(),
          "platform": jax.default_backend()}
