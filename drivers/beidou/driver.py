"""The `beidou` driver: one BDS receiver (optionally with an RDSS short-message card) on a serial line
or behind a TCP serial server.

The link is an asyncio Protocol on either transport: pyserial-asyncio-fast for `serial://` (the
port is opened in an executor thread, never on the loop; its reads are one `os.read`,
serial_line.py) or a plain TCP connection for `tcp://`.
Every chunk goes to the sans-io ReceiverProtocol (tianwang.drivers.beidou.receiver) with the wall clock, and
what it returns is published; a timer calls its `tick()` so STALE and SILENT come out even
when no byte arrives. The timer fires when the receiver says something could be due
(`tick_due_ns`), at most every quarter epoch period: a receiver whose epochs close on their last
sentence needs no tick between them.

Health: CONNECTING until the first bytes, then ONLINE while the receiver has a fix, DEGRADED (with
the reason) while it is alive but has no usable fix (NO_FIX, DEGRADED, STALE), has gone SILENT, or
reports an antenna alarm. A hang-up (EIO on a pty or USB adapter), a TCP reset or EOF, or no byte at
all for `reconnect_after_silent_s`, raises DeviceError and the supervisor reconnects with backoff.

RDSS commands go out on the same line and wait for the terminal's own answer (never retried):
`send_message` -> `$CCTXA` (protocol 2.1) or `$CCTCQ` (BDS-3) -> `$BDFKI`; `card_info` -> `$CCICA`
/ `$CCICR` -> `$BDICI` / `$BDICP`. One RDSS command is in flight per device at a time. On each new
connection the card is queried once, unasked, so ListDevices shows its id and service interval.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

from tianwang.drivers.beidou import nmea_writer as w
from tianwang.drivers.beidou.config import BeidouConfig
from tianwang.drivers.beidou.receiver import BeamStatus, CardInfo, RdssFeedback, ReceiverProtocol
from tianwang.drivers.sdk import (
    CommandError,
    DeviceError,
    DeviceTimeout,
    Driver,
    FrameError,
    Health,
    describe,
    parse_hostport,
)

if TYPE_CHECKING:
    from tianwang.drivers.sdk import DeviceContext, Publication

log = logging.getLogger("tianwang.driver.beidou")

# RDSS message capacity by the card's communication level (bits of content per message). A longer
# message is refused by every card, so it is refused here before it goes out.
MESSAGE_BITS_BY_LEVEL = {1: 110, 2: 408, 3: 628, 4: 848}
MAX_MESSAGE_BITS = max(MESSAGE_BITS_BY_LEVEL.values())
SEND_ARGS = frozenset(("dest", "text", "hex", "encoding"))
_HEX = re.compile(r"^(?:[0-9A-Fa-f]{2})+$")
_DEST = re.compile(r"^[0-9]{1,12}$")
# Receivers name their firmware in informational TXT lines (text id 02): CASIC `SW=...`, u-blox
# `FWVER=...` / `ROM CORE ...`, Unicore and others `FW=...` / `VER=...`.
_TXT_LINE = re.compile(rb"\$[A-Z]{2}TXT,[^\r\n$]{0,80}\*[0-9A-Fa-f]{2}")
_FIRMWARE = re.compile(r"^(?:SW|FWVER|FW|VER|VERSION)\s*[=:]\s*(.+)$|^(ROM CORE .+)$", re.IGNORECASE)
HEALTHY = ("FIX", None)
# the device counters of ReceiverProtocol.epoch_counts, in its order
_EPOCH_COUNTERS = (
    "epochs_closed_end",
    "epochs_closed_next",
    "epochs_closed_flush",
    "fragments_dropped",
    "epochs_superseded",
)


class _Line(asyncio.Protocol):
    """The receiver's line, serial or TCP: bytes go to the driver as they come."""

    def __init__(self, driver: BeidouDriver) -> None:
        self.driver = driver
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream transport (TCP, or pyserial-asyncio's); uvloop's do not derive from asyncio.Transport
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        tap = self.driver.ctx.tap
        if tap is not None:
            tap(data)
        self.driver._on_bytes(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(exc)
        self.driver._on_lost(self, exc)

    def write(self, data: bytes) -> None:
        t = self.transport
        if t is None or t.is_closing():
            raise CommandError("OFFLINE", "the line to the receiver is not open")
        t.write(data)
        tap = self.driver.ctx.tap
        if tap is not None:
            tap(data, sent=True)


class BeidouDriver(Driver[BeidouConfig]):
    """One receiver. See the module docstring."""

    def __init__(self, config: BeidouConfig, ctx: DeviceContext) -> None:
        super().__init__(config, ctx)
        self.receiver = ReceiverProtocol(ctx.device_id, on_rdss=self._on_rdss, **config.receiver.options())
        period = self.receiver.epoch_period_s
        self.tick_s = min(0.1, period / 4)
        self._line: _Line | None = None
        self._lost: asyncio.Future[Exception] | None = None
        self._got_bytes = False
        self._last_rx = 0.0  # loop time of the last chunk
        self._ticker: asyncio.TimerHandle | None = None
        self._tick_at = 0.0  # loop time the ticker fires
        self._drops_seen = dict.fromkeys(self.receiver.drops, 0)
        self._dropped_bytes_seen = 0
        self._resyncs_seen = 0
        self._epoch_counts_seen = (0,) * len(_EPOCH_COUNTERS)
        ctx.count_on_read(self._count_epochs)
        self._alarms: dict[str, bool] = {}
        self._state_reason = ""
        self._waiter: tuple[Callable[[object], bool], asyncio.Future[object]] | None = (
            None  # (matches(event) -> bool, future) of the RDSS command in flight
        )
        self._rdss_busy = False
        self._firmware: str | None = None
        self._beams_locked: bool | None = None

    # -- lifecycle ---------------------------------------------------------------------------------
    async def run(self) -> None:
        """Open the line and read until it fails. Raises DeviceError (DeviceTimeout when the receiver
        stays silent too long)."""
        cfg, ctx = self.config, self.ctx
        loop = asyncio.get_running_loop()
        scheme, where, options = cfg.transport()
        self._got_bytes = False
        self._lost = lost = loop.create_future()
        # the line is current before it opens: a reset right after the connect is then not missed
        self._line = line = _Line(self)
        opening: Awaitable[Any]
        try:
            if scheme == "serial":
                from tianwang.drivers.beidou.serial_line import open_serial

                opening = open_serial(loop, line, where, options)
            else:
                host, port = parse_hostport(where)
                opening = loop.create_connection(lambda: line, host, port)
            await asyncio.wait_for(opening, cfg.connect_timeout_s)
        except TimeoutError:
            self._line = None
            raise DeviceTimeout(f"cannot open {where}: no answer within {cfg.connect_timeout_s:g} s") from None
        except (OSError, ValueError) as exc:  # serial.SerialException is an OSError
            self._line = None
            raise DeviceError(f"cannot open {where}: {describe(exc)}") from exc
        self._last_rx = loop.time()
        ctx.set_info(transport=scheme, port=where, rdss=cfg.rdss.protocol if cfg.rdss else "none")
        if not self._got_bytes:
            # bytes may already have arrived (and set the health) in the loop turn that connected
            ctx.set_health(Health.CONNECTING, f"{where} open, waiting for data")
        self._arm_tick(loop, time.time_ns())
        try:
            failure = await lost
        finally:
            if self._ticker is not None:
                self._ticker.cancel()
                self._ticker = None
            await self._drop_line()
        raise failure

    async def close(self) -> None:
        await self._drop_line()

    async def _drop_line(self) -> None:
        line, self._line = self._line, None
        if line is None:
            return
        if line.transport is not None and not line.transport.is_closing():
            # abort: nothing queued for a dead receiver is worth waiting for
            line.transport.abort()
        if line.transport is not None:
            try:
                # the serial transport closes the port in an executor: wait, so a reconnect finds it free
                await asyncio.wait_for(asyncio.shield(line.closed), 1.0)
            except TimeoutError:
                log.warning("%s: the port did not close within 1 s", self.ctx.device_id)
        self._publish(self.receiver.finish(time.time_ns()))
        self._fail_waiter(CommandError("OFFLINE", "the line to the receiver closed before it answered"))

    def _on_lost(self, line: _Line, exc: Exception | None) -> None:
        if line is not self._line:
            return
        lost = self._lost
        if lost is not None and not lost.done():
            why = describe(exc) if exc is not None else "closed by the receiver (EOF)"
            lost.set_result(DeviceError(f"link lost: {why}"))

    def _arm_tick(self, loop: asyncio.AbstractEventLoop, now_ns: int) -> None:
        # a timer callback, not a task sleeping in a loop (a future, a timer and a task step per
        # tick), and only when something can be due: at 100 Hz a quarter-period tick alone woke
        # the loop 400 times a second per receiver
        delay = max(self.tick_s, (self.receiver.tick_due_ns() - now_ns) / 1e9)
        limit = self.config.reconnect_after_silent_s
        if limit:
            delay = min(delay, max(self.tick_s, self._last_rx + limit - loop.time()))
        self._tick_at = loop.time() + delay
        self._ticker = loop.call_later(delay, self._on_tick)

    def _on_tick(self) -> None:
        loop = asyncio.get_running_loop()
        self._ticker = None
        lost = self._lost
        if lost is None or lost.done():
            return
        now_ns = time.time_ns()
        try:
            pubs = self.receiver.tick(now_ns)
            if pubs and self._publish(pubs):
                self._judge()
        except Exception as exc:  # a bug in the receiver's timers ends the connection, not the ticks alone
            lost.set_result(DeviceError(f"receiver timer failed: {describe(exc)}"))
            raise
        limit = self.config.reconnect_after_silent_s
        if limit and loop.time() - self._last_rx >= limit:
            lost.set_result(DeviceTimeout(f"no bytes for {limit:g} s: reconnecting"))
            return
        self._arm_tick(loop, now_ns)

    # -- the data path -----------------------------------------------------------------------------
    def _on_bytes(self, data: bytes) -> None:
        rx = self.receiver
        loop = asyncio.get_running_loop()
        self._last_rx = now = loop.time()
        pubs = rx.feed(data, time.time_ns())
        if self._tick_at - now > self.tick_s and self._ticker is not None and rx.epoch_open:
            # the ticker sleeps towards STALE or SILENT, but this epoch may need the quiet-gap close
            self._ticker.cancel()
            self._arm_tick(loop, time.time_ns())
        news = self._publish(pubs) if pubs else False
        if not pubs:
            self.ctx.seen()
        if rx.dropped_bytes != self._dropped_bytes_seen:
            self._count_drops()
        if self._firmware is None and b"TXT," in data:
            self._look_for_firmware(data)
        if not self._got_bytes:
            self._got_bytes = True
            self._judge()
            self._query_card()
        elif news:
            self._judge()

    def _publish(self, pubs: list[Publication]) -> bool:
        """Publish; True when a fix state or an alarm changed (health may follow)."""
        publish = self.ctx.publish
        news = False
        for p in pubs:
            channel = p.channel
            if channel == "state":
                self._state_reason = p.payload.get("reason") or ""
                news = True
            elif channel == "alarm":
                self._alarms[p.payload["kind"]] = bool(p.payload["active"])
                news = True
            publish(channel, p.payload, p.device_time_ns)
        return news

    def _count_epochs(self) -> None:
        # how epochs were closed (on their last sentence, by the next epoch, by the quiet-gap timer)
        # and the fragments dropped: device counters epochs_closed_* and fragments_dropped, brought
        # up to date from the receiver's totals when the counters are read (ctx.count_on_read), not
        # per epoch: that was 2 us of every reading's 40 at 10,000 readings/s
        counts = self.receiver.epoch_counts
        seen = self._epoch_counts_seen
        if counts != seen:
            count = self.ctx.count
            for name, n, was in zip(_EPOCH_COUNTERS, counts, seen, strict=True):
                if n != was:
                    count(name, n - was)
            self._epoch_counts_seen = counts

    def _count_drops(self) -> None:
        rx, ctx = self.receiver, self.ctx
        for reason, n in rx.drops.items():
            seen = self._drops_seen.get(reason, 0)
            if n != seen:
                ctx.drop(reason, n - seen)
                self._drops_seen[reason] = n
        # bytes between sentences that belong to nothing (line noise, a reset mid-line)
        resyncs = rx.resyncs
        if resyncs != self._resyncs_seen:
            ctx.drop("noise", resyncs - self._resyncs_seen)
            self._resyncs_seen = resyncs
        ctx.count("dropped_bytes", rx.dropped_bytes - self._dropped_bytes_seen)
        self._dropped_bytes_seen = rx.dropped_bytes

    def _judge(self) -> None:
        """Health from the receiver's fix state and alarms."""
        if not self._got_bytes:
            return
        state = self.receiver.state
        alarms = sorted(k for k, active in self._alarms.items() if active)
        if state == "SILENT":
            self.ctx.set_health(Health.DEGRADED, f"SILENT: {self._state_reason}")
        elif alarms or state not in HEALTHY:
            parts = [a.replace("_", " ") for a in alarms]
            if state not in HEALTHY:
                parts.append(f"{state}: {self._state_reason}")
            self.ctx.set_health(Health.DEGRADED, "; ".join(parts))
        else:
            self.ctx.set_health(Health.ONLINE, self._state_reason or "receiving")

    def _look_for_firmware(self, data: bytes) -> None:
        # ReceiverProtocol publishes only the alarm-worthy TXT lines; the firmware banner is read here,
        # from whole lines inside the chunk (a banner split across chunks is caught next time)
        from tianwang.drivers.sdk import parse_nmea_sentence

        for m in _TXT_LINE.finditer(data):
            try:
                txt = parse_nmea_sentence(m.group(0))
            except FrameError:
                continue
            found = _FIRMWARE.match(txt.text.strip())
            if found:
                self._firmware = (found.group(1) or found.group(2)).strip()
                self.ctx.set_info(firmware=self._firmware)
                return

    # -- RDSS ----------------------------------------------------------------------------------------
    def _on_rdss(self, event: object) -> None:
        ctx = self.ctx
        if type(event) is not BeamStatus and log.isEnabledFor(logging.DEBUG):
            log.debug("%s: RDSS <- %r", ctx.device_id, event)
        if type(event) is CardInfo:
            ctx.set_info(card_id=event.card_id, card_interval_s=event.interval_s, card_level=event.level)
        elif type(event) is BeamStatus:
            if event.locked != self._beams_locked:
                self._beams_locked = event.locked
                ctx.set_info(rdss_beams_locked=event.locked)
        elif type(event) is RdssFeedback:
            ctx.count("rdss_feedback")
        waiter = self._waiter
        if waiter is not None and not waiter[1].done() and waiter[0](event):
            waiter[1].set_result(event)

    def _fail_waiter(self, exc: Exception) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter[1].done():
            waiter[1].set_exception(exc)

    def _query_card(self) -> None:
        rdss = self.config.rdss
        if rdss is None or not rdss.query_card_on_connect or self._line is None:
            return
        # unasked: the answer updates ListDevices info through _on_rdss; nobody waits for it
        try:
            self._line.write(w.card_query_21() if rdss.protocol == "2.1" else w.card_query_bds3())
        except CommandError:
            pass

    async def _exchange(self, sentence: bytes, matches: Callable[[Any], bool], timeout: float, what: str) -> Any:
        """Write one RDSS command and wait for the terminal's answer (the first event `matches`).
        Raises CommandError UNSUPPORTED / OFFLINE / BUSY / TIMEOUT."""
        rdss = self.config.rdss
        if rdss is None:
            raise CommandError("UNSUPPORTED", f"{self.ctx.device_id} has no RDSS card configured (rdss: null)")
        line = self._line
        if line is None:
            raise CommandError("OFFLINE", f"{self.ctx.device_id} is not connected")
        if self._rdss_busy:
            raise CommandError(
                "BUSY", "an RDSS command is already waiting for the terminal's answer; the terminal takes one at a time"
            )
        # answer before the supervisor's own deadline, so the reply says what was waited for
        wait = min(rdss.command_timeout_s, timeout - min(0.1, timeout * 0.1))
        future = asyncio.get_running_loop().create_future()
        self._rdss_busy = True
        self._waiter = (matches, future)
        try:
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%s: RDSS -> %s", self.ctx.device_id, sentence.decode("ascii", "replace").strip())
            line.write(sentence)
            try:
                return await asyncio.wait_for(future, max(wait, 0.001))
            except TimeoutError:
                self.ctx.count("rdss_timeouts")
                other = "bds3" if rdss.protocol == "2.1" else "2.1"
                raise CommandError(
                    "TIMEOUT",
                    f"no {what} from the terminal within {wait:g} s; this device speaks RDSS protocol "
                    f"{rdss.protocol!r} (rdss.protocol): a terminal that speaks {other!r} ignores these "
                    "commands, so check the terminal's protocol if it never answers",
                ) from None
        finally:
            self._waiter = None
            self._rdss_busy = False

    async def command(self, action: str, args: dict, timeout: float) -> dict:
        """send_message / card_info. Raises CommandError INVALID, UNSUPPORTED, OFFLINE, BUSY, REFUSED
        (the terminal's $BDFKI said no: result carries code, reason and wait_s), TIMEOUT."""
        if action == "send_message":
            return await self._send_message(args, timeout)
        if action == "card_info":
            if args:
                raise CommandError("INVALID", f"card_info takes no arguments, got {', '.join(sorted(args))}")
            return await self._card_info(timeout)
        raise CommandError("UNSUPPORTED", f"beidou devices take send_message and card_info, not {action!r}")

    def _message_sentence(self, args: dict) -> tuple[bytes, dict]:
        rdss = self.config.rdss
        if rdss is None:
            raise CommandError("UNSUPPORTED", f"{self.ctx.device_id} has no RDSS card configured (rdss: null)")
        unknown = set(args) - SEND_ARGS
        if unknown:
            raise CommandError(
                "INVALID", f"send_message takes {', '.join(sorted(SEND_ARGS))}; not {', '.join(sorted(unknown))}"
            )
        dest = args.get("dest")
        if isinstance(dest, int) and not isinstance(dest, bool):
            dest = str(dest)
        if not isinstance(dest, str) or not _DEST.match(dest.strip()):
            raise CommandError("INVALID", "dest: the recipient's card id, in digits")
        dest = dest.strip()
        if rdss.protocol == "2.1" and len(dest) != 7:
            raise CommandError("INVALID", f"dest: protocol 2.1 card ids are 7 digits, not {dest!r}")
        encoding = args.get("encoding", rdss.encoding)
        if encoding not in w.ENCODINGS:
            raise CommandError("INVALID", f"encoding: one of {', '.join(w.ENCODINGS)}, not {encoding!r}")
        text, hexed = args.get("text"), args.get("hex")
        if (text is None) == (hexed is None):
            raise CommandError("INVALID", "give the message as text or as hex (one of them)")
        if text is not None:
            if not isinstance(text, str) or not text:
                raise CommandError("INVALID", "text: a non-empty string")
            if encoding == "code":
                raise CommandError("INVALID", "code messages are bytes: give them as hex")
            try:
                content = w.encode_content(text, None, encoding)
            except ValueError as exc:
                raise CommandError("INVALID", f"text: {exc}") from None
        else:
            if not isinstance(hexed, str) or not _HEX.match(hexed):
                raise CommandError("INVALID", "hex: an even number of hex digits")
            content = bytes.fromhex(hexed)
        card = self.receiver.card
        limit = MESSAGE_BITS_BY_LEVEL.get(card.level, MAX_MESSAGE_BITS) if card is not None else MAX_MESSAGE_BITS
        if len(content) * 8 > limit:
            whose = f"a level {card.level} card" if card is not None else "any card"
            raise CommandError("INVALID", f"the message is {len(content) * 8} bits; {whose} sends at most {limit}")
        if rdss.protocol == "2.1":
            sentence = w.send_21(dest, content, encoding)
        else:
            sentence = w.send_bds3(dest, content, encoding, rdss.freq_point, 1 if rdss.receipt else 0)
        info = {"dest": dest, "protocol": rdss.protocol, "encoding": encoding, "bytes": len(content)}
        return sentence, info

    async def _send_message(self, args: dict, timeout: float) -> dict:
        sentence, info = self._message_sentence(args)
        command = "TXA" if info["protocol"] == "2.1" else "TCQ"
        feedback = await self._exchange(
            sentence, lambda e: type(e) is RdssFeedback and e.command == command, timeout, f"$BDFKI for {command}"
        )
        result = dict(info, code=feedback.code, reason=feedback.reason, wait_s=feedback.wait_s)
        if feedback.ok:
            self.ctx.count("rdss_sent")
            return dict(result, status="sent")
        self.ctx.count("rdss_refused")
        result["status"] = "refused"
        raise CommandError("REFUSED", f"the terminal refused the send: {feedback.reason}", result=result)

    async def _card_info(self, timeout: float) -> dict:
        rdss = self.config.rdss
        protocol = rdss.protocol if rdss is not None else "2.1"
        query, command = (w.card_query_21(), "ICA") if protocol == "2.1" else (w.card_query_bds3(), "ICR")
        form = protocol

        def matches(e: Any) -> bool:
            return (type(e) is CardInfo and e.form == form) or (type(e) is RdssFeedback and e.command == command)

        event = await self._exchange(query, matches, timeout, "card information")
        if type(event) is RdssFeedback:
            raise CommandError(
                "REFUSED",
                f"the terminal did not read its card: {event.reason}",
                result={"code": event.code, "reason": event.reason, "status": "refused"},
            )
        beams = self.receiver.beams
        return {
            "card_id": event.card_id,
            "serial": event.serial,
            "broadcast_id": event.broadcast_id,
            "user_class": event.user_class,
            "interval_s": event.interval_s,
            "level": event.level,
            "max_message_bits": MESSAGE_BITS_BY_LEVEL.get(event.level),
            "encrypted": event.encrypted,
            "subordinates": event.subordinates,
            "protocol": event.form,
            "beams_locked": beams.locked if beams is not None else None,
        }
