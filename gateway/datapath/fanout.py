"""gRPC service `tianwang.v1.Gateway` on grpc.aio: Subscribe fan-out, ListDevices, SendCommand,
GetStats.

Subscribe streams are cursors over the journal. Batches are joins of pre-encoded entries handed to
gRPC as bytes (the method is registered without a response serializer), capped by count, by delay
and by bytes. A subscriber that stops reading blocks only its own stream: gRPC buffers a bounded
amount for it, its cursor stays where it was, and if it falls behind retention it gets a Gap when it
reads again. Requests are parsed here (no request deserializer) so malformed bytes get
INVALID_ARGUMENT rather than a generic error.
"""

from __future__ import annotations

import asyncio
import logging
import time

import grpc
import msgpack
from google.protobuf.message import DecodeError

from tianwang.gateway.lifecycle.config import DEVICE_ID_RE
from tianwang.gateway.errors import AuthError, CommandError, TopicError
from tianwang.gateway.framing import TopicFilter, validate_pattern
from tianwang.v1 import gateway_pb2 as pb

log = logging.getLogger("tianwang.fanout")

SERVICE = "tianwang.v1.Gateway"
MAX_BATCH_LIMIT = 8192
MAX_DELAY_LIMIT_S = 10.0
DEFAULT_COMMAND_TIMEOUT_S = 10.0
MAX_COMMAND_TIMEOUT_S = 120.0
# how long a waiting stream sleeps before re-checking for shutdown or a revoked token
IDLE_RECHECK_S = 1.0


class SubscriberState:
    __slots__ = ("peer", "principal", "topics", "cursor", "delivered", "batches", "gaps", "revoked", "started_ns")

    def __init__(self, peer, principal, topics, cursor):
        self.peer = peer
        self.principal = principal
        self.topics = topics
        self.cursor = cursor
        self.delivered = 0
        self.batches = 0
        self.gaps = 0
        self.revoked = False
        self.started_ns = time.time_ns()


