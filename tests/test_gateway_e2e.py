"""End to end through a real gRPC channel on loopback, with the test-only reading generator."""

import asyncio

import grpc
import msgpack
import pytest

from gw import CONTROL, GNSS_ONLY, READ, base_config, client, md, running, unpack, until, wait_for
from tianwang.v1 import gateway_pb2 as pb

pytestmark = [pytest.mark.twins, pytest.mark.timeout(60)]


def gen(id, **kw):
    d = {"id": id, "driver": "testgen", "rate_hz": 0}
    d.update(kw)
    return d


async def emit(gw, device, n):
    reply = await gw.supervisor.send_command(device, "emit", {"n": n}, 5.0)
    assert reply == {"emitted": n}


async def collect(stream, n, timeout=10.0):
    """Read batches until n envelopes; returns (envelopes, batches, gaps)."""
    envs, batches, gaps = [], [], []

    async def run():
        async for batch in stream:
            batches.append(batch)
            if batch.HasField("gap"):
                gaps.append(batch.gap)
            envs.extend(batch.envelopes)
            if len(envs) >= n:
                return

    await asyncio.wait_for(run(), timeout)
    return envs, batches, gaps


async def online(gw, *ids):
    assert await wait_for(
        lambda: (
            all(gw.supervisor.entries[i].state.value == "ONLINE" for i in ids if i in gw.supervisor.entries)
            and all(i in gw.supervisor.entries for i in ids)
        )
    )


async def test_filters_and_wildcards():
    async with running(base_config([gen("gen-1", channels=["a", "b/c"]), gen("gen-2", channels=["a"])])) as gw:
        await online(gw, "gen-1", "gen-2")
        async with client(gw) as (stub, _):
            only_a = stub.Subscribe(pb.SubscribeRequest(topics=["test/+/a"], max_delay_ms=1), metadata=md(READ))
            deep = stub.Subscribe(pb.SubscribeRequest(topics=["test/gen-1/#"], max_delay_ms=1), metadata=md(READ))
            everything = stub.Subscribe(pb.SubscribeRequest(max_delay_ms=1), metadata=md(READ))
            await asyncio.sleep(0.2)
            await emit(gw, "gen-1", 3)  # 3 on a, 3 on b/c
            await emit(gw, "gen-2", 2)
            a, _, _ = await collect(only_a, 5)
            d, _, _ = await collect(deep, 6)
            e, _, _ = await collect(everything, 8)
            assert sorted({x.topic for x in a}) == ["test/gen-1/a", "test/gen-2/a"]
            assert len(a) == 5
            assert sorted({x.topic for x in d}) == ["test/gen-1/a", "test/gen-1/b/c"]
            # the audit of the emits goes through supervisor directly here, so "everything" sees
            # exactly the readings: 6 + 2, plus nothing else
            topics = [x.topic for x in e[:8]]
            assert topics.count("test/gen-1/a") == 3 and topics.count("test/gen-2/a") == 2
            seqs = [x.seq for x in e]
            assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
            payload = unpack(a[0].payload)
            assert payload["n"] >= 1 and a[0].device_id in ("gen-1", "gen-2") and a[0].gateway_time_ns > 0
            for s in (only_a, deep, everything):
                s.cancel()


async def test_batches_by_count_and_delay():
    async with running(base_config([gen("gen-1")])) as gw:
        await online(gw, "gen-1")
        start = gw.journal.next_seq
        await emit(gw, "gen-1", 1000)
        async with client(gw) as (stub, _):
            stream = stub.Subscribe(
                pb.SubscribeRequest(topics=["test/#"], from_seq=start, max_batch=64), metadata=md(READ)
            )
            envs, batches, _ = await collect(stream, 1000)
            assert [len(b.envelopes) for b in batches[:15]] == [64] * 15
            assert [e.seq for e in envs] == list(range(start, start + 1000))
            stream.cancel()
            # a long delay lets a trickle gather into one batch
            stream = stub.Subscribe(
                pb.SubscribeRequest(topics=["test/#"], max_batch=50, max_delay_ms=400), metadata=md(READ)
            )
            await asyncio.sleep(0.1)
            for _ in range(5):
                await emit(gw, "gen-1", 2)
                await asyncio.sleep(0.02)
            envs, batches, _ = await collect(stream, 10)
            assert len(batches) == 1 and len(batches[0].envelopes) == 10
            stream.cancel()


