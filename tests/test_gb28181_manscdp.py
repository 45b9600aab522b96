"""MANSCDP bodies: parsing (charsets, repairs, hardening, bounds), building, and the typed readers on
the field's variants. Sans-io: bytes in, dataclasses out."""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from lxml import etree

from tianwang.drivers.gb28181 import manscdp
from tianwang.drivers.gb28181.manscdp import ManscdpError, build, item_list, parse
from tianwang.drivers.sdk import FrameError

DEV = "43030000001180000001"  # an NVR under Xiangtan's centre code
CAM = "43030000001310000001"
XIANGTAN = "湘潭市岳塘区"


def body(root: str, inner: str, *, decl: str | None = "GB2312", codec: str = "gb18030") -> bytes:
    head = f'<?xml version="1.0" encoding="{decl}"?>\r\n' if decl else ""
    return (head + f"<{root}>\r\n{inner}\r\n</{root}>\r\n").encode(codec)


def reason(raw: bytes, **kw) -> str:
    with pytest.raises(ManscdpError) as e:
        parse(raw, **kw)
    return e.value.reason


# -- parse ----------------------------------------------------------------------------------------


def test_parse_header_and_fields_shape():
    raw = body(
        "Response",
        f"<CmdType>Catalog</CmdType><SN>123456789</SN><DeviceID>{DEV}</DeviceID><SumNum>1</SumNum>"
        f'<DeviceList Num="1"><Item><DeviceID>{CAM}</DeviceID><Name>x</Name></Item></DeviceList>',
    )
    msg = parse(raw)
    assert (msg.root, msg.cmd_type, msg.sn, msg.device_id) == ("Response", "Catalog", 123456789, DEV)
    assert msg.fields == {"SumNum": "1", "DeviceList": {"@Num": "1", "Item": [{"DeviceID": CAM, "Name": "x"}]}}
    assert not msg.repaired


def test_error_is_a_frame_error_with_reason():
    with pytest.raises(FrameError) as e:
        parse(b"<Query><SN>1</SN></Query>")
    assert e.value.reason == "no_cmdtype"


@pytest.mark.parametrize(
    "raw, why",
    [
        (b"", "empty"),
        (b"  \r\n", "empty"),
        (b"<Query><CmdType>Catalog</CmdType><SN>1</SN>", "bad_xml"),
        (b"<Foo><CmdType>Catalog</CmdType><SN>1</SN></Foo>", "bad_root"),
        (b"<Query><SN>1</SN><DeviceID>1</DeviceID></Query>", "no_cmdtype"),
        (b"<Query><CmdType>Catalog</CmdType><DeviceID>1</DeviceID></Query>", "no_sn"),
        (b"<Query><CmdType>Catalog</CmdType><SN>12a</SN></Query>", "bad_sn"),
        (b"<Query><CmdType>Catalog</CmdType><SN>-1</SN></Query>", "bad_sn"),
        (b"<Query><CmdType>Catalog</CmdType><SN>1</SN><Name>a <b> c</Name></Query>", "bad_xml"),
        (b"<Query><CmdType>Catalog</CmdType><SN>1</SN><X>\x01</X></Query>", "bad_xml"),
        (b"\xff\xfe\xff\xfe<Query/>", "bad_charset"),
    ],
)
def test_refusals_have_reasons(raw, why):
    assert reason(raw) == why


def test_size_depth_and_item_bounds():
    big = body("Query", "<CmdType>Catalog</CmdType><SN>1</SN><X>" + "a" * 5000 + "</X>")
    assert reason(big, max_size=4096) == "too_large"
    assert parse(big).fields["X"] == "a" * 5000
    deep = body("Query", "<CmdType>Catalog</CmdType><SN>1</SN>" + "<A>" * 30 + "x" + "</A>" * 30)
    assert reason(deep) == "too_deep"
    items = "".join(f"<Item><DeviceID>{i}</DeviceID></Item>" for i in range(11))
    many = body("Response", f"<CmdType>Catalog</CmdType><SN>1</SN><DeviceList Num='11'>{items}</DeviceList>")
    assert reason(many, max_items=10) == "too_many_items"
    assert len(parse(many, max_items=11).fields["DeviceList"]["Item"]) == 11


