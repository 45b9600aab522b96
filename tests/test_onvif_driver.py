"""The onvif driver against the simulated camera over real HTTP on loopback, inside an in-process
gateway: connect and describe, clock skew, wrong password, unreachable, events end to end into a gRPC
subscriber, a camera without events."""

import asyncio
import contextlib
import socket

import grpc
import msgpack
import pytest

from gw import READ, md, until
from onvif_helpers import camera, device, entry, gateway
from tianwang.v1 import gateway_pb2 as pb

pytestmark = pytest.mark.timeout(90)


async def test_connect_describes_the_camera_in_list_devices():
    async with camera() as sim, gateway(device(sim)) as (gw, stub):
        await until(lambda: entry(gw).state.value == "ONLINE", 20, "camera ONLINE")
        reply = await stub.ListDevices(pb.ListDevicesRequest(family="camera"), metadata=md(READ))
        (row,) = reply.devices
        assert (row.id, row.family, row.driver, row.state) == ("cam-1", "camera", "onvif", "ONLINE")
        info = dict(row.info)
        assert info["manufacturer"] == "Tianwang" and info["model"] == "TW-SIM-1"
        assert info["serial"] == sim.serial
        assert info["profiles"] == "profile_main"
        assert info["stream_uri.profile_main"] == "rtsp://127.0.0.1:554/profile_main"
        assert info["ptz"] == "yes" and info["events"] == "pullpoint"
        assert abs(float(info["clock_skew_s"])) < 2
        assert sim.counters["auth_failures"] == 0


async def test_skewed_camera_clock_is_compensated_and_reported():
    async with camera(clock_offset_s=3600) as sim, gateway(device(sim)) as (gw, stub):
        await until(lambda: entry(gw).state.value == "DEGRADED", 20, "skewed camera DEGRADED")
        e = entry(gw)
        assert "clock skew +3600" in e.reason or "clock skew +3599" in e.reason
        assert 3598 <= float(e.info["clock_skew_s"]) <= 3601
        # signed with the camera's time: every authenticated request passed
        assert sim.counters["auth_failures"] == 0
        await until(lambda: e.counters.get("events", 0) >= 1, 20, "events from the skewed camera")


async def test_camera_rejects_a_client_that_does_not_compensate():
    """The simulator really checks the clock: a UsernameToken stamped with our own time fails."""
    from onvif import ONVIFCamera
    from zeep.exceptions import Fault

    async with camera(clock_offset_s=3600) as sim:
        cam = ONVIFCamera(sim.host, sim.port, sim.username, sim.password, no_cache=True, adjust_time=False)
        try:
            with pytest.raises(Fault) as info:
                await cam.update_xaddrs()
            assert "not authorized" in str(info.value.message).lower()
        finally:
            await cam.close()
        assert sim.counters["auth_failures"] >= 1


async def test_wrong_password_is_offline_with_auth_failed():
    async with camera() as sim, gateway(device(sim, password="not-the-password")) as (gw, stub):
        await until(lambda: "authentication failed" in entry(gw).reason, 20, "auth failure reason")
        e = entry(gw)
        assert e.state.value == "OFFLINE"
        assert "user 'admin'" in e.reason
        assert sim.counters["auth_failures"] >= 1


async def test_unreachable_camera_is_offline_with_reason():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    dev = {
        "id": "cam-1",
        "driver": "onvif",
        "host": "127.0.0.1",
        "port": port,
        "username": "admin",
        "password": "x",
        "backoff": {"initial_s": 0.2, "max_s": 1.0},
    }
    async with gateway(dev) as (gw, stub):
        await until(lambda: "unreachable" in entry(gw).reason, 20, "unreachable reason")
        assert entry(gw).state.value == "OFFLINE"
        assert f"127.0.0.1:{port}" in entry(gw).reason


