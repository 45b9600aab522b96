"""The `jt808` listener config: where terminals dial in and who may register and authenticate.

    listeners:
      - id: fleet
        driver: jt808
        listen: "0.0.0.0:7808"
        auth_secret_env: JT808_SECRET         # derives each terminal's auth code
        auth_codes_file: /etc/tianwang/codes  # provisioned codes, PHONE:CODE per line (optional)
        registration: known                   # auto | known | closed | open
        registrations_file: /var/lib/tianwang/fleet.registrations  # who registered (survives restarts)
        versions: [2013, 2019]                # header editions accepted (2013 covers 2011)

Auth codes: code(phone) is the `auth_codes` entry for that phone when there is one, otherwise
HMAC-SHA256(auth_secret, phone) cut to 16 hex digits (tianwang.drivers.jt808.protocol.derive_auth_code).

Registration policies (who may register over the air, 0x0100):
- auto: any phone not registered yet (first come); a registered phone is refused with "terminal
  already registered" (0x8100 result 3) until an operator runs `deregister`;
- known: the same, for phones in `terminals` or `auth_codes` only;
- closed: nobody (codes are provisioned out of band);
- open: anyone, any number of times, even for a phone already registered: whoever reaches the port
  gets the code of any phone and can take its session over. Only for closed test networks; the
  listener logs a WARNING saying so at every start and `tianwang check` warns.
"""

from __future__ import annotations

import os
import re
from typing import Any, ClassVar, Literal, Self

from pydantic import ByteSize, Field, SecretStr, field_validator, model_validator
from pydantic_core import PydanticCustomError

from tianwang.drivers.jt808.registry import RegistryError, read_file
from tianwang.drivers.sdk import ListenerConfig, SecretsModel

OPEN_WARNING = (
    "open: anyone who reaches the port can register as any phone, even one already registered, "
    "get its auth code and take its session over; use auto or known outside a closed test network"
)
MEMORY_WARNING = (
    "not set: registrations are kept in memory only and forgotten at each restart, when any phone "
    "can be registered again by whoever comes first"
)

_PHONE_RE = re.compile(r"^[0-9]{1,20}$")
_CODE_ENTRY_RE = re.compile(r"^([0-9]{1,20})[:=](\S{1,255})$")


def _norm_phone(phone: str) -> str:
    return phone.lstrip("0") or "0"


def parse_auth_codes(text: str) -> dict[str, str]:
    """`PHONE:CODE` (or `PHONE=CODE`) entries separated by whitespace, commas or newlines; `#`
    starts a comment. Raises ValueError naming the first bad entry."""
    out = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        for entry in re.split(r"[\s,]+", line.strip()):
            if not entry:
                continue
            m = _CODE_ENTRY_RE.match(entry)
            if m is None:
                raise ValueError(f"entry {entry.split(':')[0].split('=')[0]!r}... is not PHONE:CODE")
            out[_norm_phone(m.group(1))] = m.group(2)
    return out


