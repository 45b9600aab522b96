"""An ONVIF notification (a wsnt:NotificationMessage as zeep parsed it) -> the channel and payload the
driver publishes on `camera/<id>/event/<topic path>`.

    topic      the topic expression as the camera sent it (`tns1:RuleEngine/CellMotionDetector/Motion`)
    source     SimpleItems of tt:Message/Source (`{"VideoSourceConfigurationToken": "vs1", "Rule": ...}`)
    data       SimpleItems of tt:Message/Data (`{"IsMotion": "true"}`), values as the camera wrote them
    utc_ns     tt:Message/@UtcTime in ns (the camera's own clock), or None
    operation  @PropertyOperation: Initialized, Changed, Deleted, or None
    kind       what the event means, from onvif-parsers (Home Assistant's vendor normaliser): `motion`,
               `tamper`... (its device class), else its entity name; None for topics it does not know
    value      the normalised value from onvif-parsers (True/False for most), None when unknown

onvif-parsers knows the vendors' spellings (Hikvision, Reolink, Tapo, Ajax and the ONVIF profile
topics); the SimpleItems are copied as sent so nothing a parser does not know is lost.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

MAX_ITEMS = 64  # SimpleItems kept per part: a hostile message must not make a huge payload
MAX_TEXT = 1024
_LEVEL_BAD = re.compile(r"[^A-Za-z0-9_.:-]")
_NS_PREFIX = re.compile(r"^[A-Za-z_][\w.-]*:")


def topic_path(topic: str) -> str | None:
    """`tns1:RuleEngine/CellMotionDetector/Motion` -> `RuleEngine/CellMotionDetector/Motion`: namespace
    prefixes dropped per level, characters a topic level cannot hold replaced by `_`. None if empty."""
    levels = []
    for level in topic.strip().strip("/").split("/"):
        level = _NS_PREFIX.sub("", level.strip())
        level = _LEVEL_BAD.sub("_", level)[:64]
        if level:
            levels.append(level)
    return "/".join(levels[:8]) or None


def _text(v: object) -> str | None:
    if v is None:
        return None
    return str(v)[:MAX_TEXT]


def _items(part: Any) -> dict[str, str | None]:
    """SimpleItems of a tt:ItemList (zeep object or lxml element) as {Name: Value}."""
    out: dict[str, str | None] = {}
    if part is None:
        return out
    items = getattr(part, "SimpleItem", None)
    if items is None and hasattr(part, "iter"):  # an lxml element the schema did not type
        items = [el for el in part.iter() if isinstance(el.tag, str) and el.tag.endswith("SimpleItem")]
        pairs = ((el.get("Name"), el.get("Value")) for el in items)
    else:
        pairs = ((getattr(i, "Name", None), getattr(i, "Value", None)) for i in (items or []))
    for name, value in pairs:
        if name is None or len(out) >= MAX_ITEMS:
            continue
        out[str(name)[:128]] = _text(value)
    return out


def _utc_ns(value: object) -> int | None:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return int(value.timestamp() * 1_000_000) * 1000
    if isinstance(value, str):
        try:
            return _utc_ns(dt.datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            return None
    return None


def _topic_text(msg: Any) -> str | None:
    topic = getattr(msg, "Topic", None)
    text = getattr(topic, "_value_1", None) if topic is not None else None
    return text.strip() if isinstance(text, str) and text.strip() else None


async def to_publication(msg: Any, uid: str) -> tuple[str, dict[str, Any]] | None:
    """(channel, payload) of one notification, or None when it carries no topic. Never raises for
    a malformed message: what cannot be read becomes None."""
    topic = _topic_text(msg)
    if topic is None:
        return None
    path = topic_path(topic)
    if path is None:
        return None
    body = getattr(getattr(msg, "Message", None), "_value_1", None)
    if body is not None and not hasattr(body, "Source") and hasattr(body, "iter"):
        # an untyped lxml element: find tt:Message inside
        inner = next((el for el in body.iter() if isinstance(el.tag, str) and el.tag.endswith("}Message")), body)
        source = _items(next((c for c in inner if isinstance(c.tag, str) and c.tag.endswith("Source")), None))
        data = _items(next((c for c in inner if isinstance(c.tag, str) and c.tag.endswith("Data")), None))
        utc_ns, operation = _utc_ns(inner.get("UtcTime")), inner.get("PropertyOperation")
    else:
        source = _items(getattr(body, "Source", None))
        data = _items(getattr(body, "Data", None))
        utc_ns = _utc_ns(getattr(body, "UtcTime", None))
        operation = _text(getattr(body, "PropertyOperation", None))
    kind, value = await _normalise(topic, uid, msg)
    payload = {
        "topic": topic[:512],
        "source": source,
        "data": data,
        "utc_ns": utc_ns,
        "operation": operation,
        "kind": kind,
        "value": value,
    }
    return f"event/{path}", payload


async def _normalise(topic: str, uid: str, msg: Any) -> tuple[str | None, Any]:
    import onvif_parsers
    from onvif_parsers.errors import UnknownTopicError

    try:
        entities = await onvif_parsers.parse(topic, uid, msg)
    except UnknownTopicError:
        return None, None
    except Exception:  # a parser that trips over a vendor's oddity: keep the raw items, no kind
        return None, None
    if not entities:
        return None, None
    e = entities[0]
    value = e.value
    if not isinstance(value, (bool, int, float, str, type(None))):
        value = str(value)
    return (e.device_class or e.name), value
