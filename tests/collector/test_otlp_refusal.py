"""A pipeline that refuses with a known wait: the receiver says so (HTTP Retry-After, gRPC
RetryInfo) and the otlp_grpc / otlp_http exporters read it back."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from meshtrace.collector.component import ComponentID, RefusedError
from meshtrace.collector.exporters.helper import QueuedExporter
from meshtrace.collector.exporters.otlp_grpc import OtlpGrpcConfig, OtlpGrpcExporter
from meshtrace.collector.exporters.otlp_http import OtlpHttpConfig, OtlpHttpExporter
from meshtrace.collector.receivers.otlp.config import GrpcConfig, HttpConfig, OtlpReceiverConfig, Protocols
from meshtrace.collector.receivers.otlp.receiver import OtlpReceiver
from meshtrace.model import Traces


class Refusing:
    async def consume_traces(self, traces: Traces) -> None:
        raise RefusedError("memory limit", retry_after=3.0)


def batch() -> Traces:
    req = ExportTraceServiceRequest()
    req.resource_spans.add().scope_spans.add().spans.add(name="x", trace_id=b"\x01" * 16, span_id=b"\x01" * 8)
    return Traces.from_message(req)


def test_refusal_carries_the_wait_over_grpc_and_http(
    capsys: pytest.CaptureFixture[str], bare_host: Any
) -> None:
    async def main() -> None:
        protocols = Protocols(
            grpc=GrpcConfig(endpoint="127.0.0.1:0"), http=HttpConfig(endpoint="127.0.0.1:0")
        )
        receiver = OtlpReceiver(ComponentID("otlp", "refuse"), OtlpReceiverConfig(protocols), Refusing())
        await receiver.start(bare_host)
        ports = {line.split()[1]: line.rsplit(":", 1)[1] for line in capsys.readouterr().out.splitlines()}
        grpc_port, http_port = ports["otlp/refuse-grpc"], ports["otlp/refuse-http"]
        try:
            exporters: list[QueuedExporter] = [
                OtlpGrpcExporter(
                    ComponentID("otlp_grpc"), OtlpGrpcConfig(endpoint=f"http://127.0.0.1:{grpc_port}")
                ),
                OtlpHttpExporter(
                    ComponentID("otlp_http"), OtlpHttpConfig(endpoint=f"http://127.0.0.1:{http_port}")
                ),
            ]
            for exporter in exporters:
                await exporter.start(None)  # type: ignore[arg-type]
                with pytest.raises(RefusedError) as refused:
                    await exporter._send(batch())
                assert refused.value.retry_after == 3.0, exporter.id
                await exporter.shutdown()

            async with (
                aiohttp.ClientSession() as session,
                session.post(
                    f"http://127.0.0.1:{http_port}/v1/traces",
                    data=batch().encoded(),
                    headers={"Content-Type": "application/x-protobuf"},
                ) as response,
            ):
                assert response.status == 503
                assert response.headers["Retry-After"] == "3"
        finally:
            await receiver.shutdown()

    asyncio.run(main())
