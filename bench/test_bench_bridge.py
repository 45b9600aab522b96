"""The NATS JetStream bridge: envelopes/s from the journal into a local JetStream stream (R1 on
one nats-server, R3 on a 3-node cluster on loopback), beside a publisher that sends one message
per envelope and waits for each acknowledgement.

Target (docs/architecture.md): >= 500,000 envelopes/s with R1 on this machine.
"""

import asyncio
import sys
import time
from pathlib import Path

import msgpack
import pytest
import uvloop

import benchreport
from tianwang.gateway.benchmarks.fanout import fix_payload
from tianwang.gateway.datapath.bridge import NatsBridge
from tianwang.gateway.datapath.journal import Journal
from tianwang.gateway.datapath.router import Router
from tianwang.gateway.lifecycle.config import NatsBridgeConfig

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from nats_helpers import NatsCluster, NatsServer

N = 400_000
PLAIN_N = 5_000
BATCH = 4096  # the defaults of bridges.nats
BATCH_BYTES = 512 * 1024


class _App:
    def __init__(self, journal):
        self.journal = journal


async def _bridge_rate(urls, replicas, stream):
    journal = Journal(1 << 30)
    router = Router(journal)
    payload = fix_payload(1)
    for i in range(N):
        fam = ("gnss", "jt808", "signal", "camera")[i % 4]
        router.publish(f"{fam}/dev-{i % 500:04d}/fix", f"dev-{i % 500:04d}", payload, 0)
    cfg = NatsBridgeConfig(
        servers=urls,
        stream=stream,
        subject_prefix=stream.lower(),
        replicas=replicas,
        max_delay_ms=0,
        max_batch=BATCH,
        max_batch_bytes=BATCH_BYTES,
    )
    bridge = NatsBridge(_App(journal), cfg, "bench")
    t0 = time.perf_counter()
    await bridge.start()
    while bridge.cursor <= N:
        await asyncio.sleep(0.005)
        if time.perf_counter() - t0 > 120:
            raise AssertionError(f"bridge stuck at {bridge.cursor}: {bridge.state} {bridge.reason}")
    elapsed = time.perf_counter() - t0
    messages = bridge.stats["bridge_nats_messages"]
    await bridge.stop(0)
    return N / elapsed, messages


async def _plain_rate(urls, replicas, stream):
    import nats
    from nats.js.api import StreamConfig

    nc = await nats.connect(urls)
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name=stream, subjects=[f"{stream.lower()}.>"], num_replicas=replicas))
    body = msgpack.packb(fix_payload(1))
    t0 = time.perf_counter()
    for _ in range(PLAIN_N):
        await js.publish(f"{stream.lower()}.gnss", body)
    elapsed = time.perf_counter() - t0
    await nc.close()
    return PLAIN_N / elapsed


@pytest.mark.parametrize("replicas", [1, 3], ids=["R1", "R3"])
def test_bridge_into_jetstream(benchmark, tmp_path, replicas):
    servers = NatsServer(tmp_path).start() if replicas == 1 else NatsCluster(tmp_path, 3).start()
    urls = [servers.url] if replicas == 1 else servers.urls
    try:
        result = {"rates": []}
        rounds = iter(range(100))

        def run():
            rate, result["messages"] = uvloop.run(_bridge_rate(urls, replicas, f"BENCH{next(rounds)}"))
            result["rates"].append(rate)

        benchmark.pedantic(run, rounds=2, iterations=1)
        # the rounds' own timing: from the bridge's start to the last envelope acknowledged
        # (benchmark's figure would include filling the journal first)
        rate = max(result["rates"])
        plain = uvloop.run(_plain_rate(urls, replicas, "PLAIN"))
        benchmark.extra_info.update(replicas=replicas, envelopes_per_s=round(rate), one_per_envelope_per_s=round(plain))
        benchreport.add(
            "NATS JetStream bridge, envelopes/s into a local stream (4 families, batches of up to 4,096)",
            f"R{replicas}: bridge {rate:>11,.0f}/s in {result['messages']:,} messages   "
            f"one message per envelope (acked) {plain:>8,.0f}/s   ratio {rate / plain:6.1f}x",
        )
        if replicas == 1:
            assert rate >= 500_000, f"bridge into R1: {rate:,.0f} envelopes/s under the 500,000 target"
    finally:
        servers.stop()
