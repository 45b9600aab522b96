"""The signal driver in the gateway's Supervisor/Router/Journal against the controller simulator over
real ptys and TCP: polling, multi-drop lines, reports, health, commands and bad input."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

import tianwang.drivers.signal as signal
from gw import journal_envelopes, until
from tianwang.drivers.sdk import PtyLine
from tianwang.drivers.signal import protocol as p
from tianwang.drivers.signal.simulator import SignalSimulator
from tianwang.gateway.datapath.journal import Journal
from tianwang.gateway.datapath.router import Router
from tianwang.gateway.errors import CommandError
from tianwang.gateway.lifecycle.config import load_config
from tianwang.gateway.lifecycle.driver import Health
from tianwang.gateway.lifecycle.registry import Registry
from tianwang.gateway.lifecycle.supervisor import Supervisor

pytestmark = pytest.mark.timeout(90)
FAST = {"backoff": {"initial_s": 0.1, "max_s": 0.3}, "poll_hz": 4, "reply_timeout_s": 0.5, "heartbeat_s": 2}


class Stack:
    def __init__(self, sup, journal, sim):
        self.sup, self.journal, self.sim = sup, journal, sim

    def entry(self, dev):
        return self.sup.lookup(dev)

    def payloads(self, dev, channel):
        return [e["payload"] for e in journal_envelopes(self.journal, f"signal/{dev}/{channel}")]

    def health(self, dev):
        return [x["state"] for x in self.payloads(dev, "health")]

    async def command(self, dev, action, timeout=8.0, **args):
        return await self.sup.send_command(dev, action, args, timeout)

    async def online(self, *devs, timeout=15):
        for dev in devs:
            await until(lambda dev=dev: self.entry(dev).state == Health.ONLINE, timeout, f"{dev} ONLINE")


@contextlib.asynccontextmanager
async def stack(sim: SignalSimulator, devices, checked=True):
    """`checked=False`: entries validated one by one but not together (what `check` refuses), to
    test the link's own refusal."""
    reg = Registry()
    reg.register(signal.SPEC)
    await sim.start()
    try:
        entries = [{"driver": "signal", "url": sim.url, **FAST, **d} for d in devices]
        entries = [{k: (v(sim) if callable(v) else v) for k, v in e.items()} for e in entries]  # known once started
        if checked:
            config = load_config({"gateway": {"metrics": None}, "devices": entries}, reg)
        else:
            config = load_config({"gateway": {"metrics": None}}, reg).model_copy(
                update={"devices": tuple(signal.SPEC.config_model.model_validate(e) for e in entries)}
            )
        journal = Journal(64 << 20)
        sup = Supervisor(reg, Router(journal))
        await sup.apply(config)
        try:
            yield Stack(sup, journal, sim)
        finally:
            await sup.stop_all()
    finally:
        await sim.stop()


class FakeLine:
    """A hand-driven controller on a pty (the simulators' PtyLine): `polled(data)` gets what the
    gateway writes, `write` answers; it stands where `stack` expects a simulator."""

    def __init__(self, polled):
        self.pty = PtyLine(polled)
        self.pty.open()
        self.url = self.pty.url
        self.write = self.pty.write

    async def start(self):
        pass

    async def stop(self):
        self.pty.close()


def colours(payload):
    return set(payload["groups"].values())


# -- polling, info, learning the id ---------------------------------------------------------------


