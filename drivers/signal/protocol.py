"""GB/T 20999-2017 messages between a traffic-signal controller and its host (the centre).

Sans-io: this module turns the content of one unescaped, CRC-checked frame (protocol version through
the last data byte, as `tianwang.gateway.framing.Gbt20999Framer` hands it over) into a `Message` and back,
and decodes the data values the signal topics need. It opens nothing and keeps no state.

The standard's text is not public; what is implemented is the consensus of public implementations.
Where vendors differ the choice is a `Profile` field, defaulting to what most of them do:

    version(2) host(1) controller(4) road(1) seq(1) type(1) count(1) values...
    value: index(1, from 1) len(1) class(1) object(1) attribute(1) element(1) bytes(len - 4)

Multi-byte fields are big-endian. A query value has len 4 and no bytes; attribute or element 0 in a
query means "all". A query reply carries the value; a set reply one status byte per value (0 ok).

Value layouts read here (the ones the signal topics use). For a table object, the element is the
row (lamp group, stage, detector); in a reply to an element-0 query, element 0 carries every row's
value back to back, rows numbered from 1.

- 3.3.2 lamp group state, 1 byte per group: `LAMP_COLOURS`.
- 6.3 stage status table, by analogy with the lamp group table: 6.3.1 stage id, 6.3.2 status (1 byte:
  0x10 idle, 0x20 running, 0x30 transition), 6.3.3 elapsed and 6.3.4 remaining seconds (1 or 2 bytes
  for one row; 2 bytes per row in an element-0 reply).
- 13.2.2 run mode (`RUN_MODES`), 13.2.3 plan, 13.2.4 stage: 1 byte each. 13.1.10 UTC time: 7-byte date
  (year(2) month day hour minute second) or 4-byte seconds since the epoch.
- 15 alarms and 16 faults: one record per element: type(1), then a 7-byte date, then for an alarm its
  value bytes, for a fault the action taken (1 byte, numbered as the command pipe: `ACTIONS`). Records
  shorter than that are passed on with what they hold.
- 5.3 detector data and class 14 traffic data: each value is published as it is (`item`, `detector`,
  an unsigned integer when it is at most 4 bytes, and the raw bytes), since vendors lay out the
  statistics differently.

Parse errors raise `Gbt20999Error` (a FrameError) whose `reason` is the drop-counter label.
"""

from __future__ import annotations

import calendar
import dataclasses
import enum
import time
from collections.abc import Iterable
from typing import Any

from tianwang.drivers.sdk import FrameError, Gbt20999Framer, encode_gbt20999


class FrameType(enum.IntEnum):
    QUERY = 0x10
    QUERY_REPLY = 0x20
    QUERY_ERROR = 0x21
    SET = 0x30
    SET_REPLY = 0x40
    SET_ERROR = 0x41
    BROADCAST = 0x50
    REPORT = 0x60  # active report: alarms, faults, changes the controller pushes
    HEARTBEAT_QUERY = 0x70
    HEARTBEAT_REPLY = 0x80


HEARTBEATS = (FrameType.HEARTBEAT_QUERY, FrameType.HEARTBEAT_REPLY)
# what a controller sends, as opposed to what the host sends it
FROM_CONTROLLER = frozenset(
    {
        FrameType.QUERY_REPLY,
        FrameType.QUERY_ERROR,
        FrameType.SET_REPLY,
        FrameType.SET_ERROR,
        FrameType.REPORT,
        FrameType.HEARTBEAT_REPLY,
    }
)

# error codes in query/set error replies and set reply status bytes
ERRORS = {
    0x00: "ok",
    0x10: "bad_value",
    0x11: "wrong_length",
    0x12: "out_of_range",
    0x20: "read_only",
    0x30: "does_not_exist",
    0x40: "general_error",
    0x50: "control_failed",
}

LAMP_COLOURS = {
    0x01: "off",
    0x10: "red",
    0x11: "red_flash",
    0x12: "red_fast_flash",
    0x20: "green",
    0x21: "green_flash",
    0x22: "green_fast_flash",
    0x30: "yellow",
    0x31: "yellow_flash",
    0x32: "yellow_fast_flash",
    0x40: "red_yellow",
}

