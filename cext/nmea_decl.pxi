# NMEA 0183 framer + decoder (twin: drivers/beidou/nmea_py.py)
#
# Typed messages: one cdef class per sentence formatter, C-typed fields, no per-field objects except
# the strings and tuples a caller asked for. Missing numeric fields are NaN (floats) or -1 (ints);
# missing one-letter fields are "". Field meanings are in the docstrings in nmea.pxi.

cdef enum:
    NM_MAX_FIELDS = 128       # commas recorded per sentence; past this the last field keeps the rest
    NM_GSV_MAX_SATS = 16      # satellite groups per GSV sentence (the standard sends at most 4)
    NM_N_REASONS = 7          # drop reasons, in the order of NMEA_DROP_REASONS


cdef class GGA:
    cdef readonly str talker
    cdef readonly long long time_of_day_ns
    cdef readonly double lat, lon
    cdef readonly int quality, sats_used
    cdef readonly double hdop, alt_m, geoid_sep_m, dgps_age_s
    cdef readonly int dgps_station


cdef class RMC:
    cdef readonly str talker
    cdef readonly long long time_of_day_ns
    cdef readonly str status
    cdef readonly double lat, lon, speed_knots, course_deg
    cdef readonly int year, month, day
    cdef readonly double mag_var_deg
    cdef readonly str mode, nav_status


cdef class GSA:
    cdef readonly str talker
    cdef readonly str selection
    cdef readonly int fix_type
    cdef readonly tuple svids
    cdef readonly double pdop, hdop, vdop
    cdef readonly int system_id


cdef class GSV:
    cdef readonly str talker
    cdef readonly int total, number, sats_in_view
    cdef readonly int signal_id
    cdef int _nsats                        # satellite groups held in the arrays below
    cdef int _svid[NM_GSV_MAX_SATS]
    cdef int _elev[NM_GSV_MAX_SATS]
    cdef int _az[NM_GSV_MAX_SATS]
    cdef int _snr[NM_GSV_MAX_SATS]


cdef class GLL:
    cdef readonly str talker
    cdef readonly double lat, lon
    cdef readonly long long time_of_day_ns
    cdef readonly str status, mode


cdef class VTG:
    cdef readonly str talker
    cdef readonly double course_deg, course_mag_deg, speed_knots, speed_kmh
    cdef readonly str mode


cdef class ZDA:
    cdef readonly str talker
    cdef readonly long long time_of_day_ns
    cdef readonly int day, month, year, zone_hours, zone_minutes


cdef class GST:
    cdef readonly str talker
    cdef readonly long long time_of_day_ns
    cdef readonly double rms, sd_major_m, sd_minor_m, orientation_deg, sd_lat_m, sd_lon_m, sd_alt_m


cdef class GNS:
    cdef readonly str talker
    cdef readonly long long time_of_day_ns
    cdef readonly double lat, lon
    cdef readonly str mode
    cdef readonly int sats_used
    cdef readonly double hdop, alt_m, geoid_sep_m, dgps_age_s
    cdef readonly int dgps_station
    cdef readonly str nav_status


cdef class TXT:
    cdef readonly str talker
    cdef readonly int total, number, text_id
    cdef readonly str text


cdef class TXR:
    cdef readonly str talker
    cdef readonly int kind
    cdef readonly str sender
    cdef readonly int encoding
    cdef readonly str send_time
    cdef readonly bytes content


cdef class FKI:
    cdef readonly str talker
    cdef readonly str form                 # "2.1" or "bds3"
    cdef readonly long long time_of_day_ns
    cdef readonly str command
    cdef readonly bint executed
    cdef readonly int interval_ok, suppression, reason, wait_s


cdef class ICI:
    cdef readonly str talker
    cdef readonly str card_id, serial, broadcast_id
    cdef readonly int user_class, interval_s, level
    cdef readonly bint encrypted
    cdef readonly int subordinates


cdef class ICP:
    cdef readonly str talker
    cdef readonly str card_id, serial, broadcast_id
    cdef readonly int user_class, interval_s, level
    cdef readonly bint encrypted
    cdef readonly int subordinates


cdef class TCI:
    cdef readonly str talker
    cdef readonly str sender, recipient
    cdef readonly int freq_point
    cdef readonly str send_time
    cdef readonly int encoding, ack
    cdef readonly bytes content


cdef class PWI:
    cdef readonly str talker
    cdef readonly long long time_of_day_ns
    cdef readonly tuple rdss2, s2c


