# NMEA 0183 framer: NmeaDecoder (twin: cext/nmea_framer_py.py)

cdef enum:
    NM_MAX_FIELDS = 128       # commas recorded per sentence; past this the last field keeps the rest
    NM_N_REASONS = 7          # drop reasons, in the order of NMEA_DROP_REASONS


cdef class NmeaDecoder:
    cdef readonly Py_ssize_t max_length          # longest sentence kept, `$` to checksum, no CR/LF
    cdef readonly Py_ssize_t max_message_length  # the same for RDSS message sentences (TXR, TCI)
    cdef readonly Py_ssize_t max_binary_length   # longest UBX/RTCM3/CASIC frame recognised and skipped
    cdef readonly bint require_checksum          # drop sentences without `*hh` (default: accept them)
    cdef readonly bint binary                    # deliver UBX/CASIC frames as BinaryFrame (else drop them)
    cdef readonly unsigned long long binary_frames  # BinaryFrame messages delivered
    cdef readonly unsigned long long frames      # sentences delivered (typed or raw)
    cdef readonly unsigned long long resyncs     # runs of noise skipped while hunting for `$`
    cdef readonly unsigned long long dropped_bytes
    cdef readonly unsigned long long unchecked   # sentences delivered that had no checksum
    cdef unsigned long long _drops[NM_N_REASONS]
    cdef int _state                              # NM_IDLE, NM_NOISE or NM_SKIP (see nmea_framer.pxi)
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
