"""The fan-out benchmark: a server process, the subscribers that time it, and Router.publish into
the journal (bench/test_bench_fanout.py, bench/test_bench_journal.py and `tianwang bench`).

    python -m tianwang.gateway.benchmarks.fanout tianwang --envelopes N   # the real Gateway, journal pre-filled
    python -m tianwang.gateway.benchmarks.fanout tianwang-disk --envelopes N   # the same, journal on disk, memory empty
    python -m tianwang.gateway.benchmarks.fanout plain --envelopes N      # grpc.aio, one Envelope per write()

Both hold the same N envelopes (a GNSS fix payload, ~200 bytes on the wire) and serve
`tianwang.v1.Gateway/Subscribe` from seq 1. The first stdout line is JSON with the port.
The server runs in its own process so that client-side work does not share its interpreter.
"""

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import grpc
import msgpack
import uvloop

from tianwang.v1 import gateway_pb2 as pb

TOKEN = "bench-token-0123456789abcdef"


def fix_payload(i):
    return {
        "time_ns": 1_790_000_000_000_000_000 + i * 1_000_000_000,
        "lat": 31.2304 + i * 1e-7,
        "lon": 121.4737 - i * 1e-7,
        "alt_m": 12.5,
        "speed_mps": 8.3,
        "course_deg": 271.0,
        "quality": 1,
        "mode": 3,
        "hdop": 0.8,
        "pdop": 1.4,
        "vdop": 1.1,
        "sats_used": {"BDS": 14, "GPS": 9, "GLO": 0, "GAL": 4, "QZSS": 0},
        "source": "nmea",
    }


async def serve_tianwang(n):
    from tianwang.gateway.app import Gateway
    from tianwang.gateway.lifecycle.config import load_config
    from tianwang.gateway.lifecycle.registry import Registry

    cfg = load_config(
        {
            "gateway": {"name": "bench", "listen": "127.0.0.1:0", "metrics": None, "journal": {"max_bytes": "1GiB"}},
            "auth": {"allow_inline_secrets": True, "tokens": [{"name": "bench", "token": TOKEN, "read": ["#"]}]},
        },
        Registry(),
    )
    gw = Gateway(cfg, registry=Registry())
    await gw.start()
    publish = gw.router.publish
    for i in range(n):
        publish(f"gnss/bd-{i % 1000:04d}/fix", f"bd-{i % 1000:04d}", fix_payload(i), 0)
    return gw.port, gw.stop


async def serve_tianwang_disk(n):
    """A gateway whose journal is on disk, pre-filled by an earlier gateway on the same directory
    that then stopped: this one starts with empty memory, so every replayed envelope is read from
    the segments."""
    import tempfile

    from tianwang.gateway.app import Gateway
    from tianwang.gateway.lifecycle.config import load_config
    from tianwang.gateway.lifecycle.registry import Registry

    where = tempfile.mkdtemp(prefix="tianwang-bench-journal-")
    cfg = load_config(
        {
            "gateway": {
                "name": "bench",
                "listen": "127.0.0.1:0",
                "metrics": None,
                "journal": {"path": where, "max_bytes": "256MiB", "fsync": "batch"},
            },
            "auth": {"allow_inline_secrets": True, "tokens": [{"name": "bench", "token": TOKEN, "read": ["#"]}]},
        },
        Registry(),
    )
    gw = Gateway(cfg, registry=Registry())
    await gw.start()
    publish = gw.router.publish
    for i in range(n):
        publish(f"gnss/bd-{i % 1000:04d}/fix", f"bd-{i % 1000:04d}", fix_payload(i), 0)
        if i % 10000 == 9999:
            await asyncio.sleep(0)
    await gw.stop()
    gw = Gateway(cfg, registry=Registry())
    await gw.start()
    assert gw.journal.log.first_seq == n + 1  # nothing in memory: replays come from disk

    async def stop():
        await gw.stop()
        import shutil

        shutil.rmtree(where, ignore_errors=True)

    return gw.port, stop


async def serve_plain(n):
    envelopes = [
        pb.Envelope(
            seq=i + 1,
            topic=f"gnss/bd-{i % 1000:04d}/fix",
            device_id=f"bd-{i % 1000:04d}",
            gateway_time_ns=time.time_ns(),
            payload=msgpack.packb(fix_payload(i)),
        ).SerializeToString()
        for i in range(n)
    ]

    async def subscribe(raw, context):
        req = pb.SubscribeRequest.FromString(raw)
        for env in envelopes[max(0, req.from_seq - 1) :]:
            yield env  # one message per write: what a straightforward server does

    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "tianwang.v1.Gateway", {"Subscribe": grpc.unary_stream_rpc_method_handler(subscribe)}
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return port, lambda: server.stop(0)


