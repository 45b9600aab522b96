"""End-to-end latency at a given rate: simulated BeiDou receivers on ptys and over TCP, a gateway in a
process of its own, a gRPC subscriber in a third.

This process plays the devices: half of them on the master side of a pty (the gateway opens the slave
as `serial://`), half as TCP servers the gateway connects to (`tcp://`, a serial server). Each writes
GGA + RMC epochs at `rate / devices` Hz (whole hundredths of a second, as NMEA times carry), the
devices' phases spread over the period; the epochs are built before the clock starts. A subscriber on
`gnss/+/fix` (the request leaves max_delay_ms unset: the site's default, as a new user gets it), in another
process, stamps each batch on arrival. Latency of a reading = its arrival - the wall time just before the write of
its epoch, matched by (device, fix time). Readings written
during the warm-up (the receivers learn their cycle) are not counted; a reading written in the window
that never arrives is `missing`; a pty write the kernel refused (the gateway not reading fast enough)
is `write_refused`.

Where the time goes: the gateway runs with TIANWANG_STAGE_TRACE (gateway/datapath/stagetrace.py), so
each reading splits into device write -> routed (the driver's read decoded and routed it: its
`gateway_time_ns`) -> journal visible (the first wake-up of a journal reader that saw it) -> stream
write (its batch handed to gRPC) -> subscriber read (arrival). For two devices (one pty, one TCP)
the subscriber process also records the raw bytes (`Record`: each chunk with the time the driver
read it), which splits their readings' first stage into device write -> driver read -> routed. The same run also goes with the
journal on disk (`journal` = "batch" or "always": `gateway.journal.path` with that fsync policy).

The subscriber runs in a process of its own (`python -m tianwang.gateway.benchmarks.latency ADDR`):
it reports its count every 0.1 s and, on SIGTERM, every arrival. Writer, gateway and subscriber
each have a process, so on a two-core machine they share the cores; the gateway's CPU is measured
from /proc over the window.
"""

from __future__ import annotations

import asyncio
import bisect
import glob
import json
import os
import signal
import statistics
import sys
import time
import tty
from functools import partial
from typing import Any

import msgpack

from tianwang.gateway.benchmarks.client import list_devices
from tianwang.gateway.benchmarks.common import Proc, cpu_seconds, memory_kib, percentile
from tianwang.v1 import gateway_pb2 as pb

TOKEN = "latency-bench-read-token"
T0 = 1_764_417_600 * 10**9  # 2025-11-29 12:00:00 UTC
DESIGN_RATE = 20_000
DESIGN_P99_MS = 2.0  # docs/architecture.md, Performance targets
HZ_CHOICES = (100, 50, 25, 20, 10, 5, 4, 2, 1)  # per device: periods of whole hundredths of a second
# how this process writes the devices' epochs. "ticks" (the bench's): on the loop's timer, which
# wakes in whole milliseconds, so every epoch due within one is written in one burst (10 at
# 10,000/s) and the gateway reads them in one loop turn; it is what every figure in docs/ and the
# baselines were measured with. "paced": a thread writes each epoch at its own due time (within the
# kernel's timer slack, ~0.06 ms), as devices on their own clocks would: the gateway then wakes for
# nearly every reading, and its streams send batches of one or two.
WRITERS = ("ticks", "paced")


def plan(rate: int, max_devices: int = 256) -> tuple[int, int]:
    """(devices, Hz per device) for `rate` readings/s: the fewest devices (at least 2, one per
    transport), each at most 100 Hz."""
    rate = max(2, int(rate))
    for hz in HZ_CHOICES:
        if rate % hz == 0 and 2 <= rate // hz <= max_devices:
            return rate // hz, hz
    raise ValueError(f"{rate} readings/s cannot be split over 2..{max_devices} devices at 1..100 Hz")


def _epochs(count: int, period_ns: int) -> list[tuple[int, bytes]]:
    from tianwang.drivers.beidou import nmea_writer as w

    writer = w.EpochWriter(order=("GGA", "RMC"))
    sats = [w.Satellite("BDS", i, 20 + 5 * i, 10 * i, 30 + i, used=True) for i in range(1, 9)]
    out = []
    for k in range(count):
        st = w.EpochState(
            time_ns=T0 + k * period_ns,
            lat=27.8296 + k * 1e-6,
            lon=112.9436,
            alt_m=52.3,
            geoid_sep_m=-3.1,
            speed_mps=6.4,
            course_deg=45.3,
            hdop=0.9,
            pdop=1.6,
            vdop=1.3,
            satellites=sats,
        )
        out.append((st.time_ns, b"".join(writer.sentences(st))))
    return out


