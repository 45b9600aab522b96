"""Camera commands over gRPC SendCommand against the simulator: PTZ moves that change the camera's
real position, presets that persist, snapshots behind HTTP Digest and Basic, stream URIs; read tokens
may take snapshots, only control tokens may move the camera."""

import grpc
import msgpack
import pytest

from gw import CONTROL, GNSS_ONLY, READ, md, until
from onvif_helpers import camera, device, entry, gateway
from tianwang.v1 import gateway_pb2 as pb

pytestmark = pytest.mark.timeout(90)


async def send(stub, action, auth=CONTROL, timeout_ms=8000, **args):
    req = pb.CommandRequest(
        device_id="cam-1", action=action, args=msgpack.packb(args), reason="test", timeout_ms=timeout_ms
    )
    reply = await stub.SendCommand(req, metadata=md(auth))
    return reply, msgpack.unpackb(reply.result) if reply.result else {}


async def online(gw):
    await until(lambda: entry(gw).state.value in ("ONLINE", "DEGRADED"), 20, "camera connected")


async def test_ptz_move_turns_the_camera_then_stops():
    async with camera(rate=0) as sim, gateway(device(sim)) as (gw, stub):
        await online(gw)
        reply, result = await send(stub, "ptz_move", pan=0.5, tilt=-0.25, duration_s=0.6)
        assert reply.ok, reply.message
        pan, tilt, zoom = sim.ptz.position()
        # 0.5/s and -0.25/s for at least 0.6 s (the stop goes out after the sleep), plus the round trips
        assert 0.29 < pan < 0.9 and -0.45 < tilt < -0.14
        assert not sim.ptz.moving()  # stopped after duration_s
        assert result["pan"] == pytest.approx(pan, abs=1e-5)
        assert sim.counters["op_Stop"] == 1
        reply, result = await send(stub, "ptz_stop")
        assert reply.ok and result["pan"] == pytest.approx(pan, abs=1e-5)


async def test_ptz_goto_and_presets_persist():
    async with camera(rate=0) as sim, gateway(device(sim)) as (gw, stub):
        await online(gw)
        reply, result = await send(stub, "ptz_goto", pan=0.4, tilt=0.1, zoom=0.5)
        assert reply.ok, reply.message
        assert sim.ptz.position() == pytest.approx([0.4, 0.1, 0.5])
        assert (result["pan"], result["tilt"], result["zoom"]) == pytest.approx((0.4, 0.1, 0.5))
        reply, result = await send(stub, "preset_set", name="gate")
        assert reply.ok, reply.message
        gate = result["token"]
        await send(stub, "ptz_goto", pan=-0.9, tilt=-0.9, zoom=0.0)
        reply, result = await send(stub, "preset_list")
        assert [(p["token"], p["name"]) for p in result["presets"]] == [(gate, "gate")]
        assert result["presets"][0]["pan"] == pytest.approx(0.4)
        reply, result = await send(stub, "preset_goto", token=gate)
        assert reply.ok, reply.message
        assert sim.ptz.position() == pytest.approx([0.4, 0.1, 0.5])
        # presets outlive a reboot; the position does not
        await sim.restart(down_s=0.2)
        await until(lambda: entry(gw).state.value == "ONLINE" and sim.counters["op_GetProfiles"] >= 2, 20)
        reply, result = await send(stub, "preset_goto", token=gate)
        assert reply.ok, reply.message
        assert sim.ptz.position() == pytest.approx([0.4, 0.1, 0.5])


async def test_bad_arguments_and_refusals():
    async with camera(rate=0) as sim, gateway(device(sim)) as (gw, stub):
        await online(gw)
        reply, _ = await send(stub, "ptz_move", pan=3)
        assert (reply.ok, reply.code) == (False, "INVALID") and "pan" in reply.message
        reply, _ = await send(stub, "ptz_goto", pan="left")
        assert reply.code == "INVALID"
        reply, _ = await send(stub, "ptz_move", pan=0.1, duration_s=30, timeout_ms=2000)
        assert reply.code == "INVALID" and "duration_s" in reply.message
        reply, _ = await send(stub, "preset_goto", token="nope")
        assert reply.code == "REFUSED" and "camera refused" in reply.message
        reply, _ = await send(stub, "snapshot", profile="other")
        assert reply.code == "INVALID" and "profile" in reply.message
        assert sim.ptz.position() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("auth", ["digest", "basic"])
async def test_snapshot_with_the_auth_the_camera_asks_for(auth):
    # Basic over plain http only with the camera's own switch
    extra = {"snapshot_basic_auth": True} if auth == "basic" else {}
    async with camera(rate=0, snapshot_auth=auth) as sim, gateway(device(sim, **extra)) as (gw, stub):
        await online(gw)
        await sim_move(sim)
        reply, result = await send(stub, "snapshot", auth=READ)  # read access is enough
        assert reply.ok, reply.message
        jpeg = result["jpeg"]
        assert jpeg[:2] == b"\xff\xd8" and jpeg[-2:] == b"\xff\xd9"
        assert result["size"] == len(jpeg) and result["auth"] == auth
        assert b'"pan": 0.25' in jpeg  # taken at the camera's position
        assert sim.counters["snapshots"] == 1


