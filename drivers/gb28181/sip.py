"""SIP messages (RFC 3261) for GB/T 28181: parsing and building, strict and small, sans-io.
(The building half is `sip_build.py`; its names are importable from here too.)

This module turns one UDP datagram or a TCP byte stream into `SipRequest` / `SipResponse` objects and
back. It opens nothing and keeps no state beyond the stream buffer of a `StreamFramer`.

Choices, and why:
- No SIP stack from PyPI: the maintained ones are media-phone oriented; GB/T 28181 needs only the
  message syntax, digest, transactions and a little SDP, so the gateway carries its own small layer.
- Header text is decoded as UTF-8 with `surrogateescape`: devices put GB2312 bytes in display names
  and Subject lines, and those bytes must survive a parse -> build round trip unchanged. Bodies are
  never decoded here (MANSCDP XML is decoded by its own module).
- Strict where a mistake would mislead the gateway (start line, CSeq, Content-Length, the headers a
  transaction needs), lenient where the field differs harmlessly (bare LF line ends, header folding,
  compact names, case of names, missing Max-Forwards).

Every parse error raises `SipError` (a FrameError) whose `reason` is the drop-counter label.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar, cast, overload

from tianwang.drivers.sdk import FrameError

MAX_SIZE = 65536  # bytes of one message, head and body
MAX_HEADERS = 128  # header lines of one message (folded lines count once)
MAX_LINE = 8192  # bytes of one header line

BRANCH_MAGIC = "z9hG4bK"  # RFC 3261 section 8.1.1.7: branches of compliant stacks start with this


class SipError(FrameError):
    """Bytes that are not a SIP message this layer accepts; `reason` is the drop-counter label.

    `messages` holds the complete messages a `StreamFramer.feed` call had already framed in the same
    chunk before the fault, so the caller can still handle them before it closes the connection.
    """

    def __init__(
        self, reason: str, detail: str = "", messages: Iterable[SipRequest | SipResponse] | None = None
    ) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.messages = list(messages or ())


_T = TypeVar("_T")

# -- header names -------------------------------------------------------------------------------
# RFC 3261 section 7.3.3 compact forms, plus the RFC 3265 / 3515 / 4028 ones a GB peer may use.
COMPACT = {
    "v": "via",
    "f": "from",
    "t": "to",
    "i": "call-id",
    "l": "content-length",
    "c": "content-type",
    "m": "contact",
    "k": "supported",
    "s": "subject",
    "e": "content-encoding",
    "o": "event",
    "u": "allow-events",
    "r": "refer-to",
    "b": "referred-by",
    "x": "session-expires",
}

_CANONICAL = {
    name.lower(): name
    for name in (
        "Via",
        "From",
        "To",
        "Call-ID",
        "CSeq",
        "Contact",
        "Content-Length",
        "Content-Type",
        "Max-Forwards",
        "Expires",
        "Subject",
        "Supported",
        "Content-Encoding",
        "Event",
        "Allow-Events",
        "Refer-To",
        "Referred-By",
        "Session-Expires",
        "WWW-Authenticate",
        "Authorization",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "User-Agent",
        "Server",
        "Date",
        "Allow",
        "Route",
        "Record-Route",
        "Subscription-State",
        "Min-Expires",
        "Retry-After",
        "Accept",
        "Warning",
        "X-GB-Ver",
    )
}

_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
_TOKEN_RE = re.compile(_TOKEN, re.ASCII)
_REQUEST_LINE = re.compile(rf"({_TOKEN}) (\S+) ([Ss][Ii][Pp]/[0-9]{{1,3}}\.[0-9]{{1,3}})", re.ASCII)
_STATUS_LINE = re.compile(r"([Ss][Ii][Pp]/[0-9]{1,3}\.[0-9]{1,3}) ([1-6][0-9][0-9])(?: ([^\r\n]*))?", re.ASCII)
_HEADER_NAME = re.compile(rf"({_TOKEN})[ \t]*:", re.ASCII)
_CSEQ = re.compile(rf"\s*([0-9]{{1,10}})\s+({_TOKEN})\s*", re.ASCII)
_DIGITS = re.compile(r"\s*([0-9]{1,10})\s*", re.ASCII)
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._]+)(?::([0-9]{1,5}))?", re.ASCII)
_VIA = re.compile(rf"\s*SIP\s*/\s*2\.0\s*/\s*({_TOKEN})\s+([^;\s]+)\s*(;.*)?", re.ASCII | re.IGNORECASE | re.DOTALL)

CSEQ_MAX = 2**31 - 1  # RFC 3261 section 8.1.1.5


def canonical_name(name: str) -> str:
    """The full, conventionally capitalised form of a header name (compact forms expanded)."""
    key = name.lower()
    key = COMPACT.get(key, key)
    return _CANONICAL.get(key, name if len(name) > 1 else key)


def _key(name: str) -> str:
    key = _KEYS.get(name)
    if key is None:
        key = name.lower()
        key = COMPACT.get(key, key)
        if len(_KEYS) < _NAMES_KEPT:
            _KEYS[name] = key
    return key


# Header names as they come, looked up once: every message carries the same dozen. Bounded, so a
# peer sending made-up names cannot grow them.
_NAMES_KEPT = 1024
_KEYS: dict[str, str] = {}  # name as written -> lookup key
_NAMES: dict[str, tuple[str, str]] = {}  # name as written (a valid token) -> (lookup key, display name)


def _name(name: str) -> tuple[str, str]:
    """(lookup key, display name) of a header name known to be a token."""
    hit = _NAMES.get(name)
    if hit is None:
        hit = (_key(name), canonical_name(name))
        if len(_NAMES) < _NAMES_KEPT:
            _NAMES[name] = hit
    return hit


def _checked(name: str, value: object) -> str:
    """A header value safe to write: a CR or LF in it would let text from a device or a config
    forge headers of its own, so builders refuse it (ValueError) rather than send it."""
    value = str(value)
    if "\r" in value or "\n" in value:
        raise ValueError(f"{name}: CR or LF in a header value")
    if name not in _NAMES and not _TOKEN_RE.fullmatch(name):
        raise ValueError(f"bad header name {name!r}")
    return value


class Headers:
    """Ordered, case-insensitive, multi-valued SIP headers; compact names map to the full ones."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, object]] = ()) -> None:
        self._items: list[tuple[str, str, str]] = []  # (lookup key, display name, value)
        for name, value in items:
            self.add(name, value)

    @overload
    def get(self, name: str) -> str | None: ...

    @overload
    def get(self, name: str, default: _T) -> str | _T: ...

    def get(self, name: str, default: object = None) -> object:
        key = _key(name)
        for k, _, value in self._items:
            if k == key:
                return value
        return default

    def get_all(self, name: str) -> list[str]:
        key = _key(name)
        return [value for k, _, value in self._items if k == key]

    def set(self, name: str, value: object) -> None:
        """Replace the first occurrence (dropping the others) or append when absent."""
        key = _key(name)
        value = _checked(name, value)
        out, done = [], False
        for item in self._items:
            if item[0] == key:
                if not done:
                    out.append((key, item[1], value))
                    done = True
                continue
            out.append(item)
        if not done:
            out.append((key, canonical_name(name), value))
        self._items = out

    def add(self, name: str, value: object, *, first: bool = False) -> None:
        """Append a value (or put it before every other header with `first=True`, as for a new Via)."""
        value = _checked(name, value)
        key, display = _name(name)
        item = (key, display, value)
        if first:
            self._items.insert(0, item)
        else:
            self._items.append(item)

    def remove(self, name: str) -> int:
        """Remove every value of `name`; return how many there were."""
        key = _key(name)
        before = len(self._items)
        self._items = [item for item in self._items if item[0] != key]
        return before - len(self._items)

    def copy(self) -> Headers:
        new = Headers()
        new._items = list(self._items)
        return new

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = _key(name)
        return any(k == key for k, _, _ in self._items)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        for _, name, value in self._items:
            yield name, value

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return [(k, v) for k, _, v in self._items] == [(k, v) for k, _, v in other._items]

    __hash__ = None  # type: ignore[assignment]  # mutable and compared by value: unhashable

    def __repr__(self) -> str:
        return f"Headers({list(self)!r})"