def _same(device: _TcpDevice) -> _TcpDevice:
    return device


class _TcpDevice(asyncio.Protocol):
    def __init__(self):
        self.transport = None
        self.connected = asyncio.Event()

    def connection_made(self, transport):
        self.transport = transport
        self.connected.set()

    def data_received(self, data):  # the gateway sends nothing we answer
        pass


STAGES = ("routed", "journal", "stream", "delivery")
STAGE_LABELS = {
    "routed": "device write -> routed",
    "read": "device write -> driver read",
    "decode": "driver read -> routed",
    "journal": "routed -> journal visible",
    "stream": "journal visible -> stream write",
    "delivery": "stream write -> subscriber read",
}
# percentiles of the distribution kept in results.json (for the plot): evenly spread on the scale
# of 1/(1 - p), from the median to p99.99
DISTRIBUTION = [0.5] + [round(1 - 10 ** (-k / 20), 6) for k in range(7, 81)]


def distribution(sorted_ms: list) -> list:
    """[(p, ms)] of sorted latencies: the median, then the DISTRIBUTION percentiles the sample is
    large enough for."""
    n = len(sorted_ms)
    return [[p, percentile(sorted_ms, p)] for p in DISTRIBUTION if n and (p == 0.5 or (1 - p) * n >= 1)]


def driver_reads(ends: dict, reads: dict) -> dict:
    """{(device, fix time): ns the driver read the epoch's last byte}, from the byte offsets where
    the bench's epochs end on each recorded device ({device: [(fix time, end offset)]}) and the
    recording of what the driver read ({device: [[t_ns, nbytes], ...]})."""
    out = {}
    for dev, epochs in ends.items():
        chunks = reads.get(dev) or []
        upto, total = [], 0
        for _, nbytes in chunks:
            total += nbytes
            upto.append(total)
        for t, end in epochs:
            i = bisect.bisect_left(upto, end)  # the chunk that brought the epoch's last byte
            if i < len(chunks):
                out[(dev, t)] = chunks[i][0]
    return out


def stage_split(
    written: dict, arrived: dict, trace_dir: str, read_at: dict | None = None, pty_devices: frozenset = frozenset()
) -> dict:
    """p50/p99 (ms) of each stage, from the gateway's stage trace, the arrivals {(device, fix time):
    (arrival ns, seq, gateway_time_ns)} and, for the recorded devices, when the driver read each
    epoch ({(device, fix time): ns}); `read_pty` and `read_tcp` split the first stage by the
    recorded device's transport (`pty_devices` names those on a pty)."""
    files = sorted(glob.glob(os.path.join(trace_dir, "stream-*.json")))
    if not files:
        return {}
    with open(files[-1]) as f:
        trace = json.load(f)
    vis_seq = [v[0] for v in trace["visible"]]
    vis_t = [v[1] for v in trace["visible"]]
    batches = sorted(trace["batches"])
    starts = [b[0] for b in batches]
    parts: dict[str, list] = {k: [] for k in STAGES + ("read", "decode", "read_pty", "read_tcp")}
    read_at = read_at or {}
    in_flight = []
    for key, stamp in written.items():
        got = arrived.get(key)
        if got is None:
            continue
        arrival, seq, routed = got
        i = bisect.bisect_right(vis_seq, seq)
        j = bisect.bisect_right(starts, seq) - 1
        if i >= len(vis_t) or j < 0 or not batches[j][0] <= seq < batches[j][1]:
            continue
        _, _, handed, taken = batches[j]
        # the watcher and the stream wake on the same append in either order: a batch handed to
        # gRPC holding the seq shows it was visible by then
        visible = min(vis_t[i], handed)
        parts["routed"].append((routed - stamp) / 1e6)
        parts["journal"].append((visible - routed) / 1e6)
        parts["stream"].append((handed - visible) / 1e6)
        parts["delivery"].append((arrival - handed) / 1e6)
        if key in read_at:
            parts["read"].append((read_at[key] - stamp) / 1e6)
            parts["read_pty" if key[0] in pty_devices else "read_tcp"].append((read_at[key] - stamp) / 1e6)
            parts["decode"].append((routed - read_at[key]) / 1e6)
        if taken:
            in_flight.append((taken - handed) / 1e6)
    out = {
        "readings": len(parts["routed"]),
        "sampled_reads": len(parts["read"]),
        "batches": len(batches),
        "envelopes_per_batch": (sum(b[1] - b[0] for b in batches) / len(batches)) if batches else None,
    }
    for k, values in list(parts.items()) + [("grpc_write", in_flight)]:
        values.sort()
        out[k] = {
            "p50_ms": percentile(values, 0.50),
            "p99_ms": percentile(values, 0.99),
            "mean_ms": statistics.fmean(values) if values else None,
        }
    return out


