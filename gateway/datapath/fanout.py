"""gRPC service `tianwang.v1.Gateway` on grpc.aio: Subscribe fan-out, ListDevices, SendCommand,
GetStats, Record.

Subscribe streams are cursors over the journal. Batches are joins of pre-encoded entries handed to
gRPC as bytes (the method is registered without a response serializer), capped by count and by
bytes. A stream writes as soon as something matching is ready and it has no write in flight (its
generator is only resumed once gRPC has taken the previous batch), so what arrives during a write
forms the next batch: batches grow with the load, not with a timer. Only a subscriber (or a site
default) that asks for `max_delay_ms` > 0 waits that long to fill a batch. A subscriber that stops
reading blocks only its own stream: gRPC buffers a bounded amount for it, its cursor stays where it
was, and if it falls behind retention it gets a Gap when it reads again. Requests are parsed here (no
request deserializer) so malformed bytes get INVALID_ARGUMENT rather than a generic error.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import bisect
import collections
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import grpc
import msgpack
from google.protobuf.message import DecodeError, Message

from tianwang.gateway.datapath.auth import CommandLimits, RateLimiter, grant_narrowed
from tianwang.gateway.datapath.journal import DiskReader
from tianwang.gateway.datapath.stagetrace import StageTrace
from tianwang.gateway.errors import AuthError, CommandError, FrameError, TopicError
from tianwang.gateway.framing import TopicFilter, validate_pattern
from tianwang.gateway.lifecycle.config import DEVICE_ID_RE
from tianwang.v1 import gateway_pb2 as pb

if TYPE_CHECKING:
    from tianwang.gateway.app import Gateway
    from tianwang.gateway.datapath.auth import Authenticator, Principal
    from tianwang.gateway.lifecycle.supervisor import DeviceEntry, Supervisor

# a call's context; requests come as bytes (the methods parse them) and responses go as bytes or messages
Context = grpc.aio.ServicerContext[bytes, Any]
M = TypeVar("M", bound=Message)

log = logging.getLogger("tianwang.fanout")

SERVICE = "tianwang.v1.Gateway"
MAX_BATCH_LIMIT = 8192
MAX_DELAY_LIMIT_S = 10.0
DEFAULT_COMMAND_TIMEOUT_S = 10.0
MAX_COMMAND_TIMEOUT_S = 120.0
# how long a waiting stream sleeps before re-checking for shutdown or a revoked token
IDLE_RECHECK_S = 1.0
# bounds on what one call may carry (the whole request is also capped by gRPC at 1 MiB)
MAX_REQUEST_BYTES = {
    "SubscribeRequest": 64 * 1024,
    "ListDevicesRequest": 4 * 1024,
    "CommandRequest": 80 * 1024,
    "GetStatsRequest": 1024,
    "RecordRequest": 1024,
}
MAX_COMMAND_ARGS = 64 * 1024
MAX_ACTION = 64
MAX_REASON = 1024
MAX_TOPICS = 64
MAX_PATTERN = 256


def clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n] + "..."


def peer_host(peer: str) -> str:
    """'ipv4:127.0.0.1:5123' -> '127.0.0.1'; 'ipv6:[::1]:5123' -> '::1'; anything else as is."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0] or rest
    if kind == "ipv6":
        host = rest.rpartition(":")[0]
        return host.strip("[]") or rest
    return peer


# ListDevices pages
DEFAULT_PAGE = 1000
MAX_PAGE = 5000
DEVICE_STATES = ("CONNECTING", "ONLINE", "DEGRADED", "OFFLINE", "DISABLED")

# Record: bytes per call (the default, and the most a call may ask for), calls open at once
DEFAULT_RECORD_BYTES = 64 * 1024 * 1024
MAX_RECORD_BYTES = 256 * 1024 * 1024
MAX_RECORD_SECONDS = 7 * 86400.0
MAX_RECORDINGS = 16
# bytes held for all recordings together, taken from devices and not yet sent to their recorders:
# a recorder that stops reading ends its own recording here, never the gateway's memory
MAX_RECORD_BUFFERED = 64 * 1024 * 1024

# initial metadata of every Subscribe stream: the journal its seqs belong to
JOURNAL_ID_HEADER = "tianwang-journal-id"


class SubscriberState:
    __slots__ = (
        "peer",
        "principal",
        "key",
        "topics",
        "flt",
        "cursor",
        "delivered",
        "batches",
        "gaps",
        "revoked",
        "started_ns",
    )

    def __init__(
        self, peer: str, principal: Principal, key: bytes, topics: tuple[str, ...], flt: TopicFilter, cursor: int
    ) -> None:
        self.peer = peer
        self.principal = principal
        self.key = key  # which token opened it (its hash): reloads re-check the stream against it
        self.topics = topics
        self.flt = flt
        self.cursor = cursor
        self.delivered = 0
        self.batches = 0
        self.gaps = 0
        self.revoked: tuple[grpc.StatusCode, str] | None = (
            None  # set to (status, message) when a reload ends the stream
        )
        self.started_ns = time.time_ns()


