"""Jaeger's SPM API (`/api/metrics/latencies|calls|errors`, the UI's Monitor tab) computed from the
stored spans, so the tab works without a metrics backend.

Jaeger answers these from Prometheus, where the spanmetrics connector counts calls and latency
histograms per service, operation, span kind and status; the series are PromQL over them
(jaegerquery's Prometheus reader):

- calls: `sum(rate(calls[ratePer])) by (service_name[, span_name])`, calls per second;
- errors: the same rate of calls with status Error divided by the rate of all calls;
- latencies: `histogram_quantile(q, sum(rate(duration_bucket[ratePer])) by (..., le))`, in ms;

evaluated at end - lookback, + step, ... up to end. Here each point is computed over the spans
that started in (point - ratePer, point], from the store's per-bucket counts (`store/spm.py`).
A point with no spans has latency NaN (as histogram_quantile of nothing) and, for a series with
errors, an error rate NaN (0/0); a series with no error in the whole range has error rate 0
everywhere (Jaeger fills zeros when there are calls but no errors).
"""

from __future__ import annotations

import collections
import datetime
import math
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

from meshtrace.query import uiparams
from meshtrace.query.routing import Runner, StoreSource, json_response, multi_params
from meshtrace.store.spm import SpanCounts, bin_bounds_ns

Metric = Literal["latencies", "calls", "errors"]
# More time buckets than this per request and the window is rounded up to whole steps instead
# of using buckets of gcd(step, ratePer).
MAX_BUCKETS = 20_000
_NAMES = {"latencies": "service_latencies", "calls": "service_call_rate", "errors": "service_error_rate"}
_HELP = {
    "calls": "calls/sec, grouped by service",
    "errors": "error rate, computed as a fraction of errors/sec over calls/sec, grouped by service",
}


@dataclass(frozen=True)
class Plan:
    """How a MetricsQuery maps onto time buckets: bucket b holds the spans that started in
    [origin + b*bucket, origin + (b+1)*bucket); point i is at `first_point + i*step` and reads
    buckets [i*step_buckets, i*step_buckets + window_buckets)."""

    origin_ns: int
    end_ns: int
    bucket_ns: int
    step_buckets: int
    window_buckets: int
    first_point_ns: int
    step_ns: int
    points: int

    @property
    def window_s(self) -> float:
        return self.window_buckets * self.bucket_ns / 1e9