async def run_rate(
    logdir: str,
    rate: int,
    window_s: float,
    warmup_s: float = 1.0,
    journal: str | None = None,
    writer: str = "ticks",
) -> dict:
    """Latency p50/p99/p999 of readings at `rate` per second over `window_s` seconds; `journal`:
    None for the default memory journal, or the fsync policy of a journal on disk. `writer`: how
    this process writes the devices' epochs (WRITERS)."""
    if writer not in WRITERS:
        raise ValueError(f"writer: {writer!r} is not one of {', '.join(WRITERS)}")
    devices, hz = plan(rate)
    period_ns = round(1e9 / hz)
    n_pty = devices // 2
    loop = asyncio.get_running_loop()
    ptys, servers, tcp = [], [], []
    urls = []
    gw = None
    try:
        for _ in range(n_pty):
            master, slave = os.openpty()
            tty.setraw(master)
            tty.setraw(slave)
            os.set_blocking(master, False)
            ptys.append((master, slave))
            urls.append(f"serial://{os.ttyname(slave)}?baudrate=115200")
        for _ in range(devices - n_pty):
            dev = _TcpDevice()
            server = await loop.create_server(partial(_same, dev), "127.0.0.1", 0)
            servers.append(server)
            tcp.append(dev)
            urls.append(f"tcp://127.0.0.1:{server.sockets[0].getsockname()[1]}")
        ids = [f"bd-{i:03d}" for i in range(devices)]
        mode = f"disk-{journal}" if journal else "memory"
        trace_dir = os.path.join(logdir, f"trace-{rate}-{mode}")
        env = dict(os.environ, TW_BENCH_LATENCY_TOKEN=TOKEN)
        gw_env = dict(env, TIANWANG_STAGE_TRACE=trace_dir)
        config = os.path.join(logdir, f"latency-{rate}-{mode}.yaml")
        gateway: dict[str, Any] = {"name": "latency", "listen": "127.0.0.1:0", "metrics": None}
        if journal:
            gateway["journal"] = {"path": os.path.join(logdir, f"journal-{rate}-{mode}"), "fsync": journal}
        with open(config, "w") as f:
            json.dump(
                {
                    "gateway": gateway,
                    # control on gnss/+: the subscriber records two devices' raw bytes (Record)
                    "auth": {
                        "tokens": [
                            {
                                "name": "reader",
                                "token_env": "TW_BENCH_LATENCY_TOKEN",
                                "read": ["#"],
                                "control": ["gnss/+"],
                            }
                        ]
                    },
                    "devices": [
                        {"id": i, "driver": "beidou", "url": u, "receiver": {"epoch_period_s": 1 / hz}}
                        for i, u in zip(ids, urls, strict=True)
                    ],
                },
                f,
            )
        gw = Proc(
            [sys.executable, "-m", "tianwang", "run", "-c", config], logdir, f"gateway-latency-{rate}-{mode}", gw_env
        )
        addr, pid = gw.first["listen"], gw.first["pid"]
        await asyncio.wait_for(asyncio.gather(*(d.connected.wait() for d in tcp)), 20)

        total_s = warmup_s + window_s
        epochs = _epochs(int(total_s * hz) + 1, period_ns)
        # the schedule: (due offset in s, device index, epoch index), phases spread over the period
        schedule = sorted(((k + d / devices) / hz, d, k) for d in range(devices) for k in range(len(epochs)))
        written: dict[tuple[str, int], int] = {}
        refused = 0
        # the devices whose bytes the subscriber records: where each epoch ends in their byte stream
        sampled = {0, n_pty} if devices > n_pty else {0}
        ends: dict[str, list] = {ids[d]: [] for d in sampled}
        offset = dict.fromkeys(sampled, 0)
        sub = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tianwang.gateway.benchmarks.latency",
            addr,
            *(ids[d] for d in sorted(sampled)),
            stdout=asyncio.subprocess.PIPE,
            env=env,
            limit=1 << 28,
        )  # the last line holds every arrival
        stdout = sub.stdout
        assert stdout is not None  # stdout=PIPE
        try:
            first = await asyncio.wait_for(stdout.readline(), 30)
            if not first:
                raise RuntimeError("the latency subscriber did not start")
            await asyncio.sleep(0.3)  # the subscription is open before the first reading
            cpu0: float | None = None  # set once the warm-up is over, with the other starting points
            wall0 = sub_cpu0 = own_cpu0 = 0.0

            def write_epoch(d: int, k: int, fd: int | None) -> None:
                """Write device `d`'s epoch `k` (to `fd`, or None: its TCP transport), noting when
                and where it ends; a write the kernel refused, whole or in part, is counted."""
                nonlocal refused
                t, data = epochs[k]
                stamp = time.time_ns()
                if fd is None:
                    tcp[d - n_pty].transport.write(data)
                else:
                    try:
                        done = os.write(fd, data)
                    except BlockingIOError:
                        done = 0
                    if done != len(data):
                        refused += 1
                        if d in sampled and done:
                            ends.pop(ids[d], None)  # a part written: offsets no longer line up
                        return
                if d in sampled:
                    offset[d] += len(data)
                    if ids[d] in ends:
                        ends[ids[d]].append((t, offset[d]))
                if k / hz >= warmup_s:
                    written[(ids[d], t)] = stamp

            if writer == "paced":
                # every device's line as a file descriptor: the pty masters, and the TCP sockets, which
                # the thread below writes directly (their transports never write)
                fds = [m for m, _ in ptys] + [dev.transport.get_extra_info("socket").fileno() for dev in tcp]
                marks: dict[str, float] = {}

                def write_all() -> None:
                    """Write each epoch at its due time, on a thread (WRITERS)."""
                    start = time.monotonic()
                    warm = True
                    for due, d, k in schedule:
                        now = time.monotonic() - start
                        if due > now:
                            time.sleep(due - now)  # ~0.06 ms late at most (the kernel's timer slack)
                        if warm and due >= warmup_s:
                            warm = False
                            marks.update(cpu0=cpu_seconds(pid), wall0=time.monotonic(), sub_cpu0=cpu_seconds(sub.pid))
                            marks["own_cpu0"] = time.process_time()
                        write_epoch(d, k, fds[d])

                await asyncio.to_thread(write_all)
                if marks:
                    cpu0, wall0 = marks["cpu0"], marks["wall0"]
                    sub_cpu0, own_cpu0 = marks["sub_cpu0"], marks["own_cpu0"]
            else:
                start = time.monotonic()
                i = 0
                while i < len(schedule):
                    now = time.monotonic() - start
                    if cpu0 is None and now >= warmup_s:
                        cpu0, wall0 = cpu_seconds(pid), time.monotonic()
                        sub_cpu0, own_cpu0 = cpu_seconds(sub.pid), time.process_time()
                    while i < len(schedule) and schedule[i][0] <= now:
                        _, d, k = schedule[i]
                        i += 1
                        write_epoch(d, k, ptys[d][0] if d < n_pty else None)
                    if i < len(schedule):
                        # until the next write is due, at least 1 ms: a busy loop would take a core from the
                        # gateway; a write up to 1 ms late is the device's jitter (the clock starts at the write)
                        await asyncio.sleep(max(0.001, schedule[i][0] - (time.monotonic() - start)))
            cpu1, wall1 = cpu_seconds(pid), time.monotonic()
            sub_cpu1, own_cpu1 = cpu_seconds(sub.pid), time.process_time()
            # the subscriber reports how many fixes it has every 0.1 s: wait until it has every one
            # written (warm-up included), or 2 s
            expected = len(written) + sum(1 for _, _, k in schedule if k / hz < warmup_s) - refused
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                line = await asyncio.wait_for(stdout.readline(), 5)
                if not line or json.loads(line).get("count", 0) >= expected:
                    break
        finally:
            if sub.returncode is None:
                sub.send_signal(signal.SIGTERM)
        arrived = {}
        reads = {}
        async for line in stdout:
            msg = json.loads(line)
            if "arrivals" in msg:
                arrived = {(d, t): (a, seq, routed) for d, t, a, seq, routed in msg["arrivals"]}
                reads = msg.get("reads", {})
        await sub.wait()
        # the gateway writes the stream's stage trace when the stream ends (the subscriber is gone)
        deadline = time.monotonic() + 5.0
        while not glob.glob(os.path.join(trace_dir, "stream-*.json")) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        # how the receivers closed their epochs: on the last sentence (the cycle learned), by the
        # next epoch, or by the quiet-gap timer (each adds its own delay)
        closed = dict.fromkeys(("epochs_closed_end", "epochs_closed_next", "epochs_closed_flush"), 0)
        for dev in await list_devices(addr, (("authorization", f"Bearer {TOKEN}"),), family="gnss"):
            for key in closed:
                closed[key] += int(dev.counters.get(key, 0))
        mem = memory_kib(pid)
    finally:
        if gw is not None:
            gw.stop()
        for master, slave in ptys:
            os.close(master)
            os.close(slave)
        for server in servers:
            server.close()
        for dev in tcp:
            if dev.transport is not None:
                dev.transport.close()
    lat = sorted((arrived[key][0] - stamp) / 1e6 for key, stamp in written.items() if key in arrived)
    return {
        "rate": rate,
        "journal": mode,
        "devices": devices,
        "pty_devices": n_pty,
        "tcp_devices": devices - n_pty,
        "hz_per_device": hz,
        "window_s": window_s,
        "writer": writer,
        "readings": len(written),
        "received": len(lat),
        "missing": len(written) - len(lat),
        "write_refused": refused,
        "p50_ms": percentile(lat, 0.50),
        "p99_ms": percentile(lat, 0.99),
        "p999_ms": percentile(lat, 0.999),
        "max_ms": lat[-1] if lat else None,
        "mean_ms": statistics.fmean(lat) if lat else None,
        "achieved_rate": len(written) / window_s,
        "gateway_cpu_cores": (cpu1 - cpu0) / (wall1 - wall0) if cpu0 is not None and wall1 > wall0 else None,
        "subscriber_cpu_cores": (sub_cpu1 - sub_cpu0) / (wall1 - wall0) if cpu0 is not None and wall1 > wall0 else None,
        "devices_cpu_cores": (own_cpu1 - own_cpu0) / (wall1 - wall0) if cpu0 is not None and wall1 > wall0 else None,
        "gateway_rss_mib": round(mem["VmRSS"] / 1024, 1),
        "hot_path": gw.first["hot_path"],
        **closed,
        "stages": stage_split(written, arrived, trace_dir, driver_reads(ends, reads), frozenset(ids[:n_pty])),
        "distribution": distribution(lat),
    }


