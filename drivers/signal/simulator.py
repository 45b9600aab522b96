"""`tianwang simulate signal`: GB/T 20999 traffic-signal controllers (tianwang.drivers.signal.controller)
on a pty or on TCP, for tests, the demo and the benchmark.

- `pty`: all N controllers share one multi-drop line (one pty); the host addresses each by its
  controller id. The url is `serial:///dev/pts/N`.
- `tcp`: each controller listens on its own loopback port (the controller is the server), or, with
  `connect`, dials the host (the controller is the client) and dials again when the link drops.

A frame addressed to controller id 0 is answered by the controller when it is alone on its link
(how a host learns an unknown id). Frames for other ids are ignored, as a controller on a shared
line must. Active reports (detector volumes, alarms, faults) go out on the controller's own timer.
"""

from __future__ import annotations

import abc
import argparse
import asyncio
import logging
import sys
import time
from functools import partial

from tianwang.drivers.sdk import PtyLine, parse_hostport, run_simulator, serve_simulator
from tianwang.drivers.signal import protocol as p
from tianwang.drivers.signal.controller import Controller

log = logging.getLogger("tianwang.sim.signal")
FAULTS = ("silence", "lamp_failure", "green_conflict", "control_failed")


class _Line(abc.ABC):
    """One link (a pty, or one TCP connection) with the controllers behind it."""

    def __init__(self, sim: SignalSimulator, controllers: list[Controller]):
        self.sim = sim
        self.controllers = {c.id: c for c in controllers}
        self.framer = sim.profile.framer()

    def received(self, data: bytes) -> None:
        sim = self.sim
        now = time.time()
        for content in self.framer.feed(data):
            try:
                msg = p.parse(content)
            except p.Gbt20999Error:
                sim.counters["bad_frames"] += 1
                continue
            sim.counters["frames_in"] += 1
            target: Controller | None
            if msg.controller == 0 and len(self.controllers) == 1:
                target = next(iter(self.controllers.values()))
            else:
                target = self.controllers.get(msg.controller)
            if target is None:
                continue
            answers = target.handle(msg, now)
            if not answers:
                continue
            wire = b"".join(p.encode(a, sim.profile) for a in answers)
            sim.counters["frames_out"] += len(answers)
            if target.delay_s > 0:
                asyncio.get_running_loop().call_later(target.delay_s, self.write, wire)
            else:
                self.write(wire)

    def send_reports(self, now: float) -> None:
        for c in self.controllers.values():
            msgs = c.reports(now)
            if msgs:
                self.sim.counters["frames_out"] += len(msgs)
                self.write(b"".join(p.encode(m, self.sim.profile) for m in msgs))

    @abc.abstractmethod
    def write(self, data: bytes) -> None:
        """Send bytes to the gateway side of the link (a pty's master, a TCP transport)."""

    def close(self) -> None:  # noqa: B027 - a line with nothing to release keeps this
        pass


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _PtyLine(_Line):
    """All the controllers on one multi-drop pty (the SDK's PtyLine; a full backlog counts
    `overrun_bytes`, bytes written once the line is closed are not counted)."""

    def __init__(self, sim, controllers):
        super().__init__(sim, controllers)
        self.pty = PtyLine(self.received, on_overrun=self._overrun)
        self.pty.open()

    @property
    def url(self) -> str:
        return self.pty.url

    def _overrun(self, n: int) -> None:
        self.sim.counters["overrun_bytes"] += n

    def write(self, data: bytes) -> None:
        self.pty.write(data)

    def close(self) -> None:
        self.pty.close()