def plan(query: uiparams.MetricsQuery) -> Plan:
    start = query.end_ns - query.lookback_ns
    bucket = math.gcd(query.step_ns, query.rate_per_ns)
    if (query.lookback_ns + query.rate_per_ns) // bucket > MAX_BUCKETS:
        bucket = query.step_ns  # the window becomes ratePer rounded up to whole steps
    window = -(-query.rate_per_ns // bucket)
    return Plan(
        origin_ns=start - window * bucket + 1,
        end_ns=query.end_ns,
        bucket_ns=bucket,
        step_buckets=query.step_ns // bucket,
        window_buckets=window,
        first_point_ns=start,
        step_ns=query.step_ns,
        points=query.lookback_ns // query.step_ns + 1,
    )


@dataclass
class _Series:
    calls: collections.Counter[int] = field(default_factory=collections.Counter)  # bucket -> spans
    errors: collections.Counter[int] = field(default_factory=collections.Counter)
    bins: dict[int, collections.Counter[int]] = field(default_factory=dict)  # bucket -> bin -> spans


def quantile_ms(bins: collections.Counter[int], q: float) -> float:
    """histogram_quantile over the latency bins: linear within the bin holding rank q*total."""
    total = sum(bins.values())
    if total <= 0:
        return math.nan
    rank = q * total
    seen = 0
    for index in sorted(bins):
        count = bins[index]
        if count <= 0:
            continue
        if seen + count >= rank:
            low, high = bin_bounds_ns(index)
            return (low + (high - low) * max(0.0, rank - seen) / count) / 1e6
        seen += count
    return bin_bounds_ns(max(bins))[1] / 1e6


def series_values(
    counts: Sequence[SpanCounts], p: Plan, metric: Metric, quantile: float, by_operation: bool
) -> dict[str, list[float]]:
    """Per operation ("" when not grouped by operation), the value at each point."""
    grouped: dict[str, _Series] = {}
    for c in counts:
        series = grouped.setdefault(c.operation if by_operation else "", _Series())
        series.calls[c.bucket] += c.spans
        series.errors[c.bucket] += c.errors
        series.bins.setdefault(c.bucket, collections.Counter())[c.latency_bin] += c.spans
    out: dict[str, list[float]] = {}
    for name, series in grouped.items():
        any_error = any(series.errors.values())
        calls = errors = 0
        bins: collections.Counter[int] = collections.Counter()
        values = []
        low = high = 0  # the window's buckets are [low, high); each bucket enters and leaves once
        for i in range(p.points):
            new_low, new_high = i * p.step_buckets, i * p.step_buckets + p.window_buckets
            for b in range(max(high, new_low), new_high):  # entering
                calls += series.calls.get(b, 0)
                errors += series.errors.get(b, 0)
                if metric == "latencies" and b in series.bins:
                    bins.update(series.bins[b])
            for b in range(low, min(high, new_low)):  # leaving
                calls -= series.calls.get(b, 0)
                errors -= series.errors.get(b, 0)
                if metric == "latencies" and b in series.bins:
                    bins.subtract(series.bins[b])
            low, high = new_low, new_high
            if metric == "calls":
                values.append(calls / p.window_s)
            elif metric == "errors":
                values.append(errors / calls if calls else (math.nan if any_error else 0.0))
            else:
                values.append(quantile_ms(bins, quantile))
        out[name] = values
    return out


def timestamp(ns: int) -> str:
    """Protobuf JSON's Timestamp: RFC 3339 in UTC with 0, 3, 6 or 9 fraction digits."""
    seconds, nanos = divmod(ns, 10**9)
    text = datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if nanos:
        digits = 3 if nanos % 10**6 == 0 else 6 if nanos % 10**3 == 0 else 9
        text += "." + f"{nanos:09d}"[:digits]
    return text + "Z"


def metric_family(
    metric: Metric,
    query: uiparams.MetricsQuery,
    p: Plan,
    quantile: float,
    values: dict[str, dict[str, list[float]]],
) -> dict[str, Any]:
    """Jaeger's MetricFamily in protobuf JSON; `values` is service -> operation -> points. NaN is
    written as the string "NaN", as protobuf JSON does (the UI shows such a point as a gap)."""
    name = _NAMES[metric]
    description = _HELP.get(metric, f"{quantile:.2f}th quantile latency, grouped by service")
    if query.group_by_operation:
        name = name.replace("service", "service_operation", 1)
        description += " & operation"
    stamps = [timestamp(p.first_point_ns + i * p.step_ns) for i in range(p.points)]
    metrics = []
    for service in sorted(values):
        for operation in sorted(values[service]):
            labels = [{"name": "service_name", "value": service}]
            if query.group_by_operation:
                labels.append({"name": "operation", "value": operation})
            points = [
                {"gaugeValue": {"doubleValue": "NaN" if math.isnan(v) else v}, "timestamp": stamp}
                for v, stamp in zip(values[service][operation], stamps, strict=True)
            ]
            metrics.append({"labels": labels, "metricPoints": points})
    return {"name": name, "type": "GAUGE", "help": description, "metrics": metrics}


class SharedScans:
    """The store scans of the last few requests, shared: one Monitor page asks for 8 series over
    the same spans at once (latencies at 3 quantiles, calls, errors; per service and per
    operation), and all of them are answered from one scan."""

    def __init__(self, ttl_s: float = 30.0, size: int = 8) -> None:
        self._ttl_s = ttl_s
        self._size = size
        self._lock = threading.Lock()
        self._entries: collections.OrderedDict[tuple[Any, ...], tuple[float, Future[list[SpanCounts]]]] = (
            collections.OrderedDict()
        )

    def get(self, key: tuple[Any, ...], scan: Callable[[], list[SpanCounts]]) -> list[SpanCounts]:
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(key)
            owner = entry is None or entry[0] < now
            if owner:
                future: Future[list[SpanCounts]] = Future()
                self._entries[key] = (now + self._ttl_s, future)
                while len(self._entries) > self._size:
                    self._entries.popitem(last=False)
            else:
                assert entry is not None
                future = entry[1]
        if owner:
            try:
                future.set_result(scan())
            except Exception as exc:
                future.set_exception(exc)
                with self._lock:
                    if self._entries.get(key, (0, None))[1] is future:
                        del self._entries[key]
        return future.result(timeout=120)


class MetricsRoutes:
    def __init__(self, store: StoreSource, run: Runner[Any]) -> None:
        self._store = store
        self._run = run
        self._scans = SharedScans()

    def register(self, router: web.UrlDispatcher) -> None:
        router.add_get("/api/metrics/latencies", self.latencies)
        router.add_get("/api/metrics/calls", self.calls)
        router.add_get("/api/metrics/errors", self.errors)

    async def latencies(self, request: web.Request) -> web.Response:
        params = multi_params(request)
        return await self._answer("latencies", params, uiparams.parse_quantile(params))

    async def calls(self, request: web.Request) -> web.Response:
        return await self._answer("calls", multi_params(request), 0.0)

    async def errors(self, request: web.Request) -> web.Response:
        return await self._answer("errors", multi_params(request), 0.0)

    async def _answer(self, metric: Metric, params: dict[str, list[str]], quantile: float) -> web.Response:
        query = uiparams.parse_metrics(params)
        p = plan(query)

        def run() -> dict[str, Any]:
            store = self._store()
            values = {}
            for service in query.services:
                key = (service, query.kinds, p.origin_ns, p.end_ns, p.bucket_ns)
                counts = self._scans.get(
                    key,
                    lambda s=service: store.span_counts(s, query.kinds, p.origin_ns, p.end_ns, p.bucket_ns),  # type: ignore[misc]
                )
                if counts:
                    values[service] = series_values(counts, p, metric, quantile, query.group_by_operation)
            return metric_family(metric, query, p, quantile, values)

        return json_response(await self._run(run))
