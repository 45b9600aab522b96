"""The JT/T 808 listener against the simulated fleet and hand-driven terminals over real TCP on
127.0.0.1, in a real Supervisor -> Router -> Journal stack; publications are read back from the
journal as a subscriber would receive them."""

import asyncio
import random
import struct

import pytest

from jt808_helpers import SECRET, RawTerminal, listener, location, until
from tianwang.drivers.jt808 import protocol as p
from tianwang.drivers.jt808.simulator import Fleet
from tianwang.gateway.errors import CommandError
from tianwang.gateway.lifecycle.driver import Health

pytestmark = pytest.mark.timeout(60)


def fixes_of(stack, phone):
    return stack.payloads(f"gnss/{phone}/fix")


# -- registration, authentication, ListDevices ------------------------------------------------
async def test_fleet_registers_authenticates_and_every_terminal_is_listed():
    async with listener() as gw:
        fleet = Fleet("127.0.0.1", gw.port, terminals=12, rate=2.0)
        await fleet.start()
        try:
            await fleet.wait_online(timeout=10)
            stats = fleet.stats()
            assert stats["registrations"] == 12 and stats["auth_ok"] == 12 and stats["auth_failed"] == 0
            rows = {e.id: e for e in gw.sup.list_devices("gnss")}
            for t in fleet.terminals:
                row = rows[t.phone]
                assert (row.family, row.driver, row.parent) == ("gnss", "jt808", "fleet")
                assert row.state == Health.ONLINE
                assert row.info["manufacturer"] == "TWSIM" and row.info["model"] == "TW-808-SIM"
                assert row.info["plate"] == f"沪A{t.phone[-5:]}" and row.info["version"] == "2013"
            assert rows["fleet"].state == Health.ONLINE and rows["fleet"].parent == ""
            health = gw.payloads(f"gnss/{fleet.terminals[0].phone}/health")
            assert health[-1]["state"] == "ONLINE"
        finally:
            await fleet.stop()
        # every terminal goes OFFLINE when its connection ends
        await until(lambda: all(gw.entry(t.phone).state == Health.OFFLINE for t in fleet.terminals), what="OFFLINE")
        assert gw.entry(fleet.terminals[0].phone).reason == "connection closed by the terminal"


async def test_wrong_auth_code_is_refused_and_nothing_is_published():
    async with listener(registration="closed") as gw:
        raw = await RawTerminal("13900000007").connect(gw.port)
        assert await raw.login("not-the-code") == p.Result.FAILURE
        # still unauthenticated: a location is refused with result 1 and not published
        await raw.send(p.LOCATION, location())
        _, (serial, reply_id, result) = await raw.ack()
        assert (serial, reply_id, result) == (raw.serial, p.LOCATION, p.Result.FAILURE)
        assert gw.entry("13900000007") is None
        assert gw.payloads("gnss/+/fix") == []
        # registering is closed: 0x8100 result 4 (terminal not in the database), no code
        await raw.send(p.REGISTER, p.register_body(p.Registration(0, 0, "M", "X", "ID", 0, "", "2013")))
        header, body = await raw.recv()
        assert header.msg_id == p.REGISTER_REPLY
        assert p.parse_register_reply(body) == (raw.serial, p.RegisterResult.NO_TERMINAL, "")
        # the right code (provisioned out of band from the same secret) works on the same connection
        assert await raw.login() == p.Result.OK
        await until(lambda: gw.entry("13900000007") is not None and gw.entry("13900000007").state == Health.ONLINE)
        assert gw.sup.drops[("jt808", "unauthenticated")] == 1
        raw.close()


async def test_repeated_auth_failures_close_the_connection():
    async with listener(registration="closed", max_auth_failures=2) as gw:
        raw = await RawTerminal().connect(gw.port)
        assert await raw.login("bad-1") == p.Result.FAILURE
        assert await raw.login("bad-2") == p.Result.FAILURE
        assert await raw.closed_by_peer()
        assert gw.entry("fleet").counters["auth_failures"] == 2


async def test_fleet_with_a_wrong_preset_code_registers_again_and_gets_in():
    async with listener() as gw:
        fleet = Fleet("127.0.0.1", gw.port, terminals=2, rate=0, auth_code="wrong")
        await fleet.start()
        try:
            await fleet.wait_online(timeout=10)
            for t in fleet.terminals:
                assert t.auth_results == [p.Result.FAILURE, p.Result.OK]
                assert t.auth_code == p.derive_auth_code(SECRET.encode(), t.phone)
        finally:
            await fleet.stop()


