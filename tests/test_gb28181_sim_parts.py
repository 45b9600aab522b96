"""The GB/T 28181 simulator's parts that need no SIP: IDs, the 4G units' roads, the PTZ head, the
recordings, and the PS-in-RTP stream (parsed back here byte by byte, and received over real UDP
and TCP sockets on 127.0.0.1)."""

import asyncio
import math
import random
import struct

import pytest

from tianwang.drivers.gb28181 import sim_media as media
from tianwang.drivers.gb28181.sim_world import (
    CENTRE,
    PLACES,
    TYPE_MOBILE,
    TYPE_NVR,
    PtzHead,
    Route,
    gb_id,
    place_for,
    recordings,
)

pytestmark = pytest.mark.timeout(30)


def test_ids_are_twenty_digits_under_xiangtan():
    nvr = gb_id(TYPE_NVR, 1)
    assert nvr == "43030000001188000001" and len(nvr) == 20
    assert gb_id(TYPE_MOBILE, 999_999)[10:13] == "138"
    with pytest.raises(ValueError):
        gb_id(TYPE_NVR, 1_000_000)


def test_place_names_are_gb2312_and_unique_beyond_the_list():
    rng = random.Random(1)
    places = [place_for(i, rng) for i in range(len(PLACES) * 2 + 3)]
    assert len({p.name for p in places}) == len(places)
    for p in places:
        p.name.encode("gb2312")  # the wire charset holds every name
        assert p.civil_code.startswith("4303")
        assert abs(p.lat - 27.85) < 0.2 and abs(p.lon - 112.8) < 0.5


def test_route_drives_around_xiangtan_at_its_speed_and_course():
    route = Route(random.Random(7))
    t0 = 1_800_000_000.0
    seen = []
    for k in range(0, 600, 5):
        lat, lon, speed_kmh, course, alt = route.at(t0 + k)
        assert abs(lat - CENTRE[0]) < 0.12 and abs(lon - CENTRE[1]) < 0.12
        assert 15 <= speed_kmh <= 60 and 0 <= course < 360 and alt > 0
        seen.append((lat, lon))
    assert len(set(seen)) > 100  # it moves
    # one second later the position moved along the reported course by about the reported speed
    lat1, lon1, speed_kmh, course, _ = route.at(t0 + 1000)
    lat2, lon2, *_ = route.at(t0 + 1001)
    north = (lat2 - lat1) * 111_320
    east = (lon2 - lon1) * 111_320 * math.cos(math.radians(lat1))
    if math.hypot(north, east) > 1:  # not across a corner of the loop
        assert math.hypot(north, east) == pytest.approx(speed_kmh / 3.6, rel=0.05)
        assert (math.degrees(math.atan2(east, north)) - course + 540) % 360 - 180 == pytest.approx(0, abs=2)
    # a full lap comes back to the start
    assert route.at(t0)[:2] == pytest.approx(route.at(t0 + route.lap_s)[:2], abs=1e-6)


def test_ptz_head_moves_at_the_commanded_speeds_and_remembers_presets():
    head = PtzHead(pan=10.0, tilt=-20.0, zoom=1.0)
    head.move(0.5, 0.0, 1.0, now=100.0)
    pan, tilt, zoom = head.position(102.0)
    assert pan == pytest.approx(10.0 + 0.5 * 60 * 2) and tilt == -20.0 and zoom == pytest.approx(1 + 4 * 2)
    head.stop(now=102.0)
    assert head.position(200.0) == pytest.approx((70.0, -20.0, 9.0))
    head.preset_set(3, now=200.0)
    head.move(-1.0, -1.0, 0, now=200.0)
    assert head.position(300.0)[1] == -90.0  # tilt stops at its end
    assert head.preset_goto(3, now=300.0) and head.position(301.0) == pytest.approx((70.0, -20.0, 9.0))
    assert head.preset_delete(3) and not head.preset_goto(3, now=302.0) and not head.preset_delete(3)
    head.move(1.0, 0, 0, now=0.0)
    assert head.position(6.0)[0] == pytest.approx((70.0 + 360.0) % 360)  # pan wraps at 360


