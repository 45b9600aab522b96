"""NMEA 0183 framer + decoder: pure-Python twin of `NmeaDecoder` and the typed messages in
`cext/nmea.pxi`. Import both through `tianwang.gateway.framing` (`from tianwang.gateway.framing import NmeaDecoder`).

A byte stream goes in, fed in any chunking; typed messages come out, the same for every split:

    GGA RMC GSA GSV GLL VTG ZDA GST GNS TXT      (any talker: BD GB GN GP GL GA GQ ...)
    TXR FKI ICI ICP TCI PWI                      (RDSS: BeiDou short messages and terminal status)
    RawSentence(talker, address, fields)         (every other sentence, proprietary ones included)

Missing numeric fields are NaN (floats) or -1 (ints; ZDA's zone and date fields use 0); missing
one-letter fields are "". Times of day are `time_of_day_ns` (ns since midnight UTC); positions are
signed degrees. Messages compare equal across the two implementations (NaN equals NaN).

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
  A sync byte that does not begin a valid frame is noise, so a sentence that follows is never lost;
  while a candidate frame is incomplete, the bytes after it wait (at most max_binary_length).
- A checksummed sentence whose address is not 2..15 characters of A-Z/0-9 is `bad_sentence`; a
  known formatter with a field that does not parse is `bad_field`. Bytes >= 0x80 may appear inside
  sentences (GB2312 text in RDSS messages); text fields are latin-1 decoded so nothing is lost.

Counters: `frames` (sentences delivered), `resyncs`, `dropped_bytes`, `unchecked`, and `drops`
(reason -> count for every reason in NMEA_DROP_REASONS). Lengths are checked before anything is held,
so at most max(max_message_length, max_binary_length) bytes wait between feeds. Nothing logs.
"""

from __future__ import annotations

import math
import operator
import re
from functools import reduce

from tianwang.gateway.errors import FrameError

NMEA_DROP_REASONS = ("bad_checksum", "no_checksum", "too_long", "truncated", "bad_sentence", "bad_field", "binary")
_BAD_CHECKSUM, _NO_CHECKSUM, _TOO_LONG, _TRUNCATED, _BAD_SENTENCE, _BAD_FIELD, _BINARY = range(7)

MAX_FIELDS = 128  # commas split per sentence; past this the last field keeps the rest
GSV_MAX_SATS = 16  # satellite groups per GSV sentence (the standard sends at most 4)
MIN_LENGTH = 16
LIMIT = 1 << 20  # upper bound of every configurable length

_IDLE, _NOISE, _SKIP = 0, 1, 2

NAN = math.nan
_POW10 = [float(10**k) for k in range(19)]

# what ends the address-and-fields part of a sentence; what ends a sentence
_STOP_FIELDS = re.compile(rb"[\x00-\x1f\x7f$*]")
_STOP_LINE = re.compile(rb"[\x00-\x1f\x7f$]")
# what matters between sentences
_BETWEEN = re.compile(rb"[$\r\n\xb5\xd3\xba]")
_ADDRESS = re.compile(rb"[A-Z0-9]{2,15}")
_DECIMAL = re.compile(rb"[+-]?(\d*)(?:\.(\d*))?")
_LATLON = re.compile(rb"(\d{1,5})(?:\.(\d{0,12}))?")


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


class _Bad(Exception):
    """A field that does not parse (becomes a `bad_field` drop)."""


# ---------------------------------------------------------------------------------------------
# Field parsers (the same rules as the C ones in cext/nmea.pxi)


def _int(f, empty=-1):
    if not f:
        return empty
    digits = f[1:] if f[0] in b"+-" else f
    if not digits or len(digits) > 9 or not digits.isdigit():
        raise _Bad
    v = int(digits)
    return -v if f[0] == 45 else v


def _dec(f):
    if not f:
        return NAN
    m = _DECIMAL.fullmatch(f)
    if m is None:
        raise _Bad
    whole, frac = m.group(1), m.group(2) or b""
    ndig = len(whole) + len(frac)
    if ndig == 0 or ndig > 18:
        raise _Bad
    v = int(whole + frac) / _POW10[len(frac)]
    return -v if f[0] == 45 else v


def _time(f):
    if not f:
        return -1
    if len(f) < 6 or not f[:6].isdigit():
        raise _Bad
    hh, mm, ss = int(f[0:2]), int(f[2:4]), int(f[4:6])
    if hh > 23 or mm > 59 or ss > 60:  # 60: a leap second
        raise _Bad
    frac = 0
    scale = 1_000_000_000
    if len(f) > 6:
        digits = f[7:]
        if f[6] != 46 or len(digits) > 9 or (digits and not digits.isdigit()):
            raise _Bad
        if digits:
            frac = int(digits)
            scale //= 10 ** len(digits)
    return ((hh * 60 + mm) * 60 + ss) * 1_000_000_000 + frac * scale


