"""The GB/T 28181 device simulator against a small platform over real UDP and TCP on 127.0.0.1:
digest registration, keepalive, catalogs in chunks, queries, PTZ and presets, alarms and ResetAlarm,
mobile positions by subscription, INVITE with RTP, each field fault, and the process contract."""

import asyncio
import json
import os
import signal
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from gb28181_platform import DOMAIN, SERVER_ID, offer, platform
from tianwang.drivers.gb28181 import manscdp, ptz
from tianwang.drivers.gb28181.simulator import Fleet

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(60)


async def fleet_on(p, **kw):
    kw.setdefault("password", p.password)
    fleet = Fleet("127.0.0.1", p.port, server_id=SERVER_ID, **kw)
    await fleet.start()
    return fleet


@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize("qop", [False, True])
async def test_devices_register_with_digest_and_keep_alive(transport, qop):
    async with platform(qop=qop) as p:
        fleet = await fleet_on(p, devices=2, channels=4, mobile=1, transport=transport, keepalive_s=0.3)
        try:
            await fleet.wait_online(timeout=20)
            ids = [d.id for d in fleet.devices]
            await p.until(lambda: all(len(p.bodies(i, "Keepalive")) >= 2 for i in ids), what="keepalives")
        finally:
            await fleet.stop()
        for d in fleet.devices:
            seen = p.devices[d.id]
            assert seen.transport == transport.upper() and seen.registered == 1
            first, second = [r for m, r in seen.requests if m == "REGISTER"][:2]
            assert first.headers.get("Authorization") is None and second.headers.get("Authorization")
            assert first.call_id == second.call_id and second.cseq[0] == first.cseq[0] + 1
            auth = seen.authorizations[0]
            assert auth["username"] == d.id and auth["uri"] == f"sip:{SERVER_ID}@{DOMAIN}" and auth["realm"] == DOMAIN
            assert ("qop" in auth) == qop
            ka = p.bodies(d.id, "Keepalive")[0]
            assert ka.root == "Notify" and ka.fields["Status"] == "OK" and ka.device_id == d.id
            assert seen.unregistered == 1  # stop() unregistered (Expires: 0) after its own challenge
        assert fleet.stats()["registered"] == 3 and fleet.stats()["online"] == 0
        assert [d.kind for d in fleet.devices] == ["nvr", "nvr", "mobile"]
        assert {d.id[10:13] for d in fleet.devices} == {"118", "138"}


async def test_interval_too_brief_is_answered_with_min_expires():
    async with platform(min_expires=3600) as p:
        fleet = await fleet_on(p, devices=1, channels=1, expires=600)
        try:
            await fleet.wait_online()
        finally:
            await fleet.stop()
        assert p.devices[fleet.devices[0].id].expires == [3600, 0]  # then the unregister


async def test_catalog_comes_in_chunks_that_reassemble_to_sumnum():
    async with platform() as p:
        fleet = await fleet_on(p, devices=1, channels=16)
        try:
            await fleet.wait_online()
            nvr = fleet.devices[0]
            sn = await p.ask(nvr.id, "Query", "Catalog")
            await p.until(lambda: sum(len(_items(b)) for b in p.bodies(nvr.id, "Catalog")) >= 16, what="catalog")
        finally:
            await fleet.stop()
        chunks = p.bodies(nvr.id, "Catalog", "Response")
        assert len(chunks) >= 3 and all(b.sn == sn and int(b.fields["SumNum"]) == 16 for b in chunks)
        items = [it for b in chunks for it in _items(b)]
        assert sorted(it["DeviceID"] for it in items) == sorted(ch.id for ch in nvr.channels)
        assert {it["Name"] for it in items} == {ch.name for ch in nvr.channels}
        assert all(it["ParentID"] == nvr.id and it["CivilCode"].startswith("4303") for it in items)
        # the typed reader the listener uses sees cameras, on, with positions and PTZ types
        typed = [it for b in chunks for it in manscdp.catalog_items(b)[1]]
        assert {(t.kind, t.status) for t in typed} == {("camera", "ON")}
        assert {t.ptz_type for t in typed} == {1, 3} and all(abs(t.lat - 27.85) < 0.2 for t in typed)
        # every catalog datagram stays inside the UDP budget, in GB2312
        catalog_raw = [d for d, _ in p.raw if b"<CmdType>Catalog</CmdType>" in d]
        assert len(catalog_raw) == len(chunks)
        for data in catalog_raw:
            body = data.split(b"\r\n\r\n", 1)[1]
            assert len(body) < 1400 and b'encoding="GB2312"' in body
            body.decode("gb2312")


