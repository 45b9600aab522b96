"""Offline decoder for `tianwang decode --driver beidou`: a receiver capture (NMEA + RDSS, with
whatever noise the port carried) -> the publications the beidou driver would make.

It is the driver's own ReceiverProtocol run on the device's clock (epoch times), so the output of
a capture is the same on every run. Kept light: no grpc, no supervisor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tianwang.drivers.beidou.receiver import ReceiverProtocol

if TYPE_CHECKING:
    from tianwang.drivers.sdk import Publication


class Decoder:
    """The decoder interface of tianwang.gateway.cli.decode: family, feed(bytes), finish(), frames,
    dropped_bytes and drops (reason -> count)."""

    family = "gnss"

    def __init__(self, device_id: str, **options: Any) -> None:
        self.protocol = ReceiverProtocol(device_id, **options)

    def feed(self, data: bytes) -> list[Publication]:
        return self.protocol.feed(data, None)

    def finish(self) -> list[Publication]:
        return self.protocol.finish(None)

    @property
    def frames(self) -> int:
        return self.protocol.frames

    @property
    def dropped_bytes(self) -> int:
        return self.protocol.dropped_bytes

    @property
    def drops(self) -> dict:
        return self.protocol.drops