async def test_tcp_controller_without_an_id_is_learned_polled_and_described():
    sim = SignalSimulator("tcp", controllers=1, base_id=4242, traffic_s=0.5)
    async with stack(sim, [{"id": "tsc-1", "clock_sync_s": 1, "heartbeat_s": 1}]) as s:
        await s.online("tsc-1")
        await until(lambda: len(s.payloads("tsc-1", "lamps")) >= 4, 10, "4 lamps")
        lamps = s.payloads("tsc-1", "lamps")[-1]
        assert set(lamps["groups"]) == {"1", "2", "3", "4", "5", "6"}
        assert lamps["mode"] == "local_fixed" and lamps["plan"] in (1, 2, 3) and lamps["stage"] in (1, 2, 3, 4)
        c = sim.controller(4242)
        info = s.entry("tsc-1").info
        await until(lambda: "serial" in s.entry("tsc-1").info, 5, "device info")
        info = s.entry("tsc-1").info
        assert info["controller_id"] == "4242" and info["manufacturer"] == c.manufacturer
        assert info["version"] == c.version and info["serial"] == c.serial
        # clock sync on connect: the simulator's clock was set to UTC (within a few seconds)
        await until(lambda: s.entry("tsc-1").counters.get("clock_syncs", 0) >= 1, 5, "clock sync")
        assert abs(c.clock_offset_s) < 3
        # and again at the interval; heartbeat queries too
        await until(lambda: s.entry("tsc-1").counters.get("clock_syncs", 0) >= 2, 10, "second clock sync")
        await until(lambda: s.entry("tsc-1").counters.get("heartbeats", 0) >= 1, 10, "heartbeat")
        assert c.counters["heartbeats"] >= 1
        # status at the start, then only on change
        status = s.payloads("tsc-1", "status")
        assert status and status[0]["mode"] == "local_fixed"
        assert len(status) < len(s.payloads("tsc-1", "lamps"))
        # detector reports become traffic
        await until(lambda: s.payloads("tsc-1", "traffic"), 10, "traffic")
        t = s.payloads("tsc-1", "traffic")[0]
        assert t["source"] == "detector" and t["item"] == "5.3.1" and t["detector"] in (1, 2, 3, 4)


async def test_lamps_follow_the_stage_cycle():
    sim = SignalSimulator("tcp", controllers=1, traffic_s=0)
    async with stack(sim, [{"id": "tsc-1", "poll_hz": 5}]) as s:
        await s.online("tsc-1")
        await until(lambda: len({x["stage"] for x in s.payloads("tsc-1", "lamps")}) >= 2, 40, "two stages seen")
        seen = s.payloads("tsc-1", "lamps")
        for x in seen:
            greens = {g for g, col in x["groups"].items() if col in ("green", "green_flash")}
            # only the running stage's groups are ever green
            from tianwang.drivers.signal.controller import STAGE_GROUPS

            assert greens <= {str(g) for g in STAGE_GROUPS[x["stage"]]}, x
        stages = [x["stage"] for x in s.payloads("tsc-1", "status")]
        assert len(stages) >= 2 and stages[0] != stages[1]


async def test_multi_drop_pty_line_with_a_dead_controller():
    sim = SignalSimulator("pty", controllers=3, base_id=3001, traffic_s=0)
    sim.controller(3002).silent = True
    devices = [{"id": f"tsc-{n}", "controller_id": n, "offline_after_s": 3} for n in (3001, 3002, 3003)]
    async with stack(sim, devices) as s:
        await s.online("tsc-3001", "tsc-3003")
        start = {d: len(s.payloads(d, "lamps")) for d in ("tsc-3001", "tsc-3003")}
        t0 = time.monotonic()
        await until(lambda: s.entry("tsc-3002").state == Health.OFFLINE, 15, "dead controller OFFLINE")
        await asyncio.sleep(3)
        elapsed = time.monotonic() - t0
        for d in ("tsc-3001", "tsc-3003"):
            got = len(s.payloads(d, "lamps")) - start[d]
            # 4 Hz configured; a dead neighbour must not starve them (at least 1 Hz gets through)
            assert got >= elapsed * 1.0, (d, got, elapsed)
            assert s.entry(d).state == Health.ONLINE
        assert not s.payloads("tsc-3002", "lamps")
        offline = [x for x in s.payloads("tsc-3002", "health") if x["state"] == "OFFLINE"]
        assert "nothing from controller 3002" in offline[0]["reason"]
        # recovery: the controller speaks again, the device comes back
        sim.controller(3002).silent = False
        await s.online("tsc-3002", timeout=20)


async def test_a_shared_line_needs_every_controller_id():
    sim = SignalSimulator("pty", controllers=2, base_id=10, traffic_s=0)
    # `check` refuses this config (tests/test_site_check.py); the link refuses it too
    async with stack(sim, [{"id": "a", "controller_id": 10}, {"id": "b"}], checked=False) as s:
        await s.online("a")
        await until(lambda: s.entry("b").state == Health.OFFLINE, 10, "b refused")
        assert "each needs its controller_id" in s.entry("b").reason


