"""Mixed NMEA + binary streams (issue 11): the compiled hot path against its twin, and the whole
`tianwang decode --driver beidou` process against gpsd's `gpsdecode` on the same mixed file.

Corpora (nmea_writer): a dual-band NMEA 4.10 receiver at 1 Hz (GGA RMC, two GSA per constellation,
GSV for signals 1 and 7/8) with, per epoch,
- casic: CASIC NAV-PV, NAV-DOP, NAV-TIMEUTC, NAV-GPSINFO/BDSINFO interleaved with the sentences;
- ubx: UBX NAV-PVT, NAV-DOP, NAV-SAT, NAV-TIMEUTC, NAV-EOE before the sentences;
and 1 in 8 epochs carries 24 bytes of random garbage (sync bytes and `$` included).

Measured: NmeaDecoder(binary=True) alone (frames + sentences per second, MB/s) and the receiver
protocol (decoder + NMEA and binary epochs + the choice of source + payloads: epochs per second),
each on the compiled decoder and on the twin. Then 50,000 epochs of the ubx corpus in a file,
decoded by `tianwang decode --driver beidou -` and by `gpsdecode` (best of 3 each).
Target (issue 11): `tianwang decode` still >= 5x faster than gpsdecode on the mixed file.
"""

from __future__ import annotations

import math
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import benchreport
import pytest

from tianwang.drivers.beidou import nmea_writer as w
from tianwang.drivers.beidou.receiver import ReceiverProtocol

CHUNK = 64 * 1024
ROOT = Path(__file__).resolve().parents[1]
T0 = 1_751_328_000 * 10**9  # 2025-07-01 00:00:00 UTC
SECTION = "mixed NMEA + binary"
EPOCHS_FILE = 50_000
WRITER = w.EpochWriter(style="nmea410", order=("GGA", "RMC", "GSA", "GSV"), dual_band=True)


def state(k: int) -> w.EpochState:
    ang = k / 600.0
    sats = [w.Satellite("GPS", s, 20 + 2 * s, 11 * s % 360, 38 + s % 7, used=s % 5 != 0) for s in (2, 5, 10, 13, 15, 18, 24, 29)]
    sats += [w.Satellite("GLO", s, 25 + s, 23 * s % 360, 35, used=True) for s in (1, 7, 8, 22)]
    sats += [w.Satellite("BDS", s, 15 + s, 13 * s % 360, 40, used=s != 33) for s in (6, 9, 16, 24, 33, 39)]
    return w.EpochState(time_ns=T0 + k * 10**9, lat=30.5928 + 0.02 * math.sin(ang), lon=114.3055 + 0.03 * math.cos(ang),
                        alt_m=23.4, geoid_sep_m=-13.1, speed_mps=11.0, course_deg=(k // 10) % 360, hdop=0.8,
                        pdop=1.4, vdop=1.1, satellites=sats)


def epoch_bytes(kind: str, k: int, rng: random.Random) -> tuple[bytes, int]:
    st = state(k)
    nmea = WRITER.sentences(st)
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


def corpus(kind: str, epochs: int) -> tuple[bytes, int]:
    rng = random.Random(kind)
    out, n = [], 0
    for k in range(epochs):
        data, count = epoch_bytes(kind, k, rng)
        out.append(data)
        n += count
    return b"".join(out), n


@pytest.fixture(scope="module", params=["casic", "ubx"])
def mixed(request):
    data, count = corpus(request.param, 3000)
    return request.param, data, count


def test_mixed_stream_framing(benchmark, impl, mixed):
    kind, data, count = mixed
    chunks = [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)]

    def run():
        dec = impl.NmeaDecoder(binary=True)
        n = 0
        for chunk in chunks:
            n += len(dec.feed(chunk))
        return n + len(dec.finish())

    got = benchmark.pedantic(run, rounds=3 if impl.NAME == "python" else 10, iterations=1, warmup_rounds=1)
    # every frame and sentence, plus the odd checksum-less `$...` line the garbage makes
    assert count <= got <= count + 3000 // 8
    s = benchmark.stats.stats.median
    benchreport.add(SECTION, f"{impl.NAME:<7}{kind:<6}NmeaDecoder(binary=True) {count / s:>12,.0f} frames+sentences/s "
                             f"{len(data) / s / 1e6:>7.1f} MB/s")


def test_mixed_stream_receiver(benchmark, impl, mixed):
    kind, data, count = mixed
    chunks = [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)]

    def run():
        p = ReceiverProtocol("bench", implementation=impl, sky_decimation=0)
        fixes = 0
        for chunk in chunks:
            fixes += sum(1 for x in p.feed(chunk, None) if x.channel == "fix")
        return fixes + sum(1 for x in p.finish(None) if x.channel == "fix"), p

    fixes, p = benchmark.pedantic(run, rounds=3 if impl.NAME == "python" else 5, iterations=1, warmup_rounds=0)
    assert fixes == 3000 and p.superseded >= 2990
    s = benchmark.stats.stats.median
    benchreport.add(SECTION, f"{impl.NAME:<7}{kind:<6}receiver (fixes from {kind}) {3000 / s:>12,.0f} epochs/s "
                             f"{count / s:>12,.0f} frames+sentences/s")


def best_of(argv, path, rounds=3):
    times = []
    for _ in range(rounds):
        with open(path, "rb") as stdin:
            start = time.perf_counter()
            done = subprocess.run(argv, stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
            times.append(time.perf_counter() - start)
        assert done.returncode == 0, done.stderr.decode()
    return min(times), done.stderr.decode()


@pytest.mark.timeout(900)
def test_tianwang_decode_vs_gpsdecode_mixed(benchmark, tmp_path):
    exe = shutil.which("gpsdecode")
    if exe is None:
        pytest.fail("gpsdecode is not installed: `make tools` (Debian package gpsd-clients)")
    path = tmp_path / "mixed_ubx.bin"
    rng = random.Random(11)
    items = 0
    with open(path, "wb") as f:
        block = []
        for k in range(EPOCHS_FILE):
            data, n = epoch_bytes("ubx", k, rng)
            block.append(data)
            items += n
            if len(block) == 1000:
                f.write(b"".join(block))
                block = []
        f.write(b"".join(block))
    ours, summary = best_of([sys.executable, "-m", "tianwang", "decode", "--driver", "beidou", "-"], path)
    theirs, _ = best_of([exe], path)
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    ratio = theirs / ours
    benchmark.extra_info.update({"tianwang_s": round(ours, 3), "gpsdecode_s": round(theirs, 3), "speedup": round(ratio, 2),
                                 "bytes": path.stat().st_size, "frames_and_sentences": items})
    benchreport.add(SECTION, f"mixed file: {EPOCHS_FILE:,} epochs, {items:,} UBX frames + NMEA sentences, "
                             f"{path.stat().st_size / 1e6:.0f} MB")
    benchreport.add(SECTION, f"tianwang decode --driver beidou {ours:>8.2f} s   gpsdecode {theirs:>8.2f} s   "
                             f"speed-up {ratio:.2f}x")
    benchreport.add(SECTION, f"tianwang decode summary: {summary.strip()[:160]}")