def test_recordings_are_deterministic_and_inside_the_window():
    start, end = 1_800_000_000.0, 1_800_000_000.0 + 3 * 3600
    a = recordings(4, start, end)
    assert a == recordings(4, start, end) and a != recordings(5, start, end)
    assert all(start <= r.start < r.end <= end for r in a)
    assert {r.kind for r in a} == {"time", "alarm"}
    assert all(r.kind == "alarm" for r in recordings(4, start, end, "alarm"))


# -- PS and RTP -------------------------------------------------------------------------------------
def _scr(b: bytes) -> int:
    return (
        ((b[4] >> 3) & 7) << 30
        | (b[4] & 3) << 28
        | b[5] << 20
        | (b[6] >> 3) << 15
        | (b[6] & 3) << 13
        | b[7] << 5
        | b[8] >> 3
    )


def _pts(b: bytes) -> int:
    return ((b[0] >> 1) & 7) << 30 | b[1] << 22 | (b[2] >> 1) << 15 | b[3] << 7 | b[4] >> 1


def parse_ps(frame: bytes) -> dict:
    """A small independent reading of one PS pack: which units it has, the PES payload and PTS."""
    out = {"units": [], "payload": b"", "pts": None}
    assert frame[:4] == media.PS_PACK_START
    assert frame[4] >> 6 == 1  # MPEG-2 pack header
    out["scr"] = _scr(frame)
    i = 14 + (frame[13] & 7)
    out["units"].append("pack")
    while i < len(frame):
        code = frame[i : i + 4]
        assert code[:3] == b"\x00\x00\x01", f"no start code at {i}"
        length = struct.unpack(">H", frame[i + 4 : i + 6])[0]
        body = frame[i + 6 : i + 6 + length]
        assert len(body) == length
        if code == media.PS_SYSTEM_HEADER:
            out["units"].append("system")
        elif code == media.PS_MAP:
            out["units"].append("map")
            assert media._crc32_mpeg(frame[i : i + 6 + length]) == 0  # a CRC over data + CRC is 0
            es_len = struct.unpack(">H", body[4:6])[0]
            out["stream_type"] = body[6]
            assert es_len == 4 and body[7] == 0xE0
        elif code == media.PES_VIDEO:
            out["units"].append("pes")
            hlen = body[2]
            if body[1] & 0x80:
                out["pts"] = _pts(body[3:8])
            out["payload"] += body[3 + hlen :]
        i += 6 + length
    return out


def test_ps_frame_has_pack_system_header_and_map_on_key_frames_only():
    rng = random.Random(3)
    au = media.access_unit(True, 0, 500, rng)
    key = parse_ps(media.ps_frame(au, 123456789, key=True))
    assert key["units"] == ["pack", "system", "map", "pes"]
    assert key["stream_type"] == 0x1B and key["pts"] == 123456789 and key["scr"] == 123456789
    assert key["payload"] == au
    nal_types = [au[i + 4] & 0x1F for i in range(len(au) - 4) if au[i : i + 4] == b"\x00\x00\x00\x01"]
    assert nal_types == [7, 8, 5]  # SPS, PPS, IDR
    delta = parse_ps(media.ps_frame(media.access_unit(False, 1, 500, rng), 2**33 + 5, key=False))
    assert delta["units"] == ["pack", "pes"] and delta["pts"] == 5  # 33-bit clock wraps


