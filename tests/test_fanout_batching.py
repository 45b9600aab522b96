"""Subscribe batching without a timer: an idle stream gets each envelope at once, batches form only
while a write is in flight (back-pressure) and respect max_batch and max_batch_bytes, and a wait
happens only when a request (or the site's default) asks for one. Real gRPC channel on loopback,
in-process gateway; no wall-clock bounds: a held batch shows in the `batch_waits` counter, and a
batch held by a 10 s timer would miss the test's read deadline."""

import asyncio

import grpc
import pytest

from gw import READ, base_config, client, md, running, until
from tianwang.v1 import gateway_pb2 as pb

pytestmark = [pytest.mark.twins, pytest.mark.timeout(60)]

SITE_WAIT_MS = 10_000  # the longest wait a config allows: a batch held by it misses every read deadline below
READ_DEADLINE_S = 5.0


async def read_batch(stream):
    return await asyncio.wait_for(stream.read(), READ_DEADLINE_S)


def publish(gw, n, size=16, device="d1"):
    return [gw.router.publish(f"test/{device}/r", device, {"i": i, "pad": "x" * size}) for i in range(n)]


async def opened(gw, count):
    await until(lambda: len(gw.service.subscribers) == count, what=f"{count} open streams")


async def test_idle_stream_gets_each_envelope_at_once_in_a_batch_of_one():
    async with running(base_config()) as gw:
        async with client(gw) as (stub, _):
            req = pb.SubscribeRequest(topics=["test/#"])
            assert not req.HasField("max_delay_ms")  # unset: the site's default, which is no wait
            stream = stub.Subscribe(req, metadata=md(READ))
            await opened(gw, 1)
            for _ in range(3):
                [seq] = publish(gw, 1)
                batch = await read_batch(stream)
                assert [e.seq for e in batch.envelopes] == [seq]
            assert gw.service.counters["batch_waits"] == 0
            assert gw.service.counters["batches_sent"] == 3
            stream.cancel()


async def test_what_is_routed_in_the_turn_after_the_wake_up_joins_the_batch():
    # a burst read over two loop turns: the first envelope wakes the stream, the next two are routed
    # by a callback that runs in the following turn (as the rest of a burst's reads would). One
    # batch of three, not a batch of one written ahead of the other two
    async with running(base_config()) as gw:
        async with client(gw) as (stub, _):
            stream = stub.Subscribe(pb.SubscribeRequest(topics=["test/#"]), metadata=md(READ))
            await opened(gw, 1)
            [seq] = publish(gw, 1)  # the stream's first batch: it is waiting on the journal after it
            assert [e.seq for e in (await read_batch(stream)).envelopes] == [seq]
            loop = asyncio.get_running_loop()
            rest = loop.create_future()
            first = publish(gw, 1)
            loop.call_soon(lambda: rest.set_result(publish(gw, 2)))
            batch = await read_batch(stream)
            assert [e.seq for e in batch.envelopes] == first + await rest
            assert gw.service.counters["batches_sent"] == 2 and gw.service.counters["batch_waits"] == 0
            stream.cancel()


async def test_an_explicit_zero_means_no_wait_even_where_the_site_sets_one():
    async with running(base_config(fanout={"max_delay_ms": SITE_WAIT_MS})) as gw:
        async with client(gw) as (stub, _):
            now = stub.Subscribe(pb.SubscribeRequest(topics=["test/#"], max_delay_ms=0), metadata=md(READ))
            await opened(gw, 1)
            [seq] = publish(gw, 1)
            batch = await read_batch(now)
            assert [e.seq for e in batch.envelopes] == [seq]
            assert gw.service.counters["batch_waits"] == 0
            now.cancel()
            await opened(gw, 0)
            # unset takes the site's wait: envelopes published one by one gather until max_batch
            held = stub.Subscribe(pb.SubscribeRequest(topics=["test/#"], max_batch=3), metadata=md(READ))
            await opened(gw, 1)
            seqs = []
            for _ in range(3):
                seqs += publish(gw, 1)
                await asyncio.sleep(0.01)
            batch = await read_batch(held)
            assert [e.seq for e in batch.envelopes] == seqs
            assert gw.service.counters["batch_waits"] == 1
            held.cancel()


async def test_an_explicit_wait_batches_a_trickle_up_to_max_batch():
    async with running(base_config()) as gw:
        async with client(gw) as (stub, _):
            stream = stub.Subscribe(
                pb.SubscribeRequest(topics=["test/#"], max_batch=4, max_delay_ms=SITE_WAIT_MS), metadata=md(READ)
            )
            await opened(gw, 1)
            seqs = []
            for _ in range(8):
                seqs += publish(gw, 1)
                await asyncio.sleep(0.005)  # one at a time: each alone would be a batch of one
            first = await read_batch(stream)
            second = await read_batch(stream)
            assert [e.seq for e in first.envelopes] == seqs[:4]
            assert [e.seq for e in second.envelopes] == seqs[4:]
            assert gw.service.counters["batch_waits"] == 2
            stream.cancel()


