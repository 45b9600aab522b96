"""Issue 11: the compiled CASIC/UBX navigation decoder (cext/nmea_binary.pxi) and its pure-Python
twin (cext/nmea_binary_py.py) give the same epochs, payloads, skies and counters for any frames, fed
whole, split anywhere or byte by byte, with garbage between them; garbage never costs a good
frame's epoch."""

import datetime as dt
import math
import random
import struct

import pytest
from hypothesis import given, settings, strategies as st

from tests.conftest import FUZZ_EXAMPLES
from tianwang.drivers.beidou import nmea_writer as w
from tianwang.drivers.beidou.receiver import ReceiverProtocol
from tianwang.gateway import framing

T0 = int(dt.datetime(2026, 11, 29, 12, 0, 0, tzinfo=dt.UTC).timestamp()) * 10**9
SEC = 10**9

needs_compiled = pytest.mark.skipif(framing.compiled() is None, reason="needs the compiled hot path to compare with")


def _state(k, valid=True):
    sats = [w.Satellite("BDS", i, 20 + 5 * i, 10 * i, 30 + i, used=i <= 6) for i in range(1, 9)]
    sats += [w.Satellite("GPS", i, 30 + i, 20 * i, 40 + i, used=True) for i in range(1, 5)]
    sats += [w.Satellite("GLO", i, 10 + i, 30 * i, 35, used=i % 2 == 0) for i in range(1, 4)]
    sats += [w.Satellite("GAL", i, 50, 300, None, used=False) for i in (3, 7)]
    return w.EpochState(
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
        quality=1 if valid else 0,
    )


def epoch_view(e):
    return (
        type(e).__name__,
        e.source,
        e.key,
        e.time_ns,
        e.fix_payload(),
        e.satellites(),
        e.has_satellites,
        e.no_fix_reason,
        e.closed_by,
        e.sats_used_total,
        e.messages,
        e.mode,
        repr(e.hdop),
    )


def assemble(impl, frames, flush_every=0):
    """Frames (bytes) through NmeaDecoder(binary=True) and one BinaryAssembler per protocol."""
    dec = impl.NmeaDecoder(binary=True)
    asm = {p: impl.BinaryAssembler(p) for p in ("casic", "ubx")}
    out = []
    for i, f in enumerate(frames):
        for m in dec.feed(f):
            out += [epoch_view(e) for e in asm[m.protocol].push(m)]
        if flush_every and i % flush_every == flush_every - 1:
            for a in asm.values():
                out += [epoch_view(e) for e in a.flush()]
    for a in asm.values():
        out += [epoch_view(e) for e in a.flush(final=True)]
    counters = {
        p: (
            a.messages,
            a.bad,
            a.ignored,
            a.epochs,
            a.fragments,
            a.closed_by_end,
            a.closed_by_next,
            a.closed_by_flush,
            a.open,
            a.ender,
        )
        for p, a in asm.items()
    }
    return out, counters


# NAV messages of every id each assembler decodes, with random contents of the right and wrong
# lengths: a random key near a few epoch keys, so messages merge and epochs close
CASIC_IDS = {0x00: 80, 0x01: 28, 0x03: 80, 0x10: 24, 0x20: 8 + 12 * 3, 0x21: 8 + 12 * 2, 0x22: 8, 0x05: 4}
UBX_IDS = {0x07: 92, 0x04: 18, 0x21: 20, 0x35: 8 + 12 * 3, 0x61: 4, 0x03: 16}