async def test_batches_capped_in_bytes():
    big = {"id": "big", "driver": "testgen", "rate_hz": 200, "burst": 10, "payload_bytes": 20000}
    async with running(base_config([big], fanout={"max_batch_bytes": "64KiB"})) as gw:
        async with client(gw) as (stub, _):
            stream = stub.Subscribe(
                pb.SubscribeRequest(topics=["test/big/#"], from_seq=1, max_batch=1000), metadata=md(READ)
            )
            envs, batches, _ = await collect(stream, 60)
            # ~20 kB envelopes under a 64 KiB cap: never more than three to a batch, never over the cap
            assert all(b.ByteSize() <= 64 * 1024 for b in batches)
            assert max(sum(1 for e in b.envelopes if e.ByteSize() > 20000) for b in batches) == 3
            assert [e.seq for e in envs] == list(range(1, len(envs) + 1))
            stream.cancel()


async def test_replay_from_seq_and_gap():
    cfg = base_config([gen("gen-1", payload_bytes=200)], journal={"max_bytes": "64KiB"})
    async with running(cfg) as gw:
        await online(gw, "gen-1")
        await emit(gw, "gen-1", 2000)  # far more than 64 KiB
        first = gw.journal.first_seq
        assert first > 1
        async with client(gw) as (stub, _):
            stream = stub.Subscribe(pb.SubscribeRequest(from_seq=1, max_batch=500), metadata=md(READ))
            envs, batches, gaps = await collect(stream, gw.journal.next_seq - first)
            assert batches[0].HasField("gap") and not batches[0].envelopes
            assert (gaps[0].from_seq, gaps[0].to_seq, gaps[0].reason) == (1, first - 1, "retention")
            assert envs[0].seq == first
            assert [e.seq for e in envs] == list(range(first, first + len(envs)))
            stream.cancel()
            # replay from a seq still held: no gap, exact start
            mid = gw.journal.next_seq - 10
            stream = stub.Subscribe(pb.SubscribeRequest(from_seq=mid), metadata=md(READ))
            envs, batches, gaps = await collect(stream, 10)
            assert not gaps and [e.seq for e in envs] == list(range(mid, mid + 10))
            stream.cancel()


async def test_stalled_subscriber_does_not_stall_others_and_gets_gap():
    cfg = base_config(
        [{"id": "fast", "driver": "testgen", "rate_hz": 500, "burst": 20, "payload_bytes": 2000}],
        journal={"max_bytes": "2MiB"},
    )
    async with running(cfg) as gw:
        await online(gw, "fast")
        # a raw-bytes client for the stalled stream: it opens the stream and never reads. Without
        # BDP probing its HTTP/2 window stays small, so what gRPC buffers for it is ~100 KB rather
        # than a window that grew with the traffic (several MB, varying from run to run).
        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{gw.port}", options=[("grpc.http2.bdp_probe", 0)]
        ) as stalled_ch:
            stalled = stalled_ch.unary_stream("/tianwang.v1.Gateway/Subscribe")(
                pb.SubscribeRequest(from_seq=gw.journal.next_seq).SerializeToString(), metadata=md(READ)
            )
            await wait_for(lambda: len(gw.service.subscribers) == 1)
            stalled_sub = next(iter(gw.service.subscribers))
            async with client(gw) as (stub, _):
                start = gw.journal.next_seq
                fast = stub.Subscribe(pb.SubscribeRequest(from_seq=start, max_batch=512), metadata=md(READ))
                # ~10k envelopes/s (20 MB/s) for 2 s, far more than gRPC buffers for the stalled
                # stream: the fast reader keeps up with no gap and no loss
                envs, _, gaps = await collect(fast, 20000, timeout=20)
                assert not gaps
                assert [e.seq for e in envs] == list(range(start, start + len(envs)))
                fast.cancel()
            # the stalled subscriber fell behind retention; when it reads, a Gap comes first
            assert gw.journal.first_seq > start
            assert stalled_sub.cursor < gw.journal.first_seq
            first = await asyncio.wait_for(stalled.read(), 5)
            seen_gap = False
            # what gRPC had buffered for it comes first (bounded: a few MiB), then the Gap
            for _ in range(20000):
                batch = pb.Batch.FromString(first)
                if batch.HasField("gap"):
                    seen_gap = True
                    assert batch.gap.reason == "retention"
                    break
                first = await asyncio.wait_for(stalled.read(), 5)
            assert seen_gap
            stalled.cancel()


