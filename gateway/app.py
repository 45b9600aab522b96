"""Process wiring: config -> journal, router, supervisor, gRPC server, metrics; signals.

One process, one asyncio loop on uvloop. SIGTERM/SIGINT stop everything within a few seconds
(health goes NOT_SERVING, Subscribe streams end, drivers close their ports, the server stops);
SIGHUP re-reads the config and applies only what changed, keeping every subscriber connected.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from tianwang import __version__
from tianwang.gateway import framing
from tianwang.gateway.datapath.auth import Authenticator, RateLimiter
from tianwang.gateway.datapath.fanout import GatewayService
from tianwang.gateway.datapath.journal import Journal
from tianwang.gateway.datapath.router import Router
from tianwang.gateway.errors import ConfigError, GatewayError, redact
from tianwang.gateway.lifecycle.config import Config, load_config, parse_hostport
from tianwang.gateway.lifecycle.heap import HeapKeeper
from tianwang.gateway.lifecycle.registry import default_registry
from tianwang.gateway.lifecycle.supervisor import Supervisor
from tianwang.v1 import gateway_pb2 as pb

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from tianwang.gateway.datapath.bridge import NatsBridge
    from tianwang.gateway.lifecycle.config import TLSConfig
    from tianwang.gateway.uplink.manager import Uplinks

log = logging.getLogger("tianwang.app")

# Whole shutdown budget (the issue asks for everything stopped within 5 s).
STOP_BUDGET_S = 4.5
# of which the NATS bridge may spend this much publishing what is pending
BRIDGE_DRAIN_S = 2.0
# of which commands in flight may spend this much finishing before they are cancelled
COMMAND_DRAIN_S = 1.0
# how long the loop's thread holds the GIL while another thread waits for it (Python's default is 5
# ms): at 20,000 readings/s with the journal on disk under `fsync: batch` it took p99 from 6.1 to 3.5
# ms (tianwang bench, latency section; docs/architecture.md)
GIL_SWITCH_INTERVAL_S = 0.0005


def server_options(config: Config):
    ka = config.gateway.keepalive
    return [
        # a second gateway on the same port must fail, not silently share it
        ("grpc.so_reuseport", 0),
        ("grpc.keepalive_time_ms", int(ka.time_s * 1000)),
        ("grpc.keepalive_timeout_ms", int(ka.timeout_s * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        # clients may ping this often without data before the server answers with GOAWAY
        ("grpc.http2.min_recv_ping_interval_without_data_ms", int(ka.min_client_ping_s * 1000)),
        ("grpc.http2.min_ping_interval_without_data_ms", int(ka.min_client_ping_s * 1000)),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.max_receive_message_length", 1024 * 1024),
    ]


_EARLY_SIGHUP = False


def hold_reloads() -> None:
    """Before the loop runs (`tianwang run` calls this first): a SIGHUP is held, not fatal, and
    `Gateway.serve` reloads once started."""

    def held(_signum, _frame):
        global _EARLY_SIGHUP
        _EARLY_SIGHUP = True

    signal.signal(signal.SIGHUP, held)


def _read_tls_files(tls: TLSConfig) -> tuple[bytes, bytes, bytes | None]:
    """(key, certificate chain, client CA or None) of `gateway.tls`."""
    ca = Path(tls.client_ca_file).read_bytes() if tls.client_ca_file else None
    return Path(tls.key_file).read_bytes(), Path(tls.cert_file).read_bytes(), ca


class Gateway:
    """A running gateway. `await start()`, then `await stop()`; `serve()` does both around signals."""

    bridge: NatsBridge | None  # with bridges.nats, from start()
    uplinks: Uplinks | None  # with uplinks, from start()

    def __init__(
        self, config: Config, *, registry=None, config_path: str | None = None, listen: str | None = None, shard=None
    ):
        self.config = config
        self.shard = shard  # (index, count) with `run --shard`: reloads keep to the same part
        self.registry = registry or default_registry()
        self.config_path = config_path
        self.listen = listen or config.gateway.listen
        self.version = __version__
        self.implementation = framing.IMPLEMENTATION
        self.started_ns = 0
        self.port = 0
        self.metrics_port = 0
        self.server: grpc.aio.Server | None = None
        self._metrics_server: WSGIServer | None = None
        self._stopped = asyncio.Event()
        self._stop_requested: asyncio.Event | None = None
        self.reloads = 0
        self._reload_lock = asyncio.Lock()
        self._reload_task: asyncio.Task | None = None
        self._reload_again = False
        self._stopping = False
        self.bridge = None
        self.uplinks = None
        self.heap = HeapKeeper()  # started by serve(): `tianwang run`

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        cfg = self.config
        self.started_ns = time.time_ns()
        self.journal = await open_journal(cfg.gateway.journal)
        self.router = Router(self.journal)
        self.supervisor = Supervisor(self.registry, self.router)
        self.auth = Authenticator(cfg.auth)
        warn_anonymous(cfg.auth)
        self.service = GatewayService(self)

        self.server = server = grpc.aio.server(options=server_options(cfg))
        server.add_generic_rpc_handlers((self.service.handler(),))
        self.health = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (pb.DESCRIPTOR.services_by_name["Gateway"].full_name, reflection.SERVICE_NAME, "grpc.health.v1.Health"),
            server,
        )
        tls = cfg.gateway.tls
        try:
            if tls is None:
                self.port = server.add_insecure_port(self.listen)
            else:
                # the certificate files are read off the loop, like any other file
                key, cert, ca = await asyncio.to_thread(_read_tls_files, tls)
                creds = grpc.ssl_server_credentials(
                    [(key, cert)], root_certificates=ca, require_client_auth=tls.client_ca_file is not None
                )
                self.port = server.add_secure_port(self.listen, creds)
        except RuntimeError as exc:
            raise GatewayError(f"gateway.listen: cannot listen on {self.listen}: {exc}") from None
        if not self.port:
            raise GatewayError(f"gateway.listen: cannot listen on {self.listen} (in use or not an address here)")
        try:
            await server.start()
        except BaseException:
            await self.journal.close()
            raise
        await self.journal.start()
        if cfg.bridges.nats is not None:
            from tianwang.gateway.datapath.bridge import NatsBridge

            self.bridge = bridge = NatsBridge(self, cfg.bridges.nats, cfg.gateway.name)
            await bridge.start()
        if cfg.gateway.metrics:
            from tianwang.gateway.datapath.metrics import serve_metrics

            try:
                ma = cfg.gateway.metrics_auth
                token = ma.token.get_secret_value() if ma is not None and ma.token is not None else None
                metrics_server, _ = serve_metrics(self, cfg.gateway.metrics, tls=cfg.gateway.tls, token=token)
                self._metrics_server = metrics_server
                self.metrics_port = metrics_server.server_port
            except OSError as exc:
                await server.stop(0)
                await self.journal.close()
                raise GatewayError(f"gateway.metrics: cannot listen on {cfg.gateway.metrics}: {exc.strerror}") from None
        if not framing.USING_CEXT:
            log.warning("hot path: running the pure-Python twins (%s)", framing.why_not_compiled())
        await self.supervisor.apply(cfg)
        await self._check_listeners(cfg)
        if cfg.uplinks:
            from tianwang.gateway.uplink.manager import Uplinks

            self.uplinks = Uplinks(self)
            await self.uplinks.apply(cfg)
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        await self.health.set(
            pb.DESCRIPTOR.services_by_name["Gateway"].full_name, health_pb2.HealthCheckResponse.SERVING
        )
        log.info(
            "gateway %s listening on %s (port %d), hot path %s, %d devices, %d listeners",
            cfg.gateway.name,
            self.listen,
            self.port,
            self.implementation,
            len(cfg.devices),
            len(cfg.listeners),
        )

    async def _check_listeners(self, cfg, wait_s: float = 2.0) -> None:
        """At start, a listener whose address is taken is a start error (another gateway, or a
        stale one, holds the port), not a device to retry for ever."""
        ids = [d.id for d in cfg.listeners if d.enabled]
        if not ids:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while loop.time() < deadline:
            entries = [self.supervisor.lookup(i) for i in ids]
            # settled: the driver's task ran and the listener is up or has failed
            if all(e is None or (e.state.value != "CONNECTING" and e.reason != "not started") for e in entries):
                break
            await asyncio.sleep(0.02)
        taken = []
        for i in ids:
            e = self.supervisor.lookup(i)
            if e is not None and e.state.value == "OFFLINE" and "address already in use" in e.reason.lower():
                listen = next(d.listen for d in cfg.listeners if d.id == i)
                taken.append(f"listener {i}: cannot listen on {listen}: the address is in use (another gateway?)")
        if taken:
            await self.stop()
            raise GatewayError("; ".join(taken))

    async def stop(self) -> None:
        """Stop serving: NOT_SERVING, end streams, close drivers, stop the server."""
        if self.server is None:
            return
        self._stopping = True
        try:
            await asyncio.wait_for(self._stop_steps(), STOP_BUDGET_S)
        except TimeoutError:
            log.error("shutdown took longer than %.1f s; cancelling what is left", STOP_BUDGET_S)
            await self.server.stop(0)
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
            self._metrics_server = None
        self.server = None
        self._stopped.set()

    async def _stop_steps(self):
        await self.health.enter_graceful_shutdown()
        self.service.close_streams()
        self.supervisor.stopping = True
        if self.uplinks is not None:
            await self.uplinks.stop()
        # commands in flight end (or are cancelled) while their devices and the journal are still
        # there, so each one's outcome is audited
        await self.service.finish_commands(COMMAND_DRAIN_S)
        await self.supervisor.stop_all()
        # what the drivers published last is written (and bridged) before the journal closes
        await self.journal.flush()
        if self.bridge is not None:
            await self.bridge.stop(BRIDGE_DRAIN_S)
        await self.journal.close()
        await self.server.stop(min(self.config.gateway.shutdown_grace_s, 1.5))

    async def reload(self) -> bool:
        """Re-read the config file and apply what changed. On a bad file, keep running as before.

        Reloads run one at a time (SIGHUPs that arrive during one are coalesced into one more
        run, see `request_reload`). Config, tokens and devices move together: the new tokens and
        config take effect in the same step as the devices, and every open stream is checked
        against the new tokens.
        """
        async with self._reload_lock:
            return await self._reload()

    async def _reload(self) -> bool:
        if not self.config_path:
            log.warning("SIGHUP: no config file to re-read (demo mode)")
            return False
        if self.server is None or self._stopping:
            return False
        try:
            new = load_config(self.config_path, self.registry)
        except ConfigError as exc:
            for path, reason in exc.problems:
                log.error("reload refused: %s: %s", exc.named(path) if path else "<file>", reason)
            return False
        if self.shard is not None:
            from tianwang.gateway.lifecycle.config import for_shard

            new = for_shard(new, *self.shard)
        old = self.config
        for key in ("name", "listen", "metrics", "metrics_auth", "tls", "journal"):
            if getattr(old.gateway, key) != getattr(new.gateway, key):
                log.warning("reload: gateway.%s changed; restart the gateway to apply it", key)
        config = new.model_copy(
            update={
                "gateway": new.gateway.model_copy(
                    update={
                        k: getattr(old.gateway, k)
                        for k in ("name", "listen", "metrics", "metrics_auth", "tls", "journal")
                    }
                )
            }
        )
        if (
            self.bridge is not None
            and new.bridges.nats is not None
            and self.bridge.credentials_only_change(new.bridges.nats)
        ):
            log.info("reload: bridges.nats credentials changed: the bridge uses them from its next connection")
            self.bridge.retry_now(new.bridges.nats)
        elif old.bridges != new.bridges:
            log.warning("reload: bridges changed; restart the gateway to apply it")
            config = config.model_copy(update={"bridges": old.bridges})
        elif self.bridge is not None:
            self.bridge.retry_now()  # after refused credentials: try again at once
        try:
            auth = Authenticator(new.auth)
        except Exception as exc:  # the config validated, so this is a bug; keep the old tokens
            log.error("reload refused: auth: %s", exc)
            return False
        # tokens and config switch together, before any await: no call sees one without the other
        self.config = config
        self.auth = auth
        ended = self.service.recheck_streams(auth)
        if (old.auth.refused_commands_per_s, old.auth.refused_commands_burst) != (
            new.auth.refused_commands_per_s,
            new.auth.refused_commands_burst,
        ):
            self.service.refusals = RateLimiter(new.auth.refused_commands_per_s, new.auth.refused_commands_burst)
        warn_anonymous(new.auth)
        changes = await self.supervisor.apply(self.config)
        if self.config.uplinks or self.uplinks is not None:
            if self.uplinks is None:
                from tianwang.gateway.uplink.manager import Uplinks

                self.uplinks = Uplinks(self)
            await self.uplinks.apply(self.config)
        self.reloads += 1
        log.info(
            "reloaded %s: started %s, stopped %s, restarted %s%s%s; %d streams ended or narrowed by token changes",
            self.config_path,
            changes["started"] or "none",
            changes["stopped"] or "none",
            changes["restarted"] or "none",
            f", updated in place {changes['updated']}" if changes.get("updated") else "",
            f", FAILED to start {changes['failed']}" if changes["failed"] else "",
            ended,
        )
        return True

    def request_reload(self) -> asyncio.Task | None:
        """SIGHUP: reload now, or once more after the reload in progress (however many SIGHUPs
        arrive meanwhile). Returns the task that will do it, if a new one was started."""
        if self._reload_task is not None and not self._reload_task.done():
            self._reload_again = True
            return None

        async def run():
            while True:
                self._reload_again = False
                try:
                    await self.reload()
                except Exception:  # a reload must never take the gateway down
                    log.exception("reload failed")
                if not self._reload_again:
                    return

        self._reload_task = asyncio.get_running_loop().create_task(run(), name="reload")
        return self._reload_task

    def request_stop(self) -> None:
        if self._stop_requested is not None:
            self._stop_requested.set()

    def _hold_signals(self, loop) -> list:
        """The handlers of start-up: SIGTERM/SIGINT stop once started, a SIGHUP is held (in the
        list returned) for a reload once started."""
        held: list = []
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, held.append, True)
        return held

    async def serve(self, ready=None) -> None:
        """Start, run until SIGTERM/SIGINT (SIGHUP reloads), stop. `ready(gateway)` is called once
        the server listens.

        The handlers are in place before start-up: a SIGHUP then (a `systemctl reload` while the
        gateway starts) is held and its reload runs once started, and a SIGTERM stops the gateway
        once started, instead of the signal's default action killing the process half-started."""
        global _EARLY_SIGHUP
        loop = asyncio.get_running_loop()
        self._stop_requested = asyncio.Event()
        held = self._hold_signals(loop)
        await self.start()
        # what start built (modules, config, drivers, gRPC) lives as long as the process: moved out
        # of the collector's way, so a full collection no longer walks it while readings wait
        gc.freeze()
        # and what the devices build later (a city's registrations, catalogs) once it makes full
        # collections slow (lifecycle/heap.py)
        self.heap.start()
        # a thread that finishes work for the loop (the journal's fsync in an executor, gRPC's
        # completion queue) needs the GIL to hand its result over; while the loop is busy it got it
        # only when the loop's thread gave it up at the end of the 5 ms default switch interval
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        try:
            if held or _EARLY_SIGHUP:
                _EARLY_SIGHUP = False
                log.info("SIGHUP during start-up: reloading now")
                self.request_reload()
            if ready is not None:
                ready(self)
            await self._stop_requested.wait()
            log.info("stopping")
        finally:
            # a SIGHUP while stopping is ignored rather than fatal (the handlers go once stopped)
            loop.add_signal_handler(signal.SIGHUP, log.info, "SIGHUP while stopping: ignored")
            try:
                await self.heap.stop()
                await self.stop()
            finally:
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    loop.remove_signal_handler(sig)

    # -- stats ---------------------------------------------------------------------------------
    def health_state(self) -> tuple[str, str]:
        """("SERVING", "") or ("DEGRADED", why): the journal cannot write, or the bridge cannot publish."""
        reasons = []
        if self.journal.state == "failed":
            reasons.append(f"journal: {self.journal.error}")
        if self.bridge is not None and self.bridge.state != "ok":
            reasons.append(f"nats bridge {self.bridge.state}: {self.bridge.reason or 'not connected yet'}")
        if self.bridge is not None and self.bridge.alert:
            reasons.append(f"nats bridge: {self.bridge.alert}")
        return ("DEGRADED", "; ".join(reasons)) if reasons else ("SERVING", "")

    def stats(self, viewer=None) -> pb.Stats:
        """GetStats. `viewer`: the caller's Principal; unless it is an admin (`admin: true` or
        `control: ["#"]`) it sees only its own token's streams in `subscriber_stats`."""
        journal = self.journal
        svc = self.service
        families: dict[str, pb.FamilyStats] = {}
        sees_all = viewer is None or viewer.is_admin or "#" in viewer.read
        visible = list(self.supervisor.entries.values()) if sees_all else visible_entries(self.supervisor, viewer)
        if sees_all:
            for family, n in self.supervisor.family_envelopes().items():
                families[family] = pb.FamilyStats(family=family, envelopes=n)
        else:
            # only the devices the token may read (as ListDevices): their counts, states and drops
            for e in visible:
                fs = families.setdefault(e.family, pb.FamilyStats(family=e.family))
                fs.envelopes += e.envelopes
        for e in visible:
            row = families.get(e.family)
            if row is None:
                row = families[e.family] = pb.FamilyStats(family=e.family)
            row.devices += 1
            row.states[e.state.value] = row.states.get(e.state.value, 0) + 1
        counters = dict(svc.counters)
        counters.update(journal.counters())
        health, reason = self.health_state()
        if self.bridge is not None:
            counters.update(self.bridge.counters())
        counters.update(
            envelopes_routed=journal.last_seq,
            journal_trimmed=journal.log.trimmed,
            router_rejected=self.router.rejected,
            frames_dropped=sum(self.supervisor.drops.values()),
            device_restarts=self.supervisor.restarts,
            reloads=self.reloads,
        )
        return pb.Stats(
            gateway=self.config.gateway.name,
            version=self.version,
            using_cext=framing.USING_CEXT,
            started_ns=self.started_ns,
            first_seq=journal.first_seq,
            last_seq=journal.last_seq,
            journal_bytes=journal.nbytes,
            journal_max_bytes=journal.max_bytes,
            subscribers=len(svc.subscribers),
            journal_id=journal.id,
            journal_durable=journal.durable,
            journal_disk_bytes=getattr(journal, "disk_bytes", 0),
            health=health,
            health_reason=redact(reason),  # shown to every caller: no URL credentials in it
            counters=counters,
            families=[families[name] for name in sorted(families)],  # keyed by family
            subscriber_stats=svc.subscriber_stats(viewer),
            drops=[
                pb.DropStats(driver=driver, reason=reason, frames=n)
                for (driver, reason), n in sorted(list(self.supervisor.drops.items()))
                if sees_all or driver in {e.driver for e in visible}
            ],
        )


