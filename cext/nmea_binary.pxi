# CASIC and UBX navigation messages -> epochs (BinaryAssembler, BinaryEpoch). Twin: the classes of
# the same names in cext/nmea_binary_py.py. Frames come from NmeaDecoder(binary=True)
# (nmea_framer.pxi: found and checksum-verified there) as BinaryFrame (nmea_sentences.pxi); the
# helpers of nmea_epoch.pxi (included before this file) give the constellation indices, the payload
# order and the calendar.
#
# Vendor facts relied on (CASIC protocol specification V4.2.0.3 and gpsd's CASIC driver; u-blox M8/F9
# interface descriptions):
# - Everything is little-endian; CASIC R4/R8 are IEEE-754 float/double.
# - Every CASIC NAV message starts with U4 runTime (ms since power-on), every UBX NAV message with U4
#   iTOW (GPS ms of week, < 604,800,000): the epoch key. A key that moves by more than 10 ms starts a
#   new epoch (gpsd's rule). UBX NAV-EOE (01 61) ends an epoch; otherwise the message id seen last
#   before two epoch boundaries in a row is learned as the end of the cycle, as for NMEA.
# - CASIC NAV-PV (01 03, 80 B): posValid 4 / velValid 5 use the fix enum 0 invalid, 1 external, 2
#   rough, 3 last held, 4 dead reckoning, 5 fast, 6 2D, 7 3D, 8 GNSS+DR: only 6/7/8 are a fix; numSV
#   7; R4 pDop 12; R8 lon 16 before R8 lat 24; R4 height 32 (above the ellipsoid) and sepGeoid 36 give
#   MSL = height - sepGeoid; R4 speed2D 64 (m/s) and heading 68 (deg), taken when velValid is 6..8.
#   NAV-PV carries no time.
# - CASIC NAV-TIMEUTC (01 10, 24 B), gpsd's layout (the spec transcription disagrees after offset
#   12): U2 ms 12, U2 year 14, month day hour min sec 16..20, valid 21, timeSrc 22, dateValid 23. A
#   time only when (valid & 7) == 7, dateValid != 0 and every field in range. An epoch without one
#   takes the last time plus the runTime elapsed (when under 10 s).
# - CASIC NAV-DOP (01 01, 28 B): R4 pDop 4, hDop 8, vDop 12 (0 < x < 99 counts). NAV-STATUS (01 00):
#   posValid 6 (used when an epoch has no NAV-PV). NAV-GPSINFO/BDSINFO/GLNINFO (01 20/21/22,
#   8 + 12 N): numViewSv 4, system 6 (0 GPS, 1 BDS, 2 GLONASS, not u-blox gnssId); satellite n at
#   8 + 12 n: svid +1, flags +2 (b0 used in the solution), cno +4, I1 elev +5, I2 azim +6. Elevations
#   beyond +-90 and azimuths outside 0..359 are not given (gpsd).
# - UBX NAV-PVT (01 07, 92 B; 84 on protVer 14): year 4, month..sec 6..10, valid 11 (b0 validDate, b1
#   validTime), I4 nano 16 (may be negative), fixType 20 (2 2D, 3 3D, 4 GNSS+DR), flags 21 (b0
#   gnssFixOK, b1 diffSoln, b7:6 carrSoln 1 float / 2 fixed), numSV 23, I4 lon/lat 1e-7 deg 24/28, I4
#   hMSL mm 36, I4 gSpeed mm/s 60, I4 headMot 1e-5 deg 64, U2 pDOP 0.01 76, flags3 78 (b0
#   invalidLlh). A fix only with gnssFixOK (the spec's rule); a time only with validDate and validTime.
# - UBX NAV-SAT (01 35): version 4 must be 1, numSvs 5; SV n at 8 + 12 n: gnssId, svId, cno, I1 elev,
#   I2 azim, X4 flags +8 (b3 svUsed). gnssId 0 GPS, 2 Galileo, 3 BeiDou, 5 QZSS, 6 GLONASS (others are
#   not counted); azimuth 360 is 0.
# - UBX NAV-TIMEUTC (01 21, 20 B): I4 nano 8, U2 year 12, month..sec 14..18, valid 19 (b2 validUTC).
#   UBX NAV-DOP (01 04, 18 B): U2 x 0.01 gDOP 4, pDOP 6, tDOP 8, vDOP 10, hDOP 12; 99.99 = unknown.

