"""GB/T 28181 end to end: the device simulator (`tianwang simulate gb28181`'s Fleet: NVRs with
channels and 4G body cameras) against the gb28181 listener of a real gateway, read through gRPC:
devices and channels in ListDevices, alarms beside ONVIF's on `camera/+/alarm`, positions on
`gnss/+/fix`, a PTZ command that moves a simulated head, and live video whose RTP reaches the
address the caller gave."""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time

import msgpack
import pytest

import tianwang.drivers.gb28181 as gb28181
from gb_helpers import SERVER_ID
from gw import CONTROL, READ, base_config, client, md, running, until
from tianwang.drivers.gb28181.simulator import Fleet
from tianwang.v1 import gateway_pb2 as pb

pytestmark = pytest.mark.timeout(90)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_simulated_fleet_through_grpc(transport):
    listener = {
        "id": "gb",
        "driver": "gb28181",
        "listen": "127.0.0.1:0",
        "server_id": SERVER_ID,
        "registration": "open",
        "password": "12345678",
        "subscribe": {"catalog": True, "alarm": {}, "mobile_position": {"interval_s": 1}},
    }
    async with running(base_config(listeners=[listener], control=["camera/+"], name="gb"), gb28181.SPEC) as gw:
        entry = gw.supervisor.lookup("gb")
        await until(lambda: "listen" in entry.info, what="listener bound")
        port = int(entry.info["listen"].rsplit(":", 1)[1])
        fleet = Fleet(
            "127.0.0.1", port, devices=2, channels=3, mobile=2, transport=transport, alarm_rate=4.0, keepalive_s=5.0
        )
        await fleet.start()
        got: dict[str, list] = {}
        try:
            await fleet.wait_online()
            nvrs = [d for d in fleet.devices if len(d.channels) == 3]
            channel_ids = [c.id for d in nvrs for c in d.channels]
            await until(lambda: all(gw.supervisor.lookup(c) is not None for c in channel_ids), 15, "channels listed")
            async with client(gw) as (stub, _):
                reply = await stub.ListDevices(pb.ListDevicesRequest(family="camera"), metadata=md(READ))
                rows = {d.id: d for d in reply.devices}
                for d in nvrs:
                    assert rows[d.id].parent == "gb" and rows[d.id].state == "ONLINE"
                    assert rows[d.id].info["transport"] == transport.upper()
                    for c in d.channels:
                        assert rows[c.id].parent == d.id and rows[c.id].info["name"] == c.name
                        assert rows[c.id].state == "ONLINE"

                async def subscribe():
                    req = pb.SubscribeRequest(topics=["camera/+/alarm", "gnss/+/fix"], from_seq=1)
                    async for batch in stub.Subscribe(req, metadata=md(READ)):
                        for e in batch.envelopes:
                            got.setdefault(e.topic, []).append(msgpack.unpackb(e.payload))

                sub = asyncio.ensure_future(subscribe())
                try:
                    mobiles = [d for d in fleet.devices if d not in nvrs]
                    await until(lambda: all(got.get(f"gnss/{m.id}/fix") for m in mobiles), 20, "positions")
                    await until(lambda: sum(len(v) for k, v in got.items() if k.endswith("/alarm")) >= 3, 20, "alarms")
                    # PTZ on a channel moves the simulated head
                    channel = nvrs[0].channels[0]
                    req = pb.CommandRequest(
                        device_id=channel.id,
                        action="ptz_move",
                        timeout_ms=5000,
                        args=msgpack.packb({"pan": 1.0, "duration_s": 0.5}),
                    )
                    cmd = await stub.SendCommand(req, metadata=md(CONTROL))
                    assert cmd.ok, cmd.message
                    await until(
                        lambda: channel.head.v == (0.0, 0.0, 0.0) and channel.head.commands >= 2,
                        5,
                        "the head moved and stopped",
                    )
                    assert channel.head.position(time.monotonic())[0] != 0.0
                finally:
                    sub.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await sub
            fixes = [f for k, v in got.items() if k.startswith("gnss/") for f in v]
            assert all(f["source"] == "gb28181" and f["datum"] == "wgs84" for f in fixes)
            alarms = [a for k, v in got.items() if k.endswith("/alarm") for a in v]
            assert {a["kind"] for a in alarms} <= {"motion", "line_crossing", "video_loss"}
            assert all(a["device"] in {d.id for d in fleet.devices} for a in alarms)
        finally:
            await fleet.stop()


async def test_play_sends_rtp_with_the_ssrc_to_the_callers_address_until_stop_play():
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
        "server_id": SERVER_ID,
        "registration": "open",
        "password": "12345678",
    }
    try:
        async with running(base_config(listeners=[listener], control=["camera/+"], name="gb"), gb28181.SPEC) as gw:
            entry = gw.supervisor.lookup("gb")
            await until(lambda: "listen" in entry.info, what="listener bound")
            fleet = Fleet("127.0.0.1", int(entry.info["listen"].rsplit(":", 1)[1]), devices=1, channels=2)
            await fleet.start()
            try:
                await fleet.wait_online()
                channel = fleet.devices[0].channels[1]
                await until(lambda: gw.supervisor.lookup(channel.id) is not None, 10, "channel listed")
                async with client(gw) as (stub, _):
                    req = pb.CommandRequest(
                        device_id=channel.id,
                        action="play",
                        timeout_ms=5000,
                        args=msgpack.packb({"host": "127.0.0.1", "port": media_port}),
                    )
                    cmd = await stub.SendCommand(req, metadata=md(CONTROL))
                    assert cmd.ok, cmd.message
                    result = msgpack.unpackb(cmd.result)
                    await until(lambda: len(packets) >= 10, 10, "RTP")
                    assert all(struct.unpack(">I", p[8:12])[0] == int(result["ssrc"]) for p in packets)
                    stop = pb.CommandRequest(
                        device_id=channel.id,
                        action="stop_play",
                        timeout_ms=5000,
                        args=msgpack.packb({"call_id": result["call_id"]}),
                    )
                    assert (await stub.SendCommand(stop, metadata=md(CONTROL))).ok
                    await until(lambda: fleet.stats()["calls_active"] == 0, 5, "the call ended at the device")
                    await asyncio.sleep(0.3)
                    n = len(packets)
                    await asyncio.sleep(0.5)
                    assert len(packets) == n
                    # a call still open when the gateway stops gets its BYE
                    again = pb.CommandRequest(
                        device_id=channel.id,
                        action="play",
                        timeout_ms=5000,
                        args=msgpack.packb({"host": "127.0.0.1", "port": media_port}),
                    )
                    assert (await stub.SendCommand(again, metadata=md(CONTROL))).ok
                    await until(lambda: fleet.stats()["calls_active"] == 1, 5, "the second call")
                byes = fleet.counters["byes"]
            finally:
                stop_fleet = fleet
        await until(lambda: stop_fleet.stats()["calls_active"] == 0, 5, "BYE at shutdown")
        assert stop_fleet.counters["byes"] == byes + 1
        await stop_fleet.stop()
    finally:
        rx.close()
