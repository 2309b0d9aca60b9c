"""The `debug` exporter (alias `logging`, removed from the Collector in v0.111): logs what arrives.

`verbosity: basic` logs one summary line per batch, `normal` one line per span, `detailed` every
field. Output goes to the collector's log (stderr), as the Collector's does. Not queued.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal

from meshtrace.collector.component import ComponentID, Host, Kind
from meshtrace.collector.factory import ComponentFactory
from meshtrace.collector.telemetry import TELEMETRY
from meshtrace.model import Traces
from meshtrace.model.attributes import as_string

log = logging.getLogger("meshtrace.collector.debug")


Verbosity = Literal["basic", "normal", "detailed"]
# The removed logging exporter's own mapping of its `loglevel` to a verbosity.
LOGLEVELS: dict[str, Verbosity] = {"debug": "detailed", "info": "normal", "warn": "basic", "error": "basic"}


@dataclass
class DebugConfig:
    verbosity: Verbosity = "basic"
    sampling_initial: int = 2
    sampling_thereafter: int = 1
    use_internal_logger: bool = True
    loglevel: str | None = field(
        default=None,
        metadata={
            "warning": "'loglevel' was removed with the logging exporter; "
            "use 'verbosity' (basic|normal|detailed); mapped as the logging exporter did"
        },
    )

    def __post_init__(self) -> None:
        if self.loglevel is not None:
            verbosity = LOGLEVELS.get(self.loglevel.lower())
            if verbosity is None:
                raise ValueError(f"loglevel {self.loglevel!r}: expected one of {', '.join(LOGLEVELS)}")
            self.verbosity = verbosity


def _attrs(attributes: Any) -> str:
    return ", ".join(f"{kv.key}={as_string(kv.value)}" for kv in attributes)


def render(traces: Traces, verbosity: str) -> list[str]:
    """The lines the debug exporter logs for one batch."""
    request = traces.message()
    summary = f'Traces {{"resource spans": {len(request.resource_spans)}, "spans": {traces.span_count()}}}'
    if verbosity == "basic":
        return [summary]
    lines = [summary]
    for r, rs in enumerate(request.resource_spans):
        if verbosity == "detailed":
            lines.append(f"ResourceSpans #{r}")
            lines.append(f"Resource attributes: {_attrs(rs.resource.attributes)}")
        for s, ss in enumerate(rs.scope_spans):
            if verbosity == "detailed":
                lines.append(f"ScopeSpans #{s} {ss.scope.name} {ss.scope.version}")
            for i, span in enumerate(ss.spans):
                if verbosity == "normal":
                    ids = f"{span.trace_id.hex()} {span.span_id.hex()}"
                    lines.append(f"{span.name} {ids} {_attrs(span.attributes)}".rstrip())
                    continue
                lines.extend(_detailed(i, span))
    return lines


def _detailed(i: int, span: Any) -> list[str]:
    lines = [
        f"Span #{i}",
        f"    Trace ID       : {span.trace_id.hex()}",
        f"    Parent ID      : {span.parent_span_id.hex()}",
        f"    ID             : {span.span_id.hex()}",
        f"    Name           : {span.name}",
        f"    Kind           : {span.kind}",
        f"    Start time     : {span.start_time_unix_nano}",
        f"    End time       : {span.end_time_unix_nano}",
        f"    Status code    : {span.status.code}",
        f"    Status message : {span.status.message}",
    ]
    if span.attributes:
        lines.append("Attributes:")
        lines.extend(f"     -> {kv.key}: {as_string(kv.value)}" for kv in span.attributes)
    for e, event in enumerate(span.events):
        lines.append(f"SpanEvent #{e}: {event.name} {event.time_unix_nano} {_attrs(event.attributes)}")
    for n, link in enumerate(span.links):
        lines.append(f"SpanLink #{n}: {link.trace_id.hex()} {link.span_id.hex()}")
    return lines


class DebugExporter:
    def __init__(self, id: ComponentID, config: DebugConfig) -> None:
        self.id = id
        self.config = config
        self.metrics = TELEMETRY.exporter(id)

    async def consume_traces(self, traces: Traces) -> None:
        for line in render(traces, self.config.verbosity):
            log.info("%s: %s", self.id, line)
        self.metrics.sent_spans.add(traces.span_count())

    async def start(self, host: Host) -> None:
        return None

    async def shutdown(self) -> None:
        return None


factory = ComponentFactory(
    "debug", Kind.EXPORTER, DebugConfig, lambda id, config, _: DebugExporter(id, config)
)
