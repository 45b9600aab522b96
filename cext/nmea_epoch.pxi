# NMEA epoch assembly: the typed sentences of one fix time -> one Epoch (EpochAssembler).
# Twin: Epoch and EpochAssembler in cext/nmea_epoch_py.py. The messages it merges are the classes of
# nmea_sentences.pxi (included before this file), as NmeaDecoder delivers them.
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

cimport cython
from libc.math cimport NAN, isnan, rint

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

cdef enum:
    NM_REPEAT_NONE = 0     # a repeat within the epoch is merged (GN GSA without System ID)
    NM_REPEAT_NEW = 1      # a repeat starts the next epoch
    NM_REPEAT_BAND = 2     # a repeat is the next band's, unless a time/position sentence came since the first

cdef long long NM_NO_DAYS = -(1LL << 40)
cdef long long NM_DAY_NS = 86400000000000LL
cdef long long NM_HALF_DAY_NS = 43200000000000LL

cdef tuple _NM_SYSTEMS = ("GPS", "GLO", "GAL", "BDS", "QZSS")
# payload order (docs/contract.md): BDS first
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


cdef extern from "Python.h":
    dict PyDict_Copy(object d)

# Payload dicts are copies of templates holding every key in its order, then filled in: copying a
# dict's key table is cheaper than inserting each key into a new one (and growing it past five).
cdef dict _NM_SAT_TEMPLATE = {"system": None, "svid": None, "elev": None, "az": None, "snr": None, "used": None}
cdef dict _NM_FIX_TEMPLATE = {"time_ns": None, "lat": None, "lon": None, "alt_m": None, "speed_mps": None,
                              "course_deg": None, "quality": 0, "mode": 1, "hdop": None, "pdop": None,
                              "vdop": None, "sats_used": None, "sats_view": None, "source": "nmea"}
cdef dict _NM_COUNTS_TEMPLATE = {"BDS": 0, "GPS": 0, "GLO": 0, "GAL": 0, "QZSS": 0}


cdef inline dict _nm_sat(str system, int svid, object elev, object az, object snr, bint used):
    # one satellite of a sky payload
    cdef dict d = PyDict_Copy(_NM_SAT_TEMPLATE)
    d["system"] = system
    d["svid"] = svid
    d["elev"] = elev
    d["az"] = az
    d["snr"] = snr
    d["used"] = used
    return d


cdef inline dict _nm_counts(unsigned long long* bits):
    # satellites per constellation, in payload order (docs/contract.md): BDS first
    cdef dict d = PyDict_Copy(_NM_COUNTS_TEMPLATE)
    d["BDS"] = _nm_popcount(bits[NM_SYS_BDS])
    d["GPS"] = _nm_popcount(bits[NM_SYS_GPS])
    d["GLO"] = _nm_popcount(bits[NM_SYS_GLO])
    d["GAL"] = _nm_popcount(bits[NM_SYS_GAL])
    d["QZSS"] = _nm_popcount(bits[NM_SYS_QZSS])
    return d


