# 0x7E-delimited framers and encoders: JT/T 808, GB/T 20999 (vendor profiles), NTCIP PMPP.
# Twin: cext/frame7e_py.py, whose docstring is the behaviour contract (what a frame holds, the
# drop reasons, what counts as dropped bytes). This file keeps to it byte for byte; where it is
# faster it says how.
#
# Speed: memchr finds flags and escape bytes; a frame that starts and ends in one chunk and holds no
# escape is checked and copied straight out of the caller's buffer (one copy, into the bytes object);
# only frames with escapes or spanning chunks go through the frame buffer. CRCs are table driven,
# the JT/T 808 XOR runs on 8-byte words.

from libc.string cimport memchr, memcpy, memmove
from libc.stdlib cimport malloc, free
from libc.stdint cimport uint8_t, uint16_t, uint64_t
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_CheckExact
from tianwang.gateway.errors import ConfigError, FrameError

FRAME7E_REASONS = ("bad_checksum", "bad_escape", "too_long", "bad_length", "truncated")
FRAME7E_MAX_REJECTS = 64

cdef enum:
    F7_FLAG = 0x7E
    F7_DEFAULT_MAX_FRAME = 4096
    F7_MAX_FRAME_LIMIT = 1 << 20
    # GB/T 20999: length(2) version(2) host(1) controller(4) road(1) seq(1) type(1) crc(2); the
    # heartbeat has no value count, so it is the shortest frame
    F7_GBT_MIN_FRAME = 14
    # JT/T 808 header: id(2) attributes(2) phone BCD[6] serial(2); 2019 adds version(1), BCD[10]
    F7_JT808_HEADER = 12
    F7_JT808_HEADER_2019 = 17
    F7_JT808_SPLIT_EXTRA = 4
    F7_PMPP_MIN_FRAME = 5       # address, control, protocol identifier, FCS(2)

# Slicing-by-8 tables: [k][v] is the CRC register after byte v followed by k zero bytes, so eight
# bytes take eight independent lookups instead of a chain of eight (about 4x faster per byte).
cdef uint16_t _T_GBT[8][256]      # GB/T 20999: poly 0x1005 (x16+x12+x2+1 as the text writes it), MSB first
cdef uint16_t _T_CCITT[8][256]    # CRC-16/CCITT-FALSE: poly 0x1021, MSB first (one GB/T vendor)
cdef uint16_t _T_X25[8][256]      # CRC-16/X.25 (PMPP FCS): 0x1021 reflected = 0x8408, LSB first


cdef void _fill_tables() noexcept:
    cdef int i, k
    cdef unsigned int a, b, c
    for i in range(256):
        a = <unsigned int>i << 8
        b = a
        c = <unsigned int>i
        for k in range(8):
            a = ((a << 1) ^ 0x1005) if a & 0x8000 else (a << 1)
            b = ((b << 1) ^ 0x1021) if b & 0x8000 else (b << 1)
            c = ((c >> 1) ^ 0x8408) if c & 1 else (c >> 1)
        _T_GBT[0][i] = <uint16_t>(a & 0xFFFF)
        _T_CCITT[0][i] = <uint16_t>(b & 0xFFFF)
        _T_X25[0][i] = <uint16_t>c
    for k in range(1, 8):
        for i in range(256):
            a = _T_GBT[k - 1][i]
            _T_GBT[k][i] = <uint16_t>(((a << 8) & 0xFFFF) ^ _T_GBT[0][a >> 8])
            b = _T_CCITT[k - 1][i]
            _T_CCITT[k][i] = <uint16_t>(((b << 8) & 0xFFFF) ^ _T_CCITT[0][b >> 8])
            c = _T_X25[k - 1][i]
            _T_X25[k][i] = <uint16_t>((c >> 8) ^ _T_X25[0][c & 0xFF])

_fill_tables()


cdef inline uint16_t _crc_msb(const uint16_t* t, uint16_t crc, const uint8_t* p, Py_ssize_t n) noexcept nogil:
    # t: an [8][256] table set, flat. The register folds into the first two bytes of each block.
    cdef Py_ssize_t i = 0
    while i + 8 <= n:
        crc = <uint16_t>(t[7 * 256 + ((crc >> 8) ^ p[i])] ^ t[6 * 256 + ((crc & 0xFF) ^ p[i + 1])]
                         ^ t[5 * 256 + p[i + 2]] ^ t[4 * 256 + p[i + 3]] ^ t[3 * 256 + p[i + 4]]
                         ^ t[2 * 256 + p[i + 5]] ^ t[256 + p[i + 6]] ^ t[p[i + 7]])
        i += 8
    while i < n:
        crc = <uint16_t>((crc << 8) ^ t[(crc >> 8) ^ p[i]])
        i += 1
    return crc


