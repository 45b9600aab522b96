"""Device lifecycle: one task per configured device (or listener), health, backoff, reload.

Each device runs in its own task: the driver's `run()` connects and reads; when it fails the
supervisor reports OFFLINE with the reason, waits (exponential backoff with full jitter, reset
after a stable connection) and runs it again. Health changes are published on
`<family>/<id>/health`. Listener drivers (JT/T 808) register the devices that dial in as children,
which appear in ListDevices like any other device and take commands through the listener.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

from tianwang.gateway.errors import AuthenticationFailed, CommandError, DriverError, FrameError, describe, redact
from tianwang.gateway.lifecycle.driver import Driver, DriverSpec, Health

if TYPE_CHECKING:  # at run time these come with the config and the wiring in app.py
    from pydantic import SecretStr

    from tianwang.gateway.datapath.router import Router
    from tianwang.gateway.lifecycle.config import Config, DeviceConfig
    from tianwang.gateway.lifecycle.registry import Registry

log = logging.getLogger("tianwang.supervisor")

# A connection that stayed up this long resets the backoff to its initial delay.
STABLE_AFTER_S = 30.0
# How long a driver gets to close its transport on stop/removal before it is abandoned.
CLOSE_TIMEOUT_S = 2.0
# After the device refused the gateway's credentials, the next attempt waits this long (unless a
# reload comes first): cameras lock the user, or the client's address, after 5-7 failures within
# a window of minutes, which also locks out the NVR using that user. Two attempts per half hour.
AUTH_RETRY_S = 900.0
AUTH_REASON = "authentication failed: fix the password and reload"
# While it waits, a device whose secret comes from a `<name>_file` looks at the file this often: a
# changed secret is tried at once, reload or not.
SECRET_POLL_S = 2.0
DISABLED_REASON = "disabled in config (enabled: false)"
# Config keys that do not touch the link: a change of only these applies without a restart.
NO_RESTART_KEYS = ("labels", "backoff")

CommandHandler = Callable[[str, dict, float], Awaitable[dict]]


class DeviceEntry:
    """One row of ListDevices: a configured device, a listener, or a device that dialled in."""

    __slots__ = (
        "id",
        "family",
        "driver",
        "state",
        "reason",
        "last_seen_ns",
        "info",
        "_counters",
        "count_on_read",
        "parent",
        "command",
        "spec",
        "envelopes",
        "failed",
        "ctx",
        "connected",
    )

    def __init__(self, id: str, family: str, driver: str, spec: DriverSpec | None, parent: str = "") -> None:
        self.id = id
        self.family = family
        self.driver = driver
        self.spec = spec
        self.state = Health.OFFLINE
        self.reason = "not started"
        self.last_seen_ns = 0
        self.info: dict[str, str] = {}
        self._counters: dict[str, int] = {}
        # the driver's hook that brings counters it keeps itself up to date (DeviceContext.count_on_read)
        self.count_on_read: Callable[[], None] | None = None
        self.parent = parent
        self.command: CommandHandler | None = None
        self.envelopes = 0
        self.failed = False  # its driver could not be started (the reason says why)
        self.ctx: DeviceContext | None = None  # the context its driver talks through
        self.connected = False  # this run of its driver reached ONLINE or DEGRADED

    @property
    def counters(self) -> dict[str, int]:
        """Its counters, brought up to date first by the driver's `count_on_read` hook, if any."""
        hook = self.count_on_read
        if hook is not None:
            try:
                hook()
            except Exception:  # a driver's bug costs its counters a refresh, not the caller its answer
                log.exception("%s: counting on read failed", self.id)
        return self._counters


