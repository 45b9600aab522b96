"""GB/T 28181 SIP message layer (drivers/gb28181/sip.py): realistic device messages parsed, headers by
any spelling, bodies passed through untouched, build -> parse round trips, responses built for NAT,
TCP framing, and bad input refused by reason (Hypothesis: never any other exception)."""

import pytest
from hypothesis import given, strategies as st

from tianwang.drivers.gb28181 import sip
from tianwang.drivers.gb28181.sip import SipError, SipRequest, SipResponse
from tianwang.gateway.errors import FrameError


def crlf(text, body=b""):
    return text.replace("\n", "\r\n").encode() + body


REGISTER = crlf(
    "REGISTER sip:34020000002000000001@3402000000 SIP/2.0\n"
    "Via: SIP/2.0/UDP 192.168.1.64:5060;rport;branch=z9hG4bK1371463273\n"
    "From: <sip:34020000001320000001@3402000000>;tag=2043466181\n"
    "To: <sip:34020000001320000001@3402000000>\n"
    "Call-ID: 1011047669\n"
    "CSeq: 1 REGISTER\n"
    "Contact: <sip:34020000001320000001@192.168.1.64:5060>\n"
    "Max-Forwards: 70\n"
    "User-Agent: IP Camera\n"
    "Expires: 3600\n"
    "Content-Length: 0\n"
    "\n"
)

XML_GB2312 = (
    '<?xml version="1.0" encoding="GB2312"?>\r\n<Notify>\r\n<CmdType>Keepalive</CmdType>\r\n<SN>43</SN>\r\n'
    "<DeviceID>34020000001320000001</DeviceID>\r\n<Name>湘潭市岳塘区</Name>\r\n<Status>OK</Status>\r\n</Notify>\r\n"
).encode("gb2312")

MESSAGE_COMPACT = crlf(
    "MESSAGE sip:34020000002000000001@3402000000 SIP/2.0\n"
    "v: SIP/2.0/UDP 10.8.0.3:5061;branch=z9hG4bKaaa;rport\n"
    "v: SIP/2.0/TCP 10.9.0.1:5060;branch=z9hG4bKbbb, SIP/2.0/UDP 10.9.0.2;branch=z9hG4bKccc\n"
    'f: "Camera 1" <sip:34020000001320000001@3402000000>;tag=abc\n'
    "t: sip:34020000002000000001@3402000000\n"
    "i: 7f3a@10.8.0.3\n"
    "cseq: 20 MESSAGE\n"
    "c: Application/MANSCDP+xml; charset=GB2312\n"
    f"l: {len(XML_GB2312)}\n"
    "\n",
    XML_GB2312,
)

OK_200 = crlf(
    "SIP/2.0 200 OK\n"
    "Via: SIP/2.0/UDP 192.168.1.64:5060;rport=5060;received=203.0.113.7;branch=z9hG4bK1371463273\n"
    "From: <sip:34020000001320000001@3402000000>;tag=2043466181\n"
    "To: <sip:34020000001320000001@3402000000>;tag=987\n"
    "Call-ID: 1011047669\n"
    "CSeq: 2 REGISTER\n"
    "Contact: <sip:34020000001320000001@192.168.1.64:5060>;expires=3600\n"
    "Date: 2026-12-07T17:01:02.345\n"
    "Content-Length: 0\n"
    "\n"
)

UNAUTHORIZED_401 = crlf(
    "SIP/2.0 401 Unauthorized\n"
    "Via: SIP/2.0/UDP 192.168.1.64:5060;rport=5060;branch=z9hG4bK1371463273\n"
    "From: <sip:34020000001320000001@3402000000>;tag=2043466181\n"
    "To: <sip:34020000001320000001@3402000000>;tag=1\n"
    "Call-ID: 1011047669\n"
    "CSeq: 1 REGISTER\n"
    'WWW-Authenticate: Digest realm="3402000000", nonce="09a7e4b1c2", algorithm=MD5\n'
    "Content-Length: 0\n"
    "\n"
)