def _items(body):
    listing = body.fields.get("DeviceList") or body.fields.get("RecordList") or body.fields.get("PresetList") or {}
    items = listing.get("Item", []) if isinstance(listing, dict) else listing
    return items if isinstance(items, list) else [items]


async def test_device_info_status_records_and_config():
    async with platform() as p:
        fleet = await fleet_on(p, devices=1, channels=2)
        try:
            await fleet.wait_online()
            nvr = fleet.devices[0]
            ch = nvr.channels[1]
            await p.ask(nvr.id, "Query", "DeviceInfo")
            await p.ask(nvr.id, "Query", "DeviceStatus")
            await p.ask(nvr.id, "Query", "ConfigDownload", [("ConfigType", "BasicParam")])
            sn = await p.ask(
                nvr.id,
                "Query",
                "RecordInfo",
                [("StartTime", "2026-12-06T00:00:00"), ("EndTime", "2026-12-06T06:00:00"), ("Type", "all")],
                target=ch.id,
            )
            await p.until(
                lambda: (
                    p.bodies(nvr.id, "DeviceInfo")
                    and p.bodies(nvr.id, "DeviceStatus")
                    and p.bodies(nvr.id, "ConfigDownload")
                    and sum(len(_items(b)) for b in p.bodies(nvr.id, "RecordInfo"))
                    >= int(p.bodies(nvr.id, "RecordInfo")[0].fields["SumNum"])
                ),
                what="answers",
            )
        finally:
            await fleet.stop()
        info = p.bodies(nvr.id, "DeviceInfo")[0].fields
        assert info["Manufacturer"] == "Tianwang" and int(info["Channel"]) == 2 and info["Result"] == "OK"
        status = p.bodies(nvr.id, "DeviceStatus")[0].fields
        assert status["Online"] == "ONLINE" and status["Result"] == "OK"
        assert int(p.bodies(nvr.id, "ConfigDownload")[0].fields["BasicParam"]["HeartBeatInterval"]) == 60
        records = p.bodies(nvr.id, "RecordInfo")
        assert all(b.sn == sn and b.device_id == ch.id for b in records)
        items = [it for b in records for it in _items(b)]
        assert len(items) == int(records[0].fields["SumNum"]) > 12  # 12 half hours and the alarm clips
        assert all("2026-12-06T00:00:00" <= it["StartTime"] < it["EndTime"] <= "2026-12-06T06:00:00" for it in items)


