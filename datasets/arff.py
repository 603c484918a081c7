"""Reading and writing ARFF files (Weka's Attribute-Relation File Format).

The AVEC 2016 RECOLA package stores gold standards and features as dense ARFF
files such as::

    @relation GOLDSTANDARD
    @attribute Instance_name string
    @attribute frameTime numeric
    @attribute GoldStandard numeric
    @data
    dev_1,0,-0.022925
    dev_1,0.04,-0.022925

`read_arff` returns the numeric feature columns as a float32 matrix
``[rows, cols]``, plus the frame times and instance names when those columns
exist.

What the reader accepts:

* ``%`` comment lines and blank lines anywhere; case-insensitive keywords
  (``@RELATION``, ``@Attribute``, ``NUMERIC``); names and values quoted with
  ``'`` or ``"`` (backslash escapes, ``\\n``/``\\r``/``\\t`` among them);
* every line-ending convention: ``\\n`` (Unix), ``\\r\\n`` (Windows) and a lone
  ``\\r`` (classic Mac), also mixed within one file;
* ASCII or UTF-8 text, with or without a UTF-8 byte-order mark (it is
  skipped); bytes that are not UTF-8 are read as Latin-1 (they can only occur
  in names and string values, which are not interpreted);
* a first data row written on the ``@data`` line itself (``@data x,0,1``):
  it is read as a row, reported at the ``@data`` line's number;
* openSMILE's own ARFF layout (``cArffSink``): its bookkeeping columns
  ``name`` (string), ``frameIndex`` and ``frameTime`` before the features and
  its trailing ``class[]`` attributes after them, whatever their type
  (``@attribute emotion unknown``, ``@attribute class {0,1,2,3}``);
* attribute types ``numeric``/``real``/``integer``, ``string``, ``date`` and
  nominal ``{a,b,c}``, and any other type word for a column that is not read
  (e.g. openSMILE's ``unknown``): such a column is ignored, its values are
  not looked at.

Which columns are features: every numeric attribute except the bookkeeping
ones named in `drop` (by default ``Instance_name``, ``name``, ``frameIndex``,
``frameTime``) and except trailing class attributes (the numeric attributes
named ``class`` or ``emotion``, any case, at the end of the attribute list).
``frameTime`` is returned as `ArffTable.frame_time`; the instance name comes
from ``Instance_name``, else from openSMILE's string attribute ``name``.

Policy on errors: every problem raises `DataError` (a `ValueError`) whose one
line message names the file, the 1-based line number and what was expected;
no row is ever skipped silently.  Refused, in particular: UTF-16 and UTF-32
files and other binary content (NUL bytes), with the encoding named; ARFF's
missing value ``?`` in a column that is read (the corpora used here have
none, and silently imputing would hide a broken export; in an ignored column
it is fine); non-finite numbers (``nan``, ``inf``) unless
``allow_nonfinite=True``; numbers that round to infinity in float32 (beyond
about 3.4028235e38; named with the attribute and its column); numbers not
written as ASCII decimals (``0x10``, ``1_000``); sparse rows
(``{0 1.5, 3 2}``); and relational attributes.

Speed: the data section is parsed with one vectorised `numpy.loadtxt` call;
only when that fails (or when the section contains quotes, ``?`` or braces)
does the reader fall back to a per-line parser, which finds the offending line
for the error message.  A 7501 x 88 feature file reads in about 0.1 s.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from emobed_datasets.errors import DataError

__all__ = ["ArffTable", "read_arff", "write_arff", "NUMERIC_TYPES",
           "BOOKKEEPING_ATTRIBUTES", "CLASS_ATTRIBUTES"]

#: ARFF type keywords that denote a numeric attribute (lower case).
NUMERIC_TYPES = frozenset({"numeric", "real", "integer"})
#: Columns that describe a row rather than measure it (AVEC's Instance_name
#: and frameTime, openSMILE's name, frameIndex and frameTime).
BOOKKEEPING_ATTRIBUTES: tuple[str, ...] = (
    "Instance_name", "name", "frameIndex", "frameTime")
#: Names (lower case) of class attributes that openSMILE appends after the
#: features: its dummy ``class`` and the ``emotion`` of
#: ``standard_data_output.conf.inc``.  Dropped when numeric and trailing.
CLASS_ATTRIBUTES = frozenset({"class", "emotion"})

_DEFAULT_DROP = BOOKKEEPING_ATTRIBUTES
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_QUOTES = "'\""
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t"}
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
# A number as the per-line parser accepts it (the same set as numpy.loadtxt:
# ASCII digits, optional sign, fraction and exponent; nan/inf words).
_NUMBER = re.compile(
    r"[+-]?(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
    r"|(?i:nan|inf|infinity))")
_INF_WORD = re.compile(r"[+-]?(?i:inf|infinity)")
# A whole field that is a quoted token with no comma, backslash, whitespace
# or quote inside; `_SIMPLE_QUOTED.sub(_UNQUOTE, text)` removes its quotes.
# (Quoted whitespace is kept as written, which the per-line parser does.)
_SIMPLE_QUOTED = re.compile(
    r"""(^|,)([ \t]*)(['"])([^'",\\\s]*)\3(?=[ \t]*(?:,|$))""", re.MULTILINE)
_UNQUOTE = r"\1\2\4"


@dataclasses.dataclass(frozen=True)
class ArffTable:
  """The content of one dense ARFF file.

  Attributes:
    path: the file that was read.
    relation: the ``@relation`` name.
    attributes: every declared attribute as ``(name, type)`` in file order;
      type is one of ``'numeric'`` (numeric/real/integer), ``'string'``,
      ``'date'``, ``'nominal'``, or ``'other'`` (a type this reader does not
      know, e.g. openSMILE's ``unknown``; such a column is never read).
    names: names of the kept numeric columns, in file order (``cols`` names).
    data: float32 ``[rows, cols]``, the kept numeric columns.
    frame_time: float64 ``[rows]`` from a numeric ``frameTime`` attribute, or
      None when the file has no such attribute.
    instance_names: ``rows`` strings from an ``Instance_name`` attribute (else
      openSMILE's string attribute ``name``), or None when there is neither.
    data_line_numbers: int64 ``[rows]``, the 1-based line of each data row.
    ignored: names of the declared attributes that are not in ``names``
      (bookkeeping, class, string, nominal, date and unknown-type columns).
  """

  path: str
  relation: str
  attributes: list[tuple[str, str]]
  names: list[str]
  data: np.ndarray
  frame_time: np.ndarray | None
  instance_names: list[str] | None
  data_line_numbers: np.ndarray
  ignored: tuple[str, ...] = ()

  @property
  def num_rows(self) -> int:
    """Number of data rows."""
    return int(self.data.shape[0])


# ----------------------------------------------------------------------------
# Reading.


def read_arff(
    path: str | os.PathLike[str],
    *,
    expected_numeric: int | None = None,
    drop: Sequence[str] = _DEFAULT_DROP,
    allow_nonfinite: bool = False,
) -> ArffTable:
  """Reads a dense ARFF file and returns its numeric feature columns.

  Args:
    path: the ARFF file.
    expected_numeric: if given, the number of feature columns that must be
      kept (numeric attributes whose names are not in `drop`, trailing class
      attributes excepted).
    drop: attribute names that are never returned as data columns
      (``frameTime`` is still returned separately as `ArffTable.frame_time`).
    allow_nonfinite: accept ``nan``/``inf`` values in kept columns (frame
      times must always be finite; float32 overflow is always an error).

  Returns:
    An `ArffTable`; ``data`` is float32 ``[rows, cols]``.

  Raises:
    DataError: the file cannot be read or is not a dense ARFF file of the
      expected shape; the message names the file, line and expectation.
  """
  path_str = os.fspath(path)
  lines = _read_lines(path_str)
  header = _parse_header(path_str, lines)
  drop_set = set(drop)
  class_cols = _trailing_class_columns(header.attributes)
  kept = [
      i for i, (name, kind, _) in enumerate(header.attributes)
      if kind == "numeric" and name not in drop_set and i not in class_cols
  ]
  names = [header.attributes[i][0] for i in kept]
  if expected_numeric is not None and len(kept) != expected_numeric:
    raise DataError(
        _count_message(expected_numeric, header, kept, drop_set),
        path=path_str, line=header.data_line)
  time_col = _find_attribute(header.attributes, "frameTime", ("numeric",))
  name_col = _find_attribute(header.attributes, "Instance_name", None)
  if name_col is None:
    name_col = _find_attribute(header.attributes, "name", ("string",))
  used = set(kept) | {c for c in (time_col, name_col) if c is not None}

  data_lines: list[str] = []
  line_numbers: list[int] = []
  if header.inline_row is not None:
    data_lines.append(header.inline_row)
    line_numbers.append(header.data_line)
  for number in range(header.data_line + 1, len(lines) + 1):
    stripped = lines[number - 1].strip()
    if stripped and not stripped.startswith("%"):
      data_lines.append(stripped)
      line_numbers.append(number)

  numeric_cols = kept + ([time_col] if time_col is not None else [])
  parsed = _parse_data_fast(data_lines, len(header.attributes), numeric_cols)
  if parsed is None:
    values, instance_names = _parse_data_slow(
        path_str, header, data_lines, line_numbers, numeric_cols, name_col,
        used)
  else:
    values, unquoted_lines = parsed
    instance_names = None
    if name_col is not None:
      instance_names = _column_fast(unquoted_lines, name_col)

  line_array = np.asarray(line_numbers, dtype=np.int64)
  _check_values(path_str, header, values, numeric_cols, data_lines,
                line_array, len(kept), allow_nonfinite)
  data = values[:, : len(kept)].astype(np.float32)
  frame_time = values[:, len(kept)].copy() if time_col is not None else None
  kept_set = set(kept)
  return ArffTable(
      path=path_str,
      relation=header.relation,
      attributes=[(name, kind) for name, kind, _ in header.attributes],
      names=names,
      data=data,
      frame_time=frame_time,
      instance_names=instance_names,
      data_line_numbers=line_array,
      ignored=tuple(name for i, (name, _, _) in enumerate(header.attributes)
                    if i not in kept_set),
  )


@dataclasses.dataclass(frozen=True)
class _Header:
  relation: str
  attributes: list[tuple[str, str, str]]  # (name, kind, type as written)
  data_line: int  # 1-based line number of the @data line
  inline_row: str | None  # a data row written on the @data line itself


def _read_lines(path: str) -> list[str]:
  """Returns the file's lines without their line endings (LF, CRLF or CR)."""
  try:
    raw = Path(path).read_bytes()
  except FileNotFoundError:
    raise DataError("file not found, expected an ARFF file", path=path) from None
  except IsADirectoryError:
    raise DataError("is a folder, expected an ARFF file", path=path) from None
  except OSError as e:
    raise DataError(f"cannot read ARFF file ({e.strerror})", path=path) from None
  _check_encoding(path, raw)
  if raw.startswith(b"\xef\xbb\xbf"):  # UTF-8 byte-order mark: accepted.
    raw = raw[3:]
  try:
    text = raw.decode("utf-8")
  except UnicodeDecodeError:
    text = raw.decode("latin-1")  # ARFF from openSMILE is ASCII; be lenient.
  return _LINE_BREAK.split(text)


_WIDE_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32 (little-endian) with a byte-order mark"),
    (b"\x00\x00\xfe\xff", "UTF-32 (big-endian) with a byte-order mark"),
    (b"\xff\xfe", "UTF-16 (little-endian) with a byte-order mark"),
    (b"\xfe\xff", "UTF-16 (big-endian) with a byte-order mark"),
)


