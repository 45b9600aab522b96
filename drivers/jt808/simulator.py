"""A fleet of simulated JT/T 808 vehicle terminals over TCP (`tianwang simulate jt808`).

Each terminal behaves as the standard asks of a real one: it connects, registers (0x0100) unless it
already has an auth code, authenticates (0x0102), reports its position (0x0200) at the fleet's rate
while driving its own circular route, sends a heartbeat (0x0002) when it has been quiet, answers
location queries (0x8201 -> 0x0201), and waits for the platform's 0x8001 for every message: one not
acknowledged within `ack_timeout_s` is sent again, with the same serial, up to `retries` times.
Positions taken while the link is down are kept (up to `store_max`) and uploaded as a blind-area
batch (0x0704 type 1) after the next authentication. A cut connection is re-dialled with
exponential backoff and jitter.

As a library: `Fleet(host, port, terminals=N, rate=HZ, ...)`, `await fleet.start()`, counters in
`fleet.stats()` (`reports_sent`, `reports_acked`, `fixes_acked` (positions, batches counted per
item), `resends`, ...), terminals in `fleet.terminals` with hooks for tests (`alarm`, `report()`,
`send_batch()`, `send_raw()`, `cut()`, `ignore_acks`). `await fleet.stop()` ends it.

Command line: `tianwang simulate jt808 --connect HOST:PORT --terminals N --rate HZ [--version
2013|2019] [--auth-code CODE]`. The first stdout line is one JSON object (`kind`, `url`, ...); the
fleet then runs until SIGTERM/SIGINT, and prints its final counters as one more JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import sys
import time
from collections.abc import Callable

from tianwang.drivers.jt808 import protocol as p
from tianwang.drivers.sdk import Jt808Framer, encode_jt808, run_simulator, serve_simulator

TICK_S = 0.02  # reports are spread over the period in slots of this length
EARTH_M_PER_DEG = 111_320.0
DEFAULT_CENTRE = (27.8297, 112.9443)  # Xiangtan, Hunan: the terminals' routes are spread around it

# counters of `Fleet.stats()`
COUNTERS = (
    "connects",
    "connect_failures",
    "disconnects",
    "registrations",
    "registrations_refused",
    "auth_ok",
    "auth_failed",
    "reports_sent",
    "reports_acked",
    "fixes_acked",
    "batches_sent",
    "heartbeats_sent",
    "acks_received",
    "acks_not_ok",
    "resends",
    "gave_up",
    "queries_answered",
    "stored",
    "store_overflow",
    "bad_frames",
)


class Route:
    """A circle driven at constant speed: position and course at any time."""

    __slots__ = ("lat0", "lon0", "radius_m", "omega", "phase", "speed_kmh", "alt_m", "m_per_deg_lon")

    def __init__(self, rng: random.Random, centre=DEFAULT_CENTRE, spread_deg=0.06):
        self.lat0 = centre[0] + rng.uniform(-spread_deg, spread_deg)
        self.lon0 = centre[1] + rng.uniform(-spread_deg, spread_deg)
        self.radius_m = rng.uniform(300.0, 3000.0)
        self.speed_kmh = round(rng.uniform(15.0, 70.0), 1)
        self.omega = (self.speed_kmh / 3.6) / self.radius_m  # rad/s
        self.phase = rng.uniform(0, 2 * math.pi)
        self.alt_m = rng.randint(3, 60)
        self.m_per_deg_lon = EARTH_M_PER_DEG * max(0.01, math.cos(math.radians(self.lat0)))

    def at(self, t: float) -> tuple[float, float, float, int]:
        """(lat, lon, speed km/h, course degrees) at unix time `t`."""
        theta = (self.omega * t + self.phase) % (2 * math.pi)
        lat = self.lat0 + self.radius_m * math.cos(theta) / EARTH_M_PER_DEG
        lon = self.lon0 + self.radius_m * math.sin(theta) / self.m_per_deg_lon
        lat = max(-90.0, min(90.0, lat))
        lon = (lon + 180.0) % 360.0 - 180.0
        # moving towards increasing theta: velocity (north, east) = (-sin, cos) -> course = theta + 90
        course = int(round(math.degrees(theta) + 90.0)) % 360
        return lat, lon, self.speed_kmh, course


class SimTerminal(asyncio.Protocol):
    """One vehicle terminal. States: idle, connecting, registering, authenticating, online."""

    def __init__(self, fleet: Fleet, phone: str, route: Route, version: str, auth_code: str | None, rng):
        self.fleet = fleet
        self.phone = phone
        self.route = route
        self.version = version
        self.protocol_version = p.PROTOCOL_VERSION_2019 if version == "2019" else None
        self.phone_bcd = p.phone_to_bcd(phone, version)
        self.preset_code = auth_code
        self.auth_code = auth_code
        self.rng = rng
        self.state = "idle"
        self.transport = None
        self.framer = None
        self.serial = 0
        self.pending: dict[int, list] = {}  # serial -> [msg_id, wire, sent_at, tries, fixes]
        self.stored: list[bytes] = []  # location bodies taken while offline
        self.alarm = 0  # alarm word of the next reports (tests set ALARM_SOS here)
        self.status_extra = 0
        self.mileage_km = rng.uniform(1000.0, 90000.0)
        self.satellites = rng.randint(8, 20)
        self.signal = rng.randint(12, 31)
        self.last_tx = 0.0
        self.last_report: dict | None = None  # what the last 0x0200 carried, in the units a fix has
        self.ignore_acks = 0  # tests: how many coming 0x8001 to ignore (to provoke resends)
        self.backoff = fleet.backoff_initial
        self.online_event = asyncio.Event()
        self.register_result: int | None = None
        self.auth_results: list[int] = []
        self.closing = False
        self.failing = False  # the last connection attempts failed (reported once per streak)
        self._reconnect_handle = None

    # -- connection ------------------------------------------------------------------------------
    def dial(self) -> None:
        if self.closing or self.state != "idle":
            return
        self.state = "connecting"
        self.fleet.loop.create_task(self._connect())

    async def _connect(self):
        fleet = self.fleet
        try:
            await fleet.loop.create_connection(lambda: self, fleet.host, fleet.port)
        except OSError as exc:
            fleet.count("connect_failures")
            if fleet.notify is not None and not self.failing:  # once per streak, not at every retry
                fleet.notify(
                    f"terminal {self.phone}: cannot connect to {fleet.host}:{fleet.port} "
                    f"({exc.strerror or exc}); retrying"
                )
            self.failing = True
            self.state = "idle"
            self._schedule_reconnect()

    def connection_made(self, transport):
        self.transport = transport
        self.failing = False
        self.framer = Jt808Framer(max_frame=4096)
        self.fleet.count("connects")
        if self.closing:
            transport.abort()
            return
        if self.auth_code:
            self._authenticate()
        else:
            self._register()

    def connection_lost(self, exc):
        self.transport = None
        self.fleet.count("disconnects")
        if not self.closing and self.fleet.notify is not None:
            why = f" ({exc})" if exc else ""
            self.fleet.notify(f"terminal {self.phone}: the gateway closed the connection{why}; reconnecting")
        was_online = self.state == "online"
        self.state = "idle"
        self.online_event.clear()
        if was_online:
            self.fleet.online -= 1
        # messages that were waiting for acks are resent on the next connection
        for entry in self.pending.values():
            entry[2] = -1.0
        self._schedule_reconnect()

    def _schedule_reconnect(self):
        if self.closing:
            return
        delay = self.backoff / 2 + self.rng.random() * self.backoff / 2
        self.backoff = min(self.fleet.backoff_max, self.backoff * 2)
        self._reconnect_handle = self.fleet.loop.call_later(delay, self.dial)

    def cut(self) -> None:
        """Tests: drop the TCP connection abruptly (as a tunnel or a dead zone does)."""
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        self.closing = True
        if self._reconnect_handle is not None:
            self._reconnect_handle.cancel()
        if self.transport is not None:
            self.transport.abort()

    # -- sending ---------------------------------------------------------------------------------
    def _next_serial(self) -> int:
        self.serial = (self.serial + 1) & 0xFFFF
        return self.serial

    def _wire(self, msg_id: int, body: bytes, serial: int) -> bytes:
        return encode_jt808(p.build(msg_id, body, self.phone_bcd, serial, self.protocol_version))

    def _send(self, msg_id: int, body: bytes, track: bool = True, fixes: int = 0) -> int:
        serial = self._next_serial()
        wire = self._wire(msg_id, body, serial)
        now = self.fleet.loop.time()
        if track:
            self.pending[serial] = [msg_id, wire, now, 0, fixes]
        if self.transport is not None:
            self.transport.write(wire)
            self.last_tx = now
        return serial

    def send_raw(self, data: bytes) -> None:
        """Tests: put bytes on the wire as they are."""
        if self.transport is not None:
            self.transport.write(data)

    def _register(self):
        self.state = "registering"
        if self.version == "2019":
            reg = p.Registration(
                31, 100, "TWSIM", "TW-808-SIM", f"T{self.phone[-10:]}", 2, f"沪A{self.phone[-5:]}", "2019"
            )
        else:
            reg = p.Registration(
                31, 100, "TWSIM", "TW-808-SIM", f"T{self.phone[-6:]}", 2, f"沪A{self.phone[-5:]}", "2013"
            )
        self._send(p.REGISTER, p.register_body(reg), track=False)

    def _authenticate(self):
        self.state = "authenticating"
        body = p.auth_body(self.auth_code, self.version, imei=f"86{self.phone[-13:]:0>13}", software_version="tw-sim-1")
        self._send(p.AUTH, body, track=False)

    def location(self, t: float | None = None) -> bytes:
        """The 0x0200 body of the terminal's position at `t` (now by default); remembers it."""
        if t is None:
            t = time.time()
        lat, lon, speed, course = self.route.at(t)
        time_ns = int(t) * 1_000_000_000
        self.mileage_km += speed / 3600.0 / max(self.fleet.rate, 1e-3)
        body = p.location_body(
            lat,
            lon,
            time_ns,
            alt_m=self.route.alt_m,
            speed_kmh=speed,
            course_deg=course,
            alarm=self.alarm,
            status=p.STATUS_ACC_ON | p.STATUS_FIXED | (1 << 18) | (1 << 19) | self.status_extra,
            mileage_km=self.mileage_km,
            signal=self.signal,
            satellites=self.satellites,
        )
        self.last_report = {
            "lat": math.copysign(round(abs(lat) * 1e6) / 1e6, lat),
            "lon": math.copysign(round(abs(lon) * 1e6) / 1e6, lon),
            "speed_kmh": round(speed * 10) / 10,
            "course_deg": course,
            "time_ns": time_ns,
            "alarm": self.alarm,
        }
        return body

    def report(self) -> int | None:
        """Send one 0x0200 now (or store it while offline); returns its serial or None if stored."""
        body = self.location()
        if self.state != "online":
            self._store(body)
            return None
        self.fleet.count("reports_sent")
        return self._send(p.LOCATION, body, fixes=1)

    def _store(self, body: bytes):
        fleet = self.fleet
        if len(self.stored) >= fleet.store_max:
            self.stored.pop(0)
            fleet.count("store_overflow")
        self.stored.append(body)
        fleet.count("stored")

    def send_batch(self, bodies: list[bytes], kind: int = p.BATCH_NORMAL) -> int:
        """Send a 0x0704 of the given location bodies; returns its serial."""
        self.fleet.count("batches_sent")
        return self._send(p.BATCH, p.batch_body(bodies, kind), fixes=len(bodies))

    def heartbeat(self) -> int:
        self.fleet.count("heartbeats_sent")
        return self._send(p.HEARTBEAT, b"")

    def _flush_stored(self):
        # a batch body must fit the 10-bit length field: about 25 positions of 45 bytes each
        while self.stored:
            chunk = []
            size = 3
            while self.stored and size + 2 + len(self.stored[0]) <= p.MAX_BODY:
                body = self.stored.pop(0)
                size += 2 + len(body)
                chunk.append(body)
            self.send_batch(chunk, p.BATCH_BLIND_AREA)

    def tick(self, now: float, report: bool) -> None:
        """Called by the fleet: report when due, heartbeat when quiet, resend what was not acked."""
        if self.state != "online":
            if report and self.fleet.store_offline:
                self._store(self.location())
            return
        if self.pending:
            self._resend_due(now)
        if report:
            self.report()
        elif now - self.last_tx >= self.fleet.heartbeat_s:
            self.heartbeat()

    def _resend_due(self, now: float):
        transport = self.transport
        if transport is None:  # online implies connected; nothing to resend on while not
            return
        fleet = self.fleet
        timeout = fleet.ack_timeout_s
        for serial, entry in list(self.pending.items()):
            sent_at, tries = entry[2], entry[3]
            # JT/T 808: the n-th retransmission waits T * (n + 1)
            if sent_at >= 0 and now - sent_at < timeout * (tries + 1):
                continue
            if tries >= fleet.retries:
                del self.pending[serial]
                fleet.count("gave_up")
                continue
            entry[2] = now
            entry[3] = tries + 1
            fleet.count("resends")
            transport.write(entry[1])
            self.last_tx = now

    # -- receiving -------------------------------------------------------------------------------
    def data_received(self, data):
        framer = self.framer
        before = framer.dropped_bytes
        for frame in framer.feed(data):
            try:
                header, body = p.parse(frame)
                self._handle(header, body)
            except p.Jt808Error:
                self.fleet.count("bad_frames")
        if framer.dropped_bytes != before:
            self.fleet.count("bad_frames")

    def _handle(self, header: p.Header, body: bytes):
        fleet = self.fleet
        msg_id = header.msg_id
        if msg_id == p.PLATFORM_ACK:
            serial, reply_id, result = p.parse_ack(body)
            if self.ignore_acks > 0:
                self.ignore_acks -= 1
                return
            fleet.count("acks_received")
            if reply_id == p.AUTH:
                self.auth_results.append(result)
                if result == p.Result.OK:
                    fleet.count("auth_ok")
                    self.state = "online"
                    fleet.online += 1
                    self.backoff = fleet.backoff_initial
                    self.online_event.set()
                    self._resend_all_pending()
                    self._flush_stored()
                else:
                    fleet.count("auth_failed")
                    if fleet.notify is not None:
                        fleet.notify(
                            f"terminal {self.phone}: the gateway refused its authentication (result {int(result)})"
                        )
                    if self.preset_code is None or fleet.reregister:
                        self.auth_code = None
                        self._register()
                    elif self.transport is not None:
                        self.transport.close()
                return
            entry = self.pending.pop(serial, None)
            if entry is None or entry[0] != reply_id:
                if entry is not None:
                    self.pending[serial] = entry
                return
            if result != p.Result.OK:
                fleet.count("acks_not_ok")
                return
            if reply_id == p.LOCATION:
                fleet.count("reports_acked")
            fleet.count("fixes_acked", entry[4])
        elif msg_id == p.REGISTER_REPLY:
            _serial, result, code = p.parse_register_reply(body)
            self.register_result = result
            if result == p.RegisterResult.OK and code:
                fleet.count("registrations")
                self.auth_code = code
                self._authenticate()
            else:
                fleet.count("registrations_refused")
                if fleet.notify is not None:
                    fleet.notify(f"terminal {self.phone}: the gateway refused its registration (result {int(result)})")
                if self.transport is not None:
                    self.transport.close()
        elif msg_id == p.QUERY_LOCATION:
            fleet.count("queries_answered")
            self._send(p.LOCATION_REPLY, p.location_reply_body(header.serial, self.location()), track=False)

    def _resend_all_pending(self):
        now = self.fleet.loop.time()
        for entry in self.pending.values():
            if self.transport is not None:
                self.transport.write(entry[1])
            entry[2] = now


