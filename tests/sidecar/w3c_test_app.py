"""The service the W3C Trace Context validation harness drives (its test/README.md): POST /test
with a JSON list of {"url", "arguments"}; for each item it POSTs `arguments` to `url`, in order.

An app as users write them on the meshtrace SDK: `init_tracer` + the aiohttp instrumentation carry
the trace context from the request it serves to the requests it makes, and HTTP_PROXY sends those
through its sidecar's outbound listener. Run by tests/sidecar/test_sidecar_w3c_suite.py as
`python -m w3c_test_app` (POD_IP, PORT, HTTP_PROXY and the OTEL_* variables in its environment).
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from meshtrace.demo.service import run
from meshtrace.sdk import forwarded_headers

SESSION = web.AppKey("session", aiohttp.ClientSession)


async def follow(request: web.Request) -> web.Response:
    actions = await request.json()
    for action in actions:
        headers = forwarded_headers(request.headers)
        async with request.app[SESSION].post(
            action["url"], json=action.get("arguments", []), headers=headers
        ) as r:
            await r.read()
    return web.json_response(None)


async def session(app: web.Application) -> AsyncIterator[None]:
    # trust_env: HTTP_PROXY sends the calls through the sidecar, as in the demo
    async with aiohttp.ClientSession(trust_env=True, timeout=aiohttp.ClientTimeout(total=10)) as s:
        app[SESSION] = s
        yield


def make_app() -> web.Application:
    app = web.Application()
    app.router.add_post("/test", follow)
    app.cleanup_ctx.append(session)
    return app


if __name__ == "__main__":
    sys.exit(run("w3c-test-app", make_app))
