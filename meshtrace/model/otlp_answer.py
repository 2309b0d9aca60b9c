"""How an OTLP exporter reads its server's answer (the OTLP specification's rules), shared by the
collector's exporters and the sidecar's span exporter; sans-IO, no gRPC import.

- gRPC: CANCELLED, DEADLINE_EXCEEDED, ABORTED, OUT_OF_RANGE, UNAVAILABLE and DATA_LOSS are
  retryable; RESOURCE_EXHAUSTED only when the status carries RetryInfo (the server can recover);
  every other code is final. RetryInfo's delay is the least wait before the next try.
- HTTP: 429, 502, 503 and 504 are retryable, with Retry-After (seconds) honoured; every other
  4xx/5xx is final.
- A success may carry `partial_success` (rejected spans and a message): never retried.
- Between tries: exponential backoff with jitter (`jittered`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

RETRYABLE_GRPC = frozenset(
    {"CANCELLED", "DEADLINE_EXCEEDED", "ABORTED", "OUT_OF_RANGE", "UNAVAILABLE", "DATA_LOSS"}
)
RETRYABLE_HTTP = frozenset({429, 502, 503, 504})


def retry_info_delay(trailing_metadata: object) -> float | None:
    """The RetryInfo delay (s) a gRPC server put in `grpc-status-details-bin`, if any."""
    for key, value in trailing_metadata or ():  # type: ignore[attr-defined]
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            try:
                status = status_pb2.Status.FromString(value)
            except Exception:  # a malformed detail is no RetryInfo
                return None
            for detail in status.details:
                info = error_details_pb2.RetryInfo()
                if detail.Unpack(info):
                    return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    return None


def grpc_retryable(code_name: str, delay: float | None) -> bool:
    """Whether a gRPC status (by name, e.g. `UNAVAILABLE`) may be retried."""
    return code_name in RETRYABLE_GRPC or (code_name == "RESOURCE_EXHAUSTED" and delay is not None)


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delay-seconds form; HTTP dates are ignored)."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


def partial_success(answer: bytes, json: bool = False) -> tuple[int, str]:
    """(rejected spans, message) of an ExportTraceServiceResponse (protobuf, or OTLP/JSON with
    `json`); (0, "") when the answer has none or is not one (an OTLP/HTTP body may be empty)."""
    if not answer:
        return 0, ""
    try:
        if json:
            response = json_format.Parse(answer, ExportTraceServiceResponse(), ignore_unknown_fields=True)
        else:
            response = ExportTraceServiceResponse.FromString(answer)
    except Exception:  # an answer we cannot read says nothing about rejected spans
        return 0, ""
    ps = response.partial_success
    return max(0, ps.rejected_spans), ps.error_message


def jittered(interval: float, factor: float, rng: Callable[[], float] = random.random) -> float:
    """One randomized wait around `interval`: interval * (1 ± factor), uniformly."""
    spread = factor * interval
    return interval - spread + rng() * 2 * spread
