"""NMEA decoding: the compiled decoder against its twin, pynmea2 and pynmeagps on the same corpus in
the same run; and the whole `tianwang decode --driver beidou` process against gpsd's `gpsdecode` on
the same 1,000,000-sentence file.

Corpus: a multi-constellation NMEA 4.10 receiver at 1 Hz (nmea_writer.EpochWriter, style nmea410):
RMC VTG GGA, a GNGSA per constellation with System ID, GSV per constellation and signal, GLL, ZDA;
22 satellites (GPS, GLONASS, Galileo, BDS), a car driving around Wuhan. 4,000 epochs (about 64,000
sentences) for the peers; the process comparison writes 1,000,000 sentences of the same kind.

What each one does per sentence (all verify the checksum):
- cext / python: NmeaDecoder.feed over 64 KiB chunks -> typed messages, every field parsed to
  ints/floats (positions in signed degrees, times in ns).
- pynmea2: split into lines, pynmea2.parse(line, check=True); times, qualities and altitudes are
  converted, positions stay strings until read.
- pynmeagps: NMEAReader over the bytes (validate=VALCKSUM), every field converted.

Targets (docs/architecture.md, performance targets): >= 2,000,000 sentences/s decoded to typed fields; `tianwang decode`
>= 3x faster than gpsdecode, whole process. The module prints a table with USING_CEXT, the Python
version and the CPU at the end.
"""

from __future__ import annotations

import io
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pynmea2  # bench extras: pip install -e '.[bench]'
import pynmeagps
import benchreport
import pytest

from tianwang.drivers.beidou import nmea_writer as w

CHUNK = 64 * 1024
ROOT = Path(__file__).resolve().parents[1]
RESULTS: dict[str, tuple[str, float]] = {}  # name -> ("sentences/s" | "s" | "x", value)
T0 = 1_751_328_000 * 10**9  # 2025-07-01 00:00:00 UTC


def epoch_state(k: int) -> w.EpochState:
    ang = k / 600.0
    sats = [w.Satellite("GPS", s, 20 + 2 * s, 11 * s % 360, 38 + s % 7, used=s % 5 != 0) for s in (2, 5, 10, 13, 15, 18, 24, 29)]
    sats += [w.Satellite("GPS", s, 20 + 2 * s, 11 * s % 360, 33, signal_id=7, used=False) for s in (5, 13, 24)]
    sats += [w.Satellite("GLO", s, 25 + s, 23 * s % 360, 35, used=True) for s in (1, 7, 8, 22)]
    sats += [w.Satellite("GAL", s, 30 + s, 17 * s % 360, 37, used=True) for s in (3, 13, 26, 31)]
    sats += [w.Satellite("BDS", s, 15 + s, 13 * s % 360, 40, used=s != 33) for s in (6, 9, 16, 24, 33, 39)]
    return w.EpochState(time_ns=T0 + k * 10**9, lat=30.5928 + 0.02 * math.sin(ang), lon=114.3055 + 0.03 * math.cos(ang),
                        alt_m=23.4, geoid_sep_m=-13.1, speed_mps=11.0, course_deg=(k // 10) % 360, hdop=0.8, pdop=1.4,
                        vdop=1.1, satellites=sats)


WRITER = w.EpochWriter(style="nmea410", order=("RMC", "VTG", "GGA", "GSA", "GSV", "GLL", "ZDA"))


def corpus_bytes(epochs: int) -> tuple[bytes, int]:
    sentences = [s for k in range(epochs) for s in WRITER.sentences(epoch_state(k))]
    return b"".join(sentences), len(sentences)


@pytest.fixture(scope="module")
def corpus():
    return corpus_bytes(4000)


@pytest.fixture(scope="module")
def million_file(tmp_path_factory):
    """1,000,000 sentences of the same receiver in a file (about 75 MB)."""
    path = tmp_path_factory.mktemp("nmea") / "million.nmea"
    per_epoch = len(WRITER.sentences(epoch_state(0)))
    n = 0
    with open(path, "wb") as f:
        k = 0
        while n < 1_000_000:
            sentences = WRITER.sentences(epoch_state(k))[: 1_000_000 - n]
            f.write(b"".join(sentences))
            n += len(sentences)
            k += 1
    assert n == 1_000_000 and per_epoch > 10
    return path


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    base = RESULTS.get("cext")
    for name, (unit, value) in RESULTS.items():
        if unit == "sentences/s":
            rel = f"  ({value / base[1]:.3f} of cext)" if base and name != "cext" else ""
            benchreport.add("NMEA decode", f"{name:<36}{value:>14,.0f} sentences/s{rel}")
        elif unit == "s":
            benchreport.add("NMEA decode", f"{name:<36}{value:>14.2f} s")
        else:
            benchreport.add("NMEA decode", f"{name:<36}{value:>14.2f}x")


def record(benchmark, name, count):
    seconds = benchmark.stats.stats.median
    benchmark.extra_info.update({"sentences": count, "sentences_per_s": round(count / seconds)})
    RESULTS[name] = ("sentences/s", count / seconds)


# ---------------------------------------------------------------------------------------------


def test_decode_typed(benchmark, impl, corpus):
    data, count = corpus
    chunks = [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)]

    def decode_all():
        dec = impl.NmeaDecoder()
        feed = dec.feed
        n = 0
        for chunk in chunks:
            n += len(feed(chunk))
        return n + len(dec.finish())

    got = benchmark.pedantic(decode_all, rounds=3 if impl.NAME == "python" else 30, iterations=1, warmup_rounds=1)
    assert got == count
    record(benchmark, impl.NAME, count)


