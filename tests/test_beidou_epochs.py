"""Issue 11, epochs as real receivers send them (compiled and twin): dual-band GSA/GSV, every
sentence order seen in the field, fragments that are never fixes, and an epoch closed on its last
sentence once the receiver's cycle is learned (no quiet-gap timer)."""

import random

import pytest

from tests.test_receiver import SEC, T0, assemble, sky, state, summary
from tianwang.drivers.beidou import nmea_writer as w
from tianwang.drivers.beidou.receiver import ReceiverProtocol

ORDERS = [
    ("GGA", "RMC", "GSA", "GSV"),  # position first
    ("GSA", "GSV", "GGA", "RMC"),  # satellites first
    ("GSV", "GSA", "RMC", "GGA"),  # satellites first, GSV before GSA
    ("RMC", "GST", "GGA", "GSA", "ZDA", "GSV"),  # GST and ZDA in between
    ("GGA", "GSA", "GST", "GSV", "RMC", "ZDA"),
]


def dual_stream(n, order, style="nmea410", **over):
    ew = w.EpochWriter(style=style, order=order, dual_band=True)
    states = [state(k, **over) for k in range(n)]
    return states, b"".join(ew.epoch(s) for s in states)


def test_writer_sends_two_gsa_per_constellation_and_two_gsv_sets():
    # the simulator's dual-band form, which the tests below rely on: two GSA for BDS and for GPS
    # that start with the same id (the case that split epochs) and two GSV signal sets
    ew = w.EpochWriter(order=("GSA", "GSV"), dual_band=True)
    lines = ew.sentences(state(0))
    gsa = [x for x in lines if x[3:6] == b"GSA"]
    assert len(gsa) == 4
    bds = [x.split(b",") for x in gsa if x.split(b"*")[0].endswith(b",4")]
    assert len(bds) == 2 and bds[0][3] == bds[1][3]
    signals = {x.split(b"*")[0].rsplit(b",", 1)[1] for x in lines if x[3:6] == b"GSV"}
    assert signals == {b"1", b"7", b"8"}


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("style", ["nmea410", "bd"])
def test_dual_band_one_fix_per_epoch_with_the_union_of_used(impl, order, style):
    states, data = dual_stream(6, order, style)
    epochs, out = assemble(impl, data)
    assert [e.time_ns for e in epochs] == [s.time_ns for s in states]
    for e, s in zip(epochs, states, strict=True):
        p = e.fix_payload()
        assert abs(p["lat"] - s.lat) < 1e-9 and abs(p["lon"] - s.lon) < 1e-9
        # band 1 alone lists 5 BDS / 3 GPS: the union of both bands is every satellite used
        assert p["sats_used"] == {"BDS": 6, "GPS": 4, "GLO": 0, "GAL": 0, "QZSS": 0}
        # svids tracked on both signals count once
        assert p["sats_view"] == {"BDS": 8, "GPS": 4, "GLO": 0, "GAL": 0, "QZSS": 0}
        assert e.no_fix_reason is None and p["mode"] == 3
    sky_ = epochs[0].satellites()
    assert len(sky_) == 12 and sum(x["used"] for x in sky_) == 10
    # byte by byte and split anywhere: the same epochs
    for cuts in (range(1, len(data)), sorted(random.Random(11).sample(range(1, len(data)), 60))):
        again = assemble(impl, data, cuts)[0]
        assert [summary(e) for e in again] == [summary(e) for e in epochs]


def test_single_band_is_unchanged_by_the_band_rule(impl):
    # a receiver that sends each constellation's GSA once: the usual epochs, the usual counts
    for order in ORDERS:
        states = [state(k) for k in range(4)]
        ew = w.EpochWriter(order=order)
        epochs = assemble(impl, b"".join(ew.epoch(s) for s in states))[0]
        assert [e.time_ns for e in epochs] == [s.time_ns for s in states]
        assert all(e.fix_payload()["sats_used"]["BDS"] == 6 for e in epochs)


def test_fragment_is_never_a_fix(impl):
    # only GSA and GSV, over and over: no time, no position, so nothing is published; each piece
    # is counted as a fragment
    ew = w.EpochWriter(order=("GSA", "GSV"), dual_band=True)
    data = b"".join(ew.epoch(state(k)) for k in range(3))
    dec, asm = impl.NmeaDecoder(), impl.EpochAssembler()
    out = asm.push(dec.feed(data)) + asm.flush() + asm.flush(final=True)
    assert [x for x in out if type(x) is impl.Epoch] == []
    assert asm.fragments == 3 and asm.epochs == 0


def test_receiver_no_fix_without_time_is_still_published(impl):
    # a cold receiver's own no-fix: GGA with no time, no position, quality 0. It is anchored (the
    # receiver said "no fix"), so it comes out with mode 1, unlike a fragment
    gga = w.sentence("GPGGA", ["", "", "", "", "", "0", "00", "99.99", "", "", "", "", "", ""])
    gsa = w.sentence("GPGSA", ["A", "1"] + [""] * 12 + ["99.99", "99.99", "99.99"])
    epochs, _ = assemble(impl, (gga + gsa) * 3)
    assert len(epochs) == 3
    for e in epochs:
        p = e.fix_payload()
        assert p["mode"] == 1 and p["quality"] == 0 and p["time_ns"] is None and p["lat"] is None
        assert e.no_fix_reason == "GGA quality 0"


