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
        ("@relation r\n@attribute a blob\n@data\n", 2, "'blob'"),
        ("@relation r\n@attribute a numeric\n@attribute a real\n@data\n", 3,
         "declared twice"),
        ("@relation r\n@attribute a\n@data\n", 2, "has no type"),
        ("@relation r\n@frobnicate a\n@data\n", 2, "unknown keyword"),
    ],
    ids=["empty", "comments-only", "data-without-@data", "missing-@data",
         "no-attributes", "no-relation", "bad-type", "duplicate", "no-type",
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
