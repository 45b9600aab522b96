"""One GB/T 28181 device as the listener knows it, sans-io: registration, liveness, catalog,
alarms and positions.

A `DeviceSession` is fed what the SIP layer has already taken apart (a registration granted, a
MANSCDP body parsed by tianwang.drivers.gb28181.manscdp, the time) and returns a `Step`: the
publications to make (on the device, on one of its channels, or on `gnss/<device>/fix`), health
changes with their reasons, ListDevices facts, channels that appeared or went, the MANSCDP bodies
to send to the device (an alarm's `Response`, `ResetAlarm`, a catalog query) and the application
answers that commands wait for (by SN). It opens nothing and reads no clock: `now` is the
caller's monotonic time, `utc` its wall clock where a payload needs one.

Liveness: a device is ONLINE from its registration; OFFLINE when `keepalive.interval_s x count`
passes without a keepalive (or any MESSAGE) or when its registration runs out, whichever comes
first; a keepalive or REGISTER brings it back. A keepalive with `Status` ERROR makes it DEGRADED;
channels named in its `Info` are DEGRADED ("faulty") until a keepalive no longer names them.

Channels: the catalog (queried at registration and on demand, chunks gathered by SN until SumNum
or `catalog_idle_s`) is the list of the device's channels and tree nodes; cameras and alarm inputs
become devices of their own (parent: the device), tree nodes (regions, systems, business groups,
virtual organisations) are kept apart and shown in the device's info. Catalog NOTIFYs (ON, OFF,
VLOST, DEFECT, ADD, DEL, UPDATE) are applied as they come.
"""

from __future__ import annotations

import calendar
import itertools
import re
import time
from collections.abc import Iterable
from typing import Any, NamedTuple

from tianwang.drivers.gb28181 import catalog as cat, datum as dat, manscdp
from tianwang.drivers.sdk import Health

BEIJING_S = 8 * 3600
_LOCAL_TIME_RE = re.compile(r"^\s*(\d{4})-(\d{1,2})-(\d{1,2})[T ](\d{1,2}):(\d{1,2}):(\d{1,2})(?:\.(\d{1,9}))?")
ONLINE_STATUS = ("ON", "ONLINE", "OK")
MAX_RECORD_QUERIES = 16  # record answers gathered at once per device
# a channel's fault from catalog events, until an ON clears it
FAULT_HEALTH = {
    "VLOST": (Health.DEGRADED, "catalog: video lost"),
    "DEFECT": (Health.DEGRADED, "catalog: defect"),
}
_sn_counter = itertools.count(int(time.time()) % 100000 * 1000 + 1)


def next_sn() -> int:
    """SNs for what the listener sends: one counter for every device (an answer is matched by
    device and SN, so they only need to differ per device)."""
    return next(_sn_counter)


def local_time_ns(text: object) -> int | None:
    """A MANSCDP time (Beijing local, `2024-05-01T08:30:00`, `.SSS` optional, a space for `T`
    seen too) as ns since the epoch, UTC; None when it is not one."""
    if not isinstance(text, str):
        return None
    m = _LOCAL_TIME_RE.match(text)
    if m is None:
        return None
    y, mo, d, h, mi, s = (int(g) for g in m.groups()[:6])
    frac = m.group(7) or ""
    try:
        secs = calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0))
    except (ValueError, OverflowError):
        return None
    if not (1 <= mo <= 12 and 1 <= d <= 31 and h < 24 and mi < 60 and s < 61):
        return None
    return (secs - BEIJING_S) * 1_000_000_000 + int((frac + "000000000")[:9])


