"""What one terminal's messages mean: the JT/T 808 message handling of one connection, sans-io.

A `Session` takes the frames of one connection (unescaped and checksum-verified by the 0x7E framer)
one at a time and returns a `Step`: the publications to make (`fix` for every position, `alarm` for
every alarm bit that changed), the drops and counters, the replies the platform sends back (0x8001
with the message's serial, 0x8100 with the auth code) and whether the connection is to be closed.
It opens nothing and reads no clock: the caller passes `now` for split messages.

Both ends of Tianwang use it, so what live and offline make of the same bytes cannot drift:
- the listener (tianwang.drivers.jt808.driver) runs one Session per TCP connection and applies each
  Step to the connection (publish on the terminal's device, write the replies, close);
- the offline decoder (tianwang.drivers.jt808.decode) runs one Session over a capture and keeps
  the publications and drops.

Rules (JT/T 808-2011/2013/2019 as the listener speaks them):
- one connection is one terminal: the phone of its first header; a frame with another phone is
  dropped (`phone_mismatch`) and answered with result 1;
- a terminal registers (0x0100 -> 0x8100 with the code the `Gate` gives), authenticates (0x0102),
  then heartbeats and reports; before authentication a report, batch, heartbeat or query answer is
  dropped as `unauthenticated` (and answered with result 1, but for the 0x0201) and a 0x0001 is
  ignored;
- 0x0200 and 0x0201 -> `fix` (+ `alarm` for every alarm bit that changed); 0x0704 -> one `fix` per
  position, blind-area batches (type 1) with `stored: true` and without moving the alarm state;
- a resend of a 0x0200 or 0x0704 already taken (same id, serial and body: its ack was lost) is
  acknowledged again but not published twice;
- split messages are joined; every part is acknowledged when it arrives, the joined message is not;
- a frame or body that does not parse is dropped by reason and answered with result 2 when its
  header is readable and the terminal's own; an edition not accepted is answered with result 3;
- every terminal message that has no reply of its own gets a 0x8001 (not 0x0001 and 0x0201, which
  are replies themselves); unsupported ids get result 3;
- before authentication, `max_bad_frames` bad frames or `max_auth_failures` failed
  authentications close the connection; 0x0003 (logout) closes it after its ack.

What a terminal is across its connections (the alarm word last published, the messages recently
taken) is a `TerminalState`, handed over by the `Gate` when the terminal authenticates.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple, Protocol

from tianwang.drivers.jt808 import protocol as p
from tianwang.drivers.sdk import Publication

RECENT = 32  # messages remembered per terminal to recognise a resend of one already published


class TerminalState:
    """What outlives a connection of one terminal: the alarm word last published (alarm changes
    are edges against it) and the messages recently taken (a resend is not published again)."""

    __slots__ = ("alarm", "recent")

    def __init__(self) -> None:
        self.alarm = 0
        self.recent = p.RecentMessages(RECENT)


class Gate:
    """The platform's decisions a Session asks for: who may register, which codes authenticate,
    and the TerminalState of a terminal that did. This base admits every terminal and keeps one
    state, which is what the offline decoder assumes (a capture carries no codes to check against);
    the listener's connections answer from its config instead."""

    def __init__(self) -> None:
        self.terminal = TerminalState()

    def registration(self, phone: str, info: dict) -> tuple[int, str]:
        """(0x8100 result, auth code) for a terminal registering as `phone`; `info` is what its
        0x0100 said (protocol.Registration.info()). A code only with result OK."""
        return p.RegisterResult.OK, ""

    def check_auth(self, phone: str, code: str) -> str:
        """'' when `code` authenticates `phone`, else why not."""
        return ""

    def attach(self, phone: str, info: dict) -> TerminalState:
        """The state of authenticated terminal `phone`; `info` is what it told about itself.
        Raises ValueError when `phone` cannot be admitted after all (the connection is closed)."""
        return self.terminal