@cython.freelist(8)
cdef class Epoch:
    """One fix time's worth of sentences, merged. Positions in degrees, speed in m/s; NaN or -1
    where no sentence said. `fix_payload()` is the `gnss/<id>/fix` payload; `satellites()` the sky."""

    @property
    def sats_used(self):
        """Satellites used in the solution per constellation (from GSA System IDs / talkers)."""
        return _nm_counts(self._used)

    @property
    def sats_view(self):
        """Distinct satellites in view per constellation (from the epoch's GSV sentences)."""
        return _nm_counts(self._view)

    @property
    def has_satellites(self):
        return bool(self._gsv)

    def fix_payload(self):
        """The `fix` payload (docs/contract.md); None for values no sentence gave."""
        cdef dict d = PyDict_Copy(_NM_FIX_TEMPLATE)
        d["time_ns"] = self.time_ns if self.time_ns >= 0 else None
        d["lat"] = _nm_round(self.lat, 1e9)
        d["lon"] = _nm_round(self.lon, 1e9)
        d["alt_m"] = _nm_opt(self.alt_m)
        d["speed_mps"] = _nm_round(self.speed_mps, 1e4)
        d["course_deg"] = _nm_opt(self.course_deg)
        d["quality"] = self.quality
        d["mode"] = self.mode
        d["hdop"] = _nm_opt(self.hdop)
        d["pdop"] = _nm_opt(self.pdop)
        d["vdop"] = _nm_opt(self.vdop)
        d["sats_used"] = _nm_counts(self._used)
        d["sats_view"] = _nm_counts(self._view)
        return d

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
                    out.append(_nm_sat(_NM_SYSTEMS[s], svid, elev[s][svid] if elev[s][svid] >= 0 else None,
                                       az[s][svid] if az[s][svid] >= 0 else None,
                                       snr[s][svid] if snr[s][svid] >= 0 else None, (self._used[s] >> svid) & 1))
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
                self._arrive(gga.time_of_day_ns, _nm_key(NM_K_GGA, gga.talker, 0), NM_REPEAT_NEW, out)
                e = self._cur
                self._anchored = 1
                self._anchor_at = e.sentences
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
                self._arrive(rmc.time_of_day_ns, _nm_key(NM_K_RMC, rmc.talker, 0), NM_REPEAT_NEW, out)
                e = self._cur
                self._anchored = 1
                self._anchor_at = e.sentences
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
                # per (talker, system): a repeat is the next band's GSA unless a position or time
                # sentence came since the first (then it starts the next epoch). A GN GSA without
                # System ID comes once per constellation (keyed by its first id) and never marks a
                # new epoch
                if gsa.system_id < 0 and gsa.talker == _T_GN:
                    key = _nm_key(NM_K_GSA, gsa.talker, 1 | ((<int>gsa.svids[0] if gsa.svids else 0) << 5))
                    self._arrive(-1, key, NM_REPEAT_NONE, out)
                else:
                    key = _nm_key(NM_K_GSA, gsa.talker, gsa.system_id + 2)
                    self._arrive(-1, key, NM_REPEAT_BAND, out)
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
                self._arrive(-1, key, NM_REPEAT_NEW, out)
                e = self._cur
                self._sats_from(gsv, e._view)
                e._gsv.append(gsv)
                if gsv.number == gsv.total:
                    # the end-of-cycle key of a group's last part leaves out its number
                    key = _nm_key(NM_K_GSV, gsv.talker, (gsv.signal_id + 2) | (1 << 14))
                self._last_key = key
            elif t is VTG:
                vtg = <VTG>m
                self._arrive(-1, _nm_key(NM_K_VTG, vtg.talker, 0), NM_REPEAT_NEW, out)
                e = self._cur
                if self._speed_rank < 1:
                    self._speed_rank = 1
                    e.speed_mps = (vtg.speed_knots * (1852.0 / 3600.0) if not isnan(vtg.speed_knots)
                                   else vtg.speed_kmh / 3.6)
                    e.course_deg = vtg.course_deg
                self._last_key = _nm_key(NM_K_VTG, vtg.talker, 0)
            elif t is ZDA:
                zda = <ZDA>m
                self._arrive(-1, _nm_key(NM_K_ZDA, zda.talker, 0), NM_REPEAT_NEW, out)
                self._anchored = 1
                self._anchor_at = self._cur.sentences
                if zda.year > 0 and zda.month > 0 and zda.day > 0 and self._zda_days == NM_NO_DAYS:
                    self._zda_days = _nm_days_from_civil(zda.year, zda.month, zda.day)
                    self._zda_tod = zda.time_of_day_ns
                self._last_key = _nm_key(NM_K_ZDA, zda.talker, 0)
            elif t is GNS:
                gns = <GNS>m
                self._arrive(gns.time_of_day_ns, _nm_key(NM_K_GNS, gns.talker, 0), NM_REPEAT_NEW, out)
                e = self._cur
                self._anchored = 1
                self._anchor_at = e.sentences
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
                self._arrive(gll.time_of_day_ns, _nm_key(NM_K_GLL, gll.talker, 0), NM_REPEAT_NEW, out)
                e = self._cur
                self._anchored = 1
                self._anchor_at = e.sentences
                if self._pos_rank < 1 and gll.status != "V" and not isnan(gll.lat) and not isnan(gll.lon):
                    self._pos_rank = 1
                    e.lat = gll.lat
                    e.lon = gll.lon
                if self._mode_quality < 0:
                    self._mode_quality = _nm_mode_quality(gll.mode)
                self._last_key = _nm_key(NM_K_GLL, gll.talker, 0)
            elif t is GST:
                self._arrive(-1, _nm_key(NM_K_GST, (<GST>m).talker, 0), NM_REPEAT_NEW, out)
                self._last_key = _nm_key(NM_K_GST, (<GST>m).talker, 0)
            else:
                out.append(m)
                continue
            if self._ender != 0 and self._last_key == self._ender and self._cur is not None:
                self._misses = 0
                self._close(out, "end")
        return out

    def flush(self, final=False):
        """Close the open epoch (the receiver went quiet, or with final=True the input ended);
        returns [Epoch] or []. A fragment (only GSA/GSV/VTG/GST, no sentence with a position, time
        or date) is not an epoch: it stays open for the sentences that follow, and the learned end
        of cycle is forgotten, since the receiver sent more after it; at the end it is discarded
        (and counted in `fragments`)."""
        cdef list out = []
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

    cdef int _learn(self) except -1:
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
        return 0

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

    cdef int _arrive(self, long long tod, long long key, int once, list out) except -1:
        # a sentence of epoch material is about to be merged: close the current epoch first when
        # this sentence starts the next one
        cdef Epoch e = self._cur
        cdef bint boundary = False
        cdef int i
        if e is not None:
            if tod >= 0 and e.time_of_day_ns >= 0 and tod != e.time_of_day_ns:
                boundary = True
            elif once != NM_REPEAT_NONE:
                for i in range(self._nseen):
                    if self._seen[i] == key:
                        # a per-band repeat is a new epoch only when a position or time sentence
                        # arrived after the first of its kind
                        if once == NM_REPEAT_NEW or self._anchor_at > self._seen_at[i]:
                            boundary = True
                        else:
                            once = NM_REPEAT_NONE
                        break
            if boundary:
                self._learn()
                self._close(out, "next")
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
            e.closed_by = None
            self._cur = e
            self._anchor_at = -1
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
        if once != NM_REPEAT_NONE and self._nseen < NM_MAX_SEEN:
            self._seen[self._nseen] = key
            self._seen_at[self._nseen] = e.sentences
            self._nseen += 1
        e.sentences += 1
        return 0

    cdef int _close(self, list out, str how) except -1:
        cdef Epoch e = self._cur
        cdef long long tod, days = NM_NO_DAYS, diff
        cdef int i, used = 0
        self._cur = None
        if not self._anchored:
            # no time, no position: a fragment of some epoch, never published as a fix
            self.fragments += 1
            return 0
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
