# Topic matcher (twin: cext/topics_py.py)

cdef class TopicFilter:
    cdef readonly tuple patterns      # what the subscriber asked for
    cdef readonly object allowed      # tuple of the token's read patterns, or None (no ACL)
    cdef readonly bint match_all      # '#' on both sides: every topic matches, skip lookups
    cdef list _compiled               # patterns split into levels
    cdef list _compiled_allowed       # allowed split into levels, or None
    cdef dict _cache                  # topic -> True/False

    # 1 = matches, 0 = does not, -1 = exception set
    cdef int check(self, str topic) except -1
    # uncached answer: True/False, -1 = exception set
    cdef bint _compute(self, str topic) except -1