def _check_encoding(path: str, raw: bytes) -> None:
  """Refuses UTF-16/UTF-32 and other binary content, naming what it is."""
  fix = "expected ASCII or UTF-8 text: convert it, e.g. `iconv -f {} -t UTF-8`"
  for bom, what in _WIDE_BOMS:
    if raw.startswith(bom):
      raise DataError(f"encoded as {what}; {fix.format(what.split()[0])}",
                      path=path, line=1)
  nul = raw.find(b"\x00")
  if nul < 0:
    return
  line = len(_LINE_BREAK.findall(raw[:nul].decode("latin-1"))) + 1
  head = raw[:200]
  even, odd = head[0::2], head[1::2]
  if len(head) >= 4 and odd.count(0) > len(odd) // 2 and not even.count(0):
    raise DataError("looks like UTF-16 (little-endian) without a byte-order "
                    f"mark (NUL bytes); {fix.format('UTF-16LE')}",
                    path=path, line=line)
  if len(head) >= 4 and even.count(0) > len(even) // 2 and not odd.count(0):
    raise DataError("looks like UTF-16 (big-endian) without a byte-order "
                    f"mark (NUL bytes); {fix.format('UTF-16BE')}",
                    path=path, line=line)
  raise DataError("NUL byte: binary data, expected an ARFF text file (ASCII "
                  "or UTF-8)", path=path, line=line)