async def test_fleet_that_cannot_register_stays_out():
    async with listener(registration="closed") as gw:
        fleet = Fleet("127.0.0.1", gw.port, terminals=2, rate=1.0, auth_code="wrong", backoff_initial=0.1)
        await fleet.start()
        try:
            await until(lambda: fleet.counters["registrations_refused"] >= 2, what="refusals")
            assert fleet.online == 0
            assert all(t.register_result == p.RegisterResult.NO_TERMINAL for t in fleet.terminals)
            assert gw.payloads("gnss/+/fix") == []
            assert [e.id for e in gw.sup.list_devices()] == ["fleet"]
        finally:
            await fleet.stop()


async def test_known_policy_and_provisioned_codes(tmp_path, monkeypatch):
    codes = tmp_path / "codes"
    codes.write_text("# phone:code\n13900000001:alpha-code\n013900000002=beta\n")
    monkeypatch.setenv("JT_SECRET", "from-env")
    async with listener(
        registration="known", auth_codes_file=str(codes), auth_secret=None, auth_secret_env="JT_SECRET"
    ) as gw:
        known = await RawTerminal("13900000002").connect(gw.port)
        await known.send(p.REGISTER, p.register_body(p.Registration(0, 0, "M", "X", "ID", 0, "", "2013")))
        _, body = await known.recv()
        assert p.parse_register_reply(body) == (known.serial, p.RegisterResult.OK, "beta")
        assert await known.login("beta") == p.Result.OK
        stranger = await RawTerminal("13900000003").connect(gw.port)
        await stranger.send(p.REGISTER, p.register_body(p.Registration(0, 0, "M", "X", "ID", 0, "", "2013")))
        _, body = await stranger.recv()
        assert p.parse_register_reply(body)[1] == p.RegisterResult.NO_TERMINAL
        # a phone without a provisioned code uses the one derived from the secret in the environment
        assert await stranger.login(p.derive_auth_code(b"from-env", "13900000003")) == p.Result.OK
        known.close()
        stranger.close()


# -- reports ----------------------------------------------------------------------------------
@pytest.mark.parametrize("version", ["2013", "2019"])
async def test_location_reports_become_fixes_with_the_reported_values(version):
    # a route in the southern and western hemispheres, so both sign bits are exercised
    async with listener() as gw:
        fleet = Fleet("127.0.0.1", gw.port, terminals=3, rate=5.0, version=version, centre=(-33.45, -70.66))
        await fleet.start()
        try:
            await fleet.wait_online(timeout=10)
            t = fleet.terminals[1]
            await until(lambda: len(fixes_of(gw, t.phone)) >= 3, what="fixes")
            sent = t.last_report

            # JT/T 808 time has whole seconds and at 5 Hz several reports share one second (and
            # sometimes one latitude), so the report is found by its time and both coordinates
            def same(f):
                return (f["time_ns"], f["lat"], f["lon"]) == (sent["time_ns"], sent["lat"], sent["lon"])

            await until(lambda: any(same(f) for f in fixes_of(gw, t.phone)), what="the last report as a fix")
        finally:
            await fleet.stop()
        envs = gw.envelopes(f"gnss/{t.phone}/fix")
        env = next(e for e in envs if same(e["payload"]))
        fix = env["payload"]
        assert fix["lat"] < 0 and fix["lon"] < 0
        assert fix["speed_mps"] == round(sent["speed_kmh"] / 3.6, 4)
        assert fix["course_deg"] == sent["course_deg"]
        assert env["device_time_ns"] == sent["time_ns"] and env["device_id"] == t.phone
        assert fix["source"] == "jt808" and fix["quality"] == 1 and fix["stored"] is False
        assert fix["sats_used_total"] == t.satellites and fix["systems"] == ["GPS", "BDS"]
        assert gw.entry(t.phone).info["version"] == version
        assert fleet.counters["acks_not_ok"] == 0 and fleet.counters["resends"] == 0


