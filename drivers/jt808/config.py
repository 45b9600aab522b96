"""The `jt808` listener config: where terminals dial in and who may register and authenticate.

    listeners:
      - id: fleet
        driver: jt808
        listen: "0.0.0.0:7808"
        auth_secret_env: JT808_SECRET         # derives each terminal's auth code
        auth_codes_file: /etc/tianwang/codes  # provisioned codes, PHONE:CODE per line (optional)
        registration: known                   # auto | known | closed
        versions: [2013, 2019]                # header editions accepted (2013 covers 2011)

Auth codes: code(phone) is the `auth_codes` entry for that phone when there is one, otherwise
HMAC-SHA256(auth_secret, phone) cut to 16 hex digits (tianwang.drivers.jt808.protocol.derive_auth_code).
"""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from pydantic import ByteSize, Field, SecretStr, field_validator, model_validator
from pydantic_core import PydanticCustomError

from tianwang.drivers.sdk import ListenerConfig, SecretsModel

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
    or `<name>_file` (inline works, `tianwang check` warns)."""

    __secrets__: ClassVar = ("auth_secret", "auth_codes")

    auth_secret: SecretStr | None = None  # derives each terminal's code; random per start if unset
    auth_secret_env: str | None = None
    auth_secret_file: str | None = None
    auth_codes: SecretStr | None = None  # provisioned codes, "PHONE:CODE" entries
    auth_codes_env: str | None = None
    auth_codes_file: str | None = None
    # who may register over the air: auto = anyone; known = phones in `terminals` or `auth_codes`;
    # closed = nobody (codes are provisioned out of band)
    registration: Literal["auto", "known", "closed"] = "auto"
    terminals: tuple[str, ...] = ()  # if not empty, only these phones may authenticate
    versions: tuple[Literal[2013, 2019], ...] = (2013, 2019)  # header editions accepted (2013 covers 2011)
    idle_timeout_s: float = Field(default=180.0, gt=0, le=86400)  # silence that ends a connection
    auth_timeout_s: float = Field(default=30.0, gt=0, le=3600)  # time to authenticate after connecting
    max_connections: int = Field(default=20000, ge=1)
    max_terminals: int = Field(default=100000, ge=1)  # distinct phones remembered (ListDevices rows)
    max_frame_bytes: int = Field(default=2048, ge=64, le=65536)  # unescaped; a 2019 split header + 1023-byte body fits
    max_bad_frames: int = Field(default=16, ge=1)  # bad frames tolerated before authentication
    max_auth_failures: int = Field(default=3, ge=1)  # per connection, then it is closed
    flood_frames_per_s: float = Field(default=100.0, gt=0)  # sustained frames per connection
    flood_burst: int = Field(default=400, ge=1)
    split_timeout_s: float = Field(default=60.0, gt=0)  # incomplete split messages are dropped after
    write_buffer_bytes: ByteSize = Field(default=ByteSize(64 * 1024), ge=1024)

    @field_validator("versions", mode="before")
    @classmethod
    def _versions(cls, v):
        if isinstance(v, (int, str)):
            v = [v]
        out = []
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
    def _terminals(cls, v):
        for phone in v:
            if not _PHONE_RE.match(phone):
                raise ValueError(f"{phone!r} is not a phone number of 1-20 digits")
        return tuple(_norm_phone(x) for x in v)

    @model_validator(mode="after")
    def _codes(self):
        if self.auth_codes is not None:
            try:
                parse_auth_codes(self.auth_codes.get_secret_value())
            except ValueError as exc:
                raise PydanticCustomError("secret", "{key}: {why}", {"key": "auth_codes", "why": str(exc)}) from None
        return self
