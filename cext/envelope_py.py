"""Envelope wire encoder and the journal's in-memory log: pure-Python twin of the compiled
`EntryLog`, `encode_envelope`, `encode_gap` and `count_envelopes` in `tianwang.cext._speedups`.

Each reading is encoded once, when it is appended, into the bytes of a `Batch.envelopes` field
(tag 0x0A, length, Envelope). A Batch on the wire is then nothing but such entries laid end to end,
optionally after a `Batch.gap` field (tag 0x12): building a batch for a subscriber is a join, and the
gRPC handler passes the bytes through without a serializer. Field order and the omission of zero
values follow what the protobuf library writes, so the bytes are identical to its output.
"""

import time

from tianwang.gateway.errors import FrameError

# Retention accounting per entry beyond its wire bytes: the bytes object header and the two list
# slots (entry and topic). Keeps `max_bytes` close to the memory the journal really holds.
ENTRY_OVERHEAD = 56
UINT64_MAX = (1 << 64) - 1


def _varint(value):
    if value < 0:
        value &= UINT64_MAX  # int64 negatives are written as 10-byte two's complement
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _check_u64(name, value):
    if not 0 <= value <= UINT64_MAX:
        raise OverflowError(f"{name} out of range for uint64: {value}")


def _check_i64(name, value):
    if not -(1 << 63) <= value < (1 << 63):
        raise OverflowError(f"{name} out of range for int64: {value}")


def encode_envelope(seq, topic, device_id, device_time_ns, gateway_time_ns, payload):
    """Wire bytes of one `Envelope` message. Raises TypeError/OverflowError for bad field values."""
    _check_u64("seq", seq)
    _check_i64("device_time_ns", device_time_ns)
    _check_i64("gateway_time_ns", gateway_time_ns)
    if not isinstance(payload, bytes):
        raise TypeError(f"payload must be bytes, not {type(payload).__name__}")
    t = topic.encode("utf-8")
    d = device_id.encode("utf-8")
    out = bytearray()
    if seq:
        out += b"\x08" + _varint(seq)
    if t:
        out += b"\x12" + _varint(len(t)) + t
    if d:
        out += b"\x1a" + _varint(len(d)) + d
    if device_time_ns:
        out += b"\x20" + _varint(device_time_ns)
    if gateway_time_ns:
        out += b"\x28" + _varint(gateway_time_ns)
    if payload:
        out += b"\x32" + _varint(len(payload)) + payload
    return bytes(out)


def encode_entry(seq, topic, device_id, device_time_ns, gateway_time_ns, payload):
    """An Envelope framed as a `Batch.envelopes` field: ready to be joined into a Batch."""
    env = encode_envelope(seq, topic, device_id, device_time_ns, gateway_time_ns, payload)
    return b"\x0a" + _varint(len(env)) + env


def encode_gap(from_seq, to_seq, reason):
    """A `Batch.gap` field (a Batch on its own when sent alone)."""
    _check_u64("from_seq", from_seq)
    _check_u64("to_seq", to_seq)
    r = reason.encode("utf-8")
    gap = bytearray()
    if from_seq:
        gap += b"\x08" + _varint(from_seq)
    if to_seq:
        gap += b"\x10" + _varint(to_seq)
    if r:
        gap += b"\x1a" + _varint(len(r)) + r
    return b"\x12" + _varint(len(gap)) + bytes(gap)


def _read_varint(buf, pos, end):
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise FrameError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise FrameError("varint longer than 10 bytes")


def count_envelopes(batch):
    """(envelopes, has_gap) of a serialized Batch, reading only its top-level fields.

    What a subscriber that passes bytes through needs in order to count. Raises FrameError on bytes
    that are not a well-formed Batch.
    """
    buf = memoryview(batch).cast("B") if not isinstance(batch, bytes) else batch
    pos = 0
    end = len(buf)
    n = 0
    gap = False
    while pos < end:
        key, pos = _read_varint(buf, pos, end)
        wire = key & 7
        if wire == 2:
            length, pos = _read_varint(buf, pos, end)
            if length > end - pos:
                raise FrameError("field length runs past the end of the batch")
            pos += length
            if key >> 3 == 1:
                n += 1
            elif key >> 3 == 2:
                gap = True
        elif wire == 0:
            _, pos = _read_varint(buf, pos, end)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise FrameError(f"unsupported wire type {wire}")
        if pos > end:
            raise FrameError("field runs past the end of the batch")
    return n, gap