def _latlon(f, h, is_lat):
    # (d)ddmm.mmmm + hemisphere -> signed degrees, from exact integers as the compiled decoder does
    if not f:
        if not h:
            return NAN
        raise _Bad
    if len(h) != 1 or h not in (b"NS" if is_lat else b"EW"):
        raise _Bad
    m = _LATLON.fullmatch(f)
    if m is None:
        raise _Bad
    ip = int(m.group(1))
    frac_digits = m.group(2) or b""
    k = len(frac_digits)
    frac = int(frac_digits) if frac_digits else 0
    deg, minute = divmod(ip, 100)
    if minute > 59:
        raise _Bad
    v = deg + (minute * 10**k + frac) / (60.0 * _POW10[k])
    if v > (90.0 if is_lat else 180.0):
        raise _Bad
    return -v if h in b"SW" else v


def _date(f):
    # ddmmyy -> (year, month, day); two-digit years 80..99 are 19xx, the rest 20xx
    if not f:
        return 0, 0, 0
    if len(f) != 6 or not f.isdigit():
        raise _Bad
    day, month, yy = int(f[0:2]), int(f[2:4]), int(f[4:6])
    if month < 1 or month > 12 or day < 1 or day > 31:
        raise _Bad
    return (1900 + yy if yy >= 80 else 2000 + yy), month, day


def _hexdigit(f):
    if not f:
        return -1
    if len(f) != 1 or f not in b"0123456789ABCDEFabcdef":
        raise _Bad
    return int(f, 16)


def _char(f):
    if not f:
        return ""
    if len(f) != 1:
        raise _Bad
    return chr(f[0])


def _yn(f):
    if not f:
        return -1
    if f == b"Y":
        return 1
    if f == b"N":
        return 0
    raise _Bad


def _str(f):
    return f.decode("latin-1")


# ---------------------------------------------------------------------------------------------
# Typed messages


class _Message:
    __slots__ = ()
    FORMATTER = ""
    FIELDS: tuple = ()

    def __init__(self, *values, **named):
        for name, value in zip(self.FIELDS, values):
            setattr(self, name, value)
        for name, value in named.items():
            setattr(self, name, value)

    def __repr__(self):
        return "%s(%s)" % (type(self).__name__, ", ".join("%s=%r" % (f, getattr(self, f)) for f in self.FIELDS))

    def __eq__(self, other):
        # equal when the sentence kind and every field match (NaN equals NaN): compiled and twin
        # messages compare equal to each other
        if type(self).__name__ != type(other).__name__ or getattr(other, "FIELDS", None) != self.FIELDS:
            return NotImplemented
        for f in self.FIELDS:
            a, b = getattr(self, f), getattr(other, f)
            if not (a == b or (type(a) is float and type(b) is float and a != a and b != b)):
                return False
        return True

    __hash__ = None


class GGA(_Message):
    """Global positioning system fix data. time_of_day_ns: ns since midnight UTC (-1 when empty);
    lat/lon: signed degrees; quality: 0 none, 1 GNSS, 2 DGNSS, 4 RTK fixed, 5 RTK float, 6 dead
    reckoning (-1 empty); alt_m: above mean sea level; geoid_sep_m: geoid above the ellipsoid."""

    FORMATTER = "GGA"
    FIELDS = ("talker", "time_of_day_ns", "lat", "lon", "quality", "sats_used", "hdop", "alt_m",
              "geoid_sep_m", "dgps_age_s", "dgps_station")
    __slots__ = FIELDS


class RMC(_Message):
    """Recommended minimum data. status: "A" valid / "V" warning; speed in knots; course over ground
    true; year/month/day 0 when empty; mag_var_deg east positive; mode: A D E F M N P R S ("" before
    NMEA 2.3); nav_status (NMEA 4.10): S C U V."""

    FORMATTER = "RMC"
    FIELDS = ("talker", "time_of_day_ns", "status", "lat", "lon", "speed_knots", "course_deg", "year",
              "month", "day", "mag_var_deg", "mode", "nav_status")
    __slots__ = FIELDS


class GSA(_Message):
    """DOP and active satellites. selection: "A"/"M"; fix_type: 1 none, 2 2D, 3 3D; svids: the ids
    used; system_id (NMEA 4.10): 1 GPS, 2 GLONASS, 3 Galileo, 4 BDS, 5 QZSS, 6 NavIC, -1 absent."""

    FORMATTER = "GSA"
    FIELDS = ("talker", "selection", "fix_type", "svids", "pdop", "hdop", "vdop", "system_id")
    __slots__ = FIELDS


class GSV(_Message):
    """Satellites in view, one sentence of `total`. satellites: ((svid, elev_deg, az_deg, snr_dbhz),
    ...) with -1 for empty values; signal_id (NMEA 4.10): hex digit, -1 absent."""

    FORMATTER = "GSV"
    FIELDS = ("talker", "total", "number", "sats_in_view", "satellites", "signal_id")
    __slots__ = FIELDS


class GLL(_Message):
    """Geographic position. status "A"/"V"; mode as in RMC."""

    FORMATTER = "GLL"
    FIELDS = ("talker", "lat", "lon", "time_of_day_ns", "status", "mode")
    __slots__ = FIELDS


class VTG(_Message):
    """Course and speed over ground: true and magnetic course, knots and km/h."""

    FORMATTER = "VTG"
    FIELDS = ("talker", "course_deg", "course_mag_deg", "speed_knots", "speed_kmh", "mode")
    __slots__ = FIELDS