class _TcpLine(_Line, asyncio.Protocol):
    """One TCP connection carrying one controller."""

    def __init__(self, sim, controllers, on_lost=None):
        _Line.__init__(self, sim, controllers)
        self.transport = None
        self.on_lost = on_lost
        self._closed_here = False  # closed by the simulator (a fault, its stop), not by the gateway

    def connection_made(self, transport):
        self.transport = transport
        self.sim.lines.add(self)
        self.sim.counters["connections"] += 1
        if self.sim.notify is not None and self.on_lost is None:  # a server port: the gateway dialled in
            self.sim.notify(f"{self._who()}: the gateway connected")

    def data_received(self, data):
        self.received(data)

    def connection_lost(self, exc):
        self.sim.lines.discard(self)
        self.transport = None
        if self.sim.notify is not None and not self.sim._stopping and not self._closed_here:
            again = "; dialling again" if self.on_lost is not None else ""
            self.sim.notify(f"{self._who()}: the gateway closed the connection{again}")
        if self.on_lost is not None:
            self.on_lost()

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        self._closed_here = True
        if self.transport is not None:
            self.transport.abort()

    def _who(self) -> str:
        return "controller " + ", ".join(str(i) for i in self.controllers)


class SignalSimulator:
    """N controllers on a pty (`transport="pty"`, one multi-drop line) or TCP (one port each, or
    dialling `connect=(host, port)`). `controller(id)` gives a Controller to inject faults into."""

    def __init__(
        self,
        transport: str = "pty",
        controllers: int = 1,
        profile: str = "majority",
        *,
        base_id: int = 1001,
        connect: tuple[str, int] | None = None,
        traffic_s: float = 10.0,
        seed: int = 20999,
        tick_s: float = 0.25,
        host: str = "127.0.0.1",
    ):
        if transport not in ("pty", "tcp"):
            raise ValueError(f"transport must be pty or tcp, not {transport!r}")
        if controllers < 1:
            raise ValueError("controllers must be at least 1")
        if profile not in p.PROFILES:
            raise ValueError(f"unknown profile {profile!r} (profiles: {', '.join(p.PROFILES)})")
        if connect is not None and transport != "tcp":
            raise ValueError("connect needs transport tcp")
        self.transport = transport
        self.profile_name = profile
        self.profile = p.PROFILES[profile]
        self.connect = connect
        self.host = host
        self.tick_s = tick_s
        now = time.time()
        self.controllers = [
            Controller(base_id + i, self.profile, now=now, seed=seed + i, traffic_s=traffic_s)
            for i in range(controllers)
        ]
        self.counters = {"frames_in": 0, "frames_out": 0, "bad_frames": 0, "connections": 0, "overrun_bytes": 0}
        self.lines: set[_Line] = set()
        self.notify = None  # `tianwang simulate` sets it to print connection events
        self.urls: list[str] = []
        self._pty: _PtyLine | None = None
        self._servers: list[asyncio.AbstractServer] = []
        self._tasks: list[asyncio.Task] = []
        self._stopping = False

    @property
    def url(self) -> str:
        return self.urls[0] if self.urls else ""

    def controller(self, controller_id: int) -> Controller:
        for c in self.controllers:
            if c.id == controller_id:
                return c
        raise KeyError(controller_id)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.transport == "pty":
            self._pty = _PtyLine(self, self.controllers)
            self.lines.add(self._pty)
            self.urls = [self._pty.url]
        elif self.connect is None:
            for c in self.controllers:
                server = await loop.create_server(partial(_TcpLine, self, [c]), self.host, 0)
                self._servers.append(server)
                self.urls.append(f"tcp://{self.host}:{server.sockets[0].getsockname()[1]}")
        else:
            host, port = self.connect
            self.urls = [f"tcp://{host}:{port}"] * len(self.controllers)
            for c in self.controllers:
                self._tasks.append(loop.create_task(self._dial(c, host, port)))
        self._tasks.append(loop.create_task(self._report_loop()))

    async def _dial(self, c: Controller, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        delay = 0.2
        while not self._stopping:
            lost = loop.create_future()
            try:
                # each connection settles its own attempt's future
                await loop.create_connection(partial(_TcpLine, self, [c], on_lost=partial(_settle, lost)), host, port)
            except OSError:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            delay = 0.2
            await lost
            await asyncio.sleep(0.2)

    async def _report_loop(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            now = time.time()
            for line in list(self.lines):
                line.send_reports(now)

    def hang_up(self) -> None:
        """Drop every TCP connection (the host sees a reset and must reconnect)."""
        for line in list(self.lines):
            if isinstance(line, _TcpLine):
                line.close()

    async def stop(self) -> None:
        self._stopping = True
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for s in self._servers:
            s.close()
        for line in list(self.lines):
            line.close()
        self.lines.clear()

    def stats(self) -> dict:
        out = dict(self.counters)
        for c in self.controllers:
            for k, v in c.counters.items():
                out[k] = out.get(k, 0) + v
        return out

    def describe(self) -> dict:
        return {
            "kind": "signal",
            "url": self.url,
            "urls": self.urls,
            "transport": self.transport,
            "role": "client" if self.connect else "server",
            "profile": self.profile_name,
            "controller_ids": [c.id for c in self.controllers],
        }


def _hostport(value: str):
    try:
        return parse_hostport(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _fault(value: str):
    kind, _, after = value.partition("@")
    if kind not in FAULTS:
        raise argparse.ArgumentTypeError(f"fault {kind!r} is not one of {', '.join(FAULTS)}")
    try:
        seconds = float(after) if after else 10.0
    except ValueError:
        raise argparse.ArgumentTypeError(f"{after!r} is not a number of seconds") from None
    return kind, seconds


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="tianwang simulate signal", description="GB/T 20999 traffic-signal controllers on a pty or TCP."
    )
    ap.add_argument(
        "--transport",
        choices=("pty", "tcp"),
        default="pty",
        help="pty: one multi-drop line for all controllers; tcp: a port per controller (default pty)",
    )
    ap.add_argument("--controllers", type=int, default=1, metavar="N", help="number of controllers (default 1)")
    ap.add_argument("--profile", default="majority", help=f"vendor profile: {', '.join(p.PROFILES)}")
    ap.add_argument(
        "--base-id", type=int, default=1001, metavar="ID", help="id of the first controller; the rest count up"
    )
    ap.add_argument(
        "--connect",
        type=_hostport,
        metavar="HOST:PORT",
        help="with --transport tcp: the controllers dial this host (the gateway listens)",
    )
    ap.add_argument(
        "--traffic-interval",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds between detector reports (0 = none; default 10)",
    )
    ap.add_argument(
        "--fault",
        type=_fault,
        action="append",
        default=[],
        metavar="KIND[@S]",
        help=f"inject into the first controller after S seconds (default 10): {', '.join(FAULTS)}",
    )
    ap.add_argument("--seed", type=int, default=20999)
    ap.add_argument(
        "--stats-interval", type=float, default=0.0, metavar="S", help="print counters to stderr every S seconds"
    )
    return ap


async def _inject(sim: SignalSimulator, kind: str, after: float) -> None:
    await asyncio.sleep(after)
    c = sim.controllers[0]
    now = time.time()
    if kind == "silence":
        c.silent = True
    elif kind == "lamp_failure":
        c.fail_lamp(1, now)
    elif kind == "green_conflict":
        c.green_conflict(now)
    elif kind == "control_failed":
        c.control_failed = True


async def _amain(args) -> dict:
    sim = SignalSimulator(
        args.transport,
        args.controllers,
        args.profile,
        base_id=args.base_id,
        connect=args.connect,
        traffic_s=args.traffic_interval,
        seed=args.seed,
    )
    tasks = [asyncio.ensure_future(_inject(sim, kind, after)) for kind, after in args.fault]
    try:
        return await serve_simulator(sim, sim.describe, args.stats_interval)
    finally:
        for t in tasks:
            t.cancel()


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    problem = None
    if args.controllers < 1:
        problem = "--controllers must be at least 1"
    elif args.controllers > 5000:
        problem = "--controllers must be at most 5000"
    elif args.profile not in p.PROFILES:
        problem = f"--profile {args.profile!r} is not one of {', '.join(p.PROFILES)}"
    elif args.connect is not None and args.transport != "tcp":
        problem = "--connect needs --transport tcp"
    elif not 1 <= args.base_id <= 0xFFFFFFFF - args.controllers:
        problem = "--base-id must be between 1 and 2^32 - 1 - N"
    elif args.traffic_interval < 0:
        problem = "--traffic-interval must not be negative"
    if problem:
        print(f"tianwang simulate signal: {problem}", file=sys.stderr)
        return 2
    return run_simulator("signal", _amain(args))


if __name__ == "__main__":
    sys.exit(main())
