"""Config of the gateway's links to other systems: the NATS JetStream bridge (`bridges.nats`) and
the GB/T 28181 uplinks to superior platforms (`uplinks[]`). `config.Config` holds them; names are
also importable from `config`, as before the split."""

from __future__ import annotations

import os
from typing import ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import ByteSize, Field, SecretStr, field_validator

from tianwang.gateway.lifecycle.config_base import Model, SecretsModel, check_hostport, parse_hostport
from tianwang.gateway.lifecycle.ids import DEVICE_ID_RE


class NatsBridgeConfig(SecretsModel):
    """`bridges.nats`: the journal published to a NATS JetStream stream, one message per batch."""

    __secrets__: ClassVar = ("token", "password")

    servers: tuple[str, ...] = Field(
        min_length=1,
        description="`nats://HOST:PORT` (or `tls://HOST:PORT`); several for a cluster; no credentials in them "
        "(`user` + `password_env`, `token_env` or `creds_file`)",
    )
    stream: str = Field(
        default="TIANWANG",
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="the JetStream stream; created when missing, used as it is when it exists",
    )
    replicas: int = Field(
        default=1, ge=1, le=5, description="replicas of a stream the bridge creates (an existing one is used as is)"
    )
    subject_prefix: str = Field(
        default="tianwang",
        pattern=r"^[A-Za-z0-9_-]{1,32}$",
        description="subjects are `<subject_prefix>.<gateway.name>.<family>`",
    )
    max_batch: int = Field(default=4096, ge=1, le=65536, description="envelopes per window")
    max_batch_bytes: ByteSize = Field(
        default=ByteSize(512 * 1024),
        description="bytes per window, 4KiB to 64MiB; keep it under the server's `max_payload` (1MiB by default)",
    )
    max_delay_ms: int = Field(
        default=0,
        ge=0,
        le=10_000,
        description="how long a partial window waits for more; 0 = no wait: published at once, what arrives "
        "while a window is published forms the next window",
    )
    max_age_s: float = Field(default=7 * 86400.0, gt=0, description="retention of a stream the bridge creates")
    duplicate_window_s: float = Field(
        default=120.0, gt=0, description="`Nats-Msg-Id` de-duplication window of a stream the bridge creates"
    )
    user: str | None = Field(default=None, description="user name for user and password auth")
    password: SecretStr | None = Field(
        default=None, description="the user's password (inline: an error unless `auth.allow_inline_secrets`)"
    )
    password_env: str | None = Field(default=None, description="the environment variable holding the password")
    password_file: str | None = Field(default=None, description="a file holding the password")
    token: SecretStr | None = Field(
        default=None, description="a token for token auth (inline: an error unless `auth.allow_inline_secrets`)"
    )
    token_env: str | None = Field(default=None, description="the environment variable holding the token")
    token_file: str | None = Field(default=None, description="a file holding the token")
    creds_file: str | None = Field(default=None, description="a NATS `.creds` file (JWT and nkey); must be readable")
    tls_ca_file: str | None = Field(
        default=None, description="the CA that signed the servers' certificates (with `tls://` URLs)"
    )

    @field_validator("servers")
    @classmethod
    def _servers(cls, v):
        from tianwang.gateway.errors import redact

        for url in v:
            parts = urlsplit(url)
            if parts.scheme not in ("nats", "tls") or not parts.netloc:
                raise ValueError(f"{redact(url)!r}: expected nats://HOST:PORT or tls://HOST:PORT")
            if "@" in parts.netloc:
                # a URL is logged and reported (health_reason); secrets come from *_env / *_file
                raise ValueError(
                    f"{redact(url)!r}: no credentials in the URL: give `user` with `password_env` or "
                    "`password_file`, or `token_env` / `token_file`, or `creds_file`"
                )
            parse_hostport(parts.netloc)
        return v

    @field_validator("max_batch_bytes")
    @classmethod
    def _batch_bytes(cls, v):
        if not 4096 <= v <= 64 * 1024 * 1024:
            raise ValueError("must be between 4KiB and 64MiB (and under the server's max_payload)")
        return v

    @field_validator("creds_file", "tls_ca_file")
    @classmethod
    def _readable(cls, v):
        if v is not None and not os.access(v, os.R_OK):
            raise ValueError(f"cannot read {v}")
        return v


