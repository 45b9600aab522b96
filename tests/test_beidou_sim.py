"""The BeiDou receiver simulator on its own: what it writes on real ptys and TCP sockets, read back
with pyserial-asyncio-fast and the NMEA decoder; its RDSS card; its hang-ups; the CLI process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import serial_asyncio_fast

from gw import until
from tianwang.drivers.beidou import nmea_writer as w
from tianwang.drivers.beidou.simulator import LEVEL_BITS, RdssCard, ReceiverSimulator
from tianwang.gateway.framing import FKI, GGA, GSA, ICI, ICP, PWI, RMC, TCI, TXR, TXT, NmeaDecoder
from tianwang.gateway.lifecycle.config import parse_url

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(60)
KNOT_MPS = 1852.0 / 3600.0


class Line(asyncio.Protocol):
    """The host end of the simulator's line: decodes everything it hears."""

    def __init__(self):
        self.decoder = NmeaDecoder()
        self.messages = []
        self.transport = None
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.messages += self.decoder.feed(data)

    def connection_lost(self, exc):
        if not self.lost.done():
            self.lost.set_result(exc)

    def of(self, cls):
        return [m for m in self.messages if type(m).__name__ == cls.__name__]

    def write(self, data):
        self.transport.write(data)


async def connect(url) -> Line:
    loop = asyncio.get_running_loop()
    scheme, where, _ = parse_url(url, ("serial", "tcp"))
    if scheme == "serial":
        _, line = await serial_asyncio_fast.create_serial_connection(loop, Line, where, baudrate=115200)
    else:
        host, port = where.rsplit(":", 1)
        _, line = await loop.create_connection(Line, host, int(port))
    return line


@contextlib.asynccontextmanager
async def simulator(*args, **kw):
    sim = ReceiverSimulator(*args, **kw)
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


def rmc_time_ns(m) -> int:
    days = time.mktime((m.year, m.month, m.day, 0, 0, 0, 0, 0, 0)) - time.mktime((1970, 1, 1, 0, 0, 0, 0, 0, 0))
    return int(round(days)) * 1_000_000_000 + m.time_of_day_ns


def latlon_tolerance(sim) -> float:
    # the receiver writes minutes with `latlon_decimals` digits: half of the last digit, in degrees
    return 0.5 * 10.0**-sim.latlon_decimals / 60.0 + 1e-12


# -- epochs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "talker, fix_talker, gsa_talkers, system_ids",
    [("BD", "BD", {"BD"}, {-1}), ("GB", "GB", {"GN"}, {4}), ("GN", "GN", {"GN"}, {1, 2, 3, 4})],
)
async def test_epochs_follow_the_route_in_each_talker_style(tmp_path, talker, fix_talker, gsa_talkers, system_ids):
    async with simulator("pty", rate=5, talker=talker, rdss=None, link=tmp_path / "bd0") as sim:
        assert sim.url == f"serial://{tmp_path / 'bd0'}"
        line = await connect(sim.url)
        await until(lambda: len(line.of(RMC)) >= 8, 5, "8 epochs")
        line.transport.close()
    rmcs, ggas = line.of(RMC), line.of(GGA)
    tol = latlon_tolerance(sim)
    times = []
    for m in rmcs:
        assert m.talker == fix_talker and m.status == "A"
        t = rmc_time_ns(m)
        assert t % 200_000_000 == 0  # 5 Hz fix times on the wall clock
        st = sim.epoch_at(t)
        assert st is not None, f"no epoch written for {t}"
        assert abs(m.lat - st.lat) <= tol and abs(m.lon - st.lon) <= tol
        assert m.speed_knots * KNOT_MPS == pytest.approx(st.speed_mps, abs=0.001)
        assert m.course_deg == pytest.approx(st.course_deg, abs=0.006)
        times.append(t)
    assert times == sorted(times) and all(b - a == 200_000_000 for a, b in zip(times, times[1:], strict=False))
    by_tod = {g.time_of_day_ns: g for g in ggas}
    for t in times:
        g, st = by_tod[t % 86_400_000_000_000], sim.epoch_at(t)
        assert g.talker == fix_talker and g.quality == 1
        assert g.sats_used == sum(s.used for s in st.satellites) and g.hdop == pytest.approx(st.hdop)
        assert g.alt_m == pytest.approx(st.alt_m, abs=0.0006)
    gsas = line.of(GSA)
    assert {g.talker for g in gsas} == gsa_talkers and {g.system_id for g in gsas} == system_ids
    # a city drive: 7.5-16 m/s along streets that run north-south or east-west
    assert {round(m.course_deg) % 90 for m in rmcs} == {0}
    assert all(7.0 <= m.speed_knots * KNOT_MPS <= 16.5 for m in rmcs)