class ZDA(_Message):
    """Time and date (UTC); local zone hours/minutes 0 when empty; day/month/year 0 when empty."""

    FORMATTER = "ZDA"
    FIELDS = ("talker", "time_of_day_ns", "day", "month", "year", "zone_hours", "zone_minutes")
    __slots__ = FIELDS


class GST(_Message):
    """Pseudorange error statistics: RMS, error ellipse (m, deg from true north), 1-sigma errors."""

    FORMATTER = "GST"
    FIELDS = ("talker", "time_of_day_ns", "rms", "sd_major_m", "sd_minor_m", "orientation_deg",
              "sd_lat_m", "sd_lon_m", "sd_alt_m")
    __slots__ = FIELDS


class GNS(_Message):
    """GNSS fix data: mode holds one letter per constellation (GPS, GLONASS, Galileo, BDS, ...)."""

    FORMATTER = "GNS"
    FIELDS = ("talker", "time_of_day_ns", "lat", "lon", "mode", "sats_used", "hdop", "alt_m",
              "geoid_sep_m", "dgps_age_s", "dgps_station", "nav_status")
    __slots__ = FIELDS


class TXT(_Message):
    """Receiver text (antenna status and the like). text is latin-1 decoded, so no byte is lost."""

    FORMATTER = "TXT"
    FIELDS = ("talker", "total", "number", "text_id", "text")
    __slots__ = FIELDS


class TXR(_Message):
    """RDSS short message received (protocol 2.1): kind 1 normal, 2 express, 3 broadcast, 4/5 query;
    encoding 0 GB2312, 1 code, 2 mixed; content: the bytes as sent (hex digits, or raw GB2312)."""

    FORMATTER = "TXR"
    FIELDS = ("talker", "kind", "sender", "encoding", "send_time", "content")
    __slots__ = FIELDS


class FKI(_Message):
    """RDSS feedback to a command. form "2.1": `$BDFKI,cmd,exec,interval_ok,suppression,wait mmss`;
    form "bds3": `$BDFKI,hhmmss,cmd,exec,reason,remaining s`. Absent ints are -1."""

    FORMATTER = "FKI"
    FIELDS = ("talker", "form", "time_of_day_ns", "command", "executed", "interval_ok", "suppression",
              "reason", "wait_s")
    __slots__ = FIELDS


class ICI(_Message):
    """RDSS card information (protocol 2.1): card, serial, broadcast id, user class, service
    interval (s), communication level, encrypted (E) or not (N), subordinate users."""

    FORMATTER = "ICI"
    FIELDS = ("talker", "card_id", "serial", "broadcast_id", "user_class", "interval_s", "level",
              "encrypted", "subordinates")
    __slots__ = FIELDS


class ICP(_Message):
    """RDSS card information (BDS-3 terminals), in the same field order as ICI."""

    FORMATTER = "ICP"
    FIELDS = ICI.FIELDS
    __slots__ = FIELDS


class TCI(_Message):
    """RDSS short message received (BDS-3): sender, recipient, frequency point, send time, encoding,
    acknowledgement flag, content bytes as sent."""

    FORMATTER = "TCI"
    FIELDS = ("talker", "sender", "recipient", "freq_point", "send_time", "encoding", "ack", "content")
    __slots__ = FIELDS


class PWI(_Message):
    """RDSS beam status (BDS-3, every second): `$BDPWI,time,n,(beam,power)*n,m,(beam,power)*m` ->
    rdss2 and s2c as ((beam, power), ...)."""

    FORMATTER = "PWI"
    FIELDS = ("talker", "time_of_day_ns", "rdss2", "s2c")
    __slots__ = FIELDS


class RawSentence(_Message):
    """Any sentence without a typed decoder: address (`GPXTE`, `PUBX`, `PCAS03`) and its fields
    (latin-1 strings). talker is the first two letters of a 5-letter non-proprietary address, else ""."""

    FORMATTER = ""
    FIELDS = ("talker", "address", "fields")
    __slots__ = FIELDS


# ---------------------------------------------------------------------------------------------
# Typed decoders: `f(k)` is field k (b"" past the end); `rest(k)` is field k to the end of the data
# part, commas included. Raise _Bad for a malformed field.


def _gga(f, nf, rest, talker):
    return GGA(talker, _time(f(0)), _latlon(f(1), f(2), True), _latlon(f(3), f(4), False), _int(f(5)),
               _int(f(6)), _dec(f(7)), _dec(f(8)), _dec(f(10)), _dec(f(12)), _int(f(13)))


def _rmc(f, nf, rest, talker):
    status, mode, nav, ew = _char(f(1)), _char(f(11)), _char(f(12)), _char(f(10))
    m = RMC(talker, _time(f(0)), status, _latlon(f(2), f(3), True), _latlon(f(4), f(5), False), _dec(f(6)),
            _dec(f(7)), *_date(f(8)), _dec(f(9)), mode, nav)
    if ew == "W":
        m.mag_var_deg = -m.mag_var_deg
    elif ew not in ("E", ""):
        raise _Bad
    return m


