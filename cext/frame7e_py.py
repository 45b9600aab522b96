"""0x7E-delimited framers and encoders: pure-Python twin of the compiled `Jt808Framer`,
`Gbt20999Framer`, `PmppFramer`, `encode_jt808`, `encode_gbt20999`, `encode_pmpp` and the CRC
helpers in `tianwang.cext._speedups` (cext/frame7e.pxi). Same frames, same counters, same exceptions.

One engine, three configurations:

| framer            | wire                                   | escaping                  | check                     |
|-------------------|----------------------------------------|---------------------------|---------------------------|
| `Jt808Framer`     | 7E header body xor 7E                  | 7D 02 = 7E, 7D 01 = 7D    | XOR of header..body       |
| `Gbt20999Framer`  | 7E len(2) version..data crc(2) 7D      | 5C x = x (x in 7E 7D 5C)  | CRC-16 over len..data     |
| `PmppFramer`      | 7E addr ctrl ipi info fcs(2) 7E        | 7D x = x ^ 0x20           | CRC-16/X.25, low byte 1st |

`feed(data)` takes any bytes-like chunk (split anywhere) and returns a list of `bytes`, one per good
frame, unescaped and verified, with the framing stripped:

- JT/T 808: header + body (message id first); delimiters and the checksum byte removed.
- GB/T 20999: protocol version through the last data byte; delimiters, length field and CRC removed.
- NTCIP PMPP: address, control, protocol identifier, information; delimiters and FCS removed.

Bad input never raises: it is counted and skipped, and the good frames around it survive.
Counters: `frames` (delivered), `resyncs` (runs of bytes skipped while hunting for a start flag),
`dropped_bytes` (wire bytes thrown away; the 0x7E flags of JT/T 808 and PMPP are delimiters shared
between frames and never count), `drops` (reason -> count, every reason always present), `bytes_in`.
Reasons:

- `bad_checksum`: XOR / CRC / FCS mismatch.
- `bad_escape`: an escape byte followed by a byte it cannot escape (JT/T 808: not 01/02; GB/T:
  not 7E/7D/5C; any profile: escape byte right before the closing flag).
- `too_long`: the frame grew past `max_frame` unescaped bytes, or (GB/T) its length field declares
  more; it is discarded up to the next 0x7E without buffering it.
- `bad_length`: the frame is longer than its length field says (JT/T 808: body length, bits 0-9 of
  the attributes; GB/T: the length field under the profile's convention), or (GB/T, unescaped
  profile) the declared length does not lead to an end flag or is below the minimum frame.
- `truncated`: shorter than its header or length field requires, interrupted by a new start flag
  (GB/T), or still open at `finish()`.

GB/T 20999 escapes by prefix, so a stump cut right after a 0x5C turns the next frame's start flag
into an escaped 7E (every 7E in the unescaped content came that way). A frame that fails is split at
the first such 7E: the part before is checked as a frame of its own (delivered if good, else counted
under its own reason, with its start flag and the lone 5C), the rest is a frame that 7E started and
is checked the same way. This happens when a frame ended by 7D is `truncated` or `bad_length` (its
length field says it is not one frame); when its length fits but its CRC does not (most likely one
frame hit by noise that happens to hold a 7E) only if splitting brings a good frame out, else it is
one `bad_checksum`; when it grows too long, by size or by its length field (the rest stays open,
and only content without a 7E is dropped as `too_long`); and after a bad escape (the frame is
dropped as `bad_escape` at the next escaped 7E, which opens the next frame). A good frame after any
damage therefore survives in every profile.

For the same-flag protocols (JT/T 808, PMPP) a closing flag also opens the next frame, so a frame cut
short by a dropped connection or noise costs one drop and the frame after it survives; bytes between
two flags that are not a frame are dropped under the reason that rejects them.

`keep_rejects=True` keeps, for every frame dropped after it was delimited (`bad_checksum`,
`bad_escape`, `bad_length`, `truncated`), a `(reason, content)` pair for `take_rejects()`: `content`
is the unescaped bytes between the flags (JT/T 808: header, body and checksum byte as received; up to
the bad escape for `bad_escape`). A JT/T 808 listener reads the message id and serial from it to
answer 0x8001 with result 2 (message error), as the standard asks for a message that fails its check.
At most `MAX_REJECTS` pairs wait; later ones are counted only. The unescaped GB/T profile keeps
`bad_checksum` rejects only, with the bytes its length field covers.

GB/T 20999 profile (`Gbt20999Framer` and `encode_gbt20999` keywords; defaults are the majority):
`length_field` "n-2" | "n" | "n-4" (what the length field holds, N = bytes between the flags),
`crc` "gbt20999" (poly 0x1005, init 0) | "ccitt-false" (0x1021, init 0xFFFF), `escaped` True | False.
An unescaped profile is framed by its length field: 7E, length, then the 7D the length points to;
a candidate that fails any check is dropped (its 7E counts one dropped byte) and the bytes after its
7E are scanned again, so a good frame swallowed by a stump's length field still comes out.
"""

