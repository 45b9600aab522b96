"""GB/T 28181 listener: the platform side that cameras, NVRs and 4G units REGISTER to, over UDP and
TCP on one port (`listeners: - driver: gb28181`).

This module moves bytes and owns the timers; what the bytes mean is decided by the sans-io layers:
sip.py (messages), transaction.py (retransmission and duplicates), digest.py and registrar.py
(REGISTER), manscdp.py (bodies) and session.py (one device: liveness, catalog, alarms,
positions). Commands are in commands.py, live video (INVITE) in media.py.

Where requests go: a device is answered at the packet's source (NAT and 4G routers make Via and
Contact wrong) and later requests go to the last source and transport it was heard on; over TCP,
on its last connection (a device behind NAT cannot be dialled).

Devices are children of the listener (`camera/<device-id>/...`), channels children of their
device (`camera/<channel-id>/...`). Positions go to `gnss/<device-id>/fix`.

Robustness: every request is matched against the server transactions first, so a retransmitted
REGISTER or MESSAGE is answered from the cache and never handled twice; requests from unknown or
unauthenticated sources (an ID not allowed, a wrong digest, a MESSAGE from an unregistered device)
are answered only within `unknown_per_s` / `unknown_burst` and otherwise dropped and counted
(`dropped_flood`); malformed SIP or XML is a counted drop with its reason (a TCP stream that cannot
be resynchronised is closed); one message's failure never takes the listener down.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
import time
from collections.abc import Iterable
from functools import partial
from typing import TYPE_CHECKING, Any, cast

from tianwang.drivers.gb28181 import manscdp, sip, transaction
from tianwang.drivers.gb28181.config import Gb28181Config, check_id
from tianwang.drivers.gb28181.registrar import Registrar
from tianwang.drivers.gb28181.registry import Registrations
from tianwang.drivers.gb28181.session import DeviceSession, Outgoing, Step
from tianwang.drivers.gb28181.sync import Sub, Syncer
from tianwang.drivers.sdk import CommandError, Driver, Health, parse_hostport

if TYPE_CHECKING:
    from tianwang.drivers.gb28181.media import Calls
    from tianwang.drivers.sdk import DeviceContext

log = logging.getLogger("tianwang.driver.gb28181")

TICK_S = 0.1  # retransmissions (T1 = 0.5 s) need a finer clock than liveness
BIND_ATTEMPTS = 20  # `listen: HOST:0`: TCP ports tried before giving up on a free UDP twin
SWEEP_S = 1.0
MANSCDP = "Application/MANSCDP+xml"
MAX_INFLIGHT_PER_DEVICE = 64  # our requests waiting for an answer, per device
VERSIONS = {"2.0": "2016", "3.0": "2022"}
PERSISTED_FACTS = {"manufacturer": "manufacturer", "model": "model", "firmware": "firmware", "name": "device_name"}
UDP_RCVBUF = 4 * 1024 * 1024  # asked for; the kernel caps it at net.core.rmem_max


class Route:
    """Where a device was last heard: UDP (ip, port) or a TCP connection."""

    __slots__ = ("transport", "addr", "conn")

    def __init__(self, transport: str, addr: tuple[str, int], conn: _Conn | None = None) -> None:
        self.transport = transport
        self.addr = addr
        self.conn = conn

    @property
    def text(self) -> str:
        return f"{self.addr[0]}:{self.addr[1]}"


class _Bucket:
    """A token bucket: `take(now)` is True while the rate (with its burst) allows."""

    __slots__ = ("rate", "burst", "tokens", "at")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst, self.tokens, self.at = rate, float(burst), float(burst), 0.0

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class _Device:
    __slots__ = (
        "id",
        "session",
        "ctx",
        "route",
        "local",
        "version",
        "user_agent",
        "cseq",
        "subs",
        "channels",
        "inflight",
        "synced",
        "settings",
    )

    def __init__(self, dev_id: str, session: DeviceSession, ctx: DeviceContext, settings: dict[str, Any]) -> None:
        self.id = dev_id
        self.session = session
        self.ctx = ctx
        self.route: Route | None = None
        self.local: tuple[str, int] = ("127.0.0.1", 5060)
        self.version = ""
        self.user_agent = ""
        self.cseq = 0
        self.subs: dict[str, Sub] = {}
        self.channels: dict[str, DeviceContext] = {}  # channel id -> DeviceContext
        self.inflight = 0
        self.synced = False  # queried and subscribed since it registered (or since a restart)
        self.settings = settings

    def next_cseq(self) -> int:
        self.cseq = (self.cseq + 1) & 0x7FFFFFFF
        return self.cseq


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, lst: Gb28181Listener) -> None:
        self.lst = lst
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.lst.received(data, Route("UDP", (addr[0], addr[1])))

    def error_received(self, exc: Exception) -> None:
        # an ICMP port unreachable from a device gone: its requests will time out
        self.lst.ctx.count("udp_errors")


class _Conn(asyncio.Protocol):
    """One TCP connection; devices behind NAT keep it open and are reached through it."""

    def __init__(self, lst: Gb28181Listener) -> None:
        self.lst = lst
        self.transport: asyncio.Transport  # from connection_made, before any other callback
        self.framer = sip.StreamFramer(lst.config.max_message_bytes)
        self.peer = ("", 0)
        self.local = ("127.0.0.1", 0)
        self.last_rx = 0.0
        self.closed = False
        self.route: Route  # from connection_made, before any other callback
        self.devices: set[str] = set()  # the devices heard on it

    def connection_made(self, base: asyncio.BaseTransport) -> None:
        # a TCP server's connection; uvloop's transports do not derive from asyncio.Transport
        self.transport = transport = cast(asyncio.Transport, base)
        lst = self.lst
        peer = transport.get_extra_info("peername") or ("", 0)
        self.peer = (peer[0], peer[1])
        sock = transport.get_extra_info("sockname") or ("127.0.0.1", 0)
        self.local = (sock[0], sock[1])
        self.route = Route("TCP", self.peer, self)
        self.last_rx = lst.loop.time()
        if len(lst.connections) >= lst.config.max_connections:
            lst.ctx.count("connections_refused")
            self.closed = True
            transport.abort()
            return
        lst.connections.add(self)
        lst.ctx.count("connections")

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.last_rx = self.lst.loop.time()
        try:
            messages = self.framer.feed(data)
        except sip.SipError as exc:
            for msg in exc.messages:
                self.lst.handle(msg, self.route)
            self.lst.ctx.drop(exc.reason)
            self.close(f"unreadable stream: {exc}")
            return
        for msg in messages:
            if self.closed:
                return
            self.lst.handle(msg, self.route)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.lst.connections.discard(self)
        self.lst.connection_lost(self)

    def send(self, data: bytes) -> None:
        if not self.closed:
            self.transport.write(data)

    def close(self, why: str) -> None:
        if not self.closed:
            self.closed = True
            log.info("%s: closing TCP %s:%s: %s", self.lst.ctx.device_id, *self.peer, why)
            self.transport.close()


class Gb28181Listener(Driver[Gb28181Config]):
    """The listener driver. `port` is the bound port once `run()` has started (0 in config = any)."""

    def __init__(self, config: Gb28181Config, ctx: DeviceContext) -> None:
        super().__init__(config, ctx)
        self.loop: asyncio.AbstractEventLoop  # set by run(): datagrams, connections and commands come after it
        self.port = 0
        self.host = "0.0.0.0"
        self.udp: _Udp | None = None
        self.server: asyncio.base_events.Server | None = None
        self.connections: set[_Conn] = set()
        self.known = config.known_devices()  # raises ValueError: the supervisor reports it
        self.default_password = config.password.get_secret_value() if config.password is not None else None
        self.registrar = Registrar(
            config.domain or config.server_id[:10],
            self._password,
            strict_ids=config.strict_ids,
            min_expires=config.expires.min_s,
            max_expires=config.expires.max_s,
            qop=config.digest_qop,
        )
        self.registry = Registrations(config.registrations_file, on_write=self._registrations_written)
        self._registry_error = ""
        if config.registrations_file is not None:
            parent = os.path.dirname(os.path.abspath(config.registrations_file))
            if not os.path.isdir(parent):
                raise ValueError(f"registrations_file: directory {parent} does not exist")
        self.devices: dict[str, _Device] = {}
        self.server_tx = transaction.ServerTransactions()
        self.client_tx = transaction.ClientTransactions()
        self.pending: dict[
            tuple[str, str], tuple[asyncio.Future[sip.SipResponse], str]
        ] = {}  # tx key -> (future, device id)
        self.answers: dict[tuple[str, int], asyncio.Future[Any]] = {}  # (device id, SN) -> application answer
        self.unknown = _Bucket(config.unknown_per_s, config.unknown_burst)
        self.syncer = Syncer(self, config.sync_window)
        self._sweep_queue: list[str] = []  # device ids still to look at in this sweep round
        self._sweep_share = 1  # devices looked at per tick in this round
        self._next_round = 0.0
        self._local_ips: dict[str, str] = {}
        self.channel_owner: dict[
            str, str
        ] = {}  # channel id -> its device  # peer address -> our address on the route to it
        self.from_uri = f"sip:{config.server_id}@{config.domain}"
        self.media: Calls | None = None  # made in run()
        for key, why in config.config_warnings():
            log.warning("%s: %s %s", ctx.device_id, key, why)

    # -- policy --------------------------------------------------------------------------------
    def _password(self, device_id: str) -> str | None:
        dev = self.known.get(device_id)
        if dev is not None:
            return dev.password.get_secret_value() if dev.password is not None else self.default_password
        if self.config.registration == "open":
            return self.default_password
        return None

    def _settings(self, device_id: str) -> dict[str, Any]:
        dev = self.known.get(device_id)
        cfg = self.config
        return {
            "datum": (dev.datum if dev is not None and dev.datum else cfg.datum),
            "charset": (dev.charset if dev is not None and dev.charset else cfg.charset),
            "name": dev.name if dev is not None else "",
        }

    def _registrations_written(self, error: str) -> None:
        if error:
            self.ctx.count("registrations_write_errors")
            if not self._registry_error:
                self.ctx.set_health(Health.DEGRADED, f"registrations not saved: {error}")
        elif self._registry_error:
            self.ctx.set_health(Health.ONLINE, f"listening on {self.host}:{self.port}; registrations saved again")
        self._registry_error = error

    # -- devices -------------------------------------------------------------------------------
    def device(self, device_id: str) -> _Device:
        """The device `device_id`, made (with its row in ListDevices) on first use. Raises ValueError."""
        dev = self.devices.get(device_id)
        if dev is not None:
            return dev
        if len(self.devices) >= self.config.max_devices:
            raise ValueError(f"max_devices ({self.config.max_devices}) reached")
        cfg = self.config
        settings = self._settings(device_id)
        ctx = self.ctx.child(device_id, command=partial(self.command_target, device_id, device_id))
        if settings["name"]:
            ctx.set_info(name=settings["name"])
        session = DeviceSession(
            device_id,
            datum=settings["datum"],
            charset=settings["charset"],
            keepalive_s=cfg.keepalive.interval_s,
            keepalive_count=cfg.keepalive.count,
            max_channels=cfg.max_channels,
            catalog_idle_s=cfg.catalog_idle_s,
            server_id=cfg.server_id,
        )
        dev = self.devices[device_id] = _Device(device_id, session, ctx, settings)
        self.ctx.set_info(devices=str(len(self.devices)))
        return dev

    def channel_ctx(self, dev: _Device, channel_id: str) -> DeviceContext | None:
        if channel_id == dev.id:
            return dev.ctx
        return dev.channels.get(channel_id)

    def _add_channel(self, dev: _Device, channel_id: str) -> None:
        if channel_id == dev.id or channel_id in dev.channels:
            return
        why = check_id(channel_id, self.config.strict_ids)
        if why:
            dev.ctx.drop("bad_channel_id")
            return
        try:
            ctx = dev.ctx.child(channel_id, command=partial(self.command_target, dev.id, channel_id))
        except ValueError as exc:  # an ID that is another device's, or a configured one
            dev.ctx.drop("bad_channel_id")
            log.info("%s: channel %s of %s skipped: %s", self.ctx.device_id, channel_id, dev.id, exc)
            return
        ctx.set_info(device=dev.id)
        dev.channels[channel_id] = ctx
        self.channel_owner[channel_id] = dev.id

    def _remove_channel(self, dev: _Device, channel_id: str, reason: str) -> None:
        ctx = dev.channels.pop(channel_id, None)
        if self.channel_owner.get(channel_id) == dev.id:
            del self.channel_owner[channel_id]
        if ctx is not None:
            ctx.set_health(Health.OFFLINE, reason)
            dev.ctx.remove_child(channel_id)

    def apply(self, dev: _Device, step: Step) -> None:
        """Do what a session Step asks (see session.Step for the order)."""
        ctx = dev.ctx
        for reason in step.drops:
            ctx.drop(reason)
        for name in step.counts:
            ctx.count(name)
        for cid in step.removed:
            self._remove_channel(dev, cid, "removed from the catalog")
        for cid in step.added:
            self._add_channel(dev, cid)
        for target, info in step.info.items():
            tctx = self.channel_ctx(dev, target)
            if tctx is not None:
                tctx.set_info(**info)
        for pub in step.publications:
            if pub.family == "gnss":
                ctx.publish_in("gnss", pub.channel, pub.payload, pub.device_time_ns)
                continue
            tctx = self.channel_ctx(dev, pub.target) or ctx
            tctx.publish(pub.channel, pub.payload, pub.device_time_ns)
        for target, state, reason in step.health:
            tctx = self.channel_ctx(dev, target)
            if tctx is not None:
                tctx.set_health(state, reason)
        for sn, _cmd, answer in step.answers:
            fut = self.answers.pop((dev.id, sn), None)
            if fut is not None and not fut.done():
                fut.set_result(answer)
        for out in step.outgoing:
            self.send_body(dev, out)
        if dev.id in self.registry:
            # what the device said about itself and its channels persists with its registration:
            # after a restart they are listed at once
            if step.added or step.removed:
                self.registry.put(dev.id, channels=dev.session.channel_ids())
            facts = step.info.get(dev.id)
            if facts and "firmware" in facts:
                self.registry.put(dev.id, **{k: facts.get(f) for k, f in PERSISTED_FACTS.items()})
        if step.catalog_done is not None:
            self.syncer.catalog_done(dev.id)
        if step.catalog_done is not None and not step.catalog_done.complete:
            log.info(
                "%s: catalog of %s incomplete after %g s: %d of %d items",
                self.ctx.device_id,
                dev.id,
                self.config.catalog_idle_s,
                len(step.catalog_done.items),
                step.catalog_done.sum_num,
            )

    # -- receiving -----------------------------------------------------------------------------
    def received(self, data: bytes, route: Route) -> None:
        """One UDP datagram."""
        try:
            msg = sip.parse_message(data, max_size=self.config.max_message_bytes)
        except sip.SipError as exc:
            if exc.reason != "keepalive":
                self.ctx.drop(exc.reason)
            return
        self.handle(msg, route)

    def handle(self, msg: sip.SipRequest | sip.SipResponse, route: Route) -> None:
        try:
            if isinstance(msg, sip.SipRequest):
                self._request(msg, route)
            else:
                self._response(msg)
        except sip.SipError as exc:
            self.ctx.drop(exc.reason)
        except Exception:  # one message never takes the listener down
            log.exception("%s: handling a message from %s failed", self.ctx.device_id, route.text)
            self.ctx.drop("internal_error")

    def send(self, route: Route, msg: sip.SipRequest | sip.SipResponse) -> None:
        data = msg.to_bytes()
        if route.transport == "TCP":
            if route.conn is not None:
                route.conn.send(data)
        elif self.udp is not None and self.udp.transport is not None:
            self.udp.transport.sendto(data, route.addr)

    def _request(self, req: sip.SipRequest, route: Route) -> None:
        now = self.loop.time()
        cached = self.server_tx.receive(req, now)
        if cached is not None:
            # a retransmission: answered from the cache (or absorbed while the answer is pending)
            self.ctx.count("retransmissions_absorbed")
            if isinstance(cached, sip.SipResponse):
                self.send(route, cached)
            return
        method = req.method
        if method == "REGISTER":
            resp = self._register(req, route, now)
        elif method in ("MESSAGE", "NOTIFY"):
            resp = self._message(req, route, now)
        elif method == "ACK":
            return
        elif method == "BYE":
            resp = self.media.bye_from_device(req) if self.media is not None else None
            resp = resp or sip.build_response(req, 481, source=route.addr)
        elif method == "OPTIONS":
            resp = sip.build_response(req, 200, source=route.addr)
        else:
            resp = sip.build_response(req, 501, source=route.addr)
        if resp is None:
            return
        self.server_tx.remember(req, resp, now)
        self.send(route, resp)

    def _unknown(
        self, req: sip.SipRequest, route: Route, status: int, now: float, counter: str
    ) -> sip.SipResponse | None:
        """The answer to a request the listener will not take, within the unknown-source budget."""
        self.ctx.count(counter)
        if not self.unknown.take(now):
            self.ctx.drop("flood")
            return None
        return sip.build_response(req, status, source=route.addr)

    def _register(self, req: sip.SipRequest, route: Route, now: float) -> sip.SipResponse | None:
        decision = self.registrar.handle(req, now, time.time(), source=route.addr)
        outcome = decision.outcome
        if outcome == "unknown":
            self.ctx.count("registrations_refused")
            if not self.unknown.take(now):
                self.ctx.drop("flood")
                return None
            log.debug(
                "%s: REGISTER of %r from %s refused: %s",
                self.ctx.device_id,
                decision.device_id,
                route.text,
                decision.why,
            )
            return decision.response
        if outcome == "challenged":
            self.ctx.count("challenges")
            return decision.response
        if outcome == "refused":
            self.ctx.count("registrations_refused")
            if decision.response.status == 403:
                self.ctx.count("auth_failures")
                if not self.unknown.take(now):
                    self.ctx.drop("flood")
                    return None
                log.info("%s: %s from %s: %s", self.ctx.device_id, decision.device_id, route.text, decision.why)
            return decision.response
        try:
            dev = self.device(decision.device_id)
        except ValueError as exc:
            self.ctx.count("registrations_refused")
            log.warning("%s: %s cannot register: %s", self.ctx.device_id, decision.device_id, exc)
            return sip.build_response(req, 503, source=route.addr)
        if outcome == "unregistered":
            self.ctx.count("unregistrations")
            self.registry.remove(dev.id)
            dev.synced = False
            dev.subs.clear()
            self.syncer.forget(dev.id)
            if self.media is not None:
                self.media.device_lost(dev, "the device unregistered")
            self.apply(dev, dev.session.unregister("unregistered"))
            return decision.response
        self.ctx.count("registrations")
        self.syncer.registered += 1
        self._heard(dev, req, route)
        dev.user_agent = req.headers.get("User-Agent") or dev.user_agent
        dev.version = VERSIONS.get((req.headers.get("X-GB-Ver") or "").strip(), dev.version or "2016")
        was = dev.session.registered and dev.session.state != Health.OFFLINE
        self.apply(dev, dev.session.register(now, decision.expires_s))
        utc = time.time()
        contact = req.headers.get("Contact") or ""
        self.registry.put(
            dev.id,
            address=route.text,
            transport=route.transport,
            local=f"{dev.local[0]}:{dev.local[1]}",
            contact=contact,
            expires_at=round(utc + decision.expires_s, 3),
            registered_at=round(utc, 3),
            user_agent=dev.user_agent or None,
            version=dev.version,
        )
        dev.ctx.set_info(
            transport=route.transport,
            address=route.text,
            version=dev.version,
            expires_s=decision.expires_s,
            user_agent=dev.user_agent,
            registered_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(utc)),
        )
        self.ctx.set_info(registrations=str(len(self.registry)))
        if not was or not dev.synced:
            self.syncer.queue_sync(dev)
        return decision.response

    def _heard(self, dev: _Device, req: sip.SipRequest, route: Route) -> None:
        """NAT: later requests go to where the device was last heard, on the transport it used."""
        old = dev.route
        dev.route = route
        if old is None or old.addr != route.addr or old.transport != route.transport:
            dev.ctx.set_info(address=route.text, transport=route.transport)
        if route.conn is not None:
            dev.local = route.conn.local
            route.conn.devices.add(dev.id)
        else:
            host = self.host
            if host in ("0.0.0.0", "::", ""):
                # which of our addresses the device reached: its Request-URI names it, else the
                # address the kernel would send from to reach it
                try:
                    host = str(ipaddress.ip_address(req.request_uri.host))
                except (ValueError, sip.SipError):
                    host = self._local_ip_for(route.addr[0])
            dev.local = (host, self.port)

    def _local_ip_for(self, ip: str) -> str:
        """Our address on the route to `ip` (a connected UDP socket sends nothing: the kernel only
        picks the source address), cached per peer address."""
        local = self._local_ips.get(ip)
        if local is None:
            family = socket.AF_INET6 if ":" in ip else socket.AF_INET
            try:
                with socket.socket(family, socket.SOCK_DGRAM) as probe:
                    probe.connect((ip, 9))
                    local = probe.getsockname()[0]
            except OSError:
                local = "127.0.0.1"
            if len(self._local_ips) < 4096:
                self._local_ips[ip] = local
        return local

    def _message(self, req: sip.SipRequest, route: Route, now: float) -> sip.SipResponse | None:
        dev_id = req.from_.uri.user or ""
        dev = self.devices.get(dev_id)
        if dev is None and dev_id in self.channel_owner:
            # field: NVRs that send a channel's alarm From the channel's ID, not their own
            dev = self.devices.get(self.channel_owner[dev_id])
        if dev is None or not dev.session.registered:
            # not registered: 403 makes a device register again
            return self._unknown(req, route, 403, now, "messages_unregistered")
        self._heard(dev, req, route)
        if req.method == "NOTIFY":
            state = (req.headers.get("Subscription-State") or "").split(";")[0].strip().lower()
            if state == "terminated":
                self.syncer.subscription_ended(dev, req)
        resp = sip.build_response(req, 200, source=route.addr)
        if not req.body.strip():
            return resp
        try:
            msg = manscdp.parse(req.body, max_size=self.config.max_message_bytes)
        except manscdp.ManscdpError as exc:
            dev.ctx.drop(exc.reason)
            return sip.build_response(req, 400, source=route.addr)
        if msg.repaired:
            dev.ctx.count("bodies_repaired")
        self.send(route, resp)  # at once: a device sends its next catalog chunk after this 200
        self.server_tx.remember(req, resp, now)
        step = dev.session.message(msg, now, time.time())
        self.apply(dev, step)
        if not dev.synced and dev.session.registered:
            self.syncer.queue_sync(dev)
        return None

    def _response(self, resp: sip.SipResponse) -> None:
        now = self.loop.time()
        matched = self.client_tx.response(resp, now)
        if matched is None:
            if self.media is not None and self.media.stray_response(resp):
                return
            self.ctx.count("responses_unmatched")
            return
        key, final = matched
        if not final:
            return
        entry = self.pending.pop(key, None)
        if entry is None:
            return
        fut, dev_id = entry
        dev = self.devices.get(dev_id)
        if dev is not None:
            dev.inflight -= 1
        if not fut.done():
            fut.set_result(resp)

    def connection_lost(self, conn: _Conn) -> None:
        for dev_id in conn.devices:
            dev = self.devices.get(dev_id)
            if dev is not None and dev.route is not None and dev.route.conn is conn:
                dev.ctx.count("tcp_closed")
                # unreachable until it connects again (a device behind NAT cannot be dialled)
                self.apply(dev, dev.session.link_lost("TCP connection closed; waiting for the device to connect again"))

    # -- sending -------------------------------------------------------------------------------
    def request(
        self,
        dev: _Device,
        method: str,
        target: str,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        headers: Iterable[tuple[str, object]] = (),
        call_id: str | None = None,
        from_tag: str | None = None,
        to_tag: str | None = None,
        cseq: int | None = None,
    ) -> tuple[sip.SipRequest, asyncio.Future[sip.SipResponse]]:
        """Send a request to `dev` (to `target`, the device or one of its channels) and return it
        with a future of its final response. Raises CommandError when the device cannot be
        reached or has too many requests waiting."""
        route = dev.route
        if route is None or (route.transport == "TCP" and (route.conn is None or route.conn.closed)):
            raise CommandError("OFFLINE", f"{dev.id} cannot be reached: no route (its TCP connection is closed)")
        if dev.inflight >= MAX_INFLIGHT_PER_DEVICE:
            raise CommandError("BUSY", f"{dev.id} has {dev.inflight} requests waiting already")
        host, port = dev.local
        req = sip.build_request(
            method,
            f"sip:{target}@{route.addr[0]}:{route.addr[1]}",
            via_host=host,
            via_port=port,
            transport=route.transport,
            from_uri=self.from_uri,
            from_tag=from_tag or sip.new_tag(),
            to_uri=f"sip:{target}@{self.config.domain}",
            to_tag=to_tag,
            call_id=call_id or sip.new_call_id(),
            cseq=cseq if cseq is not None else dev.next_cseq(),
            contact=f"sip:{self.config.server_id}@{host}:{port}",
            headers=headers,
            body=body,
            content_type=content_type,
        )
        fut = self.loop.create_future()
        key = self.client_tx.start(req, route, route.transport == "TCP", self.loop.time())
        self.pending[key] = (fut, dev.id)
        dev.inflight += 1
        self.send(route, req)
        return req, fut

    def send_body(
        self, dev: _Device, out: Outgoing, target: str | None = None
    ) -> asyncio.Future[sip.SipResponse] | None:
        """MESSAGE a MANSCDP body; the SIP answer's future (failures are counted, not raised)."""
        try:
            _req, fut = self.request(dev, "MESSAGE", target or dev.id, body=out.body, content_type=MANSCDP)
        except CommandError as exc:
            dev.ctx.count("messages_unsent")
            log.debug("%s: %s to %s not sent: %s", self.ctx.device_id, out.cmd_type, dev.id, exc)
            return None
        fut.add_done_callback(partial(self._message_done, dev, out.cmd_type))
        return fut

    def _message_done(self, dev: _Device, cmd_type: str, fut: asyncio.Future[sip.SipResponse]) -> None:
        if fut.cancelled():
            return
        if fut.exception() is not None or fut.result().status >= 300:
            dev.ctx.count("messages_failed")

    async def ask(self, dev: _Device, out: Outgoing, timeout: float, target: str | None = None) -> Any:
        """MESSAGE a query and wait for the device's application answer (by SN). Raises
        CommandError (REFUSED when the device answers the MESSAGE with an error)."""
        key = (dev.id, out.sn)
        answer = self.loop.create_future()
        self.answers[key] = answer
        try:
            _req, fut = self.request(dev, "MESSAGE", target or dev.id, body=out.body, content_type=MANSCDP)
            resp = await asyncio.wait_for(fut, timeout)
            if resp.status >= 300:
                raise CommandError("REFUSED", f"{dev.id} answered {out.cmd_type} with {resp.status} {resp.reason}")
            return await asyncio.wait_for(answer, timeout)
        except TimeoutError:
            raise CommandError("TIMEOUT", f"{dev.id} did not answer {out.cmd_type} within {timeout:g} s") from None
        finally:
            self.answers.pop(key, None)

    # -- timers --------------------------------------------------------------------------------
    def tick(self) -> None:
        """Retransmit our UDP requests that are due; fail those that ran out; sync the next
        devices that registered."""
        now = self.loop.time()
        for req, route in self.client_tx.due(now):
            self.ctx.count("retransmissions")
            self.send(route, req)
        for key in self.client_tx.expired(now):
            entry = self.pending.pop(key, None)
            if entry is None:
                continue
            fut, dev_id = entry
            dev = self.devices.get(dev_id)
            if dev is not None:
                dev.inflight -= 1
            if not fut.done():
                fut.set_exception(CommandError("TIMEOUT", f"{dev_id} did not answer (SIP transaction timed out)"))
        self.syncer.tick(now)

    def sweep_step(self) -> None:
        """One tick's share of the sweep: every SWEEP_S a round starts (transactions, the storm
        summary, idle TCP) and every device is looked at once in it, spread over the round's ticks,
        so that 10,000 devices cost the loop a few milliseconds per tick instead of one long stall
        a second (every alarm and position behind it would wait that long)."""
        now = self.loop.time()
        if not self._sweep_queue:
            if now < self._next_round:
                return
            self._next_round = now + SWEEP_S
            self._sweep_listener(now)
            self._sweep_queue = list(self.devices)
            ticks = max(1, round(SWEEP_S / TICK_S))
            self._sweep_share = max(1, -(-len(self._sweep_queue) // ticks))
        queue = self._sweep_queue
        for _ in range(min(self._sweep_share, len(queue))):
            dev = self.devices.get(queue.pop())
            if dev is not None:
                self._sweep_device(dev, now)

    def _sweep_listener(self, now: float) -> None:
        self.server_tx.expire(now)
        summary = self.syncer.storm_summary(now)
        if summary:
            log.info("%s: %s", self.ctx.device_id, summary)
        idle = self.config.tcp_idle_s
        for conn in list(self.connections):
            if now - conn.last_rx > idle:
                conn.close(f"idle for {now - conn.last_rx:.0f} s")

    def _sweep_device(self, dev: _Device, now: float) -> None:
        """Liveness, registration expiry, idle catalogs, subscription refreshes of one device."""
        was_offline = dev.session.state == Health.OFFLINE
        step = dev.session.tick(now)
        if step is not None:
            self.apply(dev, step)
        if not was_offline and dev.session.state == Health.OFFLINE:
            dev.synced = False
            self.syncer.forget(dev.id)
            if self.media is not None:
                self.media.device_lost(dev, dev.session.reason)
        if dev.session.state != Health.OFFLINE and dev.synced:
            self.syncer.refresh_due(dev, now)

    # -- commands ------------------------------------------------------------------------------
    async def command(self, action: str, args: dict, timeout: float) -> dict:
        from tianwang.drivers.gb28181 import commands

        return await commands.on_listener(self, action, args, timeout)

    async def command_target(self, dev_id: str, target: str, action: str, args: dict, timeout: float) -> dict:
        from tianwang.drivers.gb28181 import commands

        dev = self.devices.get(dev_id)
        if dev is None:
            raise CommandError("OFFLINE", f"{dev_id} is not registered")
        return await commands.on_target(self, dev, target, action, args, timeout)

    # -- lifecycle -----------------------------------------------------------------------------
    async def _bind_udp(self, host: str, port: int) -> tuple[asyncio.DatagramTransport, _Udp]:
        return await self.loop.create_datagram_endpoint(lambda: _Udp(self), local_addr=(host, port))

    async def _bind(self, host: str, port: int) -> asyncio.DatagramTransport:
        """TCP and UDP on one port; the UDP transport. With port 0 the kernel picks a free TCP port
        whose UDP twin may be taken (a box with thousands of UDP sockets: a fleet, a media server):
        then another port is picked, within this start rather than by a failed run and its backoff."""
        for _ in range(BIND_ATTEMPTS - 1 if port == 0 else 0):
            try:
                return await self._bind_once(host, port)
            except OSError:
                continue
        return await self._bind_once(host, port)

    async def _bind_once(self, host: str, port: int) -> asyncio.DatagramTransport:
        self.server = server = await self.loop.create_server(
            lambda: _Conn(self), host, port, backlog=4096, reuse_address=True
        )
        self.port = server.sockets[0].getsockname()[1]
        try:
            transport, self.udp = await self._bind_udp(host, self.port)
        except OSError:
            server.close()
            raise
        return transport

    async def run(self) -> None:
        from tianwang.drivers.gb28181.media import Calls

        self.loop = asyncio.get_running_loop()
        self.media = Calls(self)
        host, port = parse_hostport(self.config.listen)
        self.host = host
        transport = await self._bind(host, port)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:  # a register storm arrives faster than one loop turn: let the kernel hold it
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RCVBUF)
            except OSError:
                pass
        self._restore()
        self.ctx.set_info(
            listen=f"{host}:{self.port}",
            transports="UDP+TCP",
            server_id=self.config.server_id,
            domain=self.config.domain,
            registration=self.config.registration,
            registrations=str(len(self.registry)),
            registrations_file=self.config.registrations_file or "(memory only)",
        )
        self.ctx.set_health(Health.ONLINE, f"listening on {host}:{self.port} (UDP and TCP)")
        self._next_round = self.loop.time() + SWEEP_S
        while True:
            await asyncio.sleep(TICK_S)
            self.tick()
            self.sweep_step()

    def _restore(self) -> None:
        """Devices whose registration outlived a restart are known again at once: ONLINE at their
        last address, queried again once they are heard from."""
        now, utc = self.loop.time(), time.time()
        restored = 0
        for dev_id, rec in self.registry.live(utc).items():
            if dev_id in self.devices or self._password(dev_id) is None:
                continue
            try:
                dev = self.device(dev_id)
            except ValueError:
                break
            host, _, port = rec["address"].rpartition(":")
            if rec.get("transport") == "TCP":
                dev.route = Route("TCP", (host, int(port)), None)  # unreachable until it connects again
            else:
                dev.route = Route("UDP", (host, int(port)))
            self._heard_restored(dev, rec.get("local", ""))
            dev.version = rec.get("version", "")
            dev.user_agent = rec.get("user_agent", "")
            dev.ctx.set_info(
                transport=rec.get("transport", "UDP"),
                address=rec["address"],
                version=dev.version,
                user_agent=dev.user_agent,
                restored="true",
                **{f: rec[k] for k, f in PERSISTED_FACTS.items() if rec.get(k)},
            )
            self.apply(dev, dev.session.restore(now, rec["expires_at"] - utc))
            self.apply(dev, dev.session.restore_channels(rec.get("channels") or ()))
            if dev.route.transport == "TCP":
                self.apply(dev, dev.session.link_lost("registration restored; waiting for its TCP connection"))
            restored += 1
        if restored:
            log.info("%s: %d registrations restored from %s", self.ctx.device_id, restored, self.registry.path)

    def _heard_restored(self, dev: _Device, local: str) -> None:
        """Our address as the device reached it before the restart (the Via of our requests)."""
        host = local.rpartition(":")[0] if local else ""
        if not host:
            host = self.host if self.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        dev.local = (host, self.port)

    async def close(self) -> None:
        if self.media is not None:
            await self.media.close_all("listener stopped")
        server, self.server = self.server, None
        if server is not None:
            server.close()
        for conn in list(self.connections):
            conn.closed = True
            conn.transport.abort()
        self.connections.clear()
        if self.udp is not None and self.udp.transport is not None:
            self.udp.transport.close()
        self.udp = None
        for fut, _dev in self.pending.values():
            if not fut.done():
                fut.set_exception(CommandError("OFFLINE", "listener stopped"))
        self.pending.clear()
        for dev in self.devices.values():
            for cid in list(dev.channels):
                self._remove_channel(dev, cid, "listener stopped")
            dev.ctx.set_health(Health.OFFLINE, "listener stopped")
        self.devices.clear()
        if server is not None:
            try:
                await asyncio.wait_for(server.wait_closed(), 1.0)
            except TimeoutError:
                pass
        if self.registry.pending:
            try:
                await asyncio.wait_for(self.registry.flush(), 5.0)
            except (TimeoutError, OSError) as exc:
                log.error("%s: registrations not all written at stop: %s", self.ctx.device_id, exc)