from libc.math cimport NAN, isnan, isfinite, rint
from libc.string cimport memcpy

cdef enum:
    NB_NAV = 0x01
    NB_CASIC_STATUS = 0x00
    NB_CASIC_DOP = 0x01
    NB_CASIC_PV = 0x03
    NB_CASIC_TIMEUTC = 0x10
    NB_CASIC_GPSINFO = 0x20
    NB_CASIC_BDSINFO = 0x21
    NB_CASIC_GLNINFO = 0x22
    NB_UBX_DOP = 0x04
    NB_UBX_PVT = 0x07
    NB_UBX_TIMEUTC = 0x21
    NB_UBX_SAT = 0x35
    NB_UBX_EOE = 0x61

# a handler's result
cdef enum:
    NB_OK = 0
    NB_BAD = 1                # impossible length or content: counted in `bad`, nothing merged


cdef inline unsigned int _nb_u4(const unsigned char* p) noexcept nogil:
    return p[0] | (p[1] << 8) | (p[2] << 16) | (<unsigned int>p[3] << 24)


cdef inline int _nb_i4(const unsigned char* p) noexcept nogil:
    return <int>_nb_u4(p)


cdef inline unsigned int _nb_u2(const unsigned char* p) noexcept nogil:
    return p[0] | (p[1] << 8)


cdef inline short _nb_i2(const unsigned char* p) noexcept nogil:
    return <short>(p[0] | (p[1] << 8))


cdef inline double _nb_r4(const unsigned char* p) noexcept nogil:
    cdef unsigned int u = _nb_u4(p)
    cdef float f
    memcpy(&f, &u, 4)
    return f


cdef inline double _nb_r8(const unsigned char* p) noexcept nogil:
    cdef unsigned long long u = <unsigned long long>_nb_u4(p) | (<unsigned long long>_nb_u4(p + 4) << 32)
    cdef double d
    memcpy(&d, &u, 8)
    return d


cdef inline long long _nb_utc_ns(long long year, long long month, long long day, long long hour,
                                 long long minute, long long sec, long long nano) noexcept nogil:
    # -1 when a field is out of range; a leap second (sec 60) is the next second's start
    if not (1980 <= year <= 2200 and 1 <= month <= 12 and 1 <= day <= 31 and 0 <= hour <= 23
            and 0 <= minute <= 59 and 0 <= sec <= 60 and -1000000000 < nano < 1000000000):
        return -1
    return ((_nm_days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + sec) * 1000000000LL
            + nano)


cdef inline object _nb_round(double v, double scale):
    # the twin's round(v * scale) / scale (both round half to even); not a number -> None
    return rint(v * scale) / scale if isfinite(v) else None


cdef inline void _nb_sat(BinaryEpoch e, int s, int svid, int elev, int az, int snr, int used) noexcept:
    # one satellite's entry, replacing what an earlier message of the epoch said about it
    cdef unsigned long long bit = 1ULL << svid
    e._view[s] |= bit
    if used:
        e._used[s] |= bit
    else:
        e._used[s] &= ~bit
    e._elev[s][svid] = elev if -90 <= elev <= 90 else NB_NONE
    e._az[s][svid] = az if 0 <= az <= 359 else NB_NONE
    e._snr[s][svid] = snr if snr > 0 else NB_NONE


