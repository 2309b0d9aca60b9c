"""`POST /api/import`: recognise an uploaded trace file and turn it into OTLP (sans-IO).

Accepted: an OTLP/JSON file as the collector's `file` exporter writes it (one
`{"resourceSpans": [...]}` object per line), one pretty-printed OTLP/JSON object, or a Jaeger JSON
download (`{"data": [trace, ...]}`, a list of traces, or one trace object).
"""

from __future__ import annotations

import json
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from meshtrace.model import jaeger, otlp_json


def _is_jaeger(obj: Any) -> bool:
    if isinstance(obj, dict):
        return "data" in obj or "spans" in obj
    return isinstance(obj, list)


def parse_import(body: bytes) -> ExportTraceServiceRequest:
    """All spans in an uploaded file; ValueError says why it is neither format (and where)."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text: {exc}") from None
    if not text.strip():
        raise ValueError("the file is empty")
    try:
        whole: Any = json.loads(text)
    except RecursionError:
        raise ValueError("invalid JSON: nested too deeply") from None
    except json.JSONDecodeError:
        whole = None  # maybe one object per line
    if whole is not None:
        if _is_jaeger(whole):
            return jaeger.from_jaeger(whole)
        if isinstance(whole, dict) and "resourceSpans" in whole:
            return otlp_json.request_from_json(whole)
        raise ValueError("expected OTLP/JSON ({resourceSpans: [...]}) or Jaeger JSON ({data: [...]})")
    request = ExportTraceServiceRequest()
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            part = otlp_json.loads(line)
        except ValueError as exc:
            raise ValueError(f"line {number}: {exc}") from None
        request.resource_spans.extend(part.resource_spans)
    return request
