"""The BeiDou receiver protocol, sans I/O: bytes in, publications out. It never opens anything; the
driver hands it what the port delivered and publishes what comes back, and `tianwang decode` runs
the same code over a capture.

    proto = ReceiverProtocol("bd-0042", hdop_limit=4.0)
    pubs = proto.feed(chunk, now_ns)      # -> [Publication(channel, payload, device_time_ns)]
    pubs += proto.tick(now_ns)            # timers: STALE, SILENT, closing a finished epoch
    pubs += proto.finish(now_ns)          # end of stream

Channels and payloads (every key is listed in docs/contract.md):
- `fix`: time_ns lat lon alt_m speed_mps course_deg quality mode hdop pdop vdop
  sats_used{BDS,GPS,GLO,GAL,QZSS} sats_view{...} source ("nmea"). One per epoch, no-fix epochs
  included (quality 0, mode 1). Satellites used are counted per constellation from the GSA System
  IDs (NMEA 4.10), else the GSA talker (BD/GB, GP, ...), else the satellite number ranges. Positions
  are rounded to 1e-9 degree, speed to 1e-4 m/s; None where no sentence said.
- `state`: state previous reason, on transitions only. FIX; DEGRADED (HDOP over `hdop_limit` or
  fewer than `min_sats` used); NO_FIX (RMC status V, GGA quality 0, every GSA mode 1, or no
  position); STALE (bytes arrive but no epoch for `stale_periods` x `epoch_period_s`); SILENT (no
  bytes at all for `silent_s`). `previous` is None for the first state.
- `sky`: satellites [{system svid elev az snr used}], keyed by (system, svid), every
  `sky_decimation`-th epoch that had GSV sentences (0 = never).
- `alarm`: kind (antenna_open, antenna_short) active raw, from receiver TXT sentences
  (`ANTENNA OPEN`, `ANTSTATUS=SHORT`, ...), on changes only; an OK text clears active alarms.
- `message`: RDSS short messages received (`$BDTXR` protocol 2.1, `$BDTCI` BDS-3): sender kind
  encoding text raw (+ send_time, protocol; BDS-3 adds recipient, freq_point). `raw` is the content
  bytes (hex digits decoded); `text` is GB2312 decoded (GB18030, its superset, with replacement
  characters for bad bytes); encoding "code" gives the hex digits as text.

Clocks: `now_ns` is the caller's clock (the driver passes time.time_ns()); timers compare it with
the times bytes and epochs arrived. With `now_ns=None` (offline decoding) the device's own epoch
times are the clock, so output is deterministic: a gap between epochs longer than the stale time
publishes STALE (stamped when it would have happened live) before the next epoch; SILENT cannot be
seen offline. Publications carry the epoch's device time; timer transitions in live use carry 0;
alarms, messages and RDSS events carry the time of the last completed epoch (0 before the first).

RDSS status for the driver (feedback, card information, beam status) is not published. Each such
sentence becomes an event, in stream order:
    RdssFeedback(command, ok, code, reason, wait_s, form, device_time_ns)    from $BDFKI
    CardInfo(card_id, serial, broadcast_id, user_class, interval_s, level, encrypted, subordinates,
             form, device_time_ns)                                          from $BDICI / $BDICP
    BeamStatus(rdss2, s2c, locked, device_time_ns)                          from $BDPWI
Events go to `on_rdss(event)` if given (called synchronously inside feed/finish) and are queued in
`rdss_events` (a bounded deque; `take_rdss_events()` returns and clears it). The latest CardInfo
and BeamStatus are also kept as `card` and `beams`. A send is matched to its reply by command:
after writing `$CCTXA` (nmea_writer.send_21) wait for an RdssFeedback with command "TXA"; after
`$CCTCQ` (send_bds3), command "TCQ". `ok` False means refused; `code` says why
(interval_not_reached, suppressed, silent, power_unlocked, no_card, no_permission, refused) and
`wait_s` how long the card asks to wait. A card query (`$CCICA`, card_query_21) is answered by a
CardInfo with form "2.1"; `$CCICR` (card_query_bds3) by form "bds3".

Options (keys of the beidou device config): epoch_period_s (1.0), hdop_limit (5.0), min_sats (4),
stale_periods (3.0), silent_s (2.0), sky_decimation (5), require_checksum (False), protocol ("auto").

Binary beside NMEA (`protocol`): CASIC (`BA CE`, ZKW AT6558 modules) and UBX (`B5 62`) frames are
found and checksum-verified by the hot path's NmeaDecoder in the same byte stream, and decoded into
epochs by the hot path's BinaryAssembler (NAV-PV/TIMEUTC/DOP/STATUS/*INFO, NAV-PVT/SAT/TIMEUTC/DOP/
EOE; see tianwang.drivers.beidou.binary). One fix per epoch is published whatever the receiver
sends (the hot path's FixPublisher chooses and publishes): with "auto", binary epochs win
while the receiver sends them (the NMEA epochs are counted as `superseded`), NMEA epochs are
published before the first binary epoch and again once three NMEA epochs came without one; an epoch
whose time is not after the last published fix is never published twice. "casic" or "ubx" publish
only that protocol's epochs; "nmea" drops binary frames (drop reason `binary`) as before. The fix's
`source` says which: "nmea", "casic" or "ubx".
Counters: frames, drops (reason -> count), dropped_bytes, resyncs, epochs, fragments (pieces of an
epoch with no time and no position, never published), closed_by ({"end", "next", "flush"} -> count:
how epochs were closed).

When an epoch is published: once the receiver's cycle is learned (the sentence it sends last, seen
before two epoch boundaries), an epoch is closed and published by the feed() that brings its last
sentence ("end"). Before that, or when the cycle is irregular, it is closed by the first sentence of
the next epoch ("next") or by tick() after half an epoch period without bytes ("flush", the
fallback quiet-gap timer). The driver shows the three counts as the device counters
epochs_closed_end, epochs_closed_next and epochs_closed_flush.
"""

