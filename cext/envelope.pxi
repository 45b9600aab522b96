# Envelope wire encoder and the journal's in-memory log.
# Twin: cext/envelope_py.py. Entries are stored framed as Batch.envelopes fields (0x0A, len,
# Envelope) so a Batch is a join; field order and zero-omission match the protobuf library's output.

from libc.string cimport memcpy
from libc.stdlib cimport malloc, free
from libc.stdint cimport uint64_t, int64_t, uint8_t
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.unicode cimport PyUnicode_AsUTF8AndSize
from posix.time cimport clock_gettime, timespec, CLOCK_REALTIME

# bytes object header + two list slots, per entry (see the twin)
ENTRY_OVERHEAD = 56
cdef Py_ssize_t _ENTRY_OVERHEAD = 56


cdef inline Py_ssize_t _varint_len(uint64_t v) noexcept nogil:
    cdef Py_ssize_t n = 1
    while v > 0x7F:
        v >>= 7
        n += 1
    return n


cdef inline char* _put_varint(char* p, uint64_t v) noexcept nogil:
    while v > 0x7F:
        p[0] = <char>((v & 0x7F) | 0x80)
        p += 1
        v >>= 7
    p[0] = <char>v
    return p + 1


cdef inline Py_ssize_t _field_len(Py_ssize_t n) noexcept nogil:
    # tag + length varint + bytes, for a non-empty length-delimited field
    return 0 if n == 0 else 1 + _varint_len(<uint64_t>n) + n


cdef bytes _encode(uint64_t seq, str topic, str device_id, int64_t dtime, int64_t gtime,
                   bytes payload, bint framed):
    cdef Py_ssize_t tlen, dlen, plen = PyBytes_GET_SIZE(payload)
    cdef const char* t = PyUnicode_AsUTF8AndSize(topic, &tlen)
    cdef const char* d = PyUnicode_AsUTF8AndSize(device_id, &dlen)
    cdef Py_ssize_t body = 0
    if seq:
        body += 1 + _varint_len(seq)
    body += _field_len(tlen) + _field_len(dlen) + _field_len(plen)
    if dtime:
        body += 1 + _varint_len(<uint64_t>dtime)
    if gtime:
        body += 1 + _varint_len(<uint64_t>gtime)
    cdef Py_ssize_t total = body + (1 + _varint_len(<uint64_t>body) if framed else 0)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, total)
    cdef char* p = PyBytes_AS_STRING(out)
    if framed:
        p[0] = 0x0A
        p = _put_varint(p + 1, <uint64_t>body)
    if seq:
        p[0] = 0x08
        p = _put_varint(p + 1, seq)
    if tlen:
        p[0] = 0x12
        p = _put_varint(p + 1, <uint64_t>tlen)
        memcpy(p, t, tlen)
        p += tlen
    if dlen:
        p[0] = 0x1A
        p = _put_varint(p + 1, <uint64_t>dlen)
        memcpy(p, d, dlen)
        p += dlen
    if dtime:
        p[0] = 0x20
        p = _put_varint(p + 1, <uint64_t>dtime)
    if gtime:
        p[0] = 0x28
        p = _put_varint(p + 1, <uint64_t>gtime)
    if plen:
        p[0] = 0x32
        p = _put_varint(p + 1, <uint64_t>plen)
        memcpy(p, PyBytes_AS_STRING(payload), plen)
    return out


cdef uint64_t _u64(str name, object v) except? 0xFFFFFFFFFFFFFFFF:
    if not 0 <= v <= 0xFFFFFFFFFFFFFFFF:
        raise OverflowError(f"{name} out of range for uint64: {v}")
    return <uint64_t>v


cdef int64_t _i64(str name, object v) except? -1:
    if not -(1 << 63) <= v < (1 << 63):
        raise OverflowError(f"{name} out of range for int64: {v}")
    return <int64_t>v


def encode_envelope(seq, str topic, str device_id, device_time_ns, gateway_time_ns, payload):
    """Wire bytes of one `Envelope` message. Raises TypeError/OverflowError for bad field values."""
    if not isinstance(payload, bytes):
        raise TypeError(f"payload must be bytes, not {type(payload).__name__}")
    return _encode(_u64("seq", seq), topic, device_id, _i64("device_time_ns", device_time_ns),
                   _i64("gateway_time_ns", gateway_time_ns), <bytes>payload, False)