# -- parameters, URIs, name-addr, Via -----------------------------------------------------------
def _split_outside_quotes(text: str, sep: str) -> list[str]:
    """Split on `sep` outside double quotes (backslash escapes honoured) and angle brackets."""
    if '"' not in text and "<" not in text:
        return text.split(sep)  # the usual case, and the hot one
    parts, start, quoted, angle, i, n = [], 0, False, False, 0, len(text)
    while i < n:
        ch = text[i]
        if quoted:
            if ch == "\\":
                i += 1
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "<":
            angle = True
        elif ch == ">":
            angle = False
        elif ch == sep and not angle:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    if quoted:
        raise SipError("bad_header", "unterminated quoted string")
    parts.append(text[start:])
    return parts


def split_header_values(value: str) -> list[str]:
    """The comma-separated values of one header line (Via, Contact...), commas in quotes kept."""
    return [part.strip() for part in _split_outside_quotes(value, ",") if part.strip()]


def unquote(value: str) -> str:
    """A quoted-string's content with backslash escapes resolved; a bare token as it is."""
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1], flags=re.DOTALL)
    return value


def parse_params(text: str) -> dict[str, str | None]:
    """`;a=b;c;d="e"` -> {"a": "b", "c": None, "d": "e"}; names lower-cased, values unquoted."""
    params: dict[str, str | None] = {}
    text = text.strip()
    if not text:
        return params
    if not text.startswith(";"):
        raise SipError("bad_header", f"parameters must start with ';': {text[:40]!r}")
    for part in _split_outside_quotes(text[1:], ";"):
        name, eq, value = part.partition("=")
        name = name.strip()
        if not _TOKEN_RE.fullmatch(name):
            raise SipError("bad_header", f"bad parameter name {name[:40]!r}")
        params[name.lower()] = unquote(value) if eq else None
    return params


