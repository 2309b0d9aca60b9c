"""The shipped upstream catalogue and the script that builds it (tools/collector_catalogue.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from meshtrace.collector import registry
from meshtrace.collector.catalogue import catalogue
from meshtrace.collector.component import Kind

TOOL = Path(__file__).resolve().parents[2] / "tools" / "collector_catalogue.py"


def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("collector_catalogue", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return ([node["ref"]] if "ref" in node else []) + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_every_reference_in_the_catalogue_resolves() -> None:
    data = catalogue()
    refs = _refs(data.components) + _refs(data.defs)
    assert refs and all(ref in data.defs for ref in refs)


def test_every_upstream_component_meshtrace_runs_is_catalogued() -> None:
    # meshtrace's own (the trace store, the query API) are not upstream's.
    own = {(Kind.EXPORTER, "store"), (Kind.EXTENSION, "query")}
    for kind, table in registry.TABLES.items():
        for type_ in table:
            if (kind, type_) not in own:
                assert catalogue().lookup(kind.section, type_).entry is not None, (kind, type_)


GO = """
package demo // import "go.opentelemetry.io/collector/demo"

import (
	"time"

	"go.opentelemetry.io/collector/config/configoptional"
)

// Mode is how it runs.
type Mode string

const (
	ModeFast Mode = "fast"
	ModeSlow Mode = "slow"
)

type Level int32

func (l *Level) UnmarshalText(text []byte) error { return nil }

type Inner struct {
	Depth int `mapstructure:"depth"`
}

type Shared struct {
	Name string `mapstructure:"name"` // a trailing comment
}

type Config struct {
	Shared  `mapstructure:",squash"`
	Wait    time.Duration                   `mapstructure:"wait"`
	Mode    Mode                            `mapstructure:"mode"`
	Level   Level                           `mapstructure:"level,omitempty"`
	Inner   configoptional.Optional[Inner]  `mapstructure:"inner"`
	Tags    map[string][]string             `mapstructure:"tags"`
	Skipped string                          `mapstructure:"-"`
	hidden  bool
	_       struct{}
}
"""


def test_the_builder_reads_a_config_struct() -> None:
    tool = _tool()

    class Sources:
        def go_files(self, path: str) -> list[str]:
            return [GO] if path == "go.opentelemetry.io/collector/demo" else []

    builder = tool.Builder(Sources())
    node = builder.resolve(builder.component("go.opentelemetry.io/collector/demo"))
    assert node["t"] == "struct"
    fields = node["fields"]
    assert set(fields) == {"name", "wait", "mode", "level", "inner", "tags"}
    assert fields["wait"] == {"t": "duration"}
    assert fields["mode"] == {"t": "string", "enum": ["fast", "slow"]}
    assert fields["level"] == {"t": "string"}  # parses its own text
    assert fields["inner"]["t"] == "optional"
    assert builder.resolve(fields["inner"])["fields"] == {"depth": {"t": "int"}}
    assert fields["tags"] == {"t": "map", "values": {"t": "list", "items": {"t": "string"}}}


def test_underscores_are_forgiven_only_where_the_name_is_unverified() -> None:
    # health_check's name comes from its metadata.yaml: `healthcheck` is a typo upstream refuses.
    problems = catalogue().check_component("extensions", "healthcheck", {}, "extensions.healthcheck")[1]
    assert [p.code for p in problems] == ["COL001"] and "did you mean 'health_check'" in problems[0].message
    # k8scluster is named from its module path: the snake_case spelling may be the real one.
    assert catalogue().lookup("receivers", "k8s_cluster").entry is not None
