"""The `gb28181` listener config: where GB/T 28181 devices REGISTER, who may, and what is asked of them.

    listeners:
      - id: gb
        driver: gb28181
        listen: "0.0.0.0:5060"              # UDP and TCP on the same port
        server_id: "43030000002000000001"   # 20 digits: Xiangtan (4303), type 200 = SIP server
        domain: "4303000000"                # default: the first 10 digits of server_id
        password_env: GB_PASSWORD           # the default device password
        registration: known                 # known | open
        devices_file: /etc/tianwang/gb-devices.yaml
        registrations_file: /var/lib/tianwang/gb.registrations
        keepalive: {interval_s: 60, count: 3}
        subscribe: {catalog: true, alarm: null, mobile_position: {interval_s: 5}}

Registration policies: `known` lets in only the devices listed in `devices` or `devices_file`, each
with its own password (or the default one when it has none); `open` lets in any device whose ID
conforms, with the default password: whoever knows that one password can register as any ID. The
listener logs a WARNING saying so at every start and `tianwang check` warns.

`devices_file` is YAML (or JSON): a list of `{id, password, datum, charset, name}` entries. It is
the place for per-device passwords (written inline there: the file is kept like a secret; the
listener tightens its mode to 0600). In the config itself a device's password is only given as
`password_env` or `password_file`.
"""

from __future__ import annotations

import os
import re
from typing import Any, ClassVar, Literal, Self

import yaml
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError
from pydantic_core.core_schema import ValidationInfo

from tianwang.drivers.sdk import ListenerConfig, Model, SecretsModel

OPEN_WARNING = (
    "open: any device with a conforming ID and the default password may register, as any ID it "
    "likes; use known (a list of devices, each with its own password) outside a closed network"
)
MEMORY_WARNING = (
    "not set: registrations are kept in memory only, so after a restart every device is unknown "
    "until its next REGISTER (which may be an hour away)"
)

_ID20_RE = re.compile(r"^[0-9]{20}$")
# lax IDs (strict_ids: false): what devices in the field send (18 digits, letters), still one topic level
_LAX_ID_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z_.-]{0,63}$")
CHARSETS = ("GB2312", "GBK", "GB18030", "UTF-8")


def check_id(value: str, strict: bool) -> str | None:
    """Why `value` cannot be a device ID here, or None. Strict: 20 digits, with a centre code and
    a type the standard defines; lax: 1-64 letters, digits, `_ . -` (one topic level)."""
    if not isinstance(value, str):
        return "must be a string of digits (quote it in YAML)"
    if strict:
        if not _ID20_RE.match(value):
            return f"{value!r} is not a 20-digit GB/T 28181 ID (strict_ids: false accepts others)"
        return None
    if not _LAX_ID_RE.match(value):
        return f"{value!r} is not an ID: 1-64 letters, digits, '_', '.', '-'"
    return None


class KeepaliveConfig(Model):
    interval_s: float = Field(
        default=60.0, gt=0, le=3600, description="the interval devices keep alive at (the standard's default: 60 s)"
    )
    count: int = Field(
        default=3, ge=1, le=100, description="a device is OFFLINE after this many intervals without a keepalive"
    )


class ExpiresConfig(Model):
    min_s: int = Field(
        default=3600,
        ge=60,
        le=86400 * 7,
        description="a REGISTER asking less gets 423 with `Min-Expires` (the standard: not under 3600 s)",
    )
    max_s: int = Field(default=86400, ge=60, le=86400 * 7, description="a REGISTER asking more is granted this much")

    @model_validator(mode="after")
    def _order(self) -> Self:
        if self.max_s < self.min_s:
            raise ValueError(f"max_s ({self.max_s}) is below min_s ({self.min_s})")
        return self