def local_time_text(utc: float) -> str:
    """UTC seconds as a MANSCDP time (Beijing local, no fraction)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(utc + BEIJING_S))


class Publication(NamedTuple):
    target: str  # the device or channel id it is about
    channel: str  # `alarm`, `fix`
    payload: dict[str, Any]
    device_time_ns: int = 0
    family: str = ""  # "" = the listener's family (`camera`); `gnss` for positions


class Outgoing(NamedTuple):
    """A MANSCDP body to MESSAGE to the device, with its CmdType and SN (an application answer,
    when one comes, carries the same SN)."""

    cmd_type: str
    sn: int
    body: bytes


class Step:
    """What one event asks of the listener, in this order: drops and counts, channels removed and
    added (before anything is said about them), info, publications, health, answers (to the
    commands waiting for them, by SN), outgoing bodies. `catalog_done` is a catalog answer that
    just completed (or stopped short)."""

    __slots__ = (
        "publications",
        "health",
        "info",
        "added",
        "removed",
        "outgoing",
        "answers",
        "drops",
        "counts",
        "catalog_done",
    )

    def __init__(self) -> None:
        self.publications: list[Publication] = []
        self.health: list[tuple[str, Health, str]] = []
        self.info: dict[str, dict[str, str]] = {}
        self.added: list[str] = []
        self.removed: list[str] = []
        self.outgoing: list[Outgoing] = []
        self.answers: list[tuple[int, str, object]] = []  # (sn, cmd_type, typed answer)
        self.drops: list[str] = []
        self.counts: list[str] = []
        self.catalog_done: cat.CatalogResult | None = None

    def __repr__(self) -> str:
        return f"Step({', '.join(f'{k}={getattr(self, k)!r}' for k in self.__slots__ if getattr(self, k))})"


def _text(value: object) -> str:
    return "" if value is None else str(value)


def channel_info(item: manscdp.CatalogItem) -> dict[str, str]:
    """ListDevices facts of one catalog item (strings; empty ones left out)."""
    info = {
        "name": item.name,
        "kind": item.kind,
        "manufacturer": item.manufacturer,
        "model": item.model,
        "civil_code": item.civil_code,
        "address": item.address,
        "ptz_type": item.ptz_type,
        "status": item.status,
        "lat": item.lat,
        "lon": item.lon,
        "parent_ids": "/".join(item.parent_ids or ()),
        "ip": item.ip,
        "port": item.port,
    }
    return {k: _text(v) for k, v in info.items() if v not in (None, "")}


class DeviceSession:
    """One device (see the module docstring).

    `device_id`; `datum` (`wgs84` or `gcj02`: what its positions are in); `charset` (of what is
    sent to it); `keepalive_s` and `keepalive_count`; `max_channels`; `catalog_idle_s`;
    `server_id`: a ParentID equal to it is no parent."""

    def __init__(
        self,
        device_id: str,
        *,
        datum: str = "wgs84",
        charset: str = "GB2312",
        keepalive_s: float = 60.0,
        keepalive_count: int = 3,
        max_channels: int = 1024,
        catalog_idle_s: float = 10.0,
        server_id: str = "",
    ) -> None:
        self.id = device_id
        self.datum = datum
        self.charset = charset
        self.keepalive_s = keepalive_s
        self.keepalive_count = keepalive_count
        self.max_channels = max_channels
        self.server_id = server_id
        self.registered = False
        self.expires_at = 0.0  # monotonic
        self.last_alive = 0.0  # monotonic: the last keepalive, REGISTER or MESSAGE
        self.state = Health.OFFLINE
        self.reason = "not registered"
        self.status_error = False
        self.link_down = False  # its TCP connection closed; it is heard again on a new one
        self.faulty: frozenset[str] = frozenset()
        self.catalog = cat.Catalog(device_id, server_id or None, max_channels)
        self.collector = cat.CatalogCollector(idle_s=catalog_idle_s, max_items_per_device=max_channels)
        self.catalog_sn = 0  # the SN of the catalog query in flight, 0 when none
        self.catalog_partial = False
        self.channel_state: dict[str, tuple[Health, str]] = {}
        self.catalog_idle_s = catalog_idle_s
        self.records: dict[int, list[Any]] = {}  # SN -> [SumNum, items, last chunk's time]

    # -- registration and liveness -----------------------------------------------------------------
    def _set(self, step: Step, state: Health, reason: str) -> None:
        if (state, reason) != (self.state, self.reason):
            self.state, self.reason = state, reason
            step.health.append((self.id, state, reason))

    def _device_state(self, step: Step, why: str) -> None:
        if self.link_down:
            return
        if self.status_error:
            self._set(step, Health.DEGRADED, "keepalive: Status ERROR")
        else:
            self._set(step, Health.ONLINE, why)

    def register(self, now: float, expires_s: float, why: str = "registered") -> Step:
        """A REGISTER was granted for `expires_s`. The caller then queries the device (catalog,
        info) and subscribes, as its config says."""
        step = Step()
        was_online = self.registered and self.state != Health.OFFLINE
        self.registered = True
        self.link_down = False
        self.expires_at = now + expires_s
        self.last_alive = now
        self._device_state(step, why)
        if not was_online:
            self._channels_follow(step)
        return step

    def restore(self, now: float, expires_in_s: float) -> Step:
        """A registration read back from the registrations file after a restart: ONLINE until the
        keepalives say otherwise (the liveness clock starts now)."""
        return self.register(now, expires_in_s, "registration restored after a restart")

    def restore_channels(self, channel_ids: Iterable[str]) -> Step:
        """The channel IDs its last catalog held, read back after a restart: listed (and their
        alarms published on their own topics) before the catalog is read again, which replaces
        them. Their names and the rest come with that catalog."""
        step = Step()
        items = [
            manscdp.CatalogItem(device_id=cid, kind=manscdp.item_kind(cid))
            for cid in list(channel_ids)[: self.max_channels]
            if isinstance(cid, str)
        ]
        if not items:
            return step
        self.catalog.replace(cat.CatalogResult(self.id, 0, len(items), items, False))
        self.catalog_partial = True
        step.added.extend(item.device_id for item in self.catalog.channels() if item.device_id != self.id)
        self._channels_follow(step)
        step.info[self.id] = {**self.catalog_facts(), "catalog": "restored"}
        return step

    def unregister(self, reason: str) -> Step:
        """REGISTER with Expires 0 (or the listener forgetting the device): OFFLINE, channels too."""
        step = Step()
        self.registered = False
        self.expires_at = 0.0
        self._set(step, Health.OFFLINE, reason)
        self._channels_follow(step)
        return step

    def tick(self, now: float) -> Step | None:
        """Time passes: registration expiry, missed keepalives, an idle catalog. None when
        nothing is due (the common case, checked every second for every device)."""
        if not (
            self.records
            or len(self.collector)
            or self.registered
            and (
                now >= self.expires_at
                or self.state != Health.OFFLINE
                and now - self.last_alive > self.keepalive_s * self.keepalive_count
            )
        ):
            return None
        step = Step()
        if self.registered:
            if now >= self.expires_at:
                self.registered = False
                self._set(step, Health.OFFLINE, "registration expired")
                self._channels_follow(step)
            elif self.state != Health.OFFLINE and now - self.last_alive > self.keepalive_s * self.keepalive_count:
                self._set(
                    step,
                    Health.OFFLINE,
                    f"no keepalive for {now - self.last_alive:.0f} s ({self.keepalive_count} x {self.keepalive_s:g} s)",
                )
                self._channels_follow(step)
        for result in self.collector.expire(now):
            self._catalog_result(step, result)
        for sn, (sum_num, items, last) in list(self.records.items()):
            if now - last > self.catalog_idle_s:
                del self.records[sn]
                step.answers.append((sn, "RecordInfo", (sum_num, items, False)))
        return step

    def _records(self, step: Step, msg: manscdp.Message, now: float) -> None:
        """RecordInfo answers come split like catalogs: gathered by SN until SumNum (or idle)."""
        sum_num, items = manscdp.record_items(msg)
        got = self.records.get(msg.sn)
        if got is None:
            if len(self.records) >= MAX_RECORD_QUERIES:
                step.drops.append("too_many_record_answers")
                return
            got = self.records[msg.sn] = [sum_num, [], now]
        got[1].extend(items[: max(0, self.max_channels * 4 - len(got[1]))])
        got[2] = now
        if len(got[1]) >= (sum_num or 0) or len(got[1]) >= self.max_channels * 4:
            del self.records[msg.sn]
            step.answers.append((msg.sn, "RecordInfo", (sum_num, got[1], len(got[1]) >= (sum_num or 0))))

    def alive(self, now: float, step: Step, why: str) -> None:
        """Anything the device sent while registered counts as a sign of life."""
        self.last_alive = now
        if self.registered and (self.state == Health.OFFLINE or self.link_down):
            self.link_down = False
            self._device_state(step, why)
            self._channels_follow(step)

    def link_lost(self, reason: str) -> Step:
        """Its TCP connection closed: DEGRADED (it cannot be reached) until it is heard again."""
        step = Step()
        if self.registered and self.state != Health.OFFLINE:
            self.link_down = True
            self._set(step, Health.DEGRADED, reason)
        return step

    # -- channels ------------------------------------------------------------------------------
    def _channel_health(self, item: manscdp.CatalogItem) -> tuple[Health, str]:
        if self.state == Health.OFFLINE:
            return Health.OFFLINE, f"device {self.id} offline"
        if item.device_id in self.faulty:
            return Health.DEGRADED, "faulty (the device's keepalive names it)"
        fault = self.catalog.fault(item.device_id)
        if fault in FAULT_HEALTH:
            return FAULT_HEALTH[fault]
        status = (item.status or "").upper()
        if status in ("", *ONLINE_STATUS):
            return Health.ONLINE, "catalog: ON" if status else "in the catalog"
        return Health.OFFLINE, f"catalog: {status}"

    def _channels_follow(self, step: Step) -> None:
        """Channel health after a change of the device or of its catalog."""
        for item in self.catalog.channels():
            if item.device_id == self.id:
                continue  # an IPC listing itself as its channel: its health is the device's own
            state = self._channel_health(item)
            if self.channel_state.get(item.device_id) != state:
                self.channel_state[item.device_id] = state
                step.health.append((item.device_id, *state))

    def channel_ids(self) -> list[str]:
        return [item.device_id for item in self.catalog.channels()]

    def _catalog_result(self, step: Step, result: cat.CatalogResult) -> None:
        before = set(self.channel_ids())
        self.catalog.replace(result)
        if result.sn == self.catalog_sn:
            self.catalog_sn = 0
        self.catalog_partial = not result.complete
        after = self.catalog.channels()
        ids = {item.device_id for item in after}
        step.removed.extend(sorted(before - ids))
        for gone in before - ids:
            self.channel_state.pop(gone, None)
        for item in after:
            if item.device_id not in before:
                step.added.append(item.device_id)
            step.info[item.device_id] = channel_info(item)
        self._channels_follow(step)
        step.info[self.id] = self.catalog_facts(result)
        step.counts.append("catalogs" if result.complete else "catalogs_partial")
        step.catalog_done = result

    def catalog_facts(self, result: cat.CatalogResult | None = None) -> dict[str, str]:
        nodes = self.catalog.nodes()
        facts = {
            "channels": str(len(self.catalog.channels())),
            "catalog_nodes": str(len(nodes)),
            "catalog": ("partial" if self.catalog_partial else "complete"),
        }
        if result is not None:
            facts["catalog_sum_num"] = str(result.sum_num)
            facts["catalog_items"] = str(len(result.items))
        return facts

    # -- what the device sends -----------------------------------------------------------------
    def message(self, msg: manscdp.Message, now: float, utc: float) -> Step:
        """One MANSCDP body from the device (MESSAGE or NOTIFY, already answered with a SIP 200)."""
        step = Step()
        root, cmd = msg.root, msg.cmd_type
        self.alive(now, step, f"{root} {cmd}")
        try:
            self._dispatch(step, msg, root, cmd, now, utc)
        except manscdp.ManscdpError as exc:  # a body the typed reader refuses (no position...)
            step.drops.append(exc.reason)
        return step

    def _dispatch(self, step: Step, msg: manscdp.Message, root: str, cmd: str, now: float, utc: float) -> None:
        if root == "Notify":
            if cmd == "Keepalive":
                self._keepalive(step, msg)
            elif cmd == "Alarm":
                self._alarm(step, msg, utc)
            elif cmd == "MobilePosition":
                self._position(step, msg)
            elif cmd == "Catalog":
                self._catalog_notify(step, msg, now)
            else:
                step.counts.append("notify_ignored")
        elif root == "Response":
            if cmd == "Catalog":
                sum_num, items = manscdp.catalog_items(msg)
                result = self.collector.add(self.id, msg.sn, sum_num, items, now)
                if result is not None:
                    self._catalog_result(step, result)
                    step.answers.append((msg.sn, cmd, result))
            elif cmd == "RecordInfo":
                self._records(step, msg, now)
            else:
                step.answers.append((msg.sn, cmd, msg))
                if cmd == "DeviceInfo":
                    step.info[self.id] = self.device_facts(manscdp.device_info(msg))
        else:
            step.counts.append(f"{root.lower()}_ignored")

    def device_facts(self, info: manscdp.DeviceInfo) -> dict[str, str]:
        out = {
            "device_name": info.device_name,
            "manufacturer": info.manufacturer,
            "model": info.model,
            "firmware": info.firmware,
            "inputs": info.channel,
        }
        return {k: _text(v) for k, v in out.items() if v not in (None, "")}

    def _keepalive(self, step: Step, msg: manscdp.Message) -> None:
        ka = manscdp.keepalive(msg)
        step.counts.append("keepalives")
        error = not ka.ok
        faulty = frozenset(ka.faulty or ())
        if error != self.status_error:
            self.status_error = error
            self._device_state(step, "keepalive: Status OK")
        if faulty != self.faulty:
            self.faulty = faulty
            self._channels_follow(step)

    def _alarm(self, step: Step, msg: manscdp.Message, utc: float) -> None:
        a = manscdp.alarm(msg)
        methods = list(a.methods or ())
        method = methods[0] if methods else None
        source = a.device_id or msg.device_id or self.id
        time_ns = a.time_ns if a.time_ns is not None else local_time_ns(a.time)
        payload = {
            "kind": a.kind,
            "priority": a.priority,
            "method": method,
            "methods": methods,
            "type": a.type,
            "description": a.description or "",
            "time_ns": time_ns,
            "lat": a.lat,
            "lon": a.lon,
            "device": self.id,
            "channel_id": source,
            "sn": msg.sn,
        }
        step.publications.append(Publication(source, "alarm", payload, time_ns or 0))
        step.counts.append("alarms")
        # the standard's answer: a Response MESSAGE with the alarm's SN; then ResetAlarm after a
        # device alarm (method 2), or the device will not report the next one
        step.outgoing.append(
            Outgoing("Alarm", msg.sn, self.build("Response", "Alarm", msg.sn, source, [("Result", "OK")]))
        )
        if 2 in methods:
            step.outgoing.append(self.reset_alarm(source, method=2, alarm_type=a.type))

    def reset_alarm(self, target: str, method: int | None = None, alarm_type: int | None = None) -> Outgoing:
        sn = next_sn()
        fields: list = [("AlarmCmd", "ResetAlarm")]
        info = []
        if method is not None:
            info.append(("AlarmMethod", str(method)))
        if alarm_type is not None:
            info.append(("AlarmType", str(alarm_type)))
        if info:
            fields.append(("Info", dict(info)))
        return Outgoing("DeviceControl", sn, self.build("Control", "DeviceControl", sn, target, fields))

    def _position(self, step: Step, msg: manscdp.Message) -> None:
        pos = manscdp.mobile_position(msg)
        if pos.lat is None or pos.lon is None:
            step.drops.append("position_without_coordinates")
            return
        lat, lon = float(pos.lat), float(pos.lon)
        if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
            step.drops.append("position_out_of_range")
            return
        if self.datum == "gcj02" and not dat.outside_china(lat, lon):
            lat, lon = dat.gcj02_to_wgs84(lat, lon)
        time_ns = pos.time_ns if pos.time_ns is not None else local_time_ns(pos.time)
        speed = None if pos.speed_kmh is None else round(float(pos.speed_kmh) / 3.6, 4)
        payload = {
            "time_ns": time_ns,
            "lat": round(lat, 9),
            "lon": round(lon, 9),
            "alt_m": None if pos.altitude is None else float(pos.altitude),
            "speed_mps": speed,
            "course_deg": None if pos.direction is None else float(pos.direction),
            "quality": 1,
            "mode": None,
            "hdop": None,
            "pdop": None,
            "vdop": None,
            "sats_used": None,
            "sats_view": None,
            "source": "gb28181",
            "datum": self.datum,
            "target_id": pos.id or msg.device_id or self.id,
        }
        step.publications.append(Publication(self.id, "fix", payload, time_ns or 0, "gnss"))
        step.counts.append("positions")

    def _catalog_notify(self, step: Step, msg: manscdp.Message, now: float) -> None:
        _sum, items = manscdp.catalog_items(msg)
        before = set(self.channel_ids())
        touched = set()
        for item in items:
            event = (item.event or "").upper()
            if not event:
                step.counts.append("catalog_items_without_event")
                continue
            change = self.catalog.apply(item)
            if change is None:
                step.drops.append(
                    "too_many_channels"
                    if event in ("ADD", "UPDATE") and len(self.catalog) >= self.max_channels
                    else "catalog_event_ignored"
                )
                continue
            step.counts.append(f"catalog_event_{event.lower()}")
            touched.add(change.device_id)
        if not touched:
            return
        after = {i.device_id: i for i in self.catalog.channels()}
        for gone in sorted(before - set(after)):
            step.removed.append(gone)
            self.channel_state.pop(gone, None)
        for cid, item in after.items():
            if cid not in before:
                step.added.append(cid)
            if cid in touched:
                step.info[cid] = channel_info(item)
        self._channels_follow(step)
        step.info[self.id] = self.catalog_facts()

    # -- what is sent to the device ------------------------------------------------------------
    def build(self, root: str, cmd_type: str, sn: int, target: str, fields: list[tuple[str, Any]]) -> bytes:
        return manscdp.build(root, cmd_type, sn, target, fields, charset=self.charset)

    def query(self, cmd_type: str, target: str | None = None, fields: Iterable[tuple[str, Any]] = ()) -> Outgoing:
        sn = next_sn()
        if cmd_type == "Catalog" and (target is None or target == self.id):
            self.catalog_sn = sn
        return Outgoing(cmd_type, sn, self.build("Query", cmd_type, sn, target or self.id, list(fields)))

    def control(self, target: str, fields: Iterable[tuple[str, Any]]) -> Outgoing:
        sn = next_sn()
        return Outgoing("DeviceControl", sn, self.build("Control", "DeviceControl", sn, target, list(fields)))
