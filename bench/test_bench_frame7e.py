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

import pytest

import benchreport
from tianwang.gateway.benchmarks.frames import CORPORA, build, chunked, feed_all, gbt_status_reply, jt808_location

RESULTS: dict[tuple[str, str], tuple[float, int, int]] = {}  # (corpus, impl) -> (seconds, bytes, frames)


@pytest.fixture(scope="module")
def corpora():
    return {name: build(name) for name in CORPORA}


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    section = "0x7E framers"
    benchreport.add(section, f"{'corpus':<22}{'impl':<8}{'MB/s':>10}{'frames/s':>14}{'vs twin':>10}")
    for (corpus, name), (seconds, nbytes, nframes) in sorted(RESULTS.items()):
        twin = RESULTS.get((corpus, "python"))
        ratio = f"{twin[0] / seconds:.1f}x" if twin and name != "python" else ""
        benchreport.add(
            section, f"{corpus:<22}{name:<8}{nbytes / seconds / 1e6:>10.1f}{nframes / seconds:>14,.0f}{ratio:>10}"
        )


def run_bench(benchmark, impl, corpus: str, chunks: list[bytes], nframes: int, label: str):
    nbytes = sum(len(c) for c in chunks)

    # the twin is slow: fewer rounds keep the run short; each round is the whole corpus either way
    rounds = 3 if impl.NAME == "python" else 30
    got = benchmark.pedantic(feed_all, args=(impl, corpus, chunks), rounds=rounds, iterations=1, warmup_rounds=1)
    assert got == nframes  # every frame of the corpus came out
    seconds = benchmark.stats.stats.median
    benchmark.extra_info.update(
        {
            "corpus": label,
            "bytes": nbytes,
            "frames": nframes,
            "MB_per_s": round(nbytes / seconds / 1e6, 1),
            "frames_per_s": round(nframes / seconds),
        }
    )
    RESULTS[(label, impl.NAME)] = (seconds, nbytes, nframes)


@pytest.mark.parametrize("corpus", CORPORA)
def test_framer_bulk(benchmark, impl, corpora, corpus):
    frames, escaped = corpora[corpus]
    chunks = chunked(frames)
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
