# NMEA 0183 framer: a byte stream in (any chunking), typed messages out, through NmeaDecoder.
# Twin: cext/nmea_framer_py.py (same messages, counters and exceptions for any input and split).
# The framer finds sentences, checks them and splits their fields; the typed messages, the
# decoders it hands each sentence to and the helpers it shares with them (_nm_talker, _nm_str) are
# in nmea_sentences.pxi, included before this file.
#
# Framing rules (shared with the twin, documented for users in cext/nmea_framer_py.py):
# - A sentence runs from `$` to CR or LF. Bytes between sentences that are not CR/LF are noise: each
#   run of them is one resync, every byte of it is a dropped byte.
# - `*hh` (either case) must match the XOR of the bytes between `$` and `*`, and must be the last
#   thing before the terminator. A sentence without `*` is accepted as gpsd does (counted in
#   `unchecked`) unless require_checksum is set.
# - A sentence cut by `$` or a control byte is `truncated`, unless it already ends in a complete
#   `*hh`; then it is taken as complete (no terminator needed). The same holds at finish().
# - Longer than max_length (`$` to the last checksum digit) is `too_long`; the rest of that line is
#   skipped. RDSS message sentences (TXR, TCI) may run to max_message_length.
# - UBX (B5 62), RTCM3 (D3) and CASIC (BA CE) frames between sentences are recognised by length and
#   checksum and dropped whole as `binary`; a sync byte that does not start a valid frame is noise.
# - A checksummed sentence whose address is not 2..15 characters of A-Z/0-9 is `bad_sentence`; a
#   known formatter with a field that does not parse is `bad_field`. Unknown formatters and
#   proprietary sentences are delivered as RawSentence.
#
# nmea_checksum and parse_nmea_sentence (one sentence, through a NmeaDecoder) are here too.

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_FromStringAndSize
from cpython.unicode cimport PyUnicode_DecodeLatin1
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM
from cpython.ref cimport Py_INCREF
from tianwang.gateway.errors import FrameError

NMEA_DROP_REASONS = ("bad_checksum", "no_checksum", "too_long", "truncated", "bad_sentence", "bad_field", "binary")

cdef enum:
    NM_BAD_CHECKSUM = 0
    NM_NO_CHECKSUM = 1
    NM_TOO_LONG = 2
    NM_TRUNCATED = 3
    NM_BAD_SENTENCE = 4
    NM_BAD_FIELD = 5
    NM_BINARY = 6

# Decoder states between sentences
cdef enum:
    NM_IDLE = 0    # after a terminator, a sentence or a binary frame
    NM_NOISE = 1   # inside a run of noise bytes (one resync per run)
    NM_SKIP = 2    # discarding the rest of an over-long sentence up to its terminator

# Byte classes for the sentence scan
cdef enum:
    NM_C_PLAIN = 0     # printable ASCII other than `$ * ,`, and bytes >= 0x80 (GB2312 text)
    NM_C_COMMA = 1
    NM_C_STAR = 2
    NM_C_DOLLAR = 3
    NM_C_EOL = 4       # CR or LF
    NM_C_CONTROL = 5   # any other control byte, or DEL: cannot be inside a sentence

cdef enum:
    NM_PAD_FIELDS = 24     # typed decoders may index fields 0..23 without checking the count
    NM_MIN_LENGTH = 16
    NM_LIMIT = 1048576     # upper bound for every configurable length

cdef unsigned char _NM_CLASS[256]
cdef unsigned int _NM_CRC24Q[256]


cdef void _nm_init_tables() noexcept:
    cdef int i, j
    cdef unsigned int crc
    for i in range(256):
        if i == 44:
            _NM_CLASS[i] = NM_C_COMMA
        elif i == 42:
            _NM_CLASS[i] = NM_C_STAR
        elif i == 36:
            _NM_CLASS[i] = NM_C_DOLLAR
        elif i == 13 or i == 10:
            _NM_CLASS[i] = NM_C_EOL
        elif i < 32 or i == 127:
            _NM_CLASS[i] = NM_C_CONTROL
        else:
            _NM_CLASS[i] = NM_C_PLAIN
    # RTCM 10403: CRC-24Q, polynomial 0x1864CFB, initial value 0
    for i in range(256):
        crc = (<unsigned int>i) << 16
        for j in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
        _NM_CRC24Q[i] = crc & 0xFFFFFF

