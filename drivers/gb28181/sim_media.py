"""The simulated devices' live stream: MPEG-PS frames in RTP, as GB/T 28181 devices send after an
INVITE (payload type 96, `a=rtpmap:96 PS/90000`, the SSRC of the offer's `y=` line).

A frame is one PS pack: pack header; on key frames the system header and the program stream map
(ISO/IEC 13818-1 2.5.3, 2.5.4); then one PES packet (stream 0xE0, with a PTS) carrying a small
synthetic H.264 access unit in Annex B form (SPS, PPS and an IDR slice on key frames, a non-IDR
slice otherwise). The pack is cut into RTP packets of at most `max_payload` bytes; the marker bit
is set on the last packet of a frame, the timestamp is the 90 kHz PTS.

`MediaSender` sends such a stream to the offered address over UDP, or over TCP (RFC 4571: each RTP
packet behind a two-byte length) when the offer was `TCP/RTP/AVP` with the platform passive, until
it is stopped (the BYE).
"""

from __future__ import annotations

import asyncio
import random
import struct
from typing import Any

PS_PACK_START = b"\x00\x00\x01\xba"
PS_SYSTEM_HEADER = b"\x00\x00\x01\xbb"
PS_MAP = b"\x00\x00\x01\xbc"
PES_VIDEO = b"\x00\x00\x01\xe0"
STREAM_TYPE_H264 = 0x1B
RTP_PT_PS = 96
CLOCK_HZ = 90_000
_NO_ZERO = bytes([1]) + bytes(range(1, 256))
MUX_RATE = 6106  # program_mux_rate in units of 50 bytes/s, a value field devices commonly send


def _crc32_mpeg(data: bytes) -> int:
    # ISO/IEC 13818-1 Annex A: CRC-32, polynomial 0x04C11DB7, initial 0xFFFFFFFF, no reflection
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) & 0xFFFFFFFF if crc & 0x80000000 else (crc << 1) & 0xFFFFFFFF
    return crc


def pack_header(scr: int) -> bytes:
    """14-byte MPEG-2 pack header with the 90 kHz system clock reference `scr` (extension 0)."""
    scr &= (1 << 33) - 1
    b = bytearray(PS_PACK_START)
    b.append(0x44 | ((scr >> 27) & 0x38) | ((scr >> 28) & 0x03))
    b.append((scr >> 20) & 0xFF)
    b.append(0x04 | ((scr >> 12) & 0xF8) | ((scr >> 13) & 0x03))
    b.append((scr >> 5) & 0xFF)
    b.append(0x04 | ((scr << 3) & 0xF8))  # SCR low bits, marker, extension high bits (0)
    b.append(0x01)  # extension low bits (0) and marker
    b += bytes(((MUX_RATE >> 14) & 0xFF, (MUX_RATE >> 6) & 0xFF, ((MUX_RATE << 2) & 0xFC) | 0x03))
    b.append(0xF8)  # reserved, no stuffing
    return bytes(b)


def system_header() -> bytes:
    body = bytearray()
    body += bytes((0x80 | ((MUX_RATE >> 15) & 0x7F), (MUX_RATE >> 7) & 0xFF, ((MUX_RATE << 1) & 0xFE) | 0x01))
    body.append(0x04)  # audio_bound 1 (field default), not fixed, not CSPS
    body.append(0xE1)  # audio and video locked, marker, video_bound 1
    body.append(0x7F)  # no packet rate restriction, reserved
    body += bytes((0xE0, 0xE0 | 0x00, 0x80))  # video stream: buffer scale 1, size bound 128 x 1024 bytes
    return PS_SYSTEM_HEADER + struct.pack(">H", len(body)) + bytes(body)


def stream_map() -> bytes:
    es = bytes((STREAM_TYPE_H264, 0xE0)) + struct.pack(">H", 0)
    body = bytearray((0xE0, 0xFF))  # current, version 0; marker
    body += struct.pack(">H", 0)  # no program stream info
    body += struct.pack(">H", len(es)) + es
    length = len(body) + 4  # the CRC counts
    psm = PS_MAP + struct.pack(">H", length) + bytes(body)
    return psm + struct.pack(">I", _crc32_mpeg(psm))


def _pts_bytes(pts: int) -> bytes:
    pts &= (1 << 33) - 1
    return bytes(
        (
            0x21 | ((pts >> 29) & 0x0E),
            (pts >> 22) & 0xFF,
            0x01 | ((pts >> 14) & 0xFE),
            (pts >> 7) & 0xFF,
            0x01 | ((pts << 1) & 0xFE),
        )
    )


def pes_packets(payload: bytes, pts: int, max_len: int = 65_000) -> list[bytes]:
    """The access unit in PES packets of the video stream; the first carries the PTS."""
    out = []
    first = True
    for i in range(0, max(1, len(payload)), max_len):
        chunk = payload[i : i + max_len]
        if first:
            header = bytes((0x84, 0x80, 5)) + _pts_bytes(pts)  # data aligned; PTS only
        else:
            header = bytes((0x80, 0x00, 0))
        out.append(PES_VIDEO + struct.pack(">H", len(header) + len(chunk)) + header + chunk)
        first = False
    return out