def _parse_header(path: str, lines: list[str]) -> _Header:
  """Parses @relation / @attribute lines up to and including @data."""
  relation: str | None = None
  attributes: list[tuple[str, str, str]] = []
  seen: set[str] = set()
  last_content = 0
  for number, line in enumerate(lines, start=1):
    stripped = line.strip()
    if not stripped or stripped.startswith("%"):
      continue
    last_content = number
    if not stripped.startswith("@"):
      raise DataError(
          f"expected @relation, @attribute or @data, found {_clip(stripped)!r}",
          path=path, line=number,
      )
    keyword, rest = _split_keyword(stripped)
    if keyword == "@relation":
      if relation is not None:
        raise DataError("a second @relation line", path=path, line=number)
      if attributes:
        raise DataError("@relation after @attribute", path=path, line=number)
      relation, _ = _take_name(path, number, rest)
    elif keyword == "@attribute":
      if relation is None:
        raise DataError("expected @relation before the first @attribute",
                        path=path, line=number)
      name, type_spec = _take_name(path, number, rest)
      kind = _attribute_kind(path, number, name, type_spec)
      if name in seen:
        raise DataError(f"attribute {name!r} declared twice", path=path,
                        line=number)
      seen.add(name)
      written = type_spec.split()[0] if type_spec.split() else ""
      attributes.append((name, kind, written))
    elif keyword == "@data":
      if relation is None:
        raise DataError("expected @relation before @data", path=path,
                        line=number)
      if not attributes:
        raise DataError("expected @attribute lines before @data", path=path,
                        line=number)
      inline = rest.strip()
      if not inline or inline.startswith("%"):
        inline = None
      return _Header(relation, attributes, number, inline)
    else:
      raise DataError(
          f"unknown keyword {keyword!r}, expected @relation, @attribute or "
          "@data", path=path, line=number,
      )
  if last_content == 0:
    raise DataError("empty file, expected an ARFF header (@relation, "
                    "@attribute ..., @data)", path=path, line=1)
  raise DataError("no @data line, expected '@data' after the @attribute lines",
                  path=path, line=len(lines))


