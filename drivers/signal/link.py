"""One link to GB/T 20999 controllers (a serial line, a TCP connection, or a TCP port a controller
dials into), shared by every configured device on it.

Several controllers on one RS-232/RS-485 line, or behind one terminal server, are configured as
devices with the same `url` and different `controller_id`s. They share one `Link`: one open port,
one framer, and one request in flight at a time (`request()` holds a FIFO lock, so devices take
turns in the order they asked: fair polling). A controller that does not answer costs its own reply
timeout per turn and nothing more; its device goes OFFLINE on its own while the others carry on.

Replies are matched to the request in flight by sequence number and controller id (and by frame
type: a query is answered by 0x20/0x21, a set by 0x40/0x41, a heartbeat by 0x80). Everything else
is routed by controller id: active reports to their device; replies that match no request, frames
from unknown controllers, frames the host itself would send, and frames that are not well-formed
messages are counted as drops on the device the bytes most likely came from, and hex-dumped at
DEBUG. The framer (compiled) counts CRC, escape and length failures; the good frame after bad bytes
survives.

The link opens when its first device starts and closes when its last device stops; when it fails
every device on it sees the failure and reconnects through its own backoff.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol, cast

from tianwang.drivers.sdk import DeviceError, DeviceTimeout, describe, parse_hostport
from tianwang.drivers.signal import protocol as p

if TYPE_CHECKING:
    from tianwang.drivers.sdk import DeviceContext
    from tianwang.drivers.signal.config import SignalConfig

log = logging.getLogger("tianwang.driver.signal")

REPLY_TYPES: dict[int, tuple[int, ...]] = {
    p.FrameType.QUERY: (p.FrameType.QUERY_REPLY, p.FrameType.QUERY_ERROR),
    p.FrameType.SET: (p.FrameType.SET_REPLY, p.FrameType.SET_ERROR),
    p.FrameType.HEARTBEAT_QUERY: (p.FrameType.HEARTBEAT_REPLY,),
}
_KNOWN_TYPES = frozenset(int(t) for t in p.FrameType)
_LINKS: dict[tuple[Any, ...], Link] = {}


class Member(Protocol):
    """What a link needs of a device on it (tianwang.drivers.signal.driver.SignalDriver)."""

    controller_id: int | None
    ctx: DeviceContext

    def on_report(self, msg: p.Message) -> None: ...


def peer_allowed(host: str, networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    """True when the address `host` is in one of `networks` (ipaddress networks); an IPv4 peer on a
    dual-stack socket (`::ffff:10.1.2.3`) is judged by its IPv4 address."""
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if addr.version == 6 and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return any(addr in net for net in networks)


def hexdump(data: bytes) -> str:
    return " ".join(f"{b:02x}" for b in data)


@dataclasses.dataclass
class _InFlight:
    member: Member
    controller: int | None  # None: learning the id of a lone controller
    seq: int
    types: tuple[int, ...]
    future: asyncio.Future[p.Message]


class _Stream(asyncio.Protocol):
    def __init__(self, link: Link) -> None:
        self.link = link
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.heard_at: float | None = None  # when a well-formed frame last came on this connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream transport (TCP, or pyserial-asyncio's); uvloop's do not derive from asyncio.Transport
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else ""
        self.link._connected(self)

    def data_received(self, data: bytes) -> None:
        self.link._bytes(self, data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.link._stream_lost(self, exc)


class Link:
    """See the module docstring. Get one with `Link.attach(member, config)`."""

    def __init__(self, key: tuple[Any, ...], config: SignalConfig) -> None:
        self.key = key
        self.scheme, self.where, self.options = config.transport()
        self.url = config.url
        self.role = config.tcp_role
        self.profile_name = config.profile
        self.profile = p.PROFILES[config.profile]
        self.host_id, self.road_id = config.host_id, config.road_id
        self.connect_timeout_s = config.connect_timeout_s
        self.peers = config.peer_networks()  # listen: who may dial in (empty: anyone)
        # listen: a connection that carried a well-formed frame this recently is live, and a new
        # one does not take its place; half the time after which the device goes OFFLINE, so a
        # controller that reconnects after a silent drop gets in before that
        self.live_s = config.offline_after_s / 2
        self._refused_peers: set[str] = set()
        self.members: list[Member] = []
        self.framer = self.profile.framer(keep_rejects=True)
        self._framer_drops = dict(self.framer.drops)
        self._resyncs = 0
        self._lock = asyncio.Lock()
        self._open_lock = asyncio.Lock()
        self._stream: _Stream | None = None
        self._server: asyncio.base_events.Server | None = None
        self._up: asyncio.Event = asyncio.Event()
        self.lost: asyncio.Future[Exception] | None = None
        self._inflight: _InFlight | None = None
        self._seq = 0

    # -- membership ----------------------------------------------------------------------------------
    @classmethod
    def attach(cls, member: Member, config: SignalConfig) -> Link:
        """The link for `config.url`, shared with the devices already on it. Raises DeviceError when
        `member` cannot share it (another profile, the same controller id, or no id on a shared line)."""
        key = (id(asyncio.get_running_loop()),) + config.link_key()
        link = _LINKS.get(key)
        if link is None:
            link = _LINKS[key] = cls(key, config)
        problem = None
        if config.profile != link.profile_name:
            problem = f"profile {config.profile!r} differs from {link.profile_name!r} of the devices already on it"
        elif config.transport()[2] != link.options:
            problem = "its serial options differ from those of the devices already on it"
        elif config.peer_networks() != link.peers:
            problem = "its peers differ from those of the devices already on it"
        for other in link.members:
            if other is member:
                continue
            if config.controller_id is None or other.controller_id is None:
                problem = "several devices share it, so each needs its controller_id"
            elif other.controller_id == config.controller_id:
                problem = f"controller {config.controller_id} is already device {other.ctx.device_id!r}"
        if problem:
            if not link.members:
                _LINKS.pop(key, None)
            raise DeviceError(f"cannot join {config.url}: {problem}")
        if member not in link.members:
            link.members.append(member)
        return link

    def detach(self, member: Member) -> None:
        if member in self.members:
            self.members.remove(member)
        if self._inflight is not None and self._inflight.member is member and not self._inflight.future.done():
            self._inflight.future.set_exception(DeviceError("device stopped"))
        if not self.members:
            if _LINKS.get(self.key) is self:
                del _LINKS[self.key]
            self._close()

    # -- opening and losing ----------------------------------------------------------------------------
    @property
    def is_up(self) -> bool:
        return self._stream is not None and self.lost is not None and not self.lost.done()

    async def open(self) -> None:
        """Open the port or connection (listen: wait for the controller to dial in), unless it is open.
        Raises DeviceError / DeviceTimeout."""
        async with self._open_lock:
            if self.is_up:
                return
            loop = asyncio.get_running_loop()
            self.lost = loop.create_future()
            self._up.clear()
            try:
                if self.scheme == "serial":
                    import serial_asyncio_fast

                    opening = serial_asyncio_fast.create_serial_connection(
                        loop, lambda: _Stream(self), self.where, **self.options
                    )
                    await asyncio.wait_for(opening, self.connect_timeout_s)
                elif self.role == "connect":
                    host, port = parse_hostport(self.where)
                    await asyncio.wait_for(
                        loop.create_connection(lambda: _Stream(self), host, port), self.connect_timeout_s
                    )
                elif self._server is None:
                    host, port = parse_hostport(self.where)
                    self._server = await loop.create_server(lambda: _Stream(self), host, port)
            except TimeoutError:
                raise DeviceTimeout(
                    f"cannot open {self.where}: no answer within {self.connect_timeout_s:g} s"
                ) from None
            except (OSError, ValueError) as exc:  # serial.SerialException is an OSError
                raise DeviceError(f"cannot open {self.where}: {describe(exc)}") from exc
            except Exception as exc:  # termios.error: the port refused its settings (a parity a pty lacks)
                if type(exc).__name__ != "error":
                    raise
                raise DeviceError(f"cannot set up {self.where}: {describe(exc)} (check baudrate/parity)") from exc
        if self.role == "listen" and self.scheme == "tcp":
            await self._up.wait()  # the controller dials in when it likes; the device is CONNECTING meanwhile

    def bound(self) -> str | None:
        """HOST:PORT a listening link is bound to."""
        if self._server is None or not self._server.sockets:
            return None
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"{host}:{port}"

    def _refuse(self, stream: _Stream, why: str) -> None:
        """listen: close a connection that may not speak for the controller, and count it."""
        if stream.transport is not None:
            stream.transport.abort()
        for m in self.members:
            m.ctx.count("connections_refused")
        key = f"{stream.peer}: {why}"
        if key not in self._refused_peers and len(self._refused_peers) < 256:
            self._refused_peers.add(key)
            log.warning("%s: refused a connection from %s", self.where, key)
        elif log.isEnabledFor(logging.DEBUG):
            log.debug("%s: refused a connection from %s", self.where, key)

    def _connected(self, stream: _Stream) -> None:
        if self.role == "listen" and self.scheme == "tcp":
            if self.peers and not peer_allowed(stream.peer, self.peers):
                self._refuse(stream, "not one of the configured peers")
                return
            current = self._stream
            if current is not None and current is not stream:
                heard = current.heard_at
                if heard is not None and asyncio.get_running_loop().time() - heard < self.live_s:
                    # the controller on the current connection is answering: a newcomer (another
                    # dialler, or a second connection of the same one) never takes its place
                    self._refuse(stream, f"the controller's connection from {current.peer} is live")
                    return
        if self._stream is not None and self._stream is not stream:
            # listen: one controller connection at a time; a newer one replaces a connection that
            # has gone quiet (the controller reconnected and the old socket is a leftover)
            old, self._stream = self._stream, None
            if old.transport is not None:
                old.transport.abort()
        if self.lost is None or self.lost.done():
            self.lost = asyncio.get_running_loop().create_future()
        self._stream = stream
        self.framer = self.profile.framer(keep_rejects=True)
        self._framer_drops = dict(self.framer.drops)
        self._resyncs = 0
        self._up.set()

    def _stream_lost(self, stream: _Stream, exc: Exception | None) -> None:
        if stream is not self._stream:
            return
        self._stream = None
        self._up.clear()
        why = describe(exc) if exc is not None else "closed by the other end (EOF)"
        error = DeviceError(f"link {self.where} lost: {why}")
        if self.lost is not None and not self.lost.done():
            self.lost.set_result(error)
        self._fail_inflight(error)

    def _fail_inflight(self, error: Exception) -> None:
        if self._inflight is not None and not self._inflight.future.done():
            self._inflight.future.set_exception(error)

    def _close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None and stream.transport is not None:
            stream.transport.abort()
        if self._server is not None:
            self._server.close()
            self._server = None
        if self.lost is not None and not self.lost.done():
            self.lost.set_result(DeviceError("link closed"))
        self._fail_inflight(DeviceError("link closed"))

    # -- requests ------------------------------------------------------------------------------------
    async def request(self, member: Member, msg: p.Message, timeout: float) -> tuple[p.Message, float]:
        """Send `msg` (its controller and seq are filled in here) and return the matching reply and
        the seconds it took (from the write, not counting the wait for the line).
        Raises DeviceTimeout when none comes within `timeout` (the request is never sent again),
        DeviceError when the link is down."""
        async with self._lock:
            if not self.is_up:
                raise DeviceError(f"link {self.where} is not open")
            self._seq = self._seq % 255 + 1
            controller = member.controller_id
            msg = dataclasses.replace(
                msg, controller=controller or 0, seq=self._seq, host=self.host_id, road=self.road_id
            )
            future = asyncio.get_running_loop().create_future()
            self._inflight = _InFlight(member, controller, msg.seq, REPLY_TYPES[msg.frame_type], future)
            loop = asyncio.get_running_loop()
            try:
                frame = p.encode(msg, self.profile)
                self._write(frame)
                sent = loop.time()
                self._tap(frame, True)
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
                # comes as the reply arrives, and a device that is being stopped would keep polling
                async with asyncio.timeout(timeout):
                    reply = await future
                return reply, loop.time() - sent
            except TimeoutError:
                raise DeviceTimeout(f"no reply to {msg.kind} {msg.seq} within {timeout:g} s") from None
            finally:
                self._inflight = None

    def send(self, msg: p.Message) -> None:
        """Write a message that expects no reply (a heartbeat reply)."""
        if self.is_up:
            frame = p.encode(msg, self.profile)
            self._write(frame)
            self._tap(frame, True)

    def _write(self, frame: bytes) -> None:
        stream = self._stream
        if stream is None or stream.transport is None:  # the callers checked is_up
            raise DeviceError(f"link {self.where} is not open")
        stream.transport.write(frame)

    # -- incoming bytes ------------------------------------------------------------------------------
    def _blame(self, controller: int | None = None) -> Member | None:
        """The device a bad frame is counted on: the one with that controller id, else the one whose
        request is in flight (its answer is the likeliest), else the first on the link."""
        if controller is not None:
            for m in self.members:
                if m.controller_id == controller:
                    return m
        if self._inflight is not None:
            return self._inflight.member
        return self.members[0] if self.members else None

    def _drop(self, reason: str, data: bytes, controller: int | None = None, n: int = 1) -> None:
        member = self._blame(controller)
        if member is not None:
            member.ctx.drop(reason, n)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s: dropped (%s): %s", self.where, reason, hexdump(data) if data else "-")

    def _tap(self, data: bytes, sent: bool = False) -> None:
        # a recording of any device on the line gets the line's bytes (every controller on it)
        for m in self.members:
            tap = m.ctx.tap
            if tap is not None:
                tap(data, sent)

    def _bytes(self, stream: _Stream, data: bytes) -> None:
        if stream is not self._stream:
            return  # a connection being refused or replaced: its bytes are nobody's
        self._tap(data)
        framer = self.framer
        frames = framer.feed(data)
        drops = framer.drops
        if drops != self._framer_drops:
            rejects: dict[str, bytes] = {}
            for reason, content in framer.take_rejects():
                rejects.setdefault(reason, content)
            for reason, n in drops.items():
                delta = n - self._framer_drops.get(reason, 0)
                if delta > 0:
                    self._drop(reason, rejects.get(reason, b""), n=delta)
            self._framer_drops = dict(drops)
        if framer.resyncs != self._resyncs:
            self._drop("noise", b"", n=framer.resyncs - self._resyncs)
            self._resyncs = framer.resyncs
        for content in frames:
            self._frame(content, stream)

    def _frame(self, content: bytes, stream: _Stream | None = None) -> None:
        try:
            msg = p.parse(content)
        except p.Gbt20999Error as exc:
            self._drop(exc.reason, content)
            return
        if stream is not None:
            stream.heard_at = asyncio.get_running_loop().time()
        inflight = self._inflight
        if (
            inflight is not None
            and msg.seq == inflight.seq
            and msg.frame_type in inflight.types
            and inflight.controller in (None, msg.controller)
            and not inflight.future.done()
        ):
            inflight.future.set_result(msg)
            return
        if msg.frame_type not in p.FROM_CONTROLLER and msg.frame_type != p.FrameType.HEARTBEAT_QUERY:
            reason = "host_frame" if msg.frame_type in _KNOWN_TYPES else "unknown_type"
            self._drop(reason, content, msg.controller)
            return
        member = next((m for m in self.members if m.controller_id == msg.controller), None)
        if member is None and len(self.members) == 1 and self.members[0].controller_id is None:
            member = self.members[0]
        if member is None:
            self._drop("unknown_controller", content)
            return
        if msg.frame_type == p.FrameType.REPORT:
            member.on_report(msg)
        elif msg.frame_type == p.FrameType.HEARTBEAT_QUERY:
            # the controller checks on its centre: answer it
            self.send(
                p.heartbeat(msg.controller, msg.seq, reply=True, host=msg.host, road=msg.road, version=msg.version)
            )
            member.ctx.seen()
        else:
            self._drop("unmatched_reply", content, msg.controller)