def test_route_is_a_closed_loop_at_street_speeds():
    route = ReceiverSimulator("pty").route
    start = route.at(0.0)
    assert route.at(route.period_s)[:2] == pytest.approx(start[:2], abs=1e-9)
    # no jumps: 0.1 s apart is never more than 16 m/s * 0.1 s away
    prev = route.at(0.0)
    for k in range(1, int(route.period_s * 10)):
        cur = route.at(k / 10)
        d = math.hypot((cur[0] - prev[0]) * 111_320, (cur[1] - prev[1]) * route.m_per_deg_lon)
        assert d <= 1.6 + 1e-6
        prev = cur


def test_rates_must_give_whole_hundredths():
    for rate in (1, 2, 5, 10, 20, 0.5):
        ReceiverSimulator("pty", rate=rate)
    for rate in (3, 7, 0):
        with pytest.raises(ValueError):
            ReceiverSimulator("pty", rate=rate)


async def test_noise_mode_keeps_every_epoch_intact_and_counts_what_it_injected(tmp_path):
    async with simulator("pty", rate=10, talker="GN", rdss=None, seed=7) as sim:
        line = await connect(sim.url)
        await until(lambda: len(line.of(RMC)) >= 2, 5, "clean epochs")
        sim.noise = True
        await asyncio.sleep(2.5)
        sim.noise = False
        noisy_epochs = [t for t in sim.epochs if t > rmc_time_ns(line.of(RMC)[1])]
        await asyncio.sleep(0.35)
        line.transport.close()
    assert len(noisy_epochs) >= 20
    c = sim.counters
    assert c["noise_bad_checksum"] >= 5 and c["noise_truncated"] >= 5 and c["noise_binary"] >= 5
    assert c["noise_garbage"] >= 5 and c["noise_double_dollar"] >= 3 and c["noise_crcrlf"] >= 3
    drops = line.decoder.drops
    # every piece of injected noise was dropped as what it is; nothing else was
    assert drops["bad_checksum"] == c["noise_bad_checksum"]
    assert drops["truncated"] == c["noise_truncated"]
    assert drops["binary"] == c["noise_binary"]
    assert drops["bad_field"] == drops["too_long"] == drops["bad_sentence"] == 0
    # and every sentence of every noisy epoch arrived as written
    clean = NmeaDecoder()
    received = [m for m in line.messages if not isinstance(m, (TXT,))]
    for t in noisy_epochs[:-2]:
        expected = clean.feed(b"".join(sim.epoch_bytes(sim.epoch_at(t))))
        start = next(i for i, m in enumerate(received) if isinstance(m, RMC) and rmc_time_ns(m) == t)
        assert received[start : start + len(expected)] == expected


# -- RDSS card ------------------------------------------------------------------------------------


def fki(line: bytes):
    return NmeaDecoder().feed(line)[0]