async def test_ptz_moves_the_head_and_presets_are_kept():
    async with platform() as p:
        fleet = await fleet_on(p, devices=1, channels=2)
        try:
            await fleet.wait_online()
            nvr = fleet.devices[0]
            ch = nvr.channels[0]
            loop = asyncio.get_running_loop()
            start = ch.head.position(loop.time())
            await p.ask(nvr.id, "Control", "DeviceControl", [("PTZCmd", ptz.ptz_cmd(0.5, 0.0, 0.0))], target=ch.id)
            await p.until(ch.head.moving, what="moving")
            assert ch.head.v[0] > 0 and ch.head.v[1] == 0 and ch.head.v[2] == 0  # right, at about half speed
            await p.until(lambda: (ch.head.position(loop.time())[0] - start[0]) % 360 > 5, what="panned")
            await p.ask(nvr.id, "Control", "DeviceControl", [("PTZCmd", ptz.stop_cmd())], target=ch.id)
            await p.until(lambda: not ch.head.moving(), what="stopped")
            here = ch.head.position(loop.time())
            assert ch.head.position(loop.time() + 10) == here  # a stopped head stays
            await p.ask(nvr.id, "Control", "DeviceControl", [("PTZCmd", ptz.preset_cmd("set", 7))], target=ch.id)
            await p.until(lambda: 7 in ch.head.presets, what="preset set")
            await p.ask(nvr.id, "Control", "DeviceControl", [("PTZCmd", ptz.ptz_cmd(0, -1.0, 0))], target=ch.id)
            await p.until(lambda: ch.head.position(loop.time())[1] < here[1] - 3, what="tilted")
            await p.ask(nvr.id, "Control", "DeviceControl", [("PTZCmd", ptz.preset_cmd("goto", 7))], target=ch.id)
            await p.until(lambda: not ch.head.moving(), what="at preset")
            assert ch.head.position(loop.time()) == pytest.approx(here)
            await p.ask(nvr.id, "Query", "PresetQuery", target=ch.id)
            await p.until(lambda: p.bodies(nvr.id, "PresetQuery"), what="preset list")
            listed = _items(p.bodies(nvr.id, "PresetQuery")[0])
            assert [int(it["PresetID"]) for it in listed] == [7]
            await p.ask(nvr.id, "Control", "DeviceControl", [("PTZCmd", ptz.preset_cmd("delete", 7))], target=ch.id)
            await p.until(lambda: 7 not in ch.head.presets, what="preset deleted")
            assert nvr.channels[1].head.commands == 0  # only the addressed channel moved
            # a PTZCmd with a wrong checksum is refused, not obeyed
            bad = ptz.ptz_cmd(1.0, 0, 0)
            bad = bad[:-2] + f"{(int(bad[-2:], 16) + 1) % 256:02X}"
            await p.ask(nvr.id, "Control", "DeviceControl", [("PTZCmd", bad)], target=ch.id)
            await p.until(lambda: fleet.counters["ptz_rejected"] == 1, what="rejected")
            assert not ch.head.moving()
        finally:
            await fleet.stop()


async def test_alarms_need_reset_alarm_before_the_next_device_alarm():
    async with platform() as p:
        fleet = await fleet_on(p, devices=1, channels=2)
        try:
            await fleet.wait_online()
            nvr = fleet.devices[0]
            ch = nvr.channels[0]
            assert fleet.alarm(nvr.id, ch.id, "video_loss")
            assert not fleet.alarm(nvr.id, ch.id, "video_loss")  # held until ResetAlarm
            assert fleet.alarm(nvr.id, ch.id, "motion") and fleet.alarm(nvr.id, ch.id, "tripwire")
            await p.until(lambda: len(p.bodies(ch.id, "Alarm")) + len(p.bodies(nvr.id, "Alarm")) >= 3, what="alarms")
            await p.ask(
                nvr.id,
                "Control",
                "DeviceControl",
                [("AlarmCmd", "ResetAlarm"), ("Info", {"AlarmMethod": 2, "AlarmType": 1})],
                target=ch.id,
            )
            await p.until(
                lambda: p.bodies(nvr.id, "DeviceControl") or p.bodies(ch.id, "DeviceControl"), what="reset answered"
            )
            assert fleet.alarm(nvr.id, ch.id, "video_loss")
            await p.until(lambda: fleet.counters["alarms_acked"] == 4, what="acks")
        finally:
            await fleet.stop()
        alarms = [b for b in p.devices[nvr.id].bodies if b.cmd_type == "Alarm"]
        got = [(int(b.fields["AlarmMethod"]), int(b.fields["Info"]["AlarmType"])) for b in alarms]
        assert got == [(2, 1), (5, 2), (5, 5), (2, 1)]
        assert all(b.device_id == ch.id and ch.name in b.fields["AlarmDescription"] for b in alarms)
        assert fleet.counters["alarms_held"] == 1 and fleet.counters["resets_received"] == 1