_nm_init_tables()


cdef inline int _nm_hexval(unsigned char c) noexcept nogil:
    if 48 <= c <= 57:
        return c - 48
    if 65 <= c <= 70:
        return c - 55
    if 97 <= c <= 102:
        return c - 87
    return -1


cdef inline bint _nm_message_kind(const unsigned char* buf, Py_ssize_t s, Py_ssize_t* commas, int ncommas) noexcept:
    # `$ccTXR,` or `$ccTCI,`: RDSS message sentences, allowed up to max_message_length
    if ncommas == 0 or commas[0] != s + 6 or buf[s + 1] == 80:
        return False
    return ((buf[s + 3] == 84 and buf[s + 4] == 88 and buf[s + 5] == 82)
            or (buf[s + 3] == 84 and buf[s + 4] == 67 and buf[s + 5] == 73))


# ---------------------------------------------------------------------------------------------

cdef class NmeaDecoder:
    """NMEA 0183 stream decoder: `feed(bytes)` -> list of typed messages (GGA, RMC, GSA, GSV, GLL,
    VTG, ZDA, GST, GNS, TXT, TXR, FKI, ICI, ICP, TCI, PWI) and RawSentence for anything else.

    Feed any chunking; the result is the same. `finish()` flushes the end of the stream (and makes
    the decoder ready for a new one). Counters: frames, resyncs, dropped_bytes, unchecked, and
    `drops` (reason -> count, every reason in NMEA_DROP_REASONS). Raises TypeError for input that is not
    bytes-like, ValueError for bad limits. Nothing here logs.
    """

    def __init__(self, max_length=128, max_message_length=4096, max_binary_length=2048,
                 require_checksum=False, binary=False):
        if not NM_MIN_LENGTH <= max_length <= NM_LIMIT:
            raise ValueError(f"max_length must be in {NM_MIN_LENGTH}..{NM_LIMIT}, not {max_length}")
        if not max_length <= max_message_length <= NM_LIMIT:
            raise ValueError(f"max_message_length must be in max_length..{NM_LIMIT}, not {max_message_length}")
        if not NM_MIN_LENGTH <= max_binary_length <= NM_LIMIT:
            raise ValueError(f"max_binary_length must be in {NM_MIN_LENGTH}..{NM_LIMIT}, not {max_binary_length}")
        self.max_length = max_length
        self.max_message_length = max_message_length
        self.max_binary_length = max_binary_length
        self.require_checksum = bool(require_checksum)
        self.binary = bool(binary)
        self._state = NM_IDLE
        self._tail = None

    @property
    def drops(self):
        """Sentences and frames dropped, by reason (every reason present, zeros included)."""
        return {NMEA_DROP_REASONS[i]: self._drops[i] for i in range(NM_N_REASONS)}

    @property
    def pending(self):
        """Bytes held back waiting for the rest of a sentence or binary frame."""
        return 0 if self._tail is None else PyBytes_GET_SIZE(self._tail)

    def feed(self, data):
        """Decode a chunk; returns the messages completed by it. Raises TypeError unless bytes-like."""
        cdef bytes buf
        cdef Py_ssize_t n, used
        cdef list out = []
        if type(data) is bytes:
            buf = <bytes>data
        elif isinstance(data, (bytes, bytearray, memoryview)):
            buf = bytes(data)
        else:
            raise TypeError(f"feed() needs bytes, bytearray or memoryview, not {type(data).__name__}")
        if self._tail is not None:
            buf = self._tail + buf
            self._tail = None
        n = PyBytes_GET_SIZE(buf)
        used = self._scan(<const unsigned char*>PyBytes_AS_STRING(buf), n, out, False)
        if used < n:
            self._tail = buf[used:]
        return out

    def finish(self):
        """End of stream: decide what is held back (a sentence missing only its terminator is kept,
        anything else is dropped) and return the messages that gives."""
        cdef list out = []
        cdef bytes buf = self._tail
        self._tail = None
        if buf is not None:
            self._scan(<const unsigned char*>PyBytes_AS_STRING(buf), PyBytes_GET_SIZE(buf), out, True)
        self._state = NM_IDLE
        return out

    cdef Py_ssize_t _binary(self, const unsigned char* buf, Py_ssize_t pos, Py_ssize_t n) noexcept:
        cdef Py_ssize_t avail = n - pos, plen, total, i
        cdef unsigned int ck_a = 0, ck_b = 0, crc = 0, sum32, word
        cdef unsigned char c0 = buf[pos]
        if c0 == 0xB5:
            # UBX: B5 62 class id len(u16 LE) payload ck_a ck_b; 8-bit Fletcher over class..payload
            if avail < 2:
                return -1
            if buf[pos + 1] != 0x62:
                return 0
            if avail < 6:
                return -1
            plen = buf[pos + 4] | (<Py_ssize_t>buf[pos + 5] << 8)
            total = plen + 8
            if total > self.max_binary_length:
                return 0
            if avail < total:
                return -1
            for i in range(pos + 2, pos + 6 + plen):
                ck_a = (ck_a + buf[i]) & 0xFF
                ck_b = (ck_b + ck_a) & 0xFF
            if ck_a == buf[pos + 6 + plen] and ck_b == buf[pos + 7 + plen]:
                return total
            return 0
        if c0 == 0xD3:
            # RTCM3: D3, 6 reserved zero bits + 10-bit length, payload, CRC-24Q over all before it
            if avail < 3:
                return -1
            if buf[pos + 1] & 0xFC:
                return 0
            plen = ((buf[pos + 1] & 3) << 8) | buf[pos + 2]
            total = plen + 6
            if plen < 2 or total > self.max_binary_length:
                return 0
            if avail < total:
                return -1
            for i in range(pos, pos + 3 + plen):
                crc = ((crc << 8) & 0xFFFFFF) ^ _NM_CRC24Q[((crc >> 16) ^ buf[i]) & 0xFF]
            if crc == ((<unsigned int>buf[pos + 3 + plen] << 16) | (<unsigned int>buf[pos + 4 + plen] << 8)
                       | buf[pos + 5 + plen]):
                return total
            return 0
        if c0 == 0xBA:
            # CASIC: BA CE len(u16 LE) class id payload checksum(u32 LE);
            # checksum = (id << 24) + (class << 16) + len + sum of the payload's u32 LE words
            if avail < 2:
                return -1
            if buf[pos + 1] != 0xCE:
                return 0
            if avail < 6:
                return -1
            plen = buf[pos + 2] | (<Py_ssize_t>buf[pos + 3] << 8)
            total = plen + 10
            if plen % 4 or total > self.max_binary_length:
                return 0
            if avail < total:
                return -1
            sum32 = (<unsigned int>buf[pos + 5] << 24) + (<unsigned int>buf[pos + 4] << 16) + <unsigned int>plen
            i = pos + 6
            while i < pos + 6 + plen:
                word = (buf[i] | (<unsigned int>buf[i + 1] << 8) | (<unsigned int>buf[i + 2] << 16)
                        | (<unsigned int>buf[i + 3] << 24))
                sum32 = sum32 + word
                i += 4
            word = (buf[i] | (<unsigned int>buf[i + 1] << 8) | (<unsigned int>buf[i + 2] << 16)
                    | (<unsigned int>buf[i + 3] << 24))
            if word == sum32:
                return total
            return 0
        return 0

    cdef Py_ssize_t _scan(self, const unsigned char* buf, Py_ssize_t n, list out, bint final) except -1:
        cdef Py_ssize_t pos = 0, s, i, j, stop, limit, star, flen
        cdef unsigned int x, hi
        cdef unsigned char c, k
        cdef int ncommas, ended
        cdef BinaryFrame bf
        cdef Py_ssize_t commas[NM_MAX_FIELDS]
        while pos < n:
            c = buf[pos]
            if self._state == NM_SKIP:
                if _NM_CLASS[c] >= NM_C_DOLLAR:   # `$`, terminator or control byte: the line is over
                    self._state = NM_IDLE
                    continue
                self.dropped_bytes += 1
                pos += 1
                continue
            if c == 36:
                # a sentence: scan to its end, XOR-ing and noting commas up to the '*'
                self._state = NM_IDLE
                s = pos
                i = s + 1
                x = 0
                star = -1
                ncommas = 0
                hi = 0               # OR of the line's bytes: a sync byte (>= 0x80) shows in bit 7
                limit = self.max_length
                while True:
                    stop = s + limit + 1
                    if stop > n:
                        stop = n
                    if star < 0:
                        while i < stop:
                            c = buf[i]
                            k = _NM_CLASS[c]
                            if k == NM_C_PLAIN:
                                x ^= c
                                hi |= c
                            elif k == NM_C_COMMA:
                                x ^= c
                                if ncommas < NM_MAX_FIELDS:
                                    commas[ncommas] = i
                                    ncommas += 1
                            else:
                                break
                            i += 1
                        if i < stop and buf[i] == 42:
                            star = i
                            i += 1
                    if star >= 0:
                        while i < stop and _NM_CLASS[buf[i]] < NM_C_DOLLAR:
                            hi |= buf[i]
                            i += 1
                    if i < stop:
                        ended = 1            # on a terminator, `$` or control byte
                    elif i == s + limit + 1:
                        if limit < self.max_message_length and _nm_message_kind(buf, s, commas, ncommas):
                            limit = self.max_message_length
                            continue
                        ended = 2            # too long
                    else:
                        ended = 3            # out of data
                    break
                if self.binary and hi & 0x80:
                    # a UBX or CASIC frame written into the line: the line ends where it starts
                    # (NMEA is ASCII; B5 62 is never GB2312 text, and a BA CE must begin a frame
                    # whose checksum holds)
                    j = s + 1
                    while j + 1 < i:
                        if (buf[j] == 0xB5 and buf[j + 1] == 0x62) or (buf[j] == 0xBA and buf[j + 1] == 0xCE):
                            flen = self._binary(buf, j, n)
                            if flen > 0:
                                break
                            if flen < 0 and not final:
                                return s
                        j += 1
                    if j + 1 < i:
                        if star >= 0 and j - star == 3:
                            self._sentence(buf, s, j, star, x, commas, ncommas, out)
                        else:
                            self._drops[NM_TRUNCATED] += 1
                            self.dropped_bytes += j - s
                        pos = j
                        continue
                if ended == 2:
                    self._drops[NM_TOO_LONG] += 1
                    self.dropped_bytes += i - s
                    self._state = NM_SKIP
                    pos = i
                    continue
                if ended == 3 and not final:
                    return s
                if ended == 1 and _NM_CLASS[buf[i]] == NM_C_EOL:
                    self._sentence(buf, s, i, star, x, commas, ncommas, out)
                elif star >= 0 and i - star == 3:
                    # complete up to its checksum; only the terminator is missing
                    self._sentence(buf, s, i, star, x, commas, ncommas, out)
                elif i == s + 1:
                    # a lone `$` (as in `$$GPGGA`): noise
                    self.resyncs += 1
                    self._state = NM_NOISE
                    self.dropped_bytes += 1
                else:
                    self._drops[NM_TRUNCATED] += 1
                    self.dropped_bytes += i - s
                pos = i
                continue
            if c == 13 or c == 10:
                pos += 1       # terminators between sentences are not noise
                continue
            if c == 0xB5 or c == 0xD3 or c == 0xBA:
                flen = self._binary(buf, pos, n)
                if flen > 0:
                    if self.binary and c != 0xD3:
                        # UBX: class id len payload ck_a ck_b; CASIC: len class id payload u32
                        bf = BinaryFrame.__new__(BinaryFrame)
                        if c == 0xB5:
                            bf.protocol = "ubx"
                            bf.msg_class = buf[pos + 2]
                            bf.msg_id = buf[pos + 3]
                            bf.payload = PyBytes_FromStringAndSize(<const char*>buf + pos + 6, flen - 8)
                        else:
                            bf.protocol = "casic"
                            bf.msg_class = buf[pos + 4]
                            bf.msg_id = buf[pos + 5]
                            bf.payload = PyBytes_FromStringAndSize(<const char*>buf + pos + 6, flen - 10)
                        out.append(bf)
                        self.binary_frames += 1
                    else:
                        self._drops[NM_BINARY] += 1
                        self.dropped_bytes += flen
                    self._state = NM_IDLE
                    pos += flen
                    continue
                if flen < 0 and not final:
                    return pos
            if self._state != NM_NOISE:
                self.resyncs += 1
                self._state = NM_NOISE
            self.dropped_bytes += 1
            pos += 1
        return pos

    cdef int _sentence(self, const unsigned char* buf, Py_ssize_t s, Py_ssize_t end, Py_ssize_t star,
                       unsigned int x, Py_ssize_t* commas, int ncommas, list out) except -1:
        cdef Py_ssize_t bend = star if star >= 0 else end
        cdef Py_ssize_t aend, alen, j
        cdef Py_ssize_t fs[NM_MAX_FIELDS + NM_PAD_FIELDS]
        cdef Py_ssize_t fe[NM_MAX_FIELDS + NM_PAD_FIELDS]
        cdef int hi, lo, nf, kk
        cdef unsigned char c, f0, f1, f2
        cdef str talker
        cdef object msg
        cdef tuple fields
        cdef str field
        if star >= 0:
            if end - star != 3:
                return self._drop(NM_BAD_CHECKSUM, end - s)
            hi = _nm_hexval(buf[star + 1])
            lo = _nm_hexval(buf[star + 2])
            if hi < 0 or lo < 0 or <unsigned int>(hi * 16 + lo) != x:
                return self._drop(NM_BAD_CHECKSUM, end - s)
        elif self.require_checksum:
            return self._drop(NM_NO_CHECKSUM, end - s)
        aend = commas[0] if ncommas > 0 else bend
        alen = aend - s - 1
        if alen < 2 or alen > 15:
            return self._drop(NM_BAD_SENTENCE, end - s)
        for j in range(s + 1, aend):
            c = buf[j]
            if not ((65 <= c <= 90) or (48 <= c <= 57)):
                return self._drop(NM_BAD_SENTENCE, end - s)
        nf = ncommas
        for kk in range(nf):
            fs[kk] = commas[kk] + 1
            fe[kk] = commas[kk + 1] if kk + 1 < nf else bend
        for kk in range(nf, nf + NM_PAD_FIELDS):
            fs[kk] = 0
            fe[kk] = 0
        msg = None
        if alen == 5 and buf[s + 1] != 80:    # 'P' starts a proprietary address
            talker = _nm_talker(buf + s + 1)
            if talker is None:
                talker = PyUnicode_DecodeLatin1(<const char*>buf + s + 1, 2, NULL)
            f0 = buf[s + 3]
            f1 = buf[s + 4]
            f2 = buf[s + 5]
            if f0 == 71:                       # G..
                if f1 == 71 and f2 == 65:
                    msg = _nm_gga(buf, fs, fe, talker)
                elif f1 == 83 and f2 == 86:
                    msg = _nm_gsv(buf, fs, fe, nf, talker)
                elif f1 == 83 and f2 == 65:
                    msg = _nm_gsa(buf, fs, fe, nf, bend, talker)
                elif f1 == 76 and f2 == 76:
                    msg = _nm_gll(buf, fs, fe, talker)
                elif f1 == 83 and f2 == 84:
                    msg = _nm_gst(buf, fs, fe, talker)
                elif f1 == 78 and f2 == 83:
                    msg = _nm_gns(buf, fs, fe, talker)
                else:
                    msg = False
            elif f0 == 82 and f1 == 77 and f2 == 67:
                msg = _nm_rmc(buf, fs, fe, talker)
            elif f0 == 86 and f1 == 84 and f2 == 71:
                msg = _nm_vtg(buf, fs, fe, talker)
            elif f0 == 90 and f1 == 68 and f2 == 65:
                msg = _nm_zda(buf, fs, fe, talker)
            elif f0 == 84:                     # T..
                if f1 == 88 and f2 == 84:
                    msg = _nm_txt(buf, fs, fe, nf, bend, talker)
                elif f1 == 88 and f2 == 82:
                    msg = _nm_txr(buf, fs, fe, nf, bend, talker)
                elif f1 == 67 and f2 == 73:
                    msg = _nm_tci(buf, fs, fe, nf, bend, talker)
                else:
                    msg = False
            elif f0 == 70 and f1 == 75 and f2 == 73:
                msg = _nm_fki(buf, fs, fe, talker)
            elif f0 == 73 and f1 == 67 and (f2 == 73 or f2 == 80):
                msg = ICI.__new__(ICI) if f2 == 73 else ICP.__new__(ICP)
                if _nm_card(buf, fs, fe, msg):
                    msg = None
                elif f2 == 73:
                    (<ICI>msg).talker = talker
                else:
                    (<ICP>msg).talker = talker
            elif f0 == 80 and f1 == 87 and f2 == 73:
                msg = _nm_pwi(buf, fs, fe, nf, talker)
            else:
                msg = False
            if msg is None:
                return self._drop(NM_BAD_FIELD, end - s)
        else:
            msg = False
            talker = ""
        if msg is False:
            raw = RawSentence.__new__(RawSentence)
            (<RawSentence>raw).talker = talker
            (<RawSentence>raw).address = PyUnicode_DecodeLatin1(<const char*>buf + s + 1, alen, NULL)
            fields = PyTuple_New(nf)
            for kk in range(nf):
                field = _nm_str(buf, fs[kk], fe[kk])
                Py_INCREF(field)
                PyTuple_SET_ITEM(fields, kk, field)
            (<RawSentence>raw).fields = fields
            msg = raw
        out.append(msg)
        self.frames += 1
        if star < 0:
            self.unchecked += 1
        return 0

    cdef int _drop(self, int reason, Py_ssize_t nbytes) noexcept:
        self._drops[reason] += 1
        self.dropped_bytes += nbytes
        return 0