@st.composite
def nav_frame(draw):
    ubx = draw(st.booleans())
    ids = UBX_IDS if ubx else CASIC_IDS
    mid = draw(st.sampled_from(sorted(ids)))
    size = ids[mid]
    size = draw(st.sampled_from([size, size, size, 84 if mid == 0x07 and ubx else size, 4, max(size - 4, 4), size + 4]))
    key = draw(st.sampled_from([1000, 1005, 2000, 3000, 3011, 604_800_000, 0xFFFFFFF0]))
    body = bytearray(draw(st.binary(min_size=size - 4, max_size=size - 4)))
    if len(body) >= 4 and draw(st.booleans()):
        body[0] = 1  # NAV-SAT version 1 / plausible fields more often
        body[1] = draw(st.integers(0, 4))
    if ubx and mid == 0x07 and len(body) >= 76 and draw(st.booleans()):
        # a plausible NAV-PVT: in-range lon/lat, a fix type and flags that make a fix
        struct.pack_into("<HBBBBBB", body, 0, draw(st.integers(1979, 2201)), 11, 29, 12, 0, 0, 7)
        body[16] = draw(st.integers(0, 5))
        body[17] = draw(st.integers(0, 255))
        struct.pack_into(
            "<ii",
            body,
            20,
            draw(st.integers(-1_800_000_000, 1_800_000_000)),
            draw(st.integers(-900_000_000, 900_000_000)),
        )
        if len(body) > 74:
            body[74] = draw(st.integers(0, 1))
    if not ubx and mid == 0x03 and len(body) >= 76 and draw(st.booleans()):
        body[0] = draw(st.integers(0, 9))
        body[1] = draw(st.integers(0, 9))
        body[3] = draw(st.integers(0, 130))
        struct.pack_into(
            "<fdd", body, 8, draw(st.floats(width=32)), draw(st.floats(-200, 200)), draw(st.floats(-100, 100))
        )
        struct.pack_into("<ff", body, 28, draw(st.floats(width=32)), draw(st.floats(width=32)))
    payload = struct.pack("<I", key & 0xFFFFFFFF) + bytes(body)
    if ubx:
        return w.ubx_frame(draw(st.sampled_from([1, 1, 1, 2])), mid, payload)
    if len(payload) % 4:
        payload += bytes(4 - len(payload) % 4)
    return w.casic_frame(draw(st.sampled_from([1, 1, 1, 6])), mid, payload)


def good_epochs(kind, n, valid=True):
    frames = []
    for k in range(n):
        if kind == "casic":
            frames += w.casic_epoch(
                _state(k, valid), 7_000_000 + k * 1000, messages=("PV", "DOP", "TIMEUTC", "STATUS", "INFO")
            )
        else:
            frames += w.ubx_epoch(_state(k, valid))
    return frames


