"""A BeiDou receiver with an RDSS short-message card, on a pty or a TCP port (`tianwang simulate beidou`).

What it does, as the receivers on patrol cars do:

- Drives a loop through a city grid (`CityLoop`: straight streets at street speeds, right-angle
  turns) and writes one NMEA epoch per period (1, 2, 5, 10 Hz...) at wall-clock-aligned fix times:
  RMC VTG GGA GSA GSV GLL ZDA in one of three talker styles (`TALKERS`):
  `BD` an older BD 410004 BeiDou-only module (BD talker everywhere, no System IDs),
  `GB` an NMEA 4.10/4.11 BeiDou-only receiver (GB solution, GNGSA with System ID 4),
  `GN` a multi-constellation NMEA 4.10 receiver (GPS, GLONASS, Galileo, BDS).
- A sky that moves slowly; satellites above 15 degrees with a usable signal are used in the fix.
  `tunnel()` loses the fix (RMC V, GGA quality 0, nothing used), `weak_sky()` keeps 4 satellites
  and a poor HDOP, `pause_epochs()` stops the epochs while the rest (TXT, RDSS) keeps talking, and
  `silence()` stops every byte.
- Receiver text every second, as CASIC-based modules write it: `$GPTXT,01,01,01,ANTENNA OK`, or
  `ANTENNA OPEN` / `ANTENNA SHORT` after `set_antenna()`; a firmware banner (`$GPTXT,...,02,SW=...`)
  at start and every `banner_s` seconds.
- Noise mode: every epoch may carry garbage runs, copies of its sentences with bad checksums or cut
  short, `$$` prefixes, `\\r\\r\\n` endings, and UBX / RTCM3 / CASIC binary frames between sentences,
  and is written in a few pieces. Each piece of noise is an extra: the epoch's own sentences are
  always there intact, so a correct decoder loses no epoch. What was injected is counted in
  `counters` (`noise_bad_checksum`, `noise_truncated`, `noise_binary`, ...).
- An RDSS card (`RdssCard`, protocol `2.1` or `bds3`) that answers the host's commands on the same
  line: card query (`$CCICA` -> `$BDICI`, `$CCICR` -> `$BDICP`), send (`$CCTXA` / `$CCTCQ`) ->
  `$BDFKI`, refusing a send that comes before its service interval has passed with the remaining
  wait, as a real card does; beam status `$BDPWI` every second; `inject_message()` makes it receive
  a message (`$BDTXR` / `$BDTCI`, GB2312 text by default).
- `cut()` hangs up the line: the pty master is closed (the reader gets EIO, as when a USB adapter is
  pulled) and a new pty comes up after `down_s`; on TCP every client is reset (RST) and new
  connections are refused for `down_s`. Give `link=PATH` for a pty: a symlink that always points at
  the current pty, the way udev's /dev/serial/by-id names do, so a driver can reopen the same path.

Library use (tests):

    sim = ReceiverSimulator("pty", rate=5, talker="GB", rdss="2.1", interval_s=60, link=tmp/"bd0")
    await sim.start(); sim.url -> "serial:///.../bd0"
    sim.epoch_at(time_ns) -> EpochState written for that fix time; sim.counters; sim.card.sent
    await sim.stop()

Command line: `tianwang simulate beidou [--transport pty|tcp] [--rate HZ] [--talker BD|GB|GN]
[--noise] [--rdss 2.1|bds3|none] [--interval S] ...`. The first stdout line is one JSON object
(`kind`, `url`, ...); it then runs until SIGTERM/SIGINT and prints its counters as a last JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import collections
import math
import random
import socket
import struct
import sys
import time
from typing import TYPE_CHECKING

from tianwang.drivers.beidou import nmea_writer as w
from tianwang.drivers.beidou.sim_rdss import LEVEL_BITS as LEVEL_BITS, RdssCard as RdssCard
from tianwang.drivers.sdk import PtyLine, run_simulator, serve_simulator

if TYPE_CHECKING:
    from tianwang.drivers.sdk import NmeaDecoder

EARTH_M_PER_DEG = 111_320.0
DEFAULT_CENTRE = (27.8297, 112.9443)  # Xiangtan, Hunan: the city the demo and the simulators drive around

# talker style -> (EpochWriter style, solution talker, constellations in view, digits of time, of minutes)
TALKERS = {
    "BD": ("bd", "BD", ("BDS",), 3, 5),
    "GB": ("nmea410", "GB", ("BDS",), 2, 7),
    "GN": ("nmea410", "GN", ("GPS", "GLO", "GAL", "BDS"), 2, 7),
}
# satellites in view per constellation over eastern China (BDS has its GEO/IGSO arc there)
IN_VIEW = {"BDS": 14, "GPS": 10, "GLO": 7, "GAL": 7, "QZSS": 3}
SVID_RANGE = {"BDS": 46, "GPS": 32, "GLO": 24, "GAL": 36, "QZSS": 7}
USED_MIN_ELEV = 15  # degrees: below this the receiver leaves a satellite out of the fix
USED_MIN_SNR = 28  # dB-Hz


# bytes never used as garbage: they would start a sentence, end a line or begin a binary frame candidate
_NOT_GARBAGE = frozenset(b"$\r\n\xb5\xd3\xba")
_GARBAGE = bytes(b for b in range(256) if b not in _NOT_GARBAGE)

# what the command centre sends in the demo (`message_every_s`)
MESSAGES = ("收到，立即前往现场", "请报告当前位置", "路口封闭，绕行东侧", "任务完成，返回基地")

COUNTERS = (
    "epochs",
    "sentences",
    "bytes",
    "overrun_bytes",
    "txt",
    "pwi",
    "commands",
    "bad_commands",
    "fki",
    "ici",
    "sends_accepted",
    "sends_refused",
    "messages_injected",
    "cuts",
    "connections",
    "noise_garbage",
    "noise_bad_checksum",
    "noise_truncated",
    "noise_double_dollar",
    "noise_crcrlf",
    "noise_binary",
)


# ---------------------------------------------------------------------------------------------
# Where the car is


class CityLoop:
    """A closed drive through a street grid: straight legs at their street's speed, right-angle
    turns. `at(t)` gives the position, course and speed at unix time `t` (seconds)."""

    # (east m, north m) corners relative to the start, and the speed (m/s) of the leg that leaves
    # each corner: arterial roads at 50-60 km/h, side streets at 25-35 km/h
    LEGS = (
        ((0.0, 0.0), 15.0),
        ((800.0, 0.0), 8.5),
        ((800.0, 450.0), 13.0),
        ((1350.0, 450.0), 9.0),
        ((1350.0, 1000.0), 16.0),
        ((300.0, 1000.0), 7.5),
        ((300.0, 500.0), 12.0),
        ((0.0, 500.0), 10.0),
    )

    def __init__(self, origin=DEFAULT_CENTRE, alt_m: float = 12.0, geoid_sep_m: float = 9.8):
        self.lat0, self.lon0 = origin
        self.alt_m = alt_m
        self.geoid_sep_m = geoid_sep_m
        self.m_per_deg_lon = EARTH_M_PER_DEG * math.cos(math.radians(self.lat0))
        self._legs = []  # (start time offset s, duration s, start east, start north, d east, d north, speed)
        offset = 0.0
        n = len(self.LEGS)
        for i, ((e0, n0), speed) in enumerate(self.LEGS):
            e1, n1 = self.LEGS[(i + 1) % n][0]
            length = math.hypot(e1 - e0, n1 - n0)
            duration = length / speed
            self._legs.append((offset, duration, e0, n0, e1 - e0, n1 - n0, speed))
            offset += duration
        self.period_s = offset
        self._starts = [leg[0] for leg in self._legs]

    def at(self, t: float) -> tuple[float, float, float, float]:
        """(lat, lon, course_deg, speed_mps) at unix time `t`."""
        into = t % self.period_s
        leg = self._legs[bisect.bisect_right(self._starts, into) - 1]
        start, duration, e0, n0, de, dn, speed = leg
        f = (into - start) / duration
        east, north = e0 + f * de, n0 + f * dn
        course = math.degrees(math.atan2(de, dn)) % 360.0
        return self.lat0 + north / EARTH_M_PER_DEG, self.lon0 + east / self.m_per_deg_lon, course, speed

    def altitude(self, t: float) -> float:
        # a gentle rise and fall along the loop (bridges, underpasses)
        return self.alt_m + 3.0 * math.sin(2 * math.pi * (t % self.period_s) / self.period_s)


class Sky:
    """Satellites in view, moving slowly: elevation and azimuth are smooth functions of time."""

    def __init__(self, systems, rng: random.Random):
        self._sats = []
        for system in systems:
            for svid in sorted(rng.sample(range(1, SVID_RANGE[system] + 1), IN_VIEW[system])):
                # (system, svid, mean elevation, elevation swing, azimuth at t=0, phase, signal offset)
                self._sats.append(
                    (
                        system,
                        svid,
                        rng.uniform(12, 70),
                        rng.uniform(3, 12),
                        rng.uniform(0, 360),
                        rng.uniform(0, 2 * math.pi),
                        rng.uniform(-4, 4),
                    )
                )

    def at(self, t: float, *, tunnel: bool = False, weak: bool = False) -> list[w.Satellite]:
        out = []
        used_left = 4 if weak else 10**6
        for system, svid, elev0, swing, az0, phase, snr_off in self._sats:
            elev = int(round(max(1.0, min(89.0, elev0 + swing * math.sin(t / 900.0 + phase)))))
            az = int(round(az0 + t / 240.0)) % 360
            snr = None if tunnel else int(round(max(10.0, min(50.0, 24 + elev / 3.0 + snr_off))))
            used = not tunnel and elev >= USED_MIN_ELEV and snr is not None and snr >= USED_MIN_SNR and used_left > 0
            if used:
                used_left -= 1
            out.append(w.Satellite(system, svid, elev, az, snr, used))
        return out


# ---------------------------------------------------------------------------------------------
# Transports: the simulator owns the device side (a pty through the SDK's PtyLine, or TCP)


class _TcpClient(asyncio.Protocol):
    def __init__(self, server: _TcpLine):
        self.server = server
        self.transport: asyncio.Transport  # from connection_made, before any other callback

    def connection_made(self, transport):
        self.transport = transport
        sim = self.server.sim
        if sim.loop.time() < self.server.down_until:
            _reset(transport)
            return
        self.server.clients.add(self)
        sim.counters["connections"] += 1
        if sim.notify is not None:
            sim.notify(f"a client connected from {_peer(transport)}")
        sim._on_connect()

    def data_received(self, data):
        self.server.sim._host_bytes(data)

    def connection_lost(self, exc):
        if self in self.server.clients:  # not reset by the simulator itself (a fault or its stop)
            self.server.clients.discard(self)
            sim = self.server.sim
            if sim.notify is not None:
                sim.notify(f"the client from {_peer(self.transport)} disconnected")


def _peer(transport) -> str:
    peer = transport.get_extra_info("peername") if transport is not None else None
    return f"{peer[0]}:{peer[1]}" if peer else "?"


def _reset(transport) -> None:
    # SO_LINGER 0: the close sends RST, as a terminal server or a receiver reboot does
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    transport.abort()


class _TcpLine:
    """A TCP server the receiver talks through (a serial-to-Ethernet server); every client hears
    everything the receiver writes, and may send commands."""

    WRITE_LIMIT = 256 * 1024  # a client further behind than this loses data, as an unread line does

    def __init__(self, sim: ReceiverSimulator, host: str, port: int):
        self.sim = sim
        self.host = host
        self.port = port
        self.server: asyncio.base_events.Server | None = None
        self.clients: set[_TcpClient] = set()
        self.down_until = 0.0

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"

    async def start(self) -> None:
        self.server = server = await self.sim.loop.create_server(lambda: _TcpClient(self), self.host, self.port)
        self.port = server.sockets[0].getsockname()[1]

    def write(self, data: bytes) -> None:
        if not self.clients:
            self.sim.counters["overrun_bytes"] += len(data)
            return
        for c in self.clients:
            t = c.transport
            if t.get_write_buffer_size() > self.WRITE_LIMIT:
                self.sim.counters["overrun_bytes"] += len(data)
            else:
                t.write(data)

    def reset_all(self, down_s: float) -> None:
        self.down_until = self.sim.loop.time() + down_s
        for c in list(self.clients):
            _reset(c.transport)
        self.clients.clear()

    async def close(self) -> None:
        for c in list(self.clients):
            c.transport.abort()
        self.clients.clear()
        if self.server is not None:
            self.server.close()
            try:
                await asyncio.wait_for(self.server.wait_closed(), 1.0)
            except TimeoutError:
                pass
            self.server = None


# ---------------------------------------------------------------------------------------------
# The receiver


# sentence orders seen in the field (issue 11)
ORDERS = {
    "usual": w.EpochWriter.DEFAULT_ORDER,
    "position": ("GGA", "RMC", "GSA", "GSV"),
    "satellites": ("GSA", "GSV", "GGA", "RMC"),
    "between": ("RMC", "GST", "GGA", "GSA", "ZDA", "GSV"),
}


class ReceiverSimulator:
    """A BeiDou receiver (and optional RDSS card) on a pty or a TCP port. See the module docstring.

    transport     "pty" (URL serial://<pty or link>) or "tcp" (tcp://host:port, `port` 0 = any free one)
    rate          epochs per second; the period must be whole hundredths of a second (1, 2, 5, 10, 20...)
    talker        "BD", "GB" or "GN" (TALKERS); `systems` overrides the constellations in view
    noise         noise around every epoch (`noise_rate` sets how much); may be switched at any time
    rdss          None, "2.1" or "bds3": the RDSS card's protocol (`card`: RdssCard, `interval_s`,
                  `card_id`, `level`); `message_every_s` > 0 makes it receive a message that often
    link          with "pty": a symlink kept pointing at the current pty (survives `cut()`)
    banner_s      how often the firmware banner (`firmware`) is repeated
    fki_delay_s   how long the card takes to answer a command
    dual_band     a dual-frequency receiver: two GSA per constellation, a second GSV set (signal 7/8)
    binary        None, "casic" or "ubx": the receiver also sends that binary protocol's navigation
                  frames every epoch, interleaved with the NMEA sentences (CASIC NAV-PV, DOP, TIMEUTC,
                  GPSINFO/BDSINFO; UBX NAV-PVT, DOP, SAT, TIMEUTC, EOE)
    order         the sentences of an epoch, in order (nmea_writer.EpochWriter); None: the talker's
                  usual order. ORDERS names the orders seen in the field ("position", "satellites",
                  "between": GST and ZDA between the others)
    Counters in `counters` (COUNTERS); the last `keep_epochs` epochs written in `epochs` (time_ns ->
    EpochState). Call start() and stop() on a running loop; the controls work in between.
    """

    def __init__(
        self,
        transport: str = "pty",
        *,
        rate: float = 1.0,
        talker: str = "GN",
        systems=None,
        noise: bool = False,
        rdss: str | None = "2.1",
        interval_s: int = 60,
        card_id: str = "0245678",
        level: int = 3,
        seed: int = 2024,
        origin=DEFAULT_CENTRE,
        link: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        banner_s: float = 10.0,
        firmware: str = "TWSIM-BD,V2.3.1",
        noise_rate: float = 0.35,
        fki_delay_s: float = 0.05,
        keep_epochs: int = 4096,
        message_every_s: float = 0.0,
        message_sender: str = "0166166",
        dual_band: bool = False,
        order=None,
        binary: str | None = None,
    ):
        if transport not in ("pty", "tcp"):
            raise ValueError(f"transport must be 'pty' or 'tcp', not {transport!r}")
        if talker not in TALKERS:
            raise ValueError(f"talker must be one of {', '.join(TALKERS)}, not {talker!r}")
        if not rate > 0:
            raise ValueError("rate must be positive")
        period_ns = round(1e9 / rate)
        # NMEA times carry hundredths of a second: the period must be a whole number of them
        if period_ns % 10_000_000 or abs(period_ns * rate - 1e9) > 1:
            raise ValueError(f"rate {rate} Hz does not give a period in whole hundredths of a second")
        style, solution_talker, default_systems, time_decimals, latlon_decimals = TALKERS[talker]
        systems = tuple(systems) if systems else default_systems
        for s in systems:
            if s not in IN_VIEW:
                raise ValueError(f"unknown constellation {s!r} (use {', '.join(IN_VIEW)})")
        if rdss not in (None, "2.1", "bds3"):
            raise ValueError(f"rdss must be '2.1', 'bds3' or None, not {rdss!r}")
        self.transport_kind = transport
        self.rate = rate
        self.period_ns = period_ns
        self.talker = talker
        self.systems = systems
        self.noise = noise
        self.noise_rate = noise_rate
        self.latlon_decimals = latlon_decimals
        self.time_decimals = time_decimals
        if isinstance(order, str):
            if order not in ORDERS:
                raise ValueError(f"order must be one of {', '.join(ORDERS)} or a list of sentences, not {order!r}")
            order = ORDERS[order]
        self.dual_band = bool(dual_band)
        if binary not in (None, "casic", "ubx"):
            raise ValueError(f"binary must be 'casic', 'ubx' or None, not {binary!r}")
        self.binary = binary
        self._boot_ns = time.time_ns()  # CASIC runTime counts from here
        self.writer = w.EpochWriter(
            style,
            solution_talker,
            time_decimals=time_decimals,
            latlon_decimals=latlon_decimals,
            dual_band=dual_band,
            order=tuple(order) if order else w.EpochWriter.DEFAULT_ORDER,
        )
        self.route = CityLoop(origin)
        self.rng = random.Random(seed)
        self.sky = Sky(systems, random.Random(seed + 1))
        self.card = RdssCard(rdss, card_id, interval_s, level) if rdss else None
        self.fki_delay_s = fki_delay_s
        self.message_every_s = message_every_s
        self.message_sender = message_sender
        self._messages_due = math.inf
        self.banner_s = banner_s
        self.firmware = firmware
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.notify = None  # `tianwang simulate` sets it to print connection events
        self.antenna = "OK"
        self.tunnelled = False
        self.weak = False
        self.epochs_paused = False
        self.silent = False
        self.epochs: collections.OrderedDict[int, w.EpochState] = collections.OrderedDict()
        self.keep_epochs = keep_epochs
        self.loop: asyncio.AbstractEventLoop  # set by start()
        self._pty = (
            PtyLine(self._host_bytes, link=str(link) if link else None, on_overrun=self._overrun, on_lost=self._overrun)
            if transport == "pty"
            else None
        )
        self._tcp = _TcpLine(self, host, port) if transport == "tcp" else None
        self._tasks: list[asyncio.Task] = []
        self._reopen: asyncio.TimerHandle | None = None
        self._host_buffer: NmeaDecoder  # set by start()
        self._held: list[bytes] | None = None  # output waiting for the end of an epoch being written
        self._last_banner = -math.inf
        self.started = False

    # -- lifecycle ------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        if self._pty is not None:
            return self._pty.url
        assert self._tcp is not None  # one of the two, by transport
        return self._tcp.url

    @property
    def port(self) -> int:
        return self._tcp.port if self._tcp is not None else 0

    async def start(self) -> None:
        """Open the line and start talking. Raises OSError when the port or pty cannot be opened."""
        from tianwang.drivers.sdk import NmeaDecoder

        self.loop = asyncio.get_running_loop()
        self._host_buffer = NmeaDecoder(max_length=128, max_message_length=4096)
        if self._pty is not None:
            self._pty.open()
        elif self._tcp is not None:
            await self._tcp.start()
        self.started = True
        self._tasks = [
            self.loop.create_task(self._epoch_loop(), name="beidou-sim-epochs"),
            self.loop.create_task(self._second_loop(), name="beidou-sim-status"),
        ]

    async def stop(self) -> None:
        """Stop talking and close the line (the pty disappears; the TCP port is released)."""
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except asyncio.CancelledError:
                pass
        self._tasks = []
        if self._reopen is not None:
            self._reopen.cancel()
            self._reopen = None
        if self._pty is not None:
            self._pty.close()
            self._pty.remove_link()
        if self._tcp is not None:
            await self._tcp.close()
        self.started = False

    def stats(self) -> dict:
        out = dict(self.counters)
        if self.card is not None:
            out["card_sent"] = len(self.card.sent)
        return out

    # -- what tests and operators change ----------------------------------------------------------
    def set_antenna(self, state: str) -> None:
        """`OK`, `OPEN` or `SHORT`: what the next TXT lines say (written at once, then every second)."""
        state = state.upper()
        if state not in ("OK", "OPEN", "SHORT"):
            raise ValueError("antenna state is OK, OPEN or SHORT")
        self.antenna = state
        if self.started:
            self._write_antenna()

    def tunnel(self, on: bool = True) -> None:
        """Lose the fix (RMC V, GGA quality 0, no satellite used) until called with False."""
        self.tunnelled = on

    def weak_sky(self, on: bool = True) -> None:
        """Keep only 4 satellites in the fix (poor HDOP) until called with False."""
        self.weak = on

    def pause_epochs(self, on: bool = True) -> None:
        """Stop writing epochs; TXT and RDSS sentences continue."""
        self.epochs_paused = on

    def silence(self, on: bool = True) -> None:
        """Write nothing at all (the card does not answer either) until called with False."""
        self.silent = on

    def inject_message(
        self,
        text: str | None = None,
        data: bytes | None = None,
        sender: str = "0166166",
        encoding: str = "gb2312",
        kind: int = 1,
    ) -> bytes:
        """Make the card receive a message (GB2312 text by default); returns the sentence written.
        Raises RuntimeError without an RDSS card, ValueError for text the encoding cannot carry."""
        if self.card is None:
            raise RuntimeError("this receiver has no RDSS card (rdss=None)")
        content = w.encode_content(text, data, encoding)
        line = self.card.received(sender, content, w.ENCODINGS[encoding], time.time_ns(), kind)
        self.counters["messages_injected"] += 1
        self._write(line, 1)
        return line

    def write_raw(self, data: bytes) -> None:
        """Put bytes on the line as they are."""
        self._write(data, 0)

    def cut(self, down_s: float = 0.5) -> None:
        """Hang up: close the pty (the reader sees EIO; a new pty comes up after `down_s`, under the
        same `link`) or reset every TCP client (connections are refused for `down_s`)."""
        self.counters["cuts"] += 1
        if self._pty is not None:
            self._pty.close()
            if self._reopen is not None:
                self._reopen.cancel()
            self._reopen = self.loop.call_later(down_s, self._reopen_pty)
        elif self._tcp is not None:
            self._tcp.reset_all(down_s)

    def _reopen_pty(self) -> None:
        self._reopen = None
        if self.started and self._pty is not None and not self._pty.is_open:
            self._pty.open()
            self._write_banner()

    # -- epochs -----------------------------------------------------------------------------------
    def state_at(self, time_ns: int) -> w.EpochState:
        """What the receiver reports for the fix time `time_ns` (UTC ns)."""
        t = time_ns / 1e9
        sats = self.sky.at(t, tunnel=self.tunnelled, weak=self.weak)
        if self.tunnelled:
            return w.EpochState(time_ns, quality=0, fix_type=1, satellites=sats)
        lat, lon, course, speed = self.route.at(t)
        used = sum(1 for s in sats if s.used)
        hdop = round(max(0.5, 1.3 * math.sqrt(6.0 / max(used, 1))), 2)
        if self.weak:
            hdop = round(hdop * 2.2, 2)
        return w.EpochState(
            time_ns,
            lat=lat,
            lon=lon,
            alt_m=round(self.route.altitude(t), 3),
            geoid_sep_m=self.route.geoid_sep_m,
            speed_mps=speed,
            course_deg=course,
            quality=1,
            fix_type=3 if used >= 4 else 2,
            hdop=hdop,
            pdop=round(hdop * 1.7, 2),
            vdop=round(hdop * 1.35, 2),
            satellites=sats,
        )

    def epoch_at(self, time_ns: int) -> w.EpochState | None:
        """The epoch written for fix time `time_ns`, if it is still remembered."""
        return self.epochs.get(time_ns)

    def binary_frames(self, st: w.EpochState) -> list[bytes]:
        """The binary navigation frames of one epoch (none unless `binary`)."""
        if self.binary == "casic":
            return w.casic_epoch(st, (st.time_ns - self._boot_ns) // 1_000_000)
        if self.binary == "ubx":
            return w.ubx_epoch(st)
        return []

    def epoch_bytes(self, st: w.EpochState) -> list[bytes]:
        """The sentences of one epoch, in this receiver's style."""
        return self.writer.sentences(st)

    async def _epoch_loop(self) -> None:
        period = self.period_ns
        next_ns = (time.time_ns() // period + 1) * period
        while True:
            delay = (next_ns - time.time_ns()) / 1e9
            if delay > 0:
                await asyncio.sleep(delay)
            now = time.time_ns()
            if now - next_ns > 5 * period:
                # the loop was stalled: skip the missed epochs, as a receiver's clock would
                next_ns = (now // period) * period
            if not self.epochs_paused and not self.silent:
                await self._write_epoch(next_ns)
            next_ns += period

    async def _write_epoch(self, time_ns: int) -> None:
        st = self.state_at(time_ns)
        sentences = self.epoch_bytes(st)
        self.epochs[time_ns] = st
        while len(self.epochs) > self.keep_epochs:
            self.epochs.popitem(last=False)
        self.counters["epochs"] += 1
        self.counters["sentences"] += len(sentences)
        frames = self.binary_frames(st)
        if not self.noise:
            if frames:
                mixed = []
                for i in range(max(len(sentences), len(frames))):
                    mixed += frames[i : i + 1] + sentences[i : i + 1]
                self._write(b"".join(mixed), 0)
            else:
                self._write(b"".join(sentences), 0)
            return
        data = b"".join(frames) + self._noisy(sentences)
        # written in a few pieces with small gaps, so the reader gets the epoch cut at odd places;
        # what else the receiver has to say waits for the end of the epoch, as a receiver's single
        # output queue does (a TXT in the middle of a GSA would cut it short)
        cuts = sorted(self.rng.sample(range(1, len(data)), min(3, len(data) - 1)))
        self._held = []
        try:
            start = 0
            for c in cuts + [len(data)]:
                self._put(data[start:c])
                start = c
                if c != len(data):
                    await asyncio.sleep(0.001)
        finally:
            held, self._held = self._held, None
            for chunk in held:
                self._put(chunk)

    def _noisy(self, sentences: list[bytes]) -> bytes:
        """The epoch's sentences with noise around them; every sentence stays intact."""
        rng, p, count = self.rng, self.noise_rate, self.counters
        out = []
        for s in sentences:
            if rng.random() < p / 3:
                out.append(bytes(rng.choice(_GARBAGE) for _ in range(rng.randint(1, 40))))
                count["noise_garbage"] += 1
            if rng.random() < p / 3:
                out.append(self._binary_frame())
                count["noise_binary"] += 1
            if rng.random() < p / 4:
                star = s.rindex(b"*")
                good = int(s[star + 1 : star + 3], 16)
                bad = (good + rng.randint(1, 255)) & 0xFF
                out.append(s[: star + 1] + b"%02X" % bad + b"\r\n")
                count["noise_bad_checksum"] += 1
            if rng.random() < p / 4:
                # cut before its checksum and followed at once by the next `$`: a receiver reset mid-line
                out.append(s[: rng.randint(3, s.rindex(b"*") - 1)])
                count["noise_truncated"] += 1
            if rng.random() < p / 6:
                s = b"$" + s
                count["noise_double_dollar"] += 1
            if rng.random() < p / 6:
                s = s[:-2] + b"\r\r\n"
                count["noise_crcrlf"] += 1
            out.append(s)
        return b"".join(out)

    def _binary_frame(self) -> bytes:
        rng = self.rng
        kind = rng.randrange(3)
        if kind == 0:  # UBX NAV-PVT sized payload
            return w.ubx_frame(0x01, 0x07, bytes(rng.getrandbits(8) for _ in range(92)))
        if kind == 1:  # RTCM3 1005 (station position): message number in the first 12 bits
            body = bytes(rng.getrandbits(8) for _ in range(17))
            return w.rtcm3_frame(bytes([1005 >> 4, ((1005 & 0xF) << 4) | (body[0] & 0x0F)]) + body[1:])
        return w.casic_frame(0x01, 0x03, bytes(rng.getrandbits(8) for _ in range(16)))

    # -- once a second ------------------------------------------------------------------------------
    async def _second_loop(self) -> None:
        self._write_banner()
        if self.message_every_s > 0 and self.card is not None:
            self._messages_due = self.loop.time() + self.message_every_s
        # half a second after the top of each second, away from the 1 Hz epoch; the schedule runs
        # from target to target, so a timer that fires a little early does not write twice
        second = 1_000_000_000
        target = time.time_ns() // second * second + second // 2
        while True:
            now = time.time_ns()
            if target <= now - second:
                target = now // second * second + second // 2  # stalled: skip what was missed
            if target > now:
                await asyncio.sleep((target - now) / 1e9)
            target += second
            if self.silent:
                continue
            if self.loop.time() - self._last_banner >= self.banner_s:
                self._write_banner()
            self._write_antenna()
            if self.card is not None:
                self.counters["pwi"] += 1
                self._write(self.card.beams(time.time_ns(), blocked=self.tunnelled), 1)
                if self.loop.time() >= self._messages_due:
                    n = self.counters["messages_injected"]
                    self.inject_message(MESSAGES[n % len(MESSAGES)], sender=self.message_sender)
                    self._messages_due += self.message_every_s

    def _write_antenna(self) -> None:
        if self.silent:
            return
        self.counters["txt"] += 1
        self._write(w.txt(f"ANTENNA {self.antenna}", "GP", 1), 1)

    def _write_banner(self) -> None:
        self._last_banner = self.loop.time()
        if self.silent:
            return
        lines = [w.txt("MA=TIANWANG-SIM", "GP", 2), w.txt(f"SW={self.firmware}", "GP", 2)]
        self.counters["txt"] += len(lines)
        self._write(b"".join(lines), len(lines))

    def _on_connect(self) -> None:
        self._write_banner()

    # -- the line ---------------------------------------------------------------------------------------
    def _write(self, data: bytes, sentences: int) -> None:
        if not data or self.silent:
            return
        self.counters["sentences"] += sentences
        if self._held is not None:
            self._held.append(data)
        else:
            self._put(data)

    def _put(self, data: bytes) -> None:
        self.counters["bytes"] += len(data)
        if self._pty is not None:
            self._pty.write(data)
        elif self._tcp is not None:
            self._tcp.write(data)

    def _overrun(self, n: int) -> None:
        # bytes the receiver wrote that no reader took: the pty backlog was full, or the line was down
        self.counters["overrun_bytes"] += n

    def _host_bytes(self, data: bytes) -> None:
        """Sentences from the host (driver): card commands."""
        from tianwang.drivers.sdk import RawSentence

        dec = self._host_buffer
        before = sum(dec.drops.values())
        for msg in dec.feed(data):
            if not isinstance(msg, RawSentence):
                continue
            self.counters["commands"] += 1
            if self.card is None:
                continue
            replies = self.card.handle(msg.address, tuple(msg.fields), time.time_ns())
            for reply in replies:
                kind = reply[3:6]
                if kind == b"FKI":
                    self.counters["fki"] += 1
                    if msg.address in ("CCTXA", "CCTCQ"):
                        accepted = reply.split(b",")[2 if msg.address == "CCTXA" else 3] == b"Y"
                        self.counters["sends_accepted" if accepted else "sends_refused"] += 1
                else:
                    self.counters["ici"] += 1
                # a terminal answers after a short think, not in the same breath
                self.loop.call_later(self.fki_delay_s, self._write, reply, 1)
        self.counters["bad_commands"] += sum(dec.drops.values()) - before


# ---------------------------------------------------------------------------------------------
# Command line


def _centre(value: str) -> tuple[float, float]:
    try:
        lat, lon = (float(x) for x in value.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError("expected LAT,LON in degrees") from None
    if not (-85 <= lat <= 85 and -180 <= lon <= 180):
        raise argparse.ArgumentTypeError("LAT,LON out of range")
    return lat, lon


def _systems(value: str) -> tuple[str, ...]:
    out = tuple(s.strip().upper() for s in value.split(",") if s.strip())
    bad = [s for s in out if s not in IN_VIEW]
    if bad or not out:
        raise argparse.ArgumentTypeError(f"constellations are {','.join(IN_VIEW)}")
    return out


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="tianwang simulate beidou",
        description="A BeiDou receiver with an RDSS short-message card, on a pty or a TCP port.",
    )
    ap.add_argument("--transport", choices=("pty", "tcp"), default="pty", help="line type (default pty)")
    ap.add_argument(
        "--rate", type=float, default=1.0, metavar="HZ", help="epochs per second: 1, 2, 5, 10... (default 1)"
    )
    ap.add_argument(
        "--talker",
        choices=tuple(TALKERS),
        default="GN",
        help="BD: BD 410004 BeiDou-only module; GB: NMEA 4.11 BeiDou-only; GN: multi-constellation (default)",
    )
    ap.add_argument(
        "--systems",
        type=_systems,
        default=None,
        metavar="LIST",
        help="constellations in view, e.g. BDS,GPS (default: by talker)",
    )
    ap.add_argument(
        "--noise", action="store_true", help="bad checksums, cut lines, $$, \\r\\r\\n, garbage, binary frames"
    )
    ap.add_argument(
        "--dual-band",
        action="store_true",
        help="a dual-frequency receiver: two GSA per constellation, GSV for signals 1 and 7/8",
    )
    ap.add_argument(
        "--order",
        choices=tuple(ORDERS),
        default="usual",
        help="sentence order of an epoch: usual (RMC VTG GGA GSA GSV GLL ZDA), position (GGA RMC GSA GSV), "
        "satellites (GSA GSV GGA RMC), between (GST and ZDA between the others)",
    )
    ap.add_argument(
        "--binary",
        choices=("none", "casic", "ubx"),
        default="none",
        help="also send CASIC or UBX navigation frames every epoch, interleaved with NMEA (default none)",
    )
    ap.add_argument("--rdss", choices=("2.1", "bds3", "none"), default="2.1", help="RDSS card protocol (default 2.1)")
    ap.add_argument("--interval", type=int, default=60, metavar="S", help="the card's service interval (default 60)")
    ap.add_argument("--card", default="0245678", metavar="ID", help="the card's 7-digit id")
    ap.add_argument("--level", type=int, choices=sorted(LEVEL_BITS), default=3, help="the card's communication level")
    ap.add_argument("--host", default="127.0.0.1", help="with --transport tcp: address to listen on")
    ap.add_argument("--port", type=int, default=0, help="with --transport tcp: port (default: any free one)")
    ap.add_argument(
        "--link", default=None, metavar="PATH", help="with --transport pty: a symlink kept pointing at the pty"
    )
    ap.add_argument(
        "--centre",
        type=_centre,
        default=DEFAULT_CENTRE,
        metavar="LAT,LON",
        help="where the drive starts (default 27.8297,112.9443: Xiangtan)",
    )
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument(
        "--message-every",
        type=float,
        default=0.0,
        metavar="S",
        help="receive a GB2312 message from the command centre every S seconds (default never)",
    )
    ap.add_argument(
        "--stats-interval", type=float, default=0.0, metavar="S", help="print counters to stderr every S seconds"
    )
    return ap


async def _amain(args) -> dict:
    sim = ReceiverSimulator(
        args.transport,
        rate=args.rate,
        talker=args.talker,
        systems=args.systems,
        noise=args.noise,
        rdss=None if args.rdss == "none" else args.rdss,
        interval_s=args.interval,
        card_id=args.card,
        level=args.level,
        seed=args.seed,
        origin=args.centre,
        link=args.link,
        host=args.host,
        port=args.port,
        message_every_s=args.message_every,
        dual_band=args.dual_band,
        order=args.order,
        binary=None if args.binary == "none" else args.binary,
    )
    return await serve_simulator(
        sim,
        lambda: {
            "kind": "beidou",
            "url": sim.url,
            "transport": args.transport,
            "rate": args.rate,
            "talker": args.talker,
            "systems": list(sim.systems),
            "noise": args.noise,
            "dual_band": args.dual_band,
            "binary": args.binary,
            "order": args.order,
            "rdss": args.rdss,
            "interval_s": args.interval,
            "card_id": args.card if args.rdss != "none" else None,
        },
        args.stats_interval,
    )


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        ReceiverSimulator(
            args.transport,
            rate=args.rate,
            talker=args.talker,
            systems=args.systems,
            rdss=None if args.rdss == "none" else args.rdss,
            interval_s=args.interval,
            card_id=args.card,
            level=args.level,
        )
    except ValueError as exc:
        print(f"tianwang simulate beidou: {exc}", file=sys.stderr)
        return 2
    if args.link and args.transport != "pty":
        print("tianwang simulate beidou: --link needs --transport pty", file=sys.stderr)
        return 2
    return run_simulator("beidou", _amain(args))


if __name__ == "__main__":
    sys.exit(main())