async def test_auth_failures():
    async with running(base_config([gen("gen-1")])) as gw:
        await online(gw, "gen-1")
        async with client(gw) as (stub, _):
            for token in (None, "wrong-token"):
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stub.ListDevices(pb.ListDevicesRequest(), metadata=md(token))
                assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
                stream = stub.Subscribe(pb.SubscribeRequest(), metadata=md(token))
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stream.read()
                assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.GetStats(pb.GetStatsRequest(), metadata=(("authorization", "Basic abc"),))
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            # reading outside the token's ACL
            stream = stub.Subscribe(pb.SubscribeRequest(topics=["signal/#"]), metadata=md(GNSS_ONLY))
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stream.read()
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
            # a wide pattern is narrowed to the ACL on the server side
            stream = stub.Subscribe(pb.SubscribeRequest(topics=["test/#"], max_delay_ms=1), metadata=md(GNSS_ONLY))
            await asyncio.sleep(0.1)
            await gw.supervisor.send_command("gen-1", "emit", {"n": 1}, 1)
            gw.router.publish("test/other/reading", "other", {"n": 0})
            await gw.supervisor.send_command("gen-1", "emit", {"n": 1}, 1)
            envs, _, _ = await collect(stream, 2)
            assert {e.topic for e in envs} == {"test/gen-1/reading"}
            stream.cancel()
            # commands: read-only token denied, audited
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.SendCommand(pb.CommandRequest(device_id="gen-1", action="echo"), metadata=md(READ))
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
            audit_seq = int(dict(err.value.trailing_metadata())["tianwang-audit-seq"])
            stream = stub.Subscribe(pb.SubscribeRequest(topics=["audit/#"], from_seq=audit_seq), metadata=md(READ))
            envs, _, _ = await collect(stream, 1)
            audit = unpack(envs[0].payload)
            assert envs[0].topic == "audit/gen-1/command" and envs[0].seq == audit_seq
            assert audit["principal"] == "reader" and audit["ok"] is False and audit["code"] == "PERMISSION_DENIED"
            assert audit["action"] == "echo"
            stream.cancel()
            # an unauthenticated command is audited too
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.SendCommand(pb.CommandRequest(device_id="gen-1", action="echo"))
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            seq = int(dict(err.value.trailing_metadata())["tianwang-audit-seq"])
            stream = stub.Subscribe(pb.SubscribeRequest(topics=["audit/#"], from_seq=seq), metadata=md(READ))
            envs, _, _ = await collect(stream, 1)
            assert unpack(envs[0].payload)["principal"] == "" and unpack(envs[0].payload)["code"] == "UNAUTHENTICATED"
            stream.cancel()


