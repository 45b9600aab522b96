# Envelope encoder and the journal's in-memory log (twin: cext/envelope_py.py)
from libc.stdint cimport int64_t

cdef class EntryLog:
    cdef readonly Py_ssize_t max_bytes          # retention: wire bytes + ENTRY_OVERHEAD per entry
    cdef readonly unsigned long long first_seq  # oldest seq held
    cdef readonly unsigned long long next_seq   # seq of the next append
    cdef readonly Py_ssize_t nbytes             # bytes held, by the same accounting
    cdef readonly unsigned long long trimmed    # entries dropped by retention since creation
    cdef list _entries                          # framed entries (bytes); None once trimmed
    cdef list _topics                           # topic (str) of each entry; None once trimmed
    cdef Py_ssize_t _head                       # list index of first_seq
    cdef public object waiter                   # an asyncio Future resolved (and cleared) by the next append
    cdef public object pack                     # payload encoder for publish(): msgpack Packer.pack
    cdef public Py_ssize_t max_payload          # publish() refuses larger encoded payloads
    cdef readonly unsigned long long rejected   # publish() refusals: unencodable or oversize payloads
    cdef public unsigned long long keep_from    # retention never drops this seq or newer (0: no pin)

    # encode + append + wake; returns the seq (0 never happens: seqs start at 1)
    cdef unsigned long long _append(self, str topic, str device_id, int64_t dtime, int64_t gtime, bytes payload) except 0

    cdef int _trim(self) except -1
