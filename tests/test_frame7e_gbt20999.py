"""GB/T 20999 framing (7E len .. crc 7D, 0x5C escapes, vendor profiles): compiled and twin.

The frames here are built field by field with a bit-at-a-time CRC written in this file, so the
table-driven CRCs and the encoders are checked against something independent."""

import random

import pytest
from hypothesis import given, strategies as st

from tianwang.gateway import framing
from tianwang.gateway.errors import ConfigError, FrameError


def crc_bitwise(data, poly, init):
    """CRC-16, MSB first, not reflected, xorout 0: the textbook shift register."""
    crc = init
    for byte in data:
        for bit in range(7, -1, -1):
            top = (crc >> 15) ^ ((byte >> bit) & 1)
            crc = (crc << 1) & 0xFFFF
            if top:
                crc ^= poly
    return crc


def gbt_frame(content, adjust=2, poly=0x1005, init=0, escaped=True):
    """7E | length | content | CRC | 7D, from the rules in protocols/gbt20999.md."""
    n = 2 + len(content) + 2
    body = (n - adjust).to_bytes(2, "big") + content
    body += crc_bitwise(body, poly, init).to_bytes(2, "big")
    if escaped:
        body = b"".join(b"\x5c" + bytes((b,)) if b in (0x7E, 0x7D, 0x5C) else bytes((b,)) for b in body)
    return b"\x7e" + body + b"\x7d"


# Query lamp group states (3.3.2, all elements): version 0x0101, host 1, controller 0x00000102,
# road 1, sequence 7, type 0x10, one value: index 1, len 4, class 3, object 3, attribute 2, element 0
QUERY = bytes.fromhex("0101 01 00000102 01 07 10 01 01040303 0200")
# A query reply whose value bytes hold all three special bytes
REPLY = bytes.fromhex("0101 01 00000102 01 07 20 01 01070303 0201 107e7d5c")
# Heartbeat query: no value count (majority)
HEARTBEAT = bytes.fromhex("0101 01 00000102 01 08 70")


def test_crc_check_values(impl):
    assert impl.crc16_gbt20999(b"123456789") == 0x5BB8
    assert impl.crc16_ccitt_false(b"123456789") == 0x29B1
    assert crc_bitwise(b"123456789", 0x1005, 0) == 0x5BB8
    assert crc_bitwise(b"123456789", 0x1021, 0xFFFF) == 0x29B1


@given(st.binary(max_size=300))
def test_crc_tables_match_shift_register(data):
    for impl in framing.implementations():
        assert impl.crc16_gbt20999(data) == crc_bitwise(data, 0x1005, 0)
        assert impl.crc16_ccitt_false(data) == crc_bitwise(data, 0x1021, 0xFFFF)


def test_hand_built_frames(impl):
    frames = gbt_frame(QUERY) + gbt_frame(REPLY) + gbt_frame(HEARTBEAT)
    f = impl.Gbt20999Framer()
    assert f.feed(frames) == [QUERY, REPLY, HEARTBEAT]
    assert f.frames == 3 and f.dropped_bytes == 0 and f.resyncs == 0
    # the length field of the query: N = 2 + 17 + 2 = 21 bytes between the flags, field N-2 = 19
    assert gbt_frame(QUERY)[1:3] == b"\x00\x13"
    assert b"\x5c\x7e\x5c\x7d\x5c\x5c" in gbt_frame(REPLY)


def test_encoder_matches_hand_built(impl):
    for content in (QUERY, REPLY, HEARTBEAT):
        assert impl.encode_gbt20999(content) == gbt_frame(content)
        assert impl.encode_gbt20999(content, length_field="n", crc="ccitt-false") == gbt_frame(
            content, adjust=0, poly=0x1021, init=0xFFFF
        )
        assert impl.encode_gbt20999(content, length_field="n-4", escaped=False) == gbt_frame(
            content, adjust=4, escaped=False
        )


