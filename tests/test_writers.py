"""Workdir writers: atomic JSON, JSON lines, TensorBoard events without TensorFlow."""

import struct

import numpy as np
import pytest
from google.protobuf.internal import decoder  # protobuf ships with TFDS

from emobed_jax import writers


def test_crc32c_known_vector():
  # RFC 3720 B.4 check value of CRC-32C over "123456789".
  assert writers.crc32c(b"123456789") == 0xE3069283


def _decode_fields(buf):
  """Minimal independent protobuf walk: {field_number: [values]}."""
  out, pos = {}, 0
  while pos < len(buf):
    key, pos = decoder._DecodeVarint(buf, pos)
    num, wire = key >> 3, key & 7
    if wire == 0:
      val, pos = decoder._DecodeVarint(buf, pos)
    elif wire == 1:
      val, pos = struct.unpack("<d", buf[pos:pos + 8])[0], pos + 8
    elif wire == 5:
      val, pos = struct.unpack("<f", buf[pos:pos + 4])[0], pos + 4
    elif wire == 2:
      n, pos = decoder._DecodeVarint(buf, pos)
      val, pos = buf[pos:pos + n], pos + n
    else:
      raise AssertionError(wire)
    out.setdefault(num, []).append(val)
  return out


def test_summary_writer_round_trip(tmp_path):
  w = writers.SummaryWriter(tmp_path / "tb")
  w.scalars(5, {"train/loss": 0.25, "val/ccc": 0.5, "skip": float("nan")})
  w.scalars(10, {"train/loss": 0.125})
  w.close()
  records = list(writers.read_records(w.path))
  assert len(records) == 3
  first = _decode_fields(records[0])
  assert first[3] == [b"brain.Event:2"]
  ev = _decode_fields(records[1])
  assert ev[2] == [5]
  values = {}
  for v in ev[5]:
    for item in _decode_fields(v)[1]:
      f = _decode_fields(item)
      values[f[1][0].decode()] = f[2][0]
  assert values == {"train/loss": 0.25, "val/ccc": 0.5}
  assert _decode_fields(records[2])[2] == [10]
  # A flipped byte is detected.
  data = bytearray(w.path.read_bytes())
  data[-6] ^= 0xFF
  w.path.write_bytes(bytes(data))
  with pytest.raises(ValueError, match="corrupt"):
    list(writers.read_records(w.path))


def test_json_is_atomic_and_jsonl_skips_torn_line(tmp_path):
  p = tmp_path / "r.json"
  writers.write_json(p, {"a": np.float32(1.5), "b": np.arange(3), "c": float("inf")})
  assert writers.read_json(p) == {"a": 1.5, "b": [0, 1, 2], "c": None}
  assert [x.name for x in tmp_path.iterdir()] == ["r.json"]
  j = tmp_path / "m.jsonl"
  writers.append_jsonl(j, {"step": 1})
  writers.append_jsonl(j, {"step": 2})
  with open(j, "a") as f:
    f.write('{"step": 3, "lo')  # killed mid-write
  assert writers.read_jsonl(j) == [{"step": 1}, {"step": 2}]
