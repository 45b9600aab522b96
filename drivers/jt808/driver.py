"""JT/T 808 listener: a TCP server that vehicle terminals dial into (`listeners: - driver: jt808`).

Each connection is an asyncio Protocol with its own 0x7E framer (tianwang.gateway.framing.Jt808Framer)
and its own Session (tianwang.drivers.jt808.session): the sans-io message handling that the offline
decoder runs too. The connection applies what the Session returns for each frame (publications on
the terminal's device, drops and counters, the replies, a close) and answers the Session's policy
questions from the config (who may register, which codes authenticate, the terminal's device).

A terminal registers (0x0100 -> 0x8100 with its auth code), authenticates (0x0102), then heartbeats
and reports positions (0x0200, 0x0704 batches, 0x0201 answers to 0x8201). Every terminal message
that has no reply of its own gets a 0x8001 with its serial. An authenticated terminal is a child
device `<phone>` of the listener, ONLINE while its connection lives; positions go to
`gnss/<phone>/fix`, alarm-bit changes to `gnss/<phone>/alarm`.

Auth codes: code(phone) is the `auth_codes` entry for that phone when there is one, otherwise
HMAC-SHA256(auth_secret, phone) cut to 16 hex digits (protocol.derive_auth_code). Without an
`auth_secret` a random one is drawn at start, so codes change at each restart and terminals fall
back to registering again, which the standard has them do when authentication fails (unless
`registrations_file` kept the code they registered with).

Registrations (tianwang.drivers.jt808.registry): a phone is registered by its first 0x0100
answered OK, or by its first authentication with a provisioned or derived code. A registered phone
is not registered again over the air: its 0x0100 gets result 3 ("terminal already registered") and
no code, and its live connection is left alone, so reaching the port is not enough to take a
terminal's session over. Only the right code replaces a live connection (the terminal itself
reconnecting). The operator's `deregister` command on the listener lets a phone register again;
`registration: open` keeps the old anyone-may-re-register behaviour and is logged as a WARNING at
every start.

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
import ipaddress
import logging
import os
import time
from functools import partial
from typing import TYPE_CHECKING, Any, cast

from tianwang.drivers.jt808 import protocol as p
from tianwang.drivers.jt808.config import Jt808Config, parse_auth_codes
from tianwang.drivers.jt808.registry import Registrations
from tianwang.drivers.jt808.session import Session, Step, TerminalState
from tianwang.drivers.sdk import CommandError, Driver, Health, Jt808Framer, encode_jt808, parse_hostport

if TYPE_CHECKING:
    from tianwang.drivers.sdk import DeviceContext

log = logging.getLogger("tianwang.driver.jt808")

SWEEP_MAX_S = 5.0  # how often connections are checked for idle / auth timeouts, at most
MAX_SOURCES = 100_000  # per-address registration buckets kept (the least recently used go first)
MAX_REFUSALS_LOGGED = 1024  # addresses whose refusals were logged (later ones only counted)


def source_of(host: str) -> str:
    """The address a per-source limit counts by: an IPv4 address as it is (also when it comes
    mapped into IPv6), an IPv6 address by its /64 (one subscriber's prefix)."""
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if addr.version == 6:
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.ip_network(f"{addr}/64", strict=False))
    return str(addr)


