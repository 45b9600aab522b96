# NMEA epoch assembly (twin: EpochAssembler and Epoch in cext/nmea_epoch_py.py)

cdef enum:
    NM_N_SYS = 5              # GPS GLO GAL BDS QZSS (indices NM_SYS_* in nmea_epoch.pxi)
    NM_MAX_SEEN = 64          # once-per-epoch sentences remembered per epoch


cdef class Epoch:
    cdef readonly long long time_ns           # UTC ns since 1970; -1 when the date or time is unknown
    cdef readonly long long time_of_day_ns    # -1 when no sentence carried a time
    cdef readonly double lat, lon, alt_m, geoid_sep_m, speed_mps, course_deg, hdop, pdop, vdop
    cdef readonly int quality                 # GGA quality (0 when the epoch is not a fix)
    cdef readonly int mode                    # 1 no fix, 2 2D, 3 3D
    cdef readonly int sats_used_total
    cdef readonly int sentences               # sentences that made this epoch
    cdef readonly object no_fix_reason        # None for a fix, else why not (str)
    cdef readonly object closed_by            # "end" (its last sentence), "next" (next epoch began), "flush"
    cdef unsigned long long _used[NM_N_SYS]   # bit svid set: used in the solution (from GSA)
    cdef unsigned long long _view[NM_N_SYS]   # bit svid set: in view (from GSV)
    cdef list _gsv                            # the epoch's GSV messages, for satellites()


cdef class EpochAssembler:
    cdef readonly unsigned long long epochs   # epochs completed
    cdef readonly unsigned long long fragments  # epochs without time or position, dropped
    cdef readonly unsigned long long closed_by_end, closed_by_next, closed_by_flush
    cdef Epoch _cur                           # the epoch being assembled, or None
    # what the sentences of the current epoch said, beyond what Epoch holds
    cdef int _pos_rank                        # 0 none, 1 GLL, 2 RMC, 3 GNS, 4 GGA: best position source so far
    cdef int _anchored                        # a GGA/RMC/GLL/GNS/ZDA is in the epoch (else it is a fragment)
    cdef int _anchor_at                       # e.sentences after the last GGA/RMC/GLL/GNS/ZDA (-1 none)
    cdef int _has_gga, _gga_quality, _gga_sats
    cdef double _gga_hdop
    cdef int _rmc_valid                       # -1 no RMC, 1 status A, 0 status V
    cdef int _mode_quality                    # quality implied by an RMC/GNS/GLL mode letter, -1 none
    cdef int _speed_rank                      # 0 none, 1 VTG, 2 RMC
    cdef int _gsa_count, _gsa_fix
    cdef long long _rmc_days, _zda_days       # days since 1970 (NM_NO_DAYS when absent)
    cdef long long _zda_tod
    cdef long long _seen[NM_MAX_SEEN]         # keys of once-per-epoch sentences in this epoch
    cdef int _seen_at[NM_MAX_SEEN]            # e.sentences when each of them first arrived
    cdef int _nseen
    # cycle learning: the sentence a receiver ends its epochs with
    cdef long long _last_key, _candidate, _ender
    cdef int _misses
    # date carried from epoch to epoch (midnight rollover)
    cdef long long _last_days, _last_tod

    # 0 = done, -1 = exception set
    cdef int _arrive(self, long long tod, long long key, int once, list out) except -1
    cdef int _close(self, list out, str how) except -1
    cdef int _learn(self) except -1
    cdef int _sats_from(self, object msg, unsigned long long* bits) except -1
