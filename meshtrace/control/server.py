"""The control plane's HTTP/1.1 + JSON shell (docs/control-api.md).

Thin: every decision is in `core.ControlPlane`; this module parses requests, holds one
asyncio.Event per waiting node to wake long-polls, watches the -f files by polling their mtimes,
and expires nodes that stop heartbeating.
"""

from __future__ import annotations

import asyncio
import json
import signal
import ssl
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from meshtrace import csrf, ready
from meshtrace.control import identity
from meshtrace.control.ca import CertificateAuthority, CsrError
from meshtrace.control.core import (
    BadRequest,
    ControlPlane,
    Forbidden,
    Node,
    Snapshot,
    StaticEndpoint,
    Unauthenticated,
    UnknownNode,
    authorize,
    new_errors,
    parse_ack,
    parse_registration,
)

MAX_WAIT_S = 300.0  # a long-poll never outlives this, whatever the client asks
WATCHED_SUFFIXES = (".yaml", ".yml", ".json")
SETTLE_S = 0.05


def log(message: str) -> None:
    sys.stderr.write(f"meshtrace: control: {message}\n")
    sys.stderr.flush()


def files_signature(paths: list[Path]) -> tuple[tuple[str, int, int], ...]:
    """(path, mtime_ns, size) of every watched file: any edit, addition or removal changes it."""
    out = []
    for path in paths:
        # folders are read one level deep, as meshtrace.config.load reads them
        candidates = sorted(path.iterdir()) if path.is_dir() else [path]
        for file in candidates:
            if file.is_dir() or (path.is_dir() and file.suffix not in WATCHED_SUFFIXES):
                continue
            try:
                st = file.stat()
            except OSError:  # removed between listing and stat: the next poll sees it gone
                continue
            out.append((str(file), st.st_mtime_ns, st.st_size))
    return tuple(out)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class ControlServer:
    def __init__(
        self,
        paths: list[Path],
        loader: Callable[[list[Path]], Snapshot],
        snapshot: Snapshot,
        static: list[StaticEndpoint],
        heartbeat_s: float,
        poll_s: float,
        token_key: bytes,
        ca: CertificateAuthority,
        cert_ttl_s: float,
    ) -> None:
        self.token_key = token_key
        self.ca = ca
        self.cert_ttl_s = cert_ttl_s
        self.paths = paths
        self.loader = loader
        self.plane = ControlPlane(snapshot, static, heartbeat_s)
        self.poll_s = poll_s
        self.config_errors: list[dict[str, Any]] = []
        self.generation = 1  # successful loads of the -f files
        self._events: dict[str, asyncio.Event] = {}
        self._signature = files_signature(paths)

    # waking long-polls

    def _wake(self, changed: set[str]) -> None:
        for node_id in changed:
            event = self._events.pop(node_id, None)
            if event is not None:
                event.set()

    def _event(self, node_id: str) -> asyncio.Event:
        return self._events.setdefault(node_id, asyncio.Event())

    # handlers

    async def _json_body(self, request: web.Request) -> Any:
        try:
            return json.loads(await request.read() or b"null")
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(f"body is not valid JSON: {exc}") from None

    def _claims(self, request: web.Request) -> identity.Claims:
        """The caller's bootstrap credential (`Authorization: Bearer <token>`), verified."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("a bootstrap credential is required: Authorization: Bearer <token>")
        try:
            return identity.verify(self.token_key, token.strip())
        except identity.InvalidCredential as exc:
            raise Unauthenticated(str(exc)) from None

    def _own_node(self, request: web.Request) -> Node:
        """The node of the path, if the caller's credential is that pod's (401, 404, then 403)."""
        claims = self._claims(request)
        node = self.plane.node(request.match_info["node_id"])
        authorize(claims, node.reg.namespace, node.reg.pod, node.reg.service_account)
        return node

    async def register(self, request: web.Request) -> web.Response:
        claims = self._claims(request)
        reg = parse_registration(await self._json_body(request))
        authorize(claims, reg.namespace, reg.pod, reg.service_account)
        node, changed = self.plane.register(reg, time.monotonic())
        self._wake(changed)
        log(f"registered {reg.node_id} ({reg.workload}.{reg.namespace}, version {node.version})")
        return web.json_response({"node_id": reg.node_id, "heartbeat_s": self.plane.heartbeat_s})

    async def heartbeat(self, request: web.Request) -> web.Response:
        node_id = self._own_node(request).reg.node_id
        self._wake(self.plane.heartbeat(node_id, time.monotonic()))
        return web.json_response({"node_id": node_id, "heartbeat_s": self.plane.heartbeat_s})

    async def config(self, request: web.Request) -> web.Response:
        node_id = self._own_node(request).reg.node_id
        known = request.query.get("version")
        try:
            wait = float(request.query.get("wait", "0"))
        except ValueError:
            raise BadRequest("query parameter 'wait' must be a number of seconds") from None
        if not 0 <= wait < float("inf"):
            raise BadRequest("query parameter 'wait' must be a number of seconds >= 0")
        deadline = time.monotonic() + min(wait, MAX_WAIT_S)
        while True:
            node = self.plane.node(node_id)  # looked up again: it may have re-registered
            if node.version != known:
                node.sent_version = node.version
                return web.json_response({"version": node.version, "config": node.config})
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return web.Response(status=304)
            try:
                await asyncio.wait_for(self._event(node_id).wait(), remaining)
            except TimeoutError:
                return web.Response(status=304)

    async def ack(self, request: web.Request) -> web.Response:
        node_id = self._own_node(request).reg.node_id  # 404 before 400: register first
        ack = parse_ack(await self._json_body(request))
        self.plane.ack(node_id, ack, time.monotonic())
        if ack.status == "NACK":
            log(f"NACK from {node_id} for version {ack.version}: {ack.error}")
        return web.json_response(
            {"node_id": node_id, "acked_version": self.plane.nodes[node_id].acked_version}
        )

    async def certificate(self, request: web.Request) -> web.Response:
        """istiod's CSR service: the node's SPIFFE id signed into a certificate for the key the
        sidecar generated (the private key never leaves the sidecar)."""
        node = self._own_node(request)
        body = await self._json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("csr"), str):
            raise BadRequest("field 'csr' is required: a PEM certificate request")
        spiffe = self.plane.identity(node)
        try:
            chain, expiry = self.ca.sign(body["csr"], spiffe, self.cert_ttl_s)
        except CsrError as exc:
            raise BadRequest(str(exc)) from None
        node.cert_expires_at = expiry.timestamp()
        log(f"signed {spiffe} for {node.reg.node_id}, expires {expiry.isoformat(timespec='seconds')}")
        return web.json_response(
            {
                "identity": spiffe,
                "cert_chain": chain,
                "root_cert": self.ca.root_pem,
                "trust_domain": self.plane.snapshot.trust_domain,
                "expires_at": expiry.timestamp(),
            }
        )

    async def status(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "nodes": self.plane.status(time.monotonic()),
                "heartbeat_s": self.plane.heartbeat_s,
                "files": [str(p) for p in self.paths],
                "generation": self.generation,
                "config_errors": self.config_errors,
                "load_errors": sorted(self.plane.snapshot.errors.values()),
                "static_endpoints": [f"{e.host}={e.ip}:{e.port}" for e in self.plane.static],
                "trust_domain": self.plane.snapshot.trust_domain,
                "ca": self.ca.source,
            }
        )

    async def ready(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ready"})

    @web.middleware
    async def errors(self, request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await handler(request)
            return response
        except BadRequest as exc:
            return _error(400, str(exc))
        except UnknownNode as exc:
            return _error(404, f"unknown node {exc.args[0]!r}: register first (POST /v1/register)")
        except Unauthenticated as exc:
            response = _error(401, str(exc))
            response.headers["WWW-Authenticate"] = 'Bearer realm="meshtrace-control"'
            return response
        except Forbidden as exc:
            return _error(403, str(exc))

    def app(self) -> web.Application:
        app = web.Application(
            middlewares=[self.errors, csrf.middleware(lambda _, status, message: _error(status, message))]
        )
        app.add_routes(
            [
                web.post("/v1/register", self.register),
                web.post("/v1/heartbeat/{node_id}", self.heartbeat),
                web.get("/v1/config/{node_id}", self.config),
                web.post("/v1/ack/{node_id}", self.ack),
                web.post("/v1/certs/{node_id}", self.certificate),
                web.get("/v1/status", self.status),
                web.get("/ready", self.ready),
            ]
        )
        return app

    # background tasks

    async def watch(self) -> None:
        """Reload when a watched file changes; an invalid edit is reported and changes nothing."""
        while True:
            await asyncio.sleep(self.poll_s)
            signature = files_signature(self.paths)
            if signature == self._signature:
                continue
            # Let a write in progress finish (editors truncate, then write): reload only once
            # the files have stood still for SETTLE_S, so no half-written state is ever pushed.
            while True:
                await asyncio.sleep(SETTLE_S)
                settled = files_signature(self.paths)
                if settled == signature:
                    break
                signature = settled
            self._signature = signature
            started = time.monotonic()
            try:
                snapshot = await asyncio.to_thread(self.loader, self.paths)
                errors = new_errors(self.plane.snapshot, snapshot)
                if errors:
                    raise ValueError("; ".join(errors))
                changed = self.plane.set_snapshot(snapshot)
            except Exception as exc:  # a failed load or resolution is reported, never a crash
                self.config_errors = [{"error": str(exc), "at": time.time()}]
                log(f"invalid configuration, keeping the previous one: {exc}")
                continue
            self.config_errors = []
            self.generation += 1
            self._wake(changed)
            elapsed_ms = (time.monotonic() - started) * 1000
            log(f"configuration reloaded in {elapsed_ms:.0f} ms; {len(changed)} node(s) get a new version")

    async def sweep(self) -> None:
        while True:
            await asyncio.sleep(self.plane.heartbeat_s / 2)
            expired, changed = self.plane.expire(time.monotonic())
            for node_id in expired:
                log(f"{node_id} missed its heartbeats: removed from every service")
            self._wake(changed)


async def serve(
    server: ControlServer, host: str, port: int, tls: tuple[str, int, ssl.SSLContext] | None = None
) -> None:
    """The API on host:port, and with `tls` also over TLS (ready line `control-tls`)."""
    runner = web.AppRunner(server.app(), shutdown_timeout=1.0, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0]
    ready.announce("control", host, int(bound[1]))
    if tls is not None:
        tls_site = web.TCPSite(runner, tls[0], tls[1], ssl_context=tls[2])
        await tls_site.start()
        ready.announce("control-tls", tls[0], int(runner.addresses[-1][1]))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.create_task(server.watch()), asyncio.create_task(server.sweep())]
    try:
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        await runner.cleanup()
