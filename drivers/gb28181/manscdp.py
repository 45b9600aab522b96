"""MANSCDP bodies (GB/T 28181's `Application/MANSCDP+xml`): parse, build and read them, sans-io.

A body is one root element (`Query`, `Control`, `Notify` or `Response`) holding `CmdType`, `SN`,
`DeviceID` and the command's own fields. `parse` turns bytes into a `Message` whose `fields` is a
nested dict in the xmltodict shape:

    <DeviceList Num="2"><Item>..</Item><Item>..</Item></DeviceList>
    -> fields["DeviceList"] == {"@Num": "2", "Item": [{...}, {...}]}

- a leaf element is its text (stripped; "" when empty), or `{"@attr": ..., "#text": ...}` when it
  carries attributes;
- an element with children is a dict; a name seen more than once becomes a list, and `Item` is always
  a list (so a one-item catalog has the same shape as a long one).

`build` takes the same shape back (dicts, lists, `@` attributes, numbers and strings); `item_list`
makes the `{"@Num": n, "Item": [...]}` of a list element.

Charset (the field, not the text of the standard): the standard says GB2312, devices send GB2312,
gb2312, UTF-8 or nothing. Bytes that are valid UTF-8 are read as UTF-8 whatever the declaration says
(unless a GB or missing declaration and the text only makes Chinese as GB18030: some GB2312 words,
学校 and 医院 among them, are valid UTF-8 bytes); anything else as GB18030 (a superset of GB2312 and
GBK: rare characters in place names need it), or as the declared charset when that is neither a GB
nor a UTF-8 name.

Hardening: a body with a DTD (`<!DOCTYPE`, `<!ENTITY`) is refused before parsing, and lxml runs with
entity resolution, DTD loading and network access off, so billion-laughs and external-entity bodies
are never expanded. Size, depth and the number of items per list are bounded.

Field faults repaired (the message is then marked `.repaired`; the driver counts): a bare `&` (or an
entity XML does not predefine, like `&nbsp;`) becomes `&amp;`, and a `<` that cannot start a tag
(`<Address>路<3号</Address>`) becomes `&lt;`. Everything else that is not well-formed raises
`ManscdpError` with `.reason` (the drop-counter label).

The typed readers (`keepalive`, `alarm`, `catalog_items`, `device_info`, `device_status`,
`record_items`, `preset_items`, `mobile_position`, `response_result`) are lenient on field variants
and raise only `ManscdpError`.
"""

from __future__ import annotations

import codecs
import datetime as dt
import math
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

from lxml import etree

from tianwang.drivers.sdk import FrameError

ROOTS = ("Query", "Control", "Notify", "Response")
MAX_SIZE = 262_144  # bytes of one body; a TCP catalog chunk is a few kB, UDP ones stay under 1,400
MAX_ITEMS = 2_000  # <Item>s under one element
MAX_DEPTH = 16  # MANSCDP nests 4-5 levels (Response/DeviceList/Item/Info/...)
BEIJING = dt.timezone(dt.timedelta(hours=8))  # GB/T 28181 times are local Beijing time without offset


