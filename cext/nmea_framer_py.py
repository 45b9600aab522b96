"""NMEA 0183 framer: pure-Python twin of `NmeaDecoder`, `nmea_checksum` and `parse_nmea_sentence`
in `tianwang.cext._speedups` (cext/nmea_framer.pxi). Import them through `tianwang.gateway.framing`
(`from tianwang.gateway.framing import NmeaDecoder`).

A byte stream goes in, fed in any chunking; typed messages come out, the same for every split: the
classes of cext/nmea_sentences_py.py (GGA RMC GSA GSV GLL VTG ZDA GST GNS TXT, the RDSS TXR FKI ICI
ICP TCI PWI), and RawSentence for every other sentence, proprietary ones included. The framer finds
each sentence, checks it and splits its fields; the sentence's decoder (in nmea_sentences_py.py)
turns the fields into the message.

How the framer treats what real receivers send (the same rules hold in the compiled decoder):

- A sentence runs from `$` to CR or LF, so `\\r\\r\\n` and bare `\\n` endings are fine. Other bytes
  between sentences are noise: every run of noise is one `resyncs`, each byte a `dropped_bytes`.
- `*hh` (upper or lower case) must equal the XOR of the bytes between `$` and `*` and be the last
  thing before the terminator, else `bad_checksum`.
- No checksum at all: accepted, as gpsd does (vendor lines often lack one), and counted in
  `unchecked`; with `require_checksum=True` such sentences are dropped as `no_checksum`.
- Cut short by a `$` or a control byte (a receiver reset, a binary frame written mid-line, `$$`):
  `truncated`, unless the sentence already ends in a complete `*hh`, in which case only its
  terminator was missing and it is kept. A lone `$` (the first of `$$`) is noise. At `finish()`
  the same rule decides the last, unterminated sentence.
- Longer than `max_length` (default 128; `$` to the last checksum digit, terminator excluded):
  `too_long`, and the rest of that line is skipped. RDSS message sentences (TXR, TCI) may carry up
  to `max_message_length` (default 4096) because their hex content is long.
- UBX (`B5 62`), RTCM3 (`D3`) and CASIC (`BA CE`) frames between sentences are recognised by their
  length and checksum and dropped whole as `binary` (up to `max_binary_length` bytes, default 2048).
  With `binary=True`, verified UBX and CASIC frames are delivered instead, as BinaryFrame messages
  (counted in `binary_frames`, not in `frames`); RTCM3 is still dropped. In that mode a UBX or CASIC
  frame that starts inside a line (`B5 62`, or `BA CE` with a good checksum) ends the line there
  (`truncated`, or kept when it already ended in a complete `*hh`), so the frame is not lost.
  A sync byte that does not begin a valid frame is noise, so a sentence that follows is never lost;
  while a candidate frame is incomplete, the bytes after it wait (at most max_binary_length).
- A checksummed sentence whose address is not 2..15 characters of A-Z/0-9 is `bad_sentence`; a
  known formatter with a field that does not parse is `bad_field`. Bytes >= 0x80 may appear inside
  sentences (GB2312 text in RDSS messages); text fields are latin-1 decoded so nothing is lost.

Counters: `frames` (sentences delivered), `binary_frames`, `resyncs`, `dropped_bytes`, `unchecked`, and `drops`
(reason -> count for every reason in NMEA_DROP_REASONS). Lengths are checked before anything is held,
so at most max(max_message_length, max_binary_length) bytes wait between feeds. Nothing logs.
"""

from __future__ import annotations

import operator
import re
from functools import reduce

from tianwang.cext.nmea_sentences_py import _DECODERS, BinaryFrame, RawSentence, _Bad
from tianwang.gateway.errors import FrameError

NMEA_DROP_REASONS = ("bad_checksum", "no_checksum", "too_long", "truncated", "bad_sentence", "bad_field", "binary")
_BAD_CHECKSUM, _NO_CHECKSUM, _TOO_LONG, _TRUNCATED, _BAD_SENTENCE, _BAD_FIELD, _BINARY = range(7)

MAX_FIELDS = 128  # commas split per sentence; past this the last field keeps the rest
MIN_LENGTH = 16
LIMIT = 1 << 20  # upper bound of every configurable length

