"""`up`'s status table: every address worth knowing, with requests and errors per pod (from each
proxy's Istio metrics) and the traces stored (from the collector's metrics), read over HTTP like
any scraper would."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from rich.table import Table

from meshtrace.runtime.plan import Plan, PodPlan
from meshtrace.runtime.supervisor import Child

REFRESH_S = 2.0


@dataclass
class Counts:
    requests: int = 0
    errors: int = 0  # 5xx answers


@dataclass
class Status:
    """What the table shows; `refresh` fills the numbers in."""

    plan: Plan
    collector: Child
    control: Child
    gateway: Child
    prometheus: str | None = None
    logs: str = ""
    traffic: str = ""
    counts: dict[str, Counts | None] = field(default_factory=dict)  # None: not answering
    traces: int | None = None

    @property
    def ui(self) -> str | None:
        query = self.collector.listeners.get("query")
        return "http://{}:{}".format(*query) if query else None

    def _stats_urls(self) -> dict[str, str]:
        urls = {
            f"{pod.namespace}/{pod.name}": f"http://{pod.ip}:15090/stats/prometheus" for pod in self.plan.pods
        }
        if "stats" in self.gateway.listeners:
            urls["gateway"] = "http://{}:{}/stats/prometheus".format(*self.gateway.listeners["stats"])
        return {k: v for k, v in urls.items() if k == "gateway" or self._pod(k).sidecar}

    def _pod(self, key: str) -> PodPlan:
        return next(p for p in self.plan.pods if f"{p.namespace}/{p.name}" == key)

    async def refresh(self, session: aiohttp.ClientSession) -> None:
        urls = self._stats_urls()
        metrics = self.collector.listeners.get("metrics")
        if metrics is not None:
            urls["collector"] = "http://{}:{}/metrics".format(*metrics)
        keys = list(urls)
        texts = await asyncio.gather(*(_get(session, urls[k]) for k in keys))
        for key, text in zip(keys, texts, strict=True):
            try:
                if key == "collector":
                    self.traces = None if text is None else int(_sum(text, "meshtrace_store_traces"))
                else:
                    reporter = "source" if key == "gateway" else "destination"
                    self.counts[key] = None if text is None else _requests(text, reporter)
            except ValueError:  # not the Prometheus text format: shown as not answering
                if key == "collector":
                    self.traces = None
                else:
                    self.counts[key] = None

    def table(self) -> Table:
        table = Table(title="meshtrace: the mesh is up", title_justify="left", caption_justify="left")
        table.add_column("what")
        table.add_column("where")
        table.add_column("requests", justify="right")
        table.add_column("errors", justify="right")
        table.add_column("notes")
        if self.ui:
            traces = "" if self.traces is None else f"{self.traces} traces stored; "
            table.add_row("web UI + Jaeger API", self.ui, "", "", traces + "open this")
        gw = self.gateway.listeners
        ports = ", ".join(f"{name} :{gw[name][1]}" for name in ("admin", "stats", "health") if name in gw)
        table.add_row(
            "ingress gateway", "http://{}:{}".format(*gw["gateway"]), *self._numbers("gateway"), ports
        )
        for component, (host, port) in sorted(self.collector.listeners.items()):
            if component != "query":
                table.add_row(f"collector {component}", f"{host}:{port}", "", "", "")
        table.add_row(
            "control plane",
            "http://{}:{}".format(*self.control.listeners["control"]),
            "",
            "",
            "meshtrace status",
        )
        if self.prometheus:
            table.add_row("prometheus", self.prometheus, "", "", "alerts: /alerts")
        for pod in self.plan.pods:
            key = f"{pod.namespace}/{pod.name}"
            notes = (
                "sidecar :15006 in, :15001 out, :15000 admin, :15090 stats"
                if pod.sidecar
                else "no sidecar (meshtrace lint says why)"
            )
            table.add_row(f"pod {key}", f"{pod.ip}:{pod.app_port}", *self._numbers(key), notes)
        lines = [self.traffic] if self.traffic else []
        lines.append(f"logs: {self.logs} (meshtrace logs POD --follow) · Ctrl-C stops")
        table.caption = "\n".join(lines)
        return table

    def summary(self) -> str:
        """One line for a log (stdout not a terminal)."""
        known = [c for c in self.counts.values() if c is not None]
        gateway = self.counts.get("gateway")
        requests = gateway.requests if gateway else sum(c.requests for c in known)
        errors = gateway.errors if gateway else sum(c.errors for c in known)
        traces = "?" if self.traces is None else str(self.traces)
        return f"status: {requests} requests through the gateway, {errors} errors, {traces} traces stored"

    def _numbers(self, key: str) -> tuple[str, str]:
        counts = self.counts.get(key)
        if counts is None:
            return ("-", "-") if key in self.counts else ("", "")
        return str(counts.requests), (f"[red]{counts.errors}[/]" if counts.errors else "0")


async def _get(session: aiohttp.ClientSession, url: str) -> str | None:
    with contextlib.suppress(aiohttp.ClientError, TimeoutError, UnicodeDecodeError):
        async with session.get(url) as resp:
            if resp.status == 200:
                return await resp.text()
    return None


def _sum(text: str, name: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


def _requests(text: str, reporter: str) -> Counts:
    """The requests a proxy reported as `reporter` (a pod's sidecar: destination, the ones it
    served; the gateway: source, the ones it sent on), and how many were answered 5xx."""
    counts = Counts()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "istio_requests_total" and sample.labels.get("reporter") == reporter:
                counts.requests += int(sample.value)
                if sample.labels.get("response_code", "").startswith("5"):
                    counts.errors += int(sample.value)
    return counts


def _session() -> aiohttp.ClientSession:
    # trust_env=False: the proxies' own ports are read directly, never through a proxy.
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REFRESH_S / 2), trust_env=False)


async def keep_fresh(status: Status, refreshed: Callable[[], None]) -> None:
    """Refresh every REFRESH_S until cancelled (when `up` stops), calling `refreshed` each time."""
    async with _session() as session:
        while True:
            await status.refresh(session)
            refreshed()
            await asyncio.sleep(REFRESH_S)


async def refresh_once(status: Status) -> None:
    async with _session() as session:
        await status.refresh(session)
