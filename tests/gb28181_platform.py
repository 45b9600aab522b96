"""A small GB/T 28181 platform for the simulator's tests: UDP and TCP on one 127.0.0.1 port, digest
challenge and check, a 200 for every MESSAGE and NOTIFY (with the parsed bodies kept), and requests
of its own (queries, controls, SUBSCRIBE, INVITE/ACK/BYE) to the address a device last used.

It is written on the sans-io layers (sip, digest, manscdp, sdp) and nothing of the listener, so the
simulator's tests do not depend on the gateway's driver."""

from __future__ import annotations

import asyncio
import contextlib
import itertools

from tianwang.drivers.gb28181 import digest, manscdp, sdp, sip

SERVER_ID = "43030000002000000001"
DOMAIN = SERVER_ID[:10]


class Seen:
    """What one device sent: its source, transport, registrations, bodies by CmdType."""

    def __init__(self, device_id):
        self.id = device_id
        self.addr = None
        self.link = None  # the TCP writer, for TCP devices
        self.transport = None
        self.registered = 0
        self.unregistered = 0
        self.sources: list = []  # every (host, port) a request came from, in order
        self.bodies: list = []  # manscdp messages, in order
        self.requests: list = []  # (method, SipRequest) in order
        self.authorizations: list[dict] = []
        self.expires: list[int] = []  # Expires of each accepted REGISTER