BLANK_LINES_BODY = b"<Notify>\r\n\r\n<SN>1</SN>\r\n\r\n</Notify>\r\n\r\n\r\n"
MESSAGE_BLANK_LINES_BODY = crlf(
    "MESSAGE sip:34020000002000000001@3402000000 SIP/2.0\n"
    "Via: SIP/2.0/TCP 10.8.0.3:5061;branch=z9hG4bKddd\n"
    "From: <sip:34020000001320000001@3402000000>;tag=abc\n"
    "To: <sip:34020000002000000001@3402000000>\n"
    "CALL-ID: blank@10.8.0.3\n"
    "cSeQ: 21 MESSAGE\n"
    "Content-Type: Application/MANSCDP+xml\n"
    f"Content-Length: {len(BLANK_LINES_BODY)}\n"
    "\n",
    BLANK_LINES_BODY,
)


def test_register_parsed():
    msg = sip.parse_message(REGISTER)
    assert isinstance(msg, SipRequest)
    assert msg.method == "REGISTER"
    assert msg.uri == "sip:34020000002000000001@3402000000"
    assert msg.request_uri.user == "34020000002000000001" and msg.request_uri.host == "3402000000"
    assert msg.call_id == "1011047669"
    assert msg.cseq == (1, "REGISTER")
    assert msg.branch == "z9hG4bK1371463273"
    assert msg.from_.user == "34020000001320000001" and msg.from_.tag == "2043466181"
    assert msg.to.tag is None
    assert msg.contact.uri.host == "192.168.1.64" and msg.contact.uri.port == 5060
    assert msg.int_header("Expires") == 3600
    via = msg.via[0]
    assert (via.transport, via.host, via.port) == ("UDP", "192.168.1.64", 5060)
    assert "rport" in via.params and via.rport is None
    assert msg.body == b""
    assert msg.content_type is None


def test_message_with_compact_headers_and_gb2312_body():
    msg = sip.parse_message(MESSAGE_COMPACT)
    assert msg.method == "MESSAGE"
    assert msg.body == XML_GB2312
    assert msg.content_type == "application/manscdp+xml"
    assert msg.call_id == "7f3a@10.8.0.3"
    assert msg.cseq == (20, "MESSAGE")
    assert [v.branch for v in msg.via] == ["z9hG4bKaaa", "z9hG4bKbbb", "z9hG4bKccc"]
    assert [v.transport for v in msg.via] == ["UDP", "TCP", "UDP"]
    assert msg.via[2].sent_by == ("10.9.0.2", 5060)
    assert msg.branch == "z9hG4bKaaa"
    assert msg.from_.display == "Camera 1"
    assert msg.to.uri.user == "34020000002000000001" and msg.to.tag is None
    # compact and full names, any case, reach the same header
    assert msg.headers.get("Content-Length") == msg.headers.get("l") == msg.headers.get("CONTENT-length")
    assert msg.headers.get_all("VIA") == msg.headers.get_all("v")


def test_responses_parsed():
    ok = sip.parse_message(OK_200)
    assert isinstance(ok, SipResponse)
    assert (ok.status, ok.reason) == (200, "OK")
    assert ok.method == "REGISTER" and ok.cseq == (2, "REGISTER")
    assert ok.via[0].received == "203.0.113.7" and ok.via[0].rport == 5060
    assert ok.to.tag == "987"
    assert ok.contact.params == {"expires": "3600"}
    assert ok.headers.get("date") == "2026-12-07T17:01:02.345"
    challenge = sip.parse_message(UNAUTHORIZED_401)
    assert challenge.status == 401 and challenge.reason == "Unauthorized"
    assert "nonce" in challenge.headers.get("WWW-Authenticate")


def test_body_with_blank_lines_is_framed_by_content_length():
    msg = sip.parse_message(MESSAGE_BLANK_LINES_BODY)
    assert msg.body == BLANK_LINES_BODY
    assert msg.call_id == "blank@10.8.0.3" and msg.cseq == (21, "MESSAGE")
    framed = sip.StreamFramer().feed(MESSAGE_BLANK_LINES_BODY + REGISTER)
    assert framed == [msg, sip.parse_message(REGISTER)]


