"""Building SIP messages (RFC 3261) for GB/T 28181: requests with fresh branch, tag and Call-ID,
and responses that copy what RFC 3261 says a response copies from its request (Via with `received`
and `rport` filled in, From, To with our tag, Call-ID, CSeq). The parsing half is `sip.py`, which
re-exports these names."""

from __future__ import annotations

import secrets
from collections.abc import Iterable

from tianwang.drivers.gb28181.sip import (
    BRANCH_MAGIC,
    Headers,
    NameAddr,
    SipRequest,
    SipResponse,
    Via,
    _hostport,
    split_header_values,
)

# -- building -----------------------------------------------------------------------------------
REASONS = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    423: "Interval Too Brief",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    489: "Bad Event",
    491: "Request Pending",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}


def reason_phrase(status: int) -> str:
    return REASONS.get(status) or {
        1: "Trying",
        2: "OK",
        3: "Redirect",
        4: "Client Error",
        5: "Server Error",
        6: "Global Failure",
    }.get(status // 100, "Unknown")


def new_branch() -> str:
    return BRANCH_MAGIC + secrets.token_hex(8)


def new_tag() -> str:
    return secrets.token_hex(5)


def new_call_id() -> str:
    return secrets.token_hex(16)


def _angle(uri: object) -> str:
    """A URI (str or SipUri) in angle brackets; a NameAddr or bracketed text as it is."""
    text = str(uri)
    return text if isinstance(uri, NameAddr) or text.startswith(("<", '"')) else f"<{text}>"


def build_request(
    method: str,
    uri: object,
    *,
    via_host: str,
    via_port: int,
    transport: str,
    from_uri: object,
    from_tag: str,
    to_uri: object,
    to_tag: str | None = None,
    call_id: str,
    cseq: int,
    branch: str | None = None,
    contact: object = None,
    headers: Iterable[tuple[str, object]] = (),
    body: bytes = b"",
    content_type: str | None = None,
    max_forwards: int = 70,
) -> SipRequest:
    """A request with the RFC 3261 mandatory headers; `headers` are (name, value) pairs added after them.

    The Via asks for `rport` so a device behind NAT answers to where the request came from.
    """
    method = method.upper()
    h = Headers()
    h.add("Via", f"SIP/2.0/{transport.upper()} {_hostport(via_host, via_port)};rport;branch={branch or new_branch()}")
    h.add("From", f"{_angle(from_uri)};tag={from_tag}")
    h.add("To", _angle(to_uri) + (f";tag={to_tag}" if to_tag else ""))
    h.add("Call-ID", call_id)
    h.add("CSeq", f"{int(cseq)} {method}")
    h.add("Max-Forwards", str(max_forwards))
    if contact is not None:
        h.add("Contact", _angle(contact))
    for name, value in headers:
        h.add(name, value)
    if content_type is not None:
        h.set("Content-Type", content_type)
    h.set("Content-Length", len(body))
    return SipRequest(method, str(uri), h, bytes(body))


def build_response(
    request: SipRequest,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, object]] = (),
    body: bytes = b"",
    content_type: str | None = None,
    source: tuple[str, int] | None = None,
) -> SipResponse:
    """A response to `request` (RFC 3261 8.2.6): Via, From, To, Call-ID and CSeq copied.

    With `source=(ip, port)` (where the request really came from) the top Via gets `received=ip`,
    and `rport=port` when the request asked for it (RFC 3581). A final response to a request whose To
    has no tag gets `to_tag` (a fresh one when none is given); a 100 Trying gets none.
    """
    h = Headers()
    vias = [v for line in request.headers.get_all("via") for v in split_header_values(line)]
    if source is not None and vias:
        top = request.top_via  # shared with the request's other readers: changed in a copy
        params = dict(top.params)
        params["received"] = source[0]
        if "rport" in params:
            params["rport"] = str(source[1])
        vias[0] = str(Via(top.transport, top.host, top.port, params))
    for via in vias:
        h.add("Via", via)
    h.add("From", request.headers.get("from"))
    to_value = request.headers.get("to")
    if status > 100 and request.to.tag is None:
        to_value = f"{to_value};tag={to_tag or new_tag()}"
    h.add("To", to_value)
    h.add("Call-ID", request.headers.get("call-id"))
    h.add("CSeq", request.headers.get("cseq"))
    for name, value in headers:
        h.add(name, value)
    if content_type is not None:
        h.set("Content-Type", content_type)
    h.set("Content-Length", len(body))
    return SipResponse(int(status), reason or reason_phrase(status), h, bytes(body))
