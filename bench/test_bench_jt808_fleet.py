"""Scale: 5,000 JT/T 808 terminals reporting at 1 Hz into one gateway process.

Three processes, so that each side's CPU is its own:
- the gateway (`python -m gateway run -c CONFIG`) with one jt808 listener;
- the fleet (`python -m gateway simulate jt808 --terminals N --rate 1`), which counts every report
  the listener acknowledged (0x8001 result 0);
- this process, a real gRPC subscriber on `gnss/+/fix` from seq 1, which counts fix envelopes per
  terminal.

Measured over a steady window once every terminal is online: CPU of the gateway process
(utime + stime from /proc, all its threads) per wall second, its RSS at the end and its peak
(VmHWM). After the fleet is stopped, the proof that nothing was lost: fix envelopes received by the
subscriber >= positions acknowledged by the listener (equal, but for positions in flight at the
stop), from every terminal, and no Gap.

Target (docs/architecture.md, performance targets): under one core, RSS <= 1 GiB, nothing lost.
Environment: TIANWANG_BENCH_JT808_TERMINALS (default 5000), TIANWANG_BENCH_JT808_SECONDS (window,
default 30).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchreport
import pytest
import uvloop

from benchclient import batches_until, list_devices  # noqa: E402
from tianwang.gateway import framing
from tianwang.v1 import gateway_pb2 as pb

ROOT = Path(__file__).resolve().parent.parent
TERMINALS = int(os.environ.get("TIANWANG_BENCH_JT808_TERMINALS", "5000"))
WINDOW_S = float(os.environ.get("TIANWANG_BENCH_JT808_SECONDS", "30"))
TOKEN = "jt808-bench-read-token"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14 and 15)


def memory_kib(pid: int) -> dict:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":")
                out[key] = int(value.split()[0])
    return out


class Proc:
    """A child process whose stderr goes to a file (a full pipe would stall it)."""

    def __init__(self, args, logdir, name, env):
        self.log = open(Path(logdir) / f"{name}.stderr", "w+")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.log, text=True, cwd=ROOT, env=env)
        line = self.proc.stdout.readline()
        if not line:
            self.log.seek(0)
            raise RuntimeError(f"{name} did not start: {self.log.read()[-2000:]}")
        self.first = json.loads(line)

    def stop(self, timeout=15.0) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        self.log.close()
        return out or ""


async def _subscribe(addr: str, counts: dict, gaps: list, stop: asyncio.Event):
    md = (("authorization", f"Bearer {TOKEN}"),)
    req = pb.SubscribeRequest(topics=["gnss/+/fix"], from_seq=1, max_batch=1024, max_delay_ms=20)
    async for batch in batches_until(addr, req, md, stop):
        if batch.HasField("gap"):
            gaps.append((batch.gap.from_seq, batch.gap.to_seq, batch.gap.reason))
        for env in batch.envelopes:
            counts[env.device_id] = counts.get(env.device_id, 0) + 1


async def _list_devices(addr):
    return await list_devices(addr, (("authorization", f"Bearer {TOKEN}"),), timeout=10)


async def _scenario(logdir: str, terminals: int, window_s: float, hot_path: str) -> dict:
    env = dict(os.environ)
    env.pop("GATEWAY_NO_CEXT", None)
    if hot_path == "python":
        env["GATEWAY_NO_CEXT"] = "1"  # gateway and fleet both on the pure-Python twins
    env["TW_BENCH_TOKEN"] = TOKEN
    env["TW_BENCH_JT808_SECRET"] = "bench-secret-0123456789"
    config = Path(logdir) / "gateway.yaml"
    config.write_text(
        json.dumps(
            {
                "gateway": {"name": "bench", "listen": "127.0.0.1:0", "metrics": None},
                "auth": {"tokens": [{"name": "bench", "token_env": "TW_BENCH_TOKEN", "read": ["#"]}]},
                "listeners": [
                    {
                        "id": "fleet",
                        "driver": "jt808",
                        "listen": "127.0.0.1:0",
                        "auth_secret_env": "TW_BENCH_JT808_SECRET",
                        "max_connections": terminals + 100,
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
            devices = await _list_devices(addr)
            listen = next(d for d in devices if d.id == "fleet").info.get("listen", "")
            if listen:
                break
            await asyncio.sleep(0.1)
        assert listen, "the jt808 listener did not report its address"
        counts: dict[str, int] = {}
        gaps: list = []
        stop = asyncio.Event()
        sub = asyncio.ensure_future(_subscribe(addr, counts, gaps, stop))
        fleet = Proc(
            [sys.executable, "-m", "tianwang", "simulate", "jt808", "--connect", listen, "--terminals", str(terminals),
             "--rate", "1", "--stats-interval", "1"],
            logdir,
            "fleet",
            env,
        )
        t_start = time.monotonic()
        deadline = t_start + 120
        while True:
            online = sum(1 for d in await _list_devices(addr) if d.state == "ONLINE" and d.id != "fleet")
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
        rows = await _list_devices(addr)
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


HOT_PATHS = ["cext", "python"] if framing.USING_CEXT else ["python"]


@pytest.mark.parametrize("hot_path", HOT_PATHS)
def test_jt808_fleet_scale(benchmark, hot_path):
    with tempfile.TemporaryDirectory(prefix="tw-bench-jt808-") as logdir:
        results = []

        def run():
            results.append(uvloop.run(_scenario(logdir, TERMINALS, WINDOW_S, hot_path)))

        benchmark.pedantic(run, rounds=1, iterations=1)
    r = results[0]
    benchmark.extra_info.update(r)
    benchreport.add(
        "JT/T 808 fleet into one gateway process",
        f"[{hot_path}] {r['terminals']} terminals at 1 Hz -> gateway CPU {r['gateway_cpu_cores']:.3f} cores, "
        f"RSS {r['gateway_rss_mib']} MiB (peak {r['gateway_peak_rss_mib']} MiB), "
        f"{r['fix_envelopes_received']} fixes received / {r['fixes_acked_by_listener']} acknowledged, "
        f"{r['terminals_heard']} terminals heard, gaps {r['gaps']} (gateway hot path {r['hot_path']})"
    )
    # nothing lost: every acknowledged position reached the subscriber, from every terminal
    assert r["gaps"] == 0
    assert r["terminals_heard"] == r["terminals"] == r["listed_terminals"] == r["listed_online"]
    assert r["fixes_acked_by_listener"] <= r["fix_envelopes_received"] <= r["fixes_acked_by_listener"] + r["in_flight_at_stop"]
    # the performance targets of docs/architecture.md
    assert r["gateway_cpu_cores"] < 1.0
    assert r["gateway_peak_rss_mib"] <= 1024