import re

from tianwang.gateway.errors import ConfigError, FrameError

FLAG = 0x7E
REASONS = ("bad_checksum", "bad_escape", "too_long", "bad_length", "truncated")
_BAD_CHECKSUM, _BAD_ESCAPE, _TOO_LONG, _BAD_LENGTH, _TRUNCATED = range(len(REASONS))
MAX_REJECTS = 64
DEFAULT_MAX_FRAME = 4096  # unescaped bytes between the flags

# GB/T 20999 length-field conventions: N (bytes between the flags) = field + adjustment
LENGTH_FIELDS = {"n-2": 2, "n": 0, "n-4": 4}
CRCS = ("gbt20999", "ccitt-false")
# GB/T 20999: length(2) version(2) host(1) controller(4) road(1) seq(1) type(1) crc(2); the heartbeat
# frame has no value count, so it is the shortest frame
GBT_MIN_FRAME = 14
# JT/T 808 header: id(2) attributes(2) phone BCD[6] serial(2); 2019 adds a version byte and BCD[10]
JT808_HEADER = 12
JT808_HEADER_2019 = 17
JT808_SPLIT_EXTRA = 4  # total(2) index(2) when attribute bit 13 is set
PMPP_MIN_FRAME = 5  # address, control, protocol identifier, FCS(2)

_HUNT, _FRAME, _DISCARD = 0, 1, 2
_KIND_JT808, _KIND_GBT, _KIND_PMPP = 0, 1, 2


def _crc_table_msb(poly):
    table = []
    for i in range(256):
        c = i << 8
        for _ in range(8):
            c = ((c << 1) ^ poly) if c & 0x8000 else (c << 1)
        table.append(c & 0xFFFF)
    return tuple(table)


def _crc_table_lsb(poly):
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c)
    return tuple(table)


_GBT_TABLE = _crc_table_msb(0x1005)  # GB/T 20999: x16+x12+x2+1 as the text writes it
_CCITT_TABLE = _crc_table_msb(0x1021)
_X25_TABLE = _crc_table_lsb(0x8408)  # CRC-16/X.25: 0x1021 reflected


def _as_bytes(data):
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        raise TypeError("expected a bytes-like object, not str")
    view = memoryview(data)
    if not view.c_contiguous:
        raise BufferError("a framer reads contiguous buffers only")
    return view.tobytes()


def _crc_msb(table, crc, data):
    for b in data:
        crc = ((crc << 8) & 0xFFFF) ^ table[(crc >> 8) ^ b]
    return crc


def crc16_gbt20999(data):
    """GB/T 20999 CRC-16: poly 0x1005, init 0, not reflected, xorout 0 ("123456789" -> 0x5BB8)."""
    return _crc_msb(_GBT_TABLE, 0, _as_bytes(data))


