"""GB/T 28181 SIP transactions (drivers/gb28181/transaction.py) on a fake clock: the UDP retransmit
schedule (T1 doubling, T2 cap), Timer F / B at 64*T1, nothing retransmitted on reliable transports,
responses matched by branch + method, retransmitted requests absorbed or answered from the cache,
and bounded tables."""

import pytest

from tianwang.drivers.gb28181 import sip
from tianwang.drivers.gb28181.transaction import (
    ABSORBED, ClientTransactions, ServerTransactions, ack_for, client_key, server_key,
)

DEVICE = ("192.168.1.64", 5060)


def request(method="MESSAGE", branch=None, cseq=1, call_id="c1", via_host="10.0.0.1", body=b""):
    return sip.build_request(
        method, "sip:34020000001320000001@3402000000", via_host=via_host, via_port=5060, transport="udp",
        from_uri="sip:34020000002000000001@3402000000", from_tag="ft", to_uri="sip:34020000001320000001@3402000000",
        call_id=call_id, cseq=cseq, branch=branch, body=body,
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


def test_heaps_stay_bounded_under_churn():
    tx = ClientTransactions()
    now = 0.0
    for i in range(5000):
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
    st = ServerTransactions(ttl_s=32)
    req = wire(request(via_host="192.168.1.64"))
    assert st.receive(req, 0.0) is None
    assert st.receive(wire(req), 0.4) is ABSORBED
    resp = sip.build_response(req, 200, source=DEVICE)
    st.remember(req, resp, 0.5)
    assert st.receive(wire(req), 1.0) is resp
    assert st.absorbed == 1 and st.answered == 1


def test_retransmission_matching_uses_branch_sent_by_and_method():
    st = ServerTransactions()
    req = wire(request(branch="z9hG4bKdev1", via_host="192.168.1.64"))
    st.receive(req, 0.0)
    st.remember(req, sip.build_response(req, 200), 0.0)
    # same branch from another sender, or another method on the same branch: new transactions
    assert st.receive(wire(request(branch="z9hG4bKdev1", via_host="192.168.1.65")), 0.1) is None
    assert st.receive(wire(request("NOTIFY", branch="z9hG4bKdev1", via_host="192.168.1.64")), 0.1) is None
    assert len(st) == 3


def test_rfc2543_requests_without_magic_branch_match_on_dialog_fields():
    raw = wire(request(branch="1371463273", via_host="192.168.1.64"))
    st = ServerTransactions()
    assert st.receive(raw, 0.0) is None
    assert st.receive(wire(raw), 0.1) is ABSORBED
    next_cseq = wire(request(branch="1371463273", via_host="192.168.1.64", cseq=2))
    assert st.receive(next_cseq, 0.2) is None  # a new CSeq is a new request
    assert server_key(raw) != server_key(next_cseq)


def test_ack_of_a_non_2xx_is_absorbed_and_a_2xx_ack_passes():
    st = ServerTransactions()
    invite = wire(request("INVITE", branch="z9hG4bKinv", via_host="192.168.1.64"))
    st.receive(invite, 0.0)
    resp = sip.build_response(invite, 486)
    st.remember(invite, resp, 0.1)
    assert st.receive(wire(ack_for(invite, resp)), 0.2) is ABSORBED
    ack_2xx = wire(request("ACK", via_host="192.168.1.64"))  # a new branch, as for a 2xx
    assert st.receive(ack_2xx, 0.3) is None
    assert len(st) == 1  # the 2xx ACK left nothing behind


def test_entries_expire_after_their_last_response():
    st = ServerTransactions(ttl_s=32)
    a = wire(request(via_host="192.168.1.64"))
    b = wire(request(via_host="192.168.1.64"))
    st.receive(a, 0.0)
    st.receive(b, 1.0)
    answer = sip.build_response(a, 200)
    st.remember(a, answer, 5.0)
    assert st.next_deadline() == 33.0  # b, never answered, goes first
    assert st.expire(32.9) == 0
    assert st.expire(33.0) == 1
    assert st.receive(wire(a), 36.0) is answer
    assert st.expire(37.0) == 1
    assert st.receive(wire(a), 37.5) is None  # forgotten: a new request again
    assert len(st) == 1


def test_server_table_is_bounded():
    st = ServerTransactions(max_entries=100)
    reqs = [wire(request(via_host="192.168.1.64")) for _ in range(300)]
    for i, r in enumerate(reqs):
        assert st.receive(r, i * 0.01) is None
    assert len(st) == 100 and st.evicted == 200
    assert st.receive(wire(reqs[-1]), 4.0) is ABSORBED
    for r in reqs[:50]:
        st.remember(r, sip.build_response(r, 200), 5.0)
    assert len(st) == 100