class Recording:
    """The bytes of one Record call on their way from the device's tap to the stream: appended by
    the driver's read (one deque append), taken by the stream. Takes at most `max_bytes` of data,
    and holds at most `max_held` not yet sent: past that its recorder has fallen behind and the
    recording stops taking (`overrun`; one with a hole in it would be worse than one that ends).
    `max_held` is the gateway's share per recording of MAX_RECORD_BUFFERED, so all of them
    together never hold more than that."""

    __slots__ = (
        "chunks",
        "nbytes",
        "max_bytes",
        "held",
        "max_held",
        "full",
        "overrun",
        "wake",
        "principal",
        "key",
        "family",
        "device_id",
        "revoked",
    )

    def __init__(
        self,
        max_bytes: int,
        principal: Principal,
        key: bytes,
        family: str,
        device_id: str,
        max_held: int = MAX_RECORD_BUFFERED // MAX_RECORDINGS,
    ) -> None:
        self.chunks: collections.deque[tuple[int, bool, bytes]] = collections.deque()
        self.nbytes = 0
        self.max_bytes = max_bytes
        self.held = 0
        self.max_held = max_held
        self.full = False
        self.overrun = False
        self.wake = asyncio.Event()
        self.principal = principal
        self.key = key
        self.family = family
        self.device_id = device_id
        self.revoked: tuple[grpc.StatusCode, str] | None = None

    def add(self, t_ns: int, sent: bool, data: bytes) -> None:
        if self.full or self.overrun:
            return
        room = self.max_bytes - self.nbytes
        full = len(data) >= room
        if full:
            data = data[:room]
        if self.held + len(data) > self.max_held:
            self.overrun = True
        elif data:
            self.full = full
            self.held += len(data)
            self.nbytes += len(data)
            self.chunks.append((t_ns, sent, data))
        else:
            self.full = full
        self.wake.set()

    def take(self) -> tuple[int, bool, bytes]:
        """The oldest chunk held, (t_ns, sent, data)."""
        chunk = self.chunks.popleft()
        self.held -= len(chunk[2])
        return chunk

    def release(self) -> None:
        """The recording is over: what it still holds is dropped."""
        self.chunks.clear()
        self.held = 0


