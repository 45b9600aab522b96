# Reading framed entries back from a journal segment block (twin: cext/journal_scan_py.py).
# A block's payload is the journal's framed entries end to end (0x0A, len, Envelope with its seq
# first and its topic second); replaying it is EntryLog.collect over bytes. Included after
# envelope.pxi and topics.pxi, whose imports (memcpy, malloc, the bytes API) it uses.

from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdlib cimport realloc


cdef inline Py_ssize_t _js_varint(const unsigned char* buf, Py_ssize_t pos, Py_ssize_t end,
                                  uint64_t* out) except -2:
    # the position after the varint; -1 when it is truncated, -3 when longer than 10 bytes
    cdef uint64_t result = 0
    cdef int shift = 0
    cdef unsigned char b
    while True:
        if pos >= end:
            return -1
        b = buf[pos]
        pos += 1
        result |= (<uint64_t>(b & 0x7F)) << shift
        if not b & 0x80:
            out[0] = result
            return pos
        shift += 7
        if shift > 63:
            return -3


cdef int _js_varint_error(Py_ssize_t code) except -1:
    # the same messages as the twin (it reads varints with envelope_py._read_varint)
    if code == -3:
        raise FrameError("varint longer than 10 bytes")
    raise FrameError("truncated varint")


def scan_entries(const unsigned char[::1] buf not None, Py_ssize_t pos, uint64_t seq, uint64_t from_seq,
                 TopicFilter flt, Py_ssize_t max_n, Py_ssize_t max_bytes, bint strict=False):
    """Walk the entries of `buf` from byte `pos`, where the entry numbered `seq` starts.

    Entries before `from_seq` and those `flt` does not match (None = all) are passed over; up to
    `max_n` matching ones are joined, stopping before `max_bytes` with the rule of
    EntryLog.collect (unless `strict`, the first match goes out whatever its size). Returns
    (batch bytes, count, seq of the first entry not looked at, its byte position). Raises
    FrameError when the bytes are not entries or an entry does not carry the seq expected of it.
    """
    cdef Py_ssize_t end = buf.shape[0]
    if pos < 0 or pos > end:
        raise ValueError(f"position {pos} outside a block of {end} bytes")
    cdef const unsigned char* b = &buf[0] if end else NULL
    cdef bint check = flt is not None and not flt.match_all
    cdef Py_ssize_t cap = max_n if 0 < max_n < 4096 else 4096
    # runs of consecutive picked entries: (start, stop) pairs
    cdef Py_ssize_t* runs = NULL
    cdef Py_ssize_t nruns = 0, k
    cdef Py_ssize_t n = 0, size = 0, elen, body, stop, p, t
    cdef Py_ssize_t* grown
    cdef uint64_t length, got, tlen
    cdef bint take
    cdef str topic
    cdef bytes out
    cdef char* dst
    if max_n <= 0:
        return b"", 0, seq, pos
    runs = <Py_ssize_t*>malloc(2 * cap * sizeof(Py_ssize_t))
    if runs == NULL:
        raise MemoryError()
    try:
        while pos < end and n < max_n:
            if b[pos] != 0x0A:
                raise FrameError(f"entry {seq}: expected an envelope field, found byte 0x{b[pos]:02x}")
            body = _js_varint(b, pos + 1, end, &length)
            if body < 0:
                _js_varint_error(body)
            if length > <uint64_t>(end - body):
                raise FrameError(f"entry {seq}: {length} bytes run past the end of the block")
            stop = body + <Py_ssize_t>length
            if body >= stop or b[body] != 0x08:
                raise FrameError(f"entry {seq}: envelope does not start with its seq")
            p = _js_varint(b, body + 1, stop, &got)
            if p < 0:
                _js_varint_error(p)
            if got != seq:
                raise FrameError(f"entry {seq}: envelope carries seq {got}")
            if seq >= from_seq:
                take = True
                if check:
                    if p >= stop or b[p] != 0x12:
                        raise FrameError(f"entry {seq}: envelope has no topic")
                    t = _js_varint(b, p + 1, stop, &tlen)
                    if t < 0:
                        _js_varint_error(t)
                    if tlen > <uint64_t>(stop - t):
                        raise FrameError(f"entry {seq}: topic runs past the envelope")
                    try:
                        topic = PyUnicode_DecodeUTF8(<const char*>(b + t), <Py_ssize_t>tlen, NULL)
                    except UnicodeDecodeError as exc:
                        raise FrameError(f"entry {seq}: topic is not UTF-8") from exc
                    take = flt.check(topic) == 1
                if take:
                    elen = stop - pos
                    if size + elen > max_bytes and (n or strict):
                        break
                    if nruns and runs[2 * nruns - 1] == pos:
                        runs[2 * nruns - 1] = stop
                    else:
                        if nruns == cap:
                            cap *= 2
                            grown = <Py_ssize_t*>realloc(runs, 2 * cap * sizeof(Py_ssize_t))
                            if grown == NULL:
                                raise MemoryError()
                            runs = grown
                        runs[2 * nruns] = pos
                        runs[2 * nruns + 1] = stop
                        nruns += 1
                    size += elen
                    n += 1
            pos = stop
            seq += 1
        out = PyBytes_FromStringAndSize(NULL, size)
        dst = PyBytes_AS_STRING(out)
        for k in range(nruns):
            elen = runs[2 * k + 1] - runs[2 * k]
            memcpy(dst, b + runs[2 * k], elen)
            dst += elen
    finally:
        free(runs)
    return out, n, seq, pos
