"""Query-string parsing for the routes today's Jaeger UI calls: api_v3 searches (camelCase names,
with the snake_case ones Jaeger still accepts), the SPM metrics routes and trace ids (sans-IO).

Facts from Jaeger's query service (jaegerquery `internal/apiv3/query_parser.go`,
`internal/query_parser.go`, `internal/default_params.go`): the canonical name wins over its
deprecated alias when both are given; api_v3 errors read `malformed parameter <name>: ...`, v1
ones `unable to parse param '<name>': ...`. Range checks Jaeger leaves to its storage are 400s
here, each naming its parameter.
"""

from __future__ import annotations

import base64
import binascii
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from meshtrace.model.jaeger import SPAN_KIND_BY_NAME, parse_trace_id
from meshtrace.query.params import ParamError, parse_duration_ns, parse_rfc3339_ns, parse_tags
from meshtrace.store import MAX_SEARCH_LIMIT, TraceQuery

Params = Mapping[str, Sequence[str]]

DEFAULT_SEARCH_DEPTH = 100  # Jaeger's defaultSearchDepth
# SPM defaults (Jaeger's default_params.go): 1h lookback, 5s step, rate per 10m, SERVER spans.
DEFAULT_METRICS_LOOKBACK_MS = 3600 * 1000
DEFAULT_METRICS_STEP_MS = 5 * 1000
DEFAULT_METRICS_RATE_MS = 10 * 60 * 1000
DEFAULT_METRICS_KINDS = ("server",)
# Prometheus refuses a range query with more points per series than this; so do we.
MAX_POINTS = 11_000
# SPM times in milliseconds stay below 2^62 ns so end - lookback - ratePer fits int64 nanoseconds.
MAX_METRICS_MS = 2**62 // 10**6

# (canonical camelCase, deprecated snake_case)
SERVICE = ("query.serviceName", "query.service_name")
OPERATION = ("query.operationName", "query.operation_name")
TIME_MIN = ("query.startTimeMin", "query.start_time_min")
TIME_MAX = ("query.startTimeMax", "query.start_time_max")
SEARCH_DEPTH = ("query.searchDepth", "query.search_depth")
NUM_TRACES = "query.num_traces"  # an older alias of query.searchDepth
DURATION_MIN = ("query.durationMin", "query.duration_min")
DURATION_MAX = ("query.durationMax", "query.duration_max")
QUERY_RAW_TRACES = ("query.rawTraces", "query.raw_traces")
START_TIME = ("startTime", "start_time")
END_TIME = ("endTime", "end_time")
RAW_TRACES = ("rawTraces", "raw_traces")
SPAN_KIND = ("spanKind", "span_kind")

_GO_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_GO_FALSE = ("0", "f", "F", "FALSE", "false", "False")


def param(params: Params, names: tuple[str, str]) -> tuple[str, str]:
    """(value, the name it came from): the canonical name first, then its deprecated alias."""
    for name in names:
        values = params.get(name) or []
        if values and values[0]:
            return values[0], name
    return "", names[1]


def parse_go_bool(text: str, message: str) -> bool:
    """Go's strconv.ParseBool, which Jaeger uses for every boolean parameter."""
    if text in _GO_TRUE:
        return True
    if text in _GO_FALSE:
        return False
    raise ParamError(f"{message}: {text!r} is not a boolean (true or false)")


def parse_trace_id_any(text: str, name: str = "trace_id") -> bytes:
    """A trace id in hex (1-32 digits) or, as Jaeger also accepts, base64 of its 16 bytes
    (standard or URL alphabet, padded or not)."""
    try:
        return parse_trace_id(text)
    except ValueError as exc:
        hex_error = exc
    if len(text) <= 24:
        padded = text + "=" * (-len(text) % 4)
        for altchars in (None, b"-_"):  # the standard alphabet, then the URL one
            try:
                raw = base64.b64decode(padded, altchars=altchars, validate=True)
            except (binascii.Error, ValueError):
                continue
            if len(raw) == 16:
                return raw
    raise ParamError(f"malformed parameter {name}: {hex_error}")


