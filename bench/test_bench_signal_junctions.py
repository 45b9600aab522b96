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

import os
import tempfile

import pytest
import uvloop

import benchreport
from tianwang.gateway import framing
from tianwang.gateway.benchmarks.scale import signal_junctions

CONTROLLERS = int(os.environ.get("TIANWANG_BENCH_SIGNAL_CONTROLLERS", "500"))
TERMINALS = int(os.environ.get("TIANWANG_BENCH_JT808_TERMINALS", "5000"))
WINDOW_S = float(os.environ.get("TIANWANG_BENCH_SIGNAL_SECONDS", "30"))


HOT_PATHS = ["cext", "python"] if framing.USING_CEXT else ["python"]


@pytest.mark.parametrize("hot_path", HOT_PATHS)
def test_signal_controllers_beside_the_fleet(benchmark, hot_path):
    with tempfile.TemporaryDirectory(prefix="tw-bench-signal-") as logdir:
        results = []

        def run():
            results.append(uvloop.run(signal_junctions(logdir, CONTROLLERS, TERMINALS, WINDOW_S, hot_path)))

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
    assert (
        r["fixes_acked_by_listener"]
        <= r["fixes_received"]
        <= r["fixes_acked_by_listener"] + r["fixes_in_flight_at_stop"]
    )
    # the polling kept up: at least 95 % of 1 Hz per controller
    assert r["polls_answered_per_s"] >= 0.95 * r["controllers"]
    # the targets of docs/architecture.md
    assert r["gateway_cpu_cores"] < 1.0
    assert r["gateway_peak_rss_mib"] <= 1024
