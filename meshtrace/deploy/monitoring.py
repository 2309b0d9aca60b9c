"""The monitoring half of `render`: Prometheus Operator alerts and scrape targets, and a Grafana
dashboard, all over metrics the current Collector and Istio really emit (REFERENCE.md §3, §4).

Collector counters are matched with and without `_total` (`{__name__=~"name(_total)?"}`): the
default self-metrics have no suffix, a configured Prometheus reader adds it (v0.120+), and
dashboards in the wild use both."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from meshtrace.config.lint import REMOVED_METRICS
from meshtrace.config.loader import Bundle
from meshtrace.config.model import ConfigMap
from meshtrace.deploy.collector import SAMPLERS, Rendered
from meshtrace.deploy.istio import base
from meshtrace.deploy.manifest import Manifest

MONITORING_API = "monitoring.coreos.com/v1"
DEFAULT_RULE_NAME = "istio-tracing-alerts"
DEFAULT_DASHBOARD = ("istio-tracing-dashboard", "monitoring", "istio-tracing.json")
DASHBOARD_LABEL = {"grafana_dashboard": "1"}  # what Grafana's dashboard sidecar looks for
ENVOY_PROM_PORT = "http-envoy-prom"  # the injected istio-proxy's 15090 port name
_NOT_SAMPLER = f'processor!~"({"|".join(SAMPLERS)})(/.*)?"'
_REMOVED = re.compile(r"\b(" + "|".join(REMOVED_METRICS) + r")(?:_total)?\b")


def counter(name: str, *matchers: str) -> str:
    """A selector for a Collector counter in either spelling."""
    return "{" + ",".join([f'__name__=~"{name}(_total)?"', *matchers]) + "}"


def _rate(name: str, by: str, window: str, *matchers: str) -> str:
    return f"sum by ({by}) (rate({counter(name, *matchers)}[{window}]))"


def _ratio(part: str, whole: list[str], by: str, window: str) -> str:
    denominator = " + ".join(_rate(w, by, window) for w in whole)
    return f"{_rate(part, by, window)} / ({denominator})"


def _alert(
    name: str, expr: str, duration: str, severity: str, summary: str, description: str
) -> dict[str, Any]:
    return {
        "alert": name,
        "expr": expr,
        "for": duration,
        "labels": {"severity": severity},
        "annotations": {"summary": summary, "description": description},
    }


def collector_alerts(job: str) -> list[dict[str, Any]]:
    dropped = (
        _rate("otelcol_processor_incoming_items", "processor", "5m", 'otel_signal="traces"', _NOT_SAMPLER)
        + " - "
        + _rate("otelcol_processor_outgoing_items", "processor", "5m", 'otel_signal="traces"', _NOT_SAMPLER)
    )
    return [
        _alert(
            "OtelCollectorDown",
            f'up{{job="{job}"}} == 0',
            "5m",
            "critical",
            "OpenTelemetry Collector is down",
            "{{ $labels.instance }} has not answered Prometheus for 5 minutes.",
        ),
        _alert(
            "HighTracingDropRate",
            f"{dropped} > 100",
            "5m",
            "warning",
            "High tracing drop rate detected",
            "Processor {{ $labels.processor }} loses {{ $value | humanize }} spans/s (incoming - outgoing, "
            "samplers excluded).",
        ),
        _alert(
            "OtelCollectorRefusingSpans",
            _ratio(
                "otelcol_receiver_refused_spans",
                ["otelcol_receiver_accepted_spans", "otelcol_receiver_refused_spans"],
                "receiver",
                "5m",
            )
            + " > 0.01",
            "5m",
            "warning",
            "The Collector refuses spans",
            "Receiver {{ $labels.receiver }} refuses {{ $value | humanizePercentage }} of spans "
            "(memory_limiter pressure: scale out or raise limits).",
        ),
        _alert(
            "OtelCollectorExportFailing",
            _ratio(
                "otelcol_exporter_send_failed_spans",
                ["otelcol_exporter_sent_spans", "otelcol_exporter_send_failed_spans"],
                "exporter",
                "5m",
            )
            + " > 0.05",
            "10m",
            "warning",
            "The Collector fails to export spans",
            "Exporter {{ $labels.exporter }} fails {{ $value | humanizePercentage }} of its sends.",
        ),
        _alert(
            "OtelCollectorEnqueueFailed",
            _rate("otelcol_exporter_enqueue_failed_spans", "exporter", "5m") + " > 0",
            "5m",
            "critical",
            "The Collector drops spans: sending queue full",
            "Exporter {{ $labels.exporter }} drops {{ $value | humanize }} spans/s it cannot queue.",
        ),
        _alert(
            "OtelCollectorQueueNearlyFull",
            "max by (exporter) (otelcol_exporter_queue_size / otelcol_exporter_queue_capacity) > 0.8",
            "10m",
            "warning",
            "The Collector's sending queue is nearly full",
            "Exporter {{ $labels.exporter }}'s queue is {{ $value | humanizePercentage }} full: the "
            "backend is slower than the traffic.",
        ),
    ]


REQUESTS = 'istio_requests_total{reporter="destination"}'
ERRORS = 'istio_requests_total{reporter="destination",response_code=~"5.."}'
BUCKETS = 'istio_request_duration_milliseconds_bucket{reporter="destination"}'


def _quantile(q: float, window: str) -> str:
    return f"histogram_quantile({q}, sum by (destination_service, le) (rate({BUCKETS}[{window}])))"


def _error_ratio(window: str) -> str:
    return (
        f"sum by (destination_service) (rate({ERRORS}[{window}])) / "
        f"sum by (destination_service) (rate({REQUESTS}[{window}]))"
    )


def istio_alerts() -> list[dict[str, Any]]:
    return [
        _alert(
            "IstioHigh5xxRate",
            f"{_error_ratio('5m')} > 0.05",
            "5m",
            "warning",
            "High 5xx rate",
            "{{ $labels.destination_service }} answers {{ $value | humanizePercentage }} of requests "
            "with 5xx.",
        ),
        _alert(
            "IstioHighP99Latency",
            f"{_quantile(0.99, '5m')} > 1000",
            "10m",
            "warning",
            "High P99 latency",
            "{{ $labels.destination_service }} P99 is {{ $value | humanize }} ms.",
        ),
    ]


def prometheus_rule(bundle: Bundle, collector: Rendered | None) -> Manifest:
    job = collector.service if collector else "otel-collector"
    namespace = collector.namespace if collector else bundle.mesh.root_namespace
    groups: list[dict[str, Any]] = [
        {"name": "otel-collector", "interval": "30s", "rules": collector_alerts(job)},
        {"name": "istio-mesh", "interval": "30s", "rules": istio_alerts()},
    ]
    ours = {r["alert"] for g in groups for r in g["rules"]}
    notes = [
        "Collector counters match with and without `_total` (the default names have none; a "
        "configured Prometheus reader adds it).",
        f"OtelCollectorDown watches job {job!r}: the ServiceMonitor in service-monitor.yaml names the "
        "job after the collector Service.",
    ]
    given = bundle.prometheus_rules[0] if bundle.prometheus_rules else None
    metadata: dict[str, Any] = {"name": DEFAULT_RULE_NAME, "namespace": namespace}
    if given is not None:
        metadata = {"name": given.meta.name, "namespace": given.meta.namespace}
        if given.meta.labels:
            metadata["labels"] = dict(given.meta.labels)
    for rule in bundle.prometheus_rules:
        where = f"{rule.meta.ref} ({base(rule.meta.origin.file)})"
        for group in rule.groups:
            kept = []
            for item in group.get("rules") or []:
                if not isinstance(item, dict):
                    continue
                name = str(item.get("alert") or item.get("record") or "")
                removed = sorted(set(_REMOVED.findall(str(item.get("expr", "")))))
                if name in ours:
                    why = f" ({', '.join(removed)} is gone since Collector v0.111)" if removed else ""
                    notes.append(f"{name} from {where} rewritten{why}.")
                elif removed:
                    notes.append(
                        f"{name} from {where} left out: {', '.join(removed)} is gone since Collector v0.111, "
                        "so it could never fire."
                    )
                else:
                    kept.append(copy.deepcopy(item))
            if kept:
                name = str(group.get("name", "rules"))
                taken = {g["name"] for g in groups}
                groups.append(
                    {
                        **copy.deepcopy(group),
                        "name": name if name not in taken else f"{name}-input",
                        "rules": kept,
                    }
                )
                notes.append(f"Group {name} from {where}: its other rules kept as written.")
    notes.append("Prometheus must select this rule (its ruleSelector): add the labels yours expects.")
    data = {
        "apiVersion": MONITORING_API,
        "kind": "PrometheusRule",
        "metadata": metadata,
        "spec": {"groups": groups},
    }
    return Manifest(data, notes)


def scrape_targets(collector: Rendered | None, root: str) -> list[Manifest]:
    """A ServiceMonitor for the collector's self-metrics and a PodMonitor for the sidecars'."""
    out = []
    if collector is not None:
        monitor = {
            "apiVersion": MONITORING_API,
            "kind": "ServiceMonitor",
            "metadata": {"name": collector.service, "namespace": collector.namespace},
            "spec": {
                "selector": {"matchLabels": dict(collector.service_labels)},
                "namespaceSelector": {"matchNames": [collector.namespace]},
                "endpoints": [{"port": "http-metrics", "interval": "30s"}],
            },
        }
        out.append(
            Manifest(
                monitor,
                [
                    "Scrapes the collector's self-metrics (port http-metrics); the job label is "
                    f"{collector.service!r}."
                ],
            )
        )
    pods = {
        "apiVersion": MONITORING_API,
        "kind": "PodMonitor",
        "metadata": {"name": "envoy-stats", "namespace": root},
        "spec": {
            "selector": {},
            "namespaceSelector": {"any": True},
            "podMetricsEndpoints": [
                {"port": ENVOY_PROM_PORT, "path": "/stats/prometheus", "interval": "30s"}
            ],
        },
    }
    out.append(
        Manifest(
            pods,
            [
                "Scrapes every sidecar's 15090 /stats/prometheus (istio_requests_total and the duration "
                "histogram the Istio alerts and the dashboard use)."
            ],
        )
    )
    return out


# -- Grafana -----------------------------------------------------------------------------------------


def _panel(pid: int, title: str, x: int, y: int, unit: str, targets: list[tuple[str, str]]) -> dict[str, Any]:
    return {
        "id": pid,
        "type": "timeseries",
        "title": title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "bottom"}},
        "targets": [
            {"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(targets)
        ],
    }


def dashboard_model(title: str, uid: str) -> dict[str, Any]:
    window = "$__rate_interval"
    by_service = "{{destination_service}}"
    spans = [
        (_rate("otelcol_receiver_accepted_spans", "receiver", window), "accepted {{receiver}}"),
        (_rate("otelcol_receiver_refused_spans", "receiver", window), "refused {{receiver}}"),
        (_rate("otelcol_exporter_sent_spans", "exporter", window), "sent {{exporter}}"),
        (_rate("otelcol_exporter_send_failed_spans", "exporter", window), "failed {{exporter}}"),
        (_rate("otelcol_exporter_enqueue_failed_spans", "exporter", window), "enqueue failed {{exporter}}"),
    ]
    panels = [
        _panel(
            1,
            "Request rate by service",
            0,
            0,
            "reqps",
            [(f"sum by (destination_service) (rate({REQUESTS}[{window}]))", by_service)],
        ),
        _panel(
            2,
            "Latency P50 / P99 by service",
            12,
            0,
            "ms",
            [(_quantile(0.5, window), f"P50 {by_service}"), (_quantile(0.99, window), f"P99 {by_service}")],
        ),
        _panel(3, "5xx error rate by service", 0, 8, "percentunit", [(_error_ratio(window), by_service)]),
        _panel(4, "Collector spans: accepted, refused, sent, failed", 12, 8, "short", spans),
        _panel(
            5,
            "Collector sending queue: size vs capacity",
            0,
            16,
            "short",
            [
                ("max by (exporter) (otelcol_exporter_queue_size)", "size {{exporter}}"),
                ("max by (exporter) (otelcol_exporter_queue_capacity)", "capacity {{exporter}}"),
            ],
        ),
        _panel(
            6,
            "Collector processor drops (incoming - outgoing, samplers excluded)",
            12,
            16,
            "short",
            [
                (
                    _rate(
                        "otelcol_processor_incoming_items",
                        "processor",
                        window,
                        'otel_signal="traces"',
                        _NOT_SAMPLER,
                    )
                    + " - "
                    + _rate(
                        "otelcol_processor_outgoing_items",
                        "processor",
                        window,
                        'otel_signal="traces"',
                        _NOT_SAMPLER,
                    ),
                    "{{processor}}",
                )
            ],
        ),
    ]
    return {
        "uid": uid,
        "title": title,
        "tags": ["istio", "opentelemetry", "tracing"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                }
            ]
        },
        "panels": panels,
    }


def _input_dashboard(bundle: Bundle) -> tuple[ConfigMap, str, dict[str, Any]] | None:
    for cm in bundle.config_maps:
        for key, text in sorted(cm.data.items()):
            if not key.endswith(".json"):
                continue
            try:
                parsed = json.loads(text)
            except ValueError:
                continue
            if isinstance(parsed, dict) and ("panels" in parsed or "dashboard" in parsed):
                return cm, key, parsed
    return None


def grafana_dashboard(bundle: Bundle) -> Manifest:
    name, namespace, key = DEFAULT_DASHBOARD
    title, labels = "Istio Distributed Tracing", dict(DASHBOARD_LABEL)
    notes = [
        f"Label {next(iter(DASHBOARD_LABEL))}: {DASHBOARD_LABEL['grafana_dashboard']!r}: Grafana's "
        "dashboard sidecar (kube-prometheus-stack, the Grafana Helm chart) loads ConfigMaps with it."
    ]
    found = _input_dashboard(bundle)
    if found is not None:
        cm, key, parsed = found
        name, namespace = cm.name, cm.namespace
        labels = {**cm.meta.labels, **labels}
        model = parsed.get("dashboard", parsed)
        title = str(model.get("title") or title) if isinstance(model, dict) else title
        notes.append(f"Replaces {cm.meta.ref} ({base(cm.meta.origin.file)}).")
        if "dashboard" in parsed:
            notes.append(
                'The input wraps the model in {"dashboard": ...}, the HTTP API\'s envelope; file and sidecar '
                "provisioning expect the bare model."
            )
        notes.append(
            "Its panels are replaced by these: rates summed by destination_service, quantiles over buckets "
            "summed by destination_service and le (a quantile per raw series is not a service's P99)."
        )
    uid = re.sub(r"[^a-z0-9-]", "-", name.lower())[:40]
    text = json.dumps(dashboard_model(title, uid), indent=2) + "\n"
    data = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "data": {key: text},
    }
    return Manifest(data, notes)
