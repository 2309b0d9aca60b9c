"""Where the sidecar's config comes from: the control plane (register, heartbeat, long-poll,
ACK/NACK; docs/control-api.md) or a file that is re-read when it changes. Either way a
new config is applied live; one that does not validate is refused and the last good one kept."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from meshtrace.sidecar.backend import ConnectFailure
from meshtrace.sidecar.certs import WorkloadCerts, control_plane_tls
from meshtrace.sidecar.client import request, split_url
from meshtrace.sidecar.config import ConfigError, SidecarConfig, load_file, parse
from meshtrace.sidecar.conn import PeerClosed, Pool
from meshtrace.sidecar.http1 import HttpError
from meshtrace.sidecar.proxy import Identity

log = logging.getLogger("meshtrace.sidecar")
Apply = Callable[[SidecarConfig], None]
_FAILURES = (ConnectFailure, PeerClosed, HttpError, TimeoutError, OSError, ValueError)


def parse_for(ident: Identity, doc: dict[str, Any], version: str) -> SidecarConfig:
    return parse(doc, version, ident.workload, ident.namespace, ident.labels)


class FileSource:
    """--config FILE: the document, re-read when the file's content changes."""

    def __init__(self, path: str, ident: Identity) -> None:
        self.path = Path(path)
        self.ident = ident
        self.digest = ""

    def load(self) -> SidecarConfig:
        text = self.path.read_bytes()
        self.digest = hashlib.sha256(text).hexdigest()[:12]
        return parse_for(self.ident, load_file(self.path), f"file:{self.digest}")

    async def watch(self, apply: Apply, interval: float = 1.0) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                digest = hashlib.sha256(self.path.read_bytes()).hexdigest()[:12]
            except OSError as exc:
                log.warning("config file %s unreadable: %s", self.path, exc)
                continue
            if digest == self.digest:
                continue
            self.digest = digest
            try:
                cfg = parse_for(self.ident, load_file(self.path), f"file:{digest}")
            except (ConfigError, OSError) as exc:
                log.warning("config file %s refused, keeping the last good config: %s", self.path, exc)
                continue
            apply(cfg)
            log.info("config file %s applied (version %s)", self.path, cfg.version)


