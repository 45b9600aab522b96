"""Offline decoder for `tianwang decode --driver jt808 [--id PHONE] FILE`.

Input: the bytes one terminal sent to the platform over one connection (a capture of the
terminal-to-platform direction). Output: the publications the jt808 listener would make from them
for an authenticated terminal, with the same framer, message layer and rules:

- 0x0200 and 0x0201 -> `fix` (+ `alarm` for every alarm bit that changed), 0x0704 -> one `fix` per
  position (blind-area batches have `stored: true` and leave the alarm state alone);
- a resend of a message already decoded (same id, serial and body) is not published again;
- split messages are joined;
- bad frames, bad bodies, unsupported ids and frames from a second phone are counted in `drops`.

What depends on the live link is left out: health (ONLINE/OFFLINE follows authentication against
the configured codes) and the replies. Topics use the `--id` given to `tianwang decode`; give the
terminal's phone there to get the topics the listener would use.
"""

from __future__ import annotations

from tianwang.drivers.jt808 import protocol as p
from tianwang.drivers.sdk import FramedDecoder, Jt808Framer, Publication

# Split messages are held without a clock offline; only the count of unfinished ones is bounded.
_SPLIT_NO_TIMEOUT = float("inf")


class Decoder(FramedDecoder):
    """See the module docstring. `frames`: good frames; `dropped_bytes`; `drops`: reason -> count."""

    family = "gnss"

    def __init__(self, device_id: str = "capture", max_frame: int = 2048):
        super().__init__()
        self.device_id = device_id
        self.framer = Jt808Framer(max_frame=max_frame)
        self.phone: str | None = None
        self.alarm = 0
        self.recent = p.RecentMessages()
        self.reassembler = p.Reassembler(timeout=_SPLIT_NO_TIMEOUT)

    def _extra_drops(self) -> dict[str, int]:
        return self.reassembler.dropped

    # -- decoding --------------------------------------------------------------------------------
    def feed(self, data) -> list[Publication]:
        out: list[Publication] = []
        for frame in self.framer.feed(data):
            try:
                self._frame(frame, out)
            except p.Jt808Error as exc:
                self._drop(exc.reason)
        return out

    def finish(self) -> list[Publication]:
        self.framer.finish()
        return []

    def _frame(self, frame: bytes, out: list) -> None:
        header, body = p.parse(frame)
        if self.phone is None:
            self.phone = header.phone
        elif header.phone != self.phone:
            self._drop("phone_mismatch")
            return
        if header.total:
            body = self.reassembler.add(header, body, 0.0)
            if body is None:
                return
        msg_id = header.msg_id
        if msg_id == p.LOCATION:
            loc = p.parse_location(body)
            if not self.recent.seen_before(msg_id, header.serial, body):
                self._location(loc, True, out)
        elif msg_id == p.BATCH:
            kind, locations = p.parse_batch(body)
            if not self.recent.seen_before(msg_id, header.serial, body):
                live = kind != p.BATCH_BLIND_AREA
                for loc in locations:
                    self._location(loc, live, out)
        elif msg_id == p.LOCATION_REPLY:
            _serial, loc = p.parse_location_reply(body)
            self._location(loc, True, out)
        elif msg_id == p.REGISTER:
            p.parse_register(body, header.version)
        elif msg_id == p.AUTH:
            p.parse_auth(body, header.version)
        elif msg_id == p.TERMINAL_ACK:
            p.parse_ack(body)
        elif msg_id in (p.HEARTBEAT, p.LOGOUT):
            pass
        else:
            self._drop("unsupported")

    def _location(self, loc: p.Location, live: bool, out: list) -> None:
        t = loc.time_ns or 0
        out.append(Publication("fix", p.fix_payload(loc, stored=not live), t))
        if live and loc.alarm != self.alarm:
            for change in p.alarm_changes(self.alarm, loc.alarm):
                out.append(Publication("alarm", change, t))
            self.alarm = loc.alarm
