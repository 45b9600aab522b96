# NMEA 0183 typed sentences (twin: cext/nmea_sentences_py.py)
#
# Typed messages: one cdef class per sentence formatter, C-typed fields, no per-field objects except
# the strings and tuples a caller asked for. Missing numeric fields are NaN (floats) or -1 (ints);
# missing one-letter fields are "". Field meanings are in the docstrings in nmea_sentences.pxi.

cdef enum:
    NM_GSV_MAX_SATS = 16      # satellite groups per GSV sentence (the standard sends at most 4)


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


cdef class BinaryFrame:
    cdef readonly str protocol                # "ubx" or "casic"
    cdef readonly int msg_class, msg_id
    cdef readonly bytes payload


cdef class RawSentence:
    cdef readonly str talker
    cdef readonly str address
    cdef readonly tuple fields
