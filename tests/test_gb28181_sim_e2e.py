"""The GB/T 28181 device simulator into the real gb28181 listener of an in-process gateway, read
back through gRPC and the journal: registration over UDP and TCP, catalogs, alarms with their
ResetAlarm, 4G positions, PTZ and preset commands, and each field fault of the simulator (live video
through `play` is in test_gb28181_e2e.py)."""

import asyncio
import contextlib
import json

import msgpack
import pytest

import tianwang.drivers.gb28181 as gb28181
from gw import CONTROL, READ, base_config, client, journal_envelopes, md, running, until
from tianwang.drivers.gb28181.simulator import DEFAULT_SERVER_ID, Fleet
from tianwang.v1 import gateway_pb2 as pb

pytestmark = pytest.mark.timeout(90)
PASSWORD = "sim-e2e-password"


@contextlib.asynccontextmanager
async def gateway(tmp_path, **extra):
    listener = {
        "id": "gb",
        "driver": "gb28181",
        "listen": "127.0.0.1:0",
        "server_id": DEFAULT_SERVER_ID,
        "registration": "open",
        "password_env": "TW_GB_SIM_E2E_PASSWORD",
        "registrations_file": str(tmp_path / "gb.registrations"),
        "keepalive": {"interval_s": 0.5, "count": 2},
        "subscribe": {"catalog": True, "alarm": None, "mobile_position": None},
    }
    listener.update(extra)
    config = base_config(listeners=[listener], control=["camera/+"], name="gb")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TW_GB_SIM_E2E_PASSWORD", PASSWORD)
        async with running(config, gb28181.SPEC) as gw:
            entry = gw.supervisor.lookup("gb")
            await until(lambda: "listen" in entry.info, what="listener bound")
            yield gw, int(entry.info["listen"].rsplit(":", 1)[1])


async def fleet_into(port, **kw):
    kw.setdefault("password", PASSWORD)
    kw.setdefault("keepalive_s", 0.2)
    fleet = Fleet("127.0.0.1", port, **kw)
    await fleet.start()
    return fleet


def state(gw, dev_id):
    entry = gw.supervisor.lookup(dev_id)
    return entry.state.value if entry is not None else None


def children(gw, dev_id):
    return [e for e in gw.supervisor.entries.values() if e.parent == dev_id]


async def command(gw, target, action, reason="sim e2e", **args):
    async with client(gw) as (stub, _):
        reply = await stub.SendCommand(
            pb.CommandRequest(
                device_id=target, action=action, args=msgpack.packb(args), reason=reason, timeout_ms=10000
            ),
            metadata=md(CONTROL),
        )
    assert reply.ok, (action, reply.code, reply.message)
    return msgpack.unpackb(reply.result) if reply.result else {}


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_fleet_registers_with_its_catalog_and_alarms_reach_subscribers(tmp_path, transport):
    async with gateway(tmp_path) as (gw, port):
        fleet = await fleet_into(port, devices=2, channels=4, transport=transport)
        try:
            ids = [d.id for d in fleet.devices]
            await until(lambda: all(state(gw, i) == "ONLINE" for i in ids), 20, "ONLINE")
            await until(lambda: all(len(children(gw, i)) == 4 for i in ids), 20, "catalogs")
            nvr = fleet.devices[0]
            names = {e.info.get("name") for e in children(gw, nvr.id)}
            assert names == {ch.name for ch in nvr.channels}  # GB2312 on the wire, UTF-8 in ListDevices
            ch = nvr.channels[1]
            async with client(gw) as (stub, _):
                call = stub.Subscribe(pb.SubscribeRequest(topics=["camera/#"], from_seq=1), metadata=md(READ))
                assert fleet.alarm(nvr.id, ch.id, "tripwire") and fleet.alarm(nvr.id, ch.id, "video_loss")
                kinds = []
                async for batch in call:
                    kinds += [
                        msgpack.unpackb(e.payload)["kind"]
                        for e in batch.envelopes
                        if e.topic == f"camera/{ch.id}/alarm"
                    ]
                    if len(kinds) == 2:
                        break
                call.cancel()
            assert kinds == ["line_crossing", "video_loss"]
            # the listener answers a device alarm with ResetAlarm, so the next one comes
            await until(lambda: fleet.counters["resets_received"] >= 1 and not ch.alarm_latched, 10, "ResetAlarm")
            assert fleet.alarm(nvr.id, ch.id, "video_loss")
        finally:
            await fleet.stop()
        await until(lambda: all(state(gw, i) == "OFFLINE" for i in ids), 10, "unregistered")