class EntryLog:
    """The journal's in-memory log: encoded entries in seq order, retained by bytes.

    `first_seq` is the oldest seq still held, `next_seq` the one the next append gets; both start at
    `first_seq` (1 for a new journal). When the held bytes (wire bytes + ENTRY_OVERHEAD each) pass
    `max_bytes`, the oldest entries go. `waiter`, when set, is a Future that the next append
    resolves and clears (readers waiting for new entries). `keep_from`, when set, pins the
    entries from that seq on: retention does not drop them even past `max_bytes` (a durable
    journal's writer sets it to the first seq it has not written yet).
    """

    def __init__(self, max_bytes, first_seq=1):
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        if first_seq < 1:
            raise ValueError("first_seq starts at 1")
        self.max_bytes = int(max_bytes)
        self.first_seq = int(first_seq)
        self.next_seq = int(first_seq)
        self.nbytes = 0
        self.trimmed = 0  # entries dropped by retention, since creation
        self._entries = []
        self._topics = []
        self._head = 0
        self.waiter = None
        self.pack = None  # payload encoder for publish(): msgpack Packer.pack
        self.max_payload = 512 * 1024
        self.rejected = 0  # publish() refusals: unencodable or oversize payloads
        self.keep_from = 0  # retention never drops this seq or newer (0: no pin)

    def __len__(self):
        return self.next_seq - self.first_seq

    def append(self, topic, device_id, device_time_ns, gateway_time_ns, payload):
        """Encode and append one envelope; return its seq."""
        seq = self.next_seq
        entry = encode_entry(seq, topic, device_id, device_time_ns, gateway_time_ns, payload)
        self._entries.append(entry)
        self._topics.append(topic)
        self.next_seq = seq + 1
        self.nbytes += len(entry) + ENTRY_OVERHEAD
        if self.nbytes > self.max_bytes:
            self._trim()
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)
        return seq

    def publish(self, topic, device_id, payload, device_time_ns=0):
        """Encode `payload` with `self.pack`, stamp the gateway time, append; return the seq.

        Raises FrameError (counted in `rejected`) when the payload cannot be encoded or its
        encoding is larger than `max_payload`.
        """
        try:
            packed = self.pack(payload)
        except (TypeError, ValueError, OverflowError) as exc:
            self.rejected += 1
            raise FrameError(f"{topic}: payload cannot be encoded: {exc}") from exc
        if len(packed) > self.max_payload:
            self.rejected += 1
            raise FrameError(f"{topic}: payload of {len(packed)} bytes exceeds {self.max_payload}")
        return self.append(topic, device_id, device_time_ns, time.time_ns(), packed)

    def _trim(self):
        entries = self._entries
        head = self._head
        last = len(entries) - 1  # the newest entry always stays
        if self.keep_from and self.keep_from >= self.first_seq:
            # a durable journal's writer has not written these yet: they stay
            last = min(last, self._head + (self.keep_from - self.first_seq))
        while self.nbytes > self.max_bytes and head < last:
            self.nbytes -= len(entries[head]) + ENTRY_OVERHEAD
            entries[head] = None
            self._topics[head] = None
            head += 1
        self.trimmed += head - self._head
        self.first_seq += head - self._head
        if head > 4096 and head * 2 > len(entries):
            del entries[:head]
            del self._topics[:head]
            head = 0
        self._head = head

    def entry(self, seq):
        """The framed entry bytes of `seq`. Raises KeyError when it is not held."""
        if not self.first_seq <= seq < self.next_seq:
            raise KeyError(seq)
        return self._entries[self._head + seq - self.first_seq]

    def topic(self, seq):
        if not self.first_seq <= seq < self.next_seq:
            raise KeyError(seq)
        return self._topics[self._head + seq - self.first_seq]

    def collect(self, from_seq, flt, max_n, max_bytes, max_scan=65536, strict=False):
        """Up to `max_n` entries from `from_seq` on whose topic `flt` matches (None = all), joined.

        Stops before passing `max_bytes` and after looking at `max_scan` entries. Unless `strict`,
        the first matching entry is taken whatever its size (so an entry larger than the cap still
        goes out, alone); with `strict` (topping up a batch) it stops there instead. Returns (batch
        bytes, count, next seq to look at).
        Raises ValueError when `from_seq` is older than `first_seq` (the caller sends a Gap first).
        """
        if from_seq < self.first_seq:
            raise ValueError(f"seq {from_seq} is no longer held (oldest is {self.first_seq})")
        if from_seq >= self.next_seq or max_n <= 0:
            return b"", 0, from_seq
        i = self._head + (from_seq - self.first_seq)
        end = self._head + (self.next_seq - self.first_seq)
        if end - i > max_scan:
            end = i + max_scan
        entries = self._entries
        topics = self._topics
        parts = []
        size = 0
        matches = flt.matches if flt is not None and not flt.match_all else None
        while i < end:
            if matches is None or matches(topics[i]):
                e = entries[i]
                if size + len(e) > max_bytes and (parts or strict):
                    break
                parts.append(e)
                size += len(e)
                if len(parts) >= max_n:
                    i += 1
                    break
            i += 1
        next_seq = self.first_seq + (i - self._head)
        return b"".join(parts), len(parts), next_seq