def test_repeated_names_become_lists_and_item_always_is():
    msg = parse(
        body(
            "Notify",
            "<CmdType>Keepalive</CmdType><SN>1</SN><DeviceID>d</DeviceID>"
            "<Info><DeviceID>a</DeviceID><DeviceID>b</DeviceID><DeviceID>c</DeviceID></Info>"
            "<PresetList><Item><PresetID>1</PresetID></Item></PresetList>",
        )
    )
    assert msg.fields["Info"] == {"DeviceID": ["a", "b", "c"]}
    assert msg.fields["PresetList"] == {"Item": [{"PresetID": "1"}]}


def test_namespaced_root_and_leaf_attributes():
    msg = parse(b'<Query xmlns="urn:x"><CmdType>Catalog</CmdType><SN>7</SN><Name lang="zh">a</Name></Query>')
    assert msg.root == "Query" and msg.fields["Name"] == {"@lang": "zh", "#text": "a"}


# -- charsets -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "decl, codec",
    [("GB2312", "gb2312"), ("gb2312", "gb2312"), ("GB2312", "utf-8"), ("UTF-8", "utf-8"), ("UTF-8", "gb2312"),
     (None, "gb2312"), (None, "utf-8"), ("GBK", "gbk"), ("gb18030", "gb18030")],
)  # fmt: skip
def test_chinese_names_decode_whatever_the_declaration(decl, codec):
    raw = body(
        "Response",
        f"<CmdType>Catalog</CmdType><SN>1</SN><DeviceID>{DEV}</DeviceID><SumNum>1</SumNum>"
        f"<DeviceList Num='1'><Item><DeviceID>{CAM}</DeviceID><Name>{XIANGTAN}</Name></Item></DeviceList>",
        decl=decl,
        codec=codec,
    )
    _, items = manscdp.catalog_items(parse(raw))
    assert items[0].name == XIANGTAN
    assert XIANGTAN in manscdp.decode_text(raw)


@pytest.mark.parametrize("decl", ["GB2312", "gb2312", None])
def test_gb2312_words_that_are_also_valid_utf8_read_as_gb(decl):
    # 学校 and 医院 in GB2312 (d1a7d0a3, d2bdd4ba) are valid UTF-8 bytes (Cyrillic)
    for word in ("学校", "医院", "路"):
        raw = body(
            "Notify",
            f"<CmdType>Alarm</CmdType><SN>1</SN><AlarmDescription>{word}</AlarmDescription>",
            decl=decl,
            codec="gb2312",
        )
        raw.decode("utf-8")  # the trap: these bytes are valid UTF-8
        assert manscdp.alarm(parse(raw)).description == word


def test_genuine_utf8_kept_when_declared_or_chinese():
    cyrillic = body(
        "Notify",
        "<CmdType>Alarm</CmdType><SN>1</SN><AlarmDescription>ѧУ</AlarmDescription>",
        decl="UTF-8",
        codec="utf-8",
    )
    assert manscdp.alarm(parse(cyrillic)).description == "ѧУ"
    dotted = body(
        "Notify",
        "<CmdType>Alarm</CmdType><SN>1</SN><AlarmDescription>湘潭·岳塘 5°</AlarmDescription>",
        decl="GB2312",
        codec="utf-8",
    )
    assert manscdp.alarm(parse(dotted)).description == "湘潭·岳塘 5°"


def test_declared_transform_codecs_are_not_used():
    # unicode_escape would turn \x26 into '&' before the parser saw it; such names fall back to GB18030
    raw = body(
        "Notify",
        "<CmdType>Alarm</CmdType><SN>1</SN><AlarmDescription>湘潭\\x26</AlarmDescription>",
        decl="unicode_escape",
    )
    assert manscdp.alarm(parse(raw)).description == "湘潭\\x26"
    assert manscdp.declared_charset(raw) == "unicode_escape"


def test_bytearray_and_memoryview_accepted():
    raw = body("Notify", "<CmdType>Keepalive</CmdType><SN>1</SN><DeviceID>d</DeviceID>")
    assert parse(bytearray(raw)).device_id == parse(memoryview(raw)).device_id == "d"