from __future__ import annotations

import collections
import dataclasses
import re
from collections.abc import Callable
from typing import Any

from tianwang.drivers.sdk import Publication

PROTOCOLS = ("auto", "nmea", "casic", "ubx")

KINDS = {1: "normal", 2: "express", 3: "broadcast", 4: "query", 5: "query_reply"}
ENCODINGS = {0: "gb2312", 1: "code", 2: "mixed"}
# BDS-3 `$BDFKI` reasons
FEEDBACK_CODES = {
    1: "interval_not_reached",
    2: "suppressed",
    3: "silent",
    4: "power_unlocked",
    5: "no_card",
    6: "no_permission",
}
FEEDBACK_TEXT = {
    "interval_not_reached": "the card's service interval has not passed",
    "suppressed": "transmission suppressed",
    "silent": "the terminal is in radio silence",
    "power_unlocked": "no beam locked",
    "no_card": "no card",
    "no_permission": "no permission",
    "refused": "refused by the terminal",
}
_ANTENNA = re.compile(r"ANT(?:ENNA)?[\s_]*(?:STATUS)?\s*[=:]?\s*(OPEN|SHORT|OK|GOOD|NORMAL)")
_HEX = re.compile(rb"(?:[0-9A-Fa-f]{2})*")
_EVENTS_KEPT = 256


@dataclasses.dataclass(frozen=True, slots=True)
class RdssFeedback:
    """A terminal's `$BDFKI` reply to a command. code: "ok" or why it refused."""

    command: str
    ok: bool
    code: str
    reason: str
    wait_s: int | None
    form: str
    device_time_ns: int


@dataclasses.dataclass(frozen=True, slots=True)
class CardInfo:
    """The RDSS card (`$BDICI` protocol 2.1, `$BDICP` BDS-3): interval_s limits how often it may send."""

    card_id: str
    serial: str
    broadcast_id: str
    user_class: int
    interval_s: int
    level: int
    encrypted: bool
    subordinates: int
    form: str
    device_time_ns: int


@dataclasses.dataclass(frozen=True, slots=True)
class BeamStatus:
    """`$BDPWI` beam powers ((beam, power), ...); locked when any beam has power."""

    rdss2: tuple
    s2c: tuple
    locked: bool
    device_time_ns: int


def decode_content(content: bytes, encoding: int) -> tuple[bytes, str]:
    """(raw bytes, text) of an RDSS message body as it came in the sentence: hex digits are decoded,
    anything else (some terminals send GB2312 bytes inline) is taken as it is."""
    raw = bytes.fromhex(content.decode("ascii")) if _HEX.fullmatch(content) else bytes(content)
    if encoding == 1:
        return raw, raw.hex().upper()
    return raw, raw.decode("gb18030", errors="replace")