_IDLE, _NOISE, _SKIP = 0, 1, 2

# what ends the address-and-fields part of a sentence; what ends a sentence
_STOP_FIELDS = re.compile(rb"[\x00-\x1f\x7f$*]")
_STOP_LINE = re.compile(rb"[\x00-\x1f\x7f$]")
# what matters between sentences
_BETWEEN = re.compile(rb"[$\r\n\xb5\xd3\xba]")
_ADDRESS = re.compile(rb"[A-Z0-9]{2,15}")
_SYNC = re.compile(rb"\xb5\x62|\xba\xce")  # UBX and CASIC frame starts
_MESSAGE_KINDS = (b"TXR", b"TCI")  # RDSS message sentences, allowed up to max_message_length


def _crc24q_table():
    # RTCM 10403: CRC-24Q, polynomial 0x1864CFB, initial value 0
    table = []
    for i in range(256):
        crc = i << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
        table.append(crc & 0xFFFFFF)
    return table


_CRC24Q = _crc24q_table()


# ---------------------------------------------------------------------------------------------


class NmeaDecoder:
    """NMEA 0183 stream decoder: `feed(bytes)` -> list of typed messages (GGA, RMC, GSA, GSV, GLL,
    VTG, ZDA, GST, GNS, TXT, TXR, FKI, ICI, ICP, TCI, PWI) and RawSentence for anything else.

    Feed any chunking; the result is the same. `finish()` flushes the end of the stream (and makes
    the decoder ready for a new one). Counters: frames, resyncs, dropped_bytes, unchecked, and
    `drops` (reason -> count, every reason in NMEA_DROP_REASONS). Raises TypeError for input that is not
    bytes-like, ValueError for bad limits. Nothing here logs.
    """

    def __init__(
        self, max_length=128, max_message_length=4096, max_binary_length=2048, require_checksum=False, binary=False
    ):
        if not MIN_LENGTH <= max_length <= LIMIT:
            raise ValueError(f"max_length must be in {MIN_LENGTH}..{LIMIT}, not {max_length}")
        if not max_length <= max_message_length <= LIMIT:
            raise ValueError(f"max_message_length must be in max_length..{LIMIT}, not {max_message_length}")
        if not MIN_LENGTH <= max_binary_length <= LIMIT:
            raise ValueError(f"max_binary_length must be in {MIN_LENGTH}..{LIMIT}, not {max_binary_length}")
        self.max_length = operator.index(max_length)
        self.max_message_length = operator.index(max_message_length)
        self.max_binary_length = operator.index(max_binary_length)
        self.require_checksum = bool(require_checksum)
        self.binary = bool(binary)
        self.binary_frames = 0
        self.frames = 0
        self.resyncs = 0
        self.dropped_bytes = 0
        self.unchecked = 0
        self._drops = [0] * len(NMEA_DROP_REASONS)
        self._state = _IDLE
        self._tail = None

    @property
    def drops(self):
        """Sentences and frames dropped, by reason (every reason present, zeros included)."""
        return dict(zip(NMEA_DROP_REASONS, self._drops, strict=True))

    @property
    def pending(self):
        """Bytes held back waiting for the rest of a sentence or binary frame."""
        return 0 if self._tail is None else len(self._tail)

    def feed(self, data):
        """Decode a chunk; returns the messages completed by it. Raises TypeError unless bytes-like."""
        if type(data) is not bytes:
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise TypeError(f"feed() needs bytes, bytearray or memoryview, not {type(data).__name__}")
            data = bytes(data)
        if self._tail is not None:
            data = self._tail + data
            self._tail = None
        out = []
        used = self._scan(data, out, False)
        if used < len(data):
            self._tail = data[used:]
        return out

    def finish(self):
        """End of stream: decide what is held back (a sentence missing only its terminator is kept,
        anything else is dropped) and return the messages that gives."""
        out = []
        buf, self._tail = self._tail, None
        if buf is not None:
            self._scan(buf, out, True)
        self._state = _IDLE
        return out

    def _binary(self, buf, pos, n):
        # length of a valid frame at buf[pos]; 0 = not a frame, -1 = need more bytes
        avail = n - pos
        c0 = buf[pos]
        if c0 == 0xB5:
            # UBX: B5 62 class id len(u16 LE) payload ck_a ck_b; 8-bit Fletcher over class..payload
            if avail < 2:
                return -1
            if buf[pos + 1] != 0x62:
                return 0
            if avail < 6:
                return -1
            plen = buf[pos + 4] | (buf[pos + 5] << 8)
            total = plen + 8
            if total > self.max_binary_length:
                return 0
            if avail < total:
                return -1
            ck_a = ck_b = 0
            for b in buf[pos + 2 : pos + 6 + plen]:
                ck_a = (ck_a + b) & 0xFF
                ck_b = (ck_b + ck_a) & 0xFF
            return total if ck_a == buf[pos + 6 + plen] and ck_b == buf[pos + 7 + plen] else 0
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
            crc = 0
            for b in buf[pos : pos + 3 + plen]:
                crc = ((crc << 8) & 0xFFFFFF) ^ _CRC24Q[((crc >> 16) ^ b) & 0xFF]
            return total if crc == int.from_bytes(buf[pos + 3 + plen : pos + 6 + plen], "big") else 0
        if c0 == 0xBA:
            # CASIC: BA CE len(u16 LE) class id payload checksum(u32 LE);
            # checksum = (id << 24) + (class << 16) + len + sum of the payload's u32 LE words
            if avail < 2:
                return -1
            if buf[pos + 1] != 0xCE:
                return 0
            if avail < 6:
                return -1
            plen = buf[pos + 2] | (buf[pos + 3] << 8)
            total = plen + 10
            if plen % 4 or total > self.max_binary_length:
                return 0
            if avail < total:
                return -1
            ck = (buf[pos + 5] << 24) + (buf[pos + 4] << 16) + plen
            for i in range(pos + 6, pos + 6 + plen, 4):
                ck += int.from_bytes(buf[i : i + 4], "little")
            end = pos + 6 + plen
            return total if int.from_bytes(buf[end : end + 4], "little") == ck & 0xFFFFFFFF else 0
        return 0

    def _noise(self, nbytes):
        if self._state != _NOISE:
            self.resyncs += 1
            self._state = _NOISE
        self.dropped_bytes += nbytes

    def _scan(self, buf, out, final):
        # returns the bytes consumed; the rest is held as the tail
        n = len(buf)
        pos = 0
        while pos < n:
            if self._state == _SKIP:
                m = _STOP_LINE.search(buf, pos)
                end = m.start() if m else n
                self.dropped_bytes += end - pos
                pos = end
                if m:
                    self._state = _IDLE
                continue
            m = _BETWEEN.search(buf, pos)
            end = m.start() if m else n
            if end > pos:
                self._noise(end - pos)
                pos = end
                if not m:
                    break
            c = buf[pos]
            if c == 36:
                pos = self._sentence_at(buf, pos, n, out, final)
                if pos < 0:
                    return -pos - 1
                continue
            if c == 13 or c == 10:
                pos += 1  # terminators between sentences are not noise
                continue
            flen = self._binary(buf, pos, n)
            if flen > 0:
                if self.binary and c != 0xD3:
                    # UBX: class id len payload; CASIC: len class id payload
                    if c == 0xB5:
                        out.append(BinaryFrame("ubx", buf[pos + 2], buf[pos + 3], buf[pos + 6 : pos + flen - 2]))
                    else:
                        out.append(BinaryFrame("casic", buf[pos + 4], buf[pos + 5], buf[pos + 6 : pos + flen - 4]))
                    self.binary_frames += 1
                else:
                    self._drops[_BINARY] += 1
                    self.dropped_bytes += flen
                self._state = _IDLE
                pos += flen
                continue
            if flen < 0 and not final:
                return pos
            self._noise(1)
            pos += 1
        return pos

    def _sentence_at(self, buf, s, n, out, final):
        # A sentence starts at buf[s]. Returns where scanning goes on, or -(s + 1) to wait for more.
        self._state = _IDLE
        star = -1
        limit = self.max_length
        i = s + 1
        while True:
            stop = min(s + limit + 1, n)
            if star < 0:
                m = _STOP_FIELDS.search(buf, i, stop)
                i = m.start() if m else stop
                if i < stop and buf[i] == 42:
                    star = i
                    i += 1
            if star >= 0:
                m = _STOP_LINE.search(buf, i, stop)
                i = m.start() if m else stop
            if i < stop:
                ended = 1  # on a terminator, `$` or control byte
            elif i == s + limit + 1:
                if limit < self.max_message_length and self._message_kind(buf, s, star if star >= 0 else i):
                    limit = self.max_message_length
                    continue
                ended = 2  # too long
            else:
                ended = 3  # out of data
            break
        if self.binary:
            # a UBX or CASIC frame written into the line: the line ends where it starts (NMEA is
            # ASCII; B5 62 is never GB2312 text, and a BA CE must begin a frame whose checksum holds)
            j = -1
            for m in _SYNC.finditer(buf, s + 1, i):
                flen = self._binary(buf, m.start(), n)
                if flen > 0:
                    j = m.start()
                    break
                if flen < 0 and not final:
                    return -(s + 1)
            if j >= 0:
                if star >= 0 and j - star == 3:
                    self._sentence(buf, s, j, star, out)
                else:
                    self._drops[_TRUNCATED] += 1
                    self.dropped_bytes += j - s
                return j
        if ended == 2:
            self._drops[_TOO_LONG] += 1
            self.dropped_bytes += i - s
            self._state = _SKIP
            return i
        if ended == 3 and not final:
            return -(s + 1)
        if (ended == 1 and buf[i] in (13, 10)) or (star >= 0 and i - star == 3):
            self._sentence(buf, s, i, star, out)
        elif i == s + 1:
            # a lone `$` (as in `$$GPGGA`): noise
            self.resyncs += 1
            self._state = _NOISE
            self.dropped_bytes += 1
        else:
            self._drops[_TRUNCATED] += 1
            self.dropped_bytes += i - s
        return i

    @staticmethod
    def _message_kind(buf, s, fields_end):
        # `$ccTXR,` or `$ccTCI,`: the first comma right after a 5-letter non-proprietary address
        return buf.find(b",", s + 1, fields_end) == s + 6 and buf[s + 1] != 80 and buf[s + 3 : s + 6] in _MESSAGE_KINDS

    def _drop(self, reason, nbytes):
        self._drops[reason] += 1
        self.dropped_bytes += nbytes

    def _sentence(self, buf, s, end, star, out):
        bend = star if star >= 0 else end
        body = buf[s + 1 : bend]
        if star >= 0:
            hexpart = buf[star + 1 : end]
            if len(hexpart) != 2 or not all(c in b"0123456789ABCDEFabcdef" for c in hexpart):
                return self._drop(_BAD_CHECKSUM, end - s)
            if int(hexpart, 16) != reduce(operator.xor, body, 0):
                return self._drop(_BAD_CHECKSUM, end - s)
        elif self.require_checksum:
            return self._drop(_NO_CHECKSUM, end - s)
        parts = body.split(b",", MAX_FIELDS)
        address = parts[0]
        if _ADDRESS.fullmatch(address) is None:
            return self._drop(_BAD_SENTENCE, end - s)
        fields = parts[1:]
        nf = len(fields)
        msg = None
        talker = ""
        if len(address) == 5 and address[0] != 80:  # 'P' starts a proprietary address
            talker = address[:2].decode("latin-1")
            decoder = _DECODERS.get(address[2:])
            if decoder is not None:

                def f(k):
                    return fields[k] if k < nf else b""

                def rest(k):
                    return b",".join(fields[k:])

                try:
                    msg = decoder(f, nf, rest, talker)
                except _Bad:
                    return self._drop(_BAD_FIELD, end - s)
        if msg is None:
            msg = RawSentence(talker, address.decode("latin-1"), tuple(x.decode("latin-1") for x in fields))
        out.append(msg)
        self.frames += 1
        if star < 0:
            self.unchecked += 1


def nmea_checksum(data):
    """XOR of the bytes of `data` (the part between `$` and `*`). Raises TypeError unless bytes-like."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"nmea_checksum() needs bytes, not {type(data).__name__}")
    return reduce(operator.xor, bytes(data), 0)


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
    size = min(max(MIN_LENGTH, len(data)), LIMIT)
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
