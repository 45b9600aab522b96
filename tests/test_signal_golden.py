"""Golden frames for every GB/T 20999 profile, written out byte by byte from the public notes
(../shared/protocols/gbt20999.md) with a CRC computed here bit by bit, and checked both ways: the
driver's encoder must produce exactly these bytes, and the framer and parser must read them back into
the same message. The CRC routine is itself checked against the notes' check value."""

from __future__ import annotations

import pytest

from tianwang.drivers.signal import protocol as p


def crc16(data: bytes, poly: int, init: int) -> int:
    """Plain MSB-first CRC-16, not reflected, xorout 0."""
    crc = init
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ poly) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


CRCS = {"gbt20999": (0x1005, 0x0000), "ccitt-false": (0x1021, 0xFFFF)}


def test_crc_routine_matches_the_check_values():
    assert crc16(b"123456789", *CRCS["gbt20999"]) == 0x5BB8  # the notes' check value
    assert crc16(b"123456789", *CRCS["ccitt-false"]) == 0x29B1  # CRC-16/CCITT-FALSE's catalogue check


def wire(profile: p.Profile, body: bytes) -> bytes:
    """7E | length | body | CRC | 7D, escaped when the profile escapes: the notes' rules."""
    n = 2 + len(body) + 2  # bytes between the flags: length field, version..data, CRC
    length = {"n-2": n - 2, "n": n, "n-4": n - 4}[profile.length_field]
    covered = length.to_bytes(2, "big") + body
    inner = covered + crc16(covered, *CRCS[profile.crc]).to_bytes(2, "big")
    if profile.escaped:
        inner = b"".join(bytes((0x5C, b)) if b in (0x7E, 0x7D, 0x5C) else bytes((b,)) for b in inner)
    return b"\x7e" + inner + b"\x7d"


# A set of specified stage 3, plus a UTC time whose bytes include 0x7D and 0x5C, from
# controller 0x00017E5C on road 0x7D, so every escape case appears in the header and the data.
SET = p.Message(
    p.FrameType.SET,
    0x00017E5C,
    0x42,
    (
        p.DataValue(1, 17, 1, 2, 0, b"\x03"),
        p.DataValue(2, 13, 1, 10, 0, bytes((0x07, 0xEA, 0x0B, 0x1D, 0x17, 0x7D, 0x5C))),
    ),
    host=1,
    road=0x7D,
    version=0x0101,
)
SET_BODY = (
    bytes((0x01, 0x01, 0x01, 0x00, 0x01, 0x7E, 0x5C, 0x7D, 0x42, 0x30, 0x02))
    + bytes((1, 5, 17, 1, 2, 0, 0x03))
    + bytes((2, 11, 13, 1, 10, 0, 0x07, 0xEA, 0x0B, 0x1D, 0x17, 0x7D, 0x5C))
)
HEARTBEAT = p.Message(p.FrameType.HEARTBEAT_QUERY, 7, 9, (), host=2, road=3, version=0x0100)
HEARTBEAT_BODY = bytes((0x01, 0x00, 0x02, 0, 0, 0, 7, 3, 9, 0x70))


@pytest.mark.parametrize("name", sorted(p.PROFILES))
def test_golden_frames_both_ways(name):
    profile = p.PROFILES[name]
    cases = [(SET, SET_BODY)]
    hb_body = HEARTBEAT_BODY + (b"\x00" if profile.heartbeat_count else b"")
    cases.append((HEARTBEAT, hb_body))
    for msg, body in cases:
        golden = wire(profile, body)
        assert p.encode(msg, profile) == golden, name
        framer = profile.framer()
        # fed byte by byte, between noise, the framer gives back the body and the parser the message
        frames = []
        for b in b"\x00\x11" + golden + golden:
            frames += framer.feed(bytes((b,)))
        assert frames == [body, body], name
        assert p.parse(body) == msg


@pytest.mark.parametrize("name", sorted(p.PROFILES))
def test_a_frame_of_another_profile_is_not_taken_for_a_message(name):
    """A frame built for one CRC or length rule is dropped (never parsed) by a framer of another."""
    profile = p.PROFILES[name]
    for other_name, other in p.PROFILES.items():
        if (other.crc, other.length_field) == (profile.crc, profile.length_field):
            continue
        framer = profile.framer()
        got = framer.feed(wire(other, SET_BODY) + wire(profile, SET_BODY))
        assert got == [SET_BODY], (name, other_name)  # only the frame of its own profile
        assert sum(framer.drops.values()) + framer.resyncs >= 1


def test_control_objects_per_profile():
    assert p.PROFILES["majority"].control_item("stage") == (17, 1, 2)
    assert p.PROFILES["majority"].control_item("mode") == (17, 1, 4)
    assert p.PROFILES["control-17n"].control_item("stage") == (17, 2, 1)
    assert p.PROFILES["control-17n"].control_item("plan") == (17, 3, 1)
    assert p.PROFILES["control-17n"].control_item("mode") == (17, 4, 1)