def encode_gap(from_seq, to_seq, str reason):
    """A `Batch.gap` field (a Batch on its own when sent alone)."""
    cdef uint64_t f = _u64("from_seq", from_seq), t = _u64("to_seq", to_seq)
    cdef bytes r = reason.encode("utf-8")
    cdef Py_ssize_t rlen = len(r)
    cdef Py_ssize_t body = (1 + _varint_len(f) if f else 0) + (1 + _varint_len(t) if t else 0) + _field_len(rlen)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, 1 + _varint_len(<uint64_t>body) + body)
    cdef char* p = PyBytes_AS_STRING(out)
    p[0] = 0x12
    p = _put_varint(p + 1, <uint64_t>body)
    if f:
        p[0] = 0x08
        p = _put_varint(p + 1, f)
    if t:
        p[0] = 0x10
        p = _put_varint(p + 1, t)
    if rlen:
        p[0] = 0x1A
        p = _put_varint(p + 1, <uint64_t>rlen)
        memcpy(p, <char*>r, rlen)
    return out


cdef inline Py_ssize_t _get_varint(const uint8_t* buf, Py_ssize_t pos, Py_ssize_t end, uint64_t* out) except -2:
    cdef uint64_t result = 0
    cdef int shift = 0
    cdef uint8_t b
    while True:
        if pos >= end:
            raise FrameError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (<uint64_t>(b & 0x7F)) << shift
        if not b & 0x80:
            out[0] = result
            return pos
        shift += 7
        if shift > 63:
            raise FrameError("varint longer than 10 bytes")


def count_envelopes(batch):
    """(envelopes, has_gap) of a serialized Batch, reading only its top-level fields.

    Raises FrameError on bytes that are not a well-formed Batch.
    """
    cdef const uint8_t[::1] view = batch
    cdef Py_ssize_t pos = 0, end = view.shape[0], n = 0
    cdef bint gap = False
    cdef uint64_t key, length, dummy
    cdef const uint8_t* buf = &view[0] if end else NULL
    while pos < end:
        pos = _get_varint(buf, pos, end, &key)
        wire = key & 7
        if wire == 2:
            pos = _get_varint(buf, pos, end, &length)
            if length > <uint64_t>(end - pos):
                raise FrameError("field length runs past the end of the batch")
            pos += <Py_ssize_t>length
            if key >> 3 == 1:
                n += 1
            elif key >> 3 == 2:
                gap = True
        elif wire == 0:
            pos = _get_varint(buf, pos, end, &dummy)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise FrameError(f"unsupported wire type {wire}")
        if pos > end:
            raise FrameError("field runs past the end of the batch")
    return n, gap


