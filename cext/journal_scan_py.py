"""Reading framed entries back from a journal segment block: pure-Python twin of the compiled
`scan_entries` in `tianwang.cext._speedups` (cext/journal_scan.pxi).

A disk block's payload is the journal's entries laid end to end, exactly as they sit in memory:
each a `Batch.envelopes` field (0x0A, length, Envelope) whose Envelope starts with its seq (field 1)
and its topic (field 2). Replaying a block to a subscriber is then the in-memory `collect` again,
over bytes instead of a list: skip to the cursor, keep what the topic filter matches, join.
"""

from tianwang.cext.envelope_py import _read_varint as _varint
from tianwang.gateway.errors import FrameError


def scan_entries(buf, pos, seq, from_seq, flt, max_n, max_bytes, strict=False):
    """Walk the entries of `buf` from byte `pos`, where the entry numbered `seq` starts.

    Entries before `from_seq` and those `flt` does not match (None = all) are passed over; up to
    `max_n` matching ones are joined, stopping before `max_bytes` with the rule of
    EntryLog.collect (unless `strict`, the first match goes out whatever its size). Returns
    (batch bytes, count, seq of the first entry not looked at, its byte position). Raises
    FrameError when the bytes are not entries or an entry does not carry the seq expected of it.
    """
    end = len(buf)
    if not 0 <= pos <= end:
        raise ValueError(f"position {pos} outside a block of {end} bytes")
    matches = flt.matches if flt is not None and not flt.match_all else None
    parts = []
    size = 0
    n = 0
    while pos < end and n < max_n:
        if buf[pos] != 0x0A:
            raise FrameError(f"entry {seq}: expected an envelope field, found byte 0x{buf[pos]:02x}")
        length, body = _varint(buf, pos + 1, end)
        stop = body + length
        if stop > end:
            raise FrameError(f"entry {seq}: {length} bytes run past the end of the block")
        if body >= stop or buf[body] != 0x08:
            raise FrameError(f"entry {seq}: envelope does not start with its seq")
        got, p = _varint(buf, body + 1, stop)
        if got != seq:
            raise FrameError(f"entry {seq}: envelope carries seq {got}")
        if seq >= from_seq:
            take = True
            if matches is not None:
                if p >= stop or buf[p] != 0x12:
                    raise FrameError(f"entry {seq}: envelope has no topic")
                tlen, t = _varint(buf, p + 1, stop)
                if t + tlen > stop:
                    raise FrameError(f"entry {seq}: topic runs past the envelope")
                try:
                    topic = bytes(buf[t : t + tlen]).decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise FrameError(f"entry {seq}: topic is not UTF-8") from exc
                take = matches(topic)
            if take:
                elen = stop - pos
                if size + elen > max_bytes and (n or strict):
                    break
                parts.append(bytes(buf[pos:stop]))
                size += elen
                n += 1
        pos = stop
        seq += 1
    return b"".join(parts), n, seq, pos