@pytest.mark.parametrize("order", ORDERS)
def test_epoch_closes_on_its_last_sentence_once_learned(impl, order):
    # feed one sentence at a time and never flush: after the first epochs, the fix comes out of
    # the push that brings the epoch's last sentence, closed by the learned end of cycle
    ew = w.EpochWriter(order=order, dual_band=True)
    dec, asm = impl.NmeaDecoder(), impl.EpochAssembler()
    for k in range(8):
        lines = ew.sentences(state(k))
        for i, line in enumerate(lines):
            got = [x for x in asm.push(dec.feed(line)) if type(x) is impl.Epoch]
            if k >= 3 and i == len(lines) - 1:
                assert [e.time_ns for e in got] == [T0 + k * SEC]
                assert got[0].closed_by == "end" and not asm.open
            elif k >= 3:
                assert got == []
    assert asm.ender and asm.closed_by_end >= 5 and asm.closed_by_flush == 0


def test_sky_growing_a_gsv_part_keeps_the_learned_end(impl):
    # the last GSV part is the end of cycle whatever its number: a sky that goes from 2 to 3 parts
    # still closes on its last part
    ew = w.EpochWriter(order=("GGA", "RMC", "GSA", "GSV"))
    dec, asm = impl.NmeaDecoder(), impl.EpochAssembler()
    for k in range(4):
        asm.push(dec.feed(ew.epoch(state(k))))
    assert asm.ender
    more = state(4, satellites=sky(bds_used=6, extra_bds=6))
    got = [x for x in asm.push(dec.feed(ew.epoch(more))) if type(x) is impl.Epoch]
    assert [e.time_ns for e in got] == [T0 + 4 * SEC] and got[0].closed_by == "end"


def test_receiver_publishes_on_the_last_sentence_without_tick(impl):
    # the sans-io protocol on a live clock: the fix publication comes back from the feed() of the
    # epoch's last sentence; tick() is never called, and the counters say the end closed it
    proto = ReceiverProtocol("bd-1", implementation=impl, sky_decimation=0)
    ew = w.EpochWriter(order=("GGA", "RMC", "GSA", "GSV"), dual_band=True)
    now = 10**18
    fixes_at = []
    for k in range(10):
        lines = ew.sentences(state(k))
        for i, line in enumerate(lines):
            now += 1_000_000
            fixes = [p for p in proto.feed(line, now) if p.channel == "fix"]
            if fixes:
                fixes_at.append((k, i == len(lines) - 1, fixes[0].payload["time_ns"]))
    late = [x for x in fixes_at if x[2] >= T0 + 3 * SEC]
    assert late == [(k, True, T0 + k * SEC) for k in range(3, 10)]
    assert proto.closed_by["end"] >= 7 and proto.closed_by["flush"] == 0
    assert all(x[2] is not None for x in fixes_at)


def test_irregular_cycle_falls_back_to_the_quiet_gap(impl):
    # a receiver that ends each epoch with a different sentence never gets a learned end: tick()
    # after half a period of silence closes the epoch, and says so
    proto = ReceiverProtocol("bd-2", implementation=impl, sky_decimation=0, epoch_period_s=1.0)
    orders = [("GGA", "RMC", "GSA"), ("GGA", "GSA", "RMC")]
    now = 10**18
    fixes = []
    for k in range(6):
        ew = w.EpochWriter(order=orders[k % 2])
        fixes += [p for p in proto.feed(ew.epoch(state(k)), now) if p.channel == "fix"]
        now += 600_000_000
        fixes += [p for p in proto.tick(now) if p.channel == "fix"]
        now += 400_000_000
    assert [p.payload["time_ns"] for p in fixes] == [T0 + k * SEC for k in range(6)]
    assert proto.closed_by["flush"] >= 3


def test_cycle_is_learned_when_the_quiet_gap_timer_closes_epochs(impl):
    # live: the receiver writes an epoch, then is quiet until the next one, and tick() runs in the
    # gaps. The first epochs are closed by the timer; those closings teach the end of cycle, and from
    # then on the feed() of the last sentence publishes the fix and tick() finds nothing to close
    proto = ReceiverProtocol("bd-3", implementation=impl, sky_decimation=0, epoch_period_s=1.0)
    ew = w.EpochWriter(order=("GGA", "RMC", "GSA", "GSV"), dual_band=True)
    now = 10**18
    from_feed, from_tick = [], []
    for k in range(8):
        for line in ew.sentences(state(k)):
            now += 2_000_000
            from_feed += [(k, p.payload["time_ns"]) for p in proto.feed(line, now) if p.channel == "fix"]
        for _ in range(9):
            now += 100_000_000
            from_tick += [(k, p.payload["time_ns"]) for p in proto.tick(now) if p.channel == "fix"]
    assert from_tick[:2] == [(0, T0), (1, T0 + SEC)]
    assert all(k < 3 for k, _ in from_tick)
    assert [t for k, t in from_feed if k >= 3] == [T0 + k * SEC for k in range(3, 8)]
    assert sorted(t for _, t in from_feed + from_tick) == [T0 + k * SEC for k in range(8)]
    assert proto.closed_by["end"] >= 5 and proto.closed_by["next"] == 0


