"""The monitoring half of `render`: Prometheus Operator alerts and scrape targets, and a Grafana
dashboard, over metrics the pinned Collector (collector.DEFAULT_IMAGE, v0.156) and Istio emit.

Istio's requests are read from both reporters, as Istio's own dashboards do: the client sidecar
(`reporter="source"`, or `"waypoint"` in ambient mode) sees the 503s it generates itself (UH no
healthy upstream, UF connection failure, NR no route), which no destination sidecar ever counts.

Collector counters are named once, in the spelling the rendered config exposes: without `_total`
(the default of every Prometheus reader since v0.152), with it when a reader turns
`without_type_suffix` or `without_units` off. A regex over both spellings inside `rate()` fails
("vector cannot contain metrics with the same labelset") as soon as both exist."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import yaml

from meshtrace.config.lint import REMOVED_METRICS
from meshtrace.config.loader import Bundle
from meshtrace.config.model import ConfigMap
from meshtrace.deploy import kube
from meshtrace.deploy.collector import Rendered
from meshtrace.deploy.collector_config import dig
from meshtrace.deploy.kube import input_ref
from meshtrace.deploy.manifest import Manifest

MONITORING_API = "monitoring.coreos.com/v1"
DEFAULT_RULE_NAME = "istio-tracing-alerts"
DEFAULT_DASHBOARD = ("istio-tracing-dashboard", "monitoring", "istio-tracing.json")
DASHBOARD_LABEL = {"grafana_dashboard": "1"}  # what Grafana's dashboard sidecar looks for
ENVOY_PROM_PORT = "http-envoy-prom"  # the injected istio-proxy's 15090 port name
# kube-prometheus-stack's Prometheus selects ServiceMonitors, PodMonitors and PrometheusRules
# labelled `release: <its Helm release name>`; this is the release named after the chart.
DEFAULT_SELECTOR = {"release": "kube-prometheus-stack"}
CLIENT = 'reporter=~"source|waypoint"'  # Istio's mesh dashboard: what callers get
SERVER = 'reporter="destination"'  # what the server sidecar answered
_REMOVED = re.compile(r"\b(" + "|".join(REMOVED_METRICS) + r")(?:_total)?\b")


def counter_suffix(collector: Rendered | None) -> str:
    """`_total` when a Prometheus reader of the rendered collector config adds it, else "".

    otelconf (v0.24, in Collector v0.156) keeps names as they are only when both
    `without_type_suffix` and `without_units` are true; since v0.152 both default to true."""
    for reader in _readers(collector):
        prom = dig(reader, "pull", "exporter", "prometheus")
        if isinstance(prom, dict) and False in (prom.get("without_type_suffix"), prom.get("without_units")):
            return "_total"
    return ""


def _readers(collector: Rendered | None) -> list[Any]:
    for docs in collector.files.values() if collector else []:
        for doc in docs:
            data = doc.data.get("data") if doc.data.get("kind") == "ConfigMap" else None
            if isinstance(data, dict) and "config.yaml" in data:
                config = yaml.safe_load(str(data["config.yaml"]))
                readers = dig(config, "service", "telemetry", "metrics", "readers")
                return readers if isinstance(readers, list) else []
    return []


def _rate(metric: str, by: str, window: str) -> str:
    return f"sum by ({by}) (rate({metric}[{window}]))"


def _ratio(part: str, whole: list[str], by: str, window: str) -> str:
    denominator = " + ".join(_rate(w, by, window) for w in whole)
    return f"{_rate(part, by, window)} / ({denominator})"


def spans_lost(suffix: str, by: str, window: str) -> str:
    """Spans the collector loses per second, labelled `lost_by`: refused by the memory_limiter
    (the sender is told, and the spans are gone unless it retries), failed after the exporter's
    retries, or not queued because the sending queue was full. `or` over series told apart by
    `lost_by`: each counter may be absent (enqueue_failed appears with its first failure)."""
    causes = [
        ("memory_limiter", "otelcol_processor_memory_limiter_refused_spans"),
        ("send_failed", "otelcol_exporter_send_failed_spans"),
        ("enqueue_failed", "otelcol_exporter_enqueue_failed_spans"),
    ]
    union = " or ".join(
        f'label_replace(rate({name}{suffix}[{window}]), "lost_by", "{cause}", "", "")'
        for cause, name in causes
    )
    return f"sum by ({by}) ({union})"


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


def collector_alerts(job: str, suffix: str = "") -> list[dict[str, Any]]:
    def c(name: str) -> str:  # a counter, as the collector exposes it
        return name + suffix

    up = f'up{{job="{job}"}}'
    return [
        _alert(
            "OtelCollectorDown",
            f"{up} == 0 or absent({up})",
            "5m",
            "critical",
            "OpenTelemetry Collector is down",
            # absent() gives a series without `instance`: the text says which case fired.
            "{{ with $labels.instance }}Collector {{ . }} has not answered Prometheus for 5 minutes."
            f"{{{{ else }}}}No collector of job {job} is scraped (no pod ready, or Prometheus does not "
            "select the ServiceMonitor).{{ end }}",
        ),
        _alert(
            "HighTracingDropRate",
            f"{spans_lost(suffix, 'job', '5m')} > 100",
            "5m",
            "warning",
            "High tracing drop rate detected",
            "The collectors lose {{ $value | humanize }} spans/s (memory_limiter refusals, exports failed "
            "after retries, sending queue full).",
        ),
        _alert(
            "OtelCollectorRefusingSpans",
            _ratio(
                c("otelcol_receiver_refused_spans"),
                [c("otelcol_receiver_accepted_spans"), c("otelcol_receiver_refused_spans")],
                "job, receiver",
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
                c("otelcol_exporter_send_failed_spans"),
                [c("otelcol_exporter_sent_spans"), c("otelcol_exporter_send_failed_spans")],
                "job, exporter",
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
            _rate(c("otelcol_exporter_enqueue_failed_spans"), "job, exporter", "5m") + " > 0",
            "5m",
            "critical",
            "The Collector drops spans: sending queue full",
            "Exporter {{ $labels.exporter }} drops {{ $value | humanize }} spans/s it cannot queue.",
        ),
        _alert(
            "OtelCollectorQueueNearlyFull",
            "max by (job, exporter) (otelcol_exporter_queue_size / otelcol_exporter_queue_capacity) > 0.8",
            "10m",
            "warning",
            "The Collector's sending queue is nearly full",
            "Exporter {{ $labels.exporter }}'s queue is {{ $value | humanizePercentage }} full: the "
            "backend is slower than the traffic.",
        ),
    ]


def requests(reporter: str, *matchers: str) -> str:
    return "istio_requests_total{" + ",".join([reporter, *matchers]) + "}"


def _quantile(q: float, reporter: str, by: str, window: str) -> str:
    buckets = f"istio_request_duration_milliseconds_bucket{{{reporter}}}"
    return f"histogram_quantile({q}, sum by ({by}, le) (rate({buckets}[{window}])))"


def _error_ratio(reporter: str, by: str, window: str) -> str:
    errors = requests(reporter, 'response_code=~"5.."')
    return f"{_rate(errors, by, window)} / {_rate(requests(reporter), by, window)}"


# Each reporter's view on its own (never summed: a request seen by both sidecars counts once).
BOTH = 'reporter=~"source|waypoint|destination"'
VIEW = "destination_service, reporter"


def istio_alerts() -> list[dict[str, Any]]:
    return [
        _alert(
            "IstioHigh5xxRate",
            f"{_error_ratio(BOTH, VIEW, '5m')} > 0.05",
            "5m",
            "warning",
            "High 5xx rate",
            "{{ $labels.destination_service }} answers {{ $value | humanizePercentage }} of requests "
            "with 5xx as its {{ $labels.reporter }} sidecars report them (source: what callers get, "
            "including the 503s their own sidecars generate: UH, UF, NR).",
        ),
        _alert(
            "IstioHighP99Latency",
            f"{_quantile(0.99, BOTH, VIEW, '5m')} > 1000",
            "10m",
            "warning",
            "High P99 latency",
            "{{ $labels.destination_service }} P99 is {{ $value | humanize }} ms as its "
            "{{ $labels.reporter }} sidecars report it.",
        ),
    ]


_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def parse_selector(items: tuple[str, ...] | list[str]) -> dict[str, str]:
    """`k=v` items as labels; ValueError naming the item when it is no valid Kubernetes label."""
    labels: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        prefix, _, name = key.rpartition("/")
        if not sep:
            raise ValueError(f"{item!r}: expected KEY=VALUE")
        if not _LABEL_NAME.match(name) or (
            "/" in key and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix))
        ):
            raise ValueError(f"{item!r}: {key!r} is not a Kubernetes label key")
        if value and not _LABEL_NAME.match(value):
            raise ValueError(f"{item!r}: {value!r} is not a Kubernetes label value")
        if key in labels:
            raise ValueError(f"{item!r}: label {key!r} given twice")
        labels[key] = value
    return labels


def selector_labels(bundle: Bundle, given: dict[str, str] | None) -> tuple[dict[str, str], str]:
    """The labels a Prometheus must select the rendered monitors and rules by, and where they
    come from: `--prometheus-selector`, else the input PrometheusRule's labels, else the default."""
    if given:
        return dict(given), "from --prometheus-selector"
    for rule in bundle.prometheus_rules:
        if rule.meta.labels:
            return dict(rule.meta.labels), f"from {input_ref(rule.meta)}"
    return dict(DEFAULT_SELECTOR), (
        "the default: kube-prometheus-stack's Prometheus selects release=<its Helm release name>; "
        "set yours with --prometheus-selector k=v"
    )


