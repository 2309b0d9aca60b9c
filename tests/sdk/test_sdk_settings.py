"""OTEL_* environment parsing: endpoints (scheme-less, signal-specific, http path), protocol,
insecure, headers, sampler, batch settings."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

import pytest
from fuzzing import examples
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased, TraceIdRatioBased

from meshtrace.sdk.settings import (
    SEED_MAX_EXPORT_BATCH_SIZE,
    SEED_SCHEDULE_DELAY_MS,
    SettingsError,
    batch_settings,
    exporter_settings,
    sampler_from_env,
)


def parse_all(env: Mapping[str, str]) -> None:
    exporter_settings(env)
    sampler_from_env(env)
    batch_settings(env)


def test_defaults_are_local_grpc_plaintext() -> None:
    s = exporter_settings({})
    assert (s.protocol, s.endpoint, s.insecure, s.headers, s.notes) == (
        "grpc",
        "http://localhost:4317",
        True,
        {},
        (),
    )


def test_seed_endpoint_without_scheme_is_plaintext_with_a_note() -> None:
    s = exporter_settings({"OTEL_EXPORTER_OTLP_ENDPOINT": "otel-collector.istio-system:4317"})
    assert s.endpoint == "http://otel-collector.istio-system:4317"
    assert s.insecure is True
    assert len(s.notes) == 1
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" in s.notes[0] and "no scheme" in s.notes[0]


def test_scheme_less_endpoint_with_insecure_false_uses_tls() -> None:
    s = exporter_settings({"OTEL_EXPORTER_OTLP_ENDPOINT": "c:4317", "OTEL_EXPORTER_OTLP_INSECURE": "false"})
    assert (s.endpoint, s.insecure) == ("https://c:4317", False)


def test_https_is_never_insecure() -> None:
    s = exporter_settings(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "https://c:4317", "OTEL_EXPORTER_OTLP_INSECURE": "true"}
    )
    assert s.insecure is False


def test_traces_endpoint_beats_base_endpoint() -> None:
    s = exporter_settings(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4317",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://b:4317",
        }
    )
    assert s.endpoint == "http://b:4317"


def test_http_protocol_appends_signal_path_to_base_endpoint_only() -> None:
    base = exporter_settings(
        {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/"}
    )
    assert base.endpoint == "http://c:4318/v1/traces"
    signal = exporter_settings(
        {
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:9/x",
        }
    )
    assert signal.endpoint == "http://c:9/x"
    assert (
        exporter_settings({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}).endpoint
        == "http://localhost:4318/v1/traces"
    )


def test_headers_are_parsed_and_percent_decoded() -> None:
    s = exporter_settings({"OTEL_EXPORTER_OTLP_HEADERS": "api-key=a%20b, X-Tenant=t1"})
    assert s.headers == {"api-key": "a b", "x-tenant": "t1"}


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "OTEL_EXPORTER_OTLP_PROTOCOL"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "grpc://c:4317"}, "OTEL_EXPORTER_OTLP_ENDPOINT"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://"}, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
        ({"OTEL_EXPORTER_OTLP_INSECURE": "maybe"}, "OTEL_EXPORTER_OTLP_INSECURE"),
        ({"OTEL_TRACES_SAMPLER": "sometimes"}, "OTEL_TRACES_SAMPLER"),
        ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"}, "OTEL_TRACES_SAMPLER_ARG"),
        ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "x"}, "OTEL_TRACES_SAMPLER_ARG"),
        ({"OTEL_BSP_SCHEDULE_DELAY": "-1"}, "OTEL_BSP_SCHEDULE_DELAY"),
        ({"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "4096"}, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], field: str) -> None:
    with pytest.raises(SettingsError, match=field):
        parse_all(env)


def test_sampler_default_is_parent_based_always_on() -> None:
    sampler = sampler_from_env({})
    assert isinstance(sampler, ParentBased)
    assert sampler.get_description() == ParentBased(ALWAYS_ON).get_description()


@pytest.mark.parametrize(
    ("name", "arg", "expected"),
    [
        ("always_on", None, ALWAYS_ON),
        ("ALWAYS_OFF", None, ALWAYS_OFF),
        ("traceidratio", "0.25", TraceIdRatioBased(0.25)),
        ("parentbased_always_off", None, ParentBased(ALWAYS_OFF)),
        ("parentbased_traceidratio", "0.5", ParentBased(TraceIdRatioBased(0.5))),
        ("parentbased_traceidratio", None, ParentBased(TraceIdRatioBased(1.0))),
    ],
)
def test_sampler_names(name: str, arg: str | None, expected: object) -> None:
    env = {"OTEL_TRACES_SAMPLER": name}
    if arg is not None:
        env["OTEL_TRACES_SAMPLER_ARG"] = arg
    assert sampler_from_env(env).get_description() == expected.get_description()  # type: ignore[attr-defined]


def test_batch_defaults_are_the_seeds() -> None:
    b = batch_settings({})
    assert (
        (b.schedule_delay_ms, b.max_export_batch_size)
        == (SEED_SCHEDULE_DELAY_MS, SEED_MAX_EXPORT_BATCH_SIZE)
        == (5000, 512)
    )
    assert batch_settings({"OTEL_BSP_SCHEDULE_DELAY": "200"}).schedule_delay_ms == 200


@settings(max_examples=examples(200), deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "OTEL_EXPORTER_OTLP_PROTOCOL",
                "OTEL_EXPORTER_OTLP_INSECURE",
                "OTEL_EXPORTER_OTLP_HEADERS",
                "OTEL_TRACES_SAMPLER",
                "OTEL_TRACES_SAMPLER_ARG",
                "OTEL_BSP_SCHEDULE_DELAY",
                "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
            ]
        ),
        st.text(max_size=40),
    )
)
def test_any_environment_gives_settings_or_a_settings_error(env: dict[str, str]) -> None:
    with contextlib.suppress(SettingsError):
        parse_all(env)
    try:
        s = exporter_settings(env)
    except SettingsError:
        return
    assert s.endpoint.startswith(("http://", "https://"))
    assert not (s.endpoint.startswith("https://") and s.insecure)