class GatewayService:
    """The four RPCs. `app` provides journal, router, supervisor, auth, config and counters."""

    def __init__(self, app):
        self.app = app
        self.subscribers: set[SubscriberState] = set()
        self.closing = False
        self.counters = {
            "subscribe_calls": 0,
            "batches_sent": 0,
            "envelopes_delivered": 0,
            "gaps_sent": 0,
            "commands": 0,
            "commands_denied": 0,
            "commands_failed": 0,
            "requests_unauthenticated": 0,
            "requests_invalid": 0,
        }

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
            },
        )

    async def _principal(self, context):
        try:
            return self.app.auth.authenticate(context.invocation_metadata())
        except AuthError as exc:
            self.counters["requests_unauthenticated"] += 1
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))

    async def _parse(self, raw, cls, context):
        try:
            return cls.FromString(raw)
        except (DecodeError, ValueError, TypeError) as exc:
            self.counters["requests_invalid"] += 1
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed {cls.__name__}: {exc}")

    async def _invalid(self, context, message):
        self.counters["requests_invalid"] += 1
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)

    def revoke_missing(self, names) -> int:
        """After a reload: end the streams of tokens that no longer exist. Returns how many."""
        n = 0
        for sub in self.subscribers:
            if sub.principal.name != "anonymous" and sub.principal.name not in names:
                sub.revoked = True
                n += 1
        if n:
            self.app.journal.wake()
        return n

    def close_streams(self) -> None:
        """Shutdown: every Subscribe stream ends (status OK) at its next wake-up."""
        self.closing = True
        self.app.journal.wake()

    # -- Subscribe -----------------------------------------------------------------------------
    async def subscribe(self, raw, context):
        principal = await self._principal(context)
        req = await self._parse(raw, pb.SubscribeRequest, context)
        self.counters["subscribe_calls"] += 1
        if not principal.read:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"token {principal.name!r} may not read any topic")
        requested = list(req.topics)
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
        max_delay = min((req.max_delay_ms if req.max_delay_ms else fan.max_delay_ms) / 1000.0, MAX_DELAY_LIMIT_S)
        max_bytes = int(fan.max_batch_bytes)
        if len(self.subscribers) >= fan.max_subscribers:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED, f"subscriber limit of {fan.max_subscribers} reached"
            )
        journal = self.app.journal
        if req.from_seq > journal.next_seq:
            await self._invalid(
                context,
                f"from_seq {req.from_seq} is ahead of the journal (next seq is {journal.next_seq}); "
                "without journal.path the sequence restarts when the gateway does",
            )
        patterns = requested or list(principal.read)
        acl = None if "#" in principal.read else principal.read
        flt = TopicFilter(patterns, allowed=acl)
        cursor = req.from_seq or journal.next_seq
        sub = SubscriberState(context.peer(), principal, tuple(patterns), cursor)
        self.subscribers.add(sub)
        log.info("subscribe %s as %s: %s from seq %d", sub.peer, principal.name, ",".join(patterns), cursor)
        try:
            async for batch in self._stream(sub, flt, max_batch, max_delay, max_bytes):
                yield batch
            if sub.revoked:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, "token revoked by a config reload")
        finally:
            self.subscribers.discard(sub)
            log.info("subscriber %s left after %d envelopes", sub.peer, sub.delivered)

    async def _stream(self, sub, flt, max_batch, max_delay, max_bytes):
        journal = self.app.journal
        counters = self.counters
        loop = asyncio.get_running_loop()
        cursor = sub.cursor
        while not self.closing and not sub.revoked:
            gap, cursor = journal.gap_for(cursor)
            if gap is not None:
                sub.gaps += 1
                counters["gaps_sent"] += 1
                sub.cursor = cursor
                yield gap
                continue
            data, n, cursor = journal.collect(cursor, flt, max_batch, max_bytes)
            sub.cursor = cursor
            if n == 0:
                if cursor < journal.next_seq:
                    await asyncio.sleep(0)  # scanned a long stretch of other topics; let others run
                else:
                    await journal.wait(cursor, IDLE_RECHECK_S)
                continue
            if n < max_batch and max_delay > 0:
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
            yield data

    # -- ListDevices ---------------------------------------------------------------------------
    async def list_devices(self, raw, context):
        principal = await self._principal(context)
        req = await self._parse(raw, pb.ListDevicesRequest, context)
        out = pb.ListDevicesReply()
        for e in self.app.supervisor.list_devices(req.family):
            if not (principal.may_read_any(f"{e.family}/{e.id}/#") or principal.may_control(e.family, e.id)):
                continue
            out.devices.append(device_message(e))
        return out

    # -- SendCommand ---------------------------------------------------------------------------
    async def send_command(self, raw, context):
        self.counters["commands"] += 1
        try:
            principal = self.app.auth.authenticate(context.invocation_metadata())
        except AuthError as exc:
            principal = None
            auth_error = str(exc)
        req = await self._parse(raw, pb.CommandRequest, context)
        device_id = req.device_id
        audit_id = device_id if DEVICE_ID_RE.match(device_id or "") else "_invalid"
        try:
            args = msgpack.unpackb(req.args, raw=False, strict_map_key=False) if req.args else {}
            if not isinstance(args, dict):
                raise ValueError(f"args must be a msgpack map, not {type(args).__name__}")
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
            args = {"_raw": req.args}
            bad_args = f"args: {exc}"
        else:
            bad_args = None
        name = principal.name if principal else ""

        def audit(ok, code, message):
            payload = {
                "principal": name,
                "action": req.action,
                "args": args,
                "reason": req.reason,
                "ok": ok,
                "code": code,
                "message": message,
            }
            if audit_id != device_id:
                payload["device_id"] = device_id
            return self.app.router.publish(f"audit/{audit_id}/command", audit_id, payload)

        async def refuse(status, code, message):
            seq = audit(False, code, message)
            self.counters["commands_denied"] += 1
            context.set_trailing_metadata((("tianwang-audit-seq", str(seq)),))
            await context.abort(status, message)

        if principal is None:
            self.counters["requests_unauthenticated"] += 1
            await refuse(grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED", auth_error)
        if not device_id or audit_id != device_id:
            await refuse(grpc.StatusCode.INVALID_ARGUMENT, "INVALID", f"device_id: {device_id!r} is not a device id")
        if not req.action:
            await refuse(grpc.StatusCode.INVALID_ARGUMENT, "INVALID", "action: must not be empty")
        if bad_args:
            await refuse(grpc.StatusCode.INVALID_ARGUMENT, "INVALID", bad_args)
        entry = self.app.supervisor.lookup(device_id)
        if entry is None:
            await refuse(grpc.StatusCode.NOT_FOUND, "NOT_FOUND", f"no device {device_id!r}")
        action = entry.spec.action(req.action) if entry.spec is not None else None
        if action is not None and not action.needs_control:
            # a read-only action: reading the device's topics is enough (control implies it too)
            if not (principal.may_read_any(f"{entry.family}/{device_id}/#") or principal.may_control(entry.family, device_id)):
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
        if action is None:
            known = ", ".join(a.name for a in entry.spec.actions) if entry.spec else ""
            await refuse(
                grpc.StatusCode.INVALID_ARGUMENT,
                "INVALID",
                f"action: {entry.driver} devices have no action {req.action!r} (actions: {known or 'none'})",
            )
        if action.needs_reason and not req.reason.strip():
            await refuse(grpc.StatusCode.INVALID_ARGUMENT, "INVALID", f"reason: {req.action} needs a reason")

        timeout = req.timeout_ms / 1000.0 if req.timeout_ms else DEFAULT_COMMAND_TIMEOUT_S
        timeout = min(timeout, MAX_COMMAND_TIMEOUT_S)
        remaining = context.time_remaining()
        if remaining is not None:
            timeout = max(0.001, min(timeout, remaining - 0.05))
        try:
            result = await self.app.supervisor.send_command(device_id, req.action, args, timeout)
            ok, code, message = True, "OK", ""
        except CommandError as exc:
            result, ok, code, message = exc.result, False, exc.code, exc.message
        except Exception as exc:  # a driver bug must not take the RPC (or the gateway) down
            log.exception("%s: command %s failed", device_id, req.action)
            result, ok, code, message = {}, False, "FAILED", f"{type(exc).__name__}: {exc}"
        if not ok:
            self.counters["commands_failed"] += 1
        seq = audit(ok, code, message)
        try:
            packed = msgpack.packb(result, use_bin_type=True)
        except (TypeError, ValueError) as exc:
            packed = msgpack.packb({"error": f"result not encodable: {exc}"})
        return pb.CommandReply(ok=ok, code=code, message=message, result=packed, audit_seq=seq)

    # -- GetStats ------------------------------------------------------------------------------
    async def get_stats(self, raw, context):
        await self._principal(context)
        await self._parse(raw, pb.GetStatsRequest, context)
        return self.app.stats()


def device_message(e) -> pb.Device:
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