async def test_alarm_and_catalog_subscriptions_turn_alarms_into_notifies():
    async with platform() as p:
        fleet = await fleet_on(p, devices=1, channels=2, keepalive_s=0.2, video_loss_s=1.0)
        try:
            await fleet.wait_online()
            nvr = fleet.devices[0]
            ch = nvr.channels[0]
            subs = {}
            for cmd, event in (("Alarm", "presence"), ("Catalog", "Catalog;id=1")):
                body = (
                    f'<?xml version="1.0" encoding="GB2312"?>\r\n<Query><CmdType>{cmd}</CmdType><SN>9</SN>'
                    f"<DeviceID>{nvr.id}</DeviceID></Query>"
                ).encode()
                req, fut = p.request(nvr.id, "SUBSCRIBE", body=body, headers=[("Event", event), ("Expires", "600")])
                assert (await asyncio.wait_for(fut, 10)).status == 200
                subs[cmd] = req
            assert fleet.alarm(nvr.id, ch.id, "video_loss")
            await p.until(lambda: p.bodies(ch.id, "Alarm") or p.bodies(nvr.id, "Alarm"), what="alarm notify")
            await p.until(lambda: p.bodies(nvr.id, "Catalog", "Notify"), what="catalog notify")
            await p.until(lambda: fleet.counters["alarms_acked"] == 1, what="ack")
            # while the video is lost the keepalive names the channel; then it comes back (ON)
            await p.until(
                lambda: any(ch.id in str(k.fields.get("Info")) for k in p.bodies(nvr.id, "Keepalive")),
                what="faulty channel in a keepalive",
            )
            await p.until(lambda: len(p.bodies(nvr.id, "Catalog", "Notify")) == 2, what="video back")
            assert not ch.video_lost
        finally:
            await fleet.stop()
        notifies = {r.call_id: r for m, r in p.devices[nvr.id].requests if m == "NOTIFY"}
        assert set(notifies) == {subs["Alarm"].call_id, subs["Catalog"].call_id}
        assert notifies[subs["Catalog"].call_id].headers.get("Event") == "Catalog;id=1"
        events = [_items(e)[0] for e in p.bodies(nvr.id, "Catalog", "Notify")]
        assert [(i["DeviceID"], i["Event"]) for i in events] == [(ch.id, "VLOST"), (ch.id, "ON")]
        # inside the subscription the alarm went as a NOTIFY only, not also as a MESSAGE
        assert not [m for m, r in p.devices[nvr.id].requests if m == "MESSAGE" and b"<CmdType>Alarm<" in r.body]


async def test_alarm_rate_spreads_alarms_over_the_fleet():
    async with platform() as p:
        fleet = await fleet_on(p, devices=3, channels=2, alarm_rate=40.0, alarm_kinds=("motion",))
        try:
            await fleet.wait_online()
            await p.until(lambda: fleet.counters["alarms_acked"] >= 60, what="alarms")
        finally:
            await fleet.stop()
        senders = {b.device_id for d in fleet.devices for b in p.bodies(d.id, "Alarm")}
        assert len(senders) >= 4  # from several channels of several devices
        assert all(int(b.fields["AlarmMethod"]) == 5 for d in fleet.devices for b in p.bodies(d.id, "Alarm"))


async def test_alarms_after_online_wait_for_the_whole_fleet():
    async with platform() as p:
        fleet = Fleet(
            "127.0.0.1",
            p.port,
            server_id=SERVER_ID,
            devices=2,
            channels=1,
            password=p.password,
            alarm_rate=50.0,
            alarms_after_online=True,
            backoff_initial=0.1,
            backoff_max=0.2,
        )
        p.passwords[fleet.devices[1].id] = "not-what-it-knows"  # the second one stays refused
        await fleet.start()
        try:
            await fleet.wait_online(1)
            await p.until(lambda: fleet.counters["register_refused"] >= 3, what="refusals")
            assert fleet.counters["alarms_sent"] == 0
            p.passwords.pop(fleet.devices[1].id)
            await fleet.wait_online(2)
            await p.until(lambda: fleet.counters["alarms_acked"] >= 10, what="alarms once all are online")
        finally:
            await fleet.stop()


