"""The retired Mixer fallback `a | b | "c"` as the CEL Istio evaluates today.

Mixer read `a | b` as "a if it has a value, else b"; CEL has no such operator and Envoy's stats
filter drops a label whose expression does not parse. The CEL form tests presence before reading:
`has(a.b) ? a.b : ...` for a field, `'k' in m ? m['k'] : ...` for a map entry (CEL's `has()`
only takes a field selection), and the last term is read as it is.
"""

from __future__ import annotations

from meshtrace.cel.parser import (
    CelError,
    Ident,
    Index,
    Lit,
    Select,
    operand_text,
    parse,
    quote,
    tokens,
    unparse,
)


def _terms(expr: str) -> list[str] | None:
    """`expr` split at its top-level Mixer `|`; None when it has none."""
    cuts: list[int] = []
    depth = 0
    for kind, tok, pos in tokens(expr, mixer=True):
        if kind != "op":
            continue
        depth += (tok in "([{") - (tok in ")]}")
        if tok == "|" and depth == 0:
            cuts.append(pos)
    if not cuts:
        return None
    bounds = [0, *[p + 1 for p in cuts]]
    ends = [*cuts, len(expr)]
    return [expr[b:e].strip() for b, e in zip(bounds, ends, strict=True)]


def mixer_to_cel(expr: str) -> str | None:
    """The CEL for a Mixer `a | b` expression, or None when `expr` uses no Mixer `|` (or a term
    is not an expression: the CEL check then reports it). A bare word (the seed's `unknown`) is a
    literal, as Mixer-era configs meant it; terms after a literal could never be reached."""
    try:
        terms = _terms(expr)
        if terms is None:
            return None
        nodes = [parse(t) for t in terms]
    except CelError:
        return None
    out = ""
    for text, node in reversed(list(zip(terms, nodes, strict=True))):
        if isinstance(node, Ident):
            out = quote(node.name)
        elif isinstance(node, Lit):
            out = quote(node.value) if isinstance(node.value, str) else text
        elif not out:
            out = text  # the last alternative: read as it is
        else:
            rest = f"({out})" if "?" in out else out
            if isinstance(node, Select):
                out = f"has({text}) ? {text} : {rest}"
            elif isinstance(node, Index):
                out = f"{unparse(node.key)} in {operand_text(node.operand)} ? {text} : {rest}"
            else:
                out = text  # a computed term always has a value (or fails as a whole)
    return out