def crc16_ccitt_false(data):
    """CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF ("123456789" -> 0x29B1); one GB/T vendor's CRC."""
    return _crc_msb(_CCITT_TABLE, 0xFFFF, _as_bytes(data))


def crc16_x25(data):
    """CRC-16/X.25, the PMPP FCS: reflected 0x1021, init and xorout 0xFFFF ("123456789" -> 0x906E)."""
    crc = 0xFFFF
    for b in _as_bytes(data):
        crc = (crc >> 8) ^ _X25_TABLE[(crc ^ b) & 0xFF]
    return crc ^ 0xFFFF


def xor_checksum(data):
    """JT/T 808 check code: XOR of every byte."""
    x = 0
    for b in _as_bytes(data):
        x ^= b
    return x


def _gbt_options(length_field, crc):
    if length_field not in LENGTH_FIELDS:
        raise ConfigError(f"length_field must be one of {', '.join(LENGTH_FIELDS)}, not {length_field!r}")
    if crc not in CRCS:
        raise ConfigError(f"crc must be one of {', '.join(CRCS)}, not {crc!r}")
    return LENGTH_FIELDS[length_field], (_GBT_TABLE, 0) if crc == "gbt20999" else (_CCITT_TABLE, 0xFFFF)


class _Frame7e:
    """The engine; the subclasses below configure it."""

    def _setup(self, kind, max_frame, keep_rejects):
        if not isinstance(max_frame, int) or isinstance(max_frame, bool):
            raise TypeError("max_frame must be an int")
        if not 16 <= max_frame <= 1 << 20:
            raise ConfigError(f"max_frame must be between 16 and {1 << 20}, not {max_frame}")
        self._kind = kind
        self.max_frame = max_frame
        self.keep_rejects = bool(keep_rejects)
        self.frames = 0
        self.resyncs = 0
        self.dropped_bytes = 0
        self.bytes_in = 0
        self._drops = [0] * len(REASONS)
        self._rejects = []
        self._state = _HUNT
        self._in_noise = False
        self._buf = bytearray()  # unescaped content of the frame being read
        self._raw = 0  # wire bytes of that frame between its flags
        self._esc = False  # an escape byte waits for its partner
        self._bad = False  # a bad escape was seen: the frame is dropped at its end
        self._carry = bytearray()  # unescaped GB/T profile: bytes from a pending candidate on
        self.escaped = True
        self._adjust = 2
        self._crc = (_GBT_TABLE, 0)
        self._specials = re.compile(rb"[\x7d\x7e]")  # escape byte and flag

    # -- counters ----------------------------------------------------------------------------

    @property
    def drops(self):
        """Frames dropped, by reason (every reason present)."""
        return dict(zip(REASONS, self._drops, strict=True))

    @property
    def buffered(self):
        """Bytes held for a frame that has not ended yet."""
        return len(self._carry) if not self.escaped else len(self._buf)

    def take_rejects(self):
        """The `(reason, content)` pairs kept since the last call (see the module docstring)."""
        out = self._rejects
        self._rejects = []
        return out

    def _drop(self, reason, nbytes, content=None):
        self._drops[reason] += 1
        self.dropped_bytes += nbytes
        if content is not None and self.keep_rejects and len(self._rejects) < MAX_REJECTS:
            self._rejects.append((REASONS[reason], bytes(content)))

    def _noise(self, n):
        self.dropped_bytes += n
        if not self._in_noise:
            self._in_noise = True
            self.resyncs += 1

    def _open(self):
        self._state = _FRAME
        self._buf = bytearray()
        self._raw = 0
        self._esc = False
        self._bad = False

    # -- checks on a whole unescaped frame: (reason index, None) or (-1, delivered bytes) --------

    def _check(self, c):
        n = len(c)
        kind = self._kind
        if kind == _KIND_JT808:
            if n < 4:
                return _TRUNCATED, None
            attrs = (c[2] << 8) | c[3]
            header = JT808_HEADER_2019 if attrs & 0x4000 else JT808_HEADER
            if attrs & 0x2000:
                header += JT808_SPLIT_EXTRA
            expected = header + (attrs & 0x3FF) + 1
            if n < expected:
                return _TRUNCATED, None
            if n > expected:
                return _BAD_LENGTH, None
            x = 0
            for b in c[:-1]:
                x ^= b
            if x != c[-1]:
                return _BAD_CHECKSUM, None
            return -1, bytes(c[:-1])
        if kind == _KIND_GBT:
            if n < GBT_MIN_FRAME:
                return _TRUNCATED, None
            declared = ((c[0] << 8) | c[1]) + self._adjust
            if declared > n:
                return _TRUNCATED, None
            if declared < n:
                return _BAD_LENGTH, None
            table, init = self._crc
            if _crc_msb(table, init, c[:-2]) != (c[-2] << 8) | c[-1]:
                return _BAD_CHECKSUM, None
            return -1, bytes(c[2:-2])
        if n < PMPP_MIN_FRAME:
            return _TRUNCATED, None
        crc = 0xFFFF
        for b in c[:-2]:
            crc = (crc >> 8) ^ _X25_TABLE[(crc ^ b) & 0xFF]
        if crc ^ 0xFFFF != c[-2] | (c[-1] << 8):
            return _BAD_CHECKSUM, None
        return -1, bytes(c[:-2])

    def _finish_frame(self, content, nbytes, out):
        reason, frame = self._check(content)
        if reason < 0:
            self.frames += 1
            out.append(frame)
        else:
            self._drop(reason, nbytes, content)

    def _finish_gbt(self, content, nbytes, out):
        """A GB/T frame ended by its 7D: check it; if it fails and holds an escaped 7E (a start
        flag a stump's lone 5C may have swallowed), split there and check the rest the same way.
        A bad CRC under a length field that fits is most likely one frame hit by noise: it is
        split only at 7Es up to the last one where splitting brings a good frame out."""
        start = 0
        limit = None  # that last 7E, found when first needed
        while True:
            piece = content[start:]
            reason, frame = self._check(piece)
            if reason < 0:
                self.frames += 1
                out.append(frame)
                return
            idx = content.find(b"\x7e", start)
            if idx >= 0 and reason == _BAD_CHECKSUM:
                if limit is None:
                    limit = self._last_recovering_split(content, start)
                if idx > limit:
                    idx = -1
            if idx < 0:
                self._drop(reason, nbytes, piece)
                return
            nbytes -= self._finish_stump(content[start:], idx - start, out)
            start = idx + 1

    def _last_recovering_split(self, content, start):
        """Index of the last 7E in content[start:] where the part before it (from the 7E before)
        or the whole rest after it is a good frame, or -1."""
        last = -1
        prev = start
        idx = content.find(b"\x7e", start)
        while idx >= 0:
            if self._check(content[prev:idx])[0] < 0 or self._check(content[idx + 1 :])[0] < 0:
                last = idx
            prev = idx + 1
            idx = content.find(b"\x7e", prev)
        return last

    def _finish_stump(self, content, idx, out):
        """Check content[:idx], the part of a GB/T frame before the escaped 7E at idx, as a frame of
        its own; returns its wire bytes: its start flag, its bytes (each 7D/5C came as a pair; no 7E
        comes before idx) and the lone 5C that swallowed the 7E."""
        stump = content[:idx]
        stump_bytes = 1 + idx + stump.count(0x7D) + stump.count(0x5C) + 1
        self._finish_frame(stump, stump_bytes, out)
        return stump_bytes

    # -- escaped profiles ------------------------------------------------------------------------

    def _room(self, run):
        """Index in `run` of the byte that would make the frame too long (by size, or for GB/T by
        what its length field declares once both of its bytes are in), or len(run) if none does."""
        have = len(self._buf)
        cut = self.max_frame - have
        if cut > len(run):
            cut = len(run)
        if self._kind == _KIND_GBT and have < 2 <= have + len(run):
            at = 1 - have  # index in run of the length field's second byte
            hi = self._buf[0] if have else run[0]
            if ((hi << 8) | run[at]) + self._adjust > self.max_frame and at < cut:
                cut = at
        return cut

    def _take(self, run, out):
        """Append unescaped bytes. False when one of them made the frame too long: the frame is
        dropped and discarding, or (GB/T) it was split at a swallowed start flag and the rest is
        the open frame; either way the caller goes on after that byte."""
        cut = self._room(run)
        if cut == len(run):
            self._raw += len(run)
            self._buf += run
            return True
        self._raw += cut + 1
        if self._kind == _KIND_GBT:
            # the byte that overflowed may itself be the swallowed 7E: keep it (buf has one spare)
            self._buf += run[: cut + 1]
            while True:
                idx = self._buf.find(b"\x7e")
                if idx < 0:
                    break
                self._raw -= self._finish_stump(self._buf, idx, out)
                del self._buf[: idx + 1]
                buf = self._buf
                if len(buf) < 2 or ((buf[0] << 8) | buf[1]) + self._adjust <= self.max_frame:
                    return False  # the rest fits: it is the open frame (its size is below the old one)
        # GB/T: its start flag goes too
        self._drop(_TOO_LONG, self._raw + (1 if self._kind == _KIND_GBT else 0))
        self._state = _DISCARD
        self._buf = bytearray()
        return False

    def _unescape(self, b):
        """The byte an escape pair stands for, or -1 for a bad escape."""
        kind = self._kind
        if kind == _KIND_JT808:
            return 0x7D if b == 0x01 else 0x7E if b == 0x02 else -1
        if kind == _KIND_PMPP:
            return b ^ 0x20
        return b if b in (0x7E, 0x7D, 0x5C) else -1

    def _frame(self, data, pos, n, out):
        """Read the open frame from data[pos:]; returns the position after its closing byte, after
        the byte that made it too long, or n."""
        gbt = self._kind == _KIND_GBT
        esc_byte = 0x5C if gbt else 0x7D
        specials = self._specials
        while pos < n:
            if self._esc:
                b = data[pos]
                if b == FLAG and not gbt:
                    self._bad = True  # escape byte right before the closing flag
                    self._esc = False
                    continue
                pos += 1
                self._esc = False
                if gbt and b == FLAG and self._bad:
                    # a frame lost to a bad escape ends where a start flag it swallowed may begin
                    self._drop(_BAD_ESCAPE, self._raw + 1, self._buf)
                    self._open()
                    continue
                v = self._unescape(b)
                if v < 0:
                    self._bad = True
                if v < 0 or self._bad:
                    self._raw += 1
                elif not self._take(bytes((v,)), out):
                    return pos
                continue
            m = specials.search(data, pos)
            j = n if m is None else m.start()
            if j > pos:
                if self._bad:
                    self._raw += j - pos
                else:
                    cut = self._room(data[pos:j])
                    if not self._take(data[pos:j], out):
                        return pos + cut + 1
                pos = j
            if j == n:
                return n
            b = data[j]
            if b == esc_byte:
                self._esc = True
                self._raw += 1
                pos = j + 1
                continue
            if gbt and b == 0x7D:  # end flag
                if self._bad:
                    self._drop(_BAD_ESCAPE, self._raw + 2, self._buf)
                else:
                    self._finish_gbt(self._buf, self._raw + 2, out)
                self._state = _HUNT
                self._buf = bytearray()
            elif gbt:  # a start flag inside a frame: the frame was cut short
                self._drop(_TRUNCATED, self._raw + 1, self._buf)
                self._open()
            else:  # the closing flag, which also opens the next frame
                if self._raw:
                    if self._bad:
                        self._drop(_BAD_ESCAPE, self._raw, self._buf)
                    else:
                        self._finish_frame(self._buf, self._raw, out)
                self._open()
            return j + 1
        return n

    # -- feeding ----------------------------------------------------------------------------------

    def feed(self, data):
        """Bytes in (any split), good frames out: a list of `bytes`. Raises TypeError for a
        non-bytes-like argument; bad frames are counted, never raised."""
        data = _as_bytes(data)
        self.bytes_in += len(data)
        out = []
        if not self.escaped:
            self._carry += data
            used = self._scan_length(self._carry, out, False)
            del self._carry[:used]
            return out
        n = len(data)
        pos = 0
        while pos < n:
            if self._state == _FRAME:
                pos = self._frame(data, pos, n, out)
                continue
            k = data.find(b"\x7e", pos)
            if self._state == _HUNT:
                if k < 0:
                    self._noise(n - pos)
                    break
                if k > pos:
                    self._noise(k - pos)
                self._in_noise = False
            else:  # discarding a frame that grew too long, up to the next 0x7E
                if k < 0:
                    self.dropped_bytes += n - pos
                    break
                self.dropped_bytes += k - pos
            self._open()
            pos = k + 1
        return out

    def finish(self):
        """End of stream: drop a frame still open as `truncated`, return any frames found while
        rescanning (unescaped GB/T profile), and start hunting afresh."""
        out = []
        if not self.escaped:
            self._scan_length(self._carry, out, True)
            self._carry = bytearray()
        elif self._state == _FRAME:
            if self._kind == _KIND_GBT:
                self._drop(_TRUNCATED, self._raw + 1, self._buf)
            elif self._raw:
                self._drop(_TRUNCATED, self._raw, self._buf)
        self._state = _HUNT
        self._in_noise = False
        self._buf = bytearray()
        self._raw = 0
        self._esc = False
        self._bad = False
        return out

    # -- the unescaped GB/T profile: framed by the length field ----------------------------------

    def _scan_length(self, w, out, final):
        """Frames from buffer `w`; returns how many bytes were used (the rest is a pending
        candidate that needs more bytes). With `final`, pending candidates are dropped."""
        n = len(w)
        i = 0
        adjust = self._adjust
        table, init = self._crc
        while i < n:
            k = w.find(b"\x7e", i)
            if k < 0:
                self._noise(n - i)
                return n
            if k > i:
                self._noise(k - i)
            self._in_noise = False
            if k + 3 > n:
                if not final:
                    return k
                self._drop(_TRUNCATED, 1)
                i = k + 1
                continue
            size = ((w[k + 1] << 8) | w[k + 2]) + adjust
            if size > self.max_frame:
                self._drop(_TOO_LONG, 1)
                i = k + 1
                continue
            if size < GBT_MIN_FRAME:
                self._drop(_BAD_LENGTH, 1)
                i = k + 1
                continue
            if k + size + 2 > n:
                if not final:
                    return k
                self._drop(_TRUNCATED, 1)
                i = k + 1
                continue
            if w[k + size + 1] != 0x7D:
                self._drop(_BAD_LENGTH, 1)
                i = k + 1
                continue
            c = w[k + 1 : k + size + 1]
            if _crc_msb(table, init, c[:-2]) != (c[-2] << 8) | c[-1]:
                # the length field may belong to a stump whose end landed on a 7D in the next
                # frame: rescan rather than skip, so that frame survives
                self._drop(_BAD_CHECKSUM, 1, c)
                i = k + 1
                continue
            self.frames += 1
            out.append(bytes(c[2:-2]))
            i = k + size + 2
        return n


