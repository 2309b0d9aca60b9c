"""Query-string parsing for the query API, as Jaeger's query service does it (sans-IO).

Errors are `ParamError` with Jaeger's wording where Jaeger has one
(`unable to parse param 'minDuration': ...`, `parameter 'service' is required`).
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from meshtrace.durations import go_duration_ns
from meshtrace.model.jaeger import SPAN_KIND_BY_NAME, parse_trace_id
from meshtrace.store import MAX_SEARCH_LIMIT, TraceQuery

DEFAULT_LIMIT = 100
TRACE_LOOKBACK_NS = 48 * 3600 * 10**9  # Jaeger's defaultTraceQueryLookbackDuration
DEPENDENCY_LOOKBACK_MS = 24 * 3600 * 1000  # Jaeger's defaultDependencyLookbackDuration
# The store keeps times and durations as signed 64-bit nanoseconds: a time parameter must lie in
# 1970-01-01T00:00:00Z .. 2262-04-11T23:47:16.854775807Z, a duration in 0 .. ~106751 days.
MAX_NS = 2**63 - 1

Params = Mapping[str, Sequence[str]]


class ParamError(ValueError):
    """A bad query parameter (HTTP 400)."""


def _first(params: Params, name: str) -> str:
    values = params.get(name) or []
    return values[0] if values else ""


def _shown(text: str) -> str:
    """A parameter's value, quoted and short, for an error message."""
    return repr(text if len(text) <= 60 else text[:60] + "...")


def parse_duration_ns(text: str, error: str) -> int:
    """Nanoseconds from a Go duration (never negative: meshtrace reads no sign); a ParamError
    starting with `error` (the API's wording, naming the parameter) when it is not one or does
    not fit int64 nanoseconds."""
    try:
        return go_duration_ns(text)
    except ValueError as exc:
        raise ParamError(f"{error}: {exc}") from None


def span_kind_filter(text: str) -> int | None:
    """The span kind an operations listing is narrowed to: None for any (no value), -1 (matches
    nothing) for a name that is not a kind."""
    if not text:
        return None
    return SPAN_KIND_BY_NAME.get(text.strip().lower(), -1)


def _int(text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ParamError(f"unable to parse param '{name}': {_shown(text)} is not an integer") from None


def _ns(text: str, name: str, unit_ns: int, unit: str) -> int:
    """An integer count of `unit` as nanoseconds, in 0..MAX_NS."""
    value = _int(text, name)
    if not 0 <= value <= MAX_NS // unit_ns:
        raise ParamError(
            f"unable to parse param '{name}': {value} is out of range: 0 to {MAX_NS // unit_ns} ({unit})"
        )
    return value * unit_ns


def _limit(text: str, name: str) -> int:
    if not text:
        return DEFAULT_LIMIT
    value = _int(text, name)
    if value <= 0:
        return DEFAULT_LIMIT
    return min(value, MAX_SEARCH_LIMIT)  # absurd limits are capped, not refused


def parse_tags(simple: Sequence[str], json_maps: Sequence[str]) -> dict[str, str]:
    """`tag=key:value` (repeatable) and `tags={"key": "value"}` merged, as Jaeger does."""
    tags: dict[str, str] = {}
    for item in simple:
        key, sep, value = item.partition(":")
        if not sep:
            raise ParamError(f"malformed 'tag' parameter, expecting key:value, received: {item}")
        tags[key] = value
    for text in json_maps:
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError) as exc:  # ValueError: also an integer of 4300+ digits
            raise ParamError(f"malformed 'tags' parameter, cannot unmarshal JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise ParamError("malformed 'tags' parameter: expected a JSON object of strings")
        for key, value in obj.items():
            if isinstance(value, dict | list) or value is None:
                raise ParamError(f"malformed 'tags' parameter: value of {key!r} must be a string")
            tags[str(key)] = json.dumps(value) if not isinstance(value, str) else value
    return tags


@dataclass(frozen=True)
class SearchRequest:
    """Either a search (`query`) or a fetch of explicit trace ids (`trace_ids`)."""

    query: TraceQuery | None
    trace_ids: list[bytes]


def parse_search(params: Params, now_ns: int) -> SearchRequest:
    """`/api/traces?...` parameters; start/end in microseconds, durations as Go durations."""
    trace_ids = []
    for text in params.get("traceID") or []:
        try:
            trace_ids.append(parse_trace_id(text))
        except ValueError as exc:
            raise ParamError(f"cannot parse traceID param: {exc}") from None
    end_text, start_text = _first(params, "end"), _first(params, "start")
    end_ns = _ns(end_text, "end", 1000, "unix microseconds") if end_text else now_ns
    start_ns = (
        _ns(start_text, "start", 1000, "unix microseconds") if start_text else end_ns - TRACE_LOOKBACK_NS
    )
    tags = parse_tags(params.get("tag") or [], params.get("tags") or [])
    limit = _limit(_first(params, "limit"), "limit")
    min_text, max_text = _first(params, "minDuration"), _first(params, "maxDuration")
    min_ns = parse_duration_ns(min_text, "unable to parse param 'minDuration'") if min_text else None
    max_ns = parse_duration_ns(max_text, "unable to parse param 'maxDuration'") if max_text else None
    if trace_ids:
        return SearchRequest(None, trace_ids)
    service = _first(params, "service")
    if not service:
        raise ParamError("parameter 'service' is required")
    if min_ns and max_ns and max_ns < min_ns:
        raise ParamError("'maxDuration' should be greater than 'minDuration'")
    query = TraceQuery(
        service=service,
        operation=_first(params, "operation"),
        tags=tags,
        start_min_ns=start_ns,
        start_max_ns=end_ns,
        duration_min_ns=min_ns,
        duration_max_ns=max_ns,
        limit=limit,
    )
    return SearchRequest(query, [])


def parse_dependencies(params: Params, now_ms: int) -> tuple[int, int]:
    """(end, lookback) in nanoseconds from `endTs` and `lookback` in milliseconds."""
    end_text, lookback_text = _first(params, "endTs"), _first(params, "lookback")
    end_ns = _ns(end_text, "endTs", 10**6, "unix milliseconds") if end_text else now_ms * 10**6
    lookback_ns = _ns(lookback_text, "lookback", 10**6, "milliseconds") if lookback_text else None
    return end_ns, DEPENDENCY_LOOKBACK_MS * 10**6 if lookback_ns is None else lookback_ns


_RFC3339 = re.compile(r"^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})$")


def parse_rfc3339_ns(text: str, name: str) -> int:
    """Unix nanoseconds from RFC 3339 with up to nanosecond fractions (Go's RFC3339Nano)."""
    match = _RFC3339.match(text.strip())
    if match is None:
        raise ParamError(f"malformed parameter {name}: {text!r} is not an RFC 3339 time")
    date, clock, fraction, zone = match.groups()
    zone = "+00:00" if zone in ("Z", "z") else zone
    try:
        moment = datetime.datetime.fromisoformat(f"{date}T{clock}{zone}")
        seconds = int(moment.timestamp())
    except (ValueError, OverflowError) as exc:
        raise ParamError(f"malformed parameter {name}: {exc}") from None
    ns = seconds * 10**9 + int((fraction or "0").ljust(9, "0"))
    if not 0 <= ns <= MAX_NS:
        raise ParamError(
            f"malformed parameter {name}: {_shown(text)} is out of range: 1970-01-01T00:00:00Z to "
            "2262-04-11T23:47:16.854775807Z"
        )
    return ns
