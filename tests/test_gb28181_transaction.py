"""GB/T 28181 SIP transactions (drivers/gb28181/transaction.py) on a fake clock: the UDP retransmit
schedule (T1 doubling, T2 cap), Timer F / B at 64*T1, nothing retransmitted on reliable transports,
responses matched by branch + method, retransmitted requests absorbed or answered from the cache,
and bounded tables."""

import pytest
from hypothesis import given, settings, strategies as st

from tianwang.drivers.gb28181 import sip
from tianwang.drivers.gb28181.transaction import (
    ABSORBED,
    ClientTransactions,
    ServerTransactions,
    ack_for,
    client_key,
    server_key,
)

DEVICE = ("192.168.1.64", 5060)


def request(method="MESSAGE", branch=None, cseq=1, call_id="c1", via_host="10.0.0.1", body=b""):
    return sip.build_request(
        method,
        "sip:34020000001320000001@3402000000",
        via_host=via_host,
        via_port=5060,
        transport="udp",
        from_uri="sip:34020000002000000001@3402000000",
        from_tag="ft",
        to_uri="sip:34020000001320000001@3402000000",
        call_id=call_id,
        cseq=cseq,
        branch=branch,
        body=body,
    )


def wire(msg):
    """What the other side receives: the message through bytes, as the driver would hand it over."""
    return sip.parse_message(msg.to_bytes())


def run_clock(tx, until, step=0.01):
    """Call due() at every tick up to `until`; the times at which requests went out again."""
    sent, now = [], 0.0
    while now <= until + 1e-9:
        for _ in tx.due(now):
            sent.append(round(now, 2))
        now = round(now + step, 2)
    return sent


# -- client side --------------------------------------------------------------------------------
def test_non_invite_udp_schedule_doubles_to_t2_and_times_out_at_64_t1():
    tx = ClientTransactions(t1=0.5, t2=4.0)
    req = request()
    key = tx.start(req, DEVICE, False, 0.0)
    assert key == (req.branch, "MESSAGE")
    assert tx.next_deadline() == 0.5
    sent = run_clock(tx, 31.99)
    # T1 = 0.5: intervals 0.5, 1, 2, 4, 4, 4... (Timer E capped at T2)
    assert sent == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert tx.expired(31.99) == []
    assert tx.expired(32.0) == [key]
    assert key not in tx and len(tx) == 0
    assert tx.due(100.0) == [] and tx.next_deadline() is None


def test_due_returns_the_request_and_its_destination():
    tx = ClientTransactions()
    req = request()
    tx.start(req, DEVICE, False, 10.0)
    assert tx.due(10.49) == []
    assert tx.due(10.5) == [(req, DEVICE)]
    assert tx.retransmitted == 1


def test_invite_udp_schedule_doubles_without_cap():
    tx = ClientTransactions(t1=0.5, t2=4.0)
    key = tx.start(request("INVITE"), DEVICE, False, 0.0)
    sent = run_clock(tx, 31.99)
    # Timer A: 0.5, 1, 2, 4, 8, 16 -> sends at 0.5, 1.5, 3.5, 7.5, 15.5, 31.5
    assert sent == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert tx.expired(32.0) == [key]


def test_reliable_transport_never_retransmits_but_times_out():
    tx = ClientTransactions(t1=0.5)
    key = tx.start(request(), DEVICE, True, 0.0)
    assert tx.next_deadline() == 32.0
    assert run_clock(tx, 40.0, step=0.5) == []
    assert tx.expired(31.9) == []
    assert tx.expired(32.0) == [key]


def test_final_response_ends_the_transaction():
    tx = ClientTransactions()
    req = request()
    key = tx.start(req, DEVICE, False, 0.0)
    resp = wire(sip.build_response(wire(req), 200))
    assert tx.response(resp, 0.2) == (key, True)
    assert key not in tx
    assert tx.due(5.0) == [] and tx.expired(40.0) == []
    assert tx.response(resp, 0.3) is None  # a retransmitted final: nothing pending any more


def test_response_matching_needs_branch_and_method():
    tx = ClientTransactions()
    req = request("SUBSCRIBE")
    key = tx.start(req, DEVICE, False, 0.0)
    other_branch = wire(sip.build_response(wire(request("SUBSCRIBE")), 200))
    assert tx.response(other_branch, 0.1) is None
    same_branch_other_method = wire(sip.build_response(wire(request("MESSAGE", branch=req.branch)), 200))
    assert tx.response(same_branch_other_method, 0.1) is None
    assert key in tx
    assert tx.response(wire(sip.build_response(wire(req), 200)), 0.1) == (key, True)