class ServerProcess:
    """This module's server, `kind` holding `n` envelopes, in a child process."""

    def __init__(self, kind, n):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tianwang.gateway.benchmarks.fanout", kind, "--envelopes", str(n)],
            stdout=subprocess.PIPE,
            env=dict(os.environ),
        )
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            raise RuntimeError(f"the {kind} fan-out server did not start (exit {self.proc.returncode})")
        self.info = json.loads(line)
        self.addr = f"127.0.0.1:{self.info['port']}"

    def close(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


async def deliver(addr, subscribers, per_subscriber, batched):
    """Start `subscribers` streams from seq 1 on `addr`, each reading `per_subscriber` envelopes;
    return (envelopes delivered, seconds). `batched`: tianwang Batches (envelopes counted from the
    raw bytes), else one Envelope per message."""
    from tianwang.gateway import framing

    req = pb.SubscribeRequest(from_seq=1).SerializeToString()
    md = (("authorization", f"Bearer {TOKEN}"),)
    count = framing.count_envelopes
    channels = [
        grpc.aio.insecure_channel(addr, options=[("grpc.max_receive_message_length", 8 << 20)])
        for _ in range(subscribers)
    ]
    for ch in channels:
        await ch.channel_ready()

    async def one(ch):
        call = ch.unary_stream("/tianwang.v1.Gateway/Subscribe")(req, metadata=md)
        got = 0
        async for msg in call:
            got += count(msg)[0] if batched else 1
            if got >= per_subscriber:
                break
        call.cancel()
        return got

    t0 = time.perf_counter()
    got = await asyncio.gather(*(one(ch) for ch in channels))
    elapsed = time.perf_counter() - t0
    for ch in channels:
        await ch.close()
    return sum(got), elapsed


def router_append(impl, n: int, packed: bool) -> None:
    """`n` fixes through Router.publish (or publish_packed) into a fresh memory journal on `impl`'s
    EntryLog (encode once + append + retention)."""
    from tianwang.gateway.datapath.journal import Journal
    from tianwang.gateway.datapath.router import Router

    router = Router(Journal(256 * 1024 * 1024, entry_log=impl.EntryLog))
    publish = router.publish_packed if packed else router.publish
    p = msgpack.packb(fix_payload(1)) if packed else fix_payload(1)
    topics = [f"gnss/bd-{i:04d}/fix" for i in range(1000)]
    ids = [f"bd-{i:04d}" for i in range(1000)]
    for i in range(n):
        publish(topics[i % 1000], ids[i % 1000], p, 0)


async def journal_append(policy: str, n: int, burst: int = 1000):
    """`n` fixes published on the loop (yielding every `burst`) until the journal's writer has
    written them (and synced under `always`): (seconds, journal counters). `policy`: memory, or a
    durable journal's fsync policy (never, batch, always) in a temporary directory."""
    import shutil
    import tempfile

    from tianwang.gateway.datapath.journal import DurableJournal, Journal
    from tianwang.gateway.datapath.router import Router
    from tianwang.gateway.datapath.segments import SegmentStore

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
    try:
        router = Router(journal)
        publish = router.publish
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for i in range(n):
            publish(topics[i % 1000], ids[i % 1000], blob, 0)
            if i % burst == burst - 1:
                await asyncio.sleep(0)
        while journal.next_seq <= n:
            await asyncio.sleep(0)
        elapsed = loop.time() - t0
        stats = journal.counters()
        await journal.close()
    finally:
        if where:
            shutil.rmtree(where, ignore_errors=True)
    return elapsed, stats


async def main(args):
    serve = {"tianwang": serve_tianwang, "tianwang-disk": serve_tianwang_disk, "plain": serve_plain}[args.kind]
    port, stop = await serve(args.envelopes)
    from tianwang.gateway import framing

    print(json.dumps({"port": port, "envelopes": args.envelopes, "using_cext": framing.USING_CEXT}), flush=True)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, done.set)
    loop.add_signal_handler(signal.SIGINT, done.set)
    await done.wait()
    await stop()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("kind", choices=["tianwang", "tianwang-disk", "plain"])
    p.add_argument("--envelopes", type=int, default=500_000)
    uvloop.run(main(p.parse_args()))
