"""SIP transactions (RFC 3261 section 17), sans-io: fed with messages and times, never sleeping.

Server side (`ServerTransactions`): a request retransmitted over UDP must not reach the application
twice. The table remembers each request by its transaction key; a retransmission before the answer is
absorbed, one after it gets the cached response again. Entries live `ttl_s` after their last response
(Timer J is 64*T1 = 32 s). A final response to an INVITE is resent over UDP until its ACK arrives
(Timer G for non-2xx, RFC 3261 13.3.1.4 for 2xx) and given up at 64*T1.

Client side (`ClientTransactions`): our requests over UDP are retransmitted at T1, 2*T1, 4*T1...
(non-INVITE capped at T2, Timer E; INVITE uncapped, Timer A) until a response arrives; a transaction
with no final response times out at 64*T1 (Timers F and B). Reliable transports are never
retransmitted but time out the same way. Responses match by top-Via branch + CSeq method (17.1.3).

Both tables are bounded: when full, the oldest entry goes (a client transaction pushed out is
reported by `expired` like a timeout, so its caller still learns the outcome).
"""

from __future__ import annotations

import collections
import heapq
import itertools
from typing import Any

from tianwang.drivers.gb28181.sip import (
    BRANCH_MAGIC,
    Headers,
    SipError,
    SipRequest,
    SipResponse,
    split_header_values,
)

T1 = 0.5  # RFC 3261: round-trip estimate
T2 = 4.0  # RFC 3261: maximum retransmit interval of non-INVITE requests
TIMER_C = 180.0  # RFC 3261 16.6: how long an INVITE may stay in Proceeding


