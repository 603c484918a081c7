"""Test setup: 8 fake CPU devices, and no shadowing of Hugging Face `datasets`.

XLA_FLAGS must be set before JAX is imported anywhere, so this runs first.
"""
import os
import sys
import tempfile
from pathlib import Path

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# JAX's persistent compilation cache, shared by the test processes of this
# machine (pytest workers and the launch/ subprocesses they start): many tests
# build the same small models, and a program compiled once is loaded, not
# compiled again.  Keyed by the program, JAX version and flags, so a changed
# program never hits a stale entry.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
    tempfile.gettempdir(), f"emobed-jax-test-xla-cache-{os.getuid()}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")

# Running `python -m pytest` from the repo root puts the root on sys.path, and
# then `import datasets` would find ./datasets (our builders, installed as
# `emobed_datasets`).  Drop the root so imports resolve to installed packages.
_ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _ROOT]

REPO_ROOT = _ROOT


import pytest  # noqa: E402


@pytest.fixture(scope="module")
def fast_compile():
  """XLA with most optimisations off, for a test module that times nothing and
  whose assertions do not depend on them: compiles take about 40% less time.
  Use with ``pytestmark = pytest.mark.usefixtures("fast_compile")``."""
  import jax
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", False)


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory):
  """A small demo corpus (launch_support.SMALL), prepared where
  `--dataset=demo --data_dir=...` looks.  Read-only for tests."""
  from emobed_datasets import demo
  from launch_support import SMALL
  d = tmp_path_factory.mktemp("data")
  demo.prepare_demo(d, 0, **SMALL)
  return d


@pytest.fixture
def cli(capsys):
  """``cli(*args)`` runs ``launch/train.py args`` in this process (8
  devices) and returns its exit status, stdout and stderr."""
  from launch_support import Result, main_in_process

  def call(*args):
    code = main_in_process(*args)
    out, err = capsys.readouterr()
    return Result(code, out, err)
  return call
