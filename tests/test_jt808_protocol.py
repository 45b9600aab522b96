"""JT/T 808 message layer (drivers/jt808/protocol.py): headers of both editions, bodies
read from hand-written bytes, builders checked by reading back, and bad input refused by reason."""

import datetime as dt
import struct

import pytest
from hypothesis import given, strategies as st

from tianwang.drivers.jt808 import protocol as p
from tianwang.gateway.errors import FrameError

GMT8 = dt.timezone(dt.timedelta(hours=8))


def ns(*args, tz=GMT8):
    return int(dt.datetime(*args, tzinfo=tz).timestamp()) * 1_000_000_000


def location_bytes(alarm, status, lat_u, lon_u, alt, speed, course, bcd_time, extras=b""):
    return struct.pack(">IIIIHHH", alarm, status, lat_u, lon_u, alt, speed, course) + bytes.fromhex(bcd_time) + extras


# -- headers ----------------------------------------------------------------------------------
def test_2013_header_read_from_bytes():
    body = b"\x01\x02\x03"
    frame = bytes.fromhex("02000003013800138000002a") + body
    header, got = p.parse(frame)
    assert header.msg_id == 0x0200
    assert header.version == "2013"
    assert header.protocol_version is None
    assert header.phone == "13800138000"
    assert header.phone_bcd == bytes.fromhex("013800138000")
    assert header.serial == 42
    assert header.body_length == 3 and not header.split and header.total == 0
    assert header.size == 12
    assert got == body


def test_2019_header_read_from_bytes():
    body = b"\xaa" * 5
    attrs = 0x4000 | 5
    frame = struct.pack(">HH", 0x0102, attrs) + b"\x01" + bytes.fromhex("00000000013912345678") + b"\x01\x00" + body
    header, got = p.parse(frame)
    assert header.version == "2019"
    assert header.protocol_version == 1
    assert header.phone == "13912345678"
    assert header.serial == 256
    assert header.size == 17
    assert got == body


def test_split_header_carries_total_and_index():
    attrs = 0x2000 | 2
    frame = struct.pack(">HH", 0x0704, attrs) + bytes.fromhex("000000000001") + struct.pack(">HHH", 7, 3, 2) + b"xy"
    header, body = p.parse(frame)
    assert header.split and (header.total, header.index) == (3, 2)
    assert header.size == 16 and body == b"xy"


@pytest.mark.parametrize("version,protocol_version", [("2013", None), ("2019", 1)])
@pytest.mark.parametrize("split", [False, True])
def test_build_then_parse_round_trip(version, protocol_version, split):
    phone_bcd = p.phone_to_bcd("13800138000", version)
    total, index = (4, 2) if split else (0, 0)
    frame = p.build(0x0200, b"body", phone_bcd, 70000, protocol_version, total, index)
    header, body = p.parse(frame)
    assert (header.msg_id, header.version, header.phone, header.serial) == (
        0x0200,
        version,
        "13800138000",
        70000 & 0xFFFF,
    )
    assert (header.total, header.index) == (total, index)
    assert body == b"body"
    # a reply built from the header answers in the terminal's own edition and number
    reply = p.build(p.PLATFORM_ACK, p.ack_body(header.serial, header.msg_id), serial=1, **p.reply_header_args(header))
    rh, _ = p.parse(reply)
    assert rh.version == version and rh.phone_bcd == header.phone_bcd


@pytest.mark.parametrize(
    "frame,reason",
    [
        (b"\x02\x00\x00\x00", "short_header"),
        (struct.pack(">HH", 0x0002, 0x4000) + b"\x01" + b"\x00" * 9, "short_header"),
        (bytes.fromhex("0002000001380013800a0001"), "bad_bcd"),
        (bytes.fromhex("020000100138001380000001") + b"\x00" * 3, "length_mismatch"),
        (bytes.fromhex("020000000138001380000001") + b"\x00", "length_mismatch"),
        (bytes.fromhex("02002000013800138000000100030000"), "bad_split"),
        (bytes.fromhex("02002000013800138000000100030004"), "bad_split"),
        (bytes.fromhex("02002000013800138000000100"), "short_header"),
        (bytes.fromhex("020004000138001380000001"), "encrypted"),
    ],
)
def test_bad_headers_refused_by_reason(frame, reason):
    with pytest.raises(p.Jt808Error) as info:
        p.parse(frame)
    assert info.value.reason == reason
    assert isinstance(info.value, FrameError)
    if reason in ("length_mismatch", "bad_split", "encrypted"):
        # readable header: the platform can still answer with 0x8001 result 2
        assert info.value.header is not None and info.value.header.phone == "13800138000"


