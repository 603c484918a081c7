#!/usr/bin/env bash
# One prepared GPU check: the recurrence kernels, then the train/eval
# benchmark (JAX vs PyTorch), < 7 min on an H200.
#
# Run from the repository root on a CUDA machine whose Python already has
# jax[cuda], flax, optax, numpy, absl-py (and optionally torch with CUDA)
# installed from carried wheels; the project itself is taken from the
# current directory (no install, no network):
#
#   OUT=/some/dir bash launch/gpu_check.sh
#
# First the training-loop rows (issue 11): frames/s of the real loop
# (train._train_loop: data, step, logging; real widths 176/336) with each feed
# -- serial (grain batches read in the loop, as before), prefetch (what
# train_and_evaluate does now) and device_windows (the split on the GPU, the
# windows cut inside the step) -- beside the same step alone, B=32 and 128,
# mono and emobed.  Then launch/check_kernels.py compares --rnn_impl=pallas
# and wavefront with scan (values and gradients) on this GPU.  Then it compares, on
# training shapes B x T = 32x300 and 128x300 (settings mono and emobed) and
# on evaluation of whole 7501-frame recordings (B=1, 9):
#   jit:pallas     - both layers in one Pallas (Triton) kernel per pass
#                    (rnn_impl=auto on a GPU),
#   jit:wavefront_u8 - both layers in one lax.scan (rnn_kernels.lstm_stack), unroll 8,
#   PyTorch        - nn.LSTM on CUDA (cuDNN), if torch with CUDA imports.
# (VARIANTS=... overrides the list: MODE:RNN with RNN an --rnn_impl value or
# flax_cell, _u<N> for unroll=N, e.g. jit:scan,jit:scan_u8,jit:flax_cell.)
# Writes $OUT/env.txt, $OUT/loop.{json,txt}, $OUT/kernels.txt,
# $OUT/benchmark{,_emobed}.{json,txt}.
set -uo pipefail

OUT="${OUT:-runs/gpu_check}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
LIMIT_S="${LIMIT_S:-210}"   # hard stop for the first benchmark run

# Import the project from this checkout without putting the repo root on
# sys.path (./datasets would shadow Hugging Face's `datasets`).
SHIM="$(mktemp -d)"
ln -s "$PWD/emobed_jax" "$SHIM/emobed_jax"
export PYTHONPATH="$SHIM${PYTHONPATH:+:$PYTHONPATH}"
export XLA_PYTHON_CLIENT_PREALLOCATE=false

{
  echo "date: $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 || true
  "$PY" - <<'EOF' 2>&1
import importlib
for name in ("jax", "jaxlib", "flax", "optax", "numpy", "torch"):
  try:
    m = importlib.import_module(name)
    print(name, getattr(m, "__version__", "?"))
  except Exception as e:  # noqa: BLE001
    print(name, "not importable:", type(e).__name__, e)
try:
  import jax
  print("jax backend:", jax.default_backend(), jax.devices())
except Exception as e:  # noqa: BLE001
  print("jax devices: failed:", e)
try:
  import torch
  print("torch cuda:", torch.cuda.is_available(), torch.version.cuda,
        "cudnn", torch.backends.cudnn.version())
except Exception as e:  # noqa: BLE001
  print("torch: not usable:", e)
EOF
} | tee "$OUT/env.txt"

# The loop rows first (JAX only, no train/eval rows): LOOP_RNN is the step's
# --rnn_impl (default pallas, what auto picks on a GPU).
timeout --signal=INT --kill-after=10 "${LOOP_LIMIT_S:-150}" \
  "$PY" launch/benchmark.py --torch=false --variants="jit:${LOOP_RNN:-pallas}" \
    --settings=mono,emobed --shapes=32x300,128x300 --loop_steps=40 --loop_rounds=2 \
    --only_loop --json_out="$OUT/loop.json" 2>&1 \
  | grep -v "Unable to initialize backend 'tpu'" | tee "$OUT/loop.txt"

timeout --signal=INT --kill-after=10 90 \
  "$PY" launch/check_kernels.py --shapes=21x50,9x2000 2>&1 \
  | grep -v "Unable to initialize backend 'tpu'" | tee "$OUT/kernels.txt"

# Two benchmark runs, the most wanted rows first (each JSON is rewritten after
# every row group, so a run cut short keeps what it measured):
#   1. mono training at both shapes and evaluation of whole recordings;
#   2. emobed training at both shapes.
bench() {  # NAME LIMIT ARGS...
  local name="$1" limit="$2"; shift 2
  timeout --signal=INT --kill-after=10 "$limit" \
    "$PY" launch/benchmark.py \
      --variants="${VARIANTS:-jit:pallas,jit:wavefront_u8}" \
      --shapes=32x300,128x300 \
      --eval_repeats=4 \
      --rounds=4 --steps_per_round=5 --warmup=2 \
      --equiv_rtol=2e-2 \
      --peak_size=8192 \
      --json_out="$OUT/$name.json" "$@" 2>&1 \
    | grep -v "Unable to initialize backend 'tpu'" | tee "$OUT/$name.txt"
  local st=${PIPESTATUS[0]}
  echo "$name exit status: $st" | tee -a "$OUT/$name.txt"
  return "$st"
}
bench benchmark "$LIMIT_S" --settings=mono --eval_batches=1,9
status=$?
bench benchmark_emobed 150 --settings=emobed --eval_batches= || status=$?
rm -rf "$SHIM"
exit "$status"
