"""A simulated ONVIF camera (`tianwang simulate onvif`): an aiohttp HTTP SOAP device that an
independent ONVIF client (onvif-zeep-async, ONVIF Device Manager...) accepts.

Served: device management (GetSystemDateAndTime, GetServices, GetCapabilities,
GetDeviceInformation), media (GetProfiles, GetStreamUri, GetSnapshotUri and a JPEG behind HTTP
Digest or Basic), PTZ (ContinuousMove, Stop, AbsoluteMove, GetStatus, SetPreset, GotoPreset,
GetPresets, RemovePreset: moves change a real position, presets persist) and events
(CreatePullPointSubscription, PullMessages long poll, Renew, Unsubscribe, SetSynchronizationPoint,
Subscribe + Notify POSTs to a consumer) generating motion, tamper and line-crossing events at a set
rate, plus WS-Discovery answers over UDP.

It checks WS-UsernameToken digests, rejects requests whose `Created` is off its own clock, and
reproduces the field failures on demand: a skewed clock (`clock_offset_s`), short subscription
grants (`max_grant_s`), few subscription slots (`slots`), restarts (`restart()`), slow replies
(`delay_s`), no event service (`events=False`).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import dataclasses
import datetime as dt
import hashlib
import itertools
import json
import logging
import math
import os
import random
import secrets
import struct
import sys
import time
import uuid

from tianwang.drivers.onvif import soap
from tianwang.drivers.onvif.soap import NS, SoapError, x

log = logging.getLogger("tianwang.sim.onvif")

REALM = "tianwang-onvif-sim"
MOTION = "tns1:RuleEngine/CellMotionDetector/Motion"
TAMPER = "tns1:RuleEngine/TamperDetector/Tamper"
LINE = "tns1:RuleEngine/LineDetector/Crossed"
PROFILE = "profile_main"
SOURCE_CONF = "vsconf_1"
ANALYTICS_CONF = "vaconf_1"
SUB_PATH = "/onvif/subscription/"
MAX_BODY = 256 * 1024  # a request larger than this is refused (413): a camera has little memory
MAX_QUEUE = 10_000  # events kept per subscription; the oldest go first


def jpeg(comment: bytes = b"") -> bytes:
    """A valid baseline JPEG of 8x8 mid-grey pixels, with `comment` in a COM segment (the simulator puts
    the PTZ position there, so snapshots taken at different positions differ). The smallest correct
    encoding: one quantisation table of ones, one DC and one AC Huffman table with a single 1-bit
    code each, and a scan of `DC diff 0, EOB` padded with ones."""

    def seg(marker: int, body: bytes) -> bytes:
        return struct.pack(">BBH", 0xFF, marker, len(body) + 2) + body

    out = b"\xff\xd8"
    out += seg(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
    if comment:
        out += seg(0xFE, comment[:60000])
    out += seg(0xDB, b"\x00" + b"\x01" * 64)
    out += seg(0xC0, struct.pack(">BHHB", 8, 8, 8, 1) + b"\x01\x11\x00")
    out += seg(0xC4, b"\x00" + b"\x01" + b"\x00" * 15 + b"\x00")  # DC table 0: one code, category 0
    out += seg(0xC4, b"\x10" + b"\x01" + b"\x00" * 15 + b"\x00")  # AC table 0: one code, EOB
    out += seg(0xDA, b"\x01\x01\x00\x00\x3f\x00")
    out += b"\x3f" + b"\xff\xd9"  # bits 0 (DC cat 0), 0 (EOB), then six 1s of padding
    return out


@dataclasses.dataclass
class Subscription:
    id: int
    kind: str  # "pullpoint" or "notify"
    expires: float  # monotonic
    consumer: str | None = None
    queue: collections.deque = dataclasses.field(default_factory=lambda: collections.deque(maxlen=MAX_QUEUE))
    wake: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)


class Ptz:
    """Pan/tilt in [-1, 1], zoom in [0, 1] (the generic ONVIF spaces); a continuous move integrates
    its velocity over time until Stop, its timeout or a limit."""

    def __init__(self):
        self.pos = [0.0, 0.0, 0.0]
        self.vel = [0.0, 0.0, 0.0]
        self.since = time.monotonic()
        self.until: float | None = None
        self.presets: dict[str, tuple[str, list[float]]] = {}  # token -> (name, position)
        self._tokens = itertools.count(1)

    def position(self) -> list[float]:
        now = time.monotonic()
        end = now if self.until is None else min(now, self.until)
        dt_s = max(0.0, end - self.since)
        lims = ((-1, 1), (-1, 1), (0, 1))
        self.pos = [min(hi, max(lo, p + v * dt_s)) for p, v, (lo, hi) in zip(self.pos, self.vel, lims, strict=True)]
        self.since = end
        if self.until is not None and now >= self.until:
            self.vel, self.until = [0.0, 0.0, 0.0], None
        self.since = now
        return list(self.pos)

    def moving(self) -> bool:
        self.position()
        return any(self.vel)

    def move(self, vel: list[float], timeout_s: float | None):
        self.position()
        self.vel = vel
        self.until = time.monotonic() + timeout_s if timeout_s else None

    def stop(self):
        self.position()
        self.vel, self.until = [0.0, 0.0, 0.0], None

    def goto(self, pos: list[float]):
        self.stop()
        lims = ((-1, 1), (-1, 1), (0, 1))
        self.pos = [min(hi, max(lo, p)) for p, (lo, hi) in zip(pos, lims, strict=True)]

    def new_token(self) -> str:
        return f"preset_{next(self._tokens)}"


class CameraSim:
    """One camera on its own HTTP port (and, optionally, a WS-Discovery UDP port)."""

    def __init__(
        self,
        host="127.0.0.1",
        port=0,
        username="admin",
        password=None,
        *,
        name="cam",
        rate=1.0,
        clock_offset_s=0.0,
        auth_window_s=5.0,
        max_grant_s=3600.0,
        slots=8,
        delay_s=0.0,
        events=True,
        ptz=True,
        snapshot_auth="digest",
        discovery_port=None,
        discovery_multicast=False,
        serial=None,
        malformed=(),
    ):
        self.host, self.port, self.username = host, port, username
        self.password = password if password is not None else secrets.token_urlsafe(12)
        self.name, self.rate = name, rate
        self.clock_offset_s, self.auth_window_s = clock_offset_s, auth_window_s
        self.max_grant_s, self.slots, self.delay_s = max_grant_s, slots, delay_s
        self.events_enabled, self.ptz_enabled = events, ptz
        self.snapshot_auth = snapshot_auth
        # > 0: the snapshot is a "JPEG" of this many bytes, streamed without a length (a broken or
        # hostile camera); the bytes written go to counters["snapshot_bytes_sent"]
        self.snapshot_bytes = 0
        self.discovery_port, self.discovery_multicast = discovery_port, discovery_multicast
        self.serial = serial or f"SIM{uuid.uuid4().hex[:10].upper()}"
        self.endpoint = f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, self.serial)}"
        self.malformed = set(malformed)  # operations answered with broken XML (a firmware bug seen in the field)
        self.ptz = Ptz()
        self.subs: dict[int, Subscription] = {}
        self._sub_ids = itertools.count(1)
        self._runner = None
        self._site = None
        self._gen_task = None
        self._disc_transport = None
        self._client = None
        self._notify_tasks: set = set()
        self._nonces: dict[str, float] = {}
        self.boots = 0
        self.counters = collections.Counter()

    # -- clock ------------------------------------------------------------------------------------
    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self.clock_offset_s)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- lifecycle --------------------------------------------------------------------------------
    async def start(self):
        from aiohttp import web

        if self._runner is None:
            app = web.Application(client_max_size=MAX_BODY)
            app.router.add_post("/onvif/{service:.*}", self._soap)
            app.router.add_get("/snapshot.jpg", self._snapshot)
            # a stop or a reboot drops long polls and slow replies in flight, as a camera does
            self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
            await self._runner.setup()
        self._site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await self._site.start()
        self.port = self._site._server.sockets[0].getsockname()[1]
        if self._gen_task is None and self.events_enabled and self.rate > 0:
            self._gen_task = asyncio.get_running_loop().create_task(self._generate())
        if self.discovery_port is not None and self._disc_transport is None:
            from tianwang.drivers.onvif.discovery import Responder, serve_responder

            scopes = [
                "onvif://www.onvif.org/type/video_encoder",
                "onvif://www.onvif.org/Profile/Streaming",
                f"onvif://www.onvif.org/name/{self.name}",
                "onvif://www.onvif.org/hardware/TW-SIM-1",
            ]
            responder = Responder(self.endpoint, scopes, lambda: [f"{self.url}/onvif/device_service"])
            self._disc_transport = await serve_responder(
                responder, self.host, self.discovery_port, multicast=self.discovery_multicast
            )
            self.discovery_port = self._disc_transport.get_extra_info("sockname")[1]
        self.boots += 1

    def stop_events(self):
        """No more events from now on (the subscriptions stay): benchmarks drain and count."""
        if self._gen_task is not None:
            self._gen_task.cancel()
            self._gen_task = None
        self.rate = 0

    async def stop(self):
        if self._gen_task is not None:
            self._gen_task.cancel()
            self._gen_task = None
        if self._disc_transport is not None:
            self._disc_transport.close()
            self._disc_transport = None
        for t in list(self._notify_tasks):
            t.cancel()
        for sub in self.subs.values():
            sub.wake.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def restart(self, down_s: float = 0.5):
        """A reboot: the port closes for `down_s`, every subscription is forgotten, the PTZ position
        returns home (presets persist: they live in flash)."""
        self.counters["restarts"] += 1
        subs, self.subs = self.subs, {}
        for sub in subs.values():
            sub.wake.set()
        if self._runner is not None:
            await self._runner.shutdown()
            await self._runner.cleanup()
            self._runner = None
        await asyncio.sleep(down_s)
        self.ptz.goto([0.0, 0.0, 0.0])
        await self.start()

    def stats(self) -> dict:
        return {"name": self.name, "url": self.url, "subscriptions": len(self.subs), **self.counters}

    def describe(self) -> dict:
        return {"url": self.url, "username": self.username, "password": self.password}

    # -- events -----------------------------------------------------------------------------------
    async def _generate(self):
        """Motion (on, then off), line crossings and now and then a tamper alarm, `rate` events/s."""
        n = 0
        period = 1.0 / self.rate
        # each camera starts at its own phase: cameras in the field are not synchronised, and a fleet
        # that fires all at once would measure a burst, not a rate
        next_at = time.monotonic() + random.uniform(0, period)
        while True:
            next_at += period
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            n += 1
            if n % 10 == 0:
                self.emit(
                    TAMPER,
                    {
                        "VideoSourceConfigurationToken": SOURCE_CONF,
                        "VideoAnalyticsConfigurationToken": ANALYTICS_CONF,
                        "Rule": "Tamper",
                    },
                    {"IsTamper": "true" if n % 20 == 0 else "false"},
                )
            elif n % 3 == 0:
                self.emit(
                    LINE,
                    {
                        "VideoSourceConfigurationToken": SOURCE_CONF,
                        "VideoAnalyticsConfigurationToken": ANALYTICS_CONF,
                        "Rule": "Gate line",
                    },
                    {"ObjectId": str(n)},
                )
            else:
                self.emit(
                    MOTION,
                    {
                        "VideoSourceConfigurationToken": SOURCE_CONF,
                        "VideoAnalyticsConfigurationToken": ANALYTICS_CONF,
                        "Rule": "Motion",
                    },
                    {"IsMotion": "true" if n % 2 else "false"},
                )

    def emit(self, topic: str, source: dict, data: dict) -> int:
        """Queue one event on every live subscription (and POST it to Notify consumers); returns how
        many subscriptions took it."""
        self.counters["events"] += 1
        now_m = time.monotonic()
        utc = self.now()
        taken = 0
        for sub in list(self.subs.values()):
            if sub.expires <= now_m:
                self._expire(sub)
                continue
            taken += 1
            if sub.kind == "pullpoint":
                sub.queue.append((topic, utc, source, data))
                self.counters["events_queued"] += 1
                sub.wake.set()
            else:
                msg = soap.notification_message(topic, utc, source, data, subscription=self._sub_url(sub))
                task = asyncio.get_running_loop().create_task(self._notify(sub, msg))
                self._notify_tasks.add(task)
                task.add_done_callback(self._notify_tasks.discard)
        return taken

    def _expire(self, sub):
        if self.subs.pop(sub.id, None) is not None:
            self.counters["subscriptions_expired"] += 1
            sub.wake.set()

    async def _notify(self, sub, message: str):
        import aiohttp

        if self._client is None:
            self._client = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        header = (
            f"<wsa:Action>http://docs.oasis-open.org/wsn/bw-2/NotificationConsumer/Notify</wsa:Action>"
            f"<wsa:To>{x(sub.consumer)}</wsa:To>"
        )
        body = soap.envelope(f"<wsnt:Notify>{message}</wsnt:Notify>", header)
        try:
            async with self._client.post(
                sub.consumer, data=body, headers={"Content-Type": "application/soap+xml; charset=utf-8"}
            ) as r:
                await r.read()
                self.counters["notify_ok" if r.status < 300 else "notify_refused"] += 1
        except (TimeoutError, aiohttp.ClientError, OSError):
            self.counters["notify_failed"] += 1

    def _sub_url(self, sub) -> str:
        return f"{self.url}{SUB_PATH}{sub.id}"

    def _grant(self, req_text: str | None) -> float:
        asked = soap.parse_termination(req_text, self.now(), 60.0)
        return max(1.0, min(asked, self.max_grant_s))

    def _new_sub(self, kind: str, req_text: str | None, consumer: str | None = None) -> tuple[Subscription, float]:
        now_m = time.monotonic()
        for sub in list(self.subs.values()):
            if sub.expires <= now_m:
                self._expire(sub)
        if len(self.subs) >= self.slots:
            self.counters["subscriptions_refused"] += 1
            # what cameras answer when their subscription table is full
            raise SoapError(
                "ter:MaxNotificationProducers",
                f"no free subscription slot ({self.slots} in use)",
                code="Receiver",
                status=500,
            )
        grant = self._grant(req_text)
        sub = Subscription(next(self._sub_ids), kind, now_m + grant, consumer)
        self.subs[sub.id] = sub
        self.counters["subscriptions_created"] += 1
        return sub, grant

    def _sub_for(self, path: str) -> Subscription:
        try:
            sid = int(path.rsplit("/", 1)[-1])
        except ValueError:
            sid = -1
        sub = self.subs.get(sid)
        if sub is not None and sub.expires <= time.monotonic():
            self._expire(sub)
            sub = None
        if sub is None:
            raise SoapError("wsrf-rw:ResourceUnknownFault", "unknown or expired subscription", status=400)
        return sub

    def _times(self, sub) -> str:
        now = self.now()
        left = max(0.0, sub.expires - time.monotonic())
        term = now + dt.timedelta(seconds=left)
        return f"<wsnt:CurrentTime>{soap.iso(now)}</wsnt:CurrentTime><wsnt:TerminationTime>{soap.iso(term)}</wsnt:TerminationTime>"

    # -- HTTP -------------------------------------------------------------------------------------
    async def _soap(self, request):
        from aiohttp import web

        self.counters["requests"] += 1
        service = request.match_info["service"]
        try:
            body = await request.read()
            req = soap.Request(body)
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            if req.operation != "GetSystemDateAndTime":
                try:
                    req.check_token(self.username, self.password, self.now(), self.auth_window_s)
                except SoapError:
                    self.counters["auth_failures"] += 1
                    raise
            if req.operation in self.malformed:
                self.counters["malformed_replies"] += 1
                # not XML at all: what a camera's web server sends when its SOAP process crashed
                return web.Response(
                    body=b"\x00\x00 SOAP engine restarting \x00", status=200, content_type="application/soap+xml"
                )
            reply = await self._dispatch(service, req)
            self.counters[f"op_{req.operation}"] += 1
            status = 200
            out = soap.envelope(reply)
        except SoapError as err:
            status, out = err.status, soap.fault(err)
            self.counters["faults"] += 1
        except web.HTTPException:
            raise
        return web.Response(body=out, status=status, content_type="application/soap+xml", charset="utf-8")

    async def _dispatch(self, service: str, req) -> str:
        op = req.operation
        handler = getattr(self, f"op_{op}", None)
        if handler is None:
            raise SoapError("ter:ActionNotSupported", f"{op} is not supported", code="Receiver", status=500)
        if op in ("PullMessages", "Renew", "Unsubscribe", "SetSynchronizationPoint"):
            return (
                await handler(req, self._sub_for(service))
                if op == "PullMessages"
                else handler(req, self._sub_for(service))
            )
        if op in PTZ_OPS and not self.ptz_enabled:
            raise SoapError("ter:ActionNotSupported", "no PTZ on this camera", code="Receiver", status=500)
        if op in EVENT_OPS and not self.events_enabled:
            raise SoapError("ter:ActionNotSupported", "no event service on this camera", code="Receiver", status=500)
        result = handler(req)
        return await result if asyncio.iscoroutine(result) else result

    # device management
    def op_GetSystemDateAndTime(self, req):
        return f"<tds:GetSystemDateAndTimeResponse>{soap.date_time(self.now())}</tds:GetSystemDateAndTimeResponse>"

    def _services(self):
        out = [(NS["tds"], "device_service"), (NS["trt"], "media_service")]
        if self.events_enabled:
            out.append((NS["tev"], "events_service"))
        if self.ptz_enabled:
            out.append((NS["tptz"], "ptz_service"))
        return out

    def op_GetServices(self, req):
        items = "".join(
            f"<tds:Service><tds:Namespace>{ns}</tds:Namespace><tds:XAddr>{self.url}/onvif/{path}</tds:XAddr>"
            "<tds:Version><tt:Major>2</tt:Major><tt:Minor>60</tt:Minor></tds:Version></tds:Service>"
            for ns, path in self._services()
        )
        return f"<tds:GetServicesResponse>{items}</tds:GetServicesResponse>"

    def op_GetCapabilities(self, req):
        events = (
            f"<tt:Events><tt:XAddr>{self.url}/onvif/events_service</tt:XAddr>"
            "<tt:WSSubscriptionPolicySupport>false</tt:WSSubscriptionPolicySupport>"
            "<tt:WSPullPointSupport>true</tt:WSPullPointSupport>"
            "<tt:WSPausableSubscriptionManagerInterfaceSupport>false</tt:WSPausableSubscriptionManagerInterfaceSupport>"
            "</tt:Events>"
            if self.events_enabled
            else ""
        )
        ptz = f"<tt:PTZ><tt:XAddr>{self.url}/onvif/ptz_service</tt:XAddr></tt:PTZ>" if self.ptz_enabled else ""
        return (
            "<tds:GetCapabilitiesResponse><tds:Capabilities>"
            f"<tt:Device><tt:XAddr>{self.url}/onvif/device_service</tt:XAddr></tt:Device>{events}"
            f"<tt:Media><tt:XAddr>{self.url}/onvif/media_service</tt:XAddr><tt:StreamingCapabilities>"
            "<tt:RTPMulticast>false</tt:RTPMulticast><tt:RTP_TCP>true</tt:RTP_TCP><tt:RTP_RTSP_TCP>true</tt:RTP_RTSP_TCP>"
            f"</tt:StreamingCapabilities></tt:Media>{ptz}</tds:Capabilities></tds:GetCapabilitiesResponse>"
        )

    def op_GetDeviceInformation(self, req):
        return (
            "<tds:GetDeviceInformationResponse><tds:Manufacturer>Tianwang</tds:Manufacturer>"
            "<tds:Model>TW-SIM-1</tds:Model><tds:FirmwareVersion>1.4.2</tds:FirmwareVersion>"
            f"<tds:SerialNumber>{x(self.serial)}</tds:SerialNumber><tds:HardwareId>tw-sim</tds:HardwareId>"
            "</tds:GetDeviceInformationResponse>"
        )

    # media
    def op_GetProfiles(self, req):
        ptz = (
            '<tt:PTZConfiguration token="ptzconf_1"><tt:Name>ptz</tt:Name><tt:UseCount>1</tt:UseCount>'
            "<tt:NodeToken>ptznode_1</tt:NodeToken></tt:PTZConfiguration>"
            if self.ptz_enabled
            else ""
        )
        return (
            f'<trt:GetProfilesResponse><trt:Profiles token="{PROFILE}" fixed="true"><tt:Name>main</tt:Name>'
            f'<tt:VideoSourceConfiguration token="{SOURCE_CONF}"><tt:Name>source</tt:Name><tt:UseCount>1</tt:UseCount>'
            '<tt:SourceToken>vsrc_1</tt:SourceToken><tt:Bounds x="0" y="0" width="1920" height="1080"/>'
            "</tt:VideoSourceConfiguration>"
            '<tt:VideoEncoderConfiguration token="venc_1"><tt:Name>h264</tt:Name><tt:UseCount>1</tt:UseCount>'
            "<tt:Encoding>H264</tt:Encoding><tt:Resolution><tt:Width>1920</tt:Width><tt:Height>1080</tt:Height>"
            "</tt:Resolution><tt:Quality>5</tt:Quality></tt:VideoEncoderConfiguration>"
            f"{ptz}</trt:Profiles></trt:GetProfilesResponse>"
        )

    def _check_profile(self, req):
        token = req.text("ProfileToken")
        if token != PROFILE:
            raise SoapError("ter:NoProfile", f"no profile {token!r}")

    def _media_uri(self, uri: str) -> str:
        return (
            f"<trt:MediaUri><tt:Uri>{x(uri)}</tt:Uri><tt:InvalidAfterConnect>false</tt:InvalidAfterConnect>"
            "<tt:InvalidAfterReboot>false</tt:InvalidAfterReboot><tt:Timeout>PT0S</tt:Timeout></trt:MediaUri>"
        )

    def op_GetStreamUri(self, req):
        self._check_profile(req)
        return f"<trt:GetStreamUriResponse>{self._media_uri(f'rtsp://{self.host}:554/{PROFILE}')}</trt:GetStreamUriResponse>"

    def op_GetSnapshotUri(self, req):
        self._check_profile(req)
        return f"<trt:GetSnapshotUriResponse>{self._media_uri(f'{self.url}/snapshot.jpg')}</trt:GetSnapshotUriResponse>"

    async def _snapshot(self, request):
        from aiohttp import web

        self.counters["snapshot_requests"] += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if not self._http_auth_ok(request):
            self.counters["snapshot_challenges"] += 1
            if self.snapshot_auth == "basic":
                challenge = f'Basic realm="{REALM}"'
            else:
                nonce = secrets.token_hex(16)
                self._nonces[nonce] = time.monotonic()
                challenge = f'Digest realm="{REALM}", qop="auth", nonce="{nonce}", algorithm=MD5'
            return web.Response(status=401, headers={"WWW-Authenticate": challenge})
        self.counters["snapshots"] += 1
        if self.snapshot_bytes:
            return await self._huge_snapshot(request)
        pan, tilt, zoom = self.ptz.position()
        comment = json.dumps(
            {
                "camera": self.name,
                "pan": round(pan, 4),
                "tilt": round(tilt, 4),
                "zoom": round(zoom, 4),
                "utc": soap.iso(self.now()),
            }
        ).encode()
        return web.Response(body=jpeg(comment), content_type="image/jpeg")

    async def _huge_snapshot(self, request):
        from aiohttp import web

        resp = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        chunk = b"\xff\xd8" + bytes(64 * 1024 - 2)
        left = self.snapshot_bytes
        try:
            while left > 0:
                part = chunk[:left]
                await resp.write(part)  # waits while the client does not read
                self.counters["snapshot_bytes_sent"] += len(part)
                left -= len(part)
                chunk = bytes(64 * 1024)
            await resp.write_eof()
        except (ConnectionError, RuntimeError):
            pass  # the client hung up: what it read is counted
        return resp

    def _http_auth_ok(self, request) -> bool:
        header = request.headers.get("Authorization", "")
        scheme, _, rest = header.partition(" ")
        if self.snapshot_auth == "basic":
            if scheme.lower() != "basic":
                return False
            try:
                user, _, pw = base64.b64decode(rest.strip()).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return False
            return secrets.compare_digest(user, self.username) and secrets.compare_digest(pw, self.password)
        if scheme.lower() != "digest":
            return False
        fields = _parse_auth_fields(rest)
        nonce = fields.get("nonce", "")
        if nonce not in self._nonces or time.monotonic() - self._nonces[nonce] > 300:
            return False
        ha1 = hashlib.md5(f"{self.username}:{REALM}:{self.password}".encode()).hexdigest()
        ha2 = hashlib.md5(f"{request.method}:{fields.get('uri', '')}".encode()).hexdigest()
        if fields.get("qop"):
            want = hashlib.md5(
                f"{ha1}:{nonce}:{fields.get('nc', '')}:{fields.get('cnonce', '')}:{fields['qop']}:{ha2}".encode()
            ).hexdigest()
        else:
            want = hashlib.md5(f"{ha1}:{nonce}:{ha2}".encode()).hexdigest()
        return fields.get("username") == self.username and secrets.compare_digest(want, fields.get("response", ""))

    # PTZ
    def _vector(self, el, default=0.0) -> list[float]:
        out = [default, default, default]
        if el is None:
            return out
        for c in el:
            if not isinstance(c.tag, str):
                continue
            name = c.tag.rsplit("}", 1)[-1]
            try:
                if name == "PanTilt":
                    out[0], out[1] = float(c.get("x", default)), float(c.get("y", default))
                elif name == "Zoom":
                    out[2] = float(c.get("x", default))
            except ValueError:
                raise SoapError("ter:InvalidArgVal", f"{name}: not a number") from None
        if not all(math.isfinite(v) for v in out):
            raise SoapError("ter:InvalidArgVal", "not a finite number")
        return out

    def op_ContinuousMove(self, req):
        self._check_profile(req)
        vel = self._vector(req.find("Velocity"))
        if any(abs(v) > 1 for v in vel):
            raise SoapError("ter:InvalidArgVal", "velocity outside [-1, 1]")
        self.ptz.move(vel, soap.parse_duration(req.text("Timeout"), 0.0) or None)
        return "<tptz:ContinuousMoveResponse/>"

    def op_Stop(self, req):
        self._check_profile(req)
        self.ptz.stop()
        return "<tptz:StopResponse/>"

    def op_AbsoluteMove(self, req):
        self._check_profile(req)
        pos_el = req.find("Position")
        if pos_el is None:
            raise SoapError("ter:InvalidArgVal", "Position is required")
        current = self.ptz.position()
        target = self._vector(pos_el)
        # an axis the request leaves out keeps its place
        names = {c.tag.rsplit("}", 1)[-1] for c in pos_el if isinstance(c.tag, str)}
        if "PanTilt" not in names:
            target[0], target[1] = current[0], current[1]
        if "Zoom" not in names:
            target[2] = current[2]
        if not (-1 <= target[0] <= 1 and -1 <= target[1] <= 1 and 0 <= target[2] <= 1):
            raise SoapError("ter:InvalidPosition", "position outside the generic space")
        self.ptz.goto(target)
        return "<tptz:AbsoluteMoveResponse/>"

    def _position_xml(self, pos) -> str:
        return (
            f'<tt:PanTilt x="{pos[0]:.6f}" y="{pos[1]:.6f}" '
            'space="http://www.onvif.org/ver10/tptz/PanTiltSpaces/PositionGenericSpace"/>'
            f'<tt:Zoom x="{pos[2]:.6f}" space="http://www.onvif.org/ver10/tptz/ZoomSpaces/PositionGenericSpace"/>'
        )

    def op_GetStatus(self, req):
        self._check_profile(req)
        pos = self.ptz.position()
        state = "MOVING" if self.ptz.moving() else "IDLE"
        return (
            f"<tptz:GetStatusResponse><tptz:PTZStatus><tt:Position>{self._position_xml(pos)}</tt:Position>"
            f"<tt:MoveStatus><tt:PanTilt>{state}</tt:PanTilt><tt:Zoom>{state}</tt:Zoom></tt:MoveStatus>"
            f"<tt:UtcTime>{soap.iso(self.now())}</tt:UtcTime></tptz:PTZStatus></tptz:GetStatusResponse>"
        )

    def op_SetPreset(self, req):
        self._check_profile(req)
        token = req.text("PresetToken") or self.ptz.new_token()
        name = req.text("PresetName") or token
        if len(self.ptz.presets) >= 32 and token not in self.ptz.presets:
            raise SoapError("ter:TooManyPresets", "preset table full", code="Receiver", status=500)
        self.ptz.presets[token] = (name, self.ptz.position())
        return f"<tptz:SetPresetResponse><tptz:PresetToken>{x(token)}</tptz:PresetToken></tptz:SetPresetResponse>"

    def op_GotoPreset(self, req):
        self._check_profile(req)
        token = req.text("PresetToken")
        if token not in self.ptz.presets:
            raise SoapError("ter:NoToken", f"no preset {token!r}")
        self.ptz.goto(self.ptz.presets[token][1])
        return "<tptz:GotoPresetResponse/>"

    def op_RemovePreset(self, req):
        self._check_profile(req)
        if self.ptz.presets.pop(req.text("PresetToken"), None) is None:
            raise SoapError("ter:NoToken", "no such preset")
        return "<tptz:RemovePresetResponse/>"

    def op_GetPresets(self, req):
        self._check_profile(req)
        items = "".join(
            f'<tptz:Preset token="{x(tok)}"><tt:Name>{x(name)}</tt:Name>'
            f"<tt:PTZPosition>{self._position_xml(pos)}</tt:PTZPosition></tptz:Preset>"
            for tok, (name, pos) in self.ptz.presets.items()
        )
        return f"<tptz:GetPresetsResponse>{items}</tptz:GetPresetsResponse>"

    # events
    def op_GetEventProperties(self, req):
        return (
            "<tev:GetEventPropertiesResponse>"
            "<tev:TopicNamespaceLocation>http://www.onvif.org/onvif/ver10/topics/topicns.xml</tev:TopicNamespaceLocation>"
            '<wsnt:FixedTopicSet>true</wsnt:FixedTopicSet><wstop:TopicSet xmlns:wstop="http://docs.oasis-open.org/wsn/t-1"/>'
            "<wsnt:TopicExpressionDialect>http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet</wsnt:TopicExpressionDialect>"
            "<tev:MessageContentFilterDialect>http://www.onvif.org/ver10/tev/messageContentFilter/ItemFilter</tev:MessageContentFilterDialect>"
            "<tev:MessageContentSchemaLocation>http://www.onvif.org/onvif/ver10/schema/onvif.xsd</tev:MessageContentSchemaLocation>"
            "</tev:GetEventPropertiesResponse>"
        )

    def op_CreatePullPointSubscription(self, req):
        sub, _ = self._new_sub("pullpoint", req.text("InitialTerminationTime"))
        return (
            "<tev:CreatePullPointSubscriptionResponse><tev:SubscriptionReference>"
            f"<wsa:Address>{self._sub_url(sub)}</wsa:Address></tev:SubscriptionReference>"
            f"{self._times(sub)}</tev:CreatePullPointSubscriptionResponse>"
        )

    def op_Subscribe(self, req):
        consumer = req.text("ConsumerReference", "Address")
        if not consumer or not consumer.startswith(("http://", "https://")):
            raise SoapError("ter:InvalidArgVal", "ConsumerReference/Address must be an http URL")
        sub, _ = self._new_sub("notify", req.text("InitialTerminationTime"), consumer)
        return (
            "<wsnt:SubscribeResponse><wsnt:SubscriptionReference>"
            f"<wsa:Address>{self._sub_url(sub)}</wsa:Address></wsnt:SubscriptionReference>"
            f"{self._times(sub)}</wsnt:SubscribeResponse>"
        )

    async def op_PullMessages(self, req, sub):
        timeout = min(soap.parse_duration(req.text("Timeout"), 10.0), 60.0)
        try:
            limit = max(1, min(int(req.text("MessageLimit") or 100), 1024))
        except ValueError:
            raise SoapError("ter:InvalidArgVal", "MessageLimit: not a number") from None
        if not sub.queue:
            sub.wake.clear()
            try:
                await asyncio.wait_for(sub.wake.wait(), timeout)
            except TimeoutError:
                pass
            if self.subs.get(sub.id) is not sub:  # unsubscribed, expired or rebooted meanwhile
                raise SoapError("wsrf-rw:ResourceUnknownFault", "unknown or expired subscription")
        items = []
        while sub.queue and len(items) < limit:
            topic, utc, source, data = sub.queue.popleft()
            items.append(soap.notification_message(topic, utc, source, data))
        self.counters["events_pulled"] += len(items)
        return f"<tev:PullMessagesResponse>{self._times(sub)}{''.join(items)}</tev:PullMessagesResponse>"

    def op_Renew(self, req, sub):
        sub.expires = time.monotonic() + self._grant(req.text("TerminationTime"))
        self.counters["renewals"] += 1
        # RenewResponse lists TerminationTime before CurrentTime (WS-BaseNotification)
        now = self.now()
        term = now + dt.timedelta(seconds=max(0.0, sub.expires - time.monotonic()))
        return (
            f"<wsnt:RenewResponse><wsnt:TerminationTime>{soap.iso(term)}</wsnt:TerminationTime>"
            f"<wsnt:CurrentTime>{soap.iso(now)}</wsnt:CurrentTime></wsnt:RenewResponse>"
        )

    def op_Unsubscribe(self, req, sub):
        self.subs.pop(sub.id, None)
        sub.wake.set()
        self.counters["unsubscribed"] += 1
        return "<wsnt:UnsubscribeResponse/>"

    def op_SetSynchronizationPoint(self, req, sub):
        return "<tev:SetSynchronizationPointResponse/>"


PTZ_OPS = {
    "ContinuousMove",
    "Stop",
    "AbsoluteMove",
    "GetStatus",
    "SetPreset",
    "GotoPreset",
    "RemovePreset",
    "GetPresets",
}
EVENT_OPS = {"GetEventProperties", "CreatePullPointSubscription", "Subscribe"}


def _parse_auth_fields(text: str) -> dict:
    """key=value / key="value" pairs of an Authorization header (RFC 7616)."""
    import re

    return {
        k.lower(): v if v is not None and q == "" else q
        for k, q, v in (
            (m.group(1), m.group(2) or "", m.group(3)) for m in re.finditer(r'(\w+)=(?:"([^"]*)"|([^\s,]+))', text)
        )
    }


class CameraFleet:
    """N cameras in one process, each on its own loopback port, sharing one password."""

    def __init__(self, n: int, **options):
        password = options.pop("password", None) or secrets.token_urlsafe(12)
        disc = options.pop("discovery_port", None)
        self.cameras = [
            CameraSim(password=password, name=f"cam-{i + 1}", discovery_port=disc if i == 0 else None, **options)
            for i in range(n)
        ]

    async def start(self):
        for cam in self.cameras:
            await cam.start()

    async def stop(self):
        await asyncio.gather(*(cam.stop() for cam in self.cameras), return_exceptions=True)

    def stats(self) -> dict:
        total: collections.Counter[str] = collections.Counter()
        for cam in self.cameras:
            total.update({k: v for k, v in cam.counters.items()})
        return {"cameras": len(self.cameras), "subscriptions": sum(len(c.subs) for c in self.cameras), **total}

    def describe(self) -> dict:
        first = self.cameras[0]
        out = {"kind": "onvif", "url": first.url, "username": first.username, "password": first.password}
        if len(self.cameras) > 1:
            out["urls"] = [c.url for c in self.cameras]
        if first.discovery_port is not None:
            out["discovery"] = f"udp://{first.host}:{first.discovery_port}"
        return out


def _positive(kind):
    def parse(text):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not (v >= 0) or (isinstance(v, float) and not math.isfinite(v)):
            raise argparse.ArgumentTypeError(f"{text!r} must be >= 0")
        return v

    return parse


def _count(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= v <= 2000:
        raise argparse.ArgumentTypeError(f"{v} is out of range (1 to 2000)")
    return v


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage block
        self.exit(2, f"{self.prog}: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="tianwang simulate onvif", description="simulated ONVIF cameras over HTTP")
    p.add_argument("--cameras", type=_count, default=1, help="how many cameras, 1-2000 (one port each)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=_positive(int), default=0, help="HTTP port of the first camera (0: any)")
    p.add_argument("--username", default="admin")
    p.add_argument("--password", default=None, help="default: generated (or $TIANWANG_SIM_ONVIF_PASSWORD)")
    p.add_argument("--rate", type=_positive(float), default=1.0, help="events per second per camera")
    p.add_argument("--clock-offset", type=float, default=0.0, help="camera clock minus true UTC, seconds")
    p.add_argument("--auth-window", type=_positive(float), default=5.0, help="accepted UsernameToken age, s")
    p.add_argument("--max-grant", type=_positive(float), default=3600.0, help="longest subscription granted, s")
    p.add_argument("--slots", type=_positive(int), default=8, help="subscriptions a camera holds at once")
    p.add_argument("--delay", type=_positive(float), default=0.0, help="added to every reply, s")
    p.add_argument("--restart-every", type=_positive(float), default=0.0, help="reboot every N s (0: never)")
    p.add_argument("--no-events", action="store_true", help="no event service")
    p.add_argument("--no-ptz", action="store_true", help="no PTZ service")
    p.add_argument("--snapshot-auth", choices=("digest", "basic"), default="digest")
    p.add_argument(
        "--discovery-port",
        type=_positive(int),
        default=None,
        help="answer WS-Discovery probes on this UDP port (3702 is the standard one)",
    )
    p.add_argument("--discovery-multicast", action="store_true", help="join 239.255.255.250 on --host's interface")
    p.add_argument("--stats-interval", type=_positive(float), default=10.0)
    return p


def main(argv=None) -> int:
    from tianwang.drivers.sdk import run_simulator, serve_simulator

    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if args.port and args.cameras > 1:
        print("tianwang simulate onvif: --port takes one camera (use 0 for many)", file=sys.stderr)
        return 2
    fleet = CameraFleet(
        args.cameras,
        host=args.host,
        port=args.port,
        username=args.username,
        password=args.password or os.environ.get("TIANWANG_SIM_ONVIF_PASSWORD"),
        rate=args.rate,
        clock_offset_s=args.clock_offset,
        auth_window_s=args.auth_window,
        max_grant_s=args.max_grant,
        slots=args.slots,
        delay_s=args.delay,
        events=not args.no_events,
        ptz=not args.no_ptz,
        snapshot_auth=args.snapshot_auth,
        discovery_port=args.discovery_port,
        discovery_multicast=args.discovery_multicast,
    )

    async def go():
        import signal

        # SIGUSR1: stop generating events (the cameras keep serving), so a benchmark can drain and count
        asyncio.get_running_loop().add_signal_handler(
            signal.SIGUSR1, lambda: [cam.stop_events() for cam in fleet.cameras]
        )
        restarter = None
        if args.restart_every:

            async def restarts():
                while True:
                    await asyncio.sleep(args.restart_every)
                    for cam in fleet.cameras:
                        await cam.restart()

            restarter = asyncio.ensure_future(restarts())
        try:
            return await serve_simulator(fleet, fleet.describe, args.stats_interval)
        finally:
            if restarter is not None:
                restarter.cancel()

    return run_simulator("onvif", go())


if __name__ == "__main__":
    sys.exit(main())
