"""The `onvif` device config: one camera reached over HTTP SOAP.

    devices:
      - id: cam-0001
        driver: onvif
        host: 10.1.2.3
        port: 80
        username: admin
        password_env: CAM1_PASS        # or password_file: /etc/tianwang/cam1.pass
        events: pullpoint              # pullpoint (default) | webhook | off
        webhook: {listen: "0.0.0.0:8089", url: "http://10.1.0.5:8089"}   # events: webhook only

The password is a secret: `password_env` or `password_file` (inline only with
`auth.allow_inline_secrets: true`).
"""

from __future__ import annotations

import ipaddress
import re
from typing import ClassVar, Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_core import PydanticCustomError

from tianwang.drivers.sdk import DeviceConfig, Model, SecretsModel, parse_hostport

_HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$")


def check_host(v: str) -> str:
    """A DNS name or an IPv4/IPv6 address (no scheme, no port). Raises ValueError."""
    try:
        ipaddress.ip_address(v)
        return v
    except ValueError:
        pass
    if not _HOST_RE.match(v) or ".." in v:
        raise ValueError(f"{v!r} is not a host name or IP address")
    return v


class WebhookConfig(Model):
    """Where the gateway listens for the camera's Notify POSTs, and the URL the camera is told to use
    (the address the camera can reach, which may differ from the listen address behind NAT)."""

    listen: str = Field(
        default="0.0.0.0:0",
        description="HOST:PORT the webhook listens on; cameras with the same `listen` share one server, each on "
        "the path `/<id>/<secret>` (new per subscription), taking POSTs from the camera's own address only",
    )
    url: str | None = Field(
        default=None,
        description="the base `http://` URL the camera is told to POST to (an address it can reach); null = "
        "`http://<listen host>:<bound port>/`, or for a wildcard listen host the address this host reaches the "
        "camera from (logged)",
    )

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        parse_hostport(v)
        return v

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://[^/\s]+", v):
            raise ValueError(f"{v!r} is not an http:// URL")
        return v


class OnvifConfig(SecretsModel, DeviceConfig):
    """`devices:` entry of driver onvif."""

    __secrets__: ClassVar = ("password",)
    __required_secrets__: ClassVar = ("password",)

    host: str = Field(description="the camera's IP address or DNS name (no scheme, no port)")
    port: int = Field(
        default=80, ge=1, le=65535, description="its HTTP port (the device service is `/onvif/device_service`)"
    )
    username: str = Field(min_length=1, max_length=128, description="the ONVIF user")
    password: SecretStr | None = Field(
        default=None,
        description="its password: one of password, password_env, password_file "
        "(inline: an error unless `auth.allow_inline_secrets`)",
    )
    password_env: str | None = Field(default=None, description="the environment variable holding the password")
    password_file: str | None = Field(default=None, description="a file holding the password")
    # how events arrive: PullPoint long polls (works through NAT), a webhook the camera POSTs to, or none
    events: Literal["pullpoint", "webhook", "off"] = Field(
        default="pullpoint",
        description="how events arrive: PullMessages long polls (work through NAT), the camera POSTing to a "
        "webhook, or none",
    )
    webhook: WebhookConfig | None = Field(
        default=None, description="`events: webhook` only: where the gateway listens for the camera's POSTs"
    )
    subscription_s: float = Field(
        default=60.0,
        ge=10,
        le=86400,
        description="subscription time asked for; renewed at 40-60% of what the camera grants",
    )
    pull_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=60,
        description="PullMessages long-poll time (never more than a third of the time left on the subscription)",
    )
    pull_limit: int = Field(default=100, ge=1, le=1024, description="PullMessages `MessageLimit`")
    timeout_s: float = Field(
        default=10.0, gt=0, le=120, description="one SOAP call's time limit (a long poll adds its own time)"
    )
    max_clock_skew_s: float = Field(
        default=5.0,
        ge=0,
        description="a camera clock further off than this is reported DEGRADED (it is compensated either way)",
    )
    snapshot_basic_auth: bool = Field(
        default=False,
        description="let snapshots use HTTP Basic auth over plain http when the camera asks for it (the password "
        "then crosses the network in clear); Basic over https is always allowed, and credentials only ever go to "
        "the camera's own `host`",
    )
    profile: str | None = Field(
        default=None, description="media profile token used by PTZ, snapshots and stream URIs; null = the first"
    )

    def config_binds(self) -> list[tuple[str, str, str]]:
        # cameras naming one webhook address share its server (one path each)
        if self.events == "webhook":
            return [("webhook.listen", (self.webhook or WebhookConfig()).listen, "onvif-webhook")]
        return []

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        return check_host(v)

    @model_validator(mode="after")
    def _webhook(self) -> Self:
        if self.webhook is not None and self.events != "webhook":
            raise PydanticCustomError("webhook", "webhook: only with events: webhook", {})
        return self