STAGE_STATUS = {0x10: "idle", 0x20: "running", 0x30: "transition"}

RUN_MODES = {
    0x10: "centre",
    0x11: "centre_day_plan",
    0x12: "centre_optimised",
    0x13: "centre_coordinated",
    0x14: "centre_adaptive",
    0x15: "centre_manual",
    0x20: "local",
    0x21: "local_fixed",
    0x22: "local_actuated",
    0x23: "local_coordinated",
    0x24: "local_adaptive",
    0x25: "local_manual",
    0x30: "special",
    0x31: "yellow_flash",
    0x32: "all_red",
    0x33: "lamps_off",
}

# command pipe (18.1.1) codes; fault records number the action taken the same way
ACTIONS = {0: "none", 1: "yellow_flash", 2: "all_red", 3: "lamps_on", 4: "lamps_off", 5: "restart"}

# (class, object, attribute) of the values the topics use
DEVICE_INFO = 1
LAMP_GROUP_STATE = (3, 3, 2)
DETECTOR_DATA = (5, 3)
STAGE_ID = (6, 3, 1)
STAGE_STATUS_ITEM = (6, 3, 2)
STAGE_ELAPSED = (6, 3, 3)
STAGE_REMAINING = (6, 3, 4)
UTC_TIME = (13, 1, 10)
LOCAL_TIME = (13, 1, 11)
RUN_MODE = (13, 2, 2)
RUN_PLAN = (13, 2, 3)
RUN_STAGE = (13, 2, 4)
TRAFFIC_CLASS = 14
ALARM_CLASS = 15
FAULT_CLASS = 16
CONTROL_CLASS = 17
COMMAND_PIPE = (18, 1, 1)

HEADER_LEN = 10  # version(2) host(1) controller(4) road(1) seq(1) type(1)
DEFAULT_VERSION = 0x0101


