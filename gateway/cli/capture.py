"""The capture file format of `tianwang record` (read by `tianwang replay` and `tianwang decode`).

docs/capture-format.md is the specification; in short:

    magic     8 bytes  89 54 57 43 41 50 0D 0A  ("\\x89TWCAP\\r\\n")
    version   1 byte   1
    header    msgpack map: device_id, family, driver, transport, url, start_ns, gateway, version,
              parent, note (str, or int for start_ns; unknown keys are kept and ignored)
    records   msgpack arrays [dt_ns, direction, data]: dt_ns (int) since the previous record (the
              first: since start_ns), direction 0 = from the device, 1 = to the device, data (bin)
    trailer   msgpack map: end (why the recording ended), records, bytes (of data), crc32 (zlib
              CRC-32 of every byte before the trailer, magic included)

A file without its trailer, or cut inside a record, is truncated; anything that does not parse as
the above (or whose CRC differs) is corrupt. Both are one-line `CaptureError`s.
Kept light: msgpack and zlib only, no grpc.
"""

from __future__ import annotations

import dataclasses
import io
import zlib
from typing import Any

import msgpack

from tianwang.gateway.errors import GatewayError

MAGIC = b"\x89TWCAP\r\n"
VERSION = 1
FROM_DEVICE = 0
TO_DEVICE = 1
HEADER_KEYS = ("device_id", "family", "driver", "transport", "url", "start_ns", "gateway", "version", "parent", "note")


class CaptureError(GatewayError, ValueError):
    """A file that is not a capture, or a capture that is truncated or corrupt (one line)."""


def is_capture(head: bytes) -> bool:
    """True when `head` (the first bytes of a file) starts with the capture magic."""
    return head[: len(MAGIC)] == MAGIC


class CaptureWriter:
    """Writes a capture to binary stream `f`: the header now, `add()` per chunk, `close(end)` the trailer."""

    def __init__(self, f, header: dict):
        self.f = f
        self.start_ns = int(header.get("start_ns") or 0)
        self._last = self.start_ns
        self.records = 0
        self.nbytes = 0
        self._crc = 0
        self._packer = msgpack.Packer(use_bin_type=True)
        head = MAGIC + bytes((VERSION,)) + self._packer.pack(dict(header))
        self._crc = zlib.crc32(head)
        f.write(head)

    def add(self, t_ns: int, direction: int, data: bytes) -> None:
        if direction not in (FROM_DEVICE, TO_DEVICE):
            raise ValueError(f"direction must be {FROM_DEVICE} or {TO_DEVICE}, not {direction!r}")
        packed = self._packer.pack([int(t_ns) - self._last, direction, bytes(data)])
        self._last = int(t_ns)
        self._crc = zlib.crc32(packed, self._crc)
        self.records += 1
        self.nbytes += len(data)
        self.f.write(packed)

    def close(self, end: str) -> None:
        """Write the trailer (the file is complete from now on) and flush."""
        trailer = {"end": end, "records": self.records, "bytes": self.nbytes, "crc32": self._crc}
        self.f.write(self._packer.pack(trailer))
        self.f.flush()


@dataclasses.dataclass
class Capture:
    header: dict
    records: list  # (t_ns, direction, data), t_ns absolute
    trailer: dict

    @property
    def device_bytes(self) -> bytes:
        """Every byte read from the device, in order (what a decoder or a replay wants)."""
        return b"".join(d for _, direction, d in self.records if direction == FROM_DEVICE)

    def device_records(self) -> list:
        return [(t, d) for t, direction, d in self.records if direction == FROM_DEVICE]

    @property
    def duration_s(self) -> float:
        if not self.records:
            return 0.0
        return max(0, self.records[-1][0] - self.records[0][0]) / 1e9