def _split_keyword(line: str) -> tuple[str, str]:
  """``'@ATTRIBUTE x real'`` -> ``('@attribute', 'x real')``."""
  parts = line.split(None, 1)
  return parts[0].lower(), parts[1] if len(parts) > 1 else ""


def _take_name(path: str, number: int, text: str) -> tuple[str, str]:
  """Splits a (possibly quoted) name off the front of `text`."""
  text = text.strip()
  if not text:
    raise DataError("expected a name after the keyword", path=path, line=number)
  if text[0] in _QUOTES:
    value, end = _read_quoted(text, 0)
    if end < 0:
      raise DataError(f"unterminated quote in {_clip(text)!r}", path=path,
                      line=number)
    return value, text[end:].strip()
  parts = text.split(None, 1)
  name = parts[0]
  rest = parts[1] if len(parts) > 1 else ""
  if "{" in name:  # `name{a,b}` without a space before the brace.
    name, brace, tail = name.partition("{")
    rest = brace + tail + (" " + rest if rest else "")
  return name, rest.strip()


def _attribute_kind(path: str, number: int, name: str, spec: str) -> str:
  """``'numeric'``, ``'string'``, ``'date'``, ``'nominal'`` or ``'other'``."""
  lowered = spec.strip().lower()
  if not lowered:
    raise DataError(f"attribute {name!r} has no type, expected numeric, "
                    "string, date or {...}", path=path, line=number)
  if lowered.startswith("{"):
    if not lowered.rstrip().endswith("}"):
      raise DataError(f"attribute {name!r}: unterminated nominal set "
                      f"{_clip(spec)!r}", path=path, line=number)
    return "nominal"
  word = lowered.split()[0]
  if word in NUMERIC_TYPES:
    return "numeric"
  if word in ("string", "date"):
    return word
  if word == "relational":
    raise DataError(f"attribute {name!r} is relational; relational "
                    "attributes are not supported, expected a flat table",
                    path=path, line=number)
  return "other"  # e.g. openSMILE's `unknown`: fine for a column not read.


