"""A fleet of simulated GB/T 28181 devices dialling a platform (`tianwang simulate gb28181`).

NVRs with M channels each, single-channel IPCs and 4G mobile units (body cameras), with 20-digit
IDs under Xiangtan (43030000...), channels named after places in Xiangtan (GB2312 on the wire).
Each device registers with digest, keeps alive, answers queries and controls, raises alarms, sends
its position when subscribed and streams PS-in-RTP when invited (sim_device.py says how).

Field faults on demand, for every device of the fleet (`faults=`, `--fault NAME`, repeatable):
    wrong_password  the digest is computed with a wrong password (the platform should say 403)
    no_keepalive    a 2022-only unit (X-GB-Ver: 3.0) that never sends a keepalive
    nat_rebind      after `rebind_after_s` online, the device moves to a new source port (UDP)
    bad_xml         the catalog's first channel name carries a bare `&`
    slow_catalog    each catalog chunk waits 1.5 s before it goes
    duplicate       every UDP datagram the device sends goes out twice
and `fleet.storm()` (SIGUSR1, or `--storm-after S`): every device sends REGISTER at the same moment.

As a library: `Fleet(host, port, devices=N, channels=M, mobile=K, ...)`, `await fleet.start()`,
`await fleet.wait_online()`, counters in `fleet.stats()`, devices in `fleet.devices` (each with its
`channels`, PTZ `head`s, `route`), `fleet.alarm(device, channel, kind)`, `await fleet.stop()`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import signal
import sys
import time
from collections.abc import Callable

from tianwang.drivers.gb28181.sim_wire import OutgoingTransactions
from tianwang.drivers.gb28181.sim_world import (
    ALARM_KINDS,
    CIVIL_CODES,
    SITES,
    TYPE_CAMERA,
    TYPE_IPC,
    TYPE_MOBILE,
    TYPE_NVR,
    PtzHead,
    Route,
    gb_id,
    place_for,
)

DEFAULT_SERVER_ID = "43030000002000000001"
TICK_S = 0.05  # how often pending transactions are looked at (retransmissions, timeouts)
FAULTS = ("wrong_password", "no_keepalive", "nat_rebind", "bad_xml", "slow_catalog", "duplicate")

COUNTERS = (
    "connect_failures",
    "disconnects",
    "registers_sent",
    "challenges",
    "registered",
    "register_refused",
    "register_timeouts",
    "unregistered",
    "keepalives_sent",
    "keepalives_acked",
    "keepalives_failed",
    "requests_received",
    "messages_received",
    "queries_answered",
    "queries_unanswered",
    "catalogs_sent",
    "chunks_sent",
    "chunks_abandoned",
    "platform_responses",
    "ptz_commands",
    "ptz_rejected",
    "resets_received",
    "reboots",
    "controls_ignored",
    "subscriptions",
    "subscription_refreshes",
    "notifies_sent",
    "notifies_refused",
    "positions_sent",
    "alarms_sent",
    "alarms_acked",
    "alarms_unacked",
    "alarms_held",
    "invites",
    "streams_started",
    "media_failures",
    "calls_unacked",
    "byes",
    "byes_sent",
    "rtp_packets",
    "retransmissions",
    "timeouts",
    "duplicates_sent",
    "duplicates_absorbed",
    "stray_responses",
    "bad_messages",
    "bad_bodies",
    "send_errors",
    "rebinds",
    "stale_port_datagrams",
    "storms",
    "alarms_skipped",
)


class Fleet:
    """`devices` NVRs of `channels` channels (an IPC when `channels` is 1), `ipcs` more IPCs and
    `mobile` 4G units, all dialling `host:port` over `transport`."""

    def __init__(
        self,
        host: str,
        port: int,
        devices: int = 1,
        channels: int = 4,
        ipcs: int = 0,
        mobile: int = 0,
        transport: str = "udp",
        server_id: str = DEFAULT_SERVER_ID,
        domain: str | None = None,
        password: str = "12345678",
        passwords: dict[str, str] | None = None,
        alarm_rate: float = 0.0,
        alarm_kinds: tuple[str, ...] = tuple(ALARM_KINDS),
        faults: frozenset | set | tuple = (),
        keepalive_s: float = 60.0,
        expires: int = 3600,
        seed: int = 28181,
        connect_per_s: float = 1000.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        rebind_after_s: float = 3.0,
        media_fps: float = 25.0,
        stamp_alarms: bool = False,
        serial_base: int = 0,
        alarms_after_online: bool = False,
        video_loss_s: float = 20.0,
    ):
        if transport not in ("udp", "tcp"):
            raise ValueError("transport must be udp or tcp")
        if devices < 0 or ipcs < 0 or mobile < 0 or devices + ipcs + mobile < 1:
            raise ValueError("the fleet needs at least one device")
        if channels < 1:
            raise ValueError("channels must be at least 1")
        if not (len(server_id) == 20 and server_id.isdigit()):
            raise ValueError("server_id must be 20 digits")
        unknown = set(faults) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown fault(s): {', '.join(sorted(unknown))} (known: {', '.join(FAULTS)})")
        bad_kinds = set(alarm_kinds) - set(ALARM_KINDS)
        if bad_kinds or not alarm_kinds:
            raise ValueError(f"alarm kinds must be among {', '.join(ALARM_KINDS)}")
        if alarm_rate < 0:
            raise ValueError("alarm_rate must not be negative")
        self.host, self.port = host, port
        self.transport = transport
        self.server_id = server_id
        self.domain = domain or server_id[:10]
        self.alarm_rate = alarm_rate
        self.alarm_kinds = tuple(alarm_kinds)
        self.faults = frozenset(faults)
        self.keepalive_s = keepalive_s
        self.expires = expires
        self.connect_per_s = connect_per_s
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.rebind_after_s = rebind_after_s
        self.media_fps = media_fps
        self.stamp_alarms = stamp_alarms
        self.alarms_after_online = alarms_after_online
        self.video_loss_s = video_loss_s  # how long a channel's video stays lost after a video-loss alarm
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.online = 0
        self.notify: Callable[[str], None] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.outgoing = OutgoingTransactions()  # every device's requests awaiting an answer
        self.rng = random.Random(seed)
        self.devices = self._build(devices, channels, ipcs, mobile, password, passwords or {}, serial_base)
        self._by_id = {d.id: d for d in self.devices}
        self._tasks: list[asyncio.Task] = []

    def _build(self, nvrs, channels, ipcs, mobile, password, passwords, serial_base):
        from tianwang.drivers.gb28181.sim_device import SimChannel, SimDevice

        rng = self.rng
        out = []
        channel_serial = serial_base
        civil = list(CIVIL_CODES)

        def make_channels(n, dome_every):
            nonlocal channel_serial
            chans = []
            for j in range(n):
                channel_serial += 1
                place = place_for(channel_serial - 1, rng)
                dome = j % dome_every == 0
                head = PtzHead(pan=rng.uniform(0, 360), tilt=rng.uniform(-30, 0), zoom=1.0)
                chans.append(
                    SimChannel(
                        gb_id(TYPE_CAMERA, channel_serial),
                        place.name,
                        place.civil_code,
                        f"湖南省湘潭市{CIVIL_CODES[place.civil_code]}{place.name}",
                        place.lat,
                        place.lon,
                        1 if dome else 3,
                        head,
                        index=channel_serial,
                    )
                )
            return chans

        def add(type_code, serial, kind, name, chans, route=None):
            device_id = gb_id(type_code, serial)
            out.append(
                SimDevice(
                    self,
                    device_id,
                    kind,
                    name,
                    passwords.get(device_id, password),
                    chans,
                    random.Random(rng.random()),
                    route=route,
                    faults=self.faults,
                )
            )

        for i in range(nvrs):
            site = SITES[i % len(SITES)]
            if channels == 1:
                add(TYPE_IPC, serial_base + i + 1, "ipc", f"{site}网络摄像机{i + 1}", make_channels(1, 1))
            else:
                add(TYPE_NVR, serial_base + i + 1, "nvr", f"{site}硬盘录像机{i + 1}", make_channels(channels, 2))
        for i in range(ipcs):
            site = SITES[(nvrs + i) % len(SITES)]
            add(TYPE_IPC, serial_base + nvrs + i + 1, "ipc", f"{site}网络摄像机{i + 1}", make_channels(1, 1))
        for i in range(mobile):
            district = CIVIL_CODES[civil[i % len(civil)]]
            add(
                TYPE_MOBILE,
                serial_base + i + 1,
                "mobile",
                f"{district}执法记录仪{i + 1}",
                make_channels(1, 99),
                route=Route(rng),
            )
        return out

    # -- counters --------------------------------------------------------------------------------
    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] += n

    def stats(self) -> dict:
        out = dict(self.counters)
        out["devices"] = len(self.devices)
        out["channels"] = sum(len(d.channels) for d in self.devices)
        out["online"] = self.online
        out["calls_active"] = sum(len(d.calls) for d in self.devices)
        out["rtp_packets"] += sum(c.media.packets for d in self.devices for c in d.calls.values() if c.media)
        return out

    def device(self, device_id: str):
        return self._by_id[device_id]

    def channel(self, channel_id: str):
        for d in self.devices:
            ch = d.by_channel.get(channel_id)
            if ch is not None:
                return d, ch
        raise KeyError(channel_id)

    @staticmethod
    def wall() -> float:
        return time.time()

    @staticmethod
    def stamp_ns() -> int:
        return time.time_ns()

    def describe(self) -> dict:
        """The first stdout line of `tianwang simulate gb28181`: where it dials, who it is."""
        rows = [
            {"id": d.id, "type": d.kind, "password": d.password, "channels": [c.id for c in d.channels]}
            for d in self.devices[:100]
        ]
        return {
            "kind": "gb28181",
            "url": f"{self.transport}://{self.host}:{self.port}",
            "connect": f"{self.host}:{self.port}",
            "role": "client",
            "transport": self.transport,
            "server_id": self.server_id,
            "domain": self.domain,
            "devices": len(self.devices),
            "channels": sum(len(d.channels) for d in self.devices),
            "first_device": self.devices[0].id,
            "last_device": self.devices[-1].id,
            "passwords": sorted({d.password for d in self.devices}),
            "faults": sorted(self.faults),
            **({"device_list": rows} if len(self.devices) <= 100 else {}),
        }

    # -- running ---------------------------------------------------------------------------------
    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._tasks = [
            self.loop.create_task(self._dial_all(), name="gb28181-fleet-dial"),
            self.loop.create_task(self._service_loop(), name="gb28181-fleet-timers"),
        ]
        if self.alarm_rate > 0:
            self._tasks.append(self.loop.create_task(self._alarm_loop(), name="gb28181-fleet-alarms"))
        if "nat_rebind" in self.faults and self.transport == "udp":
            self._tasks.append(self.loop.create_task(self._rebind_loop(), name="gb28181-fleet-rebind"))

    async def _dial_all(self):
        per_tick = max(1, int(self.connect_per_s * TICK_S))
        for i in range(0, len(self.devices), per_tick):
            for d in self.devices[i : i + per_tick]:
                d.dial()
            if i + per_tick < len(self.devices):
                await asyncio.sleep(TICK_S)

    async def _service_loop(self):
        loop = self.loop
        while True:
            await asyncio.sleep(TICK_S)
            self.service(loop.time())

    def service(self, now: float) -> None:
        """Retransmit the requests due again and time out the expired ones (one heap for the
        whole fleet: a walk over ten thousand devices every tick would cost more than the work)."""
        resend, timed_out = self.outgoing.due(now)
        for device, data in resend:
            device.resend(data)
        if timed_out:
            self.count("timeouts", len(timed_out))
            for callback in timed_out:
                if callback is not None:
                    callback(None)

    async def _alarm_loop(self):
        # alarms are spread evenly over time at the fleet's total rate, from random online channels
        loop, rng = self.loop, self.rng
        if self.alarms_after_online:  # a scale run measures the registration storm on its own first
            while self.online < len(self.devices):
                await asyncio.sleep(0.1)
        period = 1.0 / self.alarm_rate
        due = loop.time() + period
        while True:
            await asyncio.sleep(max(0.0, due - loop.time()))
            now = loop.time()
            if now - due > 1.0:  # a loop this far behind drops the backlog instead of bursting it
                behind = int((now - due) / period)
                self.count("alarms_skipped", behind)
                due += behind * period
            # a timer may fire a little early: an alarm due within a millisecond goes now, rather
            # than a spin of near-zero sleeps until the clock passes it
            while due <= now + 0.001:
                due += period
                if not self.online:
                    continue
                # a few draws find an online device without listing the whole fleet each time
                for _ in range(8):
                    d = rng.choice(self.devices)
                    if d.state == "online":
                        d.raise_alarm(rng.choice(d.channels), rng.choice(self.alarm_kinds))
                        break
                else:
                    self.count("alarms_skipped")

    async def _rebind_loop(self):
        done = set()
        while len(done) < len(self.devices):
            await asyncio.sleep(0.2)
            for d in self.devices:
                if d.id not in done and d.state == "online" and d.online_since_ok(self.rebind_after_s):
                    done.add(d.id)
                    try:
                        await d.rebind()
                    except OSError:
                        self.count("send_errors")

    def alarm(self, device_id: str, channel_id: str | None = None, kind: str = "motion") -> bool:
        d = self.device(device_id)
        ch = d.by_channel[channel_id] if channel_id else d.channels[0]
        return d.raise_alarm(ch, kind)

    def storm(self) -> None:
        """Every device re-registers at the same moment (the field's "platform came back")."""
        self.count("storms")
        for d in self.devices:
            if d.link is not None and not d.closing:
                d.register()

    async def wait_online(self, n: int | None = None, timeout: float = 20.0) -> None:
        want = len(self.devices) if n is None else n
        deadline = time.monotonic() + timeout
        while self.online < want:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.online} of {want} GB/T 28181 devices online after {timeout} s")
            await asyncio.sleep(0.02)

    async def stop(self, unregister: bool = True, grace_s: float = 2.0) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._tasks = []
        if unregister and self.loop is not None:
            # REGISTER Expires: 0 from every online device, answered (challenge included) or not
            for d in self.devices:
                d.unregister()
            deadline = time.monotonic() + grace_s
            service = self.loop.create_task(self._service_loop())
            while self.online > 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            service.cancel()
            try:
                await service
            except asyncio.CancelledError:
                pass
        for d in self.devices:
            d.close()
        await asyncio.sleep(0)