async def test_body_cameras_positions_reach_gnss_fix(tmp_path):
    async with gateway(tmp_path, subscribe={"catalog": False, "mobile_position": {"interval_s": 1}}) as (gw, port):
        fleet = await fleet_into(port, devices=0, mobile=2)
        try:
            await until(
                lambda: all(
                    len([e for e in journal_envelopes(gw.journal, f"gnss/{d.id}/fix")]) >= 2 for d in fleet.devices
                ),
                20,
                "fixes",
            )
        finally:
            await fleet.stop()
        for d in fleet.devices:
            fixes = [e["payload"] for e in journal_envelopes(gw.journal, f"gnss/{d.id}/fix")]
            assert all(f["source"] == "gb28181" and abs(f["lat"] - 27.83) < 0.12 for f in fixes)
            assert len({(f["lat"], f["lon"]) for f in fixes}) == len(fixes)  # driving


async def test_ptz_and_preset_commands_move_the_simulated_head(tmp_path):
    loop = asyncio.get_running_loop()
    async with gateway(tmp_path) as (gw, port):
        fleet = await fleet_into(port, devices=1, channels=2)
        try:
            nvr = fleet.devices[0]
            ch = nvr.channels[0]
            await until(lambda: len(children(gw, nvr.id)) == 2, 20, "catalog")
            start = ch.head.position(loop.time())[0]
            await command(gw, ch.id, "ptz_move", pan=0.5, duration_s=1)
            await until(lambda: ch.head.commands >= 2 and not ch.head.moving(), 10, "move then stop")
            assert (ch.head.position(loop.time())[0] - start) % 360 > 10  # about 30 degrees at half speed
            here = ch.head.position(loop.time())
            await command(gw, ch.id, "preset_set", token=5)
            assert 5 in ch.head.presets
            assert "5" in json.dumps(await command(gw, ch.id, "preset_list"))
            await command(gw, ch.id, "ptz_move", tilt=-1.0, duration_s=0.5)
            await until(lambda: not ch.head.moving() and ch.head.position(loop.time())[1] < here[1], 10, "tilted")
            await command(gw, ch.id, "preset_goto", token=5)
            await until(lambda: ch.head.position(loop.time()) == pytest.approx(here), 10, "back at preset 5")
            await command(gw, ch.id, "preset_delete", token=5)
            await until(lambda: 5 not in ch.head.presets, 10, "preset deleted")
            assert nvr.channels[1].head.commands == 0
        finally:
            await fleet.stop()


# -- field faults -----------------------------------------------------------------------------------
async def test_wrong_password_never_comes_online(tmp_path):
    async with gateway(tmp_path) as (gw, port):
        fleet = await fleet_into(
            port, devices=1, channels=1, faults={"wrong_password"}, backoff_initial=0.1, backoff_max=0.2
        )
        try:
            await until(lambda: fleet.counters["register_refused"] >= 2, 10, "403s")
            assert state(gw, fleet.devices[0].id) in (None, "OFFLINE")
        finally:
            await fleet.stop()


