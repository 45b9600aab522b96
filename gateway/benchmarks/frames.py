"""0x7E framer corpora (JT/T 808 location reports, GB/T 20999 status replies, NTCIP PMPP phase
status) and the timed feed of a corpus through a framer. bench/test_bench_frame7e.py describes them.
"""

from __future__ import annotations

import random

from tianwang.gateway import framing

TWIN = framing.twins()
CHUNK = 64 * 1024
CORPUS_BYTES = 1 << 20
CORPORA = ("jt808", "jt808-escaped", "gbt20999", "pmpp")


def bcd(digits: str) -> bytes:
    return bytes.fromhex(digits)


def jt808_location(rnd: random.Random, phone: str, serial: int, v2019: bool, escaped: bool = False) -> bytes:
    lat = int((39.9 + rnd.uniform(-0.3, 0.3)) * 1e6)
    lon = int((116.4 + rnd.uniform(-0.4, 0.4)) * 1e6)
    if escaped:  # low words 7E7E / 7D7D: four escapes per position
        lat = (lat & 0xFFFF0000) | 0x7E7E
        lon = (lon & 0xFFFF0000) | 0x7D7D
    status = (1 << 1) | (1 << 18) | (1 << 19)  # fixed, GPS and BeiDou used
    month, day = rnd.randint(1, 12), rnd.randint(1, 28)
    t = f"26{month:02d}{day:02d}{rnd.randint(0, 23):02d}{rnd.randint(0, 59):02d}{rnd.randint(0, 59):02d}"
    body = (
        (0).to_bytes(4, "big")
        + status.to_bytes(4, "big")
        + lat.to_bytes(4, "big")
        + lon.to_bytes(4, "big")
        + rnd.randint(20, 120).to_bytes(2, "big")
        + rnd.randint(0, 1200).to_bytes(2, "big")
        + rnd.randint(0, 359).to_bytes(2, "big")
        + bcd(t)
        + b"\x01\x04"
        + rnd.randint(0, 10**7).to_bytes(4, "big")  # mileage, 0.1 km
        + b"\x25\x04"
        + rnd.getrandbits(32).to_bytes(4, "big")  # extended vehicle signal
        + b"\x2b\x04"
        + rnd.getrandbits(32).to_bytes(4, "big")  # analog
        + b"\x30\x01"
        + bytes((rnd.randint(0, 31),))  # wireless signal strength
        + b"\x31\x01"
        + bytes((rnd.randint(4, 30),))  # satellites
    )
    if v2019:
        header = b"\x02\x00" + (len(body) | 0x4000).to_bytes(2, "big") + b"\x01" + bcd("00000000" + phone)
    else:
        header = b"\x02\x00" + len(body).to_bytes(2, "big") + bcd(phone)
    return header + serial.to_bytes(2, "big") + body


def gbt_status_reply(rnd: random.Random, controller: int, seq: int) -> bytes:
    colours = [0x10, 0x20, 0x30, 0x11, 0x21]
    values = [
        (3, 3, 2, bytes(rnd.choice(colours) for _ in range(16))),  # lamp group states
        (6, 3, 0, bytes((rnd.randint(1, 8), 0x20, rnd.randint(0, 60), rnd.randint(0, 60)))),  # stage status
        (13, 2, 2, bytes((0x21,))),  # run mode: local fixed
        (13, 2, 3, bytes((rnd.randint(1, 16),))),  # plan
        (13, 2, 4, bytes((rnd.randint(1, 8),))),  # stage
    ]
    data = bytearray(b"\x01\x01\x01" + controller.to_bytes(4, "big") + b"\x01" + bytes((seq & 0xFF, 0x20, len(values))))
    for i, (cls, obj, attr, value) in enumerate(values, 1):
        data += bytes((i, len(value) + 4, cls, obj, attr, 0)) + value
    return bytes(data)


def pmpp_phase_status(rnd: random.Random, address: int) -> bytes:
    # SNMP get-response carrying phaseStatusGroupReds/Yellows/Greens for group 1 (NTCIP 1202)
    varbinds = b"".join(
        b"\x30\x11\x06\x0c\x2b\x06\x01\x04\x01\x88\x36\x04\x02\x01\x01\x04"
        + bytes((col, 0x01, 0x02, 0x01))
        + bytes((rnd.getrandbits(8),))
        for col in (2, 3, 4)
    )
    pdu = (
        b"\xa2"
        + bytes((len(varbinds) + 11,))
        + b"\x02\x01"
        + bytes((rnd.randint(1, 120),))
        + b"\x02\x01\x00\x02\x01\x00\x30"
        + bytes((len(varbinds),))
        + varbinds
    )
    msg = b"\x30" + bytes((len(pdu) + 13,)) + b"\x02\x01\x00\x04\x06public" + b"\x00\x00" + pdu
    return bytes(((address << 2) | 1, 0x13, 0xC1)) + msg


def build(name: str, size: int = CORPUS_BYTES) -> tuple[list[bytes], int]:
    """Wire frames for a corpus (about `size` bytes) and how many hold an escape."""
    rnd = random.Random(20999 if name == "gbt20999" else 808)
    frames, total, escaped = [], 0, 0
    phones = [f"0139{rnd.randint(0, 10**8 - 1):08d}" for _ in range(500)]
    serial = 0
    while total < size:
        serial += 1
        if name in ("jt808", "jt808-escaped"):
            content = jt808_location(
                rnd, rnd.choice(phones), serial & 0xFFFF, rnd.random() < 0.1, name == "jt808-escaped"
            )
            wire = TWIN.encode_jt808(content)
            escaped += len(wire) != len(content) + 3
        elif name == "gbt20999":
            content = gbt_status_reply(rnd, rnd.randint(1, 10), serial)
            wire = TWIN.encode_gbt20999(content)
            escaped += len(wire) != len(content) + 6
        else:
            content = pmpp_phase_status(rnd, rnd.randint(1, 30))
            wire = TWIN.encode_pmpp(content)
            escaped += len(wire) != len(content) + 4
        frames.append(wire)
        total += len(wire)
    return frames, escaped


FRAMERS = {
    "jt808": lambda impl: impl.Jt808Framer(),
    "jt808-escaped": lambda impl: impl.Jt808Framer(),
    "gbt20999": lambda impl: impl.Gbt20999Framer(),
    "pmpp": lambda impl: impl.PmppFramer(),
}


def chunked(frames: list[bytes], chunk: int = CHUNK) -> list[bytes]:
    data = b"".join(frames)
    return [data[i : i + chunk] for i in range(0, len(data), chunk)]


def feed_all(impl, corpus: str, chunks: list[bytes]) -> int:
    """Feed `chunks` to a fresh framer of `impl` for `corpus`: the number of frames out."""
    framer = FRAMERS[corpus](impl)
    feed = framer.feed
    n = 0
    for chunk in chunks:
        n += len(feed(chunk))
    return n