class ManscdpError(FrameError):
    """A MANSCDP body that cannot be read. `reason` is the drop-counter label: `empty`, `too_large`,
    `bad_charset`, `dtd`, `bad_xml`, `too_deep`, `too_many_items`, `bad_root`, `no_cmdtype`, `no_sn`,
    `bad_sn`, `wrong_cmdtype` (a typed reader given another command), `no_position`."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


@dataclass(slots=True)
class Message:
    """One parsed body. `fields` holds the root's children except CmdType, SN and DeviceID.
    `charset` is the codec the bytes were read with (`utf-8`, `gb18030` or the declared one);
    `repaired` is True when a known field fault was repaired to read it."""

    root: str
    cmd_type: str
    sn: int
    device_id: str
    fields: dict[str, Any]  # the body's elements: text, {child: ...} or lists of them (`@attr`, `#text`)
    repaired: bool = False
    charset: str = "utf-8"

    def get(self, name: str, default: Any = None) -> Any:
        return self.fields.get(name, default)


# -- charset ------------------------------------------------------------------------------------

_DECL = re.compile(rb"""^\s*<\?xml[^>]{0,200}?encoding\s*=\s*["']([A-Za-z0-9._:-]{1,40})["']""")
_DECL_TEXT = re.compile(r"^\s*<\?xml[^>]{0,200}\?>")
_TEXT_CODECS = ("utf-8", "utf-16", "utf-32", "big5", "iso8859", "latin", "cp125", "ascii", "euc", "shift_jis", "koi8")
_GB_NAMES = {"gb2312", "gbk", "gb18030", "cp936", "ms936", "gb_2312-80", "euc-cn", "euccn", "x-gbk", "csgb2312"}


def declared_charset(raw: bytes) -> str | None:
    """The charset named in the XML declaration, as written (None when there is none)."""
    m = _DECL.match(raw)
    return m.group(1).decode("ascii") if m else None


def _codec_for(name: str | None) -> str:
    """The Python codec to read a declared charset with: GB names -> gb18030, else the named codec
    when Python knows it, else gb18030 (the notes: undeclared or unknown is most likely GB)."""
    if name is None or name.lower() in _GB_NAMES:
        return "gb18030"
    try:
        codec = codecs.lookup(name).name
    except LookupError:
        return "gb18030"
    # only character sets: Python also names transforms (unicode_escape, base64...) as codecs
    return codec if codec.startswith(_TEXT_CODECS) else "gb18030"


# CJK ideographs, radicals, CJK punctuation and full-width forms: what a Chinese name's text holds
_CJK = re.compile("[\u2e80-\u9fff\uf900-\ufaff\uff00-\uffef]")


def _decode(raw: bytes) -> tuple[str, str]:
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[3:]
    if raw.isascii():
        return raw.decode("ascii"), "utf-8"
    declared = declared_charset(raw)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        # Valid UTF-8 is UTF-8, except when GB2312 bytes happen to form valid UTF-8 too (学校 and
        # 医院 in GB2312 read as UTF-8 are Cyrillic): with a GB or no declaration, text with no
        # CJK at all as UTF-8 but CJK as GB18030 is GB.
        if (declared is None or declared.lower() in _GB_NAMES) and not _CJK.search(text):
            try:
                gb = raw.decode("gb18030")
            except UnicodeDecodeError:
                return text, "utf-8"
            if _CJK.search(gb):
                return gb, "gb18030"
        return text, "utf-8"
    codec = _codec_for(declared)
    if codec == "utf-8":  # declared UTF-8 but is not: the device meant its GB locale
        codec = "gb18030"
    try:
        return raw.decode(codec), codec
    except (UnicodeDecodeError, LookupError, ValueError) as e:
        raise ManscdpError("bad_charset", f"not UTF-8 and not {codec}: {e}") from None


def decode_text(raw: bytes) -> str:
    """Body bytes -> text: valid UTF-8 is UTF-8 (whatever the declaration says), anything else
    GB18030 (or a declared non-GB, non-UTF-8 charset). Raises ManscdpError(`bad_charset`)."""
    return _decode(raw)[0]


# -- repairs ------------------------------------------------------------------------------------

# `&` not starting one of XML's five entities or a character reference
_BARE_AMP = re.compile(r"&(?!(?:amp|lt|gt|quot|apos|#[0-9]{1,7}|#x[0-9A-Fa-f]{1,6});)")
# what a `<` may start: a tag (open, close, empty), a comment, CDATA, a processing instruction
_TAG_START = re.compile(r"<(?:/?[A-Za-z_][\w.:-]*(?:\s[^<>]*)?/?>|!--|!\[CDATA\[|\?)")


def _repair(text: str) -> str:
    text = _BARE_AMP.sub("&amp;", text)
    if "<" not in text:
        return text
    out = []
    last = 0
    pos = text.find("<")
    while pos != -1:
        if not _TAG_START.match(text, pos):
            out.append(text[last:pos])
            out.append("&lt;")
            last = pos + 1
        pos = text.find("<", pos + 1)
    out.append(text[last:])
    return "".join(out)


# -- parse --------------------------------------------------------------------------------------

_DTD = re.compile(r"<!\s*(?:DOCTYPE|ENTITY|ELEMENT|ATTLIST)", re.IGNORECASE)
_local = threading.local()  # lxml parsers are not shared between threads


def _parser() -> etree.XMLParser:
    p = getattr(_local, "parser", None)
    if p is None:
        p = _local.parser = etree.XMLParser(
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            dtd_validation=False,
            huge_tree=False,
            remove_comments=True,
            remove_pis=True,
            collect_ids=False,
        )
    return p


def _local_name(tag: object) -> str | None:
    if not isinstance(tag, str):
        return None  # a comment or entity node
    return tag.rpartition("}")[2]


def _convert(el: etree._Element, depth: int, max_items: int) -> Any:
    if depth > MAX_DEPTH:
        raise ManscdpError("too_deep", f"more than {MAX_DEPTH} levels")
    attrib = el.attrib
    attrs = {f"@{_local_name(k)}": v for k, v in attrib.items()} if attrib else None
    if not len(el):  # no child nodes at all: a leaf (most of a body), without a list of children
        text = (el.text or "").strip()
        if attrs:
            attrs["#text"] = text
            return attrs
        return text
    children = list(el.iterchildren(etree.Element))  # elements only: no comment or entity nodes
    if not children:
        text = (el.text or "").strip()
        if attrs:
            attrs["#text"] = text
            return attrs
        return text
    out: dict[str, Any] = attrs or {}
    repeated: set[str] = set()
    items = 0
    for c in children:
        tag = cast(str, c.tag)  # an element's tag (children are filtered): text
        name = tag.rpartition("}")[2] if "}" in tag else tag
        value = _convert(c, depth + 1, max_items)
        if name == "Item":
            items += 1
            if items > max_items:
                raise ManscdpError("too_many_items", f"more than {max_items} items in <{_local_name(el.tag)}>")
            out.setdefault("Item", []).append(value)
        elif name in repeated:
            out[name].append(value)
        elif name in out:
            out[name] = [out[name], value]
            repeated.add(name)
        else:
            out[name] = value
    return out


def _first_text(v: Any) -> str | None:
    if isinstance(v, list):
        v = v[0] if v else None
    if isinstance(v, dict):
        v = v.get("#text")
    return v if isinstance(v, str) else None


def _fromstring(text: str) -> etree._Element:
    return etree.fromstring(text, _parser())


def parse(raw: bytes, *, max_size: int = MAX_SIZE, max_items: int = MAX_ITEMS) -> Message:
    """Bytes of one MANSCDP body -> Message. Raises ManscdpError (see its reasons)."""
    if not isinstance(raw, bytes):
        raw = bytes(raw)  # a bytearray or memoryview from the transport
    if not raw or not raw.strip(b" \t\r\n\x00"):
        raise ManscdpError("empty")
    if len(raw) > max_size:
        raise ManscdpError("too_large", f"{len(raw)} bytes > {max_size}")
    text, charset = _decode(raw)
    text = text.strip(" \t\r\n\x00\ufeff")
    if _DTD.search(text):
        raise ManscdpError("dtd", "a DTD or entity declaration (never in MANSCDP; refused unexpanded)")
    m = _DECL_TEXT.match(text)
    if m:
        text = text[m.end() :]
    repaired = False
    try:
        root = _fromstring(text)
    except (etree.LxmlError, ValueError) as first:
        fixed = _repair(text)
        if fixed == text:
            raise ManscdpError("bad_xml", str(first)[:200]) from None
        try:
            root = _fromstring(fixed)
        except (etree.LxmlError, ValueError) as e:
            raise ManscdpError("bad_xml", str(e)[:200]) from None
        repaired = True
    root_name = _local_name(root.tag)
    if root_name not in ROOTS:
        raise ManscdpError("bad_root", f"root <{str(root_name)[:40]}>")
    fields = _convert(root, 1, max_items)
    if not isinstance(fields, dict):
        raise ManscdpError("no_cmdtype", "empty root")
    cmd_type = _first_text(fields.pop("CmdType", None))
    if not cmd_type:
        raise ManscdpError("no_cmdtype")
    sn_text = _first_text(fields.pop("SN", None))
    if not sn_text:
        raise ManscdpError("no_sn")
    if not sn_text.isdigit() or not sn_text.isascii() or len(sn_text) > 19:
        raise ManscdpError("bad_sn", repr(sn_text[:40]))
    device_id = _first_text(fields.pop("DeviceID", None)) or ""
    return Message(root_name, cmd_type, int(sn_text), device_id, fields, repaired, charset)


# -- build --------------------------------------------------------------------------------------

_NAME = re.compile(r"^[A-Za-z_][\w.-]*$")


def _esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _esc_attr(s: str) -> str:
    return _esc(s).replace('"', "&quot;")


def _scalar(v: object) -> str:
    if isinstance(v, bool):
        raise ValueError("a MANSCDP value is text or a number, not a bool")
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"a MANSCDP number must be finite, not {v!r}")
        return repr(v) if v != int(v) or abs(v) >= 1e15 else f"{v:.1f}"
    return str(v)