@given(st.binary(max_size=64))
def test_parse_never_raises_anything_but_jt808error(data):
    try:
        p.parse(data)
    except p.Jt808Error:
        pass


def test_phone_bcd_widths():
    assert p.phone_to_bcd("13800138000") == bytes.fromhex("013800138000")
    assert p.phone_to_bcd("13800138000", "2019") == bytes.fromhex("00000000013800138000")
    with pytest.raises(ValueError):
        p.phone_to_bcd("1234567890123")  # 13 digits do not fit BCD[6]
    with pytest.raises(ValueError):
        p.phone_to_bcd("12a")
    assert p.phone_from_bcd(bytes(6)) == "0"
    with pytest.raises(p.Jt808Error):
        p.phone_from_bcd(b"\x1f")


def test_build_refuses_oversize_body_and_wrong_phone_width():
    with pytest.raises(ValueError):
        p.build(0x0200, b"\x00" * 1024, bytes(6), 0)
    with pytest.raises(ValueError):
        p.build(0x0200, b"", bytes(6), 0, protocol_version=1)
    with pytest.raises(ValueError):
        p.build(0x0200, b"", bytes(10), 0)


# -- location ---------------------------------------------------------------------------------
def test_location_read_from_bytes_with_hemispheres_and_extras():
    # fixed, south, west, GPS + BeiDou used; SOS; 31.234567 S 121.5 W; 12 m; 65.4 km/h; 270 deg
    status = (1 << 1) | (1 << 2) | (1 << 3) | (1 << 18) | (1 << 19)
    extras = bytes((0x01, 4)) + struct.pack(">I", 123456) + bytes((0x30, 1, 25, 0x31, 1, 14, 0xE1, 2, 0xAB, 0xCD))
    body = location_bytes(1, status, 31_234_567, 121_500_000, 12, 654, 270, "240102081530", extras)
    loc = p.parse_location(body)
    assert loc.lat == pytest.approx(-31.234567, abs=1e-9)
    assert loc.lon == pytest.approx(-121.5, abs=1e-9)
    assert loc.alt_m == 12 and loc.speed_kmh == pytest.approx(65.4) and loc.course_deg == 270
    assert loc.time_ns == ns(2024, 1, 2, 8, 15, 30)
    assert loc.time_ns == ns(2024, 1, 2, 0, 15, 30, tz=dt.UTC)
    assert loc.mileage_km == pytest.approx(12345.6)
    assert loc.signal == 25 and loc.satellites == 14
    assert loc.extras == {0xE1: b"\xab\xcd"}
    assert loc.fixed and loc.systems() == ["GPS", "BDS"]


def test_fix_payload_keys_units_and_nulls():
    status = (1 << 1) | (1 << 19)  # fixed, BeiDou only, north/east
    body = location_bytes(0, status, 39_908_692, 116_397_477, 50, 360, 90, "251231235959", bytes((0x31, 1, 9)))
    pay = p.fix_payload(p.parse_location(body))
    for (
        key
    ) in "time_ns lat lon alt_m speed_mps course_deg quality mode hdop pdop vdop sats_used sats_view source".split():
        assert key in pay
    assert pay["source"] == "jt808"
    assert pay["lat"] == pytest.approx(39.908692) and pay["lon"] == pytest.approx(116.397477)
    assert pay["speed_mps"] == pytest.approx(10.0)  # 36.0 km/h
    assert pay["course_deg"] == 90.0 and pay["alt_m"] == 50.0
    assert pay["quality"] == 1
    assert pay["mode"] is None and pay["hdop"] is None and pay["sats_view"] is None
    assert pay["sats_used"] == {"BDS": 9, "GPS": 0, "GLO": 0, "GAL": 0, "QZSS": 0}
    assert pay["sats_used_total"] == 9
    assert pay["time_ns"] == ns(2025, 12, 31, 15, 59, 59, tz=dt.UTC)
    # two systems: the count cannot be split, only the total is given
    both = location_bytes(0, status | (1 << 18), 0, 0, 0, 0, 0, "250101000000", bytes((0x31, 1, 9)))
    pay2 = p.fix_payload(p.parse_location(both))
    assert pay2["sats_used"] is None and pay2["sats_used_total"] == 9
    unfixed = p.fix_payload(p.parse_location(location_bytes(0, 0, 0, 0, 0, 0, 0, "250101000000")))
    assert unfixed["quality"] == 0 and unfixed["sats_used_total"] is None and unfixed["mileage_km"] is None


