"""Tests of the ARFF reader/writer (emobed_datasets.arff)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from emobed_datasets.arff import read_arff, write_arff
from emobed_datasets.errors import DataError

GOLD = """@relation GOLDSTANDARD
@attribute Instance_name string
@attribute frameTime numeric
@attribute GoldStandard numeric
@data
dev_1,0,-0.022925
dev_1,0.04,-0.022925
dev_1,0.08,0.013
"""


def _write(tmp_path: Path, text: str, name: str = "x.arff",
           newline: str = "\n") -> Path:
  path = tmp_path / name
  path.write_bytes(text.replace("\n", newline).encode("utf-8"))
  return path


def _assert_error(path: Path, line: int | None, *fragments: str) -> None:
  with pytest.raises(DataError) as info:
    read_arff(path, expected_numeric=None)
  _check_message(info.value, path, line, *fragments)


def _check_message(error: DataError, path: Path, line: int | None,
                   *fragments: str) -> None:
  message = str(error)
  assert "\n" not in message
  assert isinstance(error, ValueError)
  if line is None:
    assert str(path) in message
  else:
    assert f"{path}:{line}:" in message, message
  for fragment in fragments:
    assert fragment in message, message


def test_reads_gold_standard_as_in_data_md(tmp_path):
  table = read_arff(_write(tmp_path, GOLD), expected_numeric=1)
  assert table.relation == "GOLDSTANDARD"
  assert table.attributes == [("Instance_name", "string"),
                              ("frameTime", "numeric"),
                              ("GoldStandard", "numeric")]
  assert table.names == ["GoldStandard"]
  assert table.data.dtype == np.float32 and table.data.shape == (3, 1)
  np.testing.assert_array_equal(
      table.data[:, 0], np.float32([-0.022925, -0.022925, 0.013]))
  np.testing.assert_allclose(table.frame_time, [0.0, 0.04, 0.08])
  assert table.instance_names == ["dev_1"] * 3
  assert table.data_line_numbers.tolist() == [6, 7, 8]
  assert table.num_rows == 3


def test_crlf_comments_blank_lines_and_case(tmp_path):
  text = """% exported by a tool
%

@RELATION 'my relation'

@ATTRIBUTE Instance_name STRING
% a comment between attributes
@Attribute frameTime REAL
@attribute f1 Integer
@attribute "f 2" numeric
@attribute cls {low, 'mid high', high}

@DATA
% comment in data

a,0,1,2.5,low
b,0.04,3,-4e-1,'mid high'

"""
  path = _write(tmp_path, text, newline="\r\n")
  table = read_arff(path, expected_numeric=2)
  assert table.relation == "my relation"
  assert table.names == ["f1", "f 2"]
  assert ("cls", "nominal") in table.attributes
  np.testing.assert_array_equal(table.data, np.float32([[1, 2.5], [3, -0.4]]))
  np.testing.assert_allclose(table.frame_time, [0.0, 0.04])
  assert table.instance_names == ["a", "b"]
  assert table.data_line_numbers.tolist() == [16, 17]


def test_quoted_values_and_names(tmp_path):
  text = """@relation r
