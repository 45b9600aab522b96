"""Traffic signals end to end: the gateway (gRPC on loopback) with signal controllers on a multi-drop
pty line and over TCP, and real gRPC clients: ListDevices, Subscribe, SendCommand with its control
grant, reason and audit."""

import asyncio
import contextlib

import grpc
import msgpack
import pytest

import tianwang.drivers.signal as signal
from gw import CONTROL, GNSS_ONLY, READ, base_config, client, journal_envelopes, md, running, until
from tianwang.drivers.signal.simulator import SignalSimulator
from tianwang.v1 import gateway_pb2 as pb

pytestmark = pytest.mark.timeout(90)
FAST = {"backoff": {"initial_s": 0.1, "max_s": 0.3}, "poll_hz": 4, "reply_timeout_s": 0.5}


async def test_junction_through_grpc_subscribe_command_audit():
    line = SignalSimulator("pty", controllers=2, base_id=501, traffic_s=1.0)
    tcp = SignalSimulator("tcp", controllers=1, base_id=601, traffic_s=1.0)
    await line.start()
    await tcp.start()
    devices = [{"id": f"tsc-{n}", "driver": "signal", "url": line.url, "controller_id": n, **FAST} for n in (501, 502)]
    devices.append({"id": "tsc-601", "driver": "signal", "url": tcp.url, **FAST})
    ids = [d["id"] for d in devices]
    try:
        config = base_config(devices, control=["signal/+"], name="signal-e2e")
        async with running(config, signal.SPEC) as gw, client(gw) as (stub, _):
            got: dict[str, list] = {}

            async def subscribe():
                req = pb.SubscribeRequest(topics=["signal/#"], from_seq=1)
                async for batch in stub.Subscribe(req, metadata=md(READ)):
                    for env in batch.envelopes:
                        got.setdefault(env.topic, []).append(msgpack.unpackb(env.payload))

            sub = asyncio.ensure_future(subscribe())
            try:
                await until(lambda: all(got.get(f"signal/{d}/lamps") for d in ids), 20, "lamps from every controller")
                await until(
                    lambda: all(got.get(f"signal/{d}/traffic") for d in ids), 20, "traffic from every controller"
                )
                reply = await stub.ListDevices(pb.ListDevicesRequest(family="signal"), metadata=md(READ))
                rows = {d.id: d for d in reply.devices}
                assert set(rows) == set(ids)
                assert all(rows[d].state == "ONLINE" and rows[d].driver == "signal" for d in ids)
                await until(lambda: all("serial" in gw.supervisor.lookup(d).info for d in ids), 10, "device info")
                reply = await stub.ListDevices(pb.ListDevicesRequest(family="signal"), metadata=md(READ))
                info = {d.id: dict(d.info) for d in reply.devices}
                assert info["tsc-601"]["controller_id"] == "601" and info["tsc-502"]["serial"] == "SIM00000502"

                async def send(device, action, token=CONTROL, reason="drill", **args):
                    req = pb.CommandRequest(
                        device_id=device, action=action, reason=reason, timeout_ms=8000, args=msgpack.packb(args)
                    )
                    return await stub.SendCommand(req, metadata=md(token))

                # refused without a control grant and without a reason; nothing reaches the controller
                sets_before = line.controller(502).sets_seen
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    await send("tsc-502", "yellow_flash", token=GNSS_ONLY)
                assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    await send("tsc-502", "yellow_flash", reason="  ")
                assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "reason" in e.value.details()
                assert line.controller(502).sets_seen == sets_before
                assert line.controller(502).mode == 0x21

                cmd = await send("tsc-502", "yellow_flash")
                assert cmd.ok, cmd.message
                assert msgpack.unpackb(cmd.result)["mode"] == "yellow_flash" and line.controller(502).mode == 0x31
                await until(lambda: got["signal/tsc-502/status"][-1]["mode"] == "yellow_flash", 10, "status over gRPC")
                # the other controller on the line is untouched
                assert line.controller(501).mode == 0x21

                line.controller(501).control_failed = True
                cmd = await send("tsc-501", "all_red")
                assert not cmd.ok and cmd.code == "REFUSED" and "control_failed" in cmd.message

                cmd = await send("tsc-601", "read", reason="", **{"class": 1, "object": 2})
                assert cmd.ok and msgpack.unpackb(cmd.result)["values"][0]["text"] == "SIM-2.1.0"

                audit = {}
                for env in journal_envelopes(gw.journal, "audit/#"):
                    audit.setdefault(env["topic"], []).append(env["payload"])
                a502 = audit["audit/tsc-502/command"]
                assert [(x["action"], x["ok"], x["code"]) for x in a502] == [
                    ("yellow_flash", False, "PERMISSION_DENIED"),
                    ("yellow_flash", False, "INVALID"),
                    ("yellow_flash", True, "OK"),
                ]
                assert a502[-1]["reason"] == "drill" and a502[-1]["principal"] == "operator"
                assert audit["audit/tsc-501/command"][-1]["code"] == "REFUSED"
                assert audit["audit/tsc-601/command"][-1]["ok"] is True
            finally:
                sub.cancel()
                with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                    await sub
    finally:
        await line.stop()
        await tcp.stop()