def test_builders_refuse_header_injection():
    h = sip.Headers()
    with pytest.raises(ValueError):
        h.add("Subject", "a\r\nVia: SIP/2.0/UDP evil")
    with pytest.raises(ValueError):
        h.set("Subject", "a\nb")
    with pytest.raises(ValueError):
        h.add("Bad Name", "x")
    with pytest.raises(ValueError):
        sip.build_request(
            "MESSAGE",
            "sip:1@h",
            via_host="h",
            via_port=5060,
            transport="udp",
            from_uri="sip:2@h",
            from_tag="a",
            to_uri="sip:1@h",
            call_id="c\r\nX: y",
            cseq=1,
        )
    with pytest.raises(SipError) as info:
        sip.parse_message(REGISTER.replace(b"User-Agent: IP Camera", b"User-Agent: IP\rCamera"))
    assert info.value.reason == "bad_header"


def test_gb2312_bytes_in_headers_survive_a_round_trip():
    name = "湘潭 1号".encode("gb2312")
    raw = REGISTER.replace(b"From: <", b'From: "' + name + b'" <')
    msg = sip.parse_message(raw)
    assert msg.to_bytes() == raw


def test_round_trip_is_byte_exact_for_canonical_input():
    for raw in (REGISTER, OK_200, UNAUTHORIZED_401):
        assert sip.parse_message(raw).to_bytes() == raw


def test_compact_names_round_trip_to_equal_messages():
    msg = sip.parse_message(MESSAGE_COMPACT)
    again = sip.parse_message(msg.to_bytes())
    assert again == msg


def test_folded_header_is_joined():
    raw = REGISTER.replace(b"User-Agent: IP Camera\r\n", b"User-Agent: IP\r\n  Camera\r\n\tV5\r\n")
    assert sip.parse_message(raw).headers.get("user-agent") == "IP Camera V5"


def test_bare_lf_line_ends_accepted():
    raw = REGISTER.replace(b"\r\n", b"\n")
    msg = sip.parse_message(raw)
    assert msg.cseq == (1, "REGISTER") and msg.body == b""


def test_content_length_bounds_the_body_of_a_datagram():
    msg = sip.parse_message(MESSAGE_COMPACT + b"\x00\x00padding")
    assert msg.body == XML_GB2312


def test_missing_body_bytes_are_an_error():
    with pytest.raises(SipError) as info:
        sip.parse_message(MESSAGE_COMPACT[:-5])
    assert info.value.reason == "bad_content_length"


def test_no_content_length_takes_the_rest_of_the_datagram():
    raw = REGISTER.replace(b"Content-Length: 0\r\n", b"") + b"hello"
    assert sip.parse_message(raw).body == b"hello"


def test_leading_crlf_skipped_and_keepalive_told_apart():
    assert sip.parse_message(b"\r\n" + REGISTER).method == "REGISTER"
    with pytest.raises(SipError) as info:
        sip.parse_message(b"\r\n\r\n")
    assert info.value.reason == "keepalive"
    assert sip.is_keepalive(b"\r\n\r\n") and not sip.is_keepalive(REGISTER) and not sip.is_keepalive(b"")


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b"HELLO\r\n\r\n", "bad_start_line"),
        (b"REGISTER sip:a@b SIP/3.0\r\n\r\n", "unsupported_version"),
        (b"SIP/1.0 200 OK\r\n\r\n", "unsupported_version"),
        (b"REGISTER http://x SIP/2.0\r\n\r\n", "bad_start_line"),
        (REGISTER.replace(b"Call-ID: 1011047669\r\n", b""), "missing_header"),
        (REGISTER.replace(b"CSeq: 1 REGISTER", b"CSeq: 1 MESSAGE"), "bad_cseq"),
        (REGISTER.replace(b"CSeq: 1 REGISTER", b"CSeq: x REGISTER"), "bad_cseq"),
        (REGISTER.replace(b"CSeq: 1 REGISTER", b"CSeq: 99999999999 REGISTER"), "bad_cseq"),
        (REGISTER.replace(b"Content-Length: 0", b"Content-Length: -1"), "bad_content_length"),
        (REGISTER.replace(b"Content-Length: 0", b"Content-Length: 0\r\nl: 5"), "bad_content_length"),
        (REGISTER.replace(b"Max-Forwards: 70", b"Max Forwards 70"), "bad_header"),
        (REGISTER.replace(b"Via: SIP/2.0/UDP", b"Via: HTTP/1.1/UDP"), "bad_header"),
        (REGISTER.replace(b"From: <sip:", b"From: <tel:"), "bad_header"),
        (REGISTER.replace(b"Via:", b" Via:", 1), "bad_header"),
        (REGISTER[:200], "truncated"),
        (REGISTER[:40], "bad_start_line"),
        (b"", "empty"),
    ],
)
def test_bad_messages_raise_by_reason(raw, reason):
    with pytest.raises(SipError) as info:
        sip.parse_message(raw)
    assert info.value.reason == reason
    assert isinstance(info.value, FrameError)


