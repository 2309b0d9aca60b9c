"""What a tag override costs the sidecar (docs/sidecar.md, "Tag overrides: the CEL subset"):
each typical value compiled once, as a config push does, then evaluated over the attributes of
one request, as `metrics.py` does for each new label set.

    .venv/bin/python bench/tag_overrides.py [--number 100000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import timeit
from typing import Any

from meshtrace.cel import compile_expr

ATTRIBUTES: dict[str, Any] = {
    "request.protocol": "HTTP/1.1",
    "request.host": "backend:8080",
    "response.code": 200,
    "destination.port": 8080,
    "destination.service.name": "backend",
    "destination.workload.name": "backend-v1",
    "upstream_peer.labels": {"app": "backend", "version": "v2"},
}
TYPICAL = (
    "request.host",
    "has(destination.workload.name) ? destination.workload.name : 'unknown'",
    "upstream_peer.labels['app'].value",
    "response.code == 200 ? 'ok' : 'bad'",
    "request.host.startsWith('backend') && response.code < 500",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    for text in TYPICAL:
        compiled = compile_expr(text)
        best = min(timeit.repeat(lambda c=compiled: c(ATTRIBUTES), number=args.number, repeat=args.repeat))
        print(f"{best / args.number * 1e9:7.0f} ns  {text}")


if __name__ == "__main__":
    main()