class DeviceContext:
    """What a driver sees of the gateway: publish readings, report health, count drops.

    Topics are `<family>/<device_id>/<channel>`; the topic strings are built once per channel.

    `tap` is None unless someone records the device (`tianwang record`, the Record RPC): a driver
    whose spec says `recordable` hands the bytes its transport reads, and those it writes, to it:

        tap = ctx.tap
        if tap is not None:
            tap(data)              # received from the device
            tap(frame, sent=True)  # written to the device

    so a device nobody records costs one attribute load and a None check per read.
    """

    def __init__(self, supervisor: Supervisor, entry: DeviceEntry, config: Any = None):
        self._sup = supervisor
        self._entry = entry
        entry.ctx = self
        # the raw bytes of the device's transport, while a recording runs (drivers call it when set)
        self.tap: Callable[..., None] | None = None
        self._recordings: list = []
        self._publish = supervisor.router.publish
        self._topics: dict[str, str] = {}
        self._children: dict[str, DeviceContext] = {}
        self._last_failure: str | None = None  # the reason of the last OFFLINE, until ONLINE again
        self.config = config
        self.device_id = entry.id
        self.family = entry.family
        self.driver_name = entry.driver
        self.log = logging.getLogger(f"tianwang.driver.{entry.driver}")

    # -- readings ------------------------------------------------------------------------------
    def topic(self, channel: str) -> str:
        t = self._topics.get(channel)
        if t is None:
            from tianwang.gateway.framing import validate_topic

            t = f"{self.family}/{self.device_id}/{channel}"
            validate_topic(t)
            self._topics[channel] = t = sys.intern(t)
        return t

    def publish(self, channel: str, payload: dict, device_time_ns: int = 0) -> int:
        """Route one reading on `<family>/<id>/<channel>`; return its seq (0 if it was refused)."""
        topic = self._topics.get(channel) or self.topic(channel)
        entry = self._entry
        entry.last_seen_ns = time.time_ns()
        entry.envelopes += 1
        try:  # inline, not through _route: this runs for every reading of every device
            return self._publish(topic, entry.id, payload, device_time_ns)
        except FrameError as exc:
            entry.envelopes -= 1
            self._refused(entry, exc)
            return 0

    def publish_in(self, family: str, channel: str, payload: dict, device_time_ns: int = 0) -> int:
        """Route one reading on `<family>/<id>/<channel>` of another family than the driver's: a
        GB/T 28181 camera (family `camera`) publishes its positions on `gnss/<id>/fix`, beside every
        other fix. Returns its seq (0 if it was refused)."""
        if family == self.family:
            return self.publish(channel, payload, device_time_ns)
        key = f"{family}\0{channel}"
        topic = self._topics.get(key)
        if topic is None:
            from tianwang.gateway.framing import validate_topic

            topic = f"{family}/{self.device_id}/{channel}"
            validate_topic(topic)
            self._topics[key] = topic = sys.intern(topic)
        entry = self._entry
        entry.last_seen_ns = time.time_ns()
        entry.envelopes += 1
        try:
            return self._publish(topic, entry.id, payload, device_time_ns)
        except FrameError as exc:
            entry.envelopes -= 1
            self._refused(entry, exc)
            return 0

    def _route(self, topic: str, entry: DeviceEntry, payload: dict[str, Any], device_time_ns: int) -> int:
        """Publish without counting it as the device's data (the gateway's health words)."""
        try:
            return self._publish(topic, entry.id, payload, device_time_ns)
        except FrameError as exc:
            self._refused(entry, exc)
            return 0

    def _refused(self, entry: DeviceEntry, exc: FrameError) -> None:
        # a durable journal that cannot write refuses readings (its error is the cause)
        self.drop("journal_unwritable" if type(exc.__cause__).__name__ == "JournalUnwritable" else "unencodable")
        self.log.error("%s: reading refused: %s", entry.id, exc)

    # -- raw bytes (tianwang record) -------------------------------------------------------------
    def add_recording(self, recording: Any) -> None:
        """Start handing this device's raw bytes to `recording` (an object with
        add(t_ns, sent, data)); `tap` stays None while nobody records."""
        self._recordings.append(recording)
        self.tap = self._tap

    def remove_recording(self, recording: Any) -> None:
        try:
            self._recordings.remove(recording)
        except ValueError:
            return
        if not self._recordings:
            self.tap = None

    def _tap(self, data: bytes | bytearray | memoryview, sent: bool = False) -> None:
        if data:
            t_ns = time.time_ns()
            for r in self._recordings:
                r.add(t_ns, sent, bytes(data))

    def seen(self) -> None:
        """Mark the device as heard from now (bytes arrived, even if no reading came of them)."""
        self._entry.last_seen_ns = time.time_ns()

    # -- state ---------------------------------------------------------------------------------
    @property
    def health(self) -> Health:
        return self._entry.state

    def set_health(self, state: Health, reason: str = "") -> None:
        """Report health; a change is published on `<family>/<id>/health`."""
        entry = self._entry
        state = Health(state)
        reason = redact(reason)  # a reason may quote a URL the device or config gave, credentials and all
        if state == entry.state and reason == entry.reason:
            return
        previous = entry.state
        entry.state = state
        entry.reason = reason
        if state != previous:
            if entry.parent:
                # terminals come and go by the thousand; their changes are on the health topic
                level = logging.DEBUG
            elif state == Health.CONNECTING and previous == Health.OFFLINE and self._last_failure is not None:
                level = logging.DEBUG  # a retry of a device that is down: its failure was logged
            elif state == Health.OFFLINE and reason == self._last_failure:
                level = logging.DEBUG  # the same failure again: logged once, not at every retry
            elif state == Health.OFFLINE and (self._sup._stopped or self._sup.stopping):
                level = logging.INFO  # the gateway is stopping: every device goes, and that is no fault
            else:
                level = logging.INFO if state in (Health.ONLINE, Health.CONNECTING) else logging.WARNING
            if state == Health.OFFLINE:
                self._last_failure = reason
            elif state == Health.ONLINE:
                self._last_failure = None
            if state in (Health.ONLINE, Health.DEGRADED):
                entry.connected = True
            self.log.log(
                level, "%s: %s -> %s%s", entry.id, previous.value, state.value, f" ({reason})" if reason else ""
            )
            # the gateway's own words about the device: routed, but neither "seen" nor counted as
            # the device's envelopes (a device that never connected shows never / 0)
            self._route(
                self.topic("health"), entry, {"state": state.value, "previous": previous.value, "reason": reason}, 0
            )

    def count(self, name: str, n: int = 1) -> None:
        """Add to a per-device counter (shown in ListDevices)."""
        c = self._entry._counters
        c[name] = c.get(name, 0) + n

    def count_on_read(self, hook: Callable[[], None] | None) -> None:
        """`hook` brings up to date, through `count`, counters the driver keeps totals of itself;
        the gateway calls it whenever it is about to show the device's counters (ListDevices,
        `tianwang devices`), so nothing needs counting on the path of every reading. A new hook (or
        None) replaces the old one, which is called a last time first: nothing it held is lost."""
        entry = self._entry
        _ = entry.counters  # the old hook's last call
        entry.count_on_read = hook

    def drop(self, reason: str, n: int = 1) -> None:
        """Count frames dropped for `reason` (tianwang_frames_dropped_total{driver,reason})."""
        if n <= 0:
            return
        self.count(f"dropped_{reason}", n)
        self._sup.count_drop(self.driver_name, reason, n)

    def set_info(self, **info: Any) -> None:
        """Static facts for ListDevices (firmware, serial number, address...)."""
        self._entry.info.update({k: redact(str(v)) for k, v in info.items()})

    # -- listener children ---------------------------------------------------------------------
    def child(
        self, device_id: str, *, info: dict | None = None, command: CommandHandler | None = None
    ) -> DeviceContext:
        """Register (or return) a device that dialled into this listener. Raises ValueError for an
        id that cannot be a topic level or that collides with a configured device."""
        ctx = self._children.get(device_id)
        if ctx is not None:
            if command is not None:
                ctx._entry.command = command
            if info:
                ctx.set_info(**info)
            return ctx
        entry = self._sup.add_child(self._entry, device_id)
        entry.command = command
        ctx = DeviceContext(self._sup, entry, self.config)
        ctx.log = self.log
        if info:
            ctx.set_info(**info)
        self._children[device_id] = ctx
        return ctx

    def remove_child(self, device_id: str) -> None:
        """Forget a child entirely (it disappears from ListDevices)."""
        ctx = self._children.pop(device_id, None)
        if ctx is not None:
            self._sup.remove_entry(device_id, self._entry.id)

    def children(self) -> dict[str, DeviceContext]:
        return dict(self._children)


