"""JT/T 808 listener: a TCP server that vehicle terminals dial into (`listeners: - driver: jt808`).

Each connection is an asyncio Protocol with its own 0x7E framer (tianwang.gateway.framing.Jt808Framer); the
message layer is tianwang.drivers.jt808.protocol. A terminal registers (0x0100 -> 0x8100 with its auth
code), authenticates (0x0102), then heartbeats and reports positions (0x0200, 0x0704 batches,
0x0201 answers to 0x8201). Every terminal message that has no reply of its own gets a 0x8001 with
its serial. An authenticated terminal is a child device `<phone>` of the listener, ONLINE while its
connection lives; positions go to `gnss/<phone>/fix`, alarm-bit changes to `gnss/<phone>/alarm`.

Auth codes: code(phone) is the `auth_codes` entry for that phone when there is one, otherwise
HMAC-SHA256(auth_secret, phone) cut to 16 hex digits (jt808_protocol.derive_auth_code). Without an
`auth_secret` a random one is drawn at start, so codes change at each restart and terminals fall
back to registering again, which the standard has them do when authentication fails.

Isolation: a connection's bad bytes are counted against it and cost only its own frames; a
connection that has not authenticated is closed after `max_bad_frames` bad frames or
`auth_timeout_s`. A flooding terminal is held to `flood_frames_per_s` by pausing its socket (TCP
pushes back on it; nothing it sent is lost) and a terminal that does not read its acks stops being
read once `write_buffer_bytes` are queued for it.
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import logging
import os
import re
from functools import partial
from typing import ClassVar, Literal

from pydantic import ByteSize, Field, SecretStr, field_validator, model_validator
from pydantic_core import PydanticCustomError

from tianwang.drivers.jt808 import protocol as p
from tianwang.drivers.sdk import (
    ActionSpec, CommandError, Driver, DriverSpec, encode_jt808, Health, Jt808Framer, ListenerConfig,
    parse_hostport, SecretsModel,
)

log = logging.getLogger("tianwang.driver.jt808")

_PHONE_RE = re.compile(r"^[0-9]{1,20}$")
_CODE_ENTRY_RE = re.compile(r"^([0-9]{1,20})[:=](\S{1,255})$")


def _norm_phone(phone: str) -> str:
    return phone.lstrip("0") or "0"


def parse_auth_codes(text: str) -> dict[str, str]:
    """`PHONE:CODE` (or `PHONE=CODE`) entries separated by whitespace, commas or newlines; `#`
    starts a comment. Raises ValueError naming the first bad entry."""
    out = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        for entry in re.split(r"[\s,]+", line.strip()):
            if not entry:
                continue
            m = _CODE_ENTRY_RE.match(entry)
            if m is None:
                raise ValueError(f"entry {entry.split(':')[0].split('=')[0]!r}... is not PHONE:CODE")
            out[_norm_phone(m.group(1))] = m.group(2)
    return out


class Jt808Config(SecretsModel, ListenerConfig):
    """`listeners:` entry of driver jt808. Secrets (`auth_secret`, `auth_codes`) come as `<name>_env`
    or `<name>_file` (inline works, `tianwang check` warns)."""

    __secrets__: ClassVar = ("auth_secret", "auth_codes")

    auth_secret: SecretStr | None = None  # derives each terminal's code; random per start if unset
    auth_secret_env: str | None = None
    auth_secret_file: str | None = None
    auth_codes: SecretStr | None = None  # provisioned codes, "PHONE:CODE" entries
    auth_codes_env: str | None = None
    auth_codes_file: str | None = None
    # who may register over the air: auto = anyone; known = phones in `terminals` or `auth_codes`;
    # closed = nobody (codes are provisioned out of band)
    registration: Literal["auto", "known", "closed"] = "auto"
    terminals: tuple[str, ...] = ()  # if not empty, only these phones may authenticate
    versions: tuple[Literal[2013, 2019], ...] = (2013, 2019)  # header editions accepted (2013 covers 2011)
    idle_timeout_s: float = Field(default=180.0, gt=0, le=86400)  # silence that ends a connection
    auth_timeout_s: float = Field(default=30.0, gt=0, le=3600)  # time to authenticate after connecting
    max_connections: int = Field(default=20000, ge=1)
    max_terminals: int = Field(default=100000, ge=1)  # distinct phones remembered (ListDevices rows)
    max_frame_bytes: int = Field(default=2048, ge=64, le=65536)  # unescaped; a 2019 split header + 1023-byte body fits
    max_bad_frames: int = Field(default=16, ge=1)  # bad frames tolerated before authentication
    max_auth_failures: int = Field(default=3, ge=1)  # per connection, then it is closed
    flood_frames_per_s: float = Field(default=100.0, gt=0)  # sustained frames per connection
    flood_burst: int = Field(default=400, ge=1)
    split_timeout_s: float = Field(default=60.0, gt=0)  # incomplete split messages are dropped after
    write_buffer_bytes: ByteSize = Field(default=ByteSize(64 * 1024), ge=1024)

    @field_validator("versions", mode="before")
    @classmethod
    def _versions(cls, v):
        if isinstance(v, (int, str)):
            v = [v]
        out = []
        for item in v:
            try:
                out.append(int(item))
            except (TypeError, ValueError):
                raise ValueError(f"{item!r} is not an edition (2013 or 2019)") from None
        if not out:
            raise ValueError("accept at least one edition")
        return tuple(out)

    @field_validator("terminals")
    @classmethod
    def _terminals(cls, v):
        for phone in v:
            if not _PHONE_RE.match(phone):
                raise ValueError(f"{phone!r} is not a phone number of 1-20 digits")
        return tuple(_norm_phone(x) for x in v)

    @model_validator(mode="after")
    def _codes(self):
        if self.auth_codes is not None:
            try:
                parse_auth_codes(self.auth_codes.get_secret_value())
            except ValueError as exc:
                raise PydanticCustomError("secret", "{key}: {why}", {"key": "auth_codes", "why": str(exc)}) from None
        return self


SWEEP_MAX_S = 5.0  # how often connections are checked for idle / auth timeouts, at most
RECENT = 32  # messages remembered per terminal to recognise a resend of one already published


class _Terminal:
    """What the listener knows of one phone, across its connections."""

    __slots__ = ("phone", "ctx", "conn", "alarm", "recent")

    def __init__(self, phone, ctx):
        self.phone = phone
        self.ctx = ctx
        self.conn: _Connection | None = None
        self.alarm = 0
        self.recent = p.RecentMessages(RECENT)


class _Connection(asyncio.Protocol):
    """One TCP connection from one terminal."""

    def __init__(self, listener: "Jt808Listener"):
        self.listener = listener
        self.transport = None
        cfg = listener.config
        self.framer = Jt808Framer(max_frame=cfg.max_frame_bytes, keep_rejects=True)
        self.peer = ""
        self.phone: str | None = None
        self.term: _Terminal | None = None
        self.authed = False
        self.reply_args: dict | None = None  # phone BCD and version byte of the terminal's last header
        self.registration: dict | None = None
        now = listener.loop.time()
        self.opened = now
        self.last_rx = now
        self.serial = 0
        self.bad_frames = 0
        self.auth_failures = 0
        self.seen_dropped_bytes = 0
        self.seen_drops = self.framer.drops
        self.tokens = float(cfg.flood_burst)
        self.tokens_at = now
        self.backlog: collections.deque | None = None
        self.write_paused = False
        self.reading_paused = False
        self.close_reason = ""
        self.queries: dict[int, asyncio.Future] = {}
        self.reassembler = p.Reassembler(timeout=cfg.split_timeout_s)
        self.closed = False

    # -- transport callbacks -------------------------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport
        lst = self.listener
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        if len(lst.connections) >= lst.config.max_connections:
            lst.ctx.count("connections_refused")
            log.warning("%s: refused %s: %d connections already", lst.ctx.device_id, self.peer, len(lst.connections))
            self.closed = True
            transport.abort()
            return
        lst.connections.add(self)
        lst.ctx.count("connections")
        transport.set_write_buffer_limits(high=int(lst.config.write_buffer_bytes))

    def connection_lost(self, exc):
        self.closed = True
        lst = self.listener
        lst.connections.discard(self)
        # a frame cut off by the disconnect is a drop like any other
        self.framer.finish()
        if self.framer.dropped_bytes != self.seen_dropped_bytes:
            self._count_framer_drops()
        for fut in self.queries.values():
            if not fut.done():
                fut.set_exception(CommandError("OFFLINE", f"{self.phone}: connection closed before the answer"))
        self.queries.clear()
        term = self.term
        if term is not None and term.conn is self:
            term.conn = None
            reason = self.close_reason or (f"connection lost: {exc}" if exc else "connection closed by the terminal")
            term.ctx.set_health(Health.OFFLINE, reason)

    def pause_writing(self):
        # the terminal does not read its acks: stop reading from it until it does
        self.write_paused = True
        self._pause()

    def resume_writing(self):
        self.write_paused = False
        if self.backlog is None:
            self._resume()

    def data_received(self, data):
        if self.closed:
            return
        lst = self.listener
        self.last_rx = lst.loop.time()
        framer = self.framer
        frames = framer.feed(data)
        if framer.dropped_bytes != self.seen_dropped_bytes:
            self._count_framer_drops()
        if self.term is not None:
            self.term.ctx.seen()
        if not frames:
            return
        if self.backlog is not None:
            self.backlog.extend(frames)
            return
        now = self.last_rx
        tokens = self.tokens + (now - self.tokens_at) * lst.rate
        burst = lst.config.flood_burst
        self.tokens = tokens if tokens < burst else burst
        self.tokens_at = now
        n = len(frames)
        if n <= self.tokens:
            self.tokens -= n
            for frame in frames:
                if self.closed:
                    return
                self._handle(frame)
            return
        allowed = int(self.tokens)
        self.tokens -= allowed
        for frame in frames[:allowed]:
            if self.closed:
                return
            self._handle(frame)
        if self.closed:
            return
        self.backlog = collections.deque(frames[allowed:])
        self._dctx().count("flood_paused")
        self._pause()
        lst.loop.call_later(lst.drain_interval, self._drain)

    # -- flow control --------------------------------------------------------------------------
    def _pause(self):
        if not self.reading_paused and not self.closed:
            self.reading_paused = True
            self.transport.pause_reading()

    def _resume(self):
        if self.reading_paused and not self.closed:
            self.reading_paused = False
            self.transport.resume_reading()

    def _drain(self):
        if self.closed or self.backlog is None:
            self.backlog = None
            return
        lst = self.listener
        now = lst.loop.time()
        self.tokens = min(float(lst.config.flood_burst), self.tokens + (now - self.tokens_at) * lst.rate)
        self.tokens_at = now
        backlog = self.backlog
        while backlog and self.tokens >= 1 and not self.closed:
            self.tokens -= 1
            self._handle(backlog.popleft())
        if backlog and not self.closed:
            lst.loop.call_later(lst.drain_interval, self._drain)
            return
        self.backlog = None
        if not self.write_paused:
            self._resume()

    # -- bookkeeping ---------------------------------------------------------------------------
    def _dctx(self):
        """Drops and counters go to the terminal once it is known, else to the listener."""
        return self.term.ctx if self.term is not None else self.listener.ctx

    def _count_framer_drops(self):
        framer = self.framer
        dctx = self._dctx()
        dctx.count("bytes_dropped", framer.dropped_bytes - self.seen_dropped_bytes)
        self.seen_dropped_bytes = framer.dropped_bytes
        drops = framer.drops
        seen = self.seen_drops
        bad = 0
        for reason, n in drops.items():
            d = n - seen.get(reason, 0)
            if d:
                dctx.drop(reason, d)
                bad += d
        self.seen_drops = drops
        for reason, content in framer.take_rejects():
            self._answer_reject(content)
        if bad:
            self._bad_frame(bad)

    def _answer_reject(self, content: bytes):
        """A frame that failed its check gets 0x8001 result 2 when its header is the terminal's own:
        a header read from noise would answer a serial the terminal never sent."""
        if not self.authed or len(content) < p.HEADER_2013:
            return
        version_2019 = content[2] & 0x40
        size = p.HEADER_2019 if version_2019 else p.HEADER_2013
        if len(content) < size:
            return
        bcd = content[5:15] if version_2019 else content[4:10]
        if self.reply_args is None or bytes(bcd) != self.reply_args["phone_bcd"]:
            return
        msg_id = (content[0] << 8) | content[1]
        serial = (content[size - 2] << 8) | content[size - 1]
        self._send(p.PLATFORM_ACK, p.ack_body(serial, msg_id, p.Result.MESSAGE_ERROR), self.reply_args)

    def _bad_frame(self, n=1):
        self.bad_frames += n
        if not self.authed and self.bad_frames >= self.listener.config.max_bad_frames:
            self.close(f"{self.bad_frames} bad frames before authentication", "garbage_closed")

    def close(self, reason: str, counter: str = ""):
        if self.closed:
            return
        self.close_reason = reason
        # nothing more is read, handled or written on a connection being closed
        self.closed = True
        self.backlog = None
        if counter:
            self.listener.ctx.count(counter)
        log.info("%s: closing %s (%s): %s", self.listener.ctx.device_id, self.peer, self.phone or "unknown", reason)
        self.transport.close()

    def next_serial(self) -> int:
        self.serial = (self.serial + 1) & 0xFFFF
        return self.serial

    def _send(self, msg_id: int, body: bytes, reply_args: dict, serial: int | None = None) -> int:
        if serial is None:
            serial = self.next_serial()
        if not self.closed:
            self.transport.write(encode_jt808(p.build(msg_id, body, serial=serial, **reply_args)))
        return serial

    def _ack(self, header: p.Header, result=p.Result.OK):
        self._send(p.PLATFORM_ACK, p.ack_body(header.serial, header.msg_id, result), p.reply_header_args(header))

    # -- messages ------------------------------------------------------------------------------
    def _handle(self, frame: bytes):
        reply = True
        header = None
        try:
            try:
                header, body = p.parse(frame)
            except p.Jt808Error as exc:
                self._dctx().drop(exc.reason)
                self._bad_frame()
                if exc.header is not None and self._own(exc.header):
                    self._ack(exc.header, p.Result.MESSAGE_ERROR)
                return
            if header.version == "2019":
                if 2019 not in self.listener.config.versions:
                    self._refuse_version(header)
                    return
            elif 2013 not in self.listener.config.versions:
                self._refuse_version(header)
                return
            if self.phone is None:
                self.phone = header.phone
            elif header.phone != self.phone:
                # one connection is one terminal: another phone on it is a confused or hostile peer
                self._dctx().drop("phone_mismatch")
                self._bad_frame()
                self._ack(header, p.Result.FAILURE)
                return
            self.reply_args = p.reply_header_args(header)
            if header.total:
                # every part is acknowledged when it arrives (a part refused gets result 2 from the
                # except below); the joined message is not acknowledged again
                body = self.reassembler.add(header, body, self.listener.loop.time())
                self._ack(header)
                reply = False
                if body is None:
                    return
            self._dispatch(header, body, reply)
        except p.Jt808Error as exc:
            # a body that does not parse: its header did, so the terminal learns of it
            self._dctx().drop(exc.reason)
            self._bad_frame()
            if reply:
                self._ack(exc.header or header, p.Result.MESSAGE_ERROR)
        except Exception:  # one terminal's message never takes the listener down
            log.exception("%s: %s: message handling failed", self.listener.ctx.device_id, self.phone or self.peer)
            self._dctx().drop("internal_error")

    def _own(self, header: p.Header) -> bool:
        return self.phone is None or header.phone == self.phone

    def _refuse_version(self, header):
        self._dctx().drop("version_refused")
        self._bad_frame()
        self._ack(header, p.Result.UNSUPPORTED)

    def _dispatch(self, header: p.Header, body: bytes, reply: bool):
        msg_id = header.msg_id
        lst = self.listener
        if msg_id == p.LOCATION:
            if not self.authed:
                return self._unauthenticated(header, reply)
            term = self.term
            loc = p.parse_location(body)
            if term.recent.seen_before(msg_id, header.serial, body):
                term.ctx.count("duplicates")
            else:
                lst.publish_location(term, loc, live=True)
            if reply:
                self._ack(header)
        elif msg_id == p.HEARTBEAT:
            if not self.authed:
                return self._unauthenticated(header, reply)
            self.term.ctx.count("heartbeats")
            if reply:
                self._ack(header)
        elif msg_id == p.BATCH:
            if not self.authed:
                return self._unauthenticated(header, reply)
            term = self.term
            kind, locations = p.parse_batch(body)
            if term.recent.seen_before(msg_id, header.serial, body):
                term.ctx.count("duplicates")
            else:
                live = kind != p.BATCH_BLIND_AREA
                for loc in locations:
                    lst.publish_location(term, loc, live=live)
                term.ctx.count("batches")
            if reply:
                self._ack(header)
        elif msg_id == p.LOCATION_REPLY:
            if not self.authed:
                return self._unauthenticated(header, False)
            serial, loc = p.parse_location_reply(body)
            payload = lst.publish_location(self.term, loc, live=True)
            fut = self.queries.pop(serial, None)
            if fut is not None and not fut.done():
                fut.set_result(payload)
        elif msg_id == p.TERMINAL_ACK:
            if self.authed:
                p.parse_ack(body)
                self.term.ctx.count("terminal_acks")
        elif msg_id == p.REGISTER:
            self._register(header, body)
        elif msg_id == p.AUTH:
            self._authenticate(header, body, reply)
        elif msg_id == p.LOGOUT:
            if reply:
                self._ack(header)
            if self.authed:
                self.close("logged out (0x0003)")
            else:
                self.close("deregistered before authentication")
        else:
            self._dctx().drop("unsupported")
            if reply:
                self._ack(header, p.Result.UNSUPPORTED)

    def _unauthenticated(self, header, reply):
        self._dctx().drop("unauthenticated")
        self._bad_frame()
        if reply:
            self._ack(header, p.Result.FAILURE)

    def _register(self, header: p.Header, body: bytes):
        lst = self.listener
        reg = p.parse_register(body, header.version)
        phone = header.phone
        result, code = lst.registration_result(phone)
        self._send(p.REGISTER_REPLY, p.register_reply_body(header.serial, result, code), p.reply_header_args(header))
        if result == p.RegisterResult.OK:
            self.registration = reg.info()
            lst.ctx.count("registrations")
        else:
            lst.ctx.count("registrations_refused")
            log.info("%s: registration of %s refused (%s)", lst.ctx.device_id, phone, p.RegisterResult(result).name)

    def _authenticate(self, header: p.Header, body: bytes, reply: bool):
        lst = self.listener
        auth = p.parse_auth(body, header.version)
        phone = header.phone
        why = lst.check_auth(phone, auth.code)
        if why:
            self.auth_failures += 1
            lst.ctx.count("auth_failures")
            log.info("%s: %s from %s failed to authenticate: %s", lst.ctx.device_id, phone, self.peer, why)
            if reply:
                self._ack(header, p.Result.FAILURE)
            if self.auth_failures >= lst.config.max_auth_failures:
                self.close(f"{self.auth_failures} failed authentications")
            return
        info = {"version": header.version, "address": self.peer}
        if header.protocol_version is not None:
            info["protocol_version"] = header.protocol_version
        if auth.imei:
            info["imei"] = auth.imei
        if auth.software_version:
            info["software_version"] = auth.software_version
        if self.registration:
            info.update({k: v for k, v in self.registration.items() if v not in ("", None)})
        try:
            term = lst.attach(phone, self, info)
        except ValueError as exc:
            lst.ctx.count("auth_failures")
            log.warning("%s: %s cannot be a device here: %s", lst.ctx.device_id, phone, exc)
            if reply:
                self._ack(header, p.Result.FAILURE)
            self.close(str(exc))
            return
        self.term = term
        self.authed = True
        if reply:
            self._ack(header)
        term.ctx.set_health(Health.ONLINE, "authenticated")


class Jt808Listener(Driver):
    """The listener driver. `port` is the bound port once `run()` has started (0 in config = any)."""

    def __init__(self, config: Jt808Config, ctx):
        super().__init__(config, ctx)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.server: asyncio.base_events.Server | None = None
        self.port = 0
        self.connections: set[_Connection] = set()
        self.terminals: dict[str, _Terminal] = {}
        self.rate = float(config.flood_frames_per_s)
        # refill often enough that a paused terminal gets a few frames per turn
        self.drain_interval = max(0.01, min(0.25, 4.0 / self.rate))
        if config.auth_secret is not None:
            self._secret = config.auth_secret.get_secret_value().encode("utf-8")
        else:
            self._secret = os.urandom(32)
            log.warning(
                "%s: no auth_secret configured: auth codes are random per start and terminals will "
                "register again after a restart",
                ctx.device_id,
            )
        self._codes = parse_auth_codes(config.auth_codes.get_secret_value()) if config.auth_codes else {}
        self._allowed = frozenset(config.terminals)

    # -- policy --------------------------------------------------------------------------------
    def code_for(self, phone: str) -> str:
        """The auth code terminal `phone` must present."""
        code = self._codes.get(phone)
        return code if code is not None else p.derive_auth_code(self._secret, phone)

    def registration_result(self, phone: str) -> tuple[int, str]:
        """(0x8100 result, auth code) for a terminal registering as `phone`."""
        policy = self.config.registration
        if policy == "closed":
            return p.RegisterResult.NO_TERMINAL, ""
        if self._allowed and phone not in self._allowed:
            return p.RegisterResult.NO_TERMINAL, ""
        if policy == "known" and phone not in self._allowed and phone not in self._codes:
            return p.RegisterResult.NO_TERMINAL, ""
        if phone not in self.terminals and len(self.terminals) >= self.config.max_terminals:
            return p.RegisterResult.NO_TERMINAL, ""
        return p.RegisterResult.OK, self.code_for(phone)

    def check_auth(self, phone: str, code: str) -> str:
        """'' when `code` authenticates `phone`, else why not."""
        if self._allowed and phone not in self._allowed:
            return "phone not in terminals"
        if not hmac.compare_digest(code.encode("utf-8"), self.code_for(phone).encode("utf-8")):
            return "wrong auth code"
        if phone not in self.terminals and len(self.terminals) >= self.config.max_terminals:
            return f"max_terminals ({self.config.max_terminals}) reached"
        return ""

    # -- terminals -----------------------------------------------------------------------------
    def attach(self, phone: str, conn: _Connection, info: dict) -> _Terminal:
        """Bind an authenticated connection to its terminal; an older connection of the same
        terminal is closed (the terminal reconnected and the old socket is a leftover).
        Raises ValueError when `phone` cannot be a device id here."""
        # child() returns the existing row (with its info updated) for a terminal seen before
        child = self.ctx.child(phone, info=info, command=partial(self.command_terminal, phone))
        term = self.terminals.get(phone)
        if term is None:
            term = self.terminals[phone] = _Terminal(phone, child)
        term.ctx = child
        old = term.conn
        term.conn = conn
        if old is not None and old is not conn:
            self.ctx.count("connections_replaced")
            old.term = None  # its end no longer speaks for the terminal
            old.authed = False
            old.close("replaced by a new connection from the same terminal")
        return term

    def publish_location(self, term: _Terminal, loc: p.Location, live: bool) -> dict:
        """Publish one position (and, for live ones, alarm-bit changes); return the fix payload.
        Stored (blind-area) positions are history: they do not move the alarm state."""
        payload = p.fix_payload(loc, stored=not live)
        t = loc.time_ns or 0
        ctx = term.ctx
        ctx.publish("fix", payload, t)
        ctx.count("fixes")
        if live and loc.alarm != term.alarm:
            for change in p.alarm_changes(term.alarm, loc.alarm):
                ctx.publish("alarm", change, t)
            term.alarm = loc.alarm
        return payload

    async def command_terminal(self, phone: str, action: str, args: dict, timeout: float) -> dict:
        """Commands on a terminal (child device). `query_location`: 0x8201, then the 0x0201 answer's
        fix payload. Raises CommandError UNSUPPORTED / OFFLINE (the supervisor adds TIMEOUT)."""
        if action != "query_location":
            raise CommandError("UNSUPPORTED", f"{phone}: jt808 terminals take query_location, not {action!r}")
        if args:
            raise CommandError("INVALID", f"query_location takes no arguments, got {', '.join(sorted(args))}")
        term = self.terminals.get(phone)
        conn = term.conn if term is not None else None
        if conn is None or conn.closed or not conn.authed:
            raise CommandError("OFFLINE", f"{phone} is not connected")
        fut = self.loop.create_future()
        serial = conn.next_serial()
        conn.queries[serial] = fut
        try:
            conn._send(p.QUERY_LOCATION, b"", conn.reply_args, serial)
            return await fut
        finally:
            conn.queries.pop(serial, None)

    # -- lifecycle -----------------------------------------------------------------------------
    async def run(self) -> None:
        self.loop = asyncio.get_running_loop()
        host, port = parse_hostport(self.config.listen)
        self.server = await self.loop.create_server(
            lambda: _Connection(self), host, port, backlog=4096, reuse_address=True
        )
        self.port = self.server.sockets[0].getsockname()[1]
        self.ctx.set_info(listen=f"{host}:{self.port}", registration=self.config.registration)
        self.ctx.set_health(Health.ONLINE, f"listening on {host}:{self.port}")
        sweep = min(SWEEP_MAX_S, self.config.idle_timeout_s / 4, self.config.auth_timeout_s / 4)
        while True:
            await asyncio.sleep(sweep)
            self.sweep()

    def sweep(self) -> None:
        """Close connections that went silent or never authenticated; expire split leftovers."""
        now = self.loop.time()
        idle = self.config.idle_timeout_s
        auth = self.config.auth_timeout_s
        for conn in list(self.connections):
            if conn.authed:
                if now - conn.last_rx > idle:
                    conn.close(f"idle timeout: nothing for {now - conn.last_rx:.0f} s", "idle_closed")
            elif now - conn.opened > auth:
                conn.close("did not authenticate in time", "auth_timeouts")
            if len(conn.reassembler):
                before = dict(conn.reassembler.dropped)
                conn.reassembler.expire(now)
                for reason, n in conn.reassembler.dropped.items():
                    if n > before.get(reason, 0):
                        conn._dctx().drop(reason, n - before.get(reason, 0))

    async def close(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            server.close()
        for conn in list(self.connections):
            conn.close_reason = "listener stopped"
            conn.transport.abort()
        self.connections.clear()
        for term in self.terminals.values():
            if term.conn is not None:
                term.conn = None
            term.ctx.set_health(Health.OFFLINE, "listener stopped")
        if server is not None:
            try:
                await asyncio.wait_for(server.wait_closed(), 1.0)
            except asyncio.TimeoutError:
                pass


DEMO_TERMINALS = 200


async def _demo(stack) -> dict:
    """`tianwang run --demo`: a fleet of simulated terminals dialling a listener on a free loopback
    port. The fleet starts first and keeps re-dialling (with backoff) until the listener is up."""
    import secrets
    import socket

    from tianwang.drivers.jt808.simulator import Fleet

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fleet = Fleet("127.0.0.1", port, terminals=DEMO_TERMINALS, rate=1.0, backoff_initial=0.3, backoff_max=2.0)
    await fleet.start()
    stack.push_async_callback(fleet.stop)
    return {
        "listeners": [
            {"id": "fleet", "driver": "jt808", "listen": f"127.0.0.1:{port}", "auth_secret": secrets.token_hex(16)}
        ]
    }


def _decoder(device_id: str):
    from tianwang.drivers.jt808.decode import Decoder

    return Decoder(device_id)


SPEC = DriverSpec(
    name="jt808",
    family="gnss",
    config_model=Jt808Config,
    factory=Jt808Listener,
    kind="listener",
    transports=("tcp",),
    actions=(
        ActionSpec(
            "query_location",
            "ask the terminal for its position now (0x8201); the result is the fix of its 0x0201 answer",
        ),
    ),
    description="JT/T 808-2011/2013/2019 vehicle terminals dialling in over TCP",
    decoder=_decoder,
    simulator="tianwang.drivers.jt808.simulator:main",
    demo=_demo,
)