cdef inline uint16_t _crc_x25(const uint8_t* p, Py_ssize_t n) noexcept nogil:
    cdef const uint16_t* t = &_T_X25[0][0]
    cdef uint16_t crc = 0xFFFF
    cdef Py_ssize_t i = 0
    while i + 8 <= n:
        crc = <uint16_t>(t[7 * 256 + ((crc ^ p[i]) & 0xFF)] ^ t[6 * 256 + ((crc >> 8) ^ p[i + 1])]
                         ^ t[5 * 256 + p[i + 2]] ^ t[4 * 256 + p[i + 3]] ^ t[3 * 256 + p[i + 4]]
                         ^ t[2 * 256 + p[i + 5]] ^ t[256 + p[i + 6]] ^ t[p[i + 7]])
        i += 8
    while i < n:
        crc = <uint16_t>((crc >> 8) ^ t[(crc ^ p[i]) & 0xFF])
        i += 1
    return crc ^ 0xFFFF


cdef inline uint8_t _xor(const uint8_t* p, Py_ssize_t n) noexcept nogil:
    cdef uint64_t acc = 0, word
    cdef Py_ssize_t i = 0
    while i + 8 <= n:
        memcpy(&word, p + i, 8)
        acc ^= word
        i += 8
    acc ^= acc >> 32
    acc ^= acc >> 16
    acc ^= acc >> 8
    cdef uint8_t x = <uint8_t>acc
    while i < n:
        x ^= p[i]
        i += 1
    return x


cdef inline const uint8_t* _find2(const uint8_t* p, Py_ssize_t n, uint8_t a, uint8_t b) noexcept nogil:
    # first byte equal to a or b: two memchr passes beat a byte loop when both are rare
    cdef const uint8_t* x = <const uint8_t*>memchr(p, a, n)
    cdef Py_ssize_t lim = n if x == NULL else x - p
    cdef const uint8_t* y = <const uint8_t*>memchr(p, b, lim)
    return y if y != NULL else x


cdef inline const uint8_t* _find3(const uint8_t* p, Py_ssize_t n, uint8_t a, uint8_t b, uint8_t c) noexcept nogil:
    cdef const uint8_t* x = _find2(p, n, a, b)
    cdef Py_ssize_t lim = n if x == NULL else x - p
    cdef const uint8_t* y = <const uint8_t*>memchr(p, c, lim)
    return y if y != NULL else x


