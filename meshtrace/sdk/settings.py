"""The standard OTEL_* environment variables, read into plain values (no IO, no global state).

`init_tracer` builds its exporter, sampler and batch processor from these; tests call the
functions directly with a dict for `env`.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.util.re import parse_env_headers

GRPC = "grpc"
HTTP_PROTOBUF = "http/protobuf"
PROTOCOLS = (GRPC, HTTP_PROTOBUF)

# The OTLP defaults (localhost) rather than the seed's `otel-collector.istio-system:4317`: on one
# machine the collector is local, in a cluster `meshtrace up`/the manifests set the variable.
DEFAULT_ENDPOINTS = {GRPC: "http://localhost:4317", HTTP_PROTOBUF: "http://localhost:4318"}
TRACES_PATH = "/v1/traces"

# The seed's batcher: WithBatchTimeout(5s), WithMaxExportBatchSize(512).
SEED_SCHEDULE_DELAY_MS = 5000
SEED_MAX_EXPORT_BATCH_SIZE = 512

DEFAULT_SAMPLER = "parentbased_always_on"

N = TypeVar("N", int, float)

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class SettingsError(ValueError):
    """An OTEL_* variable holds a value the SDK cannot use; the message names the variable."""


@dataclass(frozen=True)
class ExporterSettings:
    protocol: str
    # Full URL with scheme; for http/protobuf it includes the signal path (`/v1/traces`).
    endpoint: str
    insecure: bool
    headers: dict[str, str] = field(default_factory=dict)
    # Lines worth logging at startup (e.g. a scheme-less endpoint was taken as plaintext).
    notes: tuple[str, ...] = ()


def _first(env: Mapping[str, str], *names: str) -> tuple[str, str] | None:
    """(name, value) of the first variable that is set and not blank."""
    for name in names:
        value = env.get(name, "").strip()
        if value:
            return name, value
    return None


def _parse_bool(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise SettingsError(f"{name}={value!r}: expected true or false")


def exporter_settings(env: Mapping[str, str]) -> ExporterSettings:
    """Where and how to send spans, from OTEL_EXPORTER_OTLP_[TRACES_]{ENDPOINT,PROTOCOL,HEADERS,INSECURE}.

    An endpoint without a scheme (the seed's `otel-collector.istio-system:4317`) is taken as
    plaintext `http://` (or `https://` when INSECURE is false): the Go SDK in the seed dials it
    with insecure credentials, while the Python gRPC exporter would try TLS and fail silently.
    """
    protocol_var = _first(env, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
    protocol = protocol_var[1].lower() if protocol_var else GRPC
    if protocol not in PROTOCOLS:
        assert protocol_var is not None
        raise SettingsError(f"{protocol_var[0]}={protocol_var[1]!r}: expected one of {', '.join(PROTOCOLS)}")

    insecure_var = _first(env, "OTEL_EXPORTER_OTLP_TRACES_INSECURE", "OTEL_EXPORTER_OTLP_INSECURE")
    insecure_flag = _parse_bool(*insecure_var) if insecure_var else None

    notes: list[str] = []
    signal_var = _first(env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    base_var = _first(env, "OTEL_EXPORTER_OTLP_ENDPOINT")
    chosen = signal_var or base_var
    name, raw = chosen if chosen else ("default", DEFAULT_ENDPOINTS[protocol])
    if _SCHEME.match(raw):
        url = raw
    else:
        scheme = "https" if insecure_flag is False else "http"
        url = f"{scheme}://{raw}"
        notes.append(
            f"{name}={raw!r} has no scheme: using {url} ({'TLS' if scheme == 'https' else 'plaintext'})"
        )
    scheme = url.split("://", 1)[0].lower()
    if scheme not in ("http", "https"):
        raise SettingsError(f"{name}={raw!r}: scheme must be http or https")
    if not url.split("://", 1)[1].split("/", 1)[0]:
        raise SettingsError(f"{name}={raw!r}: no host")

    # A signal-specific endpoint is used as is; the base endpoint gets the signal path (OTLP spec).
    if protocol == HTTP_PROTOBUF and signal_var is None:
        url = url.rstrip("/") + TRACES_PATH

    insecure = scheme == "http" if insecure_flag is None else insecure_flag
    if scheme == "https":
        insecure = False

    headers_var = _first(env, "OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS")
    headers = dict(parse_env_headers(headers_var[1], liberal=True)) if headers_var else {}
    return ExporterSettings(protocol, url, insecure, headers, tuple(notes))


def parse_bounded(
    name: str,
    raw: str,
    convert: Callable[[str], N],
    low: N,
    high: N,
    expected: str,
    error: type[ValueError] = SettingsError,
) -> N:
    """`convert(raw)` when it lies in [low, high]; otherwise `error("NAME='raw': expected ...")`."""
    try:
        value = convert(raw.strip())
    except ValueError:
        raise error(f"{name}={raw!r}: expected {expected}") from None
    if not low <= value <= high:
        raise error(f"{name}={raw!r}: expected {expected}")
    return value


def _parse_ratio(name: str, arg: str | None) -> float:
    if arg is None:
        return 1.0
    return parse_bounded(name, arg, float, 0.0, 1.0, "a number between 0 and 1")


def sampler_from_env(env: Mapping[str, str]) -> Sampler:
    """OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG; parentbased_always_on when unset.

    ParentBased by default (not the seed's AlwaysSample): the sidecar decided whether the request
    is traced, and an app that samples on its own would emit spans whose parents were never
    recorded.
    """
    chosen = _first(env, "OTEL_TRACES_SAMPLER")
    name = chosen[1].lower() if chosen else DEFAULT_SAMPLER
    arg_var = _first(env, "OTEL_TRACES_SAMPLER_ARG")
    arg = arg_var[1] if arg_var else None
    if name == "always_on":
        return ALWAYS_ON
    if name == "always_off":
        return ALWAYS_OFF
    if name == "traceidratio":
        return TraceIdRatioBased(_parse_ratio("OTEL_TRACES_SAMPLER_ARG", arg))
    if name == "parentbased_always_on":
        return ParentBased(ALWAYS_ON)
    if name == "parentbased_always_off":
        return ParentBased(ALWAYS_OFF)
    if name == "parentbased_traceidratio":
        return ParentBased(TraceIdRatioBased(_parse_ratio("OTEL_TRACES_SAMPLER_ARG", arg)))
    raise SettingsError(
        f"OTEL_TRACES_SAMPLER={name!r}: expected always_on, always_off, traceidratio, "
        "parentbased_always_on, parentbased_always_off or parentbased_traceidratio"
    )


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    chosen = _first(env, name)
    if chosen is None:
        return default
    return parse_bounded(name, chosen[1], int, 1, sys.maxsize, "a positive integer")


@dataclass(frozen=True)
class BatchSettings:
    schedule_delay_ms: int
    max_export_batch_size: int
    max_queue_size: int


def batch_settings(env: Mapping[str, str]) -> BatchSettings:
    """The seed's 5 s / 512 unless OTEL_BSP_SCHEDULE_DELAY / OTEL_BSP_MAX_EXPORT_BATCH_SIZE say otherwise."""
    batch = _positive_int(env, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", SEED_MAX_EXPORT_BATCH_SIZE)
    queue = _positive_int(env, "OTEL_BSP_MAX_QUEUE_SIZE", 2048)
    if batch > queue:
        raise SettingsError(
            f"OTEL_BSP_MAX_EXPORT_BATCH_SIZE={batch} is larger than OTEL_BSP_MAX_QUEUE_SIZE={queue}"
        )
    return BatchSettings(_positive_int(env, "OTEL_BSP_SCHEDULE_DELAY", SEED_SCHEDULE_DELAY_MS), batch, queue)
