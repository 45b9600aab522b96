"""The MANSCDP bodies the simulated devices send, built with manscdp.build (GB2312 on the wire).

Each function returns bytes ready for a MESSAGE or NOTIFY. Catalogs come as a list of chunks, each
under the UDP budget, all with the same SN and SumNum; the `bad_xml` fault leaves one `&` bare in
a channel name, as some field devices do.
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


def keepalive(sn: int, device_id: str, faulty: Sequence[str] = ()) -> bytes:
    fields: list = [("Status", "OK")]
    if faulty:
        fields.append(("Info", {"DeviceID": list(faulty)}))
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

    def body(group):
        raw = manscdp.build(
            "Response", "Catalog", sn, device.id, [("SumNum", total), ("DeviceList", manscdp.item_list(group))]
        )
        return _unescape_amp(raw) if bad_xml and items[0] in group else raw

    chunks: list[bytes] = []
    group: list = []
    for it in items:
        if per_chunk is not None:
            if len(group) == per_chunk:
                chunks.append(body(group))
                group = []
            group.append(it)
            continue
        trial = group + [it]
        if group and len(body(trial)) > budget:
            chunks.append(body(group))
            group = [it]
        else:
            group = trial
    chunks.append(body(group))
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
    return manscdp.build(
        root,
        "Alarm",
        sn,
        channel.id,
        [
            ("AlarmPriority", kind.priority),
            ("AlarmMethod", kind.method),
            ("AlarmTime", gb_time(now)),
            ("AlarmDescription", description),
            ("Longitude", f"{channel.lon:.6f}"),
            ("Latitude", f"{channel.lat:.6f}"),
            ("Info", {"AlarmType": kind.alarm_type}),
        ],
    )


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
    return manscdp.build(
        root,
        "MobilePosition",
        sn,
        device_id,
        [
            ("Time", gb_time(now)),
            ("Longitude", f"{lon:.6f}"),
            ("Latitude", f"{lat:.6f}"),
            ("Speed", f"{speed_kmh:.1f}"),
            ("Direction", f"{course:.1f}"),
            ("Altitude", f"{alt_m:.0f}"),
        ],
    )
