"""meshtrace.model.otlp_answer: the OTLP retry rules and the parsers of what a server answers
(Retry-After, grpc-status-details-bin, partial_success), which read wire input and must never
raise on it."""

from __future__ import annotations

from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from meshtrace.model.otlp_answer import (
    grpc_retryable,
    jittered,
    partial_success,
    retry_after,
    retry_info_delay,
)


def test_grpc_codes_follow_the_otlp_table() -> None:
    for code in ("CANCELLED", "DEADLINE_EXCEEDED", "ABORTED", "OUT_OF_RANGE", "UNAVAILABLE", "DATA_LOSS"):
        assert grpc_retryable(code, None)
    for code in ("UNKNOWN", "INVALID_ARGUMENT", "PERMISSION_DENIED", "UNAUTHENTICATED", "INTERNAL"):
        assert not grpc_retryable(code, 1.0)
    assert grpc_retryable("RESOURCE_EXHAUSTED", 0.5)  # the server can recover
    assert not grpc_retryable("RESOURCE_EXHAUSTED", None)


def test_retry_info_and_retry_after_are_read() -> None:
    status = status_pb2.Status(code=14)
    info = error_details_pb2.RetryInfo()
    info.retry_delay.seconds, info.retry_delay.nanos = 2, 500_000_000
    status.details.add().Pack(info)
    assert retry_info_delay((("grpc-status-details-bin", status.SerializeToString()),)) == 2.5
    assert retry_info_delay(None) is None
    assert retry_after("3") == 3.0 and retry_after("-1") == 0.0
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT") is None
    assert retry_after("nan") is None and retry_after("inf") is None


def test_partial_success_in_both_encodings() -> None:
    response = ExportTraceServiceResponse()
    response.partial_success.rejected_spans = 2
    response.partial_success.error_message = "bad id"
    assert partial_success(response.SerializeToString()) == (2, "bad id")
    assert partial_success(json_format.MessageToJson(response).encode(), json=True) == (2, "bad id")
    assert partial_success(b"") == (0, "") and partial_success(b"{}", json=True) == (0, "")


def test_jitter_stays_within_its_spread() -> None:
    assert jittered(2.0, 0.5, lambda: 0.0) == 1.0 and jittered(2.0, 0.5, lambda: 1.0) == 3.0


@given(st.binary(max_size=200))
def test_answer_parsers_never_raise(data: bytes) -> None:
    rejected, message = partial_success(data)
    assert rejected >= 0 and isinstance(message, str)
    partial_success(data, json=True)
    delay = retry_info_delay((("grpc-status-details-bin", data),))
    assert delay is None or isinstance(delay, float)
    value = retry_after(data.decode("latin-1"))
    assert value is None or value >= 0