async def test_raw_report_values_time_and_ack_serial():
    async with listener() as gw:
        raw = await RawTerminal("13812345678").connect(gw.port)
        assert await raw.login() == p.Result.OK
        # 2024-03-01 08:00:05 GMT+8 = 2024-03-01 00:00:05 UTC
        t_ns = 1709251205 * 1_000_000_000
        body = location(lat=22.543096, lon=-114.057865, t_ns=t_ns, speed_kmh=72.0, course_deg=45, alt_m=88)
        await raw.send(p.LOCATION, body, serial=0xBEEF)
        header, (serial, reply_id, result) = await raw.ack()
        assert (serial, reply_id, result) == (0xBEEF, p.LOCATION, p.Result.OK)
        assert header.phone_bcd == raw.phone_bcd and header.version == "2013"
        await until(lambda: fixes_of(gw, "13812345678"))
        (env,) = gw.envelopes("gnss/13812345678/fix")
        fix = env["payload"]
        assert (fix["lat"], fix["lon"], fix["alt_m"], fix["course_deg"]) == (22.543096, -114.057865, 88.0, 45.0)
        assert fix["speed_mps"] == pytest.approx(20.0)
        assert fix["time_ns"] == t_ns and env["device_time_ns"] == t_ns
        for key in ("mode", "hdop", "pdop", "vdop", "sats_view"):
            assert fix[key] is None
        raw.close()


async def test_batch_upload_publishes_every_position_in_order():
    async with listener() as gw:
        raw = await RawTerminal().connect(gw.port)
        assert await raw.login() == p.Result.OK
        base = 1709251200 * 1_000_000_000
        bodies = [location(lat=10 + i / 100, lon=20, t_ns=base + i * 10**9) for i in range(5)]
        await raw.send(p.BATCH, p.batch_body(bodies, p.BATCH_BLIND_AREA))
        _, (serial, reply_id, result) = await raw.ack()
        assert (serial, reply_id, result) == (raw.serial, p.BATCH, p.Result.OK)
        await until(lambda: len(fixes_of(gw, raw.phone)) == 5)
        fixes = fixes_of(gw, raw.phone)
        assert [f["lat"] for f in fixes] == [10.0, 10.01, 10.02, 10.03, 10.04]
        assert [f["time_ns"] for f in fixes] == [base + i * 10**9 for i in range(5)]
        assert all(f["stored"] for f in fixes)
        raw.close()


async def test_fleet_uploads_positions_taken_while_cut_off():
    async with listener() as gw:
        fleet = Fleet("127.0.0.1", gw.port, terminals=1, rate=10.0, backoff_initial=0.6)
        await fleet.start()
        try:
            await fleet.wait_online()
            t = fleet.terminals[0]
            t.cut()
            await until(lambda: fleet.counters["stored"] >= 2, what="stored positions")
            await until(lambda: fleet.online == 1 and fleet.counters["batches_sent"] >= 1, what="blind-area batch")
            await until(lambda: any(f["stored"] for f in fixes_of(gw, t.phone)), what="stored fixes")
        finally:
            await fleet.stop()
        assert fleet.counters["reports_acked"] + sum(1 for f in fixes_of(gw, t.phone) if f["stored"]) == len(
            fixes_of(gw, t.phone)
        )


async def test_heartbeats_are_acked_and_keep_an_idle_terminal_online():
    async with listener(idle_timeout_s=0.6) as gw:
        fleet = Fleet("127.0.0.1", gw.port, terminals=2, rate=0, heartbeat_s=0.15)
        await fleet.start()
        try:
            await fleet.wait_online()
            await asyncio.sleep(1.5)  # well past the idle timeout
            assert fleet.counters["heartbeats_sent"] >= 10
            assert fleet.counters["acks_received"] >= fleet.counters["heartbeats_sent"] - 2
            assert fleet.counters["disconnects"] == 0
            t = fleet.terminals[0]
            assert gw.entry(t.phone).state == Health.ONLINE
            assert gw.entry(t.phone).counters["heartbeats"] >= 5
        finally:
            await fleet.stop()


async def test_silent_terminal_goes_offline_after_the_idle_timeout():
    async with listener(idle_timeout_s=0.4) as gw:
        raw = await RawTerminal().connect(gw.port)
        assert await raw.login() == p.Result.OK
        assert gw.entry(raw.phone).state == Health.ONLINE
        assert await raw.closed_by_peer(timeout=3.0)
        entry = gw.entry(raw.phone)
        assert entry.state == Health.OFFLINE and entry.reason.startswith("idle timeout")
        assert gw.entry("fleet").counters["idle_closed"] == 1