class Fleet:
    """N terminals with phones `phone_base`, `phone_base + 1`, ... reporting at `rate` Hz each."""

    def __init__(
        self,
        host: str,
        port: int,
        terminals: int = 1,
        rate: float = 1.0,
        version: str = "2013",
        auth_code: str | None = None,
        phone_base: int = 13800000000,
        heartbeat_s: float = 30.0,
        ack_timeout_s: float = 5.0,
        retries: int = 3,
        seed: int = 808,
        centre: tuple[float, float] = DEFAULT_CENTRE,
        connect_per_s: float = 2000.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        reregister: bool = True,
        store_offline: bool = True,
        store_max: int = 1000,
    ):
        if version not in ("2013", "2019"):
            raise ValueError("version must be 2013 or 2019")
        if terminals < 1:
            raise ValueError("terminals must be at least 1")
        if rate < 0:
            raise ValueError("rate must not be negative")
        self.host = host
        self.port = port
        self.rate = rate
        self.version = version
        self.heartbeat_s = heartbeat_s
        self.ack_timeout_s = ack_timeout_s
        self.retries = retries
        self.connect_per_s = connect_per_s
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.reregister = reregister
        self.store_offline = store_offline
        self.store_max = store_max
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.online = 0
        # `tianwang simulate` sets this to print connection events (the gateway closing a terminal's
        # connection, refusing a registration) as they happen
        self.notify: Callable[[str], None] | None = None
        self.loop: asyncio.AbstractEventLoop  # set by start()
        rng = random.Random(seed)
        self.terminals = [
            SimTerminal(self, str(phone_base + i), Route(rng, centre), version, auth_code, random.Random(rng.random()))
            for i in range(terminals)
        ]
        self._by_phone = {t.phone: t for t in self.terminals}
        self._task: asyncio.Task | None = None

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] += n

    def stats(self) -> dict:
        out = dict(self.counters)
        out["terminals"] = len(self.terminals)
        out["online"] = self.online
        out["pending"] = sum(len(t.pending) for t in self.terminals)
        return out

    def terminal(self, phone: str) -> SimTerminal:
        return self._by_phone[phone]

    async def start(self) -> None:
        """Dial every terminal (paced at `connect_per_s`) and start reporting."""
        self.loop = asyncio.get_running_loop()
        self._task = self.loop.create_task(self._run(), name="jt808-fleet")

    async def _run(self):
        per_tick = max(1, int(self.connect_per_s * TICK_S))
        for i in range(0, len(self.terminals), per_tick):
            for t in self.terminals[i : i + per_tick]:
                t.dial()
            if i + per_tick < len(self.terminals):
                await asyncio.sleep(TICK_S)
        await self._report_loop()

    async def _report_loop(self):
        # terminal i reports in slot i % slots; one slot per tick, so each reports once per period
        loop = self.loop
        period = 1.0 / self.rate if self.rate > 0 else math.inf
        slots = max(1, int(round(period / TICK_S))) if self.rate > 0 else 1
        groups = [self.terminals[s::slots] for s in range(slots)]
        tick_s = period / slots if self.rate > 0 else TICK_S
        start = loop.time()
        k = 0
        while True:
            now = loop.time()
            due = int((now - start) / tick_s)
            # catch up on late ticks, but never spend more than a period doing so
            if due - k > slots:
                k = due - slots
            while k <= due:
                report = self.rate > 0
                for t in groups[k % slots]:
                    t.tick(now, report)
                k += 1
            await asyncio.sleep(max(0.0, start + k * tick_s - loop.time()))

    async def wait_online(self, n: int | None = None, timeout: float = 10.0) -> None:
        """Wait until `n` terminals (all by default) are authenticated. Raises TimeoutError."""
        want = len(self.terminals) if n is None else n
        deadline = time.monotonic() + timeout
        while self.online < want:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.online} of {want} terminals online after {timeout} s")
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        for t in self.terminals:
            t.close()
        await asyncio.sleep(0)


