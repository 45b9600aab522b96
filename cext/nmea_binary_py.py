"""CASIC and UBX navigation messages -> epochs: pure-Python twin of `BinaryEpoch` and
`BinaryAssembler` in `tianwang.cext._speedups` (cext/nmea_binary.pxi). Import them through
`tianwang.gateway.framing` (`from tianwang.gateway.framing import BinaryAssembler`).

CASIC (ZKW AT6558 family: ATGM336H, Quectel L76K) and u-blox UBX frames are found and
checksum-verified by the hot path's NmeaDecoder(binary=True) in the same byte stream as the NMEA
sentences (cext/nmea_framer.pxi) and handed over as BinaryFrame(protocol, msg_class, msg_id,
payload); BinaryAssembler decodes the navigation messages and groups them into one BinaryEpoch per
navigation epoch, with the interface of the NMEA Epoch (fix_payload() with the same keys, `source`
"casic" or "ubx"; satellites(); no_fix_reason...), so the receiver publishes either the same way.

Protocol facts relied on (CASIC protocol specification V4.2.0.3 and gpsd's CASIC driver; u-blox
M8/F9 interface descriptions; see /work/shared/protocols/casic-ubx.md):
- Everything is little-endian; CASIC R4/R8 are IEEE-754 float/double.
- Every CASIC NAV message starts with U4 runTime (ms since power-on) and every UBX NAV message with
  U4 iTOW (GPS ms of week): that is the epoch key. A key that moves by more than 10 ms starts a new
  epoch (gpsd's rule). UBX NAV-EOE (01 61) ends an epoch; otherwise the message type seen last before
  two epoch boundaries in a row is learned as the end of the cycle, as for NMEA.
- CASIC NAV-PV (01 03, 80 B): posValid/velValid use the fix enum 0 invalid, 1 external, 2 rough,
  3 last held, 4 dead reckoning, 5 fast, 6 2D, 7 3D, 8 GNSS+DR; only 6/7/8 are a fix. lon (R8, offset
  16) comes before lat (24); height (32) is above the ellipsoid and sepGeoid (36) gives
  MSL = height - sepGeoid; speed2D (64) m/s and heading (68) deg are taken when velValid is 6..8.
  NAV-PV carries no time.
- CASIC NAV-TIMEUTC (01 10, 24 B): gpsd's layout (confirmed on AT6558R captures), which the
  spec transcription contradicts after offset 12: 12 U2 ms, 14 U2 year, 16..20 month day hour min
  sec, 21 valid, 22 timeSrc, 23 dateValid. A time only when (valid & 7) == 7 and dateValid != 0, and
  every field in range. Epochs without one take the last time plus the runTime elapsed (< 10 s).
- CASIC NAV-DOP (01 01, 28 B): R4 pDop 4, hDop 8, vDop 12. NAV-STATUS (01 00, 80 B): posValid 6,
  velValid 7 (used when an epoch has no NAV-PV). NAV-GPSINFO/BDSINFO/GLNINFO (01 20/21/22,
  8 + 12 N): numViewSv 4, system 6 (0 GPS, 1 BDS, 2 GLONASS: not u-blox gnssId); per satellite at
  8 + 12 n: svid +1, flags +2 (b0 used in the solution), cno +4, I1 elev +5, I2 azim +6. Elevations
  beyond +-90 and azimuths outside 0..359 are dropped (gpsd).
- UBX NAV-PVT (01 07, 92 B, 84 on protVer 14): valid 11 (b0 validDate, b1 validTime), nano I4 16,
  fixType 20 (2 2D, 3 3D, 4 GNSS+DR), flags 21 (b0 gnssFixOK, b1 diffSoln, b7:6 carrSoln 1 float /
  2 fixed), numSV 23, lon/lat I4 1e-7 deg at 24/28, hMSL I4 mm 36, gSpeed I4 mm/s 60, headMot I4
  1e-5 deg 64, pDOP U2 0.01 76, flags3 b0 invalidLlh 78. A fix only with gnssFixOK (the spec's rule;
  gpsd does not check it); a time only with validDate and validTime; nano may be negative.
- UBX NAV-SAT (01 35): version 4 must be 1, numSvs 5; per SV at 8 + 12 n: gnssId, svId, cno, I1
  elev, I2 azim, flags X4 at +8 (b3 svUsed). gnssId 0 GPS, 2 Galileo, 3 BeiDou, 5 QZSS, 6 GLONASS
  (others are not counted); azimuth 360 is 0.
- UBX NAV-TIMEUTC (01 21, 20 B): nano I4 8, year U2 12, month..sec 14..18, valid 19 (b2 validUTC).
  UBX NAV-DOP (01 04, 18 B): U2 x 0.01 gDOP 4, pDOP 6, tDOP 8, vDOP 10, hDOP 12; 99.99 = unknown.
"""