async def test_commands_allowed_replied_and_audited():
    async with running(base_config([gen("gen-1")])) as gw:
        await online(gw, "gen-1")
        async with client(gw) as (stub, _):
            args = msgpack.packb({"x": 1, "s": "hi"})
            reply = await stub.SendCommand(
                pb.CommandRequest(device_id="gen-1", action="echo", args=args, reason="test"), metadata=md(CONTROL)
            )
            assert reply.ok and reply.code == "OK"
            assert unpack(reply.result) == {"echo": {"x": 1, "s": "hi"}}
            refused = await stub.SendCommand(
                pb.CommandRequest(device_id="gen-1", action="refuse"), metadata=md(CONTROL)
            )
            assert not refused.ok and refused.code == "REFUSED" and "says no" in refused.message
            slow = await stub.SendCommand(
                pb.CommandRequest(device_id="gen-1", action="slow", args=msgpack.packb({"s": 5}), timeout_ms=200),
                metadata=md(CONTROL),
            )
            assert not slow.ok and slow.code == "TIMEOUT"
            stream = stub.Subscribe(
                pb.SubscribeRequest(topics=["audit/gen-1/command"], from_seq=reply.audit_seq), metadata=md(READ)
            )
            envs, _, _ = await collect(stream, 3)
            recs = [unpack(e.payload) for e in envs]
            assert [(r["action"], r["ok"], r["code"]) for r in recs] == [
                ("echo", True, "OK"),
                ("refuse", False, "REFUSED"),
                ("slow", False, "TIMEOUT"),
            ]
            assert (
                recs[0]["principal"] == "operator"
                and recs[0]["reason"] == "test"
                and recs[0]["args"] == {"x": 1, "s": "hi"}
            )
            assert [e.seq for e in envs] == [reply.audit_seq, refused.audit_seq, slow.audit_seq]
            stream.cancel()
            # an action that needs a reason
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.SendCommand(pb.CommandRequest(device_id="gen-1", action="set_plan"), metadata=md(CONTROL))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "reason" in err.value.details()


async def test_bad_requests():
    async with running(base_config([gen("gen-1")])) as gw:
        await online(gw, "gen-1")
        async with client(gw) as (stub, ch):
            for topics in (["a//b"], ["a/#/b"], ["x+"], [""]):
                stream = stub.Subscribe(pb.SubscribeRequest(topics=topics), metadata=md(READ))
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stream.read()
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, topics
            stream = stub.Subscribe(pb.SubscribeRequest(from_seq=10**9), metadata=md(READ))
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stream.read()
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "ahead" in err.value.details()
            cases = [
                (pb.CommandRequest(device_id="nope", action="echo"), grpc.StatusCode.NOT_FOUND),
                (pb.CommandRequest(device_id="gen-1", action=""), grpc.StatusCode.INVALID_ARGUMENT),
                (pb.CommandRequest(device_id="gen-1", action="no_such_action"), grpc.StatusCode.INVALID_ARGUMENT),
                (pb.CommandRequest(device_id="a/b", action="echo"), grpc.StatusCode.INVALID_ARGUMENT),
                (pb.CommandRequest(device_id="", action="echo"), grpc.StatusCode.INVALID_ARGUMENT),
                (
                    pb.CommandRequest(device_id="gen-1", action="echo", args=b"\xc1\xc1"),
                    grpc.StatusCode.INVALID_ARGUMENT,
                ),
                (
                    pb.CommandRequest(device_id="gen-1", action="echo", args=msgpack.packb([1, 2])),
                    grpc.StatusCode.INVALID_ARGUMENT,
                ),
            ]
            for req, code in cases:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stub.SendCommand(req, metadata=md(CONTROL))
                assert err.value.code() == code, (req, err.value.details())
            # bytes that are not a protobuf message at all
            raw = ch.unary_unary("/tianwang.v1.Gateway/SendCommand")
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await raw(b"\xff\xff\xff\xff", metadata=md(CONTROL))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            raw = ch.unary_stream("/tianwang.v1.Gateway/Subscribe")
            call = raw(b"\x0a\xff\x01", metadata=md(READ))
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call.read()
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            # the gateway is still fine
            reply = await stub.SendCommand(pb.CommandRequest(device_id="gen-1", action="echo"), metadata=md(CONTROL))
            assert reply.ok