def _trailing_class_columns(attributes: list[tuple[str, str, str]]) -> set[int]:
  """Indices of the trailing numeric class attributes (openSMILE class[])."""
  found: set[int] = set()
  for i in range(len(attributes) - 1, -1, -1):
    name, kind, _ = attributes[i]
    if kind == "numeric" and name.lower() in CLASS_ATTRIBUTES:
      found.add(i)
    elif kind == "numeric":
      break
  return found


def _count_message(expected: int, header: _Header, kept: list[int],
                   drop: set[str]) -> str:
  """Why the number of feature columns is not `expected`, with hints."""
  names = [name for name, _, _ in header.attributes]
  skipped = [n for n in BOOKKEEPING_ATTRIBUTES if n in names and n in drop]
  skipped += [n for n in drop if n in names and n not in skipped]
  message = (f"expected {expected} numeric attributes (not counting "
             f"{', '.join(skipped) or 'bookkeeping columns'}), the header "
             f"declares {len(kept)}")
  unknown = [f"{name} ({written})" for name, kind, written in header.attributes
             if kind == "other"]
  if unknown and len(kept) < expected:
    message += f"; ignored as of unknown type: {_clip(', '.join(unknown), 80)}"
  if kept and len(kept) > expected and kept[-1] == len(names) - 1:
    message += (f"; if the last attribute {names[-1]!r} is a class or target "
                "column (e.g. openSMILE's class[] output), remove it from the "
                "file")
  return message


def _read_quoted(text: str, start: int) -> tuple[str, int]:
  """Reads a quoted token at `start`; returns (value, index after it) or -1."""
  quote = text[start]
  out: list[str] = []
  i = start + 1
  n = len(text)
  while i < n:
    c = text[i]
    if c == "\\" and i + 1 < n:
      out.append(_ESCAPES.get(text[i + 1], text[i + 1]))
      i += 2
    elif c == quote:
      return "".join(out), i + 1
    else:
      out.append(c)
      i += 1
  return "".join(out), -1


def _find_attribute(
    attributes: list[tuple[str, str, str]], name: str,
    kinds: tuple[str, ...] | None,
) -> int | None:
  for i, (attr_name, attr_kind, _) in enumerate(attributes):
    if attr_name == name and (kinds is None or attr_kind in kinds):
      return i
  return None


def _parse_data_fast(
    data_lines: list[str], num_fields: int, numeric_cols: list[int]
) -> tuple[np.ndarray, list[str]] | None:
  """Vectorised parse of the numeric columns; None if anything is unusual.

  Returns float64 ``[rows, len(numeric_cols)]`` and the data lines with
  simple quotes removed, or None, in which case the slow path must run (it
  either finds the bad line or handles the unusual quoting).
  """
  if not data_lines:
    return np.zeros((0, len(numeric_cols)), np.float64), data_lines
  body = "\n".join(data_lines)
  if "'" in body or '"' in body:
    # Common case: fields such as 'train_1' whose quotes can simply go.
    body = _SIMPLE_QUOTED.sub(_UNQUOTE, body)
    data_lines = body.split("\n")
  if any(c in body for c in "'\"?{"):
    return None
  separators = num_fields - 1
  if any(line.count(",") != separators for line in data_lines):
    return None
  if not numeric_cols:
    return np.zeros((len(data_lines), 0), np.float64), data_lines
  try:
    values = np.loadtxt(
        data_lines, delimiter=",", usecols=numeric_cols, dtype=np.float64,
        comments=None, ndmin=2, quotechar=None,
    )
  except (ValueError, TypeError, OverflowError):
    return None
  if values.shape != (len(data_lines), len(numeric_cols)):
    return None
  return values, data_lines


def _column_fast(data_lines: list[str], col: int) -> list[str]:
  if col == 0:
    return [line.partition(",")[0].strip() for line in data_lines]
  return [line.split(",", col + 1)[col].strip() for line in data_lines]