def test_size_limits():
    with pytest.raises(SipError) as info:
        sip.parse_message(REGISTER + b"x" * 70000)
    assert info.value.reason == "too_large"
    many = REGISTER.replace(b"Expires: 3600\r\n", b"X-Pad: 1\r\n" * 200)
    with pytest.raises(SipError) as info:
        sip.parse_message(many)
    assert info.value.reason == "too_large"
    long_line = REGISTER.replace(b"User-Agent: IP Camera", b"User-Agent: " + b"a" * 9000)
    with pytest.raises(SipError) as info:
        sip.parse_message(long_line)
    assert info.value.reason == "too_large"
    assert sip.parse_message(REGISTER, max_size=len(REGISTER)).method == "REGISTER"
    with pytest.raises(SipError):
        sip.parse_message(REGISTER, max_size=len(REGISTER) - 1)


# -- headers, uris, via -------------------------------------------------------------------------
def test_headers_api():
    h = sip.Headers([("v", "a"), ("Via", "b"), ("X-GB-Ver", "2.0")])
    assert list(h) == [("Via", "a"), ("Via", "b"), ("X-GB-Ver", "2.0")]
    assert h.get("via") == "a" and h.get_all("V") == ["a", "b"]
    assert h.get("missing") is None and h.get("missing", "d") == "d"
    h.add("Via", "top", first=True)
    assert h.get_all("via") == ["top", "a", "b"]
    h.set("VIA", "only")
    assert h.get_all("via") == ["only"] and len(h) == 2
    h.set("Expires", 60)
    assert h.get("expires") == "60"
    assert h.remove("x-gb-ver") == 1 and "X-GB-Ver" not in h
    assert h.remove("x-gb-ver") == 0


def test_parse_uri_forms():
    u = sip.parse_uri("sip:34020000001320000001@192.168.1.64:5060;transport=tcp;lr")
    assert (u.scheme, u.user, u.host, u.port) == ("sip", "34020000001320000001", "192.168.1.64", 5060)
    assert u.params == {"transport": "tcp", "lr": None}
    assert str(u) == "sip:34020000001320000001@192.168.1.64:5060;transport=tcp;lr"
    u = sip.parse_uri("sip:10.0.0.1")
    assert u.user is None and u.port is None and str(u) == "sip:10.0.0.1"
    u = sip.parse_uri("SIPS:alice:pw@[2001:db8::1]:5061?subject=x")
    assert (u.scheme, u.user, u.password, u.host, u.port, u.headers) == (
        "sips",
        "alice",
        "pw",
        "[2001:db8::1]",
        5061,
        "subject=x",
    )
    for bad in ("tel:123", "sip:", "sip:a@", "sip:host:99999", "sip:ho st", "sip:@host"):
        with pytest.raises(SipError) as info:
            sip.parse_uri(bad)
        assert info.value.reason == "bad_uri"


def test_parse_name_addr_forms():
    na = sip.parse_name_addr('"A \\"B\\" <C>" <sip:1@d>;tag=9;x')
    assert na.display == 'A "B" <C>' and na.uri.user == "1" and na.tag == "9" and na.params["x"] is None
    na = sip.parse_name_addr("Bob <sip:2@d;transport=udp>;tag=t")
    assert na.display == "Bob" and na.uri.params == {"transport": "udp"} and na.tag == "t"
    na = sip.parse_name_addr("sip:3@d;tag=t2")  # addr-spec: the parameter belongs to the header
    assert na.tag == "t2" and na.uri.params == {}
    assert sip.parse_name_addr(str(sip.parse_name_addr('"x" <sip:1@d>;tag=9'))).tag == "9"


