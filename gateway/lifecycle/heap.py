"""Keeping full garbage collections short while long-lived state grows.

A full (generation 2) collection walks every object the collector tracks. The gateway's long-lived
state (10,000 registered devices with 50,000 channels, their sessions, catalogs and subscriptions)
is built after start-up, so the `gc.freeze()` at start does not cover it, and each full collection
walks all of it again: measured at 11,000 GB/T 28181 devices, 39 full collections in the first
minutes, growing to 600 ms each and finding nothing, while every alarm and position waited behind
them. `HeapKeeper` watches full collections (a `gc.callbacks` hook); after one that took longer than
`slow_s` it freezes what survived it (`gc.freeze()`: moved out of the collector's way) on the loop's
next check, so later full collections walk only what was made since.

The price, and why it is acceptable: a cycle of frozen objects that later becomes garbage is not
reclaimed (objects without cycles still go by reference counting, as all the hot-path objects do).
Freezing happens only after a slow collection, that is after the long-lived state grew by a large
step; the counters (`freezes`, `frozen`) say how much was frozen.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from typing import Any

log = logging.getLogger("tianwang.gateway")

SLOW_FULL_COLLECTION_S = 0.05  # a full collection this long means a large heap worth freezing
CHECK_S = 1.0


class HeapKeeper:
    def __init__(self, slow_s: float = SLOW_FULL_COLLECTION_S) -> None:
        self.slow_s = slow_s
        self.full_collections = 0
        self.longest_s = 0.0
        self.freezes = 0
        self.frozen = 0  # objects in the permanent generation after the last freeze
        self._started = 0.0
        self._due = False
        self._task: asyncio.Task[None] | None = None

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        # called by the collector, in whichever thread allocated: only note what happened here
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._started = time.perf_counter()
            return
        took = time.perf_counter() - self._started
        self.full_collections += 1
        self.longest_s = max(self.longest_s, took)
        if took >= self.slow_s:
            self._due = True

    def freeze_if_due(self) -> bool:
        if not self._due:
            return False
        self._due = False
        gc.freeze()
        self.freezes += 1
        self.frozen = gc.get_freeze_count()
        (log.info if self.freezes == 1 else log.debug)(
            "a full garbage collection took %.0f ms: %d long-lived objects moved out of its way (freeze %d)",
            self.longest_s * 1000,
            self.frozen,
            self.freezes,
        )
        return True

    def start(self) -> None:
        if self._on_gc not in gc.callbacks:
            gc.callbacks.append(self._on_gc)
        self._task = asyncio.get_running_loop().create_task(self._watch(), name="heap-keeper")

    async def stop(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(CHECK_S)
            self.freeze_if_due()
