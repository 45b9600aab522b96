# Topic matcher: MQTT-style patterns compiled once, answers cached per topic.
# Twin: cext/topics_py.py (same results, same TopicError messages).

from cpython.dict cimport PyDict_GetItem, PyDict_SetItem
from cpython.ref cimport PyObject
from tianwang.gateway.errors import TopicError, FrameError

cdef enum:
    MAX_TOPIC_LEN = 512
    CACHE_LIMIT = 65536     # per-filter cache; past this many distinct topics it starts over


def validate_topic(topic):
    """Raise TopicError unless `topic` is a concrete topic (no wildcards, no empty level)."""
    if not isinstance(topic, str):
        raise TopicError(f"topic must be a string, not {type(topic).__name__}")
    cdef str t = <str>topic
    if not t:
        raise TopicError("empty topic")
    if len(t) > MAX_TOPIC_LEN:
        raise TopicError(f"topic longer than {MAX_TOPIC_LEN} characters")
    if "\x00" in t:
        raise TopicError("topic contains NUL")
    for level in t.split("/"):
        if not level:
            raise TopicError(f"topic {t!r} has an empty level")
        if "+" in level or "#" in level:
            raise TopicError(f"topic {t!r} contains a wildcard")


def validate_pattern(pattern):
    """Raise TopicError unless `pattern` is a well-formed MQTT-style pattern."""
    if not isinstance(pattern, str):
        raise TopicError(f"pattern must be a string, not {type(pattern).__name__}")
    cdef str p = <str>pattern
    if not p:
        raise TopicError("empty pattern")
    if len(p) > MAX_TOPIC_LEN:
        raise TopicError(f"pattern longer than {MAX_TOPIC_LEN} characters")
    if "\x00" in p:
        raise TopicError("pattern contains NUL")
    cdef list levels = p.split("/")
    cdef Py_ssize_t last = len(levels) - 1, i
    for i in range(len(levels)):
        level = levels[i]
        if not level:
            raise TopicError(f"pattern {p!r} has an empty level")
        if level == "#":
            if i != last:
                raise TopicError(f"pattern {p!r}: '#' must be the last level")
        elif level != "+" and ("+" in level or "#" in level):
            raise TopicError(f"pattern {p!r}: a wildcard must fill a whole level")


cdef bint _match_levels(list plevels, list tlevels):
    cdef Py_ssize_t n = len(tlevels), np = len(plevels), i
    for i in range(np):
        p = plevels[i]
        if p == "#":
            return True
        if i >= n:
            return False
        if p != "+" and p != tlevels[i]:
            return False
    return np == n


def pattern_matches(str pattern, str topic):
    """True when the (valid) pattern matches the (valid) topic."""
    return _match_levels(pattern.split("/"), topic.split("/"))


cdef class TopicFilter:
    """Patterns compiled once, answers cached per topic.

    `matches(topic)` is true when the topic matches any of `patterns` and, if `allowed` is given,
    also any of `allowed` (a token's read ACL). Raises TopicError for a malformed pattern.
    """

    def __init__(self, patterns, allowed=None):
        patterns = tuple(patterns)
        if not patterns:
            raise TopicError("a filter needs at least one pattern")
        for p in patterns:
            validate_pattern(p)
        if allowed is not None:
            allowed = tuple(allowed)
            for p in allowed:
                validate_pattern(p)
        self.patterns = patterns
        self.allowed = allowed
        self._compiled = [p.split("/") for p in patterns]
        self._compiled_allowed = None if allowed is None else [p.split("/") for p in allowed]
        self.match_all = "#" in patterns and (allowed is None or "#" in allowed)
        self._cache = {}

    cdef int check(self, str topic) except -1:
        cdef PyObject* hit = PyDict_GetItem(self._cache, topic)
        if hit != NULL:
            return 1 if <object>hit is True else 0
        cdef bint result = self._compute(topic)
        if len(self._cache) >= CACHE_LIMIT:
            self._cache.clear()
        PyDict_SetItem(self._cache, topic, True if result else False)
        return result

    cdef bint _compute(self, str topic) except -1:
        cdef list levels = topic.split("/")
        cdef bint found = False
        for p in self._compiled:
            if _match_levels(<list>p, levels):
                found = True
                break
        if not found:
            return False
        if self._compiled_allowed is None:
            return True
        for p in self._compiled_allowed:
            if _match_levels(<list>p, levels):
                return True
        return False

    def matches(self, str topic):
        return self.check(topic) == 1

    @property
    def cache_size(self):
        return len(self._cache)

    def __repr__(self):
        return f"TopicFilter({list(self.patterns)!r}, allowed={None if self.allowed is None else list(self.allowed)!r})"
