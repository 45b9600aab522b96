"""Crash consistency of the durable journal, beyond kill -9: every change the segment store makes
to its directory is recorded (through `segments.Files`), with the moments seqs became visible.
Then for many crash points the directory is rebuilt as a crash at that point could leave it and
reopened, and three things must hold: no seq is ever given twice with different content (seq
carries on past everything visible and everything on disk), every envelope read back is the one
published under its seq, and every seq below the next one is either read back or inside a Gap.

Crash points: every prefix of the writes as a crash of the process leaves it (the page cache
keeps every write, same boot), every prefix as a power cut leaves it (only what was synced, and
only directory entries whose directory was synced, another boot), the last write torn in half
(both ways), and one flipped bit in an old and in a new block. TIANWANG_CRASH_POINTS sets how
many prefixes are tried per policy (default 60, spread over the run; 0 = every one); above 60 the
recorded run grows with it (a fifth as many bursts of readings)."""

import asyncio
import os
import random
import shutil
import tempfile
import threading
from pathlib import Path

import msgpack
import pytest

from tianwang.gateway.datapath.journal import DiskReader, DurableJournal
from tianwang.gateway.datapath.router import Router
from tianwang.gateway.datapath.segments import Files, SegmentStore
from tianwang.gateway.framing import TopicFilter
from tianwang.v1 import gateway_pb2 as pb

pytestmark = pytest.mark.timeout(600)

POINTS = int(os.environ.get("TIANWANG_CRASH_POINTS", "60"))
BOOT = b"\x01" * 16
OTHER_BOOT = b"\x02" * 16
TRIED = {}  # policy -> crash points tried (printed at the end)


class RecordingFiles(Files):
    """Files that log every change: ("create", name, ino), ("write", ino, offset, bytes),
    ("truncate", ino, size), ("sync", ino), ("unlink", name), ("rename", src, dst), ("dirsync",),
    and the journal's ("visible", seq)."""

    def __init__(self, root):
        self.root = Path(root)
        self.ops = []
        self.lock = threading.Lock()
        self.append_fds = set()

    def _rec(self, *op):
        with self.lock:
            self.ops.append(op)

    def _name(self, path):
        return Path(path).name

    def open(self, path, flags, mode=0o777):
        existed = os.path.exists(path)
        fd = os.open(path, flags, mode)
        ino = os.fstat(fd).st_ino
        if flags & os.O_CREAT and not existed:
            self._rec("create", self._name(path), ino)
        if flags & os.O_TRUNC:
            self._rec("truncate", ino, 0)
        if flags & os.O_APPEND:
            self.append_fds.add(fd)
        else:
            self.append_fds.discard(fd)
        return fd

    def _at(self, fd):
        return os.fstat(fd).st_size if fd in self.append_fds else os.lseek(fd, 0, os.SEEK_CUR)

    def writev(self, fd, bufs):
        at = self._at(fd)
        n = os.writev(fd, bufs)
        self._rec("write", os.fstat(fd).st_ino, at, b"".join(bytes(b) for b in bufs)[:n])
        return n

    def write(self, fd, data):
        at = self._at(fd)
        n = os.write(fd, data)
        self._rec("write", os.fstat(fd).st_ino, at, bytes(data[:n]))
        return n

    def pwrite(self, fd, data, offset):
        n = os.pwrite(fd, data, offset)
        self._rec("write", os.fstat(fd).st_ino, offset, bytes(data[:n]))
        return n

    def fsync(self, fd):
        os.fsync(fd)
        self._rec("sync", os.fstat(fd).st_ino)

    fdatasync = fsync

    def ftruncate(self, fd, size):
        os.ftruncate(fd, size)
        self._rec("truncate", os.fstat(fd).st_ino, size)

    def close(self, fd):
        self.append_fds.discard(fd)
        os.close(fd)

    def unlink(self, path):
        os.unlink(path)
        self._rec("unlink", self._name(path))

    def replace(self, src, dst):
        os.replace(src, dst)
        self._rec("rename", self._name(src), self._name(dst))

    def sync_dir(self, path):
        super().sync_dir(path)
        self._rec("dirsync")