class Gbt20999Error(FrameError):
    """A frame whose content is not a well-formed GB/T 20999 message. `reason` labels the drop."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


@dataclasses.dataclass(frozen=True)
class Profile:
    """What one vendor does where public implementations differ ("majority": what most of them do).

    length_field      what the frame's length field holds: "n-2" (majority), "n" or "n-4"
    crc               "gbt20999" (poly 0x1005, majority) or "ccitt-false"
    escaped           0x5C escaping on serial and TCP (majority); False for UDP or vendors that do not
                      escape on TCP (the framer then frames by the length field)
    heartbeat_count   heartbeat frames carry a value count byte (majority: they do not)
    control_objects   "17.1": centre control at 17.1.2 stage / 17.1.3 plan / 17.1.4 run mode
                      (majority); "17.n": at 17.2.1 / 17.3.1 / 17.4.1
    max_frame         largest frame accepted (unescaped bytes between the flags)
    """

    length_field: str = "n-2"
    crc: str = "gbt20999"
    escaped: bool = True
    heartbeat_count: bool = False
    control_objects: str = "17.1"
    max_frame: int = 4096

    def __post_init__(self) -> None:
        if self.length_field not in ("n-2", "n", "n-4"):
            raise ValueError(f"length_field must be n-2, n or n-4, not {self.length_field!r}")
        if self.crc not in ("gbt20999", "ccitt-false"):
            raise ValueError(f"crc must be gbt20999 or ccitt-false, not {self.crc!r}")
        if self.control_objects not in ("17.1", "17.n"):
            raise ValueError(f"control_objects must be 17.1 or 17.n, not {self.control_objects!r}")

    def framer(self, *, keep_rejects: bool = False) -> Gbt20999Framer:
        """A framer for this profile (compiled or twin, as tianwang.gateway.framing chose)."""
        return Gbt20999Framer(
            length_field=self.length_field,
            crc=self.crc,
            escaped=self.escaped,
            max_frame=self.max_frame,
            keep_rejects=keep_rejects,
        )

    def control_item(self, what: str) -> tuple[int, int, int]:
        """(class, object, attribute) of centre control `what`: "stage", "plan" or "mode"."""
        order = {"stage": 0, "plan": 1, "mode": 2}[what]
        if self.control_objects == "17.1":
            return (CONTROL_CLASS, 1, 2 + order)
        return (CONTROL_CLASS, 2 + order, 1)


# Named profiles. Names say what differs, not whose it is.
PROFILES = {
    "majority": Profile(),
    "length-n": Profile(length_field="n"),
    "length-n-4": Profile(length_field="n-4"),
    "ccitt": Profile(crc="ccitt-false"),
    "unescaped": Profile(escaped=False),
    "heartbeat-count": Profile(heartbeat_count=True),
    "control-17n": Profile(control_objects="17.n"),
}


@dataclasses.dataclass(frozen=True)
class DataValue:
    index: int  # position in the frame, from 1
    cls: int
    obj: int
    attribute: int
    element: int
    value: bytes = b""

    @property
    def item(self) -> tuple[int, int, int]:
        return (self.cls, self.obj, self.attribute)

    @property
    def name(self) -> str:
        return f"{self.cls}.{self.obj}.{self.attribute}"


@dataclasses.dataclass(frozen=True)
class Message:
    frame_type: int
    controller: int
    seq: int
    values: tuple[DataValue, ...] = ()
    host: int = 1
    road: int = 1
    version: int = DEFAULT_VERSION

    @property
    def kind(self) -> str:
        try:
            return FrameType(self.frame_type).name.lower()
        except ValueError:
            return f"type_0x{self.frame_type:02x}"


# -- parse and build -----------------------------------------------------------------------------


def parse(content: bytes) -> Message:
    """The message in one frame's content. Raises Gbt20999Error (reason `bad_message`).

    Heartbeat frames are read with or without a value count, whatever the profile says: a host
    that accepts both never loses a controller to that difference."""
    n = len(content)
    if n < HEADER_LEN:
        raise Gbt20999Error("bad_message", f"frame content of {n} bytes is shorter than the header")
    version = (content[0] << 8) | content[1]
    host = content[2]
    controller = int.from_bytes(content[3:7], "big")
    road, seq, frame_type = content[7], content[8], content[9]
    if n == HEADER_LEN:
        if frame_type in HEARTBEATS:
            return Message(frame_type, controller, seq, (), host, road, version)
        raise Gbt20999Error("bad_message", f"frame type 0x{frame_type:02x} without a value count")
    count = content[10]
    values = []
    i = HEADER_LEN + 1
    for k in range(count):
        if i + 6 > n:
            raise Gbt20999Error("bad_message", f"value {k + 1} of {count} is cut short")
        index, length = content[i], content[i + 1]
        if length < 4:
            raise Gbt20999Error("bad_message", f"value {k + 1} has length {length} (< 4)")
        end = i + 2 + length
        if end > n:
            raise Gbt20999Error("bad_message", f"value {k + 1} runs past the frame")
        values.append(
            DataValue(
                index, content[i + 2], content[i + 3], content[i + 4], content[i + 5], bytes(content[i + 6 : end])
            )
        )
        i = end
    if i != n:
        raise Gbt20999Error("bad_message", f"{n - i} bytes after the last of {count} values")
    return Message(frame_type, controller, seq, tuple(values), host, road, version)


def build(msg: Message, profile: Profile = PROFILES["majority"]) -> bytes:
    """Frame content (version..data) of `msg`. Raises ValueError for fields out of range."""
    for name, value, limit in (
        ("version", msg.version, 0xFFFF),
        ("host", msg.host, 0xFF),
        ("controller", msg.controller, 0xFFFFFFFF),
        ("road", msg.road, 0xFF),
        ("seq", msg.seq, 0xFF),
        ("frame_type", msg.frame_type, 0xFF),
    ):
        if not 0 <= value <= limit:
            raise ValueError(f"{name} {value} out of range 0..{limit}")
    out = bytearray(msg.version.to_bytes(2, "big"))
    out.append(msg.host)
    out += msg.controller.to_bytes(4, "big")
    out += bytes((msg.road, msg.seq, msg.frame_type))
    if msg.frame_type in HEARTBEATS and not msg.values and not profile.heartbeat_count:
        return bytes(out)
    if len(msg.values) > 0xFF:
        raise ValueError(f"{len(msg.values)} values do not fit one frame (at most 255)")
    out.append(len(msg.values))
    for v in msg.values:
        if len(v.value) > 0xFF - 4:
            raise ValueError(f"value {v.name} of {len(v.value)} bytes is too long (at most 251)")
        out += bytes((v.index, len(v.value) + 4, v.cls, v.obj, v.attribute, v.element))
        out += v.value
    return bytes(out)


def encode(msg: Message, profile: Profile = PROFILES["majority"]) -> bytes:
    """`msg` on the wire under `profile`: length field, CRC, escaping, flags."""
    return encode_gbt20999(
        build(msg, profile), length_field=profile.length_field, crc=profile.crc, escaped=profile.escaped
    )


def _values(items: Iterable[tuple]) -> tuple[DataValue, ...]:
    out = []
    for i, item in enumerate(items, 1):
        cls, obj, attribute, element, *rest = item
        out.append(DataValue(i, cls, obj, attribute, element, bytes(rest[0]) if rest else b""))
    return tuple(out)


def query(controller: int, seq: int, items: Iterable[tuple[int, int, int, int]], **header: Any) -> Message:
    """A query for (class, object, attribute, element) items; 0 as attribute or element means all."""
    return Message(FrameType.QUERY, controller, seq, _values(items), **header)


def set_request(controller: int, seq: int, items: Iterable[tuple[int, int, int, int, bytes]], **header: Any) -> Message:
    """A set of (class, object, attribute, element, value bytes) items."""
    return Message(FrameType.SET, controller, seq, _values(items), **header)


def heartbeat(controller: int, seq: int, *, reply: bool = False, **header: Any) -> Message:
    """A heartbeat query (host -> controller) or, with `reply`, the controller's answer."""
    return Message(FrameType.HEARTBEAT_REPLY if reply else FrameType.HEARTBEAT_QUERY, controller, seq, (), **header)


