# Envelope encoder and the journal's in-memory log (twin: gateway/envelope_py.py)

cdef class EntryLog:
    cdef readonly Py_ssize_t max_bytes          # retention: wire bytes + ENTRY_OVERHEAD per entry
    cdef readonly unsigned long long first_seq  # oldest seq held
    cdef readonly unsigned long long next_seq   # seq of the next append
    cdef readonly Py_ssize_t nbytes             # bytes held, by the same accounting
    cdef readonly unsigned long long trimmed    # entries dropped by retention since creation
    cdef list _entries                          # framed entries (bytes); None once trimmed
    cdef list _topics                           # topic (str) of each entry; None once trimmed
    cdef Py_ssize_t _head                       # list index of first_seq

    cdef int _trim(self) except -1