def test_parse_via_forms():
    v = sip.parse_via("SIP / 2.0 / tcp [::1]:5070 ;branch=z9hG4bKx; received=1.2.3.4;rport=9")
    assert (v.transport, v.host, v.port, v.branch, v.received, v.rport) == (
        "TCP",
        "[::1]",
        5070,
        "z9hG4bKx",
        "1.2.3.4",
        9,
    )
    assert sip.parse_via(str(v)) == v
    for bad in ("SIP/2.0/UDP", "SIP/2.0/UDP a;rport=x", "SIP/2.0 UDP a", "SIP/2.0/UDP a b"):
        with pytest.raises(SipError):
            sip.parse_via(bad)


# -- builders -----------------------------------------------------------------------------------
def test_build_request_round_trip():
    body = XML_GB2312
    req = sip.build_request(
        "message",
        "sip:34020000001320000001@192.168.1.64:5060",
        via_host="10.0.0.1",
        via_port=5060,
        transport="udp",
        from_uri="sip:34020000002000000001@3402000000",
        from_tag="ft",
        to_uri=sip.parse_uri("sip:34020000001320000001@3402000000"),
        call_id="cid-1",
        cseq=7,
        contact="sip:34020000002000000001@10.0.0.1:5060",
        headers=[("X-GB-Ver", "2.0")],
        body=body,
        content_type="Application/MANSCDP+xml",
    )
    assert req.method == "MESSAGE"
    assert req.branch.startswith("z9hG4bK") and len(req.branch) > 10
    got = sip.parse_message(req.to_bytes())
    assert got == req
    assert got.cseq == (7, "MESSAGE") and got.from_.tag == "ft" and got.to.tag is None
    assert got.via[0].transport == "UDP" and "rport" in got.via[0].params
    assert got.body == body and got.content_type == "application/manscdp+xml"
    assert got.int_header("max-forwards") == 70 and got.headers.get("x-gb-ver") == "2.0"
    assert got.int_header("content-length") == len(body)


def test_build_request_explicit_branch_and_to_tag():
    req = sip.build_request(
        "BYE",
        "sip:1@h",
        via_host="h",
        via_port=5060,
        transport="tcp",
        from_uri="sip:2@h",
        from_tag="a",
        to_uri="sip:1@h",
        to_tag="b",
        call_id="c",
        cseq=3,
        branch="z9hG4bKfixed",
    )
    assert req.branch == "z9hG4bKfixed" and req.to.tag == "b" and req.via[0].transport == "TCP"


def test_build_response_copies_and_fills_via_for_nat():
    req = sip.parse_message(MESSAGE_COMPACT)
    resp = sip.build_response(req, 200, source=("203.0.113.9", 40123))
    assert (resp.status, resp.reason) == (200, "OK")
    vias = resp.via
    assert [v.branch for v in vias] == ["z9hG4bKaaa", "z9hG4bKbbb", "z9hG4bKccc"]
    assert vias[0].received == "203.0.113.9" and vias[0].rport == 40123
    assert vias[1].received is None
    assert resp.call_id == req.call_id and resp.cseq == req.cseq
    assert resp.from_ == req.from_
    assert resp.to.uri == req.to.uri and resp.to.tag  # a tag was added
    got = sip.parse_message(resp.to_bytes())
    assert got == resp and got.body == b""


def test_build_response_without_rport_request_adds_received_only():
    req = sip.parse_message(REGISTER.replace(b";rport;", b";"))
    resp = sip.build_response(
        req,
        401,
        source=("203.0.113.9", 40123),
        to_tag="tt",
        headers=[("WWW-Authenticate", 'Digest realm="r", nonce="n"')],
    )
    assert resp.reason == "Unauthorized"
    assert resp.via[0].received == "203.0.113.9" and "rport" not in resp.via[0].params
    assert resp.to.tag == "tt"
    assert resp.headers.get("www-authenticate") == 'Digest realm="r", nonce="n"'


