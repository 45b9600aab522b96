"""The simulator's cheap wire path says the same as the product's SIP and MANSCDP layers: request
bytes equal to sip.build_request's, responses read by the scan as sip.parse_message reads them (or
left to it), bodies from templates equal to manscdp.build's, catalogs split as the greedy split
does, and the fleet's one transaction heap keeping RFC 3261's timers (also over a real UDP socket)."""

import asyncio
import random

import pytest
from hypothesis import given, settings, strategies as st

from tianwang.drivers.gb28181 import manscdp, sim_bodies as bodies, sip
from tianwang.drivers.gb28181.sim_device import SimChannel
from tianwang.drivers.gb28181.sim_wire import (
    OutgoingTransactions,
    request_bytes,
    response_bytes,
    scan_request,
    scan_response,
)
from tianwang.drivers.gb28181.sim_world import ALARM_KINDS, PtzHead
from tianwang.drivers.gb28181.simulator import Fleet

pytestmark = pytest.mark.timeout(60)

SERVER = "sip:43030000002000000001@4303000000"
DEVICE = "sip:43030000001180000001@4303000000"
token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-.", min_size=1, max_size=24)
header_text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=40)


def both(**kw) -> tuple[bytes, bytes]:
    ours = request_bytes(**kw)
    theirs = sip.build_request(**kw).to_bytes()
    return ours, theirs


@settings(max_examples=200, deadline=None)
@given(
    method=st.sampled_from(["REGISTER", "MESSAGE", "NOTIFY", "BYE", "message"]),
    host=st.sampled_from(["127.0.0.1", "10.1.2.3", "[::1]"]),
    port=st.integers(1, 65535),
    transport=st.sampled_from(["UDP", "TCP", "udp"]),
    tags=st.tuples(token, st.none() | token),
    call_id=token,
    cseq=st.integers(1, 2**31 - 1),
    branch=token,
    contact=st.booleans(),
    extra=st.lists(
        st.tuples(st.sampled_from(["Expires", "Event", "Subscription-State", "X-GB-Ver", "user-agent"]), header_text),
        max_size=4,
        unique_by=lambda pair: pair[0].lower(),
    ),
    body=st.binary(max_size=64),
    content_type=st.none() | st.just("Application/MANSCDP+xml"),
)
def test_request_bytes_are_the_builders_bytes(
    method, host, port, transport, tags, call_id, cseq, branch, contact, extra, body, content_type
):
    ours, theirs = both(
        method=method,
        uri=SERVER,
        via_host=host,
        via_port=port,
        transport=transport,
        from_uri=DEVICE,
        from_tag=tags[0],
        to_uri=SERVER,
        to_tag=tags[1],
        call_id=call_id,
        cseq=cseq,
        branch="z9hG4bK" + branch,
        contact=f"<sip:43030000001180000001@{host}:{port}>" if contact else None,
        headers=extra,
        body=body,
        content_type=content_type,
    )
    assert ours == theirs
    assert sip.parse_message(ours).branch == "z9hG4bK" + branch


def test_request_bytes_refuse_a_line_break_in_a_header_like_the_builder():
    kw = dict(
        method="MESSAGE",
        uri=SERVER,
        via_host="127.0.0.1",
        via_port=5060,
        transport="UDP",
        from_uri=DEVICE,
        from_tag="a",
        to_uri=SERVER,
        to_tag=None,
        call_id="c",
        cseq=1,
        branch="z9hG4bKx",
        contact=None,
        headers=[("Event", "presence\r\nVia: forged")],
    )
    with pytest.raises(ValueError):
        request_bytes(**kw)
    with pytest.raises(ValueError):
        sip.build_request(**kw)


