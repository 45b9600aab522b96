"""Topic matcher and envelope encoder: compiled and twin, checked against each other and against
the protobuf library."""

import pytest
from hypothesis import given, strategies as st

from tianwang.gateway import framing
from tianwang.gateway.errors import FrameError, TopicError
from tianwang.v1 import gateway_pb2 as pb

level = st.text(alphabet="abcxyz019-_.:", min_size=1, max_size=6)
topics = st.lists(level, min_size=1, max_size=5).map("/".join)
pattern_level = st.one_of(level, st.just("+"))
patterns = st.builds(
    lambda levels, tail: "/".join(levels + (["#"] if tail else [])) or "#",
    st.lists(pattern_level, min_size=0, max_size=5),
    st.booleans(),
)


@pytest.mark.parametrize(
    "pattern,topic,expected",
    [
        ("gnss/#", "gnss/bd-1/fix", True),
        ("gnss/#", "gnss", True),
        ("gnss/+/fix", "gnss/bd-1/fix", True),
        ("gnss/+/fix", "gnss/bd-1/state", False),
        ("gnss/+", "gnss/bd-1/fix", False),
        ("+/+/health", "signal/tsc-1/health", True),
        ("#", "audit/x/command", True),
        ("gnss/bd-1/fix", "gnss/bd-1/fix", True),
        ("gnss/bd-1/fix", "gnss/bd-1/fix/extra", False),
        ("gnss/bd-1/fix/#", "gnss/bd-1/fix", True),
    ],
)
def test_pattern_matches(impl, pattern, topic, expected):
    assert impl.pattern_matches(pattern, topic) is expected
    assert impl.TopicFilter([pattern]).matches(topic) is expected


@pytest.mark.parametrize("bad", ["", "a//b", "a/#/b", "a/b#", "a+/b", "/a", "a/", "x\x00y", "a" * 600])
def test_bad_patterns_rejected(impl, bad):
    with pytest.raises(TopicError):
        impl.validate_pattern(bad)
    with pytest.raises(TopicError):
        impl.TopicFilter([bad])


@pytest.mark.parametrize("bad", ["", "a//b", "a/+/b", "a/#", "/a", 5])
def test_bad_topics_rejected(impl, bad):
    with pytest.raises(TopicError):
        impl.validate_topic(bad)


def test_filter_with_acl(impl):
    flt = impl.TopicFilter(["#"], allowed=["gnss/#", "audit/+/command"])
    assert flt.matches("gnss/a/fix")
    assert flt.matches("audit/a/command")
    assert not flt.matches("signal/t/lamps")
    assert not flt.match_all
    assert flt.cache_size == 3


def test_empty_filter_rejected(impl):
    with pytest.raises(TopicError):
        impl.TopicFilter([])


@given(pattern=patterns, topic=topics)
def test_matcher_twins_agree(pattern, topic):
    results = {
        (i.pattern_matches(pattern, topic), i.TopicFilter([pattern]).matches(topic)) for i in framing.implementations()
    }
    assert len(results) == 1
    a, b = results.pop()
    assert a == b


envelopes = st.tuples(
    st.integers(0, 2**64 - 1),
    topics,
    st.text(max_size=20),
    st.integers(-(2**63), 2**63 - 1),
    st.integers(-(2**63), 2**63 - 1),
    st.binary(max_size=300),
)


@given(envelopes)
def test_envelope_bytes_equal_protobuf(fields):
    seq, topic, dev, dt, gt, payload = fields
    expected = pb.Envelope(
        seq=seq, topic=topic, device_id=dev, device_time_ns=dt, gateway_time_ns=gt, payload=payload
    ).SerializeToString()
    for impl in framing.implementations():
        assert impl.encode_envelope(seq, topic, dev, dt, gt, payload) == expected


@given(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1), st.text(max_size=40))
def test_gap_bytes_equal_protobuf(f, t, reason):
    expected = pb.Batch(gap=pb.Gap(from_seq=f, to_seq=t, reason=reason)).SerializeToString()
    for impl in framing.implementations():
        assert impl.encode_gap(f, t, reason) == expected


def test_encoder_rejects_out_of_range(impl):
    with pytest.raises(OverflowError):
        impl.encode_envelope(-1, "a", "b", 0, 0, b"")
    with pytest.raises(OverflowError):
        impl.encode_envelope(1, "a", "b", 2**63, 0, b"")
    with pytest.raises(TypeError):
        impl.encode_envelope(1, "a", "b", 0, 0, "not bytes")