def test_build_response_keeps_an_existing_to_tag_and_trying_gets_none():
    req = sip.parse_message(OK_200.replace(b"SIP/2.0 200 OK", b"BYE sip:1@h SIP/2.0").replace(b"2 REGISTER", b"2 BYE"))
    assert sip.build_response(req, 200, to_tag="other").to.tag == "987"
    req = sip.parse_message(REGISTER)
    assert sip.build_response(req, 100).to.tag is None
    assert sip.build_response(req, 299).reason == "OK"
    assert sip.build_response(req, 488).reason == "Not Acceptable Here"


def test_response_with_body_and_content_type():
    req = sip.parse_message(REGISTER)
    resp = sip.build_response(req, 200, body=b"<x/>", content_type="Application/MANSCDP+xml")
    got = sip.parse_message(resp.to_bytes())
    assert got.body == b"<x/>" and got.content_type == "application/manscdp+xml"


def test_identifiers_are_fresh():
    assert len({sip.new_branch() for _ in range(100)}) == 100
    assert len({sip.new_tag() for _ in range(100)}) == 100
    assert len({sip.new_call_id() for _ in range(100)}) == 100


# -- TCP framing --------------------------------------------------------------------------------
def test_stream_framer_whole_and_byte_by_byte():
    stream = REGISTER + b"\r\n\r\n" + MESSAGE_COMPACT + b"\r\n" + OK_200
    whole = sip.StreamFramer().feed(stream)
    assert [type(m).__name__ for m in whole] == ["SipRequest", "SipRequest", "SipResponse"]
    assert whole[1].body == XML_GB2312
    framer = sip.StreamFramer()
    got = []
    for i in range(len(stream)):
        got += framer.feed(stream[i : i + 1])
    assert got == whole
    assert framer.buffered == 0


def test_stream_framer_requires_content_length():
    framer = sip.StreamFramer()
    with pytest.raises(SipError) as info:
        framer.feed(REGISTER.replace(b"Content-Length: 0\r\n", b""))
    assert info.value.reason == "missing_header"


def test_stream_framer_junk_after_a_good_message_keeps_the_good_one_and_stays_broken():
    framer = sip.StreamFramer()
    with pytest.raises(SipError) as info:
        framer.feed(REGISTER + b"GET / HTTP/1.1\r\n\r\n")
    assert info.value.reason == "bad_start_line"
    assert [m.method for m in info.value.messages] == ["REGISTER"]
    with pytest.raises(SipError) as again:
        framer.feed(REGISTER)
    assert again.value.reason == "bad_start_line"


