r"""Check the recurrence implementations against each other on this machine.

Runs one 2-layer LSTM encoder (``models.Encoder``, the project's parameters)
with every ``--impls`` implementation of ``ModelConfig.rnn_impl`` on the same
weights and masked inputs, and compares outputs and all parameter gradients
with ``scan``'s.  Use it on a new accelerator before training with
``--rnn_impl=pallas`` (the GPU default)::

  python launch/check_kernels.py                    # pallas, wavefront vs scan
  python launch/check_kernels.py --shapes=16x64,33x300

Prints one line per implementation and shape (largest output difference and
largest per-leaf gradient difference, both relative to the reference's
largest magnitude) and exits 1 if any exceeds ``--rtol`` (default: 1e-4 on
CPU; 2e-2 elsewhere, where dots run in TF32 by default).
"""

from __future__ import annotations

import time

import _cli  # first: the sys.path guard
import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from emobed_jax import models

FLAGS = _cli.script_flags()  # its own set: importable beside other scripts (tests)
_IMPLS = flags.DEFINE_list("impls", ["pallas", "wavefront"], "Implementations to check.",
                           flag_values=FLAGS)
_SHAPES = flags.DEFINE_list("shapes", ["21x50", "32x300"], "BxT shapes.", flag_values=FLAGS)
_HIDDEN = flags.DEFINE_integer("hidden", 64, "Hidden size.", flag_values=FLAGS)
_RTOL = flags.DEFINE_float("rtol", 0.0, "Tolerance (0 = by platform).", flag_values=FLAGS)


def encoder_outputs(impl: str, b: int, t: int, hidden: int):
  """Outputs and parameter gradients of a 2-layer encoder with ``impl`` on
  fixed masked inputs (the same for every impl), and the first call's
  seconds."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(b, t, 88)).astype(np.float32))
  lengths = rng.integers(1, t + 1, size=b)
  lengths[0] = t
  mask = jnp.asarray((np.arange(t)[None, :] < lengths[:, None]).astype(np.float32))
  r = jnp.asarray(rng.normal(size=(b, t, hidden)).astype(np.float32))
  enc = models.Encoder(hidden, hidden, 2, impl=impl)
  params = enc.init(jax.random.key(0), x, mask)

  def run(p):
    y = enc.apply(p, x, mask)
    return y, jax.grad(lambda q: jnp.sum(enc.apply(q, x, mask) * r))(p)

  t0 = time.perf_counter()
  y, g = jax.block_until_ready(jax.jit(run)(params))
  return np.asarray(y), jax.tree.map(np.asarray, g), time.perf_counter() - t0


def relative_differences(out, ref) -> tuple[float, float]:
  """(output, worst gradient leaf) differences, relative to ``ref``'s largest
  magnitude."""
  (y1, g1, _), (y0, g0, _) = out, ref
  dy = float(np.max(np.abs(y1 - y0)) / max(np.max(np.abs(y0)), 1e-12))
  dg = max(float(np.max(np.abs(a - c)) / max(np.max(np.abs(c)), 1e-12))
           for a, c in zip(jax.tree.leaves(g1), jax.tree.leaves(g0)))
  return dy, dg


def main(argv):
  _cli.start(argv, FLAGS)  # also: no absl INFO lines about absent TPUs
  platform = jax.default_backend()
  rtol = _RTOL.value or (1e-4 if platform == "cpu" else 2e-2)
  print(f"platform {platform} ({jax.devices()[0].device_kind}), jax {jax.__version__}, "
        f"rtol {rtol:g}", flush=True)
  bad = 0
  refs = {}   # scan's outputs, once per shape
  for impl in _IMPLS.value:
    for shape in _SHAPES.value:
      b, t = (int(v) for v in shape.lower().split("x"))
      try:
        if shape not in refs:
          refs[shape] = encoder_outputs("scan", b, t, _HIDDEN.value)
        out = encoder_outputs(impl, b, t, _HIDDEN.value)
        dy, dg = relative_differences(out, refs[shape])
        sec = out[2]
      except Exception as e:  # reported and counted, never hidden
        print(f"  {impl:10s} B={b:<4d} T={t:<5d} FAILED: {type(e).__name__}: {e}", flush=True)
        bad += 1
        continue
      ok = dy <= rtol and dg <= rtol
      bad += not ok
      print(f"  {impl:10s} B={b:<4d} T={t:<5d} output {dy:.2e}  gradients {dg:.2e}  "
            f"(first call {sec:.1f} s)  {'ok' if ok else 'MISMATCH'}", flush=True)
  print("PASS" if not bad else f"FAIL ({bad} case(s))")
  return 1 if bad else 0


if __name__ == "__main__":
  _cli.run_script(main, FLAGS)