@cython.freelist(8)
cdef class BinaryEpoch:
    """One navigation epoch of CASIC or UBX messages, merged; the interface of the NMEA Epoch:
    fix_payload(), satellites(), has_satellites, time_ns, hdop, mode, sats_used_total, no_fix_reason,
    closed_by ("end", "next", "flush")."""

    def __init__(self, str source, long long key):
        self.source = source
        self.key = key
        self.time_ns = -1
        self.lat = self.lon = self.alt_m = self.speed_mps = self.course_deg = NAN
        self.hdop = self.pdop = self.vdop = NAN
        self.quality = 0
        self.mode = 1
        self.sats_used_pvt = -1

    @property
    def has_satellites(self):
        cdef int s
        for s in range(NB_N_SYS):
            if self._view[s]:
                return True
        return False

    def fix_payload(self):
        """The `fix` payload: the keys of the NMEA one (docs/contract.md), `source` casic or ubx."""
        used = _nm_counts(self._used)
        view = _nm_counts(self._view)
        return {
            "time_ns": self.time_ns if self.time_ns >= 0 else None,
            "lat": _nb_round(self.lat, 1e9),
            "lon": _nb_round(self.lon, 1e9),
            "alt_m": _nb_round(self.alt_m, 1e4),
            "speed_mps": _nb_round(self.speed_mps, 1e4),
            "course_deg": _nb_round(self.course_deg, 1e5),
            "quality": self.quality,
            "mode": self.mode,
            "hdop": _nb_round(self.hdop, 1e3),
            "pdop": _nb_round(self.pdop, 1e3),
            "vdop": _nb_round(self.vdop, 1e3),
            "sats_used": used,
            "sats_view": view,
            "source": self.source,
        }

    def satellites(self):
        """The sky, as the NMEA Epoch gives it: BDS first then GPS GLO GAL QZSS, by svid."""
        cdef int i, s, svid
        cdef list out = []
        for i in range(5):
            s = _NM_PAYLOAD_ORDER[i]
            if not self._view[s]:
                continue
            for svid in range(64):
                if (self._view[s] >> svid) & 1:
                    out.append(_nm_sat(_NM_SYSTEMS[s], svid,
                                       self._elev[s][svid] if self._elev[s][svid] != NB_NONE else None,
                                       self._az[s][svid] if self._az[s][svid] != NB_NONE else None,
                                       self._snr[s][svid] if self._snr[s][svid] != NB_NONE else None,
                                       (self._used[s] >> svid) & 1))
        return out

    def __repr__(self):
        return (f"BinaryEpoch(source={self.source!r}, time_ns={self.time_ns}, lat={self.lat!r}, lon={self.lon!r}, "
                f"mode={self.mode}, messages={self.messages}, no_fix_reason={self.no_fix_reason!r})")


# ---------------------------------------------------------------------------------------------
# CASIC NAV messages (p: the payload, n: its length, >= 4)


cdef int _nb_casic_pv(BinaryEpoch e, const unsigned char* p, Py_ssize_t n) except -1:
    cdef int pos_valid, vel_valid, num_sv
    cdef double pdop, lon, lat, height, sep
    if n < 80:
        return NB_BAD
    pos_valid = p[4]
    vel_valid = p[5]
    num_sv = p[7]
    if pos_valid > 8 or vel_valid > 8 or num_sv > 128:
        return NB_BAD
    pdop = _nb_r4(p + 12)
    lon = _nb_r8(p + 16)
    lat = _nb_r8(p + 24)
    height = _nb_r4(p + 32)
    sep = _nb_r4(p + 36)
    e.fix_seen = True
    e.sats_used_pvt = num_sv
    if 6 <= pos_valid <= 8 and -90 <= lat <= 90 and -180 <= lon <= 180:
        e.fix = True
        e.lat = lat
        e.lon = lon
        e.mode = 2 if pos_valid == 6 else 3
        e.quality = 1
        if pos_valid != 6 and not isnan(height) and not isnan(sep):
            e.alt_m = height - sep
    else:
        e.no_fix_reason = f"NAV-PV posValid {pos_valid}"
    if 6 <= vel_valid <= 8:
        e.speed_mps = _nb_r4(p + 64)
        e.course_deg = _nb_r4(p + 68)
    if 0 < pdop < 99:
        e.pdop = pdop
    return NB_OK


cdef int _nb_casic_status(BinaryEpoch e, const unsigned char* p, Py_ssize_t n) except -1:
    if n < 8:
        return NB_BAD
    if not e.fix_seen:
        e.fix_seen = True
        if not 6 <= p[6] <= 8:
            e.no_fix_reason = f"NAV-STATUS posValid {p[6]}"
    return NB_OK


