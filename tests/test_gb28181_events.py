"""The gb28181 listener's catalog, alarms and positions end to end: devices (tests/gb_helpers.py) over
real sockets into an in-process gateway, read back through ListDevices and gRPC Subscribe."""

from __future__ import annotations

import asyncio
import contextlib

import msgpack
import pytest

import tianwang.drivers.gb28181 as gb28181
from gb_helpers import NVR_ID, PASSWORD, SERVER_ID, GbDevice, channel_ids, xml
from gw import GNSS_ONLY, READ, base_config, client, journal_envelopes, md, running, until
from tianwang.drivers.gb28181 import datum
from tianwang.v1 import gateway_pb2 as pb

pytestmark = pytest.mark.timeout(60)
BODYCAM_ID = "43030000001380000001"
NAMES = ["雨湖路口", "岳塘广场", "湘潭大学东门", "韶山路"]


def config(tmp_path, **extra):
    path = tmp_path / "gb-devices.yaml"
    path.write_text(
        f"- {{id: '{NVR_ID}', password: '{PASSWORD}'}}\n"
        f"- {{id: '{BODYCAM_ID}', password: '{PASSWORD}', datum: gcj02}}\n",
        encoding="utf-8",
    )
    path.chmod(0o600)
    cfg = {
        "id": "gb",
        "driver": "gb28181",
        "listen": "127.0.0.1:0",
        "server_id": SERVER_ID,
        "devices_file": str(path),
        "catalog_idle_s": 1.0,
        "subscribe": {"catalog": True, "mobile_position": {"interval_s": 5}},
    }
    cfg.update(extra)
    return cfg


@contextlib.asynccontextmanager
async def gateway(listener):
    async with running(base_config(listeners=[listener], control=["camera/+"], name="gb"), gb28181.SPEC) as gw:
        entry = gw.supervisor.lookup("gb")
        await until(lambda: "listen" in entry.info, what="listener bound")
        yield gw, int(entry.info["listen"].rsplit(":", 1)[1])


def state(gw, dev_id):
    entry = gw.supervisor.lookup(dev_id)
    return (entry.state.value, entry.reason) if entry is not None else (None, "")


def catalog_notify(dev, items):
    """A catalog NOTIFY body: items of (id, event, name)."""
    body = "".join(
        f"<Item>\r\n<DeviceID>{cid}</DeviceID>\r\n<Name>{name}</Name>\r\n<Event>{event}</Event>\r\n"
        f"<ParentID>{dev.id}</ParentID>\r\n<Status>ON</Status>\r\n</Item>\r\n"
        for cid, event, name in items
    )
    inner = f'<SumNum>{len(items)}</SumNum>\r\n<DeviceList Num="{len(items)}">\r\n{body}</DeviceList>\r\n'
    return xml("Notify", "Catalog", dev.next_sn(), dev.id, inner)


async def test_catalog_channels_become_devices_under_their_device_and_follow_its_events(tmp_path):
    async with gateway(config(tmp_path)) as (gw, port):
        ids = channel_ids(NVR_ID, 4)
        nvr = await GbDevice(port, NVR_ID, channels=list(zip(ids, NAMES, strict=True)), chunk=3).start()
        nvr.status_of[ids[3]] = "OFF"
        try:
            assert (await nvr.register()).status == 200
            await until(lambda: all(gw.supervisor.lookup(c) is not None for c in ids), 10, "channels listed")
            async with client(gw) as (stub, _):
                reply = await stub.ListDevices(pb.ListDevicesRequest(family="camera"), metadata=md(READ))
            rows = {d.id: d for d in reply.devices}
            for cid, name in zip(ids, NAMES, strict=True):
                assert rows[cid].parent == NVR_ID and rows[cid].info["name"] == name
                assert rows[cid].info["ptz_type"] == "1" and rows[cid].info["civil_code"] == "430302"
                assert rows[cid].info["lat"] == "27.83" and rows[cid].info["kind"] == "camera"
            assert rows[ids[0]].state == "ONLINE" and rows[ids[3]].state == "OFFLINE"
            await until(lambda: gw.supervisor.lookup(NVR_ID).info.get("firmware") == "V2.1.0", 5, "DeviceInfo read")
            info = gw.supervisor.lookup(NVR_ID).info
            assert info["channels"] == "4" and info["catalog"] == "complete" and info["manufacturer"] == "Tianwang"
            assert info["model"] == "TW-NVR-4" and info["device_name"] == "雨湖区NVR"
            # the catalog subscription, in its own dialog
            await until(lambda: nvr.requests("SUBSCRIBE", "Catalog"), 5, "catalog SUBSCRIBE")
            sub, _ = nvr.requests("SUBSCRIBE", "Catalog")[0]
            assert sub.headers.get("Event").startswith("Catalog;id=")
            # catalog events as they come: OFF, VLOST, ADD, DEL
            new_id = channel_ids(NVR_ID, 5)[4]
            resp = await nvr.message(
                catalog_notify(
                    nvr,
                    [
                        (ids[1], "OFF", NAMES[1]),
                        (ids[2], "VLOST", NAMES[2]),
                        (new_id, "ADD", "新增通道"),
                        (ids[0], "DEL", NAMES[0]),
                    ],
                ),
                method="NOTIFY",
                headers=[("Event", "Catalog"), ("Subscription-State", "active")],
            )
            assert resp.status == 200
            await until(lambda: state(gw, ids[1])[0] == "OFFLINE", 5, "OFF applied")
            assert state(gw, ids[2]) == ("DEGRADED", "catalog: video lost")
            assert gw.supervisor.lookup(new_id).info["name"] == "新增通道"
            assert gw.supervisor.lookup(ids[0]) is None
            # faulty channels named by a keepalive
            await nvr.keepalive(faulty=[ids[3]])
            await until(lambda: state(gw, ids[3])[0] == "DEGRADED", 5, "faulty channel")
            assert "faulty" in state(gw, ids[3])[1]
        finally:
            await nvr.stop()