@attribute 'Instance_name' string
@attribute "x y" numeric
@attribute z numeric
@data
'name, with comma',"1.5", '2'
"it's \\"q\\"", 3 ,4
"""
  table = read_arff(_write(tmp_path, text), expected_numeric=2)
  assert table.names == ["x y", "z"]
  assert table.instance_names == ["name, with comma", 'it\'s "q"']
  np.testing.assert_array_equal(table.data, np.float32([[1.5, 2], [3, 4]]))
  assert table.frame_time is None


def test_feature_file_without_frame_time(tmp_path):
  text = "@relation f\n@attribute Instance_name string\n" + "".join(
      f"@attribute a{i} numeric\n" for i in range(3)) + "@data\nt,1,2,3\n"
  table = read_arff(_write(tmp_path, text), expected_numeric=3)
  assert table.frame_time is None
  assert table.names == ["a0", "a1", "a2"]


def test_quoted_question_mark_is_a_string_not_missing(tmp_path):
  text = "@relation r\n@attribute s string\n@attribute v numeric\n@data\n'?',1\n"
  table = read_arff(_write(tmp_path, text))
  np.testing.assert_array_equal(table.data, [[1.0]])


def test_empty_data_section(tmp_path):
  text = "@relation r\n@attribute v numeric\n@data\n"
  table = read_arff(_write(tmp_path, text))
  assert table.data.shape == (0, 1)


def test_write_then_read_round_trip(tmp_path):
  rng = np.random.default_rng(0)
  values = rng.normal(size=(50, 4)).astype(np.float32)  # %.9g round-trips
  times = np.round(np.arange(50) * 0.04, 2)
  path = write_arff(tmp_path / "sub" / "w.arff", "rel x", ["a", "b c", "d", "e"],
                    values, instance_name="train_1", frame_time=times,
                    float_format="%.9g")
  table = read_arff(path, expected_numeric=4)
  assert table.relation == "rel x"
  assert table.names == ["a", "b c", "d", "e"]
  np.testing.assert_array_equal(table.data, values)
  np.testing.assert_array_equal(table.frame_time, times)
  assert table.instance_names == ["train_1"] * 50
  assert path.read_bytes().startswith(b"@relation 'rel x'\n@attribute "
                                      b"Instance_name string\n")


def test_fast_and_slow_paths_agree(tmp_path):
  """A quote anywhere sends the file down the per-line path: same result."""
  rng = np.random.default_rng(1)
  values = rng.normal(size=(30, 5))
  plain = write_arff(tmp_path / "plain.arff", "r", list("abcde"), values,
                     instance_name="rec", frame_time=np.arange(30) * 0.04)
  lines = plain.read_text().splitlines()
  lines[-1] = "'rec'" + lines[-1][len("rec"):]
  quoted = _write(tmp_path, "\n".join(lines) + "\n", "quoted.arff")
  a, b = read_arff(plain), read_arff(quoted)
  np.testing.assert_array_equal(a.data, b.data)
  np.testing.assert_array_equal(a.frame_time, b.frame_time)
  assert a.instance_names == b.instance_names


def test_large_file_is_parsed_quickly(tmp_path):
  values = np.random.default_rng(2).normal(size=(7501, 88))
  path = write_arff(tmp_path / "big.arff", "f", [f"f{i}" for i in range(88)],
                    values, instance_name="train_1",
                    frame_time=np.arange(7501) * 0.04, float_format="%.4g")
  quoted = tmp_path / "big_quoted.arff"
  quoted.write_text(path.read_text().replace("\ntrain_1,", "\n'train_1',"))
  for file in (path, quoted):
    start = time.perf_counter()
    table = read_arff(file, expected_numeric=88)
    elapsed = time.perf_counter() - start
    assert table.data.shape == (7501, 88)
    assert table.instance_names[-1] == "train_1"
    assert elapsed < 2.0, f"read_arff took {elapsed:.2f} s for 7501 x 88"


HEADER = ("@relation r\n@attribute Instance_name string\n"
          "@attribute frameTime numeric\n@attribute a numeric\n"
          "@attribute b numeric\n@data\n")  # @data is line 6


@pytest.mark.parametrize(
    "body, line, fragment",
    [
        ("x,0,1,2\nx,0.04,?,2\n", 8, "missing value '?'"),
        ("x,0,1,2\nx,0.04,1\n", 8, "expected 4 comma-separated fields (one per @attribute), found 3"),
        ("x,0,1,2\nx,0.04,1,2,5\n", 8, "found 5"),
        ("x,0,1,2\nx,0.04,1,abc\n", 8, "expected a number"),
        ("x,0,1,2\nx,0.04,1,\n", 8, "expected a number"),
        ("x,0,1,2\n\n% c\nx,0.04,1,2\nx,0.08,1,nan\n", 11, "non-finite"),
        ("x,0,1,2\n{0 x, 2 1}\n", 8, "sparse"),
        ("x,0,1,2\nx,'0.04,1,2\n", 8, "quoting"),
    ],
    ids=["missing", "too-few", "too-many", "non-numeric", "empty-field",
         "nan", "sparse", "unterminated-quote"],
)
def test_bad_data_rows(tmp_path, body, line, fragment):
  path = _write(tmp_path, HEADER + body)
  _assert_error(path, line, fragment)


def test_bad_rows_with_crlf_and_quotes_report_the_right_line(tmp_path):
  path = _write(tmp_path, HEADER + "'x',0,1,2\n'x',0.04,1,zz\n", newline="\r\n")
  _assert_error(path, 8, "'zz'")


@pytest.mark.parametrize(
    "text, line, fragment",
    [
        ("", 1, "empty file"),
        ("\n\n% only a comment\n", 1, "empty file"),
        ("@relation r\n@attribute a numeric\n1\n", 3, "expected @relation"),
        ("@relation r\n@attribute a numeric\n", 3, "no @data"),
        ("@relation r\n@data\n", 2, "expected @attribute lines"),
        ("@attribute a numeric\n@data\n", 1, "expected @relation"),
        ("@relation r\n@attribute a relational\n@data\n", 2, "relational"),
        ("@relation r\n@attribute a numeric\n@attribute a real\n@data\n", 3,
         "declared twice"),
        ("@relation r\n@attribute a\n@data\n", 2, "has no type"),
        ("@relation r\n@frobnicate a\n@data\n", 2, "unknown keyword"),
    ],
    ids=["empty", "comments-only", "data-without-@data", "missing-@data",
         "no-attributes", "no-relation", "relational", "duplicate", "no-type",
         "bad-keyword"],
)
def test_bad_headers(tmp_path, text, line, fragment):
  path = _write(tmp_path, text)
  _assert_error(path, line, fragment)


def test_attribute_count_mismatch(tmp_path):
  path = _write(tmp_path, HEADER + "x,0,1,2\n")
  with pytest.raises(DataError) as info:
    read_arff(path, expected_numeric=88)
  _check_message(info.value, path, 6, "expected 88 numeric attributes",
                 "declares 2")


def test_missing_file_and_folder(tmp_path):
  with pytest.raises(DataError) as info:
    read_arff(tmp_path / "nope.arff")
  _check_message(info.value, tmp_path / "nope.arff", None, "not found")
  with pytest.raises(DataError) as info:
    read_arff(tmp_path)
  _check_message(info.value, tmp_path, None, "folder")


def test_nonfinite_can_be_allowed(tmp_path):
  path = _write(tmp_path, HEADER + "x,0,1,inf\n")
  table = read_arff(path, allow_nonfinite=True)
  assert np.isinf(table.data[0, 1])


def test_write_rejects_shape_mismatch(tmp_path):
  with pytest.raises(ValueError):
    write_arff(tmp_path / "w.arff", "r", ["a", "b"], np.zeros((3, 3)))
  with pytest.raises(ValueError):
    write_arff(tmp_path / "w.arff", "r", ["a"], np.zeros((3, 1)),
               frame_time=np.zeros(2))


def test_data_error_formatting():
  assert str(DataError("bad", path="f.arff", line=3)) == "f.arff:3: bad"
  assert str(DataError("bad", path="f.arff")) == "f.arff: bad"
  assert str(DataError("two\nlines")) == "two lines"
  error = DataError("bad", path="f", line=2)
  assert (error.path, error.line, error.what) == ("f", 2, "bad")
  import pickle
  assert str(pickle.loads(pickle.dumps(error))) == "f:2: bad"


# ----------------------------------------------------------------------------
# Robust by kind (issue 12, item 4): each kind is a table of inputs.

SMALL = ("@relation r\n@attribute Instance_name string\n"
         "@attribute frameTime numeric\n@attribute a numeric\n@data\n")


def _small(rows: str) -> str:
  return SMALL + rows


@pytest.mark.parametrize(
    "text, lines",
    [
        (_small("x,0,1\nx,0.04,2\n").replace("@data\n", "@data x,0,1\n", 1)
         .replace("x,0,1\nx,0.04", "x,0.04", 1), [5, 6]),
        ("@relation r\n@attribute a numeric\n@DATA\t1\n2\n", [3, 4]),
        ("@relation r\n@attribute a numeric\n  @data   1  \n2\n", [3, 4]),
        ("@relation r\n@attribute a numeric\n@data 1\n", [3]),
        ("@relation r\n@attribute s string\n@attribute a numeric\n"
         "@data 'x y',1\n'x y',2\n", [4, 5]),
        ("@relation r\n@attribute a numeric\n@data % a comment\n1\n2\n", [4, 5]),
    ],
    ids=["avec-gold", "tab-and-case", "indented", "only-row", "quoted",
         "comment-not-a-row"],
)
@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"],
                         ids=["lf", "crlf", "cr"])
def test_row_on_the_data_line_is_read(tmp_path, text, lines, newline):
  table = read_arff(_write(tmp_path, text, newline=newline))
  assert table.data_line_numbers.tolist() == lines
  np.testing.assert_array_equal(table.data[:, -1],
                                np.arange(1, len(lines) + 1, dtype=np.float32))


def test_row_on_the_data_line_with_a_bad_value_names_that_line(tmp_path):
  path = _write(tmp_path, "@relation r\n@attribute a numeric\n@data zz\n1\n")
  _assert_error(path, 3, "expected a number", "'zz'")


@pytest.mark.parametrize(
    "newline", ["\n", "\r\n", "\r", "mixed"], ids=["lf", "crlf", "cr", "mixed"])
def test_every_line_ending_reads_the_same(tmp_path, newline):
  if newline == "mixed":
    lines = GOLD.split("\n")
    ends = ["\n", "\r\n", "\r"]
    text = "".join(line + ends[i % 3] for i, line in enumerate(lines[:-1]))
    path = tmp_path / "x.arff"
    path.write_bytes(text.encode())
  else:
    path = _write(tmp_path, GOLD, newline=newline)
  table = read_arff(path, expected_numeric=1)
  np.testing.assert_array_equal(
      table.data[:, 0], np.float32([-0.022925, -0.022925, 0.013]))
  np.testing.assert_allclose(table.frame_time, [0.0, 0.04, 0.08])
  assert table.data_line_numbers.tolist() == [6, 7, 8]
  assert table.instance_names == ["dev_1"] * 3


def test_bad_row_with_cr_line_ends_names_the_right_line(tmp_path):
  path = _write(tmp_path, HEADER + "x,0,1,2\nx,0.04,1,zz\n", newline="\r")
  _assert_error(path, 8, "'zz'")


def _opensmile(class_lines: str, class_values: str, features: int = 4,
               quote: str = "'") -> str:
  """openSMILE cArffSink layout: name, frameIndex, frameTime, features,
  class attributes; CRLF, %e values, a quoted instance name."""
  head = ["@relation openSMILE_features", "",
          "@attribute name string", "@attribute frameIndex numeric",
          "@attribute frameTime numeric"]
  head += [f"@attribute lld_{i:02d}_sma_amean numeric" for i in range(features)]
  head += [line for line in class_lines.split("\n") if line]
  head += ["", "@data", ""]
  rows = []
  for frame in range(3):
    values = ",".join(f"{(frame + 1) * (i + 1) * 1.5:e}" for i in range(features))
    tail = f",{class_values}" if class_values else ""
    rows.append(f"{quote}train_1{quote},{frame},{frame * 0.04:f},{values}{tail}")
  return "\r\n".join(head + rows) + "\r\n"


@pytest.mark.parametrize(
    "class_lines, class_values",
    [
        ("@attribute emotion unknown", "unknown"),
        ("@attribute class {0,1,2,3}", "0"),
        ("@attribute class numeric", "2"),
        ("@attribute CLASS real", "2"),
        ("@attribute emotion string", "'happy'"),
        ("@attribute emotion unknown\n@attribute class numeric", "unknown,1"),
        ("@attribute emotion {neutral,happy}", "?"),
        ("@attribute arousal_label unknown\n@attribute emotion numeric",
         "x,3"),
        ("", ""),
    ],
    ids=["emotion-unknown", "dummy-class", "numeric-class", "class-case",
         "string-class", "two-class-columns", "missing-class-value",
         "unknown-then-numeric-class", "no-class"],
)
def test_opensmile_output_reads_as_its_features(tmp_path, class_lines,
                                                 class_values):
  path = _write(tmp_path, _opensmile(class_lines, class_values))
  table = read_arff(path, expected_numeric=4)
  assert table.names == [f"lld_{i:02d}_sma_amean" for i in range(4)]
  expected = np.float32([[(f + 1) * (i + 1) * 1.5 for i in range(4)]
                         for f in range(3)])
  np.testing.assert_array_equal(table.data, expected)
  np.testing.assert_allclose(table.frame_time, [0.0, 0.04, 0.08])
  assert table.instance_names == ["train_1"] * 3
  assert "frameIndex" in table.ignored and "name" in table.ignored


def test_numeric_class_not_at_the_end_is_a_feature(tmp_path):
  text = ("@relation r\n@attribute class numeric\n@attribute a numeric\n"
          "@data\n1,2\n")
  table = read_arff(_write(tmp_path, text))
  assert table.names == ["class", "a"]


def test_extra_trailing_numeric_column_gets_a_hint(tmp_path):
  path = _write(tmp_path, _opensmile("@attribute arousal numeric", "0.5"))
  with pytest.raises(DataError) as info:
    read_arff(path, expected_numeric=4)
  _check_message(info.value, path, 12, "expected 4 numeric attributes",
                 "declares 5", "'arousal'", "class or target")


@pytest.mark.parametrize(
    "attribute, value",
    [
        ("@attribute extra blob", "anything at all"),
        ("@attribute extra unknown", "?"),
        ("@attribute extra 'weird type'", "1"),
        ("@attribute extra date 'yyyy-MM-dd'", "'2016-01-01'"),
        ("@attribute extra {a,'b c'}", "'b c'"),
        ("@attribute extra string", "?"),
    ],
    ids=["blob", "unknown-with-missing", "quoted-type", "date", "nominal",
         "string-missing"],
)
def test_unused_column_of_any_type_is_ignored(tmp_path, attribute, value):
  text = (f"@relation r\n@attribute a numeric\n{attribute}\n"
          f"@attribute b numeric\n@data\n1,{value},2\n3,{value},4\n")
  table = read_arff(_write(tmp_path, text), expected_numeric=2)
  assert table.names == ["a", "b"]
  assert table.ignored == ("extra",)
  np.testing.assert_array_equal(table.data, np.float32([[1, 2], [3, 4]]))


def test_unknown_type_shows_in_a_count_mismatch(tmp_path):
  text = ("@relation r\n@attribute a numeric\n@attribute b flaot\n"
          "@data\n1,2\n")
  path = _write(tmp_path, text)
  with pytest.raises(DataError) as info:
    read_arff(path, expected_numeric=2)
  _check_message(info.value, path, 4, "declares 1", "b (flaot)")


@pytest.mark.parametrize(
    "encode, line, fragments",
    [
        (lambda t: t.encode("utf-16"), 1, ("UTF-16 (little-endian)",
                                           "byte-order mark", "UTF-8")),
        (lambda t: b"\xfe\xff" + t.encode("utf-16-be"), 1,
         ("UTF-16 (big-endian)", "byte-order mark")),
        (lambda t: t.encode("utf-16-le"), 1,
         ("UTF-16 (little-endian) without a byte-order mark",)),
        (lambda t: t.encode("utf-16-be"), 1,
         ("UTF-16 (big-endian) without a byte-order mark",)),
        (lambda t: t.encode("utf-32"), 1, ("UTF-32",)),
        (lambda t: t.encode().replace(b"dev_1,0.04", b"dev_1\x00,0.04"), 7,
         ("NUL byte",)),
    ],
    ids=["utf16-le-bom", "utf16-be-bom", "utf16-le", "utf16-be", "utf32",
         "nul-byte"],
)
def test_wide_or_binary_encodings_are_named(tmp_path, encode, line, fragments):
  path = tmp_path / "x.arff"
  path.write_bytes(encode(GOLD))
  _assert_error(path, line, *fragments)


@pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["lf", "crlf"])
def test_utf8_bom_is_accepted(tmp_path, newline):
  path = tmp_path / "x.arff"
  path.write_bytes(b"\xef\xbb\xbf" + GOLD.replace("\n", newline).encode())
  table = read_arff(path, expected_numeric=1)
  assert table.relation == "GOLDSTANDARD" and table.num_rows == 3


def test_latin1_names_are_read(tmp_path):
  path = tmp_path / "x.arff"
  path.write_bytes("@relation caf\xe9\n@attribute \xe9t\xe9 numeric\n@data\n1\n"
                   .encode("latin-1"))
  table = read_arff(path)
  assert table.names == ["\xe9t\xe9"]


@pytest.mark.parametrize(
    "row, line, fragments",
    [
        ("x,0,1e39,2", 7, ("'a' (column 3)", "overflows float32", "1e39")),
        ("x,0,1,-3.5e38", 7, ("'b' (column 4)", "overflows float32")),
        ("x,0,1,1e400", 7, ("'b' (column 4)", "overflows float64")),
        ("'x',0,1,1e39", 7, ("'b' (column 4)", "overflows float32")),
        ("x,1e400,1,2", 7, ("'frameTime' (column 2)", "overflows")),
        ("x,nan,1,2", 7, ("non-finite frame time", "'frameTime'")),
        ("x,-inf,1,2", 7, ("non-finite frame time",)),
        ("x,0,inf,2", 7, ("non-finite value inf", "'a' (column 3)")),
        ("x,0,1,-NaN", 7, ("non-finite value -NaN", "'b' (column 4)")),
    ],
    ids=["over-f32", "negative-over-f32", "over-f64", "over-f32-slow-path",
         "time-over-f64", "time-nan", "time-inf", "inf", "nan"],
)
def test_overflow_and_nonfinite_are_named(tmp_path, row, line, fragments):
  path = _write(tmp_path, HEADER + row + "\n")
  _assert_error(path, line, *fragments)


def test_overflow_is_refused_even_when_nonfinite_is_allowed(tmp_path):
  path = _write(tmp_path, HEADER + "x,0,nan,inf\nx,0.04,1,4e38\n")
  with pytest.raises(DataError) as info:
    read_arff(path, allow_nonfinite=True)
  _check_message(info.value, path, 8, "overflows float32")
  path = _write(tmp_path, HEADER + "x,0,nan,inf\nx,0.04,1,1e999\n", "y.arff")
  with pytest.raises(DataError) as info:
    read_arff(path, allow_nonfinite=True)
  _check_message(info.value, path, 8, "overflows float64")


@pytest.mark.parametrize(
    "text", [repr(float(np.finfo(np.float32).max)), "3.40282347e+38",
             "3.4028235e38", "3.40282356e38"])
def test_float32_extremes_are_accepted(tmp_path, text):
  """Decimal forms that round to float32's largest value are not overflow."""
  path = _write(tmp_path, HEADER + f"x,0,{text},-{text}\nx,0.04,1e-50,0\n")
  table = read_arff(path)
  assert table.data[0, 0] == np.finfo(np.float32).max
  assert table.data[0, 1] == -np.finfo(np.float32).max
  assert table.data[1, 0] == 0.0