class Platform:
    def __init__(
        self,
        passwords: dict | None = None,
        password: str = "12345678",
        qop: bool = False,
        answer_keepalive: bool = True,
        min_expires: int = 0,
    ):
        self.passwords = passwords or {}
        self.password = password
        self.qop = qop
        self.answer_keepalive = answer_keepalive
        self.min_expires = min_expires
        self.nonces = digest.NonceStore()
        self.devices: dict[str, Seen] = {}
        self.raw: list[tuple[bytes, tuple]] = []  # every UDP datagram with its source
        self.responses: dict[str, asyncio.Future] = {}  # branch -> future of the final response
        self.sn = itertools.count(1000)
        self.cseq = itertools.count(1)
        self.udp = None
        self.tcp = None
        self.port = None
        self.changed = asyncio.Event()

    # -- sockets ---------------------------------------------------------------------------------
    async def start(self):
        loop = asyncio.get_running_loop()
        platform = self

        class Udp(asyncio.DatagramProtocol):
            def datagram_received(self, data, addr):
                platform.raw.append((data, addr))
                if data.strip(b"\r\n") == b"":
                    return
                platform.handle(sip.parse_message(data), addr, "UDP", None)

        async def serve(reader, writer):
            framer = sip.StreamFramer()
            addr = writer.get_extra_info("peername")[:2]
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                for msg in framer.feed(data):
                    self.handle(msg, addr, "TCP", writer)
            writer.close()

        # UDP and TCP on one port: a UDP port the system picked may be taken for TCP; try another
        for _ in range(50):
            self.udp, _ = await loop.create_datagram_endpoint(Udp, local_addr=("127.0.0.1", 0))
            self.port = self.udp.get_extra_info("sockname")[1]
            try:
                self.tcp = await asyncio.start_server(serve, "127.0.0.1", self.port)
                return
            except OSError:
                self.udp.close()
        raise OSError("no 127.0.0.1 port free for both UDP and TCP")

    async def stop(self):
        self.udp.close()
        self.tcp.close()

    def _send(self, msg, seen_or_addr, writer=None):
        data = msg.to_bytes()
        if writer is not None:
            writer.write(data)
        elif isinstance(seen_or_addr, Seen):
            if seen_or_addr.transport == "TCP":
                seen_or_addr.link.write(data)
            else:
                self.udp.sendto(data, seen_or_addr.addr)
        else:
            self.udp.sendto(data, seen_or_addr)

    # -- receiving -------------------------------------------------------------------------------
    def handle(self, msg, addr, transport, writer):
        if isinstance(msg, sip.SipResponse):
            fut = self.responses.get(msg.branch)
            if fut is not None and msg.status >= 200 and not fut.done():
                fut.set_result(msg)
            return
        device_id = msg.from_.uri.user
        seen = self.devices.setdefault(device_id, Seen(device_id))
        seen.requests.append((msg.method, msg))
        seen.sources.append(addr)
        if msg.method == "REGISTER":
            return self._register(msg, seen, addr, transport, writer)
        if msg.method in ("MESSAGE", "NOTIFY"):
            body = manscdp.parse(msg.body) if msg.body else None
            if body is not None and body.cmd_type == "Keepalive" and not self.answer_keepalive:
                return
            seen.addr, seen.transport, seen.link = addr, transport, writer
            if body is not None:
                seen.bodies.append(body)
            self._send(sip.build_response(msg, 200, source=addr, to_tag=sip.new_tag()), addr, writer)
        elif msg.method == "BYE":
            self._send(sip.build_response(msg, 200, source=addr), addr, writer)
        self.changed.set()

    def _register(self, req, seen, addr, transport, writer):
        header = req.headers.get("Authorization")
        expires = int(req.headers.get("Expires", "3600"))
        if header is None:
            challenge = digest.www_authenticate(DOMAIN, self.nonces.issue(0.0), qop="auth" if self.qop else None)
            self._send(
                sip.build_response(req, 401, source=addr, headers=[("WWW-Authenticate", challenge)]), addr, writer
            )
            return
        auth = digest.parse_authorization(header)
        seen.authorizations.append(auth)
        password = self.passwords.get(seen.id, self.password)
        if self.nonces.check(auth.get("nonce", ""), 0.0) != "ok":
            challenge = digest.www_authenticate(
                DOMAIN, self.nonces.issue(0.0), qop="auth" if self.qop else None, stale=True
            )
            self._send(
                sip.build_response(req, 401, source=addr, headers=[("WWW-Authenticate", challenge)]), addr, writer
            )
            return
        if not digest.verify(auth, password, "REGISTER"):
            self._send(sip.build_response(req, 403, source=addr), addr, writer)
            self.changed.set()
            return
        seen.addr, seen.transport, seen.link = addr, transport, writer
        if 0 < expires < self.min_expires:
            self._send(
                sip.build_response(req, 423, source=addr, headers=[("Min-Expires", str(self.min_expires))]),
                addr,
                writer,
            )
            return
        seen.expires.append(expires)
        if expires == 0:
            seen.unregistered += 1
        else:
            seen.registered += 1
        self._send(
            sip.build_response(
                req,
                200,
                source=addr,
                to_tag=sip.new_tag(),
                headers=[("Expires", str(expires)), ("Date", "2026-12-07T09:00:00.000")],
            ),
            addr,
            writer,
        )
        self.changed.set()

    # -- waiting ---------------------------------------------------------------------------------
    async def until(self, predicate, timeout=15.0, what="condition"):
        async def wait():
            while not predicate():
                self.changed.clear()
                try:
                    await asyncio.wait_for(self.changed.wait(), 0.2)
                except TimeoutError:
                    pass

        try:
            await asyncio.wait_for(wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}") from None

    def bodies(self, device_id, cmd_type, root=None):
        seen = self.devices.get(device_id)
        if seen is None:
            return []
        return [b for b in seen.bodies if b.cmd_type == cmd_type and (root is None or b.root == root)]

    # -- requests of the platform ----------------------------------------------------------------
    def request(
        self,
        device_id,
        method,
        *,
        target=None,
        body=b"",
        content_type="Application/MANSCDP+xml",
        headers=(),
        call_id=None,
        from_tag=None,
        to_tag=None,
        cseq=None,
    ):
        """Send a request to the device; returns (request, future of its final response)."""
        seen = self.devices[device_id]
        target = target or device_id
        host, port = "127.0.0.1", self.port
        req = sip.build_request(
            method,
            f"sip:{target}@{seen.addr[0]}:{seen.addr[1]}",
            via_host=host,
            via_port=port,
            transport=seen.transport,
            from_uri=f"sip:{SERVER_ID}@{DOMAIN}",
            from_tag=from_tag or sip.new_tag(),
            to_uri=f"sip:{target}@{DOMAIN}",
            to_tag=to_tag,
            call_id=call_id or sip.new_call_id(),
            cseq=cseq or next(self.cseq),
            contact=f"<sip:{SERVER_ID}@{host}:{port}>",
            headers=list(headers),
            body=body,
            content_type=content_type if body else None,
        )
        fut = asyncio.get_running_loop().create_future()
        self.responses[req.branch] = fut
        self._send(req, seen)
        return req, fut

    async def ask(self, device_id, root, cmd_type, fields=(), *, target=None, timeout=10.0):
        sn = next(self.sn)
        body = manscdp.build(root, cmd_type, sn, target or device_id, list(fields))
        _req, fut = self.request(device_id, "MESSAGE", target=target, body=body)
        resp = await asyncio.wait_for(fut, timeout)
        assert resp.status == 200, resp.status
        return sn

    def ack(self, device_id, invite, response):
        seen = self.devices[device_id]
        req = sip.build_request(
            "ACK",
            invite.uri,
            via_host="127.0.0.1",
            via_port=self.port,
            transport=seen.transport,
            from_uri=invite.from_.uri,
            from_tag=invite.from_.params.get("tag"),
            to_uri=response.to.uri,
            to_tag=response.to.params.get("tag"),
            call_id=invite.call_id,
            cseq=invite.cseq[0],
        )
        self._send(req, seen)


@contextlib.asynccontextmanager
async def platform(**options):
    p = Platform(**options)
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


def offer(ip, port, ssrc, transport="udp"):
    return sdp.build_offer(session_id="0", origin_id=SERVER_ID, ip=ip, port=port, transport=transport, ssrc=ssrc)
