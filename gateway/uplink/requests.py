"""The superior's requests to one uplink, and what the uplink sends inside its subscriptions.

- MESSAGE `Query`: Catalog (answered in chunks within UDP size, one after the other), DeviceInfo,
  DeviceStatus; `Control` DeviceControl: PTZCmd decoded into `ptz_move` / `ptz_stop` /
  `preset_set` / `preset_goto` / `preset_delete` on the device through the gateway's command path
  (commands.py), AlarmCmd ResetAlarm; `Response` (to our alarms) counted.
- SUBSCRIBE: Catalog (NOTIFY ON/OFF on health changes, ADD/DEL/UPDATE on reloads), Alarm (NOTIFY
  within the filters), MobilePosition (NOTIFY of the newest fix per unit at the interval).
- INVITE / ACK / BYE: live video relayed to a GB channel (calls in commands.py).
"""

from __future__ import annotations

import asyncio
import logging
import time

from tianwang.drivers.gb28181 import manscdp, sip
from tianwang.drivers.gb28181.catalog import build_catalog_chunks
from tianwang.gateway.uplink.commands import Commands, text_of

log = logging.getLogger("tianwang.uplink")

MANSCDP = "Application/MANSCDP+xml"
DEFAULT_SUB_EXPIRES = 3600
MAX_SUBSCRIPTIONS = 64
MAX_TASKS = 256  # answers and commands in flight for one superior


class Subscription:
    __slots__ = (
        "kind",
        "call_id",
        "remote_uri",
        "remote_tag",
        "local_tag",
        "event",
        "expires_at",
        "cseq",
        "target",
        "interval",
        "filters",
        "sent",
        "task",
        "local_uri",
        "remote_aor",
    )

    def __init__(self, kind, req, local_tag, expires_at, target):
        self.kind = kind
        self.call_id = req.call_id
        contact = req.contact
        self.remote_uri = str(contact.uri) if contact is not None else str(req.from_.uri)
        self.remote_tag = req.from_.tag
        self.remote_aor = str(req.from_.uri)
        self.local_uri = str(req.to.uri)
        self.local_tag = local_tag
        self.event = req.headers.get("event") or "presence"
        self.expires_at = expires_at
        self.cseq = 0
        self.target = target
        self.interval = None
        self.filters = {}
        self.sent: dict[str, int] = {}  # unit -> time_ns of the last fix sent
        self.task = None