cdef class _Frame7e:
    """The 0x7E-frame engine; `Jt808Framer`, `Gbt20999Framer` and `PmppFramer` configure it."""

    def __cinit__(self, *args, **kwargs):
        self.buf = NULL
        self.carry = NULL
        self.rejects = []

    def __dealloc__(self):
        free(self.buf)
        free(self.carry)

    cdef int _setup(self, int kind, object max_frame, object keep_rejects) except -1:
        if not isinstance(max_frame, int) or isinstance(max_frame, bool):
            raise TypeError("max_frame must be an int")
        if not 16 <= max_frame <= F7_MAX_FRAME_LIMIT:
            raise ConfigError(f"max_frame must be between 16 and {F7_MAX_FRAME_LIMIT}, not {max_frame}")
        self.kind = kind
        self.max_frame = max_frame
        self.keep_rejects = bool(keep_rejects)
        self.escaped = True
        self.adjust = 2
        self.crc_table = &_T_GBT[0][0]
        self.crc_init = 0
        self.esc_byte = 0x5C if kind == F7_GBT20999 else 0x7D
        self.frames = self.resyncs = self.dropped_bytes = self.bytes_in = 0
        cdef int r
        for r in range(<int>F7_N_REASONS):
            self.drop_counts[r] = 0
        self.rejects = []
        self.state = F7_HUNT
        self.in_noise = False
        self.esc = False
        self.bad = False
        self.raw = 0
        free(self.buf)
        free(self.carry)
        self.carry = NULL
        self.carry_len = 0
        self.buf_len = 0
        self.buf = <uint8_t*>malloc(self.max_frame + 1)
        if self.buf == NULL:
            raise MemoryError()
        return 0

    # -- counters ------------------------------------------------------------------------------

    @property
    def drops(self):
        """Frames dropped, by reason (every reason present)."""
        cdef dict out = {}
        cdef int r
        for r in range(<int>F7_N_REASONS):
            out[FRAME7E_REASONS[r]] = self.drop_counts[r]
        return out

    @property
    def buffered(self):
        """Bytes held for a frame that has not ended yet."""
        return self.buf_len if self.escaped else self.carry_len

    def take_rejects(self):
        """The `(reason, content)` pairs kept since the last call (see cext/frame7e_py.py)."""
        out = self.rejects
        self.rejects = []
        return out

    cdef int _drop(self, int reason, Py_ssize_t nbytes, const uint8_t* content, Py_ssize_t clen) except -1:
        self.drop_counts[reason] += 1
        self.dropped_bytes += <unsigned long long>nbytes
        if content != NULL and self.keep_rejects and len(self.rejects) < FRAME7E_MAX_REJECTS:
            self.rejects.append((FRAME7E_REASONS[reason], PyBytes_FromStringAndSize(<const char*>content, clen)))
        return 0

    cdef void _noise(self, Py_ssize_t n) noexcept:
        self.dropped_bytes += <unsigned long long>n
        if not self.in_noise:
            self.in_noise = True
            self.resyncs += 1

    cdef void _open(self) noexcept:
        self.state = F7_FRAME
        self.buf_len = 0
        self.raw = 0
        self.esc = False
        self.bad = False

    # -- checks on a whole unescaped frame -----------------------------------------------------

    cdef int _check(self, const uint8_t* c, Py_ssize_t n, Py_ssize_t* off, Py_ssize_t* length) noexcept:
        cdef unsigned int attrs
        cdef Py_ssize_t header, expected, declared
        if self.kind == F7_JT808:
            if n < 4:
                return F7_TRUNCATED
            attrs = (<unsigned int>c[2] << 8) | c[3]
            header = F7_JT808_HEADER_2019 if attrs & 0x4000 else F7_JT808_HEADER  # bit 14: 2019 header
            if attrs & 0x2000:  # bit 13: split, total and index follow
                header += F7_JT808_SPLIT_EXTRA
            expected = header + <Py_ssize_t>(attrs & 0x3FF) + 1  # bits 0-9: body length; +1 check code
            if n < expected:
                return F7_TRUNCATED
            if n > expected:
                return F7_BAD_LENGTH
            if _xor(c, n - 1) != c[n - 1]:
                return F7_BAD_CHECKSUM
            off[0] = 0
            length[0] = n - 1
            return -1
        if self.kind == F7_GBT20999:
            if n < F7_GBT_MIN_FRAME:
                return F7_TRUNCATED
            declared = ((<Py_ssize_t>c[0] << 8) | c[1]) + self.adjust
            if declared > n:
                return F7_TRUNCATED
            if declared < n:
                return F7_BAD_LENGTH
            # GB/T 20999: CRC-16 over length..data, high byte first
            if _crc_msb(self.crc_table, self.crc_init, c, n - 2) != ((<uint16_t>c[n - 2] << 8) | c[n - 1]):
                return F7_BAD_CHECKSUM
            off[0] = 2
            length[0] = n - 4
            return -1
        if n < F7_PMPP_MIN_FRAME:
            return F7_TRUNCATED
        # PMPP FCS: CRC-16/X.25 over address..information, low byte first
        if _crc_x25(c, n - 2) != (c[n - 2] | (<uint16_t>c[n - 1] << 8)):
            return F7_BAD_CHECKSUM
        off[0] = 0
        length[0] = n - 2
        return -1

    cdef int _finish_frame(self, const uint8_t* c, Py_ssize_t n, Py_ssize_t nbytes, list out) except -1:
        cdef Py_ssize_t off = 0, length = 0
        cdef int reason = self._check(c, n, &off, &length)
        if reason < 0:
            out.append(PyBytes_FromStringAndSize(<const char*>c + off, length))
            self.frames += 1
            return 0
        return self._drop(reason, nbytes, c, n)

    cdef int _finish_gbt(self, const uint8_t* c, Py_ssize_t n, Py_ssize_t nbytes, list out) except -1:
        # A stump ending in a lone 0x5C swallows the next frame's start flag as an escaped 7E: when
        # the frame fails, split at the first escaped 7E and check the rest the same way; a bad CRC
        # only up to the last 7E where splitting brings a good frame out (see the twin).
        cdef Py_ssize_t off = 0, length = 0, idx, stump_bytes
        cdef const uint8_t* q
        cdef const uint8_t* limit = NULL
        cdef bint have_limit = False
        cdef int reason
        while True:
            reason = self._check(c, n, &off, &length)
            if reason < 0:
                out.append(PyBytes_FromStringAndSize(<const char*>c + off, length))
                self.frames += 1
                return 0
            q = <const uint8_t*>memchr(c, F7_FLAG, n)
            if q != NULL and reason == F7_BAD_CHECKSUM:
                if not have_limit:
                    limit = self._last_recovering_split(c, n)
                    have_limit = True
                if limit == NULL or q > limit:
                    q = NULL
            if q == NULL:
                return self._drop(reason, nbytes, c, n)
            idx = q - c
            stump_bytes = self._finish_stump(c, idx, out)
            nbytes -= stump_bytes
            c += idx + 1
            n -= idx + 1

    cdef const uint8_t* _last_recovering_split(self, const uint8_t* c, Py_ssize_t n) noexcept:
        cdef Py_ssize_t off = 0, length = 0
        cdef const uint8_t* last = NULL
        cdef const uint8_t* prev = c
        cdef const uint8_t* end = c + n
        cdef const uint8_t* q = <const uint8_t*>memchr(c, F7_FLAG, n)
        while q != NULL:
            if (self._check(prev, q - prev, &off, &length) < 0
                    or self._check(q + 1, end - (q + 1), &off, &length) < 0):
                last = q
            prev = q + 1
            q = <const uint8_t*>memchr(prev, F7_FLAG, end - prev)
        return last

    cdef Py_ssize_t _finish_stump(self, const uint8_t* c, Py_ssize_t idx, list out) except -1:
        # wire bytes: its start flag, its bytes (each 7D/5C came as a pair; no 7E before idx) and
        # the lone 5C that swallowed the 7E
        cdef Py_ssize_t i, stump_bytes = 1 + idx + 1
        for i in range(idx):
            if c[i] == 0x7D or c[i] == 0x5C:
                stump_bytes += 1
        self._finish_frame(c, idx, stump_bytes, out)
        return stump_bytes

    # -- escaped profiles ----------------------------------------------------------------------

    cdef Py_ssize_t _room(self, const uint8_t* run, Py_ssize_t m) noexcept:
        cdef Py_ssize_t have = self.buf_len
        cdef Py_ssize_t cut = self.max_frame - have
        cdef Py_ssize_t at
        cdef unsigned int hi
        if cut > m:
            cut = m
        if self.kind == F7_GBT20999 and have < 2 and have + m >= 2:
            # the length field is complete once its second byte arrives: stop there if it declares
            # more than max_frame, before anything else is buffered
            at = 1 - have
            hi = self.buf[0] if have else run[0]
            if <Py_ssize_t>((hi << 8) | run[at]) + self.adjust > self.max_frame and at < cut:
                cut = at
        return cut

    cdef int _take(self, const uint8_t* run, Py_ssize_t m, list out) except -1:
        cdef Py_ssize_t cut = self._room(run, m)
        cdef const uint8_t* q
        cdef Py_ssize_t idx
        if cut == m:
            self.raw += m
            memcpy(self.buf + self.buf_len, run, m)
            self.buf_len += m
            return 1
        self.raw += cut + 1
        if self.kind == F7_GBT20999:
            # A start flag swallowed by a stump's lone 5C may be in the frame (it may be the byte that
            # overflowed, so that byte goes in too: buf has one spare). Split there; the rest, which
            # is shorter than the frame was, stays open unless its own length field is too long.
            memcpy(self.buf + self.buf_len, run, cut + 1)
            self.buf_len += cut + 1
            while True:
                q = <const uint8_t*>memchr(self.buf, F7_FLAG, self.buf_len)
                if q == NULL:
                    break
                idx = q - self.buf
                self.raw -= self._finish_stump(self.buf, idx, out)
                self.buf_len -= idx + 1
                memmove(self.buf, self.buf + idx + 1, self.buf_len)
                if (self.buf_len < 2
                        or ((<Py_ssize_t>self.buf[0] << 8) | self.buf[1]) + self.adjust <= self.max_frame):
                    return 0
        # GB/T: the frame's start flag goes with it
        self._drop(F7_TOO_LONG, self.raw + (1 if self.kind == F7_GBT20999 else 0), NULL, 0)
        self.state = F7_DISCARD
        self.buf_len = 0
        return 0

    cdef Py_ssize_t _frame(self, const uint8_t* p, Py_ssize_t pos, Py_ssize_t n, list out) except -2:
        cdef bint gbt = self.kind == F7_GBT20999
        cdef const uint8_t* q
        cdef const uint8_t* e
        cdef Py_ssize_t j, seg, cut, flag_at
        cdef uint8_t b, v
        cdef int v_ok
        # Fast path: a fresh frame that ends in this chunk with no escape byte is checked in place.
        if self.raw == 0:
            if not gbt:
                e = <const uint8_t*>memchr(p + pos, F7_FLAG, n - pos)
                if e != NULL:
                    seg = e - (p + pos)
                    if seg == 0:  # back-to-back flags: the closing flag of one frame, opening of the next
                        return pos + 1
                    if seg <= self.max_frame and memchr(p + pos, 0x7D, seg) == NULL:
                        self._finish_frame(p + pos, seg, seg, out)
                        self._open()
                        return pos + seg + 1
            else:
                e = <const uint8_t*>memchr(p + pos, 0x7D, n - pos)
                if e != NULL:
                    seg = e - (p + pos)
                    if (seg <= self.max_frame
                            and memchr(p + pos, 0x5C, seg) == NULL and memchr(p + pos, F7_FLAG, seg) == NULL
                            and (seg < 2 or ((<Py_ssize_t>p[pos] << 8) | p[pos + 1]) + self.adjust <= self.max_frame)):
                        self._finish_frame(p + pos, seg, seg + 2, out)
                        self.state = F7_HUNT
                        self.buf_len = 0
                        return pos + seg + 1
        # General path: runs between special bytes go into the frame buffer.
        flag_at = n
        if not gbt:
            e = <const uint8_t*>memchr(p + pos, F7_FLAG, n - pos)
            if e != NULL:
                flag_at = e - p
        while pos < n:
            if self.esc:
                b = p[pos]
                if b == F7_FLAG and not gbt:
                    self.bad = True  # escape byte right before the closing flag
                    self.esc = False
                    continue
                pos += 1
                self.esc = False
                if gbt and b == F7_FLAG and self.bad:
                    # a frame lost to a bad escape ends where a start flag it swallowed may begin
                    self._drop(F7_BAD_ESCAPE, self.raw + 1, self.buf, self.buf_len)
                    self._open()
                    continue
                v_ok = 1
                if self.kind == F7_JT808:
                    if b == 0x01:
                        v = 0x7D
                    elif b == 0x02:
                        v = 0x7E
                    else:
                        v_ok = 0
                elif self.kind == F7_PMPP:
                    v = b ^ 0x20
                elif b == 0x7E or b == 0x7D or b == 0x5C:
                    v = b
                else:
                    v_ok = 0
                if not v_ok:
                    self.bad = True
                if not v_ok or self.bad:
                    self.raw += 1
                elif self._take(&v, 1, out) == 0:
                    return pos
                continue
            if gbt:
                q = _find3(p + pos, n - pos, 0x5C, 0x7D, F7_FLAG)
            else:
                q = <const uint8_t*>memchr(p + pos, 0x7D, flag_at - pos)
                if q == NULL and flag_at < n:
                    q = p + flag_at
            j = n if q == NULL else q - p
            if j > pos:
                if self.bad:
                    self.raw += j - pos
                else:
                    cut = self._room(p + pos, j - pos)
                    if self._take(p + pos, j - pos, out) == 0:
                        return pos + cut + 1
                pos = j
            if j == n:
                return n
            b = p[j]
            if b == self.esc_byte:
                self.esc = True
                self.raw += 1
                pos = j + 1
                continue
            if gbt and b == 0x7D:  # end flag
                if self.bad:
                    self._drop(F7_BAD_ESCAPE, self.raw + 2, self.buf, self.buf_len)
                else:
                    self._finish_gbt(self.buf, self.buf_len, self.raw + 2, out)
                self.state = F7_HUNT
                self.buf_len = 0
            elif gbt:  # a start flag inside a frame: the frame was cut short
                self._drop(F7_TRUNCATED, self.raw + 1, self.buf, self.buf_len)
                self._open()
            else:  # the closing flag, which also opens the next frame
                if self.raw:
                    if self.bad:
                        self._drop(F7_BAD_ESCAPE, self.raw, self.buf, self.buf_len)
                    else:
                        self._finish_frame(self.buf, self.buf_len, self.raw, out)
                self._open()
            return j + 1
        return n

    # -- the unescaped GB/T profile: framed by its length field --------------------------------

    cdef Py_ssize_t _scan_length(self, const uint8_t* w, Py_ssize_t n, list out, bint final) except -2:
        cdef Py_ssize_t i = 0, k, size
        cdef const uint8_t* e
        cdef const uint8_t* c
        while i < n:
            e = <const uint8_t*>memchr(w + i, F7_FLAG, n - i)
            if e == NULL:
                self._noise(n - i)
                return n
            k = e - w
            if k > i:
                self._noise(k - i)
            self.in_noise = False
            if k + 3 > n:
                if not final:
                    return k
                self._drop(F7_TRUNCATED, 1, NULL, 0)
                i = k + 1
                continue
            size = ((<Py_ssize_t>w[k + 1] << 8) | w[k + 2]) + self.adjust
            if size > self.max_frame:  # before anything waits for it
                self._drop(F7_TOO_LONG, 1, NULL, 0)
                i = k + 1
                continue
            if size < F7_GBT_MIN_FRAME:
                self._drop(F7_BAD_LENGTH, 1, NULL, 0)
                i = k + 1
                continue
            if k + size + 2 > n:
                if not final:
                    return k
                self._drop(F7_TRUNCATED, 1, NULL, 0)
                i = k + 1
                continue
            if w[k + size + 1] != 0x7D:  # no end flag where the length field points: rescan
                self._drop(F7_BAD_LENGTH, 1, NULL, 0)
                i = k + 1
                continue
            c = w + k + 1
            if _crc_msb(self.crc_table, self.crc_init, c, size - 2) != ((<uint16_t>c[size - 2] << 8) | c[size - 1]):
                # the length field may belong to a stump whose end landed on a 7D in the next
                # frame: rescan rather than skip, so that frame survives
                self._drop(F7_BAD_CHECKSUM, 1, c, size)
                i = k + 1
                continue
            out.append(PyBytes_FromStringAndSize(<const char*>c + 2, size - 4))
            self.frames += 1
            i = k + size + 2
        return n

    # -- feeding -------------------------------------------------------------------------------

    cdef int _feed(self, const uint8_t* p, Py_ssize_t n, list out) except -1:
        cdef Py_ssize_t pos = 0, need, take, used, rest
        cdef const uint8_t* e
        self.bytes_in += <unsigned long long>n
        if not self.escaped:
            # Top up a pending candidate from this chunk with just the bytes it needs, decide it,
            # then scan the chunk in place; only the tail that is still pending is copied.
            while self.carry_len > 0 and pos < n:
                if self.carry_len < 3:
                    need = 3
                else:
                    need = ((<Py_ssize_t>self.carry[1] << 8) | self.carry[2]) + self.adjust + 2
                take = need - self.carry_len
                if take > n - pos:
                    take = n - pos
                memcpy(self.carry + self.carry_len, p + pos, take)
                self.carry_len += take
                pos += take
                if self.carry_len < need:
                    return 0
                used = self._scan_length(self.carry, self.carry_len, out, False)
                memmove(self.carry, self.carry + used, self.carry_len - used)
                self.carry_len -= used
            if pos < n:
                used = self._scan_length(p + pos, n - pos, out, False)
                rest = n - pos - used
                memcpy(self.carry, p + pos + used, rest)
                self.carry_len = rest
            return 0
        while pos < n:
            if self.state == F7_FRAME:
                pos = self._frame(p, pos, n, out)
                continue
            e = <const uint8_t*>memchr(p + pos, F7_FLAG, n - pos)
            if self.state == F7_HUNT:
                if e == NULL:
                    self._noise(n - pos)
                    break
                if e - p > pos:
                    self._noise((e - p) - pos)
                self.in_noise = False
            else:  # discarding a frame that grew too long, up to the next 0x7E
                if e == NULL:
                    self.dropped_bytes += <unsigned long long>(n - pos)
                    break
                self.dropped_bytes += <unsigned long long>((e - p) - pos)
            self._open()
            pos = (e - p) + 1
        return 0

    def feed(self, data):
        """Bytes in (any split), good frames out: a list of `bytes`. Raises TypeError for a
        non-bytes-like argument; bad frames are counted, never raised."""
        cdef list out = []
        cdef Py_buffer view
        if PyBytes_CheckExact(data):
            self._feed(<const uint8_t*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), out)
            return out
        if isinstance(data, str):
            raise TypeError("expected a bytes-like object, not str")
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            self._feed(<const uint8_t*>view.buf, view.len, out)
        finally:
            PyBuffer_Release(&view)
        return out

    def finish(self):
        """End of stream: drop a frame still open as `truncated`, return any frames found while
        rescanning (unescaped GB/T profile), and start hunting afresh."""
        cdef list out = []
        if not self.escaped:
            self._scan_length(self.carry, self.carry_len, out, True)
            self.carry_len = 0
        elif self.state == F7_FRAME:
            if self.kind == F7_GBT20999:
                self._drop(F7_TRUNCATED, self.raw + 1, self.buf, self.buf_len)
            elif self.raw:
                self._drop(F7_TRUNCATED, self.raw, self.buf, self.buf_len)
        self.state = F7_HUNT
        self.in_noise = False
        self.buf_len = 0
        self.raw = 0
        self.esc = False
        self.bad = False
        return out