def test_invalid_date_gives_null_time_but_non_bcd_is_an_error():
    assert p.parse_location(location_bytes(0, 2, 0, 0, 0, 0, 0, "000000000000")).time_ns is None
    assert p.parse_location(location_bytes(0, 2, 0, 0, 0, 0, 0, "230230000000")).time_ns is None  # 30 Feb
    with pytest.raises(p.Jt808Error) as info:
        p.parse_location(location_bytes(0, 2, 0, 0, 0, 0, 0, "2301010000a0"))
    assert info.value.reason == "bad_bcd"


@pytest.mark.parametrize(
    "body,reason",
    [
        (b"\x00" * 27, "bad_body"),
        (location_bytes(0, 0, 90_000_001, 0, 0, 0, 0, "240101000000"), "bad_position"),
        (location_bytes(0, 0, 0, 180_000_001, 0, 0, 0, "240101000000"), "bad_position"),
        (location_bytes(0, 0, 0, 0, 0, 0, 0, "240101000000", b"\x01\x04\x00"), "bad_body"),
        (location_bytes(0, 0, 0, 0, 0, 0, 0, "240101000000", b"\x01"), "bad_body"),
    ],
)
def test_bad_locations_refused(body, reason):
    with pytest.raises(p.Jt808Error) as info:
        p.parse_location(body)
    assert info.value.reason == reason


