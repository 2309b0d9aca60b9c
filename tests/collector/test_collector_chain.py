"""Two collectors chained (agent -> gateway over otlp_grpc), a gateway that dies and comes back,
and shutdown with reachable and unreachable backends."""

from __future__ import annotations

import re
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import requests
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def gateway_config(out: Path, port: int = 0) -> dict[str, Any]:
    return {
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{port}"}}}},
        "exporters": {"file": {"path": str(out), "flush_interval": "0s"}},
        "service": {
            "pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["file"]}},
            "telemetry": {"metrics": {"level": "none"}},
        },
    }


def agent_config(backend: str, processors: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": "127.0.0.1:0"}}}},
        "processors": processors or {},
        "exporters": {
            "otlp_grpc": {
                "endpoint": backend,
                "tls": {"insecure": True},
                "timeout": "2s",
                "retry_on_failure": {"initial_interval": "100ms", "max_interval": "300ms"},
            }
        },
        "service": {
            "pipelines": {
                "traces": {
                    "receivers": ["otlp"],
                    "processors": list(processors or {}),
                    "exporters": ["otlp_grpc"],
                }
            },
            "telemetry": {"metrics": {"address": "127.0.0.1:0"}},
        },
    }


def send(address: str, name: str, spans: int = 10) -> None:
    req = ExportTraceServiceRequest()
    ss = req.resource_spans.add().scope_spans.add()
    for i in range(spans):
        ss.spans.add(name=f"{name}-{i}", trace_id=bytes([7]) * 16, span_id=(i + 1).to_bytes(8, "big"))
    with grpc.insecure_channel(address) as channel:
        channel.unary_unary(EXPORT)(req.SerializeToString(), timeout=10)


def gateway_and_agent(run_collector: Callable[..., Any], out: Path) -> tuple[Any, Any, int]:
    """A gateway writing to `out` and an agent (metrics on) exporting to it, with the gateway's
    port so a test can kill the gateway and start another on the same port."""
    gateway = run_collector(gateway_config(out), "otlp-grpc")
    port = gateway.listeners["otlp-grpc"][1]
    agent = run_collector(agent_config(f"127.0.0.1:{port}"), "otlp-grpc", "metrics")
    return gateway, agent, port


def names(spans: list[tuple[dict[str, Any], dict[str, Any]]]) -> set[str]:
    return {span["name"] for _, span in spans}


def metric(proc: Any, name: str) -> float:
    text = requests.get(f"http://{proc.address('metrics')}/metrics", timeout=5).text
    return sum(float(v) for v in re.findall(rf"^{name}{{[^}}]*}} (\S+)$", text, re.M))


def test_agent_retries_until_the_gateway_comes_back(
    tmp_path: Path, run_collector: Callable[..., Any], read_spans: Callable[..., Any]
) -> None:
    first, second = tmp_path / "gw1.jsonl", tmp_path / "gw2.jsonl"
    gateway, agent, port = gateway_and_agent(run_collector, first)

    send(agent.address("otlp-grpc"), "before")
    assert names(read_spans(first, 10)) == {f"before-{i}" for i in range(10)}

    gateway.stop(signal.SIGKILL)
    send(agent.address("otlp-grpc"), "during")  # accepted: queued in the agent, not blocked
    agent.wait_for_line("retrying in")
    assert metric(agent, "otelcol_exporter_queue_size") + metric(agent, "otelcol_exporter_sent_spans") >= 10

    run_collector(gateway_config(second, port), "otlp-grpc")
    assert names(read_spans(second, 10)) == {f"during-{i}" for i in range(10)}
    assert metric(agent, "otelcol_exporter_sent_spans") == 20
    assert metric(agent, "otelcol_exporter_send_failed_spans") == 0


def test_clean_shutdown_flushes_the_batch_and_the_queue(
    tmp_path: Path, run_collector: Callable[..., Any], read_spans: Callable[..., Any]
) -> None:
    out = tmp_path / "gw.jsonl"
    gateway = run_collector(gateway_config(out), "otlp-grpc")
    batch = {"batch": {"timeout": "60s", "send_batch_size": 100000}}  # holds data until shutdown
    agent = run_collector(agent_config(gateway.address("otlp-grpc"), batch), "otlp-grpc")
    send(agent.address("otlp-grpc"), "held", spans=25)
    assert agent.stop(signal.SIGTERM) == 0
    assert names(read_spans(out, 25)) == {f"held-{i}" for i in range(25)}


def test_unreachable_backend_drops_and_counts_after_the_drain_time(run_collector: Callable[..., Any]) -> None:
    agent = run_collector(agent_config("127.0.0.1:1"), "otlp-grpc", args=("--drain-timeout", "0.5"))
    send(agent.address("otlp-grpc"), "lost", spans=7)
    agent.wait_for_line("retrying in")
    assert agent.stop(signal.SIGTERM, timeout=15) == 0
    assert "shutdown dropped 7 spans" in agent.output()


def test_otlp_http_exporter_to_a_gateway_in_proto_and_json(
    tmp_path: Path, run_collector: Callable[..., Any], read_spans: Callable[..., Any]
) -> None:
    out = tmp_path / "gw.jsonl"
    gateway = run_collector(
        {
            "receivers": {"otlp": {"protocols": {"http": {"endpoint": "127.0.0.1:0"}}}},
            "exporters": {"file": {"path": str(out), "flush_interval": "0s"}},
            "service": {
                "pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["file"]}},
                "telemetry": {"metrics": {"level": "none"}},
            },
        },
        "otlp-http",
    )
    base = f"http://{gateway.address('otlp-http')}"
    exporters = {
        "otlphttp": {"endpoint": base},  # the deprecated alias
        "otlp_http/json": {"traces_endpoint": f"{base}/v1/traces", "encoding": "json", "compression": "none"},
    }
    agent = run_collector(
        {
            "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": "127.0.0.1:0"}}}},
            "exporters": exporters,
            "service": {
                "pipelines": {"traces": {"receivers": ["otlp"], "exporters": list(exporters)}},
                "telemetry": {"metrics": {"level": "none"}},
            },
        },
        "otlp-grpc",
    )
    send(agent.address("otlp-grpc"), "via-http", spans=5)
    found = read_spans(out, 10)
    assert sorted(span["name"] for _, span in found) == sorted([f"via-http-{i}" for i in range(5)] * 2)
    assert {span["traceId"] for _, span in found} == {"07" * 16}


