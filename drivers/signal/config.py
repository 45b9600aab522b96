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

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from tianwang.drivers.sdk import DeviceConfig, parse_url, serial_options

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

    url: str
    protocol: Literal["gbt20999"] = "gbt20999"
    profile: str = "majority"
    controller_id: int | None = Field(default=None, ge=1, le=0xFFFFFFFF)  # None: learned from the first reply
    host_id: int = Field(default=1, ge=0, le=0xFF)  # the centre's id in the frame header
    road_id: int = Field(default=1, ge=0, le=0xFF)  # intersection (road) id in the frame header
    tcp_role: Literal["connect", "listen"] = "connect"
    poll_hz: float = Field(default=1.0, gt=0, le=10)
    reply_timeout_s: float = Field(default=1.0, gt=0, le=30)  # a query not answered in time counts as failed
    late_s: float = Field(default=0.5, gt=0, le=30)  # answered, but later than this: DEGRADED
    offline_after_s: float = Field(default=10.0, gt=0, le=3600)  # nothing from the controller: OFFLINE
    heartbeat_s: float = Field(default=15.0, ge=0, le=3600)  # 0 = no heartbeat queries
    clock_sync: bool = True  # set 13.1.10 (UTC time) on connect and every clock_sync_s
    clock_sync_s: float = Field(default=3600.0, ge=0, le=86400)  # 0 = on connect only
    utc_offset_s: int = Field(default=8 * 3600, ge=-14 * 3600, le=14 * 3600)  # the controller's local clock
    command_timeout_s: float = Field(default=5.0, gt=0, le=60)
    connect_timeout_s: float = Field(default=5.0, gt=0, le=120)

    @field_validator("url")
    @classmethod
    def _url(cls, v):
        scheme, _where, query = parse_url(v, SCHEMES)
        if scheme == "serial":
            signal_serial_options(query)
        elif query:
            raise ValueError(f"tcp URLs take no options, got {', '.join(sorted(query))}")
        return v

    @field_validator("profile")
    @classmethod
    def _profile(cls, v):
        from tianwang.drivers.signal.protocol import PROFILES

        if v not in PROFILES:
            raise ValueError(f"unknown profile {v!r} (profiles: {', '.join(PROFILES)})")
        return v

    @model_validator(mode="after")
    def _role(self):
        if self.tcp_role == "listen" and not self.url.startswith("tcp:"):
            raise ValueError("tcp_role listen needs a tcp:// url")
        return self

    def transport(self) -> tuple[str, str, dict[str, Any]]:
        """('serial', path, pyserial kwargs) or ('tcp', 'host:port', {})."""
        scheme, where, query = parse_url(self.url, SCHEMES)
        return scheme, where, signal_serial_options(query) if scheme == "serial" else {}

    def link_key(self) -> tuple:
        """Devices whose keys are equal share one link."""
        scheme, where, options = self.transport()
        return (scheme, where, self.tcp_role)
