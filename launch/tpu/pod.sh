#!/bin/bash
# One EmoBed run on a Cloud TPU VM pod slice (every worker runs one process;
# docs/CLUSTER.md).  Run from your workstation with gcloud configured:
#
#   launch/tpu/pod.sh create                 # the TPU VM slice
#   launch/tpu/pod.sh install                # repo + venv + ".[tpu]" on every worker
#   launch/tpu/pod.sh mount                  # the shared NFS folder on every worker
#   launch/tpu/pod.sh train --flagfile=recola.flags --modality=audio   # WORKDIR=...
#   launch/tpu/pod.sh logs                   # follow worker 0's log
#   launch/tpu/pod.sh stop                   # SIGTERM: checkpoint, exit 75
#   launch/tpu/pod.sh delete
#
# Every `gcloud compute tpus tpu-vm ssh --worker=all --command=...` runs the
# same command on all workers at once; launch/train.py on a Cloud TPU VM calls
# jax.distributed.initialize() with no arguments, and JAX learns the worker
# id, the worker count and the coordinator from the TPU metadata.
#
# The workdir (checkpoints: process 0 writes them, every process restores
# them) and the prepared data must be on a folder every worker mounts at the
# same path: a Filestore (NFS) share, SHARED below.  Prepare the data once,
# from one machine (docs/CLUSTER.md).
#
# Environment: TPU_NAME (emobed), ZONE (us-central2-b), ACCELERATOR (v4-32),
# TPU_VERSION (tpu-ubuntu2204-base), REPO_URL (the git URL to clone),
# REPO_REF (main), NFS (Filestore "ip:/share", for `mount`), SHARED
# (/mnt/shared, where it is mounted), WORKDIR ($SHARED/runs/<name>, for train).
set -euo pipefail

TPU_NAME=${TPU_NAME:-emobed}
ZONE=${ZONE:-us-central2-b}
ACCELERATOR=${ACCELERATOR:-v4-32}
TPU_VERSION=${TPU_VERSION:-tpu-ubuntu2204-base}
REPO_REF=${REPO_REF:-main}
SHARED=${SHARED:-/mnt/shared}

all() {  # the same command on every worker of the slice
  gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all --command="$1"
}

q() {  # quote arguments for the remote shell (nothing for no arguments)
  if [ $# -gt 0 ]; then
    printf '%q ' "$@"
  fi
}

cmd=${1:-}
shift || true
case "$cmd" in
  create)
    gcloud compute tpus tpu-vm create "$TPU_NAME" --zone="$ZONE" \
      --accelerator-type="$ACCELERATOR" --version="$TPU_VERSION" "$@"
    ;;
  install)
    : "${REPO_URL:?set REPO_URL to the git URL of the repository}"
    remote='set -e; sudo apt-get -q update; sudo apt-get -q install -y python3-venv git nfs-common'
    remote+="; [ -d emobed-jax ] || git clone -q $(q "$REPO_URL") emobed-jax"
    remote+="; cd emobed-jax; git fetch -q; git checkout -q $(q "$REPO_REF")"
    remote+='; python3 -m venv .venv; .venv/bin/pip install -q -e ".[tpu]"'
    remote+='; .venv/bin/python -c "import jax; print(jax.process_index(), jax.devices())"'
    all "$remote"
    ;;
  mount)
    : "${NFS:?set NFS to the Filestore share, e.g. 10.0.0.2:/emobed}"
    remote="set -e; sudo mkdir -p $(q "$SHARED"); mountpoint -q $(q "$SHARED")"
    remote+=" || sudo mount -t nfs -o rw,hard $(q "$NFS") $(q "$SHARED")"
    all "$remote"
    ;;
  train)
    : "${WORKDIR:?set WORKDIR to the run folder under SHARED}"
    # nohup, a log and a pid file per worker: the run outlives the ssh session.
    w=$(q "$WORKDIR")
    remote="cd emobed-jax; mkdir -p $w; nohup .venv/bin/python launch/train.py"
    remote+=" --workdir=$w $(q "$@") > $w/log.\$(hostname).txt 2>&1 &"
    remote+=" echo \$! > $w/pid.\$(hostname); echo started on \$(hostname)"
    all "$remote"
    ;;
  logs)
    : "${WORKDIR:?set WORKDIR as for train}"
    gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=0 \
      --command="tail -n 50 -F $(q "$WORKDIR")/log.*.txt"
    ;;
  stop)  # SIGTERM to each worker's run: all checkpoint at one step, exit 75; train resumes
    : "${WORKDIR:?set WORKDIR as for train}"
    all "kill -TERM \$(cat $(q "$WORKDIR")/pid.\$(hostname))"
    ;;
  delete)
    gcloud compute tpus tpu-vm delete "$TPU_NAME" --zone="$ZONE" --quiet
    ;;
  *)
    echo "usage: $0 create|install|mount|train [flags]|logs|stop|delete (see its header)" >&2
    exit 2
    ;;
esac