cdef class RawSentence:
    cdef readonly str talker
    cdef readonly str address
    cdef readonly tuple fields


cdef class NmeaDecoder:
    cdef readonly Py_ssize_t max_length          # longest sentence kept, `$` to checksum, no CR/LF
    cdef readonly Py_ssize_t max_message_length  # the same for RDSS message sentences (TXR, TCI)
    cdef readonly Py_ssize_t max_binary_length   # longest UBX/RTCM3/CASIC frame recognised and skipped
    cdef readonly bint require_checksum          # drop sentences without `*hh` (default: accept them)
    cdef readonly unsigned long long frames      # sentences delivered (typed or raw)
    cdef readonly unsigned long long resyncs     # runs of noise skipped while hunting for `$`
    cdef readonly unsigned long long dropped_bytes
    cdef readonly unsigned long long unchecked   # sentences delivered that had no checksum
    cdef unsigned long long _drops[NM_N_REASONS]
    cdef int _state                              # NM_IDLE, NM_NOISE or NM_SKIP (see nmea.pxi)
    cdef bytes _tail                             # unconsumed bytes (a partial sentence or binary frame)

    # Scan buf[0:n]; append messages to out. Returns bytes consumed (the rest is kept as the tail),
    # -1 = exception set.
    cdef Py_ssize_t _scan(self, const unsigned char* buf, Py_ssize_t n, list out, bint final) except -1
    # A complete sentence buf[s:end] (without terminator); star = index of '*' or -1, x = XOR.
    # Appends the message or counts the drop. 0 = done, -1 = exception set.
    cdef int _sentence(self, const unsigned char* buf, Py_ssize_t s, Py_ssize_t end, Py_ssize_t star,
                       unsigned int x, Py_ssize_t* commas, int ncommas, list out) except -1
    # Length of a valid binary frame at buf[pos] (0 = not a frame, -1 = need more bytes).
    cdef Py_ssize_t _binary(self, const unsigned char* buf, Py_ssize_t pos, Py_ssize_t n) noexcept
    # Count one dropped sentence or frame of nbytes; always 0.
    cdef int _drop(self, int reason, Py_ssize_t nbytes) noexcept


# Epoch assembly (twin: EpochAssembler and Epoch in drivers/beidou/nmea_py.py)

cdef enum:
    NM_N_SYS = 5              # GPS GLO GAL BDS QZSS (indices NM_SYS_* in nmea.pxi)
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
    cdef unsigned long long _used[NM_N_SYS]   # bit svid set: used in the solution (from GSA)
    cdef unsigned long long _view[NM_N_SYS]   # bit svid set: in view (from GSV)
    cdef list _gsv                            # the epoch's GSV messages, for satellites()


cdef class EpochAssembler:
    cdef readonly unsigned long long epochs   # epochs completed
    cdef Epoch _cur                           # the epoch being assembled, or None
    # what the sentences of the current epoch said, beyond what Epoch holds
    cdef int _pos_rank                        # 0 none, 1 GLL, 2 RMC, 3 GNS, 4 GGA: best position source so far
    cdef int _anchored                        # a GGA/RMC/GLL/GNS/ZDA is in the epoch (else it is a fragment)
    cdef int _has_gga, _gga_quality, _gga_sats
    cdef double _gga_hdop
    cdef int _rmc_valid                       # -1 no RMC, 1 status A, 0 status V
    cdef int _mode_quality                    # quality implied by an RMC/GNS/GLL mode letter, -1 none
    cdef int _speed_rank                      # 0 none, 1 VTG, 2 RMC
    cdef int _gsa_count, _gsa_fix
    cdef long long _rmc_days, _zda_days       # days since 1970 (NM_NO_DAYS when absent)
    cdef long long _zda_tod
    cdef long long _seen[NM_MAX_SEEN]         # keys of once-per-epoch sentences in this epoch
    cdef int _nseen
    # cycle learning: the sentence a receiver ends its epochs with
    cdef long long _last_key, _candidate, _ender
    cdef int _misses
    # date carried from epoch to epoch (midnight rollover)
    cdef long long _last_days, _last_tod

    # 0 = done, -1 = exception set
    cdef int _arrive(self, long long tod, long long key, bint once, list out) except -1
    cdef int _close(self, list out) except -1
    cdef int _sats_from(self, object msg, unsigned long long* bits) except -1