def test_just_beyond_float32_is_overflow(tmp_path):
  # float32 max + half an ulp rounds to infinity.
  path = _write(tmp_path, HEADER + "x,0,3.4028236e38,1\n")
  _assert_error(path, 7, "overflows float32", "'a' (column 3)")


@pytest.mark.parametrize("quoted", [False, True], ids=["fast", "slow"])
@pytest.mark.parametrize(
    "value", ["1_000", "0x10", "\u0661", "1d5", "1e", ".", "+-1", "nan(1)",
              "1 2"])
def test_number_syntax_is_the_same_on_both_paths(tmp_path, quoted, value):
  name = "'x'" if quoted else "x"
  path = _write(tmp_path, HEADER + f"{name},0,1,2\n{name},0.04,1,{value}\n")
  _assert_error(path, 8, "expected a number", "'b' (column 4)")


@pytest.mark.parametrize("quoted", [False, True], ids=["fast", "slow"])
def test_number_forms_accepted_on_both_paths(tmp_path, quoted):
  name = "'x'" if quoted else "x"
  rows = [f"{name},0,+.5,1.", f"{name},0.04,-2E+2, 7 ", f"{name},0.08,0,1e-3"]
  table = read_arff(_write(tmp_path, HEADER + "\n".join(rows) + "\n"))
  np.testing.assert_array_equal(
      table.data, np.float32([[0.5, 1.0], [-200, 7], [0, 0.001]]))