from __future__ import annotations

import math
import struct

NAN = math.nan
SYSTEMS = ("GPS", "GLO", "GAL", "BDS", "QZSS")
_PAYLOAD_ORDER = (3, 0, 1, 2, 4)  # BDS first, as the NMEA Epoch
_CASIC_SYSTEMS = {0: 0, 1: 3, 2: 1}  # CASIC NAV-*INFO system -> index
_UBX_GNSS = {0: 0, 2: 2, 3: 3, 5: 4, 6: 1}  # u-blox gnssId -> index
_DAY_NS = 86_400_000_000_000

_PV = struct.Struct("<IBBBBBBBxfdd12f")  # CASIC NAV-PV, 80 bytes
_CASIC_UTC = struct.Struct("<IffHHBBBBBBBB")  # CASIC NAV-TIMEUTC, 24 bytes (gpsd layout)
_CASIC_DOP = struct.Struct("<I6f")  # CASIC NAV-DOP, 28 bytes
_PVT = struct.Struct("<IHBBBBBBIiBBBBiiiiIIiiiiiIIHH")  # UBX NAV-PVT up to flags3, 80 bytes
_UBX_UTC = struct.Struct("<IIiHBBBBBB")  # UBX NAV-TIMEUTC, 20 bytes
_UBX_DOP = struct.Struct("<I7H")  # UBX NAV-DOP, 18 bytes
_SAT = struct.Struct("<BBBbhhI")  # UBX NAV-SAT, one satellite
_INFO = struct.Struct("<BBBBBbhf")  # CASIC NAV-*INFO, one satellite

NAV = 0x01
CASIC_STATUS, CASIC_DOP, CASIC_PV, CASIC_TIMEUTC = 0x00, 0x01, 0x03, 0x10
CASIC_INFO = (0x20, 0x21, 0x22)
UBX_DOP, UBX_PVT, UBX_TIMEUTC, UBX_SAT, UBX_EOE = 0x04, 0x07, 0x21, 0x35, 0x61


def days_from_civil(y, m, d):
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    if m <= 2:
        y -= 1
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    return era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468


def _utc_ns(year, month, day, hour, minute, sec, nano=0):
    # None when any field is out of range; a leap second (sec 60) is kept as the next second's start
    if not (
        1980 <= year <= 2200
        and 1 <= month <= 12
        and 1 <= day <= 31
        and hour <= 23
        and minute <= 59
        and sec <= 60
        and -1_000_000_000 < nano < 1_000_000_000
    ):
        return None
    return (days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + sec) * 10**9 + nano


def _round(v, scale):
    # round half to even, as the compiled rint(); NaN and infinities (a float field of a CASIC
    # frame can hold them) are not numbers a payload carries
    return round(v * scale) / scale if math.isfinite(v) else None


def _opt(v):
    return None if v != v else v