def _render_params(params: dict) -> str:
    out = []
    for name, value in params.items():
        if value is None:
            out.append(f";{name}")
        elif value == "" or any(ch in value for ch in ' ;,"<>@:'):
            escaped = value.replace("\\", "\\\\").replace('"', '\\"')
            out.append(f';{name}="{escaped}"')
        else:
            out.append(f";{name}={value}")
    return "".join(out)


def _parse_host(text: str) -> tuple[str, int | None]:
    m = _HOST.fullmatch(text)
    if m is None:
        raise SipError("bad_header", f"bad host {text[:60]!r}")
    port = int(m.group(2)) if m.group(2) else None
    if port is not None and not 0 < port < 65536:
        raise SipError("bad_header", f"bad port {port}")
    return m.group(1), port


def _hostport(host: str, port: int | None) -> str:
    return host if port is None else f"{host}:{port}"


@dataclass
class SipUri:
    """`sip:user@host:port;params?headers` (user, port and the rest optional)."""

    scheme: str = "sip"
    user: str | None = None
    host: str = ""
    port: int | None = None
    params: dict = field(default_factory=dict)
    password: str | None = None
    headers: str | None = None  # the raw `?...` part, kept as sent

    def __str__(self) -> str:
        userinfo = ""
        if self.user is not None:
            userinfo = self.user + (f":{self.password}" if self.password is not None else "") + "@"
        tail = f"?{self.headers}" if self.headers is not None else ""
        return f"{self.scheme}:{userinfo}{_hostport(self.host, self.port)}{_render_params(self.params)}{tail}"