async def test_no_keepalive_unit_goes_offline_and_comes_back_on_register(tmp_path):
    async with gateway(tmp_path) as (gw, port):
        fleet = await fleet_into(port, devices=1, channels=1, faults={"no_keepalive"})
        d = fleet.devices[0]
        try:
            await until(lambda: state(gw, d.id) == "ONLINE", 10, "ONLINE")
            await until(lambda: state(gw, d.id) == "OFFLINE", 10, "OFFLINE without keepalives")
            assert gw.supervisor.lookup(d.id).info.get("version") == "2022"
            d.register()  # its next REGISTER brings it back
            await until(lambda: state(gw, d.id) == "ONLINE", 10, "back ONLINE")
        finally:
            await fleet.stop()


async def test_nat_rebinding_moves_the_device_address(tmp_path):
    async with gateway(tmp_path) as (gw, port):
        fleet = await fleet_into(port, devices=1, channels=1, faults={"nat_rebind"}, rebind_after_s=0.5)
        d = fleet.devices[0]
        try:
            await until(lambda: state(gw, d.id) == "ONLINE", 10, "ONLINE")
            first = gw.supervisor.lookup(d.id).info["address"]
            await until(lambda: fleet.counters["rebinds"] == 1, 10, "rebind")
            new = f"127.0.0.1:{d.link.local()[1]}"
            assert new != first
            await until(lambda: gw.supervisor.lookup(d.id).info["address"] == new, 10, "new address")
            await command(gw, d.channels[0].id, "ptz_move", pan=-0.5, duration_s=0.5)  # reached at the new port
            await until(lambda: d.channels[0].head.commands >= 2, 10, "PTZ at the new port")
            assert state(gw, d.id) == "ONLINE"
        finally:
            await fleet.stop()


async def test_bad_xml_catalog_is_repaired_and_complete(tmp_path):
    async with gateway(tmp_path) as (gw, port):
        fleet = await fleet_into(port, devices=1, channels=3, faults={"bad_xml"})
        d = fleet.devices[0]
        try:
            await until(lambda: len(children(gw, d.id)) == 3, 20, "catalog")
            assert "湘潭 & 韶山联络线卡口" in {e.info.get("name") for e in children(gw, d.id)}
        finally:
            await fleet.stop()


async def test_duplicated_requests_publish_each_alarm_once(tmp_path):
    async with gateway(tmp_path) as (gw, port):
        fleet = await fleet_into(port, devices=1, channels=2, faults={"duplicate"})
        d = fleet.devices[0]
        try:
            await until(lambda: len(children(gw, d.id)) == 2, 20, "catalog")
            for _ in range(5):
                assert fleet.alarm(d.id, d.channels[0].id, "motion")
            await until(lambda: fleet.counters["alarms_acked"] == 5, 10, "acks")
            await asyncio.sleep(0.5)
        finally:
            await fleet.stop()
        assert len(journal_envelopes(gw.journal, f"camera/{d.channels[0].id}/alarm")) == 5
        assert fleet.counters["duplicates_sent"] > 0


async def test_storm_of_re_registrations_keeps_everyone_online(tmp_path):
    async with gateway(tmp_path) as (gw, port):
        fleet = await fleet_into(port, devices=30, channels=2, keepalive_s=0.3)
        try:
            ids = [d.id for d in fleet.devices]
            await until(lambda: all(state(gw, i) == "ONLINE" for i in ids), 30, "ONLINE")
            before = fleet.counters["registered"]
            fleet.storm()
            await until(lambda: fleet.counters["registered"] >= before + 30, 30, "storm answered")
            assert all(state(gw, i) == "ONLINE" for i in ids) and fleet.counters["register_refused"] == 0
        finally:
            await fleet.stop()


async def test_slow_catalog_still_completes(tmp_path):
    async with gateway(tmp_path) as (gw, port):
        fleet = await fleet_into(port, devices=1, channels=14, faults={"slow_catalog"})
        d = fleet.devices[0]
        try:
            await until(lambda: len(children(gw, d.id)) == 14, 40, "slow catalog")
            assert d.last_catalog_chunks >= 2
        finally:
            await fleet.stop()