async def test_connection_that_never_authenticates_is_closed():
    async with listener(auth_timeout_s=0.3) as gw:
        raw = await RawTerminal().connect(gw.port)
        assert await raw.closed_by_peer(timeout=3.0)
        assert gw.entry("fleet").counters["auth_timeouts"] == 1


async def test_sos_alarm_published_on_change_only():
    async with listener() as gw:
        fleet = Fleet("127.0.0.1", gw.port, terminals=2, rate=10.0)
        await fleet.start()
        try:
            await fleet.wait_online()
            t = fleet.terminals[0]
            await until(lambda: len(fixes_of(gw, t.phone)) >= 2)
            t.alarm = p.ALARM_SOS
            await until(lambda: sum(f["alarm"] == 1 for f in fixes_of(gw, t.phone)) >= 3, what="SOS reports")
            t.alarm = 0
            await until(
                lambda: fixes_of(gw, t.phone)[-1]["alarm"] == 0 and len(gw.payloads(f"gnss/{t.phone}/alarm")) == 2
            )
            await asyncio.sleep(0.3)
        finally:
            await fleet.stop()
        alarms = gw.envelopes(f"gnss/{t.phone}/alarm")
        assert [a["payload"] for a in alarms] == [
            {"kind": "sos", "active": True, "raw": "0x00000001", "alarm_word": 1},
            {"kind": "sos", "active": False, "raw": "0x00000000", "alarm_word": 0},
        ]
        assert alarms[0]["device_time_ns"] > 0
        assert gw.payloads(f"gnss/{fleet.terminals[1].phone}/alarm") == []


async def test_lost_ack_makes_the_terminal_resend_and_the_listener_publishes_once():
    async with listener() as gw:
        fleet = Fleet("127.0.0.1", gw.port, terminals=1, rate=0, ack_timeout_s=0.2)
        await fleet.start()
        try:
            await fleet.wait_online()
            t = fleet.terminals[0]
            t.ignore_acks = 1
            t.report()
            await until(lambda: fleet.counters["reports_acked"] == 1, what="ack of the resend")
        finally:
            await fleet.stop()
        assert fleet.counters["resends"] == 1
        assert len(fixes_of(gw, t.phone)) == 1
        assert gw.entry(t.phone).counters["duplicates"] == 1


# -- editions ---------------------------------------------------------------------------------
async def test_2019_header_is_answered_in_2019():
    async with listener() as gw:
        raw = await RawTerminal("13500000019", version="2019").connect(gw.port)
        await raw.send(
            p.REGISTER, p.register_body(p.Registration(11, 0, "MAKER2019", "M" * 30, "T" * 30, 1, "京A1", "2019"))
        )
        header, body = await raw.recv()
        assert header.version == "2019" and header.protocol_version == 1
        assert header.phone_bcd == p.phone_to_bcd("13500000019", "2019")
        assert p.parse_register_reply(body)[1] == p.RegisterResult.OK
        assert await raw.login(p.parse_register_reply(body)[2]) == p.Result.OK
        info = gw.entry("13500000019").info
        assert info["imei"] == "860000000000001" and info["software_version"] == "raw-1"
        assert info["model"] == "M" * 30 and info["protocol_version"] == "1" and info["edition"] == "2019"
        raw.close()


async def test_refused_edition_is_answered_unsupported():
    async with listener(versions=[2019]) as gw:
        raw = await RawTerminal(version="2013").connect(gw.port)
        await raw.send(p.AUTH, p.auth_body("x"))
        _, (serial, reply_id, result) = await raw.ack()
        assert (serial, reply_id, result) == (raw.serial, p.AUTH, p.Result.UNSUPPORTED)
        assert gw.sup.drops[("jt808", "version_refused")] == 1
        raw.close()