def test_rare_characters_need_gb18030():
    # 䶮 (U+4DAE) is not in GB2312 or GBK's common range: a GB2312 declaration with GB18030 bytes
    name = "湘潭䶮路"
    raw = body(
        "Notify", f"<CmdType>Alarm</CmdType><SN>1</SN><DeviceID>d</DeviceID><AlarmDescription>{name}</AlarmDescription>"
    )
    assert manscdp.alarm(parse(raw)).description == name


@pytest.mark.parametrize("charset", ["GB2312", "gb2312", "UTF-8", "GBK"])
def test_build_in_charset_round_trips(charset):
    raw = build("Notify", "Alarm", 9, CAM, {"AlarmDescription": XIANGTAN}, charset=charset)
    assert raw.startswith(f'<?xml version="1.0" encoding="{charset}"?>'.encode())
    assert (XIANGTAN.encode("utf-8") in raw) == (charset == "UTF-8")
    if charset != "UTF-8":
        assert XIANGTAN.encode("gb2312") in raw
    msg = parse(raw)
    assert msg.fields["AlarmDescription"] == XIANGTAN and msg.charset == ("utf-8" if charset == "UTF-8" else "gb18030")


# -- repairs --------------------------------------------------------------------------------------


def test_bare_ampersand_and_lt_in_address_repaired():
    raw = body(
        "Response",
        f"<CmdType>Catalog</CmdType><SN>3</SN><DeviceID>{DEV}</DeviceID><SumNum>2</SumNum><DeviceList Num='2'>"
        f"<Item><DeviceID>{CAM}</DeviceID><Name>A & B 岳塘&nbsp;</Name><Address>建设路<3号 x<y</Address></Item>"
        f"<Item><DeviceID>43030000001310000002</DeviceID><Name>R&amp;D</Name></Item></DeviceList>",
    )
    msg = parse(raw)
    assert msg.repaired
    _, items = manscdp.catalog_items(msg)
    assert [i.name for i in items] == ["A & B 岳塘&nbsp;", "R&D"]
    assert items[0].address == "建设路<3号 x<y"


def test_well_formed_body_is_not_marked_repaired():
    msg = parse(
        body("Notify", "<CmdType>Keepalive</CmdType><SN>1</SN><DeviceID>d</DeviceID><Name>R&amp;D &lt;1&gt;</Name>")
    )
    assert not msg.repaired and msg.fields["Name"] == "R&D <1>"


# -- hardening ------------------------------------------------------------------------------------

BILLION_LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    + b"".join(b'<!ENTITY lol%d "%s">' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10) for i in range(1, 10))
    + b"]><Notify><CmdType>Keepalive</CmdType><SN>1</SN><DeviceID>&lol9;</DeviceID></Notify>"
)
XXE = (
    b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    b"<Notify><CmdType>Keepalive</CmdType><SN>1</SN><DeviceID>&x;</DeviceID></Notify>"
)
XXE_NET = b'<!DOCTYPE r SYSTEM "http://127.0.0.1:9/evil.dtd"><Notify><CmdType>Keepalive</CmdType><SN>1</SN></Notify>'
PARAM_ENTITY = (
    b'<!DOCTYPE r [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]>'
    b"<Notify><CmdType>Keepalive</CmdType><SN>1</SN></Notify>"
)


@pytest.mark.parametrize("payload", [BILLION_LAUGHS, XXE, XXE_NET, PARAM_ENTITY])
def test_entity_payloads_refused_unexpanded(payload):
    t0 = time.process_time()
    assert reason(payload) == "dtd"
    # GB18030 / lower-case spellings of the same are refused too
    assert reason(payload.decode().encode("gb18030")) == "dtd"
    assert reason(payload.replace(b"DOCTYPE", b"doctype")) in ("dtd", "bad_xml")
    assert time.process_time() - t0 < 5  # generous: expansion of 10^9 'lol's would take far longer


def test_parser_itself_does_not_expand_entities():
    # Below the DTD refusal: the lxml parser's own settings keep an internal entity unexpanded and an
    # external one unread even if a DTD got through.
    root = manscdp._fromstring(XXE.decode().split("?>", 1)[1])
    assert "root:" not in (root.findtext("DeviceID") or "")
    try:
        root = manscdp._fromstring(BILLION_LAUGHS.decode().split("?>", 1)[1])
    except etree.XMLSyntaxError as e:  # libxml2's own amplification guard refused it
        assert "amplification" in str(e)
    else:
        assert len(etree_text(root)) < 1000