class ControlSource:
    """--control URL: the control plane client."""

    def __init__(
        self, url: str, ident: Identity, ports: dict[str, int], token_file: str, ca_root: str | None = None
    ) -> None:
        self.host, self.port, _ = split_url(url, ("http", "https"))
        self.tls, self.check = (None, None)
        if url.startswith("https://"):
            if ca_root is None:
                raise ValueError(f"{url}: an https control plane needs the mesh root (--ca-root)")
            self.tls, self.check = control_plane_tls(ca_root)
        self.token_file = Path(token_file)
        self.ident = ident
        self.ports = ports
        self.pool = Pool(5.0)
        self.node_id = ident.node_id
        self.heartbeat_s = 2.0
        self.version = ""

    async def _call(self, method: str, path: str, doc: Any = None, timeout: float = 10.0) -> tuple[int, Any]:
        body = b"" if doc is None else json.dumps(doc).encode()
        # Read each time: the token file may be replaced (Kubernetes rotates projected tokens).
        token = self.token_file.read_text().strip()
        headers = {"content-type": "application/json", "authorization": f"Bearer {token}"}
        head, answer = await request(
            self.pool, self.host, self.port, method, path, body, headers, timeout, self.tls, self.check
        )
        try:
            return head.status, json.loads(answer) if answer else None
        except json.JSONDecodeError:
            return head.status, None

    async def register(self) -> None:
        """Register until the control plane answers (it may start after us)."""
        i = self.ident
        doc = {
            "workload": i.workload,
            "namespace": i.namespace,
            "pod": i.pod,
            "ip": i.ip,
            "labels": i.labels,
            "ports": {**self.ports, "app": i.app_port},
            "mode": i.mode,
            "service_account": i.service_account,
        }
        delay = 0.2
        while True:
            try:
                status, answer = await self._call("POST", "/v1/register", doc)
                if status == 200 and isinstance(answer, dict):
                    self.node_id = str(answer.get("node_id") or self.node_id)
                    self.heartbeat_s = float(answer.get("heartbeat_s") or 2.0)
                    return
                log.warning("control plane refused registration: HTTP %s %s", status, answer)
            except _FAILURES as exc:
                log.warning("control plane %s:%s unreachable: %s", self.host, self.port, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def fetch(self, wait: float) -> tuple[str, dict[str, Any]] | None:
        """One long-poll: (version, document) when it changed, None on 304."""
        status, answer = await self._call(
            "GET", f"/v1/config/{self.node_id}?version={self.version}&wait={wait:g}", timeout=wait + 10
        )
        if status == 304:
            return None
        if status == 404:
            await self.register()
            return None
        if status != 200 or not isinstance(answer, dict) or not isinstance(answer.get("config"), dict):
            raise ValueError(f"bad config answer: HTTP {status}")
        return str(answer.get("version", "")), answer["config"]

    async def ack(self, version: str, error: str | None) -> None:
        doc = {"version": version, "status": "NACK" if error else "ACK", "error": error}
        with contextlib.suppress(*_FAILURES):
            await self._call("POST", f"/v1/ack/{self.node_id}", doc)

    async def certify(self, certs: WorkloadCerts) -> None:
        """One CSR round trip: a new key, its certificate from the control plane (the CA)."""
        status, answer = await self._call("POST", f"/v1/certs/{self.node_id}", {"csr": certs.csr()})
        if status == 404:
            await self.register()
        if status != 200 or not isinstance(answer, dict):
            raise ValueError(f"certificate refused: HTTP {status} {answer}")
        certs.install(answer)
        log.info(
            "certificate for %s installed, expires in %.0f s", certs.identity, certs.expires_at - time.time()
        )

    async def rotate(self, certs: WorkloadCerts) -> None:
        """Renew the certificate before it expires (at half its lifetime, retried until done)."""
        while True:
            await asyncio.sleep(certs.renew_in() if certs.ready else 1.0)
            try:
                await self.certify(certs)
            except _FAILURES as exc:
                log.warning("certificate renewal failed, retrying: %s", exc)
                await asyncio.sleep(1.0)

    async def first(self, certs: WorkloadCerts | None = None) -> SidecarConfig:
        """Register, get a certificate and the first valid config (needed before listeners open)."""
        await self.register()
        while certs is not None and not certs.ready:
            try:
                await self.certify(certs)
            except _FAILURES as exc:
                log.warning("waiting for a certificate: %s", exc)
                await asyncio.sleep(0.5)
        while True:
            try:
                got = await self.fetch(0)
                if got is not None:
                    cfg = self._try(*got)
                    if cfg is not None:
                        await self.ack(cfg.version, None)
                        return cfg
            except _FAILURES as exc:
                log.warning("waiting for the first config: %s", exc)
            await asyncio.sleep(0.5)

    def _try(self, version: str, doc: dict[str, Any]) -> SidecarConfig | None:
        try:
            cfg = parse_for(self.ident, doc, version)
        except ConfigError as exc:
            log.warning("config %s refused (NACK), keeping the last good one: %s", version, exc)
            asyncio.get_running_loop().create_task(self.ack(version, str(exc)))
            return None
        self.version = version
        return cfg

    async def watch(self, apply: Apply) -> None:
        while True:
            try:
                got = await self.fetch(30)
            except _FAILURES as exc:
                log.warning("config poll failed: %s", exc)
                await asyncio.sleep(1.0)
                continue
            if got is None:
                continue
            cfg = self._try(*got)
            if cfg is None:
                self.version = got[0]  # do not fetch the refused version again
                continue
            apply(cfg)
            await self.ack(cfg.version, None)
            log.info("config version %s applied", cfg.version)

    async def heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            try:
                status, _ = await self._call("POST", f"/v1/heartbeat/{self.node_id}", {}, timeout=5)
                if status == 404:
                    await self.register()
            except _FAILURES as exc:
                log.warning("heartbeat failed: %s", exc)