class BinaryEpoch:
    """One navigation epoch of CASIC or UBX messages, merged. The interface of the NMEA Epoch:
    fix_payload(), satellites(), has_satellites, time_ns, hdop, mode, sats_used_total, no_fix_reason,
    closed_by ("end", "next", "flush")."""

    def __init__(self, source, key):
        self.source = source
        self.key = key  # runTime (CASIC) or iTOW (UBX), ms
        self.time_ns = -1
        self.lat = self.lon = self.alt_m = self.speed_mps = self.course_deg = NAN
        self.hdop = self.pdop = self.vdop = NAN
        self.quality = 0
        self.mode = 1
        self.fix_seen = False  # a NAV-PV / NAV-PVT / NAV-STATUS said whether there is a fix
        self.fix = False
        self.sats_used_pvt = -1
        self.sats_used_total = 0
        self.no_fix_reason = None
        self.closed_by = None
        self.messages = 0
        self._sky = {}  # (system, svid) -> [elev, az, snr, used]

    @property
    def has_satellites(self):
        return bool(self._sky)

    def _counts(self):
        # (used, in view) per constellation, in payload order
        used = [0] * 5
        view = [0] * 5
        for (s, _), v in self._sky.items():
            view[s] += 1
            if v[3]:
                used[s] += 1
        return (
            {"BDS": used[3], "GPS": used[0], "GLO": used[1], "GAL": used[2], "QZSS": used[4]},
            {"BDS": view[3], "GPS": view[0], "GLO": view[1], "GAL": view[2], "QZSS": view[4]},
        )

    def fix_payload(self):
        """The `fix` payload: the keys of the NMEA one (docs/contract.md), `source` casic or ubx."""
        used, view = self._counts()
        return {
            "time_ns": self.time_ns if self.time_ns >= 0 else None,
            "lat": _round(self.lat, 1e9),
            "lon": _round(self.lon, 1e9),
            "alt_m": _round(self.alt_m, 1e4),
            "speed_mps": _round(self.speed_mps, 1e4),
            "course_deg": _round(self.course_deg, 1e5),
            "quality": self.quality,
            "mode": self.mode,
            "hdop": _round(self.hdop, 1e3),
            "pdop": _round(self.pdop, 1e3),
            "vdop": _round(self.vdop, 1e3),
            "sats_used": used,
            "sats_view": view,
            "source": self.source,
        }

    def satellites(self):
        """The sky, as the NMEA Epoch gives it: BDS first then GPS GLO GAL QZSS, by svid."""
        out = []
        for s in _PAYLOAD_ORDER:
            for (system, svid), (elev, az, snr, used) in sorted(self._sky.items()):
                if system == s:
                    out.append(
                        {"system": SYSTEMS[s], "svid": svid, "elev": elev, "az": az, "snr": snr, "used": bool(used)}
                    )
        return out

    def __repr__(self):
        return (
            f"BinaryEpoch(source={self.source!r}, time_ns={self.time_ns}, lat={self.lat!r}, lon={self.lon!r}, "
            f"mode={self.mode}, messages={self.messages}, no_fix_reason={self.no_fix_reason!r})"
        )


class BinaryAssembler:
    """BinaryFrame messages in (stream order), BinaryEpochs out, one assembler per protocol kind
    (each keeps its own epoch: a receiver that sends both gets two streams of epochs, and the
    receiver protocol picks one). push(frame) -> [BinaryEpoch] completed by it; flush(final) closes
    the open epoch. Counters: messages (decoded), bad (NAV messages of an impossible length,
    counted and skipped), ignored (other classes/ids), epochs, fragments, closed_by_end/next/flush."""

    def __init__(self, protocol):
        if protocol not in ("casic", "ubx"):
            raise ValueError(f"protocol must be 'casic' or 'ubx', not {protocol!r}")
        self.protocol = protocol
        self.messages = self.bad = self.ignored = self.epochs = self.fragments = 0
        self.closed_by_end = self.closed_by_next = self.closed_by_flush = 0
        self._cur = None
        self._last_type = self._candidate = self._ender = None
        self._misses = 0
        self._utc = None  # (key, time_ns) of the last epoch with a time

    @property
    def open(self):
        return self._cur is not None

    @property
    def ender(self):
        return self._ender is not None

    def push(self, frame):
        out = []
        if frame.msg_class != NAV or len(frame.payload) < 4:
            self.ignored += 1
            return out
        p = frame.payload
        mid = frame.msg_id
        handler = (_CASIC if self.protocol == "casic" else _UBX).get(mid)
        if handler is None:
            self.ignored += 1
            return out
        key = int.from_bytes(p[:4], "little")
        if self.protocol == "ubx" and key >= 604_800_000:
            self.bad += 1  # iTOW is ms of a week
            return out
        e = self._cur
        if e is not None and abs(key - e.key) > 10:
            self._learn()
            self._close(out, "next")
            e = None
        if e is None:
            e = self._cur = BinaryEpoch(self.protocol, key)
        try:
            handler(e, p)
        except (struct.error, ValueError):
            self.bad += 1
            return out
        self.messages += 1
        e.messages += 1
        self._last_type = mid
        if self.protocol == "ubx" and mid == UBX_EOE:
            self._misses = 0
            self._close(out, "end")
        elif self._ender is not None and mid == self._ender:
            self._misses = 0
            self._close(out, "end")
        return out

    def flush(self, final=False):
        out = []
        if self._cur is not None:
            if not final:
                self._learn()
            self._close(out, "flush")
        return out

    def _learn(self):
        # the message type seen last before two closings in a row that were not its own
        if self._ender is not None:
            self._misses += 1
            if self._misses >= 2:
                self._ender = None
                self._candidate = self._last_type
        elif self._last_type == self._candidate:
            self._ender = self._candidate
            self._misses = 0
        else:
            self._candidate = self._last_type

    def _close(self, out, how):
        e, self._cur = self._cur, None
        if e.time_ns < 0 and self._utc is not None:
            # CASIC NAV-PV has no time: the last TIMEUTC's, moved on by the runTime elapsed
            key, t = self._utc
            elapsed = (e.key - key) % (1 << 32)
            if self.protocol == "casic" and elapsed < 10_000:
                e.time_ns = t + elapsed * 1_000_000
        elif e.time_ns >= 0:
            self._utc = (e.key, e.time_ns)
        if not e.fix_seen and e.time_ns < 0:
            self.fragments += 1  # no fix information and no time: never published
            return
        if e.fix:
            e.no_fix_reason = None
        else:
            e.no_fix_reason = e.no_fix_reason or "no position"
            e.quality = 0
            e.mode = 1
            e.lat = e.lon = NAN
        used = sum(1 for v in e._sky.values() if v[3])
        e.sats_used_total = used if e._sky else max(e.sats_used_pvt, 0)
        e.closed_by = how
        if how == "end":
            self.closed_by_end += 1
        elif how == "next":
            self.closed_by_next += 1
        else:
            self.closed_by_flush += 1
        self.epochs += 1
        out.append(e)


