"""JT/T 808 end to end: the gateway (tianwang.gateway.app.Gateway, gRPC on loopback) with a jt808 listener,
a simulated fleet over TCP, and real gRPC clients: ListDevices, Subscribe and SendCommand."""

import asyncio
import contextlib

import grpc
import msgpack
import pytest

import tianwang.drivers.jt808 as jt808
from gw import CONTROL, GNSS_ONLY, base_config, client, md, running, until
from tianwang.drivers.jt808.simulator import Fleet
from tianwang.v1 import gateway_pb2 as pb

pytestmark = pytest.mark.timeout(60)
# the simulated fleet registers from 127.0.0.1 all at once: past the per-address default burst
LISTENER = {
    "id": "fleet",
    "driver": "jt808",
    "listen": "127.0.0.1:0",
    "auth_secret": "e2e-secret",
    "registrations_burst": 100,
}


@contextlib.asynccontextmanager
async def gateway():
    async with running(base_config(listeners=[LISTENER], control=["gnss/+"], name="e2e"), jt808.SPEC) as gw:
        async with client(gw) as (stub, _):
            yield gw, stub


async def test_fleet_through_grpc_devices_subscribe_and_query():
    async with gateway() as (gw, stub):
        driver = gw.supervisor._running["fleet"].driver
        await until(lambda: driver.port, what="listener bound")
        fleet = Fleet("127.0.0.1", driver.port, terminals=25, rate=5.0)
        got: dict[str, list] = {}

        async def subscribe():
            req = pb.SubscribeRequest(topics=["gnss/+/fix", "gnss/+/alarm"], from_seq=1)
            async for batch in stub.Subscribe(req, metadata=md(GNSS_ONLY)):
                for env in batch.envelopes:
                    got.setdefault(env.topic, []).append(msgpack.unpackb(env.payload))

        sub = asyncio.ensure_future(subscribe())
        await fleet.start()
        try:
            await fleet.wait_online()
            reply = await stub.ListDevices(pb.ListDevicesRequest(family="gnss"), metadata=md(GNSS_ONLY))
            rows = {d.id: d for d in reply.devices}
            assert set(rows) == {"fleet"} | {t.phone for t in fleet.terminals}
            assert all(rows[t.phone].state == "ONLINE" and rows[t.phone].driver == "jt808" for t in fleet.terminals)
            assert rows["fleet"].info["listen"] == f"127.0.0.1:{driver.port}"

            sos = fleet.terminals[3]
            sos.alarm = 1
            await until(lambda: got.get(f"gnss/{sos.phone}/alarm"), what="SOS over gRPC")
            assert got[f"gnss/{sos.phone}/alarm"][0] == {
                "kind": "sos",
                "active": True,
                "raw": "0x00000001",
                "alarm_word": 1,
            }

            target = fleet.terminals[7]
            req = pb.CommandRequest(
                device_id=target.phone, action="query_location", reason="dispatch check", timeout_ms=3000
            )
            cmd = await stub.SendCommand(req, metadata=md(CONTROL))
            assert cmd.ok, cmd.message
            result = msgpack.unpackb(cmd.result)
            assert (result["lat"], result["lon"]) == (target.last_report["lat"], target.last_report["lon"])
            assert cmd.audit_seq > 0
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.SendCommand(req, metadata=md(GNSS_ONLY))
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
            await until(
                lambda: all(len(got.get(f"gnss/{t.phone}/fix", [])) >= 3 for t in fleet.terminals), what="fixes"
            )
        finally:
            await fleet.stop()
        await until(lambda: sum(len(v) for k, v in got.items() if k.endswith("/fix")) >= fleet.counters["fixes_acked"])
        sub.cancel()
        with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
            await sub
        received = sum(len(v) for k, v in got.items() if k.endswith("/fix"))
        stats = fleet.stats()
        # every acknowledged position reached the subscriber (+1: the query answer is a fix too)
        assert stats["fixes_acked"] + 1 <= received <= stats["fixes_acked"] + 1 + stats["pending"]