def test_decode_pynmea2(benchmark, corpus):
    data, count = corpus

    def decode_all():
        parse = pynmea2.parse
        return sum(1 for line in data.decode("ascii").split("\r\n") if line and parse(line, check=True))

    assert benchmark.pedantic(decode_all, rounds=3, iterations=1, warmup_rounds=0) == count
    record(benchmark, "pynmea2", count)


def test_decode_pynmeagps(benchmark, corpus):
    data, count = corpus

    def decode_all():
        reader = pynmeagps.NMEAReader(io.BytesIO(data), validate=pynmeagps.VALCKSUM)
        return sum(1 for _raw, parsed in reader if parsed is not None)

    assert benchmark.pedantic(decode_all, rounds=3, iterations=1, warmup_rounds=0) == count
    record(benchmark, "pynmeagps", count)


def test_receiver_pipeline(benchmark, impl, corpus):
    # decoder + epoch assembly + fix payloads: what the driver runs per receiver
    data, count = corpus
    chunks = [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)]

    def run():
        dec, asm = impl.NmeaDecoder(), impl.EpochAssembler()
        epochs = 0
        for chunk in chunks:
            for item in asm.push(dec.feed(chunk)):
                item.fix_payload()
                epochs += 1
        return epochs + len(asm.flush(final=True))

    assert benchmark.pedantic(run, rounds=3 if impl.NAME == "python" else 20, iterations=1, warmup_rounds=1) == 4000
    record(benchmark, f"{impl.NAME} decode+epochs+fix payloads", count)


def best_of(argv, stdin_path, rounds=3):
    times = []
    for _ in range(rounds):
        with open(stdin_path, "rb") as stdin:
            start = time.perf_counter()
            done = subprocess.run(argv, stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
            times.append(time.perf_counter() - start)
        assert done.returncode == 0, done.stderr.decode()
    return min(times), done.stderr.decode()


def test_tianwang_decode_vs_gpsdecode(benchmark, million_file):
    exe = shutil.which("gpsdecode")
    if exe is None:
        pytest.fail("gpsdecode is not installed: `apt-get install -y gpsd-clients`")
    ours, summary = best_of([sys.executable, "-m", "tianwang", "decode", "--driver", "beidou", "-"], million_file)
    assert "1000000 frames" in summary
    theirs, _ = best_of([exe], million_file)
    # the benchmark fixture times one more run of ours, for the JSON record
    benchmark.pedantic(lambda: best_of([sys.executable, "-m", "tianwang", "decode", "--driver", "beidou", "-"],
                                       million_file, rounds=1), rounds=1, iterations=1)
    ratio = theirs / ours
    benchmark.extra_info.update({"tianwang_s": round(ours, 3), "gpsdecode_s": round(theirs, 3),
                                 "speedup": round(ratio, 2), "sentences": 1_000_000})
    RESULTS["tianwang decode, 1M sentences"] = ("s", ours)
    RESULTS["gpsdecode, 1M sentences"] = ("s", theirs)
    RESULTS["tianwang decode speed-up"] = ("x", ratio)
