"""SOAP 1.2 envelopes of the ONVIF services as a device writes them: the namespaces of the ONVIF WSDLs
(device, media, PTZ, events, WS-BaseNotification), WS-Security UsernameToken checking and faults.

Used by the camera simulator (and the discovery responder's sibling, discovery.py). Sans-io: builds
and reads bytes, opens nothing.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from xml.sax.saxutils import escape, quoteattr

from lxml import etree

NS = {
    "env": "http://www.w3.org/2003/05/soap-envelope",
    "tds": "http://www.onvif.org/ver10/device/wsdl",
    "trt": "http://www.onvif.org/ver10/media/wsdl",
    "tptz": "http://www.onvif.org/ver20/ptz/wsdl",
    "tev": "http://www.onvif.org/ver10/events/wsdl",
    "wsnt": "http://docs.oasis-open.org/wsn/b-2",
    "wsa": "http://www.w3.org/2005/08/addressing",
    "tt": "http://www.onvif.org/ver10/schema",
    "tns1": "http://www.onvif.org/ver10/topics",
    "ter": "http://www.onvif.org/ver10/error",
    "wsrf-rw": "http://docs.oasis-open.org/wsrf/rw-2",
    "wsse": "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd",
    "wsu": "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd",
}
_XMLNS = " ".join(f'xmlns:{k}="{v}"' for k, v in NS.items())
_PASSWORD_DIGEST = "#PasswordDigest"
# the WS-Security 1.0 password types: a digest (SHA-1 of nonce + created + password) or the text itself
TOPIC_DIALECT = "http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet"
# XML parser for requests: no network, no entities, bounded (a device must survive hostile input)
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, remove_blank_text=True)


class SoapError(Exception):
    """A request the device answers with a SOAP fault: `code` Sender/Receiver, `subcode` ter:...,
    `status` the HTTP status (400 for the sender's fault, 500 for the receiver's)."""

    def __init__(self, subcode: str, text: str, code: str = "Sender", status: int = 400) -> None:
        super().__init__(text)
        self.code, self.subcode, self.text, self.status = code, subcode, text, status


def iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_duration(text: str | None, default: float) -> float:
    """xs:duration as ONVIF uses it (PT10S, PT1M, PT0.5S, P1D...); `default` when absent. Raises
    SoapError for text that is no duration."""
    if not text:
        return default
    import re

    m = re.fullmatch(r"P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?", text.strip())
    if not m or text.strip() in ("P", "PT"):
        raise SoapError("ter:InvalidArgVal", f"{text!r} is not a duration")
    d, h, mi, s = m.groups()
    return int(d or 0) * 86400 + int(h or 0) * 3600 + int(mi or 0) * 60 + float(s or 0)


def parse_termination(text: str | None, now: dt.datetime, default: float) -> float:
    """InitialTerminationTime / TerminationTime: a duration or an absolute xs:dateTime; seconds from now."""
    if text and text.strip()[:1] != "P":
        try:
            when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        except ValueError:
            raise SoapError("ter:InvalidArgVal", f"{text!r} is not a time") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        return (when - now).total_seconds()
    return parse_duration(text, default)


class Request:
    """One parsed SOAP request: the operation (local name of the Body's first child), the element and
    the WS-Security UsernameToken, if any."""

    def __init__(self, body: bytes) -> None:
        try:
            root = etree.fromstring(body, _PARSER)
        except etree.XMLSyntaxError as exc:
            raise SoapError("ter:WellFormed", f"malformed XML: {exc}") from None
        if etree.QName(root).localname != "Envelope":
            raise SoapError("ter:WellFormed", "not a SOAP envelope")
        body_el = root.find(f"{{{root.nsmap.get(root.prefix, NS['env'])}}}Body")
        if body_el is None:
            body_el = next((c for c in root if isinstance(c.tag, str) and etree.QName(c).localname == "Body"), None)
        if body_el is None or len(body_el) == 0:
            raise SoapError("ter:WellFormed", "empty SOAP body")
        self.root = root
        self.element = body_el[0]
        self.operation = etree.QName(self.element).localname
        self.namespace = etree.QName(self.element).namespace
        self.token = root.find(".//{{{}}}UsernameToken".format(NS["wsse"]))
        to = root.find(".//{{{}}}To".format(NS["wsa"]))
        self.wsa_to = to.text if to is not None else None

    def text(self, *path: str) -> str | None:
        """Text of the first element reached by local names `path` under the operation element."""
        el = self.find(*path)
        return (el.text or "").strip() if el is not None else None

    def find(self, *path: str) -> etree._Element | None:
        """The first element reached by local names `path` under the operation element."""
        el = self.element
        for name in path:
            child = next((c for c in el if isinstance(c.tag, str) and etree.QName(c).localname == name), None)
            if child is None:
                return None
            el = child
        return el

    def check_token(self, username: str, password: str, now: dt.datetime, window_s: float) -> None:
        """WS-UsernameToken as an ONVIF device checks it: the user, the digest
        Base64(SHA-1(nonce + created + password)) and `Created` within `window_s` of the device's
        clock. Raises SoapError(ter:NotAuthorized) naming what failed."""
        tok = self.token
        if tok is None:
            raise SoapError("ter:NotAuthorized", "Sender not authorized: no UsernameToken")

        def child(name: str, ns: str = "wsse") -> etree._Element | None:
            el = tok.find(f"{{{NS[ns]}}}{name}")
            return el

        user, pw, nonce, created = child("Username"), child("Password"), child("Nonce"), child("Created", "wsu")
        if user is None or pw is None or (user.text or "") != username:
            raise SoapError("ter:NotAuthorized", "Sender not authorized: unknown user")
        if (pw.get("Type") or "").endswith(_PASSWORD_DIGEST):
            if nonce is None or created is None:
                raise SoapError("ter:NotAuthorized", "Sender not authorized: digest without nonce or created")
            try:
                raw_nonce = base64.b64decode(nonce.text or "", validate=True)
            except ValueError:
                raise SoapError("ter:NotAuthorized", "Sender not authorized: nonce is not base64") from None
            want = base64.b64encode(
                hashlib.sha1(raw_nonce + (created.text or "").encode() + password.encode()).digest()
            ).decode()
            if want != (pw.text or "").strip():
                raise SoapError("ter:NotAuthorized", "Sender not authorized: wrong password digest")
        elif (pw.text or "") != password:
            raise SoapError("ter:NotAuthorized", "Sender not authorized: wrong password")
        if created is not None:
            try:
                when = dt.datetime.fromisoformat((created.text or "").strip().replace("Z", "+00:00"))
            except ValueError:
                raise SoapError("ter:NotAuthorized", "Sender not authorized: Created is not a time") from None
            if when.tzinfo is None:
                when = when.replace(tzinfo=dt.UTC)
            if abs((when - now).total_seconds()) > window_s:
                raise SoapError("ter:NotAuthorized", "Sender not authorized: Created is outside the clock window")


def envelope(body: str, header: str = "") -> bytes:
    head = f"<env:Header>{header}</env:Header>" if header else ""
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<env:Envelope {_XMLNS}>{head}<env:Body>{body}</env:Body></env:Envelope>'
    ).encode()


def fault(err: SoapError) -> bytes:
    return envelope(
        f"<env:Fault><env:Code><env:Value>env:{err.code}</env:Value><env:Subcode><env:Value>{escape(err.subcode)}</env:Value></env:Subcode>"
        f'</env:Code><env:Reason><env:Text xml:lang="en">{escape(err.text)}</env:Text></env:Reason></env:Fault>'
    )


def x(text: object) -> str:
    return escape(str(text))


def date_time(now: dt.datetime) -> str:
    """tt:SystemDateTime content of GetSystemDateAndTimeResponse."""
    u = now.astimezone(dt.UTC)
    return (
        "<tds:SystemDateAndTime><tt:DateTimeType>NTP</tt:DateTimeType><tt:DaylightSavings>false</tt:DaylightSavings>"
        "<tt:TimeZone><tt:TZ>UTC0</tt:TZ></tt:TimeZone><tt:UTCDateTime>"
        f"<tt:Time><tt:Hour>{u.hour}</tt:Hour><tt:Minute>{u.minute}</tt:Minute><tt:Second>{u.second}</tt:Second></tt:Time>"
        f"<tt:Date><tt:Year>{u.year}</tt:Year><tt:Month>{u.month}</tt:Month><tt:Day>{u.day}</tt:Day></tt:Date>"
        "</tt:UTCDateTime></tds:SystemDateAndTime>"
    )


def notification_message(
    topic: str, utc: dt.datetime, source: dict, data: dict, operation: str = "Changed", subscription: str | None = None
) -> str:
    """One wsnt:NotificationMessage with a tt:Message (the ONVIF event message layout)."""

    def items(d: dict) -> str:
        return "".join(f"<tt:SimpleItem Name={quoteattr(k)} Value={quoteattr(str(v))}/>" for k, v in d.items())

    ref = (
        f"<wsnt:SubscriptionReference><wsa:Address>{x(subscription)}</wsa:Address></wsnt:SubscriptionReference>"
        if subscription
        else ""
    )
    return (
        f'<wsnt:NotificationMessage>{ref}<wsnt:Topic Dialect="{TOPIC_DIALECT}">{x(topic)}</wsnt:Topic>'
        f'<wsnt:Message><tt:Message UtcTime="{iso(utc)}" PropertyOperation="{operation}">'
        f"<tt:Source>{items(source)}</tt:Source><tt:Data>{items(data)}</tt:Data></tt:Message></wsnt:Message>"
        "</wsnt:NotificationMessage>"
    )
