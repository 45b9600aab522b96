"""GB/T 20999 message layer (drivers/signal/protocol.py): parse and build, builders, profiles, and the
value decoders behind the signal topics."""

import pytest
from hypothesis import given, strategies as st

from tianwang.drivers.signal import protocol as p
from tianwang.gateway.errors import FrameError

# A query reply written out by hand: version 0x0101, host 1, controller 0x00000203, road 5, seq 9,
# type 0x20, two values: 3.3.2 element 0 = red, green, yellow_flash, 0x99; 13.2.2 = 0x22 (local
# actuated)
REPLY = bytes.fromhex("0101 01 00000203 05 09 20 0201 08 03 03 02 00 10 20 31 9902 05 0d 02 02 00 22")


def test_parse_hand_built_reply():
    msg = p.parse(REPLY)
    assert (msg.version, msg.host, msg.controller, msg.road, msg.seq) == (0x0101, 1, 0x203, 5, 9)
    assert msg.frame_type == p.FrameType.QUERY_REPLY and msg.kind == "query_reply"
    a, b = msg.values
    assert (a.index, a.item, a.element, a.value) == (1, (3, 3, 2), 0, bytes.fromhex("10203199"))
    assert (b.index, b.name, b.value) == (2, "13.2.2", b"\x22")
    assert p.lamp_groups(msg.values) == {"1": "red", "2": "green", "3": "yellow_flash", "4": "unknown_0x99"}
    assert p.run_status(msg.values) == {"mode": "local_actuated", "mode_code": 0x22}
    assert p.build(msg) == REPLY


def test_query_builder_and_replies():
    q = p.query(0x203, 17, [(3, 3, 2, 0), (13, 2, 0, 0)], road=5)
    content = p.build(q)
    # a query value has len 4 and no bytes
    assert content == bytes.fromhex("0101 01 00000203 05 11 10 02 01 04 03 03 02 00 02 04 0d 02 00 00")
    assert p.parse(content) == q
    r = p.query_reply(q, [(3, 3, 2, 0, b"\x10\x20")])
    assert (r.seq, r.controller, r.road, r.frame_type) == (17, 0x203, 5, p.FrameType.QUERY_REPLY)
    e = p.error_reply(q, 0x30)
    assert e.frame_type == p.FrameType.QUERY_ERROR
    assert p.set_statuses(e) == [("3.3.2", "does_not_exist"), ("13.2.0", "does_not_exist")]
    s = p.set_request(0x203, 18, [(17, 1, 3, 0, b"\x04")])
    assert p.set_reply(s).values[0].value == b"\x00"
    assert p.set_statuses(p.set_reply(s, [0x50])) == [("17.1.3", "control_failed")]
    assert p.error_reply(s, 0x20).frame_type == p.FrameType.SET_ERROR


def test_heartbeat_with_and_without_count():
    hb = p.heartbeat(0x203, 4)
    assert p.build(hb) == bytes.fromhex("0101 01 00000203 01 04 70")
    assert p.build(hb, p.PROFILES["heartbeat-count"]) == bytes.fromhex("0101 01 00000203 01 04 70 00")
    # either form parses to the same message
    assert p.parse(p.build(hb)) == p.parse(p.build(hb, p.PROFILES["heartbeat-count"])) == hb
    assert p.heartbeat(0x203, 4, reply=True).frame_type == p.FrameType.HEARTBEAT_REPLY


@pytest.mark.parametrize(
    "content,why",
    [
        (REPLY[:9], "shorter than the header"),
        (REPLY[:10], "without a value count"),
        (REPLY[:-1], "runs past the frame"),
        (REPLY + b"\x00", "after the last"),
        (REPLY[:11] + b"\x01\x03\x03\x03\x02\x00", "length 3"),
        (REPLY[:11] + b"\x01\x04\x03", "cut short"),
    ],
)
def test_bad_messages(content, why):
    with pytest.raises(p.Gbt20999Error, match=why) as err:
        p.parse(content)
    assert err.value.reason == "bad_message"
    assert isinstance(err.value, FrameError)


def test_build_rejects_out_of_range():
    with pytest.raises(ValueError):
        p.build(p.query(1 << 32, 1, []))
    with pytest.raises(ValueError):
        p.build(p.query(1, 256, []))
    with pytest.raises(ValueError):
        p.build(p.set_request(1, 1, [(1, 1, 1, 0, b"x" * 252)]))


values = st.lists(
    st.tuples(
        st.integers(0, 255), st.integers(0, 255), st.integers(0, 255), st.integers(0, 255), st.binary(max_size=251)
    ),
    max_size=8,
)


