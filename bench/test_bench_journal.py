"""The durable journal (gateway.journal.path): append rate per fsync policy, beside the memory-only
journal, and replay from disk to one gRPC subscriber.

Targets (docs/architecture.md): append >= 500,000 envelopes/s with fsync `batch`; replay from disk
>= 1,000,000 envelopes/s to one subscriber. Appends are measured as a gateway sees them: readings
published on the loop, which yields between bursts (as drivers do), until the writer has written
(and under `always` synced) the last one and subscribers may see it.
"""

import pytest
import uvloop

import benchreport
from tianwang.gateway.benchmarks.fanout import ServerProcess, deliver, journal_append

APPEND_N = 300_000
REPLAY_N = 600_000


@pytest.mark.parametrize("policy", ["memory", "never", "batch", "always"])
def test_journal_append(benchmark, policy):
    """Envelopes/s from Router.publish until visible to subscribers, per fsync policy."""
    result = {}

    def run():
        result["elapsed"], result["stats"] = uvloop.run(journal_append(policy, APPEND_N))

    benchmark.pedantic(run, rounds=3, iterations=1)
    rate = APPEND_N / benchmark.stats.stats.min
    stats = result["stats"]
    benchmark.extra_info.update(policy=policy, envelopes_per_s=round(rate), **stats)
    detail = (
        ""
        if policy == "memory"
        else f"   {stats['journal_blocks_written']:>5} blocks, {stats['journal_fsyncs']:>4} fsyncs (last round)"
    )
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
        return uvloop.run(deliver(disk_server.addr, 1, REPLAY_N, True))

    benchmark.pedantic(run, rounds=3, iterations=1)
    rate = REPLAY_N / benchmark.stats.stats.min
    benchmark.extra_info.update(envelopes_per_s=round(rate))
    benchreport.add(
        "journal replay from disk to one gRPC subscriber (server and subscriber in separate processes)",
        f"{REPLAY_N:,} envelopes from seq 1: {rate:>12,.0f} envelopes/s",
    )
    assert rate >= 1_000_000, f"replay from disk: {rate:,.0f}/s under the 1,000,000/s target"