def _request(method="REGISTER", branch="z9hG4bK1a2b3c", vias=1) -> sip.SipRequest:
    req = sip.build_request(
        method,
        SERVER,
        via_host="127.0.0.1",
        via_port=40001,
        transport="UDP",
        from_uri=DEVICE,
        from_tag="f1",
        to_uri=DEVICE,
        call_id="call-1",
        cseq=7,
        branch=branch,
    )
    for i in range(1, vias):
        req.headers.add("Via", f"SIP/2.0/UDP 10.0.0.{i}:5060;branch=z9hG4bKproxy{i}")
    return req


RESPONSES = [
    (200, [("Expires", "3600"), ("Date", "2026-12-07T12:00:00.000")], b""),
    (401, [("WWW-Authenticate", 'Digest realm="4303000000", nonce="abc,def", qop="auth", algorithm=MD5')], b""),
    (423, [("Min-Expires", "3600")], b""),
    (100, [], b""),
    (481, [], b""),
    (200, [("Content-Type", "Application/MANSCDP+xml")], b"<Response/>\r\n"),
]


@pytest.mark.parametrize("status,headers,body", RESPONSES)
@pytest.mark.parametrize("vias", [1, 2])
def test_scan_reads_a_response_as_the_full_parser_does(status, headers, body, vias):
    resp = sip.build_response(
        _request(vias=vias), status, headers=headers, body=body, to_tag="t9", source=("127.0.0.1", 40001)
    )
    data = resp.to_bytes()
    full = sip.parse_message(data)
    scanned = scan_response(data)
    assert scanned is not None
    assert (scanned.status, scanned.reason, scanned.branch, scanned.method) == (
        full.status,
        full.reason,
        full.branch,
        full.cseq[1],
    )
    for name in ("WWW-Authenticate", "expires", "Min-Expires", "Call-ID", "Content-Type", "X-Absent"):
        assert scanned.headers.get(name) == full.headers.get(name)


def _ok() -> bytes:
    return sip.build_response(_request(), 200, headers=[("Expires", "60")], to_tag="t").to_bytes()


@pytest.mark.parametrize(
    "mangle",
    [
        lambda d: d.replace(b"\r\nVia:", b"\r\nv:"),  # compact form
        lambda d: d.replace(b"\r\nExpires: 60", b"\r\nExpires:\r\n 60"),  # folded
        lambda d: d.replace(b";branch=z9hG4bK1a2b3c", b""),  # no branch
        lambda d: d.replace(b"CSeq: 7 REGISTER\r\n", b""),  # no CSeq
        lambda d: d.replace(b"Content-Length: 0", b"Content-Length: 40"),  # short body
        lambda d: d.replace(b"CSeq: 7 REGISTER", b"CSeq: 7 REGISTER\r\nCSeq: 8 REGISTER"),  # conflicting
        lambda d: d.replace(b"SIP/2.0 200", b"SIP/2.0 20x"),
        lambda d: d.replace(b"SIP/2.0 200 OK", b"REGISTER sip:x@y SIP/2.0"),
        lambda d: d.replace(b"\r\n\r\n", b"\r\n"),
    ],
)
def test_scan_leaves_what_it_cannot_vouch_for_to_the_full_parser(mangle):
    data = mangle(_ok())
    assert data != _ok()
    assert scan_response(data) is None


@settings(max_examples=300, deadline=None)
@given(cut=st.integers(0, 400), junk=st.binary(max_size=8))
def test_scan_agrees_with_the_full_parser_on_whatever_it_accepts(cut, junk):
    data = _ok()
    data = data[:cut] + junk + data[cut:]
    scanned = scan_response(data)
    if scanned is None:
        return
    try:
        full = sip.parse_message(data)
    except sip.SipError:
        return  # the scan reads only what a device needs; it is not a validator
    assert (scanned.status, scanned.branch, scanned.method) == (full.status, full.branch, full.cseq[1])


class _Dev:
    def __init__(self):
        self.sent = []


