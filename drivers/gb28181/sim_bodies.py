"""The MANSCDP bodies the simulated devices send, built with manscdp.build (GB2312 on the wire).

Each function returns bytes ready for a MESSAGE or NOTIFY. Catalogs come as a list of chunks, each
under the UDP budget, all with the same SN and SumNum; the `bad_xml` fault leaves one `&` bare in
a channel name, as some field devices do.

The bodies a big fleet sends all the time (keepalives, alarms, positions) come from templates:
manscdp.build run once with markers where the values go, the values then put in escaped and
encoded as build would, so the bytes are build's (tests/test_gb28181_sim_wire.py compares them).
A catalog is split by the lengths of its items' encoded XML, each chunk built once.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone

from tianwang.drivers.gb28181 import manscdp

BEIJING = timezone(timedelta(hours=8))
UDP_BODY_BUDGET = 1400  # GB/T 28181 field practice: keep a UDP datagram's body under ~1,400 bytes
BARE_AMP_NAME = "湘潭 & 韶山联络线卡口"  # the name that carries the bare & under the bad_xml fault


def gb_time(t: float | None = None) -> str:
    """ISO local (Beijing) time without zone, as GB/T 28181 writes it."""
    return datetime.fromtimestamp(time.time() if t is None else t, BEIJING).strftime("%Y-%m-%dT%H:%M:%S")


def parse_gb_time(text: str) -> float | None:
    try:
        return datetime.strptime(text.strip()[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=BEIJING).timestamp()
    except (ValueError, AttributeError):
        return None


_CODEC = "gb18030"  # what manscdp.build writes a GB2312-declared body with


def _esc(text: str) -> bytes:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").encode(_CODEC)


class _Template:
    """A body built once by manscdp.build with `\x00<n>\x00` markers where the values go (the SN
    too); `fill(sn, *values)` gives the bytes build gives for those values."""

    __slots__ = ("parts",)

    def __init__(self, root: str, cmd_type: str, with_device: bool, fields: list) -> None:
        raw = manscdp.build(root, cmd_type, 0, "\x00d\x00" if with_device else None, fields)
        raw = raw.replace(b"<SN>0</SN>", b"<SN>\x00s\x00</SN>", 1)
        self.parts = raw.split(b"\x00")

    def fill(self, sn: int, *values: str) -> bytes:
        parts = self.parts
        out = [parts[0]]
        # parts alternate: literal, marker name, literal...; markers come in the order the body
        # names them: s (SN), d (DeviceID), then 0, 1, 2... for the fields
        for i in range(1, len(parts), 2):
            name = parts[i]
            out.append(str(sn).encode() if name == b"s" else _esc(values[0 if name == b"d" else int(name) + 1]))
            out.append(parts[i + 1])
        return b"".join(out)


def _marker(n: int) -> str:
    return f"\x00{n}\x00"


_TEMPLATES: dict = {}


def _template(key, make) -> _Template:
    found = _TEMPLATES.get(key)
    if found is None:
        found = _TEMPLATES[key] = make()
    return found


def keepalive(sn: int, device_id: str, faulty: Sequence[str] = ()) -> bytes:
    if not faulty:
        t = _template("keepalive", lambda: _Template("Notify", "Keepalive", True, [("Status", "OK")]))
        return t.fill(sn, device_id)
    fields: list = [("Status", "OK"), ("Info", {"DeviceID": list(faulty)})]
    return manscdp.build("Notify", "Keepalive", sn, device_id, fields)


def _channel_item(ch, device, event: str | None = None, bad_xml: bool = False) -> dict:
    name = BARE_AMP_NAME if bad_xml else ch.name
    item = dict(
        [
            ("DeviceID", ch.id),
            ("Name", name),
            ("Manufacturer", device.manufacturer),
            ("Model", device.model),
            ("Owner", "Owner"),
            ("CivilCode", ch.civil_code),
            ("Address", ch.address),
            ("Parental", 0),
            ("ParentID", device.id),
            ("SafetyWay", 0),
            ("RegisterWay", 1),
            ("Secrecy", 0),
            ("Status", "OFF" if ch.video_lost else "ON"),
            ("Longitude", f"{ch.lon:.6f}"),
            ("Latitude", f"{ch.lat:.6f}"),
            ("Info", {"PTZType": ch.ptz_type}),
        ]
    )
    if event is not None:
        item["Event"] = event
    return item


def catalog_chunks(
    sn: int, device, *, budget: int = UDP_BODY_BUDGET, per_chunk: int | None = None, bad_xml: bool = False
) -> list[bytes]:
    """The device's channels as Catalog responses, as many items per message as fit `budget` bytes
    (or exactly `per_chunk`); an empty catalog is one message with SumNum 0 and no list."""
    channels = device.channels
    total = len(channels)
    if total == 0:
        return [manscdp.build("Response", "Catalog", sn, device.id, [("SumNum", 0)])]
    items = [_channel_item(ch, device, bad_xml=bad_xml and i == 0) for i, ch in enumerate(channels)]
    # each item's encoded XML, cut from a one-item body; a chunk is the head (its Num said again),
    # its items and the tail, so the split needs lengths only and each chunk is built once
    fragments = []
    head = tail = b""
    for it in items:
        raw = manscdp.build(
            "Response", "Catalog", sn, device.id, [("SumNum", total), ("DeviceList", manscdp.item_list([it]))]
        )
        start, end = raw.index(b"<Item>"), raw.rindex(b"</DeviceList>")
        head, tail = raw[:start], raw[end:]
        fragments.append(raw[start:end])
    if bad_xml:
        fragments[0] = _unescape_amp(fragments[0])
    one = b'<DeviceList Num="1">'

    def head_for(n: int) -> bytes:
        return head.replace(one, b'<DeviceList Num="%d">' % n, 1)

    chunks: list[bytes] = []
    group: list[bytes] = []
    size = 0
    for frag in fragments:
        if per_chunk is not None:
            full = len(group) == per_chunk
        else:
            full = bool(group) and len(head_for(len(group) + 1)) + size + len(frag) + len(tail) > budget
        if full:
            chunks.append(head_for(len(group)) + b"".join(group) + tail)
            group, size = [], 0
        group.append(frag)
        size += len(frag)
    chunks.append(head_for(len(group)) + b"".join(group) + tail)
    return chunks


def _unescape_amp(raw: bytes) -> bytes:
    return raw.replace("&amp;".encode("ascii"), b"&", 1)


def catalog_notify(sn: int, device, channels, event: str) -> bytes:
    items = [_channel_item(ch, device, event=event) for ch in channels]
    return manscdp.build(
        "Notify", "Catalog", sn, device.id, [("SumNum", len(items)), ("DeviceList", manscdp.item_list(items))]
    )


def device_info(sn: int, device) -> bytes:
    return manscdp.build(
        "Response",
        "DeviceInfo",
        sn,
        device.id,
        [
            ("DeviceName", device.name),
            ("Result", "OK"),
            ("Manufacturer", device.manufacturer),
            ("Model", device.model),
            ("Firmware", device.firmware),
            ("Channel", len(device.channels)),
        ],
    )


def device_status(sn: int, device, now: float) -> bytes:
    alarms = manscdp.item_list(
        {"DeviceID": ch.id, "DutyStatus": "ALARM" if ch.alarm_latched else "ONDUTY"} for ch in device.channels
    )
    return manscdp.build(
        "Response",
        "DeviceStatus",
        sn,
        device.id,
        [
            ("Result", "OK"),
            ("Online", "ONLINE"),
            ("Status", "OK"),
            ("Encode", "ON"),
            ("Record", "ON"),
            ("DeviceTime", gb_time(now)),
            ("Alarmstatus", alarms),
        ],
    )


def record_chunks(sn: int, channel, records, *, budget: int = UDP_BODY_BUDGET) -> list[bytes]:
    total = len(records)
    if total == 0:
        return [manscdp.build("Response", "RecordInfo", sn, channel.id, [("Name", channel.name), ("SumNum", 0)])]
    items = [
        dict(
            [
                ("DeviceID", channel.id),
                ("Name", channel.name),
                ("FilePath", f"/rec/{channel.id}/{int(r.start)}.ps"),
                ("Address", channel.address),
                ("StartTime", gb_time(r.start)),
                ("EndTime", gb_time(r.end)),
                ("Secrecy", 0),
                ("Type", r.kind),
                ("FileSize", r.size_kib * 1024),
            ]
        )
        for r in records
    ]

    def body(group):
        return manscdp.build(
            "Response",
            "RecordInfo",
            sn,
            channel.id,
            [("Name", channel.name), ("SumNum", total), ("RecordList", manscdp.item_list(group))],
        )

    chunks: list[bytes] = []
    group: list[dict] = []
    for it in items:
        trial = group + [it]
        if group and len(body(trial)) > budget:
            chunks.append(body(group))
            group = [it]
        else:
            group = trial
    chunks.append(body(group))
    return chunks


def preset_list(sn: int, channel_id: str, presets: dict) -> bytes:
    items = [{"PresetID": n, "PresetName": f"预置位{n}"} for n in sorted(presets)]
    return manscdp.build("Response", "PresetQuery", sn, channel_id, [("PresetList", manscdp.item_list(items))])


def control_result(sn: int, target_id: str, ok: bool = True) -> bytes:
    return manscdp.build("Response", "DeviceControl", sn, target_id, [("Result", "OK" if ok else "ERROR")])


def config_download(sn: int, device, keepalive_s: float, count: int) -> bytes:
    return manscdp.build(
        "Response",
        "ConfigDownload",
        sn,
        device.id,
        [
            ("Result", "OK"),
            (
                "BasicParam",
                {
                    "Name": device.name,
                    "Expiration": device.expires,
                    "HeartBeatInterval": int(keepalive_s),
                    "HeartBeatCount": count,
                },
            ),
        ],
    )


def alarm(sn: int, channel, kind, now: float, root: str = "Notify", stamp_ns: int | None = None) -> bytes:
    """An alarm of `channel`; `stamp_ns` (the scale bench) ends the description with ` #t=<unix ns>`,
    the send time a subscriber measures the alarm's latency from (AlarmTime has whole seconds)."""
    description = f"{channel.name}{kind.description}"
    if stamp_ns is not None:
        description += f" #t={stamp_ns}"
    t = _template(
        ("alarm", root, kind.priority, kind.method, kind.alarm_type),
        lambda: _Template(
            root,
            "Alarm",
            True,
            [
                ("AlarmPriority", kind.priority),
                ("AlarmMethod", kind.method),
                ("AlarmTime", _marker(0)),
                ("AlarmDescription", _marker(1)),
                ("Longitude", _marker(2)),
                ("Latitude", _marker(3)),
                ("Info", {"AlarmType": kind.alarm_type}),
            ],
        ),
    )
    return t.fill(sn, channel.id, gb_time(now), description, f"{channel.lon:.6f}", f"{channel.lat:.6f}")


def mobile_position(
    sn: int,
    device_id: str,
    now: float,
    lat: float,
    lon: float,
    speed_kmh: float,
    course: float,
    alt_m: float,
    root: str = "Notify",
) -> bytes:
    t = _template(
        ("mobile_position", root),
        lambda: _Template(
            root,
            "MobilePosition",
            True,
            [
                ("Time", _marker(0)),
                ("Longitude", _marker(1)),
                ("Latitude", _marker(2)),
                ("Speed", _marker(3)),
                ("Direction", _marker(4)),
                ("Altitude", _marker(5)),
            ],
        ),
    )
    return t.fill(
        sn, device_id, gb_time(now), f"{lon:.6f}", f"{lat:.6f}", f"{speed_kmh:.1f}", f"{course:.1f}", f"{alt_m:.0f}"
    )