cdef int _nb_casic_dop(BinaryEpoch e, const unsigned char* p, Py_ssize_t n) except -1:
    cdef double pdop, hdop, vdop
    if n < 28:
        return NB_BAD
    pdop = _nb_r4(p + 4)
    hdop = _nb_r4(p + 8)
    vdop = _nb_r4(p + 12)
    if 0 < pdop < 99:
        e.pdop = pdop
    if 0 < hdop < 99:
        e.hdop = hdop
    if 0 < vdop < 99:
        e.vdop = vdop
    return NB_OK


cdef int _nb_casic_timeutc(BinaryEpoch e, const unsigned char* p, Py_ssize_t n) except -1:
    cdef unsigned int ms
    cdef long long t
    if n < 24:
        return NB_BAD
    ms = _nb_u2(p + 12)
    if (p[21] & 7) == 7 and p[23] != 0 and ms < 1000:
        t = _nb_utc_ns(_nb_u2(p + 14), p[16], p[17], p[18], p[19], p[20], ms * 1000000LL)
        if t >= 0:
            e.time_ns = t
    return NB_OK


cdef int _nb_casic_info(BinaryEpoch e, const unsigned char* p, Py_ssize_t n) except -1:
    cdef int n_view, s, k, svid
    cdef const unsigned char* q
    if n < 8:
        return NB_BAD
    n_view = p[4]
    # CASIC system codes: 0 GPS, 1 BDS, 2 GLONASS
    if p[6] == 0:
        s = NM_SYS_GPS
    elif p[6] == 1:
        s = NM_SYS_BDS
    elif p[6] == 2:
        s = NM_SYS_GLO
    else:
        return NB_BAD
    if n < 8 + 12 * n_view:
        return NB_BAD
    for k in range(n_view):
        q = p + 8 + 12 * k
        svid = q[1]
        if not 1 <= svid <= 63:
            continue
        _nb_sat(e, s, svid, <signed char>q[5], _nb_i2(q + 6), q[4], q[2] & 1)
    return NB_OK


# ---------------------------------------------------------------------------------------------
# UBX NAV messages


cdef int _nb_ubx_pvt(BinaryEpoch e, const unsigned char* p, Py_ssize_t n) except -1:
    cdef int fix_type, flags, lon, lat, carr
    cdef unsigned int pdop
    cdef long long t
    if n != 84 and n != 92:
        return NB_BAD
    fix_type = p[20]
    flags = p[21]
    lon = _nb_i4(p + 24)
    lat = _nb_i4(p + 28)
    if fix_type > 5 or not (-1800000000 <= lon <= 1800000000) or not (-900000000 <= lat <= 900000000):
        return NB_BAD
    e.fix_seen = True
    e.sats_used_pvt = p[23]
    if (p[11] & 3) == 3:
        t = _nb_utc_ns(_nb_u2(p + 4), p[6], p[7], p[8], p[9], p[10], _nb_i4(p + 16))
        if t >= 0:
            e.time_ns = t
    if 2 <= fix_type <= 4 and (flags & 1) and not (p[78] & 1):
        e.fix = True
        e.lat = lat * 1e-7
        e.lon = lon * 1e-7
        e.mode = 2 if fix_type == 2 else 3
        carr = flags >> 6
        e.quality = 4 if carr == 2 else (5 if carr == 1 else (2 if flags & 2 else 1))
        if fix_type != 2:
            e.alt_m = _nb_i4(p + 36) / 1000.0
        e.speed_mps = _nb_i4(p + 60) / 1000.0
        e.course_deg = _nb_i4(p + 64) * 1e-5
    else:
        e.no_fix_reason = f"NAV-PVT fixType {fix_type}" + ("" if flags & 1 else ", gnssFixOK 0")
    pdop = _nb_u2(p + 76)
    if pdop < 9999:
        e.pdop = pdop / 100.0
    return NB_OK


cdef int _nb_ubx_dop(BinaryEpoch e, const unsigned char* p, Py_ssize_t n) except -1:
    cdef unsigned int pdop, vdop, hdop
    if n < 18:
        return NB_BAD
    pdop = _nb_u2(p + 6)
    vdop = _nb_u2(p + 10)
    hdop = _nb_u2(p + 12)
    if pdop < 9999:
        e.pdop = pdop / 100.0
    if hdop < 9999:
        e.hdop = hdop / 100.0
    if vdop < 9999:
        e.vdop = vdop / 100.0
    return NB_OK