def parse_uri(text: str) -> SipUri:
    """Parse a sip: or sips: URI. Raises SipError('bad_uri')."""
    try:
        text = text.strip()
        scheme, colon, rest = text.partition(":")
        if not colon or scheme.lower() not in ("sip", "sips"):
            raise SipError("bad_uri", f"not a sip URI: {text[:60]!r}")
        rest, qmark, headers = rest.partition("?")
        user = password = None
        if "@" in rest:
            userinfo, _, rest = rest.rpartition("@")
            user, colon, pw = userinfo.partition(":")
            password = pw if colon else None
            if any(ch in userinfo for ch in ' \t<>"') or not user:
                raise SipError("bad_uri", f"bad user part {userinfo[:40]!r}")
        hostport, semi, params = rest.partition(";")
        host, port = _parse_host(hostport)
        return SipUri(
            scheme.lower(),
            user,
            host,
            port,
            parse_params(";" + params) if semi else {},
            password,
            headers if qmark else None,
        )
    except SipError as exc:
        raise SipError("bad_uri", exc.detail) from None


@dataclass
class NameAddr:
    """`"display" <uri>;params` as in From, To and Contact; `tag` is a parameter."""

    uri: SipUri
    display: str | None = None
    params: dict = field(default_factory=dict)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    @property
    def user(self) -> str | None:
        return self.uri.user

    def __str__(self) -> str:
        display = ""
        if self.display:
            escaped = self.display.replace("\\", "\\\\").replace('"', '\\"')
            display = f'"{escaped}" '
        return f"{display}<{self.uri}>{_render_params(self.params)}"


def _parse_contact(value: str) -> NameAddr:
    values = split_header_values(value)
    if not values:
        raise SipError("bad_header", "empty Contact")
    return parse_name_addr(values[0])


def parse_name_addr(text: str) -> NameAddr:
    """Parse a From / To / Contact value. Raises SipError('bad_header')."""
    text = text.strip()
    display = None
    rest = text
    if rest.startswith('"'):
        i, n = 1, len(rest)
        while i < n and rest[i] != '"':
            i += 2 if rest[i] == "\\" else 1
        if i >= n:
            raise SipError("bad_header", f"unterminated display name in {text[:60]!r}")
        display = unquote(rest[: i + 1])
        rest = rest[i + 1 :].lstrip()
        if not rest.startswith("<"):
            raise SipError("bad_header", f"display name without <uri> in {text[:60]!r}")
    lt = rest.find("<")
    try:
        if lt >= 0:
            gt = rest.find(">", lt)
            if gt < 0:
                raise SipError("bad_header", f"unclosed < in {text[:60]!r}")
            if display is None:
                display = rest[:lt].strip() or None
            uri = parse_uri(rest[lt + 1 : gt])
            params = parse_params(rest[gt + 1 :])
        else:
            # addr-spec: the ';' parameters belong to the header, not to the URI (RFC 3261 20.10)
            uri_text, semi, params_text = rest.partition(";")
            uri = parse_uri(uri_text)
            params = parse_params(";" + params_text) if semi else {}
    except SipError as exc:
        raise SipError("bad_header", exc.detail) from None
    return NameAddr(uri, display, params)


@dataclass
class Via:
    """One Via value: `SIP/2.0/UDP host:port;branch=...;rport;received=...`."""

    transport: str
    host: str
    port: int | None = None
    params: dict = field(default_factory=dict)

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        return self.params.get("received")

    @property
    def rport(self) -> int | None:
        """The rport value a server filled in; None when absent or asked for without a value."""
        value = self.params.get("rport")
        return int(value) if value and value.isdigit() else None

    @property
    def sent_by(self) -> tuple[str, int]:
        """(host, port) as the sender claims it; port 5060 when none is given."""
        return self.host, self.port if self.port is not None else 5060

    def __str__(self) -> str:
        return f"SIP/2.0/{self.transport} {_hostport(self.host, self.port)}{_render_params(self.params)}"


def _parse_via_line(line: str) -> list[Via]:
    return [parse_via(v) for v in split_header_values(line)]


def parse_via(text: str) -> Via:
    """Parse one Via value (not a comma list). Raises SipError('bad_header')."""
    m = _VIA.fullmatch(text)
    if m is None:
        raise SipError("bad_header", f"bad Via {text[:60]!r}")
    host, port = _parse_host(m.group(2))
    params = parse_params(m.group(3) or "")
    rport = params.get("rport")
    if rport is not None and not _DIGITS.fullmatch(rport):
        raise SipError("bad_header", f"bad rport {rport[:20]!r}")
    return Via(m.group(1).upper(), host, port, params)