def query_reply(request: Message, values: Iterable[tuple[int, int, int, int, bytes]]) -> Message:
    """The controller's answer to `request` carrying `values` (same seq, controller, host, road)."""
    return dataclasses.replace(request, frame_type=FrameType.QUERY_REPLY, values=_values(values))


def set_reply(request: Message, statuses: Iterable[int] | None = None) -> Message:
    """The controller's answer to a set: one status byte per value (0 = ok unless given)."""
    statuses = list(statuses) if statuses is not None else [0] * len(request.values)
    values = tuple(dataclasses.replace(v, value=bytes((s,))) for v, s in zip(request.values, statuses, strict=True))
    return dataclasses.replace(request, frame_type=FrameType.SET_REPLY, values=values)


def error_reply(request: Message, code: int) -> Message:
    """A query or set error answer: every value of `request` with the error code as its byte."""
    frame_type = FrameType.SET_ERROR if request.frame_type == FrameType.SET else FrameType.QUERY_ERROR
    values = tuple(dataclasses.replace(v, value=bytes((code,))) for v in request.values)
    return dataclasses.replace(request, frame_type=frame_type, values=values)


def set_statuses(msg: Message) -> list[tuple[str, str]]:
    """(item, status name) for each value of a set reply or error reply."""
    return [
        (v.name, ERRORS.get(v.value[0], f"code_0x{v.value[0]:02x}") if v.value else "no_status") for v in msg.values
    ]


# -- value decoders --------------------------------------------------------------------------------


def date7(raw: bytes, utc_offset_s: int = 0) -> int | None:
    """ns since the epoch from a 7-byte date (year(2) month day hour minute second) in a clock
    `utc_offset_s` ahead of UTC; None when it is all zero or not a real date."""
    if len(raw) != 7 or not any(raw):
        return None
    year = (raw[0] << 8) | raw[1]
    month, day, hour, minute, second = raw[2:7]
    if not (1970 <= year <= 2999 and 1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and second < 61):
        return None
    try:
        ts = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    except (ValueError, OverflowError):
        return None
    return (ts - utc_offset_s) * 1_000_000_000


