# 0x7E-delimited framers: JT/T 808, GB/T 20999, NTCIP PMPP (twin: cext/frame7e_py.py)

from libc.stdint cimport uint8_t

cdef enum Frame7eKind:
    F7_JT808 = 0        # 7E header body xor 7E; 7D 01 / 7D 02 escapes
    F7_GBT20999 = 1     # 7E len version..data crc 7D; 5C x escapes (or none: framed by length)
    F7_PMPP = 2         # 7E addr ctrl ipi info fcs 7E; 7D (x ^ 0x20) escapes

cdef enum Frame7eState:
    F7_HUNT = 0         # looking for a start flag; what is skipped is noise (a resync)
    F7_FRAME = 1        # inside a frame, unescaping into the frame buffer
    F7_DISCARD = 2      # the frame grew too long: skipping up to the next 0x7E

cdef enum Frame7eReason:  # index into drop_counts and REASONS
    F7_BAD_CHECKSUM = 0
    F7_BAD_ESCAPE = 1
    F7_TOO_LONG = 2
    F7_BAD_LENGTH = 3
    F7_TRUNCATED = 4
    F7_N_REASONS = 5


cdef class _Frame7e:
    # configuration
    cdef int kind                       # Frame7eKind
    cdef readonly bint escaped          # False only for an unescaped GB/T profile (length framing)
    cdef int adjust                     # GB/T: N (bytes between the flags) = length field + adjust
    cdef const unsigned short* crc_table  # GB/T: the profile's MSB-first [8][256] CRC tables, flat
    cdef unsigned short crc_init
    cdef uint8_t esc_byte               # 0x7D, or 0x5C for GB/T
    cdef readonly Py_ssize_t max_frame  # unescaped bytes between the flags
    cdef readonly bint keep_rejects
    # counters
    cdef readonly unsigned long long frames
    cdef readonly unsigned long long resyncs
    cdef readonly unsigned long long dropped_bytes
    cdef readonly unsigned long long bytes_in
    cdef unsigned long long drop_counts[5]
    cdef list rejects                   # (reason, content) pairs for take_rejects()
    # stream state
    cdef int state                      # Frame7eState
    cdef bint in_noise                  # the last bytes hunted were noise: one resync per run
    cdef bint esc                       # an escape byte waits for its partner
    cdef bint bad                       # a bad escape was seen: the frame is dropped at its end
    cdef Py_ssize_t raw                 # wire bytes of the open frame, flags excluded
    cdef uint8_t* buf                   # unescaped content of the open frame (capacity max_frame + 1)
    cdef Py_ssize_t buf_len
    cdef uint8_t* carry                 # unescaped GB/T: a pending candidate from its 7E on
    cdef Py_ssize_t carry_len           # (capacity max_frame + 2)

    cdef int _setup(self, int kind, object max_frame, object keep_rejects) except -1
    # count a drop; `content` (may be NULL) is kept for take_rejects(). 0 or -1 = exception set
    cdef int _drop(self, int reason, Py_ssize_t nbytes, const uint8_t* content, Py_ssize_t clen) except -1
    cdef void _noise(self, Py_ssize_t n) noexcept
    cdef void _open(self) noexcept
    # reason of a whole unescaped frame, or -1 = good (then *off/*length locate what is delivered)
    cdef int _check(self, const uint8_t* c, Py_ssize_t n, Py_ssize_t* off, Py_ssize_t* length) noexcept
    # check, then deliver to `out` or count the drop. 0 or -1 = exception set
    cdef int _finish_frame(self, const uint8_t* c, Py_ssize_t n, Py_ssize_t nbytes, list out) except -1
    # GB/T frame ended by 7D: check, splitting at escaped 7Es after a stump. 0 or -1 = exception set
    cdef int _finish_gbt(self, const uint8_t* c, Py_ssize_t n, Py_ssize_t nbytes, list out) except -1
    # GB/T: the last 7E in c[:n] where the part before it (from the 7E before) or the rest after it
    # is a good frame, or NULL
    cdef const uint8_t* _last_recovering_split(self, const uint8_t* c, Py_ssize_t n) noexcept
    # GB/T: check c[:idx] (before a swallowed 7E at c[idx]) as a frame; its wire bytes, -1 = exception set
    cdef Py_ssize_t _finish_stump(self, const uint8_t* c, Py_ssize_t idx, list out) except -1
    # index in run of the byte that would make the frame too long, or m
    cdef Py_ssize_t _room(self, const uint8_t* run, Py_ssize_t m) noexcept
    # append unescaped bytes: 1 = taken, 0 = too long (counted and discarding, or GB/T: split at a
    # swallowed 7E, the rest open), -1 = exception set
    cdef int _take(self, const uint8_t* run, Py_ssize_t m, list out) except -1
    # read the open frame from p[pos:n]: position after what was used; -2 = exception set
    cdef Py_ssize_t _frame(self, const uint8_t* p, Py_ssize_t pos, Py_ssize_t n, list out) except -2
    # unescaped GB/T: bytes used from w[:n] (the rest is a pending candidate); -2 = exception set
    cdef Py_ssize_t _scan_length(self, const uint8_t* w, Py_ssize_t n, list out, bint final) except -2
    cdef int _feed(self, const uint8_t* p, Py_ssize_t n, list out) except -1


cdef class Jt808Framer(_Frame7e):
    pass


cdef class PmppFramer(_Frame7e):
    pass


cdef class Gbt20999Framer(_Frame7e):
    cdef readonly object length_field   # "n-2" | "n" | "n-4": what the length field holds
    cdef readonly object crc            # "gbt20999" | "ccitt-false"


cdef class _Bytes:
    # a read-only view of a bytes-like argument, released with the object
    cdef Py_buffer view
    cdef bint held                      # view must be released
    cdef const uint8_t* p
    cdef Py_ssize_t n