def backoff_delays(
    initial: float, maximum: float, factor: float, rng: Callable[[], float] = random.random
) -> Iterator[float]:
    """Exponential backoff with full jitter: attempt k waits uniform(initial/2, min(max, initial*factor^k))."""
    attempt = 0
    while True:
        ceiling = min(maximum, initial * (factor**attempt))
        yield initial / 2 + rng() * max(0.0, ceiling - initial / 2)
        if initial * (factor**attempt) < maximum:
            attempt += 1


class _Running:
    __slots__ = ("config", "spec", "task", "driver", "ctx", "retry_now")

    def __init__(
        self,
        config: DeviceConfig,
        spec: DriverSpec,
        task: asyncio.Task[None],
        driver: Driver[Any],
        ctx: DeviceContext,
    ) -> None:
        self.config = config
        self.spec = spec
        self.task = task
        self.driver = driver
        self.ctx = ctx
        # set by a reload: a device waiting out an authentication failure tries again at once
        self.retry_now = asyncio.Event()


def changed_secrets(config: DeviceConfig) -> dict[str, SecretStr]:
    """{name: SecretStr} for each secret of `config` given as `<name>_file` whose file now holds
    another value (unreadable or empty files are left for the next reload to report)."""
    from pydantic import SecretStr

    out: dict[str, SecretStr] = {}
    for name in getattr(config, "__secrets__", ()):
        path = getattr(config, f"{name}_file", None)
        current = getattr(config, name, None)
        if not path or current is None:
            continue
        try:
            with open(path, encoding="utf-8") as f:
                value = f.read().rstrip("\r\n")
        except OSError:
            continue
        if value and value != current.get_secret_value():
            out[name] = SecretStr(value)
    return out