class AlarmSubscribeConfig(Model):
    start_priority: int = Field(default=1, ge=1, le=4, description="the most urgent priority asked for (1 = first)")
    end_priority: int = Field(default=4, ge=1, le=4, description="the least urgent priority asked for")
    method: str = Field(
        default="",
        pattern=r"^[1-7]{0,7}$",
        description="alarm methods asked for, as the standard writes them (`25` = device and video); empty = all",
    )


class MobilePositionConfig(Model):
    interval_s: int = Field(default=5, ge=1, le=3600, description="seconds between the positions a device reports")


class SubscribeConfig(Model):
    catalog: bool = Field(
        default=True,
        description="query the catalog at registration and subscribe to its changes (ADD, DEL, ON, OFF...)",
    )
    alarm: AlarmSubscribeConfig | None = Field(
        default=None, description="subscribe to alarms with these filters; null = take the alarms devices send anyway"
    )
    mobile_position: MobilePositionConfig | None = Field(
        default=None,
        description="subscribe every device to its mobile position at this interval; null = no subscription",
    )
    expires_s: int = Field(
        default=3600,
        ge=60,
        le=86400,
        description="subscriptions asked for this long, refreshed in their dialog before they run out",
    )


class GbDeviceConfig(SecretsModel):
    """One known device. Its password as `password_env` or `password_file` (in `devices_file`
    entries, `password` is written inline)."""

    __secrets__: ClassVar = ("password",)

    id: str = Field(description="the device's 20-digit ID")
    password: SecretStr | None = Field(
        default=None, description="only in `devices_file` entries; in the config use password_env or password_file"
    )
    password_env: str | None = Field(default=None, description="the environment variable holding its password")
    password_file: str | None = Field(default=None, description="a file holding its password")
    datum: Literal["wgs84", "gcj02"] | None = Field(
        default=None, description="the datum of its positions; null = the listener's `datum`"
    )
    charset: Literal["GB2312", "GBK", "GB18030", "UTF-8"] | None = Field(
        default=None, description="the charset of what is sent to it; null = the listener's `charset`"
    )
    name: str = Field(
        default="", max_length=128, description="a name for ListDevices (the device's own name otherwise)"
    )


def read_devices_file(path: str, strict: bool, default_password: bool = True) -> list[GbDeviceConfig]:
    """The devices of `path`. Raises ValueError naming every bad entry (one line); an entry
    without a password is one unless there is a default."""
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise ValueError(f"cannot read {path}: no such file") from None
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ValueError(f"{path}:{where}: not YAML: {getattr(exc, 'problem', None) or exc}") from None
    if data is None:
        return []
    if not isinstance(data, list):
        raise ValueError(f"{path}: must be a list of {{id, password, datum, charset, name}} entries")
    out: list[GbDeviceConfig] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(data):
        try:
            dev = GbDeviceConfig.model_validate(entry)
        except ValidationError as exc:
            for err in exc.errors(include_url=False):
                loc = ".".join(str(p) for p in err["loc"])
                msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
                problems.append(f"[{i}]{'.' + loc if loc else ''}: {msg}")
            continue
        why = check_id(dev.id, strict)
        if dev.password is None and not default_password:
            problems.append(f"[{i}].password: none, and no default `password` for the listener")
        if why:
            problems.append(f"[{i}].id: {why}")
        elif dev.id in seen:
            problems.append(f"[{i}].id: duplicate {dev.id} (also [{seen[dev.id]}])")
        else:
            seen[dev.id] = i
            out.append(dev)
    if problems:
        more = f" (and {len(problems) - 8} more)" if len(problems) > 8 else ""
        raise ValueError(f"{path}: " + "; ".join(problems[:8]) + more)
    return out