class Requests:
    def __init__(self, uplink):
        self.up = uplink
        self.cfg = uplink.cfg
        self.subs: dict[str, Subscription] = {}  # Call-ID -> subscription
        self.commands = Commands(uplink)
        self.last_catalog: dict[str, dict] = {}  # gb_id -> item, as the superior last learnt it

    # -- dispatch -------------------------------------------------------------------------------
    def handle(self, req: sip.SipRequest, addr) -> None:
        up = self.up
        method = req.method
        if len(up._tasks) >= MAX_TASKS and method not in ("ACK", "BYE"):
            # a superior asking faster than we answer: refused, counted, memory stays bounded
            up.count("requests_busy")
            up.link.respond(req, 503, headers=[("Retry-After", "5")])
            return
        if method == "MESSAGE":
            self._message(req)
        elif method == "SUBSCRIBE":
            self._subscribe(req)
        elif method in ("INVITE", "ACK", "BYE", "CANCEL"):
            self.commands.call(req)
        elif method == "OPTIONS":
            up.link.respond(req, 200)
        elif method == "NOTIFY":
            up.link.respond(req, 200)
        else:
            up.link.respond(req, 405, headers=[("Allow", "MESSAGE, SUBSCRIBE, INVITE, ACK, BYE, CANCEL, OPTIONS")])

    def _message(self, req) -> None:
        up = self.up
        try:
            msg = manscdp.parse(req.body)
        except manscdp.ManscdpError as exc:
            up.count(f"dropped_{exc.reason}")
            up.link.respond(req, 400)
            return
        target = msg.device_id or ""
        if msg.root == "Response" or (msg.root == "Notify" and msg.cmd_type != "Keepalive"):
            up.link.respond(req, 200)
            up.count(f"responses_{msg.cmd_type.lower()}")
            return
        exposed = None
        children = None  # the rows under a business group the superior addressed
        if target != self.cfg.local_id:
            exposed = up.view.exposed().get(target)
            if exposed is None:
                children = up.view.group_children(target)
                if children is None:
                    up.link.respond(req, 404, "Unknown DeviceID")
                    return
        up.link.respond(req, 200)
        up.count(f"queries_{msg.cmd_type.lower()}")
        if children is not None:
            # a business group is a node of the tree, not a device: it has a catalog and nothing else
            if msg.root == "Query" and msg.cmd_type == "Catalog":
                up.spawn(self._catalog(msg.sn, target, children), "catalog")
            else:
                body = self.response(msg.cmd_type, msg.sn, target, [("Result", "ERROR")])
                up.spawn(up.send_message(body), "refuse")
            return
        if msg.root == "Query" and msg.cmd_type == "Catalog":
            up.spawn(self._catalog(msg.sn), "catalog")
        elif msg.root == "Query" and msg.cmd_type == "DeviceInfo":
            up.spawn(up.send_message(self._device_info(msg.sn, target, exposed)), "device_info")
        elif msg.root == "Query" and msg.cmd_type == "DeviceStatus":
            up.spawn(up.send_message(self._device_status(msg.sn, target, exposed)), "device_status")
        elif msg.root == "Control" and msg.cmd_type == "DeviceControl":
            up.spawn(self.commands.control(msg, target, exposed), "control")
        else:
            up.spawn(up.send_message(self.response(msg.cmd_type, msg.sn, target, [("Result", "ERROR")])), "refuse")

    def response(self, cmd_type, sn, device_id, fields) -> bytes:
        return manscdp.build("Response", cmd_type, sn, device_id, fields, charset=self.cfg.charset)

    # -- queries --------------------------------------------------------------------------------
    async def _catalog(self, sn: int, target: str | None = None, subtree: list[dict] | None = None) -> None:
        """The whole tree, or (`target`, `subtree`) the rows under one business group."""
        items = self.up.view.catalog() if subtree is None else subtree
        max_body = 1300 if self.cfg.transport == "udp" else 8000
        device_id = target or self.cfg.local_id
        for body in build_catalog_chunks(sn, device_id, items, charset=self.cfg.charset, max_body=max_body):
            # one after the other: the next chunk once the superior answered the previous one
            if not await self.up.send_message(body):
                return
        if subtree is None:
            self.last_catalog = {i["DeviceID"]: i for i in items}

    def _device_info(self, sn, target, x) -> bytes:
        if x is None:
            n = len(self.up.view.exposed())
            fields = [
                ("DeviceName", self.cfg.name),
                ("Result", "OK"),
                ("Manufacturer", "Tianwang"),
                ("Model", "gateway"),
                ("Firmware", self.up.app.version),
                ("Channel", n),
            ]
        else:
            info = x.entry.info
            fields = [
                ("DeviceName", info.get("name") or x.device_id),
                ("Result", "OK"),
                ("Manufacturer", info.get("manufacturer") or "Tianwang"),
                ("Model", info.get("model") or x.entry.driver),
                ("Firmware", info.get("firmware") or ""),
                ("Channel", 1),
            ]
        return self.response("DeviceInfo", sn, target, fields)

    def _device_status(self, sn, target, x) -> bytes:
        online = True if x is None else x.online
        reason = "" if x is None else x.entry.reason
        fields = [
            ("Result", "OK"),
            ("Online", "ONLINE" if online else "OFFLINE"),
            ("Status", "OK" if online else "ERROR"),
            ("Reason", reason[:128] or None),
            ("Encode", "ON"),
            ("Record", "OFF"),
            ("DeviceTime", manscdp.format_time(time.time_ns())),
        ]
        return self.response("DeviceStatus", sn, target, fields)

    # -- subscriptions --------------------------------------------------------------------------
    def _subscribe(self, req) -> None:
        up = self.up
        try:
            msg = manscdp.parse(req.body)
            expires = req.int_header("expires")
        except (manscdp.ManscdpError, sip.SipError):
            up.link.respond(req, 400)
            return
        expires = DEFAULT_SUB_EXPIRES if expires is None else expires
        old = self.subs.pop(req.call_id, None)
        if old is not None and old.task is not None:
            old.task.cancel()
        if expires == 0:
            up.link.respond(req, 200, headers=[("Expires", "0")])
            return
        if msg.cmd_type not in ("Catalog", "Alarm", "MobilePosition"):
            up.link.respond(req, 489, "Bad Event")
            return
        if len(self.subs) >= MAX_SUBSCRIPTIONS:
            up.link.respond(req, 503)
            return
        local_tag = (old.local_tag if old is not None else None) or req.to.tag or sip.new_tag()
        sub = Subscription(msg.cmd_type, req, local_tag, time.monotonic() + expires, msg.device_id or self.cfg.local_id)
        if old is not None:
            sub.cseq = old.cseq
        fields = msg.fields
        if sub.kind == "MobilePosition":
            try:
                sub.interval = max(1.0, float(text_of(fields.get("Interval")) or self.cfg.position_interval_s))
            except ValueError:
                sub.interval = self.cfg.position_interval_s
        elif sub.kind == "Alarm":
            sub.filters = {k: text_of(fields.get(k)) for k in ("StartAlarmPriority", "EndAlarmPriority", "AlarmMethod")}
        self.subs[req.call_id] = sub
        up.link.respond(req, 200, to_tag=local_tag, headers=[("Expires", str(expires))])
        up.count(f"subscriptions_{sub.kind.lower()}")
        if sub.kind == "MobilePosition":
            sub.task = up.spawn(self._positions(sub), "positions")

    def _live(self, kind):
        now = time.monotonic()
        for key, sub in list(self.subs.items()):
            if sub.expires_at <= now:
                self.subs.pop(key, None)
                if sub.task is not None:
                    sub.task.cancel()
                continue
            if sub.kind == kind:
                yield sub

    async def notify(self, sub: Subscription, body: bytes) -> bool:
        up = self.up
        if up.link is None:
            up.count("notifies_unsent")
            return False
        sub.cseq += 1
        remaining = max(0, int(sub.expires_at - time.monotonic()))
        req = sip.build_request(
            "NOTIFY",
            sub.remote_uri,
            via_host=up.link.via_host,
            via_port=up.link.via_port,
            transport=self.cfg.transport,
            from_uri=sub.local_uri,
            from_tag=sub.local_tag,
            to_uri=sub.remote_aor,
            to_tag=sub.remote_tag,
            call_id=sub.call_id,
            cseq=sub.cseq,
            headers=[("Event", sub.event), ("Subscription-State", f"active;expires={remaining}")],
            body=body,
            content_type=MANSCDP,
        )
        try:
            resp = await up.link.request(req)
        except Exception:  # a NOTIFY lost is counted; the next one tries again
            up.count("notifies_unanswered")
            return False
        up.count(f"notifies_{sub.kind.lower()}")
        return resp.status < 300

    # -- catalog notifies -----------------------------------------------------------------------
    def status_changed(self, device_id: str, status: str) -> None:
        subs = list(self._live("Catalog"))
        if not subs:
            return
        x = self.up.view.by_device().get(device_id)
        if x is None:
            return
        self._catalog_notify(subs, [self.up.view.item(x, event=status)])

    def catalog_changed(self) -> dict:
        """After a reload: ADD / DEL / UPDATE for what changed since the superior last learnt the
        catalog. Returns {event: [gb ids]}."""
        self.up.view.invalidate()
        items = {i["DeviceID"]: i for i in self.up.view.catalog()}
        before = self.last_catalog
        changes: dict[str, list[str]] = {"ADD": [], "DEL": [], "UPDATE": []}
        out = []
        for gid, item in items.items():
            if gid not in before:
                changes["ADD"].append(gid)
                out.append({**item, "Event": "ADD"})
            elif {k: v for k, v in item.items() if k != "Status"} != {
                k: v for k, v in before[gid].items() if k != "Status"
            }:
                changes["UPDATE"].append(gid)
                out.append({**item, "Event": "UPDATE"})
        for gid in before:
            if gid not in items:
                changes["DEL"].append(gid)
                out.append({"DeviceID": gid, "Event": "DEL"})
        self.last_catalog = items
        subs = list(self._live("Catalog"))
        if out and subs:
            self._catalog_notify(subs, out)
        return changes

    def _catalog_notify(self, subs, items) -> None:
        async def send():
            for sub in subs:
                sn = next(self.up.sn)
                for body in build_catalog_chunks(sn, self.cfg.local_id, items, root="Notify", charset=self.cfg.charset):
                    if not await self.notify(sub, body):
                        break

        self.up.spawn(send(), "catalog_notify")

    # -- alarms ---------------------------------------------------------------------------------
    def alarm(self, x, priority: int, method: int, fields) -> None:
        subs = [s for s in self._live("Alarm") if _alarm_wanted(s, priority, method, x.gb_id, self.cfg.local_id)]
        body = manscdp.build("Notify", "Alarm", next(self.up.sn), x.gb_id, fields, charset=self.cfg.charset)
        if subs:
            for sub in subs:
                self.up.spawn(self.notify(sub, body), "alarm")
        elif not any(True for _ in self._live("Alarm")):
            # no alarm subscription: the standard's MESSAGE Notify
            self.up.spawn(self.up.send_message(body), "alarm")
        else:
            self.up.count("alarms_filtered")

    # -- mobile positions -----------------------------------------------------------------------
    # fixes are sent at each subscription's interval (the newest one per unit), never one per fix
    async def _positions(self, sub: Subscription) -> None:
        while not self.up._stopping:
            await asyncio.sleep(sub.interval)
            units = [
                x
                for x in self.up.view.exposed().values()
                if x.kind == "mobile" and sub.target in (self.cfg.local_id, x.gb_id, "")
            ]
            for x in units:
                fix = self.up.view.fixes.get(x.device_id)
                if fix is None:
                    continue
                t = int(fix.get("time_ns") or 0)
                if sub.sent.get(x.gb_id) == t:
                    continue  # nothing newer since the last notify
                sub.sent[x.gb_id] = t
                body = manscdp.build(
                    "Notify",
                    "MobilePosition",
                    next(self.up.sn),
                    x.gb_id,
                    self.up.view.position_fields(x, fix),
                    charset=self.cfg.charset,
                )
                await self.notify(sub, body)


def _alarm_wanted(sub, priority, method, gb_id, local_id) -> bool:
    if sub.target not in (local_id, gb_id, ""):
        return False
    f = sub.filters
    try:
        lo = int(f.get("StartAlarmPriority") or 0)
        hi = int(f.get("EndAlarmPriority") or 0)
    except ValueError:
        lo = hi = 0
    # 0 means "any"; priority 1 is the highest, so "from 1 to 3" is lo=1 hi=3
    if lo and priority < lo or hi and priority > hi:
        return False
    wanted = (f.get("AlarmMethod") or "").strip()
    if wanted and wanted != "0" and str(method) not in wanted:
        return False
    return True