@given(
    ftype=st.sampled_from(list(p.FrameType)),
    controller=st.integers(0, 2**32 - 1),
    seq=st.integers(0, 255),
    items=values,
    profile=st.sampled_from(sorted(p.PROFILES)),
)
def test_round_trip_through_the_wire(ftype, controller, seq, items, profile):
    prof = p.PROFILES[profile]
    if ftype in p.HEARTBEATS:
        items = []
    msg = p.Message(ftype, controller, seq, p._values(items), host=3, road=9)
    wire = p.encode(msg, prof)
    framer = prof.framer()
    [content] = framer.feed(wire)
    assert p.parse(content) == msg


def test_profiles():
    assert p.Profile().control_item("stage") == (17, 1, 2)
    assert p.Profile().control_item("mode") == (17, 1, 4)
    assert p.PROFILES["control-17n"].control_item("plan") == (17, 3, 1)
    f = p.PROFILES["length-n-4"].framer(keep_rejects=True)
    assert (f.length_field, f.crc, f.escaped, f.keep_rejects) == ("n-4", "gbt20999", True, True)
    assert p.PROFILES["unescaped"].framer().escaped is False
    with pytest.raises(ValueError):
        p.Profile(length_field="n+1")
    with pytest.raises(ValueError):
        p.Profile(crc="crc32")
    # a frame in one profile is not a frame in another
    wire = p.encode(p.heartbeat(1, 1, reply=True), p.PROFILES["ccitt"])
    assert p.PROFILES["majority"].framer().feed(wire) == []
    assert p.PROFILES["ccitt"].framer().feed(wire) != []


def test_stage_table():
    vals = p._values(
        [
            (6, 3, 2, 0, bytes((0x10, 0x20, 0x30))),
            (6, 3, 3, 2, b"\x00\x7d"),
            (6, 3, 4, 0, bytes.fromhex("0001 0002 0003")),
        ]
    )
    assert p.stages(vals) == {
        1: {"status": "idle", "remaining_s": 1},
        2: {"status": "running", "elapsed_s": 125, "remaining_s": 2},
        3: {"status": "transition", "remaining_s": 3},
    }


def test_times():
    raw = bytes.fromhex("07e8 06 0a 0e 0d 14")  # 2024-06-10 14:13:20
    assert p.date7(raw) == 1718028800 * 10**9
    assert p.date7(raw, 8 * 3600) == 1718000000 * 10**9
    assert p.make_date7(1718000000 * 10**9, 8 * 3600) == raw
    assert p.date7(b"\x00" * 7) is None
    assert p.date7(bytes.fromhex("07e8 0d 0a 0e 0d 14")) is None  # month 13
    assert p.date7(raw[:6]) is None
    utc = p._values([(13, 1, 10, 0, (1718000000).to_bytes(4, "big"))])
    assert p.controller_time(utc) == 1718000000 * 10**9
    local = p._values([(13, 1, 11, 0, raw)])
    assert p.controller_time(local, 8 * 3600) == 1718000000 * 10**9
    assert p.controller_time(p._values([(13, 2, 2, 0, b"\x21")])) is None


def test_records():
    [f] = p._values([(16, 1, 0, 3, b"\x02" + bytes.fromhex("07e8060a0e0d1a") + b"\x01")])
    assert p.fault(f, 8 * 3600) == {
        "item": "16.1.0",
        "element": 3,
        "type": 2,
        "time_ns": 1718000006 * 10**9,
        "action": 1,
        "action_name": "yellow_flash",
        "raw": "0207e8060a0e0d1a01",
    }
    [short] = p._values([(16, 1, 0, 4, b"\x07")])
    assert p.fault(short, 0)["type"] == 7 and p.fault(short, 0)["time_ns"] is None
    assert p.fault(short, 0)["action"] is None
    [a] = p._values([(15, 2, 1, 1, b"\x05" + bytes.fromhex("07e8060a0e0d1e") + b"\x00\x01")])
    assert p.alarm(a, 8 * 3600)["value"] == 1 and p.alarm(a, 8 * 3600)["time_ns"] == 1718000010 * 10**9
    [t] = p._values([(14, 1, 1, 4, b"\x02\x64")])
    assert p.traffic(t) == {"item": "14.1.1", "source": "traffic", "detector": 4, "value": 612, "raw": "0264"}
    [d] = p._values([(5, 3, 1, 2, b"\x01\x02\x03\x04\x05")])
    assert p.traffic(d)["source"] == "detector" and p.traffic(d)["value"] is None
