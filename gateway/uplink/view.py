"""What a superior platform sees of the gateway through one uplink: the exposed devices with their
20-digit IDs, the catalog tree, device status, newest fixes, and GB alarm fields for the gateway's
alarms and camera events.

Built from the supervisor's device table on demand (a reload, a catalog query), so it never holds
a second copy of the device state; the newest fix per device is the one thing kept here, read
from the journal by the uplink's cursor.
"""

from __future__ import annotations

import hashlib
import time

from tianwang.drivers.gb28181 import ids as gbids, manscdp
from tianwang.gateway.uplink.ids import exposes, gb_id_for

# The gateway's alarm kinds (the ONVIF driver's normalised kinds and the GB listener's) -> GB/T
# 28181-2016 A.2.2 (AlarmMethod, AlarmType): 2 device alarms, 5 video analytics.
KIND_TO_GB = {
    "video_loss": (2, 1),
    "tamper": (2, 2),
    "disk_full": (2, 3),
    "high_temperature": (2, 4),
    "low_temperature": (2, 5),
    "manual": (5, 1),
    "motion": (5, 2),
    "left_object": (5, 3),
    "object_removed": (5, 4),
    "line_crossing": (5, 5),
    "tripwire": (5, 5),
    "intrusion": (5, 6),
    "wrong_way": (5, 7),
    "loitering": (5, 8),
    "people_counting": (5, 9),
    "crowd_density": (5, 10),
    "video_anomaly": (5, 11),
    "fast_moving": (5, 12),
    "disk_fault": (6, 1),
    "fan_fault": (6, 2),
}
CACHE_S = 5.0  # the exposed set is rebuilt at least this often (and when devices come or go)
OTHER_METHOD = 7  # "other": a kind GB names nothing for; the kind goes in AlarmDescription


def gb_alarm_of(kind: str | None, method: int | None = None, alarm_type: int | None = None) -> tuple[int, int | None]:
    """(AlarmMethod, AlarmType) for an alarm: a GB alarm keeps its own, anything else maps its kind."""
    if method:
        return int(method), alarm_type
    return KIND_TO_GB.get(kind or "", (OTHER_METHOD, None))


class Exposed:
    """One device as the superior knows it."""

    __slots__ = ("gb_id", "device_id", "family", "kind", "entry")

    def __init__(self, gb_id, device_id, family, kind, entry):
        self.gb_id = gb_id
        self.device_id = device_id
        self.family = family
        self.kind = kind  # "camera" or "mobile"
        self.entry = entry

    @property
    def online(self) -> bool:
        return self.entry.state.value in ("ONLINE", "DEGRADED")