async def test_devices_on_one_line_must_agree_on_profile_and_serial_options():
    sim = SignalSimulator("pty", controllers=3, base_id=10, traffic_s=0)
    async with stack(
        sim,
        [
            {"id": "a", "controller_id": 10},
            {"id": "b", "controller_id": 11, "profile": "ccitt"},
            {"id": "c", "controller_id": 12, "url": lambda sim: sim.url + "?baudrate=19200"},
        ],
        checked=False,
    ) as s:
        await s.online("a")
        await until(
            lambda: s.entry("b").state == Health.OFFLINE and s.entry("c").state == Health.OFFLINE, 10, "b and c refused"
        )
        assert "profile 'ccitt' differs" in s.entry("b").reason
        assert "serial options differ" in s.entry("c").reason


# -- health ---------------------------------------------------------------------------------------


async def test_degraded_when_late_then_offline_when_silent_then_recovers_on_reconnect():
    sim = SignalSimulator("tcp", controllers=1, base_id=77, traffic_s=0)
    c = sim.controller(77)
    async with stack(sim, [{"id": "tsc", "late_s": 0.1, "offline_after_s": 3}]) as s:
        await s.online("tsc")
        c.delay_s = 0.25
        await until(lambda: s.entry("tsc").state == Health.DEGRADED, 10, "DEGRADED")
        assert "later than 0.1 s" in s.entry("tsc").reason
        c.delay_s = 0
        c.silent = True
        await until(lambda: s.entry("tsc").state == Health.OFFLINE, 15, "OFFLINE")
        c.silent = False
        await s.online("tsc")
        h = s.health("tsc")
        assert h.index("DEGRADED") < h.index("OFFLINE") < len(h) - 1 and h[-1] == "ONLINE", h


async def test_tcp_reset_reconnects():
    sim = SignalSimulator("tcp", controllers=1, traffic_s=0)
    async with stack(sim, [{"id": "tsc"}]) as s:
        await s.online("tsc")
        sim.hang_up()
        await until(lambda: "OFFLINE" in s.health("tsc"), 10, "OFFLINE after reset")
        await s.online("tsc")
        assert "lost" in [x for x in s.payloads("tsc", "health") if x["state"] == "OFFLINE"][0]["reason"]


async def test_controller_dials_in_when_the_gateway_listens():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sim = SignalSimulator("tcp", controllers=1, base_id=55, connect=("127.0.0.1", port), traffic_s=0)
    async with stack(sim, [{"id": "tsc", "url": f"tcp://127.0.0.1:{port}", "tcp_role": "listen"}]) as s:
        await s.online("tsc")
        await until(lambda: s.payloads("tsc", "lamps"), 5, "lamps")
        assert s.entry("tsc").info["controller_id"] == "55"


# -- faults ---------------------------------------------------------------------------------------


async def test_lamp_failure_alarm_and_green_conflict_fault_with_fallback():
    sim = SignalSimulator("pty", controllers=1, base_id=9, traffic_s=0)
    async with stack(sim, [{"id": "tsc", "controller_id": 9}]) as s:
        await s.online("tsc")
        c = sim.controller(9)
        c.fail_lamp(3, time.time())
        await until(lambda: s.payloads("tsc", "alarm"), 10, "alarm")
        a = s.payloads("tsc", "alarm")[0]
        assert a["item"] == "15.1.1" and a["type"] == 1 and a["value"] == 3 and a["time_ns"]
        await until(lambda: s.payloads("tsc", "lamps")[-1]["groups"]["3"] == "off", 5, "dark group")
        c.green_conflict(time.time())
        await until(lambda: s.payloads("tsc", "fault"), 10, "fault")
        f = s.payloads("tsc", "fault")[0]
        assert f["action_name"] == "yellow_flash" and f["type"] == 2
        await until(lambda: s.payloads("tsc", "status")[-1]["mode"] == "yellow_flash", 5, "fallback to yellow flash")


# -- bad input ------------------------------------------------------------------------------------