def test_two_methods_on_one_branch_are_two_transactions():
    tx = ClientTransactions()
    invite = request("INVITE", branch="z9hG4bKsame")
    cancel = request("CANCEL", branch="z9hG4bKsame")
    k1 = tx.start(invite, DEVICE, False, 0.0)
    k2 = tx.start(cancel, DEVICE, False, 0.0)
    assert k1 != k2 and len(tx) == 2
    assert tx.response(wire(sip.build_response(wire(cancel), 200)), 0.1) == (k2, True)
    assert k1 in tx
    with pytest.raises(ValueError):
        tx.start(invite, DEVICE, False, 0.2)


def test_provisional_response_non_invite_retransmits_at_t2():
    tx = ClientTransactions(t1=0.5, t2=4.0)
    req = request()
    key = tx.start(req, DEVICE, False, 0.0)
    assert tx.due(0.5) == [(req, DEVICE)]
    assert tx.response(wire(sip.build_response(wire(req), 100)), 0.6) == (key, False)
    sent = run_clock(tx, 20.0)
    assert sent == [4.6, 8.6, 12.6, 16.6]
    assert tx.expired(32.0) == [key]  # Timer F still runs


def test_provisional_response_stops_invite_retransmits_and_gives_timer_c():
    tx = ClientTransactions(t1=0.5, timer_c=180.0)
    req = request("INVITE")
    key = tx.start(req, DEVICE, False, 0.0)
    assert tx.response(wire(sip.build_response(wire(req), 100)), 0.2) == (key, False)
    assert tx.response(wire(sip.build_response(wire(req), 180)), 0.3) == (key, False)
    assert run_clock(tx, 40.0, step=0.5) == []
    assert tx.expired(100.0) == []
    assert tx.next_deadline() == pytest.approx(180.2)
    assert tx.expired(180.2) == [key]


def test_cancel_stops_a_transaction():
    tx = ClientTransactions()
    key = tx.start(request(), DEVICE, False, 0.0)
    assert tx.cancel(key) is True
    assert tx.cancel(key) is False
    assert tx.due(10.0) == [] and tx.expired(100.0) == [] and tx.next_deadline() is None


def test_client_table_is_bounded_and_pushed_out_keys_are_reported():
    tx = ClientTransactions(max_pending=10)
    keys = [tx.start(request(), DEVICE, False, i * 0.001) for i in range(25)]
    assert len(tx) == 10
    assert tx.evicted == 15
    assert tx.next_deadline() == float("-inf")
    assert tx.expired(0.1) == keys[:15]
    assert tx.next_deadline() == pytest.approx(0.5 + 0.015)


def test_a_pushed_out_transaction_can_still_be_cancelled_once():
    tx = ClientTransactions(max_pending=1)
    first = tx.start(request(), DEVICE, False, 0.0)
    tx.start(request(), DEVICE, False, 0.0)
    assert tx.cancel(first) is True
    assert tx.cancel(first) is False
    assert tx.expired(0.0) == []


def test_heaps_stay_bounded_under_churn():
    tx = ClientTransactions()
    now = 0.0
    for _ in range(5000):
        req = request()
        tx.start(req, DEVICE, False, now)
        tx.response(wire(sip.build_response(wire(req), 200)), now)
        now += 0.001
    assert len(tx) == 0
    assert len(tx._retransmits) <= 64 and len(tx._deadlines) <= 64


def test_request_lookup():
    tx = ClientTransactions()
    req = request()
    key = tx.start(req, DEVICE, True, 0.0)
    assert tx.request(key) is req
    assert tx.request(("z9hG4bKnone", "MESSAGE")) is None


def test_ack_for_a_non_2xx_answer():
    invite = request("INVITE", cseq=5)
    resp = wire(sip.build_response(wire(invite), 486, to_tag="dev"))
    ack = wire(ack_for(invite, resp))
    assert ack.method == "ACK" and ack.uri == invite.uri
    assert ack.branch == invite.branch and ack.cseq == (5, "ACK")
    assert ack.to.tag == "dev" and ack.from_.tag == "ft" and ack.call_id == invite.call_id


def test_client_key_of_a_response_equals_the_requests():
    req = request("REGISTER")
    assert client_key(wire(sip.build_response(wire(req), 401))) == client_key(req)