def make_date7(ns: int, utc_offset_s: int = 0) -> bytes:
    """The 7-byte date of `ns` (since the epoch) in a clock `utc_offset_s` ahead of UTC."""
    t = time.gmtime(ns // 1_000_000_000 + utc_offset_s)
    return t.tm_year.to_bytes(2, "big") + bytes((t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec))


def colour(code: int) -> str:
    return LAMP_COLOURS.get(code, f"unknown_0x{code:02x}")


def _rows(v: DataValue, width: int) -> list[tuple[int, bytes]]:
    """(row, value bytes) of a table value: one row, or every row back to back for element 0."""
    if v.element:
        return [(v.element, v.value)]
    return [(i // width + 1, v.value[i : i + width]) for i in range(0, len(v.value) - width + 1, width)]


def _uint(raw: bytes) -> int | None:
    return int.from_bytes(raw, "big") if 0 < len(raw) <= 8 else None


def lamp_groups(values: Iterable[DataValue]) -> dict[str, str]:
    """{group id (str): colour name} from the 3.3.2 values in a message."""
    out = {}
    for v in values:
        if v.item == LAMP_GROUP_STATE:
            for row, raw in _rows(v, 1):
                if raw:
                    out[str(row)] = colour(raw[0])
    return out


def stages(values: Iterable[DataValue]) -> dict[int, dict]:
    """{stage: {"status", "elapsed_s", "remaining_s"}} from the 6.3 values in a message."""
    out: dict[int, dict] = {}
    for v in values:
        if v.item == STAGE_STATUS_ITEM:
            for row, raw in _rows(v, 1):
                if raw:
                    out.setdefault(row, {})["status"] = STAGE_STATUS.get(raw[0], f"unknown_0x{raw[0]:02x}")
        elif v.item in (STAGE_ELAPSED, STAGE_REMAINING):
            key = "elapsed_s" if v.item == STAGE_ELAPSED else "remaining_s"
            for row, raw in _rows(v, 2):
                if raw:
                    out.setdefault(row, {})[key] = _uint(raw)
    return out


def run_status(values: Iterable[DataValue]) -> dict[str, Any]:
    """{"mode", "mode_code", "plan", "stage"} for the 13.2 values present in a message."""
    out: dict[str, Any] = {}
    for v in values:
        if not v.value:
            continue
        if v.item == RUN_MODE:
            out["mode_code"] = v.value[0]
            out["mode"] = RUN_MODES.get(v.value[0], f"unknown_0x{v.value[0]:02x}")
        elif v.item == RUN_PLAN:
            out["plan"] = _uint(v.value)
        elif v.item == RUN_STAGE:
            out["stage"] = _uint(v.value)
    return out


def controller_time(values: Iterable[DataValue], utc_offset_s: int = 0) -> int | None:
    """ns since the epoch from a 13.1.10 UTC time value (or 13.1.11 local time), if present."""
    local = None
    for v in values:
        if v.item == UTC_TIME:
            if len(v.value) == 4:
                return int.from_bytes(v.value, "big") * 1_000_000_000
            t = date7(v.value)
            if t is not None:
                return t
        elif v.item == LOCAL_TIME and len(v.value) == 7:
            local = date7(v.value, utc_offset_s)
    return local


def alarm(v: DataValue, utc_offset_s: int) -> dict:
    """Payload of one class 15 record."""
    raw = v.value
    return {
        "item": v.name,
        "element": v.element,
        "type": raw[0] if raw else None,
        "time_ns": date7(raw[1:8], utc_offset_s) if len(raw) >= 8 else None,
        "value": _uint(raw[8:]) if len(raw) > 8 else None,
        "raw": raw.hex(),
    }


def fault(v: DataValue, utc_offset_s: int) -> dict:
    """Payload of one class 16 record: type, time and the action the controller took."""
    raw = v.value
    action = raw[8] if len(raw) >= 9 else None
    return {
        "item": v.name,
        "element": v.element,
        "type": raw[0] if raw else None,
        "time_ns": date7(raw[1:8], utc_offset_s) if len(raw) >= 8 else None,
        "action": action,
        "action_name": None if action is None else ACTIONS.get(action, f"action_{action}"),
        "raw": raw.hex(),
    }


def traffic(v: DataValue) -> dict:
    """Payload of one detector (5.3) or traffic data (class 14) value."""
    return {
        "item": v.name,
        "source": "detector" if v.cls == 5 else "traffic",
        "detector": v.element,
        "value": _uint(v.value) if len(v.value) <= 4 else None,
        "raw": v.value.hex(),
    }
