"""Multi-process training on 127.0.0.1 (emobed_jax.distributed, launch/_multihost.py).

2 processes x 2 host devices against 1 process x 4 devices on the same global
batch: the same losses (<= 1e-5 relative), both processes agree, process 0
alone writes the workdir; launch/train.py under a simulated SLURM job step
joins with the right process ids; bad multi-process flags and an unreachable
coordinator are one-line errors.  The batch-job scripts pass bash -n and
shellcheck.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys

import pytest
from conftest import REPO_ROOT
from launch_support import FAST, TRAIN, read_jsonl

from emobed_jax import distributed as D

FLAGS = ["--dataset=demo", "--setting=emobed", "--epochs=3", "--log_every=1",
         "--nomalloc_tuning", *[f for f in FAST if not f.startswith("--log_every")]]


def env(**extra):
  e = {k: v for k, v in os.environ.items()
       if not k.startswith(("SLURM_", "OMPI_", "XLA_FLAGS"))}
  # Both sides compile alike; the numbers compared are the same programs' sums.
  e["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"
  # A loaded 2-core CI machine can hold one process minutes behind the other
  # (compiling) while its peer waits in a gloo collective: wait long enough.
  e["XLA_FLAGS"] = ("--xla_cpu_collective_timeout_seconds=600 "
                    "--xla_cpu_collective_call_terminate_timeout_seconds=900")
  e.update(extra)
  return e


def start(args, **extra):
  return subprocess.Popen([sys.executable, TRAIN, *args], cwd=REPO_ROOT, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env(**extra))


def finish(procs, timeout=600):
  out = []
  for p in procs:
    try:
      o, e = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
    out.append((p.returncode, o, e))
  return out


def free_port(lo: int = 0, hi: int = 0) -> int:
  """A TCP port nobody listens on: any (lo = 0) or one in [lo, hi]."""
  for port in ([0] if not lo else range(lo, hi + 1)):
    with socket.socket() as s:
      try:
        s.bind(("", port))
      except OSError:
        continue
      return s.getsockname()[1]
  raise RuntimeError("no free port")


# --- the plan (no JAX) ------------------------------------------------------

def test_plan_single_machine_changes_nothing():
  assert D.plan(environ={}, tpu_chips=0) == D.Plan()
  assert not D.Plan().multi_process
  # One task (an sbatch script without srun, an interactive allocation).
  slurm = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "n1", "SLURM_NTASKS": "1",
           "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}
  assert D.plan(environ=slurm, tpu_chips=0) == D.Plan()
  # The batch step of a 4-task job: one process, not a 4-process run.
  assert D.plan(environ={**slurm, "SLURM_NTASKS": "4", "SLURM_STEP_NUM_TASKS": "1"},
                tpu_chips=0) == D.Plan()
  assert D.plan(environ={"OMPI_MCA_orte_hnp_uri": "x", "OMPI_COMM_WORLD_SIZE": "1",
                         "OMPI_COMM_WORLD_RANK": "0"}, tpu_chips=0) == D.Plan()


def test_plan_detects_clusters_and_explicit_flags():
  slurm = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "n[1-2]", "SLURM_NTASKS": "8",
           "SLURM_STEP_NUM_TASKS": "8", "SLURM_PROCID": "5", "SLURM_LOCALID": "1"}
  assert D.plan(environ=slurm, tpu_chips=0) == D.Plan("slurm", None, 8, 5)
  ompi = {"OMPI_MCA_orte_hnp_uri": "1.0;tcp://10.0.0.1:1", "OMPI_COMM_WORLD_SIZE": "4",
          "OMPI_COMM_WORLD_RANK": "3"}
  assert D.plan(environ=ompi, tpu_chips=0) == D.Plan("ompi", None, 4, 3)
  assert D.plan(environ={}, tpu_chips=4) == D.Plan("tpu")
  # Explicit flags win over any environment.
  assert D.plan("10.0.0.1:1234", 2, 1, environ=slurm, tpu_chips=4) == D.Plan(
      "explicit", "10.0.0.1:1234", 2, 1)
  assert D.plan("[::1]:80", 1, 0, environ={}).method == "explicit"


@pytest.mark.parametrize("args,match", [
    (("", 2, -1), "--num_processes given without --coordinator_address, --process_id"),
    (("h:1", 0, -1), "--coordinator_address given without --num_processes, --process_id"),
    (("h", 2, 0), "expected host:port"),
    (("h:70000", 2, 0), "port must be in 1..65535"),
    (("h:1", 2, 2), r"--process_id=2: expected 0..1"),
])
def test_plan_rejects_bad_flags(args, match):
  with pytest.raises(D.DistributedError, match=match):
    D.plan(*args, environ={}, tpu_chips=0)


def test_plan_rejects_bad_slurm_variables():
  slurm = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "n1", "SLURM_NTASKS": "x",
           "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}
  with pytest.raises(D.DistributedError, match="SLURM_NTASKS='x': expected an integer"):
    D.plan(environ=slurm, tpu_chips=0)


# --- launch/train.py ------------------------------------------------------------

def test_incomplete_flags_are_one_line(cli, demo_dir, tmp_path):
  r = cli(f"--data_dir={demo_dir}", "--dataset=demo", f"--workdir={tmp_path / 'w'}",
          "--num_processes=2")
  assert r.returncode == 1
  assert r.stderr.strip() == ("error: --num_processes given without --coordinator_address, "
                              "--process_id: a multi-process run needs all three")


def test_unreachable_coordinator_is_one_line(demo_dir, tmp_path):
  port = free_port()
  [(code, _, err)] = finish([start(
      [*FLAGS, f"--data_dir={demo_dir}", f"--workdir={tmp_path / 'w'}", "--cpu_devices=2",
       f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", "--process_id=1",
       "--distributed_timeout=1"])], timeout=120)
  assert code == 1, err[-2000:]
  assert err.count("\n") == 1 and err.startswith(
      f"error: --coordinator_address=127.0.0.1:{port}: no coordinator answered within 1 s")
  assert not (tmp_path / "w").exists()


def test_coordinator_port_in_use_is_one_line(demo_dir, tmp_path):
  with socket.socket() as busy:
    busy.bind(("", 0))
    busy.listen()
    port = busy.getsockname()[1]
    [(code, _, err)] = finish([start(
        [*FLAGS, f"--data_dir={demo_dir}", f"--workdir={tmp_path / 'w'}",
         f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", "--process_id=0"])],
        timeout=120)
  assert code == 1, err[-2000:]
  assert err == (f"error: --coordinator_address=127.0.0.1:{port}: process 0 cannot listen "
                 f"on port {port} (Address already in use); choose a free port\n")


def _losses(workdir):
  return {r["step"]: r["loss"] for r in read_jsonl(workdir / "metrics.jsonl")
          if r["split"] == "train"}


def test_two_processes_train_as_one(demo_dir, tmp_path):
  """1 process x 4 devices vs 2 processes x 2 devices (explicit flags), then
  the finished 2-process workdir under a simulated SLURM step."""
  common = [*FLAGS, f"--data_dir={demo_dir}"]
  one, two = tmp_path / "one", tmp_path / "two"
  port = free_port()
  # One after the other: on 2 cores, three processes at once slow the pair's
  # compiles unevenly (its collectives then wait for the slower one).
  (c20, o20, e20), (c21, o21, e21) = finish([
      start([*common, f"--workdir={two}", "--cpu_devices=2",
             f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
             f"--process_id={i}"]) for i in range(2)])
  assert (c20, c21) == (0, 0), (e20[-2000:], e21[-2000:])
  [(c1, o1, e1)] = finish([start([*common, f"--workdir={one}", "--cpu_devices=4"])])
  assert c1 == 0, e1[-2000:]
  assert "distributed (explicit): process 0 of 2, 2 local of 4 cpu devices" in o20
  assert "distributed (explicit): process 1 of 2, 2 local of 4 cpu devices" in o21
  assert "distributed" not in o1  # a single process starts nothing

  # The same global batches: the same losses, step by step.
  l1, l2 = _losses(one), _losses(two)
  assert sorted(l1) == sorted(l2) == [1, 2, 3]
  for step in l1:
    print(f"step {step}: loss 1 process {l1[step]!r}, 2 processes {l2[step]!r}, "
          f"relative difference {abs(l2[step] - l1[step]) / abs(l1[step]):.2e}")
    assert abs(l2[step] - l1[step]) <= 1e-5 * abs(l1[step]), (step, l1[step], l2[step])
  r1 = json.loads((one / "results.json").read_text())
  r2 = json.loads((two / "results.json").read_text())
  assert r2["processes"] == 2 and r2["devices"] == r1["devices"] == 4
  for k, v in r1["metrics"].items():
    assert r2["metrics"][k] == pytest.approx(v, rel=1e-4, abs=1e-5), k

  # Both processes agree: process 1's loss lines and final line are process 0's.
  def lines(text, prefix=""):
    return [ln[len(prefix):].rsplit(" loss ", 1)[-1].split(")")[0] if " loss " in ln
            else ln[len(prefix):] for ln in text.splitlines()
            if ln.startswith((prefix + "step ", prefix + "finished:"))]
  assert lines(o21, "[process 1] ") == lines(o20) and len(lines(o20)) == 4, (o20, o21)
  assert "data:" not in o21 and "validation" not in o21  # progress from process 0 only

  # Process 0 alone wrote the workdir: one results.json, each record once,
  # one TensorBoard file, the checkpoint's arrays from process 0 only.
  assert sorted(p.name for p in two.glob("*.json")) == ["config.json", "results.json",
                                                        "stats.json"]
  recs = [(r["step"], r["split"]) for r in read_jsonl(two / "metrics.jsonl")]
  assert len(recs) == len(set(recs)) == len(read_jsonl(one / "metrics.jsonl"))
  assert len(list((two / "tensorboard").iterdir())) == 1
  assert not list(two.glob("**/ocdbt.process_1"))

  # A simulated SLURM job step of 2 tasks (srun): JAX's own detection gives
  # each its id; the finished run is not redone.
  port = free_port(61440, 65535)  # JAX: port = SLURM_JOB_ID % 4096 + 61440
  slurm = {"SLURM_JOB_ID": str(port - 61440), "SLURM_STEP_NODELIST": "127.0.0.1",
           "SLURM_NTASKS": "2", "SLURM_STEP_NUM_TASKS": "2", "SLURM_NNODES": "1"}
  procs = [start([*common, f"--workdir={two}", "--cpu_devices=2"], **slurm,
                 SLURM_PROCID=str(i), SLURM_LOCALID=str(i)) for i in range(2)]
  res = finish(procs)
  for i, (code, out, err) in enumerate(res):
    assert code == 0, err[-2000:]
    assert f"distributed (slurm): process {i} of 2, 2 local of 4 cpu devices" in out, out
    assert "already finished" in out
    print(out.splitlines()[0])


# --- batch-job scripts ------------------------------------------------------------

SCRIPTS = sorted(str(p) for d in ("launch/slurm", "launch/tpu")
                 for p in (REPO_ROOT / d).glob("*") if p.suffix in (".sh", ".sbatch"))


def test_batch_scripts_exist():
  names = {os.path.relpath(p, REPO_ROOT) for p in SCRIPTS}
  assert {"launch/slurm/train.sbatch", "launch/slurm/grid.sbatch"} <= names
  assert any(n.startswith("launch/tpu/") for n in names)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: os.path.relpath(p, REPO_ROOT))
def test_batch_scripts_pass_bash_n_and_shellcheck(script):
  subprocess.run(["bash", "-n", script], check=True)
  if shutil.which("shellcheck") is None:
    pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
  r = subprocess.run(["shellcheck", "--shell=bash", script], capture_output=True, text=True,
                     check=False)
  assert r.returncode == 0, r.stdout


def test_grid_array_maps_task_ids_to_cells(tmp_path):
  """grid.sbatch's cell of each SLURM_ARRAY_TASK_ID (its --print-cell mode)."""
  script = REPO_ROOT / "launch/slurm/grid.sbatch"
  cells = []
  for i in range(8 * 3):
    r = subprocess.run(["bash", str(script), "--print-cell"], capture_output=True, text=True,
                       env={**env(), "SLURM_ARRAY_TASK_ID": str(i), "SEEDS": "3",
                            "GRID_DIR": str(tmp_path), "DATASET": "recola"}, check=True)
    cells.append(r.stdout.strip())
  assert len(set(cells)) == 24
  assert cells[0] == f"mono audio 0 {tmp_path}/recola/mono-audio/seed_0"
  assert cells[-1] == f"emobed video 2 {tmp_path}/recola/emobed-video/seed_2"
  assert re.fullmatch(r"(mono|joint|crossmodal|emobed) (audio|video) [0-2] \S+",
                      cells[7])
  r = subprocess.run(["bash", str(script), "--print-cell"], capture_output=True, text=True,
                     env={**env(), "SLURM_ARRAY_TASK_ID": "24", "SEEDS": "3"}, check=False)
  assert r.returncode != 0 and "SLURM_ARRAY_TASK_ID=24" in r.stderr