async def test_mobile_units_report_positions_while_subscribed():
    async with platform() as p:
        fleet = await fleet_on(p, devices=0, mobile=1)
        try:
            await fleet.wait_online()
            unit = fleet.devices[0]
            body = (
                b'<?xml version="1.0" encoding="GB2312"?>\r\n<Query><CmdType>MobilePosition</CmdType><SN>5</SN>'
                + f"<DeviceID>{unit.id}</DeviceID>".encode()
                + b"<Interval>1</Interval></Query>"
            )
            sub, fut = p.request(unit.id, "SUBSCRIBE", body=body, headers=[("Event", "presence"), ("Expires", "60")])
            ok = await asyncio.wait_for(fut, 10)
            assert ok.status == 200 and ok.headers.get("Expires") == "60" and ok.to.params.get("tag")
            await p.until(lambda: len(p.bodies(unit.id, "MobilePosition")) >= 3, what="positions")
            notifies = [r for m, r in p.devices[unit.id].requests if m == "NOTIFY"]
            assert all(n.call_id == sub.call_id and n.to.params.get("tag") == sub.from_.params["tag"] for n in notifies)
            assert all(n.headers.get("Subscription-State", "").startswith("active") for n in notifies)
            cseqs = [n.cseq[0] for n in notifies]
            assert cseqs == sorted(cseqs) and len(set(cseqs)) == len(cseqs)
            # unsubscribe: Expires 0 inside the dialog
            _req, fut = p.request(
                unit.id,
                "SUBSCRIBE",
                body=body,
                call_id=sub.call_id,
                from_tag=sub.from_.params["tag"],
                to_tag=ok.to.params["tag"],
                headers=[("Event", "presence"), ("Expires", "0")],
            )
            assert (await asyncio.wait_for(fut, 10)).status == 200
            n = len(p.bodies(unit.id, "MobilePosition"))
            await asyncio.sleep(2.5)
            assert len(p.bodies(unit.id, "MobilePosition")) == n
        finally:
            await fleet.stop()
        positions = p.bodies(unit.id, "MobilePosition")
        coords = [(float(b.fields["Latitude"]), float(b.fields["Longitude"])) for b in positions]
        assert all(abs(lat - 27.83) < 0.12 and abs(lon - 112.94) < 0.12 for lat, lon in coords)
        assert len(set(coords)) == len(coords)  # it drives
        assert all(0 < float(b.fields["Speed"]) <= 60 for b in positions)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_invite_streams_ps_over_rtp_with_the_ssrc_until_bye(transport):
    loop = asyncio.get_running_loop()
    got = []
    if transport == "udp":

        class Rx(asyncio.DatagramProtocol):
            def datagram_received(self, data, addr):
                got.append(data)

        rx, _ = await loop.create_datagram_endpoint(Rx, local_addr=("127.0.0.1", 0))
        media_port = rx.get_extra_info("sockname")[1]
    else:
        buf = bytearray()

        async def accept(reader, writer):
            while chunk := await reader.read(65536):
                buf.extend(chunk)
                while len(buf) >= 2 and len(buf) >= 2 + struct.unpack(">H", buf[:2])[0]:
                    n = struct.unpack(">H", buf[:2])[0]
                    got.append(bytes(buf[2 : 2 + n]))
                    del buf[: 2 + n]

        rx = await asyncio.start_server(accept, "127.0.0.1", 0)
        media_port = rx.sockets[0].getsockname()[1]
    async with platform() as p:
        fleet = await fleet_on(p, devices=1, channels=2, transport=transport)
        fleet.media_fps = 50.0
        try:
            await fleet.wait_online()
            nvr = fleet.devices[0]
            ch = nvr.channels[1]
            invite, fut = p.request(
                nvr.id,
                "INVITE",
                target=ch.id,
                body=offer("127.0.0.1", media_port, "0430300042", transport),
                content_type="application/sdp",
                headers=[("Subject", f"{ch.id}:0430300042,{SERVER_ID}:0")],
            )
            ok = await asyncio.wait_for(fut, 10)
            assert ok.status == 200 and ok.content_type == "application/sdp"
            answer = ok.body.decode()
            assert "y=0430300042" in answer and "a=sendonly" in answer
            p.ack(nvr.id, invite, ok)
            await p.until(lambda: len(got) >= 40, what="rtp")
            assert all(struct.unpack(">I", pkt[8:12])[0] == 430300042 and pkt[1] & 0x7F == 96 for pkt in got)
            assert got[0][12:16] == b"\x00\x00\x01\xba"  # a PS pack starts the stream
            _bye, fut = p.request(
                nvr.id,
                "BYE",
                target=ch.id,
                call_id=invite.call_id,
                from_tag=invite.from_.params["tag"],
                to_tag=ok.to.params["tag"],
                cseq=invite.cseq[0] + 1,
                body=b"",
            )
            assert (await asyncio.wait_for(fut, 10)).status == 200
            await p.until(lambda: fleet.stats()["calls_active"] == 0, what="call ended")
            await asyncio.sleep(0.3)
            n = len(got)
            await asyncio.sleep(0.5)
            assert len(got) == n  # nothing after the BYE
        finally:
            await fleet.stop()
            rx.close()
        assert fleet.stats()["rtp_packets"] >= 40 and fleet.counters["byes"] == 1