def etree_text(root) -> str:
    return "".join(root.itertext())


# -- build ----------------------------------------------------------------------------------------


def test_build_shape_matches_standard_layout():
    raw = build("Query", "Catalog", 17430, DEV, [("Type", "all")])
    assert raw == (
        b'<?xml version="1.0" encoding="GB2312"?>\r\n<Query>\r\n<CmdType>Catalog</CmdType>\r\n<SN>17430</SN>\r\n'
        b"<DeviceID>43030000001180000001</DeviceID>\r\n<Type>all</Type>\r\n</Query>\r\n"
    )


def test_build_escapes_and_nests():
    raw = build(
        "Response",
        "Catalog",
        1,
        DEV,
        {
            "SumNum": 2,
            "DeviceList": item_list([{"DeviceID": CAM, "Name": "a<&>b"}, {"DeviceID": "4303"}]),
            "Gone": None,
        },
    )
    msg = parse(raw)
    assert not msg.repaired
    assert msg.fields == {
        "SumNum": "2",
        "DeviceList": {"@Num": "2", "Item": [{"DeviceID": CAM, "Name": "a<&>b"}, {"DeviceID": "4303"}]},
    }


@pytest.mark.parametrize(
    "args",
    [("Foo", "Catalog", 1, DEV, {}), ("Query", "Bad Type", 1, DEV, {}), ("Query", "Catalog", -1, DEV, {}),
     ("Query", "Catalog", 1, DEV, {"bad name": 1}), ("Query", "Catalog", 1, DEV, {"X": True}),
     ("Query", "Catalog", 1, DEV, {"X": float("inf")}), ("Query", "Catalog", 1, DEV, {"X": float("nan")})],
)  # fmt: skip
def test_build_refuses_bad_input(args):
    with pytest.raises(ValueError):
        build(*args)
    with pytest.raises(ValueError):
        build("Query", "Catalog", 1, DEV, {}, charset="no-such-charset")


# -- readers --------------------------------------------------------------------------------------


def test_keepalive_with_faulty_channels():
    raw = body(
        "Notify",
        f"<CmdType>Keepalive</CmdType><SN>43</SN><DeviceID>{DEV}</DeviceID><Status>OK</Status>"
        f"<Info><DeviceID>{CAM}</DeviceID><DeviceID>43030000001310000002</DeviceID></Info>",
    )
    ka = manscdp.keepalive(parse(raw))
    assert (ka.device_id, ka.sn, ka.status, ka.ok) == (DEV, 43, "OK", True)
    assert ka.faulty == (CAM, "43030000001310000002")
    bare = manscdp.keepalive(
        parse(body("Notify", f"<CmdType>Keepalive</CmdType><SN>1</SN><DeviceID>{DEV}</DeviceID><Status>ERROR</Status>"))
    )
    assert bare.faulty == () and not bare.ok and bare.status == "ERROR"


def alarm_body(extra: str) -> bytes:
    return body(
        "Notify",
        f"<CmdType>Alarm</CmdType><SN>8</SN><DeviceID>{CAM}</DeviceID><AlarmPriority>1</AlarmPriority>"
        f"<AlarmTime>2026-12-07T10:30:00</AlarmTime><AlarmDescription>{XIANGTAN}</AlarmDescription>"
        f"<Longitude>112.94</Longitude><Latitude>27.83</Latitude>{extra}",
    )


