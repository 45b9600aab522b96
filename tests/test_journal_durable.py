"""The durable journal (journal.path) in process: segments on a real directory, reopened the way
a restarted gateway opens them. Seq carries on and is never reused, a torn tail is cut and counted,
retention removes whole old segments, reads from disk equal what was appended, and a disk that
fills up refuses readings instead of losing them."""

import asyncio
import os
import subprocess
import time

import msgpack
import pytest

from tianwang.gateway.datapath.journal import DiskReader, DurableJournal
from tianwang.gateway.datapath.router import Router
from tianwang.gateway.datapath.segments import Files, JournalStorageError, SegmentStore
from tianwang.gateway.errors import FrameError
from tianwang.gateway.framing import TopicFilter
from tianwang.v1 import gateway_pb2 as pb

pytestmark = pytest.mark.timeout(60)


def store(path, **kw):
    opts = dict(segment_bytes=64 * 1024, max_bytes=1 << 30, max_age_s=86400.0)
    opts.update(kw)
    return SegmentStore(path, **opts)


async def opened(path, fsync="batch", memory=1 << 20, **kw):
    st = store(path, **kw)
    await asyncio.get_running_loop().run_in_executor(None, st.open)
    j = DurableJournal(memory, st, fsync=fsync, fsync_window_ms=5)
    await j.start()
    return j, Router(j)


async def publish(router, n, start=0, run=0, pad=20):
    seqs = []
    for i in range(start, start + n):
        seqs.append(router.publish(f"test/d{i % 4}/r", f"d{i % 4}", {"i": i, "run": run, "pad": "x" * pad}))
        if i % 500 == 499:
            await asyncio.sleep(0)
    return seqs


async def settle(j):
    """Until everything appended is visible and (but under `never`) synced."""
    for _ in range(2000):
        if j.visible_next == j.log.next_seq and (j.policy == "never" or j.synced_next == j.visible_next):
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"journal did not write: visible {j.visible_next}, appended up to {j.log.next_seq - 1}")


async def replay(j, cursor, pattern="#", max_n=997):
    """Everything a subscriber from `cursor` gets, disk then memory: ([(seq, payload)], [gaps])."""
    out, gaps = [], []
    rd = DiskReader()
    flt = TopicFilter([pattern])
    while cursor < j.next_seq:
        gap, cursor = j.gap_for(cursor)
        if gap is not None:
            g = pb.Batch.FromString(gap).gap
            gaps.append((g.from_seq, g.to_seq, g.reason))
            continue
        if j.on_disk(cursor):
            data, n, cursor = await j.read_disk(rd, cursor, flt, max_n, 1 << 16)
        else:
            data, n, cursor = j.collect(cursor, flt, max_n, 1 << 16)
        b = pb.Batch.FromString(data)
        if b.HasField("gap"):
            gaps.append((b.gap.from_seq, b.gap.to_seq, b.gap.reason))
        out += [(e.seq, msgpack.unpackb(e.payload)) for e in b.envelopes]
    return out, gaps


async def test_seq_continues_across_reopens_and_disk_replays_everything(tmp_path):
    expected = {}
    last_id = None
    for run in range(3):
        j, r = await opened(tmp_path, memory=64 * 1024)
        assert last_id in (None, j.id)
        last_id = j.id
        seqs = await publish(r, 3000, start=run * 3000, run=run)
        assert seqs[0] == run * 3000 + 1  # never reused, never skipped
        for s, i in zip(seqs, range(run * 3000, run * 3000 + 3000), strict=True):
            expected[s] = i
        await settle(j)
        got, gaps = await replay(j, 1)
        assert gaps == []
        assert [s for s, _ in got] == sorted(expected)
        assert all(p["i"] == expected[s] for s, p in got)
        filtered, _ = await replay(j, 2, "test/d1/#")
        assert [p["i"] for _, p in filtered] == [i for s, i in sorted(expected.items()) if s >= 2 and i % 4 == 1]
        await j.close()
    assert len(list(tmp_path.glob("*.seg"))) > 3  # 64 KiB segments: several were rolled
    assert (tmp_path / "journal.id").read_text().strip() == last_id


