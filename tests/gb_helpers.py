"""A tiny GB/T 28181 device for the listener's tests, over real UDP or TCP sockets on 127.0.0.1.

It speaks through the SIP layer's own builders (tianwang.drivers.gb28181.sip and digest) but
writes its MANSCDP bodies by hand (GB2312 text), so the listener's XML reading is tested against
bodies it did not build. It registers with digest, keeps alive, raises alarms and reports positions
when told, and answers what the platform asks: catalogs (in chunks of `chunk` items, each sent
after the previous one's 200), DeviceInfo, DeviceStatus, PresetQuery, RecordInfo, AlarmCmd, PTZ,
SUBSCRIBE, INVITE (an SDP answer) and BYE. Everything the platform sent is kept in `got`.
"""

from __future__ import annotations

import asyncio
import re

from tianwang.drivers.gb28181 import digest, sip

SERVER_ID = "43030000002000000001"
DOMAIN = "4303000000"
NVR_ID = "43030000001180000001"
PASSWORD = "gb-test-password"


def channel_ids(device_id: str, n: int) -> list[str]:
    """Camera channel IDs (type 131) under a device: its centre code, type 131, serial 1..n."""
    return [f"{device_id[:10]}131{device_id[13]}{i:06d}" for i in range(1, n + 1)]


def xml(root: str, cmd: str, sn: int, device_id: str, inner: str = "", charset="GB2312") -> bytes:
    text = (
        f'<?xml version="1.0" encoding="{charset}"?>\r\n<{root}>\r\n<CmdType>{cmd}</CmdType>\r\n'
        f"<SN>{sn}</SN>\r\n<DeviceID>{device_id}</DeviceID>\r\n{inner}</{root}>\r\n"
    )
    return text.encode("gb18030" if charset.upper().startswith("GB") else "utf-8")


def _field(body: str, name: str) -> str | None:
    m = re.search(rf"<{name}>([^<]*)</{name}>", body)
    return m.group(1) if m else None


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, dev):
        self.dev = dev

    def datagram_received(self, data, addr):
        try:
            msg = sip.parse_message(data)
        except sip.SipError:
            return
        self.dev._on_message(msg)


