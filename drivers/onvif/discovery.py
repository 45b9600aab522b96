"""WS-Discovery (2005/04, as ONVIF devices speak it) over asyncio UDP: the prober behind
`tianwang discover` and the responder of the camera simulator.

A Probe goes to the multicast group 239.255.255.250:3702 (or straight to one address); each device
answers with a ProbeMatches carrying its endpoint address, scopes and XAddrs (the device service
URLs). One datagram each way, no threads.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import struct
import time
import uuid
from collections.abc import Callable
from typing import Any, cast

from lxml import etree

MULTICAST_GROUP = "239.255.255.250"
PORT = 3702
NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "a": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "d": "http://schemas.xmlsoap.org/ws/2005/04/discovery",
    "dn": "http://www.onvif.org/ver10/network/wsdl",
    "tds": "http://www.onvif.org/ver10/device/wsdl",
}
_XMLNS = " ".join(f'xmlns:{k}="{v}"' for k, v in NS.items())
_ANONYMOUS = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous"
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
MAX_DATAGRAM = 65507


@dataclasses.dataclass(frozen=True)
class Match:
    """One device that answered: where from, its endpoint reference, types, scopes and XAddrs."""

    address: str  # the IP the answer came from
    endpoint: str
    types: tuple[str, ...]
    scopes: tuple[str, ...]
    xaddrs: tuple[str, ...]

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def probe_message(message_id: str, types: str = "dn:NetworkVideoTransmitter") -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><s:Envelope {_XMLNS}><s:Header>'
        '<a:Action s:mustUnderstand="1">http://schemas.xmlsoap.org/ws/2005/04/discovery/Probe</a:Action>'
        f"<a:MessageID>{message_id}</a:MessageID><a:ReplyTo><a:Address>{_ANONYMOUS}</a:Address></a:ReplyTo>"
        '<a:To s:mustUnderstand="1">urn:schemas-xmlsoap-org:ws:2005:04:discovery</a:To></s:Header>'
        f"<s:Body><d:Probe><d:Types>{types}</d:Types></d:Probe></s:Body></s:Envelope>"
    ).encode()


def probe_matches_message(relates_to: str, endpoint: str, scopes: list[str], xaddrs: list[str]) -> bytes:
    from xml.sax.saxutils import escape

    return (
        f'<?xml version="1.0" encoding="UTF-8"?><s:Envelope {_XMLNS}><s:Header>'
        "<a:Action>http://schemas.xmlsoap.org/ws/2005/04/discovery/ProbeMatches</a:Action>"
        f"<a:MessageID>urn:uuid:{uuid.uuid4()}</a:MessageID><a:RelatesTo>{escape(relates_to)}</a:RelatesTo>"
        f"<a:To>{_ANONYMOUS}</a:To></s:Header><s:Body><d:ProbeMatches><d:ProbeMatch>"
        f"<a:EndpointReference><a:Address>{escape(endpoint)}</a:Address></a:EndpointReference>"
        "<d:Types>dn:NetworkVideoTransmitter tds:Device</d:Types>"
        f"<d:Scopes>{escape(' '.join(scopes))}</d:Scopes><d:XAddrs>{escape(' '.join(xaddrs))}</d:XAddrs>"
        "<d:MetadataVersion>1</d:MetadataVersion></d:ProbeMatch></d:ProbeMatches></s:Body></s:Envelope>"
    ).encode()


def _parse(data: bytes) -> etree._Element | None:
    try:
        return etree.fromstring(data, _PARSER)
    except (etree.XMLSyntaxError, ValueError):
        return None


def parse_probe(data: bytes) -> tuple[str, str] | None:
    """(message id, requested types) of a Probe; None for anything else (never raises)."""
    root = _parse(data)
    if root is None or root.find(f".//{{{NS['d']}}}Probe") is None:
        return None
    mid = root.find(f".//{{{NS['a']}}}MessageID")
    types = root.find(f".//{{{NS['d']}}}Types")
    return (
        (mid.text or "").strip() if mid is not None else "",
        (types.text or "").strip() if types is not None else "",
    )


def _words(parent: etree._Element, tag: str) -> tuple[str, ...]:
    """The whitespace-separated words of the first `tag` under `parent` (a ProbeMatch's Types, Scopes, XAddrs)."""
    el = parent.find(f".//{tag}")
    return tuple((el.text or "").split()) if el is not None else ()


def parse_probe_matches(data: bytes, sender: str) -> tuple[str, list[Match]]:
    """(RelatesTo, matches) of a ProbeMatches; ("", []) for anything else (never raises)."""
    root = _parse(data)
    if root is None:
        return "", []
    rel = root.find(f".//{{{NS['a']}}}RelatesTo")
    out = []
    for pm in root.iter(f"{{{NS['d']}}}ProbeMatch"):
        addr = pm.find(f".//{{{NS['a']}}}Address")
        out.append(
            Match(
                address=sender,
                endpoint=(addr.text or "").strip() if addr is not None else "",
                types=_words(pm, f"{{{NS['d']}}}Types"),
                scopes=_words(pm, f"{{{NS['d']}}}Scopes"),
                xaddrs=_words(pm, f"{{{NS['d']}}}XAddrs"),
            )
        )
    return ((rel.text or "").strip() if rel is not None else ""), out


class _Collector(asyncio.DatagramProtocol):
    def __init__(self, message_id: str) -> None:
        self.message_id = message_id
        self.matches: dict[tuple[str, str], Match] = {}
        self.bad = 0

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        relates, matches = parse_probe_matches(data, addr[0])
        if not matches or (relates and relates != self.message_id):
            self.bad += 0 if matches else 1
            return
        for m in matches:
            self.matches.setdefault((m.endpoint, m.address), m)

    def error_received(self, exc: Exception) -> None:  # ICMP unreachable for a direct probe: nothing answers there
        pass


async def probe(
    timeout: float = 3.0, address: str | None = None, port: int = PORT, interface: str | None = None
) -> list[Match]:
    """Send one Probe (multicast, or to `address` when given) and collect ProbeMatches for `timeout`
    seconds. `interface`: the local IPv4 address whose interface carries the multicast. Raises OSError
    when the socket cannot be opened or the probe cannot be sent."""
    loop = asyncio.get_running_loop()
    message_id = f"urn:uuid:{uuid.uuid4()}"
    if address is not None:  # a name is resolved once, off the loop (getaddrinfo runs in an executor)
        infos = await loop.getaddrinfo(address, port, type=socket.SOCK_DGRAM)
        family, _, _, _, target = infos[0]
        target = target[:2]
    else:
        family, target = socket.AF_INET, (MULTICAST_GROUP, port)
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        if address is None:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 2)
            if interface:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(interface))
        sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 0))
    except OSError:
        sock.close()
        raise
    transport, proto = await loop.create_datagram_endpoint(lambda: _Collector(message_id), sock=sock)
    try:
        transport.sendto(probe_message(message_id), target)
        deadline = time.monotonic() + timeout
        # a second probe halfway: UDP may lose the first (WS-Discovery repeats multicast messages too)
        await asyncio.sleep(min(timeout / 2, 1.0))
        transport.sendto(probe_message(message_id), target)
        await asyncio.sleep(max(0.0, deadline - time.monotonic()))
    finally:
        transport.close()
    return sorted(proto.matches.values(), key=lambda m: (m.address, m.endpoint))


