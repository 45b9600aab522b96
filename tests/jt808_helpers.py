"""Helpers for the JT/T 808 listener tests: the listener in a real Supervisor/Router/Journal stack
on a loopback port, envelopes read back from the journal, and a hand-driven raw terminal."""

from __future__ import annotations

import asyncio
import contextlib
import time

import tianwang.drivers.jt808 as jt808
from gw import journal_envelopes, until  # noqa: F401  (until: used by the listener tests)
from tianwang.drivers.jt808 import protocol as p
from tianwang.gateway.datapath.journal import Journal
from tianwang.gateway.datapath.router import Router
from tianwang.gateway.framing import Jt808Framer, encode_jt808
from tianwang.gateway.lifecycle.config import load_config
from tianwang.gateway.lifecycle.registry import Registry
from tianwang.gateway.lifecycle.supervisor import Supervisor

SECRET = "jt808-test-secret"


class Stack:
    def __init__(self, sup, journal, driver):
        self.sup = sup
        self.journal = journal
        self.driver = driver

    @property
    def port(self):
        return self.driver.port

    def envelopes(self, pattern="#"):
        """Every envelope in the journal whose topic matches `pattern`, payloads decoded."""
        return journal_envelopes(self.journal, pattern)

    def payloads(self, pattern):
        return [e["payload"] for e in self.envelopes(pattern)]

    def entry(self, device_id):
        return self.sup.lookup(device_id)


@contextlib.asynccontextmanager
async def listener(**options):
    """The jt808 listener `fleet` on 127.0.0.1 (any port), secret SECRET unless given."""
    reg = Registry()
    reg.register(jt808.SPEC)
    entry = {"id": "fleet", "driver": "jt808", "listen": "127.0.0.1:0", "auth_secret": SECRET}
    entry.update(options)
    config = load_config(
        {"gateway": {"metrics": None}, "auth": {"allow_inline_secrets": True}, "listeners": [entry]}, reg
    )
    journal = Journal(64 << 20)
    sup = Supervisor(reg, Router(journal))
    await sup.apply(config)
    driver = sup._running["fleet"].driver
    deadline = time.monotonic() + 5
    while not driver.port:
        assert time.monotonic() < deadline, "listener did not bind"
        await asyncio.sleep(0.005)
    try:
        yield Stack(sup, journal, driver)
    finally:
        await sup.stop_all()


class RawTerminal:
    """A terminal driven by hand over a real socket: send any message, read what comes back."""

    def __init__(self, phone="13900000001", version="2013"):
        self.phone = phone
        self.version = version
        self.protocol_version = p.PROTOCOL_VERSION_2019 if version == "2019" else None
        self.phone_bcd = p.phone_to_bcd(phone, version)
        self.serial = 0
        self.framer = Jt808Framer()
        self.inbox: list[tuple[p.Header, bytes]] = []
        self.reader = self.writer = None

    async def connect(self, port):
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", port)
        return self

    def frame(self, msg_id, body=b"", serial=None, total=0, index=0):
        if serial is None:
            self.serial += 1
            serial = self.serial
        return encode_jt808(p.build(msg_id, body, self.phone_bcd, serial, self.protocol_version, total, index))

    async def send(self, msg_id, body=b"", serial=None):
        self.writer.write(self.frame(msg_id, body, serial))
        await self.writer.drain()

    async def write(self, data):
        self.writer.write(data)
        await self.writer.drain()

    async def recv(self, timeout=3.0):
        """The next message from the platform, or raise TimeoutError / EOFError."""
        deadline = time.monotonic() + timeout
        while not self.inbox:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no message from the platform")
            data = await asyncio.wait_for(self.reader.read(65536), left)
            if not data:
                raise EOFError("the platform closed the connection")
            for frame in self.framer.feed(data):
                self.inbox.append(p.parse(frame))
        return self.inbox.pop(0)

    async def ack(self, timeout=3.0):
        """The next 0x8001 as (header, (reply serial, reply id, result))."""
        header, body = await self.recv(timeout)
        assert header.msg_id == p.PLATFORM_ACK, f"expected 0x8001, got 0x{header.msg_id:04X}"
        return header, p.parse_ack(body)

    async def closed_by_peer(self, timeout=3.0) -> bool:
        try:
            while True:
                await self.recv(timeout)
        except EOFError:
            return True
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True

    async def login(self, code=None):
        """Authenticate with `code` (default: the code derived from SECRET); returns the result."""
        if code is None:
            code = p.derive_auth_code(SECRET.encode(), self.phone)
        await self.send(p.AUTH, p.auth_body(code, self.version, imei="860000000000001", software_version="raw-1"))
        _, (serial, reply_id, result) = await self.ack()
        assert reply_id == p.AUTH and serial == self.serial
        return result

    def close(self):
        if self.writer is not None:
            self.writer.close()


def location(lat=30.5, lon=114.25, t_ns=None, **kw):
    if t_ns is None:
        t_ns = int(time.time()) * 1_000_000_000
    return p.location_body(lat, lon, t_ns, **kw)