def _selector_note(labels: dict[str, str], why: str) -> str:
    shown = ", ".join(f"{k}: {v}" for k, v in labels.items())
    return f"Labels {shown}: what Prometheus selects monitors and rules by ({why})."


def prometheus_rule(
    bundle: Bundle, collector: Rendered | None, selector: tuple[dict[str, str], str]
) -> Manifest:
    job = collector.service if collector else "otel-collector"
    namespace = collector.namespace if collector else bundle.mesh.root_namespace
    suffix = counter_suffix(collector)
    groups: list[dict[str, Any]] = [
        {"name": "otel-collector", "interval": "30s", "rules": collector_alerts(job, suffix)},
        {"name": "istio-mesh", "interval": "30s", "rules": istio_alerts()},
    ]
    spelling = (
        "with `_total` (a reader of the collector config turns without_type_suffix or without_units off)"
        if suffix
        else "without `_total` (the collector config's Prometheus reader keeps the default names)"
    )
    notes = [
        _selector_note(*selector),
        f"Collector counters are named {spelling}.",
        f"OtelCollectorDown watches job {job!r}: the ServiceMonitor in service-monitor.yaml names the "
        "job after the collector Service; absent() makes it fire when no collector is scraped at all.",
        "Istio alerts are per destination_service and reporter: source (or waypoint) is what callers "
        "get, with the 503s their own sidecars generate (UH, UF, NR); destination is what the server "
        "sidecar answered.",
    ]
    given = bundle.prometheus_rules[0] if bundle.prometheus_rules else None
    metadata: dict[str, Any] = {"name": DEFAULT_RULE_NAME, "namespace": namespace}
    labels = dict(selector[0])
    if given is not None:
        metadata = {"name": given.meta.name, "namespace": given.meta.namespace}
        labels = {**given.meta.labels, **labels}
    metadata["labels"] = labels
    _merge_input_rules(bundle, groups, notes)
    data = {
        "apiVersion": MONITORING_API,
        "kind": "PrometheusRule",
        "metadata": metadata,
        "spec": {"groups": groups},
    }
    return Manifest(data, notes)


