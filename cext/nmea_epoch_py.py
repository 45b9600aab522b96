"""NMEA epoch assembly: pure-Python twin of `Epoch` and `EpochAssembler` in
`tianwang.cext._speedups` (cext/nmea_epoch.pxi). Import them through `tianwang.gateway.framing`.

Typed messages go in (the classes of cext/nmea_sentences_py.py, as `NmeaDecoder` delivers them);
one `Epoch` per fix time comes out, with every message that is not epoch material passed through.
"""

from __future__ import annotations

from tianwang.cext.nmea_sentences_py import GGA, GLL, GNS, GSA, GST, GSV, NAN, RMC, VTG, ZDA

# ---------------------------------------------------------------------------------------------
# Epoch assembly: the sentences of one fix time -> one Epoch (twin of the compiled EpochAssembler).
#
# Boundaries: a GGA/RMC/GLL/GNS whose time differs from the epoch's; a sentence that appears once
# per epoch (GGA RMC GLL GNS VTG ZDA GST per talker, each GSV part, each constellation's GSA)
# arriving a second time; and, once learned, the
# sentence the receiver ends its epochs with (seen last before two boundaries in a row, a boundary
# being the next epoch's first sentence or a flush() by the caller's quiet-gap timer), so an
# epoch is complete without waiting for the next one. `flush()` closes the open epoch.
# Dual-band receivers send one GSA per band for each constellation (no signal ID to tell them
# apart): a constellation's GSA seen again is a new epoch only when a GGA/RMC/GLL/GNS/ZDA came
# since its first one (satellites-first receivers); before that it is the next band's, and the
# satellites used are the union of them all. The end-of-cycle key of a GSV is its group's last
# part whatever its number, so a sky that grows a part does not lose the learned end.
# An epoch without any GGA/RMC/GLL/GNS/ZDA (only GSA/GSV/VTG/GST: no time, no position) is a
# fragment, never an Epoch: it is counted in `fragments` and dropped. A receiver's own no-fix
# (GGA quality 0, RMC V) is anchored and still comes out, with mode 1.
# How each epoch was closed is counted: `closed_by_end` (the learned last sentence arrived),
# `closed_by_next` (the next epoch began), `closed_by_flush` (flush(): the caller's quiet-gap
# timer, or the end of the input).
# Date: RMC's, else ZDA's (moved across midnight when ZDA's time is on the other side), else the
# previous epoch's, plus a day when the time of day went back by more than 12 hours.

SYSTEMS = ("GPS", "GLO", "GAL", "BDS", "QZSS")
_GPS, _GLO, _GAL, _BDS, _QZSS = range(5)
_MIXED = -2  # a GN talker without System ID: satellites classified by number
_PAYLOAD_ORDER = (_BDS, _GPS, _GLO, _GAL, _QZSS)  # docs/contract.md lists BDS first
_K_GGA, _K_RMC, _K_GSA, _K_GSV, _K_GLL, _K_VTG, _K_ZDA, _K_GST, _K_GNS = range(1, 10)
_NO_DAYS = -(1 << 40)
_DAY_NS = 86_400_000_000_000
_HALF_DAY_NS = 43_200_000_000_000
_MAX_SEEN = 64
# how a sentence's repeat within an epoch is taken (the `once` argument of _arrive)
_REPEAT_NONE, _REPEAT_NEW, _REPEAT_BAND = 0, 1, 2
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

    __slots__ = (
        "time_ns",
        "time_of_day_ns",
        "lat",
        "lon",
        "alt_m",
        "geoid_sep_m",
        "speed_mps",
        "course_deg",
        "hdop",
        "pdop",
        "vdop",
        "quality",
        "mode",
        "sats_used_total",
        "sentences",
        "no_fix_reason",
        "closed_by",
        "_used",
        "_view",
        "_gsv",
    )

    def __init__(self):
        self.time_ns = -1
        self.time_of_day_ns = -1
        self.lat = self.lon = self.alt_m = self.geoid_sep_m = NAN
        self.speed_mps = self.course_deg = self.hdop = self.pdop = self.vdop = NAN
        self.quality = self.mode = self.sats_used_total = self.sentences = 0
        self.no_fix_reason = None
        self.closed_by = None  # "end" (its last sentence), "next" (the next epoch began), "flush"
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
        """The `fix` payload (docs/contract.md); None for values no sentence gave."""
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
                    out.append(
                        {
                            "system": SYSTEMS[s],
                            "svid": svid,
                            "elev": elev if elev >= 0 else None,
                            "az": az if az >= 0 else None,
                            "snr": snr if snr >= 0 else None,
                            "used": bool((self._used[s] >> svid) & 1),
                        }
                    )
        return out

    def __repr__(self):
        return (
            f"Epoch(time_ns={self.time_ns}, lat={self.lat!r}, lon={self.lon!r}, quality={self.quality}, "
            f"mode={self.mode}, sentences={self.sentences}, no_fix_reason={self.no_fix_reason!r})"
        )


