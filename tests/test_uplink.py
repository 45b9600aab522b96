"""GB/T 28181 uplinks: the gateway registering to a superior platform (the platform simulator on
127.0.0.1) with an ONVIF camera simulator and a JT/T 808 vehicle behind it."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

import tianwang.drivers.jt808 as jt808
import tianwang.drivers.onvif as onvif
from gw import READ, base_config, client, journal_envelopes, md, registry, until
from onvif_helpers import camera, device
from tianwang.drivers.gb28181 import ptz
from tianwang.gateway.errors import ConfigError
from tianwang.gateway.lifecycle.config import load_config
from tianwang.gateway.uplink.ids import rule_id
from tianwang.gateway.uplink.platform_sim import PlatformSim
from tianwang.v1 import gateway_pb2 as pb

LOCAL_ID = "43030000002000000009"
pytestmark = pytest.mark.timeout(90)


def uplink_entry(sim, **extra):
    entry = {
        "id": "city",
        "superior": f"127.0.0.1:{sim.port}",
        "superior_id": sim.id,
        "local_id": LOCAL_ID,
        "password": sim.password,
        "bind": "127.0.0.1:0",
        "keepalive": {"interval_s": 0.5, "count": 2},
        "expose": ["camera/#", "gnss/#"],
        "control": ["camera/+"],
    }
    entry.update(extra)
    return entry


@contextlib.asynccontextmanager
async def platform(**options):
    sim = PlatformSim(position_interval=options.pop("position_interval", 1), **options)
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


@contextlib.asynccontextmanager
async def gateway(sim, devices=(), listeners=(), retry_s=None, **uplink):
    from tianwang.gateway.app import Gateway

    reg = registry(onvif.SPEC, jt808.SPEC)
    raw = base_config(devices=list(devices), listeners=list(listeners), control=["camera/+"], name="uplink")
    raw["uplinks"] = [uplink_entry(sim, **uplink)]
    config = load_config(raw, reg)
    if retry_s is not None:
        # the standard's 60 s floor is a config bound; the re-registration test waits less
        config = config.model_copy(update={"uplinks": (config.uplinks[0].model_copy(update={"retry_s": retry_s}),)})
    gw = Gateway(config, registry=reg)
    await gw.start()
    try:
        yield gw
    finally:
        await gw.stop()


def lower(sim):
    return sim.lowers.get(LOCAL_ID)


# -- config ---------------------------------------------------------------------------------------
def test_config_refuses_colliding_ids_and_a_local_id_of_another_type():
    reg = registry(onvif.SPEC)
    cam = {"driver": "onvif", "host": "127.0.0.1", "port": 80, "username": "a", "password": "b"}
    raw = base_config(
        devices=[
            {**cam, "id": "cam-1", "gb_id": "43030000001320000001"},
            {**cam, "id": "cam-2", "gb_id": "43030000001320000001"},
        ]
    )
    up = {
        "id": "city",
        "superior": "127.0.0.1:5060",
        "superior_id": "43000000002000000001",
        "local_id": LOCAL_ID,
        "password": "x",
    }
    raw["uplinks"] = [up]
    with pytest.raises(ConfigError) as err:
        load_config(raw, reg)
    problems = dict(err.value.problems)
    assert "devices[1].gb_id" in problems and "43030000001320000001" in problems["devices[1].gb_id"]
    raw["devices"][1]["gb_id"] = "43030000001320000002"
    raw["uplinks"] = [{**up, "local_id": "43030000001320000009"}]
    with pytest.raises(ConfigError) as err:
        load_config(raw, reg)
    assert "must be 200" in dict(err.value.problems)["uplinks[0].local_id"]
    raw["uplinks"] = [{**up, "id": "cam-1"}]
    with pytest.raises(ConfigError) as err:
        load_config(raw, reg)
    assert "duplicate id" in dict(err.value.problems)["uplinks[0].id"]
    raw["uplinks"] = [{**up, "retry_s": 5}]
    with pytest.raises(ConfigError) as err:
        load_config(raw, reg)
    assert "uplinks[0].retry_s" in dict(err.value.problems)


def test_the_id_rule_is_stable_and_typed_by_family():
    cam = rule_id(LOCAL_ID, "camera", "cam-1")
    car = rule_id(LOCAL_ID, "gnss", "13800000001")
    assert cam == rule_id(LOCAL_ID, "camera", "cam-1") and len(cam) == 20
    assert cam[:10] == LOCAL_ID[:10] and cam[10:13] == "132" and cam[13] == LOCAL_ID[13]
    assert car[10:13] == "138"
    assert rule_id(LOCAL_ID, "signal", "tsc-1") is None


# -- registration, keepalive, health, catalog, alarms, PTZ -----------------------------------------
async def test_registers_keeps_alive_answers_the_catalog_and_sends_motion_as_an_alarm():
    async with platform() as sim, camera(rate=5) as cam:
        async with gateway(sim, devices=[device(cam)]) as gw:
            await sim.wait(lambda: lower(sim) and lower(sim).registered, what="registration")
            await sim.wait(lambda: len(sim.of("keepalive")) >= 2, what="keepalives")
            entry = gw.supervisor.lookup("city")
            await until(lambda: entry.state.value == "ONLINE", what="uplink ONLINE")
            async with client(gw) as (stub, _):
                reply = await stub.ListDevices(pb.ListDevicesRequest(family="uplink"), metadata=md(READ))
            assert [(d.id, d.state) for d in reply.devices] == [("city", "ONLINE")]
            health = journal_envelopes(gw.journal, "uplink/city/health")
            assert health[-1]["payload"]["state"] == "ONLINE" and LOCAL_ID not in health[-1]["payload"]["reason"]

            # the catalog: the gateway as the system, a business group, the camera with its rule ID
            await until(lambda: gw.supervisor.lookup("cam-1").state.value == "ONLINE", what="camera online", timeout=20)
            sim.received.clear()
            await sim.query(LOCAL_ID, "Catalog")
            await sim.wait(lambda: sim.of("catalog"), what="catalog")
            items = {i["id"]: i for i in sim.of("catalog")[-1]["items"]}
            cam_id = rule_id(LOCAL_ID, "camera", "cam-1")
            assert items[LOCAL_ID]["kind"] == "system"
            assert items[cam_id]["status"] == "ON" and items[cam_id]["kind"] == "camera"
            group = [i for i in items.values() if i["kind"] == "business_group"]
            assert len(group) == 1 and group[0]["id"] in items[cam_id]["parent_ids"]

            # a superior browsing the tree asks a business group for its catalog: the rows under it
            sim.received.clear()
            reply = await sim.query(LOCAL_ID, "Catalog", target=group[0]["id"])
            assert reply.status == 200
            await sim.wait(lambda: sim.of("catalog"), what="the group's catalog")
            answer = sim.of("catalog")[-1]
            assert answer["target"] == group[0]["id"] and [i["id"] for i in answer["items"]] == [cam_id]
            # an ID that is neither ours, a group nor an exposed device is unknown
            unknown = LOCAL_ID[:10] + "1319999999"
            assert (await sim.query(LOCAL_ID, "Catalog", target=unknown)).status == 404

            # a motion event of the simulated camera reaches the superior as a GB alarm (video, motion)
            # (the simulated camera raises motion, line crossing and tamper events at its rate)
            await sim.wait(
                lambda: sim.of("alarm", device_id=cam_id, alarm_kind="motion"), what="the motion alarm", timeout=30
            )
            alarm = sim.of("alarm", device_id=cam_id, alarm_kind="motion")[0]
            assert alarm["method"] == [5] and alarm["type"] == 2 and alarm["via"] == "NOTIFY"


async def test_a_clean_stop_unregisters_and_logs_no_warning(caplog):
    import logging

    async with platform() as sim:
        with caplog.at_level(logging.INFO, logger="tianwang"):
            async with gateway(sim) as gw:
                entry = gw.supervisor.lookup("city")
                await until(lambda: entry.state.value == "ONLINE", what="uplink ONLINE")
        assert "city: ONLINE -> OFFLINE (gateway stopping)" in caplog.text
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
        await sim.wait(lambda: sim.of("unregister"), what="the unregister")


async def test_a_superior_that_goes_away_and_comes_back_gets_a_new_registration():
    async with platform() as sim:
        port, password = sim.port, sim.password
        async with gateway(sim, retry_s=0.3) as gw:
            entry = gw.supervisor.lookup("city")
            await sim.wait(lambda: lower(sim) and lower(sim).registered, what="registration")
            await sim.stop()  # the superior goes away: keepalives go unanswered
            await until(
                lambda: entry.state.value == "OFFLINE" and "registering again" in entry.reason,
                timeout=20,
                what="uplink OFFLINE",
            )
            async with platform(port=port, password=password) as back:  # a restarted superior
                await back.wait(lambda: lower(back) and lower(back).registered, what="re-registration")
                await until(lambda: entry.state.value == "ONLINE", timeout=20, what="uplink ONLINE again")
                assert gw.uplinks.get("city").registrations >= 2
                states = [e["payload"]["state"] for e in journal_envelopes(gw.journal, "uplink/city/health")]
                assert states.index("OFFLINE") < len(states) - 1 - states[::-1].index("ONLINE")


async def test_a_superior_that_forgets_us_is_registered_to_again_at_once():
    # a restart of the superior that kept its port: it answers our keepalive with 404
    async with platform() as sim:
        async with gateway(sim) as gw:  # retry_s stays 60 s: no failed registration is waited for
            await sim.wait(lambda: lower(sim) and lower(sim).registered, what="registration")
            lower(sim).registered = False
            await sim.wait(lambda: lower(sim).registered and lower(sim).registrations >= 2, what="re-registration")
            assert gw.uplinks.get("city").counters.get("registration_failures", 0) == 0


async def test_wrong_password_is_a_reason_in_health():
    async with platform() as sim:
        async with gateway(sim, password="not-the-password") as gw:
            entry = gw.supervisor.lookup("city")
            await until(lambda: "403" in entry.reason, timeout=20, what="the refusal in the uplink's health")
            assert entry.state.value == "OFFLINE" and "registering again in 60 s" in entry.reason
            assert sim.of("register_refused")


# -- mobile positions -----------------------------------------------------------------------------
async def test_a_jt808_vehicles_fixes_arrive_as_mobile_position_notifies_at_the_interval():
    from jt808_helpers import SECRET, RawTerminal, location
    from tianwang.drivers.jt808 import protocol as p

    listener = {"id": "fleet", "driver": "jt808", "listen": "127.0.0.1:0", "auth_secret": SECRET}
    async with platform(position_interval=1) as sim:
        async with gateway(sim, listeners=[listener], datum="gcj02") as gw:
            await sim.wait(lambda: sim.of("register"), what="registration")
            port = gw.supervisor._running["fleet"].driver.port
            car = await RawTerminal("13900000007").connect(port)
            try:
                assert await car.login() == 0
                car_id = rule_id(LOCAL_ID, "gnss", "13900000007")
                # the vehicle reports several fixes a second; the superior asked for one notify a second
                for i in range(12):
                    await car.send(p.LOCATION, location(lat=27.85 + i * 0.0001, lon=112.9))
                    await car.ack()
                    await asyncio.sleep(0.25)
                await sim.wait(lambda: len(sim.of("mobile_position", device_id=car_id)) >= 2, what="two notifies")
            finally:
                car.close()
            got = [r for r in sim.received if r["kind"] == "mobile_position" and r["device_id"] == car_id]
            # at most one notify per interval (the newest fix), never one per fix
            gaps = [b["t"] - a["t"] for a, b in zip(got, got[1:], strict=False)]
            assert all(g >= 0.8 for g in gaps), gaps
            assert len(got) < 12
            # converted to the datum the uplink asks for (GCJ-02 is offset from WGS-84 in China)
            from tianwang.drivers.gb28181.datum import wgs84_to_gcj02

            last = got[-1]
            fixes = [e["payload"] for e in journal_envelopes(gw.journal, "gnss/13900000007/fix")]
            want = [wgs84_to_gcj02(f["lat"], f["lon"]) for f in fixes]
            assert any(abs(last["lat"] - la) < 1e-6 and abs(last["lon"] - lo) < 1e-6 for la, lo in want)
            assert all(abs(last["lat"] - f["lat"]) > 1e-5 or abs(last["lon"] - f["lon"]) > 1e-5 for f in fixes)


# -- PTZ and live video from the superior ---------------------------------------------------------
async def test_ptz_from_the_superior_moves_the_onvif_camera_and_is_audited():
    async with platform() as sim, camera(rate=0.2) as cam:
        async with gateway(sim, devices=[device(cam)]) as gw:
            await sim.wait(lambda: sim.of("register"), what="registration")
            await until(lambda: gw.supervisor.lookup("cam-1").state.value == "ONLINE", what="camera online", timeout=20)
            cam_id = rule_id(LOCAL_ID, "camera", "cam-1")
            before = cam.ptz.position()
            resp = await sim.ptz(LOCAL_ID, cam_id, ptz.ptz_cmd(0.5, 0.0, 0.0))
            assert resp.status == 200
            await until(lambda: cam.ptz.position()[0] > before[0] + 0.01, timeout=10, what="the camera turning")
            await sim.ptz(LOCAL_ID, cam_id, ptz.stop_cmd())
            await until(
                lambda: len(journal_envelopes(gw.journal, "audit/cam-1/command")) >= 2, what="audit", timeout=15
            )
            audits = [e["payload"] for e in journal_envelopes(gw.journal, "audit/cam-1/command")]
            assert {a["action"] for a in audits} >= {"ptz_move", "ptz_stop"}
            assert all(a["principal"] == "uplink:city" for a in audits)
            move = next(a for a in audits if a["action"] == "ptz_move")
            assert move["args"]["pan"] == pytest.approx(0.5, abs=0.01)

            # live video of an ONVIF camera: a clear refusal naming the reason, not a timeout
            from tianwang.drivers.gb28181 import sdp

            offer = sdp.build_offer(session_id=1, origin_id=sim.id, ip="127.0.0.1", port=30000, ssrc="0000000001")
            _, answer = await sim.invite(LOCAL_ID, cam_id, offer)
            assert answer.status == 488 and "ONVIF" in answer.reason


async def test_ptz_outside_the_uplinks_control_grant_is_refused_with_the_gb_error_and_audited():
    async with platform() as sim, camera(rate=0.2) as cam:
        async with gateway(sim, devices=[device(cam)], control=[]) as gw:
            await sim.wait(lambda: sim.of("register"), what="registration")
            await until(lambda: gw.supervisor.lookup("cam-1").state.value == "ONLINE", what="camera online", timeout=20)
            cam_id = rule_id(LOCAL_ID, "camera", "cam-1")
            before = cam.ptz.position()
            await sim.ptz(LOCAL_ID, cam_id, ptz.ptz_cmd(0.5, 0.0, 0.0))
            await sim.wait(lambda: sim.of("message", cmd_type="DeviceControl"), what="the refusal")
            refusal = sim.of("message", cmd_type="DeviceControl")[0]
            assert refusal["root"] == "Response" and refusal["fields"]["Result"] == "ERROR"
            assert "PERMISSION_DENIED" in refusal["fields"]["Reason"]
            audit = journal_envelopes(gw.journal, "audit/cam-1/command")[-1]["payload"]
            assert audit["ok"] is False and audit["principal"] == "uplink:city" and audit["code"] == "PERMISSION_DENIED"
            assert cam.ptz.position() == before


# -- catalog notifies -----------------------------------------------------------------------------
async def test_a_reload_that_adds_a_camera_sends_catalog_notify_add_and_health_changes_send_on_off(tmp_path):
    import json

    from tianwang.gateway.app import Gateway

    async with platform() as sim, camera(rate=0.2) as cam1, camera(rate=0.2) as cam2:
        reg = registry(onvif.SPEC)
        raw = base_config(devices=[device(cam1)], control=["camera/+"], name="uplink")
        raw["uplinks"] = [uplink_entry(sim)]
        path = tmp_path / "gateway.yaml"
        path.write_text(json.dumps(raw))
        gw = Gateway(load_config(str(path), reg), registry=reg, config_path=str(path))
        await gw.start()
        try:
            await sim.wait(lambda: lower(sim) and lower(sim).catalog_complete, what="the first catalog")
            await until(lambda: len(gw.uplinks.get("city").requests.subs) >= 3, what="subscriptions", timeout=20)
            cam2_id = rule_id(LOCAL_ID, "camera", "cam-2")
            raw["devices"].append(device(cam2, id="cam-2"))
            path.write_text(json.dumps(raw))
            assert await gw.reload()
            await sim.wait(lambda: sim.of("catalog_notify", device_id=cam2_id, event="ADD"), what="NOTIFY ADD")
            # the new camera comes online: ON; it goes away: OFF
            await until(lambda: gw.supervisor.lookup("cam-2").state.value == "ONLINE", what="cam-2 online", timeout=20)
            await sim.wait(lambda: sim.of("catalog_notify", device_id=cam2_id, event="ON"), what="NOTIFY ON")
            await cam2.stop()
            await sim.wait(
                lambda: sim.of("catalog_notify", device_id=cam2_id, event="OFF"), what="NOTIFY OFF", timeout=40
            )
            raw["devices"].pop()
            path.write_text(json.dumps(raw))
            assert await gw.reload()
            await sim.wait(lambda: sim.of("catalog_notify", device_id=cam2_id, event="DEL"), what="NOTIFY DEL")
            # cam-1 stayed: never added nor deleted (an UPDATE is allowed: its facts, read from the
            # camera after the first catalog, are news to the superior)
            events = [
                (r["device_id"], r["event"]) for r in sim.of("catalog_notify") if r["event"] in ("ADD", "DEL", "UPDATE")
            ]
            assert [e for e in events if e[0] == cam2_id] == [(cam2_id, "ADD"), (cam2_id, "DEL")]
            assert {e[1] for e in events if e[0] != cam2_id} <= {"UPDATE"}
        finally:
            await gw.stop()


# -- GB/T 28181 channels behind the gateway -------------------------------------------------------
async def test_gb_channels_keep_their_ids_their_alarms_go_up_and_an_invite_is_relayed_to_the_device():
    import struct

    import tianwang.drivers.gb28181 as gb28181
    from tianwang.drivers.gb28181 import sdp
    from tianwang.drivers.gb28181.simulator import Fleet

    loop = asyncio.get_running_loop()
    packets = []

    class Rx(asyncio.DatagramProtocol):
        def datagram_received(self, data, addr):
            packets.append(data)

    rx, _ = await loop.create_datagram_endpoint(Rx, local_addr=("127.0.0.1", 0))
    media_port = rx.get_extra_info("sockname")[1]
    listener = {
        "id": "gb",
        "driver": "gb28181",
        "listen": "127.0.0.1:0",
        "server_id": "43030000002000000001",
        "registration": "open",
        "password": "12345678",
        "keepalive": {"interval_s": 1, "count": 2},
    }
    try:
        async with platform() as sim:
            from tianwang.gateway.app import Gateway

            reg = registry(gb28181.SPEC)
            raw = base_config(listeners=[listener], control=["camera/+"], name="uplink")
            raw["uplinks"] = [uplink_entry(sim)]
            gw = Gateway(load_config(raw, reg), registry=reg)
            await gw.start()
            fleet = None
            try:
                entry = gw.supervisor.lookup("gb")
                await until(lambda: "listen" in entry.info, what="listener bound")
                fleet = Fleet(
                    "127.0.0.1",
                    int(entry.info["listen"].rsplit(":", 1)[1]),
                    devices=1,
                    channels=2,
                    alarm_rate=2.0,
                    keepalive_s=0.5,
                )
                await fleet.start()
                await fleet.wait_online()
                channel = fleet.devices[0].channels[1]
                await until(lambda: gw.supervisor.lookup(channel.id) is not None, 10, "channel listed")
                await until(lambda: gw.supervisor.lookup(channel.id).state.value == "ONLINE", 10, "channel online")

                # the catalog names the channel by its own ID, the NVR itself is not a camera
                sim.received.clear()
                await sim.query(LOCAL_ID, "Catalog")
                await sim.wait(lambda: sim.of("catalog"), what="catalog")
                ids = {i["id"] for i in sim.of("catalog")[-1]["items"]}
                assert channel.id in ids and fleet.devices[0].id not in ids

                # a GB alarm of a channel goes up with its own method and type
                await sim.wait(
                    lambda: [a for a in sim.of("alarm") if a["device_id"].startswith(channel.id[:10])],
                    what="a GB alarm",
                    timeout=30,
                )

                offer = sdp.build_offer(
                    session_id=7, origin_id=sim.id, ip="127.0.0.1", port=media_port, ssrc="0430300001"
                )
                invite, answer = await sim.invite(LOCAL_ID, channel.id, offer)
                assert answer.status == 200, answer.reason
                assert sdp.parse_sdp(answer.body).port > 0
                await until(lambda: len(packets) >= 5, 15, "RTP from the device at the superior's address")
                ssrcs = {struct.unpack(">I", p[8:12])[0] for p in packets}
                assert ssrcs == {430300001}  # the superior's y=, so its media server knows the stream
                await until(lambda: fleet.stats()["calls_active"] == 1, 5, "the call at the device")
                assert (await sim.bye(LOCAL_ID, invite, answer)).status == 200
                await until(lambda: fleet.stats()["calls_active"] == 0, 10, "BYE relayed to the device")
                await until(lambda: len(journal_envelopes(gw.journal, f"audit/{channel.id}/command")) >= 2, 10, "audit")
                audits = [e["payload"] for e in journal_envelopes(gw.journal, f"audit/{channel.id}/command")]
                assert [a["action"] for a in audits if a["principal"] == "uplink:city"] == ["play", "stop_play"]

                # a call the device itself ends (its own BYE) ends towards the superior too
                invite3, answer3 = await sim.invite(LOCAL_ID, channel.id, offer)
                assert answer3.status == 200
                await until(lambda: fleet.stats()["calls_active"] == 1, 5, "the third call at the device")
                assert fleet.devices[0].hang_up() == 1
                await sim.wait(lambda: sim.of("bye", call_id=invite3.call_id), what="BYE passed upward", timeout=15)
                ended = [e["payload"] for e in journal_envelopes(gw.journal, f"camera/{channel.id}/call")]
                assert [(c["state"], c["by"]) for c in ended] == [("ended", "device")]

                # a call whose device goes away ends with our BYE towards the superior
                invite2, answer2 = await sim.invite(LOCAL_ID, channel.id, offer)
                assert answer2.status == 200
                await fleet.stop()  # the NVR goes silent: its keepalives stop, its channels go offline
                fleet = None
                await sim.wait(lambda: sim.of("bye", call_id=invite2.call_id), what="BYE from the gateway", timeout=30)
                assert sim.of("bye")[-1]["channel"] == channel.id
            finally:
                if fleet is not None:
                    await fleet.stop()
                await gw.stop()
    finally:
        rx.close()


# -- the demo and the CLI -------------------------------------------------------------------------
async def test_the_demo_registers_to_its_superior_platform_and_feeds_it():
    from tianwang.gateway.cli.demo import run_demo

    started = asyncio.get_running_loop().create_future()
    task = asyncio.ensure_future(run_demo(listen="127.0.0.1:0", metrics="off", live=False, ready=started.set_result))
    gw = await asyncio.wait_for(started, 60)
    try:
        up = gw.uplinks.get("city")
        await until(
            lambda: (
                up.registered
                and up.counters.get("queries_catalog", 0) >= 1
                and up.counters.get("notifies_mobileposition", 0) >= 1
            ),
            40,
            "the demo's superior registered to, queried and sent positions",
        )
        assert gw.supervisor.lookup("city").state.value == "ONLINE"
    finally:
        gw.request_stop()
        assert await asyncio.wait_for(task, 30) == 0


def test_simulate_gb28181_platform_prints_where_it_listens_and_what_it_receives(tmp_path):
    import json
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "tianwang", "simulate", "gb28181-platform", "--jsonl", "--password", "pw-0123"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = json.loads(proc.stdout.readline())
        assert first["kind"] == "gb28181-platform" and first["url"].startswith("udp://127.0.0.1:")
        assert first["id"] == "43000000002000000001" and first["password"] == "pw-0123"
        port = int(first["url"].rsplit(":", 1)[1])

        async def register():
            from tianwang.gateway.app import Gateway

            raw = base_config(name="uplink")
            raw["uplinks"] = [
                {
                    "id": "city",
                    "superior": f"127.0.0.1:{port}",
                    "superior_id": first["id"],
                    "local_id": LOCAL_ID,
                    "password": "pw-0123",
                    "bind": "127.0.0.1:0",
                }
            ]
            gw = Gateway(load_config(raw, registry()), registry=registry())
            await gw.start()
            try:
                await until(lambda: gw.supervisor.lookup("city").state.value == "ONLINE", 20, "registered")
            finally:
                await gw.stop()

        asyncio.run(register())
        line = json.loads(proc.stdout.readline())
        assert line["kind"] == "register" and line["from"] == LOCAL_ID
    finally:
        proc.terminate()
        proc.wait(10)
    assert proc.returncode == 0


async def test_device_info_status_reset_alarm_and_the_alarm_subscription_filters():
    async with platform(subscribe=False) as sim, camera(rate=5) as cam:
        async with gateway(sim, devices=[device(cam)]) as gw:
            await sim.wait(lambda: sim.of("register"), what="registration")
            await until(lambda: gw.supervisor.lookup("cam-1").state.value == "ONLINE", what="camera online", timeout=20)
            cam_id = rule_id(LOCAL_ID, "camera", "cam-1")
            await sim.query(LOCAL_ID, "DeviceInfo")
            await sim.query(LOCAL_ID, "DeviceStatus", target=cam_id)
            await sim.wait(lambda: len(sim.of("message", root="Response")) >= 2, what="two answers")
            answers = {r["cmd_type"]: r for r in sim.of("message", root="Response")}
            assert answers["DeviceInfo"]["device_id"] == LOCAL_ID and answers["DeviceInfo"]["fields"]["Result"] == "OK"
            assert answers["DeviceStatus"]["device_id"] == cam_id
            assert answers["DeviceStatus"]["fields"]["Online"] == "ONLINE"
            assert (await sim.query(LOCAL_ID, "DeviceInfo", target="43030000001329999999")).status == 404

            from tianwang.drivers.gb28181 import manscdp

            body = manscdp.build("Control", "DeviceControl", 77, cam_id, [("AlarmCmd", "ResetAlarm")])
            assert (await sim.send(LOCAL_ID, sim.request(LOCAL_ID, "MESSAGE", body=body))).status == 200
            await sim.wait(
                lambda: [r for r in sim.of("message", cmd_type="DeviceControl") if r["fields"].get("Result") == "OK"],
                what="ResetAlarm acknowledged",
            )

            # an alarm subscription for device alarms (method 2) only: the camera's motion (5) stays out
            await sim.subscribe_to(
                LOCAL_ID, "Alarm", [("StartAlarmPriority", 1), ("EndAlarmPriority", 4), ("AlarmMethod", 2)]
            )
            up = gw.uplinks.get("city")
            await until(lambda: up.counters.get("alarms_filtered", 0) >= 3, 30, "motion alarms filtered out")
            assert not [a for a in sim.of("alarm") if a["via"] == "NOTIFY" and 5 in a["method"]]


async def test_over_tcp_the_superior_queries_and_controls_on_our_connection():
    async with platform() as sim, camera(rate=5) as cam:
        async with gateway(sim, devices=[device(cam)], transport="tcp") as gw:
            await sim.wait(lambda: lower(sim) and lower(sim).registered, what="registration over TCP")
            assert lower(sim).transport == "tcp"
            await sim.wait(lambda: len(sim.of("keepalive")) >= 2, what="keepalives over TCP")
            await until(lambda: gw.supervisor.lookup("cam-1").state.value == "ONLINE", what="camera online", timeout=20)
            cam_id = rule_id(LOCAL_ID, "camera", "cam-1")
            sim.received.clear()
            await sim.query(LOCAL_ID, "Catalog")
            await sim.wait(lambda: sim.of("catalog"), what="catalog over TCP")
            assert cam_id in {i["id"] for i in sim.of("catalog")[-1]["items"]}
            before = cam.ptz.position()
            await sim.ptz(LOCAL_ID, cam_id, ptz.ptz_cmd(0.0, 0.5, 0.0))
            await until(lambda: cam.ptz.position()[1] > before[1] + 0.01, timeout=10, what="the camera tilting")
            await sim.ptz(LOCAL_ID, cam_id, ptz.stop_cmd())


async def test_the_registration_is_refreshed_before_it_expires_in_the_same_call():
    async with platform(grant_expires=2) as sim:
        async with gateway(sim) as gw:
            await sim.wait(lambda: len(sim.of("register")) >= 3, what="two refreshes", timeout=30)
            assert len({r["call_id"] for r in sim.of("register")}) == 1
            assert gw.uplinks.get("city").counters["refreshes"] >= 1  # (the third is counted once answered)
            assert gw.supervisor.lookup("city").state.value == "ONLINE"


async def test_a_large_catalog_goes_in_chunks_within_udp_size_grouped_per_site():
    # 30 cameras that cannot be reached: in the catalog all the same (status OFF), under their sites
    cams = [
        {
            "id": f"cam-{i:02d}",
            "driver": "onvif",
            "host": "127.0.0.1",
            "port": 9,
            "username": "u",
            "password": "p",
            "labels": {"site": "Yuhu" if i % 2 else "Yuetang", "name": f"路口 {i}"},
            "backoff": {"initial_s": 30, "max_s": 60},
        }
        for i in range(30)
    ]
    async with platform(subscribe=False) as sim:
        async with gateway(sim, devices=cams, groups="site") as gw:
            await sim.wait(lambda: sim.of("register"), what="registration")
            assert gw.supervisor.lookup("cam-00") is not None
            await sim.query(LOCAL_ID, "Catalog")
            await sim.wait(lambda: sim.of("catalog"), what="the whole catalog")
            catalog = sim.of("catalog")[-1]
            assert lower(sim).catalog_complete and catalog["sum_num"] == len(catalog["items"]) == 1 + 2 + 30
            assert sim.catalog_chunks > 3  # one UDP body could not hold it
            items = {i["id"]: i for i in catalog["items"]}
            groups = {i["name"]: i["id"] for i in items.values() if i["kind"] == "business_group"}
            assert set(groups) == {"Yuhu", "Yuetang"}
            cam = items[rule_id(LOCAL_ID, "camera", "cam-01")]
            assert (
                cam["status"] == "OFF" and groups["Yuhu"] in cam["parent_ids"] and cam["name"] == "路口 1"
            )  # labels.name, through GB2312


async def test_a_reload_restarts_a_changed_uplink_and_a_removed_one_unregisters(tmp_path):
    import json

    from tianwang.gateway.app import Gateway

    async with platform() as sim:
        reg = registry()
        raw = base_config(name="uplink")
        raw["uplinks"] = [uplink_entry(sim)]
        path = tmp_path / "gateway.yaml"
        path.write_text(json.dumps(raw))
        gw = Gateway(load_config(str(path), reg), registry=reg, config_path=str(path))
        await gw.start()
        try:
            await sim.wait(lambda: sim.of("register"), what="registration")
            raw["uplinks"][0]["name"] = "Xiangtan gateway"
            path.write_text(json.dumps(raw))
            assert await gw.reload()
            await sim.wait(lambda: len({r["call_id"] for r in sim.of("register")}) == 2, what="a new registration")
            assert sim.of("unregister")  # the old one said goodbye
            raw["uplinks"] = []
            path.write_text(json.dumps(raw))
            assert await gw.reload()
            await sim.wait(lambda: len(sim.of("unregister")) == 2, what="unregistered")
            assert gw.supervisor.lookup("city") is None
        finally:
            await gw.stop()