# ---------------------------------------------------------------------------------------------
# CASIC NAV messages


def _casic_pv(e, p):
    (
        _,
        pos_valid,
        vel_valid,
        _system,
        num_sv,
        _g,
        _b,
        _r,
        pdop,
        lon,
        lat,
        height,
        sep,
        _hacc,
        _vacc,
        _vn,
        _ve,
        _vu,
        _s3,
        speed2d,
        heading,
        _sacc,
        _cacc,
    ) = _PV.unpack_from(p)
    if pos_valid > 8 or vel_valid > 8 or num_sv > 128:
        raise ValueError("NAV-PV out of range")
    e.fix_seen = True
    e.sats_used_pvt = num_sv
    if pos_valid in (6, 7, 8) and -90 <= lat <= 90 and -180 <= lon <= 180:
        e.fix = True
        e.lat, e.lon = lat, lon
        e.mode = 2 if pos_valid == 6 else 3
        e.quality = 1
        if pos_valid != 6 and height == height and sep == sep:
            e.alt_m = height - sep
    else:
        e.no_fix_reason = f"NAV-PV posValid {pos_valid}"
    if vel_valid in (6, 7, 8):
        e.speed_mps = speed2d
        e.course_deg = heading
    if pdop == pdop and 0 < pdop < 99:
        e.pdop = pdop


def _casic_status(e, p):
    if len(p) < 8:
        raise ValueError("short NAV-STATUS")
    if not e.fix_seen:
        e.fix_seen = True
        pos_valid = p[6]
        if pos_valid not in (6, 7, 8):
            e.no_fix_reason = f"NAV-STATUS posValid {pos_valid}"


def _casic_dop(e, p):
    _, pdop, hdop, vdop, _n, _e, _t = _CASIC_DOP.unpack_from(p)
    for name, v in (("pdop", pdop), ("hdop", hdop), ("vdop", vdop)):
        if v == v and 0 < v < 99:
            setattr(e, name, v)


def _casic_timeutc(e, p):
    _, _tacc, _mserr, ms, year, month, day, hour, minute, sec, valid, _src, date_valid = _CASIC_UTC.unpack_from(p)
    if (valid & 7) == 7 and date_valid != 0 and ms < 1000:
        t = _utc_ns(year, month, day, hour, minute, sec, ms * 1_000_000)
        if t is not None:
            e.time_ns = t


