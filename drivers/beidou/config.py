"""The `beidou` device config: where the receiver is, how its NMEA is judged, how RDSS is spoken.

    devices:
      - id: bd-0042
        driver: beidou
        url: "serial:///dev/ttyUSB0?baudrate=115200"     # or tcp://10.1.2.3:4001 (a serial server)
        rdss: {protocol: "2.1", encoding: gb2312, command_timeout_s: 5}
        receiver: {epoch_period_s: 1.0, hdop_limit: 5.0}  # how fixes are judged (ReceiverOptions)

Serial URL query keys are pyserial's: `baudrate`, `bytesize` (5-8), `parity` (N E O M S),
`stopbits` (1, 1.5, 2), `rtscts`, `xonxoff` (0/1, true/false). Anything else is an error.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from tianwang.drivers.sdk import DeviceConfig, Model, parse_url, serial_options

SCHEMES = ("serial", "tcp")


class ReceiverOptions(Model):
    """How the NMEA stream is judged (tianwang.drivers.beidou.receiver.ReceiverProtocol); unset keys take the
    receiver protocol's defaults."""

    epoch_period_s: float | None = Field(default=None, gt=0, le=60)  # 1/rate: 0.2 for a 5 Hz receiver
    hdop_limit: float | None = Field(default=None, gt=0)  # DEGRADED above this HDOP
    min_sats: int | None = Field(default=None, ge=0, le=200)  # DEGRADED with fewer satellites used
    stale_periods: float | None = Field(default=None, ge=1, le=1000)  # STALE after this many periods without an epoch
    silent_s: float | None = Field(default=None, gt=0, le=3600)  # SILENT after this long without a byte
    sky_decimation: int | None = Field(default=None, ge=0)  # publish every n-th sky (0 = never)
    require_checksum: bool | None = None  # drop sentences without *hh
    protocol: Literal["auto", "nmea", "casic", "ubx"] | None = None  # where fixes come from (binary beside NMEA)

    def options(self) -> dict[str, Any]:
        """The keyword arguments for ReceiverProtocol."""
        return self.model_dump(exclude_none=True)

    @model_validator(mode="after")
    def _accepted(self):
        # the receiver protocol has the last word on its options (and its own cross-checks)
        options = self.options()
        if options:
            from tianwang.drivers.beidou.receiver import ReceiverProtocol

            ReceiverProtocol("config-check", **options)
        return self


class RdssConfig(Model):
    """How the RDSS (short message) side of the terminal is spoken to."""

    # "2.1": $CCTXA sends, $CCICA card query (BD-2 terminals, protocol 2.1);
    # "bds3": $CCTCQ sends, $CCICR card query (BDS-3 terminals)
    protocol: Literal["2.1", "bds3"] = "2.1"
    encoding: Literal["gb2312", "code", "mixed"] = "gb2312"  # default of send_message
    # how long a command waits for the terminal's $BDFKI / $BDICI before it is a TIMEOUT
    command_timeout_s: float = Field(default=5.0, gt=0, le=60)
    # BDS-3 only: frequency point and receipt request written in $CCTCQ
    freq_point: int = Field(default=2, ge=0, le=9)
    receipt: bool = False
    # ask the card for its id and service interval once per connection (shown in ListDevices)
    query_card_on_connect: bool = True


class BeidouConfig(DeviceConfig):
    """`devices:` entry of driver beidou: a BDS receiver (NMEA, optionally an RDSS card) on a
    serial line or behind a TCP serial server."""

    url: str
    connect_timeout_s: float = Field(default=5.0, gt=0, le=120)  # opening the port or the TCP connection
    # a line that carries no byte at all for this long is closed and opened again (a TCP serial
    # server can keep a dead connection open for hours); 0 = never
    reconnect_after_silent_s: float = Field(default=30.0, ge=0, le=3600)
    receiver: ReceiverOptions = Field(default_factory=ReceiverOptions)
    rdss: RdssConfig | None = RdssConfig()  # null: a receiver without an RDSS card

    @field_validator("url")
    @classmethod
    def _url(cls, v):
        scheme, _where, query = parse_url(v, SCHEMES)
        if scheme == "serial":
            serial_options(query)
        elif query:
            raise ValueError(f"tcp URLs take no options, got {', '.join(sorted(query))}")
        return v

    def transport(self) -> tuple[str, str, dict[str, Any]]:
        """('serial', path, pyserial kwargs) or ('tcp', 'host:port', {})."""
        scheme, where, query = parse_url(self.url, SCHEMES)
        return scheme, where, serial_options(query) if scheme == "serial" else {}