def _split_fields(line: str) -> list[tuple[str, bool]] | None:
  """Splits a data line into (value, was_quoted) fields; None if malformed."""
  if "'" not in line and '"' not in line:
    return [(field.strip(), False) for field in line.split(",")]
  fields: list[tuple[str, bool]] = []
  i = 0
  n = len(line)
  while True:
    while i < n and line[i] in " \t":
      i += 1
    if i < n and line[i] in _QUOTES:
      value, i = _read_quoted(line, i)
      if i < 0:
        return None
      while i < n and line[i] in " \t":
        i += 1
      if i < n and line[i] != ",":
        return None
      fields.append((value, True))
    else:
      j = line.find(",", i)
      if j < 0:
        j = n
      fields.append((line[i:j].strip(), False))
      i = j
    if i >= n:
      return fields
    i += 1  # the comma


def _parse_data_slow(
    path: str,
    header: _Header,
    data_lines: list[str],
    line_numbers: list[int],
    numeric_cols: list[int],
    name_col: int | None,
    used: set[int],
) -> tuple[np.ndarray, list[str] | None]:
  """Per-line parse that names the first offending line in its error."""
  num_fields = len(header.attributes)
  values = np.zeros((len(data_lines), len(numeric_cols)), np.float64)
  names: list[str] | None = [] if name_col is not None else None
  for row, (line, number) in enumerate(zip(data_lines, line_numbers)):
    if line.startswith("{"):
      raise DataError("sparse ARFF rows ('{index value, ...}') are not "
                      "supported, expected a dense row", path=path, line=number)
    fields = _split_fields(line)
    if fields is None:
      raise DataError(f"malformed quoting in {_clip(line)!r}", path=path,
                      line=number)
    if len(fields) != num_fields:
      raise DataError(
          f"expected {num_fields} comma-separated fields (one per @attribute), "
          f"found {len(fields)}", path=path, line=number,
      )
    for col in sorted(used):
      value, quoted = fields[col]
      if value == "?" and not quoted:
        attr = header.attributes[col][0]
        raise DataError(
            f"missing value '?' in attribute {attr!r} (column {col + 1}); "
            "missing values are not supported, expected a value",
            path=path, line=number,
        )
    for k, col in enumerate(numeric_cols):
      value = fields[col][0].strip()
      if not _NUMBER.fullmatch(value):
        attr = header.attributes[col][0]
        raise DataError(
            f"expected a number for numeric attribute {attr!r} (column "
            f"{col + 1}), found {_clip(value)!r}", path=path, line=number,
        )
      values[row, k] = float(value)
    if names is not None:
      names.append(fields[name_col][0])
  return values, names


def _check_values(
    path: str,
    header: _Header,
    values: np.ndarray,
    numeric_cols: list[int],
    data_lines: list[str],
    line_numbers: np.ndarray,
    num_kept: int,
    allow_nonfinite: bool,
) -> None:
  """Refuses float32 overflow, non-finite frame times and (unless allowed)
  non-finite values, naming the first offending cell in file order."""
  if values.size == 0:
    return
  finite = np.isfinite(values)
  bad = ~finite if not allow_nonfinite else np.isinf(values)
  bad[:, num_kept:] |= ~finite[:, num_kept:]
  with np.errstate(over="ignore"):  # overflow: finite, but inf as float32
    bad[:, :num_kept] |= finite[:, :num_kept] & np.isinf(
        values[:, :num_kept].astype(np.float32))
  for row, k in np.argwhere(bad):
    col = numeric_cols[k]
    value = float(values[row, k])
    where = f"attribute {header.attributes[col][0]!r} (column {col + 1})"
    line = int(line_numbers[row])
    literal = _field_text(data_lines[row], col)
    if np.isfinite(value):
      raise DataError(
          f"value {_clip(literal)} in {where} overflows float32 (largest "
          f"finite value {_FLOAT32_MAX:.7g}), expected a number within "
          "float32 range", path=path, line=line)
    if np.isinf(value) and not _INF_WORD.fullmatch(literal):
      raise DataError(
          f"value {_clip(literal)} in {where} overflows float64 and float32, "
          "expected a number within float32 range", path=path, line=line)
    if k >= num_kept:
      raise DataError(
          f"non-finite frame time {_clip(literal)} in {where}, expected a "
          "finite time in seconds", path=path, line=line)
    if not allow_nonfinite:
      raise DataError(
          f"non-finite value {_clip(literal)} in {where}, expected a finite "
          "number", path=path, line=line)


def _field_text(line: str, col: int) -> str:
  """The text of field `col` of a data line (for messages)."""
  fields = _split_fields(line)
  if fields is None or col >= len(fields):
    return "?"
  return fields[col][0].strip()


