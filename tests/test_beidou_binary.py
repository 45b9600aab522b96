"""Issue 11, CASIC and UBX binary beside NMEA: the hot path's framing (compiled and twin) delivers
checksum-verified frames in the same byte stream, the decoders read the vendors' layouts (checked on
the worked examples of /work/shared/protocols/casic-ubx.md), and the receiver publishes one fix per
epoch from the chosen source. Garbage never costs a good sentence or a good frame (fuzz)."""

import datetime as dt
import random

import pytest
from hypothesis import given, settings, strategies as st

from tests.conftest import FUZZ_EXAMPLES
from tests.test_nmea_decoder import GOOD, one
from tianwang.drivers.beidou import nmea_writer as w
from tianwang.drivers.beidou.binary import BinaryAssembler
from tianwang.drivers.beidou.receiver import ReceiverProtocol
from tianwang.gateway import framing

T0 = int(dt.datetime(2026, 11, 29, 12, 0, 0, tzinfo=dt.UTC).timestamp()) * 10**9
SEC = 10**9

# worked examples (synthetic, built from the specifications) in /work/shared/protocols/casic-ubx.md
CASIC_PV = bytes.fromhex("""
ba ce 50 00 01 03 78 e0 01 00 07 07 07 0c 05 05 02 00 00 00 c0 3f 0e be 30 99 2a 3c 5c 40
6a 4d f3 8e 53 d4 3b 40 00 00 70 42 00 00 70 c1 00 00 80 40 00 00 10 41 00 00 00 00 00 00
00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 0a d7 23 3d 00 24 74 49 d3 03 90 03""")
UBX_PVT = bytes.fromhex("""
b5 62 01 07 5c 00 50 74 93 02 ea 07 0b 1d 0c 00 00 07 14 00 00 00 00 00 00 00 03 01 e0 0c
a8 4a 51 43 f0 6d 96 10 60 ea 00 00 f8 24 01 00 d0 07 00 00 b8 0b 00 00 00 00 00 00 00 00
00 00 00 00 00 00 00 00 00 00 00 00 00 00 c8 00 00 00 80 a8 12 01 96 00 00 00 00 00 00 00
00 00 00 00 00 00 00 00 10 d4""")
CASIC_CFG_MSG = bytes.fromhex("bace0400060101 03ffff05030501".replace(" ", ""))


def frames_of(impl, data, cuts=()):
    dec = impl.NmeaDecoder(binary=True)
    out, last = [], 0
    for cut in list(cuts) + [len(data)]:
        out += dec.feed(data[last:cut])
        last = cut
    out += dec.finish()
    return out, dec


def decode_one(frame):
    a = BinaryAssembler(frame.protocol)
    assert a.push(frame) == []
    (e,) = a.flush(final=True)
    return e


def test_spec_check_vectors_frame_and_decode(impl):
    out, dec = frames_of(impl, CASIC_CFG_MSG + CASIC_PV + UBX_PVT)
    assert [(m.protocol, m.msg_class, m.msg_id, len(m.payload)) for m in out] == [
        ("casic", 0x06, 0x01, 4),
        ("casic", 0x01, 0x03, 80),
        ("ubx", 0x01, 0x07, 92),
    ]
    assert dec.binary_frames == 3 and dec.dropped_bytes == 0 and dec.frames == 0
    pv = decode_one(out[1]).fix_payload()
    # runTime 123000, valid 7/7, numSV 12, pDop 1.5, lon 112.9401, lat 27.8294, height 60, sepGeoid -15
    assert (pv["lat"], pv["lon"], pv["alt_m"], pv["pdop"], pv["mode"], pv["source"]) == (
        27.8294,
        112.9401,
        75.0,
        1.5,
        3,
        "casic",
    )
    assert pv["time_ns"] is None  # NAV-PV carries no time
    pvt = decode_one(out[2])
    p = pvt.fix_payload()
    assert p["time_ns"] == T0 and (p["lat"], p["lon"], p["alt_m"], p["pdop"], p["mode"]) == (
        27.8294,
        112.9401,
        75.0,
        1.5,
        3,
    )
    assert pvt.key == 43218000 and pvt.sats_used_total == 12


def test_bad_checksums_are_noise_and_spare_what_follows(impl):
    bad_pv = bytearray(CASIC_PV)
    bad_pv[-1] ^= 1
    bad_pvt = bytearray(UBX_PVT)
    bad_pvt[-2] ^= 1
    data = bytes(bad_pv) + GOOD[0] + bytes(bad_pvt) + CASIC_PV + GOOD[1] + UBX_PVT
    out, dec = frames_of(impl, data)
    assert [type(m).__name__ for m in out] == ["RMC", "BinaryFrame", "GGA", "BinaryFrame"]
    # every byte of the two bad frames is dropped, but for CR/LF, which are never noise
    eol = sum(bytes(f).count(c) for f in (bad_pv, bad_pvt) for c in (b"\r", b"\n"))
    assert dec.dropped_bytes == len(bad_pv) + len(bad_pvt) - eol and dec.drops["binary"] == 0


