"""Configuration: YAML -> frozen pydantic models, once, at the edge.

Every problem is reported with the path of the key it concerns (`devices[2].url: unsupported scheme
'com'`), all at once, so `tianwang check FILE` can list them. Unknown keys are errors. Secrets are
given as `<name>_env` (an environment variable) or `<name>_file` (a file whose content, stripped of
the trailing newline, is the secret); an inline `<name>:` is an error unless `auth.allow_inline_secrets`
is true.

Code after this module trusts the models.
"""

from __future__ import annotations

import os
import re
from typing import Any, ClassVar, Literal
from urllib.parse import parse_qsl, urlsplit

import yaml
from pydantic import (
    ByteSize,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from tianwang.gateway.errors import ConfigError

# the bases, the link sections and sharding live in modules of their own; their names stay importable from here
from tianwang.gateway.lifecycle.config_base import (
    Model as Model,
    SecretsModel as SecretsModel,
    _read_secret_file as _read_secret_file,
    check_hostport as check_hostport,
    parse_hostport as parse_hostport,
)
from tianwang.gateway.lifecycle.config_links import (
    BridgesConfig as BridgesConfig,
    NatsBridgeConfig as NatsBridgeConfig,
    UplinkConfig as UplinkConfig,
    UplinkKeepalive as UplinkKeepalive,
)
from tianwang.gateway.lifecycle.ids import DEVICE_ID_RE  # one topic level; others import it from here
from tianwang.gateway.lifecycle.shards import (
    for_shard as for_shard,
    parse_shard as parse_shard,
    shard_of as shard_of,
    shard_plan as shard_plan,
)


class JournalConfig(Model):
    path: str | None = Field(
        default=None,
        description="directory of the durable journal's segments; null = memory only, lost at restart. One gateway "
        "per directory (it is locked); an existing path must be a directory",
    )
    max_bytes: ByteSize = Field(
        default=ByteSize(256 * 1024 * 1024),
        description="history held in memory (at least 64KiB): the whole journal without `path`, the hot cache in "
        "front of the disk with it",
    )
    fsync: Literal["batch", "always", "never"] = Field(
        default="batch",
        description="with `path`: `always` syncs every write before subscribers see it (survives power loss); "
        "`batch` shows what is written and syncs it at once, gathering what is written during a sync into the next "
        "(survives a crash of the gateway; a power cut loses at most `fsync_window_ms`); `never` leaves it to the "
        "kernel. Under every policy seq never goes back after a crash or a power cut",
    )
    fsync_window_ms: int = Field(
        default=20,
        ge=1,
        le=10_000,
        description="`fsync: batch`: the longest an envelope subscribers see may wait for its sync (a bound, not a "
        "wait: syncs start at once)",
    )
    disk_max_bytes: ByteSize = Field(
        default=ByteSize(8 * 1024**3),
        description="retention on disk by bytes: the oldest whole segments go first; must hold at least two "
        "segments of `segment_bytes`",
    )
    max_age_s: float = Field(
        default=7 * 86400.0,
        gt=0,
        description="retention on disk by age: a segment whose newest record is older than this goes",
    )
    segment_bytes: ByteSize = Field(
        default=ByteSize(64 * 1024 * 1024),
        description="a segment file is closed and a new one begun past this size (64KiB to 1GiB)",
    )

    @field_validator("max_bytes")
    @classmethod
    def _min_size(cls, v):
        if v < 64 * 1024:
            raise ValueError("must be at least 64KiB")
        return v

    @field_validator("segment_bytes")
    @classmethod
    def _segment_size(cls, v):
        if not 64 * 1024 <= v <= 1024**3:
            raise ValueError("must be between 64KiB and 1GiB")
        return v

    @field_validator("path")
    @classmethod
    def _path(cls, v):
        if v is not None:
            if not v.strip():
                raise ValueError("must be a directory path, or null for a memory-only journal")
            v = os.path.expanduser(v)
            if os.path.exists(v) and not os.path.isdir(v):
                raise ValueError(f"{v} exists and is not a directory")
        return v

    @model_validator(mode="after")
    def _disk_vs_segment(self):
        if self.path is not None and self.disk_max_bytes < 2 * self.segment_bytes:
            raise ValueError(
                f"disk_max_bytes ({self.disk_max_bytes}) must hold at least two segments of segment_bytes ({self.segment_bytes})"
            )
        return self


class TLSConfig(Model):
    cert_file: str = Field(description="the server certificate (PEM); must be readable")
    key_file: str = Field(description="the server's private key (PEM); must be readable")
    client_ca_file: str | None = Field(
        default=None, description="set: clients must present a certificate signed by this CA (mutual TLS)"
    )

    @field_validator("cert_file", "key_file", "client_ca_file")
    @classmethod
    def _readable(cls, v):
        if v is not None and not os.access(v, os.R_OK):
            raise ValueError(f"cannot read {v}")
        return v


class FanoutConfig(Model):
    """Defaults for Subscribe batches; a request may ask for less, never for more than the caps."""

    max_batch: int = Field(
        default=256, ge=1, le=8192, description="envelopes per batch when a Subscribe request asks for 0"
    )
    max_delay_ms: int = Field(
        default=0,
        ge=0,
        le=10_000,
        description="how long a batch waits for more when a Subscribe request leaves max_delay_ms unset; "
        "0 = no wait: written at once, what arrives during a write forms the next batch",
    )
    max_batch_bytes: ByteSize = Field(
        default=ByteSize(1024 * 1024),
        description="cap on one batch's size, 4KiB to 3MiB (clients refuse messages over 4MiB)",
    )
    max_subscribers: int = Field(
        default=1024, ge=1, description="open Subscribe streams at most; past it Subscribe is RESOURCE_EXHAUSTED"
    )

    @field_validator("max_batch_bytes")
    @classmethod
    def _under_grpc_limit(cls, v):
        # gRPC's default receive limit is 4 MiB; leave room for framing.
        if not 4096 <= v <= 3 * 1024 * 1024:
            raise ValueError("must be between 4KiB and 3MiB (clients refuse messages over 4MiB)")
        return v


class KeepaliveConfig(Model):
    """Server keepalive; clients may ping as often as `min_client_ping_s` without data."""

    time_s: float = Field(default=30.0, gt=0, description="the server pings an idle client this often")
    timeout_s: float = Field(default=10.0, gt=0, description="and drops it when the ping is not answered in this time")
    min_client_ping_s: float = Field(default=10.0, gt=0, description="clients that ping more often are sent GOAWAY")


class MetricsAuthConfig(SecretsModel):
    """A bearer token Prometheus must present on /metrics."""

    __secrets__: ClassVar = ("token",)
    __required_secrets__: ClassVar = ("token",)

    token: SecretStr | None = Field(
        default=None,
        description="the token Prometheus sends as `Authorization: Bearer <token>` "
        "(inline: an error unless `auth.allow_inline_secrets`)",
    )
    token_env: str | None = Field(default=None, description="the environment variable holding the token")
    token_file: str | None = Field(default=None, description="a file holding the token (without its trailing newline)")


class GatewaySection(Model):
    name: str = Field(
        default="tianwang",
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="this gateway's name, shown in stats, metrics and NATS subjects (`<name>-I` for shard I)",
    )
    listen: str = Field(default="127.0.0.1:50051", description="HOST:PORT of the gRPC service")
    # /metrics is served over HTTPS with gateway.tls's certificate whenever tls is set
    metrics: str | None = Field(
        default="127.0.0.1:9108",
        description="HOST:PORT of the Prometheus `/metrics` endpoint; `off` or null turns it off. HTTPS with "
        "`gateway.tls`'s certificate whenever `tls` is set",
    )
    metrics_auth: MetricsAuthConfig | None = Field(
        default=None, description="a bearer token `/metrics` requires (401 without it); null = none"
    )
    journal: JournalConfig = Field(default=JournalConfig(), description="the journal every envelope is appended to")
    tls: TLSConfig | None = Field(default=None, description="TLS for gRPC (and /metrics); null = plaintext")
    fanout: FanoutConfig = Field(default=FanoutConfig(), description="defaults and caps of Subscribe batches")
    keepalive: KeepaliveConfig = Field(default=KeepaliveConfig(), description="gRPC keepalive of client connections")
    shutdown_grace_s: float = Field(
        default=3.0,
        ge=0,
        le=30,
        description="time calls in flight get when the server stops (at most 1.5 s is used, to stop within 5 s)",
    )

    _hostport = field_validator("listen")(classmethod(lambda cls, v: check_hostport(v)))

    @field_validator("metrics", mode="before")
    @classmethod
    def _metrics(cls, v):
        # `off` (or YAML's false) turns the endpoint off, as `run --metrics off` does
        if v is None or v is False or (isinstance(v, str) and v.strip().lower() in ("off", "none", "")):
            return None
        return check_hostport(v)


class TokenConfig(SecretsModel):
    __secrets__: ClassVar = ("token",)
    __required_secrets__: ClassVar = ("token",)

    name: str = Field(
        pattern=r"^[A-Za-z0-9_.@-]{1,64}$",
        description="unique name of the token's holder, shown in audit records and stats",
    )
    token: SecretStr | None = Field(
        default=None,
        description="the token itself (inline: an error unless `auth.allow_inline_secrets`); "
        "exactly one of token, token_env, token_file; values must differ between tokens",
    )
    token_env: str | None = Field(default=None, description="the environment variable holding the token")
    token_file: str | None = Field(default=None, description="a file holding the token (without its trailing newline)")
    read: tuple[str, ...] = Field(default=(), description="topic patterns (MQTT wildcards) this token may subscribe to")
    control: tuple[str, ...] = Field(
        default=(), description="`family/device_id` patterns this token may send commands to (`gnss/+`)"
    )
    admin: bool = Field(
        default=False,
        description='sees every Subscribe stream in GetStats, not only its own; `control: ["#"]` implies it',
    )
    commands_per_s: float | None = Field(
        default=None,
        gt=0,
        description="SendCommand calls per second at most (past it RESOURCE_EXHAUSTED, audited); null = no limit",
    )
    commands_burst: int = Field(
        default=0, ge=0, description="commands allowed at once above the rate; 0 = one second's worth"
    )

    @field_validator("read", "control")
    @classmethod
    def _patterns(cls, v):
        from tianwang.gateway.framing import validate_pattern

        for p in v:
            validate_pattern(p)
        return v


class AuthConfig(Model):
    tokens: tuple[TokenConfig, ...] = Field(
        default=(), description="the bearer tokens; without any, every call is refused (check warns)"
    )
    anonymous_read: tuple[str, ...] = Field(
        default=(),
        description="topic patterns anyone may read without a token (logged as a WARNING at every start); "
        "empty = a token is always needed",
    )
    # refused SendCommand calls audited per client address: at this rate, after a burst; past it
    # they are refused with RESOURCE_EXHAUSTED and counted, not audited one by one
    refused_commands_per_s: float = Field(
        default=5.0,
        gt=0,
        description="refused SendCommand calls audited per client address per second, after the burst; past it "
        "they are RESOURCE_EXHAUSTED and only counted",
    )
    refused_commands_burst: int = Field(
        default=50, ge=1, description="refused calls per address audited one by one before the rate applies"
    )
    allow_inline_secrets: bool = Field(
        default=False,
        description="accept secrets written in the file itself (`token:`, `password:`, `auth_secret:`...), for a "
        "file kept as safe as the secrets (a sealed config store, a test); otherwise each one is an error: "
        "prefer `<name>_env` or `<name>_file`",
    )

    @field_validator("anonymous_read")
    @classmethod
    def _patterns(cls, v):
        from tianwang.gateway.framing import validate_pattern

        for p in v:
            validate_pattern(p)
        return v

    @model_validator(mode="after")
    def _unique(self):
        seen = {}
        for i, t in enumerate(self.tokens):
            seen[t.name] = i  # duplicate names are found by load_config, on the raw entries
        values = {}
        for i, t in enumerate(self.tokens):
            v = t.token.get_secret_value() if t.token else None
            if v is not None and v in values:
                raise PydanticCustomError(
                    "secret",
                    "{key}: same token value as tokens[{other}]",
                    {"key": f"tokens[{i}].token", "other": values[v]},
                )
            values[v] = i
        return self


class BackoffConfig(Model):
    initial_s: float = Field(default=0.5, gt=0, le=60, description="first wait before reconnecting")
    max_s: float = Field(default=30.0, gt=0, le=3600, description="longest wait; not below `initial_s`")
    factor: float = Field(
        default=2.0,
        ge=1.0,
        le=10.0,
        description="growth per failed attempt; waits are drawn with full jitter and reset after 30 s connected",
    )

    @model_validator(mode="after")
    def _order(self):
        if self.max_s < self.initial_s:
            raise ValueError(f"max_s ({self.max_s:g}) is below initial_s ({self.initial_s:g})")
        return self


class DeviceConfig(Model):
    """Keys every `devices:` entry has; drivers subclass it with their own keys."""

    id: str = Field(
        description="the device id: one topic level of 1-64 of `A-Z a-z 0-9 . _ : -`, starting with a letter or "
        "digit; unique across devices and listeners",
    )
    driver: str = Field(description="the driver's name; `tianwang drivers` lists the installed ones")
    enabled: bool = Field(
        default=True, description="false: not run, but listed as `DISABLED` (and its commands refused with that reason)"
    )
    backoff: BackoffConfig = Field(
        default=BackoffConfig(), description="how long to wait between reconnection attempts"
    )
    labels: dict[str, str] = Field(default_factory=dict, description="free facts shown in ListDevices `info`")
    gb_id: str | None = Field(
        default=None,
        pattern=r"^[0-9]{20}$",
        description="the device's 20-digit GB/T 28181 ID towards superior platforms (`uplinks:`); default: the "
        "rule in docs/gb28181-uplink.md; `check` refuses two devices with one ID",
    )

    def config_warnings(self) -> list[tuple[str, str]]:
        """(key, why) for settings that are allowed but unwise: `tianwang check` prints them as
        warnings under the entry's path. Drivers override it; the driver should log them at start too."""
        return []

    # What `run` will open, bind and share (tianwang.gateway.lifecycle.sitecheck checks them in
    # `check` and on reload); drivers override what applies to them.
    def config_paths(self) -> list[tuple[str, str, str]]:
        """(key, path, need) of the files the driver opens: need "read", "write" or "dir"."""
        return []

    def config_binds(self) -> list[tuple[str, str, str]]:
        """(key, HOST:PORT, share tag) of the addresses the driver listens on; entries with the same
        non-empty tag may name the same address."""
        return []

    def link_id(self) -> str | None:
        """What identifies the serial line or connection the driver opens (`serial:/dev/ttyS1`,
        `tcp:10.1.2.3:5000`); devices with the same link id share a link and a shard. The default
        reads a `url` key of scheme serial or tcp; None: no such link."""
        return url_link_id(getattr(self, "url", None))

    @field_validator("id")
    @classmethod
    def _id(cls, v):
        if not DEVICE_ID_RE.match(v):
            raise ValueError("must be 1-64 of A-Z a-z 0-9 . _ : - starting with a letter or digit")
        return v


class ListenerConfig(DeviceConfig):
    """Keys every `listeners:` entry has: a server socket that devices dial into."""

    listen: str = Field(
        description="HOST:PORT where devices dial in; no two listeners (nor `gateway.listen` or `gateway.metrics`) "
        "may share one",
    )

    _hostport = field_validator("listen")(classmethod(lambda cls, v: check_hostport(v)))

    def config_binds(self) -> list[tuple[str, str, str]]:
        return [("listen", self.listen, "")]

    def link_id(self) -> str | None:
        return None


def url_link_id(url) -> str | None:
    """`serial:<real path>` or `tcp:<host:port>` of a device URL, None for anything else. The
    serial path is resolved, so two names of one port (a /dev/serial/by-id link) are one link."""
    if not isinstance(url, str):
        return None
    parts = urlsplit(url)
    if parts.scheme == "serial" and parts.path:
        return f"serial:{os.path.realpath(parts.path)}"
    if parts.scheme == "tcp" and parts.netloc:
        return f"tcp:{parts.netloc.lower()}"
    return None


class Config(Model):
    gateway: GatewaySection = Field(
        default=GatewaySection(), description="the gateway process: addresses, journal, TLS"
    )
    auth: AuthConfig = Field(default=AuthConfig(), description="who may call the gRPC service")
    bridges: BridgesConfig = Field(default=BridgesConfig(), description="where else the journal is published")
    devices: tuple[DeviceConfig, ...] = Field(
        default=(), description="devices the gateway connects to; each entry's keys depend on its `driver`"
    )
    listeners: tuple[ListenerConfig, ...] = Field(
        default=(), description="servers devices dial into; each entry's keys depend on its `driver`"
    )
    uplinks: tuple[UplinkConfig, ...] = Field(
        default=(), description="superior GB/T 28181 platforms the gateway registers to as a lower platform"
    )

    def all_devices(self):
        """Devices and listeners, in file order (devices first)."""
        return tuple(self.devices) + tuple(self.listeners)


def parse_url(url: str, schemes: tuple[str, ...]) -> tuple[str, str, dict[str, str]]:
    """Split a device URL: 'serial:///dev/ttyS1?baudrate=9600' -> ('serial', '/dev/ttyS1', {...});
    'tcp://127.0.0.1:4001' -> ('tcp', '127.0.0.1:4001', {}). Raises ValueError with a clear reason."""
    parts = urlsplit(url)
    if parts.scheme not in schemes:
        raise ValueError(f"unsupported scheme {parts.scheme!r} (use {', '.join(s + '://' for s in schemes)})")
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    if parts.scheme == "serial":
        if not parts.path:
            raise ValueError("serial URL needs a device path, e.g. serial:///dev/ttyS1?baudrate=9600")
        return parts.scheme, parts.path, query
    if not parts.netloc:
        raise ValueError(f"{parts.scheme} URL needs HOST:PORT")
    if "@" in parts.netloc:
        raise ValueError(f"{parts.scheme} URLs take no user or password (HOST:PORT only)")
    parse_hostport(parts.netloc)
    return parts.scheme, parts.netloc, query


# the rates pyserial's POSIX backend knows by name; others only work on some adapters
SERIAL_BAUDRATES = (
    1200,
    2400,
    4800,
    9600,
    19200,
    38400,
    57600,
    115200,
    230400,
    460800,
    500000,
    576000,
    921600,
    1000000,
)
_PARITY = {
    "N": "N",
    "E": "E",
    "O": "O",
    "M": "M",
    "S": "S",
    "NONE": "N",
    "EVEN": "E",
    "ODD": "O",
    "MARK": "M",
    "SPACE": "S",
}
_BOOL = {"1": True, "0": False, "true": True, "false": False, "yes": True, "no": False, "on": True, "off": False}


def serial_options(
    query: dict[str, str], *, baudrates: tuple[int, ...] = SERIAL_BAUDRATES, flow_control: bool = True
) -> dict[str, Any]:
    """pyserial keyword arguments from a `serial://` URL's query (`parse_url`): `baudrate` (one of
    `baudrates`, default 9600), `bytesize` (5-8), `parity` (N E O M S, or the words), `stopbits`
    (1, 1.5, 2) and, with `flow_control`, `rtscts` and `xonxoff` (0/1, true/false). Parity is set
    only when the URL names it. Raises ValueError naming the bad key."""
    # exclusive: a second process (or device) opening the same port gets a clear error instead of
    # two readers stealing each other's bytes (pyserial's flock on POSIX)
    out: dict[str, Any] = {"baudrate": 9600, "exclusive": True}
    keys = ("baudrate", "bytesize", "parity", "stopbits") + (("rtscts", "xonxoff") if flow_control else ())
    for key, value in query.items():
        if key == "baudrate":
            try:
                rate = int(value)
            except ValueError:
                raise ValueError(f"baudrate {value!r} is not a number") from None
            if rate not in baudrates:
                raise ValueError(f"baudrate {rate} is not one of {', '.join(map(str, baudrates))}")
            out["baudrate"] = rate
        elif key == "bytesize":
            if value not in ("5", "6", "7", "8"):
                raise ValueError(f"bytesize {value!r} must be 5, 6, 7 or 8")
            out["bytesize"] = int(value)
        elif key == "parity":
            p = _PARITY.get(value.upper())
            if p is None:
                raise ValueError(f"parity {value!r} must be N, E, O, M or S")
            out["parity"] = p
        elif key == "stopbits":
            if value not in ("1", "1.5", "2"):
                raise ValueError(f"stopbits {value!r} must be 1, 1.5 or 2")
            out["stopbits"] = float(value) if value == "1.5" else int(value)
        elif key in keys:  # rtscts, xonxoff
            b = _BOOL.get(value.lower())
            if b is None:
                raise ValueError(f"{key} {value!r} must be 0 or 1")
            out[key] = b
        else:
            raise ValueError(f"unknown serial option {key!r} (use {', '.join(keys)})")
    return out


# ---------------------------------------------------------------------------------------------
# Loading


def _loc_to_path(loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _problems_from(exc: ValidationError, prefix: str = "", model: type | None = None) -> list[tuple[str, str]]:
    from tianwang.gateway.lifecycle.sitecheck import did_you_mean, known_keys

    problems = []
    for err in exc.errors(include_url=False):
        loc = list(err["loc"])
        msg = err["msg"]
        if err["type"] == "secret":
            key = err["ctx"]["key"]
            msg = msg.split(": ", 1)[1] if ": " in msg else msg
            loc.extend(_split_key(key))
        elif err["type"] == "extra_forbidden":
            msg = "unknown key" + (did_you_mean(str(loc[-1]), known_keys(model, loc)) if loc else "")
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        path = _loc_to_path(loc)
        if prefix:
            path = prefix + ("" if not path or path.startswith("[") else ".") + path
        problems.append((path, msg))
    return problems


def _split_key(key: str) -> list[str | int]:
    # "tokens[1].name" -> ["tokens", 1, "name"]
    out: list[str | int] = []
    for part in key.split("."):
        m = re.match(r"^([^\[]+)((?:\[\d+\])*)$", part)
        if not m:
            out.append(part)
            continue
        out.append(m.group(1))
        out.extend(int(i) for i in re.findall(r"\[(\d+)\]", m.group(2)))
    return out


def load_config(source: str | dict, registry=None) -> Config:
    """Parse and validate a config (a path, YAML text or an already-parsed dict).

    Raises ConfigError listing every problem as (path, reason).
    """
    if registry is None:
        from tianwang.gateway.lifecycle.registry import default_registry

        registry = default_registry()
    data = _read(source)
    problems: list[tuple[str, str]] = []

    if data == {} and isinstance(source, (str, os.PathLike)) and not isinstance(source, dict):
        raise ConfigError(
            [("", "the config is empty: it needs at least auth.tokens and devices (see deploy/tianwang.example.yaml)")]
        )
    if not isinstance(data, dict):
        raise ConfigError([("", f"the config must be a mapping at the top level, not {type(data).__name__}")])

    raw_devices = data.get("devices") or []
    raw_listeners = data.get("listeners") or []
    rest = {k: v for k, v in data.items() if k not in ("devices", "listeners")}
    base = None
    try:
        base = Config.model_validate(rest)
    except ValidationError as exc:
        problems += _problems_from(exc, model=Config)

    devices = _load_entries("devices", raw_devices, "device", registry, problems)
    listeners = _load_entries("listeners", raw_listeners, "listener", registry, problems)

    # duplicates are found on the raw entries, so they are reported even when an entry is invalid
    raw_auth = a if isinstance(a := data.get("auth"), dict) else {}
    names: dict[str, int] = {}
    for i, t in enumerate(tokens if isinstance(tokens := raw_auth.get("tokens"), list) else ()):
        name = t.get("name") if isinstance(t, dict) else None
        if isinstance(name, str):
            if name in names:
                problems.append(
                    (f"auth.tokens[{i}].name", f"duplicate token name {name!r} (also tokens[{names[name]}])")
                )
            else:
                names[name] = i
    seen: dict[str, str] = {}
    raw_uplinks = data.get("uplinks") if isinstance(data.get("uplinks"), list) else []
    for section, raw in (("devices", raw_devices), ("listeners", raw_listeners), ("uplinks", raw_uplinks)):
        for i, entry in enumerate(raw if isinstance(raw, list) else ()):
            dev_id = entry.get("id") if isinstance(entry, dict) else None
            if not isinstance(dev_id, str):
                continue
            if dev_id in seen:
                problems.append((f"{section}[{i}].id", f"duplicate id {dev_id!r} (also {seen[dev_id]})"))
            else:
                seen[dev_id] = f"{section}[{i}]"

    # what `run` would fail on although every entry is valid alone: paths it cannot use, devices
    # that cannot share their link, two things on one address (tianwang.gateway.lifecycle.sitecheck)
    from tianwang.gateway.lifecycle.sitecheck import entry_names, site_problems

    problems += site_problems(data, devices, listeners)

    raw_allow = raw_auth.get("allow_inline_secrets", False)
    if raw_allow is not True:
        for path, name in _inline_secrets(data, registry):
            problems.append(
                (
                    path,
                    f"secret written inline: use {name}_env or {name}_file (or set auth.allow_inline_secrets: true "
                    "if this file is kept as safe as the secret)",
                )
            )

    if base is not None and base.uplinks and not problems:
        from tianwang.gateway.uplink.ids import collisions

        def family(dev):
            spec = registry.get(dev.driver)
            return spec.family if spec is not None else ""

        problems += collisions(
            [(f"devices[{i}]", family(d), d) for i, d in devices]
            + [(f"listeners[{i}]", family(d), d) for i, d in listeners],
            base.uplinks,
        )
    if problems or base is None:  # base is None only when it failed, with its problems
        raise ConfigError(problems, _raw_warnings(data, devices, listeners), names=entry_names(data))
    return base.model_copy(
        update={"devices": tuple(d for _, d in devices), "listeners": tuple(d for _, d in listeners)}
    )


def _raw_warnings(data: dict, devices, listeners) -> list[tuple[str, str]]:
    """The warnings of `warnings_for`, for a config with errors: from the raw mappings and from the
    entries that did validate."""
    out = []
    for section, entries in (("devices", devices), ("listeners", listeners)):
        for i, dev in entries:
            for key, why in dev.config_warnings():
                out.append((f"{section}[{i}].{key}", why))
    auth = a if isinstance(a := data.get("auth"), dict) else {}
    if not auth.get("tokens") and not auth.get("anonymous_read"):
        out.append(("auth.tokens", "no tokens: every gRPC call will be refused"))
    gw = g if isinstance(g := data.get("gateway"), dict) else {}
    try:
        host, _ = parse_hostport(gw.get("listen", "127.0.0.1:50051"))
    except (ValueError, TypeError):
        host = None
    if host is not None and gw.get("tls") is None and host not in ("127.0.0.1", "::1", "localhost"):
        out.append(("gateway.tls", f"listening on {host} without TLS: tokens cross the network in clear"))
    return out


def _inline_secrets(data: dict, registry) -> list[tuple[str, str]]:
    """(path, name) of every secret written inline in the raw config, found on the raw mappings so
    they are reported beside every other problem, even in entries that are otherwise invalid."""

    def mapping(value):
        return value if isinstance(value, dict) else {}

    def given(entry, names, where):
        return [(f"{where}.{n}", n) for n in names if mapping(entry).get(n) is not None]

    out = []
    tokens = mapping(data.get("auth")).get("tokens")
    for i, t in enumerate(tokens if isinstance(tokens, list) else ()):
        out += given(t, TokenConfig.__secrets__, f"auth.tokens[{i}]")
    out += given(
        mapping(data.get("gateway")).get("metrics_auth"), MetricsAuthConfig.__secrets__, "gateway.metrics_auth"
    )
    out += given(mapping(data.get("bridges")).get("nats"), NatsBridgeConfig.__secrets__, "bridges.nats")
    uplinks = data.get("uplinks")
    for i, u in enumerate(uplinks if isinstance(uplinks, list) else ()):
        out += given(u, UplinkConfig.__secrets__, f"uplinks[{i}]")
    for section in ("devices", "listeners"):
        entries = data.get(section)
        for i, entry in enumerate(entries if isinstance(entries, list) else ()):
            spec = (
                registry.get(entry.get("driver"))
                if isinstance(entry, dict) and isinstance(entry.get("driver"), str)
                else None
            )
            model = spec.config_model if spec is not None else None
            if model is not None and issubclass(model, SecretsModel):
                out += given(entry, model.__secrets__, f"{section}[{i}]")
    return out


def _load_entries(section, raw, kind, registry, problems):
    out = []
    if not isinstance(raw, list):
        problems.append((section, "must be a list"))
        return out
    for i, entry in enumerate(raw):
        where = f"{section}[{i}]"
        if not isinstance(entry, dict):
            problems.append((where, "must be a mapping"))
            continue
        name = entry.get("driver")
        if name is None or name == "":
            problems.append((f"{where}.driver", "required"))
            continue
        if not isinstance(name, str):
            problems.append((f"{where}.driver", f"must be a driver name, not {type(name).__name__}"))
            continue
        spec = registry.get(name)
        if spec is None:
            from tianwang.gateway.lifecycle.sitecheck import did_you_mean

            names = sorted(s.name for s in registry.specs() if s.kind == kind)
            problems.append(
                (
                    f"{where}.driver",
                    f"unknown driver {name!r}{did_you_mean(name, names)} (installed: {', '.join(names) or 'none'})",
                )
            )
            continue
        if spec.kind != kind:
            other = "listeners" if spec.kind == "listener" else "devices"
            problems.append((f"{where}.driver", f"{name!r} is a {spec.kind} driver: put it under {other}:"))
            continue
        try:
            out.append((i, spec.config_model.model_validate(entry)))
        except ValidationError as exc:
            problems += _problems_from(exc, where, spec.config_model)
    return out


def _read(source):
    if isinstance(source, dict):
        return dict(source)
    text = source
    if isinstance(source, os.PathLike) or (isinstance(source, str) and not any(c in source for c in "\n:{")):
        try:
            with open(source, encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            raise ConfigError([("", f"cannot read {source}: no such file")]) from None
        except OSError as exc:
            raise ConfigError([("", f"cannot read {source}: {exc.strerror}")]) from None
    elif isinstance(source, str) and os.path.isfile(source):
        with open(source, encoding="utf-8") as f:
            text = f.read()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError([("", f"YAML syntax: {where}{getattr(exc, 'problem', None) or exc}")]) from None
    return {} if data is None else data


def warnings_for(config: Config, registry=None) -> list[tuple[str, str]]:
    """Things that are allowed but unwise, for `tianwang check` (`registry`: the drivers the config
    was loaded with; the installed ones by default)."""
    from tianwang.gateway.lifecycle.aclcheck import pattern_warnings

    if registry is None:
        from tianwang.gateway.lifecycle.registry import default_registry

        registry = default_registry()
    out = []
    # inline secrets are errors (load_config) unless auth.allow_inline_secrets says otherwise: then
    # the file's owner has chosen them, and check says nothing more
    for section, entries in (("devices", config.devices), ("listeners", config.listeners)):
        for i, dev in enumerate(entries):
            for key, why in dev.config_warnings():
                out.append((f"{section}[{i}].{key}", why))
    if not config.auth.tokens and not config.auth.anonymous_read:
        out.append(("auth.tokens", "no tokens: every gRPC call will be refused"))
    for i, u in enumerate(config.uplinks):
        if u.expires < 3600:
            out.append((f"uplinks[{i}].expires", f"{u.expires} s: the standard asks for at least 3600 s"))
    host, _ = parse_hostport(config.gateway.listen)
    if config.gateway.tls is None and host not in ("127.0.0.1", "::1", "localhost"):
        out.append(("gateway.tls", f"listening on {host} without TLS: tokens cross the network in clear"))
    out += pattern_warnings(config, registry)
    return out
