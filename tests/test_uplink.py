"""GB/T 28181 uplinks: the gateway registering to a superior platform (the platform simulator on
127.0.0.1) with an ONVIF camera simulator and a JT/T 808 vehicle behind it."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

import tianwang.drivers.jt808 as jt808
import tianwang.drivers.onvif as onvif
from tianwang.drivers.gb28181 import ptz
from tianwang.gateway.errors import ConfigError
from tianwang.gateway.lifecycle.config import load_config
from tianwang.gateway.uplink.ids import rule_id
from tianwang.gateway.uplink.platform_sim import PlatformSim
from tianwang.v1 import gateway_pb2 as pb

from gw import READ, base_config, client, journal_envelopes, md, registry, until
from onvif_helpers import camera, device

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
    raw = base_config(devices=[{**cam, "id": "cam-1", "gb_id": "43030000001320000001"},
                               {**cam, "id": "cam-2", "gb_id": "43030000001320000001"}])
    up = {"id": "city", "superior": "127.0.0.1:5060", "superior_id": "43000000002000000001",
          "local_id": LOCAL_ID, "password": "x"}
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

            # a motion event of the simulated camera reaches the superior as a GB alarm (video, motion)
            # (the simulated camera raises motion, line crossing and tamper events at its rate)
            await sim.wait(lambda: sim.of("alarm", device_id=cam_id, alarm_kind="motion"), what="the motion alarm", timeout=30)
            alarm = sim.of("alarm", device_id=cam_id, alarm_kind="motion")[0]
            assert alarm["method"] == [5] and alarm["type"] == 2 and alarm["via"] == "NOTIFY"


async def test_a_superior_that_goes_away_and_comes_back_gets_a_new_registration():
    async with platform() as sim:
        port, password = sim.port, sim.password
        async with gateway(sim, retry_s=0.3) as gw:
            entry = gw.supervisor.lookup("city")
            await sim.wait(lambda: lower(sim) and lower(sim).registered, what="registration")
            await sim.stop()  # the superior goes away: keepalives go unanswered
            await until(lambda: entry.state.value == "OFFLINE" and "registering again" in entry.reason, timeout=20,
                        what="uplink OFFLINE")
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
