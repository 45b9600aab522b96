"""SDP (RFC 4566) as GB/T 28181 uses it for INVITE: the platform's offer, the device's answer, SSRCs.

Facts used here (GB/T 28181-2016 section 9 and Annex F):
- `s=Play` live, `s=Playback` / `s=Download` history (those two carry `u=<channel>:0` and
  `t=<start> <end>` in seconds since the epoch); live uses `t=0 0`.
- `m=video <port> RTP/AVP 96 97 98` over UDP, `TCP/RTP/AVP` over TCP with `a=setup:passive|active`
  (RFC 4145) and `a=connection:new`; payload 96 PS/90000, 97 MPEG4/90000, 98 H264/90000.
- `y=` is the 10-digit decimal SSRC: digit 1 is 0 for live and 1 for history, digits 2-6 are digits
  4-8 of the SIP domain, the last 4 a sequence of the domain. The device may answer another y=.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tianwang.drivers.gb28181.sip import SipError

MAX_SDP = 16384  # bytes; a GB answer is a few hundred
KINDS = ("Play", "Playback", "Download", "Talk")
PAYLOADS = ((96, "PS/90000"), (97, "MPEG4/90000"), (98, "H264/90000"))


class SdpError(SipError):
    """An SDP body that cannot be read; `reason` is `bad_sdp` or `no_media`."""


def make_ssrc(domain: str, seq: int, playback: bool = False) -> str:
    """The GB y= SSRC: '0' live / '1' history, digits 4-8 of `domain`, then `seq` mod 10000.

    Raises ValueError when the domain is not at least 8 digits.
    """
    if not (isinstance(domain, str) and domain.isascii() and domain.isdigit() and len(domain) >= 8):
        raise ValueError(f"SIP domain must be at least 8 digits, got {domain!r}")
    return ("1" if playback else "0") + domain[3:8] + f"{int(seq) % 10000:04d}"


def ssrc_int(ssrc: str) -> int:
    """The RTP header value of a y= SSRC (decimal text -> 32-bit integer). Raises ValueError."""
    value = int(ssrc, 10)
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(f"SSRC out of range: {ssrc!r}")
    return value


class SsrcPool:
    """Hands out SSRCs of one domain without repeats while they are in use (10,000 per kind)."""

    def __init__(self, domain: str):
        make_ssrc(domain, 0)  # validates the domain
        self.domain = domain
        self._next = {False: 1, True: 1}
        self._used: set[str] = set()

    def take(self, playback: bool = False) -> str:
        """A free SSRC; raises RuntimeError when all 10,000 of the kind are in use."""
        for _ in range(10000):
            seq = self._next[playback]
            self._next[playback] = (seq + 1) % 10000
            ssrc = make_ssrc(self.domain, seq, playback)
            if ssrc not in self._used:
                self._used.add(ssrc)
                return ssrc
        raise RuntimeError("every SSRC of the domain is in use")

    def claim(self, ssrc: str) -> bool:
        """Hold an SSRC someone else chose (a superior platform's `y=`) so it is not handed out
        while in use; False when it is in use already."""
        if ssrc in self._used:
            return False
        self._used.add(ssrc)
        return True

    def release(self, ssrc: str) -> None:
        self._used.discard(ssrc)

    def __len__(self) -> int:
        return len(self._used)


def _addr_type(ip: str) -> str:
    return "IP6" if ":" in ip else "IP4"


def build_offer(
    *,
    session_id: int | str,
    origin_id: str,
    ip: str,
    port: int,
    transport: str = "udp",
    ssrc: str,
    kind: str = "Play",
    start: int = 0,
    end: int = 0,
    channel: str | None = None,
    setup: str = "passive",
    download_speed: int | None = None,
) -> bytes:
    """The platform's INVITE offer: receive PS/MPEG4/H264 at ip:port over UDP or TCP.

    `setup` (TCP only): "passive" = the device connects to ip:port; "active" = we connect to the
    device. Raises ValueError for an unknown kind, transport or setup.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    transport = transport.lower()
    if transport not in ("udp", "tcp"):
        raise ValueError(f"transport must be udp or tcp, got {transport!r}")
    if setup not in ("passive", "active"):
        raise ValueError(f"setup must be passive or active, got {setup!r}")
    if not (str(ssrc).isascii() and str(ssrc).isdigit() and len(str(ssrc)) == 10):
        raise ValueError(f"SSRC must be 10 digits, got {ssrc!r}")
    if not 0 <= int(port) < 65536:
        raise ValueError(f"bad media port {port!r}")
    history = kind in ("Playback", "Download")
    lines = [
        "v=0",
        f"o={origin_id} {session_id} {session_id} IN {_addr_type(ip)} {ip}",
        f"s={kind}",
    ]
    if history:
        if not channel:
            raise ValueError(f"{kind} needs the channel id for u=")
        lines.append(f"u={channel}:0")
    lines += [
        f"c=IN {_addr_type(ip)} {ip}",
        f"t={int(start) if history else 0} {int(end) if history else 0}",
        f"m=video {int(port)} {'TCP/RTP/AVP' if transport == 'tcp' else 'RTP/AVP'} "
        + " ".join(str(pt) for pt, _ in PAYLOADS),
        "a=recvonly",
    ]
    lines += [f"a=rtpmap:{pt} {name}" for pt, name in PAYLOADS]
    if transport == "tcp":
        lines += [f"a=setup:{setup}", "a=connection:new"]
    if kind == "Download" and download_speed:
        lines.append(f"a=downloadspeed:{int(download_speed)}")
    lines.append(f"y={ssrc}")
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


@dataclass
class SdpMedia:
    media: str  # video, audio
    port: int
    proto: str  # RTP/AVP, TCP/RTP/AVP, RTP/AVP/TCP
    payload_types: list[int]
    connection_ip: str | None = None  # a media-level c=, when given
    rtpmap: dict[int, str] = field(default_factory=dict)
    attributes: list[tuple[str, str | None]] = field(default_factory=list)

    @property
    def transport(self) -> str:
        return "tcp" if "TCP" in self.proto.upper() else "udp"

    def attribute(self, name: str) -> str | None:
        for key, value in self.attributes:
            if key == name:
                return value
        return None

    @property
    def setup(self) -> str | None:
        return self.attribute("setup")

    @property
    def direction(self) -> str | None:
        for key, _ in self.attributes:
            if key in ("sendrecv", "sendonly", "recvonly", "inactive"):
                return key
        return None


@dataclass
class Sdp:
    session_name: str = ""
    origin_user: str | None = None
    origin_ip: str | None = None
    session_ip: str | None = None  # the session-level c=
    start: int = 0
    end: int = 0
    uri: str | None = None  # u=
    ssrc: str | None = None  # y=
    media_format: str | None = None  # f=
    medias: list[SdpMedia] = field(default_factory=list)
    attributes: list[tuple[str, str | None]] = field(default_factory=list)  # session-level a=

    @property
    def video(self) -> SdpMedia:
        """The first video media (the first media when none says video)."""
        for m in self.medias:
            if m.media == "video":
                return m
        return self.medias[0]

    @property
    def connection_ip(self) -> str | None:
        """Where the media goes: the video media's own c= or the session's."""
        return self.video.connection_ip or self.session_ip

    @property
    def port(self) -> int:
        return self.video.port

    @property
    def transport(self) -> str:
        return self.video.transport

    @property
    def payload_types(self) -> list[int]:
        return self.video.payload_types

    @property
    def setup(self) -> str | None:
        """The video media's a=setup, else a session-level one (some devices put it there)."""
        value = self.video.setup
        if value is None:
            value = next((v for k, v in self.attributes if k == "setup"), None)
        return value


def _int(text: str, what: str) -> int:
    text = text.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 20:
        raise SdpError("bad_sdp", f"{what}: {text[:30]!r}")
    return int(text)


def _connection(value: str) -> str:
    parts = value.split()
    if len(parts) < 3 or parts[0] != "IN":
        raise SdpError("bad_sdp", f"c={value[:60]!r}")
    return parts[2].split("/")[0]


def parse_sdp(body: bytes) -> Sdp:
    """Read an SDP body (the device's answer or an offer). Raises SdpError.

    Lenient on what GB devices vary (line ends, unknown lines, y= and f= anywhere, case of the
    setup value); strict on what the media path needs (m= port and formats, c= address).
    """
    if len(body) > MAX_SDP:
        raise SdpError("bad_sdp", f"{len(body)} bytes")
    text = bytes(body).decode("utf-8", "surrogateescape")
    sdp = Sdp()
    current: SdpMedia | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if len(line) < 2 or line[1] != "=":
            raise SdpError("bad_sdp", f"line {line[:40]!r}")
        key, value = line[0], line[2:].strip()
        if key == "s":
            sdp.session_name = value
        elif key == "o":
            parts = value.split()
            if len(parts) != 6:
                raise SdpError("bad_sdp", f"o={value[:60]!r}")
            sdp.origin_user, sdp.origin_ip = parts[0], parts[5]
        elif key == "c":
            if current is None:
                sdp.session_ip = _connection(value)
            else:
                current.connection_ip = _connection(value)
        elif key == "t":
            parts = value.split()
            if len(parts) != 2:
                raise SdpError("bad_sdp", f"t={value[:60]!r}")
            sdp.start, sdp.end = _int(parts[0], "t= start"), _int(parts[1], "t= stop")
        elif key == "u":
            sdp.uri = value
        elif key == "y":
            sdp.ssrc = value
        elif key == "f":
            sdp.media_format = value
        elif key == "m":
            parts = value.split()
            if len(parts) < 3:
                raise SdpError("bad_sdp", f"m={value[:60]!r}")
            port = _int(parts[1].split("/")[0], "m= port")
            if port > 65535:
                raise SdpError("bad_sdp", f"m= port {port}")
            formats = [_int(pt, "m= format") for pt in parts[3:]]
            current = SdpMedia(parts[0].lower(), port, parts[2], formats)
            sdp.medias.append(current)
        elif key == "a":
            name, colon, text = value.partition(":")
            name = name.strip().lower()
            attr = text.strip() if colon else None
            if name == "setup" and attr:
                attr = attr.lower()
            if current is None:
                sdp.attributes.append((name, attr))
                continue
            if name == "rtpmap" and attr:
                pt, _, encoding = attr.partition(" ")
                current.rtpmap[_int(pt, "rtpmap")] = encoding.strip()
            current.attributes.append((name, attr))
    if not sdp.medias:
        raise SdpError("no_media", "no m= line")
    if sdp.connection_ip is None:
        raise SdpError("bad_sdp", "no c= line for the media")
    return sdp
