"""check() takes any mapping (the lint calls it on whatever a ConfigMap holds) and returns
problems: it never raises."""

from __future__ import annotations

import copy
from typing import Any

import yaml
from fuzzing import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from meshtrace.collector.config import ConfigError, check, load_text
from meshtrace.collector.schema import Problem

WORDS = [
    "receivers",
    "processors",
    "exporters",
    "extensions",
    "connectors",
    "service",
    "pipelines",
    "traces",
    "metrics",
    "logs",
    "otlp",
    "otlp/2",
    "zipkin",
    "protocols",
    "grpc",
    "http",
    "endpoint",
    "batch",
    "memory_limiter",
    "debug",
    "logging",
    "file",
    "path",
    "otlp_grpc",
    "otlphttp",
    "tls",
    "insecure",
    "timeout",
    "sending_queue",
    "retry_on_failure",
    "queue_size",
    "health_check",
    "telemetry",
    "address",
    "readers",
    "pull",
    "exporter",
    "prometheus",
    "port",
    "verbosity",
    "rotation",
    "limit_mib",
    "check_interval",
    "probabilistic_sampler",
    "sampling_percentage",
]
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-5, 70000)
    | st.floats(allow_nan=True)
    | st.sampled_from(
        ["", "5s", "1m", "127.0.0.1:0", "0.0.0.0:4317", "x:y", "${env:X}", "detailed", "[a]", "nope"]
    )
)
configs = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner | st.sampled_from(WORDS), max_size=3)
        | st.dictionaries(st.sampled_from(WORDS), inner, max_size=5)
    ),
    max_leaves=40,
)


@settings(max_examples=examples(300), deadline=None)
@given(st.dictionaries(st.sampled_from(WORDS), configs, max_size=6))
def test_check_never_raises(raw: dict[str, Any]) -> None:
    problems = check(raw)
    assert all(isinstance(p, Problem) for p in problems)


BASE: dict[str, Any] = {
    "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": "127.0.0.1:0"}, "http": None}}},
    "processors": {"batch": {"timeout": "1s"}, "memory_limiter": {"check_interval": "1s", "limit_mib": 100}},
    "exporters": {
        "otlp_grpc": {"endpoint": "b:4317", "tls": {"insecure": True}, "sending_queue": {"queue_size": 5}},
        "file": {"path": "/tmp/x", "rotation": {"max_megabytes": 1}},
    },
    "extensions": {"health_check": {"endpoint": "127.0.0.1:0"}},
    "service": {
        "extensions": ["health_check"],
        "pipelines": {"traces": {"receivers": ["otlp"], "processors": ["batch"], "exporters": ["file"]}},
        "telemetry": {"metrics": {"address": "127.0.0.1:0", "readers": [{"pull": {"exporter": {}}}]}},
    },
}


def paths(node: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            out += paths(value, (*prefix, key))
    return out


PATHS = paths(BASE)[1:]


@settings(max_examples=examples(300), deadline=None)
@given(st.lists(st.tuples(st.sampled_from(PATHS), configs), min_size=1, max_size=3))
def test_check_never_raises_on_a_valid_config_with_values_replaced(
    changes: list[tuple[tuple[str, ...], Any]],
) -> None:
    raw = copy.deepcopy(BASE)
    for path, value in changes:
        node = raw
        try:
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = value
        except (KeyError, TypeError):
            continue  # an earlier change replaced a mapping on this path
    assert all(isinstance(p, Problem) for p in check(raw))


@settings(max_examples=examples(200), deadline=None)
@given(
    st.text(max_size=200)
    | st.sampled_from(["receivers: 2001-13-45", "x: !!binary abc", "a: [", "- 1", "kind: ConfigMap\ndata: 5"])
    | st.builds(lambda d: yaml.safe_dump({"kind": "ConfigMap", "data": d}), configs)
)
def test_loading_text_gives_a_config_or_a_config_error(text: str) -> None:
    try:
        raw = load_text(text)
    except ConfigError:
        return
    assert isinstance(raw, dict)
