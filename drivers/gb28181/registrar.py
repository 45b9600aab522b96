"""REGISTER as the platform answers it, sans-io: who may register, digest, expiry, the `Date`.

`Registrar.handle(request, now, utc)` returns a `Decision`: the SIP response to send back (to the
packet's source, whatever Via and Contact claim) and what happened (`registered` with the granted
expiry, `unregistered`, `challenged`, `refused` with a reason). It keeps the nonces
(tianwang.drivers.gb28181.digest.NonceStore: random, single-use, expiring after `nonce_ttl_s`,
bounded) and nothing else; the listener keeps the devices.

Rules, as GB/T 28181 and RFC 3261/2617 have them and devices in the field need:
- the device is the From user (the To user is the same on every conforming device);
- `known`: only listed devices, each with its own password (or the default); `open`: any ID that
  conforms, with the default password;
- no Authorization -> 401 with a fresh nonce (`qop="auth"` offered; a device answering without
  qop is taken too); an unknown or used nonce -> 401 `stale=true`; a wrong response -> 403;
- the digest is checked over the `username` and `uri` exactly as the Authorization carries them
  (devices hash `sip:<server>@<domain>`, `sip:<ip>:<port>` or the Request-URI);
- Expires from the Expires header, else the Contact's `expires` parameter, else 3600; 0 =
  unregister (after the same challenge); below `expires.min_s` -> 423 with `Min-Expires`; above
  `expires.max_s` -> granted `max_s`;
- the 200 carries Contact (as sent), Expires (as granted) and `Date` (Beijing local time with
  milliseconds: devices set their clocks from it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import NamedTuple

from tianwang.drivers.gb28181 import digest, sip
from tianwang.drivers.gb28181.config import check_id

DEFAULT_EXPIRES_S = 3600
BEIJING_S = 8 * 3600


def date_header(utc: float) -> str:
    """`Date` of a REGISTER answer: Beijing local time, yyyy-MM-ddTHH:mm:ss.SSS (devices set their
    clocks from it)."""
    t = utc + BEIJING_S
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}"


class Decision(NamedTuple):
    response: sip.SipResponse
    outcome: str  # registered | unregistered | challenged | refused | unknown
    device_id: str
    expires_s: int = 0
    why: str = ""


class Registrar:
    """`passwords(device_id) -> str | None`: the password of a device that may register (None:
    it may not). `realm`: the digest realm (the listener's domain)."""

    def __init__(
        self,
        realm: str,
        passwords: Callable[[str], str | None],
        *,
        strict_ids: bool = True,
        min_expires: int = 3600,
        max_expires: int = 86400,
        qop: bool = True,
        nonce_ttl_s: float = 300.0,
        max_nonces: int = 100_000,
    ) -> None:
        self.realm = realm
        self.passwords = passwords
        self.strict_ids = strict_ids
        self.min_expires = min_expires
        self.max_expires = max_expires
        self.qop = "auth" if qop else None
        self.nonces = digest.NonceStore(ttl_s=nonce_ttl_s, max_nonces=max_nonces, single_use=True)

    def _respond(
        self,
        req: sip.SipRequest,
        status: int,
        source: tuple[str, int] | None,
        headers: Iterable[tuple[str, str]] = (),
        reason: str | None = None,
    ) -> sip.SipResponse:
        return sip.build_response(req, status, reason, headers=list(headers), source=source)

    def _challenge(
        self, req: sip.SipRequest, now: float, source: tuple[str, int] | None, stale: bool = False
    ) -> sip.SipResponse:
        nonce = self.nonces.issue(now)
        value = digest.www_authenticate(self.realm, nonce, qop=self.qop, stale=stale)
        return self._respond(req, 401, source, [("WWW-Authenticate", value)])

    def handle(self, req: sip.SipRequest, now: float, utc: float, source: tuple[str, int] | None = None) -> Decision:
        """Answer one REGISTER (see the module docstring). `source` is (ip, port) of the packet."""
        device_id = (req.from_.uri.user or "") if req.from_ is not None else ""
        why = check_id(device_id, self.strict_ids)
        if why:
            return Decision(self._respond(req, 403, source, reason="Forbidden"), "unknown", device_id, why=why)
        password = self.passwords(device_id)
        if password is None:
            return Decision(self._respond(req, 403, source), "unknown", device_id, why="not a known device")
        expires = self._expires(req)
        if expires is None:
            return Decision(
                self._respond(req, 400, source, reason="Bad Expires"),
                "refused",
                device_id,
                why="Expires is not a number",
            )
        auth_value = req.headers.get("Authorization")
        if not auth_value:
            return Decision(self._challenge(req, now, source), "challenged", device_id)
        try:
            auth = digest.parse_authorization(auth_value)
        except ValueError:
            return Decision(self._challenge(req, now, source), "challenged", device_id, why="unreadable Authorization")
        nonce_state = self.nonces.check(auth.get("nonce", ""), now)
        if nonce_state != "ok":
            return Decision(
                self._challenge(req, now, source, stale=True), "challenged", device_id, why=f"{nonce_state} nonce"
            )
        if not digest.verify(auth, password, "REGISTER"):
            return Decision(self._respond(req, 403, source), "refused", device_id, why="wrong password (digest)")
        if expires == 0:
            return Decision(self._respond(req, 200, source, [("Date", date_header(utc))]), "unregistered", device_id)
        if expires < self.min_expires:
            return Decision(
                self._respond(req, 423, source, [("Min-Expires", str(self.min_expires))]),
                "refused",
                device_id,
                why=f"Expires {expires} under {self.min_expires}",
            )
        granted = min(expires, self.max_expires)
        headers = [("Expires", str(granted)), ("Date", date_header(utc))]
        contact = req.headers.get("Contact")
        if contact:
            headers.insert(0, ("Contact", contact))
        return Decision(self._respond(req, 200, source, headers), "registered", device_id, granted)

    @staticmethod
    def _expires(req: sip.SipRequest) -> int | None:
        raw = req.headers.get("Expires")
        if raw is None:
            try:
                contact = req.contact
            except sip.SipError:
                contact = None
            if contact is not None:
                raw = contact.params.get("expires")
        if raw is None:
            return DEFAULT_EXPIRES_S
        try:
            value = int(str(raw).strip())
        except ValueError:
            return None
        return value if value >= 0 else None
