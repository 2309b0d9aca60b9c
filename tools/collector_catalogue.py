"""Build meshtrace/collector/catalogue.json: the upstream OpenTelemetry Collector's components and
their config fields at one pinned release, read from upstream's own sources.

    python tools/collector_catalogue.py --core CORE_GIT_DIR --releases RELEASES_GIT_DIR \
        [--contrib CONTRIB_CHECKOUT] [--version v0.156.0]

- CORE_GIT_DIR: a git clone of github.com/open-telemetry/opentelemetry-collector (bare is fine);
  files are read with `git show <version>:<path>`.
- RELEASES_GIT_DIR: a git clone of github.com/open-telemetry/opentelemetry-collector-releases;
  `distributions/otelcol-contrib/manifest.yaml` at the same tag names every component module of
  the contrib image.
- CONTRIB_CHECKOUT (optional): a checkout of opentelemetry-collector-contrib at the same tag.
  Without it, contrib components are catalogued by name only (their fields are not checked),
  except the few described in tools/collector_catalogue_contrib.yaml.

The fields of a component are its `Config` struct's `mapstructure` tags, followed through
embedded (`,squash`) structs, pointers, `configoptional.Optional[T]`, slices and maps, across
packages by their import paths. A named string type with constants becomes an enum; a type with
its own `UnmarshalText` is read as a plain scalar (it parses its own text). Anything the reader
cannot follow (a type from a package it has no source for, a generic parameter) is left open
("any"), so the catalogue never refuses a key upstream accepts.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CORE_MODULE = "go.opentelemetry.io/collector/"
CONTRIB_MODULE = "github.com/open-telemetry/opentelemetry-collector-contrib/"
KINDS = {
    "receiver": "receivers",
    "processor": "processors",
    "exporter": "exporters",
    "extension": "extensions",
    "connector": "connectors",
}
HERE = Path(__file__).resolve().parent
OUTPUT = HERE.parent / "meshtrace" / "collector" / "catalogue.json"
CONTRIB_FACTS = HERE / "collector_catalogue_contrib.yaml"

BASIC = {
    "string": "string",
    "bool": "bool",
    "float32": "float",
    "float64": "float",
    "any": "any",
    "interface{}": "any",
    "byte": "int",
    "rune": "int",
}
BASIC |= {f"{s}int{n}": "int" for s in ("", "u") for n in ("", "8", "16", "32", "64")}
# Types whose YAML form is known without their source.
KNOWN_EXTERNAL = {
    "time.Duration": {"t": "duration"},
    "time.Time": {"t": "string"},
    "regexp.Regexp": {"t": "string"},
}

_TYPE_START = re.compile(r"^type\s+(\w+)(\[[^\]]*\])?\s+(.*)$")
_FIELD = re.compile(r"^(?:(\w+)\s+)?(\S.*?)\s*(`[^`]*`)?$")
_TAG = re.compile(r'mapstructure:"([^"]*)"')
_CONST = re.compile(r'^\s*\w+\s+(\w+)\s*=\s*"([^"]*)"')
_UNMARSHAL_TEXT = re.compile(r"^func\s+\(\w+\s+\*?(\w+)\)\s+UnmarshalText\(")
_UNMARSHAL = re.compile(r"^func\s+\(\w+\s+\*?(\w+)\)\s+Unmarshal\(")
_PACKAGE_IMPORT = re.compile(r'^\s*(?:(\w+|_|\.)\s+)?"([^"]+)"')


@dataclass
class Package:
    path: str
    name: str
    types: dict[str, str] = field(default_factory=dict)  # name -> type expression or "struct{...}" body
    imports: dict[str, str] = field(default_factory=dict)  # local name -> import path
    enums: dict[str, list[str]] = field(default_factory=dict)
    text_types: set[str] = field(default_factory=set)
    self_decoding: set[str] = field(default_factory=set)  # types with their own Unmarshal(conf)


class Sources:
    """Go files by import path: core from git at a tag, contrib from a checkout (optional)."""

    def __init__(self, core: Path, version: str, contrib: Path | None) -> None:
        self.core, self.version, self.contrib = core, version, contrib
        self._tree: list[str] | None = None

    def core_files(self) -> list[str]:
        if self._tree is None:
            out = subprocess.run(
                ["git", "-C", str(self.core), "ls-tree", "-r", "--name-only", self.version],
                check=True,
                capture_output=True,
                text=True,
            )
            self._tree = out.stdout.splitlines()
        return self._tree

    def read_core(self, path: str) -> str | None:
        out = subprocess.run(
            ["git", "-C", str(self.core), "show", f"{self.version}:{path}"],
            capture_output=True,
            text=True,
        )
        return out.stdout if out.returncode == 0 else None

    def go_files(self, import_path: str) -> list[str]:
        """The non-test Go sources of a package, or [] when there is no source for it."""
        if import_path.startswith(CORE_MODULE):
            folder = import_path[len(CORE_MODULE) :].rstrip("/") + "/"
            names = [
                p
                for p in self.core_files()
                if p.startswith(folder) and "/" not in p[len(folder) :] and _is_source(p)
            ]
            return [text for p in names if (text := self.read_core(p)) is not None]
        if import_path.startswith(CONTRIB_MODULE) and self.contrib is not None:
            source = self.contrib / import_path[len(CONTRIB_MODULE) :]
            if source.is_dir():
                return [p.read_text() for p in sorted(source.glob("*.go")) if _is_source(p.name)]
        return []

    def metadata(self, import_path: str) -> dict[str, Any] | None:
        if import_path.startswith(CORE_MODULE):
            text = self.read_core(import_path[len(CORE_MODULE) :] + "/metadata.yaml")
        elif self.contrib is not None:
            path = self.contrib / import_path[len(CONTRIB_MODULE) :] / "metadata.yaml"
            text = path.read_text() if path.is_file() else None
        else:
            text = None
        return yaml.safe_load(text) if text else None


def _is_source(path: str) -> bool:
    return path.endswith(".go") and not path.endswith("_test.go") and "generated_" not in path


def _strip_comment(line: str) -> str:
    # Tags hold no "//"; a comment starts at the first "//" outside a string or tag.
    in_quote = None
    for i, ch in enumerate(line):
        if in_quote:
            if ch == in_quote:
                in_quote = None
        elif ch in '`"':
            in_quote = ch
        elif line.startswith("//", i):
            return line[:i]
    return line


def parse_package(path: str, files: list[str]) -> Package:
    pkg = Package(path, path.rstrip("/").rsplit("/", 1)[-1])
    for text in files:
        lines = [_strip_comment(line).rstrip() for line in text.splitlines()]
        i = 0
        in_import = in_const = False
        while i < len(lines):
            line = lines[i]
            if line.startswith("package "):
                pkg.name = line.split()[1]
            elif line.startswith("import ("):
                in_import = True
            elif in_import:
                if line.startswith(")"):
                    in_import = False
                elif (m := _PACKAGE_IMPORT.match(line)) is not None:
                    _add_import(pkg, m[1], m[2])
            elif line.startswith("import ") and (m := _PACKAGE_IMPORT.match(line[7:])) is not None:
                _add_import(pkg, m[1], m[2])
            elif line.startswith("const ("):
                in_const = True
            elif in_const:
                if line.startswith(")"):
                    in_const = False
                elif (m := _CONST.match(line)) is not None:
                    pkg.enums.setdefault(m[1], []).append(m[2])
            elif (m := _UNMARSHAL_TEXT.match(line)) is not None:
                pkg.text_types.add(m[1])
            elif (m := _UNMARSHAL.match(line)) is not None:
                pkg.self_decoding.add(m[1])
            elif (m := _TYPE_START.match(line)) is not None:
                name, rest = m[1], m[3].strip()
                if rest.startswith("struct") and rest.endswith("{"):
                    body, depth = [], 1
                    i += 1
                    while i < len(lines) and depth > 0:
                        depth += lines[i].count("{") - lines[i].count("}")
                        if depth > 0:
                            body.append(lines[i])
                        i += 1
                    pkg.types[name] = "struct{\n" + "\n".join(body) + "\n}"
                    continue
                pkg.types[name] = rest.removeprefix("= ").strip()
            i += 1
    return pkg


def _add_import(pkg: Package, alias: str | None, path: str) -> None:
    if alias in ("_", "."):
        return
    last = path.rsplit("/", 1)[-1]
    if re.fullmatch(r"v\d+", last):
        last = path.rsplit("/", 2)[-2]
    pkg.imports[alias or last] = path


class Builder:
    def __init__(self, sources: Sources) -> None:
        self.sources = sources
        self.packages: dict[str, Package] = {}
        self.defs: dict[str, Any] = {}

    def package(self, path: str) -> Package | None:
        if path not in self.packages:
            files = self.sources.go_files(path)
            self.packages[path] = parse_package(path, files) if files else Package(path, "")
        pkg = self.packages[path]
        return pkg if pkg.types or pkg.enums else None

    def component(self, import_path: str) -> dict[str, Any] | None:
        """The schema of a component's `Config`, or None without its source."""
        pkg = self.package(import_path)
        if pkg is None or "Config" not in pkg.types:
            return None
        return self.named(pkg, "Config")

    def named(self, pkg: Package, name: str) -> dict[str, Any]:
        ref = f"{pkg.path}.{name}"
        if ref in self.defs:
            return {"ref": ref}
        if name in pkg.text_types:
            return {"t": "string"}
        expr = pkg.types.get(name)
        if expr is None:
            return {"t": "any"}
        if not expr.startswith("struct{"):
            if name in pkg.self_decoding:
                # A non-struct type decoding itself (configopaque.MapList takes a list or a map).
                return {"t": "any"}
            node = self.type_expr(pkg, expr)
            if node.get("t") == "string" and len(pkg.enums.get(name, [])) > 1:
                node = {"t": "string", "enum": sorted(set(pkg.enums[name]))}
            return node
        self.defs[ref] = None  # a placeholder: recursive types refer to themselves
        self.defs[ref] = self.struct(pkg, expr)
        return {"ref": ref}

    def struct(self, pkg: Package, body: str) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        open_ = False
        for raw in body.splitlines()[1:-1]:
            line = raw.strip()
            if not line or line.startswith("_ "):
                continue
            m = _FIELD.match(line)
            if m is None:
                continue
            name, type_, tag = m[1], m[2], m[3] or ""
            if type_.startswith("`"):  # an embedded type with a tag: `Config `mapstructure:",squash"``
                name, type_, tag = None, name or "", type_
            tag_match = _TAG.search(tag)
            key, _, options = (tag_match[1] if tag_match else "").partition(",")
            if key == "-" or (name and not name[0].isupper()):
                continue
            node = self.type_expr(pkg, type_)
            if name is None or "squash" in options:
                if not name and tag_match is None and not type_.lstrip("*").split(".")[-1][:1].isupper():
                    continue
                inner = self.resolve(node)
                if inner.get("t") == "struct":
                    fields.update(inner["fields"])
                    open_ = open_ or inner.get("open", False)
                else:
                    open_ = True  # an embedded type the reader cannot see through
                continue
            fields[key or name.lower()] = node
        result: dict[str, Any] = {"t": "struct", "fields": fields}
        if open_:
            result["open"] = True
        return result

    def resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        while "ref" in node or node.get("t") == "optional":
            if node.get("t") == "optional":
                node = node["value"]
                continue
            found = self.defs.get(node["ref"])
            if found is None:
                return {"t": "any"}
            node = found
        return node

    def type_expr(self, pkg: Package, expr: str) -> dict[str, Any]:
        expr = expr.strip()
        if expr.startswith("*"):
            return self.type_expr(pkg, expr[1:])
        if expr.startswith("[]"):
            return {"t": "list", "items": self.type_expr(pkg, expr[2:])}
        if expr.startswith("map["):
            depth, i = 0, 3
            for i in range(3, len(expr)):
                depth += {"[": 1, "]": -1}.get(expr[i], 0)
                if depth == 0:
                    break
            return {"t": "map", "values": self.type_expr(pkg, expr[i + 1 :])}
        if expr.startswith("struct{"):
            return self.struct(pkg, expr)
        generic = re.fullmatch(r"([\w.]+)\[(.+)\]", expr)
        if generic is not None:
            # configoptional.Optional[T] (and similar wrappers): the YAML is T's.
            if generic[1].endswith("Optional"):
                return {"t": "optional", "value": self.type_expr(pkg, generic[2])}
            return {"t": "any"}
        if expr in BASIC:
            return {"t": BASIC[expr]}
        if expr in KNOWN_EXTERNAL:
            return dict(KNOWN_EXTERNAL[expr])
        if "." in expr:
            alias, _, name = expr.partition(".")
            path = pkg.imports.get(alias)
            other = self.package(path) if path else None
            return self.named(other, name) if other is not None else {"t": "any"}
        if expr in pkg.types or expr in pkg.text_types:
            return self.named(pkg, expr)
        return {"t": "any"}  # a generic parameter or something the reader does not follow


