"""The 0x7E framers, compiled against twin, under Hypothesis: any bytes, split at any points, give the
same frames, counters, rejects and exceptions in both, and the same as the twin fed all at once.
Every wire byte is accounted for (delivered, dropped, or a shared flag). Encoders round-trip.

The `test_fuzz_*` tests run `tests.conftest.FUZZ_EXAMPLES` examples (`make fuzz` raises it)."""

import random

import pytest
from hypothesis import given, settings, strategies as st

from tests.conftest import FUZZ_EXAMPLES
from tianwang.gateway import framing

TWIN = framing.twins()
IMPLS = framing.implementations()

# name -> (framer class name, framer kwargs); GB/T profiles cover every option
PROFILES = {
    "jt808": ("Jt808Framer", {}),
    "pmpp": ("PmppFramer", {}),
    "gbt": ("Gbt20999Framer", {}),
    "gbt-n-ccitt": ("Gbt20999Framer", {"length_field": "n", "crc": "ccitt-false"}),
    "gbt-raw": ("Gbt20999Framer", {"escaped": False}),
    "gbt-raw-n4": ("Gbt20999Framer", {"escaped": False, "length_field": "n-4"}),
}

# bytes that matter to some framer turn up far more often than chance would have them
special = st.sampled_from([0x7E, 0x7D, 0x5C, 0x01, 0x02, 0x5D, 0x5E, 0x00, 0xFF])
some_bytes = st.lists(st.one_of(special, st.integers(0, 255)), max_size=60).map(bytes)


@st.composite
def jt808_content(draw):
    """Header + body with a consistent attributes word: 2013 or 2019, split or not."""
    body = draw(st.binary(max_size=80) | some_bytes)
    v2019 = draw(st.booleans())
    split = draw(st.booleans())
    attrs = len(body) | (0x4000 if v2019 else 0) | (0x2000 if split else 0) | (draw(st.integers(0, 7)) << 10)
    rest = 13 if v2019 else 8  # (version +) phone + serial after id and attributes
    if split:
        rest += 4
    return (
        draw(st.binary(min_size=2, max_size=2))
        + attrs.to_bytes(2, "big")
        + draw(st.binary(min_size=rest, max_size=rest))
        + body
    )


def encode(profile, content):
    cls, kw = PROFILES[profile]
    if cls == "Jt808Framer":
        return TWIN.encode_jt808(content)
    if cls == "PmppFramer":
        return TWIN.encode_pmpp(content)
    return TWIN.encode_gbt20999(content, **kw)


@st.composite
def frame_content(draw, profile):
    if profile == "jt808":
        return draw(jt808_content())
    if profile == "pmpp":
        return draw(st.binary(min_size=3, max_size=60) | some_bytes.filter(lambda b: len(b) >= 3))
    return draw(st.binary(min_size=10, max_size=60) | some_bytes.filter(lambda b: len(b) >= 10))