def _emit(out: list[str], name: str, value: Any) -> None:
    if not _NAME.match(name):
        raise ValueError(f"not an XML element name: {name!r}")
    if value is None:
        return
    if isinstance(value, (list, tuple)):
        for v in value:
            _emit(out, name, v)
        return
    if isinstance(value, dict):
        attrs = "".join(
            f' {k[1:]}="{_esc_attr(_scalar(v))}"' for k, v in value.items() if k.startswith("@") and v is not None
        )
        for k in value:
            if k.startswith("@") and not _NAME.match(k[1:]):
                raise ValueError(f"not an XML attribute name: {k!r}")
        text = value.get("#text")
        children = [(k, v) for k, v in value.items() if not k.startswith(("@", "#"))]
        if not children:
            out.append(f"<{name}{attrs}>{_esc(_scalar(text)) if text is not None else ''}</{name}>\r\n")
            return
        out.append(f"<{name}{attrs}>\r\n")
        for k, v in children:
            _emit(out, k, v)
        out.append(f"</{name}>\r\n")
        return
    out.append(f"<{name}>{_esc(_scalar(value))}</{name}>\r\n")


def _encoder(charset: str) -> tuple[str, str]:
    """(codec, errors) for a charset to send: GB names are written with GB18030 (the declaration
    keeps the name asked for) so rare characters survive; others with the named codec, characters it
    lacks as character references."""
    if charset.lower() in _GB_NAMES:
        return "gb18030", "strict"
    try:
        return codecs.lookup(charset).name, "xmlcharrefreplace"
    except LookupError:
        raise ValueError(f"unknown charset {charset!r}") from None