@pytest.mark.parametrize(
    "extra, methods, atype, kind",
    [
        ("<AlarmMethod>5</AlarmMethod><AlarmType>2</AlarmType>", (5,), 2, "motion"),
        ("<AlarmMethod>5</AlarmMethod><Info><AlarmType>5</AlarmType></Info>", (5,), 5, "line_crossing"),
        (
            "<AlarmMethod>5</AlarmMethod><AlarmType>2</AlarmType><Info><AlarmType>6</AlarmType></Info>",
            (5,),
            6,
            "intrusion",
        ),
        ("<AlarmMethod>2</AlarmMethod>", (2,), None, None),
        ("<AlarmMethod>25</AlarmMethod><AlarmType>1</AlarmType>", (2, 5), 1, "video_loss"),
        ("<AlarmMethod>6</AlarmMethod><Info><AlarmType>2</AlarmType></Info>", (6,), 2, "fan_fault"),
        ("<AlarmMethod>2</AlarmMethod><AlarmType>2</AlarmType>", (2,), 2, "tamper"),
    ],
)
def test_alarm_variants(extra, methods, atype, kind):
    a = manscdp.alarm(parse(alarm_body(extra)))
    assert (a.methods, a.type, a.kind) == (methods, atype, kind)
    assert (a.device_id, a.sn, a.priority, a.description) == (CAM, 8, 1, XIANGTAN)
    assert (a.lon, a.lat) == (112.94, 27.83)
    assert a.time == "2026-12-07T10:30:00" and a.time_ns == 1796610600 * 10**9  # 02:30 UTC


def test_alarm_kind_table():
    assert manscdp.alarm_kind(5, 2) == "motion"
    assert manscdp.alarm_kind(2, 2) == "tamper"
    assert manscdp.alarm_kind(2, 1) == "video_loss"
    assert manscdp.alarm_kind(5, 5) == "line_crossing"
    assert manscdp.alarm_kind(5, 6) == "intrusion"
    assert manscdp.alarm_kind(1, None) is None
    assert manscdp.alarm_kind(5, 99) is None
    assert manscdp.alarm_kind(4, 1) is None


def catalog_body(items: str, sum_num: int = 1, root: str = "Response") -> bytes:
    return body(
        root,
        f"<CmdType>Catalog</CmdType><SN>17</SN><DeviceID>{DEV}</DeviceID><SumNum>{sum_num}</SumNum>"
        f"<DeviceList Num='1'>{items}</DeviceList>",
    )


def test_catalog_item_fields_and_ptz_type_places():
    items = (
        f"<Item><DeviceID>{CAM}</DeviceID><Name>{XIANGTAN}1</Name><Manufacturer>Hikvision</Manufacturer>"
        "<Model>DS-2</Model><Owner>Owner</Owner><CivilCode>430304</CivilCode><Address>建设北路</Address>"
        f"<Parental>0</Parental><ParentID>{DEV}/43030000002150000001/</ParentID><SafetyWay>0</SafetyWay>"
        "<RegisterWay>1</RegisterWay><Secrecy>0</Secrecy><IPAddress>10.0.0.5</IPAddress><Port>5060</Port>"
        "<Status>ON</Status><Longitude>112.94</Longitude><Latitude>27.83</Latitude><PTZType>1</PTZType></Item>"
        "<Item><DeviceID>43030000001320000002</DeviceID><Info><PTZType>3</PTZType><BusinessGroupID>"
        "43030000002150000001</BusinessGroupID></Info><Longitude>nan</Longitude><Port>x</Port></Item>"
    )
    sum_num, got = manscdp.catalog_items(parse(catalog_body(items, 2)))
    assert sum_num == 2
    a, b = got
    assert (a.device_id, a.kind, a.name, a.manufacturer, a.model, a.owner) == (
        CAM,
        "camera",
        XIANGTAN + "1",
        "Hikvision",
        "DS-2",
        "Owner",
    )
    assert (a.civil_code, a.address, a.parental, a.safety_way, a.register_way, a.secrecy) == (
        "430304",
        "建设北路",
        False,
        0,
        1,
        0,
    )
    assert a.parent_ids == (DEV, "43030000002150000001")
    assert (a.ip, a.port, a.status, a.lon, a.lat, a.ptz_type) == ("10.0.0.5", 5060, "ON", 112.94, 27.83, 1)
    assert (b.kind, b.ptz_type, b.business_group_id, b.lon, b.port) == ("camera", 3, "43030000002150000001", None, None)


@pytest.mark.parametrize("status, want", [("ON", "ON"), ("OFF", "OFF"), ("OK", "ON"), ("ONLINE", "ON"),
                                          ("Online", "ON"), ("OFFLINE", "OFF"), ("weird", None), ("", None)])  # fmt: skip
