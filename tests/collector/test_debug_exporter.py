"""The debug exporter's three verbosity levels."""

from __future__ import annotations

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from meshtrace.collector.exporters.debug import render
from meshtrace.model import Traces


def traces() -> Traces:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.add(key="service.name", value=AnyValue(string_value="svc"))
    span = rs.scope_spans.add().spans.add(name="op", trace_id=b"\x01" * 16, span_id=b"\x02" * 8)
    span.attributes.add(key="k", value=AnyValue(int_value=7))
    return Traces.from_message(req)


def test_verbosity_levels() -> None:
    assert render(traces(), "basic") == ['Traces {"resource spans": 1, "spans": 1}']
    normal = render(traces(), "normal")
    assert normal[1] == f"op {'01' * 16} {'02' * 8} k=7"
    detailed = "\n".join(render(traces(), "detailed"))
    assert "Resource attributes: service.name=svc" in detailed
    assert f"Trace ID       : {'01' * 16}" in detailed
    assert "     -> k: 7" in detailed


def test_the_logging_exporters_loglevel_maps_to_verbosity() -> None:
    from meshtrace.collector.exporters.debug import DebugConfig
    from meshtrace.collector.schema import decode

    assert decode(DebugConfig, {"loglevel": "info"})[0].verbosity == "normal"
    assert decode(DebugConfig, {"loglevel": "debug"})[0].verbosity == "detailed"
    _, problems = decode(DebugConfig, {"loglevel": "loud"}, "exporters.logging")
    assert any(p.severity == "error" and "loud" in p.message for p in problems)
