"""The `health_check` extension: `GET <path>` on 13133 answers 200 once every pipeline has started
and 503 before that and while shutting down (the Collector's `Server available` /
`Server not available` bodies)."""

from __future__ import annotations

import datetime
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from meshtrace.collector.component import ComponentID, Host, Kind
from meshtrace.collector.factory import ComponentFactory
from meshtrace.collector.httpserve import serve
from meshtrace.collector.schema import host_port


@dataclass
class HealthCheckConfig:
    endpoint: str = "127.0.0.1:13133"
    path: str = "/"
    response_body: dict[str, str] | None = None
    check_collector_pipeline: dict[str, Any] = field(
        default_factory=dict, metadata={"warning": "check_collector_pipeline is deprecated and ignored"}
    )

    def __post_init__(self) -> None:
        host_port(self.endpoint)
        if not self.path.startswith("/"):
            raise ValueError("path must start with /")


class HealthCheck:
    def __init__(self, id: ComponentID, config: HealthCheckConfig) -> None:
        self.id = id
        self.config = config
        self._ready = False
        self._since: datetime.datetime | None = None
        self._started = time.monotonic()
        self._runner: web.AppRunner | None = None

    def ready(self) -> None:
        self._ready = True
        self._since = datetime.datetime.now(datetime.UTC)

    def not_ready(self) -> None:
        self._ready = False

    async def _health(self, request: web.Request) -> web.Response:
        custom = self.config.response_body or {}
        if self._ready and self._since is not None:
            body = custom.get("healthy") or json.dumps(
                {
                    "status": "Server available",
                    "upSince": self._since.isoformat(),
                    "uptime": f"{time.monotonic() - self._started:.3f}s",
                }
            )
            return web.Response(status=200, text=body, content_type="application/json")
        body = custom.get("unhealthy") or json.dumps({"status": "Server not available"})
        return web.Response(status=503, text=body, content_type="application/json")

    async def start(self, host: Host) -> None:
        app = web.Application()
        app.router.add_get(self.config.path, self._health)
        address, port = host_port(self.config.endpoint)
        name = "health-check" if not self.id.name else f"health-check/{self.id.name}"
        self._runner = await serve(app, address, port, name)

    async def shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


factory = ComponentFactory(
    "health_check", Kind.EXTENSION, HealthCheckConfig, lambda id, config, _: HealthCheck(id, config)
)