class GatePolicy(Protocol):
    """What a Session asks its gate (Gate's methods): the offline Gate, or a listener's connection."""

    def registration(self, phone: str, info: dict[str, Any]) -> tuple[int, str]: ...

    def check_auth(self, phone: str, code: str) -> str: ...

    def attach(self, phone: str, info: dict[str, Any]) -> TerminalState: ...


class Reply(NamedTuple):
    """A message for the platform to send: `header` holds `protocol.build`'s phone_bcd and
    protocol_version (the answered header's edition); the serial is the sender's to number."""

    msg_id: int
    body: bytes
    header: dict


class Step:
    """What handling one frame asks of the caller, applied in this order: `drops` (reasons) and
    `counts` (counter names), `publications`, `answer` ((serial of a 0x8201, fix payload) when a
    0x0201 answered a query), `replies`, then `close` ((reason, counter) or None) and `online`
    (True when the terminal just authenticated). Replies that would follow a close are left out."""

    __slots__ = ("publications", "replies", "drops", "counts", "answer", "close", "online")

    def __init__(self) -> None:
        self.publications: list[Publication] = []
        self.replies: list[Reply] = []
        self.drops: list[str] = []
        self.counts: list[str] = []
        self.answer: tuple[int, dict] | None = None
        self.close: tuple[str, str] | None = None
        self.online = False

    def __repr__(self) -> str:
        return (
            f"Step(publications={self.publications!r}, replies={self.replies!r}, drops={self.drops!r}, "
            f"counts={self.counts!r}, answer={self.answer!r}, close={self.close!r}, online={self.online})"
        )