@needs_compiled
@settings(max_examples=FUZZ_EXAMPLES // 4)
@given(
    frames=st.lists(
        st.one_of(nav_frame(), st.sampled_from(good_epochs("casic", 3) + good_epochs("ubx", 3))), max_size=30
    ),
    flush_every=st.sampled_from([0, 0, 3, 7]),
)
def test_twins_agree_on_any_nav_messages(frames, flush_every):
    want = assemble(framing.twins(), frames, flush_every)
    assert assemble(framing.compiled(), frames, flush_every) == want


@needs_compiled
@pytest.mark.parametrize("kind", ["casic", "ubx"])
@pytest.mark.parametrize("valid", [True, False])
def test_twins_agree_on_receiver_epochs(kind, valid):
    frames = good_epochs(kind, 5, valid)
    want, counters = assemble(framing.twins(), frames)
    assert assemble(framing.compiled(), frames) == (want, counters)
    assert len(want) == 5
    sky = want[0][5]
    if kind == "ubx":
        assert [(s["system"], s["svid"]) for s in sky][:3] == [("BDS", 1), ("BDS", 2), ("BDS", 3)]
        assert {s["system"] for s in sky} == {"BDS", "GPS", "GLO", "GAL"}
    else:  # CASIC NAV-*INFO covers GPS, BDS and GLONASS only
        assert {s["system"] for s in sky} == {"BDS", "GPS", "GLO"}
    assert all(s["snr"] is None for s in sky if s["system"] == "GAL")
    if valid:
        assert want[2][4]["time_ns"] == T0 + 2 * SEC and want[2][7] is None
    else:
        assert all(v[7] is not None and v[4]["lat"] is None and v[4]["mode"] == 1 for v in want)


def test_non_finite_casic_floats_give_no_value():
    # a NAV-PV whose speed and height are infinite: a fix without them, on both implementations
    payload = struct.pack(
        "<IBBBBBBBxfdd12f",
        5000,
        7,
        7,
        0,
        9,
        4,
        5,
        0,
        1.5,
        112.94,
        27.83,
        math.inf,
        -15.0,
        *([0.0] * 6),
        math.inf,
        math.nan,
        0.0,
        0.0,
    )
    for impl in framing.implementations():
        out, _ = assemble(impl, [w.casic_frame(1, 3, payload)])
        p = out[0][4]
        assert (p["lat"], p["lon"], p["alt_m"], p["speed_mps"], p["course_deg"]) == (27.83, 112.94, None, None, None)


def test_short_casic_info_is_counted_bad_not_raised():
    for impl in framing.implementations():
        a = impl.BinaryAssembler("casic")
        (m,) = impl.NmeaDecoder(binary=True).feed(w.casic_frame(1, 0x20, struct.pack("<I", 77)))
        assert a.push(m) == [] and a.bad == 1 and a.messages == 0


def mixed_stream(kind, n, rng):
    ew = w.EpochWriter(order=("GGA", "RMC", "GSA", "GSV"), dual_band=True)
    data = b""
    for k in range(n):
        nm = ew.sentences(_state(k))
        bi = w.casic_epoch(_state(k), 7_000_000 + k * 1000) if kind == "casic" else w.ubx_epoch(_state(k))
        seq = []
        for i in range(max(len(nm), len(bi))):
            seq += nm[i : i + 1] + bi[i : i + 1]
        data += b"".join(seq)
        # garbage between epochs: sync bytes, `$`, line ends and binary noise
        data += bytes(rng.choice(b"\xb5\x62\xba\xce$\r\n*,A0\x00\xff\x01") for _ in range(rng.randrange(0, 40)))
    return data


def publications(impl, data, cuts):
    p = ReceiverProtocol("mix", implementation=impl)
    pubs, last = [], 0
    for cut in list(cuts) + [len(data)]:
        pubs += p.feed(data[last:cut], None)
        last = cut
    pubs += p.finish(None)
    return [(x.channel, x.payload, x.device_time_ns) for x in pubs], (
        p.frames,
        p.binary_frames,
        p.drops,
        p.dropped_bytes,
        p.superseded,
        p.closed_by,
    )


@pytest.mark.parametrize("kind", ["casic", "ubx"])
def test_mixed_stream_whole_split_and_byte_by_byte(kind):
    rng = random.Random(kind)
    data = mixed_stream(kind, 8, rng)
    want = publications(framing.twins(), data, [])
    fixes = [p for c, p, _ in want[0] if c == "fix"]
    # garbage between epochs costs no epoch: one fix per second, from the binary source once it counts
    assert [f["time_ns"] for f in fixes] == [T0 + k * SEC for k in range(8)]
    assert [f["source"] for f in fixes][2:] == [kind] * 6
    for impl in framing.implementations():
        for cuts in ([], range(1, len(data)), sorted(rng.sample(range(1, len(data)), 40))):
            assert publications(impl, data, cuts) == want, impl.NAME


# ---------------------------------------------------------------------------------------------
# the per-epoch publishing (FixPublisher): the same publications and counters on both


@st.composite
def receiver_run(draw):
    ew = w.EpochWriter(
        order=draw(
            st.sampled_from([("GGA", "RMC", "GSA", "GSV"), ("RMC", "GGA", "GSA"), ("GSV", "GSA", "GGA", "RMC")])
        ),
        dual_band=draw(st.booleans()),
    )
    kind = draw(st.sampled_from(["nmea", "casic", "ubx"]))
    data, t = b"", 0
    for k in range(draw(st.integers(1, 8))):
        t += draw(st.sampled_from([1, 1, 1, 2, 5]))
        st_ = _state(t, valid=draw(st.booleans()) or k == 0)
        st_.hdop = draw(st.sampled_from([0.8, 0.8, 6.5]))
        if draw(st.booleans()):
            st_.satellites = st_.satellites[: draw(st.integers(0, 6))]
        nm = ew.sentences(st_)
        if kind == "casic":
            nm = w.casic_epoch(st_, 7_000_000 + t * 1000) + nm
        elif kind == "ubx":
            nm = w.ubx_epoch(st_) + nm
        data += b"".join(nm) + (b"$GPTXT,01,01,01,ANTENNA OPEN*25\r\n" if draw(st.booleans()) else b"")
    options = dict(
        hdop_limit=draw(st.sampled_from([2.0, 5.0])),
        min_sats=draw(st.sampled_from([0, 4, 12])),
        sky_decimation=draw(st.sampled_from([0, 1, 3])),
        protocol=draw(st.sampled_from(["auto", "auto", "nmea", "casic", "ubx"])),
    )
    return data, options


def run_receiver(impl, data, options, live):
    p = ReceiverProtocol("pub", implementation=impl, **options)
    pubs = []
    if live:
        now = 10**12
        for i in range(0, len(data), 97):
            pubs += p.feed(data[i : i + 97], now)
            now += 37_000_000
            pubs += p.tick(now)
        pubs += p.tick(now + 900_000_000) + p.tick(now + 9 * SEC) + p.finish(now + 9 * SEC)
    else:
        pubs += p.feed(data, None) + p.finish(None)
    return (
        [(x.channel, x.payload, x.device_time_ns) for x in pubs],
        (p.state, p.superseded, p.drops, p.dropped_bytes, p.epochs, p.fragments, p.closed_by),
    )


@needs_compiled
@settings(max_examples=FUZZ_EXAMPLES // 10)
@given(run=receiver_run(), live=st.booleans())
def test_publisher_twins_agree(run, live):
    data, options = run
    want = run_receiver(framing.twins(), data, options, live)
    assert run_receiver(framing.compiled(), data, options, live) == want


@needs_compiled
def test_publisher_builds_publications_like_their_constructor():
    # the compiled FixPublisher builds the plain Publication dataclass without calling its
    # __init__: the objects must be the same as the constructor's, frozen included
    import dataclasses

    from tianwang.drivers.sdk import Publication

    c = framing.compiled()
    p = c.FixPublisher(
        Publication,
        c.Epoch,
        c.BinaryFrame,
        c.BinaryEpoch,
        {},
        {},
        hdop_limit=5,
        min_sats=4,
        sky_decimation=1,
        stale_ns=3 * SEC,
        protocol="nmea",
    )
    pubs = []
    p.transition("FIX", "ok", 7, pubs)
    assert pubs == [Publication("state", {"state": "FIX", "previous": None, "reason": "ok"}, 7)]
    assert type(pubs[0]) is Publication and repr(pubs[0]) == repr(Publication(**vars(pubs[0])))
    with pytest.raises(dataclasses.FrozenInstanceError):
        pubs[0].channel = "other"

    @dataclasses.dataclass
    class Traced:  # not the plain dataclass: built through its constructor
        channel: str
        payload: dict
        device_time_ns: int = 0

        def __post_init__(self):
            self.payload = dict(self.payload, traced=True)

    p = c.FixPublisher(
        Traced,
        c.Epoch,
        c.BinaryFrame,
        c.BinaryEpoch,
        {},
        {},
        hdop_limit=5,
        min_sats=4,
        sky_decimation=1,
        stale_ns=3 * SEC,
        protocol="nmea",
    )
    pubs = []
    p.transition("NO_FIX", "no", 0, pubs)
    assert pubs[0].payload["traced"] is True