def test_catalog_status_variants(status, want):
    _, [item] = manscdp.catalog_items(
        parse(catalog_body(f"<Item><DeviceID>{CAM}</DeviceID><Status>{status}</Status></Item>"))
    )
    assert item.status == want


@pytest.mark.parametrize(
    "did, kind",
    [("43", "region"), ("4303", "region"), ("430304", "region"), ("43030401", "region"),
     ("43030000002000000001", "system"), ("43030000002150000001", "business_group"),
     ("43030000002160000001", "virtual_org"), ("43030000001310000001", "camera"),
     ("43030000001320000001", "camera"), ("43030000001340000001", "alarm_input"),
     ("43030000001180000001", "other"), ("430300000013100001", "other"), ("abc", "other")],
)  # fmt: skip
def test_tree_nodes_kept_apart_from_cameras(did, kind):
    _, [item] = manscdp.catalog_items(parse(catalog_body(f"<Item><DeviceID>{did}</DeviceID></Item>")))
    assert item.kind == kind
    assert manscdp.item_kind(did) == kind


def test_catalog_notify_events_and_empty_catalog():
    raw = catalog_body(f"<Item><DeviceID>{CAM}</DeviceID><Event>vlost</Event></Item>", root="Notify")
    _, [item] = manscdp.catalog_items(parse(raw))
    assert item.event == "VLOST"
    empty = body("Response", f"<CmdType>Catalog</CmdType><SN>2</SN><DeviceID>{DEV}</DeviceID><SumNum>0</SumNum>")
    assert manscdp.catalog_items(parse(empty)) == (0, [])
    # an item without DeviceID is skipped, the rest kept
    raw = catalog_body(f"<Item><Name>x</Name></Item><Item><DeviceID>{CAM}</DeviceID></Item>", 2)
    assert [i.device_id for i in manscdp.catalog_items(parse(raw))[1]] == [CAM]


def test_mobile_position_ids():
    fields = (
        "<Time>2026-12-07T10:00:05</Time><Longitude>112.94</Longitude><Latitude>27.83</Latitude>"
        "<Speed>36.5</Speed><Direction>90</Direction><Altitude>50</Altitude>"
    )
    with_dev = manscdp.mobile_position(
        parse(body("Notify", f"<CmdType>MobilePosition</CmdType><SN>1</SN><DeviceID>{DEV}</DeviceID>{fields}"))
    )
    assert (with_dev.id, with_dev.lon, with_dev.lat, with_dev.speed_kmh, with_dev.direction, with_dev.altitude) == (
        DEV,
        112.94,
        27.83,
        36.5,
        90.0,
        50.0,
    )
    assert with_dev.time_ns == 1796608805 * 10**9
    target = manscdp.mobile_position(
        parse(body("Notify", f"<CmdType>MobilePosition</CmdType><SN>1</SN><TargetID>{CAM}</TargetID>{fields}"))
    )
    assert target.id == CAM
    neither = manscdp.mobile_position(parse(body("Notify", f"<CmdType>MobilePosition</CmdType><SN>1</SN>{fields}")))
    assert neither.id is None
    with pytest.raises(ManscdpError) as e:
        manscdp.mobile_position(
            parse(body("Notify", "<CmdType>MobilePosition</CmdType><SN>1</SN><Longitude>x</Longitude>"))
        )
    assert e.value.reason == "no_position"


