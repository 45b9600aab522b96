"""HTTP digest authentication (RFC 2617, MD5) as GB/T 28181 registration uses it, both sides.

Facts used here:
- HA1 = MD5(username:realm:password), HA2 = MD5(METHOD:uri), response = MD5(HA1:nonce:HA2);
  with qop=auth, response = MD5(HA1:nonce:nc:cnonce:qop:HA2). auth-int and MD5-sess are not used by
  GB devices and are refused by `verify`.
- The server hashes `uri` and `username` exactly as the Authorization header carries them: devices
  put `sip:<server-id>@<domain>` or `sip:<ip>:<port>` there rather than the Request-URI, and some
  send a username that is not their ID. `nc` is hashed as received (8 hex digits, as sent).

Nonces are signed (HMAC over issue time and randomness with a per-process key), so an expired,
consumed or evicted nonce is told apart from one this process never issued: the first gets a 401
with stale=true (the device retries at once with the same password), the second a plain 401.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import secrets

from tianwang.drivers.gb28181.sip import SipError

_NONCE_MAC_HEX = 16  # hex digits of the HMAC kept in a nonce


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8", "surrogateescape")).hexdigest()


def _parse_params(value: str, what: str) -> dict:
    """`Digest a="b", c=d` -> {"scheme": "digest", "a": "b", "c": "d"}; names lower-cased."""
    parts = value.strip().split(None, 1)
    scheme, rest = (parts + ["", ""])[:2]
    if scheme.lower() != "digest":
        raise SipError("bad_auth", f"{what}: scheme {scheme[:20]!r} is not Digest")
    params = {"scheme": "digest"}
    i, n = 0, len(rest)
    while i < n:
        while i < n and rest[i] in " \t,":
            i += 1
        if i >= n:
            break
        eq = rest.find("=", i)
        if eq < 0:
            raise SipError("bad_auth", f"{what}: parameter without value at {rest[i : i + 20]!r}")
        name = rest[i:eq].strip().lower()
        if not name or any(ch in name for ch in ' \t",'):
            raise SipError("bad_auth", f"{what}: bad parameter name {name[:20]!r}")
        i = eq + 1
        while i < n and rest[i] in " \t":
            i += 1
        if i < n and rest[i] == '"':
            i += 1
            chars = []
            while i < n and rest[i] != '"':
                if rest[i] == "\\" and i + 1 < n:
                    i += 1
                chars.append(rest[i])
                i += 1
            if i >= n:
                raise SipError("bad_auth", f"{what}: unterminated quoted value of {name}")
            i += 1
            params[name] = "".join(chars)
        else:
            end = rest.find(",", i)
            end = n if end < 0 else end
            params[name] = rest[i:end].strip()
            i = end
    return params


def parse_challenge(value: str) -> dict:
    """A WWW-Authenticate value -> its parameters (quoted and bare). Raises SipError('bad_auth')."""
    params = _parse_params(value, "WWW-Authenticate")
    for name in ("realm", "nonce"):
        if name not in params:
            raise SipError("bad_auth", f"WWW-Authenticate without {name}")
    return params


def parse_authorization(value: str) -> dict:
    """An Authorization value -> its parameters (quoted and bare). Raises SipError('bad_auth')."""
    return _parse_params(value, "Authorization")


def compute_response(
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    *,
    qop: str | None = None,
    nc: str | int | None = None,
    cnonce: str | None = None,
) -> str:
    """The digest `response` value (lower-case hex). `nc` as an int is rendered as 8 hex digits."""
    ha1 = _md5(f"{username}:{realm}:{password}")
    ha2 = _md5(f"{method}:{uri}")
    if qop:
        if nc is None or cnonce is None:
            raise ValueError("qop needs nc and cnonce")
        nc_text = f"{nc:08x}" if isinstance(nc, int) else nc
        return _md5(f"{ha1}:{nonce}:{nc_text}:{cnonce}:{qop}:{ha2}")
    return _md5(f"{ha1}:{nonce}:{ha2}")


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def www_authenticate(
    realm: str, nonce: str, *, qop: str | None = None, stale: bool = False, opaque: str | None = None
) -> str:
    """A WWW-Authenticate value for a 401 (algorithm=MD5 said explicitly; some devices need it)."""
    parts = [f"realm={_quote(realm)}", f"nonce={_quote(nonce)}"]
    if opaque is not None:
        parts.append(f"opaque={_quote(opaque)}")
    if qop:
        parts.append(f"qop={_quote(qop)}")
    if stale:
        parts.append("stale=true")
    parts.append("algorithm=MD5")
    return "Digest " + ", ".join(parts)


def authorization(
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    *,
    qop: str | None = None,
    nc: int = 1,
    cnonce: str | None = None,
    opaque: str | None = None,
) -> str:
    """An Authorization value answering a challenge (the device side: simulator, uplink).

    `qop` is the challenge's qop list; "auth" is chosen when offered.
    """
    chosen = None
    if qop:
        offered = [q.strip().lower() for q in qop.split(",")]
        if "auth" not in offered:
            raise ValueError(f"no supported qop in {qop!r}")
        chosen = "auth"
    parts = [f"username={_quote(username)}", f"realm={_quote(realm)}", f"nonce={_quote(nonce)}", f"uri={_quote(uri)}"]
    if chosen:
        cnonce = cnonce or secrets.token_hex(8)
        nc_text = f"{nc:08x}"
        response = compute_response(
            username, realm, password, method, uri, nonce, qop=chosen, nc=nc_text, cnonce=cnonce
        )
        parts += [f"response={_quote(response)}", f"qop={chosen}", f"nc={nc_text}", f"cnonce={_quote(cnonce)}"]
    else:
        parts.append(f"response={_quote(compute_response(username, realm, password, method, uri, nonce))}")
    parts.append("algorithm=MD5")
    if opaque is not None:
        parts.append(f"opaque={_quote(opaque)}")
    return "Digest " + ", ".join(parts)


def verify(authorization: dict, password: str, method: str, *, realm: str | None = None) -> bool:
    """True when the parsed Authorization proves knowledge of `password` for `method`.

    Hashes the username and uri as sent and `nc` as received; compares in constant time. With
    `realm` given the header's realm must equal it. Checks no nonce: ask a `NonceStore` for that.
    """
    a = authorization
    try:
        username, header_realm, nonce, uri = a["username"], a["realm"], a["nonce"], a["uri"]
        sent = a["response"]
    except KeyError:
        return False
    if realm is not None and header_realm != realm:
        return False
    if a.get("algorithm", "MD5").upper() != "MD5":
        return False
    qop = a.get("qop")
    if qop:
        if qop.lower() != "auth" or not a.get("nc") or a.get("cnonce") is None:
            return False
        expected = compute_response(
            username, header_realm, password, method, uri, nonce, qop=qop, nc=a["nc"], cnonce=a["cnonce"]
        )
    else:
        expected = compute_response(username, header_realm, password, method, uri, nonce)
    return hmac.compare_digest(expected.encode(), sent.strip().lower().encode("utf-8", "surrogatepass"))


class NonceStore:
    """Issues and checks nonces: random, signed, expiring after `ttl_s`, single-use by default.

    Memory is bounded: at most `max_nonces` outstanding nonces are remembered (the oldest are
    forgotten first; a forgotten but genuine nonce then checks as "stale", so its device simply gets
    a fresh challenge). `now` is any monotonic clock in seconds, the same one for issue and check.
    """

    def __init__(self, ttl_s: float = 300, max_nonces: int = 100_000, single_use: bool = True):
        self.ttl_s = ttl_s
        self.max_nonces = max_nonces
        self.single_use = single_use
        self._key = secrets.token_bytes(32)
        self._issued: collections.OrderedDict[str, float] = collections.OrderedDict()
        self.evicted = 0  # outstanding nonces forgotten because the store was full

    def __len__(self) -> int:
        return len(self._issued)

    def _mac(self, stamp: str) -> str:
        return hmac.new(self._key, stamp.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[:_NONCE_MAC_HEX]

    def issue(self, now: float) -> str:
        self._sweep(now)
        while len(self._issued) >= self.max_nonces:
            self._issued.popitem(last=False)
            self.evicted += 1
        stamp = f"{max(0, int(now * 1000)):x}{secrets.token_hex(6)}"
        nonce = stamp + self._mac(stamp)
        self._issued[nonce] = now
        return nonce

    def _sweep(self, now: float) -> None:
        issued = self._issued
        while issued:
            nonce, at = next(iter(issued.items()))
            if now - at <= self.ttl_s:
                break
            del issued[nonce]

    def check(self, nonce: str, now: float) -> str:
        """ "ok", "stale" (ours but expired, used or forgotten) or "unknown" (never issued here)."""
        if not isinstance(nonce, str) or len(nonce) <= _NONCE_MAC_HEX + 12:
            return "unknown"
        stamp, mac = nonce[:-_NONCE_MAC_HEX], nonce[-_NONCE_MAC_HEX:]
        if not hmac.compare_digest(mac.encode("utf-8", "surrogatepass"), self._mac(stamp).encode()):
            return "unknown"
        at = self._issued.get(nonce)
        if at is None:
            return "stale"
        if now - at > self.ttl_s:
            del self._issued[nonce]
            return "stale"
        if self.single_use:
            del self._issued[nonce]
        return "ok"
