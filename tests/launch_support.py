"""Running launch/train.py in tests: as a subprocess (the real command line)
or in this process (same parser and ``main``, no interpreter or JAX start-up)."""

import importlib.util
import json
import os
import subprocess
import sys

from conftest import REPO_ROOT
from emobed_jax import config as C

TRAIN = str(REPO_ROOT / "launch" / "train.py")
#: A small demo corpus and a fast model: 1 step per epoch at batch 8.
SMALL = dict(num_train=4, num_dev=2, num_test=1, num_frames=300)
FAST = ["--window=100", "--hop=50", "--batch_size=8", "--val_recordings=1", "--hidden=16",
        "--proj_dim=16", "--log_every=2"]

sys.path.insert(0, str(REPO_ROOT / "launch"))
_spec = importlib.util.spec_from_file_location("launch_train", TRAIN)
train_cli = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(train_cli)
import _cli  # noqa: E402  (launch/ is on sys.path now)


class Result:
  def __init__(self, returncode, stdout, stderr):
    self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def run(args, cwd=REPO_ROOT, timeout=300, env=None):
  """``python launch/train.py args`` in a subprocess (its own host devices)."""
  e = dict(os.environ)
  e.pop("XLA_FLAGS", None)  # the script sets up its own host devices
  e.update(env or {})
  return subprocess.run([sys.executable, TRAIN, *args], cwd=cwd, capture_output=True,
                        text=True, timeout=timeout, env=e)


def parse(*args):
  """Parse ``args`` as launch/train.py does; returns the arguments left."""
  train_cli.FLAGS.unparse_flags()
  return _cli.parse_argv(["train.py", *args], train_cli.USAGE, C.RunConfig,
                         train_cli.LAUNCHER, train_cli.FLAGS)


def parsed_config(*args):
  parse(*args)
  return _cli.config_from_flags(C.RunConfig, train_cli.FLAGS).validate()


def main_in_process(*args) -> int:
  """``launch/train.py args`` in this process (8 fake devices); its exit
  status.  XLA_FLAGS, which main() extends, is restored."""
  saved = os.environ.get("XLA_FLAGS", "")
  try:
    # The 8 host devices conftest set up (main() would otherwise ask for
    # one per core, which only applies if JAX has not started yet).
    train_cli.main(parse("--cpu_devices=8", *args, "--nomalloc_tuning"))
    return 0
  except SystemExit as e:
    return e.code
  finally:
    os.environ["XLA_FLAGS"] = saved


def read_jsonl(path):
  return [json.loads(line) for line in path.read_text().splitlines()]