def test_question_mark_in_a_read_column_is_refused_on_the_data_line(tmp_path):
  path = _write(tmp_path, "@relation r\n@attribute a numeric\n@data ?\n")
  _assert_error(path, 3, "missing value '?'", "(column 1)")


@pytest.mark.parametrize(
    "name", ["a\nb", "tab\there", "cr\rlf", "nb\u00a0space", "sp ace",
             "quo'te", 'dq"x', "back\\slash", "per%cent", "{brace}", "?", "",
             "caf\u00e9", "\u2028sep"],
)
def test_written_names_read_back_unchanged(tmp_path, name):
  values = np.float32([[1.5, -2.0], [3.25, 4.0]])
  path = write_arff(tmp_path / "w.arff", name, [name + "1", name + "2"],
                    values, instance_name=name, frame_time=[0.0, 0.04],
                    float_format="%.9g")
  table = read_arff(path, expected_numeric=2)
  assert table.relation == name
  assert table.names == [name + "1", name + "2"]
  assert table.instance_names == [name, name]
  np.testing.assert_array_equal(table.data, values)


@pytest.mark.parametrize(
    "names", [["a", "a"], ["frameTime", "x"], ["x", "frameIndex"],
              ["x", "class"], ["name"], ["nul\x00"]],
)
def test_write_refuses_names_that_would_not_read_back(tmp_path, names):
  with pytest.raises(ValueError):
    write_arff(tmp_path / "w.arff", "r", names, np.zeros((1, len(names))))