def test_byte_by_byte_and_random_splits(impl):
    stream = (gbt_frame(QUERY) + b"\r\n" + gbt_frame(REPLY) + gbt_frame(HEARTBEAT)) * 4
    expected = [QUERY, REPLY, HEARTBEAT] * 4
    f = impl.Gbt20999Framer()
    got = []
    for b in stream:
        got += f.feed(bytes((b,)))
    assert got == expected
    assert f.resyncs == 4 and f.dropped_bytes == 8  # the CR LF after each query reply
    rnd = random.Random(20999)
    for _ in range(50):
        f = impl.Gbt20999Framer()
        got, i = [], 0
        while i < len(stream):
            j = i + rnd.randint(0, 30)
            got += f.feed(stream[i:j])
            i = j
        assert got == expected and f.buffered == 0


@pytest.mark.parametrize("length_field,adjust", [("n-2", 2), ("n", 0), ("n-4", 4)])
@pytest.mark.parametrize("crc,poly,init", [("gbt20999", 0x1005, 0), ("ccitt-false", 0x1021, 0xFFFF)])
@pytest.mark.parametrize("escaped", [True, False])
def test_profiles(impl, length_field, adjust, crc, poly, init, escaped):
    wire = gbt_frame(REPLY, adjust, poly, init, escaped)
    f = impl.Gbt20999Framer(length_field=length_field, crc=crc, escaped=escaped)
    assert f.feed(b"\x00" + wire + wire[:5] + b"\xff" + wire) == [REPLY, REPLY]
    assert f.frames == 2
    # the majority profile does not accept another vendor's frame
    if (length_field, crc) != ("n-2", "gbt20999"):
        g = impl.Gbt20999Framer(escaped=escaped)
        assert g.feed(wire) + g.finish() == [] and sum(g.drops.values()) >= 1


def test_unescaped_profile_framed_by_length(impl):
    # a vendor that does not escape on TCP: 7E and 7D appear raw inside the frame
    wire = gbt_frame(REPLY, escaped=False)
    assert b"\x7e\x7d\x5c" in wire
    f = impl.Gbt20999Framer(escaped=False)
    assert f.feed(wire + wire) == [REPLY, REPLY]
    # the escaped profile reads the raw 7E as a new start and the raw 7D after it as an end: two
    # stumps, counted, not crashed
    g = impl.Gbt20999Framer()
    assert g.feed(wire) == []
    assert g.drops["truncated"] == 2 and g.dropped_bytes == len(wire)


def test_bad_crc_between_good(impl):
    bad = bytearray(gbt_frame(QUERY))
    bad[9] ^= 0x40  # controller id 0x00000102 -> 0x00000142
    f = impl.Gbt20999Framer(keep_rejects=True)
    assert f.feed(gbt_frame(HEARTBEAT) + bytes(bad) + gbt_frame(QUERY)) == [HEARTBEAT, QUERY]
    assert f.drops["bad_checksum"] == 1 and f.dropped_bytes == len(bad)
    [(reason, content)] = f.take_rejects()
    assert reason == "bad_checksum" and content[2:-2] == QUERY.replace(b"\x01\x02", b"\x01\x42", 1)


def test_length_field_disagrees(impl):
    wire = bytearray(gbt_frame(HEARTBEAT))
    wire[2] += 1  # declares one byte more than there is
    f = impl.Gbt20999Framer()
    assert f.feed(bytes(wire)) == [] and f.drops["truncated"] == 1
    wire[2] -= 2  # one byte less
    assert f.feed(bytes(wire)) == [] and f.drops["bad_length"] == 1
    assert f.dropped_bytes == 2 * len(wire)


def test_stump_ending_in_escape_byte(impl):
    # the stump's lone 5C turns the next start flag into an escaped 7E; the frame after survives
    stump = gbt_frame(REPLY)[:22]
    assert stump.endswith(b"\x5c")
    f = impl.Gbt20999Framer(keep_rejects=True)
    assert f.feed(stump + gbt_frame(QUERY) + gbt_frame(HEARTBEAT)) == [QUERY, HEARTBEAT]
    assert f.drops["truncated"] == 1 and f.dropped_bytes == len(stump)
    [(reason, content)] = f.take_rejects()
    assert reason == "truncated" and content == b"\x00\x17" + REPLY[:18]
    # an end flag hit by line noise (7D -> 5C): the frame before the next start still comes out
    g = impl.Gbt20999Framer()
    hit = gbt_frame(HEARTBEAT)[:-1] + b"\x5c"
    assert g.feed(hit + gbt_frame(QUERY)) == [HEARTBEAT, QUERY]
    assert g.dropped_bytes == 0