# -- server side --------------------------------------------------------------------------------
def test_new_request_then_retransmission_absorbed_then_answered_from_cache():
    server = ServerTransactions(ttl_s=32)
    req = wire(request(via_host="192.168.1.64"))
    assert server.receive(req, 0.0) is None
    assert server.receive(wire(req), 0.4) is ABSORBED
    resp = sip.build_response(req, 200, source=DEVICE)
    server.remember(req, resp, 0.5)
    assert server.receive(wire(req), 1.0) is resp
    assert server.absorbed == 1 and server.answered == 1


def test_retransmission_matching_uses_branch_sent_by_and_method():
    server = ServerTransactions()
    req = wire(request(branch="z9hG4bKdev1", via_host="192.168.1.64"))
    server.receive(req, 0.0)
    server.remember(req, sip.build_response(req, 200), 0.0)
    # same branch from another sender, or another method on the same branch: new transactions
    assert server.receive(wire(request(branch="z9hG4bKdev1", via_host="192.168.1.65")), 0.1) is None
    assert server.receive(wire(request("NOTIFY", branch="z9hG4bKdev1", via_host="192.168.1.64")), 0.1) is None
    assert len(server) == 3


def test_rfc2543_requests_without_magic_branch_match_on_dialog_fields():
    raw = wire(request(branch="1371463273", via_host="192.168.1.64"))
    server = ServerTransactions()
    assert server.receive(raw, 0.0) is None
    assert server.receive(wire(raw), 0.1) is ABSORBED
    next_cseq = wire(request(branch="1371463273", via_host="192.168.1.64", cseq=2))
    assert server.receive(next_cseq, 0.2) is None  # a new CSeq is a new request
    assert server_key(raw) != server_key(next_cseq)


def test_ack_of_a_non_2xx_is_absorbed_and_a_2xx_ack_passes():
    server = ServerTransactions()
    invite = wire(request("INVITE", branch="z9hG4bKinv", via_host="192.168.1.64"))
    server.receive(invite, 0.0)
    resp = sip.build_response(invite, 486)
    server.remember(invite, resp, 0.1)
    assert server.receive(wire(ack_for(invite, resp)), 0.2) is ABSORBED
    ack_2xx = wire(request("ACK", via_host="192.168.1.64"))  # a new branch, as for a 2xx
    assert server.receive(ack_2xx, 0.3) is None
    assert len(server) == 1  # the 2xx ACK left nothing behind


def test_entries_expire_after_their_last_response():
    server = ServerTransactions(ttl_s=32)
    a = wire(request(via_host="192.168.1.64"))
    b = wire(request(via_host="192.168.1.64"))
    server.receive(a, 0.0)
    server.receive(b, 1.0)
    answer = sip.build_response(a, 200)
    server.remember(a, answer, 5.0)
    assert server.next_deadline() == 33.0  # b, never answered, goes first
    assert server.expire(32.9) == 0
    assert server.expire(33.0) == 1
    assert server.receive(wire(a), 36.0) is answer
    assert server.expire(37.0) == 1
    assert server.receive(wire(a), 37.5) is None  # forgotten: a new request again
    assert len(server) == 1


def test_server_table_is_bounded():
    server = ServerTransactions(max_entries=100)
    reqs = [wire(request(via_host="192.168.1.64")) for _ in range(300)]
    for i, r in enumerate(reqs):
        assert server.receive(r, i * 0.01) is None
    assert len(server) == 100 and server.evicted == 200
    assert server.receive(wire(reqs[-1]), 4.0) is ABSORBED
    for r in reqs[:50]:
        server.remember(r, sip.build_response(r, 200), 5.0)
    assert len(server) == 100


def ack_2xx(invite, response):
    """The ACK a UAC sends for a 2xx: a new transaction (new branch) in the dialog."""
    return sip.build_request(
        "ACK",
        invite.uri,
        via_host="10.0.0.1",
        via_port=5060,
        transport="udp",
        from_uri=invite.from_.uri,
        from_tag=invite.from_.tag,
        to_uri=response.to.uri,
        to_tag=response.to.tag,
        call_id=invite.call_id,
        cseq=invite.cseq[0],
    )