def test_card_refuses_sends_inside_its_service_interval_with_the_remaining_wait():
    card = RdssCard("2.1", "0245678", interval_s=60)
    t0 = 1_700_000_000 * 10**9
    hexed = "你好".encode("gb2312").hex().upper()
    ok = fki(card.handle("CCTXA", ("0166166", "1", "0", hexed), t0)[0])
    assert (ok.command, ok.executed, ok.interval_ok, ok.wait_s) == ("TXA", True, 1, 60)
    early = fki(card.handle("CCTXA", ("0166166", "1", "0", hexed), t0 + 17_400_000_000)[0])
    # 42.6 s left: a card rounds the wait up, so the host never comes back too soon
    assert (early.executed, early.interval_ok, early.suppression, early.wait_s) == (False, 0, 0, 43)
    assert card.refusals == [("interval_not_reached", 43)]
    later = fki(card.handle("CCTXA", ("0166166", "1", "0", hexed), t0 + 60_000_000_000)[0])
    assert later.executed
    assert [(m.dest, m.content) for m in card.sent] == [("0166166", "你好".encode("gb2312"))] * 2


def test_card_refusal_reasons_in_both_protocols():
    t = 1_700_000_000 * 10**9
    args21 = ("0166166", "1", "0", "C4E3")
    card = RdssCard("2.1")
    card.suppressed = True
    assert fki(card.handle("CCTXA", args21, t)[0]).suppression == 1
    card.suppressed, card.silent = False, True
    assert fki(card.handle("CCTXA", args21, t)[0]).suppression == 2
    card.silent, card.present = False, False
    no_card = fki(card.handle("CCTXA", args21, t)[0])
    assert (no_card.executed, no_card.interval_ok, no_card.suppression) == (False, 1, 0)
    assert fki(card.handle("CCICA", ("0", "00"), t)[0]).command == "ICA"
    assert not card.sent

    args3 = ("0166166", "2", "0", "0", "C4E3", "0")
    card = RdssCard("bds3", interval_s=30)
    for flag, reason in (("present", 5), ("permitted", 6), ("power_locked", 4)):
        setattr(card, flag, False)
        got = fki(card.handle("CCTCQ", args3, t)[0])
        assert (got.form, got.command, got.executed, got.reason) == ("bds3", "TCQ", False, reason)
        setattr(card, flag, True)
    for flag, reason in (("suppressed", 2), ("silent", 3)):
        setattr(card, flag, True)
        assert fki(card.handle("CCTCQ", args3, t)[0]).reason == reason
        setattr(card, flag, False)
    assert fki(card.handle("CCTCQ", args3, t)[0]).executed
    again = fki(card.handle("CCTCQ", args3, t + 10**9)[0])
    assert (again.executed, again.reason, again.wait_s) == (False, 1, 29)
    # a BDS-3 terminal does not know protocol 2.1's send sentence, and a muted card says nothing
    assert card.handle("CCTXA", args21, t) == []
    card.mute = True
    assert card.handle("CCTCQ", args3, t + 100 * 10**9) == []


