"""`init_tracer`: the seed's `telemetry.InitTracer` (应用级 OTLP 集成) on opentelemetry-python."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from opentelemetry import propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.b3 import B3MultiFormat
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import Sampler

from meshtrace.sdk.resource import build_resource
from meshtrace.sdk.settings import GRPC, ExporterSettings, batch_settings, exporter_settings, sampler_from_env
from meshtrace.sdk.tracecontext import W3CTraceContextPropagator

log = logging.getLogger("meshtrace.sdk")


class Shutdown:
    """What `init_tracer` returns: call it to flush and stop (the seed's `tp.Shutdown`)."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider

    def __call__(self) -> None:
        self.provider.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.provider.force_flush(timeout_millis)


def propagator() -> CompositePropagator:
    """W3C Trace Context + baggage + B3 multi-header, as the seed: Istio's OpenTelemetry provider
    speaks W3C, its Zipkin provider B3; an app that reads and writes both joins either mesh.

    Each propagator's extract replaces the context the one before found, so B3 goes first and W3C
    wins when both arrive (a meshtrace sidecar writes both): the B3 context has no tracestate.
    W3C is read by meshtrace's rules (`W3CTraceContextPropagator`), as the sidecar reads it."""
    return CompositePropagator([B3MultiFormat(), W3CTraceContextPropagator(), W3CBaggagePropagator()])


def otlp_exporter(settings: ExporterSettings) -> SpanExporter:
    if settings.protocol == GRPC:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter(
            endpoint=settings.endpoint, insecure=settings.insecure, headers=settings.headers or None
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    return HttpExporter(endpoint=settings.endpoint, headers=settings.headers or None)


def init_tracer(
    service_name: str | None = None,
    *,
    service_version: str | None = None,
    environment: str | None = None,
    sampler: Sampler | None = None,
    exporter: SpanExporter | None = None,
    resource: Resource | None = None,
    env: Mapping[str, str] | None = None,
    set_global: bool = True,
) -> Shutdown:
    """Set up tracing for this process and return the function that flushes and stops it.

    Reads the standard variables from `env` (default `os.environ`): OTEL_SERVICE_NAME,
    OTEL_RESOURCE_ATTRIBUTES, OTEL_EXPORTER_OTLP_[TRACES_]{ENDPOINT,PROTOCOL,HEADERS,INSECURE},
    OTEL_TRACES_SAMPLER[_ARG], OTEL_BSP_*. Arguments win over the environment. `exporter` replaces
    the OTLP exporter (tests pass an InMemorySpanExporter). Raises `SettingsError` (a ValueError
    naming the variable) for a value it cannot use.
    """
    env = os.environ if env is None else env
    if exporter is None:
        settings = exporter_settings(env)
        for note in settings.notes:
            log.warning("%s", note)
        exporter = otlp_exporter(settings)
        log.info("exporting spans over OTLP %s to %s", settings.protocol, settings.endpoint)
    batch = batch_settings(env)
    provider = TracerProvider(
        sampler=sampler if sampler is not None else sampler_from_env(env),
        resource=resource
        if resource is not None
        else build_resource(env, service_name, service_version, environment),
    )
    provider.add_span_processor(
        BatchSpanProcessor(
            exporter,
            max_queue_size=batch.max_queue_size,
            schedule_delay_millis=batch.schedule_delay_ms,
            max_export_batch_size=batch.max_export_batch_size,
        )
    )
    if set_global:
        trace.set_tracer_provider(provider)
        propagate.set_global_textmap(propagator())
    return Shutdown(provider)