async def _subscriber(addr: str, recorded: list) -> None:
    """The subscriber process: arrivals of `gnss/+/fix` at `addr`; its count on stdout every 0.1 s,
    every (device, fix time, arrival, seq, gateway_time_ns) as one JSON line on SIGTERM, with the
    chunks ([read ns, bytes]) the driver read from each device of `recorded`."""
    import grpc

    arrived: dict[tuple[str, int], tuple[int, int, int]] = {}
    reads: dict[str, list] = {d: [] for d in recorded}
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)

    async def subscribe(channel):
        call = channel.unary_stream(
            "/tianwang.v1.Gateway/Subscribe",
            request_serializer=pb.SubscribeRequest.SerializeToString,
            response_deserializer=pb.Batch.FromString,
        )
        # max_delay_ms left unset: the gateway's default (an older gateway reads it the same way)
        req = pb.SubscribeRequest(topics=["gnss/+/fix"], from_seq=0)
        unpack = msgpack.unpackb
        async for batch in call(req, metadata=(("authorization", f"Bearer {TOKEN}"),)):
            now = time.time_ns()
            for env in batch.envelopes:
                arrived.setdefault((env.device_id, unpack(env.payload)["time_ns"]), (now, env.seq, env.gateway_time_ns))

    async def record(channel, device_id):
        call = channel.unary_stream(
            "/tianwang.v1.Gateway/Record",
            request_serializer=pb.RecordRequest.SerializeToString,
            response_deserializer=pb.RawChunk.FromString,
        )
        chunks = reads[device_id]
        async for chunk in call(
            pb.RecordRequest(device_id=device_id), metadata=(("authorization", f"Bearer {TOKEN}"),)
        ):
            if chunk.data and chunk.direction == pb.FROM_DEVICE:
                chunks.append([chunk.t_ns, len(chunk.data)])

    async def report():
        while True:
            print(json.dumps({"count": len(arrived)}), flush=True)
            await asyncio.sleep(0.1)

    async with grpc.aio.insecure_channel(addr) as channel:
        await asyncio.wait_for(channel.channel_ready(), 20)
        recorders = [asyncio.ensure_future(record(channel, d)) for d in recorded]
        sub = asyncio.ensure_future(subscribe(channel))
        await asyncio.sleep(0.2)  # the recordings are open before the first byte is written
        print(json.dumps({"ready": True}), flush=True)
        reporter = asyncio.ensure_future(report())
        await stop.wait()
        for task in (sub, reporter, *recorders):
            task.cancel()
        await asyncio.gather(sub, reporter, *recorders, return_exceptions=True)
    print(json.dumps({"arrivals": [[d, t, *a] for (d, t), a in arrived.items()], "reads": reads}), flush=True)


if __name__ == "__main__":
    import uvloop

    uvloop.run(_subscriber(sys.argv[1], sys.argv[2:]))
