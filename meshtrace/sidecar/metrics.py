"""Istio's standard HTTP metrics (docs/upstream-behaviour.md §3) with Telemetry tagOverrides, and the
Prometheus text exposition. Per request the cost is one dict lookup in a label cache (labels depend only on
peer, service, status and flags) and a few integer adds; label strings are built once per series.

Bounded: each metric holds at most `series_limit` label sets; past it a request is recorded into
its reporter's overflow series (every other label `overflow`) and counted. Label sets not used
between two sweeps (`sweep()`, every stats eviction interval) are evicted, as Envoy's stats
eviction does for Istio's metrics (mark and sweep; a returning series restarts from zero).
"""

from __future__ import annotations

import base64
import bisect
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from meshtrace.prometheus import envoy_value, family_header, label_set, sample
from meshtrace.sidecar.config import MetricOverride, SidecarConfig
from meshtrace.sidecar.grpc import GrpcCall

BUCKETS: Final = (
    0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000,
    1800000, 3600000,
)  # fmt: skip
LABELS: Final = (
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_canonical_service",
    "source_canonical_revision",
    "source_cluster",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_cluster",
    "request_protocol",
    "response_code",
    "grpc_response_status",
    "response_flags",
    "connection_security_policy",
)
# metric key in Telemetry overrides -> (Prometheus name, kind, help)
METRICS: Final = {
    "REQUEST_COUNT": ("istio_requests_total", "counter", "Total requests."),
    "REQUEST_DURATION": ("istio_request_duration_milliseconds", "histogram", "Request duration (ms)."),
    "REQUEST_SIZE": ("istio_request_bytes", "histogram", "Request size (bytes)."),
    "RESPONSE_SIZE": ("istio_response_bytes", "histogram", "Response size (bytes)."),
    # gRPC streams only (Istio's stats filter counts the messages its gRPC stats filter saw)
    "GRPC_REQUEST_MESSAGES": ("istio_request_messages_total", "counter", "gRPC request messages."),
    "GRPC_RESPONSE_MESSAGES": ("istio_response_messages_total", "counter", "gRPC response messages."),
}
_MESSAGE_METRICS: Final = ("GRPC_REQUEST_MESSAGES", "GRPC_RESPONSE_MESSAGES")
# Istio's TCP metrics: counters, same labels as the request metrics but response_code and
# grpc_response_status, with request_protocol="tcp"
TCP_METRICS: Final = {
    "TCP_OPENED_CONNECTIONS": ("istio_tcp_connections_opened_total", "Total TCP connections opened."),
    "TCP_CLOSED_CONNECTIONS": ("istio_tcp_connections_closed_total", "Total TCP connections closed."),
    "TCP_SENT_BYTES": ("istio_tcp_sent_bytes_total", "Bytes sent to the client (response direction)."),
    "TCP_RECEIVED_BYTES": (
        "istio_tcp_received_bytes_total",
        "Bytes received from the client (request direction).",
    ),
}
_NOT_TCP_LABELS: Final = ("response_code", "grpc_response_status")
PEER_HEADER: Final = "x-envoy-peer-metadata"
PEER_ID_HEADER: Final = "x-envoy-peer-metadata-id"
UNKNOWN: Final = "unknown"
OVERFLOW: Final = "overflow"
# label sets per metric: at 200 the page stays under ~15 MB (11 MB with short Hosts)
# (each label set is ~65 lines: its count and 3 histograms of 21 buckets)
SERIES_LIMIT: Final = 200
EVICTION_INTERVAL_S: Final = 300.0
# label values are cut here (Istio's providers' default max_tag_length): a Host header can be
# 60 KiB, and every line of a label set repeats its labels
MAX_LABEL_VALUE: Final = 256
# requests whose Host is longer are labelled without the cache (the key would hold the Host)
MAX_CACHED_HOST: Final = 256


def peer_metadata(cfg: SidecarConfig, node_id: str, pod: str) -> str:
    """This workload's metadata-exchange header value (Istio's peer metadata, as base64 JSON)."""
    w = cfg.workload
    doc = {
        "NAME": pod,
        "NAMESPACE": w.namespace,
        "WORKLOAD_NAME": w.name,
        "LABELS": w.labels,
        "CLUSTER_ID": cfg.mesh.cluster_id,
        "CANONICAL_SERVICE": w.canonical_service,
        "CANONICAL_REVISION": w.canonical_revision,
        "NODE_ID": node_id,
    }
    return base64.b64encode(json.dumps(doc, separators=(",", ":")).encode()).decode()