def test_stump_swallows_start_flag_into_length_field(impl):
    # 7E 5C: the good frame's 7E becomes the high byte of a length field (0x7E00, too long)
    f = impl.Gbt20999Framer(keep_rejects=True)
    assert f.feed(b"\x7e\x5c" + gbt_frame(QUERY) + gbt_frame(HEARTBEAT)) == [QUERY, HEARTBEAT]
    assert f.drops["truncated"] == 1 and f.drops["too_long"] == 0 and f.dropped_bytes == 2
    assert f.take_rejects() == [("truncated", b"")]
    # ... or its low byte (0x207E), one byte at a time
    g = impl.Gbt20999Framer()
    got = []
    for b in b"\x7e\x20\x5c" + gbt_frame(QUERY):
        got += g.feed(bytes((b,)))
    assert got == [QUERY] and g.drops["truncated"] == 1 and g.dropped_bytes == 3


def test_stump_whose_length_field_fits_the_swallowed_frame(impl):
    # the stump's length field covers stump + 7E + the next frame exactly, so only the CRC fails
    n = 2 + 3 + 1 + (2 + len(QUERY) + 2)  # unescaped: its length field, 3 bytes, 7E, the query
    stump = b"\x7e" + (n - 2).to_bytes(2, "big") + b"\x11\x22\x33\x5c"
    f = impl.Gbt20999Framer()
    assert f.feed(stump + gbt_frame(QUERY)) == [QUERY]
    assert f.drops["truncated"] == 1 and f.drops["bad_checksum"] == 0
    assert f.dropped_bytes == len(stump)


def test_bad_crc_with_escaped_7e_is_one_drop(impl):
    # noise in a frame whose CRC holds an escaped 7E: one bad_checksum, not split into pieces
    bad = bytearray(gbt_frame(QUERY))
    assert b"\x5c\x7e" in bad
    bad[9] ^= 0x40
    f = impl.Gbt20999Framer(keep_rejects=True)
    assert f.feed(bytes(bad) + gbt_frame(QUERY)) == [QUERY]
    assert f.drops["bad_checksum"] == 1 and sum(f.drops.values()) == 1 and f.dropped_bytes == len(bad)
    # after a frame whose end flag noise turned into 5C, that frame comes out and the damaged one
    # after it is still one bad_checksum
    hit = gbt_frame(HEARTBEAT)[:-1] + b"\x5c"
    g = impl.Gbt20999Framer()
    assert g.feed(hit + bytes(bad) + gbt_frame(QUERY)) == [HEARTBEAT, QUERY]
    assert g.drops["bad_checksum"] == 1 and sum(g.drops.values()) == 1 and g.dropped_bytes == len(bad)


def test_bad_escape_stump_ending_in_escape_byte(impl):
    # after the bad escape (5C 41) nothing is buffered; the 5C 7E pair ends the frame there
    stump = b"\x7e\x00\x10\x5c\x41\x22\x5c"
    f = impl.Gbt20999Framer(keep_rejects=True)
    assert f.feed(stump + gbt_frame(QUERY)) == [QUERY]
    assert f.drops["bad_escape"] == 1 and sum(f.drops.values()) == 1 and f.dropped_bytes == len(stump)
    assert f.take_rejects() == [("bad_escape", b"\x00\x10")]


def test_stump_and_swallowed_frame_outgrow_max_frame(impl):
    # 20 bytes of stump + 7E + a 21-byte query do not fit 24 bytes; the query alone does
    stump = b"\x7e\x00\x10" + b"\x33" * 18 + b"\x5c"
    f = impl.Gbt20999Framer(max_frame=24)
    assert f.feed(stump + gbt_frame(QUERY)) == [QUERY]
    assert f.drops["bad_length"] == 1 and f.drops["too_long"] == 0 and f.dropped_bytes == len(stump)
    # the part before the swallowed 7E is checked on its own: a frame whose end flag was hit by
    # noise comes out too
    g = impl.Gbt20999Framer(max_frame=24)
    assert g.feed(gbt_frame(HEARTBEAT)[:-1] + b"\x5c" + gbt_frame(QUERY)) == [HEARTBEAT, QUERY]
    assert g.dropped_bytes == 0
    # content without a 7E is still too long
    h = impl.Gbt20999Framer(max_frame=24)
    assert h.feed(b"\x7e\x00\x10" + b"\x33" * 30 + gbt_frame(QUERY)) == [QUERY]
    assert h.drops["too_long"] == 1 and h.dropped_bytes == 33


