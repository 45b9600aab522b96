"""The simulated devices' cheap wire path: request bytes written straight from text, and the
platform's responses read by a header scan.

A fleet of ten thousand devices sends and receives hundreds of thousands of messages while it
registers; building each request through `sip.Headers` and parsing each response in full cost the
fleet as much CPU as the gateway it measures. What goes out is the same, byte for byte, as
`sip.build_request(...).to_bytes()` (tests/test_gb28181_sim_wire.py holds them together). What
comes in: a device needs only the status, the top Via's branch and the CSeq method to find its
transaction, and a few headers of the final response (WWW-Authenticate, Expires, Min-Expires).
`scan_response` reads those and answers None for anything it cannot vouch for (compact or folded
headers, several Vias in one line, a missing branch, a short body), which then takes the full
parser (`sip.parse_message`).

`OutgoingTransactions` is the client side of RFC 3261 17.1.2 for the whole fleet in one table (the
devices only send non-INVITE requests): retransmission over UDP at T1 doubling to T2 (at T2 once a
provisional response came), timeout at 64*T1 (Timer F), one heap for every device's timers instead
of a table and a timer walk per device.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable
from typing import Any

from tianwang.drivers.gb28181 import sip
from tianwang.drivers.gb28181.transaction import T1, T2

_NAMES: dict[str, str] = {}


def _name(name: str) -> str:
    canonical = _NAMES.get(name)
    if canonical is None:
        canonical = _NAMES[name] = sip.canonical_name(name)
    return canonical


def _angle(uri: str) -> str:
    return uri if uri.startswith(("<", '"')) else f"<{uri}>"


def request_bytes(
    method: str,
    uri: str,
    *,
    via_host: str,
    via_port: int,
    transport: str,
    from_uri: str,
    from_tag: str,
    to_uri: str,
    to_tag: str | None,
    call_id: str,
    cseq: int,
    branch: str,
    contact: str | None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    content_type: str | None = None,
) -> bytes:
    """The wire bytes `sip.build_request(...)` gives for the same arguments (strings for the URIs;
    `headers` must not name Content-Type or Content-Length). Raises ValueError for a CR or LF in a
    header value, as the builder does."""
    method = method.upper()
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: SIP/2.0/{transport.upper()} {via_host}:{via_port};rport;branch={branch}",
        f"From: {_angle(from_uri)};tag={from_tag}",
        f"To: {_angle(to_uri)};tag={to_tag}" if to_tag else f"To: {_angle(to_uri)}",
        f"Call-ID: {call_id}",
        f"CSeq: {int(cseq)} {method}",
        "Max-Forwards: 70",
    ]
    if contact is not None:
        lines.append(f"Contact: {_angle(contact)}")
    return _finish(lines, headers, content_type, body)


def _finish(lines: list[str], headers: Iterable[tuple[str, object]], content_type: str | None, body: bytes) -> bytes:
    """The extra headers, Content-Type and Content-Length after `lines`, then the body."""
    for name, value in headers:
        text = str(value)
        if "\r" in text or "\n" in text:
            raise ValueError(f"{name}: CR or LF in a header value")
        lines.append(f"{_name(name)}: {text}")
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}")
    lines.append(f"Content-Length: {len(body)}")
    lines.append("\r\n")
    return "\r\n".join(lines).encode("utf-8", "surrogateescape") + body


class ScannedHeaders:
    """The first value of each header of a scanned response, looked up case-insensitively."""

    __slots__ = ("_values",)

    def __init__(self, values: dict[str, str]) -> None:
        self._values = values

    def get(self, name: str, default: str | None = None) -> str | None:
        return self._values.get(name.lower(), default)


class ScannedResponse:
    """What a device reads of a platform's response: status, reason, the top Via's branch, the
    CSeq method and the headers (`headers.get`)."""

    __slots__ = ("status", "reason", "branch", "method", "headers")

    def __init__(self, status: int, reason: str, branch: str, method: str, headers: ScannedHeaders) -> None:
        self.status = status
        self.reason = reason
        self.branch = branch
        self.method = method
        self.headers = headers


_NEEDED = ("via", "cseq", "call-id", "from", "to")


def _token_name(key: str) -> bool:
    return key.isascii() and key.replace("-", "").replace(".", "").replace("_", "").isalnum()


def scan_response(data: bytes) -> ScannedResponse | None:
    """A response's status, branch, CSeq method and headers by a scan of its lines; None when the
    datagram is not a response this scan vouches for (the caller then parses it in full)."""
    if not data.startswith(b"SIP/2.0 "):
        return None
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = data[:end].decode("utf-8", "surrogateescape").split("\r\n")
    status_text, _, reason = lines[0][8:].partition(" ")
    if len(status_text) != 3 or not status_text.isdigit() or status_text[0] not in "123456":
        return None
    values: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        key = name.rstrip(" \t").lower()
        if not sep or len(key) < 2 or line[:1] in (" ", "\t") or "\n" in line or "\r" in line:
            return None  # folded, compact or bare-CR lines: the full parser knows them
        if key not in values:
            values[key] = value.strip()
        elif key == "via":
            pass  # later Vias are not ours
        elif key in _NEEDED or key == "content-length":
            if values[key] != value.strip():
                return None  # conflicting single headers: the full parser says which
    if any(key not in values for key in _NEEDED):
        return None
    via = values["via"]
    start = via.find(";branch=")
    if start < 0 or "," in via:
        return None
    branch = via[start + 8 :].split(";", 1)[0].strip()
    number, _, method = values["cseq"].partition(" ")
    method = method.strip().upper()  # as the full parser reads a CSeq
    if not branch or not number.isdigit() or not method:
        return None
    length = values.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > len(data) - end - 4):
        return None
    return ScannedResponse(int(status_text), reason.strip(), branch, method, ScannedHeaders(values))


class ScannedRequest:
    """What a device reads of a platform's MESSAGE: the method, the branch, the headers it answers
    with (every Via, From, To, Call-ID, CSeq) and the body; `to_tagged` when To has a tag."""

    __slots__ = ("method", "branch", "vias", "headers", "body", "to_tagged")

    def __init__(
        self, method: str, branch: str, vias: list[str], headers: ScannedHeaders, body: bytes, to_tagged: bool
    ) -> None:
        self.method = method
        self.branch = branch
        self.vias = vias
        self.headers = headers
        self.body = body
        self.to_tagged = to_tagged


def scan_request(data: bytes, method: str = "MESSAGE") -> ScannedRequest | None:
    """A `method` request read by a scan of its lines, as far as a device needs to answer it; None
    for anything the scan cannot vouch for (the caller then parses it in full)."""
    prefix = method.encode() + b" "
    if not data.startswith(prefix):
        return None
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = data[:end].decode("utf-8", "surrogateescape").split("\r\n")
    start_line = lines[0].split(" ")
    if len(start_line) != 3 or start_line[2] != "SIP/2.0" or not start_line[1].startswith("sip:"):
        return None
    values: dict[str, str] = {}
    vias: list[str] = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        key = name.rstrip(" \t").lower()
        if not sep or len(key) < 2 or line[:1] in (" ", "\t") or "\r" in line or not _token_name(key):
            return None
        value = value.strip()
        if key == "via":
            if "," in value or not value:
                return None  # several Vias in one line: the full parser splits them
            vias.append(value)
        elif key not in values:
            values[key] = value
        elif key in _NEEDED or key == "content-length":
            if values[key] != value:
                return None
    if not vias or any(key not in values for key in _NEEDED[1:]):
        return None
    top = vias[0]
    at = top.find(";branch=")
    if at < 0 or not top.upper().startswith("SIP/2.0/"):
        return None
    branch = top[at + 8 :].split(";", 1)[0].strip()
    number, _, cseq_method = values["cseq"].partition(" ")
    if not branch or not number.isdigit() or cseq_method.strip().upper() != method or not values["call-id"]:
        return None
    to = values["to"].lower()
    to_tagged = ";tag=" in to
    if "tag" in to and not to_tagged:
        return None
    body = data[end + 4 :]
    length = values.get("content-length")
    if length is not None:
        if not length.isdigit() or int(length) > len(body):
            return None
        body = body[: int(length)]
    return ScannedRequest(method, branch, vias, ScannedHeaders(values), body, to_tagged)


def response_bytes(
    request: ScannedRequest,
    status: int,
    *,
    to_tag: str,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    content_type: str | None = None,
) -> bytes:
    """The wire bytes `sip.build_response(request, status, to_tag=...)` gives for the request the
    scan read (no `source`: the device answers to where it sent from)."""
    h = request.headers
    to = h.get("to")
    if status > 100 and not request.to_tagged:
        to = f"{to};tag={to_tag}"
    lines = [f"SIP/2.0 {status} {sip.reason_phrase(status)}"]
    lines += [f"Via: {via}" for via in request.vias]
    lines += [f"From: {h.get('from')}", f"To: {to}", f"Call-ID: {h.get('call-id')}", f"CSeq: {h.get('cseq')}"]
    return _finish(lines, headers, content_type, body)


class _Outgoing:
    __slots__ = ("device", "method", "data", "reliable", "interval", "next_at", "deadline", "callback", "proceeding")

    def __init__(
        self, device: Any, method: str, data: bytes, reliable: bool, callback: Callable | None, now: float
    ) -> None:
        self.device = device
        self.method = method
        self.data = data
        self.reliable = reliable
        self.callback = callback
        self.interval = T1
        self.deadline = now + 64 * T1  # Timer F
        self.next_at = self.deadline if reliable else now + T1  # Timer E
        self.proceeding = False


class OutgoingTransactions:
    """Every device's pending requests by branch; `due(now)` says what to send again and what timed
    out. The device resends with `device.resend(data)` and learns a timeout as `callback(None)`."""

    def __init__(self) -> None:
        self._table: dict[str, _Outgoing] = {}
        self._heap: list = []  # (when, seq, branch)
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._table)

    def start(
        self, device: Any, branch: str, method: str, data: bytes, reliable: bool, callback: Callable | None, now: float
    ) -> None:
        entry = _Outgoing(device, method, data, reliable, callback, now)
        self._table[branch] = entry
        heapq.heappush(self._heap, (entry.next_at, next(self._seq), branch))

    def response(self, branch: str, method: str, status: int, now: float) -> tuple[bool, Callable | None] | None:
        """(final, callback) for a response to a pending request, None for a stray one (unknown
        branch, or a method other than the request's: RFC 3261 17.1.3)."""
        entry = self._table.get(branch)
        if entry is None or entry.method != method:
            return None
        if status >= 200:
            del self._table[branch]
            return True, entry.callback
        if not entry.proceeding:
            entry.proceeding = True
            if not entry.reliable:  # 17.1.2.2: a provisional response slows retransmission to T2
                entry.interval = T2
                entry.next_at = min(now + T2, entry.deadline)
                heapq.heappush(self._heap, (entry.next_at, next(self._seq), branch))
        return False, entry.callback

    def due(self, now: float) -> tuple[list, list]:
        """([(device, data)] to send again, [callback] of the requests that timed out)."""
        resend, timed_out, heap, table = [], [], self._heap, self._table
        while heap and heap[0][0] <= now:
            when, _, branch = heapq.heappop(heap)
            entry = table.get(branch)
            if entry is None or entry.next_at != when:
                continue  # answered, or rescheduled since
            if now >= entry.deadline:
                del table[branch]
                timed_out.append(entry.callback)
                continue
            resend.append((entry.device, entry.data))
            entry.interval = T2 if entry.proceeding else min(entry.interval * 2, T2)
            entry.next_at = min(now + entry.interval, entry.deadline)
            heapq.heappush(heap, (entry.next_at, next(self._seq), branch))
        return resend, timed_out
