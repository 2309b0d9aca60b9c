"""The foundation's own contracts: the command table, the ready line, the Traces container."""

from __future__ import annotations

import subprocess
import sys

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from meshtrace import ready
from meshtrace.model import Traces


def _request(names: list[str]) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    ss = rs.scope_spans.add()
    for i, name in enumerate(names):
        span = ss.spans.add()
        span.name = name
        span.trace_id = bytes([1]) * 16
        span.span_id = bytes([i + 1]) * 8
    return req


def test_ready_line_round_trips(capsys: object) -> None:
    ready.announce("otlp-grpc", "127.0.0.1", 4317)
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    assert out == "meshtrace: otlp-grpc listening on 127.0.0.1:4317\n"
    assert ready.parse(out) == ("otlp-grpc", "127.0.0.1", 4317)
    assert ready.parse("meshtrace: something else") is None


def test_traces_concatenate_without_decoding() -> None:
    a = Traces.from_bytes(_request(["a", "b"]).SerializeToString(), span_count=2)
    b = Traces.from_message(_request(["c"]))
    both = Traces.concat([a, b])
    assert both.span_count() == 3
    names = [s.name for rs in both.message().resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert names == ["a", "b", "c"]


def test_traces_changed_drops_stale_encoding() -> None:
    t = Traces.from_message(_request(["a"]))
    before = t.encoded()
    t.message().resource_spans[0].scope_spans[0].spans[0].name = "renamed"
    t.changed()
    assert t.encoded() != before
    assert Traces.from_bytes(t.encoded()).message().resource_spans[0].scope_spans[0].spans[0].name == (
        "renamed"
    )


@pytest.mark.e2e
def test_cli_help_lists_only_built_commands() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "meshtrace", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "meshtrace" in out