def visible_entries(supervisor, viewer) -> list:
    """The device table as `viewer` (a Principal) may see it: the devices whose topics it may read
    or that it may command, as ListDevices lists them."""
    return [
        e
        for e in supervisor.entries.values()
        if viewer.may_read_any(f"{e.family}/{e.id}/#") or viewer.may_control(e.family, e.id)
    ]


def warn_anonymous(auth_config) -> None:
    """Tokenless reads are a deliberate choice: say so loudly at every start and reload."""
    if auth_config.anonymous_read:
        log.warning(
            "auth.anonymous_read is on: anyone who reaches this port may read %s without a token",
            ", ".join(auth_config.anonymous_read),
        )


async def open_journal(jc) -> Journal:
    """The journal `gateway.journal` asks for: memory only, or durable under `path`."""
    if jc.path is None:
        return Journal(int(jc.max_bytes))
    from tianwang.gateway.datapath.journal import DurableJournal
    from tianwang.gateway.datapath.segments import SegmentStore

    store = SegmentStore(
        jc.path, segment_bytes=int(jc.segment_bytes), max_bytes=int(jc.disk_max_bytes), max_age_s=jc.max_age_s
    )
    next_seq = await asyncio.get_running_loop().run_in_executor(None, store.open)
    store.retention()
    held = f"seq {store.first_seq}..{next_seq - 1} on disk ({store.nbytes} bytes)" if store.nbytes else "empty"
    log.info(
        "journal %s at %s (%s): %s, next seq %d, fsync %s",
        store.journal_id,
        jc.path,
        store.how_opened,
        held,
        next_seq,
        jc.fsync,
    )
    return DurableJournal(int(jc.max_bytes), store, fsync=jc.fsync, fsync_window_ms=jc.fsync_window_ms)


def announce(gw: Gateway, stream=None, extra: dict | None = None) -> None:
    """One JSON line on stdout once listening: what scripts and tests wait for (`extra` keys added:
    the demo's tokens)."""
    host, _ = parse_hostport(gw.listen)
    line = {
        "event": "ready",
        "gateway": gw.config.gateway.name,
        "shard": f"{gw.shard[0]}/{gw.shard[1]}" if gw.shard else None,
        "listen": f"{host}:{gw.port}" if ":" not in host else f"[{host}]:{gw.port}",
        "metrics": f"{parse_hostport(gw.config.gateway.metrics or '')[0]}:{gw.metrics_port}"
        if gw.metrics_port
        else None,
        "hot_path": gw.implementation,
        "pid": os.getpid(),
        **(extra or {}),
    }
    out = stream or sys.stdout
    out.write(json.dumps(line) + "\n")
    out.flush()