class GbDevice:
    """One device (see the module docstring). `channels`: [(id, name)]; `status_of`: channel id ->
    ON/OFF in the catalog."""

    def __init__(
        self,
        server_port: int,
        device_id: str = NVR_ID,
        password: str = PASSWORD,
        *,
        transport="udp",
        channels=(),
        chunk=2,
        version="2.0",
        server_id=SERVER_ID,
        domain=DOMAIN,
        answer_queries=True,
    ):
        self.server = ("127.0.0.1", server_port)
        self.id = device_id
        self.password = password
        self.transport = transport.upper()
        self.channels = list(channels)
        self.chunk = chunk
        self.version = version
        self.server_id = server_id
        self.domain = domain
        self.answer_queries = answer_queries
        self.local = ("127.0.0.1", 0)
        self.cseq = 0
        self.sn = 100
        self.call_id = sip.new_call_id()
        self.from_tag = sip.new_tag()
        self.waiting: dict[str, asyncio.Future] = {}  # branch -> final response
        self.got: list[tuple[sip.SipRequest, str]] = []  # (request, decoded body)
        self.presets = {1: "gate", 2: "crossing"}
        self.ptz: list[str] = []
        self.status_of: dict[str, str] = {}
        self.drop_next_answers = 0  # answers to the platform's requests not sent (a lost 200)
        self.subscribe_expires = None  # what its SUBSCRIBE answers grant (None: what was asked)
        self._udp = None
        self._writer = None
        self._reader_task = None
        self._tasks: set[asyncio.Task] = set()

    # -- transport -------------------------------------------------------------------------------
    async def start(self):
        loop = asyncio.get_running_loop()
        if self.transport == "UDP":
            self._udp, _ = await loop.create_datagram_endpoint(lambda: _Udp(self), local_addr=("127.0.0.1", 0))
            self.local = self._udp.get_extra_info("sockname")[:2]
        else:
            reader, self._writer = await asyncio.open_connection(*self.server)
            self.local = self._writer.get_extra_info("sockname")[:2]
            self._reader_task = asyncio.ensure_future(self._read(reader))
        return self

    async def _read(self, reader):
        framer = sip.StreamFramer()
        while True:
            data = await reader.read(65536)
            if not data:
                return
            for msg in framer.feed(data):
                self._on_message(msg)

    def send_raw(self, data: bytes):
        if self._udp is not None:
            self._udp.sendto(data, self.server)
        else:
            self._writer.write(data)

    def send(self, msg):
        self.send_raw(msg.to_bytes())

    async def stop(self):
        for t in list(self._tasks):
            t.cancel()
        if self._reader_task is not None:
            self._reader_task.cancel()
        if self._udp is not None:
            self._udp.close()
        if self._writer is not None:
            self._writer.close()

    async def rebind(self):
        """NAT rebinding: the same device from a new source port."""
        await self.stop()
        self._udp = self._writer = self._reader_task = None
        await self.start()

    # -- requests the device sends -----------------------------------------------------------------
    def build(self, method, body=b"", headers=(), content_type=None, call_id=None):
        self.cseq += 1
        return sip.build_request(
            method,
            f"sip:{self.server_id}@{self.server[0]}:{self.server[1]}",
            via_host=self.local[0],
            via_port=self.local[1],
            transport=self.transport,
            from_uri=f"sip:{self.id}@{self.domain}",
            from_tag=self.from_tag if method == "REGISTER" else sip.new_tag(),
            to_uri=f"sip:{self.id if method == 'REGISTER' else self.server_id}@{self.domain}",
            call_id=call_id or (self.call_id if method == "REGISTER" else sip.new_call_id()),
            cseq=self.cseq,
            contact=f"sip:{self.id}@{self.local[0]}:{self.local[1]}",
            headers=headers,
            body=body,
            content_type=content_type,
        )

    async def transact(self, req, timeout=5.0) -> sip.SipResponse:
        fut = asyncio.get_running_loop().create_future()
        self.waiting[req.branch] = fut
        self.send(req)
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            self.waiting.pop(req.branch, None)

    async def register(self, expires=3600, password=None, qop=True, uri=None, username=None) -> sip.SipResponse:
        """REGISTER, answer the challenge with digest; the final response. `qop=False` answers
        without qop (as older devices do); `uri`/`username` as some devices send them."""
        headers = [("Expires", str(expires)), ("X-GB-Ver", self.version), ("User-Agent", "tw-test-device")]
        first = await self.transact(self.build("REGISTER", headers=headers))
        if first.status != 401:
            return first
        challenge = digest.parse_challenge(first.headers.get("WWW-Authenticate"))
        auth = digest.authorization(
            username or self.id,
            challenge["realm"],
            password or self.password,
            "REGISTER",
            uri or f"sip:{self.server_id}@{self.domain}",
            challenge["nonce"],
            qop=challenge.get("qop") if qop else None,
        )
        return await self.transact(self.build("REGISTER", headers=[*headers, ("Authorization", auth)]))

    async def message(self, body: bytes, method="MESSAGE", headers=()) -> sip.SipResponse:
        return await self.transact(self.build(method, body, headers, "Application/MANSCDP+xml"))

    def next_sn(self):
        self.sn += 1
        return self.sn

    async def keepalive(self, status="OK", faulty=()):
        info = ""
        if faulty:
            info = "<Info>\r\n" + "".join(f"<DeviceID>{c}</DeviceID>\r\n" for c in faulty) + "</Info>\r\n"
        return await self.message(
            xml("Notify", "Keepalive", self.next_sn(), self.id, f"<Status>{status}</Status>\r\n{info}")
        )

    async def alarm(self, source=None, priority=1, method=5, alarm_type=2, description="移动侦测"):
        inner = (
            f"<AlarmPriority>{priority}</AlarmPriority>\r\n<AlarmMethod>{method}</AlarmMethod>\r\n"
            f"<AlarmTime>2026-12-07T17:30:00</AlarmTime>\r\n<AlarmDescription>{description}</AlarmDescription>\r\n"
            f"<Longitude>112.9</Longitude>\r\n<Latitude>27.8</Latitude>\r\n"
            + (f"<Info>\r\n<AlarmType>{alarm_type}</AlarmType>\r\n</Info>\r\n" if alarm_type is not None else "")
        )
        return await self.message(xml("Notify", "Alarm", self.next_sn(), source or self.id, inner))

    async def position(self, lat, lon, speed_kmh=36.0, direction=90.0, altitude=50.0, method="MESSAGE", headers=()):
        inner = (
            f"<Time>2026-12-07T17:30:00</Time>\r\n<Longitude>{lon}</Longitude>\r\n<Latitude>{lat}</Latitude>\r\n"
            f"<Speed>{speed_kmh}</Speed>\r\n<Direction>{direction}</Direction>\r\n<Altitude>{altitude}</Altitude>\r\n"
        )
        return await self.message(xml("Notify", "MobilePosition", self.next_sn(), self.id, inner), method, headers)

    # -- what the platform sends -------------------------------------------------------------------
    def requests(self, method=None, cmd=None) -> list[tuple[sip.SipRequest, str]]:
        return [
            (r, b)
            for r, b in self.got
            if (method is None or r.method == method) and (cmd is None or _field(b, "CmdType") == cmd)
        ]

    def _on_message(self, msg):
        if isinstance(msg, sip.SipResponse):
            fut = self.waiting.get(msg.branch)
            if fut is not None and not fut.done() and msg.status >= 200:
                fut.set_result(msg)
            return
        text = msg.body.decode("gb18030", "replace")
        self.got.append((msg, text))
        if msg.method == "ACK":
            return
        if self.drop_next_answers > 0:
            self.drop_next_answers -= 1
            return
        headers, body, ctype = [], b"", None
        if msg.method == "SUBSCRIBE":
            headers = [("Expires", str(self.subscribe_expires or msg.headers.get("Expires") or "3600"))]
        elif msg.method == "INVITE":
            ctype = "application/sdp"
            body = (
                b"v=0\r\no=%s 0 0 IN IP4 127.0.0.1\r\ns=Play\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                b"m=video 15060 RTP/AVP 96\r\na=sendonly\r\na=rtpmap:96 PS/90000\r\ny=0430000077\r\n" % self.id.encode()
            )
        self.send(
            sip.build_response(
                msg,
                200,
                headers=headers,
                body=body,
                content_type=ctype,
                to_tag=sip.new_tag() if msg.method in ("INVITE", "SUBSCRIBE") else None,
            )
        )
        if msg.method == "MESSAGE" and self.answer_queries:
            self._spawn(self._answer(msg, text))

    def _spawn(self, coro):
        t = asyncio.ensure_future(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _answer(self, msg, text):
        cmd, sn, target = _field(text, "CmdType"), int(_field(text, "SN") or 0), _field(text, "DeviceID") or self.id
        if cmd == "Catalog":
            items = [
                f"<Item>\r\n<DeviceID>{cid}</DeviceID>\r\n<Name>{name}</Name>\r\n<Manufacturer>Tianwang</Manufacturer>\r\n"
                f"<Model>IPC</Model>\r\n<Owner>Owner</Owner>\r\n<CivilCode>430302</CivilCode>\r\n<Address>岳塘区</Address>\r\n"
                f"<Parental>0</Parental>\r\n<ParentID>{self.id}</ParentID>\r\n<SafetyWay>0</SafetyWay>\r\n"
                f"<RegisterWay>1</RegisterWay>\r\n<Secrecy>0</Secrecy>\r\n<Status>{self.status_of.get(cid, 'ON')}</Status>\r\n"
                f"<Longitude>112.94</Longitude>\r\n<Latitude>27.83</Latitude>\r\n<Info>\r\n<PTZType>1</PTZType>\r\n</Info>\r\n</Item>\r\n"
                for cid, name in self.channels
            ]
            if not items:
                await self.message(xml("Response", "Catalog", sn, self.id, "<SumNum>0</SumNum>\r\n"))
            for i in range(0, len(items), self.chunk):
                part = items[i : i + self.chunk]
                inner = f'<SumNum>{len(items)}</SumNum>\r\n<DeviceList Num="{len(part)}">\r\n{"".join(part)}</DeviceList>\r\n'
                await self.message(xml("Response", "Catalog", sn, self.id, inner))
        elif cmd == "DeviceInfo":
            inner = (
                "<DeviceName>雨湖区NVR</DeviceName>\r\n<Result>OK</Result>\r\n<Manufacturer>Tianwang</Manufacturer>\r\n"
                "<Model>TW-NVR-4</Model>\r\n<Firmware>V2.1.0</Firmware>\r\n"
                f"<Channel>{len(self.channels)}</Channel>\r\n"
            )
            await self.message(xml("Response", "DeviceInfo", sn, target, inner))
        elif cmd == "DeviceStatus":
            inner = (
                "<Result>OK</Result>\r\n<Online>ONLINE</Online>\r\n<Status>OK</Status>\r\n<Encode>ON</Encode>\r\n"
                "<Record>OFF</Record>\r\n<DeviceTime>2026-12-07T17:30:00</DeviceTime>\r\n"
            )
            await self.message(xml("Response", "DeviceStatus", sn, target, inner))
        elif cmd == "PresetQuery":
            items = "".join(
                f"<Item>\r\n<PresetID>{k}</PresetID>\r\n<PresetName>{v}</PresetName>\r\n</Item>\r\n"
                for k, v in sorted(self.presets.items())
            )
            inner = f'<SumNum>{len(self.presets)}</SumNum>\r\n<PresetList Num="{len(self.presets)}">\r\n{items}</PresetList>\r\n'
            await self.message(xml("Response", "PresetQuery", sn, target, inner))
        elif cmd == "RecordInfo":
            records = [
                ("2026-12-07T08:00:00", "2026-12-07T09:00:00"),
                ("2026-12-07T09:00:00", "2026-12-07T10:00:00"),
                ("2026-12-07T10:00:00", "2026-12-07T11:00:00"),
            ]
            for i in range(0, len(records), 2):
                part = records[i : i + 2]
                body = "".join(
                    f"<Item>\r\n<DeviceID>{target}</DeviceID>\r\n<Name>rec</Name>\r\n<StartTime>{a}</StartTime>\r\n"
                    f"<EndTime>{b}</EndTime>\r\n<Secrecy>0</Secrecy>\r\n<Type>time</Type>\r\n</Item>\r\n"
                    for a, b in part
                )
                inner = (
                    f"<Name>rec</Name>\r\n<SumNum>{len(records)}</SumNum>\r\n"
                    f'<RecordList Num="{len(part)}">\r\n{body}</RecordList>\r\n'
                )
                await self.message(xml("Response", "RecordInfo", sn, target, inner))
        elif cmd == "DeviceControl":
            ptz = _field(text, "PTZCmd")
            if ptz:
                self.ptz.append(ptz)
            elif _field(text, "AlarmCmd"):
                await self.message(xml("Response", "DeviceControl", sn, target, "<Result>OK</Result>\r\n"))
