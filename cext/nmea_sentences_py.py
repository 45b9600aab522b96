"""NMEA 0183 typed sentences: pure-Python twin of the message classes GGA ... PWI and RawSentence
in `tianwang.cext._speedups` (cext/nmea_sentences.pxi), with their field parsers and one decoder per
formatter. Import the classes through `tianwang.gateway.framing` (`from tianwang.gateway.framing import
GGA`); `NmeaDecoder` (cext/nmea_framer_py.py) is what builds them from a byte stream:

    GGA RMC GSA GSV GLL VTG ZDA GST GNS TXT      (any talker: BD GB GN GP GL GA GQ ...)
    TXR FKI ICI ICP TCI PWI                      (RDSS: BeiDou short messages and terminal status)
    RawSentence(talker, address, fields)         (every other sentence, proprietary ones included)

Missing numeric fields are NaN (floats) or -1 (ints; ZDA's zone and date fields use 0); missing
one-letter fields are "". Times of day are `time_of_day_ns` (ns since midnight UTC); positions are
signed degrees. Messages compare equal across the two implementations (NaN equals NaN).

A decoder gets the fields of a sentence that the framer has already checked and split, and raises
`_Bad` for a field that does not parse; the framer counts that sentence as a `bad_field` drop.
"""

from __future__ import annotations

import math
import re

GSV_MAX_SATS = 16  # satellite groups per GSV sentence (the standard sends at most 4)

NAN = math.nan
_POW10 = [float(10**k) for k in range(19)]

_DECIMAL = re.compile(rb"[+-]?(\d*)(?:\.(\d*))?")
_LATLON = re.compile(rb"(\d{1,5})(?:\.(\d{0,12}))?")


class _Bad(Exception):
    """A field that does not parse (becomes a `bad_field` drop)."""


# ---------------------------------------------------------------------------------------------
# Field parsers (the same rules as the C ones in cext/nmea_sentences.pxi)


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
        for name, value in zip(self.FIELDS, values, strict=False):  # positional values may stop early
            setattr(self, name, value)
        for name, value in named.items():
            setattr(self, name, value)

    def __repr__(self):
        return "{}({})".format(type(self).__name__, ", ".join(f"{f}={getattr(self, f)!r}" for f in self.FIELDS))

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

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value: unhashable, as the compiled class


class GGA(_Message):
    """Global positioning system fix data. time_of_day_ns: ns since midnight UTC (-1 when empty);
    lat/lon: signed degrees; quality: 0 none, 1 GNSS, 2 DGNSS, 4 RTK fixed, 5 RTK float, 6 dead
    reckoning (-1 empty); alt_m: above mean sea level; geoid_sep_m: geoid above the ellipsoid."""

    FORMATTER = "GGA"
    FIELDS = (
        "talker",
        "time_of_day_ns",
        "lat",
        "lon",
        "quality",
        "sats_used",
        "hdop",
        "alt_m",
        "geoid_sep_m",
        "dgps_age_s",
        "dgps_station",
    )
    __slots__ = FIELDS


class RMC(_Message):
    """Recommended minimum data. status: "A" valid / "V" warning; speed in knots; course over ground
    true; year/month/day 0 when empty; mag_var_deg east positive; mode: A D E F M N P R S ("" before
    NMEA 2.3); nav_status (NMEA 4.10): S C U V."""

    FORMATTER = "RMC"
    FIELDS = (
        "talker",
        "time_of_day_ns",
        "status",
        "lat",
        "lon",
        "speed_knots",
        "course_deg",
        "year",
        "month",
        "day",
        "mag_var_deg",
        "mode",
        "nav_status",
    )
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
    FIELDS = (
        "talker",
        "time_of_day_ns",
        "rms",
        "sd_major_m",
        "sd_minor_m",
        "orientation_deg",
        "sd_lat_m",
        "sd_lon_m",
        "sd_alt_m",
    )
    __slots__ = FIELDS