# -- bad frames -------------------------------------------------------------------------------
async def test_bad_frames_are_counted_answered_and_good_frames_around_them_survive():
    async with listener() as gw:
        raw = await RawTerminal("13700000001").connect(gw.port)
        assert await raw.login() == p.Result.OK
        good1 = raw.frame(p.LOCATION, location(lat=1.0))
        bad_xor = bytearray(raw.frame(p.LOCATION, location(lat=2.0), serial=0x0A0A))
        bad_xor[-2] ^= 0x55  # the check code (nothing in this frame is escaped)
        good2 = raw.frame(p.LOCATION, location(lat=3.0))
        unknown = raw.frame(0x0900, b"\x01passthrough")  # data uplink: not handled here
        bad_escape = b"\x7e\x02\x00\x7d\x05\x7e"
        # attributes claim a 1023-byte body on a 40-byte frame: an absurd length
        absurd = bytearray(p.build(p.LOCATION, location(lat=4.0), raw.phone_bcd, 0x0B0B))
        absurd[2:4] = struct.pack(">H", 0x03FF)
        from tianwang.gateway.framing import encode_jt808

        absurd = encode_jt808(bytes(absurd))
        good3 = raw.frame(p.LOCATION, location(lat=5.0))
        stream = good1 + bytes(bad_xor) + good2 + unknown + bad_escape + absurd + good3
        # split at random points, as TCP may deliver it
        rng = random.Random(7)
        cuts = sorted(rng.sample(range(1, len(stream)), 12))
        for a, b in zip([0] + cuts, cuts + [len(stream)], strict=True):
            await raw.write(stream[a:b])
            await asyncio.sleep(0.002)
        replies = {}
        for _ in range(6):
            _, (serial, reply_id, result) = await raw.ack()
            replies[serial] = (reply_id, result)
        assert replies[0x0A0A] == (p.LOCATION, p.Result.MESSAGE_ERROR)  # bad XOR, header readable
        assert replies[0x0B0B] == (p.LOCATION, p.Result.MESSAGE_ERROR)  # absurd length
        assert (0x0900, p.Result.UNSUPPORTED) in replies.values()
        assert sum(r == (p.LOCATION, p.Result.OK) for r in replies.values()) == 3
        await until(lambda: len(fixes_of(gw, raw.phone)) == 3)
        assert [f["lat"] for f in fixes_of(gw, raw.phone)] == [1.0, 3.0, 5.0]
        counters = gw.entry(raw.phone).counters
        assert counters["dropped_bad_checksum"] == 1
        assert counters["dropped_bad_escape"] == 1
        assert counters["dropped_truncated"] == 1
        assert counters["dropped_unsupported"] == 1
        assert gw.entry(raw.phone).state == Health.ONLINE
        raw.close()


async def test_malformed_bodies_get_message_error_and_the_connection_lives_on():
    async with listener() as gw:
        raw = await RawTerminal().connect(gw.port)
        assert await raw.login() == p.Result.OK
        for body, reason in (
            (b"\x00" * 10, "bad_body"),
            (location(lat=1.0)[:22] + b"\x99\x13\x45\x00\x00\x00", None),  # month 13: time null, still a fix
            (struct.pack(">IIII", 0, 0, 95_000_000, 0) + b"\x00" * 12, "bad_position"),
            (p.batch_body([location()])[:-3], "bad_body"),
        ):
            msg = p.BATCH if len(body) > 30 and body[2] == 0 and body[:2] == b"\x00\x01" else p.LOCATION
            await raw.send(msg, body)
            _, (serial, reply_id, result) = await raw.ack()
            assert serial == raw.serial
            assert result == (p.Result.OK if reason is None else p.Result.MESSAGE_ERROR)
        await until(lambda: len(fixes_of(gw, raw.phone)) == 1)
        assert fixes_of(gw, raw.phone)[0]["time_ns"] is None
        c = gw.entry(raw.phone).counters
        assert c["dropped_bad_body"] == 2 and c["dropped_bad_position"] == 1
        await raw.send(p.HEARTBEAT)
        assert (await raw.ack())[1][2] == p.Result.OK
        raw.close()


async def test_split_message_is_joined_and_every_part_acked():
    async with listener() as gw:
        raw = await RawTerminal().connect(gw.port)
        assert await raw.login() == p.Result.OK
        bodies = [location(lat=40 + i / 1000, lon=100) for i in range(30)]
        whole = p.batch_body(bodies)
        parts = p.split_body(whole, 400)
        assert len(parts) == 3
        first = raw.serial + 1
        for i, part in enumerate(parts):
            await raw.write(raw.frame(p.BATCH, part, serial=first + i, total=len(parts), index=i + 1))
        raw.serial = first + len(parts) - 1
        acks = [await raw.ack() for _ in parts]
        assert [a[1] for a in acks] == [(first + i, p.BATCH, p.Result.OK) for i in range(3)]
        await until(lambda: len(fixes_of(gw, raw.phone)) == 30)
        assert [f["lat"] for f in fixes_of(gw, raw.phone)] == [40 + i / 1000 for i in range(30)]
        raw.close()


