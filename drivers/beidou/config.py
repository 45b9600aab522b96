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

from typing import Any, Literal, Self

from pydantic import Field, field_validator, model_validator

from tianwang.drivers.sdk import DeviceConfig, Model, parse_url, serial_options

SCHEMES = ("serial", "tcp")


class ReceiverOptions(Model):
    """How the NMEA stream is judged (tianwang.drivers.beidou.receiver.ReceiverProtocol); unset keys take the
    receiver protocol's defaults."""

    epoch_period_s: float | None = Field(
        default=None, gt=0, le=60, description="1/rate of the receiver: 0.2 for 5 Hz; null = 1.0"
    )
    hdop_limit: float | None = Field(default=None, gt=0, description="`state` DEGRADED above this HDOP; null = 5.0")
    min_sats: int | None = Field(
        default=None, ge=0, le=200, description="`state` DEGRADED with fewer satellites used; null = 4"
    )
    stale_periods: float | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="`state` STALE after this many epoch periods without an epoch; null = 3",
    )
    silent_s: float | None = Field(
        default=None, gt=0, le=3600, description="`state` SILENT after this long without a byte; null = 2.0"
    )
    sky_decimation: int | None = Field(default=None, ge=0, description="publish every n-th `sky` (0 = never); null = 5")
    require_checksum: bool | None = Field(default=None, description="drop sentences without `*hh`; null = false")
    protocol: Literal["auto", "nmea", "casic", "ubx"] | None = Field(
        default=None,
        description="where fixes come from when the receiver sends CASIC or UBX binary beside NMEA: `auto` the "
        "binary epochs while they come, NMEA otherwise; `casic`/`ubx` that protocol only; `nmea` NMEA only; "
        "null = `auto`",
    )

    def options(self) -> dict[str, Any]:
        """The keyword arguments for ReceiverProtocol."""
        return self.model_dump(exclude_none=True)

    @model_validator(mode="after")
    def _accepted(self) -> Self:
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
    protocol: Literal["2.1", "bds3"] = Field(
        default="2.1",
        description="`2.1`: `$CCTXA` sends and `$CCICA` card queries (BD-2 terminals); `bds3`: `$CCTCQ` and `$CCICR`",
    )
    encoding: Literal["gb2312", "code", "mixed"] = Field(
        default="gb2312", description="default encoding of the `send_message` command"
    )
    # how long a command waits for the terminal's $BDFKI / $BDICI before it is a TIMEOUT
    command_timeout_s: float = Field(
        default=5.0, gt=0, le=60, description="how long a command waits for the terminal's answer before TIMEOUT"
    )
    # BDS-3 only: frequency point and receipt request written in $CCTCQ
    freq_point: int = Field(default=2, ge=0, le=9, description="BDS-3 only: the frequency point written in `$CCTCQ`")
    receipt: bool = Field(default=False, description="BDS-3 only: ask for a receipt in `$CCTCQ`")
    # ask the card for its id and service interval once per connection (shown in ListDevices)
    query_card_on_connect: bool = Field(
        default=True, description="query the card once per connection, so ListDevices shows its id and interval"
    )


class BeidouConfig(DeviceConfig):
    """`devices:` entry of driver beidou: a BDS receiver (NMEA, optionally an RDSS card) on a
    serial line or behind a TCP serial server."""

    url: str = Field(
        description="`serial:///dev/ttyUSB0?baudrate=115200` or `tcp://HOST:PORT`. Serial options: `baudrate` "
        "(a standard rate, default 9600), `bytesize` (5-8), `parity` (N E O M S), `stopbits` (1, 1.5, 2), "
        "`rtscts`, `xonxoff` (0/1); tcp URLs take none",
    )
    connect_timeout_s: float = Field(
        default=5.0, gt=0, le=120, description="time to open the port or the TCP connection"
    )
    # a line that carries no byte at all for this long is closed and opened again (a TCP serial
    # server can keep a dead connection open for hours); 0 = never
    reconnect_after_silent_s: float = Field(
        default=30.0,
        ge=0,
        le=3600,
        description="a line silent this long is closed and opened again (a serial server can keep a dead "
        "connection open for hours); 0 = never",
    )
    receiver: ReceiverOptions = Field(
        default_factory=ReceiverOptions, description="how the receiver's output is judged into `fix` and `state`"
    )
    rdss: RdssConfig | None = Field(
        default=RdssConfig(), description="the RDSS short-message card; null: a receiver without one"
    )

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
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