cdef class Jt808Framer(_Frame7e):
    """JT/T 808 frames (2011/2013 and 2019 headers): feed bytes, get header+body of each good frame."""

    def __init__(self, *, max_frame=F7_DEFAULT_MAX_FRAME, keep_rejects=False):
        self._setup(F7_JT808, max_frame, keep_rejects)

    def __repr__(self):
        return f"Jt808Framer(max_frame={self.max_frame}, keep_rejects={self.keep_rejects})"


cdef class PmppFramer(_Frame7e):
    """NTCIP PMPP (HDLC-like) frames: feed bytes, get address..information of each good frame."""

    def __init__(self, *, max_frame=F7_DEFAULT_MAX_FRAME, keep_rejects=False):
        self._setup(F7_PMPP, max_frame, keep_rejects)

    def __repr__(self):
        return f"PmppFramer(max_frame={self.max_frame}, keep_rejects={self.keep_rejects})"


cdef int _gbt_profile(object length_field, object crc, int* adjust, const uint16_t** table, uint16_t* init) except -1:
    if length_field == "n-2":
        adjust[0] = 2
    elif length_field == "n":
        adjust[0] = 0
    elif length_field == "n-4":
        adjust[0] = 4
    else:
        raise ConfigError(f"length_field must be one of n-2, n, n-4, not {length_field!r}")
    if crc == "gbt20999":
        table[0] = &_T_GBT[0][0]
        init[0] = 0
    elif crc == "ccitt-false":
        table[0] = &_T_CCITT[0][0]
        init[0] = 0xFFFF
    else:
        raise ConfigError(f"crc must be one of gbt20999, ccitt-false, not {crc!r}")
    return 0


