"""The durable journal's storage: segment files of CRC-checked blocks under `journal.path`.

    <path>/journal.id              the journal's id: 32 hex digits, made once, kept for ever
    <path>/journal.seq             how far seq has gone: the reservation and the last visible seq
    <path>/LOCK                    held (flock) by the one gateway that uses the directory
    <path>/<first seq>.seg         segments, named by the seq of their first record (20 digits)
    <path>/<first seq>.idx         a closed segment's index: where its blocks are, its last seq

A segment is a run of blocks. A block is what the writer had pending at one flush: the journal's
framed entries end to end, exactly as the in-memory log holds them, behind a 32-byte header

    magic "TWB1" | count u32 | first_seq u64 | time_ns u64 | length u32 | crc32 u32   (little-endian)

where the CRC-32 covers the header's first 28 bytes and the payload.

Seq means one thing for ever. Before a block is written, its seqs are reserved in `journal.seq`
(fsynced, in steps of a million, so it costs one sync per million envelopes): no seq at or above
the reservation was ever written or shown to anyone. `journal.seq` also holds the last seq made
visible and the machine's boot id, rewritten in place (no sync) as the writer goes. At open:

- after a clean close, seq carries on exactly where it stopped;
- after a crash of the process alone (same boot id: the page cache kept every write), the last
  segment is walked and seq carries on above both its last record and the last visible seq;
- after a power cut or a reboot (another boot id), writes that were not synced may be gone and
  nobody can tell which seqs subscribers saw: seq carries on at the reservation.

Seqs between the last record on disk and where seq carries on are read back as a Gap `lost`.

Every process writes segments of its own (the first write after open begins a new one), so a
segment the previous process was writing is never written again. Such a segment (it has no .idx)
is walked once, in the background: a damaged run of bytes followed by good blocks is skipped and
read back as a Gap `corrupt`; bytes after the last good block with nothing good after them are a
torn tail and are cut. Closed segments are opened through their .idx, so opening takes the same
time whatever the journal holds; their blocks' CRCs are checked when they are read. Older segments
go by retention (bytes on disk, age), oldest first; the segment being written is never removed.

Everything here is blocking file I/O. The journal calls `append` and `note_visible` on the loop
thread (writes into the page cache), and `open`, `reserve`, `sync`, `ensure` and `read` from an
executor. Every change to the directory goes through `Files`, one place a test can record.
"""

from __future__ import annotations

import bisect
import dataclasses
import errno
import fcntl
import logging
import os
import secrets
import struct
import threading
import time
import zlib
from pathlib import Path

from tianwang.gateway.errors import GatewayError

log = logging.getLogger("tianwang.journal")

HEADER = struct.Struct("<4sIQQII")
MAGIC = b"TWB1"
SUFFIX = ".seg"
INDEX_SUFFIX = ".idx"
SEQ_FILE = "journal.seq"
# one sparse-index point per this many bytes of a segment: locating a seq reads at most this much
INDEX_EVERY = 64 * 1024
# no block is larger (the writer splits bigger flushes); bounds what a reader must hold
MAX_BLOCK = 4 * 1024 * 1024
# a walk reads this much at a time: always more than the largest block
WALK_CHUNK = 8 * 1024 * 1024
# seqs reserved per sync of journal.seq: one fdatasync per million envelopes, and after a power cut
# seq carries on at most this far above the last seq that was used
RESERVE_STEP = 1 << 20

# journal.seq: two reservation slots in different sectors, written in turn (a torn write of one
# leaves the other), and the live record in a page of its own
MARK = struct.Struct("<4sQQB3xI")  # "TWR1" | generation | reserved | clean | crc32
MARK_SLOTS = (0, 512)
LIVE = struct.Struct("<4s16sQI")  # "TWL1" | boot id | visible_next | crc32
LIVE_AT = 4096
# <first>.idx: head, then (seq, offset) index points, then (bad, good) offsets of damaged runs, crc32
INDEX_HEAD = struct.Struct("<4sQQQQII")  # "TWI1" | first | next | size | last_time_ns | points | damaged
PAIR = struct.Struct("<QQ")


class JournalStorageError(GatewayError):
    """The journal directory cannot be used (missing permission, in use, not a journal)."""