class Gb28181Config(SecretsModel, ListenerConfig):
    """`listeners:` entry of driver gb28181. The default device password comes as `password_env`
    or `password_file` (inline only with `auth.allow_inline_secrets: true`)."""

    __secrets__: ClassVar = ("password",)

    server_id: str = Field(
        description="the gateway's own 20-digit SIP ID (type 200), as devices are told to register to"
    )
    domain: str | None = Field(
        default=None,
        pattern=r"^[0-9]{8,20}$",
        description="the SIP domain and digest realm; null = the first 10 digits of `server_id`",
    )
    password: SecretStr | None = Field(
        default=None, description="the default device password (inline: check warns); `open` requires it"
    )
    password_env: str | None = Field(default=None, description="the environment variable holding `password`")
    password_file: str | None = Field(default=None, description="a file holding `password`")
    strict_ids: bool = Field(
        default=True, description="device and channel IDs must be 20 digits; false accepts what the field sends"
    )
    registration: Literal["known", "open"] = Field(
        default="known",
        description="who may register: `known` the devices in `devices` / `devices_file`; `open` any conforming ID "
        "with the default password (unsafe, warned)",
    )
    devices: tuple[GbDeviceConfig, ...] = Field(default=(), description="known devices (passwords as _env or _file)")
    devices_file: str | None = Field(
        default=None,
        description="a YAML list of known devices with their passwords inline (`id`, `password`, "
        "`datum`, `charset`, `name`)",
    )
    registrations_file: str | None = Field(
        default=None,
        description="where registrations persist across restarts (JSON, mode 0600); its directory must exist; "
        "null = memory only (check warns)",
    )
    digest_qop: bool = Field(
        default=True,
        description='offer `qop="auth"` in the digest challenge (devices answering without qop are taken either '
        "way); false for devices that cannot parse it",
    )
    keepalive: KeepaliveConfig = Field(default=KeepaliveConfig(), description="liveness from keepalives")
    expires: ExpiresConfig = Field(default=ExpiresConfig(), description="registration lifetimes granted")
    subscribe: SubscribeConfig = Field(
        default=SubscribeConfig(), description="what is asked of a device once it registers"
    )
    datum: Literal["wgs84", "gcj02"] = Field(
        default="wgs84",
        description="the datum devices report positions in: `gcj02` positions are converted to WGS-84 "
        "(the payload's `datum` says what was received)",
    )
    charset: Literal["GB2312", "GBK", "GB18030", "UTF-8"] = Field(
        default="GB2312",
        description="the charset of the bodies sent to devices (received bodies are decoded leniently)",
    )
    catalog_idle_s: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description="a catalog whose chunks stop coming for this long is kept as it is (partial, and said so)",
    )
    sync_window: int = Field(
        default=128,
        ge=1,
        le=10000,
        description="devices queried and subscribed at once after they register; the next one starts when one "
        "is done, so a register storm is synced at the pace the devices answer",
    )
    max_devices: int = Field(default=20000, ge=1, description="devices registered at most (rows in ListDevices)")
    max_channels: int = Field(
        default=1024, ge=1, le=100000, description="catalog items kept per device (channels and tree nodes)"
    )
    max_message_bytes: int = Field(
        default=65536, ge=1500, le=1048576, description="the largest SIP message taken (UDP datagram or TCP)"
    )
    max_connections: int = Field(default=20000, ge=1, description="open TCP connections at most")
    tcp_idle_s: float = Field(default=600.0, gt=0, description="a TCP connection silent this long is closed")
    unknown_per_s: float = Field(
        default=50.0,
        gt=0,
        description="requests per second taken from unknown or unauthenticated sources, in all; the rest are counted "
        "and dropped",
    )
    unknown_burst: int = Field(default=200, ge=1, description="such requests taken in a burst above that rate")

    @field_validator("server_id")
    @classmethod
    def _server_id(cls, v: str) -> str:
        if not _ID20_RE.match(v):
            raise ValueError(f"{v!r} is not a 20-digit ID (e.g. 43030000002000000001)")
        return v

    @staticmethod
    def _has_default(data: dict[str, Any]) -> bool:
        return any(data.get(k) is not None for k in ("password", "password_env", "password_file"))

    @field_validator("registration")
    @classmethod
    def _registration(cls, v: str, info: ValidationInfo) -> str:
        if v == "open" and not cls._has_default(info.data):
            raise ValueError("open needs the default password (password_env or password_file)")
        return v

    @field_validator("devices")
    @classmethod
    def _devices(cls, v: tuple[GbDeviceConfig, ...], info: ValidationInfo) -> tuple[GbDeviceConfig, ...]:
        strict = info.data.get("strict_ids", True)
        default = cls._has_default(info.data)
        problems: list[str] = []
        seen: dict[str, int] = {}
        for i, dev in enumerate(v):
            why = check_id(dev.id, strict)
            if why:
                problems.append(f"[{i}].id: {why}")
            elif dev.id in seen:
                problems.append(f"[{i}].id: duplicate {dev.id} (also [{seen[dev.id]}])")
            seen[dev.id] = i
            if dev.password is not None and dev.password_env is None and dev.password_file is None:
                problems.append(f"[{i}].password: written inline: use password_env, password_file or devices_file")
            elif dev.password is None and not default:
                problems.append(f"[{i}].password: none, and no default `password` for the listener")
        if problems:
            raise ValueError("; ".join(problems))
        return v

    @field_validator("devices_file", "registrations_file")
    @classmethod
    def _path(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is None:
            return v
        v = os.path.expanduser(v.strip())
        if not v:
            raise ValueError("must be a file path (or leave the key out)")
        if os.path.isdir(v):
            raise ValueError(f"{v} is a directory; name a file in it")
        if info.field_name == "registrations_file":
            from tianwang.drivers.gb28181.registry import RegistryError, read_file

            try:
                read_file(v)  # a corrupt file is refused by `tianwang check` before `run` starts anything
            except RegistryError as exc:
                raise PydanticCustomError("registrations", "{why}", {"why": str(exc)}) from None
            return v
        listed = read_devices_file(v, info.data.get("strict_ids", True), cls._has_default(info.data))
        inline = {d.id: i for i, d in enumerate(info.data.get("devices") or ())}
        for dev in listed:
            if dev.id in inline:
                raise ValueError(f"{dev.id} is also in devices[{inline[dev.id]}]")
        return v

    @model_validator(mode="after")
    def _domain_and_devices(self) -> Self:
        if self.domain is None:
            object.__setattr__(self, "domain", self.server_id[:10])
        if self.registration == "known" and not self.devices and self.devices_file is None:
            raise PydanticCustomError(
                "secret",
                "{key}: {why}",
                {"key": "devices", "why": "registration: known needs devices or devices_file (or registration: open)"},
            )
        return self

    def known_devices(self) -> dict[str, GbDeviceConfig]:
        """id -> device, from `devices` and `devices_file` (read now). Raises ValueError."""
        out = {d.id: d for d in self.devices}
        if self.devices_file is not None:
            for d in read_devices_file(self.devices_file, self.strict_ids):
                out[d.id] = d
        return out

    def config_paths(self) -> list[tuple[str, str, str]]:
        # the devices file is read at start and on every reload; the registrations file is replaced
        # atomically (a tmp file renamed over it), so its directory must exist and be writable
        out = []
        if self.devices_file:
            out.append(("devices_file", self.devices_file, "read"))
        if self.registrations_file:
            out.append(("registrations_file", self.registrations_file, "write"))
        return out

    def config_warnings(self) -> list[tuple[str, str]]:
        out = []
        if self.registration == "open":
            out.append(("registration", OPEN_WARNING))
        if self.registrations_file is None:
            out.append(("registrations_file", MEMORY_WARNING))
        if self.devices_file is not None:
            try:
                mode = os.stat(self.devices_file).st_mode
            except OSError:
                mode = 0
            if mode & 0o077:
                out.append(
                    ("devices_file", f"{self.devices_file} holds passwords and is readable by others (chmod 600)")
                )
        return out