async def test_a_catalog_that_stops_short_is_kept_partial_and_said_so(tmp_path):
    async with gateway(config(tmp_path)) as (gw, port):
        ids = channel_ids(NVR_ID, 3)
        nvr = await GbDevice(port, NVR_ID, answer_queries=False).start()
        try:
            assert (await nvr.register()).status == 200
            await until(lambda: nvr.requests("MESSAGE", "Catalog"), 5, "catalog query")
            req, text = nvr.requests("MESSAGE", "Catalog")[0]
            sn = int(text.split("<SN>")[1].split("<")[0])
            item = (
                f"<Item>\r\n<DeviceID>{ids[0]}</DeviceID>\r\n<Name>only one</Name>\r\n<Status>ON</Status>\r\n"
                "</Item>\r\n"
            )
            inner = f'<SumNum>3</SumNum>\r\n<DeviceList Num="1">\r\n{item}</DeviceList>\r\n'
            assert (await nvr.message(xml("Response", "Catalog", sn, NVR_ID, inner))).status == 200
            await until(lambda: gw.supervisor.lookup(NVR_ID).info.get("catalog") == "partial", 10, "partial catalog")
            assert gw.supervisor.lookup(ids[0]) is not None
            assert gw.supervisor.lookup(NVR_ID).counters["catalogs_partial"] == 1
        finally:
            await nvr.stop()


async def test_alarms_reach_subscribers_on_the_channel_topic_and_are_answered_as_the_standard_says(tmp_path):
    async with gateway(config(tmp_path)) as (gw, port):
        ids = channel_ids(NVR_ID, 2)
        nvr = await GbDevice(port, NVR_ID, channels=list(zip(ids, NAMES[: len(ids)], strict=True))).start()
        try:
            assert (await nvr.register()).status == 200
            await until(lambda: gw.supervisor.lookup(ids[1]) is not None, 10, "channels listed")
            got = []
            async with client(gw) as (stub, _):

                async def subscribe():
                    req = pb.SubscribeRequest(topics=["camera/+/alarm"], from_seq=1)
                    async for batch in stub.Subscribe(req, metadata=md(READ)):
                        got.extend((e.topic, msgpack.unpackb(e.payload)) for e in batch.envelopes)

                sub = asyncio.ensure_future(subscribe())
                try:
                    motion = await nvr.alarm(source=ids[1], method=5, alarm_type=2)
                    assert motion.status == 200
                    assert (
                        await nvr.alarm(source=ids[0], priority=2, method=2, alarm_type=1, description="视频丢失")
                    ).status == 200
                    await until(lambda: len(got) == 2, 10, "two alarms over gRPC")
                finally:
                    sub.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await sub
            topic, payload = got[0]
            assert topic == f"camera/{ids[1]}/alarm"
            assert payload["kind"] == "motion" and payload["priority"] == 1 and payload["method"] == 5
            assert payload["type"] == 2 and payload["description"] == "移动侦测" and payload["device"] == NVR_ID
            assert payload["lat"] == 27.8 and payload["lon"] == 112.9
            # 2026-12-07T17:30:00 Beijing = 09:30:00 UTC
            assert payload["time_ns"] == 1796635800 * 10**9
            assert got[1][1]["kind"] == "video_loss" and got[1][0] == f"camera/{ids[0]}/alarm"
            # answered with a Response MESSAGE per alarm, and ResetAlarm after the device alarm
            await until(lambda: len(nvr.requests("MESSAGE", "Alarm")) == 2, 5, "alarm Responses")
            await until(lambda: nvr.requests("MESSAGE", "DeviceControl"), 5, "ResetAlarm")
            _req, text = nvr.requests("MESSAGE", "DeviceControl")[0]
            assert "<AlarmCmd>ResetAlarm</AlarmCmd>" in text and f"<DeviceID>{ids[0]}</DeviceID>" in text
        finally:
            await nvr.stop()