# -- messages -----------------------------------------------------------------------------------
def _parse_cseq(value: str) -> tuple[int, str]:
    m = _CSEQ.fullmatch(value)
    if m is None or int(m.group(1)) > CSEQ_MAX:
        raise SipError("bad_cseq", value[:40])
    return int(m.group(1)), m.group(2).upper()


def _parse_top_via(value: str) -> Via:
    values = split_header_values(value)
    if not values:
        raise SipError("bad_header", "empty Via")
    return parse_via(values[0])


class _Message(abc.ABC):
    """What requests and responses share: the headers a transaction and a session read.

    A header read through a property (From, To, CSeq, the Vias, Contact) is parsed once per
    message and the result shared by every later reader (a message is validated, matched to its
    transaction, answered and handled: each reads the same headers), so the objects returned are
    read-only. A header changed since is parsed again: the cache holds the very value it parsed."""

    headers: Headers
    body: bytes

    @abc.abstractmethod
    def _start_line(self) -> str:
        """The request line or the status line."""

    def _parsed(self, key: str, raw: str, parse: Callable[[str], _T]) -> _T:
        cache: dict[str, tuple[str, object]] | None = self.__dict__.get("_parsed_headers")
        if cache is None:
            cache = self.__dict__["_parsed_headers"] = {}
        hit = cache.get(key)
        if hit is not None and hit[0] is raw:
            return cast(_T, hit[1])
        value = parse(raw)
        cache[key] = (raw, value)
        return value

    @property
    def call_id(self) -> str:
        value = self.headers.get("call-id")
        if value is None:
            raise SipError("missing_header", "Call-ID")
        return value.strip()

    @property
    def cseq(self) -> tuple[int, str]:
        value = self.headers.get("cseq")
        if value is None:
            raise SipError("missing_header", "CSeq")
        return self._parsed("cseq", value, _parse_cseq)

    @property
    def from_(self) -> NameAddr:
        value = self.headers.get("from")
        if value is None:
            raise SipError("missing_header", "From")
        return self._parsed("from", value, parse_name_addr)

    @property
    def to(self) -> NameAddr:
        value = self.headers.get("to")
        if value is None:
            raise SipError("missing_header", "To")
        return self._parsed("to", value, parse_name_addr)

    @property
    def via(self) -> list[Via]:
        out = []
        for i, line in enumerate(self.headers.get_all("via")):
            out.extend(self._parsed(f"via {i}", line, _parse_via_line))
        return out

    @property
    def top_via(self) -> Via:
        vias = self.headers.get_all("via")
        if not vias:
            raise SipError("missing_header", "Via")
        return self._parsed("top via", vias[0], _parse_top_via)

    @property
    def branch(self) -> str | None:
        return self.top_via.branch

    @property
    def content_type(self) -> str | None:
        value = self.headers.get("content-type")
        if value is None:
            return None
        return value.split(";", 1)[0].strip().lower()

    @property
    def contact(self) -> NameAddr | None:
        value = self.headers.get("contact")
        if value is None or value.strip() == "*":
            return None
        return self._parsed("contact", value, _parse_contact)

    def int_header(self, name: str) -> int | None:
        """An integer header (Expires, Max-Forwards...); None when absent; SipError when not a number."""
        value = self.headers.get(name)
        if value is None:
            return None
        m = _DIGITS.fullmatch(value)
        if m is None:
            raise SipError("bad_header", f"{name}: {value[:40]!r}")
        return int(m.group(1))

    def _head_lines(self) -> list[str]:
        lines, wrote_length = [], False
        for key, name, value in self.headers._items:
            if key == "content-length":
                if wrote_length:
                    continue
                value, wrote_length = str(len(self.body)), True
            lines.append(f"{name}: {value}")
        if not wrote_length:
            lines.append(f"Content-Length: {len(self.body)}")
        return lines

    def to_bytes(self) -> bytes:
        """Wire bytes; Content-Length always says the body's real length."""
        text = "\r\n".join([self._start_line(), *self._head_lines()]) + "\r\n\r\n"
        return text.encode("utf-8", "surrogateescape") + bytes(self.body)


