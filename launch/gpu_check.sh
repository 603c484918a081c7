#!/usr/bin/env bash
# One prepared GPU check: the recurrence kernels, then the train/eval
# benchmark (JAX vs PyTorch), < 7 min.
#
# Run from the repository root on a CUDA machine whose Python already has
# jax[cuda], flax, optax, numpy, absl-py (and optionally torch with CUDA)
# installed from carried wheels; the project itself is taken from the
# current directory (no install, no network):
#
#   OUT=/some/dir bash launch/gpu_check.sh
#
# First launch/check_kernels.py compares --rnn_impl=pallas and wavefront
# with scan (values and gradients) on this GPU.  Then it compares, on
# training shapes B x T = 32x300 and 128x300 (settings mono and emobed) and
# on evaluation of whole 7501-frame recordings (B=1, 9):
#   jit:scan       - lax.scan loops (rnn_kernels.lstm_layer), unroll 1,
#   jit:scan_u8    - the same with unroll=8,
#   jit:pallas     - one Pallas (Triton) kernel per layer and pass,
#   jit:wavefront_u8 - both layers in one scan (rnn_kernels.lstm_stack), unroll 8,
#   PyTorch        - nn.LSTM on CUDA (cuDNN), if torch with CUDA imports.
# Writes $OUT/kernels.txt, $OUT/benchmark.json (rewritten after every row,
# so a cut-short run keeps what it measured), $OUT/benchmark.txt (the
# table) and $OUT/env.txt.
set -uo pipefail

OUT="${OUT:-runs/gpu_check}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
LIMIT_S="${LIMIT_S:-300}"   # hard stop for the benchmark itself

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

timeout --signal=INT --kill-after=10 90 \
  "$PY" launch/check_kernels.py --shapes=21x50,32x300,9x2000 2>&1 \
  | grep -v "Unable to initialize backend 'tpu'" | tee "$OUT/kernels.txt"

timeout --signal=INT --kill-after=10 "$LIMIT_S" \
  "$PY" launch/benchmark.py \
    --settings=mono,emobed \
    --shapes=32x300,128x300 \
    --variants="${VARIANTS:-jit:scan,jit:scan_u8,jit:pallas,jit:wavefront_u8}" \
    --eval_batches=1,9 \
    --eval_repeats=4 \
    --rounds=4 --steps_per_round=5 --warmup=2 \
    --equiv_rtol=2e-2 \
    --peak_size=8192 \
    --json_out="$OUT/benchmark.json" 2>&1 | grep -v "Unable to initialize backend 'tpu'" \
  | tee "$OUT/benchmark.txt"
status=${PIPESTATUS[0]}
echo "benchmark exit status: $status" | tee -a "$OUT/benchmark.txt"
rm -rf "$SHIM"
exit "$status"