def feedback_of(fki: Any) -> tuple[bool, str, int | None]:
    """(ok, code, wait_s) of a typed FKI message, in either form."""
    wait_s = fki.wait_s if fki.wait_s >= 0 else None
    if fki.executed:
        return True, "ok", wait_s
    if fki.form == "bds3":
        return False, FEEDBACK_CODES.get(fki.reason, "refused"), wait_s
    if fki.interval_ok == 0:
        return False, "interval_not_reached", wait_s
    if fki.suppression in (1, 3):
        return False, "suppressed", wait_s
    if fki.suppression == 2:
        return False, "silent", wait_s
    return False, "refused", wait_s


class ReceiverProtocol:
    """One receiver's NMEA + RDSS stream -> publications. See the module docstring.

    Raises ValueError for a bad option and TypeError for an unknown one; feed() raises TypeError
    unless given bytes-like data.
    """

    def __init__(
        self,
        device_id: str,
        *,
        epoch_period_s: float = 1.0,
        hdop_limit: float = 5.0,
        min_sats: int = 4,
        stale_periods: float = 3.0,
        silent_s: float = 2.0,
        sky_decimation: int = 5,
        require_checksum: bool = False,
        protocol: str = "auto",
        on_rdss: Callable[[object], None] | None = None,
        implementation: Any = None,
    ) -> None:  # framing, or a namespace of framing.implementations()
        if not epoch_period_s > 0:
            raise ValueError(f"epoch_period_s must be > 0, not {epoch_period_s}")
        if not hdop_limit > 0:
            raise ValueError(f"hdop_limit must be > 0, not {hdop_limit}")
        if min_sats < 0:
            raise ValueError(f"min_sats must be >= 0, not {min_sats}")
        if not stale_periods >= 1:
            raise ValueError(f"stale_periods must be >= 1, not {stale_periods}")
        if not silent_s > 0:
            raise ValueError(f"silent_s must be > 0, not {silent_s}")
        if sky_decimation < 0:
            raise ValueError(f"sky_decimation must be >= 0, not {sky_decimation}")
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, not {protocol!r}")
        if implementation is None:
            from tianwang.drivers.sdk import framing as implementation
        self.device_id = device_id
        self.epoch_period_s = float(epoch_period_s)
        self.hdop_limit = float(hdop_limit)
        self.min_sats = int(min_sats)
        self.stale_periods = float(stale_periods)
        self.silent_s = float(silent_s)
        self.sky_decimation = int(sky_decimation)
        self.on_rdss = on_rdss
        self._impl = implementation
        self.protocol = protocol
        self._decoder = implementation.NmeaDecoder(require_checksum=require_checksum, binary=protocol != "nmea")
        self._assembler = implementation.EpochAssembler()
        self._binary = {p: implementation.BinaryAssembler(p) for p in ("casic", "ubx") if protocol in (p, "auto")}
        handlers = {
            implementation.TXT: self._txt,
            implementation.TXR: self._message,
            implementation.TCI: self._message,
            implementation.FKI: self._feedback,
            implementation.ICI: self._card,
            implementation.ICP: self._card,
            implementation.PWI: self._beams,
        }
        self._stale_ns = int(self.stale_periods * self.epoch_period_s * 1e9)
        self._silent_ns = int(self.silent_s * 1e9)
        self._flush_ns = int(self.epoch_period_s * 0.5e9)
        # the per-epoch part (source choice, fix/state/sky publications) runs in the hot path
        self._publisher = implementation.FixPublisher(
            Publication,
            implementation.Epoch,
            implementation.BinaryFrame,
            implementation.BinaryEpoch,
            self._binary,
            handlers,
            hdop_limit=self.hdop_limit,
            min_sats=self.min_sats,
            sky_decimation=self.sky_decimation,
            stale_ns=self._stale_ns,
            protocol=protocol,
        )
        self.card: CardInfo | None = None
        self.beams: BeamStatus | None = None
        self.rdss_events: collections.deque = collections.deque(maxlen=_EVENTS_KEPT)
        self._alarms: dict[str, bool] = {}
        self._start_ns: int | None = None  # caller's clock: first feed or tick
        self._bytes_ns: int | None = None  # caller's clock: last bytes

    # counters ------------------------------------------------------------------------------

    @property
    def frames(self) -> int:
        return self._decoder.frames

    @property
    def drops(self) -> dict:
        drops = self._decoder.drops
        unused = self._publisher.unused_frames
        if unused:
            # binary frames that passed their checksum but give nothing: not a navigation message
            # this receiver decodes, an impossible length, or the protocol not chosen
            drops["binary"] += unused
        return drops

    @property
    def dropped_bytes(self) -> int:
        return self._decoder.dropped_bytes + self._publisher.unused_bytes

    @property
    def state(self) -> str | None:
        """The last state published (None before the first)."""
        return self._publisher.state

    @property
    def superseded(self) -> int:
        """Epochs not published because another source's epoch was (binary beside NMEA)."""
        return self._publisher.superseded

    @property
    def _device_ns(self) -> int:
        return self._publisher.device_ns

    @property
    def resyncs(self) -> int:
        return self._decoder.resyncs

    # input ---------------------------------------------------------------------------------

    def feed(self, data: bytes | bytearray | memoryview, now_ns: int | None = None) -> list[Publication]:
        """Bytes from the receiver -> publications. `now_ns` None: run on the device's clock."""
        if now_ns is not None:
            if self._start_ns is None:
                self._start_ns = now_ns
            if data:
                self._bytes_ns = now_ns
        pubs: list = []
        self._publisher.process(self._assembler.push(self._decoder.feed(data)), now_ns, pubs)
        return pubs

    def tick(self, now_ns: int) -> list:
        """Timers on the caller's clock: close an epoch the receiver has finished sending, STALE,
        SILENT. Call it a few times per epoch period."""
        if self._start_ns is None:
            self._start_ns = now_ns
        pubs: list = []
        bytes_ref = self._bytes_ns if self._bytes_ns is not None else self._start_ns
        if now_ns - bytes_ref >= self._flush_ns:
            if self._assembler.open:
                self._publisher.process(self._assembler.flush(), now_ns, pubs)
            for b in self._binary.values():
                if b.open:
                    for e in b.flush():
                        self._publisher.epoch(e, now_ns, pubs)
        if now_ns - bytes_ref >= self._silent_ns:
            self._transition("SILENT", f"no bytes for {(now_ns - bytes_ref) / 1e9:.1f} s", 0, pubs)
        else:
            epoch_ns = self._publisher.epoch_ns
            epoch_ref = epoch_ns if epoch_ns is not None else self._start_ns
            if now_ns - epoch_ref >= self._stale_ns:
                self._transition("STALE", f"no epoch for {(now_ns - epoch_ref) / 1e9:.1f} s", 0, pubs)
        return pubs

    @property
    def epoch_open(self) -> bool:
        """True while an epoch has begun and not been closed (the quiet-gap close may be due)."""
        if self._assembler.open:
            return True
        for b in self._binary.values():
            if b.open:
                return True
        return False

    def tick_due_ns(self) -> int:
        """The earliest time (the caller's clock) at which `tick` could publish anything, from what
        has come so far: the quiet-gap close of an open epoch, STALE, SILENT. More bytes only move
        it later, except bytes that leave an epoch open (`epoch_open`), which bring the close in."""
        start = self._start_ns or 0
        bytes_ref = self._bytes_ns if self._bytes_ns is not None else start
        due = bytes_ref + self._silent_ns
        if self.epoch_open:
            due = min(due, bytes_ref + self._flush_ns)
        epoch_ns = self._publisher.epoch_ns
        return min(due, (epoch_ns if epoch_ns is not None else start) + self._stale_ns)

    def finish(self, now_ns: int | None = None) -> list:
        """End of stream: the sentence and epoch in progress are completed or dropped."""
        pubs: list = []
        items = self._assembler.push(self._decoder.finish())
        items += self._assembler.flush(final=True)
        self._publisher.process(items, now_ns, pubs)
        for b in self._binary.values():
            for e in b.flush(final=True):
                self._publisher.epoch(e, now_ns, pubs)
        return pubs

    def take_rdss_events(self) -> list:
        """The RDSS events queued since the last call (oldest first)."""
        events = list(self.rdss_events)
        self.rdss_events.clear()
        return events

    # what came out of the assembler ----------------------------------------------------------

    @property
    def epochs(self) -> int:
        return self._assembler.epochs

    @property
    def fragments(self) -> int:
        return self._assembler.fragments + sum(b.fragments for b in self._binary.values())

    @property
    def closed_by(self) -> dict:
        a = self._assembler
        out = {"end": a.closed_by_end, "next": a.closed_by_next, "flush": a.closed_by_flush}
        for b in self._binary.values():
            out["end"] += b.closed_by_end
            out["next"] += b.closed_by_next
            out["flush"] += b.closed_by_flush
        return out

    @property
    def epoch_counts(self) -> tuple[int, int, int, int, int]:
        """(epochs closed on their last sentence, by the next epoch, by the quiet gap, fragments,
        superseded) in one read: what the driver turns into its counters once per epoch."""
        a = self._assembler
        end, nxt, flush, fragments = a.closed_by_end, a.closed_by_next, a.closed_by_flush, a.fragments
        for b in self._binary.values():
            end += b.closed_by_end
            nxt += b.closed_by_next
            flush += b.closed_by_flush
            fragments += b.fragments
        return end, nxt, flush, fragments, self._publisher.superseded

    @property
    def binary_frames(self) -> int:
        """CASIC and UBX frames found (checksum-verified) in the stream."""
        return self._decoder.binary_frames

    def _transition(self, state: str, reason: str, device_ns: int, pubs: list[Publication]) -> None:
        self._publisher.transition(state, reason, device_ns, pubs)

    def _txt(self, m: Any, pubs: list[Publication]) -> None:
        match = _ANTENNA.search(m.text.upper())
        if match is None:
            return
        word = match.group(1)
        raw = m.text.encode("latin-1").decode("gb18030", errors="replace")
        if word in ("OPEN", "SHORT"):
            kind = "antenna_" + word.lower()
            other = "antenna_short" if kind == "antenna_open" else "antenna_open"
            if self._alarms.get(other):
                self._alarms[other] = False
                pubs.append(Publication("alarm", {"kind": other, "active": False, "raw": raw}, self._device_ns))
            if not self._alarms.get(kind):
                self._alarms[kind] = True
                pubs.append(Publication("alarm", {"kind": kind, "active": True, "raw": raw}, self._device_ns))
        else:
            for kind, active in sorted(self._alarms.items()):
                if active:
                    self._alarms[kind] = False
                    pubs.append(Publication("alarm", {"kind": kind, "active": False, "raw": raw}, self._device_ns))

    def _message(self, m: Any, pubs: list[Publication]) -> None:
        raw, text = decode_content(m.content, m.encoding)
        encoding = ENCODINGS.get(m.encoding, f"encoding_{m.encoding}")
        if type(m) is self._impl.TCI:
            payload = {
                "sender": m.sender,
                "kind": "normal",
                "encoding": encoding,
                "text": text,
                "raw": raw,
                "send_time": m.send_time,
                "recipient": m.recipient,
                "freq_point": m.freq_point,
                "protocol": "bds3",
            }
        else:
            payload = {
                "sender": m.sender,
                "kind": KINDS.get(m.kind, f"kind_{m.kind}"),
                "encoding": encoding,
                "text": text,
                "raw": raw,
                "send_time": m.send_time,
                "protocol": "2.1",
            }
        pubs.append(Publication("message", payload, self._device_ns))

    def _event(self, event: object) -> None:
        self.rdss_events.append(event)
        if self.on_rdss is not None:
            self.on_rdss(event)

    def _feedback(self, m: Any, pubs: list[Publication]) -> None:
        ok, code, wait_s = feedback_of(m)
        reason = "accepted" if ok else FEEDBACK_TEXT.get(code, code)
        if wait_s:
            reason += f" (wait {wait_s} s)"
        self._event(RdssFeedback(m.command, ok, code, reason, wait_s, m.form, self._device_ns))

    def _card(self, m: Any, pubs: list[Publication]) -> None:
        self.card = CardInfo(
            m.card_id,
            m.serial,
            m.broadcast_id,
            m.user_class,
            m.interval_s,
            m.level,
            m.encrypted,
            m.subordinates,
            "bds3" if type(m) is self._impl.ICP else "2.1",
            self._device_ns,
        )
        self._event(self.card)

    def _beams(self, m: Any, pubs: list[Publication]) -> None:
        locked = any(power > 0 for _, power in m.rdss2 + m.s2c)
        self.beams = BeamStatus(m.rdss2, m.s2c, locked, self._device_ns)
        self._event(self.beams)
