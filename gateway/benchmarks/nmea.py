"""NMEA and mixed NMEA + binary corpora, the timed decoders (compiled, twin, pynmea2, pynmeagps),
and the whole `tianwang decode --driver beidou` process against gpsd's `gpsdecode` per corpus shape.

Corpus shapes (SHAPES: name -> writer of a file of about N items; add a shape with one line):
- nmea410: a multi-constellation NMEA 4.10 receiver at 1 Hz (RMC VTG GGA, a GNGSA per constellation,
  GSV per constellation and signal, GLL, ZDA; 22 satellites), the corpus of bench/test_bench_nmea.py;
- mixed-ubx: a dual-band receiver (GGA RMC, two GSA per constellation, GSV for signals 1 and 7/8)
  with UBX NAV-PVT, DOP, SAT, TIMEUTC, EOE before the sentences and 24 bytes of garbage every 8th
  epoch, the file of bench/test_bench_beidou_mixed.py.
"""

from __future__ import annotations

import io
import math
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tianwang.drivers.beidou import nmea_writer as w

CHUNK = 64 * 1024
T0 = 1_751_328_000 * 10**9  # 2025-07-01 00:00:00 UTC


# -- the nmea410 corpus --------------------------------------------------------------------------
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
    """`epochs` epochs of the nmea410 receiver: (bytes, sentences)."""
    sentences = [s for k in range(epochs) for s in WRITER.sentences(epoch_state(k))]
    return b"".join(sentences), len(sentences)


def write_nmea410_file(path, sentences: int) -> int:
    """Exactly `sentences` sentences of the nmea410 receiver into `path`: the number written."""
    n = k = 0
    with open(path, "wb") as f:
        while n < sentences:
            out = WRITER.sentences(epoch_state(k))[: sentences - n]
            f.write(b"".join(out))
            n += len(out)
            k += 1
    return n


# -- the mixed corpora -----------------------------------------------------------------------------
MIXED_WRITER = w.EpochWriter(style="nmea410", order=("GGA", "RMC", "GSA", "GSV"), dual_band=True)


