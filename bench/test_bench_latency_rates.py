"""End-to-end latency at several rates (issue 9): simulated BeiDou receivers, half on ptys and half
over TCP, into a gateway process, to a gRPC subscriber; p50, p99 and p999 from the write of an epoch
to its fix at the subscriber. tianwang.gateway.benchmarks.latency describes the set-up (shared with
`tianwang bench`).

Design target: p99 <= 5 ms at 20,000 readings/s. The devices and the subscriber share this process,
so the figure is conservative; it is reported beside the target, and what is asserted is that every
reading written arrived. Environment: TIANWANG_BENCH_LATENCY_RATES (comma-separated readings/s,
default 1000,5000,20000), TIANWANG_BENCH_LATENCY_SECONDS (window per rate, default 5).
"""

import os
import tempfile

import pytest
import uvloop

import benchreport
from tianwang.gateway.benchmarks.latency import DESIGN_P99_MS, DESIGN_RATE, run_rate

RATES = [int(r) for r in os.environ.get("TIANWANG_BENCH_LATENCY_RATES", "1000,5000,20000").split(",")]
WINDOW_S = float(os.environ.get("TIANWANG_BENCH_LATENCY_SECONDS", "5"))


@pytest.mark.parametrize("rate", RATES)
def test_latency_at_rate(benchmark, rate):
    with tempfile.TemporaryDirectory(prefix="tw-bench-latency-") as logdir:
        results = []
        benchmark.pedantic(lambda: results.append(uvloop.run(run_rate(logdir, rate, WINDOW_S))), rounds=1, iterations=1)
    r = results[0]
    benchmark.extra_info.update(r)
    target = f" (target p99 <= {DESIGN_P99_MS:g} ms)" if rate == DESIGN_RATE else ""
    benchreport.add(
        "latency device write -> gRPC subscriber, ptys and TCP (tianwang bench's latency section)",
        f"{rate:>6,}/s over {r['pty_devices']} ptys + {r['tcp_devices']} TCP at {r['hz_per_device']} Hz: "
        f"p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  p999 {r['p999_ms']:.2f} ms  max {r['max_ms']:.2f} ms{target}; "
        f"{r['missing']} missing, {r['write_refused']} refused, gateway CPU {r['gateway_cpu_cores']:.2f} cores",
    )
    assert r["received"] > 0 and r["missing"] == 0 and r["write_refused"] == 0
