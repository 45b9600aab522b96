"""After registration: each device is queried (DeviceInfo, Catalog) and subscribed (catalog, alarms,
mobile position), and its subscriptions are kept alive inside their dialogs.

Pacing. A register storm (a city's devices after a restart) is answered at once, but querying
every device at once would send tens of thousands of requests in a second: the devices (and the
network) fall behind, both sides retransmit, and the retransmissions cost more than the work. So
at most `window` devices are being synced at any moment; a device holds its place until its
requests have their final answers and its catalog is in (or stopped coming), and the next device
in the queue starts as soon as one is done. The pace follows how fast the devices answer: fast
devices are synced quickly, slow ones never have more than `window` devices' requests in flight.

A storm is logged as a summary, not a line per device: every `STORM_SUMMARY_S` while devices
register by the hundred or wait to be synced, and once when it is over (`storm_summary`).

A place is never held forever: a request that gets no answer times out (64 x T1), a catalog that
does not start within `catalog_idle_s` of its query being accepted is given up (counter
`sync_catalog_late`: the catalog stays as it was; the `catalog` command asks again), and a device
that goes offline or unregisters gives its place up at once.
"""

from __future__ import annotations

import asyncio
import collections
import time
from functools import partial
from typing import TYPE_CHECKING

from tianwang.drivers.gb28181 import sip
from tianwang.drivers.gb28181.session import local_time_text, next_sn
from tianwang.drivers.sdk import CommandError

if TYPE_CHECKING:
    from tianwang.drivers.gb28181.driver import Gb28181Listener, _Device

MANSCDP = "Application/MANSCDP+xml"
SUBSCRIBE_RETRY_S = 60.0
REFUSED_FOR_GOOD = (403, 404, 405, 488, 489, 501)  # a SUBSCRIBE the device will not take, however often
STORM_SUMMARY_S = 10.0  # a register storm is summed up this often in the log
STORM_MIN = 100  # registrations within one summary period that make a storm


class Sub:
    """One subscription's dialog (RFC 3265): refreshed in the dialog before it runs out."""

    __slots__ = ("name", "event", "call_id", "from_tag", "to_tag", "cseq", "refresh_at", "active", "sn")

    def __init__(self, name: str) -> None:
        self.name = name
        self.event = ""
        self.call_id = ""
        self.from_tag = ""
        self.to_tag: str | None = None
        self.cseq = 0
        self.refresh_at = 0.0
        self.active = False
        self.sn = 0


class _Place:
    """A device being synced: requests without a final answer, and whether its catalog is awaited
    (until `catalog_by` once the device has accepted the query)."""

    __slots__ = ("pending", "catalog", "catalog_by", "started")

    def __init__(self, started: float) -> None:
        self.pending = 0
        self.catalog = False
        self.catalog_by = float("inf")
        self.started = started