def access_unit(key: bool, frame_no: int, size: int, rng: random.Random) -> bytes:
    """A synthetic H.264 access unit (Annex B) of about `size` bytes; its bytes say nothing, its
    NAL unit types are what a player and a media server look at to find key frames."""
    start = b"\x00\x00\x00\x01"
    filler = rng.randbytes(max(8, size)).translate(_NO_ZERO)  # no 00 bytes: no false start codes
    if key:
        sps = start + bytes((0x67, 0x4D, 0x00, 0x1F, 0x9A, 0x66, 0x02, 0x80, 0x2D, 0xC8))  # Main@3.1
        pps = start + bytes((0x68, 0xEE, 0x3C, 0x80))
        return sps + pps + start + b"\x65" + frame_no.to_bytes(4, "big") + filler
    return start + b"\x41" + frame_no.to_bytes(4, "big") + filler


def ps_frame(access: bytes, pts: int, key: bool) -> bytes:
    """One PS pack holding one access unit."""
    out = pack_header(pts)
    if key:
        out += system_header() + stream_map()
    return out + b"".join(pes_packets(access, pts))


class RtpPacketizer:
    """RTP packets (RFC 3550) of PS frames for one SSRC; sequence numbers run on across frames."""

    def __init__(self, ssrc: int, payload_type: int = RTP_PT_PS, max_payload: int = 1400, seq: int = 0):
        self.ssrc = ssrc & 0xFFFFFFFF
        self.pt = payload_type
        self.max_payload = max_payload
        self.seq = seq & 0xFFFF

    def packets(self, frame: bytes, timestamp: int) -> list[bytes]:
        out = []
        n = max(1, -(-len(frame) // self.max_payload))
        for i in range(n):
            marker = 0x80 if i == n - 1 else 0
            header = struct.pack(">BBHII", 0x80, marker | self.pt, self.seq, timestamp & 0xFFFFFFFF, self.ssrc)
            out.append(header + frame[i * self.max_payload : (i + 1) * self.max_payload])
            self.seq = (self.seq + 1) & 0xFFFF
        return out


def ssrc_value(y: str | None, fallback: int) -> int:
    """The SSRC as a number: GB/T 28181's y= is ten decimal digits that are used as the RTP SSRC
    (values past 2^32 - 1 do not occur with a leading 0 or 1; keep the low 32 bits if one does)."""
    if y and y.isdigit():
        return int(y) & 0xFFFFFFFF
    return fallback & 0xFFFFFFFF


def answer_sdp(
    *, device_id: str, ip: str, port: int, ssrc: str, transport: str, session: str = "Play", setup: str | None = None
) -> bytes:
    """The device's SDP answer: sendonly PS on `port`, the SSRC echoed in y=."""
    proto = "TCP/RTP/AVP" if transport == "tcp" else "RTP/AVP"
    lines = [
        "v=0",
        f"o={device_id} 0 0 IN IP4 {ip}",
        f"s={session}",
        f"c=IN IP4 {ip}",
        "t=0 0",
        f"m=video {port} {proto} 96",
        "a=sendonly",
        "a=rtpmap:96 PS/90000",
    ]
    if transport == "tcp":
        lines += [f"a=setup:{setup or 'active'}", "a=connection:new"]
    lines += [f"y={ssrc}", "f="]
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


class _TcpMedia(asyncio.Protocol):
    def __init__(self, sender: MediaSender):
        self.sender = sender

    def connection_lost(self, exc):
        self.sender._transport = None


class MediaSender:
    """Sends PS-in-RTP at `fps` frames a second (a key frame every `gop` frames) to `dest` until
    `stop()`. Counts `packets` and `frames`; `error` holds why it stopped early (TCP refused)."""

    def __init__(
        self,
        dest: tuple[str, int],
        ssrc: int,
        *,
        transport: str = "udp",
        fps: float = 25.0,
        gop: int = 25,
        frame_bytes: int = 1800,
        seed: int = 0,
    ):
        self.dest = dest
        self.transport = transport
        self.fps = fps
        self.gop = gop
        self.frame_bytes = frame_bytes
        self.rng = random.Random(seed)
        self.rtp = RtpPacketizer(ssrc, seq=self.rng.getrandbits(16))
        self.packets = 0
        self.frames = 0
        self.error: str | None = None
        self.local_port: int | None = None
        self._transport: Any = None  # asyncio.Transport (tcp) or DatagramTransport (udp) while sending
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport: Any
        if self.transport == "tcp":
            transport, _ = await loop.create_connection(lambda: _TcpMedia(self), *self.dest)
        else:
            transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, remote_addr=self.dest)
        self._transport = transport
        self.local_port = transport.get_extra_info("sockname")[1]
        self._task = loop.create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        pts0 = self.rng.getrandbits(32)
        period = 1.0 / self.fps
        while self._transport is not None:
            n = self.frames
            key = n % self.gop == 0
            pts = pts0 + int(n * CLOCK_HZ / self.fps)
            size = self.frame_bytes * (3 if key else 1)
            frame = ps_frame(access_unit(key, n, size, self.rng), pts, key)
            for pkt in self.rtp.packets(frame, pts):
                if self.transport == "tcp":
                    self._transport.write(struct.pack(">H", len(pkt)) + pkt)
                else:
                    self._transport.sendto(pkt)
                self.packets += 1
            self.frames += 1
            await asyncio.sleep(max(0.0, t0 + self.frames * period - loop.time()))
        if self.error is None and self._task is not None:
            self.error = "the receiver closed the media connection"

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        if self._transport is not None:
            self._transport.close()
            self._transport = None
