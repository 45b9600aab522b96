"""The ONVIF camera driver: connect (clock-skew compensation, WS-UsernameToken digest), describe
(device information, profiles, stream URIs into ListDevices), events (PullPoint or a webhook),
commands (PTZ, presets, snapshots, stream URIs).

Built on onvif-zeep-async: its WSDL documents are parsed once per process (in an executor) and
shared by every camera; every call is a coroutine on the gateway's loop, so a camera costs sockets,
not a thread. Every zeep, lxml, aiohttp and onvif exception is turned into the gateway's own errors
here (`_device_error`, `_command_error`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hmac
import math
import random
import secrets
import time
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from functools import partial
from typing import TYPE_CHECKING, Any

from tianwang.drivers.onvif.config import OnvifConfig
from tianwang.drivers.onvif.events import to_publication
from tianwang.drivers.sdk import (
    AuthenticationFailed,
    CommandError,
    DeviceError,
    DeviceTimeout,
    Driver,
    Health,
    describe,
)

if TYPE_CHECKING:
    import aiohttp
    from aiohttp import web

    from tianwang.drivers.sdk import DeviceContext

# a request handler of the webhook server: (request, the secret path part) -> response
NotifyHandler = Callable[["web.Request", str], Awaitable["web.StreamResponse"]]

MAX_SNAPSHOT = 3 * 1024 * 1024  # a reply must stay under gRPC's 4 MiB message limit
MAX_EVENT_TOPICS = 256  # distinct event channels per camera (a hostile camera cannot grow the topic cache)
MAX_PROFILES = 8
MAX_NOTIFY_BYTES = 256 * 1024  # one webhook Notify POST (a camera sends a few messages at a time)
KEEPALIVE_S = 30.0  # a camera without events is asked its time this often (it tells us it is there)
RETRY_MIN_S, RETRY_MAX_S = 2.0, 60.0  # subscription retries after a refusal
_SLOT_WORDS = ("maxnotificationproducers", "maxpullpoints", "slot", "too many", "toomany", "limit", "resource")


def _plain_ip(addr: str) -> str:
    """An address as the webhook compares them: an IPv4 peer on a dual-stack socket as IPv4."""
    import ipaddress

    try:
        ip = ipaddress.ip_address(addr.split("%", 1)[0])
    except ValueError:
        return addr
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


class CameraRefused(DeviceError):
    """The camera answered with a SOAP fault (other than an authentication failure)."""


class AuthFailed(AuthenticationFailed):
    """The camera refused our credentials (or our clock): the supervisor retries in minutes, not
    seconds, so the camera does not lock the user out."""


def _fault_words(exc: BaseException) -> str:
    subcodes = " ".join(getattr(q, "localname", str(q)) for q in (getattr(exc, "subcodes", None) or []))
    return f"{getattr(exc, 'message', '') or exc} {subcodes}".lower()


def _is_auth(exc: BaseException) -> bool:
    from onvif.exceptions import ONVIFAuthError
    from zeep.exceptions import Fault, TransportError

    if isinstance(exc, ONVIFAuthError):
        return True
    if isinstance(exc, TransportError) and getattr(exc, "status_code", 0) in (401, 403):
        return True
    if isinstance(exc, Fault):
        words = _fault_words(exc)
        return "notauthorized" in words or "not authorized" in words or "authority" in words
    return False


def _cause(exc: BaseException) -> BaseException:
    """The library exception under onvif's ONVIFError wrapper (safe_func wraps the original)."""
    from onvif.exceptions import ONVIFError

    if type(exc) is ONVIFError and exc.__cause__ is not None:
        return exc.__cause__
    return exc


_WSDLS_READY = False
_WSDL_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] | None = None
_WSDL_SERVICES = ("devicemgmt", "media", "ptz", "events")  # events.wsdl also holds pullpoint, subscription


async def load_wsdls() -> None:
    """Parse the WSDL documents of the services the driver uses, once per process, before any camera
    connects. onvif-zeep-async caches a parsed document only after it is loaded, so cameras that
    connect at the same moment (a gateway start) would each parse their own copy: hundreds of
    cameras, hundreds of copies of several MB, and as many executor jobs. The parse runs in an
    executor (the library's own loader), never on the loop."""
    global _WSDLS_READY, _WSDL_LOCKS
    if _WSDLS_READY:
        return
    from pathlib import Path

    import onvif
    from onvif import SERVICES, ONVIFService

    if _WSDL_LOCKS is None:
        _WSDL_LOCKS = weakref.WeakKeyDictionary()
    lock = _WSDL_LOCKS.setdefault(asyncio.get_running_loop(), asyncio.Lock())
    async with lock:
        if _WSDLS_READY:
            return
        wsdl_dir = Path(onvif.__file__).parent / "wsdl"
        for name in _WSDL_SERVICES:
            svc = SERVICES[name]
            binding = "{{{}}}{}".format(svc["ns"], svc["binding"])
            service = ONVIFService(
                "http://127.0.0.1:9/", None, None, str(wsdl_dir / svc["wsdl"]), no_cache=True, binding_name=binding
            )
            try:
                await service.setup()
            finally:
                await service.close()
        _WSDLS_READY = True