cdef class Gbt20999Framer(_Frame7e):
    """GB/T 20999 frames under a vendor profile: feed bytes, get version..data of each good frame."""

    def __init__(self, *, length_field="n-2", crc="gbt20999", escaped=True, max_frame=F7_DEFAULT_MAX_FRAME,
                 keep_rejects=False):
        cdef int adjust = 2
        cdef const uint16_t* table = &_T_GBT[0][0]
        cdef uint16_t init = 0
        self._setup(F7_GBT20999, max_frame, keep_rejects)
        _gbt_profile(length_field, crc, &adjust, &table, &init)
        self.adjust = adjust
        self.crc_table = table
        self.crc_init = init
        self.escaped = bool(escaped)
        self.length_field = length_field
        self.crc = crc
        if not self.escaped:
            self.carry = <uint8_t*>malloc(self.max_frame + 2)
            if self.carry == NULL:
                raise MemoryError()

    def __repr__(self):
        return (f"Gbt20999Framer(length_field={self.length_field!r}, crc={self.crc!r}, "
                f"escaped={self.escaped}, max_frame={self.max_frame}, keep_rejects={self.keep_rejects})")


# -- checksums and encoders ----------------------------------------------------------------------

cdef class _Bytes:
    # a read-only view of any bytes-like argument, released when it goes away
    def __cinit__(self, data):
        self.held = False
        if PyBytes_CheckExact(data):
            self.p = <const uint8_t*>PyBytes_AS_STRING(data)
            self.n = PyBytes_GET_SIZE(data)
            return
        if isinstance(data, str):
            raise TypeError("expected a bytes-like object, not str")
        PyObject_GetBuffer(data, &self.view, PyBUF_SIMPLE)
        self.held = True
        self.p = <const uint8_t*>self.view.buf
        self.n = self.view.len

    def __dealloc__(self):
        if self.held:
            PyBuffer_Release(&self.view)


