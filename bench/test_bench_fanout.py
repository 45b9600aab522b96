"""Router + journal append rate, and gRPC fan-out delivery to 1, 4 and 16 subscribers against a
plain grpc.aio server that writes one message per envelope, in the same run.

Targets (docs/architecture.md, performance targets): router + journal >= 1,000,000 envelopes/s; fan-out >= 1,000,000
envelopes/s delivered in total to 4 subscribers and >= 40x the one-per-write server.

The server runs in its own process; the subscribers share one client process (one channel each)
and count envelopes from the raw batch bytes, so each side has a core of its own.
"""

import grpc
import pytest
import uvloop

import benchreport
from tianwang.gateway.benchmarks.fanout import TOKEN, ServerProcess, deliver, router_append
from tianwang.v1 import gateway_pb2 as pb

ROUTER_N = 200_000


@pytest.mark.parametrize("packed", [False, True], ids=["dict", "prepacked"])
def test_router_journal_append(benchmark, impl, packed):
    """Envelopes/s through Router.publish into the journal (encode once + append + retention)."""
    benchmark.pedantic(router_append, args=(impl, ROUTER_N, packed), rounds=5, iterations=1)
    rate = ROUTER_N / benchmark.stats.stats.min
    benchmark.extra_info["envelopes_per_s"] = round(rate)
    benchmark.extra_info["impl"] = impl.NAME
    benchreport.add(
        "router + journal append (Router.publish)",
        f"{impl.NAME:<7}{'prepacked payload' if packed else 'dict payload (msgpack in the call)':<38}{rate:>12,.0f} envelopes/s",
    )


@pytest.fixture(scope="module")
def servers():
    tw = ServerProcess("tianwang", 600_000)
    plain = ServerProcess("plain", 60_000)
    yield {"tianwang": tw, "plain": plain}
    tw.close()
    plain.close()


RESULTS = {}


@pytest.mark.parametrize("subscribers", [1, 4, 16])
def test_fanout_delivery(benchmark, servers, subscribers):
    """Total envelopes/s delivered to N subscribers: tianwang (batched cursors) vs one-per-write."""
    tw_per_sub = {1: 600_000, 4: 500_000, 16: 150_000}[subscribers]
    plain_per_sub = 60_000 // subscribers

    def run():
        return uvloop.run(deliver(servers["tianwang"].addr, subscribers, tw_per_sub, True))

    benchmark.pedantic(run, rounds=3, iterations=1)
    tw_total = subscribers * tw_per_sub
    tw_rate = tw_total / benchmark.stats.stats.min
    delivered, plain_s = uvloop.run(deliver(servers["plain"].addr, subscribers, plain_per_sub, False))
    plain_rate = delivered / plain_s
    ratio = tw_rate / plain_rate
    benchmark.extra_info.update(
        subscribers=subscribers,
        tianwang_envelopes_per_s=round(tw_rate),
        one_per_write_envelopes_per_s=round(plain_rate),
        ratio=round(ratio, 1),
    )
    RESULTS[subscribers] = (tw_rate, plain_rate, ratio)
    benchreport.add(
        "gRPC fan-out, envelopes/s delivered in total (server and subscribers in separate processes)",
        f"{subscribers:>2} subscribers: tianwang {tw_rate:>12,.0f}   "
        f"one-message-per-write {plain_rate:>9,.0f}   ratio {ratio:6.1f}x",
    )


async def _deliver_beside_stalled(addr, stalled, per_subscriber):
    """One reading subscriber from seq 1 while `stalled` streams (opened first, from seq 1) read
    one batch each and then nothing: (envelopes delivered to the reader, seconds)."""
    req = pb.SubscribeRequest(from_seq=1).SerializeToString()
    md = (("authorization", f"Bearer {TOKEN}"),)
    opts = [("grpc.max_receive_message_length", 8 << 20)]
    idle = [grpc.aio.insecure_channel(addr, options=opts) for _ in range(stalled)]
    calls = []
    for ch in idle:
        call = ch.unary_stream("/tianwang.v1.Gateway/Subscribe")(req, metadata=md)
        await call.read()  # it is open and was served once; it reads no more
        calls.append(call)
    try:
        return await deliver(addr, 1, per_subscriber, True)
    finally:
        for call in calls:
            call.cancel()
        for ch in idle:
            await ch.close()


def test_fanout_beside_stalled_subscribers(benchmark, servers):
    """A subscriber's throughput with 4 stalled subscribers on the same gateway, against alone.
    Target: >= 80% of its solo throughput."""
    n = 600_000
    solo_n, solo_s = uvloop.run(deliver(servers["tianwang"].addr, 1, n, True))
    solo = solo_n / solo_s

    def run():
        return uvloop.run(_deliver_beside_stalled(servers["tianwang"].addr, 4, n))

    benchmark.pedantic(run, rounds=3, iterations=1)
    rate = n / benchmark.stats.stats.min
    share = rate / solo
    benchmark.extra_info.update(
        solo_envelopes_per_s=round(solo), beside_stalled_envelopes_per_s=round(rate), share=round(share, 2)
    )
    benchreport.add(
        "gRPC fan-out, one subscriber beside 4 stalled ones (opened first, reading nothing)",
        f"alone {solo:>12,.0f}/s   beside 4 stalled {rate:>12,.0f}/s   = {share:5.0%} of alone",
    )
    assert share >= 0.8, f"a subscriber kept only {share:.0%} of its solo throughput beside stalled ones"
