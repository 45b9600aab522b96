"""The NATS JetStream bridge (`bridges.nats`): the journal published to a stream, in batches.

The bridge is one more reader of the journal, with a cursor like a Subscribe stream. It takes a
window of up to `max_batch` envelopes (or `max_batch_bytes`) as soon as the journal has any, and
waits for no company: while a window's publish awaits its acknowledgements, what arrives gathers
into the next window, so windows grow with the load and an idle bridge publishes at once
(`max_delay_ms` > 0 lets a partial window wait that long instead). It publishes, per family present in
the window, one NATS message whose payload is a serialized `Batch` (the journal's own entry bytes,
joined: nothing is re-encoded) on subject `<prefix>.<gateway>.<family>`, so consumers filter by
family. Every message carries

    Tianwang-Gateway     the gateway's name
    Tianwang-Journal     the journal id (the seqs below belong to it)
    Tianwang-First-Seq   first seq of the window
    Tianwang-Last-Seq    last seq of the window: the message holds every envelope of its family
                         with a seq in [first, last]
    Tianwang-Count       envelopes in the message
    Tianwang-Window-End  "1" on one message of each window, which also carries
    Tianwang-Families    the families of the window (the messages of a window go out together)
    Nats-Msg-Id          <gateway>:<journal>:<first>-<last>:<family> (the stream de-duplicates)

and a window's messages are all acknowledged before the next window goes out. So the stream itself
says where the bridge stopped: at start, and after any NATS failure, the bridge reads the newest
message of its gateway back from the stream and carries on after its window, re-publishing only
the families a half-published window still lacks. Nothing is lost and nothing is stored twice,
across NATS outages, node losses and gateway restarts (with a durable journal the cursor's seqs
are still on disk; with a memory journal, a restarted gateway has a new journal and starts at its
first seq). Envelopes the journal no longer holds when the bridge gets to them are published as a
`Batch` holding only a `Gap`, on `<prefix>.<gateway>._gap`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from tianwang.gateway.datapath.journal import DiskReader
from tianwang.gateway.errors import describe
from tianwang.gateway.framing import TopicFilter, encode_gap, scan_entries

if TYPE_CHECKING:  # nats-py is imported when the bridge connects
    from nats.aio.client import Client
    from nats.js.api import RawStreamMsg
    from nats.js.client import JetStreamContext

    from tianwang.gateway.app import Gateway
    from tianwang.gateway.datapath.journal import Journal
    from tianwang.gateway.lifecycle.config import NatsBridgeConfig

log = logging.getLogger("tianwang.bridge")

GAP_FAMILY = "_gap"


class BridgeError(Exception):
    pass


# keys of `bridges.nats` that are credentials: a change of only these applies on reload
CREDENTIAL_KEYS = (
    "user",
    "password",
    "password_env",
    "password_file",
    "token",
    "token_env",
    "token_file",
    "creds_file",
)


def _is_auth_error(exc: BaseException) -> bool:
    """The server refused the credentials ('Authorization Violation', 'Authentication Expired'...)."""
    text = str(exc).lower()
    return type(exc).__name__ == "AuthorizationError" or any(
        words in text
        for words in (
            "authorization violation",
            "authentication expired",
            "authentication revoked",
            "user authentication",
        )
    )


def _header(msg: RawStreamMsg, key: str, default: str = "") -> str:
    headers = msg.headers or {}
    return headers.get(key, default)


class NatsBridge:
    """Publishes the journal to JetStream. `await start()`, then `await stop(budget_s)`."""

    RETRY_INITIAL_S = 0.5
    RETRY_MAX_S = 10.0
    # refused credentials are not retried on the backoff above (a storm of failed logins, which
    # servers log and may block): the next attempt waits this long, or for a reload
    AUTH_RETRY_S = 900.0
    PUBLISH_TIMEOUT_S = 5.0

    def __init__(self, app: Gateway, cfg: NatsBridgeConfig, gateway_name: str) -> None:
        self.app = app
        self.cfg = cfg
        self.gateway = gateway_name
        self.prefix = f"{cfg.subject_prefix}.{gateway_name}"
        self.nc: Client | None = None
        self.js: JetStreamContext | None = None
        self.cursor = 0  # next seq to publish
        self.state = "connecting"
        self.reason = ""
        self._task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Future[None]] = set()  # disconnects begun from a callback
        self._stopping = False
        self._auth_error: str | None = None  # the server refused the credentials (until the next attempt)
        self._connecting: asyncio.Future[Client] | None = None
        self._retry_now = asyncio.Event()
        self._families: dict[str, TopicFilter] = {}
        self._reader = DiskReader()
        # (first, last, families already stored) of a half-published window
        self._resume_window: tuple[int, int, set[str]] | None = None
        self.alert = ""  # the stream was found ahead of the journal: DEGRADED until the gateway restarts
        self._ahead_of = 0  # the stream's last seq when that was found (said once per range)
        self.stats = {
            "bridge_nats_messages": 0,
            "bridge_nats_envelopes": 0,
            "bridge_nats_failures": 0,
            "bridge_nats_gaps": 0,
            "bridge_nats_duplicates": 0,
            "bridge_nats_resumes": 0,
        }

    # -- state ---------------------------------------------------------------------------------
    @property
    def lag(self) -> int:
        journal = self.app.journal
        return (
            max(0, journal.next_seq - max(self.cursor, journal.first_seq))
            if self.cursor
            else journal.next_seq - journal.first_seq
        )

    def counters(self) -> dict[str, int]:
        out = dict(self.stats)
        out["bridge_nats_lag"] = self.lag
        out["bridge_nats_cursor"] = self.cursor
        return out

    @property
    def healthy(self) -> bool:
        return self.state == "ok" and not self.alert

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="bridge:nats")

    async def stop(self, budget_s: float = 2.0) -> None:
        """Publish what is pending (within `budget_s`), then disconnect."""
        self._stopping = True
        if self._task is not None and self.state == "ok":
            deadline = time.monotonic() + budget_s
            while self.cursor < self.app.journal.next_seq and time.monotonic() < deadline and self.state == "ok":
                await asyncio.sleep(0.01)
            left = self.app.journal.next_seq - self.cursor
            if left > 0:
                log.warning(
                    "nats bridge: stopping with %d envelopes not yet published (they stay in the journal)", left
                )
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        await self._disconnect()

    async def _disconnect(self) -> None:
        nc, self.nc, self.js = self.nc, None, None
        if nc is not None and not nc.is_closed:
            try:
                await asyncio.wait_for(nc.close(), 2.0)
            except Exception:  # closing a broken connection may fail in many ways; it is gone anyway
                pass

    async def _run(self) -> None:
        delay = self.RETRY_INITIAL_S
        while True:
            try:
                if self.nc is None or self.nc.is_closed:
                    await self._connect()
                await self._ensure_stream()
                await self._resume()
                if self.state != "ok":
                    log.info("nats bridge: publishing to stream %s from seq %d", self.cfg.stream, self.cursor)
                self.state, self.reason = "ok", ""
                delay = self.RETRY_INITIAL_S
                await self._pump()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.stats["bridge_nats_failures"] += 1
                if self._auth_error is not None:
                    await self._wait_after_refused_login()
                    delay = self.RETRY_INITIAL_S
                    continue
                reason = describe(exc)
                if self.state != "failing" or reason != self.reason:
                    log.warning("nats bridge: %s; retrying (lag %d envelopes)", reason, self.lag)
                self.state, self.reason = "failing", reason
                if self.nc is not None and not self.nc.is_connected:
                    await self._disconnect()
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.RETRY_MAX_S)

    async def _wait_after_refused_login(self) -> None:
        self.state = "failing"
        self.reason = (
            f"authentication failed: fix the credentials and reload; next attempt in "
            f"{self.AUTH_RETRY_S / 60:g} min ({', '.join(self.cfg.servers)}: {self._auth_error})"
        )
        log.error("nats bridge: %s", self.reason)
        await self._disconnect()
        self._retry_now.clear()
        try:
            await asyncio.wait_for(self._retry_now.wait(), self.AUTH_RETRY_S)
        except TimeoutError:
            pass
        self._auth_error = None

    def retry_now(self, cfg: NatsBridgeConfig | None = None) -> None:
        """A reload: after refused credentials, try again at once (with `cfg`'s credentials, when
        given: see `credentials_only_change`)."""
        if cfg is not None:
            self.cfg = cfg
        self._retry_now.set()

    def credentials_only_change(self, new: NatsBridgeConfig) -> bool:
        """True when `new` (a NatsBridgeConfig) differs from the running one only in credentials."""
        old = self.cfg
        return old != new and old.model_copy(update={k: getattr(new, k) for k in CREDENTIAL_KEYS}) == new

    async def _connect(self) -> None:
        import nats

        cfg = self.cfg
        options: dict[str, Any] = dict(
            servers=list(cfg.servers),
            name=f"tianwang-{self.gateway}",
            connect_timeout=2,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            error_cb=self._on_error,
            disconnected_cb=self._on_disconnect,
            reconnected_cb=self._on_reconnect,
        )
        if cfg.user:
            options["user"] = cfg.user
        if cfg.password is not None:
            options["password"] = cfg.password.get_secret_value()
        if cfg.token is not None:
            options["token"] = cfg.token.get_secret_value()
        if cfg.creds_file:
            options["user_credentials"] = cfg.creds_file
        if cfg.tls_ca_file:
            import ssl

            options["tls"] = ssl.create_default_context(cafile=cfg.tls_ca_file)
        # nats-py retries refused credentials on its own reconnect wait, for ever: the first refusal
        # (seen in error_cb) cancels the attempt
        self._auth_error = None
        self._connecting = asyncio.ensure_future(nats.connect(**options))
        try:
            self.nc = nc = await self._connecting
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._auth_error is None or (task is not None and task.cancelling()):
                raise
            raise BridgeError(f"cannot connect to {', '.join(cfg.servers)}: {self._auth_error}") from None
        except Exception as exc:
            raise BridgeError(f"cannot connect to {', '.join(cfg.servers)}: {describe(exc)}") from None
        finally:
            self._connecting = None
        self.js = nc.jetstream(timeout=self.PUBLISH_TIMEOUT_S)

    async def _on_error(self, exc: Exception) -> None:
        log.debug("nats bridge: connection error: %s", describe(exc))
        if _is_auth_error(exc) and self._auth_error is None:
            self._auth_error = describe(exc)
            if self._connecting is not None and not self._connecting.done():
                self._connecting.cancel()
            elif self.nc is not None and not self.nc.is_closed:
                # its own reconnects would log in again and again; the task is kept until it ends
                # (the loop holds only a weak reference to a task)
                task = asyncio.ensure_future(self._disconnect())
                self._background.add(task)
                task.add_done_callback(self._background.discard)
        if self.state != "ok":
            self.reason = f"{', '.join(self.cfg.servers)}: {describe(exc)}"

    async def _on_disconnect(self) -> None:
        if not self._stopping:
            log.warning("nats bridge: disconnected from NATS; reconnecting")
            self.stats["bridge_nats_failures"] += 1
            self.state, self.reason = "failing", "disconnected from NATS; reconnecting"

    async def _on_reconnect(self) -> None:
        url = self.nc.connected_url if self.nc else None
        # host and port only: a URL's netloc would carry its user information
        log.info("nats bridge: reconnected to %s", f"{url.hostname}:{url.port}" if url and url.hostname else "NATS")

    def _jetstream(self) -> JetStreamContext:
        if self.js is None:  # _run connects before it asks
            raise BridgeError("not connected to NATS")
        return self.js

    async def _ensure_stream(self) -> None:
        from nats.js.api import StorageType, StreamConfig
        from nats.js.errors import NotFoundError

        cfg = self.cfg
        js = self._jetstream()
        try:
            await js.stream_info(cfg.stream)
            return
        except NotFoundError:
            pass
        await js.add_stream(
            StreamConfig(
                name=cfg.stream,
                subjects=[f"{cfg.subject_prefix}.>"],
                storage=StorageType.FILE,
                num_replicas=cfg.replicas,
                max_age=cfg.max_age_s,
                duplicate_window=cfg.duplicate_window_s,
            )
        )
        log.info(
            "nats bridge: created stream %s (subjects %s.>, %d replicas)", cfg.stream, cfg.subject_prefix, cfg.replicas
        )

    async def _resume(self) -> None:
        """Set the cursor from the stream: after the newest complete window of this gateway's
        journal, or at the start of a half-published one."""
        from nats.js.errors import NotFoundError

        journal = self.app.journal
        js = self._jetstream()
        info = await js.stream_info(self.cfg.stream, subjects_filter=f"{self.prefix}.>")
        subjects = list((info.state.subjects or {}).keys())
        lasts = []
        for subject in subjects:
            try:
                lasts.append(await js.get_last_msg(self.cfg.stream, subject))
            except NotFoundError:
                continue
        ours = [m for m in lasts if _header(m, "Tianwang-Journal") == journal.id]
        self._resume_window = None
        if not ours:
            start = journal.first_seq
            if lasts:
                log.info(
                    "nats bridge: the stream holds an earlier journal of %s; starting this one at seq %d",
                    self.gateway,
                    start,
                )
            self.cursor = max(self.cursor, start) if self.cursor else start
            return
        newest = max(ours, key=lambda m: m.seq or 0)  # stored messages have their seq
        first = int(_header(newest, "Tianwang-First-Seq", "0"))
        last = int(_header(newest, "Tianwang-Last-Seq", "0"))
        # the families of the newest window already in the stream (its messages go out together,
        # so any of them may be missing after a failure, the one marking the end included)
        done = {
            (m.subject or "").rsplit(".", 1)[-1] for m in ours if int(_header(m, "Tianwang-First-Seq", "0")) == first
        }
        ends = [
            m
            for m in ours
            if int(_header(m, "Tianwang-First-Seq", "0")) == first and _header(m, "Tianwang-Window-End") == "1"
        ]
        expected = set(filter(None, _header(ends[0], "Tianwang-Families").split(","))) if ends else None
        if expected is not None and expected <= done:
            self.cursor = last + 1
        else:
            self._resume_window = (first, last, done)
            self.cursor = first
        self.stats["bridge_nats_resumes"] += 1
        if last >= journal.next_seq and self._ahead_of != last:
            await self._stream_ahead(journal, last)

    async def _stream_ahead(self, journal: Journal, last: int) -> None:
        """The stream holds seqs of this journal that the journal has not given yet (its directory
        was put back from an older copy, or damaged): the journal will give them to other
        envelopes, which cannot go into the stream under the same seqs. Say so where everyone
        looks (health, the log, the stream's `_gap` subject) and never skip them silently."""
        first = journal.next_seq
        self.alert = (
            f"stream {self.cfg.stream} holds seq up to {last} of journal {journal.id}, whose next seq is {first}: "
            f"the journal's envelopes {first}..{last} cannot be published under seqs the stream already holds "
            "(was the journal directory restored from an older copy?)"
        )
        log.error("nats bridge: %s; they are published as a Gap on %s.%s", self.alert, self.prefix, GAP_FAMILY)
        self._resume_window = None
        self.cursor = last + 1
        await self._publish(GAP_FAMILY, encode_gap(first, last, "lost"), first, last, 0, True, alert=self.alert)
        self._ahead_of = last
        self.stats["bridge_nats_gaps"] += 1

    # -- publishing ----------------------------------------------------------------------------
    def _filter(self, family: str) -> TopicFilter:
        flt = self._families.get(family)
        if flt is None:
            flt = self._families[family] = TopicFilter([f"{family}/#"])
        return flt

    async def _publish(
        self,
        family: str,
        payload: bytes,
        first: int,
        last: int,
        count: int,
        window_end: bool,
        families: Iterable[str] = (),
        alert: str = "",
    ) -> None:
        headers = {
            "Tianwang-Gateway": self.gateway,
            "Tianwang-Journal": self.app.journal.id,
            "Tianwang-First-Seq": str(first),
            "Tianwang-Last-Seq": str(last),
            "Tianwang-Count": str(count),
            "Nats-Msg-Id": f"{self.gateway}:{self.app.journal.id[:12]}:{first}-{last}:{family}",
        }
        if window_end:
            headers["Tianwang-Window-End"] = "1"
            headers["Tianwang-Families"] = ",".join(families)
        if alert:
            headers["Tianwang-Alert"] = alert
        ack = await self._jetstream().publish(
            f"{self.prefix}.{family}", payload, timeout=self.PUBLISH_TIMEOUT_S, headers=headers
        )
        if ack.duplicate:
            self.stats["bridge_nats_duplicates"] += 1
        if self.state != "ok":
            log.info("nats bridge: publishing again (lag %d envelopes)", self.lag)
            self.state, self.reason = "ok", ""
        self.stats["bridge_nats_messages"] += 1
        self.stats["bridge_nats_envelopes"] += count

    async def _pump(self) -> None:
        journal = self.app.journal
        cfg = self.cfg
        max_bytes = int(cfg.max_batch_bytes)
        delay = cfg.max_delay_ms / 1000.0
        while True:
            cursor = self.cursor
            if cursor >= journal.next_seq:
                await journal.wait(cursor, 1.0)
                continue
            if delay and journal.next_seq - cursor < cfg.max_batch:
                await asyncio.sleep(delay)  # let a partial batch fill
            gap, start = journal.gap_for(cursor)
            if gap is not None:
                await self._publish(GAP_FAMILY, gap, cursor, start - 1, 0, True)
                self.stats["bridge_nats_gaps"] += 1
                log.error("nats bridge: seq %d..%d left the journal before they were published", cursor, start - 1)
                self.cursor = start
                continue
            window = self._resume_window
            max_n = cfg.max_batch
            if window is not None:
                max_n = window[1] - window[0] + 1
            if journal.on_disk(cursor):
                data, n, nxt = await journal.read_disk(
                    self._reader, cursor, None, max_n, max_bytes if window is None else 1 << 30
                )
                if n == 0:
                    if data:  # records missing from the disk: say so in the stream too
                        await self._publish(GAP_FAMILY, data, cursor, nxt - 1, 0, True)
                        self.stats["bridge_nats_gaps"] += 1
                    self.cursor = nxt
                    continue
            else:
                data, n, nxt = journal.collect(cursor, None, max_n, max_bytes if window is None else 1 << 30)
                if n == 0:
                    continue
            await self._publish_window(data, n, cursor, nxt - 1)
            self.cursor = nxt

    async def _publish_window(self, data: bytes, n: int, first: int, last: int) -> None:
        window = self._resume_window
        done: set[str] = set()
        if window is not None:
            if (first, last) != window[:2]:
                raise BridgeError(
                    f"cannot rebuild the half-published window {window[0]}..{window[1]} (got {first}..{last})"
                )
            done = window[2]
        parts = []
        found = 0
        for family in list(self._families):
            part, m, _, _ = scan_entries(data, 0, first, first, self._filter(family), n, len(data) + 1)
            if m:
                parts.append((family, part, m))
                found += m
        if found < n:
            # a family not seen before: learn the families of this window, then take them
            from tianwang.v1 import gateway_pb2 as pb

            seen = {env.topic.split("/", 1)[0] for env in pb.Batch.FromString(data).envelopes}
            for family in sorted(seen - set(self._families)):
                part, m, _, _ = scan_entries(data, 0, first, first, self._filter(family), n, len(data) + 1)
                if m:
                    parts.append((family, part, m))
                    found += m
        if found != n:
            raise BridgeError(f"window {first}..{last}: {found} of {n} envelopes assigned to a family")
        todo = [p for p in parts if p[0] not in done]
        families = sorted(p[0] for p in parts)
        if not todo:
            # every family of the window was stored but its end was not marked: mark it
            await self._publish(GAP_FAMILY, b"", first, last, 0, True, families)
        else:
            # the window's messages go out together (one round trip, not one per family); the
            # last names every family of the window, so a resume can tell which ones are missing
            await asyncio.gather(
                *(
                    self._publish(family, part, first, last, m, i == len(todo) - 1, families)
                    for i, (family, part, m) in enumerate(todo)
                )
            )
        self._resume_window = None