@pytest.mark.parametrize("damage", ["truncate", "garbage", "flip"])
async def test_a_torn_tail_is_cut_counted_and_seq_never_goes_back(tmp_path, damage, caplog):
    j, r = await opened(tmp_path, fsync="always")
    for k in range(5):  # five blocks
        await publish(r, 10, start=k * 10)
        await settle(j)
    await j.close()
    seg = sorted(tmp_path.glob("*.seg"))[-1]
    raw = seg.read_bytes()
    if damage == "truncate":
        seg.write_bytes(raw[:-7])  # the last block loses its end
    elif damage == "garbage":
        seg.write_bytes(raw + b"\x00\x01garbage after a crash")
    else:
        seg.write_bytes(raw[:-5] + bytes([raw[-5] ^ 0x40]) + raw[-4:])  # the last block's CRC fails
    j, r = await opened(tmp_path)
    await j.checked()  # the segment nobody closed since is walked in the background
    cut = j.counters()["journal_cut_bytes"]
    last_block = raw.rindex(b"TWB1")
    if damage == "garbage":
        assert cut == 23 and "cut" in caplog.text
    elif damage == "truncate":
        assert cut == len(raw) - 7 - last_block and "cut" in caplog.text
    else:  # a closed segment whose size is right is not torn: damage is skipped when read, never cut
        assert cut == 0
    # seqs 41..50 were visible before: they are never given again, and their loss is a Gap
    assert j.next_seq == 51
    seqs = await publish(r, 5, start=100)
    assert seqs == list(range(51, 56))
    await settle(j)
    got, gaps = await replay(j, 1)
    if damage == "garbage":
        assert [s for s, _ in got] == list(range(1, 56)) and gaps == []
    else:
        assert [s for s, _ in got] == list(range(1, 41)) + list(range(51, 56))
        assert gaps == [(41, 50, "lost" if damage == "truncate" else "corrupt")]
    await j.close()


async def test_retention_by_bytes_and_age_removes_old_segments_and_gaps_say_so(tmp_path):
    j, r = await opened(tmp_path, memory=64 * 1024, max_bytes=256 * 1024)
    await publish(r, 8000, pad=40)
    await settle(j)
    removed = j.store.retention()
    assert removed > 0 and j.store.nbytes <= 256 * 1024
    first = j.first_seq
    assert first > 1
    got, gaps = await replay(j, 1)
    assert gaps[0] == (1, first - 1, "retention")
    assert [s for s, _ in got] == list(range(first, 8001))
    # by age: every closed segment is older than a max_age of zero seconds from now + 1 s
    j.store.max_age_s = 1e-9
    j.store.retention(time.time_ns() + 10**9)
    assert len(j.store.segments) == 1  # the active segment always stays
    await j.close()


async def test_one_directory_one_gateway(tmp_path):
    j, _ = await opened(tmp_path)
    with pytest.raises(JournalStorageError, match="in use by another gateway"):
        store(tmp_path).open()
    await j.close()
    store(tmp_path).open()  # released on close


def test_unusable_paths_get_clear_errors(tmp_path):
    with pytest.raises(
        JournalStorageError, match=r"gateway.journal.path: cannot use /dev/null/journal: Not a directory"
    ):
        store("/dev/null/journal").open()
    (tmp_path / "00000000000000000001.seg").write_bytes(b"x")
    with pytest.raises(JournalStorageError, match="holds segments but no journal.id"):
        store(tmp_path).open()


async def test_always_makes_nothing_visible_before_it_is_synced(tmp_path):
    j, r = await opened(tmp_path, fsync="always")
    await publish(r, 100)
    assert j.next_seq == 1  # appended, not yet written: subscribers see nothing
    await settle(j)
    assert j.next_seq == 101 and j.stats["journal_fsyncs"] >= 1
    await j.close()


def _mount_tmpfs(where, size):
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True, text=True
    )
    return None if res.returncode == 0 else f"mount refused: {res.stderr.strip()}"


async def test_a_full_disk_refuses_readings_loses_none_and_recovers(tmp_path, caplog):
    where = tmp_path / "small"
    where.mkdir()
    why = _mount_tmpfs(where, "1m")
    if why:
        pytest.skip(f"a real ENOSPC needs a small filesystem: {why}")
    try:
        j, r = await opened(where / "journal", memory=4 << 20, segment_bytes=4 << 20, max_bytes=64 << 20)
        filler = where / "filler"
        accepted = []
        refused = 0
        with open(filler, "wb") as f:
            try:
                f.write(b"\0" * (1 << 20))
            except OSError:
                pass
        for i in range(3000):
            try:
                accepted.append(r.publish("test/d0/r", "d0", {"i": i, "pad": "y" * 100}))
            except FrameError as exc:
                assert "journal unwritable" in str(exc) and "No space left" in str(exc)
                refused += 1
            if i % 100 == 99:
                await asyncio.sleep(0.01)
        assert j.state == "failed" and refused > 0
        assert "No space left on device" in j.error
        assert j.next_seq <= accepted[-1]  # what is not written is not visible
        filler.unlink()  # space again
        await asyncio.sleep(DurableJournal.RETRY_S * 1.5)
        await settle(j)
        assert j.state == "ok"
        more = await publish(r, 10, start=5000)
        await settle(j)
        await j.close()
        j, r = await opened(where / "journal", memory=4 << 20)
        got, gaps = await replay(j, 1)
        assert gaps == []
        assert [s for s, _ in got] == accepted + more  # every accepted reading, in order, none twice
        await j.close()
    finally:
        subprocess.run(["umount", "-l", str(where)])