def crc16_gbt20999(data):
    """GB/T 20999 CRC-16: poly 0x1005, init 0, not reflected, xorout 0 ("123456789" -> 0x5BB8)."""
    cdef _Bytes b = _Bytes(data)
    return _crc_msb(&_T_GBT[0][0], 0, b.p, b.n)


def crc16_ccitt_false(data):
    """CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF ("123456789" -> 0x29B1); one GB/T vendor's CRC."""
    cdef _Bytes b = _Bytes(data)
    return _crc_msb(&_T_CCITT[0][0], 0xFFFF, b.p, b.n)


def crc16_x25(data):
    """CRC-16/X.25, the PMPP FCS: reflected 0x1021, init and xorout 0xFFFF ("123456789" -> 0x906E)."""
    cdef _Bytes b = _Bytes(data)
    return _crc_x25(b.p, b.n)


def xor_checksum(data):
    """JT/T 808 check code: XOR of every byte."""
    cdef _Bytes b = _Bytes(data)
    return _xor(b.p, b.n)


cdef inline Py_ssize_t _count2(const uint8_t* p, Py_ssize_t n, uint8_t a, uint8_t b) noexcept:
    cdef Py_ssize_t i, k = 0
    for i in range(n):
        k += (p[i] == a) | (p[i] == b)
    return k