def test_frame_inside_a_line_ends_the_line_and_is_kept(impl):
    # a frame written into the middle of a sentence: the sentence is lost (cut), the frame is not;
    # a sentence complete up to its checksum before the frame is kept
    rmc = GOOD[0]
    data = rmc[:25] + UBX_PVT + GOOD[1] + rmc[:-2] + CASIC_PV + GOOD[2]
    out, dec = frames_of(impl, data)
    assert [type(m).__name__ for m in out] == ["BinaryFrame", "GGA", "RMC", "BinaryFrame", "GSA"]
    assert dec.drops["truncated"] == 1 and dec.binary_frames == 2
    # the same bytes without binary mode: frames are dropped as before, nothing else changes
    plain = impl.NmeaDecoder()
    msgs = plain.feed(GOOD[1] + UBX_PVT + GOOD[2]) + plain.finish()
    assert [type(m).__name__ for m in msgs] == ["GGA", "GSA"] and plain.drops["binary"] == 1


def _state(k, **over):
    sats = [w.Satellite("BDS", i, 20 + 5 * i, 10 * i, 30 + i, used=i <= 6) for i in range(1, 9)]
    sats += [w.Satellite("GPS", i, 30 + i, 20 * i, 40 + i, used=True) for i in range(1, 5)]
    base = dict(
        time_ns=T0 + k * SEC,
        lat=27.8294 + k * 1e-5,
        lon=112.9401,
        alt_m=75.0,
        geoid_sep_m=-15.0,
        speed_mps=3.2,
        course_deg=90.0,
        hdop=0.9,
        pdop=1.6,
        vdop=1.3,
        satellites=sats,
    )
    base.update(over)
    return w.EpochState(**base)


def mixed(kind, n=6, binary_first=False):
    ew = w.EpochWriter(order=("GGA", "RMC", "GSA", "GSV"), dual_band=True)
    data = b""
    for k in range(n):
        nm = ew.sentences(_state(k))
        bi = w.casic_epoch(_state(k), 7_000_000 + k * 1000) if kind == "casic" else w.ubx_epoch(_state(k))
        if binary_first:
            data += b"".join(bi + nm)
        else:
            seq = []
            for i in range(max(len(nm), len(bi))):
                seq += nm[i : i + 1] + bi[i : i + 1]
            data += b"".join(seq)
    return data


def fixes(impl, data, cuts=(), **options):
    p = ReceiverProtocol("bin", implementation=impl, **options)
    pubs, last = [], 0
    for cut in list(cuts) + [len(data)]:
        pubs += p.feed(data[last:cut], None)
        last = cut
    pubs += p.finish(None)
    return [x.payload for x in pubs if x.channel == "fix"], p


@pytest.mark.parametrize("kind", ["casic", "ubx"])
@pytest.mark.parametrize("binary_first", [False, True])
def test_one_fix_per_epoch_from_the_binary_source(impl, kind, binary_first):
    data = mixed(kind, binary_first=binary_first)
    got, p = fixes(impl, data)
    assert [f["time_ns"] for f in got] == [T0 + k * SEC for k in range(6)]
    sources = [f["source"] for f in got]
    assert sources[-4:] == [kind] * 4 and set(sources) <= {"nmea", kind}
    for f in got:
        assert f["sats_used"] == {"BDS": 6, "GPS": 4, "GLO": 0, "GAL": 0, "QZSS": 0}
        assert f["sats_view"] == {"BDS": 8, "GPS": 4, "GLO": 0, "GAL": 0, "QZSS": 0}
        assert f["mode"] == 3 and f["alt_m"] == pytest.approx(75.0, abs=1e-3)
        k = (f["time_ns"] - T0) // SEC
        assert f["lat"] == pytest.approx(27.8294 + k * 1e-5, abs=1e-7)
        assert set(f) == {
            "time_ns",
            "lat",
            "lon",
            "alt_m",
            "speed_mps",
            "course_deg",
            "quality",
            "mode",
            "hdop",
            "pdop",
            "vdop",
            "sats_used",
            "sats_view",
            "source",
        }
    assert p.superseded >= 4 and p.drops["binary"] == 0
    # whole, byte by byte and split anywhere: the same fixes
    for cuts in (range(1, len(data)), sorted(random.Random(kind).sample(range(1, len(data)), 50))):
        assert fixes(impl, data, cuts)[0] == got


@pytest.mark.parametrize("kind", ["casic", "ubx"])
def test_protocol_option_chooses_the_source(impl, kind):
    data = mixed(kind)
    nmea, p = fixes(impl, data, protocol="nmea")
    assert [f["source"] for f in nmea] == ["nmea"] * 6 and p.drops["binary"] > 0
    only, _ = fixes(impl, data, protocol=kind)
    assert {f["source"] for f in only} == {kind} and len(only) == 6
    other = "ubx" if kind == "casic" else "casic"
    assert fixes(impl, data, protocol=other)[0] == []
    with pytest.raises(ValueError):
        ReceiverProtocol("x", protocol="sirf")