cdef int _nb_ubx_timeutc(BinaryEpoch e, const unsigned char* p, Py_ssize_t n) except -1:
    cdef long long t
    if n < 20:
        return NB_BAD
    if (p[19] & 4) and e.time_ns < 0:
        t = _nb_utc_ns(_nb_u2(p + 12), p[14], p[15], p[16], p[17], p[18], _nb_i4(p + 8))
        if t >= 0:
            e.time_ns = t
    return NB_OK


cdef int _nb_ubx_sat(BinaryEpoch e, const unsigned char* p, Py_ssize_t n) except -1:
    cdef int k, s, svid, az
    cdef const unsigned char* q
    if n < 8 or p[4] != 1 or n < 8 + 12 * p[5]:
        return NB_BAD
    for k in range(p[5]):
        q = p + 8 + 12 * k
        # u-blox gnssId -> constellation
        if q[0] == 0:
            s = NM_SYS_GPS
        elif q[0] == 2:
            s = NM_SYS_GAL
        elif q[0] == 3:
            s = NM_SYS_BDS
        elif q[0] == 5:
            s = NM_SYS_QZSS
        elif q[0] == 6:
            s = NM_SYS_GLO
        else:
            continue
        svid = q[1]
        if not 1 <= svid <= 63:
            continue
        az = _nb_i2(q + 4)
        if az == 360:
            az = 0
        _nb_sat(e, s, svid, <signed char>q[3], az, q[2], (_nb_u4(q + 8) >> 3) & 1)
    return NB_OK


# ---------------------------------------------------------------------------------------------


