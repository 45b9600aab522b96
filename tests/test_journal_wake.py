"""How the journal wakes its readers: each waits on a future of its own, an append wakes every one of
them in the very next loop turn (no shield, no wait_for in between), a reader that is cancelled or
times out leaves the others and nothing behind. Counted in loop turns, not timed: the test's own task
is queued behind the readers' wake-ups, so one `sleep(0)` after an append is one turn."""

import asyncio

import pytest

from tianwang.gateway.datapath.journal import DurableJournal, Journal
from tianwang.gateway.datapath.router import Router
from tianwang.gateway.datapath.segments import SegmentStore

pytestmark = pytest.mark.timeout(60)


def memory_journal(impl):
    j = Journal(1 << 20, entry_log=impl.EntryLog)
    return j, Router(j)


def reader(j, cursor, woke, timeout=None):
    async def run():
        got = await j.wait(cursor, timeout)
        woke.append(got)

    return asyncio.get_running_loop().create_task(run())


async def until_waiting(j, n):
    for _ in range(100):
        if len(j.readers) == n:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{len(j.readers)} readers waiting, expected {n}")


async def test_an_append_wakes_every_reader_in_the_next_loop_turn(impl):
    j, router = memory_journal(impl)
    woke: list[bool] = []
    tasks = [reader(j, j.next_seq, woke, timeout=30.0) for _ in range(5)]
    await until_waiting(j, 5)
    router.publish("test/d1/r", "d1", {"i": 1})
    await asyncio.sleep(0)  # one turn: the readers were queued before this task
    assert woke == [True] * 5
    assert len(j.readers) == 0
    await asyncio.gather(*tasks)


async def test_one_wake_up_per_turn_however_many_envelopes_come(impl):
    j, router = memory_journal(impl)
    woke: list[bool] = []
    task = reader(j, j.next_seq, woke)
    await until_waiting(j, 1)
    for i in range(50):
        router.publish("test/d1/r", "d1", {"i": i})
    # the first append handed the wake-up on and the log forgot it: the other 49 call nothing
    assert j.log.waiter is None
    await task
    assert woke == [True]


async def test_a_cancelled_reader_leaves_the_others_waiting_and_woken(impl):
    j, router = memory_journal(impl)
    woke: list[bool] = []
    gone = reader(j, j.next_seq, woke)
    stay = [reader(j, j.next_seq, woke) for _ in range(2)]
    await until_waiting(j, 3)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert len(j.readers) == 2  # the cancelled one took only its own future away
    router.publish("test/d1/r", "d1", {"i": 1})
    await asyncio.gather(*stay)
    assert woke == [True, True]


async def test_a_timed_out_wait_says_so_and_leaves_nothing_behind(impl):
    j, router = memory_journal(impl)
    cursor = j.next_seq
    for _ in range(20):  # an idle stream re-checking again and again
        assert await j.wait(cursor, 0.001) is False
    assert len(j.readers) == 0
    router.publish("test/d1/r", "d1", {"i": 1})
    assert await j.wait(cursor, 0.001) is True  # already there: no wait at all
    assert len(j.readers) == 0


async def test_wake_releases_every_reader_without_an_append(impl):
    j, _router = memory_journal(impl)
    woke: list[bool] = []
    tasks = [reader(j, j.next_seq, woke) for _ in range(3)]
    await until_waiting(j, 3)
    j.wake()  # shutdown, a revoked token: the streams re-check their state
    await asyncio.gather(*tasks)
    assert woke == [False, False, False]


async def test_durable_readers_wake_when_the_writer_shows_the_envelopes_and_survive_a_cancelled_one(tmp_path):
    st = SegmentStore(tmp_path / "j", segment_bytes=64 * 1024, max_bytes=1 << 30, max_age_s=86400.0)
    await asyncio.get_running_loop().run_in_executor(None, st.open)
    j = DurableJournal(1 << 20, st, fsync="always", fsync_window_ms=5)
    await j.start()
    try:
        router = Router(j)
        woke: list[bool] = []
        cursor = j.next_seq
        gone = reader(j, cursor, woke)
        stay = [reader(j, cursor, woke) for _ in range(2)]
        await until_waiting(j, 3)
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        seq = router.publish("test/d1/r", "d1", {"i": 1})
        await asyncio.wait_for(asyncio.gather(*stay), 10)
        assert woke == [True, True]
        # `always`: woken only once the envelope is synced, never before
        assert j.synced_next > seq and j.visible_next > seq
        assert len(j.readers) == 0
    finally:
        await j.close()