class Jt808Framer(_Frame7e):
    """JT/T 808 frames (2011/2013 and 2019 headers): feed bytes, get header+body of each good frame."""

    def __init__(self, *, max_frame=DEFAULT_MAX_FRAME, keep_rejects=False):
        self._setup(_KIND_JT808, max_frame, keep_rejects)

    def __repr__(self):
        return f"Jt808Framer(max_frame={self.max_frame}, keep_rejects={self.keep_rejects})"


class PmppFramer(_Frame7e):
    """NTCIP PMPP (HDLC-like) frames: feed bytes, get address..information of each good frame."""

    def __init__(self, *, max_frame=DEFAULT_MAX_FRAME, keep_rejects=False):
        self._setup(_KIND_PMPP, max_frame, keep_rejects)

    def __repr__(self):
        return f"PmppFramer(max_frame={self.max_frame}, keep_rejects={self.keep_rejects})"


class Gbt20999Framer(_Frame7e):
    """GB/T 20999 frames under a vendor profile: feed bytes, get version..data of each good frame."""

    def __init__(
        self, *, length_field="n-2", crc="gbt20999", escaped=True, max_frame=DEFAULT_MAX_FRAME, keep_rejects=False
    ):
        self._setup(_KIND_GBT, max_frame, keep_rejects)
        self._adjust, self._crc = _gbt_options(length_field, crc)
        self.escaped = bool(escaped)
        self._specials = re.compile(rb"[\x5c\x7d\x7e]")  # escape byte, end flag, start flag
        self.length_field = length_field
        self.crc = crc

    def __repr__(self):
        return (
            f"Gbt20999Framer(length_field={self.length_field!r}, crc={self.crc!r}, "
            f"escaped={self.escaped}, max_frame={self.max_frame}, keep_rejects={self.keep_rejects})"
        )


