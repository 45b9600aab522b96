"""The GB/T 28181 part of `tianwang run --demo` (drivers/gb28181/demo.py) in a real gateway: the NVR
with four channels and the two 4G body cameras register with their own passwords, the channels
show in ListDevices, alarms arrive under camera/#, the body cameras' positions under gnss/+/fix,
and a PTZ command on a channel is obeyed."""

import asyncio
import contextlib
import os
import stat

import msgpack
import pytest

from gw import CONTROL, READ, base_config, client, journal_envelopes, md, running, until
from tianwang.drivers.gb28181.demo import demo
from tianwang.v1 import gateway_pb2 as pb

pytestmark = pytest.mark.timeout(90)


async def test_demo_fleet_registers_and_publishes_alarms_positions_and_obeys_ptz():
    import tianwang.drivers.gb28181 as gb28181

    async with contextlib.AsyncExitStack() as stack:
        part = await demo(stack)
        (listener,) = part["listeners"]
        assert listener["driver"] == "gb28181" and listener["listen"].startswith("127.0.0.1:")
        devices_file = listener["devices_file"]
        assert stat.S_IMODE(os.stat(devices_file).st_mode) == 0o600
        config = base_config(listeners=[listener], control=["camera/+"], name="demo")
        async with running(config, gb28181.SPEC) as gw:
            async with client(gw) as (stub, _):

                async def rows():
                    reply = await stub.ListDevices(pb.ListDevicesRequest(), metadata=md(READ))
                    return {d.id: d for d in reply.devices}

                listed = {}

                async def refresh():
                    listed.clear()
                    listed.update(await rows())

                def ready():
                    devices = [r for r in listed.values() if r.parent == "gb"]
                    channels = [r for r in listed.values() if r.parent in {d.id for d in devices}]
                    return len(devices) == 3 and all(d.state == "ONLINE" for d in devices) and len(channels) >= 6

                for _ in range(150):
                    await refresh()
                    if ready():
                        break
                    await asyncio.sleep(0.2)
                assert ready(), sorted((r.id, r.state, r.parent) for r in listed.values())
                devices = sorted((r for r in listed.values() if r.parent == "gb"), key=lambda r: r.id)
                assert [d.id[10:13] for d in devices] == ["118", "138", "138"]  # the NVR and two body cameras
                nvr = devices[0]
                channels = sorted(r.id for r in listed.values() if r.parent == nvr.id)
                assert len(channels) == 4
                await until(
                    lambda: any(
                        e["device_id"] in {d.id for d in devices[1:]}
                        for e in journal_envelopes(gw.journal, "gnss/+/fix")
                    ),
                    20,
                    "body camera fixes",
                )
                fix = next(e for e in journal_envelopes(gw.journal, "gnss/+/fix"))["payload"]
                assert fix["source"] == "gb28181" and abs(fix["lat"] - 27.83) < 0.12 and abs(fix["lon"] - 112.94) < 0.12
                await until(lambda: journal_envelopes(gw.journal, "camera/+/alarm"), 30, "an alarm")
                alarm = journal_envelopes(gw.journal, "camera/+/alarm")[0]
                assert listed[alarm["device_id"]].parent in {d.id for d in devices}  # a channel of the fleet
                assert alarm["payload"]["kind"] in ("motion", "line_crossing", "video_loss")
                reply = await stub.SendCommand(
                    pb.CommandRequest(
                        device_id=channels[0],
                        action="ptz_move",
                        args=msgpack.packb({"pan": 0.5, "duration_s": 1}),
                        reason="demo check",
                        timeout_ms=10000,
                    ),
                    metadata=md(CONTROL),
                )
                assert reply.ok, (reply.code, reply.message)
