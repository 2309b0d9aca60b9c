"""meshtrace.cel: the tag-override CEL subset shared by lint, explain, render and the sidecar."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
from fuzzing import examples
from hypothesis import given, settings
from hypothesis import strategies as st

import meshtrace.cel
from meshtrace.cel import (
    CelError,
    CelSyntaxError,
    CelUnsupported,
    check,
    compile_expr,
    evaluate,
    mixer_to_cel,
)
from meshtrace.cel.parser import MAX_DEPTH, Node, parse, unparse
from meshtrace.cel.runtime import ERROR, compile_node, label

ATTRS: dict[str, Any] = {
    "request.protocol": "HTTP/1.1",
    "request.host": "backend:8080",
    "request.headers": {"x-tenant": "acme", "user-agent": "curl/8"},
    "response.code": 200,
    "destination.port": 8080,
    "destination.service.name": "backend",
    "destination.workload.name": "backend",
    "upstream_peer.labels": {"app": "backend", "version": "v2"},
}


@pytest.mark.parametrize(
    ("expr", "want"),
    [
        ("request.protocol", "HTTP/1.1"),
        ("string(destination.port)", "8080"),
        ("string(response.code)", "200"),
        ("response.code", "200"),
        ("upstream_peer.labels['app'].value", "backend"),
        ("upstream_peer.labels['app']", "backend"),
        ("has(request.host) ? request.host : 'unknown'", "backend:8080"),
        ("has(request.path) ? request.path : 'none'", "none"),
        ("request.missing", "unknown"),
        ("response.code == 200 ? 'ok' : 'bad'", "ok"),
        ("'literal'", "literal"),
        ('"double \\"quoted\\""', 'double "quoted"'),
        # logical operators, absorbing an error when the other side decides (CEL's commutative && / ||)
        ("response.code == 200 || request.missing", "true"),
        ("request.missing || response.code == 200", "true"),
        ("request.missing && response.code == 500", "false"),
        ("request.missing || false", "unknown"),
        ("!(response.code >= 500)", "true"),
        ("response.code in [200, 204] && request.host.startsWith('back')", "true"),
        ("request.headers['x-tenant']", "acme"),
        ("request.headers['absent']", "unknown"),
        ("'x-tenant' in request.headers ? request.headers['x-tenant'] : 'none'", "acme"),
        ("request.headers['user-agent'].matches('^curl/')", "true"),
        ("request.host.endsWith(':8080') && request.host.contains('end')", "true"),
        ("size(request.host) + request.host.size()", "24"),
        ("int('42') + 1", "43"),
        ("int(' 42')", "unknown"),
        ("double(response.code) / 8.0", "25"),
        ("7 / -2", "-3"),
        ("-7 % 2", "-1"),
        ("1 / 0", "unknown"),
        ("9223372036854775807 + 1", "unknown"),
        ("response.code == '200'", "false"),  # heterogeneous equality: no error, false
        ("response.code < '300'", "unknown"),  # ordering across types: an error
        ("true == 1", "false"),
        ("null", "NULL"),
        ("[1, 2]", "list value"),
        ("request.headers", "map value"),
        ("'a' + string(true) + string(1.5)", "atrue1.5"),
    ],
)
def test_evaluates_like_istio(expr: str, want: str) -> None:
    assert evaluate(expr, ATTRS) == want


@pytest.mark.parametrize(
    "expr",
    ["request.host +", "(a", "a ? b", "a | b", "has(a)", "has(a['x'])", "a.1", "'open", "if", "a @ b", ""],
)
def test_not_cel(expr: str) -> None:
    with pytest.raises(CelSyntaxError):
        compile_expr(expr)


@pytest.mark.parametrize(
    "expr",
    [
        "{'a': 1}",
        "request.headers.exists(h, h == 'x')",
        "[1, 2].map(x, x * 2)",
        "b'bytes'",
        "r'raw'",
        "1u",
        "timestamp('2024-01-01T00:00:00Z')",
        "frobnicate(1)",
        "request.host.startsWith()",
        "(" * (MAX_DEPTH + 1) + "1" + ")" * (MAX_DEPTH + 1),
        " + ".join(["1"] * (MAX_DEPTH + 2)),
    ],
)
def test_cel_outside_the_subset(expr: str) -> None:
    with pytest.raises(CelUnsupported):
        compile_expr(expr)


def test_finding_9_mixer_rewrite_parses_and_keeps_the_fallback() -> None:
    # Before: 'has(request.host) ? request.host : has(destination.service.name) ? destination.service.name : '
    cel = mixer_to_cel("request.host | destination.service.name")
    assert cel == "has(request.host) ? request.host : destination.service.name"
    assert check(cel) is None
    assert evaluate(cel, ATTRS) == "backend:8080"
    assert evaluate(cel, {"destination.service.name": "backend"}) == "backend"


def test_finding_9_or_is_in_the_subset_the_sidecar_runs() -> None:
    # Before: lint passed it and the sidecar's CEL (no || / &&) refused the whole config.
    assert check("a == 'x' || b") is None
    assert evaluate("a == 'x' || b", {}) == "unknown"
    assert evaluate("request.host == 'backend:8080' || b", ATTRS) == "true"
    assert meshtrace.cel.unknown_attributes("a == 'x' || b") == ["a", "b"]


@pytest.mark.parametrize(
    ("mixer", "cel"),
    [
        ("request.host", None),
        ("a || b", None),
        ("'a|b'", None),
        ("a.b | 'x'", "has(a.b) ? a.b : 'x'"),
        ('a.b | c.d | "z"', "has(a.b) ? a.b : (has(c.d) ? c.d : 'z')"),
        ("a.b | unknown | c.d", "has(a.b) ? a.b : 'unknown'"),
        ("request.headers['x-id'] | 'none'", "'x-id' in request.headers ? request.headers['x-id'] : 'none'"),
        ("response.code | 200", "has(response.code) ? response.code : 200"),
        ("a.b |", None),  # not an expression: left for the CEL check to report
    ],
)
def test_mixer_to_cel(mixer: str, cel: str | None) -> None:
    assert mixer_to_cel(mixer) == cel


# -- properties -------------------------------------------------------------------------------

NAMES = st.sampled_from(["request", "response", "source", "destination", "connection", "a", "b", "x1"])
FIELDS = st.sampled_from(["host", "code", "headers", "labels", "name", "value", "service", "path"])
STRINGS = st.text(alphabet="abc-'\"\\|. ", max_size=6)
PATHS = st.builds(lambda n, fs: ".".join([n, *fs]), NAMES, st.lists(FIELDS, min_size=1, max_size=3))
MIXER_TERMS = st.one_of(
    PATHS,
    st.builds(lambda p, k: f"{p}[{k!r}]", PATHS, STRINGS),
    st.builds(lambda s: '"' + s.replace("\\", "").replace('"', "") + '"', STRINGS),
    st.sampled_from(["unknown", "kubernetes", "200", "true"]),
)


@settings(max_examples=examples(400), deadline=None)
@given(st.lists(MIXER_TERMS, min_size=2, max_size=4))
def test_every_mixer_rewrite_parses(terms: list[str]) -> None:
    cel = mixer_to_cel(" | ".join(terms))
    assert cel is not None
    assert check(cel) is None, cel
    assert isinstance(evaluate(cel, ATTRS), str)


def _literal() -> st.SearchStrategy[str]:
    return st.one_of(
        st.integers(-(2**63), 2**63 - 1).map(str),
        st.floats(allow_nan=False, allow_infinity=False).map(repr),
        st.sampled_from(["true", "false", "null"]),
        STRINGS.map(lambda s: "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"),
    )


def _expressions() -> st.SearchStrategy[str]:
    leaves = st.one_of(_literal(), PATHS, st.builds(lambda p: f"has({p})", PATHS))

    def extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        binop = st.sampled_from(["||", "&&", "==", "!=", "<", "<=", ">", ">=", "in", "+", "-", "*", "/", "%"])
        return st.one_of(
            st.builds(lambda a, op, b: f"({a}) {op} ({b})", inner, binop, inner),
            st.builds(lambda op, a: f"{op}({a})", st.sampled_from(["!", "-"]), inner),
            st.builds(lambda c, a, b: f"({c}) ? ({a}) : ({b})", inner, inner, inner),
            st.builds(lambda a, k: f"({a})[{k}]", inner, inner),
            st.builds(lambda f, a: f"{f}({a})", st.sampled_from(["size", "string", "int", "double"]), inner),
            st.builds(
                lambda a, m, b: f"({a}).{m}({b})",
                inner,
                st.sampled_from(["startsWith", "endsWith", "contains", "matches"]),
                inner,
            ),
            st.builds(lambda xs: "[" + ", ".join(xs) + "]", st.lists(inner, max_size=3)),
        )

    return st.recursive(leaves, extend, max_leaves=12)


EXPRESSIONS = _expressions()


ATTR_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(["host", "code", "a", "x"]), inner)
    ),
    max_leaves=6,
)
ATTR_MAPS = st.dictionaries(
    st.sampled_from(
        ["request.host", "request.headers", "response.code", "a", "b.name", "destination.service"]
    ),
    ATTR_VALUES,
)


@settings(max_examples=examples(400), deadline=None)
@given(EXPRESSIONS, ATTR_MAPS)
def test_what_lint_accepts_the_sidecar_compiles_and_evaluation_never_raises(
    text: str, attrs: dict[str, Any]
) -> None:
    try:
        tree = parse(text)
    except CelError:
        assert check(text) is not None  # lint refuses exactly what does not parse
        return
    if check(text) is not None:  # e.g. a literal regex that does not compile
        return
    program = compile_node(tree)  # unguarded: the closures themselves must not raise
    value = program(attrs)
    assert isinstance(label(value), str)
    assert isinstance(compile_expr(text)(attrs), str)


@settings(max_examples=examples(300), deadline=None)
@given(EXPRESSIONS)
def test_unparse_round_trips(text: str) -> None:
    try:
        tree = parse(text)
    except CelError:
        return
    assert parse(unparse(tree)) == tree


@settings(max_examples=examples(500), deadline=None)
@given(st.text(alphabet="ab.()[]'\"|&!=<>?:,{}+-*/% 0123456789u\\", max_size=40))
def test_any_text_is_an_expression_or_a_cel_error(text: str) -> None:
    problem = check(text)
    if problem is None:
        assert isinstance(evaluate(text, ATTRS), str)
    else:
        assert problem.kind in ("syntax", "unsupported")


def test_error_is_a_value_not_an_exception() -> None:
    tree: Node = parse("request.missing.deeper['k'].size()")
    assert compile_node(tree)({}) is ERROR


def test_the_module_imports_no_component() -> None:
    # meshtrace/cel is shared by the control plane, render and the sidecar: stdlib only.
    root = Path(meshtrace.cel.__file__).parent
    for source in root.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("meshtrace"):
                assert node.module.startswith("meshtrace.cel"), (source.name, node.module)
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("meshtrace") for a in node.names), source.name