class Jt808Config(SecretsModel, ListenerConfig):
    """`listeners:` entry of driver jt808. Secrets (`auth_secret`, `auth_codes`) come as `<name>_env`
    or `<name>_file` (inline only with `auth.allow_inline_secrets: true`)."""

    __secrets__: ClassVar = ("auth_secret", "auth_codes")

    auth_secret: SecretStr | None = Field(
        default=None,
        description="derives each terminal's auth code (HMAC-SHA256 of the phone); unset: a random one per start, "
        "so terminals register again after a restart (inline: an error unless `auth.allow_inline_secrets`)",
    )
    auth_secret_env: str | None = Field(default=None, description="the environment variable holding `auth_secret`")
    auth_secret_file: str | None = Field(default=None, description="a file holding `auth_secret`")
    auth_codes: SecretStr | None = Field(
        default=None,
        description="provisioned codes: `PHONE:CODE` entries separated by spaces, commas or newlines; `#` starts "
        "a comment (inline: an error unless `auth.allow_inline_secrets`)",
    )
    auth_codes_env: str | None = Field(default=None, description="the environment variable holding `auth_codes`")
    auth_codes_file: str | None = Field(default=None, description="a file holding `auth_codes`")
    # who may register over the air (see the module docstring): auto = any phone not registered yet;
    # known = phones in `terminals` or `auth_codes` not registered yet; closed = nobody;
    # open = anyone, again and again (the legacy behaviour: a hijack hole, logged as such)
    registration: Literal["auto", "known", "closed", "open"] = Field(
        default="auto",
        description="who may register over the air: `auto` any phone not registered yet; `known` the same for "
        "phones in `terminals` or `auth_codes`; `closed` nobody; `open` anyone, again and again (unsafe, warned)",
    )
    registrations_file: str | None = Field(
        default=None,
        description="where registrations persist across restarts (JSON, mode 0600); its directory must exist; "
        "null = memory only (check warns)",
    )
    terminals: tuple[str, ...] = Field(
        default=(), description="phones (1-20 digits) allowed to authenticate; empty = any"
    )
    versions: tuple[Literal[2013, 2019], ...] = Field(
        default=(2013, 2019), description="header editions accepted (2013 covers 2011); at least one"
    )
    idle_timeout_s: float = Field(
        default=180.0, gt=0, le=86400, description="an authenticated connection silent this long is closed"
    )
    auth_timeout_s: float = Field(default=30.0, gt=0, le=3600, description="time a new connection gets to authenticate")
    max_connections: int = Field(default=20000, ge=1, description="open connections at most")
    max_unauthenticated_per_address: int = Field(
        default=64,
        ge=1,
        description="connections from one address (IPv6: one /64) that have not authenticated yet, at most; "
        "past it a new one is closed at once (`connections_refused_per_address`)",
    )
    registration_timeout_s: float = Field(
        default=600.0,
        gt=0,
        le=30 * 86400,
        description="a registration over the air (0x0100) whose terminal has not authenticated with its code "
        "within this time is dropped, its phone and plate free again (`registrations_expired`)",
    )
    registrations_per_s: float = Field(
        default=0.2,
        gt=0,
        description="registrations over the air per second from one address (IPv6: one /64), after the burst; "
        "past it the connection is closed unanswered and the terminal registers later "
        "(`registrations_rate_limited`)",
    )
    registrations_burst: int = Field(
        default=20, ge=1, description="registrations from one address at once before `registrations_per_s` applies"
    )
    max_terminals: int = Field(default=100000, ge=1, description="distinct phones remembered (rows in ListDevices)")
    max_frame_bytes: int = Field(
        default=2048,
        ge=64,
        le=65536,
        description="largest frame after unescaping (a 2019 split header and a 1023-byte body fit the default)",
    )
    max_bad_frames: int = Field(
        default=16, ge=1, description="bad frames a connection may send before it authenticates"
    )
    max_auth_failures: int = Field(
        default=3, ge=1, description="failed authentications per connection before it is closed"
    )
    flood_frames_per_s: float = Field(
        default=100.0,
        gt=0,
        description="sustained frames per second per connection; a faster terminal is paused (TCP pushes back)",
    )
    flood_burst: int = Field(default=400, ge=1, description="frames a connection may send in a burst above that rate")
    split_timeout_s: float = Field(
        default=60.0, gt=0, description="an incomplete split message is dropped after this long"
    )
    write_buffer_bytes: ByteSize = Field(
        default=ByteSize(64 * 1024),
        ge=1024,
        description="a terminal that does not read its acks stops being read once this much is queued for it",
    )

    @field_validator("versions", mode="before")
    @classmethod
    def _versions(cls, v: Any) -> tuple[int, ...]:
        if isinstance(v, (int, str)):
            v = [v]
        out: list[int] = []
        for item in v:
            try:
                out.append(int(item))
            except (TypeError, ValueError):
                raise ValueError(f"{item!r} is not an edition (2013 or 2019)") from None
        if not out:
            raise ValueError("accept at least one edition")
        return tuple(out)

    @field_validator("terminals")
    @classmethod
    def _terminals(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for phone in v:
            if not _PHONE_RE.match(phone):
                raise ValueError(f"{phone!r} is not a phone number of 1-20 digits")
        return tuple(_norm_phone(x) for x in v)

    @field_validator("registrations_file")
    @classmethod
    def _registrations_file(cls, v: str | None) -> str | None:
        if v is None:
            return v
        v = v.strip()
        if not v:
            raise ValueError("must be a file path (or leave the key out: memory only)")
        if v.endswith(("/", os.sep)) or os.path.isdir(v):
            raise ValueError(f"{v} is a directory; name a file in it")
        try:
            read_file(v)  # a corrupt file is refused by `tianwang check` and before `run` starts anything
        except RegistryError as exc:
            raise PydanticCustomError("registrations", "{why}", {"why": str(exc)}) from None
        return v

    def config_paths(self) -> list[tuple[str, str, str]]:
        # replaced atomically (a tmp file renamed over it): its directory must exist and be writable
        return [("registrations_file", self.registrations_file, "write")] if self.registrations_file else []

    def config_warnings(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        if self.registration == "open":
            out.append(("registration", OPEN_WARNING))
        if self.registrations_file is None and self.registration != "closed":
            out.append(("registrations_file", MEMORY_WARNING))
        return out

    @model_validator(mode="after")
    def _codes(self) -> Self:
        if self.auth_codes is not None:
            try:
                parse_auth_codes(self.auth_codes.get_secret_value())
            except ValueError as exc:
                raise PydanticCustomError("secret", "{key}: {why}", {"key": "auth_codes", "why": str(exc)}) from None
        return self
