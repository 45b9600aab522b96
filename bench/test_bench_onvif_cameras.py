"""Scale: 200 ONVIF cameras, each sending events at 1 Hz, into one gateway process.

Three processes, so that each side's CPU is its own:
- the cameras (`python -m tianwang simulate onvif --cameras N --rate 1`): N HTTP SOAP devices, each
  queueing its events on the gateway's PullPoint subscription and counting what it queued and what
  PullMessages handed out;
- the gateway (`python -m tianwang run -c CONFIG`) with N `driver: onvif` devices;
- this process, a real gRPC subscriber on `camera/+/event/#` from seq 1, which counts events per
  camera and, for each, the latency camera -> subscriber: arrival wall time minus the event's
  `utc_ns` (the simulated cameras' clock is this machine's clock).

Measured over a steady window once every camera is ONLINE: CPU of the gateway process (utime +
stime from /proc, all threads) per wall second, its RSS and peak RSS, and the latency p50/p99 of
the events received in the window. Then the cameras stop generating (SIGUSR1), the subscriber
drains, and nothing-lost is checked: events received == events PullMessages handed out == events
the cameras queued, from every camera, and no Gap.

Environment: TIANWANG_BENCH_ONVIF_CAMERAS (default 200), TIANWANG_BENCH_ONVIF_SECONDS (window,
default 60, long enough to hold every camera's subscription renewal). The machine's load average is recorded: other work on the same cores shows in CPU and
latency.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import tempfile
import time

import benchreport
import msgpack
import uvloop

from test_bench_jt808_fleet import Proc, cpu_seconds, memory_kib
from benchclient import batches_until, list_devices  # noqa: E402
from tianwang.v1 import gateway_pb2 as pb

CAMERAS = int(os.environ.get("TIANWANG_BENCH_ONVIF_CAMERAS", "200"))
# 60 s: the window holds a whole renewal cycle of every camera's subscription (renewed at 40-60% of 60 s)
WINDOW_S = float(os.environ.get("TIANWANG_BENCH_ONVIF_SECONDS", "60"))
TOKEN = "onvif-bench-read-token"
PASSWORD = "onvif-bench-pass-0123"


def percentile(values, q):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def _subscribe(addr, counts, latencies, gaps, stop, recording):
    md = (("authorization", f"Bearer {TOKEN}"),)
    req = pb.SubscribeRequest(topics=["camera/+/event/#"], from_seq=1, max_batch=1024, max_delay_ms=2)
    async for batch in batches_until(addr, req, md, stop):
        now = time.time_ns()
        if batch.HasField("gap"):
            gaps.append((batch.gap.from_seq, batch.gap.to_seq, batch.gap.reason))
        for env in batch.envelopes:
            counts[env.device_id] = counts.get(env.device_id, 0) + 1
            if recording[0]:
                latencies.append((now - msgpack.unpackb(env.payload)["utc_ns"]) / 1e6)


async def _list_devices(addr):
    return await list_devices(addr, (("authorization", f"Bearer {TOKEN}"),), family="camera", timeout=30)


async def _scenario(logdir, cameras, window_s) -> dict:
    env = dict(os.environ, TW_BENCH_TOKEN=TOKEN, TW_BENCH_CAM_PASS=PASSWORD)
    sim = Proc([sys.executable, "-m", "tianwang", "simulate", "onvif", "--cameras", str(cameras), "--rate", "1",
                "--password", PASSWORD, "--slots", "2", "--stats-interval", "0",
                # a 30 s UsernameToken window: one process serving 200 cameras may answer the connect
                # burst late, which a 5 s window would count as bad clocks (the tests check the window)
                "--auth-window", "30"], logdir, "cameras", env)
    gw = None
    result = {"cameras": cameras, "window_s": window_s, "load_avg_start": os.getloadavg()}
    try:
        urls = sim.first.get("urls") or [sim.first["url"]]
        devices = []
        for i, url in enumerate(urls):
            host, port = url[len("http://"):].rsplit(":", 1)
            devices.append({"id": f"cam-{i:04d}", "driver": "onvif", "host": host, "port": int(port), "username": "admin",
                            "password_env": "TW_BENCH_CAM_PASS", "pull_timeout_s": 10})
        config = os.path.join(logdir, "gateway.yaml")
        with open(config, "w") as f:
            json.dump({"gateway": {"name": "bench", "listen": "127.0.0.1:0", "metrics": None},
                       "auth": {"tokens": [{"name": "bench", "token_env": "TW_BENCH_TOKEN", "read": ["#"]}]},
                       "devices": devices}, f)
        gw = Proc([sys.executable, "-m", "tianwang", "run", "-c", config], logdir, "gateway", env)
        addr, pid = gw.first["listen"], gw.first["pid"]
        result["hot_path"] = gw.first["hot_path"]
        counts, latencies, gaps, recording = {}, [], [], [False]
        stop = asyncio.Event()
        sub = asyncio.ensure_future(_subscribe(addr, counts, latencies, gaps, stop, recording))
        t0 = time.monotonic()
        while True:
            rows = await _list_devices(addr)
            online = sum(1 for d in rows if d.state == "ONLINE")
            if online >= cameras:
                break
            assert time.monotonic() - t0 < 180, f"only {online} of {cameras} cameras online"
            await asyncio.sleep(1.0)
        result["connect_s"] = round(time.monotonic() - t0, 1)
        await asyncio.sleep(3.0)
        recording[0] = True
        cpu0, wall0, n0 = cpu_seconds(pid), time.monotonic(), sum(counts.values())
        while time.monotonic() - wall0 < window_s:
            await asyncio.sleep(1.0)
        cpu1, wall1, n1 = cpu_seconds(pid), time.monotonic(), sum(counts.values())
        recording[0] = False
        mem = memory_kib(pid)
        result.update(
            gateway_cpu_cores=round((cpu1 - cpu0) / (wall1 - wall0), 3),
            gateway_rss_mib=round(mem["VmRSS"] / 1024, 1),
            gateway_peak_rss_mib=round(mem["VmHWM"] / 1024, 1),
            events_per_s_received=round((n1 - n0) / (wall1 - wall0), 1),
            latency_ms_p50=round(percentile(latencies, 0.50), 2),
            latency_ms_p99=round(percentile(latencies, 0.99), 2),
            latency_ms_max=round(max(latencies), 2),
            latency_samples=len(latencies),
            load_avg_end=os.getloadavg(),
        )
        sim.proc.send_signal(signal.SIGUSR1)  # the cameras stop generating; the subscriber drains
        last = -1
        await asyncio.sleep(2.0)
        while sum(counts.values()) != last:
            last = sum(counts.values())
            await asyncio.sleep(2.0)
        stop.set()
        await sub
        gw.stop()
        gw = None
        final = json.loads(sim.stop().strip().splitlines()[-1])["final"]
        sim = None
        result.update(
            events_generated=final.get("events", 0),
            events_queued=final.get("events_queued", 0),
            events_pulled=final.get("events_pulled", 0),
            events_received=sum(counts.values()),
            cameras_heard=len(counts),
            subscriptions_created=final.get("subscriptions_created", 0),
            auth_failures=final.get("auth_failures", 0),
            gaps=len(gaps),
        )
        return result
    finally:
        if gw is not None:
            gw.stop()
        if sim is not None:
            sim.stop()


def test_onvif_cameras_scale(benchmark):
    with tempfile.TemporaryDirectory(prefix="tw-bench-onvif-") as logdir:
        results = []
        benchmark.pedantic(lambda: results.append(uvloop.run(_scenario(logdir, CAMERAS, WINDOW_S))), rounds=1, iterations=1)
    r = results[0]
    benchmark.extra_info.update(r)
    benchreport.add(
        "ONVIF cameras into one gateway process",
        f"{r['cameras']} cameras at 1 event/s -> gateway CPU {r['gateway_cpu_cores']:.3f} cores, RSS {r['gateway_rss_mib']} MiB "
        f"(peak {r['gateway_peak_rss_mib']} MiB), {r['events_per_s_received']} events/s, latency camera -> subscriber "
        f"p50 {r['latency_ms_p50']} ms, p99 {r['latency_ms_p99']} ms (max {r['latency_ms_max']}), "
        f"{r['events_received']} received / {r['events_pulled']} pulled / {r['events_queued']} queued, "
        f"{r['cameras_heard']} cameras heard, gaps {r['gaps']}, auth failures {r['auth_failures']}; load average {r['load_avg_start']} -> {r['load_avg_end']}",
    )
    # nothing lost: every event a camera queued was pulled and reached the subscriber, from every camera
    assert r["gaps"] == 0 and r["auth_failures"] == 0
    assert r["cameras_heard"] == r["cameras"]
    assert r["events_received"] == r["events_pulled"] == r["events_queued"] > 0
    assert r["subscriptions_created"] == r["cameras"]  # no subscription was lost and made again
