"""Offline decoder for `tianwang decode --driver jt808 [--id PHONE] FILE`.

Input: the bytes one terminal sent to the platform over one connection (a capture of the
terminal-to-platform direction). Output: the publications the jt808 listener would make from them,
by the listener's own message handling: the same framer and the same Session
(tianwang.drivers.jt808.session), so the rules (fixes, alarm edges, blind-area batches, resends,
split messages, drops by reason) are the listener's by construction.

What depends on the live link is left out: the terminal counts as authenticated from the first
byte (a capture carries no codes to check, and may start after the login), so health
(ONLINE/OFFLINE) is not published and the replies are not kept; split messages wait without a
clock. Topics use the `--id` given to `tianwang decode`; give the terminal's phone there to get the
topics the listener would use.
"""

from __future__ import annotations

from tianwang.drivers.jt808.session import Gate, Session
from tianwang.drivers.sdk import FramedDecoder, Jt808Framer, Publication


class Decoder(FramedDecoder):
    """See the module docstring. `frames`: good frames; `dropped_bytes`; `drops`: reason -> count."""

    family = "gnss"

    def __init__(self, device_id: str = "capture", max_frame: int = 2048) -> None:
        super().__init__()
        self.device_id = device_id
        self.framer = Jt808Framer(max_frame=max_frame)
        gate = Gate()
        # split messages are held without a clock offline; only the count of unfinished ones is bounded
        self.session = Session(gate, terminal=gate.terminal, split_timeout=float("inf"))

    def feed(self, data: bytes) -> list[Publication]:
        out: list[Publication] = []
        for frame in self.framer.feed(data):
            step = self.session.handle(frame, 0.0)
            for reason in step.drops:
                self._drop(reason)
            out += step.publications
        return out

    def finish(self) -> list[Publication]:
        self.framer.finish()
        return []
