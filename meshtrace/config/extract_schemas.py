"""Extract the CRD schemas meshtrace validates against into `meshtrace/config/schemas/`.

Users must not need Istio's CRD bundle, so the schemas ship inside the package as JSON. Rerun
when Istio's API changes:

    python -m meshtrace.config.extract_schemas ../shared/schemas/istio-crds.yaml
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

# CRD kind -> packaged file name.
WANTED = {"Telemetry": "telemetry.json"}
OUT = Path(__file__).resolve().parent / "schemas"


def extract(crds: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """{file name: {"group", "kind", "versions": {version: openAPIV3Schema}}} for WANTED kinds."""
    out: dict[str, dict[str, Any]] = {}
    for crd in crds:
        if not isinstance(crd, dict) or crd.get("kind") != "CustomResourceDefinition":
            continue
        spec = crd.get("spec") or {}
        kind = (spec.get("names") or {}).get("kind")
        if kind not in WANTED:
            continue
        versions = {
            v["name"]: v["schema"]["openAPIV3Schema"] for v in spec.get("versions", []) if "schema" in v
        }
        out[WANTED[kind]] = {"group": spec.get("group"), "kind": kind, "versions": versions}
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m meshtrace.config.extract_schemas ISTIO_CRDS_YAML", file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8") as f:
        found = extract(list(yaml.safe_load_all(f)))
    for name, content in found.items():
        (OUT / name).write_text(json.dumps(content, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        print(f"wrote {OUT / name}: {content['kind']} {sorted(content['versions'])}")
    missing = set(WANTED.values()) - set(found)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
