"""The `query` extension: serves the query API and web UI over the store of a `store` exporter.

```yaml
extensions:
  query:
    endpoint: 127.0.0.1:16686
    store: store        # id of the store exporter to read
    jaeger_ui: ""       # optional: a Jaeger UI build to serve instead of meshtrace's UI
```
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from meshtrace.collector.component import ComponentID, Host, Kind
from meshtrace.collector.factory import ComponentFactory
from meshtrace.collector.httpserve import serve
from meshtrace.collector.schema import host_port
from meshtrace.query.jaeger_ui import check_build
from meshtrace.query.server import QueryServer
from meshtrace.store import SpanStore, StoreError


@dataclass
class QueryConfig:
    endpoint: str = "127.0.0.1:16686"
    store: str = "store"
    # a Jaeger UI build (jaeger-ui's packages/jaeger-ui/build) to serve instead of meshtrace's UI
    jaeger_ui: str = ""

    def __post_init__(self) -> None:
        host_port(self.endpoint)
        ComponentID.parse(self.store)
        if self.jaeger_ui:
            check_build(Path(self.jaeger_ui).expanduser())


class QueryExtension:
    def __init__(self, id: ComponentID, config: QueryConfig) -> None:
        self.id = id
        self.config = config
        self.store_id = ComponentID.parse(config.store)
        self._host: Host | None = None
        jaeger_ui = Path(config.jaeger_ui).expanduser() if config.jaeger_ui else None
        self._server = QueryServer(self._trace_store, jaeger_ui=jaeger_ui)
        self._runner: web.AppRunner | None = None

    def _trace_store(self) -> SpanStore:
        """The store exporter's store, looked up when first needed (exporters may start after
        extensions)."""
        exporter = self._host.get_exporter(self.store_id) if self._host is not None else None
        store = getattr(exporter, "store", None)
        if not isinstance(store, SpanStore):
            raise StoreError(
                f"query: no store exporter {str(self.store_id)!r}: add it under exporters and to a pipeline"
            )
        return store

    async def start(self, host: Host) -> None:
        self._host = host
        address, port = host_port(self.config.endpoint)
        self._runner = await serve(self._server.app, address, port, str(self.id))

    async def shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        await self._server.close()


factory = ComponentFactory(
    "query", Kind.EXTENSION, QueryConfig, lambda id, config, _next: QueryExtension(id, config)
)