cdef class EntryLog:
    """The journal's in-memory log: encoded entries in seq order, retained by bytes.

    `first_seq` is the oldest seq still held, `next_seq` the one the next append gets. When the held
    bytes (wire bytes + ENTRY_OVERHEAD each) pass `max_bytes`, the oldest entries go. `waiter`, when
    set, is a Future that the next append resolves and clears (readers waiting for new entries).
    """

    def __init__(self, max_bytes, first_seq=1):
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        if first_seq < 1:
            raise ValueError("first_seq starts at 1")
        self.max_bytes = max_bytes
        self.first_seq = first_seq
        self.next_seq = first_seq
        self.nbytes = 0
        self.trimmed = 0
        self._entries = []
        self._topics = []
        self._head = 0
        self.waiter = None
        self.pack = None
        self.max_payload = 512 * 1024
        self.rejected = 0

    def __len__(self):
        return self.next_seq - self.first_seq

    def append(self, str topic, str device_id, int64_t device_time_ns, int64_t gateway_time_ns, bytes payload):
        """Encode and append one envelope; return its seq."""
        if payload is None:
            raise TypeError("payload must be bytes, not NoneType")
        return self._append(topic, device_id, device_time_ns, gateway_time_ns, payload)

    def publish(self, str topic, str device_id, payload, int64_t device_time_ns=0):
        """Encode `payload` with `self.pack`, stamp the gateway time, append; return the seq.

        Raises FrameError (counted in `rejected`) when the payload cannot be encoded or its
        encoding is larger than `max_payload`.
        """
        cdef object packed
        cdef timespec ts
        try:
            packed = self.pack(payload)
        except (TypeError, ValueError, OverflowError) as exc:
            self.rejected += 1
            raise FrameError(f"{topic}: payload cannot be encoded: {exc}") from exc
        if PyBytes_GET_SIZE(packed) > self.max_payload:
            self.rejected += 1
            raise FrameError(f"{topic}: payload of {len(packed)} bytes exceeds {self.max_payload}")
        clock_gettime(CLOCK_REALTIME, &ts)
        return self._append(topic, device_id, device_time_ns,
                            <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec, <bytes>packed)

    cdef unsigned long long _append(self, str topic, str device_id, int64_t dtime, int64_t gtime, bytes payload) except 0:
        cdef uint64_t seq = self.next_seq
        cdef bytes entry = _encode(seq, topic, device_id, dtime, gtime, payload, True)
        self._entries.append(entry)
        self._topics.append(topic)
        self.next_seq = seq + 1
        self.nbytes += PyBytes_GET_SIZE(entry) + _ENTRY_OVERHEAD
        if self.nbytes > self.max_bytes:
            self._trim()
        if self.waiter is not None:
            waiter = self.waiter
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)
        return seq

    cdef int _trim(self) except -1:
        cdef list entries = self._entries
        cdef Py_ssize_t head = self._head
        cdef Py_ssize_t last = len(entries) - 1
        cdef Py_ssize_t keep
        if self.keep_from and self.keep_from >= self.first_seq:
            # a durable journal's writer has not written these yet: they stay
            keep = self._head + <Py_ssize_t>(self.keep_from - self.first_seq)
            if keep < last:
                last = keep
        while self.nbytes > self.max_bytes and head < last:
            self.nbytes -= PyBytes_GET_SIZE(<bytes>PyList_GET_ITEM(entries, head)) + _ENTRY_OVERHEAD
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
        return 0

    def entry(self, seq):
        """The framed entry bytes of `seq`. Raises KeyError when it is not held."""
        if not self.first_seq <= seq < self.next_seq:
            raise KeyError(seq)
        return self._entries[self._head + <Py_ssize_t>(seq - self.first_seq)]

    def topic(self, seq):
        if not self.first_seq <= seq < self.next_seq:
            raise KeyError(seq)
        return self._topics[self._head + <Py_ssize_t>(seq - self.first_seq)]

    def collect(self, uint64_t from_seq, TopicFilter flt, Py_ssize_t max_n, Py_ssize_t max_bytes,
                Py_ssize_t max_scan=65536, bint strict=False):
        """Up to `max_n` entries from `from_seq` on whose topic `flt` matches (None = all), joined.

        Stops before passing `max_bytes` and after looking at `max_scan` entries. Unless `strict`,
        the first matching entry is taken whatever its size (so an entry larger than the cap still
        goes out, alone); with `strict` (topping up a batch) it stops there instead. Returns (batch bytes, count, next seq to look at).
        Raises ValueError when `from_seq` is older than `first_seq` (the caller sends a Gap first).
        """
        if from_seq < self.first_seq:
            raise ValueError(f"seq {from_seq} is no longer held (oldest is {self.first_seq})")
        if from_seq >= self.next_seq or max_n <= 0:
            return b"", 0, from_seq
        cdef Py_ssize_t i = self._head + <Py_ssize_t>(from_seq - self.first_seq)
        cdef Py_ssize_t end = self._head + <Py_ssize_t>(self.next_seq - self.first_seq)
        if end - i > max_scan:
            end = i + max_scan
        cdef list entries = self._entries
        cdef list topics = self._topics
        cdef bint check = flt is not None and not flt.match_all
        cdef Py_ssize_t* picked = <Py_ssize_t*>malloc(max_n * sizeof(Py_ssize_t))
        if picked == NULL:
            raise MemoryError()
        cdef Py_ssize_t n = 0, size = 0, elen, k
        cdef bytes out
        cdef char* p
        cdef object e
        try:
            while i < end:
                if not check or flt.check(<str>PyList_GET_ITEM(topics, i)):
                    elen = PyBytes_GET_SIZE(<bytes>PyList_GET_ITEM(entries, i))
                    if size + elen > max_bytes and (n or strict):
                        break
                    picked[n] = i
                    n += 1
                    size += elen
                    if n >= max_n:
                        i += 1
                        break
                i += 1
            out = PyBytes_FromStringAndSize(NULL, size)
            p = PyBytes_AS_STRING(out)
            for k in range(n):
                e = <object>PyList_GET_ITEM(entries, picked[k])
                elen = PyBytes_GET_SIZE(e)
                memcpy(p, PyBytes_AS_STRING(e), elen)
                p += elen
        finally:
            free(picked)
        return out, n, self.first_seq + <uint64_t>(i - self._head)
