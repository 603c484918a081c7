"""The project's error for bad input data.

`DataError` is raised for anything a user can get wrong in the files they hand
to the project (a missing folder, a malformed ARFF file, inconsistent frame
counts, ...).  Its message is always a single line that names the file (and,
where it makes sense, the line) and says what was expected, so that command
line entry points can print ``error: <message>`` and exit without a traceback.
"""

from __future__ import annotations

import os

__all__ = ["DataError"]


class DataError(ValueError):
  """Bad input data, described in one line.

  Attributes:
    what: what was wrong / what was expected (one line).
    path: the offending file or folder, or None.
    line: 1-based line number inside `path`, or None.

  Examples:
    >>> str(DataError("expected 3 fields, found 2", path="a.arff", line=7))
    'a.arff:7: expected 3 fields, found 2'
    >>> str(DataError("learning rate must be > 0"))
    'learning rate must be > 0'
  """

  def __init__(
      self,
      what: str,
      *,
      path: str | os.PathLike[str] | None = None,
      line: int | None = None,
  ) -> None:
    self.what = _one_line(str(what))
    self.path = None if path is None else os.fspath(path)
    self.line = line
    super().__init__(self._format())

  def _format(self) -> str:
    if self.path is None:
      return self.what
    if self.line is None:
      return f"{self.path}: {self.what}"
    return f"{self.path}:{self.line}: {self.what}"

  def __reduce__(self):  # keeps the keyword arguments through pickling
    return (_rebuild, (self.what, self.path, self.line))


def _rebuild(what: str, path: str | None, line: int | None) -> DataError:
  return DataError(what, path=path, line=line)


def _one_line(text: str) -> str:
  """Collapses any line breaks so that the message stays on one line."""
  return " ".join(part.strip() for part in text.splitlines() if part.strip())