async def test_batches_gather_only_while_a_write_is_in_flight_and_respect_both_caps():
    # 2 KB envelopes; the site caps a batch at 16 KiB (7 such envelopes with their framing)
    async with running(base_config(fanout={"max_batch_bytes": "16KiB"})) as gw:
        # stalled clients: open the stream, read nothing until told. Without BDP probing their HTTP/2
        # window stays small, so the gateway's writes to them stop being taken after ~100 KB and what
        # is published meanwhile gathers into their next batches
        opts = [("grpc.http2.bdp_probe", 0)]
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}", options=opts) as ch_count,
            grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}", options=opts) as ch_bytes,
        ):
            by_count = ch_count.unary_stream("/tianwang.v1.Gateway/Subscribe")(
                pb.SubscribeRequest(topics=["test/#"], max_batch=5).SerializeToString(), metadata=md(READ)
            )
            by_bytes = ch_bytes.unary_stream("/tianwang.v1.Gateway/Subscribe")(
                pb.SubscribeRequest(topics=["test/#"]).SerializeToString(), metadata=md(READ)
            )
            await opened(gw, 2)
            async with client(gw) as (stub, _):
                live = stub.Subscribe(pb.SubscribeRequest(topics=["test/#"]), metadata=md(READ))
                await opened(gw, 3)
                seqs = []
                live_seqs = []

                async def read_live():
                    while len(live_seqs) < 400:
                        live_seqs.extend(e.seq for e in (await read_batch(live)).envelopes)

                reader = asyncio.ensure_future(read_live())
                # the first envelope finds every stream idle: each takes it alone
                seqs += publish(gw, 1, size=2000)
                await until(lambda: all(s.cursor > seqs[0] for s in gw.service.subscribers), what="the first taken")
                for _ in range(399):  # one at a time, each in a loop turn of its own
                    seqs += publish(gw, 1, size=2000)
                    await asyncio.sleep(0)
                # a reader that keeps up gets everything, whatever the stalled streams do
                await asyncio.wait_for(reader, 20)
                assert live_seqs == seqs
                live.cancel()
            for stream, cap_n, cap_bytes in ((by_count, 5, None), (by_bytes, 256, 16 * 1024)):
                got, sizes, entry = [], [], None
                while len(got) < len(seqs):
                    raw = await asyncio.wait_for(stream.read(), READ_DEADLINE_S)
                    batch = pb.Batch.FromString(raw)
                    assert not batch.HasField("gap")
                    assert len(batch.envelopes) <= cap_n
                    if cap_bytes is not None:
                        assert len(raw) <= cap_bytes
                    sizes.append(len(batch.envelopes))
                    if entry is None:
                        entry = len(raw)  # one envelope's bytes in a batch (they are all the same size)
                    got.extend(e.seq for e in batch.envelopes)
                assert got == seqs  # nothing lost, nothing twice, in order
                # the stream was idle at first (batches of one) and then its writes stalled:
                # what was published meanwhile came in full batches
                assert sizes[0] == 1
                assert max(sizes) == (cap_n if cap_bytes is None else cap_bytes // entry)
                stream.cancel()
        assert gw.service.counters["batch_waits"] == 0


async def test_the_client_helper_sends_an_explicit_zero_and_leaves_none_unset():
    from tianwang.v1 import client as tw_client

    def first_batch(addr, max_delay_ms):
        with grpc.insecure_channel(addr) as ch:
            batches = tw_client.subscribe_batches(ch, ["test/#"], token=READ, max_batch=2, max_delay_ms=max_delay_ms)
            try:
                return next(batches)
            finally:
                batches.close()

    async with running(base_config(fanout={"max_delay_ms": SITE_WAIT_MS})) as gw:
        addr = f"127.0.0.1:{gw.port}"
        # 0: no wait, even though the site waits 10 s for requests that leave it unset
        reader = asyncio.ensure_future(asyncio.to_thread(first_batch, addr, 0))
        await opened(gw, 1)
        [seq] = publish(gw, 1)
        gap, envelopes = await asyncio.wait_for(reader, READ_DEADLINE_S)
        assert gap is None and [e["seq"] for e in envelopes] == [seq]
        assert gw.service.counters["batch_waits"] == 0
        await opened(gw, 0)
        # None: unset, so the site's wait applies and the batch fills to max_batch
        reader = asyncio.ensure_future(asyncio.to_thread(first_batch, addr, None))
        await opened(gw, 1)
        seqs = publish(gw, 1)
        await asyncio.sleep(0.01)
        seqs += publish(gw, 1)
        gap, envelopes = await asyncio.wait_for(reader, READ_DEADLINE_S)
        assert [e["seq"] for e in envelopes] == seqs
        assert gw.service.counters["batch_waits"] == 1