def mixed_state(k: int) -> w.EpochState:
    ang = k / 600.0
    sats = [w.Satellite("GPS", s, 20 + 2 * s, 11 * s % 360, 38 + s % 7, used=s % 5 != 0) for s in (2, 5, 10, 13, 15, 18, 24, 29)]
    sats += [w.Satellite("GLO", s, 25 + s, 23 * s % 360, 35, used=True) for s in (1, 7, 8, 22)]
    sats += [w.Satellite("BDS", s, 15 + s, 13 * s % 360, 40, used=s != 33) for s in (6, 9, 16, 24, 33, 39)]
    return w.EpochState(time_ns=T0 + k * 10**9, lat=30.5928 + 0.02 * math.sin(ang), lon=114.3055 + 0.03 * math.cos(ang),
                        alt_m=23.4, geoid_sep_m=-13.1, speed_mps=11.0, course_deg=(k // 10) % 360, hdop=0.8,
                        pdop=1.4, vdop=1.1, satellites=sats)


def mixed_epoch_bytes(kind: str, k: int, rng: random.Random) -> tuple[bytes, int]:
    """Epoch k of a `casic` or `ubx` mixed receiver: (bytes, frames + sentences)."""
    st = mixed_state(k)
    nmea = MIXED_WRITER.sentences(st)
    if kind == "casic":
        frames = w.casic_epoch(st, 1_000_000 + k * 1000)
        parts = []
        for i in range(max(len(nmea), len(frames))):
            parts += frames[i:i + 1] + nmea[i:i + 1]
    else:
        frames = w.ubx_epoch(st)
        parts = frames + nmea
    if k % 8 == 7:
        parts.append(bytes(rng.choice(b"\xb5\x62\xba\xce$\r\n,*AZ09\x00\xff") for _ in range(24)))
    return b"".join(parts), len(nmea) + len(frames)


def mixed_corpus(kind: str, epochs: int) -> tuple[bytes, int]:
    rng = random.Random(kind)
    out, n = [], 0
    for k in range(epochs):
        data, count = mixed_epoch_bytes(kind, k, rng)
        out.append(data)
        n += count
    return b"".join(out), n


def write_mixed_file(path, epochs: int, kind: str = "ubx") -> int:
    """`epochs` epochs of the mixed receiver into `path`: the frames + sentences written."""
    rng = random.Random(11)
    items = 0
    with open(path, "wb") as f:
        block = []
        for k in range(epochs):
            data, n = mixed_epoch_bytes(kind, k, rng)
            block.append(data)
            items += n
            if len(block) == 1000:
                f.write(b"".join(block))
                block = []
        f.write(b"".join(block))
    return items


# corpus shape -> (writer(path, n) -> items written, what n counts, n at full size)
SHAPES = {
    "nmea410": (write_nmea410_file, "sentences", 1_000_000),
    "mixed-ubx": (lambda path, n: write_mixed_file(path, n, "ubx"), "epochs", 50_000),
}


# -- the timed decoders --------------------------------------------------------------------------
def chunks_of(data: bytes, chunk: int = CHUNK) -> list[bytes]:
    return [data[i:i + chunk] for i in range(0, len(data), chunk)]


def decode_typed(impl, chunks: list[bytes], binary: bool = False) -> int:
    """NmeaDecoder.feed of `impl` over `chunks`: the messages out."""
    dec = impl.NmeaDecoder(binary=True) if binary else impl.NmeaDecoder()
    feed = dec.feed
    n = 0
    for chunk in chunks:
        n += len(feed(chunk))
    return n + len(dec.finish())


def receiver_pipeline(impl, chunks: list[bytes]) -> int:
    """Decoder + epoch assembly + fix payloads (what the driver runs per receiver): the epochs."""
    dec, asm = impl.NmeaDecoder(), impl.EpochAssembler()
    epochs = 0
    for chunk in chunks:
        for item in asm.push(dec.feed(chunk)):
            item.fix_payload()
            epochs += 1
    return epochs + len(asm.flush(final=True))


def decode_pynmea2(data: bytes) -> int:
    import pynmea2

    parse = pynmea2.parse
    return sum(1 for line in data.decode("ascii").split("\r\n") if line and parse(line, check=True))


def decode_pynmeagps(data: bytes) -> int:
    import pynmeagps

    reader = pynmeagps.NMEAReader(io.BytesIO(data), validate=pynmeagps.VALCKSUM)
    return sum(1 for _raw, parsed in reader if parsed is not None)


def peer_versions() -> dict:
    """The peers present: pynmea2 and pynmeagps (their versions), gpsdecode (its path); None when absent."""
    import importlib.metadata

    out = {}
    for name in ("pynmea2", "pynmeagps"):
        try:
            __import__(name)
            out[name] = importlib.metadata.version(name)
        except (ImportError, importlib.metadata.PackageNotFoundError):
            out[name] = None
    out["gpsdecode"] = shutil.which("gpsdecode")
    return out


def best_of(argv, path, rounds: int = 3, cwd=None) -> tuple[list[float], str]:
    """Run `argv` with `path` on stdin `rounds` times: (wall seconds of each run, last stderr)."""
    times = []
    err = ""
    for _ in range(rounds):
        with open(path, "rb") as stdin:
            start = time.perf_counter()
            done = subprocess.run(argv, stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=cwd)
            times.append(time.perf_counter() - start)
        err = done.stderr.decode(errors="replace")
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} exited {done.returncode}: {err.strip()[-300:]}")
    return times, err


TIANWANG_DECODE = [sys.executable, "-m", "tianwang", "decode", "--driver", "beidou", "-"]


def decode_vs_gpsdecode(shape: str, n: int, workdir, rounds: int = 3) -> dict:
    """The whole `tianwang decode --driver beidou -` process against `gpsdecode` on a file of corpus
    `shape` with `n` items (SHAPES), best and median of `rounds` runs each."""
    import statistics

    exe = shutil.which("gpsdecode")
    if exe is None:
        raise FileNotFoundError("gpsdecode")
    writer, unit, _ = SHAPES[shape]
    path = Path(workdir) / f"{shape}.bin"
    items = writer(path, n)
    ours, summary = best_of(TIANWANG_DECODE, path, rounds)
    theirs, _ = best_of([exe], path, rounds)
    size = path.stat().st_size
    path.unlink()
    return {"shape": shape, "unit": unit, "n": n, "items": items, "bytes": size,
            "tianwang_s": min(ours), "tianwang_median_s": statistics.median(ours),
            "gpsdecode_s": min(theirs), "gpsdecode_median_s": statistics.median(theirs),
            "ratio": min(theirs) / min(ours), "summary": summary.strip()[:200]}