def decode_peer(raw: str | None) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        doc = json.loads(base64.b64decode(raw, validate=True))
    except (ValueError, json.JSONDecodeError):
        return {}
    return doc if isinstance(doc, dict) else {}


@dataclass(slots=True)
class Observation:
    """What the metrics need to know about one finished request."""

    outbound: bool  # reporter=source
    peer_raw: str | None  # the other workload's metadata header
    peer_principal: str  # the other side's SPIFFE id when the hop is mTLS, else ""
    service_fqdn: str
    service_name: str
    service_namespace: str
    port: int
    host: str
    status: int
    flags: str
    duration_ms: float
    request_bytes: int
    response_bytes: int
    protocol: str = "HTTP/1.1"
    grpc: GrpcCall | None = None  # a gRPC stream: its status label and message counts


class _Histogram:
    __slots__ = ("buckets", "count", "sum")

    def __init__(self) -> None:
        self.buckets = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, v: float) -> None:
        self.buckets[bisect.bisect_left(BUCKETS, v)] += 1
        self.sum += v
        self.count += 1


class _Counter:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0


Counter = _Counter  # what callers that count into a series themselves (TCP tunnels) hold


# what one cached label set records into: the count cell, the three histograms and the two gRPC
# message counters (None where the metric is disabled by a Telemetry override, or for a request
# that is not gRPC), and whether any of them is an overflow series
_Cells = tuple[
    _Counter | None,
    _Histogram | None,
    _Histogram | None,
    _Histogram | None,
    _Counter | None,
    _Counter | None,
    bool,
]


def _overflow_labels(outbound: bool) -> str:
    labels = {k: OVERFLOW for k in LABELS}
    labels["reporter"] = "source" if outbound else "destination"
    return label_set(labels.items())


_OVERFLOW_LABELS: Final = {True: _overflow_labels(True), False: _overflow_labels(False)}
_LE: Final = (*map(envoy_value, BUCKETS), "+Inf")  # the buckets' `le` labels, spelled once


