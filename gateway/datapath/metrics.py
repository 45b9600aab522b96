"""Prometheus metrics (`gateway.metrics` address in config).

Nothing on the hot path touches prometheus-client: the router, drivers and fan-out keep plain
counters, and this collector reads them when Prometheus scrapes. The HTTP endpoint (prometheus-
client's WSGI app, behind a bearer token when `gateway.metrics_auth` is set, over HTTPS when
`gateway.tls` is) runs in its own thread; reads of the counters there are single C-level dict copies.
"""

from __future__ import annotations

import hashlib
import hmac
import ssl
import threading
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.metrics_core import Metric

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

    from tianwang.gateway.app import Gateway
    from tianwang.gateway.lifecycle.config import TLSConfig


class GatewayCollector:
    def __init__(self, app: Gateway) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        app = self.app
        journal = app.journal
        sup = app.supervisor
        svc = app.service
        info = InfoMetricFamily("tianwang_build", "Gateway build and hot-path implementation")
        info.add_metric(
            [], {"gateway": app.config.gateway.name, "version": app.version, "hot_path": app.implementation}
        )
        yield info

        entries = list(sup.entries.values())
        env = CounterMetricFamily("tianwang_envelopes", "Envelopes routed from devices, by family", labels=["family"])
        by_family = sup.family_envelopes()  # monotonic: devices removed or restarted still count
        states: dict[tuple[str, str], int] = {}
        for e in entries:
            key = (e.family, e.state.value)
            states[key] = states.get(key, 0) + 1
        for fam, n in sorted(by_family.items()):
            env.add_metric([fam], n)
        yield env

        dev = GaugeMetricFamily("tianwang_devices", "Devices by family and health state", labels=["family", "state"])
        for (fam, state), n in sorted(states.items()):
            dev.add_metric([fam, state], n)
        yield dev

        drops = CounterMetricFamily(
            "tianwang_frames_dropped", "Frames dropped by drivers, by reason", labels=["driver", "reason"]
        )
        for (driver, reason), n in sorted(list(sup.drops.items())):
            drops.add_metric([driver, reason], n)
        yield drops

        yield CounterMetricFamily(
            "tianwang_device_restarts",
            "Driver runs that ended and were retried (link drops + failed attempts)",
            value=sup.restarts,
        )
        # per configured device (their number is bounded by the config; terminals that dial into a
        # listener are not counted here): a link that came up and dropped, apart from an attempt
        # that never got the device ONLINE (down, unreachable, or refusing the credentials)
        link_drops = CounterMetricFamily(
            "tianwang_link_drops",
            "Links that dropped after the device had been ONLINE or DEGRADED",
            labels=["driver", "device"],
        )
        for (driver, device), n in sorted(list(sup.link_drops.items())):
            link_drops.add_metric([driver, device], n)
        yield link_drops
        failed = CounterMetricFamily(
            "tianwang_connect_failures",
            "Connection attempts that ended before the device was ONLINE",
            labels=["driver", "device"],
        )
        for (driver, device), n in sorted(list(sup.failed_attempts.items())):
            failed.add_metric([driver, device], n)
        yield failed
        yield GaugeMetricFamily("tianwang_journal_bytes", "Bytes held by the journal", value=journal.nbytes)
        yield GaugeMetricFamily("tianwang_journal_max_bytes", "Journal retention limit", value=journal.max_bytes)
        yield GaugeMetricFamily("tianwang_journal_first_seq", "Oldest seq held", value=journal.first_seq)
        yield GaugeMetricFamily("tianwang_journal_last_seq", "Newest seq", value=journal.last_seq)
        yield CounterMetricFamily(
            "tianwang_journal_trimmed", "Envelopes dropped from memory by retention", value=journal.log.trimmed
        )
        yield CounterMetricFamily(
            "tianwang_router_rejected",
            "Readings refused by the router (unencodable, oversize)",
            value=app.router.rejected,
        )
        if journal.durable:
            jc = journal.counters()
            yield GaugeMetricFamily(
                "tianwang_journal_disk_bytes", "Bytes of journal segments on disk", value=jc["journal_disk_bytes"]
            )
            yield GaugeMetricFamily(
                "tianwang_journal_unwritten",
                "Envelopes appended but not yet written to disk",
                value=jc["journal_unwritten"],
            )
            yield CounterMetricFamily(
                "tianwang_journal_write_errors", "Failed journal writes or syncs", value=jc["journal_write_errors"]
            )
            yield CounterMetricFamily("tianwang_journal_fsyncs", "Journal syncs", value=jc["journal_fsyncs"])
        yield GaugeMetricFamily(
            "tianwang_journal_degraded",
            "1 while the durable journal cannot write (readings are refused)",
            value=1 if journal.state == "failed" else 0,
        )
        bridge = getattr(app, "bridge", None)
        if bridge is not None:
            bc = bridge.counters()
            yield GaugeMetricFamily(
                "tianwang_bridge_nats_up", "1 while the NATS bridge publishes", value=1 if bridge.healthy else 0
            )
            yield GaugeMetricFamily(
                "tianwang_bridge_nats_lag", "Envelopes routed but not yet in the stream", value=bc["bridge_nats_lag"]
            )
            for name, help_text in (
                ("bridge_nats_messages", "NATS messages (batches) published and acknowledged"),
                ("bridge_nats_envelopes", "Envelopes published to the stream"),
                ("bridge_nats_failures", "NATS connection or publish failures"),
                ("bridge_nats_gaps", "Gaps published (envelopes gone from the journal before the bridge reached them)"),
            ):
                yield CounterMetricFamily(f"tianwang_{name}", help_text, value=bc[name])
        yield GaugeMetricFamily("tianwang_subscribers", "Open Subscribe streams", value=len(svc.subscribers))
        counters = dict(svc.counters)
        for name, help_text in (
            ("batches_sent", "Batches written to subscribers"),
            ("envelopes_delivered", "Envelopes written to subscribers"),
            ("gaps_sent", "Gaps sent to subscribers behind retention"),
            ("subscribe_calls", "Subscribe calls accepted"),
            ("commands", "SendCommand calls"),
            ("commands_denied", "SendCommand calls refused before reaching a device"),
            ("commands_failed", "Commands that reached a device and failed"),
            ("requests_unauthenticated", "Calls refused for a missing or unknown token"),
            ("requests_invalid", "Calls refused as malformed"),
        ):
            yield CounterMetricFamily(f"tianwang_{name}", help_text, value=counters.get(name, 0))


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # no access log on stderr (and never a header)
        pass


