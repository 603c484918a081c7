"""Tests of launch/prepare_data.py, run as users run it (a subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from emobed_datasets import demo, recola

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = "launch/prepare_data.py"


def _run(*args: str, env: dict[str, str] | None = None,
         timeout: float = 120) -> subprocess.CompletedProcess:
  full_env = dict(os.environ)
  full_env.update(env or {})
  return subprocess.run(
      [sys.executable, SCRIPT, *args], cwd=REPO_ROOT, env=full_env,
      capture_output=True, text=True, timeout=timeout)


def _assert_user_error(result: subprocess.CompletedProcess, *fragments: str):
  assert result.returncode == 1, (result.stdout, result.stderr)
  assert "Traceback" not in result.stderr
  lines = [l for l in result.stderr.splitlines() if l.strip()]
  assert len(lines) == 1, result.stderr
  assert lines[0].startswith("error: "), lines[0]
  for fragment in fragments:
    assert fragment in lines[0], lines[0]


def test_missing_manual_dir_is_one_line_error(tmp_path):
  missing = tmp_path / "no_such_package"
  result = _run("--dataset=recola", f"--manual_dir={missing}",
                f"--data_dir={tmp_path / 'data'}")
  _assert_user_error(result, str(missing), "expected")
  assert not (tmp_path / "data" / "recola" / "1.0.0").exists()


def test_malformed_package_is_one_line_error(tmp_path):
  manual = demo.write_demo_corpus(tmp_path / "pkg", num_train=1, num_dev=1,
                                  num_test=1, num_frames=30,
                                  feature_sets=("audio",))
  bad = manual / "features_audio" / "valence" / "dev_1.arff"
  bad.write_text(bad.read_text().replace("dev_1,0.04,", "dev_1,0.04,xyz,", 1))
  result = _run("--dataset=recola", f"--manual_dir={manual}",
                f"--data_dir={tmp_path / 'data'}")
  _assert_user_error(result, str(bad), "expected")


def test_recola_without_manual_dir_flag(tmp_path):
  result = _run("--dataset=recola", f"--data_dir={tmp_path}")
  _assert_user_error(result, "--manual_dir")


def test_prepares_into_env_data_dir_and_is_idempotent(tmp_path):
  manual = demo.write_demo_corpus(tmp_path / "pkg", num_train=2, num_dev=1,
                                  num_test=1, num_frames=40,
                                  feature_sets=("audio", "ecg"))
  data_dir = tmp_path / "env_data"
  env = {"EMOBED_DATA_DIR": str(data_dir)}
  result = _run("--dataset=recola", f"--manual_dir={manual}", env=env)
  assert result.returncode == 0, result.stderr
  assert "train: 2 recordings, dev: 1 recordings, test: 1 recordings" in (
      result.stdout)
  assert "feature sets: audio, ecg" in result.stdout
  assert recola.is_prepared(data_dir)
  stamp = (recola.prepared_path(data_dir) / "dataset_info.json").stat()
  again = _run("--dataset=recola", f"--manual_dir={manual}", env=env)
  assert again.returncode == 0, again.stderr
  assert "nothing to do" in again.stdout
  assert (recola.prepared_path(data_dir) / "dataset_info.json").stat(
  ).st_mtime_ns == stamp.st_mtime_ns


def test_unknown_dataset_flag_fails():
  result = _run("--dataset=imagenet")
  assert result.returncode != 0
  assert "Traceback" not in result.stderr


def test_flag_errors_are_one_line_exit_2_and_help_exits_0(tmp_path):
  for args, needle in ((["--dataset=demo", "--bogus"], "bogus"),
                       (["--dataset=demo", "stray"], "stray")):
    result = _run(*args)
    assert result.returncode == 2, result.stderr
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], lines
  result = _run("--help")
  assert result.returncode == 0 and "--manual_dir" in result.stdout and "RECOLA_DIR" in result.stdout


def test_recola_dir_is_the_default_manual_dir(tmp_path):
  missing = tmp_path / "from_env"
  result = _run("--dataset=recola", f"--data_dir={tmp_path / 'data'}",
                env={"RECOLA_DIR": str(missing)})
  _assert_user_error(result, str(missing))
