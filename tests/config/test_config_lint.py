"""Every lint rule fires on a fixture and stays silent on a clean near miss."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from config_helpers import MESH, telemetry

from meshtrace.config import Bundle
from meshtrace.config.lint import lint

Manifests = Callable[..., Bundle]

ROOT = telemetry(
    "mesh",
    "istio-system",
    "tracing: [{providers: [{name: otel}], randomSamplingPercentage: 5, "
    "customTags: {environment: {literal: {value: staging}}}}]",
)
OPERATOR = (
    "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\n"
    "metadata: {{name: {name}, namespace: istio-system}}\nspec:\n  meshConfig: {body}\n"
)


def tag_value(expr: str) -> str:
    """A mesh-wide Telemetry whose one tag override has the value `expr`."""
    quoted = expr.replace("'", "''")
    return telemetry(
        "m", "istio-system", f"metrics: [{{overrides: [{{tagOverrides: {{v: {{value: '{quoted}'}}}}}}]}}]"
    )


def operator(body: str, name: str = "extra") -> str:
    return OPERATOR.format(name=name, body=body)


def namespace(name: str, labels: str = "{}") -> str:
    return f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}, labels: {labels}}}\n"


def provider(host: str, port: int) -> str:
    """The only IstioOperator, with one opentelemetry provider `otel`."""
    return operator(
        f"{{extensionProviders: [{{name: otel, opentelemetry: {{service: {host}, port: {port}}}}}]}}",
        name="only",
    )


def service(ports: str) -> str:
    return (
        "apiVersion: v1\nkind: Service\nmetadata: {name: otel, namespace: istio-system}\n"
        f"spec:\n  selector: {{app: otel}}\n  ports: {ports}\n"
    )


def collector(
    exporters: str = "{debug: {verbosity: basic}}", processors: str = "", pipeline_procs: str = ""
) -> str:
    procs = f"    processors: {processors}\n" if processors else ""
    pipe_procs = f", processors: {pipeline_procs}" if pipeline_procs else ""
    exporter = exporters.split(":")[0].lstrip("{")
    return (
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: otel-config, namespace: istio-system}\n"
        "data:\n  config.yaml: |\n"
        "    receivers: {otlp: {protocols: {grpc: {endpoint: 127.0.0.1:4317}}}}\n"
        f"{procs}"
        f"    exporters: {exporters}\n"
        "    service:\n"
        f"      pipelines: {{traces: {{receivers: [otlp]{pipe_procs}, exporters: [{exporter}]}}}}\n"
    )


def rule(expr: str) -> str:
    return (
        "apiVersion: monitoring.coreos.com/v1\nkind: PrometheusRule\n"
        "metadata: {name: alerts, namespace: obs}\n"
        f"spec:\n  groups: [{{name: g, rules: [{{alert: A, expr: '{expr}'}}]}}]\n"
    )


DEPLOYMENT = (
    "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: shop}\n"
    "spec:\n  selector: {matchLabels: {app: web}}\n"
    "  template: {metadata: {labels: {app: web}}, spec: {containers: [{name: web, image: web}]}}\n"
)


def app(name: str, namespace: str, env: str = "[]") -> str:
    """A Deployment and its Service (port 8080)."""
    return (
        f"apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: {namespace}}}\n"
        f"spec:\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n"
        f"    spec: {{containers: [{{name: {name}, image: {name}, env: {env}}}]}}\n"
        f"---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {namespace}}}\n"
        f"spec: {{selector: {{app: {name}}}, ports: [{{name: http, port: 8080}}]}}\n"
    )


def rate(name: str, namespace: str, percent: int) -> str:
    return telemetry(
        f"{name}-rate",
        namespace,
        f"selector: {{matchLabels: {{app: {name}}}}}\ntracing: [{{randomSamplingPercentage: {percent}}}]",
    )


CALLS_BACKEND = "[{name: BACKEND_URL, value: 'http://backend:8080'}]"
CLEAN = [
    ROOT,
    service("[{name: grpc-otlp, port: 4317}, {name: http-otlp, port: 4318}]"),
    collector(),
    rule("rate(otelcol_processor_incoming_items[5m]) - rate(otelcol_processor_outgoing_items[5m]) > 100"),
    DEPLOYMENT,
    telemetry(
        "web", "shop", "selector: {matchLabels: {app: web}}\ntracing: [{randomSamplingPercentage: 50}]"
    ),
]


def codes(bundle: Bundle) -> set[str]:
    return {f.code for f in lint(bundle)}


def test_clean_bundle_has_no_findings(manifests: Manifests) -> None:
    assert [f.as_dict() for f in lint(manifests(*CLEAN))] == []


# (code, severity, documents that make it fire, documents of a near miss that must stay silent)
CASES: list[tuple[str, str, list[str], list[str], bool]] = [
    (
        "telemetry-deprecated-version",
        "warning",
        [ROOT.replace("telemetry.istio.io/v1", "telemetry.istio.io/v1alpha1")],
        [ROOT],
        True,
    ),
    (
        "sampling-without-provider",
        "error",
        [telemetry("mesh", "istio-system", "tracing: [{randomSamplingPercentage: 50}]")],
        # a namespace resource without providers inherits the root's: fine
        [ROOT, telemetry("ns", "shop", "tracing: [{randomSamplingPercentage: 50}]")],
        True,
    ),
    (
        "sampling-without-provider",
        "error",
        # a SERVER-only provider leaves the client side without one
        [
            telemetry(
                "mesh", "istio-system", "tracing: [{match: {mode: SERVER}, providers: [{name: otel}]}]"
            ),
            telemetry("ns", "shop", "tracing: [{randomSamplingPercentage: 50}]"),
        ],
        [
            telemetry(
                "mesh", "istio-system", "tracing: [{match: {mode: SERVER}, providers: [{name: otel}]}]"
            ),
            telemetry("ns", "shop", "tracing: [{match: {mode: SERVER}, randomSamplingPercentage: 50}]"),
        ],
        True,
    ),
    (
        "unknown-provider",
        "error",
        [ROOT.replace("name: otel}", "name: otel-colector}")],
        # case-insensitive names and Istio's built-ins are known
        [
            ROOT.replace("name: otel}", "name: OTEL}"),
            telemetry(
                "m",
                "shop",
                "metrics: [{providers: [{name: prometheus}]}]\naccessLogging: [{providers: [{name: envoy}]}]",
            ),
        ],
        True,
    ),
    (
        "unknown-provider",
        "error",
        [ROOT, operator("{defaultProviders: {tracing: [nope]}}")],
        [ROOT, operator("{defaultProviders: {metrics: [prometheus]}}")],
        True,
    ),
    (
        "provider-not-tracing",
        "error",
        [ROOT.replace("name: otel}", "name: prometheus}")],
        [ROOT],
        True,
    ),
    (
        "multiple-namespace-telemetry",
        "error",
        [ROOT, telemetry("zz-second", "istio-system", "tracing: [{randomSamplingPercentage: 1}]")],
        [ROOT, telemetry("zz-second", "shop", "tracing: [{randomSamplingPercentage: 1}]")],
        True,
    ),
    (
        "multiple-workload-telemetry",
        "warning",
        [
            DEPLOYMENT,
            telemetry("a", "shop", "selector: {matchLabels: {app: web}}"),
            telemetry("b", "shop", "selector: {matchLabels: {app: web}}"),
        ],
        [
            DEPLOYMENT,
            telemetry("a", "shop", "selector: {matchLabels: {app: web}}"),
            telemetry("b", "shop", "selector: {matchLabels: {app: api}}"),
        ],
        True,
    ),
    (
        "root-namespace-selector",
        "warning",
        [ROOT, telemetry("sel", "istio-system", "selector: {matchLabels: {app: web}}")],
        [ROOT, telemetry("sel", "shop", "selector: {matchLabels: {app: web}}")],
        True,
    ),
    (
        "default-providers-tracing",
        "warning",
        [operator("{defaultProviders: {tracing: [otel]}}")],
        [ROOT, operator("{defaultProviders: {metrics: [prometheus]}}")],
        True,
    ),
    (
        "legacy-zipkin-tracing",
        "warning",
        [MESH, ROOT, operator("{defaultConfig: {tracing: {zipkin: {address: 'otel.istio-system:9411'}}}}")],
        # the same address with no opentelemetry provider around is just the legacy tracer
        [operator("{defaultConfig: {tracing: {zipkin: {address: 'zipkin.obs:9411'}}}}", name="only")],
        False,
    ),
    (
        "no-sidecar-injection",
        "warning",
        [namespace("shop"), DEPLOYMENT],
        # labelled for injection, or a namespace the manifests do not define (nothing can be said)
        [
            namespace("shop", "{istio-injection: enabled}"),
            DEPLOYMENT,
            DEPLOYMENT.replace("namespace: shop", "namespace: x"),
        ],
        True,
    ),
    (
        "no-sidecar-injection",
        "info",  # the pod opts out on purpose
        [
            namespace("shop", "{istio.io/rev: stable}"),
            DEPLOYMENT.replace("labels: {app: web}", "labels: {app: web, sidecar.istio.io/inject: 'false'}"),
        ],
        [
            namespace("shop"),
            DEPLOYMENT.replace("labels: {app: web}", "labels: {app: web, sidecar.istio.io/inject: 'true'}"),
        ],
        True,
    ),
    (
        "provider-service-host",
        "error",
        # istiod looks providers up by full host name: a short name finds no cluster
        [provider("otel.istio-system", 4317), service("[{name: grpc-otlp, port: 4317}]")],
        [provider("otel.istio-system.svc.cluster.local", 4317), service("[{name: grpc-otlp, port: 4317}]")],
        False,
    ),
    (
        "provider-service-host",
        "error",
        [provider("otel.istio-system.svc.cluster.local", 4318), service("[{name: grpc-otlp, port: 4317}]")],
        # a host no manifest defines may be outside the cluster (ServiceEntry): not judged
        [provider("api.honeycomb.io", 443), service("[{name: grpc-otlp, port: 4317}]")],
        False,
    ),
    (
        "collector-port-protocol",
        "error",
        [service("[{name: otlp-grpc, port: 4317}]")],
        [service("[{name: otlp-grpc, port: 4317, appProtocol: grpc}]")],
        True,
    ),
    (
        "collector-port-protocol",
        "error",
        [service("[{name: otlp, port: 14317, targetPort: 4317}]")],
        [service("[{name: grpc, port: 14317, targetPort: 4317}]")],
        True,
    ),
    (
        "collector-logging-exporter",
        "error",
        [collector(exporters="{logging: {}}")],
        [collector()],
        True,
    ),
    (
        "collector-invalid-value",
        "error",
        # issue 11 finding 2: a typo in a tail_sampling policy type (upstream: status_code)
        [
            collector(
                processors="{tail_sampling: {policies: [{name: e, type: status_codes}]}}",
                pipeline_procs="[tail_sampling]",
            )
        ],
        [
            collector(
                processors="{tail_sampling: {policies: [{name: e, type: status_code}]}}",
                pipeline_procs="[tail_sampling]",
            )
        ],
        True,
    ),
    (
        "collector-logging-exporter",
        "error",
        # the OpenTelemetry Helm chart keeps its config under `relay`
        [collector(exporters="{logging: {}}").replace("config.yaml: |", "relay: |")],
        [collector(exporters="{debug: {}}").replace("config.yaml: |", "relay: |")],
        True,
    ),
    (
        "collector-loglevel",
        "error",
        [collector(exporters="{logging: {loglevel: info}}")],
        [collector(exporters="{debug: {verbosity: detailed}}")],
        True,
    ),
    (
        "collector-memory-limiter-order",
        "warning",
        [
            collector(
                processors="{batch: {}, memory_limiter: {check_interval: 1s, limit_mib: 100}}",
                pipeline_procs="[batch, memory_limiter]",
            )
        ],
        [
            collector(
                processors="{batch: {}, memory_limiter: {check_interval: 1s, limit_mib: 100}}",
                pipeline_procs="[memory_limiter, batch]",
            )
        ],
        True,
    ),
    (
        "collector-unknown-component",
        "error",
        [collector(exporters="{nonsense: {}}")],
        [collector()],
        True,
    ),
    (
        "collector-removed-component",
        "error",
        # issue 11 finding 2: removed in Collector v0.109, its config is refused
        [collector().replace("    exporters:", "    extensions: {memory_ballast: {}}\n    exporters:", 1)],
        [collector(exporters="{debug: {}}")],
        True,
    ),
    (
        "alert-removed-metric",
        "error",
        [rule("rate(otelcol_processor_dropped_spans[5m]) > 100")],
        [rule("rate(otelcol_processor_dropped_spans_by_pod[5m]) > 100")],  # some other metric
        True,
    ),
    (
        "alert-removed-metric",
        "error",
        [rule("otelcol_processor_refused_spans_total > 0")],
        [rule("otelcol_receiver_refused_spans > 0")],
        True,
    ),
    (
        "production-full-sampling",
        "warning",
        [ROOT.replace("value: staging", "value: production").replace("Percentage: 5", "Percentage: 100")],
        # exactly 10% is the top of the advised range; 100% in staging is fine
        [
            ROOT.replace("value: staging", "value: production").replace("Percentage: 5", "Percentage: 10"),
            ROOT.replace("Percentage: 5", "Percentage: 100").replace("name: mesh,", "name: mesh2,"),
        ],
        True,
    ),
    (
        "production-full-sampling",
        "warning",
        [
            ROOT.replace("namespace: istio-system}", "namespace: istio-system, labels: {env: prod}}").replace(
                "Percentage: 5", "Percentage: 50"
            )
        ],
        # not mesh-wide: a namespace may trace everything
        [
            ROOT,
            telemetry(
                "ns",
                "shop",
                "tracing: [{randomSamplingPercentage: 100, "
                "customTags: {environment: {literal: {value: production}}}}]",
            ),
        ],
        True,
    ),
    (
        "production-full-sampling",
        "warning",
        [
            telemetry(
                "mesh",
                "istio-system",
                "tracing: [{providers: [{name: otel}], randomSamplingPercentage: 50, "
                "customTags: {env: {environment: {name: ENV, defaultValue: production}}}}]",
            )
        ],
        [
            telemetry(
                "mesh",
                "istio-system",
                "tracing: [{providers: [{name: otel}], randomSamplingPercentage: 50, "
                "customTags: {env: {environment: {name: production}}}}]",
            )
        ],
        True,
    ),
    (
        "sampling-not-first-hop",
        "info",
        [
            ROOT,
            app("frontend", "shop", CALLS_BACKEND),
            app("backend", "shop"),
            rate("frontend", "shop", 50),
            rate("backend", "shop", 30),
        ],
        # the same rate; or a bare name that cannot reach another namespace
        [
            ROOT,
            app("frontend", "shop", CALLS_BACKEND),
            app("backend", "shop"),
            rate("frontend", "shop", 30),
            rate("backend", "shop", 30),
            app("web", "other", CALLS_BACKEND),
        ],
        True,
    ),
    (
        "sampling-not-first-hop",
        "info",
        [
            ROOT,
            app("frontend", "web", "[{name: B, value: 'backend.shop.svc.cluster.local:8080'}]"),
            app("backend", "shop"),
            rate("backend", "shop", 30),
        ],
        # only a namespace/workload rate on the callee counts, not the mesh-wide one
        [
            ROOT,
            app("frontend", "web", "[{name: B, value: 'backend.shop.svc.cluster.local:8080'}]"),
            app("backend", "shop"),
            rate("frontend", "web", 30),
        ],
        True,
    ),
    (
        "propagation-mismatch",
        "warning",
        [ROOT, app("web", "shop", "[{name: OTEL_PROPAGATORS, value: b3multi}]")],
        # the SDK default (tracecontext) with the opentelemetry provider; b3 with a zipkin provider
        [
            ROOT,
            app("web", "shop", "[{name: OTEL_SERVICE_NAME, value: web}]"),
            app("api", "shop", "[{name: OTEL_PROPAGATORS, value: 'b3multi,tracecontext'}]"),
        ],
        True,
    ),
    (
        "propagation-mismatch",
        "warning",
        [
            operator("{extensionProviders: [{name: zip, zipkin: {service: z, port: 9411}}]}", name="only"),
            ROOT.replace("name: otel}", "name: zip}"),
            app("web", "shop", "[{name: OTEL_SERVICE_NAME, value: web}]"),
        ],
        [
            operator("{extensionProviders: [{name: zip, zipkin: {service: z, port: 9411}}]}", name="only"),
            ROOT.replace("name: otel}", "name: zip}"),
            app("web", "shop", "[{name: OTEL_PROPAGATORS, value: b3}]"),
        ],
        False,
    ),
    (
        "mixer-tag-override",
        "warning",
        [
            telemetry(
                "m", "istio-system", "metrics: [{overrides: [{tagOverrides: {v: {value: 'a.b | unknown'}}}]}]"
            )
        ],
        [
            telemetry(
                "m",
                "istio-system",
                "metrics: [{overrides: [{tagOverrides: {v: {value: \"has(a.b) ? a.b : 'x'\"}, "
                "w: {value: 'a.b || c.d'}}}]}]",
            )
        ],
        True,
    ),
    (
        "tag-override-invalid",
        "error",
        [tag_value("request.host +"), tag_value("request.host | 'x' +")],
        [tag_value("request.host"), tag_value("has(request.host) ? request.host : 'x'")],
        True,
    ),
    (
        "tag-override-unsupported",
        "error",
        [tag_value("request.headers.exists(h, h == 'x')"), tag_value("{'a': 1}")],
        [tag_value("request.headers['x'].startsWith('y')")],
        True,
    ),
    (
        "tag-override-attribute",
        "warning",
        [tag_value("a == 'x' || b")],
        [tag_value("request.host == 'x' || has(request.path)"), tag_value("node.id")],
        True,
    ),
    (
        "mesh-proxy-metadata",
        "warning",
        [operator("{proxyMetadata: {ISTIO_META_DNS_CAPTURE: 'false'}}")],
        [operator("{defaultConfig: {proxyMetadata: {ISTIO_META_DNS_CAPTURE: 'false'}}}")],
        True,
    ),
    (
        "istio-operator-overlay",
        "info",
        [MESH, operator("{enableTracing: false}")],
        [operator("{enableTracing: false}", name="only")],
        False,
    ),
    (
        "proxy-config-snake-case",
        "info",
        [operator("{defaultConfig: {tracing: {max_path_tag_length: 99}}}")],
        [operator("{defaultConfig: {tracing: {maxPathTagLength: 99}}}")],
        True,
    ),
    (
        "schema",
        "error",
        [telemetry("bad", "shop", "tracing: [{randomSamplingPercentage: 150}]")],
        [telemetry("bad", "shop", "tracing: [{randomSamplingPercentage: 100}]")],
        True,
    ),
    (
        "schema",
        "error",
        [telemetry("bad", "shop", "tracing: [{customTags: {a: {literal: {value: x}, header: {name: y}}}}]")],
        [
            telemetry(
                "bad", "shop", "tracing: [{customTags: {a: {literal: {value: x}}, b: {header: {name: y}}}}]"
            )
        ],
        True,
    ),
    (
        "schema",
        "error",
        [
            telemetry(
                "bad", "shop", "selector: {matchLabels: {app: a}}\ntargetRefs: [{kind: Service, name: a}]"
            )
        ],
        [telemetry("bad", "shop", "targetRefs: [{kind: Service, name: a}]")],
        True,
    ),
    (
        "schema",
        "error",
        [
            telemetry(
                "bad", "shop", "metrics: [{overrides: [{tagOverrides: {a: {operation: REMOVE, value: x}}}]}]"
            )
        ],
        [telemetry("bad", "shop", "metrics: [{overrides: [{tagOverrides: {a: {operation: REMOVE}}}]}]")],
        True,
    ),
    (
        "schema-unknown-field",
        "error",
        [telemetry("bad", "shop", "tracing: [{randomSamplingPercent: 10}]")],
        [telemetry("bad", "shop", "tracing: [{randomSamplingPercentage: 10}]")],
        True,
    ),
    (
        "duplicate-resource",
        "warning",  # a later document changes values: say which
        [DEPLOYMENT, DEPLOYMENT.replace("image: web", "image: web:2")],
        [DEPLOYMENT, DEPLOYMENT.replace("name: web, namespace", "name: web2, namespace")],
        True,
    ),
    (
        "duplicate-resource",
        "info",
        [DEPLOYMENT, DEPLOYMENT.replace("name: web, namespace", "name: web, namespace")],
        [DEPLOYMENT, DEPLOYMENT.replace("name: web, namespace", "name: web2, namespace")],
        True,
    ),
]


@pytest.mark.parametrize(("code", "severity", "fire", "silent", "mesh"), CASES, ids=[c[0] for c in CASES])
def test_rule_fires_and_stays_silent(
    manifests: Manifests, code: str, severity: str, fire: list[str], silent: list[str], mesh: bool
) -> None:
    fired = [f for f in lint(manifests(*fire, mesh=mesh)) if f.code == code]
    assert fired, f"{code} did not fire"
    assert {f.severity for f in fired} == {severity}
    for f in fired:
        assert f.message and f.file and f.resource
    quiet = [f.as_dict() for f in lint(manifests(*silent, mesh=mesh)) if f.code == code]
    assert quiet == []


def test_yaml_error_keeps_the_other_documents(manifests: Manifests) -> None:
    bundle = manifests(ROOT + "---\nkind: [unclosed\n---\n" + DEPLOYMENT)
    errors = [f for f in lint(bundle) if f.code == "yaml-error"]
    assert len(errors) == 1
    assert errors[0].document == 1 and errors[0].line in (7, 8)
    assert bundle.deployment("web", "shop") is not None
    assert any(t.name == "mesh" for t in bundle.telemetries)


def test_findings_are_sorted_by_severity(manifests: Manifests) -> None:
    findings = lint(
        manifests(
            ROOT.replace("telemetry.istio.io/v1", "telemetry.istio.io/v1alpha1"),
            service("[{port: 4317}]"),
            operator("{enableTracing: true}"),
        )
    )
    order = [f.severity for f in findings]
    assert order == sorted(order, key=["error", "warning", "info"].index)
    assert {"error", "warning", "info"} <= set(order)


def test_legacy_zipkin_needs_the_zipkin_key_itself(manifests: Manifests) -> None:
    # `meshtrace render` keeps defaultConfig.tracing (sampling) and removes only its zipkin key:
    # a tracing block without zipkin is no legacy tracer.
    bundle = manifests(operator("{defaultConfig: {tracing: {sampling: 10.0}}}"), ROOT)
    assert "legacy-zipkin-tracing" not in codes(bundle)


def test_processor_span_counters_say_when_and_how_they_were_renamed(manifests: Manifests) -> None:
    # Issue 11 finding 10: memory_limiter emitted these until v0.154 and renamed them in v0.155
    # (the old message said they were removed in v0.111).
    fired = [
        f
        for f in lint(manifests(rule("rate(otelcol_processor_refused_spans[5m]) > 0")))
        if f.code == "alert-removed-metric"
    ]
    assert len(fired) == 1
    assert "until v0.154" in fired[0].message and "renamed in v0.155" in fired[0].message
    assert "v0.111" not in fired[0].message
    assert fired[0].fix == "rewrite with otelcol_processor_memory_limiter_refused_spans"


def test_collector_findings_carry_the_checks_stable_code(manifests: Manifests) -> None:
    typo = collector(processors="{k8sattribute: {}}", pipeline_procs="[k8sattribute]")
    fired = [f for f in lint(manifests(typo)) if f.code == "collector-unknown-component"]
    assert fired and "[COL001]" in fired[0].message and "did you mean 'k8s_attributes'" in fired[0].message