def current_boot_id() -> bytes:
    """This boot of the machine (Linux): 16 bytes, or zeros when unknown (then a crash is taken
    for a power cut: the safe reading)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return bytes.fromhex(f.read().strip().replace("-", ""))[:16].ljust(16, b"\0")
    except (OSError, ValueError):
        return bytes(16)


class Files:
    """The file operations that change a journal directory. One place, so a crash test can record
    every write and replay any prefix of them."""

    open = staticmethod(os.open)
    writev = staticmethod(os.writev)
    write = staticmethod(os.write)
    pwrite = staticmethod(os.pwrite)
    fsync = staticmethod(os.fsync)
    fdatasync = staticmethod(os.fdatasync)
    ftruncate = staticmethod(os.ftruncate)
    close = staticmethod(os.close)
    unlink = staticmethod(os.unlink)
    replace = staticmethod(os.replace)

    def sync_dir(self, path: str | os.PathLike[str]) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@dataclasses.dataclass(eq=False)  # a segment is itself: lists find it by identity
class Segment:
    first_seq: int
    path: Path
    size: int = 0  # bytes of good blocks (unchecked: the file's size)
    next_seq: int = 0  # seq after its last record (unchecked: unknown, first_seq)
    last_time_ns: int = 0
    checked: bool = True  # its blocks are known: written by this process, indexed, or walked
    index_seqs: list[int] = dataclasses.field(default_factory=list)  # first seq of indexed blocks
    index_offsets: list[int] = dataclasses.field(default_factory=list)
    damaged: list[tuple[int, int]] = dataclasses.field(default_factory=list)  # (bad offset, next good block's offset)

    def note_block(self, first_seq: int, count: int, offset: int, length: int, time_ns: int) -> None:
        if not self.index_offsets or offset - self.index_offsets[-1] >= INDEX_EVERY:
            self.index_seqs.append(first_seq)
            self.index_offsets.append(offset)
        self.size = offset + HEADER.size + length
        self.next_seq = first_seq + count
        self.last_time_ns = time_ns

    @property
    def held(self) -> bool:
        return self.next_seq > self.first_seq if self.checked else self.size > 0

    def offset_before(self, seq: int) -> int:
        """Offset of an indexed block at or before the block that holds `seq`."""
        i = bisect.bisect_right(self.index_seqs, seq) - 1
        return self.index_offsets[i] if i >= 0 else 0

    def index_bytes(self) -> bytes:
        head = INDEX_HEAD.pack(
            b"TWI1",
            self.first_seq,
            self.next_seq,
            self.size,
            self.last_time_ns,
            len(self.index_seqs),
            len(self.damaged),
        )
        body = b"".join(PAIR.pack(s, o) for s, o in zip(self.index_seqs, self.index_offsets, strict=True))
        body += b"".join(PAIR.pack(b, g) for b, g in self.damaged)
        return head + body + struct.pack("<I", zlib.crc32(body, zlib.crc32(head)) & 0xFFFFFFFF)


def block_crc(header_head: bytes, payload: bytes | memoryview) -> int:
    return zlib.crc32(payload, zlib.crc32(header_head)) & 0xFFFFFFFF


def pack_block(first_seq: int, count: int, time_ns: int, payload: bytes | memoryview) -> bytes:
    head = HEADER.pack(MAGIC, count, first_seq, time_ns, len(payload), 0)[:28]
    return head + struct.pack("<I", block_crc(head, payload))


@dataclasses.dataclass
class Block:
    first_seq: int
    count: int
    time_ns: int
    offset: int  # of its header in the segment
    payload: bytes  # empty when parsed with keep=False
    length: int  # of the payload

    @property
    def next_seq(self) -> int:
        return self.first_seq + self.count

    @property
    def end(self) -> int:
        return self.offset + HEADER.size + self.length


def parse_blocks(
    buf: bytes | bytearray | memoryview, base_offset: int, verify: bool = True, keep: bool = True
) -> tuple[list[Block], int, str | None]:
    """Complete blocks of `buf` (read at `base_offset` of a segment): (blocks, bytes used, problem).

    Stops at the first incomplete block (more must be read: problem None) or the first bad one
    (problem says what is wrong). `keep=False` leaves the payloads out (a walk needs only where).
    """
    blocks: list[Block] = []
    pos = 0
    end = len(buf)
    mv = memoryview(buf)
    while end - pos >= HEADER.size:
        magic, count, first_seq, time_ns, length, crc = HEADER.unpack_from(buf, pos)
        if magic != MAGIC:
            return blocks, pos, f"no block header at offset {base_offset + pos}"
        if length > MAX_BLOCK or count == 0 or count > length:
            return blocks, pos, f"impossible block header at offset {base_offset + pos}"
        if end - pos - HEADER.size < length:
            break
        payload = mv[pos + HEADER.size : pos + HEADER.size + length]
        if verify and block_crc(bytes(mv[pos : pos + 28]), payload) != crc:
            return blocks, pos, f"CRC mismatch in the block at offset {base_offset + pos}"
        blocks.append(Block(first_seq, count, time_ns, base_offset + pos, bytes(payload) if keep else b"", length))
        pos += HEADER.size + length
    return blocks, pos, None


def next_good_block(
    fd: int, start: int, end: int, min_seq: int, limit_seq: int = 0
) -> tuple[int, int, int, int, int] | None:
    """The first intact block at or after `start` (below `end`) holding seqs >= `min_seq` (and
    below `limit_seq` when given): (offset, first_seq, count, time_ns, length), or None.

    A damaged run is skipped by looking for the next block header whose CRC holds; a payload that
    happens to contain the magic does not pass the CRC."""
    pos = start
    while pos < end:
        chunk = os.pread(fd, min(WALK_CHUNK, end - pos), pos)
        if not chunk:
            return None
        i = chunk.find(MAGIC)
        while i >= 0:
            off = pos + i
            if end - off < HEADER.size:
                return None
            head = chunk[i : i + HEADER.size] if i + HEADER.size <= len(chunk) else os.pread(fd, HEADER.size, off)
            _, count, first_seq, time_ns, length, crc = HEADER.unpack(head)
            if (
                0 < count <= length <= MAX_BLOCK
                and first_seq >= min_seq
                and (not limit_seq or first_seq + count <= limit_seq)
                and off + HEADER.size + length <= end
            ):
                if i + HEADER.size + length <= len(chunk):
                    payload = chunk[i + HEADER.size : i + HEADER.size + length]
                else:
                    payload = os.pread(fd, length, off + HEADER.size)
                if block_crc(head[:28], payload) == crc:
                    return off, first_seq, count, time_ns, length
            i = chunk.find(MAGIC, i + 1)
        if pos + len(chunk) >= end:
            return None
        pos += len(chunk) - (len(MAGIC) - 1)  # a magic split across two chunks is found in the next
    return None


class SegmentStore:
    """The segment files of one journal directory."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        segment_bytes: int,
        max_bytes: int,
        max_age_s: float,
        files: Files | None = None,
        boot_id: bytes | None = None,
        reserve_step: int = RESERVE_STEP,
    ) -> None:
        self.path = Path(path)
        self.segment_bytes = int(segment_bytes)
        self.max_bytes = int(max_bytes)
        self.max_age_s = float(max_age_s)
        self.files = files or Files()
        self.boot_id = current_boot_id() if boot_id is None else bytes(boot_id).ljust(16, b"\0")[:16]
        self.reserve_step = int(reserve_step)
        self.journal_id = ""
        self.segments: list[Segment] = []
        self._firsts: list[int] = []
        self._active: Segment | None = None  # written by this process
        self._fd = -1  # the active segment, open for appending
        self._retired: list[tuple[int, Segment]] = []  # (fd, Segment) of rolled segments, to sync, close and index
        self._retired_lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._check_lock = threading.Lock()
        self._mark_lock = threading.Lock()
        self._new_dir_entry = False
        self._lock_fd = -1
        self._seq_fd = -1
        self._mark_gen = 0
        self.reserved = 0  # no seq >= this was ever written or made visible (durable in journal.seq)
        self.end_seq = 1  # the next seq to write
        self.how_opened = ""  # new, clean, crashed, power cut, legacy: what open found
        self.cut_bytes = 0  # torn tails removed
        self.cut_reason = ""
        self.corrupt_bytes = 0  # damaged runs inside segments, skipped
        self.removed_segments = 0  # by retention, since open
        self.bytes_written = 0
        self.blocks_written = 0
        self.write_gen = 0  # appends so far
        self._tail: tuple[Segment, int, int] | None = None  # (segment, size, next seq) after the last append
        self._synced_point: tuple[Segment, int, int] | None = None  # the same, at the last successful sync
        self._opened_end = 1
        self.synced_end = 1  # seqs below it are synced (as far as this process wrote them)
        self.rewinds = 0  # failed syncs whose unsynced writes were cut to be written again
        self.synced_gen = 0  # appends covered by the last successful sync

    # -- opening -------------------------------------------------------------------------------
    def open(self) -> int:
        """Create or recover the directory; return the next seq. Raises JournalStorageError."""
        where = self.path
        try:
            where.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(where / "LOCK", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise JournalStorageError(f"gateway.journal.path: cannot use {where}: {exc.strerror}") from None
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(self._lock_fd, 32, 0).decode("ascii", "replace").strip() or "?"
            os.close(self._lock_fd)
            self._lock_fd = -1
            raise JournalStorageError(
                f"gateway.journal.path: {where} is in use by another gateway (pid {holder}); "
                "each gateway needs a journal directory of its own"
            ) from None
        os.ftruncate(self._lock_fd, 0)
        os.pwrite(self._lock_fd, f"{os.getpid()}\n".encode(), 0)
        try:
            self._open_id()
            self._list()
            self._recover(*self._open_marks())
            self._opened_end = self.synced_end = self.end_seq
            self.reserve(self.end_seq + self.reserve_step)
            self.note_visible(self.end_seq)  # this boot's record, before anything is shown
        except OSError as exc:
            self.close()
            raise JournalStorageError(f"gateway.journal.path: cannot use {where}: {exc.strerror or exc}") from None
        except JournalStorageError:
            self.close()
            raise
        return self.end_seq

    def _open_id(self) -> None:
        idfile = self.path / "journal.id"
        try:
            text = idfile.read_text().strip()
        except FileNotFoundError:
            text = ""
            if any(self.path.glob("*" + SUFFIX)):
                raise JournalStorageError(
                    f"gateway.journal.path: {self.path} holds segments but no journal.id; "
                    "restore the file or move the segments away"
                ) from None
        if text:
            if len(text) != 32 or any(c not in "0123456789abcdef" for c in text):
                raise JournalStorageError(f"gateway.journal.path: {idfile} does not hold a journal id")
            self.journal_id = text
            return
        self.journal_id = secrets.token_hex(16)
        tmp = idfile.with_suffix(".tmp")
        fs = self.files
        fd = fs.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            fs.write(fd, (self.journal_id + "\n").encode())
            fs.fsync(fd)
        finally:
            fs.close(fd)
        fs.replace(tmp, idfile)
        fs.sync_dir(self.path)
        log.info("journal: new journal %s in %s", self.journal_id, self.path)

    def _list(self) -> None:
        found: list[Segment] = []
        with os.scandir(self.path) as it:
            for entry in it:
                name = entry.name
                if not name.endswith(SUFFIX) or not name[: -len(SUFFIX)].isdigit():
                    continue
                first = int(name[: -len(SUFFIX)])
                if first <= 0:
                    continue
                st = entry.stat()
                found.append(
                    Segment(
                        first,
                        Path(entry.path),
                        size=st.st_size,
                        next_seq=first,
                        last_time_ns=st.st_mtime_ns,
                        checked=False,
                    )
                )
        found.sort(key=lambda s: s.first_seq)
        empty = [s for s in found if s.size == 0]
        for seg in empty:  # begun and never written: nothing to keep, and the name may be needed again
            self.files.unlink(seg.path)
            self._unlink_index(seg)
        if empty:
            self.files.sync_dir(self.path)
        self.segments = [s for s in found if s.size > 0]
        self._firsts = [s.first_seq for s in self.segments]

    def _open_marks(self) -> tuple[tuple[int, bool] | None, int | None]:
        """Open (or create) journal.seq: (reservation (reserved, clean) or None, live visible_next
        written during this boot or None)."""
        fs = self.files
        p = self.path / SEQ_FILE
        try:
            self._seq_fd = fs.open(p, os.O_RDWR)
        except FileNotFoundError:
            self._seq_fd = fs.open(p, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o640)
            fs.fsync(self._seq_fd)
            fs.sync_dir(self.path)
            return None, None
        raw = os.pread(self._seq_fd, LIVE_AT + LIVE.size, 0)
        best = None
        damaged = False
        for at in MARK_SLOTS:
            rec = raw[at : at + MARK.size]
            if len(rec) < MARK.size or not any(rec):
                continue  # never written
            magic, gen, reserved, clean, crc = MARK.unpack(rec)
            if magic != b"TWR1" or zlib.crc32(rec[:-4]) & 0xFFFFFFFF != crc:
                damaged = True
            elif best is None or gen > best[0]:
                best = (gen, reserved, bool(clean))
        if damaged:
            if best is None:
                raise JournalStorageError(
                    f"gateway.journal.path: {p} is damaged: how far seq went is unknown; "
                    "move the directory away to start a new journal"
                )
            # the damaged slot may have been the newer one: it reserved at most one step more (the
            # next reservation goes into the damaged slot, the good one stays as it is)
            log.error("journal: one record of %s is damaged; seq carries on a reservation step further", p)
            best = (best[0], best[1] + self.reserve_step, False)
        live = None
        rec = raw[LIVE_AT : LIVE_AT + LIVE.size]
        if len(rec) == LIVE.size:
            magic, boot, visible, crc = LIVE.unpack(rec)
            if (
                magic == b"TWL1"
                and zlib.crc32(rec[:-4]) & 0xFFFFFFFF == crc
                and boot == self.boot_id
                and boot != bytes(16)
            ):
                live = visible
        if best is None:
            return None, live
        self._mark_gen = best[0]
        return (best[1], best[2]), live

    def _recover(self, mark: tuple[int, bool] | None, live: int | None) -> None:
        last = self.segments[-1] if self.segments else None
        if mark is None:
            # a new directory, or one written before journal.seq existed: the last segment's end
            self.how_opened = "new" if last is None else "legacy"
            if last is not None:
                self.ensure(last)
            self.end_seq = max(last.next_seq if last else 1, live or 1)
        elif mark[1]:
            self.how_opened = "clean"
            self.end_seq = mark[0]
        elif live is not None:
            # the process died, the machine did not: every write is in the page cache, so the last
            # segment's end is exact; the last visible seq guards against a file damaged meanwhile
            self.how_opened = "crashed"
            if last is not None:
                self.ensure(last)
            end = last.next_seq if last else 1
            self.end_seq = max(end, live)
            if live > end:
                log.error(
                    "journal: seq %d..%d were visible before the restart and are not on disk; "
                    "they are reported as lost",
                    end,
                    live - 1,
                )
        else:
            # power cut or reboot: unsynced writes may be gone, and what subscribers saw is unknown
            self.how_opened = "power cut"
            self.end_seq = mark[0]
            log.warning(
                "journal: the last run of this journal did not close, and which seqs it showed is not known "
                "(the machine restarted since); seq carries on at %d, and what is not on disk below it "
                "is reported as lost",
                self.end_seq,
            )
        self.end_seq = max(self.end_seq, 1)
        self.reserved = mark[0] if mark is not None else 0

    def _unlink_index(self, seg: Segment) -> None:
        try:
            self.files.unlink(seg.path.with_suffix(INDEX_SUFFIX))
        except FileNotFoundError:
            pass

    # -- checking (executor) -------------------------------------------------------------------
    def ensure(self, seg: Segment) -> None:
        """Know `seg`'s blocks: from its .idx, else by walking it (skipping damage, cutting a torn
        tail) and writing the .idx. Raises OSError."""
        if seg.checked:
            return
        with self._check_lock:
            if seg.checked:
                return
            if not self._load_index(seg):
                self._walk(seg)
            seg.checked = True

    def unchecked(self) -> list:
        return [s for s in reversed(self.segments) if not s.checked]

    def _load_index(self, seg: Segment) -> bool:
        try:
            raw = (seg.path.with_suffix(INDEX_SUFFIX)).read_bytes()
        except OSError:
            return False
        if len(raw) < INDEX_HEAD.size + 4:
            return False
        magic, first, nxt, size, last_ns, points, damaged = INDEX_HEAD.unpack_from(raw, 0)
        want = INDEX_HEAD.size + (points + damaged) * PAIR.size + 4
        if magic != b"TWI1" or len(raw) != want or first != seg.first_seq or size != seg.size:
            return False
        if zlib.crc32(raw[:-4]) & 0xFFFFFFFF != struct.unpack_from("<I", raw, want - 4)[0]:
            return False
        pairs = [PAIR.unpack_from(raw, INDEX_HEAD.size + i * PAIR.size) for i in range(points + damaged)]
        seg.index_seqs = [s for s, _ in pairs[:points]]
        seg.index_offsets = [o for _, o in pairs[:points]]
        seg.damaged = pairs[points:]
        seg.next_seq, seg.last_time_ns = nxt, last_ns
        return True

    def _walk(self, seg: Segment) -> None:
        """Every block of a segment nobody closed. Damage followed by good blocks is skipped (and
        counted); what follows the last good block with nothing good after it is a torn tail: cut."""
        i = self.segments.index(seg) if seg in self.segments else -1
        limit = self.segments[i + 1].first_seq if 0 <= i < len(self.segments) - 1 else 0
        fd = os.open(seg.path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            seg.size, seg.next_seq = 0, seg.first_seq
            seg.index_seqs, seg.index_offsets, seg.damaged = [], [], []
            pos = 0
            expect = seg.first_seq
            problem: str | None = None
            while pos < size:
                buf = os.pread(fd, min(WALK_CHUNK, size - pos), pos)
                blocks, used, problem = parse_blocks(buf, pos, True, False)
                for b in blocks:
                    if b.first_seq < expect or (limit and b.next_seq > limit):
                        problem = f"block at offset {b.offset} is out of seq order"
                        used = b.offset - pos
                        break
                    seg.note_block(b.first_seq, b.count, b.offset, b.length, b.time_ns)
                    expect = b.next_seq
                pos += used
                if problem is None and used:
                    continue
                if problem is None:
                    problem = f"{size - pos} bytes of an incomplete block"
                found = next_good_block(fd, pos + 1, size, expect, limit)
                if found is None:
                    break
                log.error(
                    "journal: %s: %s; skipped %d damaged bytes, the records after them are kept",
                    seg.path.name,
                    problem,
                    found[0] - pos,
                )
                self.corrupt_bytes += found[0] - pos
                seg.damaged.append((pos, found[0]))
                pos = found[0]
        finally:
            os.close(fd)
        if seg.size < size:
            self.cut_bytes += size - seg.size
            self.cut_reason = problem or "torn tail"
            log.warning(
                "journal: cut %d bytes of a torn tail at the end of %s (%s); its last record is seq %d",
                size - seg.size,
                seg.path.name,
                self.cut_reason,
                seg.next_seq - 1,
            )
            if seg.size == 0:
                # nothing good in it: it goes (its name may be the next segment's)
                self.files.unlink(seg.path)
                self._unlink_index(seg)
                self.files.sync_dir(self.path)
                if seg in self.segments:
                    i = self.segments.index(seg)
                    del self.segments[i]
                    del self._firsts[i]
                return
            fd = self.files.open(seg.path, os.O_WRONLY)
            try:
                self.files.ftruncate(fd, seg.size)
                self.files.fsync(fd)
            finally:
                self.files.close(fd)
        if seg.size:
            self._write_index(seg)

    def _write_index(self, seg: Segment) -> None:
        """The .idx of a closed segment whose blocks are synced (or, under `never`, written). It
        is only a shortcut: a torn or stale one fails its CRC or size and the segment is walked."""
        if seg not in self.segments:
            return  # retention took it meanwhile
        fs = self.files
        try:
            fd = fs.open(seg.path.with_suffix(INDEX_SUFFIX), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
            try:
                fs.write(fd, seg.index_bytes())
            finally:
                fs.close(fd)
        except OSError as exc:  # a shortcut missing costs a walk at the next open, nothing more
            log.warning("journal: cannot write the index of %s: %s", seg.path.name, exc.strerror or exc)

    def skip_damage(self, seg: Segment, offset: int, min_seq: int) -> tuple[int, int] | None:
        """After a bad block at `offset` of `seg`: (offset, first seq) of the next intact block, or None."""
        fd = os.open(seg.path, os.O_RDONLY)
        try:
            start = offset + 1
            for bad, good in seg.damaged:
                if bad <= offset < good:
                    start = good
                    break
            found = next_good_block(fd, start, seg.size, min_seq)
        finally:
            os.close(fd)
        return None if found is None else (found[0], found[1])

    # -- state ---------------------------------------------------------------------------------
    @property
    def next_seq(self) -> int:
        return self.end_seq

    @property
    def first_seq(self) -> int:
        """Oldest seq on disk (== next_seq when nothing is)."""
        for s in self.segments:
            if s.held:
                return s.first_seq
        return self.end_seq

    @property
    def nbytes(self) -> int:
        return sum(s.size for s in self.segments)

    # -- writing (loop thread) -----------------------------------------------------------------
    def append(self, first_seq: int, count: int, payload: bytes, time_ns: int) -> None:
        """Write one block. Raises OSError (the segment is cut back to where it was)."""
        if first_seq + count > self.reserved:
            raise OSError(errno.EINVAL, f"seq {first_seq + count - 1} is not reserved yet")
        seg = self._active
        if seg is None or (seg.size >= self.segment_bytes and seg.next_seq > seg.first_seq):
            seg = self._roll(first_seq)
        header = pack_block(first_seq, count, time_ns, payload)
        offset = seg.size
        fs = self.files
        try:
            want = len(header) + len(payload)
            done = fs.writev(self._fd, [header, payload])
            while done < want:
                n = fs.write(self._fd, (header + payload)[done:])
                if n <= 0:
                    raise OSError(errno.EIO, "short write")
                done += n
        except OSError:
            try:
                fs.ftruncate(self._fd, offset)
            except OSError:
                pass
            raise
        seg.note_block(first_seq, count, offset, len(payload), time_ns)
        self.end_seq = first_seq + count
        self._tail = (seg, seg.size, seg.next_seq)  # one assignment: a sync takes it whole
        self.bytes_written += len(header) + len(payload)
        self.blocks_written += 1
        self.write_gen += 1

    @property
    def dirty(self) -> bool:
        return self.write_gen != self.synced_gen or bool(self._retired) or self._new_dir_entry

    @property
    def has_retired(self) -> bool:
        return bool(self._retired)

    def _roll(self, first_seq: int) -> Segment:
        path = self.path / f"{first_seq:020d}{SUFFIX}"
        fd = self.files.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o640)
        if self._fd >= 0 and self._active is not None:  # an open fd is the active segment's
            with self._retired_lock:
                self._retired.append((self._fd, self._active))
        self._fd = fd
        seg = Segment(first_seq, path, next_seq=first_seq)
        self._active = seg
        self.segments.append(seg)
        self._firsts.append(first_seq)
        self._new_dir_entry = True
        return seg

    def note_visible(self, visible_next: int) -> None:
        """Record, without a sync, how far subscribers may read (loop thread). After a crash of the
        process alone it tells which seqs were shown, even if a file was damaged meanwhile."""
        rec = LIVE.pack(b"TWL1", self.boot_id, visible_next, 0)[:-4]
        try:
            self.files.pwrite(self._seq_fd, rec + struct.pack("<I", zlib.crc32(rec) & 0xFFFFFFFF), LIVE_AT)
        except OSError:
            pass  # only a guard: the reservation alone already keeps seqs from being given twice

    def reserve(self, upto: int, clean: bool = False) -> None:
        """Durably record that no seq >= `upto` has been used (executor). Raises OSError."""
        with self._mark_lock:
            gen = self._mark_gen + 1
            rec = MARK.pack(b"TWR1", gen, upto, 1 if clean else 0, 0)[:-4]
            rec += struct.pack("<I", zlib.crc32(rec) & 0xFFFFFFFF)
            self.files.pwrite(self._seq_fd, rec, MARK_SLOTS[gen % 2])
            self.files.fdatasync(self._seq_fd)
            self._mark_gen = gen
            self.reserved = upto if clean else max(self.reserved, upto)

    def sync(self, fsync: bool = True) -> None:
        """fsync the active segment and the directory, and close and index rolled segments
        (executor). Raises OSError; what failed is tried again at the next call."""
        fs = self.files
        with self._sync_lock:
            gen = self.write_gen
            tail = self._tail
            new_entry, self._new_dir_entry = self._new_dir_entry, False
            try:
                with self._retired_lock:
                    retired = list(self._retired)
                for fd, seg in retired:
                    if fsync:
                        fs.fsync(fd)
                        self._synced_point = (seg, seg.size, seg.next_seq)
                    with self._retired_lock:
                        self._retired.remove((fd, seg))
                    fs.close(fd)
                    self._write_index(seg)
                if fsync and self._fd >= 0:
                    fs.fdatasync(self._fd)
                if fsync and new_entry:
                    fs.sync_dir(self.path)
            except OSError:
                self._new_dir_entry = self._new_dir_entry or new_entry
                raise
            if fsync and tail is not None:
                self._synced_point = tail
                self.synced_end = tail[2]
            self.synced_gen = max(self.synced_gen, gen) if fsync else gen

    def rewind(self) -> int:
        """After a failed sync: what was written since the last good one cannot be trusted (the
        kernel may have dropped those pages and will not say so again), so it is cut off the
        segments, to be written again from memory. Returns the first seq to write (executor).
        Raises OSError."""
        fs = self.files
        with self._sync_lock:
            point = self._synced_point
            with self._retired_lock:
                written = list(self._retired)
                self._retired = []
            if self._fd >= 0 and self._active is not None:  # an open fd is the active segment's
                written.append((self._fd, self._active))
            self._fd, self._active, self._tail = -1, None, None
            for fd, seg in written:
                if point is not None and seg is point[0]:
                    fs.ftruncate(fd, point[1])
                    seg.size, seg.next_seq = point[1], point[2]
                    while seg.index_offsets and seg.index_offsets[-1] >= seg.size:
                        seg.index_offsets.pop()
                        seg.index_seqs.pop()
                    with self._retired_lock:
                        self._retired.append((fd, seg))  # synced and indexed at the next sync
                    continue
                fs.close(fd)
                fs.unlink(seg.path)
                if seg in self.segments:
                    i = self.segments.index(seg)
                    del self.segments[i]
                    del self._firsts[i]
            self._new_dir_entry = True
            self.end_seq = point[2] if point is not None else self._opened_end
            self.rewinds += 1
            return self.end_seq

    def close_clean(self) -> None:
        """After a successful final sync: index the active segment and record that seq stopped
        exactly at `end_seq` (executor). Raises OSError."""
        if self._active is not None and self._active.size:
            self._write_index(self._active)
        self.reserve(self.end_seq, clean=True)

    def retention(self, now_ns: int | None = None) -> int:
        """Remove the oldest segments past `max_bytes` or `max_age_s`; the active one stays.
        Returns how many went."""
        now_ns = now_ns or time.time_ns()
        oldest_ok = now_ns - int(self.max_age_s * 1e9)
        total = self.nbytes
        removed = 0
        while len(self.segments) > 1:
            seg = self.segments[0]
            if total <= self.max_bytes and seg.last_time_ns >= oldest_ok:
                break
            try:
                self.files.unlink(seg.path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.error("journal: cannot remove %s: %s", seg.path.name, exc.strerror)
                break
            try:
                self._unlink_index(seg)
            except OSError:
                pass
            total -= seg.size
            self.segments.pop(0)
            self._firsts.pop(0)
            removed += 1
        if removed:
            self.removed_segments += removed
            log.info("journal: retention removed %d segment(s); oldest seq on disk is now %d", removed, self.first_seq)
        return removed

    # -- reading (executor) --------------------------------------------------------------------
    def segment_for(self, seq: int) -> Segment | None:
        """The segment whose name is at or below `seq` (it may hold `seq`), or None."""
        i = bisect.bisect_right(self._firsts, seq) - 1
        return self.segments[i] if i >= 0 else None

    def locate(self, seq: int) -> tuple[Path, int, int] | None:
        """(segment path, offset to read from, good bytes) for `seq`, or None when no segment
        holds it. The segment must be checked (`ensure`)."""
        seg = self.segment_for(seq)
        if seg is None or not seg.checked or seq >= seg.next_seq:
            return None
        return seg.path, seg.offset_before(seq), seg.size

    def read(self, path: Path, offset: int, nbytes: int) -> bytes:
        """Bytes of a segment (FileNotFoundError once retention removed it)."""
        fd = os.open(path, os.O_RDONLY)
        try:
            return os.pread(fd, nbytes, offset)
        finally:
            os.close(fd)

    def close(self) -> None:
        with self._retired_lock:
            retired, self._retired = self._retired, []
        for fd in (
            [fd for fd, _ in retired]
            + ([self._fd] if self._fd >= 0 else [])
            + ([self._seq_fd] if self._seq_fd >= 0 else [])
        ):
            try:
                self.files.close(fd)
            except OSError:
                pass
        self._fd = self._seq_fd = -1
        if self._lock_fd >= 0:
            try:
                os.close(self._lock_fd)
            except OSError:
                pass
            self._lock_fd = -1