def build(
    root: str,
    cmd_type: str,
    sn: int,
    device_id: str | None,
    fields: dict[str, Any] | Iterable[tuple[str, Any]] = (),
    *,
    charset: str = "GB2312",
) -> bytes:
    """One MANSCDP body. `fields` is a dict or a sequence of (name, value); values are text, numbers,
    dicts (children; `@name` keys are attributes, `#text` the text), lists (the element repeated)
    or None (left out); a None `device_id` leaves DeviceID out (MobilePosition with TargetID).
    Raises ValueError for an unknown root, a bad name, a non-finite number or an unknown charset."""
    if root not in ROOTS:
        raise ValueError(f"root must be one of {', '.join(ROOTS)}, not {root!r}")
    if not _NAME.match(cmd_type):
        raise ValueError(f"bad CmdType {cmd_type!r}")
    if isinstance(sn, bool) or not isinstance(sn, int) or sn < 0:
        raise ValueError(f"SN must be a non-negative int, not {sn!r}")
    codec, errors = _encoder(charset)
    out = [
        f'<?xml version="1.0" encoding="{charset}"?>\r\n<{root}>\r\n<CmdType>{cmd_type}</CmdType>\r\n<SN>{sn}</SN>\r\n'
    ]
    if device_id is not None:
        out.append(f"<DeviceID>{_esc(str(device_id))}</DeviceID>\r\n")
    pairs = fields.items() if isinstance(fields, dict) else fields
    for name, value in pairs:
        _emit(out, name, value)
    out.append(f"</{root}>\r\n")
    return "".join(out).encode(codec, errors)


def item_list(items: Iterable[Any]) -> dict[str, Any]:
    """`{"@Num": n, "Item": [...]}`: a list element (DeviceList, RecordList, PresetList...) for build."""
    items = list(items)
    return {"@Num": len(items), "Item": items}


# -- time ---------------------------------------------------------------------------------------


def parse_time(value: Any) -> int | None:
    """`2026-12-07T10:00:00[.SSS]` (also with a space, a `Z` or an offset) -> ns since the epoch.
    Times without an offset are Beijing time, as GB/T 28181 writes them. None when unreadable."""
    s = _first_text(value)
    if not s:
        return None
    s = s.strip().replace(" ", "T", 1)
    if s.endswith(("Z", "z")):
        s = s[:-1] + "+00:00"
    try:
        t = dt.datetime.fromisoformat(s)
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=BEIJING)
    return int(t.timestamp()) * 1_000_000_000 + t.microsecond * 1000