async def test_bad_frames_are_counted_and_the_good_reply_after_them_survives():
    """A fake controller on a pty answers each poll with garbage first: a CRC failure, an unknown
    frame type, a reply for another sequence number, then the real reply."""
    prof = p.PROFILES["majority"]
    framer = prof.framer()
    from tianwang.drivers.signal.controller import Controller

    ctl = Controller(5, prof)

    def polled(data):
        for content in framer.feed(data):
            msg = p.parse(content)
            answers = ctl.handle(msg, time.time())
            if not answers:
                continue
            good = p.encode(answers[0], prof)
            bad_crc = bytearray(good)
            bad_crc[-3] ^= 0x55
            odd = p.encode(p.Message(0x99, 5, msg.seq, ()), prof)
            stray = p.encode(p.Message(p.FrameType.QUERY_REPLY, 5, (msg.seq + 100) % 256, ()), prof)
            line.write(bytes(bad_crc) + b"\x00\x01noise" + odd + stray + good)

    line = FakeLine(polled)
    async with stack(line, [{"id": "tsc", "controller_id": 5, "heartbeat_s": 0}]) as s:
        await s.online("tsc")
        await until(lambda: len(s.payloads("tsc", "lamps")) >= 5, 10, "lamps")
        counters = s.entry("tsc").counters
        n = counters["polls_answered"]
        assert counters.get("dropped_bad_checksum", 0) >= n - 1
        assert counters.get("dropped_unknown_type", 0) >= n - 1
        assert counters.get("dropped_unmatched_reply", 0) >= n - 1
        assert counters.get("polls_unanswered", 0) == 0
        assert s.entry("tsc").state == Health.ONLINE


# -- commands -------------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", ["majority", "control-17n", "ccitt", "unescaped", "length-n-4"])
async def test_commands_are_confirmed_by_read_back(profile):
    sim = SignalSimulator("tcp", controllers=1, base_id=300, traffic_s=0, profile=profile)
    async with stack(sim, [{"id": "tsc", "profile": profile}]) as s:
        await s.online("tsc")
        c = sim.controller(300)
        r = await s.command("tsc", "yellow_flash")
        assert r["confirmed"] and r["mode"] == "yellow_flash" and c.mode == 0x31
        assert colours(r) <= {"yellow_flash", "off"}
        r = await s.command("tsc", "all_red")
        assert r["mode"] == "all_red" and colours(r) == {"red"} and c.mode == 0x32
        r = await s.command("tsc", "lamps_off")
        assert colours(r) == {"off"} and c.mode == 0x33
        r = await s.command("tsc", "lamps_on")
        assert r["mode"] == "local_fixed" and c.mode == 0x21
        r = await s.command("tsc", "specify_stage", stage=3)
        assert r["stage"] == 3 and c.stage == 3 and c.mode == 0x15
        r = await s.command("tsc", "specify_plan", plan=2)
        assert r["plan"] == 2 and c.plan == 2
        r = await s.command("tsc", "specify_mode", mode="all_red")
        assert r["mode_code"] == 0x32 and c.mode == 0x32
        r = await s.command("tsc", "cancel")
        assert r["mode"] == "local_fixed" and c.mode == 0x21
        r = await s.command("tsc", "read", **{"class": 1, "object": 1})
        assert r["values"][0]["text"] == c.manufacturer
        # the new state is published by the driver too
        await until(lambda: s.payloads("tsc", "status")[-1]["mode"] == "local_fixed", 5, "status after cancel")
        assert "all_red" in [x["mode"] for x in s.payloads("tsc", "status")]


async def test_restart_is_confirmed_once_the_controller_answers_again():
    sim = SignalSimulator("tcp", controllers=1, base_id=301, traffic_s=0)
    async with stack(sim, [{"id": "tsc", "offline_after_s": 10}]) as s:
        await s.online("tsc")
        c = sim.controller(301)
        c.mode = 0x31
        r = await s.command("tsc", "restart", timeout=10)
        assert r["confirmed"] and r["mode"] == "local_fixed"
        assert c.counters["commands"] == 1


async def test_download_plan_through_the_transaction_with_verify():
    sim = SignalSimulator("tcp", controllers=1, base_id=302, traffic_s=0)
    async with stack(sim, [{"id": "tsc"}]) as s:
        await s.online("tsc")
        c = sim.controller(302)
        r = await s.command("tsc", "download_plan", plan=5, greens=[10, 6, 10, 6], cycle=52)
        assert r["confirmed"] and c.plans[5].greens == [10, 6, 10, 6] and c.plans[5].cycle_s == 52
        assert c.tx_state == 6
        # an inconsistent plan fails the controller's verify; nothing is stored; the transaction is abandoned
        with pytest.raises(CommandError) as e:
            await s.command("tsc", "download_plan", plan=6, greens=[10, 6], cycle=99)
        assert e.value.code == "REFUSED" and "verify" in e.value.message
        assert 6 not in c.plans and c.tx_state == 1
        with pytest.raises(CommandError) as e:
            await s.command("tsc", "download_plan", plan=6, greens=[10, 6], chain=[1], cycle=26)
        assert e.value.code == "INVALID"