async def test_list_devices_stats_health_reflection_and_metrics():
    cfg = base_config(
        [gen("gen-1", labels={"site": "east"}), {"id": "down", "driver": "testgen", "refuse": True}],
        metrics="127.0.0.1:0",
    )
    async with running(cfg) as gw:
        await online(gw, "gen-1")
        assert await wait_for(lambda: gw.supervisor.entries["down"].counters.get("reconnects", 0) >= 1)
        async with client(gw) as (stub, ch):
            reply = await stub.ListDevices(pb.ListDevicesRequest(), metadata=md(READ))
            devs = {d.id: d for d in reply.devices}
            assert (
                devs["gen-1"].state == "ONLINE"
                and devs["gen-1"].family == "test"
                and devs["gen-1"].info["site"] == "east"
            )
            assert devs["down"].state in ("OFFLINE", "CONNECTING") and "refused" in devs["down"].reason
            # a token limited to gnss/# and test/gen-1/# sees only gen-1
            reply = await stub.ListDevices(pb.ListDevicesRequest(), metadata=md(GNSS_ONLY))
            assert [d.id for d in reply.devices] == ["gen-1"]
            await emit(gw, "gen-1", 5)
            stats = await stub.GetStats(pb.GetStatsRequest(), metadata=md(READ))
            assert stats.last_seq == gw.journal.last_seq and stats.gateway == "test"
            fam = {f.family: f for f in stats.families}["test"]
            assert fam.devices == 2 and fam.envelopes >= 5 and fam.states["ONLINE"] == 1
            from tianwang.gateway import framing

            assert stats.using_cext == framing.USING_CEXT
            from grpc_health.v1 import health_pb2, health_pb2_grpc

            h = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service="tianwang.v1.Gateway"))
            assert h.status == health_pb2.HealthCheckResponse.SERVING
            from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

            refl = reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")])
            )
            names = set()
            async for resp in refl:
                names |= {s.name for s in resp.list_services_response.service}
                break
            assert "tianwang.v1.Gateway" in names and "grpc.health.v1.Health" in names
        import urllib.request

        body = await asyncio.to_thread(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{gw.metrics_port}/metrics", timeout=5).read().decode()
        )
        assert 'tianwang_envelopes_total{family="test"}' in body
        assert 'tianwang_devices{family="test",state="ONLINE"} 1.0' in body
        assert "tianwang_journal_last_seq" in body


async def test_reconnect_with_backoff_publishes_health():
    cfg = base_config([gen("flaky", rate_hz=200, fail_after=20, backoff={"initial_s": 0.05, "max_s": 0.2})])
    async with running(cfg) as gw:
        async with client(gw) as (stub, _):
            stream = stub.Subscribe(pb.SubscribeRequest(topics=["test/flaky/health"], from_seq=1), metadata=md(READ))
            envs, _, _ = await collect(stream, 7)
            states = [unpack(e.payload)["state"] for e in envs]
            assert states[:7] == ["CONNECTING", "ONLINE", "OFFLINE", "CONNECTING", "ONLINE", "OFFLINE", "CONNECTING"]
            offline = unpack(envs[2].payload)
            assert offline["previous"] == "ONLINE" and "link lost after 20" in offline["reason"]
            stream.cancel()
        assert gw.supervisor.entries["flaky"].counters["reconnects"] >= 2


async def test_keepalive_client_pinging_at_the_permitted_rate_is_not_cut():
    cfg = base_config([gen("gen-1")], keepalive={"min_client_ping_s": 0.5, "time_s": 0.5, "timeout_s": 2})
    async with running(cfg) as gw:
        opts = {
            "grpc.keepalive_time_ms": 600,
            "grpc.keepalive_permit_without_calls": 1,
            "grpc.http2.max_pings_without_data": 0,
        }
        async with client(gw, **opts) as (stub, ch):
            stream = stub.Subscribe(pb.SubscribeRequest(topics=["test/#"]), metadata=md(READ))
            await asyncio.sleep(4)  # several pings each way with no data
            await emit(gw, "gen-1", 1)
            envs, _, _ = await collect(stream, 1)
            assert envs[0].topic == "test/gen-1/reading"
            stream.cancel()


async def test_ping_flood_is_refused_but_other_clients_continue():
    cfg = base_config([gen("gen-1")], keepalive={"min_client_ping_s": 5})
    async with running(cfg) as gw:
        opts = {
            "grpc.keepalive_time_ms": 50,
            "grpc.keepalive_permit_without_calls": 1,
            "grpc.http2.max_pings_without_data": 0,
        }
        async with client(gw, **opts) as (bad, _), client(gw) as (good, _):
            flood = bad.Subscribe(pb.SubscribeRequest(topics=["test/#"]), metadata=md(READ))
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await asyncio.wait_for(flood.read(), 10)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            reply = await good.ListDevices(pb.ListDevicesRequest(), metadata=md(READ))
            assert [d.id for d in reply.devices] == ["gen-1"]