class EpochAssembler:
    """Typed NMEA messages in (from NmeaDecoder), Epochs out: `push(messages)` returns, in stream
    order, each completed Epoch and every message that is not epoch material (TXT, RDSS, raw)."""

    def __init__(self):
        self.epochs = 0
        self.fragments = 0
        self.closed_by_end = self.closed_by_next = self.closed_by_flush = 0
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
                self._anchor(e)
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
                self._anchor(e)
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
                # per (talker, system): a repeat is the next band's GSA unless a position or time
                # sentence came since the first (then it starts the next epoch). A GN GSA without
                # System ID comes once per constellation (keyed by its first id) and never marks a
                # new epoch
                if m.system_id < 0 and m.talker == "GN":
                    key = _key(_K_GSA, m.talker, 1 | ((m.svids[0] if m.svids else 0) << 5))
                    e = self._arrive(-1, key, _REPEAT_NONE, out)
                else:
                    key = _key(_K_GSA, m.talker, m.system_id + 2)
                    e = self._arrive(-1, key, _REPEAT_BAND, out)
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
                if m.number == m.total:
                    key = _key(_K_GSV, m.talker, (m.signal_id + 2) | (1 << 14))
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
                    e.speed_mps = (
                        m.speed_knots * (1852.0 / 3600.0) if m.speed_knots == m.speed_knots else m.speed_kmh / 3.6
                    )
                    e.course_deg = m.course_deg
            elif t is ZDA:
                key = _key(_K_ZDA, m.talker, 0)
                self._anchor(self._arrive(-1, key, True, out))
                if m.year > 0 and m.month > 0 and m.day > 0 and self._zda_days == _NO_DAYS:
                    self._zda_days = days_from_civil(m.year, m.month, m.day)
                    self._zda_tod = m.time_of_day_ns
            elif t is GNS:
                key = _key(_K_GNS, m.talker, 0)
                e = self._arrive(m.time_of_day_ns, key, True, out)
                self._anchor(e)
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
                self._anchor(e)
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
                self._close(out, "end")
        return out

    def flush(self, final=False):
        """Close the open epoch (the receiver went quiet, or with final=True the input ended);
        returns [Epoch] or []. A fragment (only GSA/GSV/VTG/GST, no sentence with a position, time
        or date) is not an epoch: it stays open for the sentences that follow, and the learned end
        of cycle is forgotten, since the receiver sent more after it; at the end it is discarded
        (and counted in `fragments`)."""
        out = []
        if self._cur is None:
            return out
        if not self._anchored:
            if final:
                self._cur = None
                self.fragments += 1
            else:
                self._ender = 0
                self._candidate = 0
            return out
        if not final:
            self._learn()
        self._close(out, "flush")
        return out

    def _learn(self):
        # an epoch closes without its learned end (the next one began, or the quiet-gap timer):
        # learn what the receiver sends last, the same sentence last before two such closings
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

    def _anchor(self, e):
        # a sentence with a time or position (GGA RMC GLL GNS ZDA) is in the epoch: it is not a fragment
        self._anchored = True
        self._anchor_at = e.sentences

    def _arrive(self, tod, key, once, out):
        # a sentence of epoch material is about to be merged: close the current epoch first when
        # this sentence starts the next one
        e = self._cur
        if e is not None:
            boundary = False
            if tod >= 0 and e.time_of_day_ns >= 0 and tod != e.time_of_day_ns:
                boundary = True
            elif once and key in self._seen:
                # a per-band repeat (once == _REPEAT_BAND) is a new epoch only when a position or
                # time sentence arrived after the first of its kind
                if once == _REPEAT_NEW or self._anchor_at > self._seen_at[self._seen.index(key)]:
                    boundary = True
                else:
                    once = _REPEAT_NONE
            if boundary:
                self._learn()
                self._close(out, "next")
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
            self._seen_at = []
            self._anchor_at = -1
        if tod >= 0 and e.time_of_day_ns < 0:
            e.time_of_day_ns = tod
        if once and len(self._seen) < _MAX_SEEN:
            self._seen.append(key)
            self._seen_at.append(e.sentences)
        e.sentences += 1
        return e

    def _close(self, out, how):
        e = self._cur
        self._cur = None
        if not self._anchored:
            # no time, no position: a fragment of some epoch, never published as a fix
            self.fragments += 1
            return
        if how == "end":
            self.closed_by_end += 1
        elif how == "next":
            self.closed_by_next += 1
        else:
            self.closed_by_flush += 1
        e.closed_by = how
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
