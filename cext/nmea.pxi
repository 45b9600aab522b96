# NMEA 0183 framer + decoder: a byte stream in (any chunking), typed messages out.
# Twin: drivers/beidou/nmea_py.py (same messages, counters and exceptions for any input and split).
#
# Framing rules (shared with the twin, documented for users in drivers/beidou/nmea_py.py):
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

cimport cython
from libc.math cimport NAN, isnan
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeLatin1
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM
from cpython.ref cimport Py_INCREF, PyObject
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
cdef double _NM_POW10[19]
cdef unsigned int _NM_CRC24Q[256]
cdef tuple _NM_CHARS = tuple([chr(i) for i in range(256)])   # one-letter fields, shared


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
    _NM_POW10[0] = 1.0
    for i in range(1, 19):
        _NM_POW10[i] = _NM_POW10[i - 1] * 10.0   # exact: 10**18 < 2**53 * 2**18
    # RTCM 10403: CRC-24Q, polynomial 0x1864CFB, initial value 0
    for i in range(256):
        crc = (<unsigned int>i) << 16
        for j in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
        _NM_CRC24Q[i] = crc & 0xFFFFFF

_nm_init_tables()


# ---------------------------------------------------------------------------------------------
# Field parsers. Return 0 = parsed (empty fields give NaN / the default), -1 = malformed.

cdef inline int _nm_int(const unsigned char* p, Py_ssize_t a, Py_ssize_t b, int empty,
                        int* out) noexcept nogil:
    # [+-]digits, at most 9 digits (fits an int)
    cdef bint neg = False
    cdef int v = 0
    cdef unsigned int d
    if a >= b:
        out[0] = empty
        return 0
    if p[a] == 45 or p[a] == 43:
        neg = p[a] == 45
        a += 1
    if a >= b or b - a > 9:
        return -1
    while a < b:
        d = p[a] - 48
        if d > 9:
            return -1
        v = v * 10 + <int>d
        a += 1
    out[0] = -v if neg else v
    return 0


cdef inline int _nm_dec(const unsigned char* p, Py_ssize_t a, Py_ssize_t b, double* out) noexcept nogil:
    # [+-]digits[.digits], 1..18 digits in all; value = mantissa / 10**fraction_digits
    cdef bint neg = False, dot = False
    cdef unsigned long long mant = 0
    cdef int ndig = 0, nfrac = 0
    cdef unsigned int d
    cdef unsigned char c
    if a >= b:
        out[0] = NAN
        return 0
    if p[a] == 45 or p[a] == 43:
        neg = p[a] == 45
        a += 1
    while a < b:
        c = p[a]
        if c == 46 and not dot:
            dot = True
        else:
            d = c - 48
            if d > 9:
                return -1
            mant = mant * 10 + d
            ndig += 1
            if dot:
                nfrac += 1
            if ndig > 18:
                return -1
        a += 1
    if ndig == 0:
        return -1
    out[0] = -(<double>mant / _NM_POW10[nfrac]) if neg else <double>mant / _NM_POW10[nfrac]
    return 0


cdef inline int _nm_time(const unsigned char* p, Py_ssize_t a, Py_ssize_t b, long long* out) noexcept nogil:
    # hhmmss[.f...]: nanoseconds since midnight; at most 9 fraction digits; -1 when empty
    cdef int i, hh, mm, ss
    cdef long long frac = 0, scale = 1000000000
    cdef unsigned int d
    if a >= b:
        out[0] = -1
        return 0
    if b - a < 6:
        return -1
    for i in range(6):
        if <unsigned int>(p[a + i] - 48) > 9:
            return -1
    hh = (p[a] - 48) * 10 + (p[a + 1] - 48)
    mm = (p[a + 2] - 48) * 10 + (p[a + 3] - 48)
    ss = (p[a + 4] - 48) * 10 + (p[a + 5] - 48)
    if hh > 23 or mm > 59 or ss > 60:   # 60: a leap second
        return -1
    a += 6
    if a < b:
        if p[a] != 46 or b - a - 1 > 9:
            return -1
        a += 1
        while a < b:
            d = p[a] - 48
            if d > 9:
                return -1
            frac = frac * 10 + d
            scale //= 10
            a += 1
    out[0] = ((hh * 60 + mm) * 60 + ss) * 1000000000LL + frac * scale
    return 0