@dataclass(eq=True)
class SipRequest(_Message):
    method: str
    uri: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    @property
    def request_uri(self) -> SipUri:
        return self._parsed("request uri", self.uri, parse_uri)

    def _start_line(self) -> str:
        return f"{self.method} {self.uri} SIP/2.0"


@dataclass(eq=True)
class SipResponse(_Message):
    status: int
    reason: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    @property
    def method(self) -> str:
        """The method of the request this answers (from CSeq)."""
        return self.cseq[1]

    def _start_line(self) -> str:
        return f"SIP/2.0 {self.status} {self.reason}"


# -- parsing ------------------------------------------------------------------------------------
def _parse_start_line(line: str) -> tuple[str, str | int, str]:
    """-> ("req", method, uri) or ("resp", status, reason). Raises SipError."""
    m = _REQUEST_LINE.fullmatch(line)
    if m is not None:
        if m.group(3).upper() != "SIP/2.0":
            raise SipError("unsupported_version", m.group(3))
        method, uri = m.group(1), m.group(2)
        try:
            parse_uri(uri)
        except SipError as exc:
            raise SipError("bad_start_line", f"Request-URI {exc.detail}") from None
        return "req", method.upper(), uri
    m = _STATUS_LINE.fullmatch(line)
    if m is not None:
        if m.group(1).upper() != "SIP/2.0":
            raise SipError("unsupported_version", m.group(1))
        return "resp", int(m.group(2)), (m.group(3) or "").strip()
    if line.upper().startswith("SIP/") and not line.upper().startswith("SIP/2.0 "):
        raise SipError("unsupported_version", line[:40])
    raise SipError("bad_start_line", repr(line[:60]))


def _parse_head(head: bytes, max_headers: int, max_line: int) -> SipRequest | SipResponse:
    """Parse the start line and headers (everything before the blank line) -> message without body."""
    if head.endswith(b"\r") or max(map(len, head.split(b"\n"))) > max_line:
        # a line too long somewhere (or a CR ending the head, which no LF follows): line by line
        return _parse_head_checked(head, max_headers, max_line)
    text = head.decode("utf-8", "surrogateescape")
    tlines = text.split("\n")
    first = tlines[0]
    if first.endswith("\r"):
        first = first[:-1]
    kind, a, b = _parse_start_line(first)
    # the usual head: every line short, decoded at once (the bytes of a multi-byte character
    # never include a LF, so the lines are those of the bytes); errors as the checked path has them
    items: list[tuple[str, str, str]] = []
    names = _NAMES
    for line in tlines[1:]:
        if line.endswith("\r"):
            line = line[:-1]
        if "\r" in line:
            raise SipError("bad_header", "bare CR inside a header line")
        if line[:1] in (" ", "\t"):
            if not items:
                raise SipError("bad_header", "continuation line before any header")
            key, display, value = items[-1]
            items[-1] = (key, display, value + " " + line.strip())  # RFC 3261 7.3.1: folding is one space
            continue
        name, colon, value = line.partition(":")
        name = name.rstrip(" \t")
        hit = names.get(name) if colon else None
        if hit is None:
            if not colon or not _TOKEN_RE.fullmatch(name):
                raise SipError("bad_header", repr(line[:60]))
            hit = _name(name)
        items.append((hit[0], hit[1], value.strip()))
        if len(items) > max_headers:
            raise SipError("too_large", f"more than {max_headers} headers")
    headers = Headers()
    headers._items = items
    msg = SipRequest(str(a), b, headers) if kind == "req" else SipResponse(int(a), b, headers)
    _validate(msg)
    return msg