# -- command line ---------------------------------------------------------------------------------
def _hostport(value: str) -> tuple[str, int]:
    from tianwang.drivers.sdk import parse_hostport

    try:
        return parse_hostport(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _fault(value: str) -> str:
    name = value.replace("-", "_")
    if name not in FAULTS:
        raise argparse.ArgumentTypeError(
            f"unknown fault {value!r} (known: {', '.join(f.replace('_', '-') for f in FAULTS)})"
        )
    return name


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="tianwang simulate gb28181",
        description="A fleet of GB/T 28181 devices (NVRs, IPCs, 4G units) registering to a platform over UDP or TCP.",
    )
    ap.add_argument(
        "--connect", required=True, type=_hostport, metavar="HOST:PORT", help="the platform (gateway listener)"
    )
    ap.add_argument("--devices", type=int, default=1, metavar="N", help="NVRs (IPCs when --channels is 1); default 1")
    ap.add_argument("--channels", type=int, default=4, metavar="M", help="channels per NVR (default 4)")
    ap.add_argument("--ipcs", type=int, default=0, metavar="N", help="single-channel IPCs besides (default 0)")
    ap.add_argument("--mobile", type=int, default=0, metavar="K", help="4G mobile units (body cameras); default 0")
    ap.add_argument("--transport", choices=("udp", "tcp"), default="udp")
    ap.add_argument(
        "--server-id", default=DEFAULT_SERVER_ID, help=f"the platform's 20-digit ID (default {DEFAULT_SERVER_ID})"
    )
    ap.add_argument("--domain", default=None, help="the SIP domain (default: the server ID's first 10 digits)")
    ap.add_argument("--password", default=None, help="every device's password (default: one generated)")
    ap.add_argument(
        "--alarm-rate", type=float, default=0.0, metavar="HZ", help="alarms per second over the whole fleet"
    )
    ap.add_argument(
        "--alarm-kinds",
        default=",".join(ALARM_KINDS),
        metavar="K1,K2",
        help=f"which alarms to raise (default {','.join(ALARM_KINDS)})",
    )
    ap.add_argument(
        "--stamp-alarms", action="store_true", help="end alarm descriptions with ' #t=<send time ns>' (latency benches)"
    )
    ap.add_argument("--alarms-after-online", action="store_true", help="raise no alarm before every device is online")
    ap.add_argument(
        "--fault",
        type=_fault,
        action="append",
        default=[],
        metavar="NAME",
        help="a field fault for every device: " + ", ".join(f.replace("_", "-") for f in FAULTS),
    )
    ap.add_argument(
        "--storm-after",
        type=float,
        default=None,
        metavar="S",
        help="every device re-registers at once after S seconds (SIGUSR1 does it any time)",
    )
    ap.add_argument("--keepalive", type=float, default=60.0, metavar="S", help="keepalive interval (default 60)")
    ap.add_argument(
        "--expires", type=int, default=3600, metavar="S", help="registration expiry asked for (default 3600)"
    )
    ap.add_argument("--seed", type=int, default=28181)
    ap.add_argument(
        "--serial-base", type=int, default=0, help="offset of the six-digit serials (several fleets side by side)"
    )
    ap.add_argument("--connect-rate", type=float, default=1000.0, metavar="PER_S", help="devices starting per second")
    ap.add_argument(
        "--stats-interval", type=float, default=0.0, metavar="S", help="print counters to stderr every S seconds"
    )
    return ap