# -- faults -----------------------------------------------------------------------------------------
async def test_fault_wrong_password_is_refused_and_retried():
    async with platform() as p:
        fleet = await fleet_on(
            p, devices=1, channels=1, faults={"wrong_password"}, backoff_initial=0.1, backoff_max=0.3
        )
        try:
            await p.until(lambda: fleet.counters["register_refused"] >= 2, what="refusals")
        finally:
            await fleet.stop()
        assert fleet.counters["registered"] == 0 and p.devices[fleet.devices[0].id].registered == 0


async def test_fault_no_keepalive_is_a_2022_unit_that_stays_silent():
    async with platform() as p:
        fleet = await fleet_on(p, devices=1, channels=1, faults={"no_keepalive"}, keepalive_s=0.2)
        try:
            await fleet.wait_online()
            await asyncio.sleep(1.0)  # five keepalive intervals
            d = fleet.devices[0]
            assert p.bodies(d.id, "Keepalive") == []
            await p.ask(d.id, "Query", "DeviceInfo")  # it still answers
            await p.until(lambda: p.bodies(d.id, "DeviceInfo"), what="info")
        finally:
            await fleet.stop()
        assert all(r.headers.get("X-GB-Ver") == "3.0" for _m, r in p.devices[d.id].requests)


async def test_fault_nat_rebind_moves_the_source_port_without_registering_again():
    async with platform() as p:
        fleet = await fleet_on(p, devices=1, channels=1, faults={"nat_rebind"}, keepalive_s=0.3, rebind_after_s=0.5)
        try:
            await fleet.wait_online()
            d = fleet.devices[0]
            await p.until(lambda: len(set(p.devices[d.id].sources)) >= 2, what="new source port")
            await p.until(
                lambda: (
                    p.devices[d.id].sources[-1] != p.devices[d.id].sources[0] and len(p.bodies(d.id, "Keepalive")) >= 3
                ),
                what="keepalives from the new port",
            )
            # the platform reaches the device at its new address
            await p.ask(d.id, "Query", "DeviceInfo")
            await p.until(lambda: p.bodies(d.id, "DeviceInfo"), what="answer from the new port")
        finally:
            await fleet.stop(unregister=False)
        assert p.devices[d.id].registered == 1 and fleet.counters["rebinds"] == 1


async def test_fault_bad_xml_leaves_a_bare_ampersand_in_a_name():
    async with platform() as p:
        fleet = await fleet_on(p, devices=1, channels=3, faults={"bad_xml"})
        try:
            await fleet.wait_online()
            d = fleet.devices[0]
            await p.ask(d.id, "Query", "Catalog")
            await p.until(lambda: sum(len(_items(b)) for b in p.bodies(d.id, "Catalog")) >= 3, what="catalog")
        finally:
            await fleet.stop()
        raw = [x for x, _ in p.raw if b"<CmdType>Catalog</CmdType>" in x]
        assert any("湘潭 & 韶山".encode("gb2312") in x for x in raw)
        bodies = p.bodies(d.id, "Catalog")
        assert any(b.repaired for b in bodies)  # the platform's parser had to repair it


async def test_fault_slow_catalog_spaces_its_chunks():
    async with platform() as p:
        fleet = await fleet_on(p, devices=1, channels=12, faults={"slow_catalog"})
        loop = asyncio.get_running_loop()
        arrivals = []
        try:
            await fleet.wait_online()
            d = fleet.devices[0]
            t0 = loop.time()
            await p.ask(d.id, "Query", "Catalog")

            def count():
                n = len(p.bodies(d.id, "Catalog"))
                while len(arrivals) < n:
                    arrivals.append(loop.time())
                return sum(len(_items(b)) for b in p.bodies(d.id, "Catalog")) >= 12

            await p.until(count, timeout=30, what="slow catalog")
        finally:
            await fleet.stop()
        assert len(arrivals) >= 2 and arrivals[0] - t0 >= 1.0
        assert all(b - a >= 1.0 for a, b in zip(arrivals, arrivals[1:], strict=False))


