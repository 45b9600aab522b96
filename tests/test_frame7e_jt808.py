"""JT/T 808 framing (7E, 7D 01 / 7D 02 escapes, XOR check code): compiled and twin.

Known-good frames are written out byte by byte from the standard's rules, check codes worked out
by hand, so a shared mistake in the encoder and the framer cannot hide."""

import random

import pytest

from tianwang.cext.frame7e_py import MAX_REJECTS
from tianwang.gateway.errors import ConfigError

# 0x0002 heartbeat, 2013 header: id 0002, attributes 0000 (body length 0), phone BCD 013912345678,
# serial 0001; check code 00^02^00^00^01^39^12^34^56^78^00^01 = 0x33
HEARTBEAT = bytes.fromhex("7e 0002 0000 013912345678 0001 33 7e")
HEARTBEAT_CONTENT = bytes.fromhex("0002 0000 013912345678 0001")

# 0x0200 location report whose body holds 7E and 7D: body 30 7E 08 7D 55 (the standard's escaping
# example) is sent as 30 7D 02 08 7D 01 55. Attributes 0005, serial 0102.
# XOR of the header 02^00^00^05^01^39^12^34^56^78^01^02 = 0x34; then ^30 = 04, ^7E = 7A, ^08 = 72,
# ^7D = 0F, ^55 = 0x5A
ESCAPED = bytes.fromhex("7e 0200 0005 013912345678 0102 30 7d02 08 7d01 55 5a 7e")
ESCAPED_CONTENT = bytes.fromhex("0200 0005 013912345678 0102 30 7e 08 7d 55")

# 2019 header (attribute bit 14): id 0102 (authentication), attributes 4000 | body length 2,
# version 01, phone BCD[10] 00000000013912345678, serial 0009, body "ab".
# XOR: 01^02^40^02^01 = 0x40; phone 01^39^12^34^56^78 = 0x30 -> 0x70; ^00^09 = 0x79; ^61^62 = 0x7A
V2019 = bytes.fromhex("7e 0102 4002 01 00000000013912345678 0009 6162 7a 7e")
V2019_CONTENT = bytes.fromhex("0102 4002 01 00000000013912345678 0009 6162")


def test_known_frames_whole(impl):
    f = impl.Jt808Framer()
    assert f.feed(HEARTBEAT + ESCAPED + V2019) == [HEARTBEAT_CONTENT, ESCAPED_CONTENT, V2019_CONTENT]
    assert f.frames == 3
    assert f.dropped_bytes == 0 and f.resyncs == 0
    assert set(f.drops.values()) == {0}
    assert f.bytes_in == len(HEARTBEAT + ESCAPED + V2019)


def test_byte_by_byte_and_random_splits(impl):
    stream = (HEARTBEAT + ESCAPED + V2019) * 5
    f = impl.Jt808Framer()
    got = []
    for b in stream:
        got += f.feed(bytes((b,)))
    assert got == [HEARTBEAT_CONTENT, ESCAPED_CONTENT, V2019_CONTENT] * 5
    rnd = random.Random(808)
    for _ in range(50):
        f = impl.Jt808Framer()
        got, i = [], 0
        while i < len(stream):
            j = i + rnd.randint(0, 40)
            got += f.feed(stream[i:j])
            i = j
        assert got == [HEARTBEAT_CONTENT, ESCAPED_CONTENT, V2019_CONTENT] * 5
        assert f.buffered == 0 and f.frames == 15


def test_split_between_escape_pair(impl):
    f = impl.Jt808Framer()
    cut = ESCAPED.index(b"\x7d\x02") + 1
    assert f.feed(ESCAPED[:cut]) == []
    assert f.buffered > 0
    assert f.feed(ESCAPED[cut:]) == [ESCAPED_CONTENT]


def test_split_header_adds_four_bytes(impl):
    # attribute bit 13: total(2) and index(2) follow the serial; body length 1
    content = bytes.fromhex("0801 2001 013912345678 0003 0002 0001 aa")
    frame = impl.encode_jt808(content)
    assert impl.Jt808Framer().feed(frame) == [content]
    f = impl.Jt808Framer()
    # same bytes without the split bit: 4 bytes more than the length allows
    wrong = bytearray(content)
    wrong[2] = 0x00
    assert f.feed(impl.encode_jt808(bytes(wrong))) == []
    assert f.drops["bad_length"] == 1


def test_encoder_matches_hand_built(impl):
    assert impl.encode_jt808(HEARTBEAT_CONTENT) == HEARTBEAT
    assert impl.encode_jt808(ESCAPED_CONTENT) == ESCAPED
    assert impl.encode_jt808(V2019_CONTENT) == V2019
    assert impl.encode_jt808(bytearray(HEARTBEAT_CONTENT)) == HEARTBEAT
    assert impl.xor_checksum(HEARTBEAT_CONTENT) == 0x33


def test_check_code_itself_escaped(impl):
    # body chosen so that the XOR comes out 0x7E: the check code must be escaped too
    content = bytearray(HEARTBEAT_CONTENT)
    content[-1] ^= 0x33 ^ 0x7E
    frame = impl.encode_jt808(bytes(content))
    assert frame.endswith(b"\x7d\x02\x7e")
    assert impl.Jt808Framer().feed(frame) == [bytes(content)]