def test_device_info_status_records_presets():
    info = manscdp.device_info(parse(body("Response",
        f"<CmdType>DeviceInfo</CmdType><SN>2</SN><DeviceID>{DEV}</DeviceID><DeviceName>{XIANGTAN}NVR</DeviceName>"
        "<Result>ok</Result><Manufacturer>Hik</Manufacturer><Model>DS-7</Model><Firmware>V4.1</Firmware>"
        "<Channel>4</Channel><MaxAlarm>2</MaxAlarm>")))  # fmt: skip
    assert (info.device_name, info.result, info.manufacturer, info.model, info.firmware, info.channel) == (
        XIANGTAN + "NVR",
        "OK",
        "Hik",
        "DS-7",
        "V4.1",
        4,
    )
    assert info.extra == {"MaxAlarm": "2"}
    st_ = manscdp.device_status(parse(body("Response",
        f"<CmdType>DeviceStatus</CmdType><SN>3</SN><DeviceID>{DEV}</DeviceID><Result>OK</Result><Online>ONLINE</Online>"
        "<Status>OK</Status><Encode>ON</Encode><Record>OFF</Record><DeviceTime>2026-12-07T10:00:00</DeviceTime>"
        f"<Alarmstatus Num='1'><Item><DeviceID>{CAM}</DeviceID>"
        "<DutyStatus>OFFDUTY</DutyStatus></Item></Alarmstatus>")))  # fmt: skip
    assert (st_.online, st_.status, st_.encode, st_.record) == (True, "OK", "ON", "OFF")
    assert st_.alarms == (manscdp.AlarmStatus(CAM, "OFFDUTY"),)
    n, recs = manscdp.record_items(parse(body("Response",
        f"<CmdType>RecordInfo</CmdType><SN>4</SN><DeviceID>{CAM}</DeviceID><SumNum>5</SumNum><RecordList Num='1'><Item>"
        f"<DeviceID>{CAM}</DeviceID><Name>r</Name><FilePath>/a</FilePath><StartTime>2026-12-07T08:00:00</StartTime>"
        "<EndTime>2026-12-07T09:00:00</EndTime><Secrecy>0</Secrecy><Type>time</Type>"
        "<FileSize>1024</FileSize></Item></RecordList>")))  # fmt: skip
    assert n == 5 and recs[0].end_ns - recs[0].start_ns == 3600 * 10**9 and recs[0].file_size == 1024
    presets = manscdp.preset_items(parse(body("Response",
        f"<CmdType>PresetQuery</CmdType><SN>5</SN><DeviceID>{CAM}</DeviceID><PresetList Num='2'>"
        "<Item><PresetID>1</PresetID><PresetName>门口</PresetName></Item>"
        "<Item><PresetID>x</PresetID></Item></PresetList>")))  # fmt: skip
    assert presets == [manscdp.PresetItem(1, "门口")]
    assert (
        manscdp.response_result(
            parse(body("Response", "<CmdType>DeviceControl</CmdType><SN>1</SN><Result>ok</Result>"))
        )
        == "OK"
    )


def test_reader_refuses_other_cmdtype():
    msg = parse(body("Notify", "<CmdType>Keepalive</CmdType><SN>1</SN>"))
    for reader in (manscdp.alarm, manscdp.catalog_items, manscdp.mobile_position, manscdp.device_info):
        with pytest.raises(ManscdpError) as e:
            reader(msg)
        assert e.value.reason == "wrong_cmdtype"


def test_time_helpers():
    assert manscdp.parse_time("2026-12-07T10:30:00") == 1796610600 * 10**9
    assert manscdp.parse_time("2026-12-07 10:30:00.250") == 1796610600 * 10**9 + 250_000_000
    assert manscdp.parse_time("2026-12-07T02:30:00Z") == 1796610600 * 10**9
    assert manscdp.parse_time("yesterday") is None and manscdp.parse_time(None) is None
    assert manscdp.format_time(1796610600 * 10**9 + 250_000_000) == "2026-12-07T10:30:00"
    assert manscdp.format_time(1796610600 * 10**9 + 250_000_000, millis=True) == "2026-12-07T10:30:00.250"


# -- fuzzing --------------------------------------------------------------------------------------

READERS = (manscdp.keepalive, manscdp.alarm, manscdp.catalog_items, manscdp.device_info, manscdp.device_status,
           manscdp.record_items, manscdp.preset_items, manscdp.mobile_position, manscdp.response_result)  # fmt: skip
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=600))
def test_any_bytes_give_a_message_or_manscdp_error(raw):
    try:
        msg = parse(raw)
    except ManscdpError as e:
        assert e.reason
    else:
        assert msg.root in manscdp.ROOTS


SEED = body(
    "Response",
    f"<CmdType>Catalog</CmdType><SN>1</SN><DeviceID>{DEV}</DeviceID><SumNum>2</SumNum><DeviceList Num='2'><Item>"
    f"<DeviceID>{CAM}</DeviceID><Name>{XIANGTAN}</Name><Status>ON</Status><Info><PTZType>1</PTZType></Info></Item>"
    "</DeviceList>",
)