async def _amain(args) -> dict:
    from tianwang.drivers.sdk import serve_simulator

    host, port = args.connect
    fleet = Fleet(
        host,
        port,
        devices=args.devices,
        channels=args.channels,
        ipcs=args.ipcs,
        mobile=args.mobile,
        transport=args.transport,
        server_id=args.server_id,
        domain=args.domain,
        password=args.password or secrets.token_hex(6),
        alarm_rate=args.alarm_rate,
        alarm_kinds=tuple(k.strip() for k in args.alarm_kinds.split(",") if k.strip()),
        faults=frozenset(args.fault),
        keepalive_s=args.keepalive,
        expires=args.expires,
        seed=args.seed,
        connect_per_s=args.connect_rate,
        stamp_alarms=args.stamp_alarms,
        serial_base=args.serial_base,
        alarms_after_online=args.alarms_after_online,
    )
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, fleet.storm)
    if args.storm_after is not None:
        loop.call_later(args.storm_after, fleet.storm)
    return await serve_simulator(fleet, fleet.describe, args.stats_interval, describe_first=True)


def _raise_fd_limit(want: int) -> None:
    # one socket per device: a fleet of thousands needs more descriptors than the usual soft limit
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(want, soft)), hard))
    except (ImportError, ValueError, OSError):
        pass


