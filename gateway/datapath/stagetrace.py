"""Where a reading's time goes inside the gateway, for the latency section of `tianwang bench`.

Off unless the environment variable TIANWANG_STAGE_TRACE names a directory (the bench sets it for
the gateway it starts). Then the gateway notes, without touching a reading on its way:

- when envelopes became visible in the journal: a watcher waits on the journal like any Subscribe
  stream does and stamps each wake-up with the journal's next seq (one stamp per wake-up, not per
  envelope; under `fsync: always` that is after the sync). It and the streams wake on the same
  wake-up in no set order, so the bench takes the earlier of its stamp and the stream's;
- per Subscribe batch: the seqs it covers, when the stream handed it to gRPC and when gRPC took it
  (the stream resumed).

Each stream writes its notes as one JSON file in the directory when it ends. With the reading's
own `gateway_time_ns` (stamped when the driver's read routed it) and the subscriber's arrival time,
that splits device write -> routed -> journal visible -> stream write -> subscriber read.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tianwang.gateway.datapath.journal import Journal

ENV = "TIANWANG_STAGE_TRACE"


class StageTrace:
    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.visible: list[tuple[int, int]] = []  # (journal next seq, time_ns it was seen)
        self._watcher: asyncio.Task[None] | None = None
        self._streams = 0

    @classmethod
    def from_env(cls) -> StageTrace | None:
        directory = os.environ.get(ENV)
        return cls(directory) if directory else None

    def watch(self, journal: Journal, closing: Callable[[], bool]) -> None:
        """Start stamping the journal's visibility (once; it stops when `closing()` is true)."""
        if self._watcher is not None:
            return

        async def run() -> None:
            cursor = journal.next_seq
            while not closing():
                await journal.wait(cursor, 1.0)
                nxt = journal.next_seq
                if nxt > cursor:
                    self.visible.append((nxt, time.time_ns()))
                    cursor = nxt

        self._watcher = asyncio.get_running_loop().create_task(run(), name="stage-trace")

    def dump(self, peer: str, batches: list) -> None:
        """One stream's batches [(first seq, next seq, handed to gRPC ns, taken by gRPC ns)] and
        the visibility stamps so far, as stream-N.json (written whole, then renamed)."""
        self._streams += 1
        path = os.path.join(self.directory, f"stream-{os.getpid()}-{self._streams}.json")
        os.makedirs(self.directory, exist_ok=True)
        with open(path + ".tmp", "w") as f:
            json.dump({"peer": peer, "visible": self.visible, "batches": batches}, f)
        os.replace(path + ".tmp", path)
