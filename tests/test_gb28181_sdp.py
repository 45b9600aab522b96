"""GB/T 28181 SDP (drivers/gb28181/sdp.py): the platform's offers (UDP, TCP passive/active, playback),
a typical device answer read back, the y= SSRC layout, and bad bodies refused by reason."""

import pytest
from hypothesis import given, strategies as st

from tianwang.drivers.gb28181 import sdp
from tianwang.drivers.gb28181.sip import SipError

DOMAIN = "4303000000"

# What a Hikvision-style IPC answers to a live UDP offer (y= kept, its own address and port)
DEVICE_ANSWER = (
    b"v=0\r\n"
    b"o=43030000001320000001 0 0 IN IP4 192.168.1.64\r\n"
    b"s=Play\r\n"
    b"c=IN IP4 192.168.1.64\r\n"
    b"t=0 0\r\n"
    b"m=video 15060 RTP/AVP 96\r\n"
    b"a=sendonly\r\n"
    b"a=rtpmap:96 PS/90000\r\n"
    b"a=filesize:0\r\n"
    b"y=0300000001\r\n"
    b"f=v/2/5/25/1/4096a///\r\n"
)


def test_make_ssrc_layout():
    assert sdp.make_ssrc(DOMAIN, 1) == "0300000001"
    assert sdp.make_ssrc("3402000000", 42, playback=True) == "1200000042"
    assert sdp.make_ssrc("6401000000", 12345) == "0100002345"  # the sequence wraps at 10,000
    for ssrc in (sdp.make_ssrc(DOMAIN, 9999), sdp.make_ssrc(DOMAIN, 0, True)):
        assert len(ssrc) == 10 and ssrc.isdigit()
    for bad in ("4303", "43030000ab", "", "４３０３０００００"):
        with pytest.raises(ValueError):
            sdp.make_ssrc(bad, 1)


def test_ssrc_int_and_pool():
    assert sdp.ssrc_int("0300000001") == 300000001
    assert sdp.ssrc_int("1999999999") == 1999999999
    with pytest.raises(ValueError):
        sdp.ssrc_int("9999999999")
    pool = sdp.SsrcPool(DOMAIN)
    first = pool.take()
    assert first == "0300000001" and pool.take() == "0300000002"
    assert pool.take(playback=True) == "1300000001"
    assert len(pool) == 3
    pool.release(first)
    assert len(pool) == 2
    taken = {pool.take() for _ in range(9997)}
    assert len(taken) == 9997 and first not in taken
    assert [pool.take(), pool.take()] == ["0300000000", first]  # wrapped round, reusing the released one
    with pytest.raises(RuntimeError):
        pool.take()


def test_udp_live_offer():
    body = sdp.build_offer(session_id=0, origin_id="43030000002000000001", ip="10.0.0.5", port=30000, ssrc="0300000001")
    text = body.decode()
    lines = text.split("\r\n")
    assert lines[:3] == ["v=0", "o=43030000002000000001 0 0 IN IP4 10.0.0.5", "s=Play"]
    assert "c=IN IP4 10.0.0.5" in lines and "t=0 0" in lines
    assert "m=video 30000 RTP/AVP 96 97 98" in lines
    assert {"a=recvonly", "a=rtpmap:96 PS/90000", "a=rtpmap:97 MPEG4/90000", "a=rtpmap:98 H264/90000"} <= set(lines)
    assert not any(line.startswith(("a=setup", "u=")) for line in lines)
    assert lines[-2:] == ["y=0300000001", ""]
    parsed = sdp.parse_sdp(body)
    assert (parsed.connection_ip, parsed.port, parsed.transport) == ("10.0.0.5", 30000, "udp")
    assert parsed.payload_types == [96, 97, 98] and parsed.ssrc == "0300000001"
    assert parsed.video.rtpmap == {96: "PS/90000", 97: "MPEG4/90000", 98: "H264/90000"}
    assert parsed.video.direction == "recvonly" and parsed.session_name == "Play"


@pytest.mark.parametrize("setup", ["passive", "active"])
def test_tcp_offer(setup):
    body = sdp.build_offer(
        session_id=7,
        origin_id="43030000002000000001",
        ip="10.0.0.5",
        port=30002,
        transport="TCP",
        ssrc="0300000002",
        setup=setup,
    )
    lines = body.decode().split("\r\n")
    assert "m=video 30002 TCP/RTP/AVP 96 97 98" in lines
    assert f"a=setup:{setup}" in lines and "a=connection:new" in lines
    parsed = sdp.parse_sdp(body)
    assert parsed.transport == "tcp" and parsed.setup == setup
    assert parsed.origin_user == "43030000002000000001"


