"""The `otlp_grpc` exporter (alias `otlp`): OTLP/gRPC `TraceService/Export`, sending the encoded
request bytes as they arrived (no re-encoding), queued and retried by exporterhelper.

Retryable gRPC codes follow the Collector: CANCELLED, DEADLINE_EXCEEDED, ABORTED, OUT_OF_RANGE,
UNAVAILABLE, DATA_LOSS, and RESOURCE_EXHAUSTED when the server sends RetryInfo (its delay is
honoured). Every other code drops the batch (counted as send failed). A `partial_success` in the
answer is logged as a warning, as the Collector's exporter does; the batch counts as sent (the
server counted what it rejected).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import grpc

from meshtrace.collector.component import (
    ComponentID,
    Kind,
    PermanentError,
    RefusedError,
)
from meshtrace.collector.exporters import tls
from meshtrace.collector.exporters.helper import (
    QueueConfig,
    QueuedExporter,
    RetryConfig,
    warn_partial_success,
)
from meshtrace.collector.factory import ComponentFactory
from meshtrace.collector.schema import Duration
from meshtrace.model import Traces
from meshtrace.model.otlp_answer import grpc_retryable, retry_info_delay

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


@dataclass
class OtlpGrpcConfig:
    endpoint: str = ""
    tls: tls.TLSConfig = field(default_factory=tls.TLSConfig)
    compression: Literal["gzip", "none", ""] = "gzip"
    timeout: Duration = 5.0
    headers: dict[str, str] = field(default_factory=dict)
    sending_queue: QueueConfig = field(default_factory=QueueConfig)
    retry_on_failure: RetryConfig = field(default_factory=RetryConfig)
    balancer_name: str = "round_robin"
    wait_for_ready: bool = False
    keepalive: dict[str, Any] = field(default_factory=dict)
    read_buffer_size: int = 0
    write_buffer_size: int = 512 * 1024

    def __post_init__(self) -> None:
        if not self.endpoint:
            raise ValueError("endpoint must be set (host:port)")


def target(config: OtlpGrpcConfig) -> tuple[str, bool]:
    """(gRPC target, secure?) from the endpoint: an http:// scheme or tls.insecure means plaintext."""
    endpoint = config.endpoint
    for scheme, secure in (("http://", False), ("https://", True)):
        if endpoint.startswith(scheme):
            return endpoint[len(scheme) :].rstrip("/"), secure and not config.tls.insecure
    return endpoint, not config.tls.insecure


class OtlpGrpcExporter(QueuedExporter):
    def __init__(self, id: ComponentID, config: OtlpGrpcConfig) -> None:
        super().__init__(id, config.sending_queue, config.retry_on_failure)
        self.config = config
        self._channel: grpc.aio.Channel | None = None
        self._call: Any = None
        self._metadata = tuple((k.lower(), v) for k, v in config.headers.items())

    async def _send(self, traces: Traces) -> None:
        try:
            answer = await self._call(
                traces.encoded(),
                timeout=self.config.timeout or None,
                metadata=self._metadata or None,
                wait_for_ready=self.config.wait_for_ready,
            )
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            message = f"{code.name}: {exc.details()}"
            delay = retry_info_delay(exc.trailing_metadata())
            if grpc_retryable(code.name, delay):
                raise RefusedError(message, delay) from None
            raise PermanentError(message) from None
        warn_partial_success(self.id, answer)

    async def _open(self) -> None:
        address, secure = target(self.config)
        options: list[tuple[str, Any]] = [
            ("grpc.enable_retries", 0),  # exporterhelper retries; gRPC's own would hide failures
            ("grpc.lb_policy_name", self.config.balancer_name or "pick_first"),
        ]
        compression = (
            grpc.Compression.Gzip if self.config.compression == "gzip" else grpc.Compression.NoCompression
        )
        if secure:
            credentials = grpc.ssl_channel_credentials(
                tls.read(self.config.tls.ca_file),
                tls.read(self.config.tls.key_file),
                tls.read(self.config.tls.cert_file),
            )
            if self.config.tls.server_name_override:
                options.append(("grpc.ssl_target_name_override", self.config.tls.server_name_override))
            self._channel = grpc.aio.secure_channel(address, credentials, options, compression)
        else:
            self._channel = grpc.aio.insecure_channel(address, options, compression)
        # No (de)serializers: the request is the encoded bytes, the response is ignored.
        self._call = self._channel.unary_unary(EXPORT)

    async def _close(self) -> None:
        if self._channel is not None:
            await self._channel.close()


def warnings(config: OtlpGrpcConfig) -> list[tuple[str, str]]:
    _, secure = target(config)
    if secure and not config.endpoint.startswith("https://") and not config.tls.ca_file:
        message = (
            "TLS is on by default: a plaintext OTLP backend (such as Jaeger's 4317) "
            "needs tls.insecure: true or an http:// endpoint"
        )
        return [("tls", message)]
    return []


factory = ComponentFactory(
    "otlp_grpc", Kind.EXPORTER, OtlpGrpcConfig, lambda id, config, _: OtlpGrpcExporter(id, config), warnings
)
