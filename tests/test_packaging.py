"""Packaging guards: every package is installed, and ./datasets never shadows `datasets`."""

import configparser
import importlib.util

import emobed_datasets
from conftest import REPO_ROOT


def _listed_packages():
  cfg = configparser.ConfigParser()
  cfg.read(REPO_ROOT / "setup.cfg")
  return set(cfg["options"]["packages"].split())


def test_every_package_folder_is_listed_in_setup_cfg():
  # An explicit `packages =` list silently drops a new subpackage from a
  # regular (non-editable) install: every folder with an __init__.py must be there.
  found = set()
  for top, name in (("emobed_jax", "emobed_jax"), ("datasets", "emobed_datasets")):
    for init in (REPO_ROOT / top).rglob("__init__.py"):
      rel = init.parent.relative_to(REPO_ROOT / top).parts
      found.add(".".join((name,) + rel))
  assert found == _listed_packages()


def test_builders_import_as_emobed_datasets_not_datasets():
  assert emobed_datasets.__file__.startswith(str(REPO_ROOT / "datasets"))
  spec = importlib.util.find_spec("datasets")
  # Either Hugging Face's `datasets` (installed) or nothing -- never ./datasets.
  assert spec is None or not str(spec.origin).startswith(str(REPO_ROOT / "datasets"))
