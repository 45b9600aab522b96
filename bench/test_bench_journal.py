"""The durable journal (gateway.journal.path): append rate per fsync policy, beside the memory-only
journal, and replay from disk to one gRPC subscriber.

Targets (docs/architecture.md): append >= 500,000 envelopes/s with fsync `batch`; replay from disk
>= 1,000,000 envelopes/s to one subscriber. Appends are measured as a gateway sees them: readings
published on the loop, which yields between bursts (as drivers do), until the writer has written
(and under `always` synced) the last one and subscribers may see it.
"""

import asyncio
import shutil
import tempfile

import benchreport
import pytest
import uvloop

from fanout_server import fix_payload
from test_bench_fanout import ServerProcess, _deliver
from tianwang.gateway.datapath.journal import DurableJournal, Journal
from tianwang.gateway.datapath.router import Router
from tianwang.gateway.datapath.segments import SegmentStore

APPEND_N = 300_000
BURST = 1000
REPLAY_N = 600_000


async def _append(policy):
    blob = fix_payload(1)
    topics = [f"gnss/bd-{i:04d}/fix" for i in range(1000)]
    ids = [f"bd-{i:04d}" for i in range(1000)]
    where = None
    if policy == "memory":
        journal = Journal(256 << 20)
    else:
        where = tempfile.mkdtemp(prefix="tianwang-bench-")
        store = SegmentStore(where, segment_bytes=64 << 20, max_bytes=8 << 30, max_age_s=86400)
        store.open()
        journal = DurableJournal(256 << 20, store, fsync=policy, fsync_window_ms=20)
        await journal.start()
    router = Router(journal)
    publish = router.publish
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for i in range(APPEND_N):
        publish(topics[i % 1000], ids[i % 1000], blob, 0)
        if i % BURST == BURST - 1:
            await asyncio.sleep(0)
    while journal.next_seq <= APPEND_N:
        await asyncio.sleep(0)
    elapsed = loop.time() - t0
    stats = journal.counters()
    await journal.close()
    if where:
        shutil.rmtree(where, ignore_errors=True)
    return elapsed, stats


@pytest.mark.parametrize("policy", ["memory", "never", "batch", "always"])
def test_journal_append(benchmark, policy):
    """Envelopes/s from Router.publish until visible to subscribers, per fsync policy."""
    result = {}

    def run():
        result["elapsed"], result["stats"] = uvloop.run(_append(policy))

    benchmark.pedantic(run, rounds=3, iterations=1)
    rate = APPEND_N / benchmark.stats.stats.min
    stats = result["stats"]
    benchmark.extra_info.update(policy=policy, envelopes_per_s=round(rate), **stats)
    detail = "" if policy == "memory" else f"   {stats['journal_blocks_written']:>5} blocks, {stats['journal_fsyncs']:>4} fsyncs (last round)"
    benchreport.add(
        "journal append until visible, envelopes/s (bursts of 1,000 between loop turns)",
        f"{policy:<8}{rate:>12,.0f} envelopes/s{detail}",
    )
    if policy == "batch":
        assert rate >= 500_000, f"durable append with fsync batch: {rate:,.0f}/s under the 500,000/s target"


@pytest.fixture(scope="module")
def disk_server():
    s = ServerProcess("tianwang-disk", REPLAY_N)
    yield s
    s.close()


def test_replay_from_disk(benchmark, disk_server):
    """One subscriber from seq 1 of a journal read entirely from disk (memory empty after restart)."""

    def run():
        return uvloop.run(_deliver(disk_server.addr, 1, REPLAY_N, True))

    benchmark.pedantic(run, rounds=3, iterations=1)
    rate = REPLAY_N / benchmark.stats.stats.min
    benchmark.extra_info.update(envelopes_per_s=round(rate))
    benchreport.add(
        "journal replay from disk to one gRPC subscriber (server and subscriber in separate processes)",
        f"{REPLAY_N:,} envelopes from seq 1: {rate:>12,.0f} envelopes/s",
    )
    assert rate >= 1_000_000, f"replay from disk: {rate:,.0f}/s under the 1,000,000/s target"
