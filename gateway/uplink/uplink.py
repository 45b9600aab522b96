"""One uplink: the gateway as a lower platform of one superior (docs/gb28181-uplink.md).

- Registration: REGISTER, the digest answer to the 401, refreshed at 80% of the granted expiry;
  Keepalive MESSAGEs every `keepalive.interval_s`; `keepalive.count` unanswered in a row, or a 4xx
  to one (the superior forgot us), means register again. A failed registration waits `retry_s`
  (never under 60 s, the standard's floor), doubling up to `retry_max_s`.
- Health on `uplink/<id>/health` and a ListDevices row (family `uplink`).
- The journal, read by a cursor of its own (like the NATS bridge), turns camera events and GB alarms
  into GB alarms, fixes into mobile positions, and health changes into catalog ON/OFF notifies.
- The superior's MESSAGEs and SUBSCRIBEs are answered in requests.py; its calls in calls.py.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time

import msgpack

from tianwang.drivers.gb28181 import digest, manscdp, sip
from tianwang.gateway.errors import describe
from tianwang.gateway.framing import TopicFilter
from tianwang.gateway.lifecycle.driver import Health
from tianwang.gateway.lifecycle.supervisor import DeviceContext, DeviceEntry
from tianwang.gateway.uplink.link import LinkClosed, SipLink
from tianwang.gateway.uplink.requests import Requests
from tianwang.gateway.uplink.view import View, gb_alarm_of
from tianwang.v1 import gateway_pb2 as pb

log = logging.getLogger("tianwang.uplink")

MANSCDP = "Application/MANSCDP+xml"
# journal topics the uplink reads: camera events and GB alarms, fixes, every health change
WATCHED = ["camera/+/event/#", "camera/+/alarm", "camera/+/call", "gnss/+/fix", "+/+/health"]
REFRESH_AT = 0.8  # of the granted expiry
REGISTER_TIMEOUT_S = 10.0


class RegistrationFailed(ConnectionError):
    pass


class Uplink:
    def __init__(self, app, cfg):
        self.app = app
        self.cfg = cfg
        self.id = cfg.id
        self.principal = f"uplink:{cfg.id}"
        self.domain = cfg.domain or cfg.local_id[:10]
        self.superior_domain = cfg.superior_domain or cfg.superior_id[:10]
        self.password = cfg.password.get_secret_value()
        self.view = View(app, cfg)
        self.link: SipLink | None = None
        self.registered = False
        self.sn = itertools.count(1)
        self.cseq = itertools.count(1)
        self.reg_call_id = sip.new_call_id()
        self.reg_tag = sip.new_tag()
        self.counters: dict[str, int] = {}
        self.requests = Requests(self)
        self._tasks: set[asyncio.Task] = set()
        self._run_task = None
        self._pump_task = None
        self._stopping = False
        self.registrations = 0
        entry = DeviceEntry(cfg.id, "uplink", "gb28181-uplink", None)
        entry.info.update(
            {
                "superior": cfg.superior,
                "superior_id": cfg.superior_id,
                "local_id": cfg.local_id,
                "transport": cfg.transport,
            }
        )
        self.entry = entry
        self.ctx = DeviceContext(app.supervisor, entry, cfg)
        self.ctx.log = log

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        sup = self.app.supervisor
        if self.id in sup.entries:
            raise ValueError(f"uplink id {self.id!r} is also a device's")
        sup.entries[self.id] = self.entry
        loop = asyncio.get_running_loop()
        self._pump_task = loop.create_task(self._pump(self.app.journal.next_seq), name=f"uplink:{self.id}:journal")
        self._run_task = loop.create_task(self._run(), name=f"uplink:{self.id}")

    async def stop(self, reason: str = "stopped") -> None:
        self._stopping = True
        self.app.journal.wake()
        tasks = [t for t in (self._pump_task, self._run_task, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)
        if self.link is not None:
            await self.requests.commands.close()
        if self.link is not None and self.registered:
            try:  # unregister: Expires 0, best effort
                await asyncio.wait_for(self._register(0), 2.0)
            except (TimeoutError, Exception):
                pass
        await self._close_link()
        self.ctx.set_health(Health.OFFLINE, reason)
        if self.app.supervisor.entries.get(self.id) is self.entry:
            self.app.supervisor._retire(self.app.supervisor.entries.pop(self.id))

    def spawn(self, coro, name: str) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro, name=f"uplink:{self.id}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        exc = task.exception() if not task.cancelled() else None
        if exc is not None:
            if not isinstance(exc, (ConnectionError, TimeoutError)):
                log.error("uplink %s: %s failed: %s", self.id, task.get_name(), describe(exc))

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n
        self.ctx.count(name, n)

    def _live_link(self) -> SipLink:
        if self.link is None:  # _run opens it before anything is sent
            raise LinkClosed("no link to the superior")
        return self.link

    async def _close_link(self) -> None:
        link, self.link = self.link, None
        self.registered = False
        if link is not None:
            await link.close()

    # -- registration and keepalive -------------------------------------------------------------
    async def _run(self) -> None:
        cfg = self.cfg
        delay = cfg.retry_s
        while not self._stopping:
            self.ctx.set_health(Health.CONNECTING, f"registering to {cfg.superior}")
            try:
                self.link = link = SipLink(cfg.superior, cfg.bind, cfg.transport, self.requests.handle)
                await link.open()
                expires = await self._register(cfg.expires)
                self.registered = True
                self.registrations += 1
                self.count("registrations")
                delay = cfg.retry_s
                self.ctx.set_health(Health.ONLINE, f"registered to {cfg.superior_id} for {expires} s")
                log.info("uplink %s: registered to %s (%s) for %d s", self.id, cfg.superior_id, cfg.superior, expires)
                reason = await self._keep(expires)
            except asyncio.CancelledError:
                raise
            except (OSError, TimeoutError, RegistrationFailed, LinkClosed, sip.SipError, ValueError) as exc:
                reason = describe(exc)
                wait = delay
                delay = min(delay * 2, cfg.retry_max_s)
                await self._close_link()
                self.ctx.set_health(Health.OFFLINE, f"{reason}; registering again in {wait:g} s")
                self.count("registration_failures")
                await asyncio.sleep(wait)
                continue
            if self._stopping:
                return
            # the superior forgot us or stopped answering: register again at once (a failure then waits)
            await self._close_link()
            self.ctx.set_health(Health.OFFLINE, f"{reason}; registering again")

    def _register_request(self, expires: int, auth: str | None = None) -> sip.SipRequest:
        cfg, link = self.cfg, self._live_link()
        ours = f"sip:{cfg.local_id}@{self.domain}"
        headers = [("Expires", str(expires)), ("User-Agent", "Tianwang"), ("X-GB-Ver", "2.0")]
        if auth:
            headers.append(("Authorization", auth))
        return sip.build_request(
            "REGISTER",
            f"sip:{cfg.superior_id}@{self.superior_domain}",
            via_host=link.via_host,
            via_port=link.via_port,
            transport=cfg.transport,
            from_uri=ours,
            from_tag=self.reg_tag,
            to_uri=ours,
            call_id=self.reg_call_id,
            cseq=next(self.cseq),
            contact=f"sip:{cfg.local_id}@{link.via_host}:{link.via_port}",
            headers=headers,
        )

    async def _register(self, expires: int) -> int:
        """REGISTER (answering one digest challenge); the expiry granted. Raises RegistrationFailed."""
        req = self._register_request(expires)
        resp = await self._live_link().request(req, REGISTER_TIMEOUT_S)
        if resp.status in (401, 407):
            challenge = resp.headers.get("www-authenticate" if resp.status == 401 else "proxy-authenticate") or ""
            ch = digest.parse_challenge(challenge)
            if not ch.get("nonce"):
                raise RegistrationFailed(f"superior answered {resp.status} without a digest challenge")
            auth = digest.authorization(
                self.cfg.local_id,
                ch.get("realm", self.superior_domain),
                self.password,
                "REGISTER",
                req.uri,
                ch["nonce"],
                qop=ch.get("qop"),
                opaque=ch.get("opaque"),
            )
            req = self._register_request(expires, auth)
            resp = await self._live_link().request(req, REGISTER_TIMEOUT_S)
        if resp.status == 423:
            minimum = resp.int_header("min-expires") or 3600
            return await self._register(max(expires, minimum))
        if resp.status != 200:
            raise RegistrationFailed(f"superior refused the registration: {resp.status} {resp.reason}")
        granted = resp.int_header("expires")
        return expires if granted is None else granted

    async def _keep(self, expires: int) -> str:
        """Keepalives and refreshes until the superior fails us; returns why."""
        cfg = self.cfg
        loop = asyncio.get_running_loop()
        refresh_at = loop.time() + max(1.0, expires * REFRESH_AT)
        missed = 0
        while not self._stopping:
            now = loop.time()
            if now >= refresh_at:
                expires = await self._register(cfg.expires)
                refresh_at = loop.time() + max(1.0, expires * REFRESH_AT)
                self.count("refreshes")
            body = manscdp.build(
                "Notify", "Keepalive", next(self.sn), self.cfg.local_id, [("Status", "OK")], charset=cfg.charset
            )
            try:
                resp = await self._live_link().request(self.message_request(body), cfg.keepalive.interval_s)
            except TimeoutError:
                missed += 1
                self.count("keepalives_unanswered")
                if missed >= cfg.keepalive.count:
                    return f"{missed} keepalives unanswered"
                self.ctx.set_health(Health.DEGRADED, f"keepalive unanswered ({missed} of {cfg.keepalive.count})")
                continue
            if resp.status >= 300:
                return f"superior answered a keepalive with {resp.status} {resp.reason}"
            if missed:
                missed = 0
                self.ctx.set_health(Health.ONLINE, f"registered to {cfg.superior_id}")
            self.count("keepalives")
            await asyncio.sleep(max(0.0, min(cfg.keepalive.interval_s, refresh_at - loop.time())))
        return "stopping"

    # -- requests to the superior ---------------------------------------------------------------
    def message_request(self, body: bytes, method: str = "MESSAGE", headers=()) -> sip.SipRequest:
        cfg, link = self.cfg, self._live_link()
        return sip.build_request(
            method,
            f"sip:{cfg.superior_id}@{self.superior_domain}",
            via_host=link.via_host,
            via_port=link.via_port,
            transport=cfg.transport,
            from_uri=f"sip:{cfg.local_id}@{self.domain}",
            from_tag=sip.new_tag(),
            to_uri=f"sip:{cfg.superior_id}@{self.superior_domain}",
            call_id=sip.new_call_id(),
            cseq=1,
            headers=headers,
            body=body,
            content_type=MANSCDP,
        )

    async def send_message(self, body: bytes) -> bool:
        """A MESSAGE to the superior; True when it answered 2xx."""
        if self.link is None:  # (a query may come before our side has read the REGISTER's 200)
            self.count("messages_unsent")
            return False
        try:
            resp = await self._live_link().request(self.message_request(body))
        except (TimeoutError, LinkClosed):
            self.count("messages_unanswered")
            return False
        return resp.status < 300

    # -- the journal ----------------------------------------------------------------------------
    async def _pump(self, cursor: int) -> None:
        journal = self.app.journal
        flt = TopicFilter(WATCHED)
        # loops test the stop flag too: a cancellation that meets a finished wait_for is lost on 3.11
        while not self._stopping:
            _, cursor = journal.gap_for(cursor)
            if cursor >= journal.next_seq:
                await journal.wait(cursor, 1.0)
                continue
            data, n, cursor = journal.collect(cursor, flt, 1024, 1 << 20)
            if not n:
                await asyncio.sleep(0)
                continue
            for env in pb.Batch.FromString(data).envelopes:
                try:
                    payload = msgpack.unpackb(env.payload, raw=False)
                except (ValueError, msgpack.ExtraData):
                    continue
                self._envelope(env.topic, env.device_id, payload)

    def _envelope(self, topic: str, device_id: str, payload: dict) -> None:
        family, _, rest = topic.partition("/")
        _, _, channel = rest.partition("/")
        if channel == "fix" and family == "gnss":
            self.view.fixes[device_id] = payload
            return
        if channel == "health":
            if family == "uplink":
                return
            state, previous = payload.get("state"), payload.get("previous")
            on = state in ("ONLINE", "DEGRADED")
            if on != (previous in ("ONLINE", "DEGRADED")):
                self.requests.status_changed(device_id, "ON" if on else "OFF")
                if not on:
                    self.requests.commands.device_gone(device_id)
            return
        if channel == "call" and family == "camera":
            if payload.get("state") == "ended":
                self.requests.commands.call_ended(device_id, str(payload.get("call_id", "")))
            return
        if channel == "alarm" and family == "camera":
            self._alarm(
                device_id,
                payload.get("kind"),
                payload,
                payload.get("method"),
                payload.get("type"),
                payload.get("priority"),
            )
            return
        if channel.startswith("event/") and family == "camera":
            kind = event_kind(channel, payload.get("kind"))
            if kind is not None and payload.get("value") not in (False, 0, "false", "False"):
                self._alarm(device_id, kind, payload, None, None, None)

    def _alarm(self, device_id, kind, payload, method, alarm_type, priority) -> None:
        x = self.view.by_device().get(device_id)
        if x is None:
            self.count("alarms_not_exposed")  # outside `expose`, or a recorder (its channels are exposed)
            return
        method, alarm_type = gb_alarm_of(kind, method, alarm_type)
        info = x.entry.info
        lat, lon = payload.get("lat"), payload.get("lon")
        if lat is None:
            lat, lon = info.get("lat"), info.get("lon")
        lat, lon = self.view.datum(lat, lon)
        t_ns = payload.get("time_ns") or payload.get("utc_ns") or time.time_ns()
        description = payload.get("description") or (kind or "alarm")
        fields = [
            ("AlarmPriority", int(priority) if priority else 3),
            ("AlarmMethod", method),
            ("AlarmTime", manscdp.format_time(int(t_ns))),
            ("AlarmDescription", str(description)[:128]),
            ("Longitude", lon),
            ("Latitude", lat),
            ("Info", {"AlarmType": alarm_type} if alarm_type is not None else None),
        ]
        self.count("alarms")
        self.requests.alarm(x, int(priority) if priority else 3, method, fields)


# ONVIF events worth an alarm upward, by the normalised kind or else the topic's words (onvif-parsers
# calls a tamper alarm `problem` and a line crossing by its entity name)
_EVENT_KINDS = frozenset(
    (
        "motion",
        "tamper",
        "line_crossing",
        "tripwire",
        "intrusion",
        "video_loss",
        "loitering",
        "left_object",
        "object_removed",
        "people_counting",
        "crowd_density",
        "fast_moving",
        "wrong_way",
    )
)
_TOPIC_WORDS = (
    ("Tamper", "tamper"),
    ("LineDetector", "line_crossing"),
    ("LineCrossing", "line_crossing"),
    ("FieldDetector", "intrusion"),
    ("Intrusion", "intrusion"),
    ("Loitering", "loitering"),
    ("VideoLoss", "video_loss"),
    ("SignalLoss", "video_loss"),
    ("Motion", "motion"),
)


def event_kind(channel: str, kind: str | None) -> str | None:
    """The alarm kind of an ONVIF event on `event/<topic path>`, None for events that are no alarm."""
    if kind in _EVENT_KINDS:
        return kind
    for word, name in _TOPIC_WORDS:
        if word in channel:
            return name
    return None