def _guard(inner: WSGIApplication, token: str | None) -> WSGIApplication:
    """The /metrics WSGI app, behind `Authorization: Bearer <token>` when a token is set."""
    if not token:
        return inner
    expected = hashlib.sha256(f"Bearer {token}".encode()).digest()

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        presented = hashlib.sha256(environ.get("HTTP_AUTHORIZATION", "").strip().encode("latin-1", "replace")).digest()
        if not hmac.compare_digest(presented, expected):
            start_response(
                "401 Unauthorized",
                [
                    ("Content-Type", "text/plain; charset=utf-8"),
                    ("WWW-Authenticate", 'Bearer realm="tianwang metrics"'),
                ],
            )
            return [b"401: /metrics needs 'Authorization: Bearer <token>' (gateway.metrics_auth)\n"]
        return inner(environ, start_response)

    return app


def serve_metrics(
    app: Gateway, address: str, *, tls: TLSConfig | None = None, token: str | None = None
) -> tuple[WSGIServer, CollectorRegistry]:
    """Start the /metrics endpoint on HOST:PORT in a thread; returns (server, registry). Port 0
    picks one. `tls` (a TLSConfig) serves HTTPS with its certificate; `token` requires a bearer
    token."""
    from tianwang.gateway.lifecycle.config import parse_hostport

    host, port = parse_hostport(address)
    registry = CollectorRegistry(auto_describe=True)
    registry.register(GatewayCollector(app))
    server = make_server(
        host, port, _guard(make_wsgi_app(registry), token), ThreadingWSGIServer, handler_class=_QuietHandler
    )
    if tls is not None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, name="metrics", daemon=True)
    thread.start()
    return server, registry
