"""The journal: every envelope the gateway routes, in seq order, retained by bytes.

Subscribers are cursors into it (a seq plus a topic filter), not private queues: a slow subscriber
lags without slowing anyone, and one that falls behind retention is told so with a Gap.

The in-memory log (`EntryLog`, compiled or twin, from tianwang.gateway.framing) holds each envelope already
encoded as a `Batch.envelopes` field. Disk persistence (journal.path, its own issue) plugs in as a
`sink` that sees every appended entry and a `read_older(from_seq, ...)` behind the memory; the seq
numbering and the Gap contract below do not change with it.
"""

from __future__ import annotations

import asyncio

from tianwang.gateway.framing import EntryLog, encode_gap


class Journal:
    """Append-only log of encoded envelopes with a wake-up for waiting readers.

    `append` is called on the event loop thread only (drivers, router and fan-out share one loop).
    """

    def __init__(self, max_bytes: int, first_seq: int = 1, entry_log=EntryLog):
        """`entry_log`: the EntryLog class (compiled or twin; benchmarks choose, others leave it)."""
        self.log = entry_log(int(max_bytes), first_seq)
        # the router calls this per envelope: the compiled log's own method, no Python frame between
        self.append = self.log.append

    def wake(self) -> None:
        """Wake every waiting reader now (shutdown, revoked tokens): they re-check their state."""
        waiter = self.log.waiter
        if waiter is not None:
            self.log.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # -- reading -------------------------------------------------------------------------------
    @property
    def first_seq(self) -> int:
        return self.log.first_seq

    @property
    def next_seq(self) -> int:
        return self.log.next_seq

    @property
    def last_seq(self) -> int:
        return self.log.next_seq - 1

    @property
    def nbytes(self) -> int:
        return self.log.nbytes

    @property
    def max_bytes(self) -> int:
        return self.log.max_bytes

    def gap_for(self, cursor: int):
        """(gap batch bytes, new cursor) when `cursor` is older than what is held, else (None, cursor)."""
        first = self.log.first_seq
        if cursor >= first:
            return None, cursor
        return encode_gap(cursor, first - 1, "retention"), first

    def collect(self, cursor, flt, max_n, max_bytes, strict=False):
        """See EntryLog.collect; `cursor` must not be older than first_seq (use gap_for first)."""
        return self.log.collect(cursor, flt, max_n, max_bytes, 65536, strict)

    async def wait(self, cursor: int, timeout: float | None = None) -> bool:
        """Wait until an envelope with seq >= `cursor` exists. False on timeout."""
        if self.log.next_seq > cursor:
            return True
        waiter = self.log.waiter
        if waiter is None or waiter.done():
            waiter = self.log.waiter = asyncio.get_running_loop().create_future()
        if timeout is None:
            await asyncio.shield(waiter)
            return True
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except asyncio.TimeoutError:
            return self.log.next_seq > cursor
        return True