def crashed(j):
    """End a journal as a crash of the process does: tasks stop, nothing is closed or synced."""
    for t in j._tasks:
        t.cancel()
    j.store.close()


async def test_a_damaged_block_inside_a_segment_is_skipped_as_corrupt_and_the_rest_kept(tmp_path):
    j, r = await opened(tmp_path, fsync="always", segment_bytes=1 << 20)
    for k in range(10):  # ten blocks in one segment
        await publish(r, 100, start=k * 100)
        await settle(j)
    crashed(j)
    await asyncio.sleep(0.05)
    seg = sorted(tmp_path.glob("*.seg"))[-1]
    raw = bytearray(seg.read_bytes())
    third = [i for i in range(len(raw)) if raw[i : i + 4] == b"TWB1"][2]
    raw[third + 100] ^= 0x10  # one flipped bit in the third block
    seg.write_bytes(bytes(raw))
    j, r = await opened(tmp_path)
    await j.checked()
    assert j.counters()["journal_cut_bytes"] == 0 and j.counters()["journal_corrupt_bytes"] > 0
    assert j.next_seq == 1001  # seq carries on after the good blocks behind the damage
    got, gaps = await replay(j, 1)
    assert gaps == [(201, 300, "corrupt")]
    assert [s for s, _ in got] == list(range(1, 201)) + list(range(301, 1001))
    assert all(p["i"] == s - 1 for s, p in got)
    await j.close()


@pytest.mark.parametrize("fsync", ["batch", "never"])
async def test_after_a_power_cut_seq_never_goes_back_and_a_resume_gets_a_lost_gap(tmp_path, fsync):
    boot = b"\x01" * 16
    j, r = await opened(tmp_path, fsync=fsync, boot_id=boot)
    await publish(r, 1000)
    await settle(j)
    assert j.next_seq == 1001  # a subscriber received up to seq 1000
    crashed(j)
    await asyncio.sleep(0.05)
    seg = sorted(tmp_path.glob("*.seg"))[-1]
    seg.write_bytes(seg.read_bytes()[:-40])  # what the power cut took: the end was never synced
    j, r = await opened(tmp_path, boot_id=b"\x02" * 16)  # the machine rebooted
    await j.checked()
    assert j.next_seq > 1000  # never 2..1000 again
    resume = 1001
    assert resume <= j.next_seq  # not "ahead of the journal"
    seqs = await publish(r, 5, start=5000)
    assert seqs[0] > 1000
    await settle(j)
    got, gaps = await replay(j, 1)
    kept = [s for s, _ in got if s <= 1000]
    assert kept == list(range(1, len(kept) + 1)) and len(kept) < 1000
    assert gaps == [(len(kept) + 1, seqs[0] - 1, "lost")]
    assert [s for s, _ in got if s > 1000] == seqs
    _, resumed_gaps = await replay(j, resume)
    assert resumed_gaps == [(resume, seqs[0] - 1, "lost")]
    await j.close()


async def test_a_crash_in_the_same_boot_loses_nothing_and_a_truncated_file_is_still_a_gap(tmp_path):
    j, r = await opened(tmp_path, fsync="batch")
    await publish(r, 1000)
    await settle(j)
    crashed(j)
    await asyncio.sleep(0.05)
    j, r = await opened(tmp_path)
    assert j.next_seq == 1001  # the page cache kept every write: seq carries on exactly
    got, gaps = await replay(j, 1)
    assert gaps == [] and len(got) == 1000
    crashed(j)
    await asyncio.sleep(0.05)
    seg = sorted(tmp_path.glob("*.seg"))[-1]
    seg.write_bytes(seg.read_bytes()[:-40])  # the reproduction: the last 40 bytes cut
    j, r = await opened(tmp_path)
    assert j.next_seq == 1001  # seqs up to 1000 were shown: never given again
    await j.close()