class _Absorbed:
    """The marker `ServerTransactions.receive` returns for a retransmission that arrived before the
    answer: drop it, the application is already working on the original."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "ABSORBED"


ABSORBED = _Absorbed()


def _top_via_raw(msg: SipRequest | SipResponse) -> str:
    vias = msg.headers.get_all("via")
    if not vias:
        raise SipError("missing_header", "Via")
    values = split_header_values(vias[0])
    if not values:
        raise SipError("bad_header", "empty Via")
    return values[0]


def server_key(request: SipRequest) -> tuple:
    """The transaction key of a received request (RFC 3261 17.2.3).

    With an RFC 3261 branch: branch, sent-by and method (an ACK maps to the INVITE it acknowledges;
    a CANCEL is a transaction of its own). Without one (RFC 2543 peers): Request-URI, tags, Call-ID, CSeq and the top Via.
    """
    via = request.top_via
    method = "INVITE" if request.method == "ACK" else request.method
    branch = via.branch
    if branch and branch.startswith(BRANCH_MAGIC):
        return (branch, via.sent_by, method)
    number, _ = request.cseq
    return ("2543", request.uri, request.from_.tag, request.call_id, number, method, _top_via_raw(request))


class _Unacked:
    """A final response to an INVITE waiting for its ACK (resent over UDP: Timer G / RFC 3261 13.3.1.4)."""

    __slots__ = ("invite", "response", "dest", "reliable", "interval", "next_at", "deadline")

    def __init__(
        self, invite: SipRequest, response: SipResponse, dest: Any, reliable: bool, t1: float, now: float
    ) -> None:
        self.invite = invite
        self.response = response
        self.dest = dest
        self.reliable = reliable
        self.interval = t1
        self.next_at = None if reliable else now + t1
        self.deadline = now + 64 * t1  # Timer H, and the 2xx give-up time of 13.3.1.4


class ServerTransactions:
    """Received requests remembered until `ttl_s` after their last response; at most `max_entries`.

    A final response to an INVITE remembered with `dest` is also resent over UDP until its ACK comes
    (`due`), and reported by `ack_timeouts` when none came within 64*T1: the UAS side the device
    simulator needs when the platform invites it.
    """

    def __init__(self, ttl_s: float = 32.0, max_entries: int = 100_000, *, t1: float = T1, t2: float = T2):
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.t1 = t1
        self.t2 = t2
        # key -> [deadline, cached response or None]; kept in order of last update, so deadlines rise
        self._table: collections.OrderedDict[tuple, list] = collections.OrderedDict()
        # (Call-ID, CSeq number) of an answered INVITE -> its final response awaiting the ACK
        self._unacked: collections.OrderedDict[tuple, _Unacked] = collections.OrderedDict()
        self._resend: list = []  # heap of (when, seq, ack key)
        self._seq = itertools.count()
        self.absorbed = 0  # retransmissions dropped before an answer existed
        self.answered = 0  # retransmissions answered from the cache
        self.evicted = 0  # entries pushed out because the table was full
        self.resent = 0  # INVITE final responses sent again for want of an ACK

    def __len__(self) -> int:
        return len(self._table)

    def receive(self, request: SipRequest, now: float) -> SipResponse | _Absorbed | None:
        """None for a new request (handle it), the cached SipResponse for a retransmission to answer
        again, or ABSORBED for a retransmission to drop (also every ACK matching a known INVITE).

        An ACK of a 2xx has a branch of its own: it stops the resending and comes back as None, for
        the dialog to take; an ACK of a non-2xx is part of the INVITE's transaction and is absorbed.
        """
        key = server_key(request)
        entry = self._table.get(key)
        if request.method == "ACK":
            self._unacked.pop((request.call_id, request.cseq[0]), None)
            return None if entry is None else ABSORBED
        if entry is None:
            while len(self._table) >= self.max_entries:
                self._table.popitem(last=False)
                self.evicted += 1
            self._table[key] = [now + self.ttl_s, None]
            return None
        if entry[1] is None:
            self.absorbed += 1
            return ABSORBED
        self.answered += 1
        return entry[1]

    def remember(
        self, request: SipRequest, response: SipResponse, now: float, *, dest: Any = None, reliable: bool = True
    ) -> None:
        """Cache the response sent to `request` (provisional or final) for its retransmissions.

        For a final response to an INVITE, `dest` (where it went) asks for it to be resent until the
        ACK arrives: at T1, 2*T1... capped at T2 when `reliable` is false, never when true; both
        give up at 64*T1.
        """
        key = server_key(request)
        if key not in self._table:
            while len(self._table) >= self.max_entries:
                self._table.popitem(last=False)
                self.evicted += 1
        self._table[key] = [now + self.ttl_s, response]
        self._table.move_to_end(key)
        if request.method == "INVITE" and response.status >= 200 and dest is not None:
            ack_key = (request.call_id, request.cseq[0])
            while len(self._unacked) >= self.max_entries:
                self._unacked.popitem(last=False)
                self.evicted += 1
            pending = _Unacked(request, response, dest, reliable, self.t1, now)
            self._unacked[ack_key] = pending
            self._unacked.move_to_end(ack_key)
            if pending.next_at is not None:
                heapq.heappush(self._resend, (pending.next_at, next(self._seq), ack_key))

    def due(self, now: float) -> list:
        """[(response, dest)]: INVITE final responses to send again now, their ACK not yet here."""
        out, heap = [], self._resend
        while heap and heap[0][0] <= now:
            when, _, ack_key = heapq.heappop(heap)
            pending = self._unacked.get(ack_key)
            if pending is None or pending.next_at != when or now >= pending.deadline:
                continue
            out.append((pending.response, pending.dest))
            self.resent += 1
            pending.interval = min(pending.interval * 2, self.t2)
            pending.next_at = now + pending.interval
            heapq.heappush(heap, (pending.next_at, next(self._seq), ack_key))
        if len(heap) > 4 * len(self._unacked) + 64:
            kept = [item for item in heap if item[2] in self._unacked and self._unacked[item[2]].next_at == item[0]]
            heapq.heapify(kept)
            self._resend = kept
        return out

    def ack_timeouts(self, now: float) -> list:
        """[(invite, response)] whose ACK never came within 64*T1 (a 2xx: the dialog should end, BYE)."""
        out = []
        while self._unacked:
            ack_key, pending = next(iter(self._unacked.items()))
            if pending.deadline > now:
                break
            del self._unacked[ack_key]
            out.append((pending.invite, pending.response))
        return out

    def awaiting_ack(self) -> int:
        return len(self._unacked)

    def expire(self, now: float) -> int:
        """Forget entries past their deadline; returns how many went."""
        table, gone = self._table, 0
        while table:
            key, entry = next(iter(table.items()))
            if entry[0] > now:
                break
            del table[key]
            gone += 1
        return gone

    def next_deadline(self) -> float | None:
        """The earliest time `expire`, `due` or `ack_timeouts` has something to do; None when idle."""
        times = []
        if self._table:
            times.append(next(iter(self._table.values()))[0])
        if self._unacked:
            times.append(next(iter(self._unacked.values())).deadline)
        heap = self._resend
        while heap:
            when, _, ack_key = heap[0]
            pending = self._unacked.get(ack_key)
            if pending is not None and pending.next_at == when:
                times.append(when)
                break
            heapq.heappop(heap)
        return min(times) if times else None


class _Client:
    __slots__ = ("request", "dest", "reliable", "invite", "interval", "next_at", "deadline", "proceeding")

    def __init__(self, request: SipRequest, dest: Any, reliable: bool, invite: bool, t1: float, now: float) -> None:
        self.request = request
        self.dest = dest
        self.reliable = reliable
        self.invite = invite
        self.interval = t1
        self.next_at = None if reliable else now + t1
        self.deadline = now + 64 * t1
        self.proceeding = False


def client_key(msg: SipRequest | SipResponse) -> tuple[str, str]:
    """(top-Via branch, CSeq method): how a response finds its client transaction (17.1.3)."""
    branch = msg.top_via.branch
    if not branch:
        raise SipError("bad_header", "Via without branch")
    return branch, msg.cseq[1]


class ClientTransactions:
    """Requests we sent and wait an answer for; retransmission and timeout schedules per RFC 3261."""

    def __init__(self, t1: float = T1, t2: float = T2, *, max_pending: int = 100_000, timer_c: float = TIMER_C):
        self.t1 = t1
        self.t2 = t2
        self.timer_c = timer_c
        self.max_pending = max_pending
        self._table: collections.OrderedDict[tuple, _Client] = collections.OrderedDict()
        self._retransmits: list = []  # heap of (when, seq, key)
        self._deadlines: list = []  # heap of (when, seq, key)
        self._seq = itertools.count()
        self._pushed_out: list = []
        self.evicted = 0  # transactions pushed out because the table was full
        self.retransmitted = 0

    def __len__(self) -> int:
        return len(self._table)

    def __contains__(self, key: object) -> bool:
        return key in self._table

    def request(self, key: tuple[str, str]) -> SipRequest | None:
        """The request of a pending transaction, or None."""
        entry = self._table.get(key)
        return entry.request if entry else None

    def start(self, request: SipRequest, dest: Any, reliable: bool, now: float) -> tuple[str, str]:
        """Track a request just sent to `dest` (any value the caller routes by); returns its key."""
        key = client_key(request)
        if key in self._table:
            raise ValueError(f"transaction {key} already pending")
        while len(self._table) >= self.max_pending:
            old, _ = self._table.popitem(last=False)
            self._pushed_out.append(old)
            self.evicted += 1
        entry = _Client(request, dest, reliable, request.method == "INVITE", self.t1, now)
        self._table[key] = entry
        if entry.next_at is not None:
            heapq.heappush(self._retransmits, (entry.next_at, next(self._seq), key))
        heapq.heappush(self._deadlines, (entry.deadline, next(self._seq), key))
        self._compact()
        return key

    def response(self, resp: SipResponse, now: float) -> tuple[tuple[str, str], bool] | None:
        """(key, final) for a response to a pending transaction, None for a stray or repeated one.

        A final response ends the transaction. A provisional one stops INVITE retransmissions (and
        gives the INVITE `timer_c` to be answered); a non-INVITE then retransmits at T2 (17.1.2.2).
        """
        try:
            key = client_key(resp)
        except SipError:
            return None
        entry = self._table.get(key)
        if entry is None:
            return None
        if resp.status >= 200:
            del self._table[key]
            return key, True
        if not entry.proceeding:
            entry.proceeding = True
            if entry.invite:
                entry.next_at = None
                entry.deadline = now + self.timer_c
                heapq.heappush(self._deadlines, (entry.deadline, next(self._seq), key))
            elif not entry.reliable:
                entry.interval = self.t2
                entry.next_at = now + self.t2
                heapq.heappush(self._retransmits, (entry.next_at, next(self._seq), key))
        return key, False

    def due(self, now: float) -> list:
        """[(request, dest)] to send again now over UDP; call at `next_deadline()`."""
        out, heap = [], self._retransmits
        while heap and heap[0][0] <= now:
            when, _, key = heapq.heappop(heap)
            entry = self._table.get(key)
            if entry is None or entry.next_at != when or now >= entry.deadline:
                continue
            out.append((entry.request, entry.dest))
            self.retransmitted += 1
            # Timer A doubles without bound (INVITE); Timer E doubles up to T2, or stays at T2 once
            # a provisional response came (17.1.2.2)
            entry.interval = entry.interval * 2 if entry.invite else min(entry.interval * 2, self.t2)
            if entry.proceeding:
                entry.interval = self.t2
            entry.next_at = now + entry.interval
            heapq.heappush(heap, (entry.next_at, next(self._seq), key))
        return out

    def expired(self, now: float) -> list:
        """Keys of transactions that timed out (Timer B / F) or were pushed out; they are ended."""
        out, self._pushed_out = self._pushed_out, []
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            when, _, key = heapq.heappop(heap)
            entry = self._table.get(key)
            if entry is None or entry.deadline != when:
                continue
            del self._table[key]
            out.append(key)
        return out

    def cancel(self, key: tuple[str, str]) -> bool:
        """Stop tracking a transaction (its caller gave up); True when it was pending."""
        if key in self._pushed_out:
            self._pushed_out.remove(key)
            return True
        return self._table.pop(key, None) is not None

    def next_deadline(self) -> float | None:
        """The earliest time `due` or `expired` has something to do; None when idle."""
        if self._pushed_out:
            return float("-inf")
        best = None
        for heap in (self._retransmits, self._deadlines):
            while heap:
                when, _, key = heap[0]
                entry = self._table.get(key)
                if entry is not None and when in (entry.next_at, entry.deadline):
                    break
                heapq.heappop(heap)
            if heap and (best is None or heap[0][0] < best):
                best = heap[0][0]
        return best

    def _compact(self) -> None:
        """Drop heap entries of finished transactions once they outnumber the live ones."""
        live = len(self._table)
        for name in ("_retransmits", "_deadlines"):
            heap = getattr(self, name)
            if len(heap) > 4 * live + 64:
                kept = [
                    item
                    for item in heap
                    if item[2] in self._table
                    and item[0] in (self._table[item[2]].next_at, self._table[item[2]].deadline)
                ]
                heapq.heapify(kept)
                setattr(self, name, kept)


def ack_for(invite: SipRequest, response: SipResponse) -> SipRequest:
    """The ACK of a non-2xx final response to `invite` (RFC 3261 17.1.1.3): same branch, Request-URI,
    From and Call-ID as the INVITE, the response's To (with its tag), CSeq number of the INVITE."""
    h = Headers()
    h.add("Via", _top_via_raw(invite))
    for route in invite.headers.get_all("route"):
        h.add("Route", route)
    h.add("From", invite.headers.get("from"))
    h.add("To", response.headers.get("to"))
    h.add("Call-ID", invite.headers.get("call-id"))
    h.add("CSeq", f"{invite.cseq[0]} ACK")
    h.add("Max-Forwards", "70")
    return SipRequest("ACK", invite.uri, h, b"")