async def test_events_end_to_end_into_a_grpc_subscriber():
    async with camera(rate=10) as sim, gateway(device(sim)) as (gw, stub):
        got = []

        async def subscribe():
            req = pb.SubscribeRequest(topics=["camera/+/event/#"], from_seq=1)
            async for batch in stub.Subscribe(req, metadata=md(READ)):
                for env in batch.envelopes:
                    got.append((env.topic, env.device_time_ns, msgpack.unpackb(env.payload)))

        task = asyncio.ensure_future(subscribe())
        try:

            def topics():
                return {t for t, _, _ in got}

            want = {
                "camera/cam-1/event/RuleEngine/CellMotionDetector/Motion",
                "camera/cam-1/event/RuleEngine/LineDetector/Crossed",
                "camera/cam-1/event/RuleEngine/TamperDetector/Tamper",
            }
            await until(lambda: want <= topics(), 30, "motion, line-crossing and tamper events")
            motion = next(p for t, _, p in got if t.endswith("/Motion"))
            assert motion["topic"] == "tns1:RuleEngine/CellMotionDetector/Motion"
            assert motion["source"]["VideoSourceConfigurationToken"] == "vsconf_1"
            assert motion["data"]["IsMotion"] in ("true", "false")
            assert motion["kind"] == "motion"  # normalised by onvif-parsers
            assert motion["value"] is (motion["data"]["IsMotion"] == "true")
            assert motion["operation"] == "Changed"
            assert isinstance(motion["utc_ns"], int) and motion["utc_ns"] > 0
            line = next(p for t, _, p in got if t.endswith("/Crossed"))
            assert line["data"]["ObjectId"].isdigit()
            assert all(dev_ns == p["utc_ns"] for _, dev_ns, p in got)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await task
        # nothing the camera handed out was lost on the way
        await until(lambda: entry(gw).counters.get("events", 0) >= sim.counters["events_pulled"] > 0, 10)
    # the gateway unsubscribed on shutdown: the camera's slot is free
    assert sim.counters["unsubscribed"] >= 1
    assert not sim.subs


async def test_camera_without_event_service_is_online():
    async with camera(events=False) as sim, gateway(device(sim)) as (gw, stub):
        await until(lambda: entry(gw).state.value == "ONLINE", 20, "ONLINE without events")
        assert entry(gw).info["events"] == "unsupported"
        assert sim.counters["op_CreatePullPointSubscription"] == 0


async def test_malformed_reply_is_a_device_error_and_other_cameras_carry_on():
    async with camera(malformed={"GetDeviceInformation"}) as bad, camera(rate=5) as good:
        async with gateway(device(bad, id="cam-bad"), device(good, id="cam-good")) as (gw, _):
            await until(lambda: "malformed reply" in entry(gw, "cam-bad").reason, 20, "malformed reason")
            assert "GetDeviceInformation" in entry(gw, "cam-bad").reason
            assert entry(gw, "cam-bad").state.value in ("OFFLINE", "CONNECTING")
            await until(lambda: entry(gw, "cam-good").counters.get("events", 0) >= 3, 20, "the good camera's events")
            assert entry(gw, "cam-good").state.value == "ONLINE"


WSDL_PROBE = r"""
import asyncio, sys
sys.path[:0] = ["tests", "tests/plugins"]
from gw import until
from onvif_helpers import camera, device, driver, gateway
import contextlib

async def main():
    async with contextlib.AsyncExitStack() as stack:
        sims = [await stack.enter_async_context(camera(rate=0)) for _ in range(12)]
        devs = [device(s, id=f"cam-{i}") for i, s in enumerate(sims)]
        gw, _ = await stack.enter_async_context(gateway(*devs))
        await until(lambda: all(gw.supervisor.lookup(d["id"]).state.value == "ONLINE" for d in devs), 60, "online")
        docs = {}
        for d in devs:
            for key, svc in driver(gw, d["id"]).cam.services.items():
                docs.setdefault(svc.url, set()).add(id(svc.document))
        print(sorted((url.rsplit("/", 1)[-1], len(ids)) for url, ids in docs.items()))

asyncio.run(main())
"""


def test_cameras_connecting_together_share_one_parse_of_each_wsdl():
    """In a fresh process (the library's document cache is per process), twelve cameras connect at
    once: every service of every camera uses the same parsed document per WSDL file."""
    import ast
    import subprocess
    import sys

    from gw import ROOT

    r = subprocess.run([sys.executable, "-c", WSDL_PROBE], capture_output=True, text=True, cwd=ROOT, timeout=90)
    assert r.returncode == 0, r.stderr[-2000:]
    shared = dict(ast.literal_eval(r.stdout.strip().splitlines()[-1]))
    assert {"devicemgmt.wsdl", "media.wsdl", "events.wsdl"} <= set(shared)
    assert set(shared.values()) == {1}, shared