def format_time(time_ns: int, *, millis: bool = False) -> str:
    """ns since the epoch -> `yyyy-MM-ddTHH:mm:ss[.SSS]` in Beijing time (the SIP Date header uses millis)."""
    t = dt.datetime.fromtimestamp(time_ns // 1_000_000_000, BEIJING)
    s = t.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{s}.{(time_ns // 1_000_000) % 1000:03d}" if millis else s


# -- typed readers ------------------------------------------------------------------------------
# Lenient on the field's variants (a field at top level or inside Info, lists of one, odd status
# words); unreadable numbers become None rather than dropping the message around them.


def _text(v: Any) -> str | None:
    """A field's text, stripped; None when absent or empty."""
    s = _first_text(v)
    if s is None:
        return None
    s = s.strip()
    return s or None


def _int(v: Any) -> int | None:
    s = _text(v)
    if s is None:
        return None
    try:
        return int(s, 10)
    except ValueError:
        try:
            f = float(s)
        except ValueError:
            return None
        return int(f) if f == f and abs(f) < 1e18 and f == int(f) else None


def _float(v: Any) -> float | None:
    s = _text(v)
    if s is None:
        return None
    try:
        f = float(s)
    except ValueError:
        return None
    return f if f == f and abs(f) != float("inf") else None  # NaN and inf are not positions


def _as_list(v: Any) -> list[Any]:
    if v is None:
        return []
    return v if isinstance(v, list) else [v]


def _dict(v: Any) -> dict[str, Any]:
    """A field that should hold children: a dict, the first dict of a list, or {}."""
    for x in _as_list(v):
        if isinstance(x, dict):
            return x
    return {}


def _items(container: Any) -> list[dict[str, Any]]:
    """The <Item> dicts of a list element (DeviceList, RecordList...), whatever shape it arrived in."""
    out: list[dict[str, Any]] = []
    for c in _as_list(container):
        if isinstance(c, dict):
            out.extend(i for i in _as_list(c.get("Item")) if isinstance(i, dict))
    return out


def _want(msg: Message, *cmd_types: str) -> None:
    if not isinstance(msg, Message):
        raise ManscdpError("wrong_cmdtype", f"not a Message: {type(msg).__name__}")
    if msg.cmd_type.lower() not in {c.lower() for c in cmd_types}:
        raise ManscdpError("wrong_cmdtype", f"{msg.cmd_type[:40]!r}, wanted {'/'.join(cmd_types)}")


def _ids(v: Any) -> tuple[str, ...]:
    """DeviceID texts under an Info-like field: `<DeviceID>` repeated, or inside Items."""
    out: list[str] = []
    for part in _as_list(v):
        if isinstance(part, dict):
            out.extend(t for t in (_text(x) for x in _as_list(part.get("DeviceID"))) if t)
            for item in _as_list(part.get("Item")):
                if isinstance(item, dict):
                    out.extend(t for t in (_text(x) for x in _as_list(item.get("DeviceID"))) if t)
                elif t := _text(item):
                    out.append(t)
        elif t := _text(part):
            out.append(t)
    return tuple(dict.fromkeys(out))


@dataclass(slots=True, frozen=True)
class Keepalive:
    device_id: str
    sn: int
    status: str | None  # OK / ERROR as sent, upper-cased
    ok: bool  # True unless Status says otherwise
    faulty: tuple[str, ...] = ()  # channel ids listed in <Info>


def keepalive(msg: Message) -> Keepalive:
    """`Notify/Keepalive`: status and faulty channel ids. Raises ManscdpError(`wrong_cmdtype`)."""
    _want(msg, "Keepalive")
    status = _text(msg.fields.get("Status"))
    status = status.upper() if status else None
    return Keepalive(
        msg.device_id, msg.sn, status, status in (None, "OK", "ON", "ONLINE"), _ids(msg.fields.get("Info"))
    )


# GB/T 28181-2016 A.2.2 AlarmType, per AlarmMethod -> the gateway's alarm kind. `motion` and `tamper`
# are the kinds the ONVIF driver's normaliser also gives; the rest are GB's own in the same spelling.
_ALARM_KINDS = {
    2: {1: "video_loss", 2: "tamper", 3: "disk_full", 4: "high_temperature", 5: "low_temperature"},
    5: {
        1: "manual",
        2: "motion",
        3: "left_object",
        4: "object_removed",
        5: "line_crossing",
        6: "intrusion",
        7: "wrong_way",
        8: "loitering",
        9: "people_counting",
        10: "crowd_density",
        11: "video_anomaly",
        12: "fast_moving",
    },
    6: {1: "disk_fault", 2: "fan_fault"},
}
ALARM_METHODS = {1: "phone", 2: "device", 3: "sms", 4: "gps", 5: "video", 6: "device_fault", 7: "other"}


def alarm_kind(method: int, alarm_type: int | None) -> str | None:
    """The normalised kind of an alarm (`motion`, `tamper`, `line_crossing`, `intrusion`,
    `video_loss`...), None where the method and type name nothing the gateway knows."""
    if alarm_type is None:
        return None
    return _ALARM_KINDS.get(method, {}).get(alarm_type)


@dataclass(slots=True, frozen=True)
class Alarm:
    device_id: str  # the alarm source (a channel or the device)
    sn: int
    priority: int | None  # 1 (highest) - 4
    methods: tuple[int, ...]  # AlarmMethod digits: "25" -> (2, 5)
    type: int | None  # AlarmType; Info's when both are given
    kind: str | None  # alarm_kind of the first method that names one
    time: str | None  # AlarmTime as sent (Beijing local time)
    time_ns: int | None
    description: str | None
    lon: float | None
    lat: float | None
    info: dict = field(default_factory=dict)  # the <Info> block as parsed, for what 2022 adds


def alarm(msg: Message) -> Alarm:
    """`Notify/Alarm` (MESSAGE or NOTIFY). Raises ManscdpError(`wrong_cmdtype`)."""
    _want(msg, "Alarm")
    f = msg.fields
    info = _dict(f.get("Info"))
    method_text = _text(f.get("AlarmMethod")) or _text(info.get("AlarmMethod")) or ""
    methods = tuple(dict.fromkeys(int(c) for c in method_text if c in "1234567"))
    atype = _int(info.get("AlarmType"))
    if atype is None:
        atype = _int(f.get("AlarmType"))
    kind = next((k for k in (alarm_kind(m, atype) for m in methods) if k), None)
    time_text = _text(f.get("AlarmTime"))
    return Alarm(
        msg.device_id,
        msg.sn,
        _int(f.get("AlarmPriority")),
        methods,
        atype,
        kind,
        time_text,
        parse_time(time_text),
        _text(f.get("AlarmDescription")),
        _float(f.get("Longitude")),
        _float(f.get("Latitude")),
        info,
    )


_STATUS_ON = {"ON", "ONLINE", "OK", "1", "TRUE", "YES"}
_STATUS_OFF = {"OFF", "OFFLINE", "0", "FALSE", "NO"}


def normalise_status(value: Any) -> str | None:
    """Status as devices write it (ON, OFF, OK, ONLINE, Online, 0/1...) -> `ON`, `OFF` or None."""
    s = _text(value)
    if s is None:
        return None
    s = s.upper()
    if s in _STATUS_ON:
        return "ON"
    if s in _STATUS_OFF:
        return "OFF"
    return None


def item_kind(device_id: str) -> str:
    """What a catalog item is, from its ID: `region` (2-8 digits), `system` (type 200),
    `business_group` (215), `virtual_org` (216), `camera` (131, 132), `alarm_input` (134), else
    `other`."""
    if device_id.isdigit() and device_id.isascii():
        n = len(device_id)
        if n in (2, 4, 6, 8):
            return "region"
        if n == 20:
            return _KIND_BY_TYPE.get(device_id[10:13], "other")
    return "other"


_KIND_BY_TYPE = {
    "131": "camera",
    "132": "camera",
    "134": "alarm_input",
    "200": "system",
    "215": "business_group",
    "216": "virtual_org",
}


@dataclass(slots=True, frozen=True)
class CatalogItem:
    device_id: str
    kind: str  # item_kind: camera, region, system, business_group, virtual_org, alarm_input, other
    name: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    owner: str | None = None
    civil_code: str | None = None
    block: str | None = None
    address: str | None = None
    parental: bool | None = None
    parent_ids: tuple[str, ...] = ()  # ParentID split on '/'
    business_group_id: str | None = None
    safety_way: int | None = None
    register_way: int | None = None
    secrecy: int | None = None
    ip: str | None = None
    port: int | None = None
    status: str | None = None  # ON / OFF (normalised) or None
    lon: float | None = None
    lat: float | None = None
    ptz_type: int | None = None  # 1 dome, 2 half-dome, 3 fixed, 4 remote-controlled fixed
    event: str | None = None  # ON OFF VLOST DEFECT ADD DEL UPDATE, in catalog NOTIFYs


def _catalog_item(it: dict) -> CatalogItem | None:
    did = _text(it.get("DeviceID"))
    if not did:
        return None
    info = _dict(it.get("Info"))
    ptz = _int(info.get("PTZType"))
    if ptz is None:
        ptz = _int(it.get("PTZType"))
    parents = _text(it.get("ParentID")) or ""
    parental = _int(it.get("Parental"))
    event = _text(it.get("Event"))
    return CatalogItem(
        device_id=did,
        kind=item_kind(did),
        name=_text(it.get("Name")),
        manufacturer=_text(it.get("Manufacturer")),
        model=_text(it.get("Model")),
        owner=_text(it.get("Owner")),
        civil_code=_text(it.get("CivilCode")),
        block=_text(it.get("Block")),
        address=_text(it.get("Address")),
        parental=None if parental is None else parental != 0,
        parent_ids=tuple(dict.fromkeys(p.strip() for p in parents.split("/") if p.strip())),
        business_group_id=_text(it.get("BusinessGroupID")) or _text(info.get("BusinessGroupID")),
        safety_way=_int(it.get("SafetyWay")),
        register_way=_int(it.get("RegisterWay")),
        secrecy=_int(it.get("Secrecy")),
        ip=_text(it.get("IPAddress")),
        port=_int(it.get("Port")),
        status=normalise_status(it.get("Status")),
        lon=_float(it.get("Longitude")),
        lat=_float(it.get("Latitude")),
        ptz_type=ptz,
        event=event.upper() if event else None,
    )


def catalog_items(msg: Message) -> tuple[int, list[CatalogItem]]:
    """`Response/Catalog` or a catalog `Notify` -> (SumNum, items of this message). SumNum defaults
    to the item count when absent; items without a DeviceID are skipped. Raises ManscdpError."""
    _want(msg, "Catalog")
    items = [c for c in (_catalog_item(it) for it in _items(msg.fields.get("DeviceList"))) if c is not None]
    sum_num = _int(msg.fields.get("SumNum"))
    return (len(items) if sum_num is None or sum_num < 0 else sum_num), items


@dataclass(slots=True, frozen=True)
class DeviceInfo:
    device_id: str
    sn: int
    result: str | None
    device_name: str | None
    manufacturer: str | None
    model: str | None
    firmware: str | None
    channel: int | None  # video inputs
    extra: dict = field(default_factory=dict)  # every other field as parsed


def device_info(msg: Message) -> DeviceInfo:
    """`Response/DeviceInfo`. Raises ManscdpError(`wrong_cmdtype`)."""
    _want(msg, "DeviceInfo")
    f = msg.fields
    known = ("Result", "DeviceName", "Manufacturer", "Model", "Firmware", "Channel")
    return DeviceInfo(
        msg.device_id,
        msg.sn,
        (_text(f.get("Result")) or "").upper() or None,
        _text(f.get("DeviceName")),
        _text(f.get("Manufacturer")),
        _text(f.get("Model")),
        _text(f.get("Firmware")),
        _int(f.get("Channel")),
        {k: v for k, v in f.items() if k not in known},
    )


@dataclass(slots=True, frozen=True)
class AlarmStatus:
    device_id: str
    duty_status: str | None  # ONDUTY / OFFDUTY / ALARM


@dataclass(slots=True, frozen=True)
class DeviceStatus:
    device_id: str
    sn: int
    result: str | None
    online: bool | None  # Online ONLINE/OFFLINE
    status: str | None  # OK / ERROR
    reason: str | None
    encode: str | None  # ON / OFF
    record: str | None  # ON / OFF
    device_time: str | None
    alarms: tuple[AlarmStatus, ...] = ()


def device_status(msg: Message) -> DeviceStatus:
    """`Response/DeviceStatus`. Raises ManscdpError(`wrong_cmdtype`)."""
    _want(msg, "DeviceStatus")
    f = msg.fields
    online = _text(f.get("Online"))
    alarms = []
    for it in _items(f.get("Alarmstatus")) + _items(f.get("AlarmStatus")):
        did = _text(it.get("DeviceID"))
        if did:
            duty = _text(it.get("DutyStatus"))
            alarms.append(AlarmStatus(did, duty.upper() if duty else None))

    def up(name: str) -> str | None:
        s = _text(f.get(name))
        return s.upper() if s else None

    return DeviceStatus(
        msg.device_id,
        msg.sn,
        up("Result"),
        None if online is None else online.upper() in ("ONLINE", "ON", "OK", "1"),
        up("Status"),
        _text(f.get("Reason")),
        up("Encode"),
        up("Record"),
        _text(f.get("DeviceTime")),
        tuple(alarms),
    )


@dataclass(slots=True, frozen=True)
class RecordItem:
    device_id: str
    name: str | None
    file_path: str | None
    address: str | None
    start_time: str | None
    end_time: str | None
    start_ns: int | None
    end_ns: int | None
    secrecy: int | None
    type: str | None  # time / alarm / manual
    recorder_id: str | None
    file_size: int | None


def record_items(msg: Message) -> tuple[int, list[RecordItem]]:
    """`Response/RecordInfo` -> (SumNum, the recordings of this message). Raises ManscdpError."""
    _want(msg, "RecordInfo")
    items = []
    for it in _items(msg.fields.get("RecordList")):
        start, end = _text(it.get("StartTime")), _text(it.get("EndTime"))
        items.append(
            RecordItem(
                _text(it.get("DeviceID")) or msg.device_id,
                _text(it.get("Name")),
                _text(it.get("FilePath")),
                _text(it.get("Address")),
                start,
                end,
                parse_time(start),
                parse_time(end),
                _int(it.get("Secrecy")),
                _text(it.get("Type")),
                _text(it.get("RecorderID")),
                _int(it.get("FileSize")),
            )
        )
    sum_num = _int(msg.fields.get("SumNum"))
    return (len(items) if sum_num is None or sum_num < 0 else sum_num), items


@dataclass(slots=True, frozen=True)
class PresetItem:
    preset_id: int
    name: str | None


def preset_items(msg: Message) -> list[PresetItem]:
    """`Response/PresetQuery` -> the presets (items without a numeric PresetID skipped)."""
    _want(msg, "PresetQuery")
    out = []
    for it in _items(msg.fields.get("PresetList")):
        pid = _int(it.get("PresetID"))
        if pid is not None:
            out.append(PresetItem(pid, _text(it.get("PresetName"))))
    return out


@dataclass(slots=True, frozen=True)
class MobilePosition:
    id: str | None  # DeviceID, else TargetID, else None (the caller falls back to the From user)
    sn: int
    time: str | None
    time_ns: int | None
    lon: float
    lat: float
    speed_kmh: float | None
    direction: float | None  # degrees clockwise from north
    altitude: float | None  # metres


def mobile_position(msg: Message) -> MobilePosition:
    """`Notify/MobilePosition`. Raises ManscdpError (`wrong_cmdtype`; `no_position` without a
    readable Longitude and Latitude)."""
    _want(msg, "MobilePosition")
    f = msg.fields
    lon, lat = _float(f.get("Longitude")), _float(f.get("Latitude"))
    if lon is None or lat is None or not (-180 <= lon <= 180 and -90 <= lat <= 90):
        raise ManscdpError("no_position", "Longitude/Latitude missing or out of range")
    time_text = _text(f.get("Time"))
    return MobilePosition(
        msg.device_id or _text(f.get("TargetID")),
        msg.sn,
        time_text,
        parse_time(time_text),
        lon,
        lat,
        _float(f.get("Speed")),
        _float(f.get("Direction")),
        _float(f.get("Altitude")),
    )


def response_result(msg: Message) -> str | None:
    """A Response's `Result` (OK / ERROR, upper-cased), None when it has none."""
    s = _text(msg.fields.get("Result"))
    return s.upper() if s else None
