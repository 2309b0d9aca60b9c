"""The sidecar's own small HTTP servers: admin (15000: /config_dump, /stats, /clusters, /ready,
/stats/prometheus), stats (15090: /stats/prometheus) and health (15021: /healthz/ready)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Coroutine
from typing import Any

from meshtrace.sidecar.conn import Downstream, Timeouts, Wire
from meshtrace.sidecar.http1 import HttpError, RequestHead, simple_response
from meshtrace.sidecar.proxy import Proxy

Page = tuple[int, bytes, str]
PROM_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def prometheus(proxy: Proxy) -> bytes:
    metrics = proxy.metrics
    lines = metrics.exposition()
    ex = proxy.exporter
    own = {
        "meshtrace_sidecar_metric_series": ("gauge", metrics.series),
        "meshtrace_sidecar_metric_series_overflow_total": ("counter", metrics.overflowed),
        "meshtrace_sidecar_metric_series_evicted_total": ("counter", metrics.evicted),
        "meshtrace_sidecar_loops_detected_total": ("counter", proxy.loops_detected),
        "meshtrace_sidecar_rbac_denied_total": ("counter", proxy.rbac_denied),
        "meshtrace_sidecar_spans_exported_total": ("counter", ex.exported),
        "meshtrace_sidecar_span_export_failures_total": ("counter", ex.dropped["export_failed"]),
        "meshtrace_sidecar_span_export_retries_total": ("counter", ex.retries),
        "meshtrace_sidecar_spans_queued": ("gauge", ex.pending),
        "meshtrace_sidecar_span_buffer_bytes": ("gauge", ex.buffered),
        "envoy_server_total_connections": ("gauge", proxy.connections),
    }
    for name, (kind, value) in own.items():
        lines += [f"# TYPE {name} {kind}", f"{name} {value}"]
    dropped = "meshtrace_sidecar_spans_dropped_total"
    lines.append(f"# TYPE {dropped} counter")
    lines += [f'{dropped}{{reason="{reason}"}} {n}' for reason, n in ex.dropped.items()]
    return ("\n".join(lines) + "\n").encode()


def envoy_stats(proxy: Proxy) -> bytes:
    """Envoy's /stats text: `name: value` per counter, sorted."""
    ex = proxy.exporter
    stats = dict(proxy.counters)
    stats.update(
        {
            "tracing.spans_exported": ex.exported,
            "tracing.spans_dropped": ex.dropped_total,
            **{f"tracing.spans_dropped.{reason}": n for reason, n in ex.dropped.items()},
            "tracing.export_failures": ex.dropped["export_failed"],
            "tracing.export_retries": ex.retries,
            "tracing.spans_pending": ex.pending,
            "server.total_connections": proxy.connections,
            "cluster_manager.upstream_cx_total": proxy.pool.opened,
            "stats.overflow": proxy.metrics.overflowed,
            "http.loop_detected": proxy.loops_detected,
            "http.rbac.denied": proxy.rbac_denied,  # Envoy's RBAC filter counter
            "listener.ssl.handshake_error": proxy.tls_handshake_errors(),
            "listener.plaintext_refused": proxy.plaintext_refused,
            "listener.ssl.peer_rejected": proxy.peers_rejected,
        }
    )
    return "".join(f"{k}: {v}\n" for k, v in sorted(stats.items())).encode()


def clusters(proxy: Proxy) -> bytes:
    """Envoy's /clusters text: one line per endpoint of every outbound cluster."""
    lines = []
    for svc in proxy.cfg.registry.services.values():
        for port in svc.ports or (80,):
            name = f"outbound|{port}||{svc.fqdn}"
            for ep in svc.endpoints:
                lines.append(f"{name}::{ep.ip}:{ep.port}::health_flags::healthy")
    app = proxy.ident.app_port
    if proxy.ident.mode != "gateway":
        lines.append(f"inbound|{app}||::{proxy.ident.app_host}:{app}::health_flags::healthy")
    return ("\n".join(lines) + "\n").encode()


def admin_page(proxy: Proxy, head: RequestHead) -> Page:
    path = head.target.split("?", 1)[0]
    if path == "/config_dump":
        body = json.dumps({"version": proxy.cfg.version, "config": proxy.cfg.document}, indent=2).encode()
        return 200, body, "application/json"
    if path == "/stats/prometheus":
        return 200, prometheus(proxy), PROM_TYPE
    if path == "/stats":
        return 200, envoy_stats(proxy), "text/plain"
    if path == "/clusters":
        return 200, clusters(proxy), "text/plain"
    if path in ("/ready", "/healthz/ready"):
        return 200, b"LIVE\n", "text/plain"
    if path == "/certs":  # Envoy's: the certificate in use, for `meshtrace status` and people
        certs = proxy.certs
        doc = {"certificates": []} if certs is None or not certs.ready else {
            "certificates": [{"identity": certs.identity, "expires_at": certs.expires_at}]
        }  # fmt: skip
        return 200, json.dumps(doc).encode(), "application/json"
    if path == "/server_info":
        body = json.dumps(
            {"node_id": proxy.ident.node_id, "state": "LIVE", "version": proxy.cfg.version}
        ).encode()
        return 200, body, "application/json"
    return (
        404,
        b"unknown admin path; try /config_dump /stats /stats/prometheus /clusters /certs /ready\n",
        "text/plain",
    )


def stats_page(proxy: Proxy, head: RequestHead) -> Page:
    if head.target.split("?", 1)[0] == "/stats/prometheus":
        return 200, prometheus(proxy), PROM_TYPE
    return 404, b"try /stats/prometheus\n", "text/plain"


def health_page(proxy: Proxy, head: RequestHead) -> Page:
    if head.target.split("?", 1)[0] == "/healthz/ready":
        return 200, b"", "text/plain"
    return 404, b"try /healthz/ready\n", "text/plain"


def local_server(
    proxy: Proxy, page: Callable[[Proxy, RequestHead], Page], timeouts: Timeouts
) -> Callable[[Wire], Coroutine[Any, Any, None]]:
    async def serve(writer: Wire) -> None:
        ds = Downstream(writer, timeouts)
        try:
            while (head := await ds.next_head()) is not None:
                if isinstance(head, HttpError):
                    writer.write(simple_response(head.status, head.detail.encode(), keep_alive=False))
                    await ds.linger_close()
                    break
                while await ds.body_chunk() is not None:
                    pass
                status, body, ctype = page(proxy, head)
                writer.write(simple_response(status, body, ctype, keep_alive=head.keep_alive))
                await writer.drain()
                if not head.keep_alive:
                    break
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                await writer.drain()
            ds.close()

    return serve