def test_bad_checksum_dropped_and_kept_for_the_ack(impl):
    bad = bytearray(ESCAPED)
    bad[-2] ^= 0x01  # check code
    f = impl.Jt808Framer(keep_rejects=True)
    assert f.feed(HEARTBEAT + bytes(bad) + V2019) == [HEARTBEAT_CONTENT, V2019_CONTENT]
    assert f.drops["bad_checksum"] == 1
    assert f.dropped_bytes == len(bad) - 2  # the flags are shared delimiters, never counted
    [(reason, content)] = f.take_rejects()
    assert reason == "bad_checksum"
    # what the listener needs for a 0x8001 "message error" reply: message id and serial
    assert content[:2] == b"\x02\x00" and content[10:12] == b"\x01\x02"
    assert content[-1] == 0x5A ^ 0x01
    assert f.take_rejects() == []


def test_rejects_off_by_default_and_bounded(impl):
    bad = bytearray(HEARTBEAT)
    bad[-2] ^= 0xFF
    f = impl.Jt808Framer()
    f.feed(bytes(bad))
    assert f.take_rejects() == [] and f.drops["bad_checksum"] == 1
    f = impl.Jt808Framer(keep_rejects=True)
    f.feed(bytes(bad) * (MAX_REJECTS + 10))
    assert len(f.take_rejects()) == MAX_REJECTS
    assert f.drops["bad_checksum"] == MAX_REJECTS + 10


@pytest.mark.parametrize("pair", [b"\x7d\x03", b"\x7d\x7d", b"\x7d\x00"])
def test_bad_escape(impl, pair):
    frame = HEARTBEAT[:5] + pair + HEARTBEAT[5:]
    f = impl.Jt808Framer(keep_rejects=True)
    assert f.feed(frame + HEARTBEAT) == [HEARTBEAT_CONTENT]
    assert f.drops["bad_escape"] == 1
    [(reason, content)] = f.take_rejects()
    assert reason == "bad_escape" and content == HEARTBEAT_CONTENT[:4]


def test_escape_byte_before_closing_flag(impl):
    f = impl.Jt808Framer()
    assert f.feed(HEARTBEAT[:-1] + b"\x7d\x7e" + HEARTBEAT) == [HEARTBEAT_CONTENT]
    assert f.drops["bad_escape"] == 1


def test_truncated_then_good(impl):
    # a terminal drops mid-frame and starts over: the next frame's flag closes the stump
    f = impl.Jt808Framer()
    assert f.feed(ESCAPED[:9] + ESCAPED + HEARTBEAT) == [ESCAPED_CONTENT, HEARTBEAT_CONTENT]
    assert f.drops["truncated"] == 1
    assert f.dropped_bytes == 8


def test_noise_before_and_between(impl):
    f = impl.Jt808Framer()
    out = f.feed(b"AT+CSQ\r\n" + HEARTBEAT + b"\x00\x01garbage" + V2019)
    assert out == [HEARTBEAT_CONTENT, V2019_CONTENT]
    assert f.resyncs == 1  # the leading noise; later junk sits between flags and is a (bad) frame
    assert f.dropped_bytes == 8 + 9
    assert f.drops["truncated"] == 1


def test_length_field_checked(impl):
    content = bytearray(ESCAPED_CONTENT)
    content[3] = 0x09  # claims 9 body bytes, has 5
    f = impl.Jt808Framer()
    assert f.feed(impl.encode_jt808(bytes(content))) == []
    assert f.drops["truncated"] == 1
    content[3] = 0x02  # claims 2, has 5
    assert f.feed(impl.encode_jt808(bytes(content))) == []
    assert f.drops["bad_length"] == 1
    assert f.frames == 0


def test_too_long_discarded_without_buffering(impl):
    f = impl.Jt808Framer(max_frame=64)
    huge = b"\x7e" + b"\x11" * 5000
    assert f.feed(huge) == []
    assert f.drops["too_long"] == 1
    assert f.buffered == 0
    assert f.feed(b"\x22" * 100 + HEARTBEAT) == [HEARTBEAT_CONTENT]
    assert f.drops["too_long"] == 1
    assert f.dropped_bytes == 5100


def test_finish_counts_open_frame(impl):
    f = impl.Jt808Framer(keep_rejects=True)
    assert f.feed(HEARTBEAT + ESCAPED[:10]) == [HEARTBEAT_CONTENT]
    assert f.finish() == []
    assert f.drops["truncated"] == 1 and f.dropped_bytes == 9
    assert f.take_rejects() == [("truncated", ESCAPED_CONTENT[:9])]
    # after finish it hunts afresh: leading bytes are noise again
    assert f.feed(b"xx" + HEARTBEAT) == [HEARTBEAT_CONTENT]
    assert f.resyncs == 1


def test_idle_flags_are_not_frames(impl):
    f = impl.Jt808Framer()
    assert f.feed(b"\x7e\x7e\x7e" + HEARTBEAT + b"\x7e\x7e" + HEARTBEAT[1:]) == [HEARTBEAT_CONTENT] * 2
    assert f.dropped_bytes == 0 and set(f.drops.values()) == {0}


def test_buffer_types_and_errors(impl):
    f = impl.Jt808Framer()
    assert f.feed(bytearray(HEARTBEAT)) == [HEARTBEAT_CONTENT]
    assert f.feed(memoryview(HEARTBEAT)) == [HEARTBEAT_CONTENT]
    with pytest.raises(TypeError):
        f.feed("7e")
    with pytest.raises(TypeError):
        f.feed(5)
    with pytest.raises(TypeError):
        impl.encode_jt808("abc")
    with pytest.raises(ConfigError):
        impl.Jt808Framer(max_frame=4)
    with pytest.raises(TypeError):
        impl.Jt808Framer(max_frame="big")
    assert f.frames == 2
