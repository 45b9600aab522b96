"""BeiDou receivers end to end: the gateway (tianwang.gateway.app.Gateway, gRPC on loopback) with beidou
devices on simulated receivers (a pty and a TCP serial server), and real gRPC clients: Subscribe,
ListDevices and SendCommand (send_message accepted and refused, card_info). Also the family's
`run --demo` part."""

from __future__ import annotations

import asyncio
import contextlib

import grpc
import msgpack
import pytest

import tianwang.drivers.beidou as beidou
from gw import CONTROL, GNSS_ONLY, base_config, client, md, running, until
from test_beidou_driver import check_fix
from tianwang.drivers.beidou.simulator import ReceiverSimulator
from tianwang.gateway.datapath.journal import Journal
from tianwang.gateway.datapath.router import Router
from tianwang.gateway.lifecycle.config import load_config
from tianwang.gateway.lifecycle.registry import Registry
from tianwang.gateway.lifecycle.supervisor import Supervisor
from tianwang.v1 import gateway_pb2 as pb

pytestmark = pytest.mark.timeout(60)


@contextlib.asynccontextmanager
async def gateway(devices):
    async with running(base_config(devices, control=["gnss/+"], name="e2e"), beidou.SPEC) as gw:
        async with client(gw) as (stub, _):
            yield gw, stub


async def send(stub, device, action, token=CONTROL, **args):
    reply = await stub.SendCommand(
        pb.CommandRequest(device_id=device, action=action, args=msgpack.packb(args), reason="e2e", timeout_ms=5000),
        metadata=md(token),
    )
    return reply, msgpack.unpackb(reply.result) if reply.result else {}


@pytest.mark.twins
async def test_receivers_through_grpc(tmp_path):
    car = ReceiverSimulator(
        "pty", rate=5, talker="GB", rdss="2.1", interval_s=60, card_id="0245678", link=tmp_path / "ttyBD-car"
    )
    van = ReceiverSimulator("tcp", rate=2, talker="GN", rdss="bds3", interval_s=30, card_id="0245679", seed=5)
    await car.start()
    await van.start()
    got: dict[str, list] = {}
    try:
        devices = [
            {
                "id": "bd-car",
                "driver": "beidou",
                "url": car.url + "?baudrate=115200",
                "receiver": {"epoch_period_s": 0.2},
            },
            {
                "id": "bd-van",
                "driver": "beidou",
                "url": van.url,
                "rdss": {"protocol": "bds3"},
                "receiver": {"epoch_period_s": 0.5},
            },
        ]
        async with gateway(devices) as (gw, stub):

            async def subscribe():
                req = pb.SubscribeRequest(topics=["gnss/#"], from_seq=1)
                async for batch in stub.Subscribe(req, metadata=md(GNSS_ONLY)):
                    for env in batch.envelopes:
                        got.setdefault(env.topic, []).append((env.device_time_ns, msgpack.unpackb(env.payload)))

            sub = asyncio.ensure_future(subscribe())
            try:
                await until(
                    lambda: len(got.get("gnss/bd-car/fix", ())) >= 10 and len(got.get("gnss/bd-van/fix", ())) >= 4,
                    15,
                    "fixes over gRPC",
                )
                rows = {
                    d.id: d
                    for d in (
                        await stub.ListDevices(pb.ListDevicesRequest(family="gnss"), metadata=md(GNSS_ONLY))
                    ).devices
                }
                assert rows["bd-car"].state == "ONLINE" and rows["bd-van"].state == "ONLINE"
                await until(lambda: gw.supervisor.lookup("bd-van").info.get("card_id") == "0245679", 5, "card id")

                car.inject_message("请报告当前位置", sender="0166166")
                await until(lambda: got.get("gnss/bd-car/message"), 5, "message over gRPC")

                ok, ok_result = await send(stub, "bd-car", "send_message", dest="0166166", text="已到达现场")
                refused, refused_result = await send(stub, "bd-car", "send_message", dest="0166166", text="再报")
                card, card_result = await send(stub, "bd-van", "card_info")
                denied = None
                try:
                    await send(stub, "bd-car", "send_message", token=GNSS_ONLY, dest="0166166", text="x")
                except grpc.aio.AioRpcError as exc:
                    denied = exc.code()
                await until(lambda: len(got.get("gnss/bd-car/fix", ())) >= 15, 10, "more fixes")
            finally:
                sub.cancel()
                await asyncio.gather(sub, return_exceptions=True)
            rows = {
                d.id: d
                for d in (await stub.ListDevices(pb.ListDevicesRequest(family="gnss"), metadata=md(GNSS_ONLY))).devices
            }
    finally:
        await car.stop()
        await van.stop()

    for sim, dev in ((car, "bd-car"), (van, "bd-van")):
        fixes = got[f"gnss/{dev}/fix"]
        for device_time, fix in fixes:
            assert device_time == fix["time_ns"]
            check_fix(sim, fix["time_ns"], fix)
        times = [f["time_ns"] for _, f in fixes]
        assert times == sorted(set(times))
    assert [s["state"] for _, s in got["gnss/bd-car/state"]] == ["FIX"]
    assert got["gnss/bd-car/health"][0][1]["state"] == "CONNECTING"

    message = got["gnss/bd-car/message"][0][1]
    assert message["text"] == "请报告当前位置" and message["sender"] == "0166166"
    assert message["raw"] == "请报告当前位置".encode("gb2312")

    assert ok.ok and ok.code == "OK" and ok_result["status"] == "sent" and ok_result["wait_s"] == 60
    assert not refused.ok and refused.code == "REFUSED" and "service interval" in refused.message
    assert refused_result["code"] == "interval_not_reached" and 58 <= refused_result["wait_s"] <= 60
    assert [m.content for m in car.card.sent] == ["已到达现场".encode("gb2312")]
    assert card.ok and card_result["card_id"] == "0245679" and card_result["interval_s"] == 30
    assert card_result["protocol"] == "bds3"
    assert denied == grpc.StatusCode.PERMISSION_DENIED

    car_row = rows["bd-car"]
    assert car_row.driver == "beidou" and car_row.family == "gnss"
    assert car_row.info["card_id"] == "0245678" and car_row.info["transport"] == "serial"
    assert car_row.counters["rdss_sent"] == 1 and car_row.counters["rdss_refused"] == 1


async def test_demo_part_starts_receivers_the_gateway_can_read():
    reg = Registry()
    reg.register(beidou.SPEC)
    async with contextlib.AsyncExitStack() as stack:
        part = await beidou.SPEC.demo(stack)
        devices = part["devices"]
        assert {d["id"] for d in devices} == {"bd-car-01", "bd-van-02"}
        config = load_config({"gateway": {"metrics": None}, "devices": devices}, reg)
        journal = Journal(16 << 20)
        sup = Supervisor(reg, Router(journal))
        await sup.apply(config)
        try:
            await until(lambda: all(sup.lookup(d["id"]).state.value == "ONLINE" for d in devices), 10, "demo online")
            await until(lambda: all(sup.lookup(d["id"]).envelopes >= 4 for d in devices), 10, "demo readings")
        finally:
            await sup.stop_all()
        urls = [d["url"] for d in devices]
    # the simulators went with the stack: the pty is gone and the TCP port refuses
    assert urls[0].startswith("serial:///dev/pts/")
    with pytest.raises(OSError):
        host, port = urls[1][len("tcp://") :].rsplit(":", 1)
        await asyncio.open_connection(host, int(port))