def test_card_checks_the_message_against_its_level():
    card = RdssCard("2.1", level=1)
    t = 1_700_000_000 * 10**9
    too_long = "AB" * (LEVEL_BITS[1] // 8 + 1)
    assert not fki(card.handle("CCTXA", ("0166166", "1", "1", too_long), t)[0]).executed
    assert not fki(card.handle("CCTXA", ("016616", "1", "1", "AB"), t)[0]).executed  # 6-digit address
    assert not fki(card.handle("CCTXA", ("0166166", "1", "1", "XYZ"), t)[0]).executed
    assert fki(card.handle("CCTXA", ("0166166", "1", "1", "AB" * (LEVEL_BITS[1] // 8)), t)[0]).executed


@pytest.mark.parametrize("protocol", ["2.1", "bds3"])
async def test_card_answers_on_the_line(protocol):
    async with simulator("tcp", rate=1, talker="GB", rdss=protocol, interval_s=45, card_id="0311222") as sim:
        line = await connect(sim.url)
        content = "现场安全".encode("gb2312")
        if protocol == "2.1":
            line.write(w.card_query_21() + w.send_21("0166166", content))
        else:
            line.write(w.card_query_bds3() + w.send_bds3("0166166", content))
        await until(lambda: line.of(FKI) and (line.of(ICI) or line.of(ICP)), 3, "card answers")
        line.write(w.send_21("0166166", content) if protocol == "2.1" else w.send_bds3("0166166", content))
        await until(lambda: len(line.of(FKI)) == 2, 3, "second answer")
        await until(lambda: line.of(PWI), 3, "beam status")
        line.transport.close()
    card = (line.of(ICI) or line.of(ICP))[0]
    assert (card.card_id, card.interval_s, card.level) == ("0311222", 45, 3)
    first, second = line.of(FKI)
    assert first.executed and first.form == protocol
    assert not second.executed and second.wait_s in (44, 45)
    assert [m.content for m in sim.card.sent] == [content]
    assert sim.counters["sends_accepted"] == 1 and sim.counters["sends_refused"] == 1
    pwi = line.of(PWI)[0]
    assert len(pwi.rdss2) == 10 and all(0 <= p <= 4 for _, p in pwi.rdss2)
    assert len(pwi.s2c) == (3 if protocol == "bds3" else 0)


@pytest.mark.parametrize("protocol", ["2.1", "bds3"])
async def test_injected_messages_carry_gb2312_text(protocol):
    async with simulator("pty", rate=1, rdss=protocol, card_id="0245678") as sim:
        line = await connect(sim.url)
        sim.inject_message("请报告当前位置", sender="0166166")
        sim.inject_message(data=bytes.fromhex("0102A0FF"), encoding="code", sender="0166167")
        cls = TXR if protocol == "2.1" else TCI
        await until(lambda: len(line.of(cls)) == 2, 3, "messages")
        line.transport.close()
    text, code = line.of(cls)
    assert bytes.fromhex(text.content.decode()).decode("gb2312") == "请报告当前位置"
    assert text.sender == "0166166" and text.encoding == 0
    assert bytes.fromhex(code.content.decode()) == bytes.fromhex("0102A0FF") and code.encoding == 1
    if protocol == "bds3":
        assert text.recipient == "0245678"
    with pytest.raises(ValueError):
        sim.inject_message("\U0001f600")  # not in GB2312


# -- status, alarms, fix loss, silence -------------------------------------------------------------


async def test_antenna_alarm_tunnel_and_silence():
    async with simulator("tcp", rate=5, talker="GN", rdss="2.1", banner_s=1.0, firmware="TWSIM-BD,V9.8.7") as sim:
        line = await connect(sim.url)
        await until(lambda: any("SW=TWSIM-BD,V9.8.7" in m.text for m in line.of(TXT)), 3, "firmware banner")
        sim.set_antenna("open")
        await until(lambda: any(m.text == "ANTENNA OPEN" for m in line.of(TXT)), 2, "antenna open")
        sim.set_antenna("SHORT")
        await until(lambda: any(m.text == "ANTENNA SHORT" for m in line.of(TXT)), 2, "antenna short")
        sim.tunnel()
        n = len(line.of(RMC))
        await until(lambda: len(line.of(RMC)) >= n + 4, 3, "epochs in the tunnel")
        inside = line.of(RMC)[-1]
        assert inside.status == "V" and math.isnan(inside.lat)
        assert line.of(GGA)[-1].quality == 0 and line.of(GGA)[-1].sats_used == 0
        sim.tunnel(False)
        sim.pause_epochs()
        await asyncio.sleep(0.3)
        n = len(line.of(RMC))
        await until(lambda: len(line.of(PWI)) >= 2, 3, "beams while epochs are paused")
        assert len(line.of(RMC)) == n
        sim.silence()
        await asyncio.sleep(0.1)
        total = len(line.messages)
        await asyncio.sleep(1.3)
        assert len(line.messages) == total
        sim.silence(False)
        sim.pause_epochs(False)
        await until(lambda: len(line.of(RMC)) > n, 2, "epochs again")
        line.transport.close()
    with pytest.raises(ValueError):
        sim.set_antenna("LOOSE")


# -- hang-ups -------------------------------------------------------------------------------------


async def test_pty_hang_up_and_the_link_coming_back(tmp_path):
    link = tmp_path / "ttyBD"
    async with simulator("pty", rate=5, rdss=None, link=link) as sim:
        first_path = os.readlink(link)
        line = await connect(sim.url)
        await until(lambda: line.of(RMC), 3, "epochs")
        sim.cut(down_s=0.3)
        exc = await asyncio.wait_for(line.lost, 2)
        assert exc is not None  # EIO on the slave: pyserial reports the device gone
        await until(lambda: os.readlink(link) != first_path or sim._pty.is_open, 2, "new pty")
        await until(lambda: sim._pty.is_open, 2, "reopened")
        again = await connect(sim.url)
        await until(lambda: again.of(RMC), 3, "epochs after the hang-up")
        again.transport.close()
        assert sim.counters["cuts"] == 1
    assert not link.exists()  # the link goes with the simulator


async def test_tcp_reset_refuses_for_a_while_then_serves_again():
    started = time.monotonic()
    async with simulator("tcp", rate=5, rdss=None) as sim:
        line = await connect(sim.url)
        await until(lambda: line.of(RMC), 3, "epochs")
        sim.cut(down_s=0.6)
        exc = await asyncio.wait_for(line.lost, 2)
        assert isinstance(exc, ConnectionResetError)
        during = await connect(sim.url)
        assert isinstance(await asyncio.wait_for(during.lost, 2), ConnectionResetError)
        await asyncio.sleep(0.7)  # past the 0.6 s, with room for a timer that fires early
        after = await connect(sim.url)
        await until(lambda: after.of(RMC), 3, "epochs after the reset")
        after.transport.close()
        assert sim.counters["connections"] == 2
        # status lines once a second, not in bursts: a 2-line banner at start and per connection,
        # one antenna line a second
        elapsed = time.monotonic() - started
        assert sim.counters["txt"] <= 2 + 2 * sim.counters["connections"] + math.ceil(elapsed) + 1


# -- the command line -----------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["pty", "tcp"])
async def test_simulate_beidou_process_first_line_then_runs_until_sigterm(transport):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tianwang",
            "simulate",
            "beidou",
            "--transport",
            transport,
            "--rate",
            "10",
            "--talker",
            "BD",
            "--noise",
            "--rdss",
            "bds3",
            "--interval",
            "30",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        first = json.loads(await asyncio.to_thread(proc.stdout.readline))
        assert first["kind"] == "beidou" and first["rdss"] == "bds3" and first["rate"] == 10
        scheme = "serial:///dev/pts/" if transport == "pty" else "tcp://127.0.0.1:"
        assert first["url"].startswith(scheme)
        line = await connect(first["url"])
        await until(lambda: len(line.of(RMC)) >= 10, 5, "10 epochs")
        line.write(w.card_query_bds3())
        await until(lambda: line.of(ICP), 3, "card info")
        line.transport.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.to_thread(proc.communicate, timeout=10)
    assert proc.returncode == 0, err
    final = json.loads(out.strip().splitlines()[-1])["final"]
    assert final["epochs"] >= 10 and final["ici"] == 1 and final["noise_binary"] > 0
    assert all(m.talker == "BD" for m in line.of(RMC))


def test_simulate_beidou_usage_errors():
    def run(*a):
        return subprocess.run(
            [sys.executable, "-m", "tianwang", "simulate", "beidou", *a],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=30,
        )

    bad_rate = run("--rate", "3")
    assert bad_rate.returncode == 2 and "hundredths" in bad_rate.stderr
    assert run("--talker", "GP").returncode == 2
    assert run("--transport", "tcp", "--link", "/tmp/x").returncode == 2
