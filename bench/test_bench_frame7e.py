"""0x7E framers: compiled against the pure-Python twin on the same corpora, in the same run.

Corpora (about 1 MiB each, built once per session from a fixed seed):
- jt808: 0x0200 location reports (2013 headers, a tenth 2019) from 500 terminals: alarm, status,
  lat/lon around Beijing, altitude, speed, heading, BCD time, then TLV extras 01 mileage, 25 vehicle
  signal, 2B analog, 30 signal strength, 31 satellites. One frame in seven carries a 7D/7E escape,
  as random position bytes do.
- jt808-escaped: the same, but every position word holds 7E and 7D bytes (a vehicle parked where
  they occur, as in tests/captures/jt808): every frame takes the unescaping path.
- gbt20999: query replies to a status poll (16 lamp group states, stage status, run mode, plan,
  stage) from controllers on a shared line, majority profile, 0x5C escaping.
- pmpp: NTCIP 1202 phase status group get-responses in PMPP frames.

Each corpus is fed in 64 KiB chunks (a bulk read: a capture, a busy serial line) and, for jt808, one
frame per feed (what one terminal's TCP read usually holds). Target (docs/architecture.md, performance targets): >= 300 MB/s
and >= 30x the twin. The module prints MB/s, frames/s and the compiled/twin ratio at the end, with
USING_CEXT, the Python version and the CPU.
"""

from __future__ import annotations

import random

import benchreport
import pytest

from tianwang.gateway import framing

TWIN = framing.twins()
CHUNK = 64 * 1024
CORPUS_BYTES = 1 << 20
RESULTS: dict[tuple[str, str], tuple[float, int, int]] = {}  # (corpus, impl) -> (seconds, bytes, frames)


def bcd(digits: str) -> bytes:
    return bytes.fromhex(digits)


def jt808_location(rnd: random.Random, phone: str, serial: int, v2019: bool, escaped: bool = False) -> bytes:
    lat = int((39.9 + rnd.uniform(-0.3, 0.3)) * 1e6)
    lon = int((116.4 + rnd.uniform(-0.4, 0.4)) * 1e6)
    if escaped:  # low words 7E7E / 7D7D: four escapes per position
        lat = (lat & 0xFFFF0000) | 0x7E7E
        lon = (lon & 0xFFFF0000) | 0x7D7D
    status = (1 << 1) | (1 << 18) | (1 << 19)  # fixed, GPS and BeiDou used
    t = f"26{rnd.randint(1, 12):02d}{rnd.randint(1, 28):02d}{rnd.randint(0, 23):02d}{rnd.randint(0, 59):02d}{rnd.randint(0, 59):02d}"
    body = (
        (0).to_bytes(4, "big")
        + status.to_bytes(4, "big")
        + lat.to_bytes(4, "big")
        + lon.to_bytes(4, "big")
        + rnd.randint(20, 120).to_bytes(2, "big")
        + rnd.randint(0, 1200).to_bytes(2, "big")
        + rnd.randint(0, 359).to_bytes(2, "big")
        + bcd(t)
        + b"\x01\x04" + rnd.randint(0, 10**7).to_bytes(4, "big")  # mileage, 0.1 km
        + b"\x25\x04" + rnd.getrandbits(32).to_bytes(4, "big")  # extended vehicle signal
        + b"\x2b\x04" + rnd.getrandbits(32).to_bytes(4, "big")  # analog
        + b"\x30\x01" + bytes((rnd.randint(0, 31),))  # wireless signal strength
        + b"\x31\x01" + bytes((rnd.randint(4, 30),))  # satellites
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
        b"\x30\x11\x06\x0c\x2b\x06\x01\x04\x01\x88\x36\x04\x02\x01\x01\x04" + bytes((col, 0x01, 0x02, 0x01))
        + bytes((rnd.getrandbits(8),)) for col in (2, 3, 4)
    )
    pdu = b"\xa2" + bytes((len(varbinds) + 11,)) + b"\x02\x01" + bytes((rnd.randint(1, 120),)) + b"\x02\x01\x00\x02\x01\x00\x30" + bytes((len(varbinds),)) + varbinds
    msg = b"\x30" + bytes((len(pdu) + 13,)) + b"\x02\x01\x00\x04\x06public" + b"\x00\x00" + pdu
    return bytes(((address << 2) | 1, 0x13, 0xC1)) + msg