cdef inline int _nm_latlon(const unsigned char* p, Py_ssize_t a, Py_ssize_t b, Py_ssize_t ha, Py_ssize_t hb,
                           bint is_lat, double* out) noexcept nogil:
    # (d)ddmm.mmmm + hemisphere -> signed degrees. Computed as deg + (minutes * 10**k) / (60 * 10**k)
    # from exact integers so the twin gets the same bits.
    cdef long long ip = 0, frac = 0
    cdef int nint = 0, nfrac = 0, deg, minute
    cdef bint dot = False
    cdef unsigned int d
    cdef unsigned char h
    cdef double v
    if a >= b:
        if ha >= hb:
            out[0] = NAN
            return 0
        return -1
    if hb - ha != 1:
        return -1
    h = p[ha]
    if is_lat:
        if h != 78 and h != 83:      # N S
            return -1
    elif h != 69 and h != 87:        # E W
        return -1
    while a < b:
        if p[a] == 46 and not dot:
            dot = True
        else:
            d = p[a] - 48
            if d > 9:
                return -1
            if dot:
                frac = frac * 10 + d
                nfrac += 1
                if nfrac > 12:
                    return -1
            else:
                ip = ip * 10 + d
                nint += 1
                if nint > 5:
                    return -1
        a += 1
    if nint == 0:
        return -1
    deg = <int>(ip // 100)
    minute = <int>(ip % 100)
    if minute > 59:
        return -1
    v = deg + <double>(minute * <long long>_NM_POW10[nfrac] + frac) / (60.0 * _NM_POW10[nfrac])
    if v > (90.0 if is_lat else 180.0):
        return -1
    out[0] = -v if (h == 83 or h == 87) else v
    return 0


cdef inline int _nm_date(const unsigned char* p, Py_ssize_t a, Py_ssize_t b, int* year, int* month,
                         int* day) noexcept nogil:
    # ddmmyy; two-digit years 80..99 are 19xx, the rest 20xx; 0 when empty
    cdef int i, yy
    if a >= b:
        year[0] = 0
        month[0] = 0
        day[0] = 0
        return 0
    if b - a != 6:
        return -1
    for i in range(6):
        if <unsigned int>(p[a + i] - 48) > 9:
            return -1
    day[0] = (p[a] - 48) * 10 + (p[a + 1] - 48)
    month[0] = (p[a + 2] - 48) * 10 + (p[a + 3] - 48)
    yy = (p[a + 4] - 48) * 10 + (p[a + 5] - 48)
    year[0] = 1900 + yy if yy >= 80 else 2000 + yy
    if month[0] < 1 or month[0] > 12 or day[0] < 1 or day[0] > 31:
        return -1
    return 0


cdef inline int _nm_hexdigit(const unsigned char* p, Py_ssize_t a, Py_ssize_t b, int* out) noexcept nogil:
    # one hex digit (NMEA 4.10 System ID / Signal ID); -1 when empty
    cdef unsigned char c
    if a >= b:
        out[0] = -1
        return 0
    if b - a != 1:
        return -1
    c = p[a]
    if 48 <= c <= 57:
        out[0] = c - 48
    elif 65 <= c <= 70:
        out[0] = c - 55
    elif 97 <= c <= 102:
        out[0] = c - 87
    else:
        return -1
    return 0


cdef inline int _nm_hexval(unsigned char c) noexcept nogil:
    if 48 <= c <= 57:
        return c - 48
    if 65 <= c <= 70:
        return c - 55
    if 97 <= c <= 102:
        return c - 87
    return -1


cdef inline object _nm_char(const unsigned char* p, Py_ssize_t a, Py_ssize_t b):
    # a one-letter field as a shared str; None when longer than one letter (malformed)
    if a >= b:
        return ""
    if b - a != 1:
        return None
    return _NM_CHARS[p[a]]


cdef inline int _nm_yn(const unsigned char* p, Py_ssize_t a, Py_ssize_t b, int* out) noexcept nogil:
    # Y -> 1, N -> 0, empty -> -1
    if a >= b:
        out[0] = -1
        return 0
    if b - a != 1:
        return -1
    if p[a] == 89:
        out[0] = 1
    elif p[a] == 78:
        out[0] = 0
    else:
        return -1
    return 0


cdef inline str _nm_str(const unsigned char* p, Py_ssize_t a, Py_ssize_t b):
    if a >= b:
        return ""
    return PyUnicode_DecodeLatin1(<const char*>p + a, b - a, NULL)


cdef str _T_GN = "GN", _T_GP = "GP", _T_GB = "GB", _T_BD = "BD", _T_GL = "GL", _T_GA = "GA", _T_GQ = "GQ"
cdef str _T_GI = "GI", _T_CC = "CC"


cdef inline str _nm_talker(const unsigned char* p):
    cdef unsigned char a = p[0], b = p[1]
    if a == 71:   # G
        if b == 78:
            return _T_GN
        if b == 80:
            return _T_GP
        if b == 66:
            return _T_GB
        if b == 76:
            return _T_GL
        if b == 65:
            return _T_GA
        if b == 81:
            return _T_GQ
        if b == 73:
            return _T_GI
    elif a == 66 and b == 68:
        return _T_BD
    elif a == 67 and b == 67:
        return _T_CC
    return None


# ---------------------------------------------------------------------------------------------
# Typed messages

cdef str _nm_repr(object m):
    return "%s(%s)" % (type(m).__name__, ", ".join(["%s=%r" % (f, getattr(m, f)) for f in m.FIELDS]))


cdef bint _nm_same(object a, object b):
    if type(a) is float and type(b) is float and isnan(<double>a) and isnan(<double>b):
        return True
    return a == b


cdef object _nm_eq(object a, object b):
    # equal when the sentence kind and every field match (NaN equals NaN): compiled and twin
    # messages compare equal to each other
    if type(a).__name__ != type(b).__name__ or getattr(b, "FIELDS", None) != a.FIELDS:
        return NotImplemented
    for f in a.FIELDS:
        if not _nm_same(getattr(a, f), getattr(b, f)):
            return False
    return True


@cython.freelist(64)
@cython.no_gc
cdef class GGA:
    """Global positioning system fix data. time_of_day_ns: ns since midnight UTC (-1 when empty);
    lat/lon: signed degrees; quality: 0 none, 1 GNSS, 2 DGNSS, 4 RTK fixed, 5 RTK float, 6 dead
    reckoning (-1 empty); alt_m: above mean sea level; geoid_sep_m: geoid above the ellipsoid."""
    FORMATTER = "GGA"
    FIELDS = ("talker", "time_of_day_ns", "lat", "lon", "quality", "sats_used", "hdop", "alt_m",
              "geoid_sep_m", "dgps_age_s", "dgps_station")

    def __repr__(self):
        return _nm_repr(self)

    def __eq__(self, other):
        return _nm_eq(self, other)


@cython.freelist(64)
@cython.no_gc
cdef class RMC:
    """Recommended minimum data. status: "A" valid / "V" warning; speed in knots; course over ground
    true; year/month/day 0 when empty; mag_var_deg east positive; mode: A D E F M N P R S ("" before
    NMEA 2.3); nav_status (NMEA 4.10): S C U V."""
    FORMATTER = "RMC"
    FIELDS = ("talker", "time_of_day_ns", "status", "lat", "lon", "speed_knots", "course_deg", "year",
              "month", "day", "mag_var_deg", "mode", "nav_status")

    def __repr__(self):
        return _nm_repr(self)

    def __eq__(self, other):
        return _nm_eq(self, other)


@cython.freelist(64)
@cython.no_gc
cdef class GSA:
    """DOP and active satellites. selection: "A"/"M"; fix_type: 1 none, 2 2D, 3 3D; svids: the ids
    used; system_id (NMEA 4.10): 1 GPS, 2 GLONASS, 3 Galileo, 4 BDS, 5 QZSS, 6 NavIC, -1 absent."""
    FORMATTER = "GSA"
    FIELDS = ("talker", "selection", "fix_type", "svids", "pdop", "hdop", "vdop", "system_id")

    def __repr__(self):
        return _nm_repr(self)

    def __eq__(self, other):
        return _nm_eq(self, other)


@cython.freelist(64)
@cython.no_gc
cdef class GSV:
    """Satellites in view, one sentence of `total`. satellites: ((svid, elev_deg, az_deg, snr_dbhz),
    ...) with -1 for empty values; signal_id (NMEA 4.10): hex digit, -1 absent."""
    FORMATTER = "GSV"
    FIELDS = ("talker", "total", "number", "sats_in_view", "satellites", "signal_id")

    @property
    def satellites(self):
        cdef int i
        cdef tuple t = PyTuple_New(self._nsats)
        cdef object item
        for i in range(self._nsats):
            item = (self._svid[i], self._elev[i], self._az[i], self._snr[i])
            Py_INCREF(item)
            PyTuple_SET_ITEM(t, i, item)
        return t

    def __repr__(self):
        return _nm_repr(self)

    def __eq__(self, other):
        return _nm_eq(self, other)


@cython.freelist(16)
@cython.no_gc
cdef class GLL:
    """Geographic position. status "A"/"V"; mode as in RMC."""
    FORMATTER = "GLL"
    FIELDS = ("talker", "lat", "lon", "time_of_day_ns", "status", "mode")

    def __repr__(self):
        return _nm_repr(self)

    def __eq__(self, other):
        return _nm_eq(self, other)


@cython.freelist(16)
@cython.no_gc
cdef class VTG:
    """Course and speed over ground: true and magnetic course, knots and km/h."""
    FORMATTER = "VTG"
    FIELDS = ("talker", "course_deg", "course_mag_deg", "speed_knots", "speed_kmh", "mode")

    def __repr__(self):
        return _nm_repr(self)

    def __eq__(self, other):
        return _nm_eq(self, other)


@cython.freelist(16)
@cython.no_gc
cdef class ZDA:
    """Time and date (UTC); local zone hours/minutes 0 when empty; day/month/year 0 when empty."""
    FORMATTER = "ZDA"
    FIELDS = ("talker", "time_of_day_ns", "day", "month", "year", "zone_hours", "zone_minutes")

    def __repr__(self):
        return _nm_repr(self)

    def __eq__(self, other):
        return _nm_eq(self, other)


@cython.freelist(16)
@cython.no_gc
cdef class GST:
    """Pseudorange error statistics: RMS, error ellipse (m, deg from true north), 1-sigma errors."""
    FORMATTER = "GST"
    FIELDS = ("talker", "time_of_day_ns", "rms", "sd_major_m", "sd_minor_m", "orientation_deg",
              "sd_lat_m", "sd_lon_m", "sd_alt_m")

    def __repr__(self):
        return _nm_repr(self)

    def __eq__(self, other):
        return _nm_eq(self, other)


@cython.freelist(16)
@cython.no_gc
cdef class GNS:
    """GNSS fix data: mode holds one letter per constellation (GPS, GLONASS, Galileo, BDS, ...)."""
    FORMATTER = "GNS"
    FIELDS = ("talker", "time_of_day_ns", "lat", "lon", "mode", "sats_used", "hdop", "alt_m",
              "geoid_sep_m", "dgps_age_s", "dgps_station", "nav_status")

    def __repr__(self):
        return _nm_repr(self)

    def __eq__(self, other):
        return _nm_eq(self, other)


@cython.freelist(8)
@cython.no_gc
cdef class TXT:
    """Receiver text (antenna status and the like). text is latin-1 decoded, so no byte is lost."""
    FORMATTER = "TXT"
    FIELDS = ("talker", "total", "number", "text_id", "text")

    def __repr__(self):
        return _nm_repr(self)

    def __eq__(self, other):
        return _nm_eq(self, other)


@cython.freelist(8)
@cython.no_gc
cdef class TXR:
    """RDSS short message received (protocol 2.1): kind 1 normal, 2 express, 3 broadcast, 4/5 query;
    encoding 0 GB2312, 1 code, 2 mixed; content: the bytes as sent (hex digits, or raw GB2312)."""
    FORMATTER = "TXR"
    FIELDS = ("talker", "kind", "sender", "encoding", "send_time", "content")

    def __repr__(self):
        return _nm_repr(self)

    def __eq__(self, other):
        return _nm_eq(self, other)


@cython.freelist(8)
@cython.no_gc
cdef class FKI:
    """RDSS feedback to a command. form "2.1": `$BDFKI,cmd,exec,interval_ok,suppression,wait mmss`;
    form "bds3": `$BDFKI,hhmmss,cmd,exec,reason,remaining s`. Absent ints are -1."""
    FORMATTER = "FKI"
    FIELDS = ("talker", "form", "time_of_day_ns", "command", "executed", "interval_ok", "suppression",
              "reason", "wait_s")

    def __repr__(self):
        return _nm_repr(self)

    def __eq__(self, other):
        return _nm_eq(self, other)


@cython.freelist(4)
@cython.no_gc
cdef class ICI:
    """RDSS card information (protocol 2.1): card, serial, broadcast id, user class, service
    interval (s), communication level, encrypted (E) or not (N), subordinate users."""
    FORMATTER = "ICI"
    FIELDS = ("talker", "card_id", "serial", "broadcast_id", "user_class", "interval_s", "level",
              "encrypted", "subordinates")

    def __repr__(self):
        return _nm_repr(self)

    def __eq__(self, other):
        return _nm_eq(self, other)


@cython.freelist(4)
@cython.no_gc
cdef class ICP:
    """RDSS card information (BDS-3 terminals), in the same field order as ICI."""
    FORMATTER = "ICP"
    FIELDS = ("talker", "card_id", "serial", "broadcast_id", "user_class", "interval_s", "level",
              "encrypted", "subordinates")

    def __repr__(self):
        return _nm_repr(self)

    def __eq__(self, other):
        return _nm_eq(self, other)


@cython.freelist(8)
@cython.no_gc
cdef class TCI:
    """RDSS short message received (BDS-3): sender, recipient, frequency point, send time, encoding,
    acknowledgement flag, content bytes as sent."""
    FORMATTER = "TCI"
    FIELDS = ("talker", "sender", "recipient", "freq_point", "send_time", "encoding", "ack", "content")

    def __repr__(self):
        return _nm_repr(self)

    def __eq__(self, other):
        return _nm_eq(self, other)


@cython.freelist(4)
@cython.no_gc
cdef class PWI:
    """RDSS beam status (BDS-3, every second): `$BDPWI,time,n,(beam,power)*n,m,(beam,power)*m` ->
    rdss2 and s2c as ((beam, power), ...)."""
    FORMATTER = "PWI"
    FIELDS = ("talker", "time_of_day_ns", "rdss2", "s2c")

    def __repr__(self):
        return _nm_repr(self)

    def __eq__(self, other):
        return _nm_eq(self, other)


@cython.freelist(16)
@cython.no_gc
cdef class RawSentence:
    """Any sentence without a typed decoder: address (`GPXTE`, `PUBX`, `PCAS03`) and its fields
    (latin-1 strings). talker is the first two letters of a 5-letter non-proprietary address, else ""."""
    FORMATTER = ""
    FIELDS = ("talker", "address", "fields")

    def __repr__(self):
        return _nm_repr(self)

    def __eq__(self, other):
        return _nm_eq(self, other)


# ---------------------------------------------------------------------------------------------
# Typed decoders: fields fs[k]..fe[k] (padded with empty fields), nf = number of fields, bend = end
# of the data part (the '*' or the terminator). Return the message, or None when a field is malformed.

cdef object _nm_gga(const unsigned char* p, Py_ssize_t* fs, Py_ssize_t* fe, str talker):
    cdef GGA m = GGA.__new__(GGA)
    m.talker = talker
    if (_nm_time(p, fs[0], fe[0], &m.time_of_day_ns) < 0
            or _nm_latlon(p, fs[1], fe[1], fs[2], fe[2], True, &m.lat) < 0
            or _nm_latlon(p, fs[3], fe[3], fs[4], fe[4], False, &m.lon) < 0
            or _nm_int(p, fs[5], fe[5], -1, &m.quality) < 0
            or _nm_int(p, fs[6], fe[6], -1, &m.sats_used) < 0
            or _nm_dec(p, fs[7], fe[7], &m.hdop) < 0
            or _nm_dec(p, fs[8], fe[8], &m.alt_m) < 0
            or _nm_dec(p, fs[10], fe[10], &m.geoid_sep_m) < 0
            or _nm_dec(p, fs[12], fe[12], &m.dgps_age_s) < 0
            or _nm_int(p, fs[13], fe[13], -1, &m.dgps_station) < 0):
        return None
    return m


cdef object _nm_rmc(const unsigned char* p, Py_ssize_t* fs, Py_ssize_t* fe, str talker):
    cdef RMC m = RMC.__new__(RMC)
    cdef object status, mode, nav, ew
    m.talker = talker
    status = _nm_char(p, fs[1], fe[1])
    mode = _nm_char(p, fs[11], fe[11])
    nav = _nm_char(p, fs[12], fe[12])
    ew = _nm_char(p, fs[10], fe[10])
    if status is None or mode is None or nav is None or ew is None:
        return None
    m.status = <str>status
    m.mode = <str>mode
    m.nav_status = <str>nav
    if (_nm_time(p, fs[0], fe[0], &m.time_of_day_ns) < 0
            or _nm_latlon(p, fs[2], fe[2], fs[3], fe[3], True, &m.lat) < 0
            or _nm_latlon(p, fs[4], fe[4], fs[5], fe[5], False, &m.lon) < 0
            or _nm_dec(p, fs[6], fe[6], &m.speed_knots) < 0
            or _nm_dec(p, fs[7], fe[7], &m.course_deg) < 0
            or _nm_date(p, fs[8], fe[8], &m.year, &m.month, &m.day) < 0
            or _nm_dec(p, fs[9], fe[9], &m.mag_var_deg) < 0):
        return None
    if ew == "W":
        m.mag_var_deg = -m.mag_var_deg
    elif ew != "E" and ew != "":
        return None
    return m


cdef object _nm_gsa(const unsigned char* p, Py_ssize_t* fs, Py_ssize_t* fe, int nf, Py_ssize_t bend, str talker):
    # Standard layout: mode, fix, 12 ids, PDOP, HDOP, VDOP[, system id]. Receivers that list more
    # than 12 ids put the DOPs last: then a System ID is present when the last field has no '.'.
    cdef GSA m = GSA.__new__(GSA)
    cdef object sel = _nm_char(p, fs[0], fe[0])
    cdef int nsv = 12, dop, i, sv, k = 0
    cdef bint has_sys
    cdef list ids
    cdef Py_ssize_t j
    if sel is None:
        return None
    m.talker = talker
    m.selection = <str>sel
    if nf > 18:
        has_sys = True
        for j in range(fs[nf - 1], fe[nf - 1]):
            if p[j] == 46:
                has_sys = False
        nsv = nf - 5 - (1 if has_sys else 0)
    else:
        has_sys = nf >= 18
    dop = 2 + nsv
    if (_nm_int(p, fs[1], fe[1], -1, &m.fix_type) < 0
            or _nm_dec(p, fs[dop], fe[dop], &m.pdop) < 0
            or _nm_dec(p, fs[dop + 1], fe[dop + 1], &m.hdop) < 0
            or _nm_dec(p, fs[dop + 2], fe[dop + 2], &m.vdop) < 0):
        return None
    if has_sys:
        if _nm_hexdigit(p, fs[dop + 3], fe[dop + 3], &m.system_id) < 0:
            return None
    else:
        m.system_id = -1
    ids = []
    for i in range(2, 2 + nsv):
        if fs[i] < fe[i]:
            if _nm_int(p, fs[i], fe[i], -1, &sv) < 0 or sv < 0:
                return None
            ids.append(sv)
    m.svids = tuple(ids)
    return m


cdef object _nm_gsv(const unsigned char* p, Py_ssize_t* fs, Py_ssize_t* fe, int nf, str talker):
    # total, number, in view, then groups of (svid, elevation, azimuth, SNR); a field left over
    # after the groups is the NMEA 4.10 Signal ID. Groups left entirely empty are padding.
    cdef GSV m = GSV.__new__(GSV)
    cdef int rest = nf - 3 if nf > 3 else 0
    cdef int ngroups = rest // 4, g, k, n = 0
    m.talker = talker
    if (_nm_int(p, fs[0], fe[0], -1, &m.total) < 0
            or _nm_int(p, fs[1], fe[1], -1, &m.number) < 0
            or _nm_int(p, fs[2], fe[2], -1, &m.sats_in_view) < 0):
        return None
    if rest % 4 == 1:
        if _nm_hexdigit(p, fs[nf - 1], fe[nf - 1], &m.signal_id) < 0:
            return None
    elif rest % 4 == 0:
        m.signal_id = -1
    else:
        return None
    if ngroups > NM_GSV_MAX_SATS:
        return None
    for g in range(ngroups):
        k = 3 + 4 * g
        if fs[k] >= fe[k]:
            if fs[k + 1] < fe[k + 1] or fs[k + 2] < fe[k + 2] or fs[k + 3] < fe[k + 3]:
                return None
            continue
        if (_nm_int(p, fs[k], fe[k], -1, &m._svid[n]) < 0 or m._svid[n] < 0
                or _nm_int(p, fs[k + 1], fe[k + 1], -1, &m._elev[n]) < 0
                or _nm_int(p, fs[k + 2], fe[k + 2], -1, &m._az[n]) < 0
                or _nm_int(p, fs[k + 3], fe[k + 3], -1, &m._snr[n]) < 0):
            return None
        n += 1
    m._nsats = n
    return m


cdef object _nm_gll(const unsigned char* p, Py_ssize_t* fs, Py_ssize_t* fe, str talker):
    cdef GLL m = GLL.__new__(GLL)
    cdef object status = _nm_char(p, fs[5], fe[5]), mode = _nm_char(p, fs[6], fe[6])
    if status is None or mode is None:
        return None
    m.talker = talker
    m.status = <str>status
    m.mode = <str>mode
    if (_nm_latlon(p, fs[0], fe[0], fs[1], fe[1], True, &m.lat) < 0
            or _nm_latlon(p, fs[2], fe[2], fs[3], fe[3], False, &m.lon) < 0
            or _nm_time(p, fs[4], fe[4], &m.time_of_day_ns) < 0):
        return None
    return m


cdef object _nm_vtg(const unsigned char* p, Py_ssize_t* fs, Py_ssize_t* fe, str talker):
    # course,T,course,M,knots,N,km/h,K[,mode]; the unit letters are not checked (old receivers
    # leave them empty)
    cdef VTG m = VTG.__new__(VTG)
    cdef object mode = _nm_char(p, fs[8], fe[8])
    if mode is None:
        return None
    m.talker = talker
    m.mode = <str>mode
    if (_nm_dec(p, fs[0], fe[0], &m.course_deg) < 0
            or _nm_dec(p, fs[2], fe[2], &m.course_mag_deg) < 0
            or _nm_dec(p, fs[4], fe[4], &m.speed_knots) < 0
            or _nm_dec(p, fs[6], fe[6], &m.speed_kmh) < 0):
        return None
    return m


cdef object _nm_zda(const unsigned char* p, Py_ssize_t* fs, Py_ssize_t* fe, str talker):
    cdef ZDA m = ZDA.__new__(ZDA)
    m.talker = talker
    if (_nm_time(p, fs[0], fe[0], &m.time_of_day_ns) < 0
            or _nm_int(p, fs[1], fe[1], 0, &m.day) < 0
            or _nm_int(p, fs[2], fe[2], 0, &m.month) < 0
            or _nm_int(p, fs[3], fe[3], 0, &m.year) < 0
            or _nm_int(p, fs[4], fe[4], 0, &m.zone_hours) < 0
            or _nm_int(p, fs[5], fe[5], 0, &m.zone_minutes) < 0):
        return None
    if m.day < 0 or m.day > 31 or m.month < 0 or m.month > 12 or m.year < 0:
        return None
    return m


cdef object _nm_gst(const unsigned char* p, Py_ssize_t* fs, Py_ssize_t* fe, str talker):
    cdef GST m = GST.__new__(GST)
    m.talker = talker
    if (_nm_time(p, fs[0], fe[0], &m.time_of_day_ns) < 0
            or _nm_dec(p, fs[1], fe[1], &m.rms) < 0
            or _nm_dec(p, fs[2], fe[2], &m.sd_major_m) < 0
            or _nm_dec(p, fs[3], fe[3], &m.sd_minor_m) < 0
            or _nm_dec(p, fs[4], fe[4], &m.orientation_deg) < 0
            or _nm_dec(p, fs[5], fe[5], &m.sd_lat_m) < 0
            or _nm_dec(p, fs[6], fe[6], &m.sd_lon_m) < 0
            or _nm_dec(p, fs[7], fe[7], &m.sd_alt_m) < 0):
        return None
    return m


cdef object _nm_gns(const unsigned char* p, Py_ssize_t* fs, Py_ssize_t* fe, str talker):
    cdef GNS m = GNS.__new__(GNS)
    cdef object nav = _nm_char(p, fs[12], fe[12])
    if nav is None:
        return None
    m.talker = talker
    m.nav_status = <str>nav
    m.mode = _nm_str(p, fs[5], fe[5])
    if (_nm_time(p, fs[0], fe[0], &m.time_of_day_ns) < 0
            or _nm_latlon(p, fs[1], fe[1], fs[2], fe[2], True, &m.lat) < 0
            or _nm_latlon(p, fs[3], fe[3], fs[4], fe[4], False, &m.lon) < 0
            or _nm_int(p, fs[6], fe[6], -1, &m.sats_used) < 0
            or _nm_dec(p, fs[7], fe[7], &m.hdop) < 0
            or _nm_dec(p, fs[8], fe[8], &m.alt_m) < 0
            or _nm_dec(p, fs[9], fe[9], &m.geoid_sep_m) < 0
            or _nm_dec(p, fs[10], fe[10], &m.dgps_age_s) < 0
            or _nm_int(p, fs[11], fe[11], -1, &m.dgps_station) < 0):
        return None
    return m


cdef object _nm_txt(const unsigned char* p, Py_ssize_t* fs, Py_ssize_t* fe, int nf, Py_ssize_t bend, str talker):
    cdef TXT m = TXT.__new__(TXT)
    m.talker = talker
    if (_nm_int(p, fs[0], fe[0], -1, &m.total) < 0
            or _nm_int(p, fs[1], fe[1], -1, &m.number) < 0
            or _nm_int(p, fs[2], fe[2], -1, &m.text_id) < 0):
        return None
    m.text = _nm_str(p, fs[3], bend) if nf > 3 else ""
    return m


cdef object _nm_txr(const unsigned char* p, Py_ssize_t* fs, Py_ssize_t* fe, int nf, Py_ssize_t bend, str talker):
    cdef TXR m = TXR.__new__(TXR)
    m.talker = talker
    if (_nm_int(p, fs[0], fe[0], -1, &m.kind) < 0
            or _nm_int(p, fs[2], fe[2], -1, &m.encoding) < 0):
        return None
    m.sender = _nm_str(p, fs[1], fe[1])
    m.send_time = _nm_str(p, fs[3], fe[3])
    if nf > 4:
        m.content = PyBytes_FromStringAndSize(<const char*>p + fs[4], bend - fs[4])
    else:
        m.content = b""
    return m


cdef object _nm_fki(const unsigned char* p, Py_ssize_t* fs, Py_ssize_t* fe, str talker):
    # The BDS-3 form starts with a time (digits); the protocol 2.1 form with the command name.
    cdef FKI m = FKI.__new__(FKI)
    cdef int yn, k = 0
    m.talker = talker
    m.interval_ok = -1
    m.suppression = -1
    m.reason = -1
    m.wait_s = -1
    if fs[0] < fe[0] and <unsigned int>(p[fs[0]] - 48) <= 9:
        m.form = "bds3"
        if _nm_time(p, fs[0], fe[0], &m.time_of_day_ns) < 0:
            return None
        k = 1
    else:
        m.form = "2.1"
        m.time_of_day_ns = -1
    m.command = _nm_str(p, fs[k], fe[k])
    if _nm_yn(p, fs[k + 1], fe[k + 1], &yn) < 0 or yn < 0:
        return None
    m.executed = yn == 1
    if k == 1:
        if (_nm_int(p, fs[3], fe[3], -1, &m.reason) < 0
                or _nm_int(p, fs[4], fe[4], -1, &m.wait_s) < 0):
            return None
        return m
    if (_nm_yn(p, fs[2], fe[2], &m.interval_ok) < 0
            or _nm_int(p, fs[3], fe[3], -1, &m.suppression) < 0):
        return None
    # the wait is mmss
    if fs[4] < fe[4]:
        if fe[4] - fs[4] != 4 or _nm_int(p, fs[4], fe[4], -1, &yn) < 0 or yn < 0 or yn % 100 > 59:
            return None
        m.wait_s = (yn // 100) * 60 + yn % 100
    return m


cdef int _nm_card(const unsigned char* p, Py_ssize_t* fs, Py_ssize_t* fe, object m) except -1:
    # ICI and ICP share the layout; 1 = malformed
    cdef int user_class, interval_s, level, subordinates
    cdef object enc = _nm_char(p, fs[6], fe[6])
    if (enc is None or (enc != "E" and enc != "N" and enc != "")
            or _nm_int(p, fs[3], fe[3], -1, &user_class) < 0
            or _nm_int(p, fs[4], fe[4], -1, &interval_s) < 0
            or _nm_int(p, fs[5], fe[5], -1, &level) < 0
            or _nm_int(p, fs[7], fe[7], -1, &subordinates) < 0):
        return 1
    if type(m) is ICI:
        (<ICI>m).card_id = _nm_str(p, fs[0], fe[0])
        (<ICI>m).serial = _nm_str(p, fs[1], fe[1])
        (<ICI>m).broadcast_id = _nm_str(p, fs[2], fe[2])
        (<ICI>m).user_class = user_class
        (<ICI>m).interval_s = interval_s
        (<ICI>m).level = level
        (<ICI>m).encrypted = enc == "E"
        (<ICI>m).subordinates = subordinates
    else:
        (<ICP>m).card_id = _nm_str(p, fs[0], fe[0])
        (<ICP>m).serial = _nm_str(p, fs[1], fe[1])
        (<ICP>m).broadcast_id = _nm_str(p, fs[2], fe[2])
        (<ICP>m).user_class = user_class
        (<ICP>m).interval_s = interval_s
        (<ICP>m).level = level
        (<ICP>m).encrypted = enc == "E"
        (<ICP>m).subordinates = subordinates
    return 0


cdef object _nm_tci(const unsigned char* p, Py_ssize_t* fs, Py_ssize_t* fe, int nf, Py_ssize_t bend, str talker):
    cdef TCI m = TCI.__new__(TCI)
    m.talker = talker
    if (_nm_int(p, fs[2], fe[2], -1, &m.freq_point) < 0
            or _nm_int(p, fs[4], fe[4], -1, &m.encoding) < 0
            or _nm_int(p, fs[5], fe[5], -1, &m.ack) < 0):
        return None
    m.sender = _nm_str(p, fs[0], fe[0])
    m.recipient = _nm_str(p, fs[1], fe[1])
    m.send_time = _nm_str(p, fs[3], fe[3])
    if nf > 6:
        m.content = PyBytes_FromStringAndSize(<const char*>p + fs[6], bend - fs[6])
    else:
        m.content = b""
    return m


cdef object _nm_beams(const unsigned char* p, Py_ssize_t* fs, Py_ssize_t* fe, int nf, int* k):
    # a count, then that many (beam, power) pairs; an absent count means none. None = malformed.
    cdef int count, beam, power, i
    cdef list beams = []
    if k[0] >= nf:
        return ()
    if _nm_int(p, fs[k[0]], fe[k[0]], 0, &count) < 0 or count < 0 or k[0] + 1 + 2 * count > nf:
        return None
    k[0] += 1
    for i in range(count):
        if (_nm_int(p, fs[k[0]], fe[k[0]], -1, &beam) < 0
                or _nm_int(p, fs[k[0] + 1], fe[k[0] + 1], -1, &power) < 0):
            return None
        beams.append((beam, power))
        k[0] += 2
    return tuple(beams)


cdef object _nm_pwi(const unsigned char* p, Py_ssize_t* fs, Py_ssize_t* fe, int nf, str talker):
    cdef PWI m = PWI.__new__(PWI)
    cdef int k = 1
    cdef object rdss2, s2c
    m.talker = talker
    if _nm_time(p, fs[0], fe[0], &m.time_of_day_ns) < 0:
        return None
    rdss2 = _nm_beams(p, fs, fe, nf, &k)
    if rdss2 is None:
        return None
    s2c = _nm_beams(p, fs, fe, nf, &k)
    if s2c is None or k < nf:
        return None
    m.rdss2 = <tuple>rdss2
    m.s2c = <tuple>s2c
    return m


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
                 require_checksum=False):
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
        cdef Py_ssize_t pos = 0, s, i, stop, limit, star, flen
        cdef unsigned int x
        cdef unsigned char c, k
        cdef int ncommas, ended
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


# ---------------------------------------------------------------------------------------------
# Epoch assembly: the sentences of one fix time -> one Epoch (twin: drivers/beidou/nmea_py.py).
#
# Boundaries: a GGA/RMC/GLL/GNS whose time differs from the epoch's; a sentence that appears once
# per epoch (GGA RMC GLL GNS VTG ZDA GST per talker, each GSV part, each constellation's GSA)
# arriving a second time; and, once learned, the
# sentence the receiver ends its epochs with (seen last before two boundaries in a row), so an
# epoch is complete without waiting for the next one. `flush()` closes the open epoch.
# Date: RMC's, else ZDA's (moved across midnight when ZDA's time is on the other side), else the
# previous epoch's, plus a day when the time of day went back by more than 12 hours.

from libc.math cimport rint

cdef enum:
    NM_SYS_GPS = 0
    NM_SYS_GLO = 1
    NM_SYS_GAL = 2
    NM_SYS_BDS = 3
    NM_SYS_QZSS = 4
    NM_SYS_MIXED = -2      # a GN talker without System ID: satellites classified by number

cdef enum:
    NM_K_GGA = 1
    NM_K_RMC = 2
    NM_K_GSA = 3
    NM_K_GSV = 4
    NM_K_GLL = 5
    NM_K_VTG = 6
    NM_K_ZDA = 7
    NM_K_GST = 8
    NM_K_GNS = 9

cdef long long NM_NO_DAYS = -(1LL << 40)
cdef long long NM_DAY_NS = 86400000000000LL
cdef long long NM_HALF_DAY_NS = 43200000000000LL

cdef tuple _NM_SYSTEMS = ("GPS", "GLO", "GAL", "BDS", "QZSS")
# payload order (DESIGN section 3): BDS first
cdef int _NM_PAYLOAD_ORDER[5]
_NM_PAYLOAD_ORDER[:] = [NM_SYS_BDS, NM_SYS_GPS, NM_SYS_GLO, NM_SYS_GAL, NM_SYS_QZSS]


cdef inline long long _nm_days_from_civil(long long y, long long m, long long d) noexcept nogil:
    # days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm), for y >= 1
    cdef long long era, yoe, doy, doe
    if m <= 2:
        y -= 1
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


cdef inline int _nm_system_of_talker(str talker):
    cdef Py_UCS4 a = talker[0], b = talker[1]
    if a == u'G':
        if b == u'P':
            return NM_SYS_GPS
        if b == u'L':
            return NM_SYS_GLO
        if b == u'A':
            return NM_SYS_GAL
        if b == u'B':
            return NM_SYS_BDS
        if b == u'Q':
            return NM_SYS_QZSS
        if b == u'N':
            return NM_SYS_MIXED
        return -1
    if a == u'B' and b == u'D':
        return NM_SYS_BDS
    return -1


cdef inline int _nm_system_of_id(int system_id) noexcept nogil:
    # NMEA 4.10 System ID -> index; NavIC (6) and unknown ids are not counted
    if 1 <= system_id <= 5:
        return system_id - 1
    return -1


cdef inline int _nm_classify(int prn) noexcept nogil:
    # a GN sentence without System ID: the NMEA 4.0 / vendor number ranges
    if 1 <= prn <= 32:
        return NM_SYS_GPS
    if 65 <= prn <= 96:
        return NM_SYS_GLO
    if 193 <= prn <= 200:
        return NM_SYS_QZSS
    if 201 <= prn <= 263 or 401 <= prn <= 463:
        return NM_SYS_BDS
    if 301 <= prn <= 336:
        return NM_SYS_GAL
    return -1


cdef inline int _nm_svid(int system, int prn) noexcept nogil:
    # the constellation's own satellite number from an NMEA id; -1 when outside it (SBAS and such)
    if system == NM_SYS_GPS:
        return prn if 1 <= prn <= 32 else -1
    if system == NM_SYS_GLO:
        if 65 <= prn <= 96:
            return prn - 64
        return prn if 1 <= prn <= 32 else -1
    if system == NM_SYS_GAL:
        if 301 <= prn <= 336:
            return prn - 300
        return prn if 1 <= prn <= 36 else -1
    if system == NM_SYS_BDS:
        if 201 <= prn <= 263:
            return prn - 200
        if 401 <= prn <= 463:
            return prn - 400
        return prn if 1 <= prn <= 63 else -1
    if system == NM_SYS_QZSS:
        if 193 <= prn <= 202:
            return prn - 192
        return prn if 1 <= prn <= 10 else -1
    return -1


cdef inline int _nm_mode_quality(str mode):
    # RMC/GLL/GNS mode letter -> GGA quality
    if not mode:
        return -1
    cdef Py_UCS4 c = mode[0]
    if c == u'A':
        return 1
    if c == u'D':
        return 2
    if c == u'R':
        return 4
    if c == u'F':
        return 5
    if c == u'E':
        return 6
    if c == u'M':
        return 7
    if c == u'S':
        return 8
    if c == u'N':
        return 0
    return -1


cdef inline long long _nm_key(int kind, str talker, int sub):
    # identifies a sentence's place in a receiver's cycle
    return kind | (<long long>talker[0] << 8) | (<long long>talker[1] << 16) | (<long long>sub << 24)


cdef inline object _nm_opt(double v):
    return None if isnan(v) else v


cdef inline object _nm_round(double v, double scale):
    # positions to 1e-9 degree (0.1 mm), speeds to 1e-4 m/s: finer than any NMEA field, and the
    # short decimal form keeps JSON and msgpack output small
    return None if isnan(v) else rint(v * scale) / scale


cdef inline int _nm_popcount(unsigned long long x) noexcept nogil:
    cdef int n = 0
    while x:
        x &= x - 1
        n += 1
    return n


@cython.freelist(8)
cdef class Epoch:
    """One fix time's worth of sentences, merged. Positions in degrees, speed in m/s; NaN or -1
    where no sentence said. `fix_payload()` is the `gnss/<id>/fix` payload; `satellites()` the sky."""

    @property
    def sats_used(self):
        """Satellites used in the solution per constellation (from GSA System IDs / talkers)."""
        cdef int i
        return {_NM_SYSTEMS[_NM_PAYLOAD_ORDER[i]]: _nm_popcount(self._used[_NM_PAYLOAD_ORDER[i]]) for i in range(5)}

    @property
    def sats_view(self):
        """Distinct satellites in view per constellation (from the epoch's GSV sentences)."""
        cdef int i
        return {_NM_SYSTEMS[_NM_PAYLOAD_ORDER[i]]: _nm_popcount(self._view[_NM_PAYLOAD_ORDER[i]]) for i in range(5)}

    @property
    def has_satellites(self):
        return bool(self._gsv)

    def fix_payload(self):
        """The `fix` payload (DESIGN section 3); None for values no sentence gave."""
        return {
            "time_ns": self.time_ns if self.time_ns >= 0 else None,
            "lat": _nm_round(self.lat, 1e9),
            "lon": _nm_round(self.lon, 1e9),
            "alt_m": _nm_opt(self.alt_m),
            "speed_mps": _nm_round(self.speed_mps, 1e4),
            "course_deg": _nm_opt(self.course_deg),
            "quality": self.quality,
            "mode": self.mode,
            "hdop": _nm_opt(self.hdop),
            "pdop": _nm_opt(self.pdop),
            "vdop": _nm_opt(self.vdop),
            "sats_used": self.sats_used,
            "sats_view": self.sats_view,
            "source": "nmea",
        }

    def satellites(self):
        """The sky: [{system, svid, elev, az, snr, used}] keyed by (system, svid), BDS first then GPS
        GLO GAL QZSS, by svid. Across signals: the highest SNR, the first elevation/azimuth given."""
        cdef int elev[5][64]
        cdef int az[5][64]
        cdef int snr[5][64]
        cdef unsigned long long seen[5]
        cdef int i, j, s, system, svid, prn
        cdef GSV g
        cdef list out = []
        for i in range(5):
            seen[i] = 0
        for msg in self._gsv:
            g = <GSV>msg
            system = _nm_system_of_talker(g.talker)
            for j in range(g._nsats):
                prn = g._svid[j]
                s = _nm_classify(prn) if system == NM_SYS_MIXED else system
                if s < 0:
                    continue
                svid = _nm_svid(s, prn)
                if svid < 0 or svid > 63:
                    continue
                if not (seen[s] >> svid) & 1:
                    seen[s] |= 1ULL << svid
                    elev[s][svid] = g._elev[j]
                    az[s][svid] = g._az[j]
                    snr[s][svid] = g._snr[j]
                else:
                    if elev[s][svid] < 0:
                        elev[s][svid] = g._elev[j]
                    if az[s][svid] < 0:
                        az[s][svid] = g._az[j]
                    if g._snr[j] > snr[s][svid]:
                        snr[s][svid] = g._snr[j]
        for i in range(5):
            s = _NM_PAYLOAD_ORDER[i]
            for svid in range(64):
                if (seen[s] >> svid) & 1:
                    out.append({
                        "system": _NM_SYSTEMS[s],
                        "svid": svid,
                        "elev": elev[s][svid] if elev[s][svid] >= 0 else None,
                        "az": az[s][svid] if az[s][svid] >= 0 else None,
                        "snr": snr[s][svid] if snr[s][svid] >= 0 else None,
                        "used": bool((self._used[s] >> svid) & 1),
                    })
        return out

    def __repr__(self):
        return (f"Epoch(time_ns={self.time_ns}, lat={self.lat!r}, lon={self.lon!r}, quality={self.quality}, "
                f"mode={self.mode}, sentences={self.sentences}, no_fix_reason={self.no_fix_reason!r})")


cdef class EpochAssembler:
    """Typed NMEA messages in (from NmeaDecoder), Epochs out: `push(messages)` returns, in stream
    order, each completed Epoch and every message that is not epoch material (TXT, RDSS, raw)."""

    def __init__(self):
        self._cur = None
        self._last_days = NM_NO_DAYS
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
        cdef list out = []
        cdef object t
        cdef Epoch e
        cdef GGA gga
        cdef RMC rmc
        cdef GSA gsa
        cdef GSV gsv
        cdef GLL gll
        cdef VTG vtg
        cdef ZDA zda
        cdef GNS gns
        cdef int s, q, i, svid
        cdef long long key
        for m in messages:
            t = type(m)
            if t is GGA:
                gga = <GGA>m
                self._arrive(gga.time_of_day_ns, _nm_key(NM_K_GGA, gga.talker, 0), True, out)
                self._anchored = 1
                e = self._cur
                if not self._has_gga:
                    self._has_gga = 1
                    self._gga_quality = gga.quality
                    self._gga_sats = gga.sats_used
                    self._gga_hdop = gga.hdop
                    if self._pos_rank < 4 and not isnan(gga.lat) and not isnan(gga.lon):
                        self._pos_rank = 4
                        e.lat = gga.lat
                        e.lon = gga.lon
                    e.alt_m = gga.alt_m
                    e.geoid_sep_m = gga.geoid_sep_m
                self._last_key = _nm_key(NM_K_GGA, gga.talker, 0)
            elif t is RMC:
                rmc = <RMC>m
                self._arrive(rmc.time_of_day_ns, _nm_key(NM_K_RMC, rmc.talker, 0), True, out)
                self._anchored = 1
                e = self._cur
                if self._rmc_valid < 0:
                    self._rmc_valid = 1 if rmc.status == "A" else (0 if rmc.status == "V" else -1)
                    if self._pos_rank < 2 and not isnan(rmc.lat) and not isnan(rmc.lon):
                        self._pos_rank = 2
                        e.lat = rmc.lat
                        e.lon = rmc.lon
                    if self._speed_rank < 2:
                        self._speed_rank = 2
                        e.speed_mps = rmc.speed_knots * (1852.0 / 3600.0)
                        e.course_deg = rmc.course_deg
                    if rmc.year > 0:
                        self._rmc_days = _nm_days_from_civil(rmc.year, rmc.month, rmc.day)
                    if self._mode_quality < 0:
                        self._mode_quality = _nm_mode_quality(rmc.mode)
                self._last_key = _nm_key(NM_K_RMC, rmc.talker, 0)
            elif t is GSA:
                gsa = <GSA>m
                # once per epoch per (talker, system, first id used); a GN GSA without System ID may
                # come several times (one per constellation) and cannot mark a new epoch
                key = _nm_key(NM_K_GSA, gsa.talker, (gsa.system_id + 2)
                              | ((<int>gsa.svids[0] if gsa.svids else 0) << 5))
                self._arrive(-1, key, gsa.system_id >= 0 or gsa.talker != _T_GN, out)
                e = self._cur
                self._gsa_count += 1
                if gsa.fix_type > self._gsa_fix:
                    self._gsa_fix = gsa.fix_type
                if isnan(e.pdop) and isnan(e.hdop) and isnan(e.vdop):
                    e.pdop = gsa.pdop
                    e.hdop = gsa.hdop
                    e.vdop = gsa.vdop
                s = _nm_system_of_id(gsa.system_id) if gsa.system_id >= 0 else _nm_system_of_talker(gsa.talker)
                for prn in gsa.svids:
                    i = _nm_classify(prn) if s == NM_SYS_MIXED else s
                    if i >= 0:
                        svid = _nm_svid(i, prn)
                        if 0 <= svid <= 63:
                            e._used[i] |= 1ULL << svid
                self._last_key = key
            elif t is GSV:
                gsv = <GSV>m
                # each part of each talker's and signal's GSV group comes once per epoch: a receiver
                # that sends its satellites first starts the next epoch with them
                key = _nm_key(NM_K_GSV, gsv.talker, (gsv.signal_id + 2) | (gsv.number << 5)
                              | ((gsv.number == gsv.total) << 14))
                self._arrive(-1, key, True, out)
                e = self._cur
                self._sats_from(gsv, e._view)
                e._gsv.append(gsv)
                self._last_key = key
            elif t is VTG:
                vtg = <VTG>m
                self._arrive(-1, _nm_key(NM_K_VTG, vtg.talker, 0), True, out)
                e = self._cur
                if self._speed_rank < 1:
                    self._speed_rank = 1
                    e.speed_mps = (vtg.speed_knots * (1852.0 / 3600.0) if not isnan(vtg.speed_knots)
                                   else vtg.speed_kmh / 3.6)
                    e.course_deg = vtg.course_deg
                self._last_key = _nm_key(NM_K_VTG, vtg.talker, 0)
            elif t is ZDA:
                zda = <ZDA>m
                self._arrive(-1, _nm_key(NM_K_ZDA, zda.talker, 0), True, out)
                self._anchored = 1
                if zda.year > 0 and zda.month > 0 and zda.day > 0 and self._zda_days == NM_NO_DAYS:
                    self._zda_days = _nm_days_from_civil(zda.year, zda.month, zda.day)
                    self._zda_tod = zda.time_of_day_ns
                self._last_key = _nm_key(NM_K_ZDA, zda.talker, 0)
            elif t is GNS:
                gns = <GNS>m
                self._arrive(gns.time_of_day_ns, _nm_key(NM_K_GNS, gns.talker, 0), True, out)
                self._anchored = 1
                e = self._cur
                if self._pos_rank < 3 and not isnan(gns.lat) and not isnan(gns.lon):
                    self._pos_rank = 3
                    e.lat = gns.lat
                    e.lon = gns.lon
                    if not self._has_gga:
                        e.alt_m = gns.alt_m
                        e.geoid_sep_m = gns.geoid_sep_m
                if self._mode_quality < 0 and gns.mode:
                    q = 0
                    for c in gns.mode:
                        if c != u'N':
                            q = _nm_mode_quality(c)
                            break
                    self._mode_quality = q
                if not self._has_gga:
                    if self._gga_sats < 0:
                        self._gga_sats = gns.sats_used
                    if isnan(self._gga_hdop):
                        self._gga_hdop = gns.hdop
                self._last_key = _nm_key(NM_K_GNS, gns.talker, 0)
            elif t is GLL:
                gll = <GLL>m
                self._arrive(gll.time_of_day_ns, _nm_key(NM_K_GLL, gll.talker, 0), True, out)
                self._anchored = 1
                e = self._cur
                if self._pos_rank < 1 and gll.status != "V" and not isnan(gll.lat) and not isnan(gll.lon):
                    self._pos_rank = 1
                    e.lat = gll.lat
                    e.lon = gll.lon
                if self._mode_quality < 0:
                    self._mode_quality = _nm_mode_quality(gll.mode)
                self._last_key = _nm_key(NM_K_GLL, gll.talker, 0)
            elif t is GST:
                self._arrive(-1, _nm_key(NM_K_GST, (<GST>m).talker, 0), True, out)
                self._last_key = _nm_key(NM_K_GST, (<GST>m).talker, 0)
            else:
                out.append(m)
                continue
            if self._ender != 0 and self._last_key == self._ender and self._cur is not None:
                self._misses = 0
                self._close(out)
        return out

    def flush(self, final=False):
        """Close the open epoch (the receiver went quiet, or with final=True the input ended);
        returns [Epoch] or []. A fragment (only GSA/GSV/VTG/GST, no sentence with a position, time
        or date) is not an epoch: it stays open for the sentences that follow, and the learned end
        of cycle is forgotten, since the receiver sent more after it; at the end it is discarded."""
        cdef list out = []
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

    cdef int _sats_from(self, object msg, unsigned long long* bits) except -1:
        cdef GSV g = <GSV>msg
        cdef int system = _nm_system_of_talker(g.talker), j, s, svid
        for j in range(g._nsats):
            s = _nm_classify(g._svid[j]) if system == NM_SYS_MIXED else system
            if s >= 0:
                svid = _nm_svid(s, g._svid[j])
                if 0 <= svid <= 63:
                    bits[s] |= 1ULL << svid
        return 0

    cdef int _arrive(self, long long tod, long long key, bint once, list out) except -1:
        # a sentence of epoch material is about to be merged: close the current epoch first when
        # this sentence starts the next one
        cdef Epoch e = self._cur
        cdef bint boundary = False
        cdef int i
        if e is not None:
            if tod >= 0 and e.time_of_day_ns >= 0 and tod != e.time_of_day_ns:
                boundary = True
            elif once:
                for i in range(self._nseen):
                    if self._seen[i] == key:
                        boundary = True
                        break
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
            e = Epoch.__new__(Epoch)
            e.time_ns = -1
            e.time_of_day_ns = -1
            e.lat = NAN
            e.lon = NAN
            e.alt_m = NAN
            e.geoid_sep_m = NAN
            e.speed_mps = NAN
            e.course_deg = NAN
            e.hdop = NAN
            e.pdop = NAN
            e.vdop = NAN
            for i in range(NM_N_SYS):
                e._used[i] = 0
                e._view[i] = 0
            e._gsv = []
            self._cur = e
            self._pos_rank = 0
            self._anchored = 0
            self._has_gga = 0
            self._gga_quality = -1
            self._gga_sats = -1
            self._gga_hdop = NAN
            self._rmc_valid = -1
            self._mode_quality = -1
            self._speed_rank = 0
            self._gsa_count = 0
            self._gsa_fix = -1
            self._rmc_days = NM_NO_DAYS
            self._zda_days = NM_NO_DAYS
            self._zda_tod = -1
            self._nseen = 0
        if tod >= 0 and e.time_of_day_ns < 0:
            e.time_of_day_ns = tod
        if once and self._nseen < NM_MAX_SEEN:
            self._seen[self._nseen] = key
            self._nseen += 1
        e.sentences += 1
        return 0

    cdef int _close(self, list out) except -1:
        cdef Epoch e = self._cur
        cdef long long tod, days = NM_NO_DAYS, diff
        cdef int i, used = 0
        self._cur = None
        if e.time_of_day_ns < 0 and self._zda_tod >= 0:
            e.time_of_day_ns = self._zda_tod
        tod = e.time_of_day_ns
        if self._rmc_days != NM_NO_DAYS:
            days = self._rmc_days
        elif self._zda_days != NM_NO_DAYS:
            days = self._zda_days
            if tod >= 0 and self._zda_tod >= 0:
                diff = tod - self._zda_tod
                if diff > NM_HALF_DAY_NS:
                    days -= 1
                elif diff < -NM_HALF_DAY_NS:
                    days += 1
        elif self._last_days != NM_NO_DAYS and tod >= 0:
            days = self._last_days
            if tod < self._last_tod - NM_HALF_DAY_NS:
                days += 1
        if days != NM_NO_DAYS and tod >= 0:
            e.time_ns = days * NM_DAY_NS + tod
            self._last_days = days
            self._last_tod = tod
        # why this is not a fix, if it is not
        if self._rmc_valid == 0:
            e.no_fix_reason = "RMC status V"
        elif self._has_gga and self._gga_quality == 0:
            e.no_fix_reason = "GGA quality 0"
        elif self._gsa_count > 0 and self._gsa_fix == 1:
            e.no_fix_reason = "GSA mode 1"
        elif isnan(e.lat) or isnan(e.lon):
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
                e.mode = 2 if isnan(e.alt_m) else 3
        if isnan(e.hdop):
            e.hdop = self._gga_hdop
        if self._gsa_count > 0:
            for i in range(NM_N_SYS):
                used += _nm_popcount(e._used[i])
            e.sats_used_total = used
        else:
            e.sats_used_total = self._gga_sats if self._gga_sats > 0 else 0
        self.epochs += 1
        out.append(e)
        return 0


# ---------------------------------------------------------------------------------------------
# JSON lines for `tianwang decode` (twin: json_lines in gateway/decode.py, which is the standard
# library's encoder): the same text as json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
# for obj = {"topic": prefix + channel, "device_time_ns": ..., "payload": ...}, with NaN/infinity
# written as null and bytes as hex, one line per publication.

from cpython.conversion cimport PyOS_double_to_string, Py_DTSF_ADD_DOT_0
from cpython.mem cimport PyMem_Malloc, PyMem_Realloc, PyMem_Free
from cpython.unicode cimport PyUnicode_AsUTF8AndSize, PyUnicode_DecodeUTF8
from cpython.dict cimport PyDict_Next
from cpython.long cimport PyLong_AsLongLongAndOverflow
from libc.math cimport fabs, isinf, signbit
from libc.string cimport memcpy

cdef enum:
    NM_JSON_MAX_DEPTH = 500

cdef struct _NmJson:
    char* data
    Py_ssize_t len
    Py_ssize_t cap

cdef const char* _NM_HEX = b"0123456789abcdef"


cdef int _nj_reserve(_NmJson* b, Py_ssize_t extra) except -1:
    cdef Py_ssize_t cap = b.cap
    cdef char* data
    if b.len + extra <= cap:
        return 0
    while cap < b.len + extra:
        cap = cap * 2 if cap else 4096
    data = <char*>PyMem_Realloc(b.data, cap)
    if data == NULL:
        raise MemoryError()
    b.data = data
    b.cap = cap
    return 0


cdef inline int _nj_put(_NmJson* b, const char* s, Py_ssize_t n) except -1:
    if b.len + n > b.cap:
        _nj_reserve(b, n)
    memcpy(b.data + b.len, s, n)
    b.len += n
    return 0


cdef int _nj_chars(_NmJson* b, str s) except -1:
    # the characters of a JSON string, escaped as json does with ensure_ascii=False
    cdef Py_ssize_t n, i
    cdef const char* p = PyUnicode_AsUTF8AndSize(s, &n)
    cdef unsigned char c
    _nj_reserve(b, n)
    for i in range(n):
        c = <unsigned char>p[i]
        if c >= 0x20 and c != 34 and c != 92:
            b.data[b.len] = <char>c
            b.len += 1
            continue
        _nj_reserve(b, 6 + n - i)
        b.data[b.len] = 92
        if c == 34 or c == 92:
            b.data[b.len + 1] = <char>c
            b.len += 2
        elif c == 10:
            b.data[b.len + 1] = 110
            b.len += 2
        elif c == 13:
            b.data[b.len + 1] = 114
            b.len += 2
        elif c == 9:
            b.data[b.len + 1] = 116
            b.len += 2
        elif c == 8:
            b.data[b.len + 1] = 98
            b.len += 2
        elif c == 12:
            b.data[b.len + 1] = 102
            b.len += 2
        else:
            b.data[b.len + 1] = 117
            b.data[b.len + 2] = 48
            b.data[b.len + 3] = 48
            b.data[b.len + 4] = _NM_HEX[c >> 4]
            b.data[b.len + 5] = _NM_HEX[c & 15]
            b.len += 6
    return 0


cdef int _nj_ull(_NmJson* b, unsigned long long v) except -1:
    cdef char tmp[24]
    cdef int k = 24
    if v == 0:
        k -= 1
        tmp[k] = 48
    while v:
        k -= 1
        tmp[k] = <char>(48 + v % 10)
        v //= 10
    return _nj_put(b, tmp + k, 24 - k)


cdef int _nj_float(_NmJson* b, double x) except -1:
    # float.__repr__, fast when the value is a decimal with at most 9 places (what NMEA fields and
    # the rounded positions give): the smallest d with rint(x * 10**d) / 10**d == x names the
    # shortest string that reads back as x; below 1e6 only one such string exists at that d.
    cdef double a = fabs(x), t
    cdef long long k
    cdef unsigned long long whole, frac
    cdef int d, i
    cdef char* s
    cdef char tmp[24]
    if isnan(x) or isinf(x):
        return _nj_put(b, "null", 4)
    if a == 0.0:
        return _nj_put(b, "-0.0", 4) if signbit(x) else _nj_put(b, "0.0", 3)
    if 1e-4 <= a < 1e6:
        for d in range(10):
            t = rint(a * _NM_POW10[d])
            if t / _NM_POW10[d] == a:
                k = <long long>t
                if signbit(x):
                    _nj_put(b, "-", 1)
                whole = <unsigned long long>(k // <long long>_NM_POW10[d])
                frac = <unsigned long long>(k % <long long>_NM_POW10[d])
                _nj_ull(b, whole)
                if d == 0:
                    return _nj_put(b, ".0", 2)
                tmp[0] = 46
                for i in range(d, 0, -1):
                    tmp[i] = <char>(48 + frac % 10)
                    frac //= 10
                return _nj_put(b, tmp, d + 1)
    s = PyOS_double_to_string(x, b'r', 0, Py_DTSF_ADD_DOT_0, NULL)
    try:
        i = 0
        while s[i]:
            i += 1
        _nj_put(b, s, i)
    finally:
        PyMem_Free(s)
    return 0


cdef int _nj_key(_NmJson* b, object key) except -1:
    # json turns these keys into strings; any other key is a TypeError there too
    if key is True:
        return _nj_put(b, "true", 4)
    if key is False:
        return _nj_put(b, "false", 5)
    if key is None:
        return _nj_put(b, "null", 4)
    if isinstance(key, int):
        return _nj_value(b, key, 0)
    if isinstance(key, float):
        if isnan(<double>key) or isinf(<double>key):
            raise ValueError("out of range float values are not JSON compliant")
        return _nj_float(b, <double>key)
    raise TypeError(f"keys must be str, int, float, bool or None, not {type(key).__name__}")


cdef int _nj_value(_NmJson* b, object o, int depth) except -1:
    cdef object t = type(o)
    cdef long long v
    cdef int overflow
    cdef Py_ssize_t pos = 0, i, n
    cdef PyObject* key
    cdef PyObject* val
    cdef const unsigned char[::1] view
    cdef bint first
    if depth > NM_JSON_MAX_DEPTH:
        raise ValueError("payload nested too deeply (or circular)")
    if t is str or isinstance(o, str):
        _nj_put(b, "\"", 1)
        _nj_chars(b, o)
        return _nj_put(b, "\"", 1)
    if o is None:
        return _nj_put(b, "null", 4)
    if o is True:
        return _nj_put(b, "true", 4)
    if o is False:
        return _nj_put(b, "false", 5)
    if t is int or isinstance(o, int):
        v = PyLong_AsLongLongAndOverflow(o, &overflow)
        if overflow:
            s = int.__repr__(o)
            return _nj_put(b, PyUnicode_AsUTF8AndSize(s, &n), n)
        if v < 0:
            _nj_put(b, "-", 1)
            return _nj_ull(b, <unsigned long long>(-(v + 1)) + 1)
        return _nj_ull(b, <unsigned long long>v)
    if t is float or isinstance(o, float):
        return _nj_float(b, <double>o)
    if t is dict or isinstance(o, dict):
        _nj_put(b, "{", 1)
        first = True
        while PyDict_Next(o, &pos, &key, &val):
            if not first:
                _nj_put(b, ",", 1)
            first = False
            _nj_put(b, "\"", 1)
            if isinstance(<object>key, str):
                _nj_chars(b, <str>key)
            else:
                _nj_key(b, <object>key)
            _nj_put(b, "\":", 2)
            _nj_value(b, <object>val, depth + 1)
        return _nj_put(b, "}", 1)
    if t is list or t is tuple or isinstance(o, (list, tuple, set, frozenset)):
        _nj_put(b, "[", 1)
        first = True
        for item in o:
            if not first:
                _nj_put(b, ",", 1)
            first = False
            _nj_value(b, item, depth + 1)
        return _nj_put(b, "]", 1)
    if isinstance(o, (bytes, bytearray, memoryview)):
        view = bytes(o) if not isinstance(o, bytes) else o
        n = view.shape[0]
        _nj_reserve(b, 2 * n + 2)
        b.data[b.len] = 34
        b.len += 1
        for i in range(n):
            b.data[b.len] = _NM_HEX[view[i] >> 4]
            b.data[b.len + 1] = _NM_HEX[view[i] & 15]
            b.len += 2
        return _nj_put(b, "\"", 1)
    raise TypeError(f"cannot write {type(o).__name__} as JSON")


def json_lines(str prefix, publications):
    """One JSON line per publication: {"topic": prefix + channel, "device_time_ns", "payload"}.

    Raises TypeError for payload values JSON cannot carry (other than NaN/infinity, written as
    null, and bytes, written as hex) and ValueError for circular payloads.
    """
    cdef _NmJson b
    b.data = NULL
    b.len = 0
    b.cap = 0
    try:
        for pub in publications:
            _nj_put(&b, "{\"topic\":\"", 10)
            _nj_chars(&b, prefix)
            _nj_chars(&b, pub.channel)
            _nj_put(&b, "\",\"device_time_ns\":", 19)
            _nj_value(&b, pub.device_time_ns, 1)
            _nj_put(&b, ",\"payload\":", 11)
            _nj_value(&b, pub.payload, 1)
            _nj_put(&b, "}\n", 2)
        return PyUnicode_DecodeUTF8(b.data, b.len, NULL) if b.len else ""
    finally:
        PyMem_Free(b.data)