@st.composite
def stream(draw, profile):
    """Good frames, damaged frames (cut, bit-flipped, byte inserted) and noise, joined."""
    parts = []
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(["good", "good", "cut", "flip", "insert", "noise"]))
        if kind == "noise":
            parts.append(draw(some_bytes))
            continue
        wire = bytearray(encode(profile, draw(frame_content(profile))))
        if kind == "cut":
            wire = wire[: draw(st.integers(0, len(wire)))]
        elif kind == "flip":
            i = draw(st.integers(0, len(wire) - 1))
            wire[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "insert":
            wire.insert(draw(st.integers(0, len(wire))), draw(special))
        parts.append(bytes(wire))
    return b"".join(parts)


def make(impl, profile, max_frame, keep_rejects=True):
    cls, kw = PROFILES[profile]
    return getattr(impl, cls)(max_frame=max_frame, keep_rejects=keep_rejects, **kw)


def snapshot(f):
    return (f.frames, f.resyncs, f.dropped_bytes, f.bytes_in, f.drops, f.buffered)


def pieces(data, cuts):
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, last = [], 0
    for p in points + [len(data)]:
        out.append(data[last:p])
        last = p
    return out


def outcome(impl, profile, chunks, max_frame):
    """Everything observable from feeding `chunks` (a str chunk stands for a caller's mistake)."""
    f = make(impl, profile, max_frame)
    frames, errors, states = [], [], []
    for chunk in chunks:
        try:
            frames.append(f.feed(chunk))
        except TypeError:
            errors.append(len(frames))
    states.append(snapshot(f))
    final = f.finish()
    return [x for xs in frames for x in xs], final, errors, states, snapshot(f), f.take_rejects()


def check_agreement(profile, data, cuts, max_frame, bad_chunk_at=None):
    chunks = pieces(data, cuts)
    if bad_chunk_at is not None:
        chunks.insert(bad_chunk_at % (len(chunks) + 1), "not bytes")
    results = [outcome(impl, profile, chunks, max_frame) for impl in IMPLS]
    assert all(r == results[0] for r in results[1:]), profile
    # the twin fed the whole stream at once agrees on frames, counters and rejects
    whole = outcome(TWIN, profile, [data], max_frame)
    frames, final, _, _, end, rejects = results[0]
    assert (frames, final, end, rejects) == (whole[0], whole[1], whole[4], whole[5])
    check_accounting(profile, data, frames + final, end)
    return frames + final


def check_accounting(profile, data, frames, end):
    """After finish(), every byte fed is in a delivered frame, dropped, or (JT/T 808, PMPP) a flag."""
    _, _, dropped, bytes_in, drops, buffered = end
    assert bytes_in == len(data) and buffered == 0
    assert end[0] == len(frames)
    if profile == "jt808":
        # JT/T 808 escapes are canonical: a delivered frame was sent exactly as the encoder sends it
        delivered = sum(len(TWIN.encode_jt808(f)) - 2 for f in frames)
        assert bytes_in - data.count(0x7E) == dropped + delivered
    elif profile == "pmpp":
        # PMPP may escape any byte, so a frame's wire length is at least its canonical length
        delivered = sum(len(f) + 2 for f in frames)
        assert bytes_in - data.count(0x7E) >= dropped + delivered
    else:
        # GB/T: start and end flags belong to their frame, delivered or dropped
        assert bytes_in == dropped + sum(len(encode(profile, f)) for f in frames)
    if dropped == 0:
        assert sum(drops.values()) == 0


cuts = st.lists(st.integers(0, 10_000), max_size=12)
max_frames = st.sampled_from([16, 24, 40, 4096])


@pytest.mark.parametrize("profile", sorted(PROFILES))
@given(data=st.data())
def test_twins_agree_on_realistic_streams(profile, data):
    s = data.draw(stream(profile))
    check_agreement(profile, s, data.draw(cuts), data.draw(max_frames), data.draw(st.none() | st.integers(0, 20)))


@pytest.mark.parametrize("profile", sorted(PROFILES))
@given(data=st.binary(max_size=300) | some_bytes, cut=cuts, max_frame=max_frames)
def test_twins_agree_on_any_bytes(profile, data, cut, max_frame):
    check_agreement(profile, data, cut, max_frame)


@pytest.mark.parametrize("profile", sorted(PROFILES))
@given(data=st.data())
def test_good_frames_survive_damage_around_them(profile, data):
    """A good frame after a damaged one (or noise) is always delivered: flags resynchronise."""
    good = data.draw(frame_content(profile))
    junk = data.draw(stream(profile))
    wire = encode(profile, good)
    # an unescaped GB/T profile is framed by length: junk ending in a candidate that swallows the good
    # frame is resolved only by rescanning, which the good frame survives too
    frames = check_agreement(profile, junk + wire + wire, data.draw(cuts), 4096)
    assert frames[-2:] == [good, good]


# GB/T 20999 damage whose lone 0x5C swallows the good frame's start flag, each failing the combined
# frame in another way: (junk, good content, max_frame)
SWALLOWED = {
    # found by Hypothesis: the swallowed 7E is the high byte of the length field, 0x7E00 is too long
    "length-field-too-long": (b"\x7e\x5c", b"\x00" * 10, 4096),
    # the stump's length field fits stump + 7E + good frame (filled in below): only the CRC fails
    "length-fits-crc-fails": (None, b"\x00" * 10 + b"\x01" * 4, 4096),
    # a bad escape in the stump: nothing after it is buffered, the 5C 7E pair ends it
    "bad-escape": (b"\x7e\x00\x10\x5c\x41\x22\x5c", b"\x00" * 10, 4096),
    # stump and good frame together outgrow max_frame; the good frame alone fits
    "too-long-by-size": (b"\x7e\x00\x10" + b"\x33" * 18 + b"\x5c", b"\x00" * 10, 24),
    # more than one escaped 7E before the swallowed one
    "escaped-7e-in-stump": (b"\x7e\x00\x30\x5c\x7e\x11\x5c", b"\x00" * 10, 4096),
}


@pytest.mark.parametrize("case", sorted(SWALLOWED))
@pytest.mark.parametrize("profile", ["gbt", "gbt-n-ccitt"])
def test_good_frame_survives_swallowed_start_flag(profile, case):
    """Regressions for test_good_frames_survive_damage_around_them (st.data() takes no @example)."""
    junk, good, max_frame = SWALLOWED[case]
    wire = encode(profile, good)
    if junk is None:
        n = 2 + 3 + 1 + (2 + len(good) + 2)  # unescaped: length field, 3 bytes, 7E, the good frame
        field = n - {"n-2": 2, "n": 0}[PROFILES[profile][1].get("length_field", "n-2")]
        junk = b"\x7e" + field.to_bytes(2, "big") + b"\x11\x22\x33\x5c"
    for cut in ([], [len(junk) - 1], [len(junk)], [len(junk) + 1, len(junk) + 3], list(range(60))):
        frames = check_agreement(profile, junk + wire + wire, cut, max_frame)
        assert frames[-2:] == [good, good], cut


@given(content=jt808_content())
def test_jt808_round_trip(content):
    wires = {impl.encode_jt808(content) for impl in IMPLS}
    assert len(wires) == 1
    wire = wires.pop()
    assert wire[0] == wire[-1] == 0x7E and 0x7E not in wire[1:-1]
    for impl in IMPLS:
        assert impl.Jt808Framer().feed(wire) == [content]


@given(
    content=st.binary(min_size=10, max_size=400),
    profile=st.sampled_from(["gbt", "gbt-n-ccitt", "gbt-raw", "gbt-raw-n4"]),
)
def test_gbt20999_round_trip(content, profile):
    _, kw = PROFILES[profile]
    wires = {impl.encode_gbt20999(content, **kw) for impl in IMPLS}
    assert len(wires) == 1
    wire = wires.pop()
    if kw.get("escaped", True):
        # inside the flags every 7E, 7D and 5C comes as a 5C pair
        i, inner = 0, wire[1:-1]
        while i < len(inner):
            assert inner[i] not in (0x7E, 0x7D)
            i += 2 if inner[i] == 0x5C else 1
    for impl in IMPLS:
        assert make(impl, profile, 4096, False).feed(wire) == [content]


@given(content=st.binary(min_size=3, max_size=400))
def test_pmpp_round_trip(content):
    wires = {impl.encode_pmpp(content) for impl in IMPLS}
    assert len(wires) == 1
    wire = wires.pop()
    assert 0x7E not in wire[1:-1]
    for impl in IMPLS:
        assert impl.PmppFramer().feed(wire) == [content]


@given(data=st.binary(max_size=200))
def test_checksums_agree(data):
    results = {
        (i.xor_checksum(data), i.crc16_gbt20999(data), i.crc16_ccitt_false(data), i.crc16_x25(data)) for i in IMPLS
    }
    assert len(results) == 1


# -- bounded fuzz runs (make fuzz runs them longer) -----------------------------------------------
# Hypothesis draws a seed; the stream is built from it with `random`, which is much cheaper than
# drawing every byte, so each example pushes more bytes through both implementations. A failure
# names the seed, which reproduces it.

SPECIALS = (0x7E, 0x7D, 0x5C, 0x01, 0x02, 0x5D, 0x5E, 0x00, 0xFF)


def random_stream(profile, rnd):
    def some(n):
        return bytes(rnd.choice(SPECIALS) if rnd.random() < 0.3 else rnd.randrange(256) for _ in range(n))

    parts = []
    for _ in range(rnd.randint(0, 20)):
        kind = rnd.random()
        if kind < 0.15:
            parts.append(some(rnd.randint(0, 40)))
            continue
        if profile == "jt808":
            body = some(rnd.randint(0, 90))
            flags = rnd.choice([0, 0x4000, 0x2000, 0x6000])
            rest = (13 if flags & 0x4000 else 8) + (4 if flags & 0x2000 else 0)
            content = some(2) + (len(body) | flags).to_bytes(2, "big") + some(rest) + body
        else:
            content = some(rnd.randint(3 if profile == "pmpp" else 10, 90))
        wire = bytearray(encode(profile, content))
        if kind < 0.3:
            wire = wire[: rnd.randint(0, len(wire))]
        elif kind < 0.45:
            wire[rnd.randrange(len(wire))] ^= 1 << rnd.randrange(8)
        elif kind < 0.55:
            wire.insert(rnd.randint(0, len(wire)), rnd.choice(SPECIALS))
        elif kind < 0.6:
            del wire[rnd.randrange(len(wire))]
        parts.append(bytes(wire))
    data = b"".join(parts)
    return data, [rnd.randint(0, len(data)) for _ in range(rnd.randint(0, 30))], rnd.choice([16, 24, 40, 100, 4096])


def fuzz_one(profile, seed):
    data, cut, max_frame = random_stream(profile, random.Random(seed))
    check_agreement(profile, data, cut, max_frame)


fuzz = settings(max_examples=FUZZ_EXAMPLES)
seeds = st.integers(0, 2**64 - 1)


@fuzz
@given(seed=seeds)
def test_fuzz_jt808(seed):
    fuzz_one("jt808", seed)


@fuzz
@given(seed=seeds)
def test_fuzz_pmpp(seed):
    fuzz_one("pmpp", seed)


@fuzz
@given(seed=seeds, profile=st.sampled_from(["gbt", "gbt-n-ccitt"]))
def test_fuzz_gbt20999(seed, profile):
    fuzz_one(profile, seed)


@fuzz
@given(seed=seeds, profile=st.sampled_from(["gbt-raw", "gbt-raw-n4"]))
def test_fuzz_gbt20999_unescaped(seed, profile):
    fuzz_one(profile, seed)
