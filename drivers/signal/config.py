"""The `signal` device config: one GB/T 20999 traffic-signal controller.

    devices:
      - id: tsc-0017
        driver: signal
        protocol: gbt20999
        url: "serial:///dev/ttyS1?baudrate=9600&parity=E"   # or tcp://10.1.2.3:5000
        controller_id: 17        # optional when the controller is alone on its link
        profile: majority        # vendor differences (tianwang.drivers.signal.protocol.PROFILES)

Devices with the same `url` share the link (a multi-drop serial line, or a terminal server): give
each its `controller_id`. Serial URL query keys are pyserial's: `baudrate`, `bytesize` (5-8),
`parity` (N E O M S), `stopbits` (1, 1.5, 2). `tcp_role: connect` dials the controller (it is the
server); `tcp_role: listen` waits on the URL's address for the controller to dial in.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any, Literal, Self

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from tianwang.drivers.sdk import DeviceConfig, parse_url, serial_options, url_link_id

SCHEMES = ("serial", "tcp")
# GB/T 20999 links run at 1200-19200 baud in practice; up to 115200 on newer controllers
STANDARD_BAUDRATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)


def signal_serial_options(query: dict[str, str]) -> dict[str, Any]:
    """pyserial keyword arguments of a controller's serial URL (SDK serial_options, no flow control).
    GB/T 20999 practice is 8 data bits, a parity bit and 1 stop bit, but which parity is the
    vendor's: it is only set when the URL names it (a pty refuses any parity; pyserial's default is N)."""
    return serial_options(query, baudrates=STANDARD_BAUDRATES, flow_control=False)


class SignalConfig(DeviceConfig):
    """`devices:` entry of driver signal: one controller on a serial line or over TCP."""

    url: str = Field(
        description="`serial:///dev/ttyS1?baudrate=9600&parity=E` or `tcp://HOST:PORT`; devices with the same "
        "`url` share the link. Serial options: `baudrate` (1200-115200, default 9600), `bytesize` (5-8), "
        "`parity` (N E O M S), `stopbits` (1, 1.5, 2); tcp URLs take none",
    )
    protocol: Literal["gbt20999"] = Field(default="gbt20999", description="the only protocol today")
    profile: str = Field(
        default="majority",
        description="vendor differences: `majority`, `length-n`, `length-n-4`, `ccitt`, `unescaped`, "
        "`heartbeat-count`, `control-17n`; devices sharing a link must agree",
    )
    controller_id: int | None = Field(
        default=None,
        ge=1,
        le=0xFFFFFFFF,
        description="the controller's id; null: learned from the first reply (only for a controller alone on its link)",
    )
    host_id: int = Field(default=1, ge=0, le=0xFF, description="the centre's id in the frame header")
    road_id: int = Field(default=1, ge=0, le=0xFF, description="the intersection (road) id in the frame header")
    tcp_role: Literal["connect", "listen"] = Field(
        default="connect",
        description="`connect`: the gateway dials the controller; `listen`: the gateway listens on the URL's "
        "address and the controller dials in (tcp:// URLs only)",
    )
    peers: tuple[str, ...] = Field(
        default=(),
        description="`tcp_role: listen` only: the addresses (`10.20.1.102`) or networks (`10.20.1.0/24`) the "
        "controller may dial in from; connections from anywhere else are refused and counted "
        "(`connections_refused`); empty = any address (check warns)",
    )
    poll_hz: float = Field(
        default=1.0, gt=0, le=10, description="polls of lamps, stage table and run status per second"
    )
    reply_timeout_s: float = Field(
        default=1.0, gt=0, le=30, description="a request not answered in this time counts as unanswered (never resent)"
    )
    late_s: float = Field(default=0.5, gt=0, le=30, description="an answer slower than this counts as late (DEGRADED)")
    offline_after_s: float = Field(
        default=10.0, gt=0, le=3600, description="nothing from the controller for this long: OFFLINE, then reconnect"
    )
    heartbeat_s: float = Field(default=15.0, ge=0, le=3600, description="a heartbeat query this often; 0 = none")
    clock_sync: bool = Field(
        default=True, description="set the controller's UTC time (13.1.10) on connect and every `clock_sync_s`"
    )
    clock_sync_s: float = Field(default=3600.0, ge=0, le=86400, description="clock sync period; 0 = on connect only")
    utc_offset_s: int = Field(
        default=8 * 3600,
        ge=-14 * 3600,
        le=14 * 3600,
        description="how far the controller's local clock (its 7-byte dates) is ahead of UTC",
    )
    command_timeout_s: float = Field(
        default=5.0, gt=0, le=60, description="the longest one request of a command may wait"
    )
    connect_timeout_s: float = Field(
        default=5.0, gt=0, le=120, description="time to open the port or the TCP connection"
    )

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        scheme, _where, query = parse_url(v, SCHEMES)
        if scheme == "serial":
            signal_serial_options(query)
        elif query:
            raise ValueError(f"tcp URLs take no options, got {', '.join(sorted(query))}")
        return v

    @field_validator("profile")
    @classmethod
    def _profile(cls, v: str) -> str:
        from tianwang.drivers.signal.protocol import PROFILES

        if v not in PROFILES:
            raise ValueError(f"unknown profile {v!r} (profiles: {', '.join(PROFILES)})")
        return v

    @field_validator("peers")
    @classmethod
    def _peers(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for peer in v:
            try:
                ipaddress.ip_network(peer, strict=False)
            except ValueError:
                raise ValueError(f"{peer!r} is not an IP address or network (10.20.1.102, 10.20.1.0/24)") from None
        return v

    @model_validator(mode="after")
    def _role(self) -> Self:
        if self.tcp_role == "listen" and not self.url.startswith("tcp:"):
            raise ValueError("tcp_role listen needs a tcp:// url")
        if self.peers and self.tcp_role != "listen":
            raise PydanticCustomError("peers", "peers: only with tcp_role: listen (who may dial in)", {})
        return self

    def peer_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """`peers` as ipaddress networks."""
        return tuple(ipaddress.ip_network(peer, strict=False) for peer in self.peers)

    def config_warnings(self) -> list[tuple[str, str]]:
        if self.tcp_role == "listen" and not self.peers:
            return [
                (
                    "peers",
                    "not set: any address that reaches the port may dial in as this controller "
                    "(a live controller's connection is never replaced, but one that went quiet is); "
                    "name its address",
                )
            ]
        return []

    def transport(self) -> tuple[str, str, dict[str, Any]]:
        """('serial', path, pyserial kwargs) or ('tcp', 'host:port', {})."""
        scheme, where, query = parse_url(self.url, SCHEMES)
        return scheme, where, signal_serial_options(query) if scheme == "serial" else {}

    def link_id(self) -> str | None:
        """The link for `check` and sharding: the resolved serial port, the address dialled, or
        the address listened on (tianwang.gateway.lifecycle.sitecheck)."""
        if self.tcp_role == "listen":
            return f"tcp-listen:{self.transport()[1].lower()}"
        return url_link_id(self.url)

    def config_binds(self) -> list[tuple[str, str, str]]:
        # devices listening on one address share that link (and its server socket)
        return [("url", self.transport()[1], f"signal:{self.link_id()}")] if self.tcp_role == "listen" else []

    @classmethod
    def shared_link_problems(cls, entries: Sequence[SignalConfig]) -> list[tuple[int, str, str]]:
        """(index, key, why) for devices in `entries` (signal configs with one link id, in file
        order) that could not join the link at run time (tianwang.drivers.signal.link.Link.attach
        refuses the same)."""
        out: list[tuple[int, str, str]] = []
        first = entries[0]
        seen: dict[int, str] = {}
        for n, dev in enumerate(entries):
            if n and dev.profile != first.profile:
                out.append(
                    (
                        n,
                        "profile",
                        f"{dev.profile!r} differs from {first.profile!r} of {first.id!r} on the "
                        "same link: devices sharing a link must agree",
                    )
                )
            elif n and dev.url != first.url and dev.transport()[1] != first.transport()[1]:
                out.append(
                    (
                        n,
                        "url",
                        f"{dev.url} is the port of {first.id!r} ({first.url}) under another name: "
                        "write the same url for every device on one line",
                    )
                )
            elif n and dev.transport()[2] != first.transport()[2]:
                out.append((n, "url", f"its serial options differ from those of {first.id!r} on the same line"))
            if dev.controller_id is None:
                out.append(
                    (
                        n,
                        "controller_id",
                        f"{len(entries)} devices share {dev.link_id()} (with "
                        f"{', '.join(repr(d.id) for d in entries if d is not dev)}): each needs its controller_id",
                    )
                )
            elif dev.controller_id in seen:
                out.append(
                    (
                        n,
                        "controller_id",
                        f"controller {dev.controller_id} is already {seen[dev.controller_id]!r} on the same link",
                    )
                )
            else:
                seen[dev.controller_id] = dev.id
        return out

    def link_key(self) -> tuple:
        """Devices whose keys are equal share one link."""
        scheme, where, options = self.transport()
        return (scheme, where, self.tcp_role)