def test_invite_2xx_resent_over_udp_until_the_ack():
    server = ServerTransactions(t1=0.5, t2=4.0)
    invite = wire(request("INVITE", cseq=9))
    assert server.receive(invite, 0.0) is None
    ok = sip.build_response(invite, 200, to_tag="dev")
    server.remember(invite, ok, 0.0, dest=DEVICE, reliable=False)
    assert server.awaiting_ack() == 1 and server.next_deadline() == 0.5
    resent, now = [], 0.0
    while now < 10.0:
        now = round(now + 0.05, 2)
        resent += [(now, item) for item in server.due(now)]
    assert [t for t, _ in resent] == [0.5, 1.5, 3.5, 7.5]  # T1 doubling, capped at T2
    assert all(item == (ok, DEVICE) for _, item in resent)
    assert server.receive(wire(ack_2xx(invite, wire(ok))), 10.0) is None  # the dialog gets the ACK
    assert server.awaiting_ack() == 0
    assert server.due(100.0) == [] and server.ack_timeouts(100.0) == []
    assert server.resent == 4


def test_invite_non_2xx_ack_stops_resending_and_is_absorbed():
    server = ServerTransactions()
    invite = wire(request("INVITE", cseq=3))
    server.receive(invite, 0.0)
    busy = sip.build_response(invite, 486, to_tag="dev")
    server.remember(invite, busy, 0.0, dest=DEVICE, reliable=False)
    assert server.due(0.5) == [(busy, DEVICE)]
    assert server.receive(wire(ack_for(invite, wire(busy))), 0.7) is ABSORBED
    assert server.due(5.0) == [] and server.awaiting_ack() == 0


def test_invite_answer_without_ack_times_out():
    server = ServerTransactions(t1=0.5)
    invite = wire(request("INVITE"))
    server.receive(invite, 0.0)
    ok = sip.build_response(invite, 200, to_tag="dev")
    server.remember(invite, ok, 0.0, dest=DEVICE, reliable=True)
    assert server.due(20.0) == []  # reliable: never resent
    assert server.ack_timeouts(31.9) == []
    assert server.ack_timeouts(32.0) == [(invite, ok)]
    assert server.awaiting_ack() == 0


def test_only_invite_finals_with_a_destination_wait_for_an_ack():
    server = ServerTransactions()
    invite = wire(request("INVITE"))
    server.receive(invite, 0.0)
    server.remember(invite, sip.build_response(invite, 100), 0.0, dest=DEVICE, reliable=False)
    message = wire(request("MESSAGE"))
    server.receive(message, 0.0)
    server.remember(message, sip.build_response(message, 200), 0.0, dest=DEVICE, reliable=False)
    other = wire(request("INVITE"))
    server.receive(other, 0.0)
    server.remember(other, sip.build_response(other, 200), 0.0)
    assert server.awaiting_ack() == 0 and server.due(10.0) == []


# -- a random life of many transactions -----------------------------------------------------------
EVENT = st.one_of(
    st.tuples(st.just("start"), st.booleans(), st.sampled_from(["MESSAGE", "INVITE", "SUBSCRIBE"])),
    st.tuples(st.just("answer"), st.integers(0, 50), st.sampled_from([100, 180, 200, 404])),
    st.tuples(st.just("cancel"), st.integers(0, 50)),
    st.tuples(st.just("tick"), st.floats(0.0, 20.0)),
)


@settings(max_examples=300)
@given(st.lists(EVENT, max_size=60))
def test_every_transaction_ends_exactly_once(events):
    """Whatever happens, each started transaction ends once (final answer, cancel, timeout or push-out),
    only unreliable ones are retransmitted, and none is retransmitted after it ended."""
    tx = ClientTransactions(t1=0.5, t2=4.0, max_pending=3)
    now, started, ended, reliable_of = 0.0, [], {}, {}
    for event in events:
        if event[0] == "start":
            req = request(event[2])
            key = tx.start(req, DEVICE, event[1], now)
            started.append((key, req))
            reliable_of[key] = event[1]
        elif event[0] == "answer" and started:
            key, req = started[event[1] % len(started)]
            got = tx.response(wire(sip.build_response(wire(req), event[2])), now)
            if key in ended:
                assert got is None
            elif got is not None and got[1]:
                assert got == (key, True)
                ended[key] = "final"
        elif event[0] == "cancel" and started:
            key, _ = started[event[1] % len(started)]
            assert tx.cancel(key) is (key not in ended)
            ended.setdefault(key, "cancel")
        elif event[0] == "tick":
            now += event[1]
            for req, dest in tx.due(now):
                key = client_key(req)
                assert key not in ended and not reliable_of[key] and dest == DEVICE
            for key in tx.expired(now):
                assert key not in ended
                ended[key] = "timeout"
        assert len(tx) <= 3
    for key in tx.expired(now + 10_000):
        assert key not in ended
        ended[key] = "timeout"
    assert set(ended) == {key for key, _ in started}
    assert len(tx) == 0 and tx.next_deadline() is None
