# JSON lines writer for `tianwang decode` (twin: cext/jsonl_py.py). No classes: json_lines is a
# module function; this is the growable buffer its helpers write into and the nesting limit.

cdef enum:
    NM_JSON_MAX_DEPTH = 500

cdef struct _NmJson:
    char* data
    Py_ssize_t len
    Py_ssize_t cap
