"""What a run writes: atomic JSON, a JSON-lines log, TensorBoard event files.

Everything is plain JSON (or TensorBoard's own format), written by process 0
only (callers check ``jax.process_index()``), and JSON files are replaced
atomically (written to a temporary file in the same folder, then renamed),
so a killed run never leaves a half-written ``results.json``.

The TensorBoard writer needs no TensorFlow: an event file is a sequence of
TFRecord frames (length, masked CRC32C, payload, masked CRC32C) whose
payloads are ``Event`` protocol buffers; the few fields used for scalars are
encoded by hand below.
"""

from __future__ import annotations

import json
import math
import os
import socket
import struct
import time
from pathlib import Path
from typing import Any, Iterator, Mapping


def _jsonable(x: Any) -> Any:
  if isinstance(x, Mapping):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if hasattr(x, "tolist"):  # numpy / jax scalars and arrays
    return _jsonable(x.tolist())
  if isinstance(x, float) and not math.isfinite(x):
    return None
  return x


def write_json(path: str | Path, data: Any) -> None:
  """Write ``data`` as JSON to ``path`` atomically."""
  path = Path(path)
  tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
  with open(tmp, "w") as f:
    json.dump(_jsonable(data), f, indent=1, sort_keys=False)
    f.write("\n")
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def read_json(path: str | Path) -> Any:
  with open(path) as f:
    return json.load(f)


def append_jsonl(path: str | Path, record: Mapping[str, Any]) -> None:
  """Append one JSON object as a line (flushed; a torn last line is skipped on read)."""
  with open(path, "a") as f:
    f.write(json.dumps(_jsonable(record)) + "\n")
    f.flush()


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
  """Records of a JSON-lines file; a torn final line (killed writer) is dropped."""
  out = []
  if not Path(path).exists():
    return out
  with open(path) as f:
    for line in f:
      try:
        out.append(json.loads(line))
      except json.JSONDecodeError:
        continue
  return out


# ---------------------------------------------------------------------------
# TensorBoard event files without TensorFlow.

_CRC_TABLE = []
for _i in range(256):
  _c = _i
  for _ in range(8):
    _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
  _CRC_TABLE.append(_c)


def crc32c(data: bytes) -> int:
  """CRC-32C (Castagnoli), as TFRecord framing uses."""
  crc = 0xFFFFFFFF
  for b in data:
    crc = _CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
  return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
  out = bytearray()
  n &= (1 << 64) - 1
  while True:
    b = n & 0x7F
    n >>= 7
    if n:
      out.append(b | 0x80)
    else:
      out.append(b)
      return bytes(out)


def _field(num: int, wire: int) -> bytes:
  return _varint((num << 3) | wire)


def _len_delimited(num: int, payload: bytes) -> bytes:
  return _field(num, 2) + _varint(len(payload)) + payload


def encode_event(wall_time: float, step: int, *, scalars: Mapping[str, float] | None = None,
                 file_version: str | None = None) -> bytes:
  """An ``Event`` proto: wall_time (1, double), step (2, int64), file_version
  (3, string) or summary (5) of ``Summary.Value`` (tag 1, simple_value 2)."""
  msg = _field(1, 1) + struct.pack("<d", wall_time) + _field(2, 0) + _varint(step)
  if file_version is not None:
    msg += _len_delimited(3, file_version.encode())
  if scalars:
    summary = b"".join(
        _len_delimited(1, _len_delimited(1, tag.encode()) + _field(2, 5)
                       + struct.pack("<f", float(v)))
        for tag, v in scalars.items())
    msg += _len_delimited(5, summary)
  return msg


def frame_record(data: bytes) -> bytes:
  header = struct.pack("<Q", len(data))
  return (header + struct.pack("<I", _masked_crc(header)) + data
          + struct.pack("<I", _masked_crc(data)))


def read_records(path: str | Path) -> Iterator[bytes]:
  """TFRecord payloads of a file, checking both CRCs."""
  with open(path, "rb") as f:
    while True:
      header = f.read(8)
      if len(header) < 8:
        return
      (n,) = struct.unpack("<Q", header)
      (hcrc,) = struct.unpack("<I", f.read(4))
      data = f.read(n)
      (dcrc,) = struct.unpack("<I", f.read(4))
      if hcrc != _masked_crc(header) or dcrc != _masked_crc(data):
        raise ValueError(f"{path}: corrupt TFRecord frame")
      yield data


class SummaryWriter:
  """Scalars to a TensorBoard event file (``events.out.tfevents.*``)."""

  def __init__(self, logdir: str | Path):
    self.logdir = Path(logdir)
    self.logdir.mkdir(parents=True, exist_ok=True)
    name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}"
    self.path = self.logdir / name
    self._f = open(self.path, "ab")
    self._write(encode_event(time.time(), 0, file_version="brain.Event:2"))

  def _write(self, event: bytes) -> None:
    self._f.write(frame_record(event))
    self._f.flush()

  def scalars(self, step: int, values: Mapping[str, float]) -> None:
    clean = {k: float(v) for k, v in values.items() if v is not None and math.isfinite(float(v))}
    if clean:
      self._write(encode_event(time.time(), int(step), scalars=clean))

  def close(self) -> None:
    self._f.close()
