"""`scan_entries` (reading a durable journal's blocks back), compiled against twin: on blocks built
by the in-memory log itself, with any cursor, filter and caps, both give the bytes `collect` gives
over the same entries; damaged blocks raise FrameError in both, never something else."""

import pytest
from hypothesis import given, strategies as st

from tianwang.gateway import framing
from tianwang.gateway.errors import FrameError

IMPLS = framing.implementations()
pytestmark = pytest.mark.twins
TOPICS = ["gnss/bd-1/fix", "gnss/bd-2/fix", "jt808/t-1/location", "signal/tsc-1/lamps", "audit/x/command"]
PATTERNS = [["#"], ["gnss/#"], ["gnss/+/fix"], ["jt808/#", "signal/tsc-1/lamps"], ["nothing/#"]]


def make_block(ns, first_seq, picks, payload_len):
    log = ns.EntryLog(1 << 30, first_seq)
    for i, t in enumerate(picks):
        log.append(
            TOPICS[t],
            t and "dev" or "",
            i,
            1_700_000_000_000_000_000 + i,
            b"\x81\xa1n" + bytes([i % 128]) * payload_len,
        )
    data, n, _ = log.collect(first_seq, None, len(picks), 1 << 30)
    assert n == len(picks)
    return log, data


@given(
    first=st.integers(1, 1 << 40),
    picks=st.lists(st.integers(0, len(TOPICS) - 1), min_size=1, max_size=60),
    skip=st.integers(0, 70),
    pattern=st.sampled_from(PATTERNS),
    max_n=st.integers(0, 70),
    max_bytes=st.integers(1, 4000),
    strict=st.booleans(),
    payload_len=st.integers(0, 200),
)
def test_twins_agree_with_each_other_and_with_collect(
    first, picks, skip, pattern, max_n, max_bytes, strict, payload_len
):
    twin = framing.twins()
    log, block = make_block(twin, first, picks, payload_len)
    cursor = first + skip
    results = []
    for ns in IMPLS:
        flt = ns.TopicFilter(pattern)
        results.append(ns.scan_entries(block, 0, first, cursor, flt, max_n, max_bytes, strict))
    assert all(r == results[0] for r in results)
    data, n, seq, pos = results[0]
    # the same as the in-memory log over the same entries (when the cursor is within them)
    if cursor < log.next_seq and max_n > 0:
        expect = log.collect(cursor, twin.TopicFilter(pattern), max_n, max_bytes, 1 << 20, strict)
        assert (data, n) == expect[:2]
        assert seq <= log.next_seq
    # resuming at (seq, pos) continues exactly where it stopped
    if pos < len(block) and max_n > 0:
        rest = IMPLS[0].scan_entries(block, pos, seq, cursor, IMPLS[0].TopicFilter(pattern), 1 << 20, 1 << 30)
        whole = IMPLS[0].scan_entries(
            block, 0, first, max(cursor, seq), IMPLS[0].TopicFilter(pattern), 1 << 20, 1 << 30
        )
        assert rest[:3] == whole[:3]


@pytest.mark.parametrize("ns", IMPLS, ids=lambda ns: ns.NAME)
def test_match_all_block_comes_back_whole(ns):
    _, block = make_block(ns, 7, [0, 1, 2, 3, 4] * 20, 30)
    data, n, seq, pos = ns.scan_entries(block, 0, 7, 7, None, 1000, 1 << 20)
    assert (data, n, seq, pos) == (block, 100, 107, len(block))


@given(
    picks=st.lists(st.integers(0, len(TOPICS) - 1), min_size=1, max_size=20),
    cut=st.integers(0, 2000),
    flip=st.tuples(st.integers(0, 2000), st.integers(1, 255)),
    pattern=st.sampled_from(PATTERNS),
)
def test_damaged_blocks_raise_frame_error_in_both(picks, cut, flip, pattern):
    _, block = make_block(framing.twins(), 1, picks, 10)
    damaged = bytearray(block[: cut % (len(block) + 1)])
    if damaged:
        i = flip[0] % len(damaged)
        damaged[i] ^= flip[1]
    outcomes = []
    for ns in IMPLS:
        try:
            outcomes.append(("ok", ns.scan_entries(bytes(damaged), 0, 1, 1, ns.TopicFilter(pattern), 1000, 1 << 20)))
        except FrameError as exc:
            outcomes.append(("FrameError", str(exc)))
    assert all(o == outcomes[0] for o in outcomes)


@pytest.mark.parametrize("ns", IMPLS, ids=lambda ns: ns.NAME)
def test_an_entry_with_the_wrong_seq_is_refused(ns):
    _, block = make_block(ns, 5, [0, 1], 4)
    with pytest.raises(FrameError, match="carries seq 5"):
        ns.scan_entries(block, 0, 6, 6, None, 10, 1 << 20)
    with pytest.raises(ValueError):
        ns.scan_entries(block, len(block) + 1, 5, 5, None, 10, 1 << 20)


@pytest.mark.parametrize(
    "buf, message",
    [
        (b"\x0a", "truncated varint"),
        (b"\x0a" + b"\xff" * 11 + b"\x01", "varint longer than 10 bytes"),
        (b"\x0a\x05\x08\xff", "5 bytes run past the end of the block"),
        (b"\x12\x00", "expected an envelope field, found byte 0x12"),
    ],
)
def test_malformed_blocks_name_the_same_fault_in_both(buf, message):
    for ns in IMPLS:
        with pytest.raises(FrameError, match=message):
            ns.scan_entries(buf, 0, 1, 1, None, 10, 1000)