# -- command line ---------------------------------------------------------------------------------
def _hostport(value: str) -> tuple[str, int]:
    from tianwang.drivers.sdk import parse_hostport

    try:
        return parse_hostport(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _centre(value: str) -> tuple[float, float]:
    try:
        lat, lon = (float(x) for x in value.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError("expected LAT,LON in degrees") from None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise argparse.ArgumentTypeError("LAT,LON out of range")
    return lat, lon


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="tianwang simulate jt808",
        description="A fleet of JT/T 808 vehicle terminals dialling into a platform over TCP.",
    )
    ap.add_argument(
        "--connect", required=True, type=_hostport, metavar="HOST:PORT", help="the platform (gateway listener)"
    )
    ap.add_argument("--terminals", type=int, default=1, metavar="N", help="number of terminals (default 1)")
    ap.add_argument("--rate", type=float, default=1.0, metavar="HZ", help="reports per second per terminal (default 1)")
    ap.add_argument("--version", choices=("2013", "2019"), default="2013", help="header edition (default 2013)")
    ap.add_argument("--auth-code", default=None, help="authenticate with this code instead of registering first")
    ap.add_argument(
        "--phone-base", type=int, default=13800000000, help="phone of the first terminal; the rest count up"
    )
    ap.add_argument("--heartbeat", type=float, default=30.0, metavar="S", help="heartbeat after S seconds of silence")
    ap.add_argument(
        "--ack-timeout", type=float, default=5.0, metavar="S", help="resend a message not acknowledged in S seconds"
    )
    ap.add_argument("--retries", type=int, default=3, help="resends before a message is given up")
    ap.add_argument(
        "--centre",
        type=_centre,
        default=DEFAULT_CENTRE,
        metavar="LAT,LON",
        help="the centre of the routes, each within about 12 km of it (default 27.8297,112.9443: Xiangtan)",
    )
    ap.add_argument("--seed", type=int, default=808)
    ap.add_argument(
        "--connect-rate", type=float, default=2000.0, metavar="PER_S", help="new connections per second at start"
    )
    ap.add_argument(
        "--stats-interval", type=float, default=0.0, metavar="S", help="print counters to stderr every S seconds"
    )
    return ap


async def _amain(args) -> dict:
    host, port = args.connect
    fleet = Fleet(
        host,
        port,
        terminals=args.terminals,
        rate=args.rate,
        version=args.version,
        auth_code=args.auth_code,
        phone_base=args.phone_base,
        heartbeat_s=args.heartbeat,
        ack_timeout_s=args.ack_timeout,
        retries=args.retries,
        seed=args.seed,
        centre=args.centre,
        connect_per_s=args.connect_rate,
    )
    return await serve_simulator(
        fleet,
        lambda: {
            "kind": "jt808",
            "url": f"tcp://{host}:{port}",
            "role": "client",
            "terminals": args.terminals,
            "rate": args.rate,
            "version": args.version,
            # every phone for a small fleet; the first and last (consecutive numbers) always
            "first_phone": fleet.terminals[0].phone,
            "last_phone": fleet.terminals[-1].phone,
            **({"phones": [t.phone for t in fleet.terminals]} if len(fleet.terminals) <= 100 else {}),
        },
        args.stats_interval,
        describe_first=True,
    )


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.terminals < 1:
        print("tianwang simulate jt808: --terminals must be at least 1", file=sys.stderr)
        return 2
    if args.rate < 0:
        print("tianwang simulate jt808: --rate must not be negative", file=sys.stderr)
        return 2
    return run_simulator("jt808", _amain(args))


if __name__ == "__main__":
    sys.exit(main())