async def test_mobile_positions_go_to_gnss_fix_converted_from_gcj02(tmp_path):
    async with gateway(config(tmp_path)) as (gw, port):
        cam = await GbDevice(port, BODYCAM_ID).start()
        try:
            assert (await cam.register()).status == 200
            await until(lambda: cam.requests("SUBSCRIBE", "MobilePosition"), 5, "position SUBSCRIBE")
            sub, text = cam.requests("SUBSCRIBE", "MobilePosition")[0]
            assert "<Interval>5</Interval>" in text and sub.headers.get("Event").startswith("presence")
            got = []
            async with client(gw) as (stub, _):

                async def subscribe():
                    req = pb.SubscribeRequest(topics=["gnss/+/fix"], from_seq=1)
                    async for batch in stub.Subscribe(req, metadata=md(GNSS_ONLY)):
                        got.extend((e.topic, msgpack.unpackb(e.payload)) for e in batch.envelopes)

                task = asyncio.ensure_future(subscribe())
                try:
                    assert (await cam.position(27.8291, 112.9441)).status == 200
                    notify = await cam.position(
                        27.8300,
                        112.9450,
                        method="NOTIFY",
                        headers=[("Event", "presence"), ("Subscription-State", "active")],
                    )
                    assert notify.status == 200
                    await until(lambda: len(got) == 2, 10, "two fixes over gRPC")
                finally:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            topic, fix = got[0]
            assert topic == f"gnss/{BODYCAM_ID}/fix"
            lat, lon = datum.gcj02_to_wgs84(27.8291, 112.9441)
            assert (fix["lat"], fix["lon"]) == (round(lat, 9), round(lon, 9))
            assert abs(fix["lat"] - 27.8291) > 1e-4  # GCJ-02 is hundreds of metres off in Hunan
            assert fix["datum"] == "gcj02" and fix["source"] == "gb28181" and fix["target_id"] == BODYCAM_ID
            assert fix["speed_mps"] == 10.0 and fix["course_deg"] == 90.0 and fix["alt_m"] == 50.0
            assert fix["time_ns"] == 1796635800 * 10**9
        finally:
            await cam.stop()


async def test_a_device_going_offline_takes_its_channels_with_it(tmp_path):
    async with gateway(config(tmp_path, keepalive={"interval_s": 0.5, "count": 2})) as (gw, port):
        ids = channel_ids(NVR_ID, 2)
        nvr = await GbDevice(port, NVR_ID, channels=list(zip(ids, NAMES[: len(ids)], strict=True))).start()
        try:
            assert (await nvr.register()).status == 200
            await until(lambda: state(gw, ids[1])[0] == "ONLINE", 10, "channel ONLINE")
            await until(lambda: state(gw, NVR_ID)[0] == "OFFLINE", 10, "device OFFLINE")
            assert state(gw, ids[0]) == ("OFFLINE", f"device {NVR_ID} offline")
            assert (await nvr.keepalive()).status == 200
            await until(lambda: state(gw, ids[0])[0] == "ONLINE", 5, "channel back")
            health = [e["payload"]["state"] for e in journal_envelopes(gw.journal, f"camera/{ids[0]}/health")]
            assert health == ["ONLINE", "OFFLINE", "ONLINE"], health
        finally:
            await nvr.stop()


async def test_catalogs_are_bounded_per_device(tmp_path):
    async with gateway(config(tmp_path, max_channels=3)) as (gw, port):
        ids = channel_ids(NVR_ID, 5)
        nvr = await GbDevice(port, NVR_ID, channels=[(c, f"通道{i}") for i, c in enumerate(ids)], chunk=5).start()
        try:
            assert (await nvr.register()).status == 200
            await until(lambda: gw.supervisor.lookup(NVR_ID).info.get("catalog"), 10, "catalog read")
            listed = [c for c in ids if gw.supervisor.lookup(c) is not None]
            assert len(listed) == 3 and gw.supervisor.lookup(NVR_ID).info["channels"] == "3"
            # an ADD beyond the bound is dropped and counted
            extra = channel_ids(NVR_ID, 6)[5]
            resp = await nvr.message(
                catalog_notify(nvr, [(extra, "ADD", "one too many")]),
                method="NOTIFY",
                headers=[("Event", "Catalog"), ("Subscription-State", "active")],
            )
            assert resp.status == 200
            await until(lambda: gw.supervisor.lookup(NVR_ID).counters.get("dropped_too_many_channels"), 5, "the drop")
            assert gw.supervisor.lookup(extra) is None
        finally:
            await nvr.stop()


async def test_a_message_from_a_channels_id_counts_as_its_devices(tmp_path):
    async with gateway(config(tmp_path)) as (gw, port):
        ids = channel_ids(NVR_ID, 2)
        nvr = await GbDevice(port, NVR_ID, channels=list(zip(ids, NAMES[: len(ids)], strict=True))).start()
        try:
            assert (await nvr.register()).status == 200
            await until(lambda: gw.supervisor.lookup(ids[1]) is not None, 10, "channels listed")
            # some NVRs send a channel's alarm From the channel's ID: not refused as unregistered
            nvr.id = ids[1]
            assert (await nvr.alarm()).status == 200
            nvr.id = NVR_ID
            alarms = journal_envelopes(gw.journal, "camera/+/alarm")
            assert [(e["topic"], e["payload"]["device"]) for e in alarms] == [(f"camera/{ids[1]}/alarm", NVR_ID)]
        finally:
            await nvr.stop()
