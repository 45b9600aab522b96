"""The durable journal's storage: segment files of CRC-checked blocks under `journal.path`.

    <path>/journal.id              the journal's id: 32 hex digits, made once, kept for ever
    <path>/LOCK                    held (flock) by the one gateway that uses the directory
    <path>/<first seq>.seg         segments, named by the seq of their first record (20 digits)

A segment is a run of blocks. A block is what the writer had pending at one flush: the journal's
framed entries end to end, exactly as the in-memory log holds them, behind a 32-byte header

    magic "TWB1" | count u32 | first_seq u64 | time_ns u64 | length u32 | crc32 u32   (little-endian)

where the CRC-32 covers the header's first 28 bytes and the payload. A crash can only tear the end
of the last segment: at open, the blocks of the last segment are checked and the first bad one is
cut off with everything after it; seq continues above the last good record, so no seq is ever
given twice. Older segments go by retention (bytes on disk, age), oldest first; the segment being
written is never removed, so the last seq is always known.

Everything here is blocking file I/O. The journal calls `append` on the loop thread (a write into
the page cache), and `sync`, `read` and `open` from an executor.
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
# one sparse-index point per this many bytes of a segment: locating a seq reads at most this much
INDEX_EVERY = 64 * 1024
# no block is larger (the writer splits bigger flushes); bounds what a reader must hold
MAX_BLOCK = 4 * 1024 * 1024


class JournalStorageError(GatewayError):
    """The journal directory cannot be used (missing permission, in use, not a journal)."""


@dataclasses.dataclass
class Segment:
    first_seq: int
    path: Path
    size: int = 0  # bytes of good blocks
    next_seq: int = 0  # seq after its last record
    last_time_ns: int = 0
    index_seqs: list = dataclasses.field(default_factory=list)  # first seq of indexed blocks
    index_offsets: list = dataclasses.field(default_factory=list)

    def note_block(self, first_seq, count, offset, length, time_ns):
        if not self.index_offsets or offset - self.index_offsets[-1] >= INDEX_EVERY:
            self.index_seqs.append(first_seq)
            self.index_offsets.append(offset)
        self.size = offset + HEADER.size + length
        self.next_seq = first_seq + count
        self.last_time_ns = time_ns

    def offset_before(self, seq) -> int:
        """Offset of an indexed block at or before the block that holds `seq`."""
        i = bisect.bisect_right(self.index_seqs, seq) - 1
        return self.index_offsets[i] if i >= 0 else 0


def block_crc(header_head: bytes, payload) -> int:
    return zlib.crc32(payload, zlib.crc32(header_head)) & 0xFFFFFFFF


def pack_block(first_seq: int, count: int, time_ns: int, payload) -> bytes:
    head = HEADER.pack(MAGIC, count, first_seq, time_ns, len(payload), 0)[:28]
    return head + struct.pack("<I", block_crc(head, payload))


@dataclasses.dataclass
class Block:
    first_seq: int
    count: int
    time_ns: int
    offset: int  # of its header in the segment
    payload: bytes

    @property
    def next_seq(self):
        return self.first_seq + self.count

    @property
    def end(self):
        return self.offset + HEADER.size + len(self.payload)


def parse_blocks(buf, base_offset: int, verify: bool = True):
    """Complete blocks of `buf` (read at `base_offset` of a segment): (blocks, bytes used, problem).

    Stops at the first incomplete block (more must be read: problem None) or the first bad one
    (problem says what is wrong).
    """
    blocks = []
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
        blocks.append(Block(first_seq, count, time_ns, base_offset + pos, bytes(payload)))
        pos += HEADER.size + length
    return blocks, pos, None


class SegmentStore:
    """The segment files of one journal directory."""

    def __init__(self, path, *, segment_bytes: int, max_bytes: int, max_age_s: float):
        self.path = Path(path)
        self.segment_bytes = int(segment_bytes)
        self.max_bytes = int(max_bytes)
        self.max_age_s = float(max_age_s)
        self.journal_id = ""
        self.segments: list[Segment] = []
        self._firsts: list[int] = []
        self._fd = -1  # the active segment, open for appending
        self._retired: list[int] = []  # fds of rolled segments, to sync and close
        self._retired_lock = threading.Lock()
        self._lock_fd = -1
        self.cut_bytes = 0  # torn tail removed at open
        self.cut_reason = ""
        self.removed_segments = 0  # by retention, since open
        self.bytes_written = 0
        self.blocks_written = 0
        self.dirty = False

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
            self._scan()
            self._open_active()
        except OSError as exc:
            self.close()
            raise JournalStorageError(f"gateway.journal.path: cannot use {where}: {exc.strerror or exc}") from None
        except JournalStorageError:
            self.close()
            raise
        return self.next_seq

    def _open_id(self):
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
        with open(tmp, "w") as f:
            f.write(self.journal_id + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, idfile)
        self._sync_dir()
        log.info("journal: new journal %s in %s", self.journal_id, self.path)

    def _scan(self):
        files = []
        for p in self.path.glob("*" + SUFFIX):
            stem = p.name[: -len(SUFFIX)]
            if stem.isdigit() and int(stem) > 0:
                files.append((int(stem), p))
        files.sort()
        for i, (first, p) in enumerate(files):
            last = i == len(files) - 1
            seg = Segment(first, p, next_seq=first)
            self._walk(seg, verify=last, cut=last)
            if self.segments and seg.first_seq < self.segments[-1].next_seq:
                raise JournalStorageError(
                    f"gateway.journal.path: segment {p.name} overlaps the one before it; the directory is damaged"
                )
            self.segments.append(seg)
        self._firsts = [s.first_seq for s in self.segments]

    def _walk(self, seg: Segment, verify: bool, cut: bool):
        size = seg.path.stat().st_size
        offset = 0
        problem = None
        expect = seg.first_seq
        with open(seg.path, "rb", buffering=0) as f:
            carry = b""
            while offset < size:
                chunk = f.read(4 * 1024 * 1024)
                if not chunk:
                    break
                buf = carry + chunk if carry else chunk
                base = offset - len(carry)
                blocks, used, problem = parse_blocks(buf, base, verify)
                for b in blocks:
                    if b.first_seq < expect:
                        problem = f"block at offset {b.offset} repeats seq {b.first_seq}"
                        break
                    seg.note_block(b.first_seq, b.count, b.offset, len(b.payload), b.time_ns)
                    expect = b.next_seq
                if problem:
                    break
                carry = buf[used:]
                offset += len(chunk)
            if not problem and seg.size < size:
                problem = f"{size - seg.size} bytes of an incomplete block at the end"
        if problem is None:
            return
        if cut:
            self.cut_bytes += size - seg.size
            self.cut_reason = problem
            log.warning(
                "journal: cut %d bytes at the end of %s (%s); seq continues at %d",
                size - seg.size, seg.path.name, problem, seg.next_seq,
            )
            os.truncate(seg.path, seg.size)
        else:
            log.error("journal: %s is damaged after offset %d (%s); the records after it are lost",
                      seg.path.name, seg.size, problem)

    def _open_active(self):
        if not self.segments:
            return
        seg = self.segments[-1]
        self._fd = os.open(seg.path, os.O_WRONLY | os.O_APPEND)

    def _sync_dir(self):
        fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- state ---------------------------------------------------------------------------------
    @property
    def next_seq(self) -> int:
        if not self.segments:
            return 1
        return self.segments[-1].next_seq

    @property
    def first_seq(self) -> int:
        """Oldest seq on disk (== next_seq when nothing is)."""
        for s in self.segments:
            if s.next_seq > s.first_seq:
                return s.first_seq
        return self.next_seq

    @property
    def nbytes(self) -> int:
        return sum(s.size for s in self.segments)

    # -- writing (loop thread) -----------------------------------------------------------------
    def append(self, first_seq: int, count: int, payload: bytes, time_ns: int) -> None:
        """Write one block. Raises OSError (the segment is cut back to where it was)."""
        seg = self.segments[-1] if self.segments else None
        if seg is None or (seg.size >= self.segment_bytes and seg.next_seq > seg.first_seq):
            seg = self._roll(first_seq)
        elif seg.size == 0 and seg.first_seq != first_seq:
            # an empty segment (a torn tail cut it to nothing) takes the name of what it will hold
            new = seg.path.with_name(f"{first_seq:020d}{SUFFIX}")
            os.rename(seg.path, new)
            seg.path = new
            seg.first_seq = seg.next_seq = first_seq
            self._firsts[-1] = first_seq
        header = pack_block(first_seq, count, time_ns, payload)
        offset = seg.size
        try:
            want = len(header) + len(payload)
            done = os.writev(self._fd, [header, payload])
            while done < want:
                rest = (header + payload)[done:]
                n = os.write(self._fd, rest)
                if n <= 0:
                    raise OSError(errno.EIO, "short write")
                done += n
        except OSError:
            try:
                os.ftruncate(self._fd, offset)
            except OSError:
                pass
            raise
        seg.note_block(first_seq, count, offset, len(payload), time_ns)
        self.bytes_written += len(header) + len(payload)
        self.blocks_written += 1
        self.dirty = True

    def _roll(self, first_seq: int) -> Segment:
        path = self.path / f"{first_seq:020d}{SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o640)
        if self._fd >= 0:
            with self._retired_lock:
                self._retired.append(self._fd)
        self._fd = fd
        seg = Segment(first_seq, path, next_seq=first_seq)
        self.segments.append(seg)
        self._firsts.append(first_seq)
        self._new_dir_entry = True
        return seg

    def sync(self, fsync: bool = True) -> None:
        """fsync the active segment and retire rolled ones (executor). Raises OSError."""
        self.dirty = False
        with self._retired_lock:
            retired, self._retired = self._retired, []
        for fd in retired:
            try:
                if fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
        if fsync and self._fd >= 0:
            os.fdatasync(self._fd)
        if getattr(self, "_new_dir_entry", False):
            self._new_dir_entry = False
            if fsync:
                self._sync_dir()

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
                seg.path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.error("journal: cannot remove %s: %s", seg.path.name, exc.strerror)
                break
            total -= seg.size
            self.segments.pop(0)
            self._firsts.pop(0)
            removed += 1
        if removed:
            self.removed_segments += removed
            log.info("journal: retention removed %d segment(s); oldest seq on disk is now %d", removed, self.first_seq)
        return removed

    # -- reading (executor) --------------------------------------------------------------------
    def locate(self, seq: int):
        """(segment path, offset to read from) for `seq`, or None when no segment holds it."""
        i = bisect.bisect_right(self._firsts, seq) - 1
        if i < 0:
            return None
        seg = self.segments[i]
        if seq >= seg.next_seq:
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
        for fd in retired + ([self._fd] if self._fd >= 0 else []):
            try:
                os.close(fd)
            except OSError:
                pass
        self._fd = -1
        if self._lock_fd >= 0:
            try:
                os.close(self._lock_fd)
            except OSError:
                pass
            self._lock_fd = -1
