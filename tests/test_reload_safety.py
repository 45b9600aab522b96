"""Reloads under pressure: overlapping SIGHUPs never start a device twice, a driver that fails to
start does not leave config, tokens and devices out of step, and token changes (rotation, narrower
`read`) apply to streams that are already open."""

import asyncio

import grpc
import pytest
import yaml

from gw import CONTROL, READ, base_config, client, md, registry
from tianwang.drivers.sdk import DeviceConfig, DriverSpec
from tianwang.gateway.app import Gateway
from tianwang.gateway.lifecycle.config import load_config
from tianwang.v1 import gateway_pb2 as pb

pytestmark = pytest.mark.timeout(60)


class BrokenConfig(DeviceConfig):
    pass


def _broken_factory(config, ctx):
    raise RuntimeError("cannot open /dev/ttyS9 (test driver)")


BROKEN = DriverSpec(name="broken", family="test", config_model=BrokenConfig, factory=_broken_factory)


def device_tasks(dev_id):
    return [t for t in asyncio.all_tasks() if t.get_name() == f"device:{dev_id}" and not t.done()]


async def start(tmp_path, cfg, *specs):
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(cfg))
    reg = registry(BROKEN, *specs)
    gw = Gateway(load_config(str(path), reg), registry=reg, config_path=str(path))
    await gw.start()
    return gw, path


async def test_overlapping_reloads_start_each_device_once(tmp_path):
    cfg = base_config([{"id": "g", "driver": "testgen", "rate_hz": 50}])
    gw, path = await start(tmp_path, cfg)
    try:
        for rate in (51, 52, 53):
            cfg["devices"][0]["rate_hz"] = rate
            path.write_text(yaml.safe_dump(cfg))
            # three SIGHUPs' worth of reloads at once, and direct reloads overlapping them
            gw.request_reload()
            gw.request_reload()
            await asyncio.gather(gw.reload(), gw.reload())
            while gw._reload_task is not None and not gw._reload_task.done():
                await asyncio.sleep(0.01)
            assert len(device_tasks("g")) == 1
            assert gw.supervisor._running["g"].config.rate_hz == rate
    finally:
        await gw.stop()
    await asyncio.sleep(0)
    assert device_tasks("g") == []  # nothing left publishing after shutdown


async def test_a_driver_that_fails_to_start_leaves_the_rest_in_step(tmp_path):
    cfg = base_config([{"id": "g", "driver": "testgen", "rate_hz": 20}])
    gw, path = await start(tmp_path, cfg)
    try:
        new = base_config(
            [{"id": "g", "driver": "testgen", "rate_hz": 30}, {"id": "bad", "driver": "broken"}], control=("#",)
        )
        new["auth"]["tokens"] = [t for t in new["auth"]["tokens"] if t["name"] != "reader"]
        path.write_text(yaml.safe_dump(new))
        assert await gw.reload()
        # the working device moved to its new config, the new tokens hold, and the broken
        # device is listed with its reason instead of being half started
        assert gw.supervisor._running["g"].config.rate_hz == 30
        assert gw.auth.principal_for is not None and "reader" not in gw.auth.names
        bad = gw.supervisor.lookup("bad")
        assert bad is not None and bad.state.value == "OFFLINE"
        assert "cannot open /dev/ttyS9" in bad.reason
        async with client(gw) as (stub, _):
            devices = {d.id: d for d in (await stub.ListDevices(pb.ListDevicesRequest(), metadata=md(CONTROL))).devices}
            assert devices["bad"].state == "OFFLINE" and "failed to start" in devices["bad"].reason
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.ListDevices(pb.ListDevicesRequest(), metadata=md(READ))
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # removing the broken device from the config removes its row
        path.write_text(yaml.safe_dump(base_config([{"id": "g", "driver": "testgen", "rate_hz": 30}])))
        assert await gw.reload()
        assert gw.supervisor.lookup("bad") is None
    finally:
        await gw.stop()


async def _read_until_error(call):
    while True:
        await asyncio.wait_for(call.read(), 5)