# twins: dual-band streams in every order, fragments and flushes between epochs -------------------

from hypothesis import given, settings, strategies as st  # noqa: E402

from tests.conftest import FUZZ_EXAMPLES  # noqa: E402
from tianwang.gateway import framing  # noqa: E402

dual_parts = st.lists(
    st.tuples(
        st.integers(0, 2),  # seconds forward
        st.sampled_from(ORDERS + [("GSA", "GSV"), ("GGA",), ("RMC", "GSA", "GSA")]),
        st.booleans(),  # dual band
        st.sampled_from([0, 1]),  # fix quality
        st.booleans(),  # the quiet-gap timer fires after it
        st.binary(max_size=6),  # noise
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=max(50, FUZZ_EXAMPLES // 10))
@given(parts=dual_parts, split=st.integers(1, 40))
def test_fuzz_dual_band_epochs_twins_agree(parts, split):
    results = []
    for impl in framing.implementations():
        dec, asm = impl.NmeaDecoder(), impl.EpochAssembler()
        got, k = [], 0
        for step, order, dual, quality, flush, noise in parts:
            k += step
            data = w.EpochWriter(order=order, dual_band=dual).epoch(state(k, quality=quality)) + noise
            for i in range(0, len(data), split):
                got += asm.push(dec.feed(data[i : i + split]))
            if flush:
                got += asm.flush()
        got += asm.push(dec.finish()) + asm.flush(final=True)
        epochs = [(summary(e), e.closed_by) for e in got if type(e) is impl.Epoch]
        results.append((epochs, asm.fragments, asm.closed_by_end, asm.closed_by_next, asm.closed_by_flush, asm.ender))
        # never a fix without time and position unless the receiver said so in a GGA/RMC
        for e in got:
            if type(e) is impl.Epoch:
                p = e.fix_payload()
                assert p["time_ns"] is not None or p["lat"] is not None or e.no_fix_reason != "no position"
    assert all(r == results[0] for r in results)


def test_tick_due_follows_what_can_happen_next(impl):
    # the driver's timer fires when tick_due_ns says something can be due: the quiet-gap close of an
    # open epoch, then STALE; a tick at that time publishes, a tick just before it does not
    period = 1.0
    proto = ReceiverProtocol("bd-3", implementation=impl, sky_decimation=0, epoch_period_s=period, silent_s=10.0)
    ew = w.EpochWriter(order=("GGA", "RMC", "GSA"))
    now = 10**18
    for k in range(4):  # the cycle is learned: later epochs close on their last sentence
        proto.feed(ew.epoch(state(k)), now)
        now += SEC
    closed_at = now - SEC
    assert not proto.epoch_open
    # nothing open: the next thing that can happen is STALE, periods away (no tick in between)
    stale_due = proto.tick_due_ns()
    assert stale_due >= closed_at + 2 * SEC
    assert [p.channel for p in proto.tick(stale_due - 1)] == []
    assert [(p.channel, p.payload["state"]) for p in proto.tick(stale_due)] == [("state", "STALE")]
    # half an epoch: open, and the quiet-gap close is due half a period after its last bytes
    lines = ew.sentences(state(10))
    proto.feed(lines[0], now)
    assert proto.epoch_open
    assert proto.tick_due_ns() == now + SEC // 2
    assert [p.channel for p in proto.tick(now + SEC // 2 - 1) if p.channel == "fix"] == []
    assert [p.channel for p in proto.tick(now + SEC // 2) if p.channel == "fix"] == ["fix"]
    assert not proto.epoch_open


def test_epoch_counts_are_the_closed_by_fragments_and_superseded_totals(impl):
    # the driver reads its epoch counters from epoch_counts once per epoch: the same totals as the
    # closed_by, fragments and superseded views, NMEA and binary assemblers together
    proto = ReceiverProtocol("bd-4", implementation=impl, sky_decimation=0, epoch_period_s=1.0)
    orders = [("GGA", "RMC", "GSA"), ("GGA", "GSA", "RMC"), ("GSA",)]
    now = 10**18
    seen = []
    for k in range(9):
        ew = w.EpochWriter(order=orders[k % 3])
        proto.feed(ew.epoch(state(k)), now)
        now += 600_000_000
        proto.tick(now)
        now += 400_000_000
        cb = proto.closed_by
        assert proto.epoch_counts == (cb["end"], cb["next"], cb["flush"], proto.fragments, proto.superseded)
        seen.append(proto.epoch_counts)
    assert seen[-1] != seen[0] and sum(seen[-1][:3]) >= 6