class BridgesConfig(Model):
    nats: NatsBridgeConfig | None = Field(
        default=None, description="publish the journal to a NATS JetStream stream; null = no bridge"
    )


class UplinkKeepalive(Model):
    interval_s: float = Field(default=60.0, gt=0, description="a Keepalive MESSAGE this often")
    count: int = Field(default=3, ge=1, description="keepalives unanswered in a row before we register again")


class UplinkConfig(SecretsModel):
    """`uplinks[]`: the gateway registering upward to a superior GB/T 28181 platform (docs/gb28181-uplink.md)."""

    __secrets__: ClassVar = ("password",)
    __required_secrets__: ClassVar = ("password",)

    id: str = Field(
        description="the uplink's id: health on `uplink/<id>/health`, a row in ListDevices, the "
        "caller named in audit records; unique across devices, listeners and uplinks"
    )
    superior: str = Field(description="HOST:PORT of the superior platform's SIP server")
    superior_id: str = Field(pattern=r"^[0-9]{20}$", description="the superior's 20-digit SIP server ID")
    superior_domain: str | None = Field(default=None, description="its SIP domain; default its ID's first 10 digits")
    local_id: str = Field(pattern=r"^[0-9]{20}$", description="our 20-digit ID towards it (type 200, SIP server)")
    domain: str | None = Field(default=None, description="our SIP domain; default `local_id`'s first 10 digits")
    bind: str = Field(default="0.0.0.0:0", description="HOST:PORT our socket binds (port 0: any)")
    transport: Literal["udp", "tcp"] = Field(default="udp", description="SIP transport to the superior")
    password: SecretStr | None = Field(default=None, description="the registration password (inline: check warns)")
    password_env: str | None = Field(default=None, description="the environment variable holding the password")
    password_file: str | None = Field(default=None, description="a file holding the password")
    expires: int = Field(
        default=3600,
        ge=60,
        le=86400,
        description="registration expiry asked for, seconds; refreshed at 80% of what the superior grants",
    )
    keepalive: UplinkKeepalive = Field(default=UplinkKeepalive(), description="keepalive towards the superior")
    retry_s: float = Field(
        default=60.0,
        ge=60.0,
        description="wait after a failed registration (the standard's "
        "floor of 60 s), doubled per failure up to `retry_max_s`",
    )
    retry_max_s: float = Field(default=600.0, ge=60.0, description="the longest wait between registrations")
    expose: tuple[str, ...] = Field(
        default=("camera/#", "gnss/#"),
        description="`family/device_id` patterns of the devices the superior sees (catalog, alarms, positions)",
    )
    control: tuple[str, ...] = Field(
        default=(), description="`family/device_id` patterns the superior may command (PTZ, presets, live video)"
    )
    groups: Literal["family", "site"] = Field(
        default="family", description="catalog business groups: one per family, or one per `labels.site` of the devices"
    )
    name: str = Field(default="Tianwang", max_length=64, description="our name in the superior's catalog")
    datum: Literal["wgs84", "gcj02"] = Field(default="wgs84", description="datum of positions sent upward")
    position_interval_s: float = Field(
        default=5.0, gt=0, description="MobilePosition interval when a subscription names none"
    )
    charset: str = Field(default="GB2312", description="charset of the bodies we send")
    enabled: bool = Field(default=True, description="false: configured but not run")

    @field_validator("id")
    @classmethod
    def _uplink_id(cls, v):
        if not DEVICE_ID_RE.match(v):
            raise ValueError("must be 1-64 of A-Z a-z 0-9 . _ : - starting with a letter or digit")
        return v

    @field_validator("superior", "bind")
    @classmethod
    def _hostport(cls, v):
        return check_hostport(v)

    @field_validator("local_id")
    @classmethod
    def _type_200(cls, v):
        if v[10:13] != "200":
            raise ValueError(f"digits 11-13 are the type and must be 200 (SIP server), not {v[10:13]}")
        return v

    @field_validator("expose", "control")
    @classmethod
    def _uplink_patterns(cls, v):
        from tianwang.gateway.framing import validate_pattern

        for p in v:
            validate_pattern(p)
        return v