def test_outgoing_transactions_retransmit_at_t1_doubling_to_t2_and_time_out_at_64_t1():
    tx = OutgoingTransactions()
    dev, answers = _Dev(), []
    tx.start(dev, "z9hG4bKa", "MESSAGE", b"req", False, answers.append, now=0.0)
    resent_at = []
    t = 0.0
    while t < 40.0:
        t = round(t + 0.05, 2)
        resend, timed_out = tx.due(t)
        resent_at += [t for _ in resend]
        if timed_out:
            for cb in timed_out:
                cb(None)
            break
    gaps = [round(b - a, 2) for a, b in zip([0.0, *resent_at], resent_at, strict=False)]
    assert gaps[:4] == [0.5, 1.0, 2.0, 4.0] and set(gaps[4:]) == {4.0}  # Timer E capped at T2
    assert t == 32.0 and answers == [None] and len(tx) == 0  # Timer F


def test_outgoing_transactions_match_by_branch_and_method_and_slow_down_after_a_provisional():
    tx = OutgoingTransactions()
    dev, answers = _Dev(), []
    tx.start(dev, "z9hG4bKb", "REGISTER", b"reg", False, answers.append, now=0.0)
    assert tx.response("z9hG4bKb", "MESSAGE", 200, 0.1) is None  # another method: stray
    assert tx.response("z9hG4bKother", "REGISTER", 200, 0.1) is None
    assert tx.response("z9hG4bKb", "REGISTER", 100, 0.2) == (False, answers.append)
    assert tx.due(3.0) == ([], [])  # at T2 after the 100, not at T1
    resend, _ = tx.due(4.3)
    assert resend == [(dev, b"reg")]
    final, cb = tx.response("z9hG4bKb", "REGISTER", 200, 4.4)
    assert final and cb == answers.append and len(tx) == 0
    assert tx.response("z9hG4bKb", "REGISTER", 200, 4.5) is None  # a repeated final: stray


def test_outgoing_transactions_never_resend_over_tcp_but_time_out():
    tx = OutgoingTransactions()
    tx.start(_Dev(), "z9hG4bKc", "MESSAGE", b"m", True, None, now=10.0)
    assert tx.due(41.9) == ([], [])
    assert tx.due(42.0) == ([], [None])


def _channel(i: int, name: str) -> SimChannel:
    return SimChannel(
        f"430300000013100{i:05d}", name, "430302", f"湖南省湘潭市岳塘区{name}", 27.85 + i / 1000, 112.9, 1, PtzHead()
    )


class _Device:
    manufacturer, model = "Tianwang", "TW-NVR-1604"

    def __init__(self, channels):
        self.id = "43030000001180000001"
        self.channels = channels


names = st.text(st.characters(whitelist_categories=("Lo",), max_codepoint=0x9FFF), min_size=1, max_size=12).map(
    lambda s: s.encode("gb2312", "ignore").decode("gb2312") or "湘潭"
)


