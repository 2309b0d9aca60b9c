"""Serve a Jaeger UI build (jaegertracing/jaeger-ui's `packages/jaeger-ui/build`) in place of
meshtrace's own UI, as Jaeger's query service serves it (jaegerquery `internal/static_handler.go`):

- `index.html` for every path that is not a file of the build (the UI routes itself), with the
  backend's capabilities written over the UI's default line: the UI shows the Monitor tab only
  when `metricsStorage` is true and the archive button only when `archiveStorage` is; meshtrace
  has both (SPM from stored spans, the store's archive). Older builds name the line
  `JAEGER_STORAGE_CAPABILITIES`, newer ones `JAEGER_BACKEND_CAPABILITIES`. The UI configuration
  line gets `{"archiveEnabled": true}` (what a Jaeger UI config file says to show the button; the
  UI merges it over its defaults).
- the build's other files (`static/...`, `favicon.ico`) as they are.

The build's index.html carries inline script, so these answers have no Content-Security-Policy
(Jaeger sends none either); meshtrace's own UI keeps its strict one.
"""

from __future__ import annotations

import json
import mimetypes
import re
from pathlib import Path

from aiohttp import web

CAPABILITIES = {"archiveStorage": True, "metricsStorage": True}
UI_CONFIG = {"archiveEnabled": True}
_CONFIG_LINE = re.compile(rb"JAEGER_CONFIG *= *DEFAULT_CONFIG;")
_CAPABILITY_LINES = {
    name: re.compile(name + rb" *= *DEFAULT_" + name.removeprefix(b"JAEGER_") + b";")
    for name in (b"JAEGER_STORAGE_CAPABILITIES", b"JAEGER_BACKEND_CAPABILITIES")
}


def check_build(build: Path) -> None:
    """ValueError unless `build` looks like a Jaeger UI build."""
    if not (build / "index.html").is_file():
        raise ValueError(f"{build} is not a Jaeger UI build: it has no index.html")


def inject_capabilities(index_html: bytes) -> bytes:
    """index.html with meshtrace's capabilities and UI configuration written in."""
    capabilities = json.dumps(CAPABILITIES).encode()  # no backslash: safe as a replacement
    for name, pattern in _CAPABILITY_LINES.items():
        index_html = pattern.sub(name + b" = " + capabilities + b";", index_html)
    return _CONFIG_LINE.sub(b"JAEGER_CONFIG = " + json.dumps(UI_CONFIG).encode() + b";", index_html)


class JaegerUi:
    def __init__(self, build: Path) -> None:
        check_build(build)
        self._root = build.resolve()
        self._index = inject_capabilities((build / "index.html").read_bytes())

    def register(self, router: web.UrlDispatcher) -> None:
        router.add_get("/{tail:.*}", self.serve)

    async def serve(self, request: web.Request) -> web.StreamResponse:
        path = (self._root / request.match_info["tail"]).resolve()
        if path != self._root and self._root in path.parents and path.is_file() and path.name != "index.html":
            content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            return web.Response(body=path.read_bytes(), content_type=content_type)
        return web.Response(
            body=self._index, content_type="text/html", charset="utf-8", headers={"Cache-Control": "no-cache"}
        )