def _parse_head_checked(head: bytes, max_headers: int, max_line: int) -> SipRequest | SipResponse:
    """`_parse_head` line by line, for a head with a line over `max_line` somewhere: the errors
    come in the order of the lines."""
    lines = re.split(rb"\r?\n", head)
    first = lines[0]
    if len(first) > max_line:
        raise SipError("too_large", "start line too long")
    kind, a, b = _parse_start_line(first.decode("utf-8", "surrogateescape"))
    headers = Headers()
    raw: list[list[str]] = []
    for line in lines[1:]:
        if len(line) > max_line:
            raise SipError("too_large", "header line too long")
        text = line.decode("utf-8", "surrogateescape")
        if "\r" in text:
            raise SipError("bad_header", "bare CR inside a header line")
        if text[:1] in (" ", "\t"):
            if not raw:
                raise SipError("bad_header", "continuation line before any header")
            raw[-1][1] += " " + text.strip()  # RFC 3261 7.3.1: folding is equivalent to one space
            continue
        m = _HEADER_NAME.match(text)
        if m is None:
            raise SipError("bad_header", repr(text[:60]))
        raw.append([m.group(1), text[m.end() :].strip()])
        if len(raw) > max_headers:
            raise SipError("too_large", f"more than {max_headers} headers")
    for name, value in raw:
        headers.add(name, value)
    msg = SipRequest(str(a), b, headers) if kind == "req" else SipResponse(int(a), b, headers)
    _validate(msg)
    return msg


_SINGLE = frozenset(("call-id", "cseq", "from", "to", "content-length", "content-type", "max-forwards", "expires"))
_REQUIRED = ("via", "from", "to", "call-id", "cseq")


def _validate(msg: SipRequest | SipResponse) -> None:
    """The headers every transaction needs must be present, single and well-formed."""
    seen: dict[str, str] = {}
    for key, _, value in msg.headers._items:
        if key in _SINGLE:
            prev = seen.get(key)
            if prev is not None and prev.strip() != value.strip():
                reason = "bad_content_length" if key == "content-length" else "bad_header"
                raise SipError(reason, f"conflicting {canonical_name(key)} headers")
        seen.setdefault(key, value)
    for key in _REQUIRED:
        if key not in seen:
            raise SipError("missing_header", canonical_name(key))
    if not msg.call_id:
        raise SipError("bad_header", "empty Call-ID")
    number, method = msg.cseq
    if isinstance(msg, SipRequest) and method != msg.method:
        raise SipError("bad_cseq", f"CSeq method {method} differs from {msg.method}")
    vias = msg.via
    if not vias:
        raise SipError("missing_header", "Via")
    _ = msg.from_, msg.to  # reading them raises SipError for a malformed From or To
    length = seen.get("content-length")
    if length is not None and _DIGITS.fullmatch(length) is None:
        raise SipError("bad_content_length", repr(length[:20]))


def _content_length(msg: SipRequest | SipResponse) -> int | None:
    value = msg.headers.get("content-length")
    return None if value is None else int(value)


def parse_message(
    data: bytes, *, max_size: int = MAX_SIZE, max_headers: int = MAX_HEADERS, max_line: int = MAX_LINE
) -> SipRequest | SipResponse:
    """Parse one whole message (a UDP datagram). Raises SipError.

    The body's length comes from Content-Length when present: extra bytes after it are ignored (a
    datagram may carry padding), missing ones are an error. Without Content-Length the body is the
    rest of the datagram. Leading CRLFs are skipped; a datagram of nothing else raises
    SipError('keepalive') so the caller can tell a NAT keepalive from garbage.
    """
    data = bytes(data)
    if len(data) > max_size:
        raise SipError("too_large", f"{len(data)} bytes")
    start = 0
    while data.startswith((b"\r\n", b"\n"), start):
        start += 2 if data[start] == 13 else 1
    if start == len(data):
        raise SipError("keepalive" if data else "empty")
    m = _HEAD_END.search(data, start)
    if m is None:
        first_end = data.find(b"\n", start)
        _parse_start_line(
            data[start : first_end if first_end >= 0 else len(data)].rstrip(b"\r").decode("utf-8", "surrogateescape")
        )
        raise SipError("truncated", "no blank line after the headers")
    msg = _parse_head(data[start : m.start()], max_headers, max_line)
    body = data[m.end() :]
    length = _content_length(msg)
    if length is not None:
        if length > len(body):
            raise SipError("bad_content_length", f"Content-Length {length} but {len(body)} body bytes")
        body = body[:length]
    msg.body = body
    return msg


