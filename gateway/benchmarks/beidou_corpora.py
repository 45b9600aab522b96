"""The Beidou corpus shapes the benches decode, and the whole-process comparison with gpsd's
`gpsdecode` on each (issues 9 and 11): `tianwang bench` and the pytest benches in bench/ write
them through gateway/benchmarks/nmea.py (SHAPES, decode_vs_gpsdecode).

Shapes (all multi-constellation, 1 Hz, a car driving around Wuhan; nmea_writer builds the bytes):
- "nmea": the NMEA bench corpus: an NMEA 4.10 receiver, RMC VTG GGA, a GNGSA per constellation
  with System ID, GSV per constellation and signal, GLL, ZDA (22 satellites: GPS GLO GAL BDS).
- "many": many sentences per epoch: GGA RMC, two GSA per constellation (dual band) and three GSV
  parts per constellation and signal (9-12 satellites each of GPS GLO GAL BDS): 30 sentences a second.
- "short": few sentences per epoch, so many epochs per sentence: GGA RMC, a GSA each for GPS and
  BDS, two GSV parts for GPS and one for BDS (8 + 4 satellites): 7 sentences a second.
- "mixed-ubx": a dual-band NMEA 4.10 receiver (GGA RMC, two GSA, GSV signals 1 and 7/8) with UBX
  NAV-PVT, NAV-DOP, NAV-SAT, NAV-TIMEUTC, NAV-EOE before the sentences of each epoch.
- "mixed-casic": the same receiver with CASIC NAV-PV, NAV-DOP, NAV-TIMEUTC, NAV-GPSINFO/BDSINFO/
  GLNINFO interleaved with the sentences.
The mixed shapes put 24 bytes of random garbage (sync bytes and `$` included) after 1 epoch in 8.
"""

from __future__ import annotations

import math
import random

from tianwang.drivers.beidou import nmea_writer as w

T0 = 1_751_328_000 * 10**9  # 2025-07-01 00:00:00 UTC
SHAPES = ("nmea", "many", "short", "mixed-ubx", "mixed-casic")
DESCRIPTIONS = {
    "nmea": "NMEA 4.10: RMC VTG GGA GSA GSV GLL ZDA, 4 GNSS, 22 satellites",
    "many": "GGA RMC 2xGSA 3xGSV per GNSS (dual band), 4 GNSS, 44 satellites",
    "short": "GGA RMC 2xGSA 3xGSV per epoch (GPS + BDS), 7 sentences an epoch",
    "mixed-ubx": "dual-band NMEA + UBX NAV-PVT/DOP/SAT/TIMEUTC/EOE, garbage 1 epoch in 8",
    "mixed-casic": "dual-band NMEA + CASIC NAV-PV/DOP/TIMEUTC/*INFO, garbage 1 epoch in 8",
}


def _track(k: int) -> tuple[float, float]:
    ang = k / 600.0
    return 30.5928 + 0.02 * math.sin(ang), 114.3055 + 0.03 * math.cos(ang)