cdef class BinaryAssembler:
    """BinaryFrame messages in (stream order), BinaryEpochs out, one assembler per protocol kind
    (each keeps its own epoch: a receiver that sends both gets two streams of epochs, and the
    receiver protocol picks one). push(frame) -> [BinaryEpoch] completed by it; flush(final) closes
    the open epoch. Counters: messages (decoded), bad (NAV messages of an impossible length or
    content, counted and skipped), ignored (other classes/ids), epochs, fragments,
    closed_by_end/next/flush. Raises ValueError for a protocol other than "casic" or "ubx"."""

    def __init__(self, protocol):
        if protocol not in ("casic", "ubx"):
            raise ValueError(f"protocol must be 'casic' or 'ubx', not {protocol!r}")
        self.protocol = protocol
        self._ubx = protocol == "ubx"
        self._cur = None
        self._last_type = self._candidate = self._ender = -1

    @property
    def open(self):
        return self._cur is not None

    @property
    def ender(self):
        return self._ender >= 0

    def push(self, frame):
        """Merge one BinaryFrame; returns the BinaryEpochs it completed."""
        cdef list out = []
        cdef bytes payload
        cdef int msg_class, mid, r
        cdef const unsigned char* p
        cdef Py_ssize_t n
        cdef long long key
        cdef BinaryEpoch e
        if type(frame) is BinaryFrame:
            msg_class = (<BinaryFrame>frame).msg_class
            mid = (<BinaryFrame>frame).msg_id
            payload = (<BinaryFrame>frame).payload
        else:
            msg_class = frame.msg_class
            mid = frame.msg_id
            payload = bytes(frame.payload)
        n = len(payload)
        if msg_class != NB_NAV or n < 4:
            self.ignored += 1
            return out
        if self._ubx:
            if mid != NB_UBX_PVT and mid != NB_UBX_DOP and mid != NB_UBX_TIMEUTC and mid != NB_UBX_SAT \
                    and mid != NB_UBX_EOE:
                self.ignored += 1
                return out
        elif mid != NB_CASIC_PV and mid != NB_CASIC_STATUS and mid != NB_CASIC_DOP and mid != NB_CASIC_TIMEUTC \
                and not NB_CASIC_GPSINFO <= mid <= NB_CASIC_GLNINFO:
            self.ignored += 1
            return out
        p = payload
        key = _nb_u4(p)
        if self._ubx and key >= 604800000:
            self.bad += 1  # iTOW is ms of a week
            return out
        e = self._cur
        if e is not None and (key - e.key > 10 or e.key - key > 10):
            self._learn()
            self._close(out, "next")
            e = None
        if e is None:
            e = BinaryEpoch.__new__(BinaryEpoch)
            e.source = self.protocol
            e.key = key
            e.time_ns = -1
            e.lat = e.lon = e.alt_m = e.speed_mps = e.course_deg = NAN
            e.hdop = e.pdop = e.vdop = NAN
            e.mode = 1
            e.sats_used_pvt = -1
            self._cur = e
        if self._ubx:
            if mid == NB_UBX_PVT:
                r = _nb_ubx_pvt(e, p, n)
            elif mid == NB_UBX_DOP:
                r = _nb_ubx_dop(e, p, n)
            elif mid == NB_UBX_TIMEUTC:
                r = _nb_ubx_timeutc(e, p, n)
            elif mid == NB_UBX_SAT:
                r = _nb_ubx_sat(e, p, n)
            else:
                r = NB_OK  # NAV-EOE: the key alone
        elif mid == NB_CASIC_PV:
            r = _nb_casic_pv(e, p, n)
        elif mid == NB_CASIC_STATUS:
            r = _nb_casic_status(e, p, n)
        elif mid == NB_CASIC_DOP:
            r = _nb_casic_dop(e, p, n)
        elif mid == NB_CASIC_TIMEUTC:
            r = _nb_casic_timeutc(e, p, n)
        else:
            r = _nb_casic_info(e, p, n)
        if r != NB_OK:
            self.bad += 1
            return out
        self.messages += 1
        e.messages += 1
        self._last_type = mid
        if self._ubx and mid == NB_UBX_EOE:
            self._misses = 0
            self._close(out, "end")
        elif self._ender >= 0 and mid == self._ender:
            self._misses = 0
            self._close(out, "end")
        return out

    def flush(self, final=False):
        """Close the open epoch (the receiver went quiet, or with final=True the input ended)."""
        cdef list out = []
        if self._cur is not None:
            if not final:
                self._learn()
            self._close(out, "flush")
        return out

    cdef int _learn(self) except -1:
        # the message id seen last before two closings in a row that were not its own
        if self._ender >= 0:
            self._misses += 1
            if self._misses >= 2:
                self._ender = -1
                self._candidate = self._last_type
        elif self._last_type == self._candidate:
            self._ender = self._candidate
            self._misses = 0
        else:
            self._candidate = self._last_type
        return 0

    cdef int _close(self, list out, str how) except -1:
        cdef BinaryEpoch e = self._cur
        cdef long long elapsed
        cdef int s, used = 0
        cdef bint sky = False
        self._cur = None
        if e.time_ns < 0 and self._has_utc:
            # CASIC NAV-PV has no time: the last TIMEUTC's, moved on by the runTime elapsed (mod 2**32)
            elapsed = (e.key - self._utc_key) & 0xFFFFFFFFLL
            if not self._ubx and elapsed < 10000:
                e.time_ns = self._utc_ns + elapsed * 1000000
        elif e.time_ns >= 0:
            self._has_utc = True
            self._utc_key = e.key
            self._utc_ns = e.time_ns
        if not e.fix_seen and e.time_ns < 0:
            self.fragments += 1  # no fix information and no time: never published
            return 0
        if e.fix:
            e.no_fix_reason = None
        else:
            if e.no_fix_reason is None:
                e.no_fix_reason = "no position"
            e.quality = 0
            e.mode = 1
            e.lat = e.lon = NAN
        for s in range(NB_N_SYS):
            used += _nm_popcount(e._used[s])
            if e._view[s]:
                sky = True
        e.sats_used_total = used if sky else (e.sats_used_pvt if e.sats_used_pvt > 0 else 0)
        e.closed_by = how
        if how == "end":
            self.closed_by_end += 1
        elif how == "next":
            self.closed_by_next += 1
        else:
            self.closed_by_flush += 1
        self.epochs += 1
        out.append(e)
        return 0
