"""Building NMEA 0183 sentences: single sentences with their checksum, the sentences of one epoch
from a receiver state, RDSS (BeiDou short message) sentences in both directions, and the binary
frames (UBX, RTCM3, CASIC) that real receivers interleave with NMEA.

Used by the receiver simulator, the tests and the benchmark corpora. Pure Python, no I/O.

    sentence("GNGGA", ["123519.00", ...])                 -> b"$GNGGA,123519.00,...*hh\\r\\n"
    EpochWriter(style="nmea410").epoch(EpochState(...))   -> the bytes of one epoch

Styles (how real receivers label constellations):
- "nmea410" (NMEA 4.10/4.11, u-blox 9, Unicore, recent Chinese modules): GN talker for the
  combined solution, one GNGSA per constellation ending in its System ID (1 GPS, 2 GLONASS,
  3 Galileo, 4 BDS, 5 QZSS), GSV per constellation (GP GL GA GB GQ) ending in a Signal ID.
- "bd" (BD 410004 output standard, older BeiDou modules): BD talker for BeiDou, GP for GPS, no
  System or Signal IDs; the combined solution uses the talker given (GN by default; a BDS-only
  module says BD for everything).

Satellite numbers in `Satellite.svid` are the constellation's own (GPS 1-32, GLONASS slot 1-24,
Galileo 1-36, BDS 1-63, QZSS 1-10); the writer turns GLONASS into NMEA ids 65-96.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
import struct
from collections.abc import Iterable, Sequence
from functools import reduce
from operator import xor

KNOTS_PER_MPS = 3600.0 / 1852.0  # 1 knot = 1852 m/h
SYSTEM_IDS = {"GPS": 1, "GLO": 2, "GAL": 3, "BDS": 4, "QZSS": 5}
GSV_TALKERS_410 = {"GPS": "GP", "GLO": "GL", "GAL": "GA", "BDS": "GB", "QZSS": "GQ"}
GSV_TALKERS_BD = {"GPS": "GP", "GLO": "GL", "GAL": "GA", "BDS": "BD", "QZSS": "GQ"}
SYSTEMS = ("GPS", "GLO", "GAL", "BDS", "QZSS")


def checksum(body: bytes) -> int:
    """XOR of the bytes between `$` and `*`."""
    return reduce(xor, body, 0)


def _field(value: object) -> bytes:
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    if isinstance(value, bool):
        raise TypeError("write booleans as the letters the sentence expects (Y/N, A/V)")
    return str(value).encode("latin-1")


def sentence(
    address: str,
    fields: Iterable = (),
    *,
    with_checksum: bool = True,
    lowercase: bool = False,
    terminator: bytes = b"\r\n",
) -> bytes:
    """One sentence: `$address,f1,f2,...*hh` + terminator. Fields may be str, bytes, int or None
    (empty); format floats yourself (the number of decimals is part of a receiver's style)."""
    body = address.encode("ascii") + b"".join(b"," + _field(f) for f in fields)
    if not with_checksum:
        return b"$" + body + terminator
    ck = b"%02x" % checksum(body) if lowercase else b"%02X" % checksum(body)
    return b"$" + body + b"*" + ck + terminator


# ---------------------------------------------------------------------------------------------
# Field formatting


def fmt_time(time_ns: int, decimals: int = 2) -> str:
    """hhmmss.ss of a UTC time in ns since the Unix epoch (or since midnight)."""
    tod = time_ns % 86_400_000_000_000
    secs, frac = divmod(tod, 1_000_000_000)
    hh, rem = divmod(secs, 3600)
    mm, ss = divmod(rem, 60)
    out = f"{hh:02d}{mm:02d}{ss:02d}"
    if decimals > 0:
        out += "." + f"{frac:09d}"[:decimals]
    return out


def fmt_date(time_ns: int) -> str:
    """ddmmyy of a UTC time in ns since the Unix epoch."""
    d = _dt.datetime(1970, 1, 1) + _dt.timedelta(microseconds=time_ns // 1000)
    return f"{d.day:02d}{d.month:02d}{d.year % 100:02d}"


def _ymd(time_ns: int) -> tuple[int, int, int]:
    d = _dt.datetime(1970, 1, 1) + _dt.timedelta(microseconds=time_ns // 1000)
    return d.year, d.month, d.day


def fmt_latlon(deg: float | None, is_lat: bool, decimals: int = 7) -> tuple[str, str]:
    """(ddmm.mmmm or dddmm.mmmm, hemisphere) of signed degrees; ("", "") for None."""
    if deg is None or (isinstance(deg, float) and math.isnan(deg)):
        return "", ""
    hemi = ("N" if deg >= 0 else "S") if is_lat else ("E" if deg >= 0 else "W")
    a = abs(deg)
    whole = int(a)
    minutes = round((a - whole) * 60.0, decimals)
    if minutes >= 60.0:  # rounding carried into the next degree
        whole += 1
        minutes -= 60.0
    width = 2 if is_lat else 3
    mins = f"{minutes:0{3 + decimals if decimals else 2}.{decimals}f}"
    return f"{whole:0{width}d}{mins}", hemi


def _num(value: float | int | None, decimals: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.{decimals}f}"


# ---------------------------------------------------------------------------------------------
# Epochs


@dataclasses.dataclass
class Satellite:
    """One satellite in view. system: GPS GLO GAL BDS QZSS; svid: the constellation's own number."""

    system: str
    svid: int
    elev: int | None = None
    az: int | None = None
    snr: int | None = None
    used: bool = False
    signal_id: int = 1


@dataclasses.dataclass
class EpochState:
    """What a receiver knows at one fix time. time_ns: UTC ns since the Unix epoch.
    quality: GGA fix quality (0 none, 1 GNSS, 2 DGNSS, 4 RTK fixed, 5 RTK float, 6 dead reckoning);
    fix_type: GSA 1 none, 2 2D, 3 3D."""

    time_ns: int
    lat: float | None = None
    lon: float | None = None
    alt_m: float | None = None
    geoid_sep_m: float | None = None
    speed_mps: float | None = None
    course_deg: float | None = None
    quality: int = 1
    fix_type: int = 3
    hdop: float | None = None
    pdop: float | None = None
    vdop: float | None = None
    satellites: Sequence[Satellite] = ()
    mag_var_deg: float | None = None
    # GST error estimates (m); written only when rms is set
    rms: float | None = None
    sd_lat_m: float | None = None
    sd_lon_m: float | None = None
    sd_alt_m: float | None = None

    @property
    def valid(self) -> bool:
        return self.quality > 0 and self.lat is not None and self.lon is not None


# the second band's NMEA 4.11 signal ID of a dual-frequency receiver (GPS L5, BDS B2a, Galileo E5a)
SECOND_BAND = {"GPS": 7, "BDS": 8, "GAL": 7}

_MODE_LETTER = {0: "N", 1: "A", 2: "D", 4: "R", 5: "F", 6: "E", 7: "M", 8: "S"}


class EpochWriter:
    """The sentences of one epoch from an EpochState, in a receiver's style.

    style       "nmea410" or "bd" (see the module docstring)
    talker      talker of the solution sentences (GGA RMC VTG GLL ZDA GST GNS); "GN" by default
    order       which sentences, in which order: any of RMC VTG GGA GSA GSV GLL ZDA GST GNS
    time_decimals / latlon_decimals   digits after the point (2 and 7 by default)
    dual_band   a dual-frequency receiver: two GSA per constellation (band 1, then band 2, neither
                with a signal ID; the union of their ids is the satellites used) and a second GSV
                set for the second band (signal ID 7 for GPS and Galileo, 8 for BDS, as the issue 11
                receivers send them; GLONASS and QZSS stay single-band; the bd style, without
                signal IDs, sends the second GSA only)
    """

    DEFAULT_ORDER = ("RMC", "VTG", "GGA", "GSA", "GSV", "GLL", "ZDA")

    def __init__(
        self,
        style: str = "nmea410",
        talker: str = "GN",
        order: Sequence[str] = DEFAULT_ORDER,
        time_decimals: int = 2,
        latlon_decimals: int = 7,
        dual_band: bool = False,
    ) -> None:
        if style not in ("nmea410", "bd"):
            raise ValueError(f"style must be 'nmea410' or 'bd', not {style!r}")
        unknown = set(order) - {"RMC", "VTG", "GGA", "GSA", "GSV", "GLL", "ZDA", "GST", "GNS"}
        if unknown:
            raise ValueError(f"unknown sentences in order: {sorted(unknown)}")
        if len(talker) != 2:
            raise ValueError(f"talker must be two letters, not {talker!r}")
        self.style = style
        self.talker = talker
        self.order = tuple(order)
        self.time_decimals = time_decimals
        self.latlon_decimals = latlon_decimals
        self.dual_band = bool(dual_band)

    # one sentence kind each -------------------------------------------------------------------

    def _pos(self, st: EpochState) -> list[str]:
        lat, ns = fmt_latlon(st.lat, True, self.latlon_decimals)
        lon, ew = fmt_latlon(st.lon, False, self.latlon_decimals)
        return [lat, ns, lon, ew]

    def gga(self, st: EpochState) -> bytes:
        used = sum(1 for s in st.satellites if s.used)
        return sentence(
            self.talker + "GGA",
            [
                fmt_time(st.time_ns, self.time_decimals),
                *self._pos(st),
                st.quality,
                f"{used:02d}",
                _num(st.hdop, 2),
                _num(st.alt_m, 3),
                "M" if st.alt_m is not None else "",
                _num(st.geoid_sep_m, 3),
                "M" if st.geoid_sep_m is not None else "",
                "",
                "",
            ],
        )

    def rmc(self, st: EpochState) -> bytes:
        speed = None if st.speed_mps is None else st.speed_mps * KNOTS_PER_MPS
        mag = "" if st.mag_var_deg is None else _num(abs(st.mag_var_deg), 1)
        mag_ew = "" if st.mag_var_deg is None else ("E" if st.mag_var_deg >= 0 else "W")
        fields = [
            fmt_time(st.time_ns, self.time_decimals),
            "A" if st.valid else "V",
            *self._pos(st),
            _num(speed, 3),
            _num(st.course_deg, 2),
            fmt_date(st.time_ns),
            mag,
            mag_ew,
            _MODE_LETTER.get(st.quality, "A") if st.valid else "N",
        ]
        if self.style == "nmea410":
            fields.append("V")  # navigational status: not provided
        return sentence(self.talker + "RMC", fields)

    def vtg(self, st: EpochState) -> bytes:
        knots = None if st.speed_mps is None else st.speed_mps * KNOTS_PER_MPS
        kmh = None if st.speed_mps is None else st.speed_mps * 3.6
        return sentence(
            self.talker + "VTG",
            [
                _num(st.course_deg, 2),
                "T",
                "",
                "M",
                _num(knots, 3),
                "N",
                _num(kmh, 3),
                "K",
                _MODE_LETTER.get(st.quality, "A") if st.valid else "N",
            ],
        )

    def gll(self, st: EpochState) -> bytes:
        return sentence(
            self.talker + "GLL",
            [
                *self._pos(st),
                fmt_time(st.time_ns, self.time_decimals),
                "A" if st.valid else "V",
                _MODE_LETTER.get(st.quality, "A") if st.valid else "N",
            ],
        )

    def zda(self, st: EpochState) -> bytes:
        y, m, d = _ymd(st.time_ns)
        return sentence(
            self.talker + "ZDA",
            [fmt_time(st.time_ns, self.time_decimals), f"{d:02d}", f"{m:02d}", f"{y:04d}", "00", "00"],
        )

    def gst(self, st: EpochState) -> bytes:
        return sentence(
            self.talker + "GST",
            [
                fmt_time(st.time_ns, self.time_decimals),
                _num(st.rms, 1),
                "",
                "",
                "",
                _num(st.sd_lat_m, 1),
                _num(st.sd_lon_m, 1),
                _num(st.sd_alt_m, 1),
            ],
        )

    def gns(self, st: EpochState) -> bytes:
        present = [s for s in SYSTEMS if any(x.system == s for x in st.satellites)] or ["GPS"]
        letter = _MODE_LETTER.get(st.quality, "A") if st.valid else "N"
        modes = "".join(letter if any(x.system == s and x.used for x in st.satellites) else "N" for s in present)
        used = sum(1 for s in st.satellites if s.used)
        return sentence(
            self.talker + "GNS",
            [
                fmt_time(st.time_ns, self.time_decimals),
                *self._pos(st),
                modes,
                f"{used:02d}",
                _num(st.hdop, 2),
                _num(st.alt_m, 3),
                _num(st.geoid_sep_m, 3),
                "",
                "",
                "V",
            ],
        )

    def _nmea_id(self, sat: Satellite) -> int:
        return sat.svid + 64 if sat.system == "GLO" else sat.svid

    def _bands(self, system: str, used: list[int]) -> list[list[int]]:
        # the used ids of each band: band 1 all but the last, band 2 every other one plus the last
        # (so only the union of both GSAs is the whole set, and both usually start with the same id)
        if not self.dual_band or system not in SECOND_BAND or len(used) < 2:
            return [used]
        return [used[:-1], sorted(set(used[::2]) | {used[-1]})]

    def gsa(self, st: EpochState) -> list[bytes]:
        per_band: list[list[bytes]] = [[], []]
        for system in SYSTEMS:
            sats = [s for s in st.satellites if s.system == system]
            if not sats:
                continue
            for band, used in enumerate(self._bands(system, [self._nmea_id(s) for s in sats if s.used])):
                per_band[band] += self._gsa(st, system, used)
        return per_band[0] + per_band[1]

    def _gsa(self, st: EpochState, system: str, used: list[int]) -> list[bytes]:
        out = []
        for start in range(0, max(len(used), 1), 12):
            ids = [f"{i:02d}" for i in used[start : start + 12]]
            ids += [""] * (12 - len(ids))
            fields = ["A", st.fix_type if st.valid else 1, *ids, _num(st.pdop, 2), _num(st.hdop, 2), _num(st.vdop, 2)]
            if self.style == "nmea410":
                out.append(sentence("GNGSA", fields + [f"{SYSTEM_IDS[system]:X}"]))
            else:
                out.append(sentence(GSV_TALKERS_BD[system] + "GSA", fields))
        return out

    def gsv(self, st: EpochState) -> list[bytes]:
        out = []
        talkers = GSV_TALKERS_410 if self.style == "nmea410" else GSV_TALKERS_BD
        for system in SYSTEMS:
            signals = sorted({s.signal_id for s in st.satellites if s.system == system})
            if self.dual_band and self.style == "nmea410" and system in SECOND_BAND and signals == [1]:
                # (the bd style's GSV has no signal ID field: one set only)
                signals.append(SECOND_BAND[system])
            for signal in signals:
                sats = [s for s in st.satellites if s.system == system and s.signal_id == signal]
                if not sats and signal == SECOND_BAND.get(system):
                    # the second band tracks the stronger half of the band-1 satellites
                    first = [s for s in st.satellites if s.system == system and s.signal_id == 1]
                    sats = [
                        dataclasses.replace(s, snr=None if s.snr is None else max(s.snr - 3, 0), signal_id=signal)
                        for s in first
                        if s.svid % 2 == 1
                    ]
                total = (len(sats) + 3) // 4
                for k in range(total):
                    fields = [total, k + 1, f"{len(sats):02d}"]
                    for s in sats[4 * k : 4 * k + 4]:
                        fields += [
                            f"{self._nmea_id(s):02d}",
                            "" if s.elev is None else f"{s.elev:02d}",
                            "" if s.az is None else f"{s.az:03d}",
                            "" if s.snr is None else f"{s.snr:02d}",
                        ]
                    if self.style == "nmea410":
                        fields.append(f"{signal:X}")
                    out.append(sentence(talkers[system] + "GSV", fields))
        return out

    # a whole epoch ----------------------------------------------------------------------------

    def sentences(self, st: EpochState) -> list[bytes]:
        """The sentences of one epoch, in `order`."""
        out = []
        for kind in self.order:
            got = getattr(self, kind.lower())(st)
            if isinstance(got, list):
                out.extend(got)
            else:
                out.append(got)
        return out

    def epoch(self, st: EpochState) -> bytes:
        return b"".join(self.sentences(st))


def txt(text: str, talker: str = "GP", text_id: int = 1, total: int = 1, number: int = 1) -> bytes:
    """A receiver text sentence (`$GPTXT,01,01,01,ANTENNA OPEN*hh`)."""
    return sentence(talker + "TXT", [f"{total:02d}", f"{number:02d}", f"{text_id:02d}", text])


# ---------------------------------------------------------------------------------------------
# RDSS short messages (BeiDou). Content travels as hex digits of the encoded bytes.

ENCODINGS = {"gb2312": 0, "code": 1, "mixed": 2}


def encode_content(text: str | None = None, data: bytes | None = None, encoding: str = "gb2312") -> bytes:
    """The bytes of a message: `text` encoded as GB2312 (mixed: GB18030, which carries ASCII too),
    or `data` as given (encoding "code"). Raises ValueError when text cannot be encoded."""
    if (text is None) == (data is None):
        raise ValueError("give exactly one of text or data")
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {sorted(ENCODINGS)}, not {encoding!r}")
    if data is not None:
        return bytes(data)
    assert text is not None  # exactly one of the two was given
    try:
        return text.encode("gb2312" if encoding == "gb2312" else "gb18030")
    except UnicodeEncodeError as exc:
        raise ValueError(f"text cannot be written as {encoding}: {exc}") from exc


def card_query_21() -> bytes:
    """Protocol 2.1 card query: `$CCICA,0,00` (answered by `$BDICI`)."""
    return sentence("CCICA", ["0", "00"])


def card_query_bds3() -> bytes:
    """BDS-3 card query (answered by `$BDICP`)."""
    return sentence("CCICR", ["0", "00"])


def send_21(dest: str, content: bytes, encoding: str = "gb2312") -> bytes:
    """Protocol 2.1 send: `$CCTXA,dest,1,mode,content-hex` (answered by `$BDFKI,TXA,...`)."""
    if not (len(dest) == 7 and dest.isdigit()):
        raise ValueError(f"protocol 2.1 addresses are 7 digits, not {dest!r}")
    return sentence("CCTXA", [dest, "1", ENCODINGS[encoding], content.hex().upper()])


def send_bds3(
    dest: str, content: bytes, encoding: str = "gb2312", freq_point: int = 2, ack: int = 0, interval_s: int = 0
) -> bytes:
    """BDS-3 send: `$CCTCQ,dest,freq,ack,encoding,hex,interval` (answered by `$BDFKI,hhmmss,TCQ,...`)."""
    if not dest.isdigit():
        raise ValueError(f"addresses are digits, not {dest!r}")
    return sentence("CCTCQ", [dest, freq_point, ack, ENCODINGS[encoding], content.hex().upper(), interval_s])


def txr(
    sender: str, content: bytes, encoding: int = 0, kind: int = 1, send_time: str = "", talker: str = "BD"
) -> bytes:
    """Protocol 2.1 received message `$BDTXR,kind,sender,mode,time,content-hex`."""
    return sentence(talker + "TXR", [kind, sender, encoding, send_time, content.hex().upper()])


def tci(
    sender: str,
    recipient: str,
    content: bytes,
    encoding: int = 0,
    freq_point: int = 2,
    send_time: str = "",
    ack: int = 0,
    talker: str = "BD",
) -> bytes:
    """BDS-3 received message `$BDTCI,from,to,freq,time,enc,ack,hex`."""
    return sentence(talker + "TCI", [sender, recipient, freq_point, send_time, encoding, ack, content.hex().upper()])


def fki_21(
    command: str, executed: bool, interval_ok: bool = True, suppression: int = 0, wait_s: int = 0, talker: str = "BD"
) -> bytes:
    """Protocol 2.1 feedback `$BDFKI,cmd,Y|N,Y|N,suppression,mmss`."""
    mm, ss = divmod(max(0, wait_s), 60)
    return sentence(
        talker + "FKI",
        [command, "Y" if executed else "N", "Y" if interval_ok else "N", suppression, f"{min(mm, 99):02d}{ss:02d}"],
    )


def fki_bds3(
    time_ns: int, command: str, executed: bool, reason: int = 0, remaining_s: int = 0, talker: str = "BD"
) -> bytes:
    """BDS-3 feedback `$BDFKI,hhmmss,cmd,Y|N,reason,remaining`. Reasons: 1 interval not reached,
    2 suppressed, 3 silent, 4 power unlocked, 5 no card, 6 no permission."""
    return sentence(talker + "FKI", [fmt_time(time_ns, 0), command, "Y" if executed else "N", reason, remaining_s])


def ici(
    card_id: str,
    serial: str = "0",
    broadcast_id: str = "0",
    user_class: int = 1,
    interval_s: int = 60,
    level: int = 3,
    encrypted: bool = False,
    subordinates: int = 0,
    talker: str = "BD",
    formatter: str = "ICI",
) -> bytes:
    """Card information `$BDICI,card,serial,broadcast,class,interval_s,level,E/N,subordinates`
    (formatter "ICP" for the BDS-3 form, same layout)."""
    return sentence(
        talker + formatter,
        [card_id, serial, broadcast_id, user_class, interval_s, level, "E" if encrypted else "N", subordinates],
    )


def pwi(
    time_ns: int, rdss2: Sequence[tuple[int, int]] = (), s2c: Sequence[tuple[int, int]] = (), talker: str = "BD"
) -> bytes:
    """Beam status `$BDPWI,hhmmss.ss,n,(beam,power)*n,m,(beam,power)*m` (power 0..4)."""
    fields: list = [fmt_time(time_ns, 2), len(rdss2)]
    for beam, power in rdss2:
        fields += [beam, power]
    fields.append(len(s2c))
    for beam, power in s2c:
        fields += [beam, power]
    return sentence(talker + "PWI", fields)


# ---------------------------------------------------------------------------------------------
# Binary frames receivers interleave with NMEA


def ubx_frame(msg_class: int, msg_id: int, payload: bytes = b"") -> bytes:
    """u-blox UBX: B5 62 class id len(u16 LE) payload, 8-bit Fletcher checksum over class..payload."""
    body = bytes([msg_class, msg_id]) + len(payload).to_bytes(2, "little") + payload
    a = b = 0
    for byte in body:
        a = (a + byte) & 0xFF
        b = (b + a) & 0xFF
    return b"\xb5\x62" + body + bytes([a, b])


def _crc24q(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
    return crc & 0xFFFFFF


def rtcm3_frame(payload: bytes) -> bytes:
    """RTCM 3: D3, 10-bit length, payload (starts with the 12-bit message number), CRC-24Q."""
    if len(payload) > 1023:
        raise ValueError("RTCM3 payloads are at most 1023 bytes")
    head = bytes([0xD3, len(payload) >> 8, len(payload) & 0xFF]) + payload
    return head + _crc24q(head).to_bytes(3, "big")


def casic_frame(msg_class: int, msg_id: int, payload: bytes = b"") -> bytes:
    """CASIC (ZhongKe Microelectronics): BA CE len(u16 LE) class id payload (multiple of 4 bytes),
    checksum u32 LE = (id << 24) + (class << 16) + len + the payload's u32 LE words."""
    if len(payload) % 4:
        raise ValueError("CASIC payloads are a multiple of 4 bytes")
    ck = (msg_id << 24) + (msg_class << 16) + len(payload)
    for i in range(0, len(payload), 4):
        ck += int.from_bytes(payload[i : i + 4], "little")
    return (
        b"\xba\xce"
        + len(payload).to_bytes(2, "little")
        + bytes([msg_class, msg_id])
        + payload
        + (ck & 0xFFFFFFFF).to_bytes(4, "little")
    )


# ---------------------------------------------------------------------------------------------
# Binary navigation epochs (CASIC and UBX), for receivers that send them beside NMEA. Layouts in
# tianwang.drivers.beidou.binary (the decoder) and /work/shared/protocols/casic-ubx.md.

_GPS_EPOCH_S = 315_964_800  # 1980-01-06 00:00:00 UTC
GPS_LEAP_S = 18
_CASIC_INFO_IDS = {"GPS": (0x20, 0), "BDS": (0x21, 1), "GLO": (0x22, 2)}
_UBX_GNSS_IDS = {"GPS": 0, "GAL": 2, "BDS": 3, "QZSS": 5, "GLO": 6}


def gps_itow_ms(time_ns: int) -> int:
    """GPS time of week (ms) of a UTC time, with the leap seconds of 2017 on (18 s)."""
    gps_ms = (time_ns // 1_000_000) - _GPS_EPOCH_S * 1000 + GPS_LEAP_S * 1000
    return gps_ms % (7 * 86_400_000)


def _civil(time_ns: int) -> tuple[int, int, int, int, int, int, int]:
    t = _dt.datetime.fromtimestamp(time_ns // 10**9, _dt.UTC)
    return t.year, t.month, t.day, t.hour, t.minute, t.second, time_ns % 10**9


def casic_epoch(
    st: EpochState, run_time_ms: int, messages: Sequence[str] = ("PV", "DOP", "TIMEUTC", "INFO")
) -> list[bytes]:
    """The CASIC NAV frames of one epoch (runTime `run_time_ms`), in `messages` order: PV, DOP,
    TIMEUTC, STATUS, INFO (one NAV-GPSINFO/BDSINFO/GLNINFO per constellation in view)."""
    rt = run_time_ms & 0xFFFFFFFF
    pos_valid = (7 if st.alt_m is not None else 6) if st.valid else 0
    used = {s: sum(1 for x in st.satellites if x.system == s and x.used) for s in ("GPS", "BDS", "GLO")}
    out = []
    for kind in messages:
        if kind == "PV":
            nan = float("nan")
            alt = st.alt_m if st.alt_m is not None else 0.0
            sep = st.geoid_sep_m if st.geoid_sep_m is not None else 0.0
            speed = st.speed_mps if st.speed_mps is not None else 0.0
            course = st.course_deg if st.course_deg is not None else 0.0
            payload = struct.pack(
                "<IBBBBBBBxfdd12f",
                rt,
                pos_valid,
                pos_valid,
                0b111 if st.valid else 0,
                sum(used.values()),
                used["GPS"],
                used["BDS"],
                used["GLO"],
                st.pdop if st.pdop is not None else nan,
                st.lon if st.valid else 0.0,
                st.lat if st.valid else 0.0,
                alt + sep,
                sep,
                4.0,
                9.0,
                0.0,
                0.0,
                0.0,
                speed,
                speed,
                course,
                0.04,
                1e6,
            )
            out.append(casic_frame(0x01, 0x03, payload))
        elif kind == "DOP":
            vals = [x if x is not None else 99.99 for x in (st.pdop, st.hdop, st.vdop)]
            out.append(casic_frame(0x01, 0x01, struct.pack("<I6f", rt, *vals, 1.0, 1.0, 1.0)))
        elif kind == "TIMEUTC":
            y, mo, d, h, mi, s, ns = _civil(st.time_ns)
            payload = struct.pack("<IffHHBBBBBBBB", rt, 1e-8, 0.0, ns // 1_000_000, y, mo, d, h, mi, s, 7, 1, 3)
            out.append(casic_frame(0x01, 0x10, payload))
        elif kind == "STATUS":
            payload = struct.pack("<IHBB", rt, 1000, pos_valid, pos_valid) + bytes(72)
            out.append(casic_frame(0x01, 0x00, payload))
        elif kind == "INFO":
            for system, (msg_id, code) in _CASIC_INFO_IDS.items():
                sats = [x for x in st.satellites if x.system == system and x.signal_id == 1]
                if not sats:
                    continue
                body = struct.pack("<IBBBB", rt, len(sats), sum(1 for x in sats if x.used), code, 0)
                for chn, x in enumerate(sats):
                    body += struct.pack(
                        "<BBBBBbhf",
                        chn,
                        x.svid,
                        0xC1 if x.used else 0xC0,
                        0x01,
                        x.snr or 0,
                        x.elev if x.elev is not None else -128,
                        x.az if x.az is not None else -1,
                        0.0,
                    )
                out.append(casic_frame(0x01, msg_id, body))
        else:
            raise ValueError(f"unknown CASIC message {kind!r}")
    return out


def ubx_epoch(st: EpochState, messages: Sequence[str] = ("PVT", "DOP", "SAT", "TIMEUTC", "EOE")) -> list[bytes]:
    """The UBX NAV frames of one epoch, in `messages` order: PVT, DOP, SAT, TIMEUTC, EOE."""
    itow = gps_itow_ms(st.time_ns)
    y, mo, d, h, mi, s, ns = _civil(st.time_ns)
    out = []
    for kind in messages:
        if kind == "PVT":
            fix_type = (3 if st.alt_m is not None else 2) if st.valid else 0
            flags = 0x01 if st.valid else 0
            if st.quality == 2:
                flags |= 0x02
            elif st.quality == 4:
                flags |= 0x80
            elif st.quality == 5:
                flags |= 0x40
            used = sum(1 for x in st.satellites if x.used and x.signal_id == 1)
            alt_mm = round((st.alt_m or 0.0) * 1000)
            sep_mm = round((st.geoid_sep_m or 0.0) * 1000)
            head = round((st.course_deg or 0.0) * 1e5)
            payload = struct.pack(
                "<IHBBBBBBIiBBBBiiiiIIiiiiiIIHH",
                itow,
                y,
                mo,
                d,
                h,
                mi,
                s,
                0x07,
                20,
                ns,
                fix_type,
                flags,
                0xE0,
                used,
                round(st.lon * 1e7) if st.valid and st.lon is not None else 0,
                round(st.lat * 1e7) if st.valid and st.lat is not None else 0,
                alt_mm + sep_mm,
                alt_mm,
                2000,
                3000,
                0,
                0,
                0,
                round((st.speed_mps or 0.0) * 1000),
                head,
                200,
                18_000_000,
                round(st.pdop * 100) if st.pdop is not None else 9999,
                0,
            )
            out.append(ubx_frame(0x01, 0x07, payload + bytes(12)))
        elif kind == "DOP":
            vals = [round(x * 100) if x is not None else 9999 for x in (st.pdop, st.vdop, st.hdop)]
            out.append(
                ubx_frame(0x01, 0x04, struct.pack("<I7H", itow, 9999, vals[0], 9999, vals[1], vals[2], 9999, 9999))
            )
        elif kind == "SAT":
            sats = [x for x in st.satellites if x.system in _UBX_GNSS_IDS and x.signal_id == 1]
            body = struct.pack("<IBBH", itow, 1, len(sats), 0)
            for x in sats:
                flags = 0x04 | (0x08 if x.used else 0) | 0x10
                body += struct.pack(
                    "<BBBbhhI",
                    _UBX_GNSS_IDS[x.system],
                    x.svid,
                    x.snr or 0,
                    x.elev if x.elev is not None else -91,
                    x.az if x.az is not None else -1,
                    0,
                    flags,
                )
            out.append(ubx_frame(0x01, 0x35, body))
        elif kind == "TIMEUTC":
            out.append(ubx_frame(0x01, 0x21, struct.pack("<IIiHBBBBBB", itow, 20, ns, y, mo, d, h, mi, s, 0x07)))
        elif kind == "EOE":
            out.append(ubx_frame(0x01, 0x61, struct.pack("<I", itow)))
        else:
            raise ValueError(f"unknown UBX message {kind!r}")
    return out