def test_playback_offer_carries_uri_and_times():
    body = sdp.build_offer(
        session_id=1,
        origin_id="43030000002000000001",
        ip="10.0.0.5",
        port=30004,
        ssrc="1300000003",
        kind="Playback",
        start=1733529600,
        end=1733533200,
        channel="43030000001310000001",
    )
    parsed = sdp.parse_sdp(body)
    assert parsed.session_name == "Playback"
    assert parsed.uri == "43030000001310000001:0"
    assert (parsed.start, parsed.end) == (1733529600, 1733533200)
    download = sdp.parse_sdp(
        sdp.build_offer(
            session_id=1,
            origin_id="o",
            ip="10.0.0.5",
            port=1,
            ssrc="1300000003",
            kind="Download",
            channel="c",
            start=1,
            end=2,
            download_speed=4,
        )
    )
    assert download.video.attribute("downloadspeed") == "4"


def test_ipv6_offer():
    parsed = sdp.parse_sdp(sdp.build_offer(session_id=0, origin_id="o", ip="fd00::5", port=4000, ssrc="0300000001"))
    assert parsed.connection_ip == "fd00::5"


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(kind="Live"),
        dict(transport="sctp"),
        dict(setup="actpass"),
        dict(ssrc="123"),
        dict(port=70000),
        dict(kind="Playback"),  # no channel
    ],
)
def test_bad_offer_arguments(kwargs):
    args = dict(session_id=0, origin_id="o", ip="10.0.0.5", port=30000, ssrc="0300000001")
    args.update(kwargs)
    with pytest.raises(ValueError):
        sdp.build_offer(**args)


def test_device_answer_parsed():
    answer = sdp.parse_sdp(DEVICE_ANSWER)
    assert answer.connection_ip == "192.168.1.64" and answer.port == 15060
    assert answer.transport == "udp" and answer.payload_types == [96]
    assert answer.video.direction == "sendonly" and answer.video.rtpmap == {96: "PS/90000"}
    assert answer.ssrc == "0300000001" and answer.media_format == "v/2/5/25/1/4096a///"
    assert answer.origin_ip == "192.168.1.64"


def test_tcp_answer_with_media_level_address_and_session_setup():
    body = (
        b"v=0\no=dev 0 0 IN IP4 1.1.1.1\ns=Play\nc=IN IP4 1.1.1.1\nt=0 0\na=setup:ACTIVE\n"
        b"m=video 0 TCP/RTP/AVP 96\nc=IN IP4 10.1.2.3\na=sendonly\na=rtpmap:96 PS/90000\ny=0300000009\n"
    )
    answer = sdp.parse_sdp(body)
    assert answer.connection_ip == "10.1.2.3"  # media-level c= wins over the session's
    assert answer.session_ip == "1.1.1.1"
    assert answer.transport == "tcp" and answer.port == 0
    assert answer.setup == "active"  # from the session level, lower-cased


def test_audio_and_video_media():
    body = DEVICE_ANSWER.replace(b"m=video", b"m=audio 8000 RTP/AVP 8\r\nm=video")
    answer = sdp.parse_sdp(body)
    assert [m.media for m in answer.medias] == ["audio", "video"]
    assert answer.port == 15060


@pytest.mark.parametrize(
    "body, reason",
    [
        (b"v=0\r\ns=Play\r\nc=IN IP4 1.2.3.4\r\n", "no_media"),
        (b"v=0\r\nm=video 1 RTP/AVP 96\r\n", "bad_sdp"),  # no address to send to
        (DEVICE_ANSWER.replace(b"15060", b"port"), "bad_sdp"),
        (DEVICE_ANSWER.replace(b"15060", b"99999"), "bad_sdp"),
        (DEVICE_ANSWER.replace(b"t=0 0", b"t=0"), "bad_sdp"),
        (DEVICE_ANSWER.replace(b"c=IN IP4", b"c=XX"), "bad_sdp"),
        (DEVICE_ANSWER + b"garbage\r\n", "bad_sdp"),
        (b"v=0\r\n" + b"a=x\r\n" * 5000, "bad_sdp"),
    ],
)
def test_bad_bodies(body, reason):
    with pytest.raises(sdp.SdpError) as info:
        sdp.parse_sdp(body)
    assert info.value.reason == reason
    assert isinstance(info.value, SipError)


@given(st.binary(max_size=600))
def test_any_body_is_an_sdp_or_an_sdp_error(data):
    try:
        parsed = sdp.parse_sdp(data)
    except sdp.SdpError:
        return
    assert parsed.connection_ip is not None and 0 <= parsed.port <= 65535


@given(st.integers(0, len(DEVICE_ANSWER)), st.binary(max_size=6))
def test_mutated_answers_are_an_sdp_or_an_sdp_error(at, junk):
    data = DEVICE_ANSWER[:at] + junk + DEVICE_ANSWER[at + len(junk) :]
    try:
        parsed = sdp.parse_sdp(data)
    except sdp.SdpError:
        return
    _ = parsed.setup, parsed.transport, parsed.payload_types  # each reads without raising