def read_capture(data: bytes, name: str = "capture") -> Capture:
    """Parse a whole capture file. Raises CaptureError naming `name` and what is wrong."""
    if not data:
        raise CaptureError(f"{name}: empty file, not a capture")
    if not is_capture(data):
        if len(data) < len(MAGIC) and MAGIC.startswith(data):
            raise CaptureError(f"{name}: truncated: {len(data)} bytes, shorter than the capture magic")
        raise CaptureError(f"{name}: not a tianwang capture (no {MAGIC!r} magic at the start)")
    if len(data) <= len(MAGIC):
        raise CaptureError(f"{name}: truncated: the file ends after the magic")
    version = data[len(MAGIC)]
    if version != VERSION:
        raise CaptureError(f"{name}: capture format version {version}; this tianwang reads version {VERSION}")
    body = len(MAGIC) + 1
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=True, max_buffer_size=max(len(data), 1 << 20))
    unpacker.feed(data[body:])

    def take(what: str):
        try:
            return unpacker.unpack()
        except msgpack.OutOfData:
            raise CaptureError(f"{name}: truncated: the file ends inside {what} (byte {len(data)})") from None
        except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
            raise CaptureError(
                f"{name}: corrupt: {what} does not parse at byte {body + unpacker.tell()}: {exc}"
            ) from None

    header = take("the header")
    if not isinstance(header, dict) or not isinstance(header.get("start_ns"), int):
        raise CaptureError(f"{name}: corrupt: the header is not a map with start_ns")
    for key in HEADER_KEYS:
        if key in header and key != "start_ns" and not isinstance(header[key], str):
            raise CaptureError(f"{name}: corrupt: header {key} is not a string")
    t = header["start_ns"]
    records: list[tuple[int, int, bytes]] = []
    trailer: dict[Any, Any] = {}
    while True:
        at = body + unpacker.tell()
        if at >= len(data):
            raise CaptureError(
                f"{name}: truncated after {len(records)} records: no end record (the recording was cut short)"
            )
        item = take(f"record {len(records) + 1} (or the end record)")
        if isinstance(item, dict):
            trailer = item
            break
        if (
            not isinstance(item, list)
            or len(item) != 3
            or not isinstance(item[0], int)
            or item[1] not in (FROM_DEVICE, TO_DEVICE)
            or not isinstance(item[2], bytes)
        ):
            raise CaptureError(
                f"{name}: corrupt: record {len(records) + 1} at byte {at} is not [dt_ns, direction, data]"
            )
        t += item[0]
        records.append((t, item[1], item[2]))
    crc = zlib.crc32(data[:at])
    if trailer.get("crc32") != crc:
        raise CaptureError(
            f"{name}: corrupt: the CRC-32 of the file is {crc:08x}, its end record says {trailer.get('crc32')!r}"
        )
    if trailer.get("records") != len(records) or trailer.get("bytes") != sum(len(r[2]) for r in records):
        raise CaptureError(f"{name}: corrupt: the end record's counts do not match the records")
    if body + unpacker.tell() != len(data):
        raise CaptureError(f"{name}: corrupt: {len(data) - body - unpacker.tell()} bytes after the end record")
    return Capture(header, records, trailer)


def read_capture_file(path: str) -> Capture:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise CaptureError(f"cannot read {path}: {exc.strerror or exc}") from None
    return read_capture(data, path)


class _Prefixed:
    """A binary stream with `head` put back in front of it."""

    def __init__(self, head: bytes, f):
        self.head = head
        self.f = f

    def read(self, n: int = -1) -> bytes:
        head = self.head
        if not head:
            return self.f.read(n)
        if n is None or n < 0:
            self.head = b""
            return head + self.f.read()
        if n <= len(head):
            self.head = head[n:]
            return head[:n]
        self.head = b""
        return head + self.f.read(n - len(head))


def capture_or_raw(f, name: str = "capture"):
    """(stream of the device's bytes, Capture or None) for binary stream `f`: a capture (by its
    magic) is read whole and its device-side bytes served; anything else is passed through as raw
    bytes. Raises CaptureError for a truncated or corrupt capture."""
    head = b""
    while len(head) < len(MAGIC):
        more = f.read(len(MAGIC) - len(head))
        if not more:
            break
        head += more
    if not is_capture(head):
        return _Prefixed(head, f), None
    cap = read_capture(head + f.read(), name)
    return io.BytesIO(cap.device_bytes), cap
