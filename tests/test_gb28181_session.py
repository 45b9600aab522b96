"""One GB/T 28181 device's session (session.py), sans-io: bodies and times in, Steps out. Liveness
by the clock, alarms with their answers, positions and datums, catalogs gathered and events
applied, record answers gathered by SN, a lost TCP link."""

from __future__ import annotations

from tianwang.drivers.gb28181 import datum, manscdp
from tianwang.drivers.gb28181.session import DeviceSession, local_time_ns, local_time_text
from tianwang.drivers.sdk import Health

DEV = "43030000001180000001"
CH = [f"43030000001310000{i:03d}" for i in range(1, 4)]


def msg(root, cmd, sn, fields=(), device=DEV):
    return manscdp.parse(manscdp.build(root, cmd, sn, device, list(fields)))


def item(cid, status="ON", event=None, name="路口"):
    fields = {"DeviceID": cid, "Name": name, "ParentID": DEV, "Status": status}
    if event:
        fields["Event"] = event
    return fields


def catalog(sn, items, total=None, root="Response"):
    return msg(
        root,
        "Catalog",
        sn,
        [("SumNum", str(len(items) if total is None else total)), ("DeviceList", manscdp.item_list(items))],
    )


def session(**kw):
    s = DeviceSession(DEV, keepalive_s=60, keepalive_count=3, catalog_idle_s=10, **kw)
    s.register(0.0, 3600)
    return s


def test_liveness_follows_keepalives_expiry_and_the_link():
    s = DeviceSession(DEV, keepalive_s=60, keepalive_count=3)
    step = s.register(0.0, 3600)
    assert step.health == [(DEV, Health.ONLINE, "registered")]
    assert s.tick(100.0) is None  # nothing due: nothing allocated
    step = s.tick(181.0)
    assert step.health == [(DEV, Health.OFFLINE, "no keepalive for 181 s (3 x 60 s)")]
    step = s.message(msg("Notify", "Keepalive", 1, [("Status", "OK")]), 200.0, 0.0)
    assert step.health[0][:2] == (DEV, Health.ONLINE) and step.counts == ["keepalives"]
    step = s.message(msg("Notify", "Keepalive", 2, [("Status", "ERROR")]), 210.0, 0.0)
    assert step.health == [(DEV, Health.DEGRADED, "keepalive: Status ERROR")]
    s.message(msg("Notify", "Keepalive", 3, [("Status", "OK")]), 220.0, 0.0)
    assert s.link_lost("gone").health == [(DEV, Health.DEGRADED, "gone")]
    assert s.message(msg("Notify", "Keepalive", 4, [("Status", "OK")]), 230.0, 0.0).health[0][1] == Health.ONLINE
    assert s.tick(3600.0).health == [(DEV, Health.OFFLINE, "registration expired")]
    assert not s.registered


def test_an_alarm_is_published_on_its_source_answered_and_reset():
    s = session()
    fields = [
        ("AlarmPriority", "2"),
        ("AlarmMethod", "25"),
        ("AlarmTime", "2026-12-07T17:30:00"),
        ("AlarmDescription", "视频丢失"),
        ("Info", {"AlarmType": "1"}),
    ]
    step = s.message(msg("Notify", "Alarm", 77, fields, device=CH[0]), 1.0, 0.0)
    (pub,) = step.publications
    assert pub.target == CH[0] and pub.channel == "alarm" and pub.family == ""
    p = pub.payload
    assert (p["kind"], p["priority"], p["method"], p["methods"], p["type"]) == ("video_loss", 2, 2, [2, 5], 1)
    assert p["time_ns"] == local_time_ns("2026-12-07T17:30:00") == pub.device_time_ns
    assert p["device"] == DEV and p["channel_id"] == CH[0] and p["sn"] == 77 and p["lat"] is None
    response, reset = step.outgoing
    answer = manscdp.parse(response.body)
    assert (answer.root, answer.cmd_type, answer.sn, answer.device_id) == ("Response", "Alarm", 77, CH[0])
    control = manscdp.parse(reset.body)
    assert control.cmd_type == "DeviceControl" and control.fields["AlarmCmd"] == "ResetAlarm"
    # a video alarm (method 5) needs no reset
    step = s.message(msg("Notify", "Alarm", 78, [("AlarmMethod", "5"), ("AlarmType", "2")], device=CH[1]), 2.0, 0.0)
    assert len(step.outgoing) == 1 and step.publications[0].payload["kind"] == "motion"