class GNS(_Message):
    """GNSS fix data: mode holds one letter per constellation (GPS, GLONASS, Galileo, BDS, ...)."""

    FORMATTER = "GNS"
    FIELDS = (
        "talker",
        "time_of_day_ns",
        "lat",
        "lon",
        "mode",
        "sats_used",
        "hdop",
        "alt_m",
        "geoid_sep_m",
        "dgps_age_s",
        "dgps_station",
        "nav_status",
    )
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
    FIELDS = (
        "talker",
        "form",
        "time_of_day_ns",
        "command",
        "executed",
        "interval_ok",
        "suppression",
        "reason",
        "wait_s",
    )
    __slots__ = FIELDS


class ICI(_Message):
    """RDSS card information (protocol 2.1): card, serial, broadcast id, user class, service
    interval (s), communication level, encrypted (E) or not (N), subordinate users."""

    FORMATTER = "ICI"
    FIELDS = (
        "talker",
        "card_id",
        "serial",
        "broadcast_id",
        "user_class",
        "interval_s",
        "level",
        "encrypted",
        "subordinates",
    )
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


class BinaryFrame(_Message):
    """A checksum-verified binary frame found between NMEA sentences (NmeaDecoder(binary=True)):
    protocol "ubx" (B5 62) or "casic" (BA CE), its message class and id, and the payload bytes
    (without header and checksum). Decoded by tianwang.drivers.beidou.binary."""

    FORMATTER = ""
    FIELDS = ("protocol", "msg_class", "msg_id", "payload")
    __slots__ = FIELDS


class RawSentence(_Message):
    """Any sentence without a typed decoder: address (`GPXTE`, `PUBX`, `PCAS03`) and its fields
    (latin-1 strings). talker is the first two letters of a 5-letter non-proprietary address, else ""."""

    FORMATTER = ""
    FIELDS = ("talker", "address", "fields")
    __slots__ = FIELDS
    # the fields' types (cext/nmea_sentences_decl.pxi), for type checkers
    talker: str
    address: str
    fields: tuple[str, ...]


# ---------------------------------------------------------------------------------------------
# Typed decoders: `f(k)` is field k (b"" past the end); `rest(k)` is field k to the end of the data
# part, commas included. Raise _Bad for a malformed field.


def _gga(f, nf, rest, talker):
    return GGA(
        talker,
        _time(f(0)),
        _latlon(f(1), f(2), True),
        _latlon(f(3), f(4), False),
        _int(f(5)),
        _int(f(6)),
        _dec(f(7)),
        _dec(f(8)),
        _dec(f(10)),
        _dec(f(12)),
        _int(f(13)),
    )


def _rmc(f, nf, rest, talker):
    status, mode, nav, ew = _char(f(1)), _char(f(11)), _char(f(12)), _char(f(10))
    m = RMC(
        talker,
        _time(f(0)),
        status,
        _latlon(f(2), f(3), True),
        _latlon(f(4), f(5), False),
        _dec(f(6)),
        _dec(f(7)),
        *_date(f(8)),
        _dec(f(9)),
        mode,
        nav,
    )
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
    return GNS(
        talker,
        _time(f(0)),
        _latlon(f(1), f(2), True),
        _latlon(f(3), f(4), False),
        _str(f(5)),
        _int(f(6)),
        _dec(f(7)),
        _dec(f(8)),
        _dec(f(9)),
        _dec(f(10)),
        _int(f(11)),
        nav,
    )


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
        return cls(
            talker, _str(f(0)), _str(f(1)), _str(f(2)), _int(f(3)), _int(f(4)), _int(f(5)), enc == "E", _int(f(7))
        )

    return decode


def _tci(f, nf, rest, talker):
    return TCI(
        talker, _str(f(0)), _str(f(1)), _int(f(2)), _str(f(3)), _int(f(4)), _int(f(5)), rest(6) if nf > 6 else b""
    )


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
    b"GGA": _gga,
    b"RMC": _rmc,
    b"GSA": _gsa,
    b"GSV": _gsv,
    b"GLL": _gll,
    b"VTG": _vtg,
    b"ZDA": _zda,
    b"GST": _gst,
    b"GNS": _gns,
    b"TXT": _txt,
    b"TXR": _txr,
    b"FKI": _fki,
    b"ICI": _card(ICI),
    b"ICP": _card(ICP),
    b"TCI": _tci,
    b"PWI": _pwi,
}