async def test_basic_auth_is_not_sent_over_http_without_the_switch_nor_to_another_host():
    """Issue 20 item 11: the camera's password in clear goes nowhere by default."""
    async with camera(rate=0, snapshot_auth="basic") as sim, gateway(device(sim)) as (gw, stub):
        await online(gw)
        reply, _ = await send(stub, "snapshot", auth=READ)
        assert (reply.ok, reply.code) == (False, "REFUSED")
        assert "Basic" in reply.message and "snapshot_basic_auth" in reply.message
        assert sim.counters["snapshot_requests"] == 1 and sim.counters["snapshots"] == 0  # asked once, no password
    # the camera names a snapshot host (127.0.0.1) that is not the configured one (localhost)
    async with (
        camera(rate=0, snapshot_auth="digest") as sim,
        gateway(device(sim, host="localhost", snapshot_basic_auth=True)) as (gw, stub),
    ):
        await online(gw)
        reply, _ = await send(stub, "snapshot", auth=READ)
        assert (reply.ok, reply.code) == (False, "REFUSED") and "camera's host localhost" in reply.message
        assert sim.counters["snapshots"] == 0


async def test_an_oversized_snapshot_is_cut_off_while_reading():
    """Issue 20 item 11: a 64 MiB "JPEG" is given up on once it passes 3 MiB, not read whole."""
    async with camera(rate=0) as sim, gateway(device(sim)) as (gw, stub):
        await online(gw)
        sim.snapshot_bytes = 64 << 20
        reply, _ = await send(stub, "snapshot", auth=READ, timeout_ms=20000)
        assert (reply.ok, reply.code) == (False, "REFUSED") and "limit" in reply.message
        # what the camera managed to write: the 3 MiB read, plus what the sockets buffer
        await until(lambda: sim.counters["snapshot_bytes_sent"] > 0, 5, "bytes counted")
        await __import__("asyncio").sleep(0.5)
        assert sim.counters["snapshot_bytes_sent"] < 24 << 20, sim.counters["snapshot_bytes_sent"]
        sim.snapshot_bytes = 0
        reply, _ = await send(stub, "snapshot", auth=READ)
        assert reply.ok, reply.message


async def test_snapshots_are_rate_limited_per_token():
    """Issue 20 item 11: snapshots need only read access; each token gets its own rate."""
    async with camera(rate=0) as sim, gateway(device(sim)) as (gw, stub):
        await online(gw)
        import asyncio

        async def one():
            try:
                return (await send(stub, "snapshot", auth=READ))[0].code
            except grpc.aio.AioRpcError as exc:
                assert "per second" in exc.details()
                return exc.code().name

        # 20 at once: the burst of 10 (and whatever the rate refilled meanwhile) pass, the rest wait
        codes = await asyncio.gather(*(one() for _ in range(20)))
        assert set(codes) == {"OK", "RESOURCE_EXHAUSTED"} and codes.count("OK") >= 10
        # another token is not held back by the first one's rate
        reply, _ = await send(stub, "snapshot", auth=CONTROL)
        assert reply.ok, reply.message
        from gw import journal_envelopes

        audits = [e["payload"] for e in journal_envelopes(gw.journal, "audit/cam-1/command")]
        assert [a["code"] for a in audits].count("RATE_LIMITED") == codes.count("RESOURCE_EXHAUSTED")


async def sim_move(sim):
    sim.ptz.goto([0.25, 0.0, 0.0])


async def test_stream_uri_with_read_access_and_no_ptz_for_readers():
    async with camera(rate=0) as sim, gateway(device(sim)) as (gw, stub):
        await online(gw)
        reply, result = await send(stub, "stream_uri", auth=READ)
        assert reply.ok and result["uri"] == "rtsp://127.0.0.1:554/profile_main"
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await send(stub, "ptz_move", auth=READ, pan=0.5)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await send(stub, "snapshot", auth=GNSS_ONLY)  # may read gnss/# only
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert sim.counters["snapshots"] == 0 and sim.ptz.position() == [0.0, 0.0, 0.0]


async def test_camera_without_ptz_says_unsupported():
    async with camera(rate=0, ptz=False) as sim, gateway(device(sim)) as (gw, stub):
        await online(gw)
        reply, _ = await send(stub, "ptz_move", pan=0.5)
        assert reply.code == "UNSUPPORTED"
        reply, _ = await send(stub, "preset_list")
        assert reply.code == "UNSUPPORTED"