class GatewayService:
    """The four RPCs. `app` provides journal, router, supervisor, auth, config and counters."""

    def __init__(self, app: Gateway) -> None:
        self.app = app
        self.subscribers: set[SubscriberState] = set()
        self.closing = False
        self.counters = {
            "subscribe_calls": 0,
            "batches_sent": 0,
            "batch_waits": 0,
            "envelopes_delivered": 0,
            "gaps_sent": 0,
            "commands": 0,
            "commands_denied": 0,
            "commands_failed": 0,
            "requests_unauthenticated": 0,
            "requests_invalid": 0,
            "requests_journal_mismatch": 0,
            "commands_refused_unaudited": 0,
            "record_calls": 0,
            "record_bytes": 0,
        }
        self.recordings: set[Recording] = set()
        self.stage_trace = StageTrace.from_env()  # None unless the latency bench asks for it
        self.refusals = RateLimiter(app.config.auth.refused_commands_per_s, app.config.auth.refused_commands_burst)
        self.command_buckets = CommandLimits()
        self.action_buckets: dict[tuple[str, str, float, int], RateLimiter] = {}
        self.commands_running: set[asyncio.Future[tuple[bool, str, str, Any, int]]] = set()
        # bytes one recording may hold for a recorder that is not reading (MAX_RECORD_BUFFERED in all)
        self.record_held_bytes = MAX_RECORD_BUFFERED // MAX_RECORDINGS

    # -- plumbing ------------------------------------------------------------------------------
    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Subscribe": grpc.unary_stream_rpc_method_handler(self.subscribe),
                "ListDevices": grpc.unary_unary_rpc_method_handler(
                    self.list_devices, response_serializer=pb.ListDevicesReply.SerializeToString
                ),
                "SendCommand": grpc.unary_unary_rpc_method_handler(
                    self.send_command, response_serializer=pb.CommandReply.SerializeToString
                ),
                "GetStats": grpc.unary_unary_rpc_method_handler(
                    self.get_stats, response_serializer=pb.Stats.SerializeToString
                ),
                "Record": grpc.unary_stream_rpc_method_handler(
                    self.record, response_serializer=pb.RawChunk.SerializeToString
                ),
            },
        )

    async def _principal(self, context: Context) -> Principal:
        try:
            return self.app.auth.authenticate(context.invocation_metadata())
        except AuthError as exc:
            self.counters["requests_unauthenticated"] += 1
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))

    async def _parse(self, raw: bytes, cls: type[M], context: Context) -> M:
        limit = MAX_REQUEST_BYTES.get(cls.__name__)
        if limit is not None and len(raw) > limit:
            self.counters["requests_invalid"] += 1
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"{cls.__name__} of {len(raw)} bytes exceeds the limit of {limit}"
            )
        try:
            return cls.FromString(raw)
        except (DecodeError, ValueError, TypeError) as exc:
            self.counters["requests_invalid"] += 1
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed {cls.__name__}: {exc}")

    async def _invalid(self, context: Context, message: str) -> NoReturn:
        self.counters["requests_invalid"] += 1
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)

    def recheck_streams(self, auth: Authenticator) -> int:
        """After a reload: hold every open stream to the new tokens. A stream whose token is gone
        (removed, or its value rotated) ends with UNAUTHENTICATED; one whose patterns the token may
        no longer read at all, or only in part (its grant was narrowed), ends with PERMISSION_DENIED
        and the reason; one whose token's `read` patterns changed without taking anything from it
        goes on under the new patterns. Returns how many streams ended or changed."""
        n = 0
        for sub in list(self.subscribers):
            principal = auth.principal_for(sub.key)
            if principal is None:
                sub.revoked = (grpc.StatusCode.UNAUTHENTICATED, "token revoked by a config reload")
            elif principal.read != sub.principal.read:
                if not principal.read or not any(principal.may_read_any(p) for p in sub.topics):
                    sub.revoked = (
                        grpc.StatusCode.PERMISSION_DENIED,
                        f"token {principal.name!r} may no longer read {', '.join(sub.topics)} after a config reload",
                    )
                elif grant_narrowed(sub.principal.read, principal.read, sub.topics):
                    # the stream would go on with less than it asked for, silently: it ends, saying
                    # why, and a new Subscribe gets what the token may read now
                    sub.revoked = (
                        grpc.StatusCode.PERMISSION_DENIED,
                        f"token {principal.name!r} may now read only {', '.join(principal.read)} after a config "
                        f"reload (it read {', '.join(sub.principal.read)}): subscribe again to go on under it",
                    )
                else:
                    acl = None if "#" in principal.read else principal.read
                    sub.flt = TopicFilter(sub.topics, allowed=acl)
                    log.info("stream %s of %s now reads under %s", sub.peer, principal.name, ",".join(principal.read))
                sub.principal = principal
            else:
                sub.principal = principal
                continue
            n += 1
            if sub.revoked:
                log.info("stream %s of %s ended by a reload: %s", sub.peer, sub.principal.name, sub.revoked[1])
        for rec in list(self.recordings):
            principal = auth.principal_for(rec.key)
            if principal is None:
                rec.revoked = (grpc.StatusCode.UNAUTHENTICATED, "token revoked by a config reload")
            elif not principal.may_control(rec.family, rec.device_id):
                rec.revoked = (
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"token {principal.name!r} may no longer record {rec.family}/{rec.device_id} after a config reload",
                )
            else:
                continue
            n += 1
            rec.wake.set()
        if n:
            self.app.journal.wake()
        return n

    def subscriber_stats(self, viewer: Principal | None = None) -> list[pb.SubscriberStats]:
        """Stats.subscriber_stats: every open stream (only the viewer's own token's unless the viewer
        is an admin, or None) with its lag, the journal seqs it has not been sent yet."""
        next_seq = self.app.journal.next_seq
        return [
            pb.SubscriberStats(
                peer=s.peer,
                principal=s.principal.name,
                topics=s.topics,
                cursor=s.cursor,
                delivered=s.delivered,
                batches=s.batches,
                gaps=s.gaps,
                lag=max(0, next_seq - s.cursor),
                started_ns=s.started_ns,
            )
            for s in list(self.subscribers)
            if viewer is None or viewer.is_admin or s.principal.name == viewer.name
        ]

    def close_streams(self) -> None:
        """Shutdown: every Subscribe and Record stream ends (status OK) at its next wake-up."""
        self.closing = True
        self.app.journal.wake()
        for rec in self.recordings:
            rec.wake.set()

    # -- Subscribe -----------------------------------------------------------------------------
    async def subscribe(self, raw: bytes, context: Context) -> AsyncIterator[bytes]:
        try:
            principal, key = self.app.auth.identify(context.invocation_metadata())
        except AuthError as exc:
            self.counters["requests_unauthenticated"] += 1
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
        req = await self._parse(raw, pb.SubscribeRequest, context)
        self.counters["subscribe_calls"] += 1
        if not principal.read:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"token {principal.name!r} may not read any topic")
        requested = list(req.topics)
        if len(requested) > MAX_TOPICS:
            await self._invalid(context, f"topics: {len(requested)} patterns; at most {MAX_TOPICS}")
        for p in requested:
            if len(p) > MAX_PATTERN:
                await self._invalid(context, f"topics: a pattern longer than {MAX_PATTERN} characters")
        for p in requested:
            try:
                validate_pattern(p)
            except TopicError as exc:
                await self._invalid(context, f"topics: {exc}")
        for p in requested:
            if not principal.may_read_any(p):
                await context.abort(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"token {principal.name!r} may not read {p!r} (allowed: {', '.join(principal.read)})",
                )
        fan = self.app.config.gateway.fanout
        max_batch = min(req.max_batch or fan.max_batch, MAX_BATCH_LIMIT)
        # unset (an older client's 0 is not on the wire either): the site's default; an explicit 0: no wait
        wait_ms = req.max_delay_ms if req.HasField("max_delay_ms") else fan.max_delay_ms
        max_delay = min(wait_ms / 1000.0, MAX_DELAY_LIMIT_S)
        max_bytes = int(fan.max_batch_bytes)
        if len(self.subscribers) >= fan.max_subscribers:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED, f"subscriber limit of {fan.max_subscribers} reached"
            )
        journal = self.app.journal
        if req.journal_id and req.journal_id != journal.id:
            self.counters["requests_journal_mismatch"] += 1
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"journal_id: this gateway's journal is {journal.id}, not {req.journal_id}: "
                + (
                    "the gateway restarted without journal.path, so its seqs began again at 1"
                    if not journal.durable
                    else "its journal directory was replaced"
                )
                + "; resubscribe without from_seq (and without journal_id) to start from now",
            )
        if req.from_seq > journal.next_seq:
            await self._invalid(
                context,
                f"from_seq {req.from_seq} is ahead of the journal (next seq is {journal.next_seq})"
                + ("; without journal.path the sequence restarts when the gateway does" if not journal.durable else ""),
            )
        patterns = requested or list(principal.read)
        acl = None if "#" in principal.read else principal.read
        flt = TopicFilter(patterns, allowed=acl)
        cursor = req.from_seq or journal.next_seq
        sub = SubscriberState(context.peer(), principal, key, tuple(patterns), flt, cursor)
        await context.send_initial_metadata(((JOURNAL_ID_HEADER, journal.id),))
        self.subscribers.add(sub)
        log.info("subscribe %s as %s: %s from seq %d", sub.peer, principal.name, ",".join(patterns), cursor)
        trace = self.stage_trace
        stamps: list[list[int]] | None = None
        if trace is not None:  # the latency bench only
            trace.watch(journal, lambda: self.closing)
            stamps = []
        try:
            async for batch in self._stream(sub, max_batch, max_delay, max_bytes, stamps):
                yield batch
            if sub.revoked:
                await context.abort(*sub.revoked)
        finally:
            self.subscribers.discard(sub)
            log.info("subscriber %s left after %d envelopes", sub.peer, sub.delivered)
            if trace is not None and stamps is not None:
                trace.dump(sub.peer, stamps)

    async def _stream(
        self,
        sub: SubscriberState,
        max_batch: int,
        max_delay: float,
        max_bytes: int,
        stamps: list[list[int]] | None = None,
    ) -> AsyncIterator[bytes]:
        """The stream's batches. `stamps` (the latency bench's StageTrace): each live batch's
        [first seq, next seq, handed to gRPC ns, taken by gRPC ns] is appended to it."""
        journal = self.app.journal
        counters = self.counters
        loop = asyncio.get_running_loop()
        cursor = sub.cursor
        reader = None
        while not self.closing and not sub.revoked:
            flt = sub.flt  # a reload may narrow it
            gap, cursor = journal.gap_for(cursor)
            if gap is not None:
                sub.gaps += 1
                counters["gaps_sent"] += 1
                sub.cursor = cursor
                yield gap
                continue
            if journal.on_disk(cursor):
                # older than memory: served from the disk segments, then live from memory
                if reader is None:
                    reader = DiskReader()
                data, n, cursor = await journal.read_disk(reader, cursor, flt, max_batch, max_bytes)
                sub.cursor = cursor
                if n == 0:
                    if data:  # records missing on disk: a Gap
                        sub.gaps += 1
                        counters["gaps_sent"] += 1
                        yield data
                    continue
                sub.delivered += n
                sub.batches += 1
                counters["batches_sent"] += 1
                counters["envelopes_delivered"] += n
                yield data
                continue
            start = cursor
            data, n, cursor = journal.collect(cursor, flt, max_batch, max_bytes)
            sub.cursor = cursor
            if n == 0:
                if cursor < journal.next_seq:
                    await asyncio.sleep(0)  # scanned a long stretch of other topics; let others run
                else:
                    await journal.wait(cursor, IDLE_RECHECK_S)
                    # one loop turn before collecting: device reads that are ready by then (the rest
                    # of a burst whose first reading woke us) join this batch instead of queueing
                    # behind its write. Not a timer: an idle stream's envelope goes one turn later.
                    # At 10,000 readings/s: one batch per burst instead of two, p50 0.44-0.49 ->
                    # 0.38-0.39 ms, 0.35-0.39 -> 0.32-0.33 cores
                    await asyncio.sleep(0)
                continue
            if n < max_batch and max_delay > 0:
                # asked for: wait up to max_delay for company (without it the batch goes now, and
                # what arrives while gRPC writes it is the next batch)
                counters["batch_waits"] += 1
                parts = [data]
                size = len(data)
                deadline = loop.time() + max_delay
                while n < max_batch and size < max_bytes and not self.closing:
                    remaining = deadline - loop.time()
                    if remaining <= 0 or not await journal.wait(cursor, remaining):
                        break
                    if cursor < journal.first_seq:
                        break  # retention overtook us while waiting: send what we hold, then the Gap
                    more, m, cursor = journal.collect(cursor, flt, max_batch - n, max_bytes - size, True)
                    if m:
                        parts.append(more)
                        n += m
                        size += len(more)
                    elif cursor < journal.next_seq:
                        break  # the next matching envelope does not fit: this batch is full
                sub.cursor = cursor
                if len(parts) > 1:
                    data = b"".join(parts)
            sub.delivered += n
            sub.batches += 1
            counters["batches_sent"] += 1
            counters["envelopes_delivered"] += n
            if stamps is None:
                yield data
            else:
                stamps.append([start, cursor, time.time_ns(), 0])
                yield data
                stamps[-1][3] = time.time_ns()  # resumed: gRPC has taken the batch

    # -- ListDevices ---------------------------------------------------------------------------
    async def list_devices(self, raw: bytes, context: Context) -> pb.ListDevicesReply:
        principal = await self._principal(context)
        req = await self._parse(raw, pb.ListDevicesRequest, context)
        if req.state and req.state not in DEVICE_STATES:
            await self._invalid(context, f"state: {req.state!r} is not one of {', '.join(DEVICE_STATES)}")
        size = req.page_size or DEFAULT_PAGE
        if size > MAX_PAGE:
            await self._invalid(context, f"page_size: at most {MAX_PAGE}")
        after = None
        if req.page_token:
            try:
                after = tuple(json.loads(base64.urlsafe_b64decode(req.page_token.encode("ascii"))))
                if len(after) != 3 or not all(isinstance(x, str) for x in after):
                    raise ValueError("not a page position")
            except (ValueError, UnicodeError, binascii.Error) as exc:
                await self._invalid(context, f"page_token: not one this gateway gave ({exc})")
        rows: list[tuple[tuple[str, str, str], DeviceEntry]] = []
        for e in self.app.supervisor.list_devices(req.family):
            if req.state and e.state.value != req.state:
                continue
            if req.id_prefix and not e.id.startswith(req.id_prefix):
                continue
            if not (principal.may_read_any(f"{e.family}/{e.id}/#") or principal.may_control(e.family, e.id)):
                continue
            rows.append(((e.family, e.parent, e.id), e))
        rows.sort(key=lambda r: r[0])
        out = pb.ListDevicesReply(total=len(rows))
        start = bisect.bisect_right([k for k, _ in rows], after) if after is not None else 0
        page = rows[start : start + size]
        out.devices.extend(device_message(e) for _, e in page)
        if start + size < len(rows):
            out.next_page_token = base64.urlsafe_b64encode(json.dumps(list(page[-1][0])).encode()).decode("ascii")
        return out

    # -- SendCommand ---------------------------------------------------------------------------
    async def send_command(self, raw: bytes, context: Context) -> pb.CommandReply:
        self.counters["commands"] += 1
        principal: Principal | None
        auth_error = ""
        try:
            principal = self.app.auth.authenticate(context.invocation_metadata())
        except AuthError as exc:
            principal = None
            auth_error = str(exc)
        req = await self._parse(raw, pb.CommandRequest, context)
        device_id = req.device_id
        audit_id = device_id if DEVICE_ID_RE.match(device_id or "") else "_invalid"
        bad_args = None
        args: dict[Any, Any]
        if len(req.args) > MAX_COMMAND_ARGS:
            args = {}
            bad_args = f"args: {len(req.args)} bytes exceed the limit of {MAX_COMMAND_ARGS}"
        else:
            try:
                args = msgpack.unpackb(req.args, raw=False, strict_map_key=False) if req.args else {}
                if not isinstance(args, dict):
                    raise ValueError(f"args must be a msgpack map, not {type(args).__name__}")
            except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
                args = {}
                bad_args = f"args: {exc}"
        name = principal.name if principal else ""
        peer = peer_host(context.peer())

        def audit(
            ok: bool,
            code: str,
            message: str,
            refused: bool = False,
            attempt_seq: int = 0,
            caller_cancelled: bool = False,
        ) -> int:
            # a refused call is recorded by what it was (who, what, on what, how big), never by
            # its payload: an unauthenticated caller must not be able to fill the journal
            payload: dict[str, Any] = {
                "principal": name,
                "action": clip(req.action, MAX_ACTION),
                "args": {} if refused else args,
                "args_bytes": len(req.args),
                "reason": clip(req.reason, MAX_REASON),
                "ok": ok,
                "code": code,
                "message": message,
            }
            if audit_id != device_id:
                payload["device_id"] = clip(device_id, 64)
            if attempt_seq:  # the call reached the device: its attempt record, and whether the caller waited
                payload["attempt_seq"] = attempt_seq
                payload["caller_cancelled"] = caller_cancelled
            try:
                return self.app.router.publish(f"audit/{audit_id}/command", audit_id, payload)
            except FrameError as exc:  # the journal cannot write: nothing may run unaudited
                log.error("audit of %s on %s not recorded: %s", req.action[:64], audit_id, exc)
                return 0

        async def refuse(status: grpc.StatusCode, code: str, message: str) -> NoReturn:
            self.counters["commands_denied"] += 1
            if not self.refusals.take(peer):
                # past the refusal budget of this address: refused without an audit record each,
                # counted (the first refusals of the burst are audited)
                self.counters["commands_refused_unaudited"] += 1
                await context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"too many refused commands from {peer}; wait a moment (last refusal: {message})",
                )
            seq = audit(False, code, message, refused=True)
            context.set_trailing_metadata((("tianwang-audit-seq", str(seq)),))
            await context.abort(status, message)

        if principal is None:
            self.counters["requests_unauthenticated"] += 1
            await refuse(grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED", auth_error)
        if not device_id or audit_id != device_id:
            await refuse(
                grpc.StatusCode.INVALID_ARGUMENT, "INVALID", f"device_id: {clip(device_id, 64)!r} is not a device id"
            )
        if not req.action:
            await refuse(grpc.StatusCode.INVALID_ARGUMENT, "INVALID", "action: must not be empty")
        if len(req.action) > MAX_ACTION:
            await refuse(grpc.StatusCode.INVALID_ARGUMENT, "INVALID", f"action: longer than {MAX_ACTION} characters")
        if len(req.reason) > MAX_REASON:
            await refuse(grpc.StatusCode.INVALID_ARGUMENT, "INVALID", f"reason: longer than {MAX_REASON} characters")
        if bad_args:
            await refuse(grpc.StatusCode.INVALID_ARGUMENT, "INVALID", bad_args)
        if self.app.journal.state == "failed":
            await refuse(
                grpc.StatusCode.UNAVAILABLE,
                "UNAVAILABLE",
                f"commands are refused while the journal cannot record them: {self.app.journal.error}",
            )
        entry = self.app.supervisor.lookup(device_id)
        if entry is None:
            await refuse(grpc.StatusCode.NOT_FOUND, "NOT_FOUND", f"no device {device_id!r}")
        action = entry.spec.action(req.action) if entry.spec is not None else None
        if action is not None and not action.needs_control:
            # a read-only action: reading the device's topics is enough (control implies it too)
            if not (
                principal.may_read_any(f"{entry.family}/{device_id}/#")
                or principal.may_control(entry.family, device_id)
            ):
                await refuse(
                    grpc.StatusCode.PERMISSION_DENIED,
                    "PERMISSION_DENIED",
                    f"token {principal.name!r} may not read {entry.family}/{device_id}",
                )
        elif not principal.may_control(entry.family, device_id):
            await refuse(
                grpc.StatusCode.PERMISSION_DENIED,
                "PERMISSION_DENIED",
                f"token {principal.name!r} may not control {entry.family}/{device_id}",
            )
        bucket = self.command_buckets.get(principal)
        if bucket is not None and not bucket.take(principal.name):
            await refuse(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "RATE_LIMITED",
                f"token {principal.name!r} is limited to {principal.commands_per_s:g} commands/s",
            )
        if action is None:
            known = ", ".join(a.name for a in entry.spec.actions) if entry.spec else ""
            await refuse(
                grpc.StatusCode.INVALID_ARGUMENT,
                "INVALID",
                f"action: {entry.driver} devices have no action {req.action!r} (actions: {known or 'none'})",
            )
        if action.needs_reason and not req.reason.strip():
            await refuse(grpc.StatusCode.INVALID_ARGUMENT, "INVALID", f"reason: {req.action} needs a reason")
        if action.per_token_per_s:
            # an action with a rate of its own per token (a camera snapshot: read access is enough)
            key = (entry.driver, action.name, action.per_token_per_s, action.per_token_burst)
            limiter = self.action_buckets.get(key)
            if limiter is None:
                limiter = self.action_buckets[key] = RateLimiter(
                    action.per_token_per_s, max(1, action.per_token_burst or int(action.per_token_per_s) or 1), 1000
                )
            if not limiter.take(principal.name):
                await refuse(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    "RATE_LIMITED",
                    f"token {principal.name!r} may call {entry.driver} {action.name} {action.per_token_per_s:g} "
                    "times per second",
                )

        timeout = req.timeout_ms / 1000.0 if req.timeout_ms else DEFAULT_COMMAND_TIMEOUT_S
        timeout = min(timeout, MAX_COMMAND_TIMEOUT_S)
        remaining = context.time_remaining()
        if remaining is not None:
            timeout = max(0.001, min(timeout, remaining - 0.05))
        # the attempt is on record before the device is touched: nothing may run unaudited
        attempt_payload = {
            "principal": name,
            "action": req.action,
            "args": args,
            "args_bytes": len(req.args),
            "reason": clip(req.reason, MAX_REASON),
            "timeout_ms": int(timeout * 1000),
        }
        try:
            attempt_seq = self.app.router.publish(f"audit/{device_id}/command/attempt", device_id, attempt_payload)
        except FrameError as exc:
            attempt_seq = 0
            log.error("audit of %s on %s not recorded: %s", req.action, device_id, exc)
        if not attempt_seq:
            await refuse(
                grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE", "commands are refused while the journal cannot record them"
            )
        # the device exchange runs in its own task: a caller that cancels or whose deadline passes
        # does not cut it half-way, and its outcome is audited whatever became of the caller
        caller = {"cancelled": False}
        task = asyncio.ensure_future(self._command(device_id, req.action, args, timeout, audit, attempt_seq, caller))
        self.commands_running.add(task)
        task.add_done_callback(self.commands_running.discard)
        try:
            ok, code, message, result, seq = await asyncio.shield(task)
        except asyncio.CancelledError:
            caller["cancelled"] = True
            log.info("%s: the caller of %s left; the command runs on and its outcome is audited", device_id, req.action)
            raise
        try:
            packed = msgpack.packb(result, use_bin_type=True)
        except (TypeError, ValueError) as exc:
            packed = msgpack.packb({"error": f"result not encodable: {exc}"})
        return pb.CommandReply(ok=ok, code=code, message=message, result=packed, audit_seq=seq)

    async def _command(
        self,
        device_id: str,
        action: str,
        args: dict[Any, Any],
        timeout: float,
        audit: Callable[..., int],
        attempt_seq: int,
        caller: dict[str, bool],
    ) -> tuple[bool, str, str, Any, int]:
        """One command on the device and the audit of its outcome; returns (ok, code, message,
        result, audit seq). Runs apart from the RPC: only the gateway's stop cancels it."""
        result: Any
        try:
            result = await self.app.supervisor.send_command(device_id, action, args, timeout)
            ok, code, message = True, "OK", ""
        except CommandError as exc:
            result, ok, code, message = exc.result, False, exc.code, exc.message
        except asyncio.CancelledError:
            result, ok, code, message = {}, False, "CANCELLED", "the gateway stopped before the device answered"
            self.counters["commands_failed"] += 1
            audit(ok, code, message, attempt_seq=attempt_seq, caller_cancelled=caller["cancelled"])
            raise
        except Exception as exc:  # a driver bug must not take the RPC (or the gateway) down
            log.exception("%s: command %s failed", device_id, action)
            result, ok, code, message = {}, False, "FAILED", f"{type(exc).__name__}: {exc}"
        if not ok:
            self.counters["commands_failed"] += 1
        seq = audit(ok, code, message, attempt_seq=attempt_seq, caller_cancelled=caller["cancelled"])
        return ok, code, message, result, seq

    async def finish_commands(self, timeout: float) -> None:
        """At stop: give the commands in flight `timeout` seconds to end, then cancel them (each
        still audits its outcome). Called before the journal closes."""
        if not self.commands_running:
            return
        _done, pending = await asyncio.wait(list(self.commands_running), timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1.0)

    # -- Record --------------------------------------------------------------------------------
    async def record(self, raw: bytes, context: Context) -> AsyncIterator[pb.RawChunk]:
        try:
            principal, key = self.app.auth.identify(context.invocation_metadata())
        except AuthError as exc:
            self.counters["requests_unauthenticated"] += 1
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
        req = await self._parse(raw, pb.RecordRequest, context)
        self.counters["record_calls"] += 1
        device_id = req.device_id
        if not DEVICE_ID_RE.match(device_id or ""):
            await self._invalid(context, f"device_id: {clip(device_id, 64)!r} is not a device id")
        seconds = req.seconds
        if not math.isfinite(seconds) or seconds < 0 or seconds > MAX_RECORD_SECONDS:
            await self._invalid(
                context,
                f"seconds: {seconds:g} is not a duration (more than 0, at most {MAX_RECORD_SECONDS:g}; 0 = until cancelled)",
            )
        if req.max_bytes > MAX_RECORD_BYTES:
            await self._invalid(context, f"max_bytes: at most {MAX_RECORD_BYTES} per recording")
        max_bytes = req.max_bytes or DEFAULT_RECORD_BYTES
        entry = self.app.supervisor.lookup(device_id)
        if entry is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no device {device_id!r}")
        peer = context.peer()

        def audit(code: str, message: str, sent: int = 0) -> int:
            # raw bytes carry what topics do not (auth codes, card ids): who recorded what is kept
            payload = {
                "principal": principal.name,
                "seconds": seconds,
                "max_bytes": max_bytes,
                "ok": code != "PERMISSION_DENIED",
                "code": code,
                "message": message,
                "bytes": sent,
            }
            try:
                return self.app.router.publish(f"audit/{device_id}/record", device_id, payload)
            except FrameError as exc:
                log.error("audit of the recording of %s not recorded: %s", device_id, exc)
                return 0

        if not principal.may_control(entry.family, device_id):
            message = (
                f"token {principal.name!r} may not record {entry.family}/{device_id}: recording raw bytes "
                "needs `control` on the device"
            )
            if self.refusals.take(peer_host(peer)):  # the same refusal budget per address as commands
                audit("PERMISSION_DENIED", message)
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, message)
        spec = entry.spec
        if spec is None or not spec.recordable:
            kinds = ", ".join(spec.transports) if spec is not None and spec.transports else "unknown"
            why = " (HTTP/SOAP requests, not a byte stream)" if spec is not None and "http" in spec.transports else ""
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"{device_id} (driver {entry.driver}) cannot be recorded: its transport is {kinds}{why}; "
                "record serial or TCP devices and JT/T 808 terminals",
            )
        if spec.kind == "listener" and not entry.parent:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"{device_id} is a {entry.driver} listener: record one of its terminals by its id "
                f"(`tianwang devices --family {entry.family}` lists them)",
            )
        ctx = entry.ctx
        if ctx is None or entry.failed:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"{device_id} is not running: {entry.reason}")
        if len(self.recordings) >= MAX_RECORDINGS:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{MAX_RECORDINGS} recordings already running")
        source = record_source(entry, ctx.config, self.app.supervisor)
        start = pb.RecordStart(
            device_id=device_id,
            family=entry.family,
            driver=entry.driver,
            gateway=self.app.config.gateway.name,
            version=self.app.version,
            parent=entry.parent,
            transport=source["transport"],
            url=source["url"],
        )
        rec = Recording(max_bytes, principal, key, entry.family, device_id, self.record_held_bytes)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds if seconds else None
        start.start_ns = time.time_ns()
        # on record before the first byte is taken: a recording that cannot be audited is not made
        if not audit("STARTED", ""):
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, "recordings are refused while the journal cannot record them"
            )
        ctx.add_recording(rec)
        self.recordings.add(rec)
        # the peer was read before: once a client has cancelled, the call behind `context` may be
        # gone and asking it for its peer crashes grpc (a NULL call)
        log.info(
            "record %s as %s: %s for %s",
            peer,
            principal.name,
            device_id,
            f"{seconds:g} s" if seconds else "until cancelled",
        )
        end = None
        sent = 0
        try:
            yield pb.RawChunk(t_ns=start.start_ns, start=start)
            chunks = rec.chunks
            while True:
                while chunks:
                    t_ns, to_device, data = rec.take()
                    sent += len(data)
                    yield pb.RawChunk(t_ns=t_ns, direction=pb.TO_DEVICE if to_device else pb.FROM_DEVICE, data=data)
                if end is not None:
                    break
                if rec.overrun:
                    end = (
                        f"the recorder fell behind: {rec.max_held} bytes were waiting for it; "
                        f"{rec.nbytes} bytes recorded"
                    )
                elif rec.full:
                    end = f"max_bytes: {max_bytes} bytes recorded"
                elif rec.revoked:
                    break
                elif self.closing:
                    end = "the gateway is stopping"
                elif self.app.supervisor.lookup(device_id) is not entry or entry.ctx is not ctx:
                    end = f"{device_id} was removed or restarted"
                else:
                    wait = IDLE_RECHECK_S
                    if deadline is not None:
                        left = deadline - loop.time()
                        if left <= 0:
                            end = f"{seconds:g} s recorded"
                        wait = min(wait, max(left, 0))
                    if end is None:
                        rec.wake.clear()
                        try:
                            await asyncio.wait_for(rec.wake.wait(), wait)
                        except TimeoutError:
                            pass
                        continue
                # the recording is over: nothing more is taken, what was taken is still sent
                ctx.remove_recording(rec)
            if rec.revoked:
                await context.abort(*rec.revoked)
            yield pb.RawChunk(t_ns=time.time_ns(), end=end)
        finally:
            ctx.remove_recording(rec)
            rec.release()
            self.recordings.discard(rec)
            self.counters["record_bytes"] += sent
            audit("ENDED", end or (rec.revoked[1] if rec.revoked else "cancelled by the client"), sent)
            log.info("record %s of %s ended after %d bytes: %s", peer, device_id, sent, end or "cancelled")

    # -- GetStats ------------------------------------------------------------------------------
    async def get_stats(self, raw: bytes, context: Context) -> pb.Stats:
        principal = await self._principal(context)
        await self._parse(raw, pb.GetStatsRequest, context)
        return self.app.stats(principal)


def record_source(entry: DeviceEntry, config: object, supervisor: Supervisor) -> dict[str, str]:
    """`transport` and `url` of a RecordStart: where the gateway reads the device."""
    if entry.parent:
        # a terminal: the listener it dialled into (where it is bound, when it says)
        listener = supervisor.lookup(entry.parent)
        listen = (listener.info.get("listen") if listener is not None else None) or getattr(config, "listen", "")
        return {"transport": "tcp", "url": f"tcp://{listen}"}
    url = str(getattr(config, "url", "") or "")
    return {"transport": url.partition("://")[0] if "://" in url else "", "url": url}


def device_message(e: DeviceEntry) -> pb.Device:
    """A supervisor DeviceEntry as the Device message of ListDevices."""
    return pb.Device(
        id=e.id,
        family=e.family,
        driver=e.driver,
        state=e.state.value,
        last_seen_ns=e.last_seen_ns,
        info=e.info,
        counters={**e.counters, "envelopes": e.envelopes},
        reason=e.reason,
        parent=e.parent,
    )
