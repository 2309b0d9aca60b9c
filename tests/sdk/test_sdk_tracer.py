"""init_tracer with an in-memory exporter: resource, batching, sampler, errors; the propagator
continues W3C and B3; the scheme-less endpoint builds a plaintext gRPC exporter. The real OTLP path
is tested end to end in tests/demo."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
from opentelemetry import context
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from meshtrace.sdk import SettingsError, init_tracer, propagator
from meshtrace.sdk.settings import exporter_settings
from meshtrace.sdk.tracer import otlp_exporter

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


def test_spans_carry_the_resource_and_flush_on_shutdown() -> None:
    exporter = InMemorySpanExporter()
    shutdown = init_tracer("svc", service_version="1.0.0", exporter=exporter, env={}, set_global=False)
    with shutdown.provider.get_tracer("t").start_as_current_span("Database.SelectUsers"):
        pass
    assert exporter.get_finished_spans() == ()  # still in the batch processor (5 s delay)
    shutdown()
    (span,) = exporter.get_finished_spans()
    assert span.resource.attributes["service.name"] == "svc"
    assert span.resource.attributes["service.version"] == "1.0.0"
    assert span.resource.attributes["deployment.environment.name"] == "production"


def test_default_sampler_follows_the_parent() -> None:
    exporter = InMemorySpanExporter()
    shutdown = init_tracer("svc", exporter=exporter, env={}, set_global=False)
    tracer = shutdown.provider.get_tracer("t")
    for flags in ("01", "00"):
        parent = propagator().extract({"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-{flags}"})
        with tracer.start_as_current_span(f"flags-{flags}", context=parent, kind=SpanKind.SERVER):
            pass
    shutdown()
    assert [s.name for s in exporter.get_finished_spans()] == ["flags-01"]
    (span,) = exporter.get_finished_spans()
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert span.parent is not None and format(span.parent.span_id, "016x") == PARENT_ID


def test_sampler_from_environment() -> None:
    exporter = InMemorySpanExporter()
    shutdown = init_tracer(
        "svc", exporter=exporter, env={"OTEL_TRACES_SAMPLER": "always_off"}, set_global=False
    )
    with shutdown.provider.get_tracer("t").start_as_current_span("x"):
        pass
    shutdown()
    assert exporter.get_finished_spans() == ()


def test_bad_environment_is_a_settings_error() -> None:
    with pytest.raises(SettingsError, match="OTEL_EXPORTER_OTLP_PROTOCOL"):
        init_tracer("svc", env={"OTEL_EXPORTER_OTLP_PROTOCOL": "thrift"}, set_global=False)


def test_propagator_reads_b3_and_writes_w3c_and_b3() -> None:
    ctx = propagator().extract({"x-b3-traceid": TRACE_ID, "x-b3-spanid": PARENT_ID, "x-b3-sampled": "1"})
    token = context.attach(ctx)
    try:
        carrier: dict[str, str] = {}
        propagator().inject(carrier)
    finally:
        context.detach(token)
    assert carrier["traceparent"] == f"00-{TRACE_ID}-{PARENT_ID}-01"
    assert carrier["x-b3-traceid"] == TRACE_ID and carrier["x-b3-spanid"] == PARENT_ID
    assert carrier["x-b3-sampled"] == "1"


def test_scheme_less_endpoint_builds_a_plaintext_grpc_exporter(caplog: pytest.LogCaptureFixture) -> None:
    settings = exporter_settings({"OTEL_EXPORTER_OTLP_ENDPOINT": "127.0.0.1:4317"})
    exporter = otlp_exporter(settings)
    assert exporter._insecure is True  # type: ignore[attr-defined]
    assert exporter._endpoint == "127.0.0.1:4317"  # type: ignore[attr-defined]
    exporter.shutdown()
    with caplog.at_level(logging.WARNING, logger="meshtrace.sdk"):
        init_tracer("svc", env={"OTEL_EXPORTER_OTLP_ENDPOINT": "127.0.0.1:4317"}, set_global=False)()
    assert any("has no scheme" in r.getMessage() for r in caplog.records)


@pytest.mark.e2e
def test_global_setup_installs_provider_and_propagator() -> None:
    # A fresh interpreter: the global provider can be set once per process.
    code = (
        "from opentelemetry import propagate, trace\n"
        "from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter\n"
        "from meshtrace.sdk import init_tracer\n"
        "shutdown = init_tracer('svc', exporter=InMemorySpanExporter())\n"
        "assert trace.get_tracer_provider() is shutdown.provider\n"
        "print(sorted(propagate.get_global_textmap().fields))\n"
        "shutdown()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    fields = out.stdout.strip()
    for name in ("traceparent", "tracestate", "baggage", "x-b3-traceid", "x-b3-spanid", "x-b3-sampled"):
        assert name in fields