def test_accelerator_extras_pin_jax_like_the_install():
  """setup.cfg's cuda12 / cuda13 / tpu extras are JAX's own extras (they
  exist in jax 0.10's metadata) under the project's JAX pin."""
  import configparser
  import importlib.metadata

  from packaging.requirements import Requirement
  cfg = configparser.ConfigParser()
  cfg.read(REPO_ROOT / "setup.cfg")
  pin = next(Requirement(r) for r in cfg["options"]["install_requires"].split()
             if r.startswith("jax>")).specifier
  extras = cfg["options.extras_require"]
  jax_extras = set(importlib.metadata.metadata("jax").get_all("Provides-Extra"))
  for name in ("cuda12", "cuda13", "tpu"):
    [req] = [Requirement(r) for r in extras[name].strip().splitlines()]
    assert (req.name, req.extras, req.specifier) == ("jax", {name}, pin)
    assert name in jax_extras


def test_agreed_stop_is_checked_every_few_steps():
  """launch/_multihost.agreed_stop (here on one process: the all-gather is
  then of one flag): False between exchanges, then True for good."""
  import _multihost
  asked = []
  poll = _multihost.agreed_stop(lambda: bool(asked), every=3)
  assert [poll(), poll(), poll()] == [False, False, False]
  asked.append(1)
  assert [poll(), poll()] == [False, False]  # asked, but not at an exchange yet
  assert poll() is True
  asked.clear()
  assert poll() is True  # decided: every process stops at this same step