def parse_v3_search(params: Params) -> TraceQuery:
    """`/api/v3/traces` and `/api/v3/trace-summaries` parameters. An empty service name searches
    every service (what the UI sends for "all services")."""
    if params.get("query.filter"):
        raise ParamError("malformed parameter query.filter: meshtrace does not support filter expressions")
    tmin, tmin_name = param(params, TIME_MIN)
    tmax, tmax_name = param(params, TIME_MAX)
    if not tmin or not tmax:
        raise ParamError(f"{TIME_MIN[0]} and {TIME_MAX[0]} are required")
    start_min = parse_rfc3339_ns(tmin, tmin_name)
    start_max = parse_rfc3339_ns(tmax, tmax_name)
    if start_min >= start_max:
        raise ParamError(f"{TIME_MIN[0]} must be before {TIME_MAX[0]}")
    attributes = params.get("query.attributes") or []
    try:
        tags = parse_tags([], attributes[:1])
    except ParamError as exc:
        raise ParamError(f"malformed parameter query.attributes: {exc}") from None
    depth_text, depth_name = param(params, SEARCH_DEPTH)
    if not depth_text:
        depth_text, depth_name = (params.get(NUM_TRACES) or [""])[0], NUM_TRACES
    depth = DEFAULT_SEARCH_DEPTH
    if depth_text:
        try:
            depth = int(depth_text)
        except ValueError:
            raise ParamError(f"malformed parameter {depth_name}: {depth_text!r} is not an integer") from None
        if depth < 1:
            raise ParamError(f"malformed parameter {depth_name}: must be at least 1, got {depth}")
    dmin, dmin_name = param(params, DURATION_MIN)
    dmax, dmax_name = param(params, DURATION_MAX)
    duration_min = parse_duration_ns(dmin, f"malformed parameter {dmin_name}") if dmin else None
    duration_max = parse_duration_ns(dmax, f"malformed parameter {dmax_name}") if dmax else None
    if duration_min is not None and duration_max is not None and duration_max < duration_min:
        raise ParamError(f"{dmax_name} must not be less than {dmin_name}")
    raw, raw_name = param(params, QUERY_RAW_TRACES)
    if raw:
        parse_go_bool(raw, f"malformed parameter {raw_name}")
    return TraceQuery(
        service=param(params, SERVICE)[0],
        operation=param(params, OPERATION)[0],
        tags=tags,
        start_min_ns=start_min,
        start_max_ns=start_max,
        duration_min_ns=duration_min,
        duration_max_ns=duration_max,
        limit=min(depth, MAX_SEARCH_LIMIT),  # absurd depths are capped, as v1's limit is
    )


def check_v3_get_trace(params: Params) -> None:
    """`/api/v3/traces/{id}` takes startTime, endTime (RFC 3339) and rawTraces; meshtrace finds a
    trace by id alone, so they are only checked."""
    for names in (START_TIME, END_TIME):
        text, name = param(params, names)
        if text:
            parse_rfc3339_ns(text, name)
    raw, raw_name = param(params, RAW_TRACES)
    if raw:
        parse_go_bool(raw, f"malformed parameter {raw_name}")


@dataclass(frozen=True)
class MetricsQuery:
    """One SPM request: RED series for `services` at the points end-lookback, +step, ..., end,
    each point over the spans that started in (point - rate_per, point]."""

    services: tuple[str, ...]
    kinds: tuple[int, ...]
    group_by_operation: bool
    end_ns: int
    lookback_ns: int
    step_ns: int
    rate_per_ns: int


def _v1_error(name: str, message: str) -> ParamError:
    return ParamError(f"unable to parse param '{name}': {message}")


def _millis(params: Params, name: str, default: int, minimum: int) -> int:
    text = (params.get(name) or [""])[0]
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise _v1_error(name, f"{text!r} is not an integer number of milliseconds") from None
    if not minimum <= value <= MAX_METRICS_MS:
        raise _v1_error(name, f"must be between {minimum} and {MAX_METRICS_MS} ms, got {value}")
    return value


def parse_metrics(params: Params, now_ms: int | None = None) -> MetricsQuery:
    """`/api/metrics/{latencies,calls,errors}` parameters (all times in milliseconds)."""
    services = tuple(s for s in params.get("service") or [] if s)
    if not services:
        raise _v1_error("service", "please provide at least one service name")
    group_text = (params.get("groupByOperation") or [""])[0]
    group = parse_go_bool(group_text, "unable to parse param 'groupByOperation'") if group_text else False
    kind_names = params.get("spanKind") or list(DEFAULT_METRICS_KINDS)
    kinds = []
    for name in kind_names:
        kind = SPAN_KIND_BY_NAME.get(name)
        if kind is None:
            raise _v1_error("spanKind", f"unsupported span kind: {name!r}")
        kinds.append(kind)
    now = int(time.time() * 1000) if now_ms is None else now_ms
    end_ms = _millis(params, "endTs", now, 0)
    lookback_ms = _millis(params, "lookback", DEFAULT_METRICS_LOOKBACK_MS, 0)
    step_ms = _millis(params, "step", DEFAULT_METRICS_STEP_MS, 1)
    rate_ms = _millis(params, "ratePer", DEFAULT_METRICS_RATE_MS, 1)
    if lookback_ms // step_ms + 1 > MAX_POINTS:
        raise _v1_error(
            "step",
            f"lookback/step gives {lookback_ms // step_ms + 1} points per series, more than {MAX_POINTS};"
            " use a larger step",
        )
    return MetricsQuery(
        services=services,
        kinds=tuple(dict.fromkeys(kinds)),
        group_by_operation=group,
        end_ns=end_ms * 10**6,
        lookback_ns=lookback_ms * 10**6,
        step_ns=step_ms * 10**6,
        rate_per_ns=rate_ms * 10**6,
    )


def parse_quantile(params: Params) -> float:
    """`quantile` of `/api/metrics/latencies`: required, in [0, 1]."""
    text = (params.get("quantile") or [""])[0]
    try:
        value = float(text)
    except ValueError:
        raise _v1_error("quantile", f"{text!r} is not a number") from None
    if not (math.isfinite(value) and 0 <= value <= 1):
        raise _v1_error("quantile", f"must be between 0 and 1, got {text}")
    return value