def nmea_checksum(data):
    """XOR of the bytes of `data` (the part between `$` and `*`). Raises TypeError unless bytes-like."""
    cdef const unsigned char[::1] view
    cdef unsigned int x = 0
    cdef Py_ssize_t i
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"nmea_checksum() needs bytes, not {type(data).__name__}")
    view = bytes(data) if not isinstance(data, bytes) else data
    for i in range(view.shape[0]):
        x ^= view[i]
    return x


def parse_nmea_sentence(line, require_checksum=False):
    """Decode one complete sentence (`$...*hh`, CR/LF optional) into its message.

    Raises FrameError (with `.reason`, one of NMEA_DROP_REASONS or "noise") when it is not exactly one
    good sentence; TypeError unless bytes-like.
    """
    if not isinstance(line, (bytes, bytearray, memoryview)):
        raise TypeError(f"parse_nmea_sentence() needs bytes, not {type(line).__name__}")
    data = bytes(line).rstrip(b"\r\n")
    if not data.startswith(b"$"):
        err = FrameError("not an NMEA sentence: it does not start with '$'")
        err.reason = "noise"
        raise err
    size = min(max(NM_MIN_LENGTH, len(data)), NM_LIMIT)
    dec = NmeaDecoder(max_length=size, max_message_length=size, require_checksum=require_checksum)
    msgs = dec.feed(data + b"\r\n")
    msgs += dec.finish()
    if len(msgs) == 1 and dec.dropped_bytes == 0:
        return msgs[0]
    reason = "noise"
    for r, count in dec.drops.items():
        if count:
            reason = r
            break
    err = FrameError(f"not one good NMEA sentence ({reason}): {data[:40]!r}")
    err.reason = reason
    raise err