def test_stream_framer_junk_is_caught_before_the_head_ends():
    framer = sip.StreamFramer()
    with pytest.raises(SipError):
        framer.feed(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n")  # a TLS hello on the SIP port


def test_stream_framer_limits():
    framer = sip.StreamFramer(max_size=1000)
    with pytest.raises(SipError) as info:
        framer.feed(REGISTER.replace(b"Content-Length: 0", b"Content-Length: 5000"))
    assert info.value.reason == "too_large"
    framer = sip.StreamFramer(max_size=1000)
    framer.feed(b"REGISTER sip:a@b SIP/2.0\r\n")
    with pytest.raises(SipError) as info:
        for _ in range(100):
            framer.feed(b"X-Pad: " + b"a" * 50 + b"\r\n")
    assert info.value.reason == "too_large"
    framer = sip.StreamFramer()
    with pytest.raises(SipError) as info:
        framer.feed(b"R" * 9000)
    assert info.value.reason == "too_large"


# -- fuzzing ------------------------------------------------------------------------------------
GOOD = [REGISTER, MESSAGE_COMPACT, OK_200, UNAUTHORIZED_401, MESSAGE_BLANK_LINES_BODY]


@given(st.binary(max_size=2000))
def test_any_datagram_is_a_message_or_a_sip_error(data):
    try:
        msg = sip.parse_message(data)
    except SipError:
        return
    assert isinstance(msg, (SipRequest, SipResponse))
    # a message that parsed answers every property the driver reads without another exception
    _ = msg.call_id, msg.cseq, msg.from_, msg.to, msg.via, msg.branch, msg.content_type


@given(st.sampled_from(GOOD), st.integers(0, 2000), st.binary(max_size=8))
def test_mutated_messages_are_a_message_or_a_sip_error(raw, at, junk):
    at = at % (len(raw) + 1)
    data = raw[:at] + junk + raw[at + len(junk) :]
    try:
        msg = sip.parse_message(data)
    except SipError:
        return
    _ = msg.call_id, msg.cseq, msg.from_, msg.to, msg.via, msg.branch, msg.content_type
    sip.parse_message(msg.to_bytes())


@given(st.lists(st.sampled_from(GOOD + [b"\r\n\r\n", b"\r\n"]), min_size=1, max_size=6), st.data())
def test_any_split_gives_the_same_messages(parts, data):
    stream = b"".join(parts)
    whole = sip.StreamFramer().feed(stream)
    assert len(whole) == sum(1 for p in parts if p.strip())
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    framer, got, last = sip.StreamFramer(), [], 0
    for cut in cuts + [len(stream)]:
        got += framer.feed(stream[last:cut])
        last = cut
    assert got == whole


@given(st.sampled_from(GOOD), st.binary(min_size=1, max_size=64), st.sampled_from(GOOD), st.data())
def test_junk_between_messages_raises_only_sip_error(first, junk, second, data):
    stream = first + junk + second
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    framer, last, got = sip.StreamFramer(), 0, []
    try:
        for cut in cuts + [len(stream)]:
            got += framer.feed(stream[last:cut])
            last = cut
    except SipError as exc:
        got += exc.messages
    assert got[:1] == [sip.parse_message(first)]


TOKENS = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~", min_size=1, max_size=20
)
IDS = st.from_regex(r"[0-9]{20}", fullmatch=True)
TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=30)


@given(
    method=TOKENS,
    user=IDS,
    tag=TOKENS,
    call_id=TOKENS,
    cseq=st.integers(0, sip.CSEQ_MAX),
    port=st.integers(1, 65535),
    transport=st.sampled_from(["udp", "tcp"]),
    subject=TEXT,
    display=TEXT,
    body=st.binary(max_size=300),
    status=st.integers(100, 699),
    source_port=st.integers(1, 65535),
)
def test_built_messages_parse_back_equal(
    method, user, tag, call_id, cseq, port, transport, subject, display, body, status, source_port
):
    display_value = '"' + display.replace("\\", "\\\\").replace('"', '\\"') + '" '
    req = sip.build_request(
        method,
        f"sip:{user}@4303000000",
        via_host="10.0.0.1",
        via_port=port,
        transport=transport,
        from_uri="sip:43030000002000000001@4303000000",
        from_tag=tag,
        to_uri=f"sip:{user}@4303000000",
        call_id=call_id,
        cseq=cseq,
        headers=[("Subject", subject.strip())],
        body=body,
        content_type="Application/MANSCDP+xml",
    )
    req.headers.set("From", display_value + req.headers.get("from"))
    got = sip.parse_message(req.to_bytes())
    assert got == req
    assert got.method == method.upper() and got.cseq == (cseq, method.upper()) and got.body == body
    assert got.from_.display == display and got.from_.tag == tag
    assert got.headers.get("subject") == subject.strip()
    assert got.via[0].port == port and got.via[0].transport == transport.upper()
    assert sip.StreamFramer().feed(req.to_bytes()) == [req]
    resp = sip.build_response(got, status, source=("198.51.100.4", source_port), body=body)
    back = sip.parse_message(resp.to_bytes())
    assert back == resp and back.status == status and back.via[0].rport == source_port
    assert back.from_ == got.from_ and back.call_id == call_id


