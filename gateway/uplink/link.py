"""One SIP link to a superior platform over UDP or TCP: requests we send (with their client
transactions: UDP retransmissions, Timer F) and requests the superior sends us (with server
transactions: retransmissions answered from the cache), on the sans-io layers of the gb28181 package.

The link knows nothing of registration or MANSCDP: `Uplink` (uplink.py) drives it.
"""

from __future__ import annotations

import asyncio
import logging
import time

from tianwang.drivers.gb28181 import sip
from tianwang.drivers.gb28181.transaction import ABSORBED, ClientTransactions, ServerTransactions
from tianwang.gateway.lifecycle.config import parse_hostport

log = logging.getLogger("tianwang.uplink")


class LinkClosed(ConnectionError):
    pass


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, link):
        self.link = link

    def datagram_received(self, data, addr):
        self.link._bytes_in(data, addr)

    def error_received(self, exc):
        # an ICMP port unreachable: the superior is not listening; what waits for it fails now
        # rather than at Timer F
        self.link.counters["icmp_errors"] += 1
        for fut in self.link.waiting.values():
            if not fut.done():
                fut.set_exception(ConnectionRefusedError(f"superior {self.link.host}:{self.link.port}: {exc}"))

    def connection_lost(self, exc):
        self.link._lost(exc)


class SipLink:
    """`await open()`, then `request(req)` / `respond(req, status, ...)`; incoming requests go to
    `on_request(req)`. `via_host`/`via_port` are our address as the superior should answer it."""

    def __init__(self, superior: str, bind: str, transport: str, on_request, *, t1: float = 0.5):
        self.host, self.port = parse_hostport(superior)
        self.bind = parse_hostport(bind)
        self.transport = transport
        self.reliable = transport == "tcp"
        self.on_request = on_request
        self.client = ClientTransactions(t1=t1)
        self.server = ServerTransactions()
        self.waiting: dict[tuple, asyncio.Future] = {}
        self.via_host = ""
        self.via_port = 0
        self.closed = asyncio.Event()
        self._udp: asyncio.DatagramTransport | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._timer_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.counters = {"sip_in": 0, "sip_out": 0, "sip_dropped": 0, "retransmitted": 0, "icmp_errors": 0}

    # -- lifecycle ------------------------------------------------------------------------------
    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        if self.reliable:
            reader, writer = await asyncio.open_connection(
                self.host, self.port, local_addr=self.bind if self.bind[1] or self.bind[0] != "0.0.0.0" else None
            )
            self._writer = writer
            self._reader_task = loop.create_task(self._read_tcp(reader), name="uplink:tcp")
            sock = writer.get_extra_info("sockname")
        else:
            udp, _ = await loop.create_datagram_endpoint(
                lambda: _Udp(self), local_addr=self.bind, remote_addr=(self.host, self.port)
            )
            self._udp = udp
            sock = udp.get_extra_info("sockname")
        self.via_host, self.via_port = sock[0], sock[1]
        self._timer_task = loop.create_task(self._timers(), name="uplink:timers")

    async def close(self) -> None:
        for task in (self._reader_task, self._timer_task):
            if task is not None:
                task.cancel()
        if self._udp is not None:
            self._udp.close()
        if self._writer is not None:
            self._writer.close()
        self._lost(None)

    def _lost(self, exc) -> None:
        self.closed.set()
        for fut in self.waiting.values():
            if not fut.done():
                fut.set_exception(LinkClosed(f"link to {self.host}:{self.port} closed"))
        self.waiting.clear()

    # -- bytes ----------------------------------------------------------------------------------
    def send(self, msg) -> None:
        if self.closed.is_set():
            raise LinkClosed(f"link to {self.host}:{self.port} closed")
        data = msg.to_bytes()
        self.counters["sip_out"] += 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug("-> %s:%d\n%s", self.host, self.port, data[:2000].decode("utf-8", "replace"))
        if self.reliable and self._writer is not None:
            self._writer.write(data)
        elif not self.reliable and self._udp is not None:
            self._udp.sendto(data)
        else:  # open() makes the transport before anything is sent
            raise LinkClosed(f"link to {self.host}:{self.port} is not open")

    async def _read_tcp(self, reader) -> None:
        framer = sip.StreamFramer()
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                try:
                    msgs = framer.feed(data)
                except sip.SipError as exc:
                    self.counters["sip_dropped"] += 1
                    log.warning("uplink: the superior's TCP stream cannot be read (%s); closing it", exc.reason)
                    break
                for msg in msgs:
                    self._message(msg, (self.host, self.port))
        finally:
            self._lost(None)

    def _bytes_in(self, data: bytes, addr) -> None:
        if sip.is_keepalive(data):
            return
        try:
            msg = sip.parse_message(data)
        except sip.SipError:
            self.counters["sip_dropped"] += 1
            return
        self._message(msg, addr)

    def _message(self, msg, addr) -> None:
        self.counters["sip_in"] += 1
        now = time.monotonic()
        if isinstance(msg, sip.SipResponse):
            hit = self.client.response(msg, now)
            if hit is None:
                return
            key, final = hit
            if final:
                fut = self.waiting.pop(key, None)
                if fut is not None and not fut.done():
                    fut.set_result(msg)
            return
        try:
            cached = self.server.receive(msg, now)
        except sip.SipError:
            self.counters["sip_dropped"] += 1
            return
        if cached is ABSORBED:
            return
        if cached is not None:
            self.send(cached)
            return
        try:
            self.on_request(msg, addr)
        except Exception:  # a handler bug must not end the link; the request gets a 500
            log.exception("uplink: handling %s failed", msg.method)
            if msg.method != "ACK":
                self.respond(msg, 500)

    # -- transactions ---------------------------------------------------------------------------
    async def request(self, req: sip.SipRequest, timeout: float | None = None) -> sip.SipResponse:
        """Send `req` and return its final response. Raises TimeoutError (Timer F/B, or `timeout`)
        and LinkClosed."""
        now = time.monotonic()
        key = self.client.start(req, (self.host, self.port), self.reliable, now)
        fut = asyncio.get_running_loop().create_future()
        self.waiting[key] = fut
        try:
            self.send(req)
        except LinkClosed:
            self.client.cancel(key)
            self.waiting.pop(key, None)
            raise
        self._wake.set()
        try:
            return await asyncio.wait_for(fut, timeout) if timeout is not None else await fut
        except TimeoutError:
            raise TimeoutError(f"{req.method} to {self.host}:{self.port}: no answer") from None
        finally:
            self.client.cancel(key)
            self.waiting.pop(key, None)

    def respond(self, req: sip.SipRequest, status: int, reason: str | None = None, **kw) -> sip.SipResponse:
        resp = sip.build_response(req, status, reason, **kw)
        self.server.remember(req, resp, time.monotonic())
        self.send(resp)
        return resp

    async def _timers(self) -> None:
        while not self.closed.is_set():
            now = time.monotonic()
            for req, _ in self.client.due(now):
                self.counters["retransmitted"] += 1
                try:
                    self.send(req)
                except LinkClosed:
                    return
            for key in self.client.expired(now):
                fut = self.waiting.pop(key, None)
                if fut is not None and not fut.done():
                    fut.set_exception(TimeoutError(f"{key[1]} to {self.host}:{self.port}: no answer (timer F)"))
            self.server.expire(now)
            nxt = self.client.next_deadline()
            delay = 1.0 if nxt is None else max(0.0, min(1.0, nxt - now))
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), delay)
            except TimeoutError:
                pass


__all__ = ["LinkClosed", "SipLink"]
