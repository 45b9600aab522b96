"""The scale runs: device fleets into one gateway process, each side in a process of its own, a
real gRPC subscriber here counting what arrives. bench/test_bench_jt808_fleet.py,
test_bench_signal_junctions.py and test_bench_onvif_cameras.py describe what each measures and
assert the targets; `tianwang bench` runs them at its own sizes.

jt808_fleet(logdir, terminals, window_s, hot_path), signal_junctions(logdir, controllers, terminals,
window_s, hot_path) and onvif_cameras(logdir, cameras, window_s) are coroutines returning a dict of
figures (gateway CPU in cores, RSS, rates, what was received against what was sent, gaps).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

import msgpack

from tianwang.gateway.benchmarks.client import batches_until, list_devices
from tianwang.gateway.benchmarks.common import Proc, cpu_seconds, memory_kib, percentile
from tianwang.v1 import gateway_pb2 as pb

# -- JT/T 808 terminals ----------------------------------------------------------------------------
JT808_TOKEN = "jt808-bench-read-token"


async def _jt808_subscribe(addr: str, counts: dict, gaps: list, stop: asyncio.Event):
    md = (("authorization", f"Bearer {JT808_TOKEN}"),)
    req = pb.SubscribeRequest(topics=["gnss/+/fix"], from_seq=1, max_batch=1024, max_delay_ms=20)
    async for batch in batches_until(addr, req, md, stop):
        if batch.HasField("gap"):
            gaps.append((batch.gap.from_seq, batch.gap.to_seq, batch.gap.reason))
        for env in batch.envelopes:
            counts[env.device_id] = counts.get(env.device_id, 0) + 1


async def _jt808_devices(addr):
    return await list_devices(addr, (("authorization", f"Bearer {JT808_TOKEN}"),), timeout=10)


async def jt808_fleet(logdir: str, terminals: int, window_s: float, hot_path: str) -> dict:
    """`terminals` JT/T 808 terminals at 1 Hz into one gateway on `hot_path` (cext or python)."""
    env = dict(os.environ)
    env.pop("GATEWAY_NO_CEXT", None)
    if hot_path == "python":
        env["GATEWAY_NO_CEXT"] = "1"  # gateway and fleet both on the pure-Python twins
    env["TW_BENCH_JT808_TOKEN"] = JT808_TOKEN
    env["TW_BENCH_JT808_SECRET"] = "bench-secret-0123456789"
    config = Path(logdir) / "gateway.yaml"
    config.write_text(
        json.dumps(
            {
                "gateway": {"name": "bench", "listen": "127.0.0.1:0", "metrics": None},
                "auth": {"tokens": [{"name": "bench", "token_env": "TW_BENCH_JT808_TOKEN", "read": ["#"]}]},
                "listeners": [
                    {
                        "id": "fleet",
                        "driver": "jt808",
                        "listen": "127.0.0.1:0",
                        "auth_secret_env": "TW_BENCH_JT808_SECRET",
                        "max_connections": terminals + 100,
                        # every terminal dials in from 127.0.0.1, all at once
                        "registrations_burst": terminals + 100,
                        "max_unauthenticated_per_address": terminals + 100,
                    }
                ],
            }
        )
    )
    gw = Proc([sys.executable, "-m", "tianwang", "run", "-c", str(config)], logdir, "gateway", env)
    fleet = None
    result: dict = {"terminals": terminals, "window_s": window_s, "hot_path": gw.first["hot_path"]}
    try:
        assert gw.first["hot_path"] == hot_path
        addr = gw.first["listen"]
        pid = gw.first["pid"]
        listen = ""
        for _ in range(100):  # the listener binds its port shortly after the gateway is ready
            devices = await _jt808_devices(addr)
            listen = next(d for d in devices if d.id == "fleet").info.get("listen", "")
            if listen:
                break
            await asyncio.sleep(0.1)
        assert listen, "the jt808 listener did not report its address"
        counts: dict[str, int] = {}
        gaps: list = []
        stop = asyncio.Event()
        sub = asyncio.ensure_future(_jt808_subscribe(addr, counts, gaps, stop))
        fleet = Proc(
            [
                sys.executable,
                "-m",
                "tianwang",
                "simulate",
                "jt808",
                "--connect",
                listen,
                "--terminals",
                str(terminals),
                "--rate",
                "1",
                "--stats-interval",
                "1",
            ],
            logdir,
            "fleet",
            env,
        )
        t_start = time.monotonic()
        deadline = t_start + 120
        while True:
            online = sum(1 for d in await _jt808_devices(addr) if d.state == "ONLINE" and d.id != "fleet")
            if online >= terminals:
                break
            assert time.monotonic() < deadline, f"only {online} of {terminals} terminals online"
            await asyncio.sleep(1.0)
        result["connect_s"] = round(time.monotonic() - t_start, 1)
        await asyncio.sleep(3.0)  # let the reports settle into their 1 Hz slots
        cpu0, wall0, fixes0 = cpu_seconds(pid), time.monotonic(), sum(counts.values())
        rss_samples = []
        while time.monotonic() - wall0 < window_s:
            await asyncio.sleep(1.0)
            rss_samples.append(memory_kib(pid)["VmRSS"])
        cpu1, wall1, fixes1 = cpu_seconds(pid), time.monotonic(), sum(counts.values())
        mem = memory_kib(pid)
        result.update(
            gateway_cpu_cores=round((cpu1 - cpu0) / (wall1 - wall0), 3),
            gateway_rss_mib=round(mem["VmRSS"] / 1024, 1),
            gateway_peak_rss_mib=round(mem["VmHWM"] / 1024, 1),
            fixes_per_s_received=round((fixes1 - fixes0) / (wall1 - wall0), 1),
        )
        rows = await _jt808_devices(addr)
        result["listed_terminals"] = sum(1 for d in rows if d.id != "fleet")
        result["listed_online"] = sum(1 for d in rows if d.id != "fleet" and d.state == "ONLINE")
        final = json.loads(fleet.stop().strip().splitlines()[-1])["final"]
        fleet = None
        # drain: the subscriber catches up with whatever the gateway published last
        last = -1
        while sum(counts.values()) != last:
            last = sum(counts.values())
            await asyncio.sleep(1.0)
        stop.set()
        await sub
        result.update(
            fixes_acked_by_listener=final["fixes_acked"],
            reports_sent=final["reports_sent"],
            reports_acked=final["reports_acked"],
            in_flight_at_stop=final["pending"],
            resends=final["resends"],
            gave_up=final["gave_up"],
            fix_envelopes_received=sum(counts.values()),
            terminals_heard=len(counts),
            gaps=len(gaps),
        )
        return result
    finally:
        if fleet is not None:
            fleet.stop()
        gw.stop()


# -- traffic-signal controllers beside the fleet ------------------------------------------------------
SIGNAL_TOKEN = "signal-bench-read-token"
SIGNAL_MD = (("authorization", f"Bearer {SIGNAL_TOKEN}"),)


async def _signal_subscribe(addr: str, counts: dict, gaps: list, stop: asyncio.Event):
    req = pb.SubscribeRequest(topics=["signal/+/lamps", "gnss/+/fix"], from_seq=1, max_batch=1024, max_delay_ms=20)
    async for batch in batches_until(addr, req, SIGNAL_MD, stop):
        if batch.HasField("gap"):
            gaps.append((batch.gap.from_seq, batch.gap.to_seq, batch.gap.reason))
        for env in batch.envelopes:
            key = (env.topic.split("/", 1)[0], env.device_id)
            counts[key] = counts.get(key, 0) + 1


async def _signal_devices(addr):
    return await list_devices(addr, SIGNAL_MD, timeout=20)


def _polls(rows) -> int:
    return sum(d.counters.get("polls_answered", 0) for d in rows if d.family == "signal")


async def signal_junctions(logdir: str, controllers: int, terminals: int, window_s: float, hot_path: str) -> dict:
    """`controllers` signal controllers over TCP polled at 1 Hz beside `terminals` JT/T 808 terminals."""
    env = dict(os.environ)
    env.pop("GATEWAY_NO_CEXT", None)
    if hot_path == "python":
        env["GATEWAY_NO_CEXT"] = "1"
    env["TW_BENCH_SIGNAL_TOKEN"] = SIGNAL_TOKEN
    env["TW_BENCH_JT808_SECRET"] = "bench-secret-0123456789"
    sims: Proc | None
    sims = Proc(
        [
            sys.executable,
            "-m",
            "tianwang",
            "simulate",
            "signal",
            "--transport",
            "tcp",
            "--controllers",
            str(controllers),
            "--traffic-interval",
            "0",
        ],
        logdir,
        "controllers",
        env,
    )
    gw = fleet = None
    result: dict = {"controllers": controllers, "terminals": terminals, "window_s": window_s}
    try:
        urls, ids = sims.first["urls"], sims.first["controller_ids"]
        devices = [
            {
                "id": f"tsc-{n}",
                "driver": "signal",
                "url": u,
                "controller_id": n,
                "poll_hz": 1,
                "backoff": {"initial_s": 0.5, "max_s": 5},
            }
            for n, u in zip(ids, urls, strict=True)
        ]
        listener = {
            "id": "fleet",
            "driver": "jt808",
            "listen": "127.0.0.1:0",
            "auth_secret_env": "TW_BENCH_JT808_SECRET",
            "max_connections": terminals + 100,
            # every terminal dials in from 127.0.0.1, all at once
            "registrations_burst": terminals + 100,
            "max_unauthenticated_per_address": terminals + 100,
        }
        config = Path(logdir) / "gateway.yaml"
        config.write_text(
            json.dumps(
                {
                    "gateway": {
                        "name": "bench",
                        "listen": "127.0.0.1:0",
                        "metrics": None,
                        "journal": {"max_bytes": "512MiB"},
                    },
                    "auth": {"tokens": [{"name": "bench", "token_env": "TW_BENCH_SIGNAL_TOKEN", "read": ["#"]}]},
                    "devices": devices,
                    "listeners": [listener] if terminals else [],
                }
            )
        )
        gw = Proc([sys.executable, "-m", "tianwang", "run", "-c", str(config)], logdir, "gateway", env)
        result["hot_path"] = gw.first["hot_path"]
        assert gw.first["hot_path"] == hot_path
        addr, pid = gw.first["listen"], gw.first["pid"]
        counts: dict = {}
        gaps: list = []
        stop = asyncio.Event()
        sub = asyncio.ensure_future(_signal_subscribe(addr, counts, gaps, stop))
        if terminals:
            listen = ""
            for _ in range(100):
                listen = next(d for d in await _signal_devices(addr) if d.id == "fleet").info.get("listen", "")
                if listen:
                    break
                await asyncio.sleep(0.1)
            fleet = Proc(
                [
                    sys.executable,
                    "-m",
                    "tianwang",
                    "simulate",
                    "jt808",
                    "--connect",
                    listen,
                    "--terminals",
                    str(terminals),
                    "--rate",
                    "1",
                ],
                logdir,
                "fleet",
                env,
            )
        t_start = time.monotonic()
        while True:
            rows = await _signal_devices(addr)
            online = sum(1 for d in rows if d.state == "ONLINE" and d.id != "fleet")
            if online >= controllers + terminals:
                break
            assert time.monotonic() - t_start < 180, f"only {online} of {controllers + terminals} online"
            await asyncio.sleep(1.0)
        result["connect_s"] = round(time.monotonic() - t_start, 1)
        await asyncio.sleep(3.0)
        cpu0, wall0, polls0 = cpu_seconds(pid), time.monotonic(), _polls(await _signal_devices(addr))
        while time.monotonic() - wall0 < window_s:
            await asyncio.sleep(1.0)
        cpu1, wall1, rows = cpu_seconds(pid), time.monotonic(), await _signal_devices(addr)
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
        rows = await _signal_devices(addr)
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


def _round(value, digits=2):
    return None if value is None else round(value, digits)


# -- ONVIF cameras ------------------------------------------------------------------------------------
ONVIF_TOKEN = "onvif-bench-read-token"
ONVIF_PASSWORD = "onvif-bench-pass-0123"


async def _onvif_subscribe(addr, counts, latencies, gaps, stop, recording):
    md = (("authorization", f"Bearer {ONVIF_TOKEN}"),)
    req = pb.SubscribeRequest(topics=["camera/+/event/#"], from_seq=1, max_batch=1024, max_delay_ms=2)
    async for batch in batches_until(addr, req, md, stop):
        now = time.time_ns()
        if batch.HasField("gap"):
            gaps.append((batch.gap.from_seq, batch.gap.to_seq, batch.gap.reason))
        for env in batch.envelopes:
            counts[env.device_id] = counts.get(env.device_id, 0) + 1
            if recording[0]:
                latencies.append((now - msgpack.unpackb(env.payload)["utc_ns"]) / 1e6)


async def _onvif_devices(addr):
    return await list_devices(addr, (("authorization", f"Bearer {ONVIF_TOKEN}"),), family="camera", timeout=30)


async def onvif_cameras(logdir, cameras: int, window_s: float) -> dict:
    """`cameras` ONVIF cameras at 1 event/s into one gateway; latency camera -> subscriber."""
    env = dict(os.environ, TW_BENCH_ONVIF_TOKEN=ONVIF_TOKEN, TW_BENCH_CAM_PASS=ONVIF_PASSWORD)
    sim: Proc | None
    sim = Proc(
        [
            sys.executable,
            "-m",
            "tianwang",
            "simulate",
            "onvif",
            "--cameras",
            str(cameras),
            "--rate",
            "1",
            "--password",
            ONVIF_PASSWORD,
            "--slots",
            "2",
            "--stats-interval",
            "0",
            # a 30 s UsernameToken window: one process serving 200 cameras may answer the connect
            # burst late, which a 5 s window would count as bad clocks (the tests check the window)
            "--auth-window",
            "30",
        ],
        logdir,
        "cameras",
        env,
    )
    gw = None
    result = {"cameras": cameras, "window_s": window_s, "load_avg_start": os.getloadavg()}
    try:
        urls = sim.first.get("urls") or [sim.first["url"]]
        devices = []
        for i, url in enumerate(urls):
            host, port = url[len("http://") :].rsplit(":", 1)
            devices.append(
                {
                    "id": f"cam-{i:04d}",
                    "driver": "onvif",
                    "host": host,
                    "port": int(port),
                    "username": "admin",
                    "password_env": "TW_BENCH_CAM_PASS",
                    "pull_timeout_s": 10,
                }
            )
        config = os.path.join(logdir, "gateway.yaml")
        with open(config, "w") as f:
            json.dump(
                {
                    "gateway": {"name": "bench", "listen": "127.0.0.1:0", "metrics": None},
                    "auth": {"tokens": [{"name": "bench", "token_env": "TW_BENCH_ONVIF_TOKEN", "read": ["#"]}]},
                    "devices": devices,
                },
                f,
            )
        gw = Proc([sys.executable, "-m", "tianwang", "run", "-c", config], logdir, "gateway", env)
        addr, pid = gw.first["listen"], gw.first["pid"]
        result["hot_path"] = gw.first["hot_path"]
        counts: dict[str, int] = {}
        latencies: list[float] = []
        gaps: list[tuple[int, int]] = []
        recording = [False]
        stop = asyncio.Event()
        sub = asyncio.ensure_future(_onvif_subscribe(addr, counts, latencies, gaps, stop, recording))
        t0 = time.monotonic()
        while True:
            rows = await _onvif_devices(addr)
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
            latency_ms_p50=_round(percentile(latencies, 0.50)),
            latency_ms_p99=_round(percentile(latencies, 0.99)),
            latency_ms_max=_round(max(latencies, default=None)),
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