async def test_open_reads_the_index_of_closed_segments_not_their_blocks(tmp_path):
    j, r = await opened(tmp_path, memory=64 * 1024)
    await publish(r, 6000, pad=40)
    await settle(j)
    await j.close()
    segs = sorted(tmp_path.glob("*.seg"))
    assert len(segs) > 4 and all(s.with_suffix(".idx").exists() for s in segs)
    # a closed segment's bytes replaced by zeros of the same size: open does not notice (it
    # reads only the index), a reader does and gets a Gap for exactly that segment
    victim = segs[1]
    victim.write_bytes(bytes(victim.stat().st_size))
    j, r = await opened(tmp_path, memory=64 * 1024)
    assert j.next_seq == 6001 and j.counters()["journal_corrupt_bytes"] == 0
    assert {s.path for s in j.store.segments if not s.checked} == set(segs)
    got, gaps = await replay(j, 1)
    first, nxt = int(victim.stem), int(segs[2].stem)
    assert gaps == [(first, nxt - 1, "corrupt")]
    assert [s for s, _ in got] == [s for s in range(1, 6001) if not first <= s < nxt]
    await j.close()


class FailingSyncs(Files):
    """fsync and fdatasync of files named *`suffix` fail while `failing` is set (EIO, as a dying
    disk), and as Linux does, the pages that failed to reach the disk are gone (here: zeroed)
    while a later sync reports success."""

    def __init__(self, suffix=".seg"):
        self.suffix = suffix
        self.failing = False
        self.failed = 0
        self.synced = {}  # path -> size at its last good sync

    def _maybe_fail(self, fd, real):
        path = os.readlink(f"/proc/self/fd/{fd}")
        if self.failing and path.endswith(self.suffix):
            self.failed += 1
            size = os.fstat(fd).st_size
            done = self.synced.get(path, 0)
            if size > done:
                with open(path, "r+b") as f:
                    f.seek(done)
                    f.write(bytes(size - done))
            raise OSError(5, "Input/output error")
        real(fd)
        self.synced[path] = os.fstat(fd).st_size

    def fsync(self, fd):
        self._maybe_fail(fd, os.fsync)

    def fdatasync(self, fd):
        self._maybe_fail(fd, os.fdatasync)


@pytest.mark.parametrize("fsync", ["always", "batch"])
async def test_a_failed_fsync_is_retried_every_second_and_the_journal_recovers(tmp_path, fsync):
    files = FailingSyncs()
    j, r = await opened(tmp_path, fsync=fsync, files=files)
    j.RETRY_S = 0.05
    await publish(r, 10)
    await settle(j)
    files.failing = True
    await publish(r, 10, start=10)
    for _ in range(400):
        if j.state == "failed":
            break
        await asyncio.sleep(0.005)
    assert j.state == "failed" and "Input/output error" in j.error
    with pytest.raises(FrameError, match="journal unwritable"):
        r.publish("test/d0/r", "d0", {"i": -1})
    retries = files.failed
    for _ in range(400):
        if files.failed >= retries + 2:
            break
        await asyncio.sleep(0.01)
    assert files.failed >= retries + 2  # tried again, and again
    files.failing = False
    for _ in range(400):
        if j.state == "ok":
            break
        await asyncio.sleep(0.01)
    assert j.state == "ok" and j.error == ""
    await publish(r, 10, start=20)
    await settle(j)
    assert j.next_seq == 31
    assert j.stats["journal_rewritten"] > 0  # what the failed sync covered was written again
    got, gaps = await replay(j, 1)
    assert gaps == [] and [p["i"] for _, p in got] == list(range(30))
    await j.close()
    j, r = await opened(tmp_path)
    got, gaps = await replay(j, 1)
    assert gaps == [] and [p["i"] for _, p in got] == list(range(30))
    await j.close()


class BlockingSyncs(Files):
    """fdatasync of a segment waits until the test lets it go."""

    def __init__(self):
        self.go = __import__("threading").Event()
        self.go.set()
        self.entered = __import__("threading").Event()
        self.syncs = 0

    def fdatasync(self, fd):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".seg"):
            self.entered.set()
            self.go.wait(30)
            self.syncs += 1
        os.fdatasync(fd)


async def test_batch_syncs_at_once_when_idle_without_waiting_for_the_window(tmp_path):
    files = BlockingSyncs()
    st = store(tmp_path, files=files)
    await asyncio.get_running_loop().run_in_executor(None, st.open)
    j = DurableJournal(1 << 20, st, fsync="batch", fsync_window_ms=10_000)
    await j.start()
    r = Router(j)
    await publish(r, 1)
    # with a window of 10 s, the sync still follows the write at once: no timer in between
    for _ in range(1000):
        if files.syncs >= 1 and j.synced_next == 2:
            break
        await asyncio.sleep(0.005)
    assert files.syncs == 1 and j.synced_next == 2 and j.next_seq == 2
    await j.close()