async def test_garbage_spewing_connection_beside_good_terminals():
    async with listener() as gw:
        fleet = Fleet("127.0.0.1", gw.port, terminals=5, rate=10.0)
        await fleet.start()
        try:
            await fleet.wait_online()
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
            rng = random.Random(1)
            try:
                for _ in range(200):
                    chunk = bytes(rng.getrandbits(8) for _ in range(4096))
                    writer.write(chunk.replace(b"\x7d", b"\x7e"))  # plenty of flags: plenty of bad frames
                    await writer.drain()
                    await asyncio.sleep(0.001)
            except ConnectionError:
                pass  # the listener gave up on it, as it should
            try:
                assert await asyncio.wait_for(reader.read(), 3.0) == b""  # closed by the listener
            except ConnectionError:
                pass
            before = fleet.counters["reports_acked"]
            await until(lambda: fleet.counters["reports_acked"] >= before + 20, what="good reports after the garbage")
        finally:
            writer.close()
            await fleet.stop()
        assert gw.entry("fleet").counters["garbage_closed"] == 1
        assert fleet.counters["resends"] == 0 and fleet.counters["acks_not_ok"] == 0
        assert fleet.counters["disconnects"] == 5  # only at stop
        assert sum(len(fixes_of(gw, t.phone)) for t in fleet.terminals) >= fleet.counters["reports_acked"]


async def test_flooding_terminal_is_slowed_without_loss_and_others_keep_pace():
    async with listener(flood_frames_per_s=400, flood_burst=100) as gw:
        fleet = Fleet("127.0.0.1", gw.port, terminals=5, rate=10.0, ack_timeout_s=1.0)
        await fleet.start()
        try:
            await fleet.wait_online()
            flooder = await RawTerminal("13600000000").connect(gw.port)
            assert await flooder.login() == p.Result.OK
            n = 800
            await flooder.write(b"".join(flooder.frame(p.HEARTBEAT) for _ in range(n)))
            acked = 0
            while acked < n:
                _, (_, reply_id, result) = await flooder.ack(timeout=5)
                assert (reply_id, result) == (p.HEARTBEAT, p.Result.OK)
                acked += 1
            flooder.close()
        finally:
            await fleet.stop()
        assert gw.entry("13600000000").counters["heartbeats"] == n
        assert gw.entry("13600000000").counters["flood_paused"] >= 1
        assert fleet.counters["resends"] == 0


# -- connections ------------------------------------------------------------------------------
async def test_reconnect_replaces_the_old_connection():
    async with listener() as gw:
        old = await RawTerminal("13100000001").connect(gw.port)
        assert await old.login() == p.Result.OK
        new = await RawTerminal("13100000001").connect(gw.port)
        assert await new.login() == p.Result.OK
        assert await old.closed_by_peer()
        assert gw.entry("13100000001").state == Health.ONLINE
        assert gw.entry("fleet").counters["connections_replaced"] == 1
        await new.send(p.LOCATION, location(lat=7.0))
        assert (await new.ack())[1][2] == p.Result.OK
        await until(lambda: fixes_of(gw, "13100000001"))
        health = [h["state"] for h in gw.payloads("gnss/13100000001/health")]
        assert health == ["ONLINE"]  # the swap never showed the terminal as offline
        new.close()
        await until(lambda: gw.entry("13100000001").state == Health.OFFLINE)


async def test_cut_terminal_reconnects_with_backoff_and_reports_again():
    async with listener() as gw:
        fleet = Fleet("127.0.0.1", gw.port, terminals=3, rate=10.0, backoff_initial=0.2)
        await fleet.start()
        try:
            await fleet.wait_online()
            t = fleet.terminals[2]
            t.cut()
            await until(lambda: gw.entry(t.phone).state == Health.OFFLINE, what="OFFLINE after the cut")
            await until(lambda: gw.entry(t.phone).state == Health.ONLINE, what="ONLINE again")
            n = len(fixes_of(gw, t.phone))
            await until(lambda: len(fixes_of(gw, t.phone)) > n + 3)
        finally:
            await fleet.stop()
        states = [h["state"] for h in gw.payloads(f"gnss/{t.phone}/health")]
        assert states[:3] == ["ONLINE", "OFFLINE", "ONLINE"]
        assert fleet.counters["connects"] == 4


