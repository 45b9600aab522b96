"""NMEA decoding: the compiled decoder against its twin, pynmea2 and pynmeagps on the same corpus in
the same run; and the whole `tianwang decode --driver beidou` process against gpsd's `gpsdecode` on
the same 1,000,000-sentence file.

Corpus (gateway/benchmarks/beidou_corpora.py, shape "nmea"): a multi-constellation NMEA 4.10 receiver at 1 Hz
(nmea_writer.EpochWriter, style nmea410): RMC VTG GGA, a GNGSA per constellation with System ID, GSV
per constellation and signal, GLL, ZDA; 22 satellites (GPS, GLONASS, Galileo, BDS), a car driving
around Wuhan. 4,000 epochs (about 64,000 sentences) for the peers. The process comparison writes
1,000,000 sentences of each NMEA shape of beidou_corpora: "nmea" (as above), "many" (GGA
RMC, two GSA and three GSV parts per constellation: 30 sentences an epoch) and "short" (GGA RMC, two
GSA, three GSV: 7 sentences an epoch, so the most epochs, fixes and skies per sentence).

What each one does per sentence (all verify the checksum):
- cext / python: NmeaDecoder.feed over 64 KiB chunks -> typed messages, every field parsed to
  ints/floats (positions in signed degrees, times in ns).
- pynmea2: split into lines, pynmea2.parse(line, check=True); times, qualities and altitudes are
  converted, positions stay strings until read.
- pynmeagps: NMEAReader over the bytes (validate=VALCKSUM), every field converted.

Targets (docs/architecture.md, performance targets): >= 2,000,000 sentences/s decoded to typed fields; `tianwang decode`
>= 3x faster than gpsdecode, whole process (issue 9: >= 5x on every corpus shape). The module
prints a table with USING_CEXT, the Python version and the CPU at the end.
"""

from __future__ import annotations

import shutil

import pynmea2  # noqa: F401  bench extras: pip install -e '.[bench]'
import pynmeagps  # noqa: F401
import pytest

import benchreport
from tianwang.gateway.benchmarks.nmea import (
    SHAPES,
    chunks_of,
    corpus_bytes,
    decode_pynmea2,
    decode_pynmeagps,
    decode_typed,
    decode_vs_gpsdecode,
    receiver_pipeline,
)

RESULTS: dict[str, tuple[str, float]] = {}  # name -> ("sentences/s" | "s" | "x", value)


@pytest.fixture(scope="module")
def corpus():
    return corpus_bytes(4000)


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
    got = benchmark.pedantic(
        decode_typed,
        args=(impl, chunks_of(data)),
        rounds=3 if impl.NAME == "python" else 30,
        iterations=1,
        warmup_rounds=1,
    )
    assert got == count
    record(benchmark, impl.NAME, count)


def test_decode_pynmea2(benchmark, corpus):
    data, count = corpus
    assert benchmark.pedantic(decode_pynmea2, args=(data,), rounds=3, iterations=1, warmup_rounds=0) == count
    record(benchmark, "pynmea2", count)


def test_decode_pynmeagps(benchmark, corpus):
    data, count = corpus
    assert benchmark.pedantic(decode_pynmeagps, args=(data,), rounds=3, iterations=1, warmup_rounds=0) == count
    record(benchmark, "pynmeagps", count)


def test_receiver_pipeline(benchmark, impl, corpus):
    # decoder + epoch assembly + fix payloads: what the driver runs per receiver
    data, count = corpus
    assert (
        benchmark.pedantic(
            receiver_pipeline,
            args=(impl, chunks_of(data)),
            rounds=3 if impl.NAME == "python" else 20,
            iterations=1,
            warmup_rounds=1,
        )
        == 4000
    )
    record(benchmark, f"{impl.NAME} decode+epochs+fix payloads", count)


@pytest.mark.timeout(900)
@pytest.mark.parametrize("shape", ["nmea", "many", "short"])
def test_tianwang_decode_vs_gpsdecode(benchmark, tmp_path, shape):
    # the whole process on 1,000,000 sentences of each shape, stdin from the file and stdout
    # discarded for both, best of 3 each
    if shutil.which("gpsdecode") is None:
        pytest.fail("gpsdecode is not installed: `make tools` (Debian package gpsd-clients)")
    _, _, n = SHAPES[shape]
    r = decode_vs_gpsdecode(shape, n, tmp_path)
    assert r["items"] == n and f"{n} frames" in r["summary"]
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    benchmark.extra_info.update(
        {
            "tianwang_s": round(r["tianwang_s"], 3),
            "gpsdecode_s": round(r["gpsdecode_s"], 3),
            "speedup": round(r["ratio"], 2),
            "sentences": n,
            "shape": shape,
        }
    )
    RESULTS[f"tianwang decode, 1M sentences, {shape}"] = ("s", r["tianwang_s"])
    RESULTS[f"gpsdecode, 1M sentences, {shape}"] = ("s", r["gpsdecode_s"])
    RESULTS[f"tianwang decode speed-up, {shape}"] = ("x", r["ratio"])
    benchreport.add(
        "tianwang decode vs gpsdecode (whole process)",
        f"{shape:<12}{r['description']:<70}{r['tianwang_s']:>7.2f} s {r['gpsdecode_s']:>7.2f} s {r['ratio']:>6.2f}x",
    )
