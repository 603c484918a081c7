"""Property tests of the OMG-Emotion CSV and OpenFace readers (issue 9, item 3):
any bytes give a result or the project's one-line `DataError` naming the
file, never another exception.  Deterministic like tests/test_arff_fuzz.py."""

from __future__ import annotations

import numpy as np
import pytest
from emobed_datasets.errors import DataError
from emobed_datasets.omg_emotion import readers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

CI = settings(derandomize=True, database=None, deadline=None, print_blob=True,
              max_examples=150, suppress_health_check=[HealthCheck.too_slow])

_OMG_HEADER = "link,start,end,video,utterance,arousal,valence,EmotionMaxVote\n"
_OF_HEADER = ", ".join(["frame", "face_id", "timestamp", "confidence", "success",
                        *readers.OPENFACE_COLUMNS]) + "\n"
# Text made of the pieces these files are made of, so that the fuzzer reaches
# past the header: separators, quotes, line ends, numbers, NaN/inf, names.
_pieces = st.sampled_from([",", ", ", "\n", "\r\n", "\r", '"', " ", "0", "1", "4", "7",
                           "-1", "0.5", "1e999", "nan", "inf", "-", ".", "e", "x",
                           "utterance_1.mp4", "..", "/", "\x00", "\ufeff", "é"])
_text = st.lists(_pieces, max_size=60).map("".join)
# Whole rows of about the right width, so that value checks are reached too.
_field = st.sampled_from(["0", "1", "0.5", "-2", "", " ", "nan", "x", "1e40", "2"])
_omg_rows = st.lists(st.lists(_field, min_size=7, max_size=9).map(",".join), max_size=5)
_of_rows = st.lists(st.lists(_field, min_size=50, max_size=53).map(", ".join), max_size=4)


def _check(parse, data: bytes, path: str):
  try:
    out = parse(data, path)
  except DataError as e:
    assert "\n" not in str(e) and str(e).startswith(path), str(e)
    return None
  return out


@CI
@pytest.mark.parametrize("parse, path", [(readers.parse_omg_csv, "omg.csv"),
                                         (readers.parse_openface, "face.csv")])
@given(data=st.binary(max_size=300))
def test_any_bytes_give_a_result_or_one_line_error(parse, path, data):
  _check(parse, data, path)


@CI
@given(_text)
def test_omg_csv_structured(body):
  out = _check(readers.parse_omg_csv, (_OMG_HEADER + body).encode(), "omg.csv")
  if out is not None:
    for row in out.rows:
      assert isinstance(row.video, str) and 0 <= row.label <= 6
      assert 0 <= row.arousal <= 1 and -1 <= row.valence <= 1
    assert out.num_rows == len(out.rows) + sum(out.skipped.values())


@CI
@given(_omg_rows)
def test_omg_csv_rows(rows):
  body = "".join(f"l,{r}\n" for r in rows)
  out = _check(readers.parse_omg_csv, (_OMG_HEADER + body).encode(), "omg.csv")
  if out is not None:
    assert out.num_rows == len(out.rows) + sum(out.skipped.values())


@CI
@given(_of_rows)
def test_openface_rows(rows):
  out = _check(readers.parse_openface, (_OF_HEADER + "\n".join(rows)).encode(), "face.csv")
  if out is not None:
    assert out.features.shape == (len([r for r in rows if r.replace(",", "").strip()]), 47)


@CI
@given(_text)
def test_openface_structured(body):
  out = _check(readers.parse_openface, (_OF_HEADER + body).encode(), "face.csv")
  if out is not None:
    assert out.features.shape == (out.mask.size, len(readers.OPENFACE_COLUMNS))
    assert np.all(np.isfinite(out.features)) and set(out.mask.tolist()) <= {0.0, 1.0}
