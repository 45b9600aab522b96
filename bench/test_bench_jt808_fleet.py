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

import os
import tempfile

import pytest
import uvloop

import benchreport
from tianwang.gateway import framing
from tianwang.gateway.benchmarks.scale import jt808_fleet

TERMINALS = int(os.environ.get("TIANWANG_BENCH_JT808_TERMINALS", "5000"))
WINDOW_S = float(os.environ.get("TIANWANG_BENCH_JT808_SECONDS", "30"))


HOT_PATHS = ["cext", "python"] if framing.USING_CEXT else ["python"]


@pytest.mark.parametrize("hot_path", HOT_PATHS)
def test_jt808_fleet_scale(benchmark, hot_path):
    with tempfile.TemporaryDirectory(prefix="tw-bench-jt808-") as logdir:
        results = []

        def run():
            results.append(uvloop.run(jt808_fleet(logdir, TERMINALS, WINDOW_S, hot_path)))

        benchmark.pedantic(run, rounds=1, iterations=1)
    r = results[0]
    benchmark.extra_info.update(r)
    benchreport.add(
        "JT/T 808 fleet into one gateway process",
        f"[{hot_path}] {r['terminals']} terminals at 1 Hz -> gateway CPU {r['gateway_cpu_cores']:.3f} cores, "
        f"RSS {r['gateway_rss_mib']} MiB (peak {r['gateway_peak_rss_mib']} MiB), "
        f"{r['fix_envelopes_received']} fixes received / {r['fixes_acked_by_listener']} acknowledged, "
        f"{r['terminals_heard']} terminals heard, gaps {r['gaps']} (gateway hot path {r['hot_path']})",
    )
    # nothing lost: every acknowledged position reached the subscriber, from every terminal
    assert r["gaps"] == 0
    assert r["terminals_heard"] == r["terminals"] == r["listed_terminals"] == r["listed_online"]
    assert (
        r["fixes_acked_by_listener"]
        <= r["fix_envelopes_received"]
        <= r["fixes_acked_by_listener"] + r["in_flight_at_stop"]
    )
    # the performance targets of docs/architecture.md
    assert r["gateway_cpu_cores"] < 1.0
    assert r["gateway_peak_rss_mib"] <= 1024
