"""The monitoring `meshtrace render` writes: every alert through Debian's promtool (`check rules`,
and the checked-in `promtool/alerts.test.yaml` cases that make each alert fire and stay silent),
the Prometheus selector labels, the Grafana dashboard's queries, and the demo's alert file
`meshtrace up --prometheus` loads kept equal to the rendered rules."""

from __future__ import annotations

import json
import re
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_helpers import EXAMPLES, documents, one, promtool, render, run_meshtrace
from hypothesis import given
from hypothesis import strategies as st

from meshtrace.config.loader import load
from meshtrace.deploy import monitoring
from meshtrace.deploy.collector import Options
from meshtrace.deploy.render import render as render_bundle

CASES = Path(__file__).resolve().parent / "promtool" / "alerts.test.yaml"
MONITORS = ("PrometheusRule", "ServiceMonitor", "PodMonitor")

# Self-metrics of Collector v0.156.0 (the pinned image), from upstream's generated telemetry:
# receiver/receiverhelper, exporter/exporterhelper and processor/memorylimiterprocessor
# internal/metadata/generated_telemetry.go. The memory_limiter's were otelcol_processor_accepted/
# refused_spans until v0.154.
UPSTREAM_V0_156 = {
    "otelcol_receiver_accepted_spans",
    "otelcol_receiver_refused_spans",
    "otelcol_receiver_failed_spans",
    "otelcol_exporter_sent_spans",
    "otelcol_exporter_send_failed_spans",
    "otelcol_exporter_enqueue_failed_spans",
    "otelcol_exporter_queue_size",
    "otelcol_exporter_queue_capacity",
    "otelcol_processor_memory_limiter_accepted_spans",
    "otelcol_processor_memory_limiter_refused_spans",
    "otelcol_processor_incoming_items",
    "otelcol_processor_outgoing_items",
}


def rule_groups(out: Path) -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = one(out / "monitoring" / "prometheus-rules.yaml", "PrometheusRule")[
        "spec"
    ]["groups"]
    return groups


def alerts(groups: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}


def dashboard_exprs(out: Path) -> list[str]:
    cm = one(out / "monitoring" / "grafana-dashboard.yaml", "ConfigMap")
    ((_key, text),) = cm["data"].items()
    return [t["expr"] for p in json.loads(text)["panels"] for t in p["targets"]]