def _gsa(f, nf, rest, talker):
    # Standard layout: mode, fix, 12 ids, PDOP, HDOP, VDOP[, system id]. Receivers that list more
    # than 12 ids put the DOPs last: then a System ID is present when the last field has no '.'.
    selection = _char(f(0))
    if nf > 18:
        has_sys = b"." not in f(nf - 1)
        nsv = nf - 5 - (1 if has_sys else 0)
    else:
        has_sys = nf >= 18
        nsv = 12
    dop = 2 + nsv
    fix_type = _int(f(1))
    pdop, hdop, vdop = _dec(f(dop)), _dec(f(dop + 1)), _dec(f(dop + 2))
    system_id = _hexdigit(f(dop + 3)) if has_sys else -1
    svids = []
    for i in range(2, 2 + nsv):
        v = f(i)
        if v:
            sv = _int(v)
            if sv < 0:
                raise _Bad
            svids.append(sv)
    return GSA(talker, selection, fix_type, tuple(svids), pdop, hdop, vdop, system_id)


def _gsv(f, nf, rest, talker):
    # total, number, in view, then groups of (svid, elevation, azimuth, SNR); a field left over
    # after the groups is the NMEA 4.10 Signal ID. Groups left entirely empty are padding.
    total, number, in_view = _int(f(0)), _int(f(1)), _int(f(2))
    extra = nf - 3 if nf > 3 else 0
    ngroups, leftover = divmod(extra, 4)
    if leftover == 1:
        signal_id = _hexdigit(f(nf - 1))
    elif leftover == 0:
        signal_id = -1
    else:
        raise _Bad
    if ngroups > GSV_MAX_SATS:
        raise _Bad
    sats = []
    for g in range(ngroups):
        k = 3 + 4 * g
        if not f(k):
            if f(k + 1) or f(k + 2) or f(k + 3):
                raise _Bad
            continue
        svid = _int(f(k))
        if svid < 0:
            raise _Bad
        sats.append((svid, _int(f(k + 1)), _int(f(k + 2)), _int(f(k + 3))))
    return GSV(talker, total, number, in_view, tuple(sats), signal_id)


def _gll(f, nf, rest, talker):
    status, mode = _char(f(5)), _char(f(6))
    return GLL(talker, _latlon(f(0), f(1), True), _latlon(f(2), f(3), False), _time(f(4)), status, mode)


def _vtg(f, nf, rest, talker):
    # course,T,course,M,knots,N,km/h,K[,mode]; unit letters are not checked (old receivers leave them empty)
    mode = _char(f(8))
    return VTG(talker, _dec(f(0)), _dec(f(2)), _dec(f(4)), _dec(f(6)), mode)


def _zda(f, nf, rest, talker):
    m = ZDA(talker, _time(f(0)), _int(f(1), 0), _int(f(2), 0), _int(f(3), 0), _int(f(4), 0), _int(f(5), 0))
    if m.day < 0 or m.day > 31 or m.month < 0 or m.month > 12 or m.year < 0:
        raise _Bad
    return m


def _gst(f, nf, rest, talker):
    return GST(talker, _time(f(0)), *(_dec(f(k)) for k in range(1, 8)))


def _gns(f, nf, rest, talker):
    nav = _char(f(12))
    return GNS(talker, _time(f(0)), _latlon(f(1), f(2), True), _latlon(f(3), f(4), False), _str(f(5)),
               _int(f(6)), _dec(f(7)), _dec(f(8)), _dec(f(9)), _dec(f(10)), _int(f(11)), nav)


def _txt(f, nf, rest, talker):
    return TXT(talker, _int(f(0)), _int(f(1)), _int(f(2)), _str(rest(3)) if nf > 3 else "")


def _txr(f, nf, rest, talker):
    return TXR(talker, _int(f(0)), _str(f(1)), _int(f(2)), _str(f(3)), rest(4) if nf > 4 else b"")