@given(st.lists(st.tuples(topics, st.binary(max_size=200)), min_size=1, max_size=60), st.data())
def test_log_collect_decodes_and_twins_agree(items, data):
    pats = data.draw(st.lists(patterns, min_size=1, max_size=3))
    max_n = data.draw(st.integers(1, 70))
    max_bytes = data.draw(st.integers(1, 5000))
    retention = data.draw(st.integers(200, 20000))
    outcomes = []
    for impl in framing.implementations():
        log = impl.EntryLog(retention)
        for i, (topic, payload) in enumerate(items):
            assert log.append(topic, "dev", i, i * 10, payload) == i + 1
        flt = impl.TopicFilter(pats)
        seq = log.first_seq
        got = []
        while seq < log.next_seq:
            blob, n, seq2 = log.collect(seq, flt, max_n, max_bytes)
            batch = pb.Batch.FromString(blob)
            assert len(batch.envelopes) == n == impl.count_envelopes(blob)[0]
            assert n <= max_n
            if n > 1:
                assert len(blob) <= max_bytes
            assert seq2 > seq
            got += [(e.seq, e.topic, e.device_time_ns, e.gateway_time_ns, e.payload) for e in batch.envelopes]
            seq = seq2
        expected = [
            (s, items[s - 1][0], s - 1, (s - 1) * 10, items[s - 1][1])
            for s in range(log.first_seq, log.next_seq)
            if any(framing.twins().pattern_matches(p, items[s - 1][0]) for p in pats)
        ]
        assert got == expected
        outcomes.append((log.first_seq, log.next_seq, log.nbytes, log.trimmed, got))
    assert all(o == outcomes[0] for o in outcomes)


def test_log_retention_and_gap_contract(impl):
    log = impl.EntryLog(64 * 1024)
    for _ in range(5000):
        log.append("t/x/y", "x", 0, 1, b"p" * 40)
    assert log.next_seq == 5001
    assert log.first_seq > 1
    assert log.nbytes <= 64 * 1024
    assert log.trimmed == log.first_seq - 1
    with pytest.raises(ValueError):
        log.collect(1, None, 10, 10_000)
    with pytest.raises(KeyError):
        log.entry(1)
    blob, n, nxt = log.collect(log.first_seq, None, 10, 10_000)
    assert n == 10 and nxt == log.first_seq + 10
    assert pb.Batch.FromString(blob).envelopes[0].seq == log.first_seq
    # nothing new: an empty answer that does not move the cursor
    assert log.collect(log.next_seq, None, 10, 10_000) == (b"", 0, log.next_seq)


def test_log_scan_limit(impl):
    log = impl.EntryLog(10_000_000)
    for _ in range(1000):
        log.append("a/b/c", "b", 0, 1, b"")
    blob, n, nxt = log.collect(1, impl.TopicFilter(["nothing/+/here"]), 10, 10_000, 100)
    assert (blob, n, nxt) == (b"", 0, 101)


@pytest.mark.parametrize("blob", [b"\x0a\x05ab", b"\x0a", b"\x0b", b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"])
def test_count_envelopes_rejects_garbage(impl, blob):
    with pytest.raises(FrameError):
        impl.count_envelopes(blob)


def test_log_publish_encodes_stamps_and_refuses(impl):
    import time

    import msgpack

    log = impl.EntryLog(1 << 20)
    log.pack = msgpack.Packer(use_bin_type=True).pack
    log.max_payload = 100
    before = time.time_ns()
    seq = log.publish("gnss/a/fix", "a", {"lat": 31.5, "raw": b"\x01"}, 7)
    after = time.time_ns()
    env = pb.Batch.FromString(log.entry(seq)).envelopes[0]
    assert (env.seq, env.topic, env.device_id, env.device_time_ns) == (1, "gnss/a/fix", "a", 7)
    assert before <= env.gateway_time_ns <= after
    assert msgpack.unpackb(env.payload) == {"lat": 31.5, "raw": b"\x01"}
    with pytest.raises(FrameError, match="cannot be encoded"):
        log.publish("gnss/a/fix", "a", {"x": object()})
    with pytest.raises(FrameError, match="exceeds 100"):
        log.publish("gnss/a/fix", "a", {"x": "y" * 200})
    assert log.rejected == 2 and log.next_seq == 2


async def test_log_append_wakes_the_waiter(impl):
    import asyncio

    log = impl.EntryLog(1 << 20)
    fut = asyncio.get_running_loop().create_future()
    log.waiter = fut
    log.append("a/b/c", "b", 0, 1, b"")
    assert fut.done() and log.waiter is None