class Syncer:
    """The queue of devices to sync, the window of those being synced, and the subscriptions."""

    def __init__(self, lst: Gb28181Listener, window: int) -> None:
        self.lst = lst
        self.window = window
        self.queue: collections.deque[str] = collections.deque()
        self.places: dict[str, _Place] = {}  # device id -> its place in the window
        self._fill_soon = False
        self._filling = False
        self.registered = 0  # registrations since the last summary (the listener counts them here)
        self.synced = 0  # devices whose sync finished since the last summary
        self.storm_min = STORM_MIN
        self.summary_s = STORM_SUMMARY_S
        self._next_summary = 0.0
        self._storm: list[float] = []  # [start, registrations, synced] while a storm lasts

    # -- the window ----------------------------------------------------------------------------
    def queue_sync(self, dev: _Device) -> None:
        """Query and subscribe `dev` once there is room in the window. Started on the next loop
        turn, never inline: the answer to the REGISTER that brought it here goes out first."""
        dev.synced = True
        self.queue.append(dev.id)
        if not self._fill_soon:
            self._fill_soon = True
            self.lst.loop.call_soon(self.fill)

    def fill(self) -> None:
        """Start queued devices while the window has room."""
        self._fill_soon = False
        if self._filling:
            return  # a place freed while filling (a device that could not be sent to): the loop goes on
        self._filling = True
        try:
            lst, places, queue = self.lst, self.places, self.queue
            while queue and len(places) < self.window:
                dev = lst.devices.get(queue.popleft())
                if dev is not None and dev.session.registered and dev.synced:
                    self.start(dev)
        finally:
            self._filling = False

    def forget(self, dev_id: str) -> None:
        """`dev_id` went offline or unregistered: its place goes to the next device."""
        if self.places.pop(dev_id, None) is not None:
            self.fill()

    def tick(self, now: float) -> None:
        """Give up the catalogs that never started; fill the window."""
        late = [dev_id for dev_id, p in self.places.items() if p.catalog and now >= p.catalog_by]
        for dev_id in late:
            place = self.places[dev_id]
            place.catalog = False
            dev = self.lst.devices.get(dev_id)
            if dev is not None:
                dev.ctx.count("sync_catalog_late")
            self._release(dev_id, place)
        if self.queue and len(self.places) < self.window:
            self.fill()

    def catalog_done(self, dev_id: str) -> None:
        """A catalog of `dev_id` completed or stopped short (session Step.catalog_done)."""
        place = self.places.get(dev_id)
        if place is not None and place.catalog:
            place.catalog = False
            self._release(dev_id, place)

    def _release(self, dev_id: str, place: _Place) -> None:
        if place.pending <= 0 and not place.catalog and self.places.get(dev_id) is place:
            del self.places[dev_id]
            self.synced += 1
            self.fill()

    def _track(self, dev_id: str, place: _Place, fut: asyncio.Future | None, catalog: bool = False) -> None:
        if fut is None:
            return
        place.pending += 1
        if catalog:
            place.catalog = True
        fut.add_done_callback(partial(self._answered, dev_id, place, catalog))

    def _answered(self, dev_id: str, place: _Place, catalog: bool, fut: asyncio.Future) -> None:
        place.pending -= 1
        if catalog and place.catalog:
            ok = not fut.cancelled() and fut.exception() is None and fut.result().status < 300
            if ok:
                # accepted: its chunks should start coming now
                place.catalog_by = self.lst.loop.time() + self.lst.config.catalog_idle_s
            else:
                place.catalog = False  # refused or unanswered: no catalog will come
        self._release(dev_id, place)

    def start(self, dev: _Device) -> None:
        """Ask a device that (re)registered for its info and catalog and subscribe as configured."""
        lst = self.lst
        dev.synced = True
        dev.subs.clear()  # a device that registered anew has forgotten its dialogs: new ones
        place = self.places[dev.id] = _Place(lst.loop.time())
        sub = lst.config.subscribe
        self._track(dev.id, place, lst.send_body(dev, dev.session.query("DeviceInfo")))
        if sub.catalog:
            self._track(dev.id, place, lst.send_body(dev, dev.session.query("Catalog")), catalog=True)
            self._track(dev.id, place, self.subscribe(dev, "catalog"))
        if sub.alarm is not None:
            self._track(dev.id, place, self.subscribe(dev, "alarm"))
        if sub.mobile_position is not None:
            self._track(dev.id, place, self.subscribe(dev, "mobile_position"))
        self._release(dev.id, place)  # nothing could be sent (no route): the place is free again

    def storm_summary(self, now: float) -> str | None:
        """A line for the log every STORM_SUMMARY_S while a register storm lasts and one when it is
        over; None otherwise (a city's hourly re-registrations make no storm)."""
        if now < self._next_summary:
            return None
        self._next_summary = now + self.summary_s
        registered, synced = self.registered, self.synced
        self.registered = self.synced = 0
        busy = bool(self.queue) or bool(self.places)
        storm = self._storm
        if registered >= self.storm_min or (storm and busy):
            if not storm:
                storm.extend((now, 0.0, 0.0))
            storm[1] += registered
            storm[2] += synced
            return (
                f"register storm: {registered} registrations in the last {self.summary_s:g} s; {synced} devices "
                f"queried and subscribed, {len(self.places)} being, {len(self.queue)} waiting"
            )
        if storm:
            started, total, done = storm
            storm.clear()
            return (
                f"register storm over: {int(total + registered)} registrations, {int(done + synced)} devices queried "
                f"and subscribed over about {now - started + self.summary_s:.0f} s"
            )
        return None

    # -- subscriptions -------------------------------------------------------------------------
    def _subscription_body(self, dev: _Device, name: str, sn: int) -> tuple[str, bytes]:
        sub = self.lst.config.subscribe
        now_utc = time.time()
        if name == "catalog":
            return f"Catalog;id={sn}", dev.session.build("Query", "Catalog", sn, dev.id, [])
        if name == "alarm":
            a = sub.alarm
            assert a is not None  # subscribed only when configured
            fields = [
                ("StartAlarmPriority", str(a.start_priority)),
                ("EndAlarmPriority", str(a.end_priority)),
                ("AlarmMethod", a.method or "0"),
                ("StartTime", local_time_text(now_utc)),
                ("EndTime", local_time_text(now_utc + sub.expires_s)),
            ]
            return f"presence;id={sn}", dev.session.build("Query", "Alarm", sn, dev.id, fields)
        assert sub.mobile_position is not None  # subscribed only when configured
        fields = [("Interval", str(sub.mobile_position.interval_s))]
        return f"presence;id={sn}", dev.session.build("Query", "MobilePosition", sn, dev.id, fields)

    def subscribe(self, dev: _Device, name: str, expires: int | None = None) -> asyncio.Future | None:
        """SUBSCRIBE (or refresh inside its dialog); the future of its final answer, None when it
        could not be sent (asked again in a minute)."""
        lst = self.lst
        s = dev.subs.get(name)
        if s is None:
            s = dev.subs[name] = Sub(name)
        expires = lst.config.subscribe.expires_s if expires is None else expires
        refresh = s.active and s.to_tag is not None and expires > 0
        if not refresh:
            s.call_id, s.from_tag, s.to_tag, s.cseq = sip.new_call_id(), sip.new_tag(), None, 0
            s.sn = next_sn()
        s.cseq += 1
        event, body = self._subscription_body(dev, name, s.sn)
        s.event = event
        headers = [("Event", event), ("Expires", str(expires))]
        if expires:
            headers.append(("Subscription-State", f"active;expires={expires}"))
        s.refresh_at = lst.loop.time() + SUBSCRIBE_RETRY_S  # until the answer says otherwise
        try:
            _req, fut = lst.request(
                dev,
                "SUBSCRIBE",
                dev.id,
                body=body,
                content_type=MANSCDP,
                headers=headers,
                call_id=s.call_id,
                from_tag=s.from_tag,
                to_tag=s.to_tag,
                cseq=s.cseq,
            )
        except CommandError:
            return None
        if expires:
            fut.add_done_callback(partial(self._subscribed, dev, s, s.call_id))
        return fut

    def _subscribed(self, dev: _Device, s: Sub, call_id: str, fut: asyncio.Future) -> None:
        if call_id != s.call_id:
            return  # an answer in a dialog given up meanwhile (the device ended it)
        if fut.cancelled() or fut.exception() is not None:
            s.active = False
            dev.ctx.count("subscriptions_failed")
            return
        resp = fut.result()
        now = self.lst.loop.time()
        if resp.status >= 300:
            s.active = False
            dev.ctx.count("subscriptions_failed")
            s.to_tag = None  # a new dialog next time
            if resp.status in REFUSED_FOR_GOOD:
                # the device does not do this subscription (an NVR asked for positions): asked
                # again at its next registration only, not every minute
                dev.ctx.count(f"subscription_refused_{s.name}")
                s.refresh_at = float("inf")
            else:
                s.refresh_at = now + SUBSCRIBE_RETRY_S
            return
        s.active = True
        s.to_tag = resp.to.tag or s.to_tag
        try:
            granted = resp.int_header("Expires")
        except sip.SipError:
            granted = None
        granted = granted or self.lst.config.subscribe.expires_s
        s.refresh_at = now + max(1.0, granted * 0.8)  # before it runs out, as granted
        dev.ctx.count(f"subscribed_{s.name}")

    def subscription_ended(self, dev: _Device, req: sip.SipRequest) -> None:
        """A NOTIFY with `Subscription-State: terminated`: subscribed again shortly."""
        call_id = req.call_id
        for s in dev.subs.values():
            if s.call_id == call_id:
                s.active = False
                s.to_tag = None
                s.call_id = ""  # a refresh still on its way belongs to the old dialog
                s.refresh_at = self.lst.loop.time() + 1.0
                dev.ctx.count("subscriptions_terminated")

    def refresh_due(self, dev: _Device, now: float) -> None:
        for s in list(dev.subs.values()):
            if now >= s.refresh_at:
                self.subscribe(dev, s.name)