class IstioMetrics:
    def __init__(self, series_limit: int = SERIES_LIMIT) -> None:
        # label string (`{a="b",...}`) per (metric key, series) -> value
        self.counters: dict[str, dict[str, _Counter]] = {}
        self.histograms: dict[str, dict[str, _Histogram]] = {}
        self.series_limit = series_limit
        self.overflowed = 0  # requests recorded into an overflow series
        self.evicted = 0  # label sets removed by sweeps
        self._cache: dict[tuple[Any, ...], _Cells] = {}
        # cells used since the last sweep whose cache entries were dropped (cache full, new config)
        self._marked: set[int] = set()
        self._cfg: SidecarConfig | None = None
        self._peer_cache: dict[str, dict[str, Any]] = {}
        # TCP metric key -> label string -> counter; not swept (an open connection keeps adding)
        self.tcp: dict[str, dict[str, _Counter]] = {k: {} for k in TCP_METRICS}

    def configure(self, cfg: SidecarConfig) -> None:
        """New config: label series computed under the old overrides are not reused."""
        self._cfg = cfg
        self._drop_cache()

    def _drop_cache(self) -> None:
        for cells in self._cache.values():
            self._marked.update(id(c) for c in cells[:6] if c is not None)
        self._cache.clear()

    @property
    def series(self) -> int:
        """Label sets held, over all metrics."""
        return sum(map(len, self.counters.values())) + sum(map(len, self.histograms.values()))

    def sweep(self) -> int:
        """Evict the label sets no request used since the previous sweep (the cache holds exactly
        the used ones, plus `_marked`); returns how many went."""
        self._drop_cache()
        used, self._marked = self._marked, set()
        gone = 0
        tables: list[dict[str, Any]] = [*self.counters.values(), *self.histograms.values()]
        for table in tables:
            for labels in [k for k, cell in table.items() if id(cell) not in used]:
                del table[labels]
                gone += 1
        self.evicted += gone
        return gone

    def _peer(self, raw: str | None) -> dict[str, Any]:
        if not raw:
            return {}
        doc = self._peer_cache.get(raw)
        if doc is None:
            if len(self._peer_cache) > 1024:
                self._peer_cache.clear()
            doc = self._peer_cache[raw] = decode_peer(raw)
        return doc

    def _base(self, o: Observation, cfg: SidecarConfig) -> tuple[dict[str, str], dict[str, Any]]:
        me = cfg.workload
        peer = self._peer(o.peer_raw)
        peer_labels = peer.get("LABELS") if isinstance(peer.get("LABELS"), dict) else {}
        assert isinstance(peer_labels, dict)
        mine = {
            "workload": me.name,
            "workload_namespace": me.namespace,
            # principals are known only on an mTLS hop, where both certificates name them
            "principal": cfg.security.identity or UNKNOWN if o.peer_principal else UNKNOWN,
            "app": me.labels.get("app", UNKNOWN),
            "version": me.labels.get("version", UNKNOWN),
            "canonical_service": me.canonical_service,
            "canonical_revision": me.canonical_revision,
            "cluster": cfg.mesh.cluster_id,
        }
        theirs = {
            "workload": str(peer.get("WORKLOAD_NAME", UNKNOWN)),
            "workload_namespace": str(peer.get("NAMESPACE", UNKNOWN)),
            "principal": o.peer_principal or UNKNOWN,
            "app": str(peer_labels.get("app", UNKNOWN)),
            "version": str(peer_labels.get("version", UNKNOWN)),
            "canonical_service": str(peer.get("CANONICAL_SERVICE", UNKNOWN)),
            "canonical_revision": str(peer.get("CANONICAL_REVISION", UNKNOWN)),
            "cluster": str(peer.get("CLUSTER_ID", UNKNOWN)),
        }
        src, dst = (mine, theirs) if o.outbound else (theirs, mine)
        labels = {"reporter": "source" if o.outbound else "destination"}
        labels.update({f"source_{k}": v for k, v in src.items()})
        labels.update({f"destination_{k}": v for k, v in dst.items() if k != "cluster"})
        labels["destination_service"] = o.service_fqdn
        labels["destination_service_name"] = o.service_name
        labels["destination_service_namespace"] = o.service_namespace
        labels["destination_cluster"] = dst["cluster"]
        grpc = o.grpc
        labels["request_protocol"] = "grpc" if grpc is not None else "http"
        labels["response_code"] = str(o.status)
        status = grpc.status if grpc is not None else None
        labels["grpc_response_status"] = str(status) if status is not None else ""
        labels["response_flags"] = o.flags
        # Istio's: the destination reports what its listener saw; the source never knows
        labels["connection_security_policy"] = (
            UNKNOWN if o.outbound else "mutual_tls" if o.peer_principal else "none"
        )
        ordered = {k: labels[k] for k in LABELS}
        attrs = {
            "request.protocol": o.protocol,
            "request.host": o.host,
            "response.code": o.status,
            "destination.port": o.port,
            "destination.service.name": o.service_name,
            "destination.service.namespace": o.service_namespace,
            "destination.service.host": o.service_fqdn,
            "destination.workload.name": dst["workload"],
            "destination.workload.namespace": dst["workload_namespace"],
            "source.workload.name": src["workload"],
            "source.workload.namespace": src["workload_namespace"],
            "upstream_peer.labels": peer_labels if o.outbound else me.labels,
            "downstream_peer.labels": me.labels if o.outbound else peer_labels,
            "response.flags": o.flags,
        }
        return ordered, attrs

    def _series(self, o: Observation, cfg: SidecarConfig) -> list[tuple[str, str]]:
        """(metric key, label string) for each enabled metric."""
        base, attrs = self._base(o, cfg)
        overrides = cfg.metrics["client" if o.outbound else "server"]
        series = []
        for metric in METRICS:
            if o.grpc is None and metric in _MESSAGE_METRICS:
                continue
            ov: MetricOverride | None = overrides.get(metric) or overrides.get("ALL_METRICS")
            labels = base
            if ov is not None:
                if ov.disabled:
                    continue
                labels = _apply(base, ov, attrs)
            series.append((metric, label_set((k, v[:MAX_LABEL_VALUE]) for k, v in labels.items())))
        return series

    def tcp_cells(self, o: Observation) -> dict[str, _Counter]:
        """The counters one TCP connection adds to, by TCP metric key (disabled ones left out,
        all of them when the direction reports no metrics); a full metric gives overflow."""
        cfg = self._cfg
        if cfg is None or not cfg.metrics_enabled["client" if o.outbound else "server"]:
            return {}
        base, attrs = self._base(o, cfg)
        base["request_protocol"] = "tcp"
        attrs["request.protocol"] = "tcp"
        for name in _NOT_TCP_LABELS:
            del base[name]
        overrides = cfg.metrics["client" if o.outbound else "server"]
        cells: dict[str, _Counter] = {}
        for metric in TCP_METRICS:
            ov: MetricOverride | None = overrides.get(metric) or overrides.get("ALL_METRICS")
            if ov is not None and ov.disabled:
                continue
            labels = _apply(base, ov, attrs) if ov is not None else base
            text = label_set((k, v[:MAX_LABEL_VALUE]) for k, v in labels.items())
            table = self.tcp[metric]
            text, over = self._admit(table, text, o.outbound)
            self.overflowed += over
            cells[metric] = table.setdefault(text, _Counter())
        return cells

    def _admit(self, table: Mapping[str, object], labels: str, outbound: bool) -> tuple[str, bool]:
        """`labels`, or the overflow label set when `table` is full (and whether it was)."""
        if labels in table or len(table) < self.series_limit:
            return labels, False
        return _OVERFLOW_LABELS[outbound], True

    def _cells(self, o: Observation, cfg: SidecarConfig) -> _Cells:
        """The series cells one request records into, resolved once per label set; a label set
        that would exceed the metric's limit records into the overflow series instead."""
        counts: dict[str, _Counter] = {}
        hists: dict[str, _Histogram] = {}
        overflow = False
        for metric, labels in self._series(o, cfg):
            if METRICS[metric][1] == "counter":
                counters = self.counters.setdefault(metric, {})
                labels, over = self._admit(counters, labels, o.outbound)
                counts[metric] = counters.setdefault(labels, _Counter())
            else:
                table = self.histograms.setdefault(metric, {})
                labels, over = self._admit(table, labels, o.outbound)
                hists[metric] = table.setdefault(labels, _Histogram())
            overflow = overflow or over
        return (
            counts.get("REQUEST_COUNT"),
            hists.get("REQUEST_DURATION"),
            hists.get("REQUEST_SIZE"),
            hists.get("RESPONSE_SIZE"),
            counts.get("GRPC_REQUEST_MESSAGES"),
            counts.get("GRPC_RESPONSE_MESSAGES"),
            overflow,
        )

    def record(self, o: Observation) -> None:
        cfg = self._cfg
        if cfg is None or not cfg.metrics_enabled["client" if o.outbound else "server"]:
            return
        grpc = o.grpc
        key = (
            o.outbound, o.peer_raw, o.peer_principal, o.service_fqdn, o.port, o.host, o.status, o.flags,
            o.protocol, grpc is not None, grpc.status if grpc is not None else None,
        )  # fmt: skip
        cells = self._cache.get(key)
        if cells is None:
            cells = self._cells(o, cfg)
            if len(o.host) <= MAX_CACHED_HOST:
                if len(self._cache) > 4096:
                    self._drop_cache()
                self._cache[key] = cells
            else:
                self._marked.update(id(c) for c in cells[:6] if c is not None)
        count, duration, request, response, request_messages, response_messages, overflow = cells
        if overflow:
            self.overflowed += 1
        if count is not None:
            count.value += 1
        if duration is not None:
            duration.observe(o.duration_ms)
        if request is not None:
            request.observe(o.request_bytes)
        if response is not None:
            response.observe(o.response_bytes)
        if grpc is not None:
            if request_messages is not None:
                request_messages.value += grpc.requests.count
            if response_messages is not None:
                response_messages.value += grpc.responses.count

    def exposition(self) -> list[str]:
        lines: list[str] = []
        for metric, (name, kind, help_text) in METRICS.items():
            if not (self.counters.get(metric) or self.histograms.get(metric)):
                continue
            lines += family_header(name, kind, help_text)
            if kind == "counter":
                for labels, c in self.counters.get(metric, {}).items():
                    lines.append(sample(name, labels, str(c.value)))
                continue
            for labels, h in self.histograms.get(metric, {}).items():
                cum = 0
                inner = labels[1:-1]
                for le, n in zip(_LE, h.buckets, strict=True):
                    cum += n
                    lines.append(sample(f"{name}_bucket", f'{{{inner},le="{le}"}}', str(cum)))
                lines.append(sample(f"{name}_sum", labels, envoy_value(h.sum)))
                lines.append(sample(f"{name}_count", labels, str(h.count)))
        for metric, (name, help_text) in TCP_METRICS.items():
            if self.tcp[metric]:
                lines += family_header(name, "counter", help_text)
                lines += (sample(name, labels, str(c.value)) for labels, c in self.tcp[metric].items())
        return lines


def _apply(base: Mapping[str, str], ov: MetricOverride, attrs: Mapping[str, Any]) -> dict[str, str]:
    labels = dict(base)
    for label, expr in ov.tag_overrides.items():
        if expr is None:
            labels.pop(label, None)
        else:
            labels[label] = expr(attrs)
    return labels