class Session:
    """The message handling of one connection (see the module docstring).

    `gate`: the policy (a `Gate`); `terminal`: the TerminalState when the terminal counts as
    authenticated from the start (the offline decoder), else None until it authenticates.
    `versions`: header editions accepted; `split_timeout` (s): how long `expire(now)` keeps an
    unfinished split message; `max_bad_frames` / `max_auth_failures`: before authentication, the
    connection is closed at this many (None: never); `peer`: the address, for the terminal's info.
    """

    def __init__(
        self,
        gate: GatePolicy,
        terminal: TerminalState | None = None,
        versions: Iterable[int] = (2013, 2019),
        split_timeout: float = 60.0,
        max_bad_frames: int | None = None,
        max_auth_failures: int | None = None,
        peer: str = "",
    ) -> None:
        self.gate = gate
        self.terminal = terminal
        self.versions = frozenset(versions)
        self.reassembler = p.Reassembler(timeout=split_timeout)
        self.max_bad_frames = max_bad_frames
        self.max_auth_failures = max_auth_failures
        self.peer = peer
        self.phone: str | None = None  # the phone of the first header: the connection's terminal
        self.reply_args: dict[str, Any] | None = None  # phone BCD and version byte of the terminal's last header
        self.registration: dict[str, Any] | None = None  # what its 0x0100 said, for its info at authentication
        self.bad_frames = 0
        self.auth_failures = 0
        self._split_drops: dict[str, int] = {}

    @property
    def authed(self) -> bool:
        return self.terminal is not None

    # -- frames ----------------------------------------------------------------------------------
    def handle(self, frame: bytes, now: float) -> Step:
        """One frame from the terminal -> the Step to apply. `now` (s, any clock) times split messages."""
        step = Step()
        reply = True
        header: p.Header | None = None
        try:
            try:
                header, body = p.parse(frame)
            except p.Jt808Error as exc:
                self._bad(step, exc.reason)
                if exc.header is not None and (self.phone is None or exc.header.phone == self.phone):
                    self._ack(step, exc.header, p.Result.MESSAGE_ERROR)
                return step
            if (2019 if header.version == "2019" else 2013) not in self.versions:
                self._bad(step, "version_refused")
                self._ack(step, header, p.Result.UNSUPPORTED)
                return step
            if self.phone is None:
                self.phone = header.phone
            elif header.phone != self.phone:
                # one connection is one terminal: another phone on it is a confused or hostile peer
                self._bad(step, "phone_mismatch")
                self._ack(step, header, p.Result.FAILURE)
                return step
            self.reply_args = p.reply_header_args(header)
            if header.total:
                # every part is acknowledged when it arrives (a part refused gets result 2 from the
                # except below); the joined message is not acknowledged again
                joined = self.reassembler.add(header, body, now)
                self._count_split_drops(step)
                self._ack(step, header)
                reply = False
                if joined is None:
                    return step
                body = joined
            self._dispatch(header, body, reply, step)
        except p.Jt808Error as exc:
            # a body that does not parse: its header did, so the terminal learns of it
            self._count_split_drops(step)
            self._bad(step, exc.reason)
            answered = exc.header or header  # the header parsed: p.parse's own errors return above
            if reply and answered is not None:
                self._ack(step, answered, p.Result.MESSAGE_ERROR)
        return step

    def rejected(self, contents: Iterable[bytes] = (), bad: int = 0) -> Step:
        """Frames the framer refused: `bad` of them, `contents` those that failed their check
        (their content, as the framer kept it). A frame whose header is the authenticated
        terminal's own gets 0x8001 result 2; a header read from noise would answer a serial the
        terminal never sent."""
        step = Step()
        for content in contents:
            self._answer_reject(content, step)
        if bad:
            self._count_bad(step, bad)
        return step

    def expire(self, now: float) -> Step:
        """Drop unfinished split messages older than `split_timeout` (`split_timeout` drops)."""
        step = Step()
        if len(self.reassembler):
            self.reassembler.expire(now)
            self._count_split_drops(step)
        return step

    def detach(self) -> None:
        """The terminal went on over another connection: this one no longer speaks for it."""
        self.terminal = None

    # -- the parts of a step ---------------------------------------------------------------------
    def _reply(self, step: Step, msg_id: int, body: bytes, header_args: dict) -> None:
        if step.close is None:  # nothing is written on a connection being closed
            step.replies.append(Reply(msg_id, body, header_args))

    def _ack(self, step: Step, header: p.Header, result: int = p.Result.OK) -> None:
        self._reply(step, p.PLATFORM_ACK, p.ack_body(header.serial, header.msg_id, result), p.reply_header_args(header))

    def _close(self, step: Step, reason: str, counter: str = "") -> None:
        if step.close is None:
            step.close = (reason, counter)

    def _bad(self, step: Step, reason: str) -> None:
        step.drops.append(reason)
        self._count_bad(step, 1)

    def _count_bad(self, step: Step, n: int) -> None:
        self.bad_frames += n
        if self.terminal is None and self.max_bad_frames is not None and self.bad_frames >= self.max_bad_frames:
            self._close(step, f"{self.bad_frames} bad frames before authentication", "garbage_closed")

    def _count_split_drops(self, step: Step) -> None:
        for reason, n in self.reassembler.dropped.items():
            seen = self._split_drops.get(reason, 0)
            if n > seen:
                step.drops.extend([reason] * (n - seen))
                self._split_drops[reason] = n

    def _answer_reject(self, content: bytes, step: Step) -> None:
        if self.terminal is None or len(content) < p.HEADER_2013:
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
        self._reply(step, p.PLATFORM_ACK, p.ack_body(serial, msg_id, p.Result.MESSAGE_ERROR), self.reply_args)

    def _location(self, step: Step, loc: p.Location, live: bool) -> dict:
        """`fix` for one position and, for live ones, `alarm` for every bit that changed; returns
        the fix payload. Stored (blind-area) positions are history: they leave the alarm state."""
        payload = p.fix_payload(loc, stored=not live)
        t = loc.time_ns or 0
        step.publications.append(Publication("fix", payload, t))
        step.counts.append("fixes")
        term = self.terminal
        if live and term is not None and loc.alarm != term.alarm:
            for change in p.alarm_changes(term.alarm, loc.alarm):
                step.publications.append(Publication("alarm", change, t))
            term.alarm = loc.alarm
        return payload

    def _unauthenticated(self, step: Step, header: p.Header, reply: bool) -> None:
        self._bad(step, "unauthenticated")
        if reply:
            self._ack(step, header, p.Result.FAILURE)

    # -- messages --------------------------------------------------------------------------------
    def _dispatch(self, header: p.Header, body: bytes, reply: bool, step: Step) -> None:
        msg_id = header.msg_id
        term = self.terminal
        if msg_id == p.LOCATION:
            if term is None:
                return self._unauthenticated(step, header, reply)
            loc = p.parse_location(body)
            if term.recent.seen_before(msg_id, header.serial, body):
                step.counts.append("duplicates")
            else:
                self._location(step, loc, live=True)
            if reply:
                self._ack(step, header)
        elif msg_id == p.HEARTBEAT:
            if term is None:
                return self._unauthenticated(step, header, reply)
            step.counts.append("heartbeats")
            if reply:
                self._ack(step, header)
        elif msg_id == p.BATCH:
            if term is None:
                return self._unauthenticated(step, header, reply)
            kind, locations = p.parse_batch(body)
            if term.recent.seen_before(msg_id, header.serial, body):
                step.counts.append("duplicates")
            else:
                live = kind != p.BATCH_BLIND_AREA
                for loc in locations:
                    self._location(step, loc, live=live)
                step.counts.append("batches")
            if reply:
                self._ack(step, header)
        elif msg_id == p.LOCATION_REPLY:
            if term is None:
                return self._unauthenticated(step, header, False)
            serial, loc = p.parse_location_reply(body)
            step.answer = (serial, self._location(step, loc, live=True))
        elif msg_id == p.TERMINAL_ACK:
            if term is not None:
                p.parse_ack(body)
                step.counts.append("terminal_acks")
        elif msg_id == p.REGISTER:
            self._register(step, header, body)
        elif msg_id == p.AUTH:
            self._authenticate(step, header, body, reply)
        elif msg_id == p.LOGOUT:
            if reply:
                self._ack(step, header)
            if term is not None:
                self._close(step, "logged out (0x0003)")
            else:
                self._close(step, "deregistered before authentication")
        else:
            step.drops.append("unsupported")
            if reply:
                self._ack(step, header, p.Result.UNSUPPORTED)

    def _register(self, step: Step, header: p.Header, body: bytes) -> None:
        reg = p.parse_register(body, header.version)
        result, code = self.gate.registration(header.phone, reg.info())
        self._reply(
            step, p.REGISTER_REPLY, p.register_reply_body(header.serial, result, code), p.reply_header_args(header)
        )
        if result == p.RegisterResult.OK:
            self.registration = reg.info()

    def _authenticate(self, step: Step, header: p.Header, body: bytes, reply: bool) -> None:
        auth = p.parse_auth(body, header.version)
        phone = header.phone
        if self.gate.check_auth(phone, auth.code):
            self.auth_failures += 1
            if reply:
                self._ack(step, header, p.Result.FAILURE)
            if self.max_auth_failures is not None and self.auth_failures >= self.max_auth_failures:
                self._close(step, f"{self.auth_failures} failed authentications")
            return
        info: dict[str, Any] = {"version": header.version, "address": self.peer}
        if header.protocol_version is not None:
            info["protocol_version"] = header.protocol_version
        if auth.imei:
            info["imei"] = auth.imei
        if auth.software_version:
            info["software_version"] = auth.software_version
        if self.registration:
            info.update({k: v for k, v in self.registration.items() if v not in ("", None)})
        try:
            term = self.gate.attach(phone, info)
        except ValueError as exc:
            if reply:
                self._ack(step, header, p.Result.FAILURE)
            self._close(step, str(exc))
            return
        self.terminal = term
        step.online = True
        if reply:
            self._ack(step, header)