@settings(max_examples=100, deadline=None)
@given(sn=st.integers(0, 10**10), name=names, extra=st.sampled_from(["", " & <东> ", "#t=1765090000000000000"]))
def test_templated_bodies_are_manscdps_bodies(sn, name, extra):
    ch = _channel(3, name + extra)
    for kind_name, kind in ALARM_KINDS.items():
        for root in ("Notify", "Response"):
            for stamp in (None, 1765090000123456789):
                desc = f"{ch.name}{kind.description}" + (f" #t={stamp}" if stamp else "")
                want = manscdp.build(
                    root,
                    "Alarm",
                    sn,
                    ch.id,
                    [
                        ("AlarmPriority", kind.priority),
                        ("AlarmMethod", kind.method),
                        ("AlarmTime", bodies.gb_time(1765090000.5)),
                        ("AlarmDescription", desc),
                        ("Longitude", f"{ch.lon:.6f}"),
                        ("Latitude", f"{ch.lat:.6f}"),
                        ("Info", {"AlarmType": kind.alarm_type}),
                    ],
                )
                assert bodies.alarm(sn, ch, kind, 1765090000.5, root=root, stamp_ns=stamp) == want, kind_name
    assert bodies.keepalive(sn, ch.id) == manscdp.build("Notify", "Keepalive", sn, ch.id, [("Status", "OK")])
    assert bodies.keepalive(sn, ch.id, [ch.id]) == manscdp.build(
        "Notify", "Keepalive", sn, ch.id, [("Status", "OK"), ("Info", {"DeviceID": [ch.id]})]
    )
    got = bodies.mobile_position(sn, ch.id, 1765090000.0, 27.8, 112.9, 36.04, 359.96, 52.4, root="Response")
    assert got == manscdp.build(
        "Response",
        "MobilePosition",
        sn,
        ch.id,
        [
            ("Time", bodies.gb_time(1765090000.0)),
            ("Longitude", "112.900000"),
            ("Latitude", "27.800000"),
            ("Speed", "36.0"),
            ("Direction", "360.0"),
            ("Altitude", "52"),
        ],
    )
    assert manscdp.parse(got).fields["Speed"] == "36.0"


def _greedy_chunks(sn, device, budget, per_chunk, bad_xml):
    """The split as the simulator made it before: grow a chunk while the built body fits."""
    items = [bodies._channel_item(ch, device, bad_xml=bad_xml and i == 0) for i, ch in enumerate(device.channels)]
    total = len(items)

    def body(group):
        raw = manscdp.build(
            "Response", "Catalog", sn, device.id, [("SumNum", total), ("DeviceList", manscdp.item_list(group))]
        )
        return bodies._unescape_amp(raw) if bad_xml and items[0] in group else raw

    chunks, group = [], []
    for it in items:
        if per_chunk is not None:
            if len(group) == per_chunk:
                chunks.append(body(group))
                group = []
            group.append(it)
            continue
        if group and len(body(group + [it])) > budget:
            chunks.append(body(group))
            group = [it]
        else:
            group = group + [it]
    chunks.append(body(group))
    return chunks


@pytest.mark.parametrize("n", [1, 2, 5, 9, 24])
@pytest.mark.parametrize("budget,per_chunk", [(1400, None), (600, None), (3000, None), (1400, 4)])
@pytest.mark.parametrize("bad_xml", [False, True])
def test_catalog_split_by_item_lengths_is_the_greedy_split(n, budget, per_chunk, bad_xml):
    rng = random.Random(n)
    chans = [
        _channel(i, rng.choice(["韶山路口", "湘潭大学北门", "岳塘 & 雨湖", "九华<大道>"]) * rng.randint(1, 3))
        for i in range(n)
    ]
    chans[-1].video_lost = True
    dev = _Device(chans)
    want = _greedy_chunks(90001, dev, budget, per_chunk, bad_xml)
    got = bodies.catalog_chunks(90001, dev, budget=budget, per_chunk=per_chunk, bad_xml=bad_xml)
    assert got == want
    if n >= 5 and budget == 1400:
        assert len(got) > 1  # several chunks, as the listener must gather


class _SilentThenAnswer(asyncio.DatagramProtocol):
    """A platform that lets the device's first two REGISTERs go unanswered and grants the third."""

    def __init__(self):
        self.arrivals = []
        self.done = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        msg = sip.parse_message(data)
        if msg.method != "REGISTER" or int(msg.headers.get("Expires")) == 0:
            return
        self.arrivals.append((asyncio.get_running_loop().time(), data))
        if len(self.arrivals) == 3:
            self.transport.sendto(sip.build_response(msg, 200, headers=[("Expires", "3600")]).to_bytes(), addr)
            if not self.done.done():
                self.done.set_result(None)


