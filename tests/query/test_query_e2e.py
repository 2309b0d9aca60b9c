"""End to end: the official opentelemetry-python OTLP exporter sends spans to a real
`meshtrace collector` running its built-in default config (ports moved to 0 with --set); the spans
are found through `/api/traces` and `/api/v3/traces`, survive a restart, and a Zipkin client's
spans land in the same store."""

from __future__ import annotations

import contextlib
import datetime
import json
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from meshtrace.store import TraceStore


@pytest.fixture
def start_collector(
    meshtrace_process: Any, default_collector_args: list[str], tmp_path: Path
) -> Callable[[], tuple[Any, str]]:
    """Starts the default collector on free ports with its store in tmp_path: (process, query URL)."""

    def start() -> tuple[Any, str]:
        proc = meshtrace_process(default_collector_args, env={"MESHTRACE_DATA_DIR": str(tmp_path)})
        proc.wait_for_listeners("query", "otlp-grpc", "zipkin", timeout=60)
        return proc, f"http://{proc.address('query')}"

    return start


def send_with_sdk(grpc_address: str) -> str:
    """Two spans and an error span through the SDK's gRPC exporter; returns the trace id (hex)."""
    provider = TracerProvider(resource=Resource.create({"service.name": "e2e-checkout", "team": "payments"}))
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=f"http://{grpc_address}", insecure=True))
    )
    tracer = provider.get_tracer("e2e")
    with tracer.start_as_current_span("POST /checkout", kind=SpanKind.SERVER) as root:
        root.set_attribute("http.request.method", "POST")
        with tracer.start_as_current_span("charge card", kind=SpanKind.CLIENT) as child:
            child.set_attribute("retries", 2)
            child.set_status(Status(StatusCode.ERROR, "card declined"))
            child.add_event("declined", {"reason": "insufficient funds"})
        trace_id = format(root.get_span_context().trace_id, "032x")
    provider.force_flush(10_000)
    provider.shutdown()
    return trace_id


def poll(fetch: Callable[[], Any], timeout: float = 20.0) -> Any:
    """Call `fetch` until it returns something truthy (spans go through the batch processor)."""
    deadline = time.monotonic() + timeout
    while True:
        result = fetch()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.1)


def search(base: str, **params: Any) -> list[Any]:
    body = requests.get(f"{base}/api/traces", params=params, timeout=10).json()
    assert body["errors"] is None, body
    data: list[Any] = body["data"]
    return data


def rfc3339(ns: int) -> str:
    return datetime.datetime.fromtimestamp(ns / 1e9, datetime.UTC).isoformat().replace("+00:00", "Z")


def test_sdk_spans_are_found_and_survive_a_restart(
    start_collector: Callable[[], tuple[Any, str]], tmp_path: Path
) -> None:
    proc, base = start_collector()
    before = time.time_ns()
    trace_id = send_with_sdk(proc.address("otlp-grpc"))

    traces = poll(lambda: search(base, service="e2e-checkout"))
    assert [t["traceID"] for t in traces] == [trace_id]
    (trace,) = traces
    assert {s["operationName"] for s in trace["spans"]} == {"POST /checkout", "charge card"}
    child = next(s for s in trace["spans"] if s["operationName"] == "charge card")
    root = next(s for s in trace["spans"] if s["operationName"] == "POST /checkout")
    assert child["references"] == [{"refType": "CHILD_OF", "traceID": trace_id, "spanID": root["spanID"]}]
    tags = {t["key"]: t["value"] for t in child["tags"]}
    assert tags["error"] is True and tags["otel.status_code"] == "ERROR" and tags["span.kind"] == "client"
    assert tags["retries"] == 2
    assert child["logs"][0]["fields"][0] == {"key": "event", "type": "string", "value": "declined"}
    process = trace["processes"][root["processID"]]
    assert process["serviceName"] == "e2e-checkout"
    assert {"key": "team", "type": "string", "value": "payments"} in process["tags"]

    errors = search(base, service="e2e-checkout", tags=json.dumps({"error": "true"}))
    assert [t["traceID"] for t in errors] == [trace_id]
    assert search(base, service="e2e-checkout", tags=json.dumps({"team": "billing"})) == []

    v3 = requests.get(
        f"{base}/api/v3/traces",
        params={
            "query.service_name": "e2e-checkout",
            "query.start_time_min": rfc3339(before - 10**9),
            "query.start_time_max": rfc3339(time.time_ns() + 10**9),
        },
        timeout=10,
    ).json()
    spans = [s for rs in v3["result"]["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]
    assert {s["traceId"] for s in spans} == {trace_id}
    assert len(spans) == 2

    assert proc.stop() == 0
    proc2, base2 = start_collector()
    body = requests.get(f"{base2}/api/traces/{trace_id}", timeout=10).json()
    assert len(body["data"][0]["spans"]) == 2
    assert requests.get(f"{base2}/api/services", timeout=10).json()["data"] == ["e2e-checkout"]
    proc2.stop()
    assert (tmp_path / "traces.db").is_file()


def test_zipkin_spans_land_in_the_store(
    start_collector: Callable[[], tuple[Any, str]], tmp_path: Path
) -> None:
    proc, base = start_collector()
    now_us = time.time_ns() // 1000
    span: dict[str, Any] = {
        "traceId": "5af7183fb1d4cf5f",
        "id": "6b221d5bc9e6496c",
        "name": "get /api",
        "kind": "SERVER",
        "timestamp": now_us - 5000,
        "duration": 1500,
        "localEndpoint": {"serviceName": "zipkin-app"},
        "tags": {"http.method": "GET", "error": "boom"},
    }
    response = requests.post(f"http://{proc.address('zipkin')}/api/v2/spans", json=[span], timeout=10)
    assert response.status_code == 202
    traces = poll(lambda: search(base, service="zipkin-app"))
    assert [t["traceID"] for t in traces] == ["5af7183fb1d4cf5f"]  # a 64-bit id stays 16 characters
    assert traces[0]["spans"][0]["duration"] == 1500
    deps = requests.get(f"{base}/api/dependencies", timeout=10).json()
    assert deps["errors"] is None and deps["data"] == []


def test_a_store_from_a_newer_meshtrace_stops_the_collector_with_the_reason(
    meshtrace_process: Any, default_collector_args: list[str], tmp_path: Path
) -> None:
    store = TraceStore(tmp_path / "traces.db")
    store.open()
    store.close()
    with contextlib.closing(sqlite3.connect(tmp_path / "traces.db")) as conn:
        conn.execute("PRAGMA user_version=7")
        conn.commit()
    proc = meshtrace_process(default_collector_args, env={"MESHTRACE_DATA_DIR": str(tmp_path)})
    assert proc.proc.wait(timeout=60) == 1
    assert "written by a newer meshtrace (store schema 7" in proc.output()


def test_committed_spans_survive_a_kill(
    start_collector: Callable[[], tuple[Any, str]], tmp_path: Path
) -> None:
    proc, base = start_collector()
    trace_id = send_with_sdk(proc.address("otlp-grpc"))
    assert poll(lambda: search(base, service="e2e-checkout"))  # visible = committed
    proc.stop(signal.SIGKILL)
    _, base2 = start_collector()
    body = requests.get(f"{base2}/api/traces/{trace_id}", timeout=10).json()
    assert len(body["data"][0]["spans"]) == 2
