"""Topic matcher, pure-Python twin of `tianwang.cext._speedups.TopicFilter` and friends.

Topics are `family/device_id/channel[/...]`: non-empty levels, no wildcards. Patterns use MQTT
wildcards: `+` is exactly one level, `#` (last level only) is the rest, including nothing
(`gnss/#` matches `gnss`). A `TopicFilter` compiles its patterns once and caches the answer per topic,
so the journal scan pays one dict lookup per envelope.
"""

from tianwang.gateway.errors import TopicError

MAX_TOPIC_LEN = 512
# the per-filter cache is bounded; past this many distinct topics it starts over
CACHE_LIMIT = 65536


def validate_topic(topic):
    """Raise TopicError unless `topic` is a concrete topic (no wildcards, no empty level)."""
    if not isinstance(topic, str):
        raise TopicError(f"topic must be a string, not {type(topic).__name__}")
    if not topic:
        raise TopicError("empty topic")
    if len(topic) > MAX_TOPIC_LEN:
        raise TopicError(f"topic longer than {MAX_TOPIC_LEN} characters")
    if "\x00" in topic:
        raise TopicError("topic contains NUL")
    for level in topic.split("/"):
        if not level:
            raise TopicError(f"topic {topic!r} has an empty level")
        if "+" in level or "#" in level:
            raise TopicError(f"topic {topic!r} contains a wildcard")


def validate_pattern(pattern):
    """Raise TopicError unless `pattern` is a well-formed MQTT-style pattern."""
    if not isinstance(pattern, str):
        raise TopicError(f"pattern must be a string, not {type(pattern).__name__}")
    if not pattern:
        raise TopicError("empty pattern")
    if len(pattern) > MAX_TOPIC_LEN:
        raise TopicError(f"pattern longer than {MAX_TOPIC_LEN} characters")
    if "\x00" in pattern:
        raise TopicError("pattern contains NUL")
    levels = pattern.split("/")
    last = len(levels) - 1
    for i, level in enumerate(levels):
        if not level:
            raise TopicError(f"pattern {pattern!r} has an empty level")
        if level == "#":
            if i != last:
                raise TopicError(f"pattern {pattern!r}: '#' must be the last level")
        elif level != "+" and ("+" in level or "#" in level):
            raise TopicError(f"pattern {pattern!r}: a wildcard must fill a whole level")


def _match_levels(plevels, tlevels):
    n = len(tlevels)
    for i, p in enumerate(plevels):
        if p == "#":
            return True
        if i >= n:
            return False
        if p != "+" and p != tlevels[i]:
            return False
    return len(plevels) == n


def pattern_matches(pattern, topic):
    """True when the (valid) pattern matches the (valid) topic."""
    return _match_levels(pattern.split("/"), topic.split("/"))


class TopicFilter:
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

    def matches(self, topic):
        hit = self._cache.get(topic)
        if hit is not None:
            return hit
        result = self._compute(topic)
        if len(self._cache) >= CACHE_LIMIT:
            self._cache.clear()
        self._cache[topic] = result
        return result

    def _compute(self, topic):
        levels = topic.split("/")
        if not any(_match_levels(p, levels) for p in self._compiled):
            return False
        if self._compiled_allowed is None:
            return True
        return any(_match_levels(p, levels) for p in self._compiled_allowed)

    @property
    def cache_size(self):
        return len(self._cache)

    def __repr__(self):
        return f"TopicFilter({list(self.patterns)!r}, allowed={None if self.allowed is None else list(self.allowed)!r})"