def test_positions_are_fixes_with_their_datum():
    s = session(datum="gcj02")
    fields = [
        ("Time", "2026-12-07T17:30:00"),
        ("Longitude", "112.9441"),
        ("Latitude", "27.8291"),
        ("Speed", "72"),
        ("Direction", "180"),
    ]
    (pub,) = s.message(msg("Notify", "MobilePosition", 5, fields), 1.0, 0.0).publications
    lat, lon = datum.gcj02_to_wgs84(27.8291, 112.9441)
    assert (pub.family, pub.channel, pub.target) == ("gnss", "fix", DEV)
    fix = pub.payload
    assert (fix["lat"], fix["lon"]) == (round(lat, 9), round(lon, 9)) and fix["datum"] == "gcj02"
    assert fix["speed_mps"] == 20.0 and fix["course_deg"] == 180.0 and fix["alt_m"] is None
    # outside China nothing is shifted; impossible coordinates are dropped
    (pub,) = s.message(
        msg("Notify", "MobilePosition", 6, [("Longitude", "2.35"), ("Latitude", "48.85")]), 2.0, 0.0
    ).publications
    assert (pub.payload["lat"], pub.payload["lon"]) == (48.85, 2.35) and pub.payload["time_ns"] is None
    step = s.message(msg("Notify", "MobilePosition", 7, [("Longitude", "500"), ("Latitude", "27")]), 3.0, 0.0)
    assert step.drops == ["no_position"] and not step.publications


def test_a_catalog_in_chunks_then_its_events():
    s = session()
    q = s.query("Catalog")
    first = s.message(catalog(q.sn, [item(CH[0]), item(CH[1], "OFF")], total=3), 1.0, 0.0)
    assert not first.added and not first.answers
    done = s.message(catalog(q.sn, [item(CH[2])], total=3), 2.0, 0.0)
    assert done.added == CH and done.answers[0][:2] == (q.sn, "Catalog")
    health = {t: (st, r) for t, st, r in done.health}
    assert health[CH[1]] == (Health.OFFLINE, "catalog: OFF") and health[CH[0]][0] == Health.ONLINE
    assert done.info[DEV]["channels"] == "3" and done.info[DEV]["catalog"] == "complete"
    assert done.info[CH[0]]["name"] == "路口"
    step = s.message(catalog(9, [item(CH[0], event="VLOST"), item(CH[2], event="DEL")], root="Notify"), 3.0, 0.0)
    assert step.removed == [CH[2]] and (CH[0], Health.DEGRADED, "catalog: video lost") in step.health
    # a device going offline takes its channels along
    step = s.tick(1000.0)
    assert {(t, r) for t, st, r in step.health if st == Health.OFFLINE} >= {
        (CH[0], f"device {DEV} offline"),
        (CH[1], f"device {DEV} offline"),
    }


def test_a_catalog_that_stops_short_is_kept_partial():
    s = session()
    q = s.query("Catalog")
    s.message(catalog(q.sn, [item(CH[0])], total=3), 1.0, 0.0)
    step = s.tick(12.0)
    assert step.catalog_done is not None and not step.catalog_done.complete
    assert step.added == [CH[0]] and step.info[DEV]["catalog"] == "partial" and step.counts == ["catalogs_partial"]


def test_record_answers_are_gathered_by_sn():
    s = session()
    q = s.query("RecordInfo", CH[0])
    rec = {"DeviceID": CH[0], "StartTime": "2026-12-07T08:00:00", "EndTime": "2026-12-07T09:00:00"}
    part = [("SumNum", "3"), ("RecordList", manscdp.item_list([rec, rec]))]
    assert not s.message(msg("Response", "RecordInfo", q.sn, part, device=CH[0]), 1.0, 0.0).answers
    last = [("SumNum", "3"), ("RecordList", manscdp.item_list([rec]))]
    (answer,) = s.message(msg("Response", "RecordInfo", q.sn, last, device=CH[0]), 2.0, 0.0).answers
    sn, cmd, (total, items, complete) = answer
    assert (sn, cmd, total, len(items), complete) == (q.sn, "RecordInfo", 3, 3, True)


def test_local_times_are_beijing_time():
    assert local_time_ns("2026-12-07T17:30:00.250") == 1796635800 * 10**9 + 250_000_000
    assert local_time_ns("2026-12-07 17:30:00") == 1796635800 * 10**9
    assert local_time_ns("not a time") is None and local_time_ns("2026-13-07T17:30:00") is None
    assert local_time_text(1796635800) == "2026-12-07T17:30:00"


def test_channels_restored_after_a_restart_are_replaced_by_the_next_catalog():
    s = DeviceSession(DEV, keepalive_s=60, keepalive_count=3)
    s.restore(0.0, 1800)
    step = s.restore_channels(CH[:2])
    assert step.added == CH[:2] and step.info[DEV]["catalog"] == "restored"
    assert {t for t, st, _ in step.health if st == Health.ONLINE} == set(CH[:2])
    q = s.query("Catalog")
    step = s.message(catalog(q.sn, [item(CH[1]), item(CH[2])]), 1.0, 0.0)
    assert step.removed == [CH[0]] and step.added == [CH[2]] and step.info[DEV]["catalog"] == "complete"
