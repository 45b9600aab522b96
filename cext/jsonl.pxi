# JSON lines for `tianwang decode` (twin: json_lines in cext/jsonl_py.py, which is the standard
# library's encoder): the same text as json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
# for obj = {"topic": prefix + channel, "device_time_ns": ..., "payload": ...}, with NaN/infinity
# written as null and bytes as hex, one line per publication. Floats are written with the powers
# of ten of nmea_sentences.pxi (_NM_POW10), included before this file.

from cpython.conversion cimport PyOS_double_to_string, Py_DTSF_ADD_DOT_0
from cpython.mem cimport PyMem_Malloc, PyMem_Realloc, PyMem_Free
from cpython.unicode cimport PyUnicode_AsUTF8AndSize, PyUnicode_DecodeUTF8
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.dict cimport PyDict_Next
from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.float cimport PyFloat_AS_DOUBLE
from cpython.ref cimport PyObject
from libc.math cimport fabs, isinf, isnan, rint, signbit
from libc.string cimport memcpy

cdef const char* _NM_HEX = b"0123456789abcdef"

cdef extern from "Python.h":
    bint PyUnicode_IS_COMPACT_ASCII(object o)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)
    void* PyUnicode_DATA(object o)


cdef int _nj_grow(_NmJson* b, Py_ssize_t extra) except -1:
    cdef Py_ssize_t cap = b.cap
    cdef char* data
    while cap < b.len + extra:
        cap = cap * 2 if cap else 65536
    data = <char*>PyMem_Realloc(b.data, cap)
    if data == NULL:
        raise MemoryError()
    b.data = data
    b.cap = cap
    return 0


cdef inline int _nj_reserve(_NmJson* b, Py_ssize_t extra) except -1:
    if b.len + extra <= b.cap:
        return 0
    return _nj_grow(b, extra)


cdef inline int _nj_put(_NmJson* b, const char* s, Py_ssize_t n) except -1:
    cdef Py_ssize_t i
    cdef char* d
    if b.len + n > b.cap:
        _nj_grow(b, n)
    d = b.data + b.len
    if n <= 16:  # keys and punctuation: cheaper than a call to memcpy
        for i in range(n):
            d[i] = s[i]
    else:
        memcpy(d, s, n)
    b.len += n
    return 0


cdef inline int _nj_byte(_NmJson* b, char c) except -1:
    if b.len + 1 > b.cap:
        _nj_grow(b, 1)
    b.data[b.len] = c
    b.len += 1
    return 0


cdef int _nj_chars(_NmJson* b, str s) except -1:
    # the characters of a JSON string, escaped as json does with ensure_ascii=False
    cdef Py_ssize_t n, i
    cdef const char* p
    cdef unsigned char c
    if PyUnicode_IS_COMPACT_ASCII(s):
        # ASCII (every key and most values): copied whole unless something needs escaping
        n = PyUnicode_GET_LENGTH(s)
        p = <const char*>PyUnicode_DATA(s)
        for i in range(n):
            c = <unsigned char>p[i]
            if c < 0x20 or c == 34 or c == 92:
                break
        else:
            return _nj_put(b, p, n)
    p = PyUnicode_AsUTF8AndSize(s, &n)
    _nj_reserve(b, n)
    for i in range(n):
        c = <unsigned char>p[i]
        if c >= 0x20 and c != 34 and c != 92:
            b.data[b.len] = <char>c
            b.len += 1
            continue
        _nj_reserve(b, 6 + n - i)
        b.data[b.len] = 92
        if c == 34 or c == 92:
            b.data[b.len + 1] = <char>c
            b.len += 2
        elif c == 10:
            b.data[b.len + 1] = 110
            b.len += 2
        elif c == 13:
            b.data[b.len + 1] = 114
            b.len += 2
        elif c == 9:
            b.data[b.len + 1] = 116
            b.len += 2
        elif c == 8:
            b.data[b.len + 1] = 98
            b.len += 2
        elif c == 12:
            b.data[b.len + 1] = 102
            b.len += 2
        else:
            b.data[b.len + 1] = 117
            b.data[b.len + 2] = 48
            b.data[b.len + 3] = 48
            b.data[b.len + 4] = _NM_HEX[c >> 4]
            b.data[b.len + 5] = _NM_HEX[c & 15]
            b.len += 6
    return 0


cdef const char* _NJ_DIGITS2 = (b"00010203040506070809101112131415161718192021222324252627282930313233343536373839"
                                 b"40414243444546474849505152535455565758596061626364656667686970717273747576777879"
                                 b"8081828384858687888990919293949596979899")


