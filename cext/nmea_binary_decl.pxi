# CASIC and UBX navigation messages -> epochs (twin: BinaryEpoch and BinaryAssembler in
# cext/nmea_binary_py.py)

cdef enum:
    NB_N_SYS = 5              # GPS GLO GAL BDS QZSS, the indices of nmea_epoch.pxi (NM_SYS_*)
    NB_NONE = -32768          # a satellite's elevation, azimuth or SNR that was not given (None)


cdef class BinaryEpoch:
    cdef readonly str source                  # "casic" or "ubx"
    cdef readonly long long key               # the epoch's runTime (CASIC) or iTOW (UBX), ms
    cdef readonly long long time_ns           # UTC ns since 1970; -1 when no message gave a valid time
    cdef readonly double lat, lon, alt_m, speed_mps, course_deg, hdop, pdop, vdop  # NaN = not given
    cdef readonly int quality                 # GGA-style quality (0 when the epoch is not a fix)
    cdef readonly int mode                    # 1 no fix, 2 2D, 3 3D
    cdef readonly bint fix_seen               # a NAV-PV / NAV-PVT / NAV-STATUS said whether there is a fix
    cdef readonly bint fix                    # one of them gave a valid position
    cdef readonly int sats_used_pvt           # numSV of NAV-PV / NAV-PVT, -1 when none came
    cdef readonly int sats_used_total
    cdef readonly int messages                # messages merged into this epoch
    cdef readonly object no_fix_reason        # None for a fix, else why not (str)
    cdef readonly object closed_by            # "end", "next" or "flush"
    cdef unsigned long long _view[NB_N_SYS]   # bit svid set: in view (a NAV-*INFO / NAV-SAT entry)
    cdef unsigned long long _used[NB_N_SYS]   # bit svid set: used in the solution
    cdef short _elev[NB_N_SYS][64]            # degrees, NB_NONE when not given
    cdef short _az[NB_N_SYS][64]
    cdef short _snr[NB_N_SYS][64]


cdef class BinaryAssembler:
    cdef readonly str protocol                # "casic" or "ubx"
    cdef readonly unsigned long long messages   # NAV messages decoded
    cdef readonly unsigned long long bad        # NAV messages of an impossible length or content, skipped
    cdef readonly unsigned long long ignored    # other classes and ids
    cdef readonly unsigned long long epochs     # epochs completed
    cdef readonly unsigned long long fragments  # epochs with no fix information and no time, dropped
    cdef readonly unsigned long long closed_by_end, closed_by_next, closed_by_flush
    cdef bint _ubx
    cdef BinaryEpoch _cur                     # the epoch being assembled, or None
    # cycle learning (message ids; -1 = none): the message a receiver ends its epochs with
    cdef int _last_type, _candidate, _ender, _misses
    # the last epoch that carried its own time (CASIC epochs without NAV-TIMEUTC are dated from it)
    cdef bint _has_utc
    cdef long long _utc_key, _utc_ns

    # 0 = done, -1 = exception set
    cdef int _learn(self) except -1
    cdef int _close(self, list out, str how) except -1