cdef inline uint8_t* _put_escaped(uint8_t* o, const uint8_t* p, Py_ssize_t n, int kind) noexcept:
    cdef Py_ssize_t i
    cdef uint8_t c
    for i in range(n):
        c = p[i]
        if kind == F7_GBT20999:
            if c == 0x7E or c == 0x7D or c == 0x5C:
                o[0] = 0x5C
                o += 1
            o[0] = c
        elif c == 0x7E or c == 0x7D:
            o[0] = 0x7D
            o += 1
            if kind == F7_JT808:
                o[0] = 0x02 if c == 0x7E else 0x01
            else:
                o[0] = c ^ 0x20
        else:
            o[0] = c
        o += 1
    return o


def encode_jt808(content):
    """One JT/T 808 frame on the wire from `content` = header + body: the XOR check code is
    appended, 7D and 7E are escaped, and 7E flags put around it. Raises TypeError for non-bytes."""
    cdef _Bytes b = _Bytes(content)
    cdef uint8_t check = _xor(b.p, b.n)
    cdef Py_ssize_t extra = _count2(b.p, b.n, 0x7E, 0x7D) + (1 if check == 0x7E or check == 0x7D else 0)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, b.n + 1 + extra + 2)
    cdef uint8_t* o = <uint8_t*>PyBytes_AS_STRING(out)
    o[0] = F7_FLAG
    o = _put_escaped(o + 1, b.p, b.n, F7_JT808)
    o = _put_escaped(o, &check, 1, F7_JT808)
    o[0] = F7_FLAG
    return out