def build(name: str) -> tuple[list[bytes], int]:
    """Wire frames for a corpus (about CORPUS_BYTES) and how many hold an escape."""
    rnd = random.Random(20999 if name == "gbt20999" else 808)
    frames, size, escaped = [], 0, 0
    phones = [f"0139{rnd.randint(0, 10**8 - 1):08d}" for _ in range(500)]
    serial = 0
    while size < CORPUS_BYTES:
        serial += 1
        if name in ("jt808", "jt808-escaped"):
            content = jt808_location(rnd, rnd.choice(phones), serial & 0xFFFF, rnd.random() < 0.1,
                                     name == "jt808-escaped")
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
        size += len(wire)
    return frames, escaped


@pytest.fixture(scope="module")
def corpora():
    return {name: build(name) for name in ("jt808", "jt808-escaped", "gbt20999", "pmpp")}


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    section = "0x7E framers"
    benchreport.add(section, f"{'corpus':<22}{'impl':<8}{'MB/s':>10}{'frames/s':>14}{'vs twin':>10}")
    for (corpus, name), (seconds, nbytes, nframes) in sorted(RESULTS.items()):
        twin = RESULTS.get((corpus, "python"))
        ratio = f"{twin[0] / seconds:.1f}x" if twin and name != "python" else ""
        benchreport.add(section, f"{corpus:<22}{name:<8}{nbytes / seconds / 1e6:>10.1f}{nframes / seconds:>14,.0f}{ratio:>10}")


FRAMERS = {
    "jt808": lambda impl: impl.Jt808Framer(),
    "jt808-escaped": lambda impl: impl.Jt808Framer(),
    "gbt20999": lambda impl: impl.Gbt20999Framer(),
    "pmpp": lambda impl: impl.PmppFramer(),
}


def run_bench(benchmark, impl, corpus: str, chunks: list[bytes], nframes: int, label: str):
    nbytes = sum(len(c) for c in chunks)

    def feed_all():
        framer = FRAMERS[corpus](impl)
        feed = framer.feed
        n = 0
        for chunk in chunks:
            n += len(feed(chunk))
        return n

    # the twin is slow: fewer rounds keep the run short; each round is the whole corpus either way
    rounds = 3 if impl.NAME == "python" else 30
    got = benchmark.pedantic(feed_all, rounds=rounds, iterations=1, warmup_rounds=1)
    assert got == nframes  # every frame of the corpus came out
    seconds = benchmark.stats.stats.median
    benchmark.extra_info.update(
        {"corpus": label, "bytes": nbytes, "frames": nframes, "MB_per_s": round(nbytes / seconds / 1e6, 1),
         "frames_per_s": round(nframes / seconds)}
    )
    RESULTS[(label, impl.NAME)] = (seconds, nbytes, nframes)


@pytest.mark.parametrize("corpus", ["jt808", "jt808-escaped", "gbt20999", "pmpp"])
def test_framer_bulk(benchmark, impl, corpora, corpus):
    frames, escaped = corpora[corpus]
    data = b"".join(frames)
    chunks = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]
    benchmark.extra_info["frames_with_escapes"] = escaped
    run_bench(benchmark, impl, corpus, chunks, len(frames), f"{corpus} 64KiB")


def test_jt808_one_frame_per_feed(benchmark, impl, corpora):
    frames, _ = corpora["jt808"]
    run_bench(benchmark, impl, "jt808", frames, len(frames), "jt808 frame/feed")


@pytest.mark.parametrize("encoder", ["jt808", "gbt20999"])
def test_encoder(benchmark, impl, encoder):
    rnd = random.Random(1)
    if encoder == "jt808":
        contents = [jt808_location(rnd, "013912345678", i, False) for i in range(2000)]
        encode = impl.encode_jt808
    else:
        contents = [gbt_status_reply(rnd, 1, i) for i in range(2000)]
        encode = impl.encode_gbt20999

    def encode_all():
        return sum(len(encode(c)) for c in contents)

    rounds = 3 if impl.NAME == "python" else 30
    benchmark.pedantic(encode_all, rounds=rounds, iterations=1, warmup_rounds=1)
    seconds = benchmark.stats.stats.median
    RESULTS[(f"encode {encoder}", impl.NAME)] = (seconds, sum(len(c) for c in contents), len(contents))