async def test_logout_ends_the_session():
    async with listener() as gw:
        raw = await RawTerminal().connect(gw.port)
        assert await raw.login() == p.Result.OK
        # a report behind the logout in the same segment belongs to no session
        await raw.write(raw.frame(p.LOGOUT) + raw.frame(p.LOCATION, location()))
        assert (await raw.ack())[1] == (raw.serial - 1, p.LOGOUT, p.Result.OK)
        assert await raw.closed_by_peer()
        assert fixes_of(gw, raw.phone) == []
        await until(lambda: gw.entry(raw.phone).state == Health.OFFLINE)
        assert gw.entry(raw.phone).reason == "logged out (0x0003)"


async def test_connection_limit():
    async with listener(max_connections=2) as gw:
        a = await RawTerminal("1").connect(gw.port)
        b = await RawTerminal("2").connect(gw.port)
        assert await a.login() == p.Result.OK and await b.login() == p.Result.OK
        c = await RawTerminal("3").connect(gw.port)
        assert await c.closed_by_peer()
        assert gw.entry("fleet").counters["connections_refused"] == 1
        for t in (a, b):
            t.close()


async def test_listener_stop_marks_terminals_offline_and_frees_the_port():
    async with listener() as gw:
        raw = await RawTerminal().connect(gw.port)
        assert await raw.login() == p.Result.OK
        port = gw.port
    assert await raw.closed_by_peer()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


# -- commands ---------------------------------------------------------------------------------
async def test_query_location_round_trip():
    async with listener() as gw:
        fleet = Fleet("127.0.0.1", gw.port, terminals=3, rate=0)
        await fleet.start()
        try:
            await fleet.wait_online()
            t = fleet.terminals[1]
            result = await gw.sup.send_command(t.phone, "query_location", {}, 3.0)
            sent = t.last_report
            assert (result["lat"], result["lon"], result["time_ns"]) == (sent["lat"], sent["lon"], sent["time_ns"])
            assert result["source"] == "jt808"
            assert fleet.counters["queries_answered"] == 1
            # the answer is also a fix on the terminal's topic
            assert fixes_of(gw, t.phone) == [result]
            with pytest.raises(CommandError) as info:
                await gw.sup.send_command(t.phone, "reboot", {}, 1.0)
            assert info.value.code == "UNSUPPORTED"
            # sent to the wrong kind of device, a command says where it goes instead
            with pytest.raises(CommandError) as info:
                await gw.sup.send_command("fleet", "query_location", {}, 1.0)
            assert "fleet is a listener, not a terminal: send query_location to a terminal" in info.value.message
            with pytest.raises(CommandError) as info:
                await gw.sup.send_command(t.phone, "deregister", {"phone": t.phone}, 1.0)
            assert f"{t.phone} is a terminal: deregister goes to its listener, fleet" in info.value.message
        finally:
            await fleet.stop()
        await until(lambda: gw.entry(t.phone).state == Health.OFFLINE)
        with pytest.raises(CommandError) as info:
            await gw.sup.send_command(t.phone, "query_location", {}, 1.0)
        assert info.value.code == "OFFLINE"


async def test_query_location_times_out_when_the_terminal_stays_silent():
    async with listener() as gw:
        raw = await RawTerminal().connect(gw.port)
        assert await raw.login() == p.Result.OK
        task = asyncio.ensure_future(gw.sup.send_command(raw.phone, "query_location", {}, 0.3))
        header, body = await raw.recv()
        assert header.msg_id == p.QUERY_LOCATION and body == b""
        with pytest.raises(CommandError) as info:
            await task
        assert info.value.code == "TIMEOUT"
        # a late answer to a query nobody waits for is still a position
        await raw.send(p.LOCATION_REPLY, p.location_reply_body(header.serial, location(lat=9.5)))
        await until(lambda: fixes_of(gw, raw.phone))
        raw.close()


async def test_query_fails_fast_when_the_connection_drops():
    async with listener() as gw:
        raw = await RawTerminal().connect(gw.port)
        assert await raw.login() == p.Result.OK
        task = asyncio.ensure_future(gw.sup.send_command(raw.phone, "query_location", {}, 5.0))
        await raw.recv()
        raw.writer.transport.abort()
        with pytest.raises(CommandError) as info:
            await asyncio.wait_for(task, 2.0)
        assert info.value.code == "OFFLINE"


