"""`tianwang simulate gb28181-platform`: a superior police platform for lower platforms (the gateway's
uplinks) to register to, over UDP and TCP on one port.

It challenges REGISTER with digest and checks the answer, answers keepalives (404 to a lower it
does not know, so a restarted platform makes its lowers register again), then queries the lower's
catalog and subscribes to its catalog, alarms and mobile positions; it records everything it
receives and can print it as JSON lines (`--jsonl`). Tests drive it in-process (`ptz`, `query`,
`invite`, `bye`, `wait`).

First stdout line: `{"kind": "gb28181-platform", "url": "udp://HOST:PORT", "id", "domain", "password"}`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import secrets
import sys
import time

from tianwang.drivers.gb28181 import digest, manscdp, sip
from tianwang.drivers.gb28181.catalog import CatalogCollector
from tianwang.drivers.gb28181.transaction import client_key

PLATFORM_ID = "43000000002000000001"  # Hunan province's platform (43), type 200
MANSCDP = "Application/MANSCDP+xml"


class Lower:
    """A lower platform registered to us."""

    def __init__(self, lower_id):
        self.id = lower_id
        self.addr = None
        self.transport = "udp"
        self.writer = None
        self.registered = False
        self.registrations = 0
        self.catalog: list = []
        self.catalog_complete = False


class PlatformSim:
    def __init__(
        self,
        host="127.0.0.1",
        port=0,
        *,
        platform_id=PLATFORM_ID,
        password=None,
        qop=True,
        subscribe=True,
        position_interval=5,
        out=None,
        grant_expires=None,
    ):
        self.host = host
        self.port = port
        self.id = platform_id
        self.domain = platform_id[:10]
        self.password = password or secrets.token_hex(8)
        self.qop = qop
        self.subscribe = subscribe
        self.position_interval = position_interval
        self.out = out  # a text stream for JSON lines of what is received
        self.grant_expires = grant_expires  # grant this expiry rather than the one asked for
        self.nonces = digest.NonceStore()
        self.lowers: dict[str, Lower] = {}
        self.received: list[dict] = []
        self.waiting: dict[tuple, asyncio.Future] = {}
        self.calls: dict[str, str] = {}  # Call-ID of an INVITE we made -> the lower platform
        self.catalog_chunks = 0  # Catalog answer MESSAGEs received
        self.collector = CatalogCollector(idle_s=10.0)
        self.sn = itertools.count(1)
        self.cseq = itertools.count(1)
        self.changed = asyncio.Event()
        self.udp = None
        self.tcp = None
        self._tasks: set = set()

    # -- sockets --------------------------------------------------------------------------------
    async def start(self):
        loop = asyncio.get_running_loop()
        sim = self

        class Udp(asyncio.DatagramProtocol):
            def datagram_received(self, data, addr):
                sim._bytes(data, addr, "udp", None)

        async def serve(reader, writer):
            framer = sip.StreamFramer()
            addr = writer.get_extra_info("peername")[:2]
            with contextlib.suppress(ConnectionError, sip.SipError):
                while data := await reader.read(65536):
                    for msg in framer.feed(data):
                        self._message(msg, addr, "tcp", writer)
            writer.close()

        # UDP and TCP on one port: with port 0, a UDP port whose TCP twin is free (a few tries)
        wanted = self.port
        for attempt in range(50):
            self.udp, _ = await loop.create_datagram_endpoint(Udp, local_addr=(self.host, wanted))
            self.port = self.udp.get_extra_info("sockname")[1]
            try:
                self.tcp = await asyncio.start_server(serve, self.host, self.port)
                return
            except OSError:
                self.udp.close()
                if wanted or attempt == 49:
                    raise

    async def stop(self):
        for task in list(self._tasks):
            task.cancel()
        if self.udp is not None:
            self.udp.close()
        if self.tcp is not None:
            self.tcp.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.tcp.wait_closed(), 1.0)

    def describe(self) -> dict:
        return {
            "kind": "gb28181-platform",
            "url": f"udp://{self.host}:{self.port}",
            "tcp": f"tcp://{self.host}:{self.port}",
            "id": self.id,
            "domain": self.domain,
            "password": self.password,
        }

    def stats(self) -> dict:
        kinds: dict[str, int] = {}
        for r in self.received:
            kinds[r["kind"]] = kinds.get(r["kind"], 0) + 1
        return {"lowers": len(self.lowers), "registered": sum(1 for x in self.lowers.values() if x.registered), **kinds}

    # -- receiving ------------------------------------------------------------------------------
    def _bytes(self, data, addr, transport, writer):
        if sip.is_keepalive(data):
            return
        try:
            msg = sip.parse_message(data)
        except sip.SipError:
            self._record("dropped", "", {"bytes": len(data)})
            return
        self._message(msg, addr, transport, writer)

    def _send(self, msg, lower_or_addr, writer=None):
        if isinstance(lower_or_addr, Lower):
            lower = lower_or_addr
            if lower.transport == "tcp" and lower.writer is not None:
                lower.writer.write(msg.to_bytes())
            else:
                self.udp.sendto(msg.to_bytes(), lower.addr)
        elif writer is not None:
            writer.write(msg.to_bytes())
        else:
            self.udp.sendto(msg.to_bytes(), lower_or_addr)

    def _record(self, kind, lower_id, fields):
        rec = {"t": time.monotonic(), "kind": kind, "from": lower_id, **fields}
        self.received.append(rec)
        if self.out is not None:
            self.out.write(
                json.dumps({k: v for k, v in rec.items() if k != "t"}, ensure_ascii=False, default=str) + "\n"
            )
            self.out.flush()
        self.changed.set()

    def _message(self, msg, addr, transport, writer):
        if isinstance(msg, sip.SipResponse):
            if msg.status < 200:
                return  # provisional: the final answer is what the caller waits for
            try:
                fut = self.waiting.pop(client_key(msg), None)
            except sip.SipError:
                return
            if fut is not None and not fut.done():
                fut.set_result(msg)
            return
        reply = lambda status, **kw: self._send(sip.build_response(msg, status, source=addr, **kw), addr, writer)  # noqa: E731
        lower_id = msg.from_.user or ""
        if msg.method == "BYE" and msg.call_id in self.calls:
            # in the dialog of our INVITE: From names the channel, not the lower platform
            reply(200)
            self._record("bye", self.calls.pop(msg.call_id), {"call_id": msg.call_id, "channel": lower_id})
            return
        if msg.method == "REGISTER":
            self._register(msg, lower_id, addr, transport, writer, reply)
            return
        lower = self.lowers.get(lower_id)
        if lower is None or not lower.registered:
            reply(404 if msg.method == "MESSAGE" else 481)
            self._record("refused", lower_id, {"method": msg.method})
            return
        lower.addr, lower.transport, lower.writer = addr, transport, writer
        reply(200)
        if msg.method not in ("MESSAGE", "NOTIFY") or not msg.body:
            return
        try:
            body = manscdp.parse(msg.body)
        except manscdp.ManscdpError as exc:
            self._record("bad_body", lower_id, {"reason": exc.reason})
            return
        try:
            self._body(msg, body, lower, lower_id)
        except manscdp.ManscdpError as exc:  # a body a typed reader refuses (no position...)
            self._record("bad_body", lower_id, {"reason": exc.reason, "cmd_type": body.cmd_type})

    def _body(self, msg, body, lower, lower_id):
        kind = {"Keepalive": "keepalive", "Alarm": "alarm", "MobilePosition": "mobile_position"}.get(body.cmd_type)
        if body.cmd_type == "Catalog":
            sum_num, items = manscdp.catalog_items(body)
            if msg.method == "NOTIFY":
                for item in items:
                    self._record(
                        "catalog_notify",
                        lower_id,
                        {"event": item.event, "device_id": item.device_id, "name": item.name, "status": item.status},
                    )
                return
            self.catalog_chunks += 1
            result = self.collector.add(lower_id, body.sn, sum_num, items, time.monotonic())
            if result is not None:
                if body.device_id == lower_id:  # the whole tree, not the rows under one of its nodes
                    lower.catalog = list(result.items)
                    lower.catalog_complete = result.complete
                self._record(
                    "catalog",
                    lower_id,
                    {
                        "target": body.device_id,
                        "sum_num": result.sum_num,
                        "items": [
                            {
                                "id": i.device_id,
                                "name": i.name,
                                "kind": i.kind,
                                "status": i.status,
                                "ptz_type": i.ptz_type,
                                "lat": i.lat,
                                "lon": i.lon,
                                "parent_ids": list(i.parent_ids or ()),
                            }
                            for i in result.items
                        ],
                    },
                )
            return
        if kind == "alarm":
            a = manscdp.alarm(body)
            self._record(
                "alarm",
                lower_id,
                {
                    "via": msg.method,
                    "device_id": a.device_id,
                    "priority": a.priority,
                    "method": list(a.methods),
                    "type": a.type,
                    "alarm_kind": a.kind,
                    "description": a.description,
                    "lat": a.lat,
                    "lon": a.lon,
                },
            )
            return
        if kind == "mobile_position":
            p = manscdp.mobile_position(body)
            self._record(
                "mobile_position",
                lower_id,
                {
                    "device_id": p.id or body.device_id,
                    "lat": p.lat,
                    "lon": p.lon,
                    "speed_kmh": p.speed_kmh,
                    "time": p.time,
                },
            )
            return
        if kind == "keepalive":
            self._record("keepalive", lower_id, {})
            return
        self._record(
            "message",
            lower_id,
            {"root": body.root, "cmd_type": body.cmd_type, "device_id": body.device_id, "fields": body.fields},
        )

    def _register(self, msg, lower_id, addr, transport, writer, reply):
        auth = msg.headers.get("authorization")
        now = time.monotonic()
        qop = "auth" if self.qop else None
        if auth is None:
            reply(
                401,
                headers=[("WWW-Authenticate", digest.www_authenticate(self.domain, self.nonces.issue(now), qop=qop))],
            )
            return
        fields = digest.parse_authorization(auth)
        state = self.nonces.check(fields.get("nonce", ""), now)
        if state != "ok":
            reply(
                401,
                headers=[
                    (
                        "WWW-Authenticate",
                        digest.www_authenticate(self.domain, self.nonces.issue(now), qop=qop, stale=state == "stale"),
                    )
                ],
            )
            return
        if not digest.verify(fields, self.password, "REGISTER"):
            reply(403)
            self._record("register_refused", lower_id, {})
            return
        expires = msg.int_header("expires")
        lower = self.lowers.setdefault(lower_id, Lower(lower_id))
        lower.addr, lower.transport, lower.writer = addr, transport, writer
        date = manscdp.format_time(time.time_ns(), millis=True)
        granted = expires if expires is not None else 3600
        if self.grant_expires is not None and granted:
            granted = self.grant_expires
        reply(200, headers=[("Expires", str(granted)), ("Date", date)])
        if expires == 0:
            lower.registered = False
            self._record("unregister", lower_id, {})
            return
        first = not lower.registered
        lower.registered = True
        lower.registrations += 1
        self._record("register", lower_id, {"expires": expires, "transport": transport, "call_id": msg.call_id})
        if first and self.subscribe:
            self._spawn(self._after_register(lower))

    def _spawn(self, coro):
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _after_register(self, lower):
        with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
            await self.query(lower.id, "Catalog")
            await self.subscribe_to(lower.id, "Catalog")
            await self.subscribe_to(
                lower.id, "Alarm", [("StartAlarmPriority", 0), ("EndAlarmPriority", 0), ("AlarmMethod", 0)]
            )
            await self.subscribe_to(lower.id, "MobilePosition", [("Interval", self.position_interval)])

    # -- requests to a lower --------------------------------------------------------------------
    def request(self, lower_id, method, *, target=None, body=b"", content_type=MANSCDP, headers=(), call_id=None):
        lower = self.lowers[lower_id]
        target = target or lower_id
        uri = f"sip:{target}@{lower.addr[0]}:{lower.addr[1]}"
        return sip.build_request(
            method,
            uri,
            via_host=self.host,
            via_port=self.port,
            transport=lower.transport,
            from_uri=f"sip:{self.id}@{self.domain}",
            from_tag=sip.new_tag(),
            to_uri=f"sip:{target}@{lower_id[:10]}",
            call_id=call_id or sip.new_call_id(),
            cseq=next(self.cseq),
            contact=f"sip:{self.id}@{self.host}:{self.port}",
            headers=headers,
            body=body,
            content_type=content_type if body else None,
        )

    async def send(self, lower_id, req, timeout=10.0):
        """Send a request to a lower and return its final response."""
        fut = asyncio.get_running_loop().create_future()
        self.waiting[client_key(req)] = fut
        self._send(req, self.lowers[lower_id])
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            self.waiting.pop(client_key(req), None)

    async def query(self, lower_id, cmd_type, target=None, fields=()):
        body = manscdp.build("Query", cmd_type, next(self.sn), target or lower_id, fields)
        return await self.send(lower_id, self.request(lower_id, "MESSAGE", body=body))

    async def subscribe_to(self, lower_id, cmd_type, fields=(), expires=3600):
        body = manscdp.build("Query", cmd_type, next(self.sn), lower_id, fields)
        event = f"Catalog;id={next(self.sn)}" if cmd_type == "Catalog" else "presence"
        req = self.request(lower_id, "SUBSCRIBE", body=body, headers=[("Event", event), ("Expires", str(expires))])
        return await self.send(lower_id, req)

    async def ptz(self, lower_id, channel, cmd_hex):
        body = manscdp.build("Control", "DeviceControl", next(self.sn), channel, [("PTZCmd", cmd_hex)])
        return await self.send(lower_id, self.request(lower_id, "MESSAGE", body=body))

    async def invite(self, lower_id, channel, sdp_offer: bytes):
        req = self.request(
            lower_id,
            "INVITE",
            target=channel,
            body=sdp_offer,
            content_type="application/sdp",
            headers=[("Subject", f"{channel}:0000000001,{self.id}:0")],
        )
        resp = await self.send(lower_id, req, timeout=20.0)
        if resp.status == 200:
            self.calls[req.call_id] = lower_id
            ack = sip.build_request(
                "ACK",
                req.uri,
                via_host=self.host,
                via_port=self.port,
                transport=self.lowers[lower_id].transport,
                from_uri=f"sip:{self.id}@{self.domain}",
                from_tag=req.from_.tag,
                to_uri=f"sip:{channel}@{lower_id[:10]}",
                to_tag=resp.to.tag,
                call_id=req.call_id,
                cseq=req.cseq[0],
            )
            self._send(ack, self.lowers[lower_id])
        return req, resp

    async def bye(self, lower_id, invite, response):
        self.calls.pop(invite.call_id, None)
        req = sip.build_request(
            "BYE",
            invite.uri,
            via_host=self.host,
            via_port=self.port,
            transport=self.lowers[lower_id].transport,
            from_uri=f"sip:{self.id}@{self.domain}",
            from_tag=invite.from_.tag,
            to_uri=str(invite.to.uri),
            to_tag=response.to.tag,
            call_id=invite.call_id,
            cseq=invite.cseq[0] + 1,
        )
        return await self.send(lower_id, req)

    # -- for tests ------------------------------------------------------------------------------
    def of(self, what, **match):
        """What was received of kind `what` (register, keepalive, catalog, catalog_notify, alarm,
        mobile_position, message...) whose fields equal `match`."""
        return [r for r in self.received if r["kind"] == what and all(r.get(k) == v for k, v in match.items())]

    async def wait(self, predicate, timeout=20.0, what="condition"):
        async def loop():
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

        try:
            await asyncio.wait_for(loop(), timeout)
        except TimeoutError:
            raise AssertionError(f"platform simulator: timed out waiting for {what}") from None


def build_parser():
    p = argparse.ArgumentParser(
        prog="tianwang simulate gb28181-platform",
        description="a superior GB/T 28181 platform that lower platforms register to",
    )
    p.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT for UDP and TCP (default 127.0.0.1, any port)")
    p.add_argument("--id", default=PLATFORM_ID, help="the platform's 20-digit ID")
    p.add_argument("--password", default=None, help="the registration password (default: a random one, printed)")
    p.add_argument("--no-qop", action="store_true", help="challenge without qop=auth")
    p.add_argument("--no-subscribe", action="store_true", help="do not query nor subscribe after a registration")
    p.add_argument("--interval", type=int, default=5, help="MobilePosition interval asked for, seconds")
    p.add_argument("--jsonl", action="store_true", help="print what is received as JSON lines on stdout")
    p.add_argument("--stats-interval", type=float, default=0.0, help="counters to stderr this often (0: never)")
    return p


async def _amain(args):
    from tianwang.gateway.cli.simulate import serve as serve_simulator

    host, _, port = args.listen.rpartition(":")
    sim = PlatformSim(
        host or "127.0.0.1",
        int(port),
        platform_id=args.id,
        password=args.password,
        qop=not args.no_qop,
        subscribe=not args.no_subscribe,
        position_interval=args.interval,
        out=sys.stdout if args.jsonl else None,
    )
    return await serve_simulator(sim, sim.describe, args.stats_interval)


def main(argv=None) -> int:
    from tianwang.gateway.cli.simulate import run as run_simulator

    args = build_parser().parse_args(argv)
    if not (len(args.id) == 20 and args.id.isdigit()):
        print("tianwang simulate gb28181-platform: --id must be 20 digits", file=sys.stderr)
        return 2
    if ":" not in args.listen or not args.listen.rpartition(":")[2].isdigit():
        print("tianwang simulate gb28181-platform: --listen must be HOST:PORT", file=sys.stderr)
        return 2
    return run_simulator("gb28181-platform", _amain(args))
