"""emobed-jax: EmoBed (Han, Zhang, Ren, Schuller, IEEE Trans. Affective
Computing 2021) in JAX/Flax.  See README.md and docs/."""

import importlib.metadata

try:
  __version__ = importlib.metadata.version("emobed-jax")
except importlib.metadata.PackageNotFoundError:  # a source tree that is not installed
  __version__ = "0+unknown"