def rebuild(ops, k, where, power=False, torn=False):
    """The directory a crash after ops[:k] leaves (the last of them torn in half when `torn`):
    everything written (a crash of the process), or only what was synced (a power cut)."""
    cache, disk = {}, {}  # ino -> bytearray: the page cache, and what reached the disk
    names, durable_names = {}, {}  # name -> ino
    todo = ops[:k]
    for i, op in enumerate(todo):
        kind = op[0]
        if kind == "create":
            names[op[1]] = op[2]
            cache.setdefault(op[2], bytearray())
            disk.setdefault(op[2], bytearray())
        elif kind == "write":
            _, ino, at, data = op
            if torn and i == len(todo) - 1:
                data = data[: len(data) // 2]
            buf = cache[ino]
            if len(buf) < at:
                buf.extend(bytes(at - len(buf)))
            buf[at : at + len(data)] = data
        elif kind == "truncate":
            del cache[op[1]][op[2] :]
        elif kind == "sync":
            disk[op[1]] = bytearray(cache[op[1]])
        elif kind == "unlink":
            names.pop(op[1], None)
        elif kind == "rename":
            names[op[2]] = names.pop(op[1])
        elif kind == "dirsync":
            durable_names = dict(names)
    if where.exists():
        shutil.rmtree(where)
    where.mkdir(parents=True)
    for name, ino in (durable_names if power else names).items():
        (where / name).write_bytes(bytes(disk[ino] if power else cache[ino]))


def visible_before(ops, k):
    v = 1
    for op in ops[:k]:
        if op[0] == "visible":
            v = max(v, op[1])
    return v


async def replay(j, cursor=1):
    """Everything a subscriber from `cursor` gets: ({seq: payload}, [(from, to, reason)])."""
    out, gaps = {}, []
    rd = DiskReader()
    flt = TopicFilter(["#"])
    while cursor < j.next_seq:
        gap, cursor = j.gap_for(cursor)
        if gap is not None:
            g = pb.Batch.FromString(gap).gap
            gaps.append((g.from_seq, g.to_seq, g.reason))
            continue
        if j.on_disk(cursor):
            data, n, cursor = await j.read_disk(rd, cursor, flt, 997, 1 << 16)
        else:
            data, n, cursor = j.collect(cursor, flt, 997, 1 << 16)
        b = pb.Batch.FromString(data)
        if b.HasField("gap"):
            gaps.append((b.gap.from_seq, b.gap.to_seq, b.gap.reason))
        for e in b.envelopes:
            assert e.seq not in out, f"seq {e.seq} read back twice"
            out[e.seq] = msgpack.unpackb(e.payload)
    return out, gaps


def open_store(where, boot, files=None):
    return SegmentStore(
        where, segment_bytes=2048, max_bytes=1 << 30, max_age_s=1e9, boot_id=boot, reserve_step=64, files=files
    )


async def record_run(where, policy):
    """A journal's life with its writes recorded: a first run that closes cleanly, then a second
    that crashes. Bursts of readings, some settled, some still being written when the run ends;
    segments roll and seqs are reserved several times."""
    files = RecordingFiles(where)
    published = {}
    rng = random.Random(20)
    bursts = max(14, POINTS // 5)
    for _run, clean in ((0, True), (1, False)):
        store = open_store(where, BOOT, files)
        await asyncio.get_running_loop().run_in_executor(None, store.open)
        j = DurableJournal(1 << 20, store, fsync=policy, fsync_window_ms=2)
        note = store.note_visible

        def noted(seq, note=note):
            files._rec("visible", seq)
            note(seq)

        store.note_visible = noted
        await j.start()
        router = Router(j)
        for _ in range(bursts // 3 if clean else bursts):
            for _ in range(rng.randint(1, 12)):
                i = len(published)
                seq = router.publish(f"test/d{i % 3}/r", f"d{i % 3}", {"i": i, "pad": "p" * rng.randint(0, 90)})
                published[seq] = {"i": i}
            for _ in range(rng.randint(0, 6)):
                await asyncio.sleep(0.002 * rng.random())
        if clean:
            await j.close()
            continue
        for _ in range(400):
            if j.visible_next == j.log.next_seq:
                break
            await asyncio.sleep(0.005)
        # the end of the second run is a crash: the tasks stop, nothing is closed
        for t in j._tasks:
            t.cancel()
        await asyncio.gather(*j._tasks, return_exceptions=True)
        await asyncio.sleep(0.05)  # an executor job in flight finishes (its write is recorded)
        store.close()
    return files.ops, published


async def check_point(ops, published, k, where, power, torn=False, flip=None, policy="batch"):
    rebuild(ops, k, where, power=power, torn=torn)
    if flip is not None:
        segs = sorted(where.glob("*.seg"))
        if not segs:
            return
        seg = segs[0] if flip[0] == "old" else segs[-1]
        raw = bytearray(seg.read_bytes())
        if not raw:
            return
        at = flip[1] % len(raw)
        raw[at] ^= 1 << flip[2]
        seg.write_bytes(bytes(raw))
    if not (where / "journal.id").exists():
        return  # the crash came before the journal existed
    visible = visible_before(ops, k)
    store = open_store(where, OTHER_BOOT if power else BOOT)
    await asyncio.get_running_loop().run_in_executor(None, store.open)
    j = DurableJournal(1 << 20, store, fsync=policy)
    await j._checker()
    how = ("power cut" if power else "process") + (", torn" if torn else "") + (f", flip {flip}" if flip else "")
    what = f"crash after op {k}/{len(ops)} ({how})"
    try:
        nxt = j.next_seq
        # 1. seq carries on past everything ever visible
        assert nxt >= visible, f"{what}: seq carries on at {nxt}, but {visible - 1} was visible"
        got, gaps = await replay(j)
        # 2. every envelope read back is the one published under its seq
        for seq, payload in got.items():
            assert seq < nxt and seq in published, f"{what}: seq {seq} read back, never published"
            assert payload["i"] == published[seq]["i"], f"{what}: seq {seq} holds another envelope"
        # 3. every seq below the next one is read back or inside a Gap
        covered = set(got)
        for a, b, reason in gaps:
            # `retention` only below the oldest seq held (a journal whose first seqs were reserved
            # and never written)
            assert reason in ("lost", "corrupt") or (reason == "retention" and a == 1 and b == j.first_seq - 1), (
                f"{what}: gap {a}..{b} {reason}"
            )
            covered.update(range(a, b + 1))
        assert covered >= set(range(1, nxt)), (
            f"{what}: seqs {sorted(set(range(1, nxt)) - covered)[:5]} missing without a Gap"
        )
        if not power and flip is None and not torn:
            # a crash of the process alone loses nothing that was visible
            assert set(range(1, visible)) <= set(got), f"{what}: lost {sorted(set(range(1, visible)) - set(got))[:5]}"
        if power and flip is None and policy == "always":
            assert set(range(1, visible)) <= set(got), f"{what}: 'always' lost a synced envelope"
        # 4. new envelopes get new seqs, and read back as they were published
        if k % 7 == 0:
            await j.start()
            router = Router(j)
            fresh = [router.publish("test/new/r", "new", {"i": -n}) for n in range(3)]
            assert fresh[0] == nxt, what
            await j.flush()
            again, _ = await replay(j)
            assert [again[s]["i"] for s in fresh] == [0, -1, -2], what
    finally:
        await j.close()


@pytest.mark.parametrize("policy", ["always", "batch", "never"])
async def test_no_crash_point_gives_a_seq_twice_or_loses_one_silently(policy):
    base = Path(tempfile.mkdtemp(prefix="tw-crash-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    try:
        ops, published = await record_run(base / "run", policy)
        assert any(op[0] == "visible" for op in ops) and sum(op[0] == "create" for op in ops) > 3
        ks = list(range(1, len(ops) + 1))
        if POINTS and len(ks) > POINTS:
            step = len(ks) / POINTS
            ks = sorted({ks[int(i * step)] for i in range(POINTS)} | {len(ops)})
        writes = [k for k in ks if ops[k - 1][0] == "write"]
        tried = 0
        where = base / "crash"
        for k in ks:
            for power in (False, True):
                await check_point(ops, published, k, where, power, policy=policy)
                tried += 1
        for k in writes:
            for power in (False, True):
                await check_point(ops, published, k, where, power, torn=True, policy=policy)
                tried += 1
        rng = random.Random(7)
        for n in range(max(8, len(ks) // 4)):
            flip = ("old" if n % 2 else "new", rng.randrange(1 << 30), rng.randrange(8))
            await check_point(ops, published, len(ops), where, n % 4 < 2, flip=flip, policy=policy)
            tried += 1
        TRIED[policy] = tried
        print(f"\ncrash points tried ({policy}): {tried} over {len(ops)} recorded operations")
        assert tried >= 100
    finally:
        shutil.rmtree(base, ignore_errors=True)