async def test_refusals_map_to_clear_codes_and_timeouts_are_not_resent():
    sim = SignalSimulator("tcp", controllers=1, base_id=303, traffic_s=0)
    async with stack(sim, [{"id": "tsc", "offline_after_s": 30}]) as s:
        await s.online("tsc")
        c = sim.controller(303)
        with pytest.raises(CommandError) as e:
            await s.command("tsc", "specify_stage", stage=9)
        assert e.value.code == "REFUSED" and "out_of_range (0x12)" in e.value.message
        assert e.value.result["errors"][0]["error"] == "out_of_range"
        c.control_failed = True
        with pytest.raises(CommandError) as e:
            await s.command("tsc", "yellow_flash")
        assert e.value.code == "REFUSED" and "control_failed (0x50)" in e.value.message
        assert c.mode == 0x21
        c.control_failed = False
        with pytest.raises(CommandError) as e:
            await s.command("tsc", "read", **{"class": 99, "object": 1})
        assert e.value.code == "REFUSED" and "does_not_exist" in e.value.message
        with pytest.raises(CommandError) as e:
            await s.command("tsc", "specify_stage", stage="x")
        assert e.value.code == "INVALID" and e.value.message.startswith("stage")
        # a silent controller: the set times out and is sent exactly once
        sets_before = c.sets_seen
        c.silent = True
        with pytest.raises(CommandError) as e:
            await s.command("tsc", "all_red", timeout=3)
        assert e.value.code == "TIMEOUT" and "not sent again" in e.value.message
        await asyncio.sleep(1)
        assert c.sets_seen == sets_before + 1  # the set reached it once and was never resent


async def test_controller_heartbeat_is_answered_and_strangers_are_counted():
    """A fake controller on a pty that, with each answer, asks its centre for a heartbeat and lets a
    controller nobody configured send a report."""
    prof = p.PROFILES["majority"]
    framer = prof.framer()
    from tianwang.drivers.signal.controller import Controller

    ctl = Controller(6, prof)
    heartbeat_replies = []

    def polled(data):
        for content in framer.feed(data):
            msg = p.parse(content)
            if msg.frame_type == p.FrameType.HEARTBEAT_REPLY:
                heartbeat_replies.append(msg)
                continue
            answers = ctl.handle(msg, time.time())
            stranger = p.Message(p.FrameType.REPORT, 99, 1, (p.DataValue(1, 15, 1, 1, 1, b"\x01"),))
            ask = p.heartbeat(6, 200 + len(heartbeat_replies) % 50)
            line.write(b"".join(p.encode(m, prof) for m in answers + [stranger, ask]))

    line = FakeLine(polled)
    async with stack(line, [{"id": "tsc", "controller_id": 6, "heartbeat_s": 0}]) as s:
        await s.online("tsc")
        await until(lambda: len(heartbeat_replies) >= 3, 10, "heartbeat replies")
        assert all(m.controller == 6 and m.seq >= 200 for m in heartbeat_replies)
        assert s.entry("tsc").counters.get("dropped_unknown_controller", 0) >= 3
        assert not s.payloads("tsc", "alarm")  # the stranger's report is not this controller's