async def test_rotating_a_token_ends_streams_opened_with_the_old_value(tmp_path):
    cfg = base_config([{"id": "g", "driver": "testgen", "rate_hz": 50}])
    gw, path = await start(tmp_path, cfg)
    try:
        async with client(gw) as (stub, _):
            old = stub.Subscribe(pb.SubscribeRequest(max_delay_ms=1), metadata=md(READ))
            other = stub.Subscribe(pb.SubscribeRequest(max_delay_ms=1), metadata=md(CONTROL))
            await asyncio.wait_for(old.read(), 5)
            await asyncio.wait_for(other.read(), 5)
            for t in cfg["auth"]["tokens"]:
                if t["name"] == "reader":
                    t["token"] = "rotated-reader-token-0123456789"  # same name, new value
            path.write_text(yaml.safe_dump(cfg))
            assert await gw.reload()
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await _read_until_error(old)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "revoked" in err.value.details()
            assert (await asyncio.wait_for(other.read(), 5)).envelopes  # untouched token keeps streaming
            fresh = stub.Subscribe(pb.SubscribeRequest(max_delay_ms=1), metadata=md("rotated-reader-token-0123456789"))
            assert (await asyncio.wait_for(fresh.read(), 5)).envelopes
            other.cancel()
            fresh.cancel()
    finally:
        await gw.stop()


async def test_narrowing_a_tokens_read_applies_to_its_open_stream(tmp_path):
    cfg = base_config(
        [
            {"id": "g", "driver": "testgen", "rate_hz": 100},
            {"id": "h", "driver": "testgen", "rate_hz": 100},
        ]
    )
    gw, path = await start(tmp_path, cfg)
    try:
        async with client(gw) as (stub, _):
            wide = stub.Subscribe(pb.SubscribeRequest(topics=["test/#"], max_delay_ms=1), metadata=md(READ))
            only_h = stub.Subscribe(pb.SubscribeRequest(topics=["test/h/#"], max_delay_ms=1), metadata=md(READ))
            seen = set()
            while seen != {"g", "h"}:
                seen |= {e.device_id for e in (await asyncio.wait_for(wide.read(), 5)).envelopes}
            await asyncio.wait_for(only_h.read(), 5)
            for t in cfg["auth"]["tokens"]:
                if t["name"] == "reader":
                    t["read"] = ["test/g/#"]
            path.write_text(yaml.safe_dump(cfg))
            assert await gw.reload()
            # the wide stream would go on with less than it asked for: it ends, saying why
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await _read_until_error(wide)
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "may now read only test/g/# after a config reload (it read #)" in err.value.details()
            # subscribing again gets what the token may read now
            again = stub.Subscribe(pb.SubscribeRequest(topics=["test/#"], max_delay_ms=1), metadata=md(READ))
            after = gw.journal.next_seq
            devices = []
            while len(devices) < 40:  # both devices publish at 100 Hz: 40 readings span both
                batch = await asyncio.wait_for(again.read(), 5)
                devices += [e.device_id for e in batch.envelopes if e.seq >= after]
            assert set(devices) == {"g"}
            again.cancel()
            # the stream on test/h/# may read nothing any more: it ends
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await _read_until_error(only_h)
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "may no longer read test/h/#" in err.value.details()
    finally:
        await gw.stop()


async def test_family_totals_never_go_backwards_when_devices_leave(tmp_path):
    cfg = base_config(
        [{"id": "g", "driver": "testgen", "rate_hz": 200}, {"id": "h", "driver": "testgen", "rate_hz": 200}]
    )
    gw, path = await start(tmp_path, cfg)
    try:
        await asyncio.sleep(0.5)
        before = {f.family: f.envelopes for f in gw.stats().families}["test"]
        assert before > 50
        cfg["devices"] = [{"id": "h", "driver": "testgen", "rate_hz": 201}]  # g removed, h restarted
        path.write_text(yaml.safe_dump(cfg))
        assert await gw.reload()
        after = {f.family: f.envelopes for f in gw.stats().families}["test"]
        assert after >= before  # a counter: removed and restarted devices still count
        from tianwang.gateway.datapath.metrics import GatewayCollector

        metric = next(m for m in GatewayCollector(gw).collect() if m.name == "tianwang_envelopes")
        assert next(s.value for s in metric.samples if s.labels == {"family": "test"}) >= after
    finally:
        await gw.stop()