async def test_the_device_retransmits_its_request_over_udp_on_t1_until_answered():
    loop = asyncio.get_running_loop()
    transport, platform = await loop.create_datagram_endpoint(_SilentThenAnswer, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    fleet = Fleet("127.0.0.1", port, devices=1, channels=1, keepalive_s=3600)
    try:
        await fleet.start()
        await asyncio.wait_for(platform.done, 20)
        await fleet.wait_online(timeout=20)
        (t0, first), (t1, second), (t2, third) = platform.arrivals
        assert first == second == third  # the same request, branch and all
        assert t1 - t0 >= 0.45 and t2 - t1 >= 0.95  # T1, then 2*T1
        assert fleet.counters["retransmissions"] == 2 and fleet.counters["registered"] == 1
        assert len(fleet.outgoing) == 0
    finally:
        await fleet.stop(unregister=False)
        transport.close()


def _platform_message(branch="z9hG4bKq1", to_tag=None, body=b"", vias=1) -> sip.SipRequest:
    req = sip.build_request(
        "MESSAGE",
        DEVICE,
        via_host="127.0.0.1",
        via_port=5060,
        transport="UDP",
        from_uri=SERVER,
        from_tag="plat1",
        to_uri=DEVICE,
        to_tag=to_tag,
        call_id="c-77",
        cseq=12,
        branch=branch,
        body=body,
        content_type="Application/MANSCDP+xml" if body else None,
    )
    for i in range(1, vias):
        req.headers.add("Via", f"SIP/2.0/UDP 10.0.0.{i}:5060;rport;branch=z9hG4bKup{i}")
    return req


@settings(max_examples=150, deadline=None)
@given(
    branch=token,
    to_tag=st.none() | token,
    sn=st.integers(0, 10**9),
    vias=st.integers(1, 3),
    status=st.sampled_from([200, 400, 481]),
    device_tag=token,
    extra=st.lists(st.tuples(st.sampled_from(["Expires", "X-GB-Ver", "User-Agent"]), header_text), max_size=3),
    answer=st.binary(max_size=40),
)
def test_a_scanned_message_is_answered_with_the_builders_bytes(
    branch, to_tag, sn, vias, status, device_tag, extra, answer
):
    body = manscdp.build("Query", "Catalog", sn, "43030000001180000001")
    data = _platform_message("z9hG4bK" + branch, to_tag, body, vias).to_bytes()
    scanned = scan_request(data)
    full = sip.parse_message(data)
    assert scanned is not None and scanned.body == full.body and scanned.branch == full.branch

    kw = dict(to_tag=device_tag, headers=extra, body=answer, content_type="Application/MANSCDP+xml" if answer else None)
    assert response_bytes(scanned, status, **kw) == sip.build_response(full, status, **kw).to_bytes()


@pytest.mark.parametrize(
    "mangle",
    [
        lambda d: d.replace(b"\r\nVia:", b"\r\nv:", 1),
        lambda d: d.replace(b"\r\nCall-ID: c-77", b"\r\nCall-ID:\r\n c-77"),
        lambda d: d.replace(b"CSeq: 12 MESSAGE", b"CSeq: 12 NOTIFY"),
        lambda d: d.replace(b";branch=z9hG4bKq1", b""),
        lambda d: d.replace(b"Content-Length: ", b"Content-Length: 9"),
        lambda d: d.replace(b"Max-Forwards", b"To: <sip:other@x>\r\nMax-Forwards"),
        lambda d: d.replace(b"SIP/2.0/UDP 127.0.0.1:5060", b"SIP/2.0/UDP 127.0.0.1:5060, SIP/2.0/UDP 10.0.0.9", 1),
        lambda d: d.replace(b"MESSAGE sip:", b"MESSAGE tel:", 1),
    ],
)
def test_a_message_the_scan_cannot_vouch_for_goes_to_the_full_parser(mangle):

    good = _platform_message(body=b"<Query/>").to_bytes()
    assert scan_request(good) is not None
    data = mangle(good)
    assert data != good
    assert scan_request(data) is None