@given(
    lat=st.floats(-90, 90),
    lon=st.floats(-180, 180),
    speed=st.integers(0, 6553).map(lambda v: v / 10),
    course=st.integers(0, 359),
    alt=st.integers(-500, 9000),
    t=st.integers(ns(2000, 1, 1, 0, 0, 0), ns(2099, 12, 31, 23, 59, 59)).map(lambda v: v // 10**9 * 10**9),
    alarm=st.integers(0, 2**32 - 1),
)
def test_location_builder_round_trip(lat, lon, speed, course, alt, t, alarm):
    body = p.location_body(
        lat,
        lon,
        t,
        alt_m=alt,
        speed_kmh=speed,
        course_deg=course,
        alarm=alarm,
        mileage_km=12.3,
        signal=20,
        satellites=11,
    )
    loc = p.parse_location(body)
    assert loc.lat == pytest.approx(lat, abs=5e-7) and loc.lon == pytest.approx(lon, abs=5e-7)
    # the sign survives even for values that round to zero millionths
    assert (loc.lat < 0) == (lat < 0) or round(abs(lat) * 1e6) == 0
    assert loc.speed_kmh == pytest.approx(speed) and loc.course_deg == course and loc.alt_m == alt
    assert loc.time_ns == t and loc.alarm == alarm
    assert (loc.mileage_km, loc.signal, loc.satellites) == (12.3, 20, 11)


# -- other bodies -----------------------------------------------------------------------------
def test_batch_read_and_refused_when_items_do_not_add_up():
    a = p.location_body(30.0, 120.0, ns(2024, 5, 1, 12, 0, 0))
    b = p.location_body(30.1, 120.1, ns(2024, 5, 1, 12, 0, 1), alarm=1)
    body = struct.pack(">HB", 2, 1) + struct.pack(">H", len(a)) + a + struct.pack(">H", len(b)) + b
    kind, locs = p.parse_batch(body)
    assert kind == p.BATCH_BLIND_AREA
    assert [round(x.lat, 6) for x in locs] == [30.0, 30.1] and locs[1].alarm == 1
    assert p.batch_body([a, b], p.BATCH_BLIND_AREA) == body
    for bad in (body[:-1], body + b"\x00", struct.pack(">HB", 3, 0) + body[3:], b"\x00"):
        with pytest.raises(p.Jt808Error) as info:
            p.parse_batch(bad)
        assert info.value.reason == "bad_body"


def test_location_reply():
    loc = p.location_body(-1.5, 2.5, ns(2024, 5, 1, 12, 0, 0))
    serial, got = p.parse_location_reply(struct.pack(">H", 513) + loc)
    assert serial == 513 and got.lat == -1.5 and got.lon == 2.5
    assert p.location_reply_body(513, loc) == struct.pack(">H", 513) + loc


def test_general_response_body():
    assert p.ack_body(0x1234, 0x0200, p.Result.UNSUPPORTED) == bytes.fromhex("1234020003")
    assert p.parse_ack(bytes.fromhex("0007010201")) == (7, 0x0102, 1)
    with pytest.raises(p.Jt808Error):
        p.parse_ack(b"\x00\x07")


@pytest.mark.parametrize("edition", ["2011", "2013", "2019"])
def test_registration_editions(edition):
    reg = p.Registration(31, 100, "ACME", "T-1", "ID0001", 2, "沪A12345", edition)
    body = p.register_body(reg)
    assert len(body) == 4 + sum(p.REGISTER_LAYOUT[edition]) + 1 + len("沪A12345".encode("gbk"))
    got = p.parse_register(body, "2019" if edition == "2019" else "2013")
    assert got.info() == reg.info()


def test_registration_read_from_bytes_2013():
    body = (
        struct.pack(">HH", 44, 300)
        + b"MAKER"
        + b"MODEL-X".ljust(20, b"\x00")
        + b"TID0007"
        + b"\x01"
        + "粤B00001".encode("gbk")
    )
    got = p.parse_register(body, "2013")
    assert (got.edition, got.manufacturer, got.model, got.terminal_id, got.plate, got.plate_colour) == (
        "2013",
        "MAKER",
        "MODEL-X",
        "TID0007",
        "粤B00001",
        1,
    )
    with pytest.raises(p.Jt808Error):
        p.parse_register(body[:20], "2013")


def test_register_reply_and_auth_bodies():
    assert p.register_reply_body(9, p.RegisterResult.OK, "abc") == b"\x00\x09\x00abc"
    assert p.parse_register_reply(b"\x00\x09\x00abc") == (9, 0, "abc")
    assert p.parse_register_reply(b"\x00\x09\x04") == (9, 4, "")
    assert p.parse_auth(b"code-1\x00", "2013").code == "code-1"
    body = p.auth_body("code-2", "2019", imei="860000000000001", software_version="1.2.3")
    assert body[0] == 6 and body[1:7] == b"code-2" and len(body) == 1 + 6 + 15 + 20
    a = p.parse_auth(body, "2019")
    assert (a.code, a.imei, a.software_version) == ("code-2", "860000000000001", "1.2.3")
    with pytest.raises(p.Jt808Error):
        p.parse_auth(b"\x09abc", "2019")


def test_derived_auth_codes_differ_per_phone_and_secret():
    a = p.derive_auth_code(b"s1", "13800000001")
    assert len(a) == 16 and a == p.derive_auth_code(b"s1", "13800000001")
    assert a != p.derive_auth_code(b"s1", "13800000002")
    assert a != p.derive_auth_code(b"s2", "13800000001")


def test_alarm_changes():
    assert p.alarm_changes(0, 0) == []
    assert p.alarm_changes(0, 1) == [{"kind": "sos", "active": True, "raw": "0x00000001", "alarm_word": 1}]
    assert p.alarm_changes(1, 0b10) == [
        {"kind": "sos", "active": False, "raw": "0x00000002", "alarm_word": 2},
        {"kind": "overspeed", "active": True, "raw": "0x00000002", "alarm_word": 2},
    ]
    assert p.alarm_changes(0, 1 << 31)[0]["kind"] == "illegal_door_open"
    assert p.alarm_changes(0, 1 << 16)[0]["kind"] == "bit_16"


# -- split messages ---------------------------------------------------------------------------
def _parts(body, serial, msg_id=0x0704, size=10):
    chunks = p.split_body(body, size)
    return [p.parse(p.build(msg_id, c, bytes(6), serial + i, None, len(chunks), i + 1)) for i, c in enumerate(chunks)]


def test_reassembler_joins_parts_in_any_order():
    body = bytes(range(35))
    parts = _parts(body, serial=65534)  # serials wrap past 65535
    r = p.Reassembler()
    out = [r.add(h, b, 0.0) for h, b in (parts[2], parts[0], parts[3], parts[0], parts[1])]
    assert out[:4] == [None, None, None, None]
    assert out[4] == body
    assert len(r) == 0


def test_reassembler_limits_and_expiry():
    r = p.Reassembler(max_parts=3, max_bytes=25, max_pending=2, timeout=5.0)
    big = _parts(bytes(50), serial=1)
    with pytest.raises(p.Jt808Error):
        r.add(*big[0], 0.0)  # 5 parts > 3
    r2 = p.Reassembler(max_parts=8, max_bytes=25, max_pending=2, timeout=5.0)
    parts = _parts(bytes(30), serial=1)
    r2.add(*parts[0], 0.0)
    r2.add(*parts[1], 0.0)
    with pytest.raises(p.Jt808Error):
        r2.add(*parts[2], 0.0)  # 30 bytes > 25
    r2.add(*_parts(bytes(15), serial=100)[0], 0.0)
    r2.add(*_parts(bytes(15), serial=200)[0], 1.0)
    r2.add(*_parts(bytes(15), serial=300)[0], 2.0)  # third message evicts the oldest
    assert r2.dropped == {"split_evicted": 1}
    assert r2.expire(6.5) == 1 and len(r2) == 1
    assert r2.dropped["split_timeout"] == 1