async def test_fault_duplicate_sends_every_request_twice_and_the_device_absorbs_ours():
    async with platform() as p:
        fleet = await fleet_on(p, devices=1, channels=1, faults={"duplicate"}, keepalive_s=0.3)
        try:
            await fleet.wait_online()
            d = fleet.devices[0]
            await p.until(lambda: len(p.bodies(d.id, "Keepalive")) >= 4, what="keepalives")
            # the platform's own request sent twice is answered twice with one 200 and acted on once
            req, fut = p.request(d.id, "MESSAGE", body=_query(d.id, "DeviceInfo", 77))
            p._send(req, p.devices[d.id])
            await asyncio.wait_for(fut, 10)
            await p.until(lambda: fleet.counters["duplicates_absorbed"] >= 1, what="absorbed")
            await asyncio.sleep(0.5)
        finally:
            await fleet.stop()
        keepalives = [x for x, _ in p.raw if b"<CmdType>Keepalive</CmdType>" in x]
        assert len(keepalives) == 2 * len(set(keepalives))  # each datagram exactly twice
        assert len(p.bodies(d.id, "DeviceInfo")) == 2  # the answer MESSAGE went twice; one per SN
        assert fleet.counters["queries_answered"] == 1


def _query(device_id, cmd, sn):
    return (
        f'<?xml version="1.0" encoding="GB2312"?>\r\n<Query><CmdType>{cmd}</CmdType><SN>{sn}</SN>'
        f"<DeviceID>{device_id}</DeviceID></Query>"
    ).encode()


async def test_storm_makes_every_device_register_at_once():
    async with platform() as p:
        fleet = await fleet_on(p, devices=20, channels=1)
        try:
            await fleet.wait_online()
            fleet.storm()
            await p.until(lambda: all(p.devices[d.id].registered == 2 for d in fleet.devices), what="storm")
        finally:
            await fleet.stop()
        assert fleet.counters["storms"] == 1 and fleet.counters["registered"] == 40


# -- the process ------------------------------------------------------------------------------------
async def test_simulate_gb28181_process_prints_its_fleet_and_stops_on_sigterm():
    async with platform(password="pw-123456") as p:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tianwang.drivers.gb28181.simulator",
                "--connect",
                f"127.0.0.1:{p.port}",
                "--devices",
                "2",
                "--channels",
                "3",
                "--mobile",
                "1",
                "--password",
                "pw-123456",
                "--keepalive",
                "0.5",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=dict(os.environ),
        )
        try:
            first = json.loads(proc.stdout.readline())
            assert first["kind"] == "gb28181" and first["url"] == f"udp://127.0.0.1:{p.port}"
            assert first["server_id"] == SERVER_ID and first["passwords"] == ["pw-123456"]
            rows = first["device_list"]
            assert [r["type"] for r in rows] == ["nvr", "nvr", "mobile"] and all(len(r["id"]) == 20 for r in rows)
            assert sum(len(r["channels"]) for r in rows) == first["channels"] == 7
            await p.until(
                lambda: all(p.devices.get(r["id"]) and p.devices[r["id"]].registered for r in rows), what="registered"
            )
            await p.until(lambda: all(p.bodies(r["id"], "Keepalive") for r in rows), what="keepalives")
        finally:
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=15)
        assert proc.returncode == 0, err
        final = json.loads(out.strip().splitlines()[-1])["final"]
        assert final["registered"] == 3 and final["devices"] == 3 and final["online"] == 0


def test_simulate_gb28181_usage_errors():
    def run(*a):
        return subprocess.run(
            [sys.executable, "-m", "tianwang.drivers.gb28181.simulator", *a],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=30,
        )

    assert run().returncode == 2
    assert run("--connect", "nowhere").returncode == 2
    bad = run("--connect", "127.0.0.1:1", "--fault", "gremlins")
    assert bad.returncode == 2 and "unknown fault" in bad.stderr
    assert run("--connect", "127.0.0.1:1", "--devices", "0").returncode == 2
    assert run("--connect", "127.0.0.1:1", "--server-id", "123").returncode == 2
    assert "Traceback" not in bad.stderr
