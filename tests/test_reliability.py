"""Reliability of the fan-out under churn: many subscribers that connect and cancel must not grow
the gateway's memory (grpc.aio has an open report of growth on cancelled streams, grpc/grpc#43360),
and the gateway keeps serving."""

import asyncio

import grpc
import pytest
import yaml

from gw import READ, GatewayProcess, client, md
from tianwang.v1 import gateway_pb2 as pb

pytestmark = pytest.mark.timeout(120)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def churn(addr, rounds, per_round):
    async with client(addr) as (stub, _):
        for _ in range(rounds):
            calls = [
                stub.Subscribe(pb.SubscribeRequest(topics=["test/#"], from_seq=1, max_batch=64), metadata=md(READ))
                for _ in range(per_round)
            ]
            for c in calls:
                await asyncio.wait_for(c.read(), 10)  # each one really streams before it is cut
            for c in calls:
                c.cancel()
            await asyncio.sleep(0.05)


async def test_subscriber_churn_does_not_grow_memory(tmp_path):
    path = tmp_path / "gw.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "gateway": {"listen": "127.0.0.1:0", "metrics": None, "journal": {"max_bytes": "8MiB"}},
                "auth": {"tokens": [{"name": "reader", "token_env": "TW_T_READ", "read": ["#"]}]},
                "devices": [{"id": "g", "driver": "testgen", "rate_hz": 200, "burst": 5, "payload_bytes": 100}],
            }
        )
    )
    proc = GatewayProcess(path, {"TW_T_READ": READ})
    try:
        await asyncio.sleep(1.0)  # let the journal reach its retention size first
        await churn(proc.addr, 5, 20)  # warm-up: allocator pools, gRPC internals
        before = rss_kib(proc.proc.pid)
        await churn(proc.addr, 25, 20)  # 500 more subscribe/cancel cycles
        after = rss_kib(proc.proc.pid)
        assert after - before < 16 * 1024, f"RSS grew from {before} KiB to {after} KiB over 500 cancelled streams"
        async with client(proc.addr) as (stub, _):
            stats = await stub.GetStats(pb.GetStatsRequest(), metadata=md(READ))
            assert stats.subscribers == 0
            assert stats.counters["subscribe_calls"] == 600
    finally:
        proc.kill()


async def test_client_that_vanishes_mid_stream_is_cleaned_up(tmp_path):
    path = tmp_path / "gw.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "gateway": {"listen": "127.0.0.1:0", "metrics": None},
                "auth": {"tokens": [{"name": "reader", "token_env": "TW_T_READ", "read": ["#"]}]},
                "devices": [{"id": "g", "driver": "testgen", "rate_hz": 100}],
            }
        )
    )
    proc = GatewayProcess(path, {"TW_T_READ": READ})
    try:
        ch = grpc.aio.insecure_channel(proc.addr)
        from tianwang.v1 import gateway_pb2_grpc as pb_grpc

        pb_stub = pb_grpc.GatewayStub(ch)
        stream = pb_stub.Subscribe(pb.SubscribeRequest(), metadata=md(READ))
        await asyncio.wait_for(stream.read(), 5)
        await ch.close(grace=None)  # the TCP connection goes away without a cancel
        async with client(proc.addr) as (stub, _):
            for _ in range(100):
                stats = await stub.GetStats(pb.GetStatsRequest(), metadata=md(READ))
                if stats.subscribers == 0:
                    break
                await asyncio.sleep(0.05)
            assert stats.subscribers == 0
    finally:
        proc.kill()


async def test_a_subscriber_that_stops_reading_costs_bounded_memory(tmp_path):
    """A stalled stream holds only gRPC's flow-control window and its cursor: while devices publish
    far more than the journal keeps, the gateway's RSS stays bounded, a reading subscriber loses
    nothing, and the stalled one is told of what retention took with a Gap when it reads again."""
    path = tmp_path / "gw.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "gateway": {"listen": "127.0.0.1:0", "metrics": None, "journal": {"max_bytes": "4MiB"}},
                "auth": {"tokens": [{"name": "reader", "token_env": "TW_T_READ", "read": ["#"]}]},
                "devices": [{"id": "g", "driver": "testgen", "rate_hz": 200, "burst": 20, "payload_bytes": 300}],
            }
        )
    )
    proc = GatewayProcess(path, {"TW_T_READ": READ})
    try:
        async with client(proc.addr, **{"grpc.max_receive_message_length": 8 << 20}) as (stub, _):
            await asyncio.sleep(1.5)  # the journal reaches its retention size first
            before = rss_kib(proc.proc.pid)
            stalled = stub.Subscribe(pb.SubscribeRequest(topics=["test/#"], from_seq=1), metadata=md(READ))
            first = await asyncio.wait_for(stalled.read(), 5)  # it starts, then reads nothing more
            reader = stub.Subscribe(pb.SubscribeRequest(topics=["test/g/reading"], max_delay_ms=5), metadata=md(READ))
            seqs, ns = [], []
            t_end = asyncio.get_running_loop().time() + 6.0  # ~24,000 readings of ~350 bytes: 2x the journal
            while asyncio.get_running_loop().time() < t_end:
                batch = await asyncio.wait_for(reader.read(), 5)
                assert not batch.HasField("gap")
                seqs += [e.seq for e in batch.envelopes]
                ns += [unpack_n(e) for e in batch.envelopes]
            after = rss_kib(proc.proc.pid)
            assert after - before < 24 * 1024, f"RSS grew from {before} KiB to {after} KiB with a stalled stream"
            assert len(seqs) > 10_000
            # the reader saw every reading of the device, in order, none missing: the device's own
            # counter has no hole
            assert ns == list(range(ns[0], ns[0] + len(ns)))
            stats = await stub.GetStats(pb.GetStatsRequest(), metadata=md(READ))
            assert stats.first_seq > first.envelopes[-1].seq + 1  # retention passed the stalled cursor
            gap = None
            for _ in range(1000):
                batch = await asyncio.wait_for(stalled.read(), 5)
                if batch.HasField("gap"):
                    gap = batch.gap
                    break
            assert gap is not None and gap.reason == "retention" and gap.to_seq >= gap.from_seq
            stalled.cancel()
            reader.cancel()
    finally:
        proc.kill()


def unpack_n(env):
    import msgpack

    return msgpack.unpackb(env.payload)["n"]
