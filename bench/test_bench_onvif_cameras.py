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
default 60, long enough to hold every camera's subscription renewal). The machine's load average is
recorded: other work on the same cores shows in CPU and latency.
"""

from __future__ import annotations

import os
import tempfile

import uvloop

import benchreport
from tianwang.gateway.benchmarks.scale import onvif_cameras

CAMERAS = int(os.environ.get("TIANWANG_BENCH_ONVIF_CAMERAS", "200"))
# 60 s: the window holds a whole renewal cycle of every camera's subscription (renewed at 40-60% of 60 s)
WINDOW_S = float(os.environ.get("TIANWANG_BENCH_ONVIF_SECONDS", "60"))


def test_onvif_cameras_scale(benchmark):
    with tempfile.TemporaryDirectory(prefix="tw-bench-onvif-") as logdir:
        results = []
        benchmark.pedantic(
            lambda: results.append(uvloop.run(onvif_cameras(logdir, CAMERAS, WINDOW_S))), rounds=1, iterations=1
        )
    r = results[0]
    benchmark.extra_info.update(r)
    benchreport.add(
        "ONVIF cameras into one gateway process",
        f"{r['cameras']} cameras at 1 event/s -> gateway CPU {r['gateway_cpu_cores']:.3f} cores, RSS {r['gateway_rss_mib']} MiB "
        f"(peak {r['gateway_peak_rss_mib']} MiB), {r['events_per_s_received']} events/s, latency camera -> subscriber "
        f"p50 {r['latency_ms_p50']} ms, p99 {r['latency_ms_p99']} ms (max {r['latency_ms_max']}), "
        f"{r['events_received']} received / {r['events_pulled']} pulled / {r['events_queued']} queued, "
        f"{r['cameras_heard']} cameras heard, gaps {r['gaps']}, auth failures {r['auth_failures']}; "
        f"load average {r['load_avg_start']} -> {r['load_avg_end']}",
    )
    # nothing lost: every event a camera queued was pulled and reached the subscriber, from every camera
    assert r["gaps"] == 0 and r["auth_failures"] == 0
    assert r["cameras_heard"] == r["cameras"]
    assert r["events_received"] == r["events_pulled"] == r["events_queued"] > 0
    assert r["subscriptions_created"] == r["cameras"]  # no subscription was lost and made again