def test_a_full_queue_refuses_with_retryable_statuses_and_counts(run_collector: Callable[..., Any]) -> None:
    config = agent_config("127.0.0.1:1")
    config["receivers"]["otlp"]["protocols"]["http"] = {"endpoint": "127.0.0.1:0"}
    config["exporters"]["otlp_grpc"]["sending_queue"] = {"num_consumers": 1, "queue_size": 1}
    config["exporters"]["otlp_grpc"]["retry_on_failure"] = {"initial_interval": "10s"}
    agent = run_collector(config, "otlp-grpc", "otlp-http", "metrics", args=("--drain-timeout", "0.2"))
    send(agent.address("otlp-grpc"), "a", spans=2)  # taken by the one consumer, retrying
    agent.wait_for_line("retrying in")
    send(agent.address("otlp-grpc"), "b", spans=3)  # fills the queue of 1
    try:
        send(agent.address("otlp-grpc"), "c", spans=4)
        raise AssertionError("a full queue must refuse")
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.UNAVAILABLE
    req = ExportTraceServiceRequest()
    req.resource_spans.add().scope_spans.add().spans.add(name="d", trace_id=b"\x01" * 16, span_id=b"\x01" * 8)
    response = requests.post(
        f"http://{agent.address('otlp-http')}/v1/traces",
        data=req.SerializeToString(),
        headers={"Content-Type": "application/x-protobuf"},
        timeout=10,
    )
    assert response.status_code == 503
    assert metric(agent, "otelcol_exporter_enqueue_failed_spans") == 5
    assert metric(agent, "otelcol_receiver_refused_spans") == 5
    assert metric(agent, "otelcol_receiver_accepted_spans") == 5
    assert metric(agent, "otelcol_exporter_queue_size") == 1
    assert metric(agent, "otelcol_exporter_queue_capacity") == 1


def test_a_second_signal_exits_without_waiting_for_the_drain(run_collector: Callable[..., Any]) -> None:
    agent = run_collector(agent_config("127.0.0.1:1"), "otlp-grpc", args=("--drain-timeout", "60"))
    send(agent.address("otlp-grpc"), "stuck", spans=3)
    agent.wait_for_line("retrying in")
    agent.proc.send_signal(signal.SIGTERM)
    agent.wait_for_line("shutting down")
    started = time.monotonic()
    assert agent.stop(signal.SIGTERM, timeout=15) == 1
    assert time.monotonic() - started < 10


def test_gateway_killed_mid_stream_loses_nothing_the_agent_accepted(
    tmp_path: Path, run_collector: Callable[..., Any], read_spans: Callable[..., Any]
) -> None:
    first, second = tmp_path / "gw1.jsonl", tmp_path / "gw2.jsonl"
    gateway, agent, port = gateway_and_agent(run_collector, first)
    batches = 40
    sent: list[str] = []

    def stream() -> None:
        for n in range(batches):
            send(agent.address("otlp-grpc"), f"b{n}", spans=5)
            sent.append(f"b{n}")
            time.sleep(0.02)

    sender = threading.Thread(target=stream)
    sender.start()
    deadline = time.monotonic() + 20
    while len(sent) < batches // 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    gateway.stop(signal.SIGKILL)  # while the agent is sending
    while len(sent) < 2 * batches // 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    run_collector(gateway_config(second, port), "otlp-grpc")
    sender.join(timeout=30)
    assert len(sent) == batches  # the agent accepted every request, gateway or not

    want = {f"b{n}-{i}" for n in range(batches) for i in range(5)}
    deadline = time.monotonic() + 20
    got: set[str] = set()
    while got != want and time.monotonic() < deadline:
        got = names(read_spans(first, 0, timeout=0)) | names(read_spans(second, 0, timeout=0))
        time.sleep(0.1)
    assert got == want  # a batch in flight when the gateway died may arrive twice, never not at all
    assert metric(agent, "otelcol_exporter_send_failed_spans") == 0


def test_one_receiver_fans_out_to_two_pipelines(
    tmp_path: Path, run_collector: Callable[..., Any], read_spans: Callable[..., Any]
) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    collector = run_collector(
        {
            "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": "127.0.0.1:0"}}}},
            "processors": {"batch": {"timeout": "50ms"}},
            "exporters": {
                "file/a": {"path": str(a), "flush_interval": "0s"},
                "file/b": {"path": str(b), "flush_interval": "0s"},
            },
            "service": {
                "pipelines": {
                    "traces/a": {"receivers": ["otlp"], "exporters": ["file/a"]},
                    "traces/b": {
                        "receivers": ["otlp"],
                        "processors": ["batch"],
                        "exporters": ["file/a", "file/b"],
                    },
                },
                "telemetry": {"metrics": {"level": "none"}},
            },
        },
        "otlp-grpc",
    )
    send(collector.address("otlp-grpc"), "fan", spans=4)
    expected = {f"fan-{i}" for i in range(4)}
    assert sorted(span["name"] for _, span in read_spans(a, 8)) == sorted([*expected, *expected])
    assert names(read_spans(b, 4)) == expected
