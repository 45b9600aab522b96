"""A server process for the fan-out benchmark (run by bench/test_bench_fanout.py).

    python bench/fanout_server.py tianwang --envelopes N   # the real Gateway, journal pre-filled
    python bench/fanout_server.py tianwang-disk --envelopes N   # the same, journal on disk, memory empty
    python bench/fanout_server.py plain --envelopes N      # grpc.aio, one Envelope per write()

Both hold the same N envelopes (a GNSS fix payload, ~200 bytes on the wire) and serve
`tianwang.v1.Gateway/Subscribe` from seq 1. The first stdout line is JSON with the port.
The server runs in its own process so that client-side work does not share its interpreter.
"""

import argparse
import asyncio
import json
import os
import signal
import sys
import time

import grpc
import msgpack
import uvloop

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tianwang.v1 import gateway_pb2 as pb  # noqa: E402

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
        (grpc.method_handlers_generic_handler("tianwang.v1.Gateway", {"Subscribe": grpc.unary_stream_rpc_method_handler(subscribe)}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return port, lambda: server.stop(0)


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