def nmea_state(k: int) -> w.EpochState:
    """Epoch k of the NMEA bench receiver (bench/test_bench_nmea.py)."""
    lat, lon = _track(k)
    sats = [
        w.Satellite("GPS", s, 20 + 2 * s, 11 * s % 360, 38 + s % 7, used=s % 5 != 0)
        for s in (2, 5, 10, 13, 15, 18, 24, 29)
    ]
    sats += [w.Satellite("GPS", s, 20 + 2 * s, 11 * s % 360, 33, signal_id=7, used=False) for s in (5, 13, 24)]
    sats += [w.Satellite("GLO", s, 25 + s, 23 * s % 360, 35, used=True) for s in (1, 7, 8, 22)]
    sats += [w.Satellite("GAL", s, 30 + s, 17 * s % 360, 37, used=True) for s in (3, 13, 26, 31)]
    sats += [w.Satellite("BDS", s, 15 + s, 13 * s % 360, 40, used=s != 33) for s in (6, 9, 16, 24, 33, 39)]
    return w.EpochState(
        time_ns=T0 + k * 10**9,
        lat=lat,
        lon=lon,
        alt_m=23.4,
        geoid_sep_m=-13.1,
        speed_mps=11.0,
        course_deg=(k // 10) % 360,
        hdop=0.8,
        pdop=1.4,
        vdop=1.1,
        satellites=sats,
    )


def many_state(k: int) -> w.EpochState:
    """Epoch k of the many-sentences receiver: 9-12 satellites per constellation (3 GSV parts)."""
    lat, lon = _track(k)
    sats = [
        w.Satellite("GPS", s, 10 + 2 * s, 11 * s % 360, 30 + s % 15, used=s % 4 != 0)
        for s in (1, 2, 5, 7, 10, 13, 15, 18, 21, 24, 29)
    ]
    sats += [
        w.Satellite("GLO", s, 12 + 3 * s, 23 * s % 360, 28 + s % 11, used=s % 3 != 0)
        for s in (1, 3, 7, 8, 11, 14, 17, 20, 22)
    ]
    sats += [
        w.Satellite("GAL", s, 8 + 2 * s, 17 * s % 360, 31 + s % 9, used=s % 5 != 0)
        for s in (3, 5, 8, 11, 13, 19, 21, 24, 26, 31)
    ]
    sats += [
        w.Satellite("BDS", s, 5 + s, 13 * s % 360, 33 + s % 12, used=s % 6 != 0)
        for s in (6, 9, 12, 16, 19, 22, 24, 27, 30, 33, 36, 39)
    ]
    return w.EpochState(
        time_ns=T0 + k * 10**9,
        lat=lat,
        lon=lon,
        alt_m=23.4,
        geoid_sep_m=-13.1,
        speed_mps=11.0,
        course_deg=(k // 10) % 360,
        hdop=0.8,
        pdop=1.4,
        vdop=1.1,
        satellites=sats,
    )


def short_state(k: int) -> w.EpochState:
    """Epoch k of the few-sentences receiver: 8 GPS and 4 BDS satellites."""
    lat, lon = _track(k)
    sats = [
        w.Satellite("GPS", s, 20 + 2 * s, 11 * s % 360, 38 + s % 7, used=s % 5 != 0)
        for s in (2, 5, 10, 13, 15, 18, 24, 29)
    ]
    sats += [w.Satellite("BDS", s, 15 + s, 13 * s % 360, 40, used=s != 33) for s in (6, 9, 24, 33)]
    return w.EpochState(
        time_ns=T0 + k * 10**9,
        lat=lat,
        lon=lon,
        alt_m=23.4,
        geoid_sep_m=-13.1,
        speed_mps=11.0,
        course_deg=(k // 10) % 360,
        hdop=0.8,
        pdop=1.4,
        vdop=1.1,
        satellites=sats,
    )


def mixed_state(k: int) -> w.EpochState:
    """Epoch k of the mixed NMEA + binary receiver (bench/test_bench_beidou_mixed.py)."""
    lat, lon = _track(k)
    sats = [
        w.Satellite("GPS", s, 20 + 2 * s, 11 * s % 360, 38 + s % 7, used=s % 5 != 0)
        for s in (2, 5, 10, 13, 15, 18, 24, 29)
    ]
    sats += [w.Satellite("GLO", s, 25 + s, 23 * s % 360, 35, used=True) for s in (1, 7, 8, 22)]
    sats += [w.Satellite("BDS", s, 15 + s, 13 * s % 360, 40, used=s != 33) for s in (6, 9, 16, 24, 33, 39)]
    return w.EpochState(
        time_ns=T0 + k * 10**9,
        lat=lat,
        lon=lon,
        alt_m=23.4,
        geoid_sep_m=-13.1,
        speed_mps=11.0,
        course_deg=(k // 10) % 360,
        hdop=0.8,
        pdop=1.4,
        vdop=1.1,
        satellites=sats,
    )


NMEA_WRITER = w.EpochWriter(style="nmea410", order=("RMC", "VTG", "GGA", "GSA", "GSV", "GLL", "ZDA"))
MANY_WRITER = w.EpochWriter(style="nmea410", order=("GGA", "RMC", "GSA", "GSV"), dual_band=True)
SHORT_WRITER = w.EpochWriter(style="nmea410", order=("GGA", "RMC", "GSA", "GSV"))
MIXED_WRITER = w.EpochWriter(style="nmea410", order=("GGA", "RMC", "GSA", "GSV"), dual_band=True)


def epoch_bytes(shape: str, k: int, rng: random.Random) -> tuple[bytes, int]:
    """The bytes of epoch k of `shape` and how many sentences and binary frames they hold."""
    if shape == "nmea":
        parts = NMEA_WRITER.sentences(nmea_state(k))
        return b"".join(parts), len(parts)
    if shape == "many":
        parts = MANY_WRITER.sentences(many_state(k))
        return b"".join(parts), len(parts)
    if shape == "short":
        parts = SHORT_WRITER.sentences(short_state(k))
        return b"".join(parts), len(parts)
    st = mixed_state(k)
    nmea = MIXED_WRITER.sentences(st)
    if shape == "mixed-casic":
        frames = w.casic_epoch(st, 1_000_000 + k * 1000)
        parts = []
        for i in range(max(len(nmea), len(frames))):
            parts += frames[i : i + 1] + nmea[i : i + 1]
    elif shape == "mixed-ubx":
        frames = w.ubx_epoch(st)
        parts = frames + nmea
    else:
        raise ValueError(f"unknown corpus shape {shape!r} (have: {', '.join(SHAPES)})")
    if k % 8 == 7:
        parts.append(bytes(rng.choice(b"\xb5\x62\xba\xce$\r\n,*AZ09\x00\xff") for _ in range(24)))
    return b"".join(parts), len(nmea) + len(frames)


_NMEA_ONLY = {
    "nmea": (NMEA_WRITER, nmea_state),
    "many": (MANY_WRITER, many_state),
    "short": (SHORT_WRITER, short_state),
}


def corpus(shape: str, epochs: int, seed=None) -> tuple[bytes, int]:
    """`epochs` epochs of `shape` as one bytes object, and the number of sentences + frames."""
    rng = random.Random(shape if seed is None else seed)
    out, n = [], 0
    for k in range(epochs):
        data, count = epoch_bytes(shape, k, rng)
        out.append(data)
        n += count
    return b"".join(out), n


def write_file(shape: str, path, *, epochs: int | None = None, items: int | None = None, seed=None) -> int:
    """Write `epochs` epochs of `shape` (or, for the NMEA shapes, exactly `items` sentences) to
    `path`; returns the number of sentences + frames written."""
    if (epochs is None) == (items is None):
        raise ValueError("give epochs or items")
    rng = random.Random(shape if seed is None else seed)
    n = 0
    with open(path, "wb") as f:
        block = []
        k = 0
        while (epochs is not None and k < epochs) or (items is not None and n < items):
            if items is not None and shape in _NMEA_ONLY:
                writer, state = _NMEA_ONLY[shape]
                parts = writer.sentences(state(k))[: items - n]
                data, count = b"".join(parts), len(parts)
            else:
                data, count = epoch_bytes(shape, k, rng)
            block.append(data)
            n += count
            k += 1
            if len(block) == 1000:
                f.write(b"".join(block))
                block = []
        f.write(b"".join(block))
    return n