class Responder(asyncio.DatagramProtocol):
    """Answers Probes for NetworkVideoTransmitter (or untyped Probes) with one ProbeMatch."""

    def __init__(self, endpoint: str, scopes: list[str], xaddrs: list[str] | Callable[[], list[str]]) -> None:
        self.endpoint = endpoint
        self.scopes = scopes
        self.xaddrs = xaddrs  # a list, or a callable returning one (the HTTP port may be bound later)
        self.transport: asyncio.DatagramTransport | None = None
        self.probes = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        parsed = parse_probe(data)
        if parsed is None:
            return
        mid, types = parsed
        if types and not any(t.split(":")[-1] in ("NetworkVideoTransmitter", "Device") for t in types.split()):
            return
        self.probes += 1
        xaddrs = self.xaddrs() if callable(self.xaddrs) else self.xaddrs
        if self.transport is not None:
            self.transport.sendto(probe_matches_message(mid, self.endpoint, self.scopes, xaddrs), addr)


async def serve_responder(
    responder: Responder, host: str = "127.0.0.1", port: int = 0, multicast: bool = False
) -> asyncio.DatagramTransport:
    """Bind the responder: unicast on host:port, or (multicast=True) on 0.0.0.0:port joined to the
    WS-Discovery group on the interface of `host`. Raises OSError."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if multicast:
            sock.bind(("0.0.0.0", port))
            iface = socket.inet_aton(host if host not in ("0.0.0.0", "") else "0.0.0.0")
            sock.setsockopt(
                socket.IPPROTO_IP,
                socket.IP_ADD_MEMBERSHIP,
                struct.pack("4s4s", socket.inet_aton(MULTICAST_GROUP), iface),
            )
        else:
            sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    transport, _ = await loop.create_datagram_endpoint(lambda: responder, sock=sock)
    return transport
