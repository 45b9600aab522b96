"""Mixed NMEA + binary streams (issue 11): the compiled hot path against its twin, and the whole
`tianwang decode --driver beidou` process against gpsd's `gpsdecode` on the same mixed file.

Corpora (nmea_writer): a dual-band NMEA 4.10 receiver at 1 Hz (GGA RMC, two GSA per constellation,
GSV for signals 1 and 7/8) with, per epoch,
- casic: CASIC NAV-PV, NAV-DOP, NAV-TIMEUTC, NAV-GPSINFO/BDSINFO interleaved with the sentences;
- ubx: UBX NAV-PVT, NAV-DOP, NAV-SAT, NAV-TIMEUTC, NAV-EOE before the sentences;
and 1 in 8 epochs carries 24 bytes of random garbage (sync bytes and `$` included).

The corpora are the "mixed-casic" and "mixed-ubx" shapes of gateway/benchmarks/beidou_corpora.py.

Measured: NmeaDecoder(binary=True) alone (frames + sentences per second, MB/s), BinaryAssembler
alone (the NAV decoding: frames and epochs per second) and the receiver protocol (decoder + NMEA and
binary epochs + the choice of source + payloads: epochs per second), each on the compiled hot path
and on the twin. Then 50,000 epochs of each corpus in a file, decoded by
`tianwang decode --driver beidou -` and by `gpsdecode` (best of 3 each).
Target (issue 11): `tianwang decode` still >= 5x faster than gpsdecode on the mixed file.
"""

from __future__ import annotations

import shutil

import pytest

import benchreport
from tianwang.drivers.beidou.receiver import ReceiverProtocol
from tianwang.gateway.benchmarks.nmea import chunks_of, decode_typed, decode_vs_gpsdecode, mixed_corpus as corpus

SECTION = "mixed NMEA + binary"
EPOCHS_FILE = 50_000


@pytest.fixture(scope="module", params=["casic", "ubx"])
def mixed(request):
    data, count = corpus(request.param, 3000)
    return request.param, data, count


def test_mixed_stream_framing(benchmark, impl, mixed):
    kind, data, count = mixed
    got = benchmark.pedantic(
        decode_typed,
        args=(impl, chunks_of(data), True),
        rounds=3 if impl.NAME == "python" else 10,
        iterations=1,
        warmup_rounds=1,
    )
    # every frame and sentence, plus the odd checksum-less `$...` line the garbage makes
    assert count <= got <= count + 3000 // 8
    s = benchmark.stats.stats.median
    benchreport.add(
        SECTION,
        f"{impl.NAME:<7}{kind:<6}NmeaDecoder(binary=True) {count / s:>12,.0f} frames+sentences/s "
        f"{len(data) / s / 1e6:>7.1f} MB/s",
    )


def test_mixed_stream_receiver(benchmark, impl, mixed):
    kind, data, count = mixed
    chunks = chunks_of(data)

    def run():
        p = ReceiverProtocol("bench", implementation=impl, sky_decimation=0)
        fixes = 0
        for chunk in chunks:
            fixes += sum(1 for x in p.feed(chunk, None) if x.channel == "fix")
        return fixes + sum(1 for x in p.finish(None) if x.channel == "fix"), p

    fixes, p = benchmark.pedantic(run, rounds=3 if impl.NAME == "python" else 5, iterations=1, warmup_rounds=0)
    assert fixes == 3000 and p.superseded >= 2990
    s = benchmark.stats.stats.median
    benchreport.add(
        SECTION,
        f"{impl.NAME:<7}{kind:<6}receiver (fixes from {kind}) {3000 / s:>12,.0f} epochs/s "
        f"{count / s:>12,.0f} frames+sentences/s",
    )


def test_mixed_stream_binary_assembler(benchmark, impl, mixed):
    # the NAV decoding alone: the stream's binary frames through BinaryAssembler
    kind, data, _ = mixed
    dec = impl.NmeaDecoder(binary=True)
    frames = [m for m in dec.feed(data) + dec.finish() if type(m) is impl.BinaryFrame]

    def run():
        a = impl.BinaryAssembler(kind)
        push = a.push
        n = 0
        for f in frames:
            n += len(push(f))
        return n + len(a.flush(final=True))

    got = benchmark.pedantic(run, rounds=3 if impl.NAME == "python" else 10, iterations=1, warmup_rounds=1)
    assert got == 3000
    s = benchmark.stats.stats.median
    benchreport.add(
        SECTION,
        f"{impl.NAME:<7}{kind:<6}BinaryAssembler {len(frames) / s:>12,.0f} frames/s {3000 / s:>12,.0f} epochs/s",
    )


@pytest.mark.timeout(900)
@pytest.mark.parametrize("kind", ["ubx", "casic"])
def test_tianwang_decode_vs_gpsdecode_mixed(benchmark, tmp_path, kind):
    if shutil.which("gpsdecode") is None:
        pytest.fail("gpsdecode is not installed: `make tools` (Debian package gpsd-clients)")
    shape = f"mixed-{kind}"
    r = decode_vs_gpsdecode(shape, EPOCHS_FILE, tmp_path)
    items = r["items"]
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    benchmark.extra_info.update(
        {
            "tianwang_s": round(r["tianwang_s"], 3),
            "gpsdecode_s": round(r["gpsdecode_s"], 3),
            "speedup": round(r["ratio"], 2),
            "bytes": r["bytes"],
            "frames_and_sentences": items,
            "shape": shape,
        }
    )
    benchreport.add(
        SECTION,
        f"mixed file ({kind}): {EPOCHS_FILE:,} epochs, {items:,} {kind.upper()} frames + NMEA "
        f"sentences, {r['bytes'] / 1e6:.0f} MB",
    )
    benchreport.add(
        SECTION,
        f"tianwang decode --driver beidou {r['tianwang_s']:>8.2f} s   gpsdecode "
        f"{r['gpsdecode_s']:>8.2f} s   speed-up {r['ratio']:.2f}x",
    )
    benchreport.add(SECTION, f"tianwang decode summary: {r['summary'][:160]}")
    benchreport.add(
        "tianwang decode vs gpsdecode (whole process)",
        f"{shape:<12}{r['description']:<70}{r['tianwang_s']:>7.2f} s {r['gpsdecode_s']:>7.2f} s {r['ratio']:>6.2f}x",
    )