@given(st.lists(st.one_of(st.sampled_from(GOOD), st.binary(max_size=200)), max_size=8), st.data())
def test_the_framer_never_holds_more_than_its_limit(chunks, data):
    framer = sip.StreamFramer(max_size=1500)
    stream = b"".join(chunks)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    last = 0
    for cut in cuts + [len(stream)]:
        try:
            for msg in framer.feed(stream[last:cut]):
                assert len(msg.to_bytes()) <= 1500 + 40  # to_bytes may spell Content-Length longer
        except SipError:
            assert framer.buffered == 0
            return
        last = cut
        assert framer.buffered <= 1500


def test_build_request_takes_name_addr_and_sip_uri_values():
    contact = sip.NameAddr(sip.parse_uri("sip:43030000002000000001@10.0.0.1:5060"), "平台", {"expires": "3600"})
    req = sip.build_request(
        "REGISTER",
        sip.parse_uri("sip:4303000000"),
        via_host="10.0.0.1",
        via_port=5060,
        transport="udp",
        from_uri=sip.parse_uri("sip:43030000002000000001@4303000000"),
        from_tag="a",
        to_uri="<sip:43030000002000000001@4303000000>",
        call_id="c",
        cseq=1,
        contact=contact,
    )
    got = sip.parse_message(req.to_bytes())
    assert got.contact == contact
    assert got.to.uri.user == "43030000002000000001" and got.uri == "sip:4303000000"


def test_a_head_trickled_byte_by_byte_is_searched_once(monkeypatch):
    """A peer sending one byte per segment must not make the framer rescan its whole buffer each time."""
    searched = []
    real = sip._HEAD_END

    class Counting:
        def search(self, buf, pos=0):
            searched.append(len(buf) - pos)
            return real.search(buf, pos)

    monkeypatch.setattr(sip, "_HEAD_END", Counting())
    head = REGISTER.replace(b"Expires: 3600\r\n", b"X-Pad: " + b"p" * 60 + b"\r\nExpires: 3600\r\n")
    framer, got = sip.StreamFramer(), []
    for i in range(len(head)):
        got += framer.feed(head[i : i + 1])
    assert [m.method for m in got] == ["REGISTER"]
    assert sum(searched) < 5 * len(head)


def test_a_header_is_parsed_once_and_again_when_it_changes():
    msg = sip.parse_message(REGISTER)
    assert msg.from_ is msg.from_  # validated, matched, answered, handled: parsed once
    assert msg.from_.uri.user == "34020000001320000001"
    msg.headers.set("From", "<sip:34020000001320000002@3402000000>;tag=9")
    assert msg.from_.uri.user == "34020000001320000002" and msg.from_.tag == "9"
    msg.headers.set("Via", "SIP/2.0/TCP 10.0.0.9:5070;branch=z9hG4bKnew")
    assert msg.top_via.host == "10.0.0.9" and [v.branch for v in msg.via] == ["z9hG4bKnew"]
    # a response built with the packet's source leaves the request's own Via as it was
    resp = sip.build_response(msg, 200, source=("172.16.0.1", 40000))
    assert resp.top_via.received == "172.16.0.1"
    assert msg.top_via.received is None


def test_a_contact_of_only_commas_is_a_bad_header():
    msg = sip.parse_message(REGISTER.replace(b"Contact: <sip:34020000001320000001@192.168.1.64:5060>", b"Contact: ,"))
    with pytest.raises(SipError) as info:
        _ = msg.contact
    assert info.value.reason == "bad_header"


def test_a_cr_ending_the_head_and_long_lines_keep_their_reasons():
    # the head's last line ends in a CR that no LF follows: a bare CR, as line by line
    head = REGISTER.replace(b"Content-Length: 0\r\n\r\n", b"Content-Length: 0\r\r\n\r\n")
    with pytest.raises(SipError) as info:
        sip.parse_message(head)
    assert info.value.reason == "bad_header"
    # a bad header line before a line too long: the first fault in line order is the reason
    both = REGISTER.replace(b"Max-Forwards: 70", b"Max Forwards 70").replace(b"IP Camera", b"a" * 200)
    with pytest.raises(SipError) as info:
        sip.parse_message(both, max_line=100)
    assert info.value.reason == "bad_header"
    with pytest.raises(SipError) as info:
        sip.parse_message(REGISTER.replace(b"IP Camera", b"a" * 200), max_line=100)
    assert info.value.reason == "too_large"