# -- config -----------------------------------------------------------------------------------
def test_config_errors_name_their_keys():
    import tianwang.drivers.jt808 as jt808
    from tianwang.gateway.errors import ConfigError
    from tianwang.gateway.lifecycle.config import load_config
    from tianwang.gateway.lifecycle.registry import Registry

    reg = Registry()
    reg.register(jt808.SPEC)
    with pytest.raises(ConfigError) as info:
        load_config(
            {
                "listeners": [
                    {
                        "id": "fleet",
                        "driver": "jt808",
                        "listen": "127.0.0.1:7808",
                        "registration": "sometimes",
                        "versions": [2016],
                        "terminals": ["12ab"],
                        "idle_timeout_s": 0,
                        "colour": "red",
                    }
                ]
            },
            reg,
        )
    paths = {path for path, _ in info.value.problems}
    for key in ("registration", "versions[0]", "terminals", "idle_timeout_s", "colour"):
        assert f"listeners[0].{key}" in paths, (key, info.value.problems)
    ok = load_config(
        {
            "listeners": [
                {
                    "id": "fleet",
                    "driver": "jt808",
                    "listen": "127.0.0.1:7808",
                    "versions": "2013",
                    "terminals": ["013900000001"],
                }
            ]
        },
        reg,
    )
    assert ok.listeners[0].versions == (2013,) and ok.listeners[0].terminals == ("13900000001",)


def test_secret_errors_name_their_keys(tmp_path):
    import tianwang.drivers.jt808 as jt808
    from tianwang.gateway.errors import ConfigError
    from tianwang.gateway.lifecycle.config import load_config
    from tianwang.gateway.lifecycle.registry import Registry

    reg = Registry()
    reg.register(jt808.SPEC)
    base = {"id": "fleet", "driver": "jt808", "listen": "127.0.0.1:7808"}
    bad = tmp_path / "codes"
    bad.write_text("13900000001 no-separator\n")
    with pytest.raises(ConfigError) as info:
        load_config({"listeners": [dict(base, auth_codes_file=str(bad))]}, reg)
    assert [path for path, _ in info.value.problems] == ["listeners[0].auth_codes"]
    assert "not PHONE:CODE" in info.value.problems[0][1] and "no-separator" not in info.value.problems[0][1]
    with pytest.raises(ConfigError) as info:
        load_config({"listeners": [dict(base, auth_secret_env="TW_NO_SUCH_VARIABLE_SET")]}, reg)
    assert [path for path, _ in info.value.problems] == ["listeners[0].auth_secret_env"]
    with pytest.raises(ConfigError):
        load_config({"listeners": [dict(base, auth_secret="a", auth_secret_env="B")]}, reg)
    with pytest.raises(ConfigError) as info:
        load_config({"listeners": [dict(base, auth_secret="inline-secret")]}, reg)
    assert [path for path, _ in info.value.problems] == ["listeners[0].auth_secret"]
    assert info.value.problems[0][1].startswith("secret written inline: use auth_secret_env or auth_secret_file")
    inline = load_config(
        {"auth": {"allow_inline_secrets": True}, "listeners": [dict(base, auth_secret="inline-secret")]}, reg
    )
    assert inline.listeners[0].auth_secret.get_secret_value() == "inline-secret"


async def test_max_terminals_refuses_new_phones_but_not_known_ones():
    async with listener(max_terminals=1) as gw:
        a = await RawTerminal("13000000001").connect(gw.port)
        assert await a.login() == p.Result.OK
        b = await RawTerminal("13000000002").connect(gw.port)
        assert await b.login() == p.Result.FAILURE
        a.close()
        await until(lambda: gw.entry("13000000001").state == Health.OFFLINE)
        again = await RawTerminal("13000000001").connect(gw.port)
        assert await again.login() == p.Result.OK  # a phone already known keeps its place
        assert gw.entry("13000000002") is None
        for t in (b, again):
            t.close()


async def test_unfinished_split_message_expires():
    async with listener(split_timeout_s=0.2, auth_timeout_s=1.0) as gw:
        raw = await RawTerminal().connect(gw.port)
        assert await raw.login() == p.Result.OK
        part = p.split_body(p.batch_body([location()] * 3), 50)[0]
        await raw.write(raw.frame(p.BATCH, part, total=2, index=1))
        assert (await raw.ack())[1][2] == p.Result.OK
        await until(lambda: gw.entry(raw.phone).counters.get("dropped_split_timeout") == 1, what="split expiry")
        assert fixes_of(gw, raw.phone) == []
        raw.close()