def contrib_modules(releases: Path, version: str) -> list[tuple[str, str]]:
    out = subprocess.run(
        [
            "git",
            "-C",
            str(releases),
            "show",
            f"{version}:distributions/otelcol-contrib/manifest.yaml",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    manifest = yaml.safe_load(out.stdout)
    modules = []
    for kind in KINDS.values():
        for entry in manifest.get(kind) or []:
            modules.append((kind, entry["gomod"].split()[0]))
    return modules


def type_from_module(kind_section: str, module: str, facts: dict[str, Any]) -> str:
    """A component's type name: metadata.yaml's `type` when known, else the folder name without
    its kind suffix (upstream's naming convention)."""
    override = facts.get("types", {}).get(module)
    if override:
        return str(override)
    folder = module.rstrip("/").rsplit("/", 1)[-1]
    return folder.removesuffix(kind_section[:-1])


def build(args: argparse.Namespace) -> dict[str, Any]:
    sources = Sources(args.core, args.version, args.contrib)
    builder = Builder(sources)
    facts = yaml.safe_load(CONTRIB_FACTS.read_text())
    components: dict[str, dict[str, Any]] = {kind: {} for kind in KINDS.values()}
    for section, module in contrib_modules(args.releases, args.version):
        metadata = sources.metadata(module)
        type_ = str(metadata["type"]) if metadata else type_from_module(section, module, facts)
        entry: dict[str, Any] = {
            "module": module,
            "distribution": "core" if module.startswith(CORE_MODULE) else "contrib",
        }
        if not metadata and module not in facts.get("types", {}):
            # Named by upstream's folder convention, unverified: it may be spelt in snake_case.
            entry["type_from"] = "module path"
        if metadata and metadata.get("deprecated_type"):
            entry["deprecated_type"] = str(metadata["deprecated_type"])
        if metadata:
            stability = (metadata.get("status") or {}).get("stability") or {}
            entry["stability"] = {str(level): list(signals) for level, signals in stability.items()}
        config = builder.component(module)
        if config is None and type_ in facts.get("fields", {}).get(section, {}):
            config = facts["fields"][section][type_]
            entry["fields_from"] = "tools/collector_catalogue_contrib.yaml (upstream README)"
        if config is not None:
            entry["config"] = config
        components[section][type_] = entry
    return {
        "version": args.version,
        "image": f"otel/opentelemetry-collector-contrib:{args.version.lstrip('v')}",
        "sources": {
            "core": f"github.com/open-telemetry/opentelemetry-collector@{args.version}",
            "components": f"github.com/open-telemetry/opentelemetry-collector-releases@{args.version}"
            ":distributions/otelcol-contrib/manifest.yaml",
            "contrib": (
                f"github.com/open-telemetry/opentelemetry-collector-contrib@{args.version}"
                if args.contrib
                else "names only (no contrib checkout given), plus tools/collector_catalogue_contrib.yaml"
            ),
        },
        "components": {k: dict(sorted(v.items())) for k, v in components.items()},
        "removed": facts["removed"],
        "removed_fields": facts["removed_fields"],
        "aliases": facts["aliases"],
        "defs": dict(sorted(builder.defs.items())),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--core", type=Path, required=True)
    parser.add_argument("--releases", type=Path, required=True)
    parser.add_argument("--contrib", type=Path)
    parser.add_argument("--version", default="v0.156.0")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    catalogue = build(args)
    args.output.write_text(json.dumps(catalogue, indent=1, sort_keys=False) + "\n")
    counts = ", ".join(f"{len(v)} {k}" for k, v in catalogue["components"].items())
    print(f"{args.output}: {catalogue['version']}: {counts}, {len(catalogue['defs'])} types", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
