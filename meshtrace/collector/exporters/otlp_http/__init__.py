"""The `otlp_http` exporter (alias `otlphttp`): POST the encoded request to `<endpoint>/v1/traces`
(or `traces_endpoint`), protobuf or JSON, gzip by default; queued and retried by exporterhelper.

Retryable answers follow the OTLP spec: 429, 502, 503, 504 (with Retry-After honoured) and
connection errors; any other non-2xx drops the batch. A `partial_success` in a 2xx answer is
logged as a warning, as the Collector's exporter does.
"""

from __future__ import annotations

import gzip
import ssl
from dataclasses import dataclass, field
from typing import Literal

import aiohttp

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
from meshtrace.model import Traces, otlp_json
from meshtrace.model.otlp_answer import RETRYABLE_HTTP, retry_after


@dataclass
class OtlpHttpConfig:
    endpoint: str = ""
    traces_endpoint: str = ""
    encoding: Literal["proto", "json"] = "proto"
    compression: Literal["gzip", "none", ""] = "gzip"
    timeout: Duration = 30.0
    headers: dict[str, str] = field(default_factory=dict)
    tls: tls.TLSConfig = field(default_factory=tls.TLSConfig)
    sending_queue: QueueConfig = field(default_factory=QueueConfig)
    retry_on_failure: RetryConfig = field(default_factory=RetryConfig)

    def __post_init__(self) -> None:
        if not self.endpoint and not self.traces_endpoint:
            raise ValueError("endpoint or traces_endpoint must be set (an http:// or https:// URL)")
        for url in (self.endpoint, self.traces_endpoint):
            if url and not url.startswith(("http://", "https://")):
                raise ValueError(f"{url!r} must start with http:// or https://")

    @property
    def url(self) -> str:
        return self.traces_endpoint or self.endpoint.rstrip("/") + "/v1/traces"


class OtlpHttpExporter(QueuedExporter):
    def __init__(self, id: ComponentID, config: OtlpHttpConfig) -> None:
        super().__init__(id, config.sending_queue, config.retry_on_failure)
        self.config = config
        self._session: aiohttp.ClientSession | None = None
        content_type = "application/json" if config.encoding == "json" else "application/x-protobuf"
        self._headers = {**config.headers, "Content-Type": content_type}
        if config.compression == "gzip":
            self._headers["Content-Encoding"] = "gzip"

    async def _send(self, traces: Traces) -> None:
        assert self._session is not None
        body = otlp_json.dumps(traces.message()) if self.config.encoding == "json" else traces.encoded()
        if self.config.compression == "gzip":
            body = gzip.compress(body, compresslevel=6)
        async with self._session.post(self.config.url, data=body, headers=self._headers) as response:
            if 200 <= response.status < 300:
                warn_partial_success(self.id, await response.read(), self.config.encoding == "json")
                return
            text = (await response.text(errors="replace"))[:200]
            message = f"HTTP {response.status}: {text}"
            if response.status in RETRYABLE_HTTP:
                raise RefusedError(message, retry_after(response.headers.get("Retry-After")))
            raise PermanentError(message)

    async def _open(self) -> None:
        ssl_context: ssl.SSLContext | bool = True
        if self.config.tls.insecure_skip_verify:
            ssl_context = False
        elif self.config.tls.ca_file:
            ssl_context = ssl.create_default_context(cafile=self.config.tls.ca_file)
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.config.timeout or None),
            connector=aiohttp.TCPConnector(ssl=ssl_context),
        )

    async def _close(self) -> None:
        if self._session is not None:
            await self._session.close()


factory = ComponentFactory(
    "otlp_http", Kind.EXPORTER, OtlpHttpConfig, lambda id, config, _: OtlpHttpExporter(id, config)
)