def only_no_restart_keys_differ(old: DeviceConfig, new: DeviceConfig) -> bool:
    """True when `old` and `new` (device configs) differ only in keys that do not touch the link
    (NO_RESTART_KEYS): labels, backoff."""
    if type(old) is not type(new):
        return False
    return old.model_copy(update={k: getattr(new, k) for k in NO_RESTART_KEYS}) == new


class Supervisor:
    """Starts, restarts and stops device drivers; keeps the device table; routes commands."""

    def __init__(self, registry: Registry, router: Router) -> None:
        self.registry = registry
        self.router = router
        self.entries: dict[str, DeviceEntry] = {}
        self._running: dict[str, _Running] = {}
        self.drops: dict[tuple[str, str], int] = {}
        self.restarts = 0  # every run that ended and was retried: link drops + failed attempts
        # (driver, device) -> runs that ended after the device had been ONLINE or DEGRADED (a link
        # that dropped) / runs that never got there (a device that cannot be reached or refused us)
        self.link_drops: dict[tuple[str, str], int] = {}
        self.failed_attempts: dict[tuple[str, str], int] = {}
        self.retired_envelopes: dict[str, int] = {}  # family -> envelopes of entries no longer listed
        # apply() and stop_all() one at a time: two overlapping reloads must not start a device
        # twice (the second start would leave a driver that nothing tracks or stops)
        self._apply_lock = asyncio.Lock()
        self._stopped = False
        # set by the gateway when it begins to stop, before the parts that go ahead of the devices
        # (uplinks): what goes OFFLINE from then on is no fault
        self.stopping = False

    # -- table ---------------------------------------------------------------------------------
    def count_drop(self, driver: str, reason: str, n: int) -> None:
        key = (driver, reason)
        self.drops[key] = self.drops.get(key, 0) + n

    def add_child(self, parent: DeviceEntry, device_id: str) -> DeviceEntry:
        existing = self.entries.get(device_id)
        if existing is not None:
            if existing.parent == parent.id:
                return existing
            raise ValueError(f"device id {device_id!r} already belongs to {existing.parent or 'the config'}")
        from tianwang.gateway.lifecycle.config import DEVICE_ID_RE

        if not DEVICE_ID_RE.match(device_id):
            raise ValueError(f"device id {device_id!r} cannot be a topic level")
        entry = DeviceEntry(device_id, parent.family, parent.driver, parent.spec, parent=parent.id)
        entry.reason = "registered"
        self.entries[device_id] = entry
        return entry

    def remove_entry(self, device_id: str, parent: str = "") -> None:
        entry = self.entries.get(device_id)
        if entry is not None and entry.parent == parent:
            self._retire(self.entries.pop(device_id))

    def _retire(self, entry: DeviceEntry | None) -> None:
        """An entry leaves the table: its envelopes stay in its family's total, so the totals
        (Stats.families, tianwang_envelopes_total) never go backwards."""
        if entry is not None and entry.envelopes:
            self.retired_envelopes[entry.family] = self.retired_envelopes.get(entry.family, 0) + entry.envelopes
            entry.envelopes = 0

    def family_envelopes(self) -> dict[str, int]:
        """Envelopes routed per family since the gateway started, devices gone or restarted included."""
        out = dict(self.retired_envelopes)
        for e in self.entries.values():
            out[e.family] = out.get(e.family, 0) + e.envelopes
        return out

    def list_devices(self, family: str = "") -> list[DeviceEntry]:
        return [e for e in self.entries.values() if not family or e.family == family]

    # -- lifecycle -----------------------------------------------------------------------------
    async def apply(self, config: Config) -> dict[str, list[str]]:
        """Bring the running devices in line with `config`: start new ones, stop removed ones,
        restart changed ones, leave the rest alone. Returns {"started", "stopped", "restarted",
        "failed"}.

        Calls are serialized. A device whose driver fails to start does not stop the others: it
        stays in the table, OFFLINE with the reason, and is listed under "failed"; the next apply
        tries it again.
        """
        async with self._apply_lock:
            result: dict[str, list[str]] = {"started": [], "stopped": [], "restarted": [], "failed": []}
            if self._stopped:
                return result
            wanted = {d.id: d for d in config.all_devices() if d.enabled}
            disabled = {d.id: d for d in config.all_devices() if not d.enabled}
            for dev_id in [i for i in self._running if i not in wanted]:
                await self._stop(dev_id, DISABLED_REASON if dev_id in disabled else "removed from config")
                result["stopped"].append(dev_id)
            for dev_id in [
                i
                for i, e in self.entries.items()
                if (e.failed or e.state == Health.DISABLED) and i not in wanted and i not in disabled
            ]:
                self._retire(self.entries.pop(dev_id, None))
            for dev in disabled.values():
                self._list_disabled(dev)
            for dev_id, dev in wanted.items():
                running = self._running.get(dev_id)
                if running is not None and running.config == dev:
                    running.retry_now.set()  # a reload retries a device that waits out a refused login
                    continue
                if running is not None and only_no_restart_keys_differ(running.config, dev):
                    self._update_in_place(running, dev)
                    result.setdefault("updated", []).append(dev_id)
                    continue
                if running is not None:
                    await self._stop(dev_id, "config changed")
                    result["restarted"].append(dev_id)
                else:
                    result["started"].append(dev_id)
                try:
                    self._start(dev)
                except DriverError as exc:
                    log.error("%s", exc)
                    result["failed"].append(dev_id)
                    entry = self.entries.get(dev_id)
                    if entry is not None:
                        entry.failed = True
                        entry.state = Health.OFFLINE
                        entry.reason = redact(str(exc))
            return result

    def _list_disabled(self, dev: DeviceConfig) -> None:
        """`enabled: false`: the device stays in the table, DISABLED, with the reason; nothing runs."""
        spec = self.registry.get(dev.driver)
        existing = self.entries.get(dev.id)
        if existing is not None and existing.parent:
            self._retire(self.entries.pop(dev.id))
            existing = None
        if existing is None or existing.state != Health.DISABLED:
            self._retire(existing)
            entry = DeviceEntry(dev.id, spec.family if spec else "", dev.driver, spec)
            self.entries[dev.id] = entry
        entry = self.entries[dev.id]
        entry.state = Health.DISABLED
        entry.reason = DISABLED_REASON
        entry.info = {k: str(v) for k, v in dev.labels.items()}

    def _update_in_place(self, running: _Running, dev: DeviceConfig) -> None:
        """A change that does not touch the link (labels, backoff): applied to the running device,
        which keeps its connection."""
        entry = self.entries.get(dev.id)
        if entry is not None:
            for key in running.config.labels:
                if key not in dev.labels:
                    entry.info.pop(key, None)
            entry.info.update({k: str(v) for k, v in dev.labels.items()})
        running.config = dev
        running.ctx.config = dev
        running.driver.config = dev
        log.info("%s: labels or backoff changed: applied without a restart", dev.id)

    def _start(self, dev: DeviceConfig) -> None:
        spec: DriverSpec = self.registry.require(dev.driver)
        clash = self.entries.get(dev.id)
        if clash is not None and clash.parent:
            # a terminal that dialled in earlier under this id gives way to the configured device
            self._retire(self.entries.pop(dev.id))
        self._retire(self.entries.get(dev.id))  # a failed start's row, replaced
        entry = DeviceEntry(dev.id, spec.family, spec.name, spec)
        entry.info.update({k: str(v) for k, v in dev.labels.items()})
        self.entries[dev.id] = entry
        ctx = DeviceContext(self, entry, dev)
        try:
            driver = spec.factory(dev, ctx)
        except Exception as exc:
            raise DriverError(f"{dev.id}: driver {spec.name!r} failed to start: {exc}") from exc
        if not isinstance(driver, Driver):
            raise DriverError(f"{dev.id}: driver {spec.name!r} factory returned {type(driver).__name__}")
        entry.command = driver.command
        task = asyncio.get_running_loop().create_task(self._supervise(dev, ctx, driver), name=f"device:{dev.id}")
        self._running[dev.id] = _Running(dev, spec, task, driver, ctx)

    async def _supervise(self, dev: DeviceConfig, ctx: DeviceContext, driver: Driver[Any]) -> None:
        backoff = ctx.config.backoff if ctx.config is not None else dev.backoff
        delays = backoff_delays(backoff.initial_s, backoff.max_s, backoff.factor)
        reason = "starting"
        entry = ctx._entry
        while True:
            ctx.set_health(Health.CONNECTING, reason)
            started = time.monotonic()
            entry.connected = False
            refused_login = False
            try:
                await driver.run()
                reason = "connection closed"
            except asyncio.CancelledError:
                raise
            except AuthenticationFailed as exc:
                refused_login = True
                reason = f"{AUTH_REASON}; next attempt in {AUTH_RETRY_S / 60:g} min ({exc})"
            except Exception as exc:  # whatever a driver raises, the device is retried
                reason = describe(exc)
                if not isinstance(exc, (ConnectionError, TimeoutError, OSError, FrameError)):
                    ctx.log.exception("%s: driver failed", dev.id)
            await self._close(driver, dev.id)
            ctx.set_health(Health.OFFLINE, reason)
            self.restarts += 1
            key = (ctx.driver_name, dev.id)
            if entry.connected:
                self.link_drops[key] = self.link_drops.get(key, 0) + 1
                ctx.count("link_drops")
            else:
                self.failed_attempts[key] = self.failed_attempts.get(key, 0) + 1
                ctx.count("failed_attempts")
            if refused_login:
                ctx.count("auth_failures")
            now_backoff = ctx.config.backoff if ctx.config is not None else dev.backoff  # a reload may change it
            if time.monotonic() - started >= STABLE_AFTER_S or now_backoff != backoff:
                backoff = now_backoff
                delays = backoff_delays(backoff.initial_s, backoff.max_s, backoff.factor)
            delay = next(delays)
            ctx.count("reconnects")
            if refused_login:
                await self._wait_for_retry(dev.id, AUTH_RETRY_S)
                delays = backoff_delays(backoff.initial_s, backoff.max_s, backoff.factor)
                reason = "retrying after an authentication failure"
                continue
            await asyncio.sleep(delay)
            reason = f"retrying after {reason}"

    async def _wait_for_retry(self, dev_id: str, timeout: float) -> None:
        """Wait `timeout` seconds, or until a reload asks for a retry (`_Running.retry_now`), or
        until a secret file of the device holds another secret (taken into its config)."""
        running = self._running.get(dev_id)
        if running is None:
            await asyncio.sleep(timeout)
            return
        running.retry_now.clear()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (left := deadline - loop.time()) > 0:
            try:
                await asyncio.wait_for(running.retry_now.wait(), min(left, SECRET_POLL_S))
                return
            except TimeoutError:
                pass
            changed = changed_secrets(running.config)
            if changed:
                dev = running.config.model_copy(update=changed)
                running.config = running.ctx.config = running.driver.config = dev
                log.info("%s: %s changed in its file: trying again", dev_id, ", ".join(sorted(changed)))
                return

    async def _close(self, driver: Driver, dev_id: str) -> None:
        try:
            await asyncio.wait_for(driver.close(), CLOSE_TIMEOUT_S)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("%s: close failed: %s", dev_id, describe(exc))

    async def _stop(self, dev_id: str, reason: str) -> None:
        running = self._running.pop(dev_id, None)
        if running is None:
            return
        running.task.cancel()
        try:
            await running.task
        except asyncio.CancelledError:
            pass
        except Exception as exc:
            log.warning("%s: task ended with %s", dev_id, describe(exc))
        await self._close(running.driver, dev_id)
        for child_id, child in running.ctx.children().items():  # a copy: remove_child edits the original
            child.set_health(Health.OFFLINE, f"listener {dev_id} stopped")
            running.ctx.remove_child(child_id)
        running.ctx.set_health(Health.OFFLINE, reason)
        self._retire(self.entries.pop(dev_id, None))

    async def stop_all(self, reason: str = "gateway stopping") -> None:
        """Stop every device concurrently (drivers close their ports and unsubscribe); a reload
        that comes later starts nothing."""
        async with self._apply_lock:
            self._stopped = True
            await asyncio.gather(*(self._stop(i, reason) for i in list(self._running)), return_exceptions=True)

    # -- commands ------------------------------------------------------------------------------
    def lookup(self, device_id: str) -> DeviceEntry | None:
        return self.entries.get(device_id)

    async def send_command(self, device_id: str, action: str, args: dict, timeout: float) -> dict:
        """Run `action` on the device; return its result map. Raises KeyError for an unknown
        device and CommandError (code OFFLINE, UNSUPPORTED, TIMEOUT, REFUSED, FAILED...) otherwise."""
        entry = self.entries[device_id]
        if entry.state == Health.DISABLED:
            raise CommandError("OFFLINE", f"{device_id} is {entry.reason}")
        if entry.command is None:
            raise CommandError("UNSUPPORTED", f"{device_id} takes no commands")
        if entry.state == Health.OFFLINE or entry.state == Health.CONNECTING:
            raise CommandError("OFFLINE", f"{device_id} is {entry.state.value}: {entry.reason}")
        try:
            result = await asyncio.wait_for(entry.command(action, args, timeout), timeout)
        except TimeoutError:
            raise CommandError("TIMEOUT", f"{device_id} did not answer {action} within {timeout:g} s") from None
        except CommandError:
            raise
        except (ConnectionError, OSError) as exc:
            raise CommandError("OFFLINE", f"{device_id}: {describe(exc)}") from exc
        return result if isinstance(result, dict) else {"value": result}


__all__ = [
    "DeviceContext",
    "DeviceEntry",
    "Supervisor",
    "backoff_delays",
]