def test_rtp_packets_carry_the_ssrc_and_mark_the_frame_end():
    rtp = media.RtpPacketizer(ssrc=media.ssrc_value("0430300001", 0), seq=65534)
    frame = media.ps_frame(media.access_unit(True, 0, 3000, random.Random(1)), 9000, True)
    pkts = rtp.packets(frame, 9000)
    assert len(pkts) == -(-len(frame) // 1400) >= 3
    heads = [struct.unpack(">BBHII", p[:12]) for p in pkts]
    assert all(h[0] == 0x80 and h[1] & 0x7F == 96 and h[3] == 9000 and h[4] == 430300001 for h in heads)
    assert [h[1] >> 7 for h in heads] == [0] * (len(pkts) - 1) + [1]
    assert [h[2] for h in heads[:3]] == [65534, 65535, 0]
    assert b"".join(p[12:] for p in pkts) == frame


def test_answer_sdp_names_the_ssrc_and_transport():
    udp = media.answer_sdp(
        device_id="43030000001311000001", ip="127.0.0.1", port=15060, ssrc="0430300001", transport="udp"
    ).decode()
    assert "m=video 15060 RTP/AVP 96" in udp and "y=0430300001" in udp and "a=sendonly" in udp
    tcp = media.answer_sdp(device_id="x", ip="127.0.0.1", port=1, ssrc="1", transport="tcp").decode()
    assert "TCP/RTP/AVP" in tcp and "a=setup:active" in tcp


def _frames(packets: list[bytes]) -> list[bytes]:
    frames, cur = [], b""
    for p in packets:
        cur += p[12:]
        if p[1] & 0x80:
            frames.append(cur)
            cur = b""
    return frames


async def test_media_sender_streams_over_udp_until_stopped():
    loop = asyncio.get_running_loop()
    got: list[bytes] = []
    enough = asyncio.Event()

    class Rx(asyncio.DatagramProtocol):
        def datagram_received(self, data, addr):
            got.append(data)
            if len(_frames(got)) >= 30:
                enough.set()

    rx, _ = await loop.create_datagram_endpoint(Rx, local_addr=("127.0.0.1", 0))
    port = rx.get_extra_info("sockname")[1]
    sender = media.MediaSender(("127.0.0.1", port), 1234567890, fps=100.0, gop=10)
    try:
        await sender.start()
        await asyncio.wait_for(enough.wait(), 20)
    finally:
        await sender.stop()
        rx.close()
    assert all(struct.unpack(">I", p[8:12])[0] == 1234567890 for p in got)
    frames = [parse_ps(f) for f in _frames(got)]
    assert [("system" in f["units"]) for f in frames[:21]] == [i % 10 == 0 for i in range(21)]
    pts = [f["pts"] for f in frames]
    assert all((b - a) % 2**33 == 900 for a, b in zip(pts, pts[1:], strict=False))  # 100 fps at 90 kHz
    seqs = [struct.unpack(">H", p[2:4])[0] for p in got]
    assert all((b - a) % 65536 == 1 for a, b in zip(seqs, seqs[1:], strict=False))
    count = sender.packets
    await asyncio.sleep(0.1)
    assert sender.packets == count  # stopped means stopped


async def test_media_sender_frames_rtp_over_tcp():
    buf = bytearray()
    done = asyncio.Event()

    async def accept(reader, writer):
        while len(buf) < 20_000:
            chunk = await reader.read(65536)
            if not chunk:
                break
            buf.extend(chunk)
        done.set()
        writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sender = media.MediaSender(("127.0.0.1", port), 42, transport="tcp", fps=100.0)
    try:
        await sender.start()
        await asyncio.wait_for(done.wait(), 20)
    finally:
        await sender.stop()
        server.close()
    # RFC 4571: two-byte length, then an RTP packet
    i, packets = 0, []
    while i + 2 <= len(buf):
        n = struct.unpack(">H", buf[i : i + 2])[0]
        if i + 2 + n > len(buf):
            break
        packets.append(bytes(buf[i + 2 : i + 2 + n]))
        i += 2 + n
    assert len(packets) > 10 and all(
        p[0] == 0x80 and p[1] & 0x7F == 96 and p[8:12] == b"\x00\x00\x00\x2a" for p in packets
    )
    assert parse_ps(_frames(packets)[0])["units"][:3] == ["pack", "system", "map"]
