"""The beidou driver in the gateway's Supervisor/Router/Journal against the receiver simulator over
real ptys and TCP: fixes, states, alarms, messages, drops, hang-ups and RDSS commands."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

import tianwang.drivers.beidou as beidou
from gw import journal_envelopes, until
from tianwang.drivers.beidou.simulator import ReceiverSimulator
from tianwang.gateway.datapath.journal import Journal
from tianwang.gateway.datapath.router import Router
from tianwang.gateway.errors import CommandError
from tianwang.gateway.lifecycle.config import load_config
from tianwang.gateway.lifecycle.driver import Health
from tianwang.gateway.lifecycle.registry import Registry
from tianwang.gateway.lifecycle.supervisor import Supervisor

pytestmark = pytest.mark.timeout(60)
DEV = "bd-01"


class Stack:
    """A supervisor running one beidou device, with its journal read back."""

    def __init__(self, sup, journal, sim):
        self.sup = sup
        self.journal = journal
        self.sim = sim

    @property
    def entry(self):
        return self.sup.lookup(DEV)

    @property
    def driver(self):
        return self.sup._running[DEV].driver

    def envelopes(self, channel="#"):
        return [(e["device_time_ns"], e["payload"]) for e in journal_envelopes(self.journal, f"gnss/{DEV}/{channel}")]

    def payloads(self, channel):
        return [p for _, p in self.envelopes(channel)]

    def states(self):
        return [p["state"] for p in self.payloads("state")]

    def health(self):
        return [p["state"] for p in self.payloads("health")]

    async def command(self, action, timeout=5.0, **args):
        return await self.sup.send_command(DEV, action, args, timeout)


@contextlib.asynccontextmanager
async def stack(sim: ReceiverSimulator, **device):
    reg = Registry()
    reg.register(beidou.SPEC)
    await sim.start()  # first: a TCP simulator's port is known once it listens
    try:
        entry = {"id": DEV, "driver": "beidou", "url": sim.url, "backoff": {"initial_s": 0.1, "max_s": 0.4}}
        entry.update(device)
        config = load_config({"gateway": {"metrics": None}, "devices": [entry]}, reg)
        journal = Journal(64 << 20)
        sup = Supervisor(reg, Router(journal))
        await sup.apply(config)
        try:
            yield Stack(sup, journal, sim)
        finally:
            await sup.stop_all()
    finally:
        await sim.stop()


def check_fix(sim, time_ns, fix):
    """A published fix against what the simulator wrote for that epoch."""
    st = sim.epoch_at(time_ns)
    assert st is not None, f"no epoch {time_ns} was written"
    tol = 0.5 * 10.0**-sim.latlon_decimals / 60.0 + 2e-9  # the sentence's digits, the payload's 1e-9 rounding
    assert fix["time_ns"] == time_ns
    assert abs(fix["lat"] - st.lat) <= tol and abs(fix["lon"] - st.lon) <= tol
    # knots with 3 decimals (half a digit: 0.00026 m/s), then the payload's 1e-4 m/s rounding
    assert fix["speed_mps"] == pytest.approx(st.speed_mps, abs=3.1e-4)
    assert fix["course_deg"] == pytest.approx(st.course_deg, abs=0.006)
    assert fix["alt_m"] == pytest.approx(st.alt_m, abs=0.0006)
    assert fix["hdop"] == pytest.approx(st.hdop) and fix["pdop"] == pytest.approx(st.pdop)
    assert fix["quality"] == 1 and fix["mode"] == 3 and fix["source"] == "nmea"
    for system in sim.systems:
        used = [s for s in st.satellites if s.system == system and s.used]
        seen = [s for s in st.satellites if s.system == system]
        assert fix["sats_used"][system] == len(used), system
        assert fix["sats_view"][system] == len(seen), system
    others = set(fix["sats_used"]) - set(sim.systems)
    assert all(fix["sats_used"][s] == 0 for s in others)


# -- fixes ----------------------------------------------------------------------------------------


@pytest.mark.twins
async def test_fixes_on_a_pty_follow_the_route(tmp_path):
    sim = ReceiverSimulator(
        "pty", rate=5, talker="GB", rdss="2.1", card_id="0311456", interval_s=60, banner_s=1.0, link=tmp_path / "ttyBD0"
    )
    async with stack(sim, url=f"serial://{tmp_path / 'ttyBD0'}?baudrate=115200", receiver={"epoch_period_s": 0.2}) as s:
        await until(lambda: len(s.payloads("fix")) >= 10, 10, "10 fixes")
        await until(lambda: "firmware" in s.entry.info and "card_id" in s.entry.info, 5, "info")
        fixes = s.envelopes("fix")
        assert s.entry.state == Health.ONLINE
        info = s.entry.info
    for device_time, fix in fixes:
        assert device_time == fix["time_ns"]
        check_fix(sim, fix["time_ns"], fix)
    times = [f["time_ns"] for _, f in fixes]
    assert all(b - a == 200_000_000 for a, b in zip(times, times[1:], strict=False))  # none lost, none twice
    assert s.states()[0] == "FIX"
    assert s.health()[:2] == ["CONNECTING", "ONLINE"]
    assert info["firmware"] == "TWSIM-BD,V2.3.1" and info["transport"] == "serial"
    assert info["card_id"] == "0311456" and info["card_interval_s"] == "60" and info["rdss"] == "2.1"


@pytest.mark.parametrize("talker", ["BD", "GN"])
async def test_fixes_over_tcp_count_satellites_per_constellation(talker):
    sim = ReceiverSimulator("tcp", rate=2, talker=talker, rdss=None)
    async with stack(sim, rdss=None, receiver={"epoch_period_s": 0.5}) as s:
        await until(lambda: len(s.payloads("fix")) >= 4, 10, "fixes")
        await until(lambda: s.payloads("sky"), 5, "sky")
        fixes = s.payloads("fix")
        sky = s.payloads("sky")[0]["satellites"]
    for fix in fixes:
        check_fix(sim, fix["time_ns"], fix)
    assert fixes[-1]["sats_used"]["BDS"] > 0
    if talker == "GN":
        assert all(fixes[-1]["sats_used"][x] > 0 for x in ("GPS", "GLO", "GAL"))
    assert {sat["system"] for sat in sky} == set(sim.systems)


@pytest.mark.twins
async def test_noise_loses_no_good_epoch_and_drops_are_counted_by_reason():
    sim = ReceiverSimulator("tcp", rate=10, talker="GN", rdss=None, seed=99)
    async with stack(sim, rdss=None, receiver={"epoch_period_s": 0.1}) as s:
        await until(lambda: len(s.payloads("fix")) >= 2, 10, "first fixes")
        sim.noise = True
        first_noisy = max(sim.epochs)
        await asyncio.sleep(2.5)
        sim.noise = False
        last_noisy = max(sim.epochs)
        await until(
            lambda: s.payloads("fix") and s.payloads("fix")[-1]["time_ns"] > last_noisy + 200_000_000,
            3,
            "clean epochs after the noise",
        )
        counters = dict(s.entry.counters)
        fixes = s.payloads("fix")
    published = {f["time_ns"] for f in fixes}
    written = {t for t in sim.epochs if first_noisy < t <= last_noisy}
    assert len(written) >= 20 and written <= published
    for f in fixes:
        if f["time_ns"] in written:
            check_fix(sim, f["time_ns"], f)
    c = sim.counters
    assert c["noise_bad_checksum"] and c["noise_truncated"] and c["noise_binary"] and c["noise_garbage"]
    assert counters["dropped_bad_checksum"] == c["noise_bad_checksum"]
    assert counters["dropped_truncated"] == c["noise_truncated"]
    assert counters["dropped_binary"] == c["noise_binary"]
    assert counters["dropped_noise"] >= c["noise_garbage"]
    assert counters["dropped_bytes"] > 0
    assert s.sup.drops[("beidou", "bad_checksum")] == c["noise_bad_checksum"]


# -- link failures --------------------------------------------------------------------------------


@pytest.mark.twins
async def test_pty_hang_up_goes_offline_then_reconnects(tmp_path):
    link = tmp_path / "ttyUSB-bd"
    sim = ReceiverSimulator("pty", rate=5, rdss=None, link=link)
    async with stack(sim, rdss=None, receiver={"epoch_period_s": 0.2}) as s:
        await until(lambda: s.entry.state == Health.ONLINE, 10, "online")
        sim.cut(down_s=0.5)
        await until(lambda: s.entry.state == Health.OFFLINE, 3, "offline")
        assert "link lost" in s.entry.reason
        before = len(s.payloads("fix"))
        await until(lambda: s.entry.state == Health.ONLINE and len(s.payloads("fix")) >= before + 5, 10, "fixes again")
        health = s.payloads("health")
        reconnects = s.entry.counters["reconnects"]
    assert [h["state"] for h in health][:4] == ["CONNECTING", "ONLINE", "OFFLINE", "CONNECTING"]
    offline = next(h for h in health if h["state"] == "OFFLINE")
    assert "SerialException" in offline["reason"]
    assert reconnects >= 1


@pytest.mark.twins
async def test_tcp_reset_goes_offline_then_reconnects():
    sim = ReceiverSimulator("tcp", rate=5, rdss=None)
    async with stack(sim, rdss=None, receiver={"epoch_period_s": 0.2}) as s:
        await until(lambda: s.entry.state == Health.ONLINE, 10, "online")
        sim.cut(down_s=0.3)
        await until(lambda: s.entry.state == Health.OFFLINE, 3, "offline")
        before = len(s.payloads("fix"))
        await until(lambda: s.entry.state == Health.ONLINE and len(s.payloads("fix")) >= before + 5, 10, "fixes again")
        reasons = [h["reason"] for h in s.payloads("health") if h["state"] == "OFFLINE"]
    assert any("ConnectionResetError" in r for r in reasons)


async def test_eof_from_a_serial_server_goes_offline():
    # a serial-to-Ethernet server that sends one epoch and closes its end cleanly (FIN)
    sim = ReceiverSimulator("tcp", rate=1, rdss=None)
    t = (time.time_ns() // 10**9) * 10**9
    epoch = b"".join(sim.epoch_bytes(sim.state_at(t)))
    sim.epochs[t] = sim.state_at(t)
    connections, closed = [], []

    async def serve(reader, writer):
        connections.append(writer)
        writer.write(epoch)
        await writer.drain()
        await asyncio.sleep(0.3)
        writer.close()
        closed.append(writer)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        # the device points at the server; the simulator only wrote the epoch
        async with stack(sim, rdss=None, url=f"tcp://127.0.0.1:{port}") as s:
            await until(lambda: len(closed) >= 2, 5, "a reconnect after EOF")
            offline = [h["reason"] for h in s.payloads("health") if h["state"] == "OFFLINE"]
            fixes = s.payloads("fix")
        await until(lambda: len(closed) == len(connections), 2, "the server's handlers")
    finally:
        server.close()
        await server.wait_closed()
    assert offline[0] == "DeviceError: link lost: closed by the receiver (EOF)"
    check_fix(sim, t, fixes[0])


async def test_a_port_that_does_not_exist_is_retried(tmp_path):
    sim = ReceiverSimulator("pty", rate=5, rdss=None)
    async with stack(sim, url=f"serial://{tmp_path}/no-such-tty", rdss=None) as s:
        await until(lambda: s.entry.counters.get("reconnects", 0) >= 2, 5, "retries")
        assert s.entry.state in (Health.OFFLINE, Health.CONNECTING)
        reasons = [h["reason"] for h in s.payloads("health") if h["state"] == "OFFLINE"]
    assert reasons and "cannot open" in reasons[0] and "no-such-tty" in reasons[0]


async def test_a_line_silent_too_long_is_reopened():
    sim = ReceiverSimulator("tcp", rate=5, rdss=None)
    async with stack(sim, rdss=None, reconnect_after_silent_s=0.8, receiver={"epoch_period_s": 0.2}) as s:
        await until(lambda: s.entry.state == Health.ONLINE, 10, "online")
        sim.silence()
        await until(lambda: s.entry.state == Health.OFFLINE, 3, "offline")
        assert "no bytes for 0.8 s" in s.entry.reason
        sim.silence(False)
        await until(lambda: s.entry.state == Health.ONLINE, 5, "online again")
    assert sim.counters["connections"] >= 2


# -- fix states and alarms ------------------------------------------------------------------------


@pytest.mark.twins
async def test_stale_then_silent_then_fix_again():
    sim = ReceiverSimulator("tcp", rate=5, rdss="2.1")  # the card's beam status keeps bytes coming
    async with stack(sim, receiver={"epoch_period_s": 0.2, "silent_s": 1.5}) as s:
        await until(lambda: s.states() == ["FIX"] and s.entry.state == Health.ONLINE, 10, "fix")
        sim.pause_epochs()
        await until(lambda: s.states()[-1:] == ["STALE"], 3, "stale")
        assert s.entry.state == Health.DEGRADED and s.entry.reason.startswith("STALE: no epoch for")
        await asyncio.sleep(1.6)
        assert s.states()[-1] == "STALE"  # beam status every second: not silent
        sim.silence()
        await until(lambda: s.states()[-1:] == ["SILENT"], 4, "silent")
        assert s.entry.state == Health.DEGRADED and s.entry.reason.startswith("SILENT: no bytes for")
        sim.silence(False)
        sim.pause_epochs(False)
        await until(lambda: s.states()[-1:] == ["FIX"] and s.entry.state == Health.ONLINE, 3, "fix again")
        states = s.payloads("state")
    # back from silence, the first bytes may come a moment before the first epoch: STALE on the way
    assert [x["state"] for x in states] in (
        ["FIX", "STALE", "SILENT", "FIX"],
        ["FIX", "STALE", "SILENT", "STALE", "FIX"],
    )
    assert [x["previous"] for x in states][:3] == [None, "FIX", "STALE"]


async def test_tunnel_and_weak_sky_degrade_the_fix():
    sim = ReceiverSimulator("tcp", rate=5, talker="GN", rdss=None)
    async with stack(sim, rdss=None, receiver={"epoch_period_s": 0.2, "hdop_limit": 2.5}) as s:
        await until(lambda: s.entry.state == Health.ONLINE, 10, "fix")
        sim.tunnel()
        await until(lambda: s.states()[-1:] == ["NO_FIX"], 3, "no fix")
        assert s.entry.state == Health.DEGRADED and "NO_FIX" in s.entry.reason
        last = s.payloads("fix")[-1]
        assert last["quality"] == 0 and last["lat"] is None
        sim.tunnel(False)
        sim.weak_sky()
        await until(lambda: s.states()[-1:] == ["DEGRADED"], 3, "degraded")
        assert "HDOP" in s.entry.reason
        sim.weak_sky(False)
        await until(lambda: s.states()[-1:] == ["FIX"] and s.entry.state == Health.ONLINE, 3, "fix again")


@pytest.mark.twins
async def test_antenna_alarm_raises_and_clears():
    sim = ReceiverSimulator("tcp", rate=5, rdss=None)
    async with stack(sim, rdss=None, receiver={"epoch_period_s": 0.2}) as s:
        await until(lambda: s.entry.state == Health.ONLINE, 10, "online")
        sim.set_antenna("OPEN")
        await until(lambda: s.payloads("alarm"), 3, "alarm")
        assert s.entry.state == Health.DEGRADED and "antenna open" in s.entry.reason
        sim.set_antenna("SHORT")
        await until(lambda: len(s.payloads("alarm")) >= 3, 3, "short")
        sim.set_antenna("OK")
        await until(lambda: s.entry.state == Health.ONLINE, 3, "cleared")
        alarms = s.payloads("alarm")
    assert [(a["kind"], a["active"]) for a in alarms] == [
        ("antenna_open", True),
        ("antenna_open", False),
        ("antenna_short", True),
        ("antenna_short", False),
    ]
    assert alarms[0]["raw"] == "ANTENNA OPEN"


# -- RDSS -----------------------------------------------------------------------------------------


@pytest.mark.twins
@pytest.mark.parametrize("protocol", ["2.1", "bds3"])
async def test_received_message_is_published_with_its_gb2312_text(protocol):
    sim = ReceiverSimulator("tcp", rate=1, rdss=protocol, card_id="0245678")
    async with stack(sim, rdss={"protocol": protocol}) as s:
        await until(lambda: s.entry.state == Health.ONLINE, 10, "online")
        sim.inject_message("路口封闭，绕行东侧", sender="0166166")
        await until(lambda: s.payloads("message"), 3, "message")
        msg = s.payloads("message")[0]
    assert msg["text"] == "路口封闭，绕行东侧" and msg["sender"] == "0166166"
    assert msg["encoding"] == "gb2312" and msg["raw"] == "路口封闭，绕行东侧".encode("gb2312")


async def test_send_message_ok_then_refused_early_with_the_remaining_wait():
    sim = ReceiverSimulator("tcp", rate=1, rdss="2.1", interval_s=60)
    async with stack(sim) as s:
        await until(lambda: s.entry.state == Health.ONLINE, 10, "online")
        ok = await s.command("send_message", dest="0166166", text="已到达现场")
        with pytest.raises(CommandError) as refused:
            await s.command("send_message", dest="0166166", text="再次报告")
        counters = dict(s.entry.counters)
    assert ok["status"] == "sent" and ok["code"] == "ok" and ok["wait_s"] == 60
    assert ok["dest"] == "0166166" and ok["encoding"] == "gb2312" and ok["bytes"] == 10
    assert [(m.dest, m.encoding, m.content) for m in sim.card.sent] == [("0166166", 0, "已到达现场".encode("gb2312"))]
    err = refused.value
    assert err.code == "REFUSED" and "service interval" in err.message
    assert err.result["code"] == "interval_not_reached" and err.result["status"] == "refused"
    assert 58 <= err.result["wait_s"] <= 60  # what the card said is left of its 60 s
    assert sim.card.refusals == [("interval_not_reached", err.result["wait_s"])]
    assert len(sim.card.sent) == 1  # not retried
    assert counters["rdss_sent"] == 1 and counters["rdss_refused"] == 1


@pytest.mark.parametrize(
    "flag, code",
    [
        ("suppressed", "suppressed"),
        ("silent", "silent"),
        ("present", "no_card"),
        ("permitted", "no_permission"),
        ("power_locked", "power_unlocked"),
    ],
)
async def test_bds3_refusals_say_why(flag, code):
    sim = ReceiverSimulator("tcp", rate=1, rdss="bds3", interval_s=30)
    async with stack(sim, rdss={"protocol": "bds3"}) as s:
        await until(lambda: s.entry.state == Health.ONLINE, 10, "online")
        setattr(sim.card, flag, not getattr(sim.card, flag))
        with pytest.raises(CommandError) as refused:
            await s.command("send_message", dest="166166", hex="A1B2C3", encoding="code")
    assert refused.value.code == "REFUSED" and refused.value.result["code"] == code
    assert not sim.card.sent


async def test_send_message_timeout_busy_and_invalid_arguments():
    sim = ReceiverSimulator("tcp", rate=1, rdss="2.1", interval_s=60)
    async with stack(sim, rdss={"command_timeout_s": 0.5}) as s:
        await until(lambda: s.entry.state == Health.ONLINE, 10, "online")
        sim.card.mute = True
        first = asyncio.ensure_future(s.command("send_message", dest="0166166", text="无应答"))
        await asyncio.sleep(0.1)
        with pytest.raises(CommandError) as busy:
            await s.command("send_message", dest="0166166", text="第二条")
        with pytest.raises(CommandError) as timeout:
            await first
        bad = {}
        for args in (
            {"dest": "166166", "text": "x"},
            {"dest": "0166166"},
            {"dest": "0166166", "text": "a", "hex": "61"},
            {"dest": "0166166", "hex": "ABC"},
            {"dest": "0166166", "text": "a", "encoding": "utf8"},
            {"dest": "0166166", "text": "a", "encoding": "code"},
            {"dest": "0166166", "text": "\U0001f600"},
            {"dest": "0166166", "hex": "AB" * 107},
            {"dest": "0166166", "text": "a", "urgent": True},
        ):
            with pytest.raises(CommandError) as exc:
                await s.command("send_message", **args)
            bad[exc.value.code] = bad.get(exc.value.code, 0) + 1
        sim.card.mute = False
        ok = await s.command("send_message", dest="0166166", text="恢复")
        with pytest.raises(CommandError) as unknown:
            await s.command("reboot")
    assert busy.value.code == "BUSY"
    assert timeout.value.code == "TIMEOUT" and "0.5 s" in timeout.value.message
    # the likeliest cause is named: a terminal of the other RDSS protocol ignores these commands
    assert "speaks RDSS protocol '2.1' (rdss.protocol)" in timeout.value.message and "'bds3'" in timeout.value.message
    assert bad == {"INVALID": 9}
    assert ok["status"] == "sent"
    assert unknown.value.code == "UNSUPPORTED"


@pytest.mark.parametrize("protocol", ["2.1", "bds3"])
async def test_card_info(protocol):
    sim = ReceiverSimulator("tcp", rate=1, rdss=protocol, card_id="0399001", interval_s=45, level=2)
    async with stack(sim, rdss={"protocol": protocol, "query_card_on_connect": False}) as s:
        await until(lambda: s.entry.state == Health.ONLINE, 10, "online")
        assert "card_id" not in s.entry.info
        # the first $BDPWI may go out before the driver connects: wait for one it has read
        await until(lambda: s.driver.receiver.beams is not None, 3, "beams")
        info = await s.command("card_info")
        assert s.entry.info["card_id"] == "0399001"
        # a level 2 card carries 408 bits: a longer message is refused before it goes out
        with pytest.raises(CommandError) as too_long:
            await s.command("send_message", dest="0166166", hex="AB" * 52)
        sim.card.present = False
        with pytest.raises(CommandError) as no_card:
            await s.command("card_info")
    assert info == {
        "card_id": "0399001",
        "serial": "02097151",
        "broadcast_id": "0000011",
        "user_class": 6,
        "interval_s": 45,
        "level": 2,
        "max_message_bits": 408,
        "encrypted": False,
        "subordinates": 0,
        "protocol": protocol,
        "beams_locked": True,
    }
    assert too_long.value.code == "INVALID" and "408" in too_long.value.message
    assert no_card.value.code == "REFUSED"
    if protocol == "bds3":
        assert no_card.value.result["code"] == "no_card"


async def test_commands_without_rdss_or_while_offline(tmp_path):
    sim = ReceiverSimulator("tcp", rate=1, rdss=None)
    async with stack(sim, rdss=None) as s:
        await until(lambda: s.entry.state == Health.ONLINE, 10, "online")
        with pytest.raises(CommandError) as no_rdss:
            await s.command("send_message", dest="0166166", text="x")
        sim.cut(down_s=5)
        await until(lambda: s.entry.state == Health.OFFLINE, 3, "offline")
        with pytest.raises(CommandError) as offline:
            await s.command("card_info")
    assert no_rdss.value.code == "UNSUPPORTED"
    assert offline.value.code == "OFFLINE"


async def test_a_serial_port_in_use_elsewhere_is_a_clear_error_not_a_shared_reader():
    import serial

    sim = ReceiverSimulator("pty", rate=5, rdss=None)
    await sim.start()
    path = sim.url.split("://", 1)[1].split("?", 1)[0]
    other = serial.Serial(path, exclusive=True)  # another process's reader holds the port
    try:
        reg = Registry()
        reg.register(beidou.SPEC)
        config = load_config(
            {
                "gateway": {"metrics": None},
                "devices": [
                    {"id": DEV, "driver": "beidou", "url": sim.url, "backoff": {"initial_s": 0.1, "max_s": 0.2}}
                ],
            },
            reg,
        )
        sup = Supervisor(reg, Router(Journal(1 << 20)))
        await sup.apply(config)
        try:
            await until(lambda: "exclusively lock" in sup.lookup(DEV).reason, 5, "refused as in use")
            assert sup.lookup(DEV).state == Health.OFFLINE
            assert f"cannot open {path}" in sup.lookup(DEV).reason
            other.close()  # the port is free again: the driver gets it on its next try
            await until(lambda: sup.lookup(DEV).state == Health.ONLINE, 10, "online once free")
        finally:
            await sup.stop_all()
    finally:
        if other.is_open:
            other.close()
        await sim.stop()


@pytest.mark.parametrize("binary", ["casic", "ubx"])
async def test_binary_receiver_live_matches_decode(binary):
    # issue 11: a dual-band receiver sending CASIC or UBX beside NMEA, live through the driver; the
    # same epochs run through `tianwang decode`'s Decoder give the same fixes, one per epoch, from
    # the binary source, and the epochs are closed on their last frame or sentence
    from tianwang.drivers.beidou.decode import Decoder

    sim = ReceiverSimulator("tcp", rate=5, talker="GN", rdss=None, binary=binary, dual_band=True)
    async with stack(sim, rdss=None, receiver={"epoch_period_s": 0.2}) as s:
        await until(lambda: len(s.payloads("fix")) >= 12, 10, "fixes")
        fixes = s.payloads("fix")
        counters = dict(s.entry.counters)
    times = [f["time_ns"] for f in fixes]
    assert times == sorted(set(times)) and all(b - a == 200_000_000 for a, b in zip(times, times[1:], strict=False))
    assert [f["source"] for f in fixes][2:] == [binary] * (len(fixes) - 2)
    assert counters.get("epochs_closed_end", 0) >= 8 and counters.get("epochs_superseded", 0) >= 8
    data = b""
    for st in sim.epochs.values():
        frames, sentences = sim.binary_frames(st), sim.epoch_bytes(st)
        for i in range(max(len(frames), len(sentences))):
            data += b"".join(frames[i : i + 1] + sentences[i : i + 1])
    dec = Decoder("bd-01")
    offline = {p.payload["time_ns"]: p.payload for p in dec.feed(data) + dec.finish() if p.channel == "fix"}
    live = [f for f in fixes if f["source"] == binary]
    assert len(live) >= 10
    for f in live:
        assert offline[f["time_ns"]] == f
