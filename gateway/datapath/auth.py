"""Bearer-token authentication and the per-token ACLs.

Tokens come from config (`auth.tokens`), each with `read` topic patterns (what it may subscribe to)
and `control` patterns over `family/device_id` (what it may command). Presented tokens are hashed and
compared against every configured token with `hmac.compare_digest`, without stopping at a match, so
the time taken does not depend on which token (if any) matched.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import time
from collections import OrderedDict
from collections.abc import Hashable, Iterable
from typing import TYPE_CHECKING

from tianwang.gateway.errors import AuthError, ConfigError
from tianwang.gateway.framing import TopicFilter

if TYPE_CHECKING:
    from tianwang.gateway.lifecycle.config import AuthConfig

# call metadata as gRPC hands it over: (key, value) pairs, values str (or bytes for `-bin` keys)
Metadata = Iterable[tuple[str, str | bytes]] | None


@dataclasses.dataclass(frozen=True)
class Principal:
    name: str
    read: tuple[str, ...]
    control: tuple[str, ...]
    admin: bool = False  # sees every stream in GetStats (also implied by control: ["#"])
    commands_per_s: float = 0.0  # 0 = no limit
    commands_burst: int = 0

    @property
    def is_admin(self) -> bool:
        return self.admin or "#" in self.control

    # the matcher of `control`, made once (__post_init__)
    _control: TopicFilter | None = dataclasses.field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        ctl = TopicFilter(self.control) if self.control else None
        object.__setattr__(self, "_control", ctl)

    def may_control(self, family: str, device_id: str) -> bool:
        ctl = self._control
        return ctl is not None and ctl.matches(f"{family}/{device_id}")

    def may_read_any(self, pattern: str) -> bool:
        """True when some topic matching `pattern` is readable by this principal."""
        return any(patterns_overlap(pattern, r) for r in self.read)


def patterns_overlap(p: str, q: str) -> bool:
    """True when some topic matches both (valid) patterns."""
    a = p.split("/")
    b = q.split("/")
    for i in range(max(len(a), len(b))):
        x = a[i] if i < len(a) else None
        y = b[i] if i < len(b) else None
        if x == "#" or y == "#":
            return True
        if x is None or y is None:
            return False
        if x != "+" and y != "+" and x != y:
            return False
    return True


def pattern_covers(wide: str, narrow: str) -> bool:
    """True when every topic matching `narrow` also matches `wide` (both valid patterns)."""
    a = wide.split("/")
    b = narrow.split("/")
    for i, x in enumerate(a):
        if x == "#":
            return True
        if i >= len(b):
            return False
        y = b[i]
        if y == "#":
            return False  # narrow goes on to any depth; wide does not
        if x != "+" and (y == "+" or x != y):
            return False
    return len(a) == len(b)


def grant_narrowed(old_read: Iterable[str], new_read: Iterable[str], patterns: Iterable[str]) -> bool:
    """True when a stream on `patterns` could read, under `old_read`, a topic that `new_read` no
    longer lets it read: every part of an old grant the stream overlaps must still be covered."""
    for p in patterns:
        for r in old_read:
            if not patterns_overlap(p, r):
                continue
            # the topics the stream got through r: p itself when r covers it, else (at most) r
            region = p if pattern_covers(r, p) else r
            if not any(pattern_covers(n, region) for n in new_read):
                return True
    return False


ANONYMOUS = b"anonymous"  # the credential key of a call without a token (auth.anonymous_read)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


class Authenticator:
    """Maps the `authorization` metadata of a call to a Principal."""

    def __init__(self, auth_config: AuthConfig) -> None:
        self._tokens: list[tuple[bytes, Principal]] = []
        for t in auth_config.tokens:
            if t.token is None:  # load_config resolves every token (token_env, token_file) or refuses the file
                raise ConfigError(f"auth.tokens: {t.name!r} has no token value")
            principal = Principal(
                t.name,
                tuple(t.read),
                tuple(t.control),
                admin=t.admin,
                commands_per_s=t.commands_per_s or 0.0,
                commands_burst=t.commands_burst,
            )
            self._tokens.append((_digest(t.token.get_secret_value()), principal))
        anon = tuple(auth_config.anonymous_read)
        self._anonymous = Principal("anonymous", anon, ()) if anon else None
        self.names = frozenset(p.name for _, p in self._tokens)

    def authenticate(self, metadata: Metadata) -> Principal:
        """`metadata`: iterable of (key, value). Raises AuthError(unauthenticated=True)."""
        return self.identify(metadata)[0]

    def principal_for(self, key: bytes) -> Principal | None:
        """The principal a credential `key` (from `identify`) maps to under this config, or None
        when that token no longer exists (removed, or its value rotated)."""
        if key == ANONYMOUS:
            return self._anonymous
        for digest, principal in self._tokens:
            if hmac.compare_digest(digest, key):
                return principal
        return None

    def identify(self, metadata: Metadata) -> tuple[Principal, bytes]:
        """(principal, credential key): the key identifies the presented token (its hash, never
        the token) so that a reload can re-check a stream against the new tokens."""
        header: str | bytes | None = None
        for key, value in metadata or ():
            if key == "authorization":
                header = value
                break
        if header is None:
            if self._anonymous is not None:
                return self._anonymous, ANONYMOUS
            raise AuthError("missing 'authorization: Bearer <token>' metadata", unauthenticated=True)
        if isinstance(header, bytes):
            header = header.decode("latin-1")
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthError("malformed authorization metadata; expected 'Bearer <token>'", unauthenticated=True)
        presented = _digest(token)
        found = None
        for digest, principal in self._tokens:
            if hmac.compare_digest(digest, presented) and found is None:
                found = principal
        if found is None:
            raise AuthError("unknown token", unauthenticated=True)
        return found, presented


class RateLimiter:
    """Token buckets by key (a peer address, a token name): `rate` per second, up to `burst`.

    Holds at most `max_keys` buckets (the least recently used go first), so a caller cycling
    through addresses costs bounded memory.
    """

    def __init__(self, rate: float, burst: int, max_keys: int = 10000) -> None:
        self.rate = float(rate)
        self.burst = float(burst)
        self.max_keys = max_keys
        self._buckets: OrderedDict[Hashable, tuple[float, float]] = OrderedDict()

    def take(self, key: Hashable) -> bool:
        """Spend one from `key`'s bucket: False when it is empty."""
        now = time.monotonic()
        b = self._buckets.get(key)
        if b is None:
            tokens = self.burst
            if len(self._buckets) >= self.max_keys:
                self._buckets.popitem(last=False)
        else:
            tokens = min(self.burst, b[0] + (now - b[1]) * self.rate)
            self._buckets.move_to_end(key)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - 1.0, now)
        return True


class CommandLimits:
    """The per-token command rate limits (`commands_per_s`), one bucket per token name."""

    def __init__(self) -> None:
        self._limiters: dict[tuple[str, float, int], RateLimiter] = {}

    def get(self, principal: Principal) -> RateLimiter | None:
        if not principal.commands_per_s:
            return None
        key = (principal.name, principal.commands_per_s, principal.commands_burst)
        lim = self._limiters.get(key)
        if lim is None:
            lim = self._limiters[key] = RateLimiter(
                principal.commands_per_s, max(1, principal.commands_burst or int(principal.commands_per_s) or 1), 1
            )
        return lim