def _clip(text: str, limit: int = 40) -> str:
  return text if len(text) <= limit else text[: limit - 3] + "..."


# ----------------------------------------------------------------------------
# Writing.


def write_arff(
    path: str | os.PathLike[str],
    relation: str,
    attributes: Sequence[str],
    data: np.ndarray,
    *,
    instance_name: str | None = None,
    frame_time: np.ndarray | None = None,
    float_format: str = "%.6g",
    frame_time_format: str = "%g",
) -> Path:
  """Writes a dense ARFF file with numeric columns.

  Columns, in order: ``Instance_name`` (string, constant `instance_name`) if
  given, ``frameTime`` (numeric) if `frame_time` is given, then one numeric
  attribute per name in `attributes`.  Lines end in ``\\n``; the output is a
  pure function of the arguments (byte-identical for identical input).  Names
  and the instance name are quoted when needed (line breaks and tabs written
  as ``\\n``, ``\\r``, ``\\t``), so `read_arff` gives them back unchanged.

  Args:
    path: file to write (parent folders are created).
    relation: the ``@relation`` name.
    attributes: names of the numeric columns of `data` (``cols`` names).
    data: ``[rows, cols]`` numbers.
    instance_name: value of the leading ``Instance_name`` column, if any.
    frame_time: ``[rows]`` frame times in seconds, if any.
    float_format: %-format for data values (e.g. ``'%.4g'`` for compact files).
    frame_time_format: %-format for frame times.

  Returns:
    The written path.

  Raises:
    ValueError: shapes of `attributes`, `data` and `frame_time` disagree, or
      attribute names repeat or are ones `read_arff` does not return as
      features (bookkeeping names, a trailing ``class``/``emotion``), or a
      name holds a NUL character.
  """
  array = np.asarray(data, dtype=np.float64)
  if array.ndim != 2 or array.shape[1] != len(attributes):
    raise ValueError(
        f"data must be [rows, {len(attributes)}], got shape {array.shape}"
    )
  if frame_time is not None and np.shape(frame_time) != (array.shape[0],):
    raise ValueError(
        f"frame_time must be [{array.shape[0]}], got {np.shape(frame_time)}"
    )
  texts = [relation, *attributes] + ([instance_name] if instance_name else [])
  if any("\x00" in text for text in texts):
    raise ValueError("names cannot contain NUL characters (read_arff refuses "
                     "NUL bytes as binary data)")
  if len(set(attributes)) != len(attributes):
    raise ValueError(f"attribute names repeat: {list(attributes)}")
  reserved = [a for a in attributes if a in BOOKKEEPING_ATTRIBUTES]
  if attributes and attributes[-1].lower() in CLASS_ATTRIBUTES:
    reserved.append(attributes[-1])
  if reserved:
    raise ValueError(f"attribute names {reserved} would not be read back as "
                     "features (bookkeeping or class columns)")
  header = [f"@relation {_quote(relation)}"]
  prefix = ""
  if instance_name is not None:
    header.append("@attribute Instance_name string")
    prefix += _quote(instance_name).replace("%", "%%") + ","
  if frame_time is not None:
    header.append("@attribute frameTime numeric")
    prefix += frame_time_format + ","
  header.extend(f"@attribute {_quote(name)} numeric" for name in attributes)
  header.append("@data")

  row_format = prefix + ",".join([float_format] * array.shape[1])
  if prefix.endswith(",") and array.shape[1] == 0:
    row_format = prefix[:-1]
  rows = array.tolist()
  if frame_time is not None:
    times = np.asarray(frame_time, dtype=np.float64).tolist()
    lines = [row_format % (t, *r) for t, r in zip(times, rows)]
  else:
    lines = [row_format % tuple(r) for r in rows]
  out = Path(path)
  out.parent.mkdir(parents=True, exist_ok=True)
  text = "\n".join(header + lines) + "\n"
  out.write_bytes(text.encode("utf-8"))
  return out


def _quote(name: str) -> str:
  """Quotes an ARFF name or value when it contains special characters."""
  plain = (name and name != "?" and name.isprintable()
           and not any(c.isspace() or c in ",'\"%{}\\" for c in name))
  if plain:
    return name
  escaped = (name.replace("\\", "\\\\").replace("'", "\\'")
             .replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t"))
  return f"'{escaped}'"