def main(argv=None) -> int:
    from tianwang.drivers.sdk import run_simulator

    args = build_parser().parse_args(argv)
    prog = "tianwang simulate gb28181"
    if min(args.devices, args.ipcs, args.mobile) < 0 or args.devices + args.ipcs + args.mobile < 1:
        print(f"{prog}: the fleet needs at least one device (--devices, --ipcs or --mobile)", file=sys.stderr)
        return 2
    if args.channels < 1:
        print(f"{prog}: --channels must be at least 1", file=sys.stderr)
        return 2
    if args.alarm_rate < 0:
        print(f"{prog}: --alarm-rate must not be negative", file=sys.stderr)
        return 2
    if not (len(args.server_id) == 20 and args.server_id.isdigit()):
        print(f"{prog}: --server-id must be 20 digits", file=sys.stderr)
        return 2
    kinds = [k.strip() for k in args.alarm_kinds.split(",") if k.strip()]
    if not kinds or set(kinds) - set(ALARM_KINDS):
        print(f"{prog}: --alarm-kinds must name some of {', '.join(ALARM_KINDS)}", file=sys.stderr)
        return 2
    _raise_fd_limit(args.devices + args.ipcs + args.mobile + 256)
    return run_simulator("gb28181", _amain(args))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONIOENCODING", "utf-8")
    sys.exit(main())