async def test_a_download_plan_that_times_out_or_is_cancelled_leaves_no_transaction_open():
    """Issue 20 item 8: every way out of download_plan that is not the done abandons the controller's
    transaction (back to normal), even with the command's time spent or its caller gone."""
    sim = SignalSimulator("tcp", controllers=1, base_id=304, traffic_s=0)
    async with stack(sim, [{"id": "tsc", "offline_after_s": 30, "reply_timeout_s": 2, "poll_hz": 1}]) as s:
        await s.online("tsc")
        c = sim.controller(304)
        # a controller that answers late: the command runs out of time inside the transaction
        c.delay_s = 0.25
        with pytest.raises(CommandError) as e:
            await s.command("tsc", "download_plan", timeout=0.9, plan=5, greens=[10, 6, 10, 6], cycle=52)
        assert e.value.code == "TIMEOUT"
        await until(lambda: c.tx_state == 1, 10, "the transaction abandoned after a timeout")
        assert 5 not in c.plans
        await until(lambda: s.entry("tsc").counters.get("transactions_abandoned", 0) == 1, 5, "counted")
        # the caller cancels while the transaction is open
        task = asyncio.ensure_future(
            s.command("tsc", "download_plan", timeout=20, plan=6, greens=[10, 6, 10, 6], cycle=52)
        )
        await until(lambda: c.tx_state == 2, 10, "the transaction opened")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await until(lambda: c.tx_state == 1, 10, "the transaction abandoned after a cancel")
        assert 6 not in c.plans
        # and the next download goes through
        c.delay_s = 0.0
        await until(lambda: s.entry("tsc").counters.get("transactions_abandoned", 0) == 2, 5, "counted")
        r = await s.command("tsc", "download_plan", plan=7, greens=[10, 6, 10, 6], cycle=52)
        assert r["confirmed"] and c.tx_state == 6 and c.plans[7].cycle_s == 52


async def test_a_listening_link_takes_only_its_peers_and_never_drops_a_live_controller():
    """Issue 20 item 10: with `tcp_role: listen`, a connection from an address outside `peers` is
    refused; one from an allowed address never evicts the live, answering controller; both are
    counted. A controller that went quiet is still replaced by its reconnection."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sim = SignalSimulator("tcp", controllers=1, base_id=56, connect=("127.0.0.1", port), traffic_s=0)
    dev = {
        "id": "tsc",
        "url": f"tcp://127.0.0.1:{port}",
        "tcp_role": "listen",
        "peers": ["127.0.0.1/32"],
        "offline_after_s": 3,
    }
    async with stack(sim, [dev]) as s:
        await s.online("tsc")
        await until(lambda: s.payloads("tsc", "lamps"), 5, "lamps")
        intruders = []
        # another address (the rest of 127/8 is loopback too): refused outright
        for _ in range(5):
            reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.2", 0))
            intruders.append(writer)
            assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the gateway
        # an allowed address while the controller answers: refused too, the controller stays
        for _ in range(5):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            intruders.append(writer)
            assert await asyncio.wait_for(reader.read(), 5) == b""
        for w in intruders:
            w.close()
        assert s.entry("tsc").counters.get("connections_refused") == 10
        assert "OFFLINE" not in s.health("tsc")
        polls = sim.controller(56).counters["queries"]
        await until(lambda: sim.controller(56).counters["queries"] > polls + 2, 10, "the controller still polled")
        # a controller gone quiet (its old socket a leftover) is replaced once it is no longer live
        sim.controller(56).silent = True
        await asyncio.sleep(2.0)  # past half of offline_after_s: no longer live
        again = SignalSimulator("tcp", controllers=1, base_id=56, connect=("127.0.0.1", port), traffic_s=0)
        await again.start()
        try:
            # taken: the gateway polls the newcomer, and the quiet one (dialling again) is refused now
            await until(lambda: again.controller(56).counters["queries"] >= 3, 10, "the reconnected controller polled")
            await s.online("tsc")
        finally:
            await again.stop()


def test_peers_need_listen_and_addresses():
    reg = Registry()
    reg.register(signal.SPEC)
    base = {"id": "tsc", "driver": "signal", "url": "tcp://127.0.0.1:7020"}
    with pytest.raises(Exception) as e:
        load_config({"devices": [{**base, "tcp_role": "listen", "peers": ["tsc-host"]}]}, reg)
    assert "devices[0] (tsc).peers" in str(e.value) and "not an IP address" in str(e.value)
    with pytest.raises(Exception) as e:
        load_config({"devices": [{**base, "peers": ["10.0.0.1"]}]}, reg)
    assert "only with tcp_role: listen" in str(e.value)
    from tianwang.gateway.lifecycle.config import warnings_for

    cfg = load_config({"devices": [{**base, "tcp_role": "listen"}]}, reg)
    assert any(path == "devices[0].peers" for path, _ in warnings_for(cfg))
    cfg = load_config({"devices": [{**base, "tcp_role": "listen", "peers": ["10.20.1.0/24"]}]}, reg)
    assert not any(path == "devices[0].peers" for path, _ in warnings_for(cfg))