@cython.cdivision(True)
cdef int _nj_ull(_NmJson* b, unsigned long long v) except -1:
    # two digits per division (times in ns have 19 digits)
    cdef char tmp[24]
    cdef int k = 24
    cdef unsigned long long q
    cdef unsigned int r
    if v < 10:
        return _nj_byte(b, <char>(48 + v))
    while v >= 100:
        q = v // 100
        r = <unsigned int>(v - q * 100)
        k -= 2
        tmp[k] = _NJ_DIGITS2[2 * r]
        tmp[k + 1] = _NJ_DIGITS2[2 * r + 1]
        v = q
    if v >= 10:
        k -= 2
        tmp[k] = _NJ_DIGITS2[2 * v]
        tmp[k + 1] = _NJ_DIGITS2[2 * v + 1]
    else:
        k -= 1
        tmp[k] = <char>(48 + v)
    return _nj_put(b, tmp + k, 24 - k)


@cython.cdivision(True)
cdef int _nj_float(_NmJson* b, double x) except -1:
    # float.__repr__, fast when the value is a decimal with at most 9 places (what NMEA fields and
    # the rounded positions give): the smallest d with rint(x * 10**d) / 10**d == x names the
    # shortest string that reads back as x; below 1e6 only one such string exists at that d.
    cdef double a = fabs(x), t
    cdef long long k
    cdef unsigned long long whole, frac
    cdef int d, i
    cdef char* s
    cdef char tmp[24]
    if isnan(x) or isinf(x):
        return _nj_put(b, "null", 4)
    if a == 0.0:
        return _nj_put(b, "-0.0", 4) if signbit(x) else _nj_put(b, "0.0", 3)
    if 1e-4 <= a < 1e6:
        for d in range(10):
            t = rint(a * _NM_POW10[d])
            if t / _NM_POW10[d] == a:
                k = <long long>t
                if signbit(x):
                    _nj_put(b, "-", 1)
                whole = <unsigned long long>(k // <long long>_NM_POW10[d])
                frac = <unsigned long long>(k % <long long>_NM_POW10[d])
                _nj_ull(b, whole)
                if d == 0:
                    return _nj_put(b, ".0", 2)
                tmp[0] = 46
                for i in range(d, 0, -1):
                    tmp[i] = <char>(48 + frac % 10)
                    frac //= 10
                return _nj_put(b, tmp, d + 1)
    s = PyOS_double_to_string(x, b'r', 0, Py_DTSF_ADD_DOT_0, NULL)
    try:
        i = 0
        while s[i]:
            i += 1
        _nj_put(b, s, i)
    finally:
        PyMem_Free(s)
    return 0


cdef int _nj_key(_NmJson* b, object key) except -1:
    # json turns these keys into strings; any other key is a TypeError there too
    if key is True:
        return _nj_put(b, "true", 4)
    if key is False:
        return _nj_put(b, "false", 5)
    if key is None:
        return _nj_put(b, "null", 4)
    if isinstance(key, int):
        return _nj_value(b, key, 0)
    if isinstance(key, float):
        if isnan(<double>key) or isinf(<double>key):
            raise ValueError("out of range float values are not JSON compliant")
        return _nj_float(b, <double>key)
    raise TypeError(f"keys must be str, int, float, bool or None, not {type(key).__name__}")


# Dict keys already written, by object: `,"key":` for exact-str ASCII keys without escapes. The
# payload keys are the same few str objects every time (module constants), so most keys are one
# memcpy. A slot holds a strong reference to its key (_NJ_KEYS_ALIVE), so the address it is found
# by cannot be reused by another object while it is cached.
cdef enum:
    NJ_KEY_SLOTS = 512
    NJ_KEY_TEXT = 40

cdef struct _NjKey:
    PyObject* key
    Py_ssize_t len
    char text[NJ_KEY_TEXT]

cdef _NjKey _NJ_KEYS[NJ_KEY_SLOTS]
cdef list _NJ_KEYS_ALIVE = [None] * NJ_KEY_SLOTS


cdef int _nj_dict_key(_NmJson* b, PyObject* key, bint first) except -1:
    # `"key":` (first) or `,"key":`
    cdef size_t slot = (<size_t>key >> 4) & (NJ_KEY_SLOTS - 1)
    cdef _NjKey* ent = &_NJ_KEYS[slot]
    cdef Py_ssize_t n, i
    cdef const char* p
    cdef unsigned char c
    if ent.key == key:
        if first:
            return _nj_put(b, ent.text + 1, ent.len - 1)
        return _nj_put(b, ent.text, ent.len)
    if type(<object>key) is str and PyUnicode_IS_COMPACT_ASCII(<object>key):
        n = PyUnicode_GET_LENGTH(<object>key)
        if n <= NJ_KEY_TEXT - 4:
            p = <const char*>PyUnicode_DATA(<object>key)
            for i in range(n):
                c = <unsigned char>p[i]
                if c < 0x20 or c == 34 or c == 92:
                    break
            else:
                ent.text[0] = 44
                ent.text[1] = 34
                memcpy(ent.text + 2, p, n)
                ent.text[n + 2] = 34
                ent.text[n + 3] = 58
                ent.len = n + 4
                ent.key = key
                _NJ_KEYS_ALIVE[slot] = <object>key
                if first:
                    return _nj_put(b, ent.text + 1, ent.len - 1)
                return _nj_put(b, ent.text, ent.len)
    _nj_put(b, ",\"", 2) if not first else _nj_byte(b, 34)
    if isinstance(<object>key, str):
        _nj_chars(b, <str>key)
    else:
        _nj_key(b, <object>key)
    return _nj_put(b, "\":", 2)


cdef int _nj_bytes(_NmJson* b, object o) except -1:
    cdef const unsigned char[::1] view = bytes(o) if not isinstance(o, bytes) else o
    cdef Py_ssize_t n = view.shape[0], i
    _nj_reserve(b, 2 * n + 2)
    b.data[b.len] = 34
    b.len += 1
    for i in range(n):
        b.data[b.len] = _NM_HEX[view[i] >> 4]
        b.data[b.len + 1] = _NM_HEX[view[i] & 15]
        b.len += 2
    return _nj_byte(b, 34)


cdef int _nj_value(_NmJson* b, object o, int depth) except -1:
    cdef object t = type(o)
    cdef long long v
    cdef int overflow
    cdef Py_ssize_t pos = 0, n
    cdef PyObject* key
    cdef PyObject* val
    cdef bint first
    if depth > NM_JSON_MAX_DEPTH:
        raise ValueError("payload nested too deeply (or circular)")
    if t is float:  # the common cases first; subclasses go the long way below
        return _nj_float(b, PyFloat_AS_DOUBLE(o))
    if t is dict:
        _nj_byte(b, 123)  # {
        first = True
        while PyDict_Next(o, &pos, &key, &val):
            _nj_dict_key(b, key, first)
            first = False
            _nj_value(b, <object>val, depth + 1)
        return _nj_byte(b, 125)  # }
    if t is str or isinstance(o, str):
        _nj_byte(b, 34)
        _nj_chars(b, o)
        return _nj_byte(b, 34)
    if o is None:
        return _nj_put(b, "null", 4)
    if o is True:
        return _nj_put(b, "true", 4)
    if o is False:
        return _nj_put(b, "false", 5)
    if t is int or isinstance(o, int):
        v = PyLong_AsLongLongAndOverflow(o, &overflow)
        if 0 <= v < 10 and b.len < b.cap:  # counts, qualities, modes
            b.data[b.len] = <char>(48 + v)
            b.len += 1
            return 0
        if overflow:
            s = int.__repr__(o)
            return _nj_put(b, PyUnicode_AsUTF8AndSize(s, &n), n)
        if v < 0:
            _nj_put(b, "-", 1)
            return _nj_ull(b, <unsigned long long>(-(v + 1)) + 1)
        return _nj_ull(b, <unsigned long long>v)
    if isinstance(o, float):
        return _nj_float(b, <double>o)
    if isinstance(o, dict):
        _nj_byte(b, 123)  # {
        first = True
        while PyDict_Next(o, &pos, &key, &val):
            _nj_dict_key(b, key, first)
            first = False
            _nj_value(b, <object>val, depth + 1)
        return _nj_byte(b, 125)  # }
    if t is list or t is tuple or isinstance(o, (list, tuple, set, frozenset)):
        _nj_byte(b, 91)  # [
        first = True
        for item in o:
            if not first:
                _nj_byte(b, 44)
            first = False
            _nj_value(b, item, depth + 1)
        return _nj_byte(b, 93)  # ]
    if isinstance(o, (bytes, bytearray, memoryview)):
        return _nj_bytes(b, o)
    raise TypeError(f"cannot write {type(o).__name__} as JSON")


cdef int _nj_lines(_NmJson* b, str prefix, publications) except -1:
    for pub in publications:
        _nj_put(b, "{\"topic\":\"", 10)
        _nj_chars(b, prefix)
        _nj_chars(b, pub.channel)
        _nj_put(b, "\",\"device_time_ns\":", 19)
        _nj_value(b, pub.device_time_ns, 1)
        _nj_put(b, ",\"payload\":", 11)
        _nj_value(b, pub.payload, 1)
        _nj_put(b, "}\n", 2)
    return 0


def json_lines(str prefix, publications):
    """One JSON line per publication: {"topic": prefix + channel, "device_time_ns", "payload"}.

    Raises TypeError for payload values JSON cannot carry (other than NaN/infinity, written as
    null, and bytes, written as hex) and ValueError for circular payloads.
    """
    cdef _NmJson b
    b.data = NULL
    b.len = 0
    b.cap = 0
    try:
        _nj_lines(&b, prefix, publications)
        return PyUnicode_DecodeUTF8(b.data, b.len, NULL) if b.len else ""
    finally:
        PyMem_Free(b.data)


def json_lines_utf8(str prefix, publications):
    """json_lines(prefix, publications) encoded in UTF-8, for writing to a binary stream without a
    text layer. Raises what json_lines raises, and UnicodeEncodeError for lone surrogates."""
    cdef _NmJson b
    b.data = NULL
    b.len = 0
    b.cap = 0
    try:
        _nj_lines(&b, prefix, publications)
        return PyBytes_FromStringAndSize(b.data, b.len) if b.len else b""
    finally:
        PyMem_Free(b.data)