def _casic_info(e, p):
    if len(p) < 8:
        raise ValueError("short NAV-*INFO")
    n_view, system = p[4], p[6]
    s = _CASIC_SYSTEMS.get(system)
    if s is None or len(p) < 8 + 12 * n_view:
        raise ValueError("bad NAV-*INFO")
    for _chn, svid, flags, _q, cno, elev, azim, _pr in _INFO.iter_unpack(p[8 : 8 + 12 * n_view]):
        if not 1 <= svid <= 63:
            continue
        e._sky[(s, svid)] = [
            elev if -90 <= elev <= 90 else None,
            azim if 0 <= azim <= 359 else None,
            cno if cno > 0 else None,
            flags & 1,
        ]


_CASIC = {
    CASIC_PV: _casic_pv,
    CASIC_STATUS: _casic_status,
    CASIC_DOP: _casic_dop,
    CASIC_TIMEUTC: _casic_timeutc,
    0x20: _casic_info,
    0x21: _casic_info,
    0x22: _casic_info,
}


# ---------------------------------------------------------------------------------------------
# UBX NAV messages


def _ubx_pvt(e, p):
    (
        _,
        year,
        month,
        day,
        hour,
        minute,
        sec,
        valid,
        _tacc,
        nano,
        fix_type,
        flags,
        _flags2,
        num_sv,
        lon,
        lat,
        _height,
        hmsl,
        _hacc,
        _vacc,
        _vn,
        _ve,
        _vd,
        gspeed,
        head,
        _sacc,
        _headacc,
        pdop,
        flags3,
    ) = _PVT.unpack_from(p)
    if (
        fix_type > 5
        or len(p) not in (84, 92)
        or not (-1_800_000_000 <= lon <= 1_800_000_000)
        or not (-900_000_000 <= lat <= 900_000_000)
    ):
        raise ValueError("NAV-PVT out of range")
    e.fix_seen = True
    e.sats_used_pvt = num_sv
    if valid & 3 == 3:
        t = _utc_ns(year, month, day, hour, minute, sec, nano)
        if t is not None:
            e.time_ns = t
    if fix_type in (2, 3, 4) and flags & 1 and not flags3 & 1:
        e.fix = True
        e.lat, e.lon = lat * 1e-7, lon * 1e-7
        e.mode = 2 if fix_type == 2 else 3
        carr = flags >> 6
        e.quality = 4 if carr == 2 else 5 if carr == 1 else 2 if flags & 2 else 1
        if fix_type != 2:
            e.alt_m = hmsl / 1000.0
        e.speed_mps = gspeed / 1000.0
        e.course_deg = head * 1e-5
    else:
        e.no_fix_reason = f"NAV-PVT fixType {fix_type}" + ("" if flags & 1 else ", gnssFixOK 0")
    if pdop < 9999:
        e.pdop = pdop / 100.0


def _ubx_dop(e, p):
    _, _g, pdop, _t, vdop, hdop, _n, _e = _UBX_DOP.unpack_from(p)
    for name, v in (("pdop", pdop), ("hdop", hdop), ("vdop", vdop)):
        if v < 9999:
            setattr(e, name, v / 100.0)


def _ubx_timeutc(e, p):
    _, _tacc, nano, year, month, day, hour, minute, sec, valid = _UBX_UTC.unpack_from(p)
    if valid & 4 and e.time_ns < 0:
        t = _utc_ns(year, month, day, hour, minute, sec, nano)
        if t is not None:
            e.time_ns = t


def _ubx_sat(e, p):
    if len(p) < 8 or p[4] != 1 or len(p) < 8 + 12 * p[5]:
        raise ValueError("bad NAV-SAT")
    sky = e._sky
    for gnss, svid, cno, elev, azim, _pr, flags in _SAT.iter_unpack(p[8 : 8 + 12 * p[5]]):
        s = _UBX_GNSS.get(gnss)
        if s is None or not 1 <= svid <= 63:
            continue
        if azim == 360:
            azim = 0
        sky[(s, svid)] = [
            elev if -90 <= elev <= 90 else None,
            azim if 0 <= azim <= 359 else None,
            cno or None,
            (flags >> 3) & 1,
        ]


def _ubx_eoe(e, p):
    pass


_UBX = {UBX_PVT: _ubx_pvt, UBX_DOP: _ubx_dop, UBX_TIMEUTC: _ubx_timeutc, UBX_SAT: _ubx_sat, UBX_EOE: _ubx_eoe}
