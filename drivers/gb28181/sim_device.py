"""One simulated GB/T 28181 device (an NVR with channels, an IPC or a 4G mobile unit) and the link
it dials the platform over.

The device does what the standard asks of a real one: REGISTER with digest (answering the 401),
refresh before expiry, keepalive MESSAGEs, a SIP 200 at once for every request and the application
answer as a MESSAGE of its own (catalogs and record lists in several chunks, each sent after the
previous one's 200), PTZ and presets on a head that moves, alarms that need a ResetAlarm before the
next device alarm, subscriptions (catalog, alarm, mobile position) answered with NOTIFYs inside
their dialog, and INVITE answered with an SDP answer and PS-in-RTP to the offered address until BYE.

SIP messages, digest, transactions and SDP come from the sans-io layers (sip.py, digest.py,
transaction.py, sdp.py); bodies from manscdp.py via sim_bodies.py. This module only moves bytes and
keeps the device's state; the fleet (simulator.py) owns the clock tick that drives retransmissions.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from tianwang.drivers.gb28181 import digest, manscdp, ptz, sdp, sim_bodies as bodies, sim_wire, sip, transaction
from tianwang.drivers.gb28181.sim_link import Detached, TcpLink, UdpLink
from tianwang.drivers.gb28181.sim_media import MediaSender, answer_sdp, ssrc_value
from tianwang.drivers.gb28181.sim_world import ALARM_KINDS, MANUFACTURER, PtzHead, Route, recordings

MANSCDP = "Application/MANSCDP+xml"
KEEPALIVE_LOST_MAX = 3  # keepalives without an answer before the device registers again
SLOW_CATALOG_S = 1.5  # the slow_catalog fault's pause before each catalog chunk
ANSWERS_KEPT = 4  # answers kept per device for retransmitted datagrams (bounded memory in a big fleet)
RECENT_KEPT = 64  # answers to scanned MESSAGEs kept per device by branch, each for 64*T1 at most


@dataclass
class SimChannel:
    id: str
    name: str
    civil_code: str
    address: str
    lat: float
    lon: float
    ptz_type: int  # 1 dome, 3 fixed
    head: PtzHead = field(default_factory=PtzHead)
    alarm_latched: bool = False  # a device alarm waits for the platform's ResetAlarm
    video_lost: bool = False
    index: int = 0


@dataclass
class Subscription:
    kind: str  # catalog | alarm | mobile
    call_id: str
    local_tag: str
    remote_tag: str
    remote_uri: str
    event: str
    expires_at: float
    interval_s: float = 5.0
    cseq: int = 0
    timer: asyncio.TimerHandle | None = None


@dataclass
class Call:
    call_id: str
    dest: tuple[str, int]
    ssrc: str
    transport: str
    response: sip.SipResponse | None = None  # the 200 sent for it (resent until the ACK)
    media: MediaSender | None = None
    resend_handle: asyncio.TimerHandle | None = None
    resend_interval: float = 0.5
    acked: bool = False


class SimDevice:
    """A device dialling `fleet.host:fleet.port`. States: idle, connecting, registering, online."""

    def __init__(
        self,
        fleet,
        device_id: str,
        kind: str,
        name: str,
        password: str,
        channels: list[SimChannel],
        rng,
        route: Route | None = None,
        faults: frozenset = frozenset(),
    ):
        self.fleet = fleet
        self.id = device_id
        self.kind = kind  # nvr | ipc | mobile
        self.name = name
        self.password = password
        self.channels = channels
        self.by_channel = {ch.id: ch for ch in channels}
        self.rng = rng
        self.route = route
        self.faults = faults
        self.manufacturer = MANUFACTURER
        self.model = {"nvr": "TW-NVR-1604", "ipc": "TW-IPC-D2", "mobile": "TW-4G-BC1"}[kind]
        self.firmware = "V5.6.2 build 260301"
        self.version = "3.0" if "no_keepalive" in faults else "2.0"  # X-GB-Ver: 2022-only units
        self.expires = fleet.expires
        self.state = "idle"
        self.link: TcpLink | UdpLink | None = None
        self.closing = False
        self.call_id = sip.new_call_id()
        self.from_tag = sip.new_tag()
        self.cseq = self.rng.randint(1, 1000)
        self.sn = self.rng.randint(100_000, 900_000_000)
        self.nc = 0
        self.challenge: dict | None = None
        self.auth_tries = 0
        self.server = transaction.ServerTransactions()
        self.subs: dict[str, Subscription] = {}  # call_id -> subscription
        self.calls: dict[str, Call] = {}
        self.keepalive_lost = 0
        self.rebound = False
        self.backoff = fleet.backoff_initial
        self.online_event = asyncio.Event()
        self.register_results: list[int] = []
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self.last_position: dict | None = None
        self.last_catalog_chunks = 0
        self.online_at = 0.0
        self._answered: dict[bytes, bytes] = {}  # request datagram -> the answer sent (the last few)
        self._answer: bytes | None = None
        self._recent: dict[str, tuple[float, bytes]] = {}  # branch of a scanned MESSAGE -> (until, answer)

    def online_since_ok(self, seconds: float) -> bool:
        return self.state == "online" and self.fleet.loop.time() - self.online_at >= seconds

    # -- timers ----------------------------------------------------------------------------------
    def _later(self, name: str, delay: float, fn: Callable, *args) -> None:
        old = self._timers.pop(name, None)
        if old is not None:
            old.cancel()
        self._timers[name] = self.fleet.loop.call_later(delay, fn, *args)

    def _cancel(self, name: str) -> None:
        old = self._timers.pop(name, None)
        if old is not None:
            old.cancel()

    # -- the link --------------------------------------------------------------------------------
    def dial(self) -> None:
        if self.closing or self.state != "idle":
            return
        self.state = "connecting"
        self.fleet.loop.create_task(self._connect())

    async def _open_link(self):
        loop, fleet = self.fleet.loop, self.fleet
        if fleet.transport == "tcp":
            link = TcpLink(self)
            await loop.create_connection(lambda: link, fleet.host, fleet.port)
        else:
            link = UdpLink(self)
            await loop.create_datagram_endpoint(lambda: link, remote_addr=(fleet.host, fleet.port))
        return link

    async def _connect(self):
        try:
            self.link = await self._open_link()
        except OSError as exc:
            self.fleet.count("connect_failures")
            if self.fleet.notify is not None:
                self.fleet.notify(
                    f"device {self.id}: cannot reach {self.fleet.host}:{self.fleet.port} "
                    f"({exc.strerror or exc}); retrying"
                )
            self.state = "idle"
            self._retry_later()
            return
        if self.closing:
            self.link.close()
            return
        self.register()

    def on_link_lost(self, link) -> None:
        if link is not self.link:
            return
        self.link = None
        self.fleet.count("disconnects")
        self._go_offline()
        if not self.closing:
            if self.fleet.notify is not None:
                self.fleet.notify(f"device {self.id}: the platform closed the connection; reconnecting")
            self._retry_later()

    def _retry_later(self) -> None:
        if self.closing:
            return
        delay = self.backoff / 2 + self.rng.random() * self.backoff / 2
        self.backoff = min(self.fleet.backoff_max, self.backoff * 2)
        self._later("retry", delay, self._retry)

    def _retry(self) -> None:
        if self.link is None:
            self.state = "idle"
            self.dial()
        else:
            self.register()

    def _go_offline(self) -> None:
        if self.state == "online":
            self.fleet.online -= 1
        self.state = "idle" if self.link is None else "registering"
        self.online_event.clear()
        for name in ("keepalive", "refresh"):
            self._cancel(name)
        for sub in list(self.subs.values()):
            self._end_subscription(sub)
        for call in list(self.calls.values()):
            self._end_call(call)

    async def rebind(self) -> None:
        """The NAT gives the device a new public port: same device, new source port, no new
        REGISTER (the next keepalive comes from the new port)."""
        old = self.link
        self.link = await self._open_link()
        self.rebound = True
        self.fleet.count("rebinds")
        if old is not None:
            old.device = Detached(self.fleet)
            old.close()
        if self.state == "online":
            self.send_keepalive()

    # -- sending ---------------------------------------------------------------------------------
    def _local(self) -> tuple[str, int]:
        if self.link is None:
            raise ConnectionError(f"{self.id}: no link to the platform")  # sent only while online
        return self.link.local()

    @property
    def server_uri(self) -> str:
        return f"sip:{self.fleet.server_id}@{self.fleet.domain}"

    @property
    def uri(self) -> str:
        return f"sip:{self.id}@{self.fleet.domain}"

    def _send_bytes(self, data: bytes) -> None:
        link = self.link
        if link is None:
            return
        link.send(data)
        if "duplicate" in self.faults and not link.reliable:
            link.send(data)  # the field fault: every request goes out twice
            self.fleet.count("duplicates_sent")

    @property
    def _headers(self) -> tuple:
        return (("User-Agent", "Tianwang GB28181 simulator"), ("X-GB-Ver", self.version))

    def request(
        self,
        method: str,
        *,
        uri: str | None = None,
        to_uri: str | None = None,
        to_tag: str | None = None,
        call_id: str | None = None,
        from_tag: str | None = None,
        cseq: int | None = None,
        headers=(),
        body: bytes = b"",
        content_type: str | None = None,
        on_response: Callable | None = None,
    ) -> bytes | None:
        """Send a request in a new client transaction (its bytes, None without a link);
        `on_response(resp)` gets the final response (a `sip.SipResponse`, or the
        `sim_wire.ScannedResponse` of one), or None when the transaction timed out."""
        if self.link is None:
            if on_response is not None:
                on_response(None)
            return None
        if cseq is None:
            self.cseq += 1
            cseq = self.cseq
        host, port = self._local()
        branch = sip.new_branch()
        data = sim_wire.request_bytes(
            method,
            uri or self.server_uri,
            via_host=host,
            via_port=port,
            transport=self.link.name,
            from_uri=self.uri,
            from_tag=from_tag or self.from_tag,
            to_uri=to_uri or self.server_uri,
            to_tag=to_tag,
            call_id=call_id or sip.new_call_id(),
            cseq=cseq,
            branch=branch,
            contact=f"<sip:{self.id}@{host}:{port}>",
            headers=[*self._headers, *headers],
            body=body,
            content_type=content_type if content_type is not None else (MANSCDP if body else None),
        )
        fleet = self.fleet
        fleet.outgoing.start(self, branch, method.upper(), data, self.link.reliable, on_response, fleet.loop.time())
        self._send_bytes(data)
        return data

    def message(self, body: bytes, on_response: Callable | None = None):
        return self.request("MESSAGE", body=body, on_response=on_response)

    def next_sn(self) -> int:
        self.sn += 1
        return self.sn

    def resend(self, data: bytes) -> None:
        """A request of ours again (the fleet's T1 timers found it unanswered over UDP)."""
        self.fleet.count("retransmissions")
        self._send_bytes(data)

    # -- registration ----------------------------------------------------------------------------
    def register(self, expires: int | None = None) -> None:
        self.state = "registering" if self.state != "online" else "online"
        self.fleet.count("registers_sent")
        self.auth_tries = 0
        self._send_register(self.expires if expires is None else expires)

    def _send_register(self, expires: int) -> None:
        headers = [("Expires", str(expires))]
        if self.challenge is not None:
            headers.append(("Authorization", self._authorization()))
        self.request(
            "REGISTER",
            to_uri=self.uri,
            call_id=self.call_id,
            headers=headers,
            on_response=lambda r: self._registered(r, expires),
        )

    def _authorization(self) -> str:
        ch = self.challenge
        assert ch is not None  # asked for only after a 401 gave one
        qop = ch.get("qop")
        use_qop = "auth" if qop and "auth" in [q.strip() for q in qop.split(",")] else None
        self.nc += 1
        password = self.password + "-wrong" if "wrong_password" in self.faults else self.password
        return digest.authorization(
            self.id,
            ch["realm"],
            password,
            "REGISTER",
            self.server_uri,
            ch["nonce"],
            qop=use_qop,
            nc=self.nc,
            cnonce=secrets.token_hex(8) if use_qop else None,
            opaque=ch.get("opaque"),
        )

    def _registered(self, resp, expires: int) -> None:
        fleet = self.fleet
        if resp is None:
            fleet.count("register_timeouts")
            self._retry_later()
            return
        self.register_results.append(resp.status)
        if resp.status == 401 and self.auth_tries < 3:
            self.auth_tries += 1
            fleet.count("challenges")
            self.challenge = digest.parse_challenge(resp.headers.get("WWW-Authenticate", ""))
            self.nc = 0
            self._send_register(expires)
            return
        if resp.status == 423 and expires and self.auth_tries < 3:
            # Interval Too Brief: ask again for what the platform's Min-Expires says
            self.auth_tries += 1
            self.expires = max(expires, _int(resp.headers.get("Min-Expires"), expires))
            self._send_register(self.expires)
            return
        if resp.status // 100 == 2:
            if expires == 0:
                fleet.count("unregistered")
                self._go_offline()
                return
            granted = _int(resp.headers.get("Expires"), expires) or expires
            fleet.count("registered")
            self.backoff = fleet.backoff_initial
            if self.state != "online":
                self.state = "online"
                self.online_at = fleet.loop.time()
                fleet.online += 1
                self.online_event.set()
            self.keepalive_lost = 0
            self._later("refresh", max(1.0, granted * 0.8), self.register)
            if "no_keepalive" not in self.faults:
                self._later("keepalive", fleet.keepalive_s * (0.2 + 0.8 * self.rng.random()), self.send_keepalive)
            return
        fleet.count("register_refused")
        if fleet.notify is not None:
            fleet.notify(f"device {self.id}: the platform refused its REGISTER ({resp.status} {resp.reason})")
        self.challenge = None
        if self.state == "online":
            self._go_offline()
        self._retry_later()

    def unregister(self) -> None:
        if self.link is not None and self.state == "online":
            self.fleet.count("registers_sent")
            self.auth_tries = 0
            self._send_register(0)

    # -- keepalive -------------------------------------------------------------------------------
    def send_keepalive(self) -> None:
        if self.state != "online":
            return
        self.fleet.count("keepalives_sent")
        faulty = [ch.id for ch in self.channels if ch.video_lost]
        self.message(bodies.keepalive(self.next_sn(), self.id, faulty), on_response=self._keepalive_answered)
        self._later("keepalive", self.fleet.keepalive_s, self.send_keepalive)

    def _keepalive_answered(self, resp) -> None:
        if resp is not None and resp.status // 100 == 2:
            self.keepalive_lost = 0
            self.fleet.count("keepalives_acked")
            return
        self.fleet.count("keepalives_failed")
        self.keepalive_lost += 1
        # 403/404: the platform does not know us (it restarted): register again at once
        if (resp is not None and resp.status in (403, 404)) or self.keepalive_lost >= KEEPALIVE_LOST_MAX:
            self.keepalive_lost = 0
            self._go_offline()
            self.register()

    # -- receiving -------------------------------------------------------------------------------
    def on_bytes(self, data: bytes, link) -> None:
        if data.strip(b"\r\n") == b"":
            return  # a keepalive CRLF
        if data.startswith(b"SIP/2.0 "):
            # most of what a device receives is the platform's answer to its own request: a scan
            # of the lines finds the transaction without a full parse (sim_wire.py says why)
            scanned = sim_wire.scan_response(data)
            if scanned is not None:
                self._on_response(scanned.branch, scanned.method, scanned)
                return
        # a UDP retransmission is the same datagram again: answered from the last few answers
        # without parsing, so a platform retransmitting under load does not starve the fleet's loop
        answer = self._answered.get(data)
        if answer is not None:
            self.fleet.count("duplicates_absorbed")
            self._send_bytes(answer)
            return
        if data.startswith(b"MESSAGE "):
            # the platform's queries, controls and alarm answers: read by a scan, answered from text
            request = sim_wire.scan_request(data)
            if request is not None:
                self._on_scanned_message(request, data)
                return
        try:
            msg = sip.parse_message(data)
        except sip.SipError:
            self.fleet.count("bad_messages")
            return
        if not isinstance(msg, sip.SipRequest) or msg.method == "ACK":
            self.on_message(msg, link)
            return
        self._answer = None
        self.on_message(msg, link)
        self._keep_answer(data)

    def _keep_answer(self, data: bytes) -> None:
        if self._answer is not None:
            answered = self._answered
            answered[data] = self._answer
            if len(answered) > ANSWERS_KEPT:
                del answered[next(iter(answered))]

    def _on_scanned_message(self, req: sim_wire.ScannedRequest, data: bytes) -> None:
        # the server transaction of a scanned MESSAGE: its answer kept by branch for Timer J (64*T1),
        # so a retransmission that is not the same datagram again is still answered, not handled twice
        now = self.fleet.loop.time()
        recent = self._recent
        kept = recent.get(req.branch)
        if kept is not None and kept[0] > now:
            self.fleet.count("duplicates_absorbed")
            self._send_bytes(kept[1])
            return
        self.fleet.count("requests_received")
        self._answer = None
        self._on_message(req)
        if self._answer is None:
            return
        self._keep_answer(data)
        recent[req.branch] = (now + 64 * transaction.T1, self._answer)
        while recent:
            oldest = next(iter(recent))
            if recent[oldest][0] > now and len(recent) <= RECENT_KEPT:
                break
            del recent[oldest]

    def _on_response(self, branch: str | None, method: str, resp) -> None:
        found = self.fleet.outgoing.response(branch or "", method, resp.status, self.fleet.loop.time())
        if found is None:
            self.fleet.count("stray_responses")
            return
        final, callback = found
        if final and callback is not None:
            callback(resp)

    def on_message(self, msg, link) -> None:
        now = self.fleet.loop.time()
        if isinstance(msg, sip.SipResponse):
            self._on_response(msg.branch, msg.cseq[1], msg)
            return
        self.server.expire(now)
        cached = self.server.receive(msg, now)
        if cached is not None:
            self.fleet.count("duplicates_absorbed")
            if isinstance(cached, sip.SipResponse):
                self._send_bytes(cached.to_bytes())
            return
        self.fleet.count("requests_received")
        handler = getattr(self, "_on_" + msg.method.lower(), None)
        if handler is None:
            self.respond(msg, 405)
            return
        handler(msg)

    def respond(
        self,
        req,
        status: int,
        *,
        headers=(),
        body: bytes = b"",
        content_type: str | None = None,
        to_tag: str | None = None,
    ):
        if isinstance(req, sim_wire.ScannedRequest):
            data = sim_wire.response_bytes(
                req,
                status,
                to_tag=to_tag or self.from_tag,
                headers=[*self._headers, *headers],
                body=body,
                content_type=content_type,
            )
            self._answer = data
            self._send_bytes(data)
            return None
        resp = sip.build_response(
            req,
            status,
            to_tag=to_tag or self.from_tag,
            headers=[*self._headers, *headers],
            body=body,
            content_type=content_type,
        )
        data = resp.to_bytes()
        if req.method != "ACK":
            self.server.remember(req, resp, self.fleet.loop.time())
            self._answer = data
        self._send_bytes(data)
        return resp

    def _on_options(self, req) -> None:
        self.respond(req, 200)

    def _on_info(self, req) -> None:
        self.respond(req, 200)  # MANSRTSP playback control: nothing to do for a live stream

    def _on_message(self, req) -> None:
        try:
            msg = manscdp.parse(req.body)
        except manscdp.ManscdpError:
            self.fleet.count("bad_bodies")
            self.respond(req, 400)
            return
        self.respond(req, 200)
        self.fleet.count("messages_received")
        if msg.root == "Query":
            self._query(msg)
        elif msg.root == "Control":
            self._control(msg)
        elif msg.root == "Response":
            self.fleet.count("platform_responses")

    # -- queries ---------------------------------------------------------------------------------
    def _query(self, msg) -> None:
        fleet = self.fleet
        cmd, sn, target = msg.cmd_type, msg.sn, msg.device_id
        fleet.count("queries_answered")
        if cmd == "Catalog":
            chunks = bodies.catalog_chunks(sn, self, bad_xml="bad_xml" in self.faults)
            self.last_catalog_chunks = len(chunks)
            fleet.count("catalogs_sent")
            self._send_chunks(chunks, slow="slow_catalog" in self.faults)
        elif cmd == "DeviceInfo":
            self.message(bodies.device_info(sn, self))
        elif cmd == "DeviceStatus":
            self.message(bodies.device_status(sn, self, _wall(fleet)))
        elif cmd == "RecordInfo":
            ch = self.by_channel.get(target) or self.channels[0]
            f = msg.fields
            start = bodies.parse_gb_time(str(f.get("StartTime", ""))) or _wall(fleet) - 3600
            end = bodies.parse_gb_time(str(f.get("EndTime", ""))) or _wall(fleet)
            kind = str(f.get("Type") or "all").lower()
            recs = recordings(ch.index, start, end, kind if kind in ("all", "time", "alarm") else "all")
            self._send_chunks(bodies.record_chunks(sn, ch, recs))
        elif cmd == "PresetQuery":
            ch = self.by_channel.get(target) or self.channels[0]
            self.message(bodies.preset_list(sn, ch.id, ch.head.presets))
        elif cmd == "ConfigDownload":
            self.message(bodies.config_download(sn, self, fleet.keepalive_s, KEEPALIVE_LOST_MAX))
        elif cmd == "MobilePosition" and self.route is not None:
            self.send_position(root="Notify")
        else:
            fleet.count("queries_unanswered")

    def _send_chunks(self, chunks: list[bytes], slow: bool = False) -> None:
        """Each chunk after the previous one's 200 (a lost one ends the series, as on a device)."""
        if not chunks:
            return
        first, rest = chunks[0], chunks[1:]

        def answered(resp):
            if resp is None or resp.status // 100 != 2:
                self.fleet.count("chunks_abandoned", len(rest))
                return
            self._send_chunks(rest, slow)

        def go():
            self.fleet.count("chunks_sent")
            self.message(first, on_response=answered)

        if slow:
            self.fleet.loop.call_later(SLOW_CATALOG_S, go)
        else:
            go()

    # -- control ---------------------------------------------------------------------------------
    def _control(self, msg) -> None:
        fleet, now = self.fleet, self.fleet.loop.time()
        f = msg.fields
        target = msg.device_id
        channels = [self.by_channel[target]] if target in self.by_channel else self.channels
        if "PTZCmd" in f:
            try:
                cmd = ptz.decode_ptz_cmd(str(f["PTZCmd"]))
            except ptz.PtzError:
                fleet.count("ptz_rejected")
                return
            fleet.count("ptz_commands")
            for ch in channels:
                head = ch.head
                if cmd.kind == "move":
                    head.move(cmd.pan, cmd.tilt, cmd.zoom, now)
                elif cmd.kind == "stop":
                    head.stop(now)
                elif cmd.kind == "preset" and cmd.preset is not None:
                    if cmd.op == "set":
                        head.preset_set(cmd.preset, now)
                    elif cmd.op == "goto":
                        head.preset_goto(cmd.preset, now)
                    elif cmd.op == "delete":
                        head.preset_delete(cmd.preset)
            return  # PTZ gets no application response
        if "AlarmCmd" in f:
            fleet.count("resets_received")
            for ch in channels:
                ch.alarm_latched = False
            self.message(bodies.control_result(msg.sn, target))
            return
        if "TeleBoot" in f:
            fleet.count("reboots")
            self._go_offline()
            self._later("retry", 1.0, self.register)
            return
        if "RecordCmd" in f or "GuardCmd" in f or "HomePosition" in f:
            self.message(bodies.control_result(msg.sn, target))
            return
        fleet.count("controls_ignored")

    # -- subscriptions ---------------------------------------------------------------------------
    def _on_subscribe(self, req) -> None:
        fleet, now = self.fleet, self.fleet.loop.time()
        expires = _int(req.headers.get("Expires"), 3600)
        existing = self.subs.get(req.call_id)
        if expires == 0:
            self.respond(req, 200, headers=[("Expires", "0")], to_tag=existing.local_tag if existing else None)
            if existing is not None:
                self._end_subscription(existing)
            return
        if existing is not None:  # a refresh inside the dialog
            existing.expires_at = now + expires
            self.respond(req, 200, headers=[("Expires", str(expires))], to_tag=existing.local_tag)
            fleet.count("subscription_refreshes")
            return
        try:
            msg = manscdp.parse(req.body)
        except manscdp.ManscdpError:
            fleet.count("bad_bodies")
            self.respond(req, 400)
            return
        kinds = {"Catalog": "catalog", "Alarm": "alarm", "MobilePosition": "mobile"}
        kind = kinds.get(msg.cmd_type)
        if kind is None or (kind == "mobile" and self.route is None):
            self.respond(req, 489 if kind is None else 488)
            return
        contact = req.headers.get("Contact")
        remote_uri = sip.parse_name_addr(contact).uri if contact else req.from_.uri
        tag = sip.new_tag()
        sub = Subscription(
            kind,
            req.call_id,
            tag,
            req.from_.params.get("tag", ""),
            str(remote_uri),
            req.headers.get("Event", "presence"),
            now + expires,
        )
        if kind == "mobile":
            sub.interval_s = max(1.0, float(_int(msg.fields.get("Interval"), 5)))
        self.subs[req.call_id] = sub
        fleet.count("subscriptions")
        self.respond(req, 200, headers=[("Expires", str(expires))], to_tag=tag)
        if kind == "mobile":
            self._position_tick(sub)

    def _end_subscription(self, sub: Subscription) -> None:
        self.subs.pop(sub.call_id, None)
        if sub.timer is not None:
            sub.timer.cancel()

    def notify(self, sub: Subscription, body: bytes, on_response: Callable | None = None) -> None:
        now = self.fleet.loop.time()
        left = int(sub.expires_at - now)
        if left <= 0:
            self._end_subscription(sub)
            if on_response is not None:
                on_response(None)
            return
        sub.cseq += 1
        self.fleet.count("notifies_sent")

        def answered(resp):
            if resp is not None and resp.status == 481:
                self.fleet.count("notifies_refused")
                self._end_subscription(sub)
            if on_response is not None:
                on_response(resp)

        self.request(
            "NOTIFY",
            uri=sub.remote_uri,
            to_uri=self.server_uri,
            to_tag=sub.remote_tag,
            call_id=sub.call_id,
            from_tag=sub.local_tag,
            cseq=sub.cseq,
            headers=[("Event", sub.event), ("Subscription-State", f"active;expires={left}")],
            body=body,
            on_response=answered,
        )

    def _sub(self, kind: str) -> Subscription | None:
        for sub in self.subs.values():
            if sub.kind == kind:
                return sub
        return None

    def _position_tick(self, sub: Subscription) -> None:
        if sub.call_id not in self.subs:
            return
        self.send_position(sub)
        sub.timer = self.fleet.loop.call_later(sub.interval_s, self._position_tick, sub)

    def position(self) -> tuple[float, float, float, float, float]:
        assert self.route is not None  # mobile units have a route; only they are asked
        return self.route.at(_wall(self.fleet))

    def send_position(self, sub: Subscription | None = None, root: str = "Notify") -> None:
        t = _wall(self.fleet)
        lat, lon, speed, course, alt = self.position()
        body = bodies.mobile_position(self.next_sn(), self.id, t, lat, lon, speed, course, alt, root=root)
        self.last_position = {
            "time": int(t),
            "lat": round(lat, 6),
            "lon": round(lon, 6),
            "speed_kmh": round(speed, 1),
            "course_deg": round(course, 1),
            "alt_m": round(alt),
        }
        self.fleet.count("positions_sent")
        if sub is not None:
            self.notify(sub, body)
        else:
            self.message(body)

    # -- alarms ----------------------------------------------------------------------------------
    def raise_alarm(self, channel: SimChannel, kind_name: str) -> bool:
        """Send one alarm now (a NOTIFY inside an alarm subscription, else a MESSAGE). A device
        alarm (method 2) while the last one waits for ResetAlarm is held back, as devices do."""
        kind = ALARM_KINDS[kind_name]
        if self.state != "online":
            return False
        if kind.method == 2 and channel.alarm_latched:
            self.fleet.count("alarms_held")
            return False
        t = _wall(self.fleet)
        sn = self.next_sn()
        sub = self._sub("alarm")
        body = bodies.alarm(sn, channel, kind, t, stamp_ns=self.fleet.stamp_ns() if self.fleet.stamp_alarms else None)
        if kind.method == 2:
            channel.alarm_latched = True
        self.fleet.count("alarms_sent")
        if kind_name == "video_loss":
            channel.video_lost = True
            catalog = self._sub("catalog")
            if catalog is not None:
                self.notify(catalog, bodies.catalog_notify(self.next_sn(), self, [channel], "VLOST"))
            self._later(f"video:{channel.id}", self.fleet.video_loss_s, self._video_back, channel)

        def answered(resp):
            if resp is not None and resp.status // 100 == 2:
                self.fleet.count("alarms_acked")
            else:
                self.fleet.count("alarms_unacked")

        if sub is not None:
            self.notify(sub, body, on_response=answered)
        else:
            self.message(body, on_response=answered)
        return True

    def _video_back(self, channel: SimChannel) -> None:
        """The lost video returns: the keepalive stops naming the channel, a catalog subscriber is told ON."""
        self._timers.pop(f"video:{channel.id}", None)
        channel.video_lost = False
        catalog = self._sub("catalog")
        if catalog is not None and self.state == "online":
            self.notify(catalog, bodies.catalog_notify(self.next_sn(), self, [channel], "ON"))

    # -- media -----------------------------------------------------------------------------------
    def _on_invite(self, req) -> None:
        fleet = self.fleet
        fleet.count("invites")
        if req.call_id in self.calls:  # a re-INVITE: same answer
            call = self.calls[req.call_id]
            self.respond(
                req,
                200,
                body=call.response.body if call.response is not None else b"",
                content_type="application/sdp",
                to_tag=self.from_tag,
            )
            return
        try:
            target = sip.parse_uri(req.uri).user
        except sip.SipError:
            target = None
        if target not in self.by_channel and target != self.id:
            self.respond(req, 404)
            return
        try:
            offer = sdp.parse_sdp(req.body)
        except ValueError:
            self.respond(req, 488)
            return
        transport = "tcp" if "tcp" in str(offer.transport).lower() else "udp"
        if transport == "tcp" and (offer.setup or "passive") != "passive":
            self.respond(req, 488)  # the device only dials out for TCP media
            return
        ssrc = offer.ssrc or "0" + fleet.domain[3:8] + f"{self.rng.randint(0, 9999):04d}"
        host, _port = self._local()
        answer = answer_sdp(
            device_id=target or self.id,
            ip=host,
            port=15060 + len(self.calls),
            ssrc=ssrc,
            transport=transport,
            session=offer.session_name or "Play",
        )
        self.respond(req, 100)
        call = Call(req.call_id, (offer.connection_ip or host, offer.port), ssrc, transport)
        call.response = self.respond(req, 200, body=answer, content_type="application/sdp", to_tag=self.from_tag)
        self.calls[req.call_id] = call
        if self.link is not None and not self.link.reliable:
            call.resend_handle = fleet.loop.call_later(call.resend_interval, self._resend_ok, call, 0)

    def _resend_ok(self, call: Call, n: int) -> None:
        # RFC 3261 13.3.1.4: the 2xx to an INVITE is retransmitted until the ACK (T1 doubling to T2, 64*T1)
        if call.acked or call.call_id not in self.calls:
            return
        if n >= 7:
            self.fleet.count("calls_unacked")
            self._end_call(call)
            return
        if call.response is not None:
            self._send_bytes(call.response.to_bytes())
        call.resend_interval = min(4.0, call.resend_interval * 2)
        call.resend_handle = self.fleet.loop.call_later(call.resend_interval, self._resend_ok, call, n + 1)

    def _on_ack(self, req) -> None:
        call = self.calls.get(req.call_id)
        if call is None or call.acked:
            return
        call.acked = True
        if call.resend_handle is not None:
            call.resend_handle.cancel()
        self.fleet.loop.create_task(self._start_media(call))

    async def _start_media(self, call: Call) -> None:
        sender = MediaSender(
            call.dest,
            ssrc_value(call.ssrc, self.rng.getrandbits(32)),
            transport=call.transport,
            fps=self.fleet.media_fps,
            seed=self.rng.getrandbits(32),
        )
        try:
            await sender.start()
        except OSError as exc:
            self.fleet.count("media_failures")
            if self.fleet.notify is not None:
                self.fleet.notify(f"device {self.id}: cannot send media to {call.dest[0]}:{call.dest[1]} ({exc})")
            return
        if call.call_id not in self.calls:
            await sender.stop()
            return
        call.media = sender
        self.fleet.count("streams_started")

    def _on_bye(self, req) -> None:
        call = self.calls.get(req.call_id)
        if call is None:
            self.respond(req, 481)
            return
        self.respond(req, 200)
        self.fleet.count("byes")
        self._end_call(call)

    def hang_up(self) -> int:
        """End every call from the device's side, a BYE each (an encoder that restarts, a unit whose
        uplink budget ran out); returns how many calls it ended."""
        ended = 0
        for call in list(self.calls.values()):
            answer = call.response
            if answer is None:
                continue
            platform = answer.from_  # the INVITE's From: the platform, with its tag
            self.request(
                "BYE",
                to_uri=str(platform.uri),
                to_tag=platform.tag,
                call_id=call.call_id,
                from_tag=answer.to.tag,
            )
            self.fleet.count("byes_sent")
            self._end_call(call)
            ended += 1
        return ended

    def _end_call(self, call: Call) -> None:
        self.calls.pop(call.call_id, None)
        if call.resend_handle is not None:
            call.resend_handle.cancel()
        if call.media is not None:
            media, call.media = call.media, None
            self.fleet.count("rtp_packets", media.packets)
            self.fleet.loop.create_task(media.stop())

    # -- shutdown --------------------------------------------------------------------------------
    def close(self) -> None:
        self.closing = True
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        for sub in list(self.subs.values()):
            self._end_subscription(sub)
        for call in list(self.calls.values()):
            self._end_call(call)
        if self.state == "online":
            self.fleet.online -= 1
        self.state = "idle"
        if self.link is not None:
            link, self.link = self.link, None
            link.close()


def _int(value, default: int) -> int:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return default


def _wall(fleet) -> float:
    return fleet.wall()
