"""The links a simulated GB/T 28181 device dials its platform over: a connected UDP socket (one
per device, so each has its own source port, as behind a NAT) or a TCP connection framed by
Content-Length (sip.StreamFramer). Each hands what arrives to its device (`on_bytes` /
`on_message`, `on_link_lost`); `Detached` takes over a link the device abandoned (a NAT
rebinding) and only counts what still arrives there.
"""

from __future__ import annotations

import asyncio

from tianwang.drivers.gb28181 import sip


class UdpLink(asyncio.DatagramProtocol):
    reliable = False
    name = "UDP"

    def __init__(self, device):
        self.device = device
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.device.on_bytes(data, self)

    def error_received(self, exc):
        self.device.fleet.count("send_errors")

    def connection_lost(self, exc):
        self.transport = None

    def send(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.sendto(data)

    def local(self) -> tuple[str, int]:
        return self.transport.get_extra_info("sockname")[:2]

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class TcpLink(asyncio.Protocol):
    reliable = True
    name = "TCP"

    def __init__(self, device):
        self.device = device
        self.transport = None
        self.framer = sip.StreamFramer()

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        try:
            messages = self.framer.feed(data)
        except sip.SipError:
            self.device.fleet.count("bad_messages")
            self.transport.abort()
            return
        for msg in messages:
            self.device.on_message(msg, self)

    def connection_lost(self, exc):
        self.transport = None
        self.device.on_link_lost(self)

    def send(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def local(self) -> tuple[str, int]:
        return self.transport.get_extra_info("sockname")[:2]

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class Detached:
    """What an abandoned link (after a NAT rebinding) reports to: it counts and drops."""

    def __init__(self, fleet):
        self.fleet = fleet

    def on_bytes(self, data, link):
        self.fleet.count("stale_port_datagrams")

    def on_message(self, msg, link):
        self.fleet.count("stale_port_datagrams")

    def on_link_lost(self, link):
        pass