def _merge_input_rules(bundle: Bundle, groups: list[dict[str, Any]], notes: list[str]) -> None:
    """The input's rule groups after ours: an alert we define is rewritten (ours replaces it), one
    over a metric the pinned Collector no longer emits is left out, the others are kept as written."""
    ours = {r["alert"] for g in groups for r in g["rules"]}
    for rule in bundle.prometheus_rules:
        where = input_ref(rule.meta)
        for group in rule.groups:
            kept = []
            for item in group.get("rules") or []:
                if not isinstance(item, dict):
                    continue
                name = str(item.get("alert") or item.get("record") or "")
                removed = sorted(set(_REMOVED.findall(str(item.get("expr", "")))))
                gone = f"{', '.join(removed)}: the pinned Collector does not emit it"
                if name in ours:
                    notes.append(f"{name} from {where} rewritten" + (f" ({gone})." if removed else "."))
                elif removed:
                    notes.append(f"{name} from {where} left out ({gone}, so it could never fire).")
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


def scrape_targets(
    collector: Rendered | None, root: str, selector: tuple[dict[str, str], str]
) -> list[Manifest]:
    """A ServiceMonitor for the collector's self-metrics and a PodMonitor for the sidecars'."""
    monitors = [_service_monitor(collector, selector)] if collector is not None else []
    return [*monitors, _pod_monitor(root, selector)]


def _service_monitor(collector: Rendered, selector: tuple[dict[str, str], str]) -> Manifest:
    data = {
        "apiVersion": MONITORING_API,
        "kind": "ServiceMonitor",
        "metadata": {
            "name": collector.service,
            "namespace": collector.namespace,
            "labels": dict(selector[0]),
        },
        "spec": {
            "selector": kube.match_labels(collector.service_labels),
            "namespaceSelector": {"matchNames": [collector.namespace]},
            "endpoints": [{"port": "http-metrics", "interval": "30s"}],
        },
    }
    notes = [
        f"Scrapes the collector's self-metrics (port http-metrics); the job label is {collector.service!r}.",
        _selector_note(*selector),
    ]
    return Manifest(data, notes)


