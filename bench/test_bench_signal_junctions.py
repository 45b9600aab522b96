"""Scale: 500 traffic-signal controllers over TCP polled at 1 Hz, in one gateway process beside 5,000
JT/T 808 terminals reporting at 1 Hz.

Four processes, so that each side's CPU is its own:
- the gateway (`python -m tianwang run -c CONFIG`) with 500 `signal` devices and one jt808 listener;
- the controllers (`python -m tianwang simulate signal --transport tcp --controllers 500`), a port each;
- the fleet (`python -m tianwang simulate jt808 --terminals 5000 --rate 1`);
- this process, a real gRPC subscriber on `signal/+/lamps` and `gnss/+/fix` from seq 1.

Measured over a steady window once every controller and terminal is online: the gateway's CPU
(utime + stime, all threads, per wall second), RSS and peak RSS, polls answered per second (the
devices' `polls_answered` counters). After the simulators stop, nothing lost: the subscriber received
exactly one `lamps` envelope per answered poll (the counters, summed) from every controller, every
position the listener acknowledged, and no Gap.

Target (docs/architecture.md): all families in one process under one core and 1 GiB.
Environment: TIANWANG_BENCH_SIGNAL_CONTROLLERS (default 500), TIANWANG_BENCH_JT808_TERMINALS (default
5000), TIANWANG_BENCH_SIGNAL_SECONDS (window, default 30).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import benchreport
import pytest
import uvloop

from test_bench_jt808_fleet import Proc, cpu_seconds, memory_kib
from benchclient import batches_until, list_devices  # noqa: E402
from tianwang.gateway import framing
from tianwang.v1 import gateway_pb2 as pb

CONTROLLERS = int(os.environ.get("TIANWANG_BENCH_SIGNAL_CONTROLLERS", "500"))
TERMINALS = int(os.environ.get("TIANWANG_BENCH_JT808_TERMINALS", "5000"))
WINDOW_S = float(os.environ.get("TIANWANG_BENCH_SIGNAL_SECONDS", "30"))
TOKEN = "signal-bench-read-token"
MD = (("authorization", f"Bearer {TOKEN}"),)


async def _subscribe(addr: str, counts: dict, gaps: list, stop: asyncio.Event):
    req = pb.SubscribeRequest(topics=["signal/+/lamps", "gnss/+/fix"], from_seq=1, max_batch=1024, max_delay_ms=20)
    async for batch in batches_until(addr, req, MD, stop):
        if batch.HasField("gap"):
            gaps.append((batch.gap.from_seq, batch.gap.to_seq, batch.gap.reason))
        for env in batch.envelopes:
            key = (env.topic.split("/", 1)[0], env.device_id)
            counts[key] = counts.get(key, 0) + 1


async def _devices(addr):
    return await list_devices(addr, MD, timeout=20)


def _polls(rows) -> int:
    return sum(d.counters.get("polls_answered", 0) for d in rows if d.family == "signal")


async def _scenario(logdir: str, controllers: int, terminals: int, window_s: float, hot_path: str) -> dict:
    env = dict(os.environ)
    env.pop("GATEWAY_NO_CEXT", None)
    if hot_path == "python":
        env["GATEWAY_NO_CEXT"] = "1"
    env["TW_BENCH_TOKEN"] = TOKEN
    env["TW_BENCH_JT808_SECRET"] = "bench-secret-0123456789"
    sims = Proc([sys.executable, "-m", "tianwang", "simulate", "signal", "--transport", "tcp", "--controllers",
                 str(controllers), "--traffic-interval", "0"], logdir, "controllers", env)
    gw = fleet = None
    result: dict = {"controllers": controllers, "terminals": terminals, "window_s": window_s}
    try:
        urls, ids = sims.first["urls"], sims.first["controller_ids"]
        devices = [{"id": f"tsc-{n}", "driver": "signal", "url": u, "controller_id": n, "poll_hz": 1,
                    "backoff": {"initial_s": 0.5, "max_s": 5}} for n, u in zip(ids, urls)]
        listener = {"id": "fleet", "driver": "jt808", "listen": "127.0.0.1:0",
                    "auth_secret_env": "TW_BENCH_JT808_SECRET", "max_connections": terminals + 100}
        config = Path(logdir) / "gateway.yaml"
        config.write_text(json.dumps({
            "gateway": {"name": "bench", "listen": "127.0.0.1:0", "metrics": None,
                        "journal": {"max_bytes": "512MiB"}},
            "auth": {"tokens": [{"name": "bench", "token_env": "TW_BENCH_TOKEN", "read": ["#"]}]},
            "devices": devices, "listeners": [listener] if terminals else []}))
        gw = Proc([sys.executable, "-m", "tianwang", "run", "-c", str(config)], logdir, "gateway", env)
        result["hot_path"] = gw.first["hot_path"]
        assert gw.first["hot_path"] == hot_path
        addr, pid = gw.first["listen"], gw.first["pid"]
        counts: dict = {}
        gaps: list = []
        stop = asyncio.Event()
        sub = asyncio.ensure_future(_subscribe(addr, counts, gaps, stop))
        if terminals:
            listen = ""
            for _ in range(100):
                listen = next(d for d in await _devices(addr) if d.id == "fleet").info.get("listen", "")
                if listen:
                    break
                await asyncio.sleep(0.1)
            fleet = Proc([sys.executable, "-m", "tianwang", "simulate", "jt808", "--connect", listen, "--terminals",
                          str(terminals), "--rate", "1"], logdir, "fleet", env)
        t_start = time.monotonic()
        while True:
            rows = await _devices(addr)
            online = sum(1 for d in rows if d.state == "ONLINE" and d.id != "fleet")
            if online >= controllers + terminals:
                break
            assert time.monotonic() - t_start < 180, f"only {online} of {controllers + terminals} online"
            await asyncio.sleep(1.0)
        result["connect_s"] = round(time.monotonic() - t_start, 1)
        await asyncio.sleep(3.0)
        cpu0, wall0, polls0 = cpu_seconds(pid), time.monotonic(), _polls(await _devices(addr))
        while time.monotonic() - wall0 < window_s:
            await asyncio.sleep(1.0)
        cpu1, wall1, rows = cpu_seconds(pid), time.monotonic(), await _devices(addr)
        polls1 = _polls(rows)
        mem = memory_kib(pid)
        result.update(
            gateway_cpu_cores=round((cpu1 - cpu0) / (wall1 - wall0), 3),
            gateway_rss_mib=round(mem["VmRSS"] / 1024, 1),
            gateway_peak_rss_mib=round(mem["VmHWM"] / 1024, 1),
            polls_answered_per_s=round((polls1 - polls0) / (wall1 - wall0), 1),
            signal_online_at_end=sum(1 for d in rows if d.family == "signal" and d.state == "ONLINE"),
            polls_unanswered=sum(d.counters.get("polls_unanswered", 0) for d in rows if d.family == "signal"),
        )
        final_fleet = json.loads(fleet.stop().strip().splitlines()[-1])["final"] if fleet else {}
        fleet = None
        sims.stop()
        sims = None
        await asyncio.sleep(2.0)  # polls in flight at the stop are answered or time out
        rows = await _devices(addr)
        polls_total = _polls(rows)
        last = -1
        while sum(counts.values()) != last:
            last = sum(counts.values())
            await asyncio.sleep(1.0)
        stop.set()
        await sub
        lamps = {k[1]: n for k, n in counts.items() if k[0] == "signal"}
        result.update(
            polls_answered_total=polls_total,
            lamps_received=sum(lamps.values()),
            controllers_heard=len(lamps),
            fixes_acked_by_listener=final_fleet.get("fixes_acked", 0),
            fixes_received=sum(n for k, n in counts.items() if k[0] == "gnss"),
            fixes_in_flight_at_stop=final_fleet.get("pending", 0),
            gaps=len(gaps),
        )
        return result
    finally:
        for p in (fleet, sims, gw):
            if p is not None:
                p.stop()


HOT_PATHS = ["cext", "python"] if framing.USING_CEXT else ["python"]


@pytest.mark.parametrize("hot_path", HOT_PATHS)
def test_signal_controllers_beside_the_fleet(benchmark, hot_path):
    with tempfile.TemporaryDirectory(prefix="tw-bench-signal-") as logdir:
        results = []

        def run():
            results.append(uvloop.run(_scenario(logdir, CONTROLLERS, TERMINALS, WINDOW_S, hot_path)))

        benchmark.pedantic(run, rounds=1, iterations=1)
    r = results[0]
    benchmark.extra_info.update(r)
    benchreport.add(
        "Signal controllers beside the JT/T 808 fleet in one gateway process",
        f"[{hot_path}] {r['controllers']} controllers polled at 1 Hz + {r['terminals']} terminals at 1 Hz -> "
        f"gateway CPU {r['gateway_cpu_cores']:.3f} cores, RSS {r['gateway_rss_mib']} MiB (peak "
        f"{r['gateway_peak_rss_mib']} MiB), {r['polls_answered_per_s']} polls answered/s, "
        f"{r['lamps_received']} lamps received / {r['polls_answered_total']} polls answered, "
        f"{r['fixes_received']} fixes / {r['fixes_acked_by_listener']} acknowledged, gaps {r['gaps']}",
    )
    # nothing lost: one lamps envelope per answered poll, from every controller; every acknowledged fix
    assert r["gaps"] == 0
    assert r["controllers_heard"] == r["controllers"]
    assert r["lamps_received"] == r["polls_answered_total"]
    assert r["fixes_acked_by_listener"] <= r["fixes_received"] <= r["fixes_acked_by_listener"] + r["fixes_in_flight_at_stop"]
    # the polling kept up: at least 95 % of 1 Hz per controller
    assert r["polls_answered_per_s"] >= 0.95 * r["controllers"]
    # the targets of docs/architecture.md
    assert r["gateway_cpu_cores"] < 1.0
    assert r["gateway_peak_rss_mib"] <= 1024