def encode_gbt20999(content, *, length_field="n-2", crc="gbt20999", escaped=True):
    """One GB/T 20999 frame on the wire from `content` = protocol version through the last data
    byte: the length field (under the profile's convention) goes in front, the CRC-16 after, then
    7E/7D/5C inside are escaped with 5C (unless `escaped` is False) and 7E ... 7D put around it.
    Raises FrameError when the frame is too long for its length field, ConfigError for an unknown
    profile option, TypeError for non-bytes."""
    cdef int adjust = 2
    cdef const uint16_t* table = &_T_GBT[0][0]
    cdef uint16_t init = 0
    _gbt_profile(length_field, crc, &adjust, &table, &init)
    cdef _Bytes b = _Bytes(content)
    cdef Py_ssize_t field = b.n + 4 - adjust  # N = length(2) + content + crc(2)
    if field > 0xFFFF:
        raise FrameError(f"GB/T 20999 frame of {b.n} bytes does not fit its length field")
    cdef uint8_t head[2]
    cdef uint8_t tail[2]
    head[0] = <uint8_t>(field >> 8)
    head[1] = <uint8_t>field
    cdef uint16_t c = _crc_msb(table, _crc_msb(table, init, head, 2), b.p, b.n)
    tail[0] = <uint8_t>(c >> 8)
    tail[1] = <uint8_t>c
    cdef bint esc = bool(escaped)
    cdef Py_ssize_t extra = 0
    if esc:
        extra = _count2(head, 2, 0x7E, 0x7D) + _count2(head, 2, 0x5C, 0x5C) \
            + _count2(b.p, b.n, 0x7E, 0x7D) + _count2(b.p, b.n, 0x5C, 0x5C) \
            + _count2(tail, 2, 0x7E, 0x7D) + _count2(tail, 2, 0x5C, 0x5C)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, 1 + 2 + b.n + 2 + extra + 1)
    cdef uint8_t* o = <uint8_t*>PyBytes_AS_STRING(out)
    o[0] = F7_FLAG
    o += 1
    if esc:
        o = _put_escaped(o, head, 2, F7_GBT20999)
        o = _put_escaped(o, b.p, b.n, F7_GBT20999)
        o = _put_escaped(o, tail, 2, F7_GBT20999)
    else:
        memcpy(o, head, 2)
        memcpy(o + 2, b.p, b.n)
        memcpy(o + 2 + b.n, tail, 2)
        o += 4 + b.n
    o[0] = 0x7D
    return out


def encode_pmpp(content):
    """One NTCIP PMPP frame on the wire from `content` = address, control, protocol identifier,
    information: the FCS (CRC-16/X.25, low byte first) is appended, 7E and 7D inside are sent as
    7D followed by the byte XOR 0x20, and 7E flags put around it. Raises TypeError for non-bytes."""
    cdef _Bytes b = _Bytes(content)
    cdef uint16_t fcs = _crc_x25(b.p, b.n)
    cdef uint8_t tail[2]
    tail[0] = <uint8_t>fcs
    tail[1] = <uint8_t>(fcs >> 8)
    cdef Py_ssize_t extra = _count2(b.p, b.n, 0x7E, 0x7D) + _count2(tail, 2, 0x7E, 0x7D)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, b.n + 2 + extra + 2)
    cdef uint8_t* o = <uint8_t*>PyBytes_AS_STRING(out)
    o[0] = F7_FLAG
    o = _put_escaped(o + 1, b.p, b.n, F7_PMPP)
    o = _put_escaped(o, tail, 2, F7_PMPP)
    o[0] = F7_FLAG
    return out