def _pod_monitor(root: str, selector: tuple[dict[str, str], str]) -> Manifest:
    data = {
        "apiVersion": MONITORING_API,
        "kind": "PodMonitor",
        "metadata": {"name": "envoy-stats", "namespace": root, "labels": dict(selector[0])},
        "spec": {
            "selector": {},
            "namespaceSelector": {"any": True},
            "podMetricsEndpoints": [
                {"port": ENVOY_PROM_PORT, "path": "/stats/prometheus", "interval": "30s"}
            ],
        },
    }
    notes = [
        "Scrapes every sidecar's 15090 /stats/prometheus (istio_requests_total and the duration "
        "histogram the Istio alerts and the dashboard use).",
        _selector_note(*selector),
    ]
    return Manifest(data, notes)


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


WINDOW = "$__rate_interval"  # Grafana's: at least four scrape intervals


def _istio_panels() -> list[dict[str, Any]]:
    """Requests, errors and latency per service, each from the client and the server reporters."""
    service = "{{destination_service}}"
    by = "destination_service"
    latency = [
        (_quantile(q, reporter, by, WINDOW), f"{name} P{int(q * 100)} {service}")
        for reporter, name in ((CLIENT, "client"), (SERVER, "server"))
        for q in (0.5, 0.99)
    ]
    generated = requests(CLIENT, 'response_code=~"5.."', 'response_flags!="-"')
    return [
        _panel(
            1,
            "Request rate by service: client view (source|waypoint) and server view (destination)",
            0,
            0,
            "reqps",
            [
                (_rate(requests(CLIENT), by, WINDOW), f"client {service}"),
                (_rate(requests(SERVER), by, WINDOW), f"server {service}"),
            ],
        ),
        _panel(
            2,
            "5xx error rate by service: client view (with sidecar-generated 503s) and server view",
            12,
            0,
            "percentunit",
            [
                (_error_ratio(CLIENT, by, WINDOW), f"client {service}"),
                (_error_ratio(SERVER, by, WINDOW), f"server {service}"),
            ],
        ),
        _panel(3, "Latency P50 / P99 by service: client and server view", 0, 8, "ms", latency),
        _panel(
            4,
            "5xx generated by client sidecars, by response_flags (UH, UF, NR, ...)",
            12,
            8,
            "reqps",
            [(_rate(generated, f"{by}, response_flags", WINDOW), f"{service} {{{{response_flags}}}}")],
        ),
    ]


def _collector_panels(suffix: str) -> list[dict[str, Any]]:
    """The collector's span flow, its losses and its sending queue."""

    def c(name: str) -> str:
        return name + suffix

    spans = [
        (_rate(c("otelcol_receiver_accepted_spans"), "receiver", WINDOW), "accepted {{receiver}}"),
        (_rate(c("otelcol_receiver_refused_spans"), "receiver", WINDOW), "refused {{receiver}}"),
        (_rate(c("otelcol_exporter_sent_spans"), "exporter", WINDOW), "sent {{exporter}}"),
        (_rate(c("otelcol_exporter_send_failed_spans"), "exporter", WINDOW), "failed {{exporter}}"),
    ]
    return [
        _panel(5, "Collector spans: accepted, refused, sent, failed", 0, 16, "short", spans),
        _panel(
            6,
            "Collector spans lost: memory_limiter refused, send failed, enqueue failed",
            12,
            16,
            "short",
            [(spans_lost(suffix, "lost_by", WINDOW), "{{lost_by}}")],
        ),
        _panel(
            7,
            "Collector sending queue: size vs capacity",
            0,
            24,
            "short",
            [
                ("max by (exporter) (otelcol_exporter_queue_size)", "size {{exporter}}"),
                ("max by (exporter) (otelcol_exporter_queue_capacity)", "capacity {{exporter}}"),
            ],
        ),
    ]


def dashboard_model(title: str, uid: str, suffix: str = "") -> dict[str, Any]:
    """The Grafana dashboard JSON model; `suffix`: the collector counters' spelling (counter_suffix)."""
    panels = _istio_panels() + _collector_panels(suffix)
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


def grafana_dashboard(bundle: Bundle, collector: Rendered | None) -> Manifest:
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
        notes.append(f"Replaces {input_ref(cm.meta)}.")
        if "dashboard" in parsed:
            notes.append(
                'The input wraps the model in {"dashboard": ...}, the HTTP API\'s envelope; file and sidecar '
                "provisioning expect the bare model."
            )
        notes.append(
            "Its panels are replaced by these: rates summed by destination_service, quantiles over buckets "
            "summed by destination_service and le (a quantile per raw series is not a service's P99), "
            "each from the client (source|waypoint) and the server (destination) reporters."
        )
    uid = re.sub(r"[^a-z0-9-]", "-", name.lower())[:40]
    text = json.dumps(dashboard_model(title, uid, counter_suffix(collector)), indent=2) + "\n"
    return Manifest(kube.config_map(name, namespace, labels, {key: text}), notes)