@FUZZ
@given(st.data())
def test_mutated_bodies_give_a_message_or_manscdp_error(data):
    raw = bytearray(SEED)
    for _ in range(data.draw(st.integers(1, 6))):
        i = data.draw(st.integers(0, len(raw) - 1))
        op = data.draw(st.sampled_from(["flip", "cut", "dup", "amp", "lt"]))
        if op == "flip":
            raw[i] = data.draw(st.integers(0, 255))
        elif op == "cut":
            del raw[i : i + data.draw(st.integers(1, 20))]
        elif op == "dup":
            raw[i:i] = raw[i : i + data.draw(st.integers(1, 40))]
        else:
            raw[i:i] = b"&" if op == "amp" else b"<"
        if not raw:
            break
    try:
        msg = parse(bytes(raw))
    except ManscdpError:
        return
    for reader in READERS:
        try:
            reader(msg)
        except ManscdpError:
            pass


names = st.sampled_from(["CmdType", "SN", "DeviceID", "Status", "Info", "Item", "DeviceList", "SumNum", "AlarmMethod",
                         "AlarmType", "Longitude", "Latitude", "Name", "TargetID", "Event", "PTZType", "ParentID",
                         "RecordList", "PresetList", "PresetID", "Alarmstatus", "Online", "Time", "Speed", "X"])  # fmt: skip
texts = st.text(st.characters(codec="gb18030", exclude_categories=("Cs", "Cc")), max_size=12)
values = st.recursive(
    texts | st.integers(-(10**12), 10**12),
    lambda inner: st.dictionaries(names, inner, max_size=4) | st.lists(inner, min_size=1, max_size=3),
    max_leaves=20,
)
cmd_types = st.sampled_from(["Keepalive", "Alarm", "Catalog", "DeviceInfo", "DeviceStatus", "RecordInfo",
                             "PresetQuery", "MobilePosition", "DeviceControl"])  # fmt: skip
header = {"CmdType", "SN", "DeviceID"}


def normal(v):
    """What parse gives back for a built value: text stripped, numbers as text, lists of one flattened
    (except Item), empty dicts as empty text."""
    if isinstance(v, dict):
        out = {}
        for k, x in v.items():
            if k == "Item":
                xs = x if isinstance(x, list) else [x]
                out[k] = [normal(i) for i in flat(xs)]
            else:
                xs = list(flat(x if isinstance(x, list) else [x]))
                out[k] = normal(xs[0]) if len(xs) == 1 else [normal(i) for i in xs]
        return out if out else ""
    return str(v).strip()


def flat(xs):
    for x in xs:
        if isinstance(x, list):
            yield from flat(x)
        else:
            yield x


@FUZZ
@given(root=st.sampled_from(manscdp.ROOTS), cmd=cmd_types, sn=st.integers(0, 10**12), dev=texts,
       fields=st.dictionaries(names.filter(lambda n: n not in header), values, max_size=6),
       charset=st.sampled_from(["GB2312", "UTF-8", "gb2312"]))  # fmt: skip
def test_built_bodies_parse_back(root, cmd, sn, dev, fields, charset):
    raw = build(root, cmd, sn, dev, fields, charset=charset)
    msg = parse(raw)
    assert (msg.root, msg.cmd_type, msg.sn, msg.device_id) == (root, cmd, sn, dev.strip())
    assert not msg.repaired
    assert msg.fields == (normal(fields) or {})
    for reader in READERS:
        try:
            reader(msg)
        except ManscdpError:
            pass


scalars = st.none() | st.integers() | st.floats() | st.text(max_size=8) | st.booleans()
shapes = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(names | st.sampled_from(["@Num", "#text"]), inner, max_size=4)
    ),
    max_leaves=25,
)


@FUZZ
@given(cmd=cmd_types, fields=st.dictionaries(names, shapes, max_size=8), device_id=st.text(max_size=5))
def test_readers_on_any_message_shape_raise_only_manscdp_error(cmd, fields, device_id):
    msg = manscdp.Message("Notify", cmd, 1, device_id, fields)
    for reader in READERS:
        try:
            reader(msg)
        except ManscdpError:
            pass