def run_cases(groups: list[dict[str, Any]], cases: str, folder: Path) -> subprocess.CompletedProcess[str]:
    """`promtool test rules` on `cases` with `groups` as rules.yaml. Annotations are kept for
    OtelCollectorDown only: the others embed $value, and promtool compares every annotation."""
    tool = promtool()
    groups = json.loads(json.dumps(groups))
    for rule in (r for g in groups for r in g["rules"]):
        if rule.get("alert") != "OtelCollectorDown":
            rule.pop("annotations", None)
    (folder / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    (folder / "alerts.test.yaml").write_text(cases)
    return subprocess.run(
        [tool, "test", "rules", "alerts.test.yaml"], capture_output=True, text=True, timeout=120, cwd=folder
    )


# -- alerts ---------------------------------------------------------------------------------------


def test_alerts_name_each_metric_once_as_the_pinned_collector_emits_it(out: Path) -> None:
    rules = alerts(rule_groups(out))
    assert set(rules) == {
        "OtelCollectorDown",
        "HighTracingDropRate",
        "OtelCollectorRefusingSpans",
        "OtelCollectorExportFailing",
        "OtelCollectorEnqueueFailed",
        "OtelCollectorQueueNearlyFull",
        "IstioHigh5xxRate",
        "IstioHighP99Latency",
    }
    exprs = " ".join(r["expr"] for r in rules.values())
    # A regex over metric names inside rate() fails once both spellings exist.
    assert "__name__" not in exprs and "_total)?" not in exprs
    used = set(re.findall(r"\botelcol_[a-z_]+", exprs))
    assert used <= UPSTREAM_V0_156, used - UPSTREAM_V0_156
    # What the batch processor never emits, and what no Collector emits any more.
    assert "otelcol_processor_incoming_items" not in exprs
    assert "otelcol_processor_dropped_spans" not in exprs
    assert "otelcol_processor_memory_limiter_refused_spans" in rules["HighTracingDropRate"]["expr"]
    assert "absent(up{" in rules["OtelCollectorDown"]["expr"]
    for name in ("IstioHigh5xxRate", "IstioHighP99Latency"):
        assert 'reporter=~"source|waypoint|destination"' in rules[name]["expr"]
        assert "by (destination_service, reporter" in rules[name]["expr"]


def test_promtool_checks_the_rules(out: Path, tmp_path: Path) -> None:
    tool = promtool()
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": rule_groups(out)}))
    proc = subprocess.run([tool, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 8 rules found" in proc.stdout


def test_promtool_cases_fire_and_stay_silent(out: Path, tmp_path: Path) -> None:
    proc = run_cases(rule_groups(out), CASES.read_text(), tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_every_alert_has_a_case_that_fires_and_one_that_stays_silent(seed_out: Path) -> None:
    cases = yaml.safe_load(CASES.read_text())
    fires: set[str] = set()
    silent: set[str] = set()
    for test in cases["tests"]:
        for check in test["alert_rule_test"]:
            (fires if check["exp_alerts"] else silent).add(check["alertname"])
    rendered = set(alerts(rule_groups(seed_out)))
    assert rendered - fires == set(), "no case makes these fire"
    assert rendered - silent == set(), "no case keeps these silent"


COLLECTOR = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: otel-collector, namespace: istio-system}
spec:
  selector: {matchLabels: {app: otel-collector}}
  template:
    metadata: {labels: {app: otel-collector}}
    spec:
      containers:
      - {name: otel-collector, image: otel/opentelemetry-collector-contrib:0.156.0}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: otel-collector-config, namespace: istio-system}
data:
  config.yaml: |
    receivers: {otlp: {protocols: {grpc: {}}}}
    exporters: {debug: {}}
    service:
      pipelines: {traces: {receivers: [otlp], exporters: [debug]}}
      telemetry:
        metrics:
          readers:
          - pull: {exporter: {prometheus: {host: 0.0.0.0, port: 8888, without_type_suffix: false}}}
"""


def render_input(tmp_path: Path, text: str, options: Options | None = None) -> dict[str, str]:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "collector.yaml").write_text(textwrap.dedent(text).lstrip())
    return render_bundle(load([tmp_path / "in"]), options or Options()).files


@pytest.mark.e2e
def test_a_reader_that_adds_total_gets_rules_and_panels_with_total(tmp_path: Path) -> None:
    files = render_input(tmp_path, COLLECTOR)
    (rule,) = [d for d in yaml.safe_load_all(files["monitoring/prometheus-rules.yaml"]) if d]
    groups = rule["spec"]["groups"]
    exprs = " ".join(r["expr"] for r in alerts(groups).values())
    counters = set(re.findall(r"\botelcol_[a-z_]+_spans\w*", exprs))
    assert counters and all(c.endswith("_total") for c in counters), counters
    (cm,) = [d for d in yaml.safe_load_all(files["monitoring/grafana-dashboard.yaml"]) if d]
    assert "otelcol_exporter_sent_spans_total[" in next(iter(cm["data"].values()))
    # The same cases, each `_spans` counter in the other spelling, against these rules.
    swapped = re.sub(
        r"(otelcol_[a-z_]+_spans)(_total)?\{",
        lambda m: m[1] + ("" if m[2] else "_total") + "{",
        CASES.read_text(),
    )
    (tmp_path / "total").mkdir()
    proc = run_cases(groups, swapped, tmp_path / "total")
    assert proc.returncode == 0, proc.stdout + proc.stderr


# -- selector labels ------------------------------------------------------------------------------


def monitors(out: Path) -> list[dict[str, Any]]:
    docs = documents(out / "monitoring" / "prometheus-rules.yaml") + documents(
        out / "monitoring" / "service-monitor.yaml"
    )
    assert sorted(d["kind"] for d in docs) == sorted(MONITORS)
    return docs


def test_monitors_and_rules_carry_the_kube_prometheus_stack_release_label(examples_out: Path) -> None:
    for doc in monitors(examples_out):
        assert (
            doc["metadata"]["labels"] == monitoring.DEFAULT_SELECTOR == {"release": "kube-prometheus-stack"}
        )


@pytest.mark.e2e
def test_prometheus_selector_option(tmp_path: Path) -> None:
    out = render(
        EXAMPLES,
        tmp_path / "out",
        "--prometheus-selector",
        "release=prom",
        "--prometheus-selector",
        "team=sre",
    )
    for doc in monitors(out):
        assert doc["metadata"]["labels"] == {"release": "prom", "team": "sre"}, doc["kind"]
    assert "release: prom, team: sre" in (out / "monitoring" / "service-monitor.yaml").read_text()


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("release", "'release': expected KEY=VALUE"),
        ("=x", "'' is not a Kubernetes label key"),
        ("rel ease=x", "'rel ease' is not a Kubernetes label key"),
        ("Example.com/app=x", "'Example.com/app' is not a Kubernetes label key"),
        ("release=-prom", "'-prom' is not a Kubernetes label value"),
        ("release=" + "a" * 64, "is not a Kubernetes label value"),
    ],
)
def test_prometheus_selector_refuses_what_kubernetes_would(tmp_path: Path, value: str, message: str) -> None:
    proc = run_meshtrace("render", "-f", str(EXAMPLES), "-o", str(tmp_path), "--prometheus-selector", value)
    assert proc.returncode == 2
    assert "--prometheus-selector" in proc.stderr and message in proc.stderr, proc.stderr


def test_prometheus_selector_parse() -> None:
    assert monitoring.parse_selector(["app.kubernetes.io/part-of=obs", "release=", "a=b"]) == {
        "app.kubernetes.io/part-of": "obs",
        "release": "",
        "a": "b",
    }
    with pytest.raises(ValueError, match="given twice"):
        monitoring.parse_selector(["a=b", "a=c"])


LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


@given(st.lists(st.text(alphabet="ab.-_/=Z9 é", max_size=70), max_size=4))
def test_prometheus_selector_parse_accepts_only_kubernetes_labels(items: list[str]) -> None:
    try:
        labels = monitoring.parse_selector(items)
    except ValueError as e:
        assert any(repr(item) in str(e) for item in items)  # the message names the bad item
        return
    for key, value in labels.items():
        assert LABEL_VALUE.match(key.rpartition("/")[2]) and key.rpartition("/")[2]
        assert LABEL_VALUE.match(value)


RULE_WITH_LABELS = """
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata: {name: mine, namespace: monitoring, labels: {release: prom, team: sre}}
spec:
  groups: []
"""


def test_the_input_rule_labels_select_when_no_option_is_given(tmp_path: Path) -> None:
    files = render_input(tmp_path, RULE_WITH_LABELS)
    (monitor,) = [d for d in yaml.safe_load_all(files["monitoring/service-monitor.yaml"]) if d]
    assert monitor["metadata"]["labels"] == {"release": "prom", "team": "sre"}
    lines = files["monitoring/service-monitor.yaml"].splitlines()
    comments = " ".join(ln[1:].strip() for ln in lines if ln.startswith("#"))
    assert "from PrometheusRule monitoring/mine (collector.yaml)" in comments
    (tmp_path / "again").mkdir()
    files = render_input(tmp_path / "again", RULE_WITH_LABELS, Options(prometheus_selector={"release": "x"}))
    (rule,) = [d for d in yaml.safe_load_all(files["monitoring/prometheus-rules.yaml"]) if d]
    assert rule["metadata"]["labels"] == {"release": "x", "team": "sre"}  # the option wins


# -- dashboard --------------------------------------------------------------------------------------


def test_grafana_dashboard(out: Path, tmp_path: Path) -> None:
    cm = one(out / "monitoring" / "grafana-dashboard.yaml", "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    ((key, text),) = cm["data"].items()
    assert key.endswith(".json")
    model = json.loads(text)
    assert "dashboard" not in model  # the bare model, not the HTTP API's envelope
    assert len({p["id"] for p in model["panels"]}) == len(model["panels"])
    titles = " ".join(p["title"] for p in model["panels"])
    for word in (
        "Request rate",
        "P50 / P99",
        "error rate",
        "response_flags",
        "spans lost",
        "size vs capacity",
    ):
        assert word in titles
    exprs = dashboard_exprs(out)
    joined = " ".join(exprs)
    # Istio's dashboards: the client view (source, or waypoint in ambient) and the server view.
    assert 'reporter=~"source|waypoint"' in joined and 'reporter="destination"' in joined
    assert "__name__" not in joined and "otelcol_processor_incoming_items" not in joined
    # Every query parses as PromQL (Grafana's $__rate_interval stands for a range).
    tool = promtool()
    records = [
        {"record": f"dashboard:q{i}", "expr": e.replace("$__rate_interval", "5m")}
        for i, e in enumerate(exprs)
    ]
    rules = tmp_path / "dashboard.yaml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]}))
    proc = subprocess.run([tool, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_seed_dashboard_replaced_in_place(seed_out: Path) -> None:
    cm = one(seed_out / "monitoring" / "grafana-dashboard.yaml", "ConfigMap")
    assert (cm["metadata"]["name"], cm["metadata"]["namespace"]) == (
        "istio-tracing-dashboard",
        "observability",
    )
    assert "istio-tracing.json" in cm["data"]


# -- the demo's alerts (what `meshtrace up --prometheus` loads) ------------------------------------------


def test_demo_alerts_are_the_rendered_ones(examples_out: Path) -> None:
    demo = one(EXAMPLES / "50-alerts.yaml", "PrometheusRule")
    given = alerts(demo["spec"]["groups"])
    rendered = alerts(rule_groups(examples_out))
    assert given and set(given) <= set(rendered)
    for name, rule in given.items():
        # Equal up to layout (no string in these expressions holds a space).
        assert re.sub(r"\s", "", rule["expr"]) == re.sub(r"\s", "", rendered[name]["expr"]), name
        assert (rule["for"], rule["labels"]) == (rendered[name]["for"], rendered[name]["labels"]), name


@pytest.mark.e2e
def test_demo_alerts_fire_in_promtool(tmp_path: Path) -> None:
    """The checked-in cases for the demo's alerts, run against the demo file itself."""
    groups = one(EXAMPLES / "50-alerts.yaml", "PrometheusRule")["spec"]["groups"]
    names = set(alerts(groups))
    cases = yaml.safe_load(CASES.read_text())
    for test in cases["tests"]:
        test["alert_rule_test"] = [c for c in test["alert_rule_test"] if c["alertname"] in names]
    cases["tests"] = [t for t in cases["tests"] if t["alert_rule_test"]]
    proc = run_cases(groups, yaml.safe_dump(cases), tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
