"""NTCIP PMPP framing (7E, 7D x^0x20 escapes, CRC-16/X.25 FCS low byte first): compiled and twin.

Frames are built here from the HDLC rules with a bit-at-a-time X.25 CRC, independent of the
table-driven one under test."""

import random

from hypothesis import given, strategies as st

from tianwang.gateway import framing


def x25_bitwise(data):
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc ^ 0xFFFF


def pmpp_frame(content):
    body = content + x25_bitwise(content).to_bytes(2, "little")
    body = b"".join(b"\x7d" + bytes((b ^ 0x20,)) if b in (0x7E, 0x7D) else bytes((b,)) for b in body)
    return b"\x7e" + body + b"\x7e"


# Address 5 -> (5 << 2) | 1 = 0x15, control 0x13 (UI), IPI 0xC1 (SNMP), then an SNMP message whose
# bytes include 7E and 7D
GET = bytes.fromhex("15 13 c1 3026020100040670756260696ba019020101020100300e300c06082b060102010105000500")
ODD = bytes.fromhex("15 13 c1 30 05 04 03 7e 7d 20")


def test_fcs_check_value(impl):
    assert impl.crc16_x25(b"123456789") == 0x906E
    assert x25_bitwise(b"123456789") == 0x906E


@given(st.binary(max_size=300))
def test_fcs_table_matches_shift_register(data):
    for impl in framing.implementations():
        assert impl.crc16_x25(data) == x25_bitwise(data)


def test_hand_built(impl):
    assert b"\x7d\x5e\x7d\x5d" in pmpp_frame(ODD)
    f = impl.PmppFramer()
    assert f.feed(pmpp_frame(GET) + pmpp_frame(ODD)) == [GET, ODD]
    assert f.frames == 2 and f.dropped_bytes == 0
    assert impl.encode_pmpp(GET) == pmpp_frame(GET)
    assert impl.encode_pmpp(ODD) == pmpp_frame(ODD)


def test_splits(impl):
    stream = (pmpp_frame(GET) + pmpp_frame(ODD)) * 3
    rnd = random.Random(1202)
    for size in (1, 2, 3, 7):
        f = impl.PmppFramer()
        got = []
        for i in range(0, len(stream), size):
            got += f.feed(stream[i : i + size])
        assert got == [GET, ODD] * 3
    f = impl.PmppFramer()
    got, i = [], 0
    while i < len(stream):
        j = i + rnd.randint(0, 25)
        got += f.feed(stream[i:j])
        i = j
    assert got == [GET, ODD] * 3


def test_shared_flag_between_frames(impl):
    # HDLC allows one flag to close a frame and open the next
    f = impl.PmppFramer()
    assert f.feed(pmpp_frame(GET)[:-1] + pmpp_frame(ODD)) == [GET, ODD]


def test_any_byte_may_be_escaped(impl):
    # a sender whose async control map escapes more than 7E/7D (here 0x11, XON) is still read
    wire = pmpp_frame(ODD).replace(b"\x05\x04", b"\x7d\x25\x04")
    assert impl.PmppFramer().feed(wire) == [ODD]


def test_bad_fcs_and_abort(impl):
    bad = bytearray(pmpp_frame(GET))
    bad[10] ^= 0x01
    f = impl.PmppFramer(keep_rejects=True)
    # 7D 7E is an abort: the frame is dropped as a bad escape
    aborted = pmpp_frame(ODD)[:6] + b"\x7d\x7e"
    assert f.feed(bytes(bad) + aborted + pmpp_frame(ODD)) == [ODD]
    assert f.drops["bad_checksum"] == 1 and f.drops["bad_escape"] == 1
    assert [r for r, _ in f.take_rejects()] == ["bad_checksum", "bad_escape"]


def test_short_frames(impl):
    f = impl.PmppFramer()
    assert f.feed(b"\x7e\x15\x13\x7e" + pmpp_frame(GET)) == [GET]
    assert f.drops["truncated"] == 1 and f.dropped_bytes == 2


def test_too_long(impl):
    f = impl.PmppFramer(max_frame=32)
    assert f.feed(pmpp_frame(GET) + pmpp_frame(ODD)) == [ODD]
    assert f.drops["too_long"] == 1 and f.buffered == 0