def _camera_class() -> type[Any]:
    from onvif import ONVIFCamera

    class Camera(ONVIFCamera):
        """ONVIFCamera whose service creation survives the caller's cancellation: the library builds
        a service's HTTP session before it registers the service, so a cancel in between would leak the
        session. Creation finishes in its own task and `close_all()` waits for those first."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.pending: set[asyncio.Future[Any]] = set()

        def _track(self, coro: Awaitable[Any]) -> asyncio.Future[Any]:
            task = asyncio.ensure_future(coro)
            self.pending.add(task)
            task.add_done_callback(self.pending.discard)
            return task

        async def create_onvif_service(self, *args: Any, **kwargs: Any) -> Any:
            return await asyncio.shield(self._track(super().create_onvif_service(*args, **kwargs)))

        async def close_all(self) -> None:
            if self.pending:
                await asyncio.wait(list(self.pending), timeout=0.3)
            await self.close()

    return Camera


class WebhookServer:
    """One HTTP server per listen address and loop, shared by every camera that uses it: a camera
    POSTs its Notify messages to `/<device id>`. Many cameras, one port."""

    _servers: dict[tuple[asyncio.AbstractEventLoop, str], WebhookServer] = {}  # noqa: RUF012 - shared by design

    def __init__(self, listen: str) -> None:
        self.listen = listen
        self.routes: dict[str, NotifyHandler] = {}  # device id -> its Notify handler
        self.runner: web.AppRunner | None = None
        self.port: int | None = None
        self.error = ""
        self.ready = asyncio.Event()

    @classmethod
    async def acquire(cls, listen: str, device_id: str, handler: NotifyHandler) -> WebhookServer:
        """The server on `listen` (started on first use) with `handler` routed for `device_id`.
        Raises DeviceError when the address cannot be bound."""
        from aiohttp import web

        from tianwang.drivers.sdk import parse_hostport

        key = (asyncio.get_running_loop(), listen)
        server = cls._servers.get(key)
        if server is not None:
            await server.ready.wait()  # another camera is starting it
            if server.runner is None:
                raise DeviceError(f"webhook: cannot listen on {listen}: {server.error}")
        else:
            server = cls._servers[key] = cls(listen)
            host, port = parse_hostport(listen)
            # a Notify larger than this is refused (413) before the handler sees it
            app = web.Application(client_max_size=MAX_NOTIFY_BYTES)
            app.router.add_post("/{device_id}/{secret}", server._dispatch)
            runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
            await runner.setup()
            site = web.TCPSite(runner, host, port)
            try:
                await site.start()
            except OSError as exc:
                cls._servers.pop(key, None)
                await runner.cleanup()
                server.error = describe(exc)
                server.ready.set()
                raise DeviceError(f"webhook: cannot listen on {listen}: {server.error}") from None
            server.runner = runner
            # asyncio's or uvloop's server (AbstractServer does not declare `sockets`, both have it)
            sockets = getattr(site._server, "sockets", None)
            server.port = sockets[0].getsockname()[1] if sockets else port
            server.ready.set()
        server.routes[device_id] = handler
        return server

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        handler = self.routes.get(request.match_info["device_id"])
        if handler is None:
            return web.Response(status=404)
        return await handler(request, request.match_info["secret"])

    async def release(self, device_id: str) -> None:
        self.routes.pop(device_id, None)
        if not self.routes and self.runner is not None:
            self._servers.pop((asyncio.get_running_loop(), self.listen), None)
            runner, self.runner = self.runner, None
            await runner.cleanup()


class OnvifDriver(Driver[OnvifConfig]):
    """One camera. `run()` connects and serves events until the link fails; `command()` runs on the
    same ONVIFCamera, concurrently with the event loop."""

    def __init__(self, config: OnvifConfig, ctx: DeviceContext) -> None:
        super().__init__(config, ctx)
        self.cam: Any = None  # the ONVIFCamera (an untyped library's) while connected, else None
        self.profiles: list[str] = []
        self.profile: str | None = None
        self.has_ptz = False
        self.has_events = False
        self.skew_s = 0.0
        self._manager: Any = None  # the library's pullpoint or notification manager, else None
        self._pending_manager: asyncio.Future[Any] | None = None
        self._webhook: WebhookServer | None = None
        self._webhook_secret = ""  # the path part that authenticates the camera's Notify POSTs
        self._camera_addresses: frozenset[str] = frozenset()
        self.webhook_url = ""  # what the camera was told (secret included: never logged or shown)
        self._snapshot_basic = False
        self._http: aiohttp.ClientSession | None = None  # for snapshots, made on first use
        self._event_channels: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.subscriptions = 0  # subscriptions created since start (for tests and counters)
        self.where = f"{config.host}:{config.port}"

    # -- errors ------------------------------------------------------------------------------------
    def _device_error(self, exc: BaseException, what: str) -> Exception:
        """A library exception as the gateway's DeviceError / DeviceTimeout, the reason saying why."""
        import aiohttp
        from onvif.exceptions import ONVIFError, ONVIFTimeoutError
        from zeep.exceptions import Fault, TransportError, XMLParseError, XMLSyntaxError

        exc = _cause(exc)
        if isinstance(exc, (asyncio.TimeoutError, TimeoutError, ONVIFTimeoutError)):
            return DeviceTimeout(f"{what}: no reply from {self.where} within {self.config.timeout_s:g} s")
        if _is_auth(exc):
            hint = ""
            if abs(self.skew_s) > self.config.max_clock_skew_s:
                hint = f" (camera clock skew {self.skew_s:+.0f} s: check its NTP)"
            return AuthFailed(f"{what}: authentication failed for user {self.config.username!r}{hint}")
        if isinstance(exc, (aiohttp.ClientConnectorError, ConnectionError, OSError)):
            return DeviceError(f"{what}: {self.where} unreachable: {describe(exc)}")
        if isinstance(exc, aiohttp.ClientError):
            return DeviceError(f"{what}: HTTP error from {self.where}: {describe(exc)}")
        if isinstance(exc, Fault):
            return CameraRefused(f"{what}: camera refused: {exc.message or exc}")
        if isinstance(exc, TransportError):
            text = str(getattr(exc, "message", "") or exc).splitlines()[0][:200]
            if "xml" in text.lower():  # zeep reports an unparsable body as a transport error
                return DeviceError(f"{what}: malformed reply from {self.where}: {text}")
            return DeviceError(f"{what}: HTTP {exc.status_code} from {self.where}")
        if isinstance(exc, (XMLParseError, XMLSyntaxError)):
            return DeviceError(f"{what}: malformed reply from {self.where}: {describe(exc)}")
        if isinstance(exc, ONVIFError):
            return DeviceError(f"{what}: {exc}")
        return DeviceError(f"{what}: {describe(exc)}")

    def _command_error(self, exc: BaseException, action: str) -> CommandError:
        err = exc if isinstance(exc, DeviceError) else self._device_error(exc, action)
        if isinstance(err, DeviceTimeout):
            return CommandError("TIMEOUT", str(err))
        if isinstance(err, (CameraRefused, AuthFailed)):
            return CommandError("REFUSED", str(err))
        return CommandError("OFFLINE", str(err))

    async def _call(self, coro: Awaitable[Any], what: str, timeout: float | None = None) -> Any:
        """Await one SOAP call with the configured time limit; library errors become DeviceError."""
        try:
            return await asyncio.wait_for(coro, timeout or self.config.timeout_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise self._device_error(exc, what) from None

    # -- lifecycle ---------------------------------------------------------------------------------
    async def run(self) -> None:
        cfg = self.config
        self.ctx.set_info(address=self.where, events=cfg.events)
        await self._close_camera()
        await load_wsdls()
        self.cam = cam = _camera_class()(
            cfg.host, cfg.port, cfg.username, self._password(), no_cache=True, adjust_time=True
        )
        try:
            await self._call(cam.update_xaddrs(), "connect")
        finally:
            if cam.dt_diff is not None:
                self.skew_s = cam.dt_diff.total_seconds()
        await self._describe()
        self._set_online()
        if cfg.events == "off" or not self.has_events:
            await self._keepalive_forever()
        elif cfg.events == "webhook":
            await self._webhook_events()
        else:
            await self._pullpoint_events()

    def _skew_reason(self) -> str | None:
        if abs(self.skew_s) > self.config.max_clock_skew_s:
            return f"camera clock skew {self.skew_s:+.1f} s (compensated; event times are the camera's)"
        return None

    def _password(self) -> str:
        password = self.config.password
        if password is None:  # a required secret: load_config refuses a camera without one
            raise DeviceError("no password configured")
        return password.get_secret_value()

    def _set_online(self, events_problem: str | None = None) -> None:
        reasons = [r for r in (events_problem, self._skew_reason()) if r]
        if reasons:
            self.ctx.set_health(Health.DEGRADED, "; ".join(reasons))
        else:
            self.ctx.set_health(Health.ONLINE, "connected")

    async def _describe(self) -> None:
        """Device information, services, profiles and their stream URIs into ListDevices info."""
        cam = self.cam
        from tianwang.drivers.onvif.soap import NS

        devmgmt = await self._call(cam.create_devicemgmt_service(), "connect")
        info = await self._call(devmgmt.GetDeviceInformation(), "GetDeviceInformation")
        self.has_events = NS["tev"] in cam.xaddrs
        self.has_ptz = NS["tptz"] in cam.xaddrs
        facts = {
            "manufacturer": getattr(info, "Manufacturer", None),
            "model": getattr(info, "Model", None),
            "firmware": getattr(info, "FirmwareVersion", None),
            "serial": getattr(info, "SerialNumber", None),
            "hardware_id": getattr(info, "HardwareId", None),
            "clock_skew_s": f"{self.skew_s:+.1f}",
            "ptz": "yes" if self.has_ptz else "no",
            "events": self.config.events if self.has_events else "unsupported",
        }
        if NS["trt"] in cam.xaddrs:
            media = await self._call(cam.create_media_service(), "connect")
            profiles = await self._call(media.GetProfiles(), "GetProfiles") or []
            self.profiles = [p.token for p in profiles[:MAX_PROFILES] if getattr(p, "token", None)]
            self.profile = (
                self.config.profile
                if self.config.profile in self.profiles
                else (self.profiles[0] if self.profiles else None)
            )
            facts["profiles"] = ",".join(self.profiles)
            facts["profile"] = self.profile or ""
            for token in self.profiles:
                try:
                    facts[f"stream_uri.{token}"] = await self._stream_uri(token)
                except DeviceError as exc:  # a profile without a stream is not a dead camera
                    facts[f"stream_uri.{token}"] = f"unavailable: {exc}"
        else:
            facts["profiles"] = ""
        self.ctx.set_info(**{k: v for k, v in facts.items() if v is not None})

    async def _stream_uri(self, token: str) -> str:
        media = await self._call(self.cam.create_media_service(), "GetStreamUri")
        req = {"StreamSetup": {"Stream": "RTP-Unicast", "Transport": {"Protocol": "RTSP"}}, "ProfileToken": token}
        res = await self._call(media.GetStreamUri(req), "GetStreamUri")
        return str(getattr(res, "Uri", "") or "")

    async def _keepalive(self) -> None:
        dm = await self._call(self.cam.create_devicemgmt_service(), "keepalive")
        await self._call(dm.GetSystemDateAndTime(), "keepalive")
        self.ctx.seen()

    async def _keepalive_forever(self) -> None:
        while True:
            await asyncio.sleep(KEEPALIVE_S)
            await self._keepalive()

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await self._end_subscription()
        if self._webhook is not None:
            server, self._webhook = self._webhook, None
            with contextlib.suppress(Exception):
                await server.release(self.ctx.device_id)
        await self._close_camera()
        http, self._http = self._http, None
        if http is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(http.close(), 1.0)

    async def _close_camera(self) -> None:
        cam, self.cam = self.cam, None
        if cam is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(cam.close_all(), 1.0)

    async def _end_subscription(self) -> None:
        """Unsubscribe (best effort, bounded: the camera may be gone) so the slot is free again."""
        mgr, self._manager = self._manager, None
        pending, self._pending_manager = self._pending_manager, None
        if mgr is None and pending is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                mgr = await asyncio.wait_for(pending, 0.5)
        if mgr is not None:
            # the supervisor gives close() 2 s in all: the Unsubscribe gets 1 s, closing the sockets the rest
            with contextlib.suppress(Exception):
                await asyncio.wait_for(mgr.shutdown(), 1.0)

    # -- events ------------------------------------------------------------------------------------
    def _events_refused(self, exc: BaseException) -> str:
        from zeep.exceptions import Fault

        inner = _cause(exc)
        if isinstance(inner, Fault) and any(w in _fault_words(inner) for w in _SLOT_WORDS):
            self.ctx.count("subscriptions_refused")
            return f"events: no free subscription slot ({inner.message or inner})"
        return f"events: subscription failed: {describe(inner)}"

    async def _subscribe(self, create: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        """Create a subscription with `create()` (a manager factory), retrying with backoff while the
        camera refuses (DEGRADED with the reason meanwhile). Connection failures raise DeviceError."""
        import aiohttp
        from zeep.exceptions import Fault

        delay = RETRY_MIN_S
        while True:
            pending = self.cam._track(create())
            try:
                self._manager = await asyncio.wait_for(asyncio.shield(pending), self.config.timeout_s * 2)
            except asyncio.CancelledError:
                self._pending_manager = pending  # close() unsubscribes it once it is there
                raise
            except TimeoutError as exc:
                pending.cancel()
                raise self._device_error(exc, "events subscription") from None
            except Exception as exc:
                inner = _cause(exc)
                if _is_auth(inner) or not isinstance(inner, Fault):
                    if isinstance(
                        inner, (aiohttp.ClientError, OSError, asyncio.TimeoutError, TimeoutError)
                    ) or _is_auth(inner):
                        raise self._device_error(exc, "events subscription") from None
                self._set_online(self._events_refused(exc))
                await asyncio.sleep(delay)
                await self._keepalive()
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            # the library renews at 80% of max(grant, 60 s): a camera granting less lets that lapse,
            # so its timer is paused and the driver renews from the grant it actually got
            self._manager.pause()
            self.subscriptions += 1
            self.ctx.count("subscriptions")
            self._set_online()
            return

    async def _renew(self, port_type: str) -> Any:
        sub = await self._call(self.cam.create_subscription_service(port_type), "Renew")
        term = self.cam.get_next_termination_time(dt.timedelta(seconds=self.config.subscription_s))
        res = await self._call(sub.Renew(term), "Renew")
        self.ctx.count("renewals")
        return res

    @staticmethod
    def _remaining(res: Any) -> float | None:
        cur, term = getattr(res, "CurrentTime", None), getattr(res, "TerminationTime", None)
        if isinstance(cur, dt.datetime) and isinstance(term, dt.datetime):
            if (cur.tzinfo is None) != (term.tzinfo is None):
                return None
            return (term - cur).total_seconds()
        return None

    async def _publish_messages(self, messages: Iterable[Any] | None) -> int:
        n = 0
        for msg in messages or ():
            pub = await to_publication(msg, self.ctx.device_id)
            if pub is None:
                self.ctx.drop("no_topic")
                continue
            channel, payload = pub
            if channel not in self._event_channels:
                if len(self._event_channels) >= MAX_EVENT_TOPICS:
                    self.ctx.drop("too_many_topics")
                    continue
                try:
                    self.ctx.topic(channel)
                except Exception:
                    self.ctx.drop("bad_topic")
                    continue
                self._event_channels.add(channel)
            self.ctx.publish(channel, payload, payload["utc_ns"] or 0)
            n += 1
        if n:
            self.ctx.count("events", n)
        return n

    async def _pullpoint_events(self) -> None:
        from zeep.exceptions import Fault

        cfg = self.config
        interval = dt.timedelta(seconds=cfg.subscription_s)
        while True:
            await self._subscribe(lambda: self.cam.create_pullpoint_manager(interval, lambda: None))
            service = self._manager.get_service()
            remaining = None
            # renew at 40-60% of the grant: cameras that subscribed together (a gateway start) would
            # otherwise all renew in the same instant, and their events would wait behind the burst
            renew_at = time.monotonic() + cfg.subscription_s * random.uniform(0.4, 0.6)
            while True:
                wait = cfg.pull_timeout_s
                if remaining is not None:  # never poll past the subscription's end
                    wait = max(1.0, min(wait, remaining / 3))
                req = service.create_type("PullMessages")
                req.Timeout = dt.timedelta(seconds=wait)
                req.MessageLimit = cfg.pull_limit
                try:
                    res = await asyncio.wait_for(service.PullMessages(req), wait + cfg.timeout_s)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    inner = _cause(exc)
                    if isinstance(inner, Fault) and not _is_auth(inner):
                        # the camera forgot the subscription: it lapsed, or the camera restarted
                        self.ctx.log.info(
                            "%s: pull point lost (%s): subscribing again", self.ctx.device_id, inner.message or inner
                        )
                        self.ctx.count("resubscriptions")
                        self._manager = None  # nothing to unsubscribe: the camera no longer has it
                        break
                    raise self._device_error(exc, "PullMessages") from None
                self.ctx.seen()
                await self._publish_messages(getattr(res, "NotificationMessage", None))
                left = self._remaining(res)
                if left is not None:
                    remaining = left
                if (
                    remaining is not None and remaining < max(2 * wait + cfg.timeout_s, 5.0)
                ) or time.monotonic() >= renew_at:
                    try:
                        got = await self._renew("PullPointSubscription")
                    except CameraRefused:  # a Fault: the subscription is gone
                        self.ctx.count("resubscriptions")
                        self._manager = None
                        break
                    left = self._remaining(got)
                    remaining = left if left is not None else remaining
                    renew_at = time.monotonic() + (remaining if remaining else cfg.subscription_s) * random.uniform(
                        0.4, 0.6
                    )

    async def _webhook_events(self) -> None:
        cfg = self.config
        hook = cfg.webhook
        listen = hook.listen if hook else "0.0.0.0:0"
        self._webhook = await WebhookServer.acquire(listen, self.ctx.device_id, self._on_notify)
        # only the camera may post: from its own address, to a path nobody else knows
        self._camera_addresses = await self._addresses_of(cfg.host)
        if hook and hook.url:
            base = hook.url
        else:
            host = listen.rpartition(":")[0]  # an IPv6 host keeps its brackets
            if host.strip("[]") in ("0.0.0.0", "::", ""):
                # a wildcard is no address to POST to: tell the camera the address this host
                # reaches it from, and say so
                host = await self._local_address_towards(cfg.host, cfg.port)
                self.ctx.log.info(
                    "%s: webhook.url not set: the camera is told to POST to http://%s:%d/ (the address this host "
                    "reaches it from); set webhook.url when the camera must use another one (NAT)",
                    self.ctx.device_id,
                    host,
                    self._webhook.port,
                )
            base = f"http://{host}:{self._webhook.port}/"
        interval = dt.timedelta(seconds=cfg.subscription_s)
        while True:
            # a new unguessable path for every subscription: a leaked one dies with its subscription
            self._webhook_secret = secrets.token_urlsafe(24)
            url = base.rstrip("/") + f"/{self.ctx.device_id}/{self._webhook_secret}"
            self.webhook_url = url
            self.ctx.set_info(webhook=base.rstrip("/") + f"/{self.ctx.device_id}/***")
            await self._subscribe(partial(self._notification_manager, url, interval))
            remaining = cfg.subscription_s
            while True:
                await asyncio.sleep(max(1.0, remaining * random.uniform(0.4, 0.6)))
                try:
                    got = await self._renew("NotificationConsumer")
                except CameraRefused:  # the camera no longer knows the subscription
                    self.ctx.count("resubscriptions")
                    self._manager = None
                    break
                self.ctx.seen()
                left = self._remaining(got)
                remaining = left if left else cfg.subscription_s

    async def _addresses_of(self, host: str) -> frozenset[str]:
        """The IP addresses `host` stands for (a name is resolved now, as the camera is reached)."""
        import ipaddress
        import socket

        try:
            return frozenset({_plain_ip(str(ipaddress.ip_address(host.strip("[]"))))})
        except ValueError:
            pass
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise DeviceError(f"webhook: cannot resolve {host}: {describe(exc)}") from None
        return frozenset(_plain_ip(str(info[4][0])) for info in infos)

    async def _local_address_towards(self, host: str, port: int) -> str:
        """The local address the route to the camera leaves from (a UDP connect sends nothing)."""
        import socket

        addr = sorted(self._camera_addresses)[0] if self._camera_addresses else host
        family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            try:
                sock.connect((addr, port))
            except OSError as exc:
                raise DeviceError(
                    f"webhook: no route to {host} to tell it where to POST: {describe(exc)}; set webhook.url"
                ) from None
            local = sock.getsockname()[0]
        return f"[{local}]" if ":" in local else local

    def _notification_manager(self, url: str, interval: dt.timedelta) -> Coroutine[Any, Any, Any]:
        return self.cam.create_notification_manager(url, interval, lambda: None)

    async def _on_notify(self, request: web.Request, secret: str) -> web.Response:
        """A Notify POST. Only from the camera's address, on the current subscription's path (else
        404, counted as `webhook_refused`); parsed in a thread (a large one would stall the loop);
        at most `pull_limit` messages published per POST (the rest counted, `too_many_messages`)."""
        from aiohttp import web

        if not (
            secret
            and hmac.compare_digest(secret.encode(), self._webhook_secret.encode())
            and _plain_ip(request.remote or "") in self._camera_addresses
        ):
            self.ctx.drop("webhook_refused")
            return web.Response(status=404)
        body = await request.read()  # at most MAX_NOTIFY_BYTES (aiohttp answers 413 past that)
        mgr = self._manager
        if mgr is None:
            return web.Response(status=503)
        try:
            result = await asyncio.get_running_loop().run_in_executor(None, mgr.process, body)
        except Exception:
            result = None
        if result is None:
            self.ctx.drop("bad_notify")
            return web.Response(status=400)
        self.ctx.seen()
        messages = list(getattr(result, "NotificationMessage", None) or ())
        limit = self.config.pull_limit
        if len(messages) > limit:
            self.ctx.drop("too_many_messages", len(messages) - limit)
            messages = messages[:limit]
        await self._publish_messages(messages)
        return web.Response(status=200)

    # -- commands ----------------------------------------------------------------------------------
    def _profile(self, args: dict[str, Any]) -> str:
        token = args.get("profile") or self.profile
        if not token:
            raise CommandError("UNSUPPORTED", "the camera has no media profile")
        if not isinstance(token, str) or token not in self.profiles:
            raise CommandError("INVALID", f"profile: {token!r} is not one of {', '.join(self.profiles)}")
        return token

    @staticmethod
    def _number(args: dict[str, Any], name: str, lo: float, hi: float, default: float | None = None) -> float:
        v = args.get(name, default)
        if v is None:
            raise CommandError("INVALID", f"{name}: required")
        try:
            v = float(v)
        except (TypeError, ValueError):
            raise CommandError("INVALID", f"{name}: {args.get(name)!r} is not a number") from None
        if not math.isfinite(v) or not lo <= v <= hi:
            raise CommandError("INVALID", f"{name}: {v:g} is outside {lo:g}..{hi:g}")
        return v

    async def _ptz(self, action: str) -> Any:
        if not self.has_ptz:
            raise CommandError("UNSUPPORTED", f"{action}: the camera has no PTZ service")
        return await self._call(self.cam.create_ptz_service(), action)

    async def _position(self, ptz: Any, token: str) -> dict[str, Any]:
        st = await self._call(ptz.GetStatus({"ProfileToken": token}), "GetStatus")
        pos = getattr(st, "Position", None)
        pan_tilt = getattr(pos, "PanTilt", None)
        zoom = getattr(pos, "Zoom", None)
        return {
            "pan": getattr(pan_tilt, "x", None),
            "tilt": getattr(pan_tilt, "y", None),
            "zoom": getattr(zoom, "x", None),
        }

    async def command(self, action: str, args: dict[str, Any], timeout: float) -> dict[str, Any]:
        if self.cam is None:
            raise CommandError("OFFLINE", "not connected to the camera")
        try:
            return await self._command(action, args, timeout)
        except CommandError:
            raise
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise self._command_error(exc, action) from None

    async def _command(self, action: str, args: dict[str, Any], timeout: float) -> dict[str, Any]:
        if action == "stream_uri":
            token = self._profile(args)
            return {"profile": token, "uri": await self._stream_uri(token)}
        if action == "snapshot":
            return await self._snapshot(self._profile(args), timeout)
        token = self._profile(args)
        ptz = await self._ptz(action)
        if action == "ptz_move":
            pan = self._number(args, "pan", -1, 1, 0.0)
            tilt = self._number(args, "tilt", -1, 1, 0.0)
            zoom = self._number(args, "zoom", -1, 1, 0.0)
            duration = self._number(args, "duration_s", 0.05, 60, 1.0)
            if duration > timeout - 0.5:
                raise CommandError(
                    "INVALID", f"duration_s: {duration:g} s does not fit the command timeout ({timeout:g} s)"
                )
            velocity = {"PanTilt": {"x": pan, "y": tilt}, "Zoom": {"x": zoom}}
            await self._call(ptz.ContinuousMove({"ProfileToken": token, "Velocity": velocity}), "ContinuousMove")
            try:
                await asyncio.sleep(duration)
            finally:
                # the stop goes out even when the caller gives up: a camera must not keep turning
                stop = asyncio.ensure_future(self._stop(ptz, token))
                self._tasks.add(stop)
                stop.add_done_callback(self._tasks.discard)
            await stop
            return {"profile": token, "moved_s": duration, **await self._position(ptz, token)}
        if action == "ptz_stop":
            await self._stop(ptz, token)
            return {"profile": token, **await self._position(ptz, token)}
        if action == "ptz_goto":
            target = {}
            if "pan" in args or "tilt" in args:
                target["PanTilt"] = {
                    "x": self._number(args, "pan", -1, 1, 0.0),
                    "y": self._number(args, "tilt", -1, 1, 0.0),
                }
            if "zoom" in args:
                target["Zoom"] = {"x": self._number(args, "zoom", 0, 1)}
            if not target:
                raise CommandError("INVALID", "pan, tilt or zoom: give at least one")
            await self._call(ptz.AbsoluteMove({"ProfileToken": token, "Position": target}), "AbsoluteMove")
            return {"profile": token, **await self._position(ptz, token)}
        if action == "preset_set":
            req = {"ProfileToken": token}
            name = args.get("name")
            if name is not None:
                if not isinstance(name, str) or not 0 < len(name) <= 64:
                    raise CommandError("INVALID", "name: 1-64 characters")
                req["PresetName"] = name
            if args.get("token") is not None:
                req["PresetToken"] = str(args["token"])
            got = await self._call(ptz.SetPreset(req), "SetPreset")
            return {"profile": token, "token": str(got), "name": name}
        if action == "preset_goto":
            preset = args.get("token")
            if not isinstance(preset, (str, int)) or preset == "":
                raise CommandError("INVALID", "token: required (see preset_list)")
            await self._call(ptz.GotoPreset({"ProfileToken": token, "PresetToken": str(preset)}), "GotoPreset")
            return {"profile": token, "token": str(preset), **await self._position(ptz, token)}
        if action == "preset_list":
            presets = await self._call(ptz.GetPresets({"ProfileToken": token}), "GetPresets") or []
            out = []
            for p in presets:
                pos = getattr(p, "PTZPosition", None)
                pt, z = getattr(pos, "PanTilt", None), getattr(pos, "Zoom", None)
                out.append(
                    {
                        "token": getattr(p, "token", None),
                        "name": getattr(p, "Name", None),
                        "pan": getattr(pt, "x", None),
                        "tilt": getattr(pt, "y", None),
                        "zoom": getattr(z, "x", None),
                    }
                )
            return {"profile": token, "presets": out}
        raise CommandError("UNSUPPORTED", f"no action {action!r}")

    async def _stop(self, ptz: Any, token: str) -> None:
        await self._call(ptz.Stop({"ProfileToken": token, "PanTilt": True, "Zoom": True}), "Stop")

    async def _snapshot(self, token: str, timeout: float) -> dict:
        """The JPEG behind GetSnapshotUri, with the HTTP auth the camera asks for: Digest first (the
        ONVIF default), Basic when the camera challenges for it, only over HTTPS or with
        `snapshot_basic_auth` (Basic sends the password itself), and credentials of either kind
        only to the camera's own host (the URI is whatever the camera says). The body is read in
        chunks and given up on as soon as it passes MAX_SNAPSHOT (a declared length over it is
        refused before any is read)."""
        from urllib.parse import urlsplit

        from tianwang.drivers.sdk import redact

        uri = await self._call(self.cam.get_snapshot_uri(token), "GetSnapshotUri")
        if not uri:
            raise CommandError("REFUSED", "snapshot: the camera has no snapshot URI or refused the request")
        parts = urlsplit(uri)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise CommandError("REFUSED", f"snapshot: the camera's snapshot URI {redact(uri)!r} is not http(s)")
        own_host = parts.hostname.lower() == self.config.host.strip("[]").lower()
        basic_allowed = own_host and (parts.scheme == "https" or self.config.snapshot_basic_auth)
        limit = max(1.0, min(timeout, self.config.timeout_s * 3))
        try:
            async with asyncio.timeout(limit):
                basic = self._snapshot_basic and basic_allowed
                status, challenge, image = await self._fetch_snapshot(uri, own_host, basic)
                if status == 401 and basic and "digest" in challenge.lower():
                    basic = False  # Basic worked before; the camera now wants Digest
                    status, challenge, image = await self._fetch_snapshot(uri, own_host, False)
                if status == 401 and not basic and "basic" in challenge.lower() and "digest" not in challenge.lower():
                    if not basic_allowed:
                        why = (
                            f"the snapshot URI's host {parts.hostname} is not the camera's ({self.config.host})"
                            if not own_host
                            else "over plain http the password would cross the network in clear; set "
                            "snapshot_basic_auth: true for this camera to allow it (or give it https)"
                        )
                        raise CommandError("REFUSED", f"snapshot: the camera asks for HTTP Basic auth, not sent: {why}")
                    basic = True
                    status, challenge, image = await self._fetch_snapshot(uri, own_host, True)
        except TimeoutError:
            raise CommandError("TIMEOUT", f"snapshot: no image from {self.where} within {limit:g} s") from None
        if status == 401:
            hint = (
                ""
                if own_host
                else f" (credentials go only to the camera's host {self.config.host}, not {parts.hostname})"
            )
            raise CommandError("REFUSED", f"snapshot: authentication failed ({'Basic' if basic else 'Digest'}){hint}")
        if status >= 300 or image is None:
            raise CommandError("REFUSED", f"snapshot: the camera answered HTTP {status}")
        self._snapshot_basic = basic
        return {
            "profile": token,
            "content_type": "image/jpeg",
            "size": len(image),
            "auth": "basic" if basic else "digest",
            "jpeg": image,
        }

    async def _fetch_snapshot(self, uri: str, credentials: bool, basic: bool) -> tuple[int, str, bytes | None]:
        """(HTTP status, WWW-Authenticate, body or None) of one GET; raises CommandError REFUSED for
        a body over MAX_SNAPSHOT."""
        import aiohttp

        session = self._http_session()
        cfg = self.config
        password = self._password()
        kwargs: dict[str, Any] = {}
        if credentials and basic:
            import base64

            token = base64.b64encode(f"{cfg.username}:{password}".encode()).decode("ascii")
            kwargs["headers"] = {"Authorization": f"Basic {token}"}
        elif credentials:
            kwargs["middlewares"] = (aiohttp.DigestAuthMiddleware(cfg.username, password),)
        async with session.get(uri, allow_redirects=False, **kwargs) as resp:
            if resp.status >= 300:
                return resp.status, resp.headers.get("WWW-Authenticate", ""), None
            declared = resp.content_length
            if declared is not None and declared > MAX_SNAPSHOT:
                resp.close()
                raise CommandError("REFUSED", f"snapshot: {declared} bytes is over the {MAX_SNAPSHOT}-byte limit")
            body = bytearray()
            async for chunk in resp.content.iter_chunked(64 * 1024):
                body += chunk
                if len(body) > MAX_SNAPSHOT:
                    resp.close()  # not a byte more: the rest is never read
                    raise CommandError("REFUSED", f"snapshot: over the {MAX_SNAPSHOT}-byte limit (stopped reading)")
            return resp.status, "", bytes(body)

    def _http_session(self) -> aiohttp.ClientSession:
        """The driver's own HTTP client for snapshots (certificates not verified, as for the
        camera's SOAP calls: cameras carry self-signed ones)."""
        import ssl

        import aiohttp

        if self._http is None or self._http.closed:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            self._http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context, limit=4))
        return self._http