def test_nmea_takes_over_when_the_binary_stops(impl):
    ew = w.EpochWriter(order=("GGA", "RMC", "GSA", "GSV"))
    data = mixed("ubx", n=4, binary_first=True) + b"".join(ew.epoch(_state(k)) for k in range(4, 10))
    got, _ = fixes(impl, data)
    times = [f["time_ns"] for f in got]
    assert times == sorted(set(times))  # never twice, never back in time
    assert [f["source"] for f in got][-3:] == ["nmea"] * 3


def test_stray_binary_frames_with_good_checksums_do_not_take_over(impl):
    # a NAV-PVT full of noise (good checksum, impossible fields) and a lone plausible one: NMEA fixes
    # go on being published, one per epoch
    rng = random.Random(5)
    ew = w.EpochWriter(order=("GGA", "RMC", "GSA", "GSV"))
    data = b""
    for k in range(6):
        data += ew.epoch(_state(k)) + w.ubx_frame(1, 7, bytes(rng.getrandbits(8) for _ in range(92)))
        if k == 2:
            data += w.ubx_epoch(_state(40))[0]
    got, p = fixes(impl, data)
    assert [(f["source"], f["time_ns"]) for f in got] == [("nmea", T0 + k * SEC) for k in range(6)]
    assert p.drops["binary"] >= 6


# ---------------------------------------------------------------------------------------------
# twins and fuzz on the mixed stream

good_frames = [CASIC_PV, UBX_PVT, CASIC_CFG_MSG] + w.ubx_epoch(_state(1)) + w.casic_epoch(_state(1), 99_000)
parts = st.sampled_from(
    GOOD
    + good_frames
    + [
        b"$",
        b"\r\n",
        b"*",
        b"\xb5",
        b"\xb5\x62",
        b"\xba\xce",
        b"\xba",
        b"\xba\xce\x10\x00",
        b"\xb5\x62\x01\x07\x5c\x00",
    ]
)
streams = st.lists(
    st.one_of(parts, st.binary(max_size=24), parts.flatmap(lambda s: st.integers(0, len(s)).map(lambda k: s[:k]))),
    max_size=12,
).map(b"".join)


def outcome(impl, data, cuts):
    msgs, dec = frames_of(impl, data, cuts)
    return msgs, (dec.frames, dec.binary_frames, dec.resyncs, dec.dropped_bytes, dec.unchecked, dec.drops)


@settings(max_examples=FUZZ_EXAMPLES)
@given(data=streams, cuts=st.lists(st.integers(0, 600), max_size=8).map(sorted))
def test_fuzz_binary_mode_twins_agree_at_any_split(data, cuts):
    reference = outcome(framing.twins(), data, [])
    for impl in framing.implementations():
        assert outcome(impl, data, [c for c in cuts if c <= len(data)]) == reference, impl.NAME


garbage = st.binary(max_size=30)
items = st.lists(
    st.one_of(
        st.tuples(st.just("good"), st.sampled_from(GOOD)),
        st.tuples(st.just("frame"), st.sampled_from(good_frames)),
        st.tuples(st.just("garbage"), garbage),
    ),
    max_size=14,
)


@settings(max_examples=FUZZ_EXAMPLES)
@given(parts=items, cuts=st.lists(st.integers(0, 3000), max_size=8).map(sorted))
def test_fuzz_garbage_never_costs_a_good_sentence_or_frame(parts, cuts):
    # any bytes (sync bytes and `$` included) between good sentences and good frames: every frame
    # comes out, and every sentence whose line the garbage did not run into. A sentence is only at
    # risk from garbage right before it that opens a line (`$...` with no end): that line ends at
    # the sentence's own `$`, so the sentence itself is still whole.
    data = b"".join(chunk for _, chunk in parts)
    want_frames = [chunk for kind, chunk in parts if kind == "frame"]
    want_sentences = [chunk for kind, chunk in parts if kind == "good"]
    for impl in framing.implementations():
        msgs, dec = frames_of(impl, data, [c for c in cuts if c <= len(data)])
        got_frames = [m for m in msgs if type(m).__name__ == "BinaryFrame"]
        assert len(got_frames) >= len(want_frames), impl.NAME
        kept = [(m.protocol, m.msg_class, m.msg_id, m.payload) for m in got_frames]
        for f in want_frames:
            ubx = f[0] == 0xB5
            key = ("ubx", f[2], f[3], f[6:-2]) if ubx else ("casic", f[4], f[5], f[6:-4])
            assert key in kept, impl.NAME
        sentences = [m for m in msgs if type(m).__name__ in ("RMC", "GGA", "GSA")]
        for s in want_sentences:
            assert one(impl, s) in sentences, impl.NAME