class View:
    def __init__(self, app, cfg):
        self.app = app
        self.cfg = cfg
        self.domain = cfg.domain or cfg.local_id[:10]
        self.fixes: dict[str, dict] = {}  # device id -> newest fix payload
        self.collisions = 0
        self._cache = None  # (table size, when, by gb_id, by device id)

    def configured_gb_ids(self) -> dict[str, str]:
        return {d.id: d.gb_id for d in self.app.config.all_devices() if getattr(d, "gb_id", None)}

    def invalidate(self) -> None:
        self._cache = None

    def exposed(self) -> dict[str, Exposed]:
        """gb_id -> Exposed over the device table, rebuilt when the table's size changed or after
        CACHE_S (an alarm or a query of a city's 50,000 channels must not walk them all each time;
        states are read live through the entries). A device whose ID another already took (two
        terminals hashing alike) is left out and counted."""
        entries = self.app.supervisor.entries
        now = time.monotonic()
        cache = self._cache
        if cache is not None and cache[0] == len(entries) and now - cache[1] < CACHE_S:
            return cache[2]
        out = self._build()
        self._cache = (len(entries), now, out, {x.device_id: x for x in out.values()})
        return out

    def by_device(self) -> dict[str, Exposed]:
        self.exposed()
        return self._cache[3]

    def _build(self) -> dict[str, Exposed]:
        out: dict[str, Exposed] = {}
        self.collisions = 0
        configured = self.configured_gb_ids()
        cfg = self.cfg
        for e in self.app.supervisor.list_devices():
            if e.family == "uplink" or (e.spec is not None and e.spec.kind == "listener" and not e.parent):
                continue
            gb_given = configured.get(e.id)
            if not gb_given and not exposes(cfg.expose, e.family, e.id):
                continue
            kind = self.kind_of(e)
            if kind is None:
                continue
            gid = gb_id_for(cfg.local_id, e.family, e.id, gb_given)
            if gid is None:
                continue
            if gid in out or gid == cfg.local_id:
                self.collisions += 1
                continue
            out[gid] = Exposed(gid, e.id, e.family, kind, e)
        return out

    @staticmethod
    def kind_of(entry) -> str | None:
        if entry.family == "gnss":
            return "mobile"
        if entry.family != "camera":
            return None
        t = gbids.id_type(entry.id)
        if t == gbids.MOBILE:
            return "mobile"
        if entry.driver == "gb28181" and t in (gbids.DVR, gbids.NVR, gbids.ENCODER, gbids.VIDEO_SERVER):
            return None  # a recorder: its channels are the cameras
        return "camera"

    # -- the catalog ------------------------------------------------------------------------------
    def group_of(self, x: Exposed) -> tuple[str, str]:
        """(business group ID, name) of an exposed device: per family, or per `labels.site`."""
        if self.cfg.groups == "site":
            name = x.entry.info.get("site") or "default"
        else:
            name = {"camera": "cameras", "mobile": "mobile units"}[x.kind]
        serial = int.from_bytes(hashlib.sha256(f"group/{name}".encode()).digest()[:8], "big") % 1_000_000
        return f"{self.cfg.local_id[:10]}215{self.cfg.local_id[13]}{serial:06d}", name

    def item(self, x: Exposed, event: str | None = None) -> dict:
        info = x.entry.info
        group, _ = self.group_of(x)
        lat, lon = _num(info.get("lat")), _num(info.get("lon"))
        fix = self.fixes.get(x.device_id)
        if fix is not None:
            lat, lon = self.datum(fix.get("lat"), fix.get("lon"))
        elif lat is not None and lon is not None:
            lat, lon = self.datum(lat, lon)
        ptz = info.get("ptz_type")
        if ptz is None and x.kind == "camera" and x.entry.driver == "onvif":
            ptz = "1" if info.get("ptz", "").lower() in ("true", "1", "yes") else "3"
        return {
            "DeviceID": x.gb_id,
            "Event": event,
            "Name": info.get("name") or x.device_id,
            "Manufacturer": info.get("manufacturer") or "Tianwang",
            "Model": info.get("model") or x.entry.driver,
            "Owner": self.cfg.name,
            "CivilCode": info.get("civil_code") or self.cfg.local_id[:6],
            "Address": info.get("address") or x.device_id,
            "Parental": 0,
            "ParentID": f"{self.cfg.local_id}/{group}",
            "SafetyWay": 0,
            "RegisterWay": 1,
            "Secrecy": 0,
            "Status": "ON" if x.online else "OFF",
            "Longitude": lon,
            "Latitude": lat,
            "BusinessGroupID": group,
            "Info": {"PTZType": ptz} if x.kind == "camera" and ptz else None,
        }

    def catalog(self) -> list[dict]:
        """The tree: the gateway as the system, its business groups, then the devices."""
        cfg = self.cfg
        exposed = sorted(self.exposed().values(), key=lambda x: x.gb_id)
        groups = {}
        for x in exposed:
            gid, name = self.group_of(x)
            groups[gid] = name
        items = [
            {
                "DeviceID": cfg.local_id,
                "Name": cfg.name,
                "Manufacturer": "Tianwang",
                "Model": "gateway",
                "Owner": cfg.name,
                "CivilCode": cfg.local_id[:6],
                "Address": cfg.name,
                "Parental": 1,
                "RegisterWay": 1,
                "Secrecy": 0,
                "Status": "ON",
            }
        ]
        items += [{"DeviceID": gid, "Name": name, "ParentID": cfg.local_id} for gid, name in sorted(groups.items())]
        items += [self.item(x) for x in exposed]
        return items

    def group_children(self, gid: str) -> list[dict] | None:
        """The catalog rows under business group `gid` (what a Catalog query addressed to the group
        asks for), None when `gid` is not one of our groups."""
        members = [x for x in sorted(self.exposed().values(), key=lambda x: x.gb_id) if self.group_of(x)[0] == gid]
        return [self.item(x) for x in members] if members else None

    def datum(self, lat, lon):
        if lat is None or lon is None:
            return None, None
        if self.cfg.datum == "gcj02":
            from tianwang.drivers.gb28181.datum import wgs84_to_gcj02

            lat, lon = wgs84_to_gcj02(float(lat), float(lon))
        return round(float(lat), 7), round(float(lon), 7)

    def position_fields(self, x: Exposed, fix: dict) -> list:
        lat, lon = self.datum(fix.get("lat"), fix.get("lon"))
        speed = fix.get("speed_mps")
        return [
            ("Time", manscdp.format_time(int(fix.get("time_ns") or 0))),
            ("Longitude", lon),
            ("Latitude", lat),
            ("Speed", round(float(speed) * 3.6, 2) if speed is not None else None),
            ("Direction", fix.get("course_deg")),
            ("Altitude", fix.get("alt_m")),
        ]


def _num(text):
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None
