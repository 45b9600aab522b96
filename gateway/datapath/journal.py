"""The journal: every envelope the gateway routes, in seq order, retained by bytes.

Subscribers are cursors into it (a seq plus a topic filter), not private queues: a slow subscriber
lags without slowing anyone, and one that falls behind retention is told so with a Gap.

The in-memory log (`EntryLog`, compiled or twin, from tianwang.gateway.framing) holds each envelope
already encoded as a `Batch.envelopes` field. `Journal` is that log alone: a restart starts a new
journal (a new id, seq from 1). `DurableJournal` (journal.path) keeps the same log as the hot cache
in front of disk segments (segments.py): a writer task writes what was appended in blocks, fsyncs
by policy, and only then lets subscribers see it; seq carries on across restarts, and a cursor older
than the memory is served from disk.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tianwang.gateway.datapath.segments import Block, SegmentStore, parse_blocks
from tianwang.gateway.errors import FrameError
from tianwang.gateway.framing import EntryLog, encode_gap, scan_entries

if TYPE_CHECKING:
    from tianwang.gateway.framing import TopicFilter

log = logging.getLogger("tianwang.journal")


def _expire(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Readers:
    """The readers waiting for the journal to move, woken together by one `set_result` call.

    Each reader waits on a future of its own, so a reader that is cancelled (a stream whose
    client left) cancels only its own, and a reader's task runs in the loop turn right after the
    wake-up. A shared future behind `asyncio.shield` inside `asyncio.wait_for` takes two turns
    more, and on a busy loop every turn first handles the devices' reads that are ready by then.
    It quacks like the Future the log resolves (`done`, `set_result`): the log calls it once per
    wake-up, not per envelope, and forgets it; `wait` hands it back.
    """

    __slots__ = ("_futures",)

    def __init__(self) -> None:
        self._futures: dict[asyncio.Future[None], None] = {}

    def __len__(self) -> int:
        return len(self._futures)

    def done(self) -> bool:
        return False

    def set_result(self, _result: object = None) -> None:
        futures = self._futures
        if futures:
            self._futures = {}
            for fut in futures:
                if not fut.done():
                    fut.set_result(None)

    async def wait(self, timeout: float | None) -> None:
        """Wait for the next `set_result`, at most `timeout` seconds (None: no limit)."""
        fut = asyncio.get_running_loop().create_future()
        self._futures[fut] = None
        if timeout is None:
            try:
                await fut
            finally:
                self._futures.pop(fut, None)
            return
        handle = fut.get_loop().call_later(timeout, _expire, fut)
        try:
            await fut
        finally:
            handle.cancel()
            self._futures.pop(fut, None)


def _settle(fut: asyncio.Future[None], exc: BaseException | None) -> None:
    if not fut.done():
        if exc is None:
            fut.set_result(None)
        else:
            fut.set_exception(exc)


class SyncThread:
    """The durable journal's own thread for its syncs, run one after another in order.

    Group commit starts a sync whenever the one before ends with something unsynced: under load a
    sync every few milliseconds. Through the default executor each one cost the loop thread about
    120 us of its own CPU (the work item, its concurrent future, the asyncio future chained to it,
    the executor's bookkeeping), 1.5-3% of the append rate at 450k envelopes/s. Here it is one queue
    put and one call_soon_threadsafe, and the append rate is what it was with a sync per 20 ms.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._queue: queue.SimpleQueue[
            tuple[asyncio.AbstractEventLoop, asyncio.Future[None], Callable[..., object], tuple[Any, ...]] | None
        ] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def run(self, loop: asyncio.AbstractEventLoop, fn: Callable[..., object], *args: Any) -> asyncio.Future[None]:
        """A future that ends when `fn(*args)` has run on the thread (with its exception, if any)."""
        if self._thread is None:
            # daemon: a process that exits without closing its journal (a crash, in effect)
            # must not hang on a sync nobody waits for
            self._thread = threading.Thread(target=self._serve, name=self._name, daemon=True)
            self._thread.start()
        fut = loop.create_future()
        self._queue.put((loop, fut, fn, args))
        return fut

    def stop(self) -> None:
        """The thread ends once what was queued before has run."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread = None

    def _serve(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            loop, fut, fn, args = item
            exc: BaseException | None = None
            try:
                fn(*args)
            except BaseException as e:  # the awaiting task gets it, as from an executor
                exc = e
            try:
                loop.call_soon_threadsafe(_settle, fut, exc)
            except RuntimeError:
                pass  # the loop is closed: nobody awaits this sync any more


class Journal:
    """Append-only log of encoded envelopes with a wake-up for waiting readers.

    `append` is called on the event loop thread only (drivers, router and fan-out share one loop).
    """

    durable = False
    state = "ok"  # "failed" while a durable journal cannot write
    error = ""

    def __init__(self, max_bytes: int, first_seq: int = 1, entry_log: type[EntryLog] = EntryLog) -> None:
        """`entry_log`: the EntryLog class (compiled or twin; benchmarks choose, others leave it)."""
        self.log = entry_log(int(max_bytes), first_seq)
        # a memory journal is a new journal at every start: its id says so to resuming clients
        self.id = secrets.token_hex(16)
        # the router calls this per envelope: the compiled log's own method, no Python frame between
        self.append = self.log.append
        self.readers = Readers()

    def wake(self) -> None:
        """Wake every waiting reader now (shutdown, revoked tokens): they re-check their state."""
        self.log.waiter = None
        self.readers.set_result(None)

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

    def gap_for(self, cursor: int) -> tuple[bytes | None, int]:
        """(gap batch bytes, new cursor) when `cursor` is older than what is held, else (None, cursor)."""
        first = self.log.first_seq
        if cursor >= first:
            return None, cursor
        return encode_gap(cursor, first - 1, "retention"), first

    def on_disk(self, cursor: int) -> bool:
        """True when `cursor` is older than memory but still held on disk (DurableJournal)."""
        return False

    def counters(self) -> dict[str, int]:
        return {}

    async def start(self) -> None:
        """Start background work (a durable journal's writer)."""

    async def close(self) -> None:
        """Write out and release what the journal holds open."""

    async def flush(self) -> None:
        """Write what is pending and make it visible (a durable journal; nothing to do in memory)."""

    def collect(
        self, cursor: int, flt: TopicFilter | None, max_n: int, max_bytes: int, strict: bool = False
    ) -> tuple[bytes, int, int]:
        """See EntryLog.collect; `cursor` must not be older than first_seq (use gap_for first)."""
        return self.log.collect(cursor, flt, max_n, max_bytes, 65536, strict)

    async def wait(self, cursor: int, timeout: float | None = None) -> bool:
        """Wait until an envelope with seq >= `cursor` exists. False on timeout."""
        log_ = self.log
        if log_.next_seq > cursor:
            return True
        log_.waiter = self.readers  # the next append wakes them all, once
        await self.readers.wait(timeout)
        return log_.next_seq > cursor

    async def read_disk(
        self, reader: DiskReader, cursor: int, flt: TopicFilter | None, max_n: int, max_bytes: int
    ) -> tuple[bytes, int, int]:
        """Envelopes from disk (DurableJournal): a memory journal holds none, and `on_disk` is
        never true for it."""
        return b"", 0, cursor


class JournalUnwritable(ValueError):
    """Raised into the router while a durable journal cannot write: the reading is refused."""


class DiskReader:
    """One subscriber's read-ahead over the disk segments: the blocks of the last read and where
    in them it stopped."""

    __slots__ = ("blocks", "index", "pos", "pos_seq", "pos_block", "path", "next_offset", "seg_size")

    def __init__(self) -> None:
        self.pos_block: Block | None = None  # the block `pos` and `pos_seq` are in
        self.blocks: list[Block] = []
        self.index = 0
        self.pos = 0
        self.pos_seq = 0
        self.path: Path | None = None
        self.next_offset = 0
        self.seg_size = 0


class DurableJournal(Journal):
    """The in-memory log in front of disk segments (`journal.path`).

    A writer task wakes on every append (the log's own waiter: no Python call per envelope),
    writes everything pending as one block and makes it visible by `fsync` policy: `always` once
    it is synced; `batch` once it is written, while a sync task syncs at once whenever something
    is unsynced and gathers what is written during a sync into the next one (group commit), and
    the writer holds back new envelopes whenever what subscribers see has waited longer than
    `fsync_window_ms` for its sync; `never` once it is written, syncs left to the kernel. Under
    every policy seqs are reserved durably ahead of the writes (segments.py), so seq never goes
    back after a crash or a power cut.

    When a write or a sync fails (ENOSPC, EIO, a read-only remount) the journal refuses new
    readings (counted as drops `journal_unwritable`), keeps what it holds in memory, reports
    `state` "failed" with the reason, and retries every second; once the retry succeeds it carries on.
    """

    durable = True
    READ_AHEAD = 1024 * 1024
    RETRY_S = 1.0
    RETENTION_CHECK_S = 60.0

    def __init__(
        self,
        max_bytes: int,
        store: SegmentStore,
        *,
        fsync: str = "batch",
        fsync_window_ms: float = 20,
        entry_log: type[EntryLog] = EntryLog,
    ) -> None:
        super().__init__(max_bytes, store.next_seq, entry_log)
        self.store = store
        self.id = store.journal_id
        self.policy = fsync
        self.window = max(0.001, fsync_window_ms / 1000.0)
        self.written_next = store.next_seq  # first seq not yet written
        self.log.keep_from = self.written_next  # memory keeps what is not on disk yet
        self.visible_next = store.next_seq  # subscribers see seq < visible_next
        self.synced_next = store.next_seq  # seqs below are synced (batch, always)
        self._exposed_since: float | None = None  # batch: when visible envelopes last began to wait for a sync
        self._sync_wanted = asyncio.Event()
        self._held = False  # batch: written envelopes wait for the sync in flight to be shown
        self._reserving: asyncio.Future[None] | None = None  # the reservation being synced
        self._rewind = False  # a sync failed: cut what it covered and write it again
        self._retry_at = 0.0
        self._errors: dict[str, str] = {}  # "write" / "sync" -> reason, while failing
        # readers wait in self.readers; _set_visible wakes them (the log's waiter is the writer's)
        self._tasks: list[asyncio.Task[None]] = []
        self._syncs = SyncThread(f"journal-sync-{store.path.name}")
        self._pack: Callable[[Any], bytes] | None = None
        self._closing = False
        self.stats = {
            "journal_blocks_written": 0,
            "journal_bytes_written": 0,
            "journal_fsyncs": 0,
            "journal_write_errors": 0,
            "journal_rewritten": 0,
            "journal_lost_unwritten": 0,
            "journal_cut_bytes": store.cut_bytes,
            "journal_corrupt_bytes": store.corrupt_bytes,
            "journal_segments_removed": 0,
            "journal_disk_reads": 0,
        }

    # -- what readers see ----------------------------------------------------------------------
    @property
    def next_seq(self) -> int:
        return self.visible_next

    @property
    def last_seq(self) -> int:
        return self.visible_next - 1

    @property
    def first_seq(self) -> int:
        disk = self.store.first_seq
        return min(disk, self.log.first_seq)

    @property
    def disk_bytes(self) -> int:
        return self.store.nbytes

    def counters(self) -> dict[str, int]:
        out = dict(self.stats)
        out["journal_segments_removed"] = self.store.removed_segments
        out["journal_cut_bytes"] = self.store.cut_bytes
        out["journal_corrupt_bytes"] = self.store.corrupt_bytes
        out["journal_disk_bytes"] = self.store.nbytes
        out["journal_unwritten"] = self.log.next_seq - self.written_next
        return out

    def on_disk(self, cursor: int) -> bool:
        return cursor < self.log.first_seq and cursor < self.visible_next

    def gap_for(self, cursor: int) -> tuple[bytes | None, int]:
        first = self.first_seq
        if cursor >= first:
            return None, cursor
        return encode_gap(cursor, first - 1, "retention"), first

    def collect(
        self, cursor: int, flt: TopicFilter | None, max_n: int, max_bytes: int, strict: bool = False
    ) -> tuple[bytes, int, int]:
        scan = self.visible_next - cursor
        if scan <= 0:
            return b"", 0, cursor
        return self.log.collect(cursor, flt, max_n, max_bytes, scan if scan < 65536 else 65536, strict)

    def wake(self) -> None:
        self.readers.set_result(None)

    async def wait(self, cursor: int, timeout: float | None = None) -> bool:
        if self.visible_next > cursor:
            return True
        await self.readers.wait(timeout)
        return self.visible_next > cursor

    def _set_visible(self, seq: int) -> None:
        if seq > self.visible_next:
            if self._exposed_since is None and self.policy == "batch" and seq > self.synced_next:
                self._exposed_since = time.monotonic()
            self.visible_next = seq
            self.store.note_visible(seq)
            self.wake()

    # -- reading from disk ---------------------------------------------------------------------
    async def read_disk(
        self, reader: DiskReader, cursor: int, flt: TopicFilter | None, max_n: int, max_bytes: int
    ) -> tuple[bytes, int, int]:
        """Envelopes from disk for a cursor older than memory: (batch bytes, count, next cursor).

        The batch is a Gap alone (count 0) when the records at `cursor` are missing from the disk
        (`corrupt`: a damaged block; `lost`: never written, or not synced before a power cut); a
        cursor older than the disk's first seq gets its Gap from `gap_for` first.
        """
        parts: list[bytes] = []
        n = 0
        size = 0
        loop = asyncio.get_running_loop()
        limit = min(self.log.first_seq, self.visible_next)
        while n < max_n and size < max_bytes and cursor < limit:
            blk = self._block_in(reader, cursor)
            if blk is None:
                loaded = await self._load(reader, cursor, loop)
                if loaded is not None:  # records at cursor are missing
                    if parts:
                        break
                    upto, reason = loaded
                    return encode_gap(cursor, upto - 1, reason), 0, upto
                continue
            if cursor < blk.first_seq:  # a hole inside a segment
                if parts:
                    break
                return encode_gap(cursor, blk.first_seq - 1, "lost"), 0, blk.first_seq
            if reader.pos_block is not blk or reader.pos_seq > cursor:
                reader.pos, reader.pos_seq, reader.pos_block = 0, blk.first_seq, blk
            try:
                data, m, seq, pos = scan_entries(
                    blk.payload, reader.pos, reader.pos_seq, cursor, flt, max_n - n, max_bytes - size, bool(parts)
                )
            except FrameError as exc:
                log.error("journal: block at seq %d is unreadable: %s", blk.first_seq, exc)
                reader.blocks = []
                if parts:
                    break
                return encode_gap(cursor, blk.next_seq - 1, "corrupt"), 0, blk.next_seq
            reader.pos, reader.pos_seq = pos, seq
            if m:
                parts.append(data)
                n += m
                size += len(data)
            cursor = max(cursor, seq)
            if seq < blk.next_seq:
                break  # the batch is full
            reader.index += 1
        self.stats["journal_disk_reads"] += n
        return b"".join(parts) if len(parts) != 1 else parts[0], n, cursor

    @staticmethod
    def _block_in(reader: DiskReader, cursor: int) -> Block | None:
        """The read-ahead block holding `cursor`, or the one right after a hole at `cursor`;
        None when the read-ahead does not reach it."""
        blocks = reader.blocks
        i = reader.index
        while i < len(blocks) and blocks[i].next_seq <= cursor:
            i += 1
        reader.index = i
        if i >= len(blocks):
            return None
        blk = blocks[i]
        if blk.first_seq <= cursor or (i > 0 and blocks[i - 1].next_seq <= cursor):
            return blk
        return None

    async def _load(self, reader: DiskReader, cursor: int, loop: asyncio.AbstractEventLoop) -> tuple[int, str] | None:
        """Read ahead from the block holding `cursor`. None when loaded; else (next seq held, why)."""
        store = self.store
        seg = store.segment_for(cursor)
        if seg is not None and not seg.checked:
            try:
                await loop.run_in_executor(None, store.ensure, seg)
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.error("journal: cannot read %s: %s", seg.path.name, exc.strerror or exc)
                return self._next_held(cursor), "unreadable"
        where = store.locate(cursor)
        if where is None or seg is None:  # locate finds nothing without a segment either
            first = self.first_seq
            return (first, "retention") if cursor < first else (self._next_held(cursor), "lost")
        path, offset, seg_size = where
        if (
            reader.path == path
            and reader.blocks
            and reader.blocks[-1].next_seq <= cursor
            and offset <= reader.next_offset < seg_size
        ):
            offset = reader.next_offset  # carry on where the last read-ahead ended
        want = self.READ_AHEAD
        min_seq = seg.first_seq
        while offset < seg_size:
            size = min(want, seg_size - offset)
            try:
                buf = await loop.run_in_executor(None, store.read, path, offset, size)
            except FileNotFoundError:
                reader.blocks = []
                first = self.first_seq
                return (first, "retention") if cursor < first else (self._next_held(cursor), "lost")
            except OSError as exc:
                log.error("journal: cannot read %s: %s", path.name, exc.strerror)
                return self._next_held(cursor), "unreadable"
            blocks, used, problem = parse_blocks(buf, offset)
            if not blocks and not problem:
                if size < seg_size - offset:
                    want *= 4  # one block larger than the read-ahead
                    continue
                problem = f"an incomplete block at offset {offset}"
            if blocks:
                reader.blocks = blocks
                reader.index = 0
                reader.path = path
                reader.seg_size = seg_size
                reader.next_offset = offset + used
                reader.pos_block = None
                blk = self._block_in(reader, cursor)
                if blk is not None:
                    if blk.first_seq > cursor:
                        return blk.first_seq, "lost"
                    return None
                if blocks[-1].next_seq > cursor:  # the block after a hole
                    return blocks[reader.index].first_seq, "lost"
                min_seq = blocks[-1].next_seq
            offset += used
            if problem:
                # a damaged block: skip to the next intact one, and say what was skipped
                log.error("journal: %s: %s", path.name, problem)
                reader.blocks = []
                try:
                    found = await loop.run_in_executor(None, store.skip_damage, seg, offset, min_seq)
                except OSError:
                    found = None
                if found is None:
                    return self._next_held(cursor), "corrupt"
                if found[1] > cursor:
                    return found[1], "corrupt"
                offset = found[0]
        reader.blocks = []
        return self._next_held(cursor), "lost"

    def _next_held(self, cursor: int) -> int:
        """The oldest seq above `cursor` held anywhere (disk segment or memory)."""
        for seg in self.store.segments:
            if seg.first_seq > cursor and seg.held:
                return min(seg.first_seq, self.log.first_seq)
        return max(cursor + 1, self.log.first_seq)

    # -- writing -------------------------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._writer(), name="journal-writer")]
        if self.policy != "always":
            self._tasks.append(loop.create_task(self._syncer(), name="journal-fsync"))
        self._tasks.append(loop.create_task(self._retainer(), name="journal-retention"))
        if self.store.unchecked():
            self._tasks.append(loop.create_task(self._checker(), name="journal-check"))

    def _caught_up(self) -> bool:
        return (
            self.log.next_seq == self.written_next
            and (self.visible_next == self.written_next or self._held)
            and "write" not in self._errors
            and not self._rewind
            and not (self.policy == "always" and "sync" in self._errors)
        )

    async def _writer(self) -> None:
        log_ = self.log
        loop = asyncio.get_running_loop()
        while True:
            if self._caught_up():
                fut = log_.waiter
                if fut is None or fut.done():
                    fut = log_.waiter = loop.create_future()
                await fut
            if not await self._flush(loop):
                await asyncio.sleep(self.RETRY_S)

    async def _flush(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Write everything appended so far and make it visible as the policy allows. False when
        a write, a reservation or (under `always`) a sync failed."""
        log_ = self.log
        store = self.store
        if self._rewind:
            if time.monotonic() < self._retry_at:
                return False  # the writer tries again in a second
            try:
                start = await loop.run_in_executor(None, store.rewind)
            except OSError as exc:
                self._fail("sync", f"cannot cut unsynced writes from {store.path}: {exc.strerror or exc}")
                return False
            self._rewind = False
            if start < self.written_next:
                self.stats["journal_rewritten"] += self.written_next - start
                log.warning("journal: writing seq %d..%d again after the failed sync", start, self.written_next - 1)
                self.written_next = start
        while self.written_next < log_.next_seq:
            # seqs are durably reserved before any of them is written or shown, one sync per
            # `reserve_step` envelopes, begun half a step early so the writer rarely waits for it
            reserving = self._reserving
            if reserving is not None and reserving.done():
                self._reserving = None
                failure = reserving.exception()
                if failure is not None:
                    why = getattr(failure, "strerror", None) or failure
                    self._fail("write", f"cannot reserve seqs in {store.path}: {why}")
                    return False
            if self._reserving is None and log_.next_seq + store.reserve_step // 2 > store.reserved:
                self._reserving = loop.run_in_executor(None, store.reserve, log_.next_seq + store.reserve_step)
            if log_.next_seq > store.reserved and self._reserving is not None:
                await asyncio.wait([self._reserving])
                continue
            start = self.written_next
            if log_.first_seq > start:
                # retention took entries from memory before they were written: a burst larger
                # than journal.max_bytes inside one write window
                lost = log_.first_seq - start
                self.stats["journal_lost_unwritten"] += lost
                log.error(
                    "journal: %d envelopes (seq %d..%d) left memory before they were written; "
                    "raise gateway.journal.max_bytes",
                    lost,
                    start,
                    log_.first_seq - 1,
                )
                start = self.written_next = log_.keep_from = log_.first_seq
            pending = log_.next_seq - start
            take = pending if pending < 65536 else 65536
            data, n, nxt = log_.collect(start, None, take, 4 * 1024 * 1024 - 64, take, False)
            try:
                store.append(start, n, data, time.time_ns())
            except OSError as exc:
                self._fail("write", f"cannot write {store.path}: {exc.strerror or exc}")
                return False
            self.stats["journal_blocks_written"] += 1
            self.stats["journal_bytes_written"] += len(data)
            self.written_next = nxt
            # memory keeps what is not synced yet: a failed sync writes it again
            log_.keep_from = nxt if self.policy == "never" else min(nxt, self.synced_next)
        self._clear("write")
        if self.policy == "always":
            if self.synced_next < self.written_next or store.dirty:
                covered = self.written_next
                if not await self._sync(loop):
                    return False
                self.synced_next = log_.keep_from = covered
            self._set_visible(self.synced_next)
            return True
        if store.has_retired or (self.policy == "batch" and store.dirty):
            self._sync_wanted.set()
        if self.policy == "batch" and (
            self._held or (self._exposed_since is not None and time.monotonic() - self._exposed_since > self.window)
        ):
            # what subscribers see never waits longer than the window for its sync: past it, what
            # is written becomes visible when the sync in flight ends (the syncer shows it)
            self._held = True
            return True
        self._set_visible(self.written_next)
        return True

    async def _sync(self, loop: asyncio.AbstractEventLoop) -> bool:
        try:
            await self._syncs.run(loop, self.store.sync, self.policy != "never")
        except OSError as exc:
            self._fail("sync", f"cannot sync {self.store.path}: {exc.strerror or exc}")
            if self.policy != "never":
                # a sync that failed once may "succeed" next time without the data: what it
                # covered is cut and written again from memory before the next try
                self._rewind = True
                self._retry_at = time.monotonic() + self.RETRY_S * 0.9
                waiter = self.log.waiter
                if waiter is not None and not waiter.done():
                    self.log.waiter = None
                    waiter.set_result(None)  # the writer does it
            return False
        if self.policy != "never":
            self.stats["journal_fsyncs"] += 1
        self._clear("sync")
        return True

    async def _syncer(self) -> None:
        """`batch`: sync as soon as something is unsynced; writes during a sync go in the next one.
        `never`: only close and index rolled segments."""
        loop = asyncio.get_running_loop()
        while True:
            await self._sync_wanted.wait()
            self._sync_wanted.clear()
            if self._rewind:
                continue  # after a failed sync the writer cuts and writes again, then asks
            began = time.monotonic()
            if self.store.dirty and not await self._sync(loop):
                continue
            # what the store synced, not what was written when the sync began: writes that went
            # in before its snapshot are covered too
            covered = self.store.synced_end if self.policy != "never" else self.written_next
            if covered > self.synced_next:
                self.synced_next = covered
                self.log.keep_from = min(self.written_next, covered)
            if self._exposed_since is not None:
                self._exposed_since = None if self.synced_next >= self.visible_next else began
            if self._held:
                self._held = False
                self._set_visible(self.written_next)

    async def _checker(self) -> None:
        """Check, one at a time, the segments open did not (newest first): those the previous
        process did not close are walked, damage skipped and torn tails cut."""
        loop = asyncio.get_running_loop()
        for seg in self.store.unchecked():
            try:
                await loop.run_in_executor(None, self.store.ensure, seg)
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.error("journal: cannot check %s: %s", seg.path.name, exc.strerror or exc)

    async def checked(self) -> None:
        """Wait until the background check of the segments found at open is done."""
        for t in self._tasks:
            if t.get_name() == "journal-check":
                await asyncio.shield(t)

    async def _retainer(self) -> None:
        while True:
            await asyncio.sleep(self.RETENTION_CHECK_S)
            self.store.retention()

    def _fail(self, kind: str, reason: str) -> None:
        self.stats["journal_write_errors"] += 1
        self._errors[kind] = reason
        if self.state != "failed":
            self.state = "failed"
            self.error = reason
            self._pack = self.log.pack
            self.log.pack = self._refuse
            log.error(
                "journal: %s; refusing new readings until it succeeds again (retrying every %.0f s)",
                reason,
                self.RETRY_S,
            )

    def _refuse(self, payload: Any) -> bytes:
        raise JournalUnwritable(f"journal unwritable: {self.error}")

    def _clear(self, kind: str) -> None:
        if self._errors.pop(kind, None) is None:
            return
        if self._errors:
            self.error = next(iter(self._errors.values()))
            return
        self.state = "ok"
        if self._pack is not None:
            self.log.pack = self._pack
            self._pack = None
        log.warning("journal: writable again after: %s", self.error)
        self.error = ""

    @property
    def refusing(self) -> bool:
        return self.state == "failed"

    async def flush(self) -> None:
        if not self._closing:
            await self._flush(asyncio.get_running_loop())

    async def close(self) -> None:
        """Write and sync what is pending, stop the tasks, record a clean stop, release the directory."""
        if self._closing:
            return
        self._closing = True
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        loop = asyncio.get_running_loop()
        await self._flush(loop)
        try:
            await self._syncs.run(loop, self.store.sync, self.policy != "never")
            if self.written_next == self.log.next_seq and not self._errors:
                await loop.run_in_executor(None, self.store.close_clean)
        except OSError as exc:
            log.error("journal: final sync failed: %s", exc.strerror or exc)
        self._syncs.stop()
        self.store.close()
        self.wake()
