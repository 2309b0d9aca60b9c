"""The Telemetry expression language: CEL as Istio's metric `tagOverrides` use it.

One module for lint, explain, render and the sidecar (sans-IO, imports no component):
`parse`/`check` say whether an expression is in the subset the sidecar evaluates
(docs/sidecar.md, "Tag overrides: the CEL subset"), `compile_expr` turns it once into a callable
giving the metric label, `mixer_to_cel` rewrites the retired Mixer `a | b`, and
`unknown_attributes` names what Istio's attribute vocabulary does not have.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

from meshtrace.cel.mixer import mixer_to_cel
from meshtrace.cel.parser import CelError, CelSyntaxError, CelUnsupported, parse, roots
from meshtrace.cel.runtime import UNKNOWN, Attributes, compile_node, label

__all__ = [
    "ATTRIBUTE_ROOTS",
    "CelError",
    "CelSyntaxError",
    "CelUnsupported",
    "Label",
    "check",
    "compile_expr",
    "evaluate",
    "mixer_to_cel",
    "parse",
    "unknown_attributes",
]

Label = Callable[[Attributes], str]

# The first names of Envoy's request attributes plus what Istio's stats filter adds
# (`node`, the peers' metadata, filter state under its own name).
ATTRIBUTE_ROOTS = frozenset(
    {
        "request", "response", "source", "destination", "connection", "upstream", "metadata",
        "filter_state", "xds", "node", "upstream_peer", "downstream_peer",
    }
)  # fmt: skip


@lru_cache(maxsize=512)
def compile_expr(text: str) -> Label:
    """A callable giving the label `text` evaluates to; raises CelError (with `.kind`) for what is
    not in the subset. The callable never raises: a failed evaluation is `unknown`, Istio's value."""
    program = compile_node(parse(text))

    def evaluate(attrs: Attributes) -> str:
        try:
            return label(program(attrs))
        except Exception:
            return UNKNOWN

    return evaluate


def check(text: str) -> CelError | None:
    """Why the sidecar would not run `text`, or None when it would."""
    try:
        compile_expr(text)
    except CelError as exc:
        return exc
    return None


def unknown_attributes(text: str) -> list[str]:
    """Names `text` reads that are no attribute in Istio's vocabulary (they never have a value)."""
    try:
        return sorted(roots(parse(text)) - ATTRIBUTE_ROOTS)
    except CelError:
        return []


def evaluate(text: str, attrs: Attributes) -> str:
    return compile_expr(text)(attrs)