class _Buckets:
    """Token buckets by source address: `rate` per second up to `burst`; bounded in number."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._buckets: collections.OrderedDict[str, tuple[float, float]] = collections.OrderedDict()

    def take(self, key: str, now: float) -> bool:
        tokens, at = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if len(self._buckets) >= MAX_SOURCES:
            self._buckets.popitem(last=False)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - 1.0, now)
        return True


class _Terminal(TerminalState):
    """What the listener knows of one phone, across its connections: its device and its live
    connection, beside the alarm word and recent messages its Sessions share."""

    __slots__ = ("phone", "ctx", "conn")

    def __init__(self, phone: str, ctx: DeviceContext) -> None:
        super().__init__()
        self.phone = phone
        self.ctx = ctx
        self.conn: _Connection | None = None


class _Connection(asyncio.Protocol):
    """One TCP connection from one terminal. Its frames go to its Session; the connection is the
    Session's gate (registration, check_auth, attach: the listener's policy)."""

    def __init__(self, listener: Jt808Listener) -> None:
        self.listener = listener
        self.transport: asyncio.Transport  # from connection_made, before any other callback
        cfg = listener.config
        self.framer = Jt808Framer(max_frame=cfg.max_frame_bytes, keep_rejects=True)
        self.peer = ""
        self.session = Session(
            self,
            versions=cfg.versions,
            split_timeout=cfg.split_timeout_s,
            max_bad_frames=cfg.max_bad_frames,
            max_auth_failures=cfg.max_auth_failures,
        )
        now = listener.loop.time()
        self.opened = now
        self.last_rx = now
        self.serial = 0
        self.seen_dropped_bytes = 0
        self.seen_drops = self.framer.drops
        self.tokens = float(cfg.flood_burst)
        self.tokens_at = now
        self.backlog: collections.deque[bytes] | None = None
        self.write_paused = False
        self.reading_paused = False
        self.close_reason = ""
        self.queries: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.closed = False
        self.warned_reregister = False
        self.source = ""
        self.unauthenticated = False  # counted in the listener's per-address count of such connections

    @property
    def term(self) -> _Terminal | None:
        """The terminal this connection speaks for, once it authenticated."""
        return cast(_Terminal | None, self.session.terminal)  # attach() hands the Session a _Terminal

    @property
    def authed(self) -> bool:
        return self.session.terminal is not None

    @property
    def phone(self) -> str | None:
        return self.session.phone

    # -- transport callbacks -------------------------------------------------------------------
    def connection_made(self, base: asyncio.BaseTransport) -> None:
        # a TCP server's connection; uvloop's transports do not derive from asyncio.Transport
        self.transport = transport = cast(asyncio.Transport, base)
        lst = self.listener
        peer = transport.get_extra_info("peername")
        self.peer = self.session.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        if len(lst.connections) >= lst.config.max_connections:
            lst.ctx.count("connections_refused")
            log.warning("%s: refused %s: %d connections already", lst.ctx.device_id, self.peer, len(lst.connections))
            self.closed = True
            transport.abort()
            return
        self.source = source_of(peer[0]) if isinstance(peer, tuple) else self.peer
        pending = lst.unauthenticated_by_source
        if pending.get(self.source, 0) >= lst.config.max_unauthenticated_per_address:
            # one address holding many connections that never authenticate would hold the
            # listener's slots for auth_timeout_s each: past its share they are closed at once
            lst.ctx.count("connections_refused_per_address")
            lst.log_refusal(self.source, f"{pending[self.source]} connections from it have not authenticated yet")
            self.closed = True
            transport.abort()
            return
        pending[self.source] = pending.get(self.source, 0) + 1
        self.unauthenticated = True
        lst.connections.add(self)
        lst.ctx.count("connections")
        transport.set_write_buffer_limits(high=int(lst.config.write_buffer_bytes))

    def settled(self) -> None:
        """No longer a connection that has not authenticated (it did, or it is gone)."""
        if self.unauthenticated:
            self.unauthenticated = False
            pending = self.listener.unauthenticated_by_source
            n = pending.get(self.source, 0) - 1
            if n > 0:
                pending[self.source] = n
            else:
                pending.pop(self.source, None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.settled()
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

    def pause_writing(self) -> None:
        # the terminal does not read its acks: stop reading from it until it does
        self.write_paused = True
        self._pause()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.backlog is None:
            self._resume()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        lst = self.listener
        self.last_rx = lst.loop.time()
        term = self.term
        if term is not None:
            tap = term.ctx.tap
            if tap is not None:
                tap(data)
        framer = self.framer
        frames = framer.feed(data)
        if framer.dropped_bytes != self.seen_dropped_bytes:
            self._count_framer_drops()
        if term is not None:
            term.ctx.seen()
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
    def _pause(self) -> None:
        if not self.reading_paused and not self.closed:
            self.reading_paused = True
            self.transport.pause_reading()

    def _resume(self) -> None:
        if self.reading_paused and not self.closed:
            self.reading_paused = False
            self.transport.resume_reading()

    def _drain(self) -> None:
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
    def _dctx(self) -> DeviceContext:
        """Drops and counters go to the terminal once it is known, else to the listener."""
        return self.term.ctx if self.term is not None else self.listener.ctx

    def _count_framer_drops(self) -> None:
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
        rejects = [content for _reason, content in framer.take_rejects()]
        if rejects or bad:
            self._apply(self.session.rejected(rejects, bad), dctx)

    def close(self, reason: str, counter: str = "") -> None:
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

    def _send(self, msg_id: int, body: bytes, reply_args: dict[str, Any], serial: int | None = None) -> int:
        if serial is None:
            serial = self.next_serial()
        if not self.closed:
            frame = encode_jt808(p.build(msg_id, body, serial=serial, **reply_args))
            self.transport.write(frame)
            term = self.term
            if term is not None:
                tap = term.ctx.tap
                if tap is not None:
                    tap(frame, sent=True)
        return serial

    # -- messages ------------------------------------------------------------------------------
    def _handle(self, frame: bytes) -> None:
        dctx = self._dctx()
        try:
            self._apply(self.session.handle(frame, self.listener.loop.time()), dctx)
        except Exception:  # one terminal's message never takes the listener down
            log.exception("%s: %s: message handling failed", self.listener.ctx.device_id, self.phone or self.peer)
            self._dctx().drop("internal_error")

    def _apply(self, step: Step, dctx: DeviceContext) -> None:
        """Do what the Session asked: drops and counters on `dctx` (the device the frame came from:
        the terminal once authenticated, else the listener), publications, the answer to a
        query, the replies, the close; ONLINE once the terminal authenticated."""
        for reason in step.drops:
            dctx.drop(reason)
        for name in step.counts:
            dctx.count(name)
        for pub in step.publications:
            dctx.publish(pub.channel, pub.payload, pub.device_time_ns)
        if step.answer is not None:
            serial, payload = step.answer
            fut = self.queries.pop(serial, None)
            if fut is not None and not fut.done():
                fut.set_result(payload)
        for reply in step.replies:
            self._send(reply.msg_id, reply.body, reply.header)
        if step.close is not None:
            self.close(*step.close)
        term = self.term
        if step.online and term is not None:  # online: the Session attached its terminal
            term.ctx.set_health(Health.ONLINE, "authenticated")

    # -- the Session's gate: the listener's policy -----------------------------------------------
    def registration(self, phone: str, info: dict) -> tuple[int, str]:
        lst = self.listener
        result, code = lst.registration_result(phone, info)
        if result == p.RegisterResult.OK and not lst.registration_buckets.take(self.source, lst.loop.time()):
            # a registration holds a phone and a plate: one address may take only so many, so
            # nobody can fill the registry (or squat real vehicles' plates) from one place.
            # Closed unanswered, the terminal registers again after its back-off.
            lst.log_refusal(self.source, "registrations past registrations_per_s")
            self.close(f"registrations from {self.source} past registrations_per_s", "registrations_rate_limited")
            return p.RegisterResult.NO_TERMINAL, ""
        if result == p.RegisterResult.OK:
            lst.ctx.count("registrations")
            lst.register(phone, code, "0x0100", info, self.peer, authenticated=False)
        else:
            lst.ctx.count("registrations_refused")
            if result == p.RegisterResult.TERMINAL_REGISTERED:
                lst.ctx.count("reregistrations_refused")
                # once per connection: a peer repeating it must not flood the log
                (log.info if self.warned_reregister else log.warning)(
                    "%s: %s from %s tried to register again: refused (terminal already registered; "
                    "`deregister` lets it)",
                    lst.ctx.device_id,
                    phone,
                    self.peer,
                )
                self.warned_reregister = True
            else:
                log.info(
                    "%s: registration of %s from %s refused (%s)",
                    lst.ctx.device_id,
                    phone,
                    self.peer,
                    p.RegisterResult(result).name,
                )
        return result, code

    def check_auth(self, phone: str, code: str) -> str:
        lst = self.listener
        why = lst.check_auth(phone, code)
        if why:
            lst.ctx.count("auth_failures")
            log.info("%s: %s from %s failed to authenticate: %s", lst.ctx.device_id, phone, self.peer, why)
        return why

    def attach(self, phone: str, info: dict) -> _Terminal:
        lst = self.listener
        try:
            term = lst.attach(phone, self, info)
            self.settled()
            return term
        except ValueError as exc:
            lst.ctx.count("auth_failures")
            log.warning("%s: %s cannot be a device here: %s", lst.ctx.device_id, phone, exc)
            raise


class Jt808Listener(Driver[Jt808Config]):
    """The listener driver. `port` is the bound port once `run()` has started (0 in config = any)."""

    def __init__(self, config: Jt808Config, ctx: DeviceContext) -> None:
        super().__init__(config, ctx)
        self.loop: asyncio.AbstractEventLoop  # set by run(): connections and commands come after it
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
        # raises RegistryError (one line, naming the file) for a file that is not a registrations file
        self.registry = Registrations(config.registrations_file, on_write=self._registrations_written)
        self._registry_error = ""
        # registrations over the air whose terminal has not authenticated yet: phone -> time.time()
        # of the registration; dropped after registration_timeout_s
        self.unauthenticated_registrations = self.registry.unauthenticated()
        self.registration_buckets = _Buckets(config.registrations_per_s, config.registrations_burst)
        self.unauthenticated_by_source: dict[str, int] = {}
        self._refusals_logged: set[tuple[str, str]] = set()
        if config.registrations_file is not None:
            parent = os.path.dirname(os.path.abspath(config.registrations_file))
            if not os.path.isdir(parent):
                raise ValueError(f"registrations_file: directory {parent} does not exist")
        for key, why in config.config_warnings():
            log.warning("%s: %s %s", ctx.device_id, key, why)

    # -- policy --------------------------------------------------------------------------------
    def code_for(self, phone: str) -> str:
        """The auth code terminal `phone` must present: its `auth_codes` entry (the operator's
        word wins), else the code it was registered with, else the one derived from the secret."""
        code = self._codes.get(phone)
        if code is not None:
            return code
        code = self.registry.code(phone)
        return code if code is not None else p.derive_auth_code(self._secret, phone)

    def registration_result(self, phone: str, info: dict | None = None) -> tuple[int, str]:
        """(0x8100 result, auth code) for a terminal registering as `phone`; `info` is what its
        0x0100 said (its plate). Every policy but `open` refuses a phone already registered
        (result 3) and a vehicle (plate colour + plate) registered to another phone (result 1)."""
        policy = self.config.registration
        if policy == "closed":
            return p.RegisterResult.NO_TERMINAL, ""
        if self._allowed and phone not in self._allowed:
            return p.RegisterResult.NO_TERMINAL, ""
        if policy == "known" and phone not in self._allowed and phone not in self._codes:
            return p.RegisterResult.NO_TERMINAL, ""
        if policy != "open":
            if phone in self.registry:
                return p.RegisterResult.TERMINAL_REGISTERED, ""
            info = info or {}
            owner = self.registry.phone_of_plate(info.get("plate_colour"), info.get("plate", ""))
            if owner is not None and owner != phone:
                return p.RegisterResult.VEHICLE_REGISTERED, ""
        if phone not in self.registry and len(self.registry) >= self.config.max_terminals:
            return p.RegisterResult.NO_TERMINAL, ""
        if phone not in self.terminals and len(self.terminals) >= self.config.max_terminals:
            return p.RegisterResult.NO_TERMINAL, ""
        return p.RegisterResult.OK, self._issued_code(phone)

    def _issued_code(self, phone: str) -> str:
        """What a registration hands out: the provisioned or derived code (never the code of an
        earlier registration, which under `open` may have been anyone's)."""
        code = self._codes.get(phone)
        return code if code is not None else p.derive_auth_code(self._secret, phone)

    def _registrations_written(self, error: str) -> None:
        """A background write of the registrations file ended: DEGRADED while it cannot be written
        (registrations made meanwhile live in memory and are written with the next that succeeds)."""
        if error:
            self.ctx.count("registrations_write_errors")
            if not self._registry_error:
                self.ctx.set_health(Health.DEGRADED, f"registrations not saved: {error}")
        elif self._registry_error and self.server is not None:
            self.ctx.set_health(Health.ONLINE, f"listening on port {self.port}; registrations saved again")
        self._registry_error = error

    def register(
        self, phone: str, code: str, via: str, info: dict, address: str = "", authenticated: bool = True
    ) -> None:
        """Record a registration (a 0x0100 answered OK, or a first authentication with a
        provisioned or derived code): from now on the phone cannot be registered over the air.
        One over the air (`authenticated` false) lapses unless its terminal authenticates within
        `registration_timeout_s`."""
        self.registry.add(phone, code, via, info, address, authenticated=authenticated)
        if authenticated:
            self.unauthenticated_registrations.pop(phone, None)
        else:
            self.unauthenticated_registrations[phone] = time.time()
        self.ctx.set_info(registrations=str(len(self.registry)))

    def log_refusal(self, source: str, why: str) -> None:
        """A WARNING the first time an address is refused for a reason; later ones are only counted."""
        key = (source, why.split(" ", 1)[-1] if why[:1].isdigit() else why)
        if key in self._refusals_logged or len(self._refusals_logged) >= MAX_REFUSALS_LOGGED:
            return
        self._refusals_logged.add(key)
        log.warning("%s: refused %s: %s (counted from now on, not logged)", self.ctx.device_id, source, why)

    def expire_registrations(self, now: float) -> None:
        """Drop registrations over the air whose terminal never authenticated in time."""
        limit = self.config.registration_timeout_s
        expired = [phone for phone, at in self.unauthenticated_registrations.items() if now - at >= limit]
        for phone in expired:
            del self.unauthenticated_registrations[phone]
            rec = self.registry.terminals.get(phone)
            if rec is None or rec.get("authenticated") is not False:
                continue
            self.registry.remove(phone)
            self.ctx.count("registrations_expired")
            log.info(
                "%s: registration of %s from %s expired: it never authenticated within %g s",
                self.ctx.device_id,
                phone,
                rec.get("address", "?"),
                limit,
            )
        if expired:
            self.ctx.set_info(registrations=str(len(self.registry)))

    def check_auth(self, phone: str, code: str) -> str:
        """'' when `code` authenticates `phone`, else why not."""
        if self._allowed and phone not in self._allowed:
            return "phone not in terminals"
        if not hmac.compare_digest(code.encode("utf-8"), self.code_for(phone).encode("utf-8")):
            return "wrong auth code"
        if phone not in self.terminals and len(self.terminals) >= self.config.max_terminals:
            return f"max_terminals ({self.config.max_terminals}) reached"
        if phone not in self.registry and len(self.registry) >= self.config.max_terminals:
            return f"max_terminals ({self.config.max_terminals}) registrations reached"
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
        if phone not in self.registry:
            # it came in with a provisioned or derived code without registering here: it is
            # registered from now on, so nobody can register as it over the air
            self.register(phone, self.code_for(phone), "0x0102", info, info.get("address", ""))
        elif self.registry.authenticated(phone):
            # its registration over the air is used: it no longer lapses
            self.unauthenticated_registrations.pop(phone, None)
        old = term.conn
        term.conn = conn
        if old is not None and old is not conn:
            self.ctx.count("connections_replaced")
            old.session.detach()  # its end no longer speaks for the terminal
            old.close("replaced by a new connection from the same terminal")
        return term

    async def command(self, action: str, args: dict, timeout: float) -> dict:
        """Commands on the listener itself: `registrations` (read-only: every registration, no
        codes) and `deregister phone=PHONE` (needs a reason: the phone may register over the air
        again; its live connection, if any, is left alone). Raises CommandError."""
        if action == "registrations":
            if args:
                raise CommandError("INVALID", f"registrations takes no arguments, got {', '.join(sorted(args))}")
            return {"persistent": self.registry.path is not None, "terminals": self.registry.listing()}
        if action == "deregister":
            extra = sorted(set(args) - {"phone"})
            if extra:
                raise CommandError("INVALID", f"deregister takes phone=PHONE only, got {', '.join(extra)}")
            raw = args.get("phone")
            if isinstance(raw, int) and not isinstance(raw, bool):
                raw = str(raw)
            if not isinstance(raw, str) or not raw.isascii() or not raw.isdigit() or len(raw) > 20:
                raise CommandError("INVALID", "deregister needs phone=PHONE (1-20 digits)")
            phone = raw.lstrip("0") or "0"
            rec = self.registry.remove(phone)
            self.unauthenticated_registrations.pop(phone, None)
            if rec is None:
                raise CommandError("NOT_FOUND", f"{phone} is not registered on {self.ctx.device_id}")
            try:
                await self.registry.flush()
            except OSError as exc:
                raise CommandError("FAILED", f"{phone} deregistered in memory but not on disk: {exc}") from None
            self.ctx.set_info(registrations=str(len(self.registry)))
            self.ctx.count("deregistrations")
            log.warning(
                "%s: %s deregistered by an operator: it may register over the air again", self.ctx.device_id, phone
            )
            return {
                "phone": phone,
                "deregistered": True,
                "registered_at": rec.get("registered_at", ""),
                "persistent": self.registry.path is not None,
            }
        if action == "query_location":
            raise CommandError(
                "UNSUPPORTED",
                f"{self.ctx.device_id} is a listener, not a terminal: send query_location to a terminal, by its "
                f"phone number (tianwang devices --family gnss lists them)",
            )
        raise CommandError(
            "UNSUPPORTED",
            f"{self.ctx.device_id}: the jt808 listener takes registrations and deregister, not {action!r}",
        )

    async def command_terminal(self, phone: str, action: str, args: dict, timeout: float) -> dict:
        """Commands on a terminal (child device). `query_location`: 0x8201, then the 0x0201 answer's
        fix payload. Raises CommandError UNSUPPORTED / OFFLINE (the supervisor adds TIMEOUT)."""
        if action in ("deregister", "registrations"):
            raise CommandError(
                "UNSUPPORTED",
                f"{phone} is a terminal: {action} goes to its listener, {self.ctx.device_id} "
                f"(tianwang command {self.ctx.device_id} {action}{' phone=' + phone if action == 'deregister' else ''})",
            )
        if action != "query_location":
            raise CommandError("UNSUPPORTED", f"{phone}: jt808 terminals take query_location, not {action!r}")
        if args:
            raise CommandError("INVALID", f"query_location takes no arguments, got {', '.join(sorted(args))}")
        term = self.terminals.get(phone)
        conn = term.conn if term is not None else None
        reply_args = conn.session.reply_args if conn is not None else None
        if conn is None or conn.closed or not conn.authed or reply_args is None:
            raise CommandError("OFFLINE", f"{phone} is not connected")
        fut = self.loop.create_future()
        serial = conn.next_serial()
        conn.queries[serial] = fut
        try:
            conn._send(p.QUERY_LOCATION, b"", reply_args, serial)
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
        self.ctx.set_info(
            listen=f"{host}:{self.port}",
            registration=self.config.registration,
            registrations=str(len(self.registry)),
            registrations_file=self.config.registrations_file or "(memory only)",
        )
        self.ctx.set_health(Health.ONLINE, f"listening on {host}:{self.port}")
        sweep = min(
            SWEEP_MAX_S,
            self.config.idle_timeout_s / 4,
            self.config.auth_timeout_s / 4,
            self.config.registration_timeout_s / 4,
        )
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
            if len(conn.session.reassembler):
                conn._apply(conn.session.expire(now), conn._dctx())
        if self.unauthenticated_registrations:
            self.expire_registrations(time.time())

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
            except TimeoutError:
                pass
        if self.registry.pending:
            try:
                await asyncio.wait_for(self.registry.flush(), 5.0)
            except (TimeoutError, OSError) as exc:
                log.error("%s: registrations not all written at stop: %s", self.ctx.device_id, exc)