async def test_stop_ends_streams_and_closes_drivers(tmp_path):
    marker = tmp_path / "closed"
    cfg = base_config([gen("gen-1", close_marker=str(marker)), gen("gen-2", close_marker=str(marker))])
    gw_cm = running(cfg)
    gw = await gw_cm.__aenter__()
    await online(gw, "gen-1", "gen-2")
    async with client(gw) as (stub, _):
        stream = stub.Subscribe(pb.SubscribeRequest(), metadata=md(READ))
        await wait_for(lambda: len(gw.service.subscribers) == 1)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await gw_cm.__aexit__(None, None, None)
        assert loop.time() - t0 < 5
        # the stream ends: with OK after the last batches, or UNAVAILABLE if the server cut it
        ended = False
        try:
            async for _ in stream:
                pass
            ended = True
        except grpc.aio.AioRpcError as exc:
            ended = exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
        assert ended
    assert sorted(marker.read_text().splitlines()) == ["gen-1 closed", "gen-2 closed"]


async def test_list_devices_pages_and_filters():
    devices = [{"id": f"gen-{i:03d}", "driver": "testgen", "rate_hz": 0} for i in range(25)]
    devices.append({"id": "down-1", "driver": "testgen", "refuse": True, "backoff": {"initial_s": 0.05, "max_s": 0.1}})
    async with running(base_config(devices)) as gw:
        await until(lambda: gw.supervisor.lookup("down-1").state.value == "OFFLINE", 5, "down-1 offline")
        async with client(gw) as (stub, _):
            seen, token, pages = [], "", 0
            while True:
                reply = await stub.ListDevices(pb.ListDevicesRequest(page_size=10, page_token=token), metadata=md(READ))
                assert reply.total == 26
                seen += [d.id for d in reply.devices]
                pages += 1
                token = reply.next_page_token
                if not token:
                    break
            assert pages == 3 and seen == sorted(seen) and len(set(seen)) == 26  # every device once, in order
            only = await stub.ListDevices(pb.ListDevicesRequest(state="OFFLINE"), metadata=md(READ))
            assert [d.id for d in only.devices] == ["down-1"] and only.total == 1
            prefix = await stub.ListDevices(pb.ListDevicesRequest(id_prefix="gen-01"), metadata=md(READ))
            assert [d.id for d in prefix.devices] == [f"gen-01{i}" for i in range(10)]
            for req, text in [
                (pb.ListDevicesRequest(state="ASLEEP"), "state: 'ASLEEP' is not one of"),
                (pb.ListDevicesRequest(page_size=6000), "page_size: at most 5000"),
                (pb.ListDevicesRequest(page_token="not-a-token"), "page_token: not one this gateway gave"),
            ]:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stub.ListDevices(req, metadata=md(READ))
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and text in err.value.details()


async def test_a_device_that_never_connected_shows_no_data_and_logs_its_failure_once(caplog):
    import logging

    down = {"id": "down-1", "driver": "testgen", "refuse": True, "backoff": {"initial_s": 0.02, "max_s": 0.05}}
    with caplog.at_level(logging.DEBUG, logger="tianwang"):
        async with running(base_config([down])) as gw:
            await until(lambda: gw.supervisor.restarts >= 5, 10, "five failed attempts")
            async with client(gw) as (stub, _):
                d = (await stub.ListDevices(pb.ListDevicesRequest(), metadata=md(READ))).devices[0]
                # its health changes are in the journal, but they are the gateway's words, not data
                assert d.last_seen_ns == 0 and d.counters["envelopes"] == 0
            assert gw.journal.last_seq >= 5
    failures = [r for r in caplog.records if "down-1: CONNECTING -> OFFLINE" in r.getMessage()]
    assert len(failures) >= 5
    assert [r.levelno for r in failures].count(logging.WARNING) == 1  # the first; the rest at DEBUG
    starts = [r for r in caplog.records if "down-1: OFFLINE -> CONNECTING" in r.getMessage()]
    assert starts[0].levelno == logging.INFO  # the first start
    assert len(starts) >= 5 and all(r.levelno == logging.DEBUG for r in starts[1:])  # the retries