# -- encoders: build -> checksum -> escape ------------------------------------------------------


def _escape_jt808(raw):
    return raw.replace(b"\x7d", b"\x7d\x01").replace(b"\x7e", b"\x7d\x02")


def encode_jt808(content):
    """One JT/T 808 frame on the wire from `content` = header + body: the XOR check code is
    appended, 7D and 7E are escaped, and 7E flags put around it. Raises TypeError for non-bytes."""
    raw = _as_bytes(content)
    return b"\x7e" + _escape_jt808(raw + bytes((xor_checksum(raw),))) + b"\x7e"


def encode_gbt20999(content, *, length_field="n-2", crc="gbt20999", escaped=True):
    """One GB/T 20999 frame on the wire from `content` = protocol version through the last data
    byte: the length field (under the profile's convention) goes in front, the CRC-16 after, then
    7E/7D/5C inside are escaped with 5C (unless `escaped` is False) and 7E ... 7D put around it.
    Raises FrameError when the frame is too long for its length field, ConfigError for an unknown
    profile option, TypeError for non-bytes."""
    adjust, (table, init) = _gbt_options(length_field, crc)
    raw = _as_bytes(content)
    field = len(raw) + 4 - adjust  # N = length(2) + content + crc(2)
    if field > 0xFFFF:
        raise FrameError(f"GB/T 20999 frame of {len(raw)} bytes does not fit its length field")
    body = bytearray(field.to_bytes(2, "big"))
    body += raw
    body += _crc_msb(table, init, body).to_bytes(2, "big")
    if escaped:
        body = body.replace(b"\x5c", b"\x5c\x5c").replace(b"\x7d", b"\x5c\x7d").replace(b"\x7e", b"\x5c\x7e")
    return b"\x7e" + bytes(body) + b"\x7d"


def encode_pmpp(content):
    """One NTCIP PMPP frame on the wire from `content` = address, control, protocol identifier,
    information: the FCS (CRC-16/X.25, low byte first) is appended, 7E and 7D inside are sent as
    7D followed by the byte XOR 0x20, and 7E flags put around it. Raises TypeError for non-bytes."""
    raw = _as_bytes(content)
    body = raw + crc16_x25(raw).to_bytes(2, "little")
    body = body.replace(b"\x7d", b"\x7d\x5d").replace(b"\x7e", b"\x7d\x5e")
    return b"\x7e" + body + b"\x7e"