def is_keepalive(data: bytes) -> bool:
    """True for a datagram or chunk of only CRLFs (RFC 5626 keepalives; some NAT helpers send them)."""
    return bool(data) and not bytes(data).strip(b"\r\n")


class StreamFramer:
    """Frames SIP messages out of a TCP byte stream (Content-Length required, RFC 3261 18.3).

    `feed(data)` returns the complete messages in arrival order. CRLF keepalives between messages are
    skipped. Bytes that cannot start a message, a head or message over `max_size`, or a missing or bad
    Content-Length raise SipError: a stream cannot be resynchronised after that, so the framer stays
    broken (every later feed raises the same error) and the caller closes the connection.
    """

    def __init__(self, max_size: int = MAX_SIZE, *, max_headers: int = MAX_HEADERS, max_line: int = MAX_LINE):
        self.max_size = max_size
        self.max_headers = max_headers
        self.max_line = max_line
        self._buf = bytearray()
        self._head: SipRequest | SipResponse | None = None  # the parsed head of the message whose body is awaited
        self._body_start = 0
        self._length = 0
        self._error: SipError | None = None
        self._scanned = 0  # bytes of the current head searched for its end without finding it
        self._start_checked = False  # the current head's start line was seen and is valid
        self.keepalives = 0  # CRLF keepalives skipped

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list:
        if self._error is not None:
            raise SipError(self._error.reason, self._error.detail)
        self._buf += data
        out: list = []
        try:
            while self._step(out):
                pass
        except SipError as exc:
            self._error = exc
            self._buf.clear()
            self._head = None
            raise SipError(exc.reason, exc.detail, out) from None
        return out

    def _step(self, out: list) -> bool:
        buf = self._buf
        if self._head is None:
            skipped = 0
            while skipped < len(buf) and buf[skipped] in (13, 10):
                skipped += 1
            if skipped:
                del buf[:skipped]
                self.keepalives += 1
            if not buf:
                return False
            # search only the new bytes (a blank line is at most 4 bytes long): a peer trickling a
            # head one byte at a time must not cost a rescan of the whole buffer each time
            m = _HEAD_END.search(buf, max(0, self._scanned - 3))
            if m is None:
                self._scanned = len(buf)
                if not self._start_checked:
                    nl = buf.find(b"\n")
                    if nl >= 0:
                        # junk shows in its first line: refuse it now rather than after max_size bytes
                        _parse_start_line(bytes(buf[:nl]).rstrip(b"\r").decode("utf-8", "surrogateescape"))
                        self._start_checked = True
                    elif len(buf) > self.max_line:
                        raise SipError("too_large", "start line too long")
                if len(buf) > self.max_size:
                    raise SipError("too_large", f"head over {self.max_size} bytes")
                return False
            self._scanned, self._start_checked = 0, False
            if m.start() > self.max_size:
                raise SipError("too_large", f"head over {self.max_size} bytes")
            head = _parse_head(bytes(buf[: m.start()]), self.max_headers, self.max_line)
            length = _content_length(head)
            if length is None:
                raise SipError("missing_header", "Content-Length (required on TCP)")
            if m.end() + length > self.max_size:
                raise SipError("too_large", f"message of {m.end() + length} bytes")
            self._head, self._body_start, self._length = head, m.end(), length
        end = self._body_start + self._length
        if len(buf) < end:
            return False
        msg = self._head
        assert msg is not None  # parsed above, in this call or an earlier one
        msg.body = bytes(buf[self._body_start : end])
        del buf[:end]
        self._head = None
        out.append(msg)
        return True


# the building half lives in sip_build.py (it needs the message classes above); callers keep `sip.build_request`
from tianwang.drivers.gb28181.sip_build import (  # noqa: E402
    REASONS as REASONS,
    build_request as build_request,
    build_response as build_response,
    new_branch as new_branch,
    new_call_id as new_call_id,
    new_tag as new_tag,
    reason_phrase as reason_phrase,
)