class ThreadNoting(Files):
    """Notes which thread ran each fdatasync of a segment."""

    def __init__(self):
        self.threads = []

    def fdatasync(self, fd):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".seg"):
            self.threads.append(__import__("threading").current_thread())
        os.fdatasync(fd)


@pytest.mark.parametrize("fsync", ["batch", "always"])
async def test_syncs_run_in_order_on_the_journals_own_thread_which_ends_at_close(tmp_path, fsync):
    files = ThreadNoting()
    st = store(tmp_path, files=files)
    await asyncio.get_running_loop().run_in_executor(None, st.open)
    j = DurableJournal(1 << 20, st, fsync=fsync, fsync_window_ms=5)
    await j.start()
    r = Router(j)
    for run in range(5):
        await publish(r, 200, start=run * 200)
        await settle(j)
    await j.close()
    # every sync (the final one of close too) on one thread of the journal's, none on the executor
    assert len(files.threads) >= 6
    assert {t.name for t in files.threads} == {f"journal-sync-{tmp_path.name}"}
    assert len(set(files.threads)) == 1
    files.threads[0].join(5)
    assert not files.threads[0].is_alive()
    j2, _ = await opened(tmp_path, fsync=fsync)
    assert j2.next_seq == 1001
    await j2.close()


async def test_batch_never_shows_envelopes_that_waited_longer_than_the_window_for_their_sync(tmp_path):
    files = BlockingSyncs()
    st = store(tmp_path, files=files)
    await asyncio.get_running_loop().run_in_executor(None, st.open)
    j = DurableJournal(1 << 20, st, fsync="batch", fsync_window_ms=20)
    await j.start()
    r = Router(j)
    files.go.clear()
    await publish(r, 5)
    for _ in range(1000):
        if files.entered.is_set() and j.next_seq == 6:
            break
        await asyncio.sleep(0.005)
    assert j.next_seq == 6  # written, shown, its sync in flight
    await asyncio.sleep(0.1)  # longer than the window: the sync is stuck
    await publish(r, 5, start=5)
    await asyncio.sleep(0.05)
    assert j.written_next == 11 and j.next_seq == 6  # written, not shown while the sync hangs
    files.go.set()
    await settle(j)
    assert j.next_seq == 11 and j.synced_next >= 6
    # under load, writes gather while a sync is in flight: far fewer syncs than writes
    await publish(r, 20000)
    await settle(j)
    assert j.stats["journal_fsyncs"] < j.stats["journal_blocks_written"]
    await j.close()


async def test_a_reservation_that_cannot_be_synced_refuses_readings_until_it_can(tmp_path):
    files = FailingSyncs("journal.seq")
    st = store(tmp_path, files=files, reserve_step=100)
    await asyncio.get_running_loop().run_in_executor(None, st.open)
    j = DurableJournal(1 << 20, st, fsync="batch", fsync_window_ms=5)
    j.RETRY_S = 0.05
    await j.start()
    r = Router(j)
    files.failing = True
    await publish(r, 120)  # past the 101 seqs reserved at open: no seq above them is written or shown
    for _ in range(400):
        if j.state == "failed":
            break
        await asyncio.sleep(0.005)
    assert j.state == "failed" and "cannot reserve seqs" in j.error
    assert j.next_seq <= 101 and j.written_next <= 101
    files.failing = False
    await settle(j)
    assert j.state == "ok" and j.next_seq == 121 and st.reserved > 121
    await j.close()


async def test_batch_shows_a_lone_envelope_after_idle_without_waiting_for_its_sync(tmp_path):
    files = BlockingSyncs()
    st = store(tmp_path, files=files)
    await asyncio.get_running_loop().run_in_executor(None, st.open)
    j = DurableJournal(1 << 20, st, fsync="batch", fsync_window_ms=20)
    await j.start()
    r = Router(j)
    for k in range(20):  # bursts with syncs racing the writes
        await publish(r, 500, start=k * 500)
        await asyncio.sleep(0)
    await settle(j)
    assert j.synced_next == j.next_seq  # all synced: nothing waits for a sync
    files.go.clear()
    files.entered.clear()
    await asyncio.sleep(0.1)  # idle for longer than the window
    await publish(r, 1, start=10_000)
    for _ in range(1000):
        if j.next_seq == 10_002:
            break
        await asyncio.sleep(0.005)
    assert j.next_seq == 10_002  # shown once written, while its sync is still stuck
    files.go.set()
    await settle(j)
    await j.close()
