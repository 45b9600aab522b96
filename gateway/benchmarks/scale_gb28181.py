"""The GB/T 28181 scale run: a fleet of simulated devices (NVRs with `channels` channels each, and
`mobile` 4G units) registering at once to a freshly started gateway's gb28181 listener, then
keeping alive, raising alarms at a total rate and reporting positions every 5 s; a real gRPC
subscriber here counts the alarms and measures their latency.

The issue's target is 10,000 devices x 5 channels, 200 alarms/s in total and 1,000 mobile units
at 5 s: every device ONLINE within 60 s of the start, the gateway under one core and 1.5 GiB RSS in
the steady state, no alarm lost. `tianwang bench` runs it at the size the machine allows.

Phases and what each says: `all_online_s` (every device ONLINE on the health stream), then the
catalogs (`catalogs_complete_s` when every channel is listed; `catalogs_settled_s`,
`catalogs_answered` and `catalogs_partial` when some stay partial), then a `window_s` steady state
(gateway cores and RSS, alarms and fixes per second, latency, the fleet's own cores and RSS). The
CPU-seconds of both processes up to ONLINE and up to the catalogs, and the kernel's UDP receive
buffer drops (machine-wide) per phase, say which side a storm saturated.

Latency: the fleet runs with `--stamp-alarms`, which ends every alarm's description with
` #t=<send time, unix ns>`; the subscriber takes its receive time minus that stamp (both clocks are
this machine's). Lost: alarms the listener acknowledged with a SIP 200 (the fleet's final
`alarms_acked`) that never reached the subscriber.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
from pathlib import Path

import msgpack

from tianwang.gateway.benchmarks.client import batches_until, list_devices
from tianwang.gateway.benchmarks.common import Proc, cpu_seconds, memory_kib, percentile
from tianwang.v1 import gateway_pb2 as pb

GB_TOKEN = "gb28181-bench-read-token"
GB_MD = (("authorization", f"Bearer {GB_TOKEN}"),)
SERVER_ID = "43030000002000000001"
_STAMP = re.compile(r"#t=([0-9]{19})")
DEVICE_TYPES = ("118", "132", "138")  # NVR, IPC, mobile unit: the fleet's devices (channels are 131)
CATALOG_POLL_S = 15.0  # how often the wait for the catalogs asks ListDevices which are in


def _stamp(payload) -> int | None:
    """The send stamp the fleet put at the end of an alarm's description, wherever the payload
    carries the description."""
    if isinstance(payload, dict):
        for value in payload.values():
            found = _stamp(value)
            if found is not None:
                return found
    elif isinstance(payload, str):
        m = _STAMP.search(payload)
        if m:
            return int(m.group(1))
    return None


async def _subscribe(addr, counts, latencies, gaps, stop, recording, health, channels):
    # device health comes on the same stream, so the time to ONLINE needs no ListDevices polling
    # (listing 50,000 channels every second would be a load of its own on the gateway)
    req = pb.SubscribeRequest(
        topics=["camera/+/alarm", "gnss/+/fix", "camera/+/health"], from_seq=1, max_batch=1024, max_delay_ms=2
    )
    async for batch in batches_until(addr, req, GB_MD, stop):
        now = time.time_ns()
        if batch.HasField("gap"):
            gaps.append((batch.gap.from_seq, batch.gap.to_seq, batch.gap.reason))
        for env in batch.envelopes:
            if env.topic.endswith("/health"):
                dev = env.device_id
                if len(dev) == 20 and dev[10:13] in DEVICE_TYPES:
                    health[dev] = msgpack.unpackb(env.payload).get("state")
                elif len(dev) == 20 and dev[10:13] == "131":
                    channels.add(dev)  # a channel has health once a catalog listed it
                continue
            kind = "alarm" if env.topic.endswith("/alarm") else "fix"
            counts[kind] = counts.get(kind, 0) + 1
            if kind == "alarm" and recording[0]:
                sent = _stamp(msgpack.unpackb(env.payload))
                if sent is not None:
                    latencies.append((sent, (now - sent) / 1e6))


def udp_receive_drops() -> int | None:
    """Datagrams the kernel dropped for a full socket receive buffer, machine-wide (/proc/net/snmp
    Udp RcvbufErrors): in a register storm the listener's socket overflows before its loop sees
    anything, and each drop comes back as a retransmission."""
    try:
        with open("/proc/net/snmp") as f:
            rows = [line.split() for line in f if line.startswith("Udp:")]
        return int(rows[1][rows[0].index("RcvbufErrors")])
    except (OSError, IndexError, ValueError):
        return None


def _drops_since(start: int | None) -> int | None:
    now = udp_receive_drops()
    return None if start is None or now is None else now - start


def _devices_online(rows) -> tuple[int, int]:
    devices = [d for d in rows if len(d.id) == 20 and d.id[10:13] in DEVICE_TYPES]
    return len(devices), sum(1 for d in devices if d.state == "ONLINE")


async def gb28181_devices(
    logdir: str,
    devices: int,
    channels: int,
    mobile: int,
    alarm_rate: float,
    window_s: float,
    hot_path: str,
    connect_timeout_s: float = 300.0,
) -> dict:
    """`devices` NVRs x `channels` and `mobile` 4G units into one gateway; see the module docstring."""
    env = dict(os.environ)
    env.pop("GATEWAY_NO_CEXT", None)
    if hot_path == "python":
        env["GATEWAY_NO_CEXT"] = "1"
    password = "gb-bench-password-0123"
    env["TW_BENCH_GB_TOKEN"] = GB_TOKEN
    env["TW_BENCH_GB_PASSWORD"] = password
    total = devices + mobile
    registrations = Path(logdir) / "gb.registrations"
    registrations.unlink(missing_ok=True)  # a fresh gateway: no device known from an earlier run
    config = Path(logdir) / "gateway-gb28181.yaml"
    config.write_text(
        json.dumps(
            {
                "gateway": {
                    "name": "bench",
                    "listen": "127.0.0.1:0",
                    "metrics": None,
                    "journal": {"max_bytes": "512MiB"},
                },
                "auth": {"tokens": [{"name": "bench", "token_env": "TW_BENCH_GB_TOKEN", "read": ["#"]}]},
                "listeners": [
                    {
                        "id": "gb",
                        "driver": "gb28181",
                        "listen": "127.0.0.1:0",
                        "server_id": SERVER_ID,
                        "registration": "open",
                        "password_env": "TW_BENCH_GB_PASSWORD",
                        "registrations_file": str(registrations),
                        "max_devices": total + 100,
                        "max_connections": total + 100,
                        "keepalive": {"interval_s": 60, "count": 3},
                        "subscribe": {"catalog": True, "alarm": None, "mobile_position": {"interval_s": 5}},
                    }
                ],
            }
        )
    )
    result: dict = {
        "devices": devices,
        "channels_per_device": channels,
        "mobile": mobile,
        "alarm_rate": alarm_rate,
        "window_s": window_s,
        "load_avg_start": [round(x, 2) for x in os.getloadavg()],
    }
    gw = Proc([sys.executable, "-m", "tianwang", "run", "-c", str(config)], logdir, "gateway-gb28181", env)
    fleet = None
    try:
        result["hot_path"] = gw.first["hot_path"]
        addr, pid = gw.first["listen"], gw.first["pid"]
        listen = ""
        for _ in range(100):
            rows = await list_devices(addr, GB_MD, timeout=30)
            listen = next((d.info.get("listen", "") for d in rows if d.id == "gb"), "")
            if listen:
                break
            await asyncio.sleep(0.1)
        assert listen, "the gb28181 listener did not report its address"
        counts: dict = {}
        latencies: list = []
        gaps: list = []
        recording = [False]
        health: dict = {}
        channels_seen: set = set()
        stop = asyncio.Event()
        sub = asyncio.ensure_future(_subscribe(addr, counts, latencies, gaps, stop, recording, health, channels_seen))
        cpu_start = cpu_seconds(pid)
        drops0 = udp_receive_drops()
        t0 = time.monotonic()
        fleet = Proc(
            [
                sys.executable,
                "-m",
                "tianwang.drivers.gb28181.simulator",
                "--connect",
                listen,
                "--devices",
                str(devices),
                "--channels",
                str(channels),
                "--mobile",
                str(mobile),
                "--password",
                password,
                "--alarm-rate",
                str(alarm_rate),
                "--stamp-alarms",
                "--alarms-after-online",
                "--connect-rate",
                "100000",
                "--keepalive",
                "60",
                "--stats-interval",
                "5",
            ],
            logdir,
            "fleet-gb28181",
            env,
        )
        fleet_cpu0 = cpu_seconds(fleet.proc.pid)
        online = 0
        while True:
            online = sum(1 for state in health.values() if state == "ONLINE")
            if online >= total:
                break
            if time.monotonic() - t0 > connect_timeout_s:
                break
            await asyncio.sleep(0.1)
        result["online_after_connect"] = online
        result["all_online_s"] = round(time.monotonic() - t0, 1) if online >= total else None
        result["gateway_cpu_s_connect"] = round(cpu_seconds(pid) - cpu_start, 1)
        result["fleet_cpu_s_connect"] = round(cpu_seconds(fleet.proc.pid) - fleet_cpu0, 1)
        result["udp_receive_drops_connect"] = _drops_since(drops0)
        # the steady state begins once every catalog is in (the listener queries and subscribes each
        # device after it registers, at its own pace): every channel listed under its device; or,
        # when some catalogs stay partial (the listener gave up on chunks it did not get in time),
        # once every device has had its catalog answered, complete or not
        want_channels = devices * channels + mobile
        listed_channels = answered = partial = 0
        polled = 0.0
        while time.monotonic() - t0 < connect_timeout_s:
            if len(channels_seen) >= want_channels:
                break
            if time.monotonic() - polled >= CATALOG_POLL_S:
                # which catalogs are in, complete or partial: ListDevices says, now and then
                polled = time.monotonic()
                rows = await list_devices(addr, GB_MD, timeout=60)
                catalogs = [d.info.get("catalog") for d in rows if len(d.id) == 20 and d.id[10:13] in DEVICE_TYPES]
                answered = sum(1 for state in catalogs if state in ("complete", "partial"))
                partial = sum(1 for state in catalogs if state == "partial")
                if answered >= total:
                    break
            await asyncio.sleep(0.2)
        settled = time.monotonic() - t0
        rows = await list_devices(addr, GB_MD, timeout=60)
        listed_channels = sum(1 for d in rows if len(d.id) == 20 and d.id[10:13] == "131")
        catalogs = [d.info.get("catalog") for d in rows if len(d.id) == 20 and d.id[10:13] in DEVICE_TYPES]
        answered = sum(1 for state in catalogs if state in ("complete", "partial"))
        partial = sum(1 for state in catalogs if state == "partial")
        result["channels_listed"] = listed_channels
        result["channels_wanted"] = want_channels
        result["catalogs_answered"] = answered
        result["catalogs_partial"] = partial
        result["catalogs_complete_s"] = round(settled, 1) if listed_channels >= want_channels else None
        result["catalogs_settled_s"] = round(settled, 1)
        result["gateway_cpu_s_to_catalogs"] = round(cpu_seconds(pid) - cpu_start, 1)
        result["fleet_cpu_s_to_catalogs"] = round(cpu_seconds(fleet.proc.pid) - fleet_cpu0, 1)
        result["udp_receive_drops_to_catalogs"] = _drops_since(drops0)
        await asyncio.sleep(5.0)  # subscriptions settle
        recording[0] = True
        window_start_ns = time.time_ns()
        cpu0, wall0, alarms0 = cpu_seconds(pid), time.monotonic(), counts.get("alarm", 0)
        drops_steady0 = udp_receive_drops()
        fleet_cpu1 = cpu_seconds(fleet.proc.pid)
        fixes0 = counts.get("fix", 0)
        rss = []
        while time.monotonic() - wall0 < window_s:
            await asyncio.sleep(1.0)
            rss.append(memory_kib(pid)["VmRSS"])
        cpu1, wall1 = cpu_seconds(pid), time.monotonic()
        window_end_ns = time.time_ns()
        in_window = [ms for _, ms in latencies]
        result["fleet_cpu_cores"] = round((cpu_seconds(fleet.proc.pid) - fleet_cpu1) / (wall1 - wall0), 3)
        result["udp_receive_drops_steady"] = _drops_since(drops_steady0)
        mem = memory_kib(pid)
        result["fleet_rss_mib"] = round(memory_kib(fleet.proc.pid)["VmRSS"] / 1024, 1)
        rows = await list_devices(addr, GB_MD, timeout=60)
        listed, online_end = _devices_online(rows)
        # the listener's own counters (drops by reason, retransmissions...) say where a storm hurt
        result["listener_counters"] = dict(next((d.counters for d in rows if d.id == "gb"), {}))
        result.update(
            gateway_cpu_cores=round((cpu1 - cpu0) / (wall1 - wall0), 3),
            gateway_rss_mib=round(mem["VmRSS"] / 1024, 1),
            gateway_peak_rss_mib=round(mem["VmHWM"] / 1024, 1),
            alarms_per_s_received=round((counts.get("alarm", 0) - alarms0) / (wall1 - wall0), 1),
            fixes_per_s_received=round((counts.get("fix", 0) - fixes0) / (wall1 - wall0), 1),
            latency_ms_p50=_round(percentile(in_window, 0.50)),
            latency_ms_p99=_round(percentile(in_window, 0.99)),
            latency_samples=len(in_window),
            online_at_end=online_end,
            listed_devices=listed,
        )
        final = _final(fleet)
        fleet = None
        last = -1
        await asyncio.sleep(2.0)
        while counts.get("alarm", 0) != last:  # the subscriber drains what the gateway still holds
            last = counts.get("alarm", 0)
            await asyncio.sleep(1.0)
        stop.set()
        await sub
        # the alarms raised inside the window, however late they came: a backlog from the catalog
        # phase, delivered in the window, weighs on the figures above but not on these
        fresh = [ms for sent, ms in latencies if window_start_ns <= sent <= window_end_ns]
        result.update(
            latency_ms_p50_raised_in_window=_round(percentile(fresh, 0.50)),
            latency_ms_p99_raised_in_window=_round(percentile(fresh, 0.99)),
            latency_samples_raised_in_window=len(fresh),
        )
        result.update(
            alarms_sent=final.get("alarms_sent", 0),
            alarms_acked=final.get("alarms_acked", 0),
            alarms_unacked=final.get("alarms_unacked", 0),
            alarms_received=counts.get("alarm", 0),
            alarms_lost=max(0, final.get("alarms_acked", 0) - counts.get("alarm", 0)),
            positions_sent=final.get("positions_sent", 0),
            fixes_received=counts.get("fix", 0),
            registers_sent=final.get("registers_sent", 0),
            register_timeouts=final.get("register_timeouts", 0),
            retransmissions=final.get("retransmissions", 0),
            keepalives_failed=final.get("keepalives_failed", 0),
            catalogs_sent=final.get("catalogs_sent", 0),
            fleet_killed=final.get("killed", False),
            gaps=len(gaps),
            load_avg_end=[round(x, 2) for x in os.getloadavg()],
        )
        return result
    finally:
        if fleet is not None:
            fleet.stop()
        gw.stop()


def _final(fleet: Proc) -> dict:
    """The fleet's final counters; the last stats line of its stderr when a fleet too loaded to
    stop in time was killed before it printed them."""
    out = fleet.stop(timeout=60).strip().splitlines()
    if out and out[-1].startswith('{"final"'):
        return json.loads(out[-1])["final"]
    with open(fleet.log.name) as f:
        stats = [line for line in f if line.startswith("{")]
    return dict(json.loads(stats[-1]), killed=True) if stats else {"killed": True}


def _round(value, digits=2):
    return None if value is None else round(value, digits)