def _fki(f, nf, rest, talker):
    # The BDS-3 form starts with a time (digits); the protocol 2.1 form with the command name.
    first = f(0)
    if first and first[0] in b"0123456789":
        time_of_day_ns = _time(first)
        executed = _yn(f(2))
        if executed < 0:
            raise _Bad
        return FKI(talker, "bds3", time_of_day_ns, _str(f(1)), executed == 1, -1, -1, _int(f(3)), _int(f(4)))
    executed = _yn(f(1))
    if executed < 0:
        raise _Bad
    interval_ok, suppression = _yn(f(2)), _int(f(3))
    wait_s = -1
    w = f(4)
    if w:
        mmss = _int(w) if len(w) == 4 else -1
        if mmss < 0 or mmss % 100 > 59:
            raise _Bad
        wait_s = (mmss // 100) * 60 + mmss % 100
    return FKI(talker, "2.1", -1, _str(first), executed == 1, interval_ok, suppression, -1, wait_s)


def _card(cls):
    def decode(f, nf, rest, talker):
        enc = _char(f(6))
        if enc not in ("E", "N", ""):
            raise _Bad
        return cls(talker, _str(f(0)), _str(f(1)), _str(f(2)), _int(f(3)), _int(f(4)), _int(f(5)),
                   enc == "E", _int(f(7)))

    return decode


def _tci(f, nf, rest, talker):
    return TCI(talker, _str(f(0)), _str(f(1)), _int(f(2)), _str(f(3)), _int(f(4)), _int(f(5)),
               rest(6) if nf > 6 else b"")


def _beams(f, nf, k):
    # a count, then that many (beam, power) pairs; an absent count means none
    if k >= nf:
        return (), k
    count = _int(f(k), 0)
    if count < 0 or k + 1 + 2 * count > nf:
        raise _Bad
    k += 1
    beams = []
    for _ in range(count):
        beams.append((_int(f(k)), _int(f(k + 1))))
        k += 2
    return tuple(beams), k


def _pwi(f, nf, rest, talker):
    time_of_day_ns = _time(f(0))
    rdss2, k = _beams(f, nf, 1)
    s2c, k = _beams(f, nf, k)
    if k < nf:
        raise _Bad
    return PWI(talker, time_of_day_ns, rdss2, s2c)


_DECODERS = {
    b"GGA": _gga, b"RMC": _rmc, b"GSA": _gsa, b"GSV": _gsv, b"GLL": _gll, b"VTG": _vtg, b"ZDA": _zda,
    b"GST": _gst, b"GNS": _gns, b"TXT": _txt, b"TXR": _txr, b"FKI": _fki, b"ICI": _card(ICI),
    b"ICP": _card(ICP), b"TCI": _tci, b"PWI": _pwi,
}
_MESSAGE_KINDS = (b"TXR", b"TCI")  # RDSS message sentences, allowed up to max_message_length


# ---------------------------------------------------------------------------------------------


class NmeaDecoder:
    """NMEA 0183 stream decoder: `feed(bytes)` -> list of typed messages (GGA, RMC, GSA, GSV, GLL,
    VTG, ZDA, GST, GNS, TXT, TXR, FKI, ICI, ICP, TCI, PWI) and RawSentence for anything else.

    Feed any chunking; the result is the same. `finish()` flushes the end of the stream (and makes
    the decoder ready for a new one). Counters: frames, resyncs, dropped_bytes, unchecked, and
    `drops` (reason -> count, every reason in NMEA_DROP_REASONS). Raises TypeError for input that is not
    bytes-like, ValueError for bad limits. Nothing here logs.
    """

    def __init__(self, max_length=128, max_message_length=4096, max_binary_length=2048, require_checksum=False):
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
        return dict(zip(NMEA_DROP_REASONS, self._drops))

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
        return (buf.find(b",", s + 1, fields_end) == s + 6 and buf[s + 1] != 80
                and buf[s + 3 : s + 6] in _MESSAGE_KINDS)

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


# ---------------------------------------------------------------------------------------------
# Epoch assembly: the sentences of one fix time -> one Epoch (twin of the compiled EpochAssembler).
#
# Boundaries: a GGA/RMC/GLL/GNS whose time differs from the epoch's; a sentence that appears once
# per epoch (GGA RMC GLL GNS VTG ZDA GST per talker, each GSV part, each constellation's GSA)
# arriving a second time; and, once learned, the
# sentence the receiver ends its epochs with (seen last before two boundaries in a row), so an
# epoch is complete without waiting for the next one. `flush()` closes the open epoch.
# Date: RMC's, else ZDA's (moved across midnight when ZDA's time is on the other side), else the
# previous epoch's, plus a day when the time of day went back by more than 12 hours.

SYSTEMS = ("GPS", "GLO", "GAL", "BDS", "QZSS")
_GPS, _GLO, _GAL, _BDS, _QZSS = range(5)
_MIXED = -2  # a GN talker without System ID: satellites classified by number
_PAYLOAD_ORDER = (_BDS, _GPS, _GLO, _GAL, _QZSS)  # DESIGN section 3 lists BDS first
_K_GGA, _K_RMC, _K_GSA, _K_GSV, _K_GLL, _K_VTG, _K_ZDA, _K_GST, _K_GNS = range(1, 10)
_NO_DAYS = -(1 << 40)
_DAY_NS = 86_400_000_000_000
_HALF_DAY_NS = 43_200_000_000_000
_MAX_SEEN = 64
_TALKER_SYSTEMS = {"GP": _GPS, "GL": _GLO, "GA": _GAL, "GB": _BDS, "BD": _BDS, "GQ": _QZSS, "GN": _MIXED}
_MODE_QUALITY = {"A": 1, "D": 2, "R": 4, "F": 5, "E": 6, "M": 7, "S": 8, "N": 0}


def days_from_civil(y, m, d):
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm), for y >= 1."""
    if m <= 2:
        y -= 1
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _system_of_id(system_id):
    # NMEA 4.10 System ID -> index; NavIC (6) and unknown ids are not counted
    return system_id - 1 if 1 <= system_id <= 5 else -1


def _classify(prn):
    # a GN sentence without System ID: the NMEA 4.0 / vendor number ranges
    if 1 <= prn <= 32:
        return _GPS
    if 65 <= prn <= 96:
        return _GLO
    if 193 <= prn <= 200:
        return _QZSS
    if 201 <= prn <= 263 or 401 <= prn <= 463:
        return _BDS
    if 301 <= prn <= 336:
        return _GAL
    return -1


def _svid(system, prn):
    # the constellation's own satellite number from an NMEA id; -1 when outside it (SBAS and such)
    if system == _GPS:
        return prn if 1 <= prn <= 32 else -1
    if system == _GLO:
        if 65 <= prn <= 96:
            return prn - 64
        return prn if 1 <= prn <= 32 else -1
    if system == _GAL:
        if 301 <= prn <= 336:
            return prn - 300
        return prn if 1 <= prn <= 36 else -1
    if system == _BDS:
        if 201 <= prn <= 263:
            return prn - 200
        if 401 <= prn <= 463:
            return prn - 400
        return prn if 1 <= prn <= 63 else -1
    if system == _QZSS:
        if 193 <= prn <= 202:
            return prn - 192
        return prn if 1 <= prn <= 10 else -1
    return -1


def _mode_quality(mode):
    return _MODE_QUALITY.get(mode[0], -1) if mode else -1


def _key(kind, talker, sub):
    # identifies a sentence's place in a receiver's cycle
    return kind | (ord(talker[0]) << 8) | (ord(talker[1]) << 16) | (sub << 24)


def _opt(v):
    return None if v != v else v


def _round(v, scale):
    # positions to 1e-9 degree (0.1 mm), speeds to 1e-4 m/s: finer than any NMEA field, and the
    # short decimal form keeps JSON and msgpack output small
    return None if v != v else round(v * scale) / scale


class Epoch:
    """One fix time's worth of sentences, merged. Positions in degrees, speed in m/s; NaN or -1
    where no sentence said. `fix_payload()` is the `gnss/<id>/fix` payload; `satellites()` the sky."""

    __slots__ = ("time_ns", "time_of_day_ns", "lat", "lon", "alt_m", "geoid_sep_m", "speed_mps", "course_deg",
                 "hdop", "pdop", "vdop", "quality", "mode", "sats_used_total", "sentences", "no_fix_reason",
                 "_used", "_view", "_gsv")

    def __init__(self):
        self.time_ns = -1
        self.time_of_day_ns = -1
        self.lat = self.lon = self.alt_m = self.geoid_sep_m = NAN
        self.speed_mps = self.course_deg = self.hdop = self.pdop = self.vdop = NAN
        self.quality = self.mode = self.sats_used_total = self.sentences = 0
        self.no_fix_reason = None
        self._used = [0] * 5
        self._view = [0] * 5
        self._gsv = []

    @property
    def sats_used(self):
        """Satellites used in the solution per constellation (from GSA System IDs / talkers)."""
        return {SYSTEMS[s]: self._used[s].bit_count() for s in _PAYLOAD_ORDER}

    @property
    def sats_view(self):
        """Distinct satellites in view per constellation (from the epoch's GSV sentences)."""
        return {SYSTEMS[s]: self._view[s].bit_count() for s in _PAYLOAD_ORDER}

    @property
    def has_satellites(self):
        return bool(self._gsv)

    def fix_payload(self):
        """The `fix` payload (DESIGN section 3); None for values no sentence gave."""
        return {
            "time_ns": self.time_ns if self.time_ns >= 0 else None,
            "lat": _round(self.lat, 1e9),
            "lon": _round(self.lon, 1e9),
            "alt_m": _opt(self.alt_m),
            "speed_mps": _round(self.speed_mps, 1e4),
            "course_deg": _opt(self.course_deg),
            "quality": self.quality,
            "mode": self.mode,
            "hdop": _opt(self.hdop),
            "pdop": _opt(self.pdop),
            "vdop": _opt(self.vdop),
            "sats_used": self.sats_used,
            "sats_view": self.sats_view,
            "source": "nmea",
        }

    def satellites(self):
        """The sky: [{system, svid, elev, az, snr, used}] keyed by (system, svid), BDS first then GPS
        GLO GAL QZSS, by svid. Across signals: the highest SNR, the first elevation/azimuth given."""
        sky = {}
        for g in self._gsv:
            system = _TALKER_SYSTEMS.get(g.talker, -1)
            for prn, elev, az, snr in g.satellites:
                s = _classify(prn) if system == _MIXED else system
                if s < 0:
                    continue
                svid = _svid(s, prn)
                if svid < 0 or svid > 63:
                    continue
                known = sky.get((s, svid))
                if known is None:
                    sky[(s, svid)] = [elev, az, snr]
                else:
                    if known[0] < 0:
                        known[0] = elev
                    if known[1] < 0:
                        known[1] = az
                    if snr > known[2]:
                        known[2] = snr
        out = []
        for s in _PAYLOAD_ORDER:
            for svid in range(64):
                known = sky.get((s, svid))
                if known is not None:
                    elev, az, snr = known
                    out.append({"system": SYSTEMS[s], "svid": svid, "elev": elev if elev >= 0 else None,
                                "az": az if az >= 0 else None, "snr": snr if snr >= 0 else None,
                                "used": bool((self._used[s] >> svid) & 1)})
        return out

    def __repr__(self):
        return (f"Epoch(time_ns={self.time_ns}, lat={self.lat!r}, lon={self.lon!r}, quality={self.quality}, "
                f"mode={self.mode}, sentences={self.sentences}, no_fix_reason={self.no_fix_reason!r})")


class EpochAssembler:
    """Typed NMEA messages in (from NmeaDecoder), Epochs out: `push(messages)` returns, in stream
    order, each completed Epoch and every message that is not epoch material (TXT, RDSS, raw)."""

    def __init__(self):
        self.epochs = 0
        self._cur = None
        self._last_key = self._candidate = self._ender = 0
        self._misses = 0
        self._last_days = _NO_DAYS
        self._last_tod = -1

    @property
    def open(self):
        """True while an epoch is being assembled."""
        return self._cur is not None

    @property
    def ender(self):
        """Whether the receiver's end-of-epoch sentence has been learned."""
        return self._ender != 0

    def push(self, messages):
        """Merge `messages` (a list from NmeaDecoder.feed); returns completed Epochs and the
        messages that are not epoch material, in stream order."""
        out = []
        for m in messages:
            t = type(m)
            if t is GGA:
                key = _key(_K_GGA, m.talker, 0)
                e = self._arrive(m.time_of_day_ns, key, True, out)
                self._anchored = True
                if not self._has_gga:
                    self._has_gga = True
                    self._gga_quality = m.quality
                    self._gga_sats = m.sats_used
                    self._gga_hdop = m.hdop
                    if self._pos_rank < 4 and m.lat == m.lat and m.lon == m.lon:
                        self._pos_rank = 4
                        e.lat, e.lon = m.lat, m.lon
                    e.alt_m = m.alt_m
                    e.geoid_sep_m = m.geoid_sep_m
            elif t is RMC:
                key = _key(_K_RMC, m.talker, 0)
                e = self._arrive(m.time_of_day_ns, key, True, out)
                self._anchored = True
                if self._rmc_valid < 0:
                    self._rmc_valid = 1 if m.status == "A" else (0 if m.status == "V" else -1)
                    if self._pos_rank < 2 and m.lat == m.lat and m.lon == m.lon:
                        self._pos_rank = 2
                        e.lat, e.lon = m.lat, m.lon
                    if self._speed_rank < 2:
                        self._speed_rank = 2
                        e.speed_mps = m.speed_knots * (1852.0 / 3600.0)
                        e.course_deg = m.course_deg
                    if m.year > 0:
                        self._rmc_days = days_from_civil(m.year, m.month, m.day)
                    if self._mode_quality < 0:
                        self._mode_quality = _mode_quality(m.mode)
            elif t is GSA:
                # once per epoch per (talker, system, first id used); a GN GSA without System ID may
                # come several times (one per constellation) and cannot mark a new epoch
                key = _key(_K_GSA, m.talker, (m.system_id + 2) | ((m.svids[0] if m.svids else 0) << 5))
                e = self._arrive(-1, key, m.system_id >= 0 or m.talker != "GN", out)
                self._gsa_count += 1
                if m.fix_type > self._gsa_fix:
                    self._gsa_fix = m.fix_type
                if e.pdop != e.pdop and e.hdop != e.hdop and e.vdop != e.vdop:
                    e.pdop, e.hdop, e.vdop = m.pdop, m.hdop, m.vdop
                s = _system_of_id(m.system_id) if m.system_id >= 0 else _TALKER_SYSTEMS.get(m.talker, -1)
                for prn in m.svids:
                    i = _classify(prn) if s == _MIXED else s
                    if i >= 0:
                        svid = _svid(i, prn)
                        if 0 <= svid <= 63:
                            e._used[i] |= 1 << svid
            elif t is GSV:
                # each part of each talker's and signal's GSV group comes once per epoch: a receiver
                # that sends its satellites first starts the next epoch with them
                key = _key(_K_GSV, m.talker, (m.signal_id + 2) | (m.number << 5) | ((m.number == m.total) << 14))
                e = self._arrive(-1, key, True, out)
                system = _TALKER_SYSTEMS.get(m.talker, -1)
                for sat in m.satellites:
                    s = _classify(sat[0]) if system == _MIXED else system
                    if s >= 0:
                        svid = _svid(s, sat[0])
                        if 0 <= svid <= 63:
                            e._view[s] |= 1 << svid
                e._gsv.append(m)
            elif t is VTG:
                key = _key(_K_VTG, m.talker, 0)
                e = self._arrive(-1, key, True, out)
                if self._speed_rank < 1:
                    self._speed_rank = 1
                    e.speed_mps = (m.speed_knots * (1852.0 / 3600.0) if m.speed_knots == m.speed_knots
                                   else m.speed_kmh / 3.6)
                    e.course_deg = m.course_deg
            elif t is ZDA:
                key = _key(_K_ZDA, m.talker, 0)
                self._arrive(-1, key, True, out)
                self._anchored = True
                if m.year > 0 and m.month > 0 and m.day > 0 and self._zda_days == _NO_DAYS:
                    self._zda_days = days_from_civil(m.year, m.month, m.day)
                    self._zda_tod = m.time_of_day_ns
            elif t is GNS:
                key = _key(_K_GNS, m.talker, 0)
                e = self._arrive(m.time_of_day_ns, key, True, out)
                self._anchored = True
                if self._pos_rank < 3 and m.lat == m.lat and m.lon == m.lon:
                    self._pos_rank = 3
                    e.lat, e.lon = m.lat, m.lon
                    if not self._has_gga:
                        e.alt_m = m.alt_m
                        e.geoid_sep_m = m.geoid_sep_m
                if self._mode_quality < 0 and m.mode:
                    q = 0
                    for c in m.mode:
                        if c != "N":
                            q = _mode_quality(c)
                            break
                    self._mode_quality = q
                if not self._has_gga:
                    if self._gga_sats < 0:
                        self._gga_sats = m.sats_used
                    if self._gga_hdop != self._gga_hdop:
                        self._gga_hdop = m.hdop
            elif t is GLL:
                key = _key(_K_GLL, m.talker, 0)
                e = self._arrive(m.time_of_day_ns, key, True, out)
                self._anchored = True
                if self._pos_rank < 1 and m.status != "V" and m.lat == m.lat and m.lon == m.lon:
                    self._pos_rank = 1
                    e.lat, e.lon = m.lat, m.lon
                if self._mode_quality < 0:
                    self._mode_quality = _mode_quality(m.mode)
            elif t is GST:
                key = _key(_K_GST, m.talker, 0)
                self._arrive(-1, key, True, out)
            else:
                out.append(m)
                continue
            self._last_key = key
            if self._ender != 0 and key == self._ender and self._cur is not None:
                self._misses = 0
                self._close(out)
        return out

    def flush(self, final=False):
        """Close the open epoch (the receiver went quiet, or with final=True the input ended);
        returns [Epoch] or []. A fragment (only GSA/GSV/VTG/GST, no sentence with a position, time
        or date) is not an epoch: it stays open for the sentences that follow, and the learned end
        of cycle is forgotten, since the receiver sent more after it; at the end it is discarded."""
        out = []
        if self._cur is None:
            return out
        if not self._anchored:
            if final:
                self._cur = None
            else:
                self._ender = 0
                self._candidate = 0
            return out
        self._close(out)
        return out

    def _arrive(self, tod, key, once, out):
        # a sentence of epoch material is about to be merged: close the current epoch first when
        # this sentence starts the next one
        e = self._cur
        if e is not None:
            boundary = False
            if tod >= 0 and e.time_of_day_ns >= 0 and tod != e.time_of_day_ns:
                boundary = True
            elif once and key in self._seen:
                boundary = True
            if boundary:
                # learn what the receiver sends last: the same sentence before two boundaries
                if self._ender != 0:
                    self._misses += 1
                    if self._misses >= 2:
                        self._ender = 0
                        self._candidate = self._last_key
                elif self._last_key == self._candidate:
                    self._ender = self._candidate
                    self._misses = 0
                else:
                    self._candidate = self._last_key
                self._close(out)
        if self._cur is None:
            e = self._cur = Epoch()
            self._pos_rank = 0
            self._anchored = False
            self._has_gga = False
            self._gga_quality = -1
            self._gga_sats = -1
            self._gga_hdop = NAN
            self._rmc_valid = -1
            self._mode_quality = -1
            self._speed_rank = 0
            self._gsa_count = 0
            self._gsa_fix = -1
            self._rmc_days = _NO_DAYS
            self._zda_days = _NO_DAYS
            self._zda_tod = -1
            self._seen = []
        if tod >= 0 and e.time_of_day_ns < 0:
            e.time_of_day_ns = tod
        if once and len(self._seen) < _MAX_SEEN:
            self._seen.append(key)
        e.sentences += 1
        return e

    def _close(self, out):
        e = self._cur
        self._cur = None
        if e.time_of_day_ns < 0 and self._zda_tod >= 0:
            e.time_of_day_ns = self._zda_tod
        tod = e.time_of_day_ns
        days = _NO_DAYS
        if self._rmc_days != _NO_DAYS:
            days = self._rmc_days
        elif self._zda_days != _NO_DAYS:
            days = self._zda_days
            if tod >= 0 and self._zda_tod >= 0:
                diff = tod - self._zda_tod
                if diff > _HALF_DAY_NS:
                    days -= 1
                elif diff < -_HALF_DAY_NS:
                    days += 1
        elif self._last_days != _NO_DAYS and tod >= 0:
            days = self._last_days
            if tod < self._last_tod - _HALF_DAY_NS:
                days += 1
        if days != _NO_DAYS and tod >= 0:
            e.time_ns = days * _DAY_NS + tod
            self._last_days = days
            self._last_tod = tod
        # why this is not a fix, if it is not
        if self._rmc_valid == 0:
            e.no_fix_reason = "RMC status V"
        elif self._has_gga and self._gga_quality == 0:
            e.no_fix_reason = "GGA quality 0"
        elif self._gsa_count > 0 and self._gsa_fix == 1:
            e.no_fix_reason = "GSA mode 1"
        elif e.lat != e.lat or e.lon != e.lon:
            e.no_fix_reason = "no position"
        else:
            e.no_fix_reason = None
        if e.no_fix_reason is not None:
            e.quality = 0
            e.mode = 1
        else:
            if self._has_gga and self._gga_quality >= 0:
                e.quality = self._gga_quality
            elif self._mode_quality > 0:
                e.quality = self._mode_quality
            else:
                e.quality = 1
            if self._gsa_fix >= 2:
                e.mode = self._gsa_fix
            else:
                e.mode = 2 if e.alt_m != e.alt_m else 3
        if e.hdop != e.hdop:
            e.hdop = self._gga_hdop
        if self._gsa_count > 0:
            e.sats_used_total = sum(bits.bit_count() for bits in e._used)
        else:
            e.sats_used_total = self._gga_sats if self._gga_sats > 0 else 0
        self.epochs += 1
        out.append(e)
