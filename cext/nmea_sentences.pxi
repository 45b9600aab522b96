# NMEA 0183 typed sentences: the message classes (GGA RMC GSA GSV GLL VTG ZDA GST GNS TXT, the RDSS
# TXR FKI ICI ICP TCI PWI, and RawSentence for everything else), the field parsers and one decoder
# per formatter. Twin: cext/nmea_sentences_py.py (same messages, field for field).
#
# The decoders get a sentence that the framer (NmeaDecoder in nmea_framer.pxi, included after this
# file) has already checked and split: p is the buffer, fs[k]..fe[k] field k. They parse, they do not
# count: a field that does not parse makes the decoder return None (_nm_card: 1), and the framer
# counts the sentence as `bad_field`. _NM_POW10 (exact powers of ten) also serves jsonl.pxi.

cimport cython
from libc.math cimport NAN, isnan
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.unicode cimport PyUnicode_DecodeLatin1
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM
from cpython.ref cimport Py_INCREF

cdef double _NM_POW10[19]
cdef tuple _NM_CHARS = tuple([chr(i) for i in range(256)])   # one-letter fields, shared


cdef void _nm_init_pow10() noexcept:
    cdef int i
    _NM_POW10[0] = 1.0
    for i in range(1, 19):
        _NM_POW10[i] = _NM_POW10[i - 1] * 10.0   # exact: 10**18 < 2**53 * 2**18

_nm_init_pow10()


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


@cython.no_gc
cdef class BinaryFrame:
    """A checksum-verified binary frame found between NMEA sentences (NmeaDecoder(binary=True)):
    protocol "ubx" (B5 62) or "casic" (BA CE), its message class and id, and the payload bytes
    (without header and checksum). Decoded by tianwang.drivers.beidou.binary."""
    FORMATTER = ""
    FIELDS = ("protocol", "msg_class", "msg_id", "payload")

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
