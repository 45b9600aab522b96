# A BeiDou receiver's epochs -> publications (twin: FixPublisher in cext/nmea_publish_py.py)

cdef class FixPublisher:
    cdef object _publication                  # the Publication class: (channel, payload, device_time_ns)
    cdef bint _plain_publication              # it is a plain dataclass: built without calling its __init__
    cdef object _epoch_type, _frame_type, _binary_epoch_type
    cdef dict _binary                         # "casic"/"ubx" -> BinaryAssembler (empty: NMEA only)
    cdef dict _handlers                       # message type -> callable(message, pubs), other messages
    cdef readonly double hdop_limit
    cdef readonly int min_sats, sky_decimation
    cdef readonly long long stale_ns
    cdef readonly str protocol                # "auto", "nmea", "casic" or "ubx"
    cdef public object state                  # the last state published, None before the first
    cdef readonly long long device_ns         # the latest epoch time (device clock), 0 before the first
    cdef readonly object epoch_ns             # caller's clock at the last epoch, None before the first
    cdef readonly unsigned long long superseded, unused_frames, unused_bytes
    cdef long long _sky_count
    cdef long long _last_epoch_device_ns      # device clock: last epoch (offline STALE); -1 none
    cdef dict _binary_keys                    # source -> key of its last epoch
    cdef dict _held                           # source -> its first epoch, until the next confirms it
    cdef bint _binary_seen                    # a binary epoch has been published
    cdef long long _nmea_run                  # NMEA epochs since the last binary one
    cdef long long _last_fix_ns               # device time of the last fix published (binary receivers)

    cdef object _new(self, str channel, object payload, long long device_ns)
    # 0 = done, -1 = exception set
    cdef int _epoch(self, object e, object now_ns, list pubs) except -1
    cdef int _publish(self, object e, object now_ns, list pubs) except -1
    cdef int _transition(self, str state, object reason, long long device_ns, list pubs) except -1
    cdef list _select(self, object e)