def test_absurd_length_field_rejected_before_buffering(impl):
    f = impl.Gbt20999Framer(max_frame=256)
    assert f.feed(b"\x7e\xff\xf0") == []
    assert f.drops["too_long"] == 1
    assert f.buffered == 0
    assert f.feed(b"\x01" * 10000 + b"\x7d" + gbt_frame(QUERY)) == [QUERY]
    assert f.drops["too_long"] == 1
    assert f.dropped_bytes == 3 + 10001
    g = impl.Gbt20999Framer(max_frame=256, escaped=False)
    assert g.feed(b"\x7e\xff\xf0" + b"\x01" * 100 + gbt_frame(QUERY, escaped=False)) == [QUERY]
    assert g.drops["too_long"] == 1 and g.buffered == 0


def test_frame_longer_than_max_without_end(impl):
    f = impl.Gbt20999Framer(max_frame=64)
    assert f.feed(b"\x7e\x00\x10" + b"\x11" * 200) == []
    assert f.drops["too_long"] == 1 and f.buffered == 0


def test_truncated_then_good(impl):
    wire = gbt_frame(REPLY)
    f = impl.Gbt20999Framer(keep_rejects=True)
    assert f.feed(wire[:12] + wire) == [REPLY]
    assert f.drops["truncated"] == 1 and f.dropped_bytes == 12
    assert f.take_rejects() == [("truncated", (b"\x00" + bytes((len(REPLY) + 2,)) + REPLY)[:11])]
    g = impl.Gbt20999Framer(escaped=False)
    raw = gbt_frame(REPLY, escaped=False)
    assert g.feed(raw[:12] + raw) == [REPLY]
    assert g.drops["bad_length"] == 1  # its length field pointed past where the next frame began


def test_bad_escape(impl):
    wire = gbt_frame(QUERY)
    f = impl.Gbt20999Framer()
    assert f.feed(wire[:6] + b"\x5c\x41" + wire[6:] + wire) == [QUERY]
    assert f.drops["bad_escape"] == 1


def test_min_frame(impl):
    # shorter than a heartbeat: 14 bytes between the flags at the least
    f = impl.Gbt20999Framer()
    short = gbt_frame(HEARTBEAT[:-1])
    assert f.feed(short) == [] and f.drops["truncated"] == 1
    g = impl.Gbt20999Framer(escaped=False)
    assert g.feed(gbt_frame(HEARTBEAT[:-1], escaped=False) + gbt_frame(HEARTBEAT, escaped=False)) == [HEARTBEAT]
    assert g.drops["bad_length"] == 1


def test_finish(impl):
    f = impl.Gbt20999Framer()
    assert f.feed(gbt_frame(QUERY)[:9]) == []
    assert f.finish() == []
    assert f.drops["truncated"] == 1 and f.dropped_bytes == 9
    # unescaped: a candidate waiting for bytes at the end is dropped and what follows it rescanned
    g = impl.Gbt20999Framer(escaped=False)
    stump = b"\x7e\x00\x40\x01\x02"
    assert g.feed(stump + gbt_frame(QUERY, escaped=False)) == []
    assert g.buffered == len(stump) + len(gbt_frame(QUERY, escaped=False))
    assert g.finish() == [QUERY]
    assert g.drops["truncated"] == 1 and g.buffered == 0


def test_encoder_errors(impl):
    with pytest.raises(FrameError):
        impl.encode_gbt20999(b"\x00" * 65535)
    assert len(impl.encode_gbt20999(b"\x00" * 65531, escaped=False)) == 65531 + 6
    with pytest.raises(ConfigError):
        impl.encode_gbt20999(QUERY, length_field="n+2")
    with pytest.raises(ConfigError):
        impl.Gbt20999Framer(crc="crc32")
    with pytest.raises(TypeError):
        impl.encode_gbt20999("0101")


def test_profile_attributes(impl):
    f = impl.Gbt20999Framer(length_field="n", crc="ccitt-false", escaped=False, max_frame=512)
    assert (f.length_field, f.crc, f.escaped, f.max_frame) == ("n", "ccitt-false", False, 512)
