"""Syntax tree -> closures over an attribute mapping, compiled once per config.

Evaluation follows CEL: an absent attribute, a wrong type or a failed function is an error
*value* (`ERROR`), `&&`/`||` absorb an error when the other side decides, and the label printed
for a value is Envoy's (`true`/`false`, numbers in decimal, `NULL`, `list value`); an error prints
`unknown`, the value Istio's stats filter records when an expression fails.

Attributes are a flat mapping ("request.host" -> value, "upstream_peer.labels" -> dict): a path
`a.b.c` reads the longest key present and walks the rest through nested mappings.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

from meshtrace.cel.parser import (
    Binary,
    Call,
    CelSyntaxError,
    Cond,
    Has,
    Ident,
    Index,
    ListLit,
    Lit,
    Node,
    Select,
    Unary,
)

Attributes = Mapping[str, Any]
Expr = Callable[[Attributes], Any]
UNKNOWN = "unknown"


class _Error:
    """CEL's error value; one instance, since labels only need to know evaluation failed."""

    def __repr__(self) -> str:
        return "<error>"


ERROR: Any = _Error()
_ABSENT = object()
_INT64 = (-(2**63), 2**63 - 1)
_KEYS = (str, int, bool)  # CEL's map key types (and hashable)
_DECIMAL = re.compile(r"[-+]?[0-9]+")


def _is_num(v: Any) -> bool:
    return type(v) in (int, float)


def label(v: Any) -> str:
    """A value as the metric label Envoy prints for it."""
    t = type(v)
    if t is str:
        return str(v)
    if t is bool:
        return "true" if v else "false"
    if t is int:
        return str(v)
    if t is float:
        return format(v, "g")
    if v is None:
        return "NULL"
    if t is list:
        return "list value"
    if isinstance(v, Mapping):
        return "map value"
    return UNKNOWN


def compile_node(node: Node) -> Expr:
    """`node` as a callable; the callable returns a value or ERROR and never raises."""
    if isinstance(node, Lit):
        value = node.value
        return lambda a: value
    path = _path(node)
    if path is not None:
        return _reader(path)
    if isinstance(node, Select):
        return _select(compile_node(node.operand), node.field)
    if isinstance(node, Index):
        key = node.key if isinstance(node.key, Lit) else None
        return _index(compile_node(node.operand), compile_node(node.key), key)
    if isinstance(node, Has):
        return _has(node.target)
    if isinstance(node, ListLit):
        items = [compile_node(i) for i in node.items]
        return lambda a: _list([f(a) for f in items])
    if isinstance(node, Unary):
        return _unary(node.op, compile_node(node.operand))
    if isinstance(node, Binary):
        return _binary(node.op, compile_node(node.left), compile_node(node.right))
    if isinstance(node, Cond):
        return _cond(compile_node(node.test), compile_node(node.yes), compile_node(node.no))
    assert isinstance(node, Call)
    return _call(node)


# -- attributes -------------------------------------------------------------------------------


def _path(node: Node) -> tuple[str, ...] | None:
    """`a.b.c` as ("a", "b", "c"); None for anything that is not a plain dotted name."""
    parts: list[str] = []
    while isinstance(node, Select):
        parts.append(node.field)
        node = node.operand
    if not isinstance(node, Ident):
        return None
    parts.append(node.name)
    return tuple(reversed(parts))


def _lookup(attrs: Attributes, path: tuple[str, ...]) -> Any:
    for split in range(len(path), 0, -1):
        value = attrs.get(".".join(path[:split]), _ABSENT)
        if value is _ABSENT:
            continue
        for part in path[split:]:
            value = _field(value, part)
        return value
    return ERROR


def _field(value: Any, name: str) -> Any:
    if type(value) is dict or isinstance(value, Mapping):  # the exact-type test skips the ABC check
        return value.get(name, ERROR)
    if name == "value" and type(value) is str:
        # Istio's peer metadata labels are wrapped values read with `.value`
        # (`upstream_peer.labels['app'].value`); here the label is the string itself.
        return value
    return ERROR


def _reader(path: tuple[str, ...]) -> Expr:
    full = ".".join(path)

    def read(a: Attributes) -> Any:
        v = a.get(full, _ABSENT)
        if v is _ABSENT:
            v = _lookup(a, path)
        return ERROR if v is None else v

    return read


def _select(operand: Expr, name: str) -> Expr:
    return lambda a: _field(operand(a), name)


def _index(operand: Expr, key: Expr, const: Lit | None) -> Expr:
    if const is not None and type(const.value) is str:
        k = const.value  # the common `request.headers['x']`: no key closure per evaluation

        def entry(a: Attributes) -> Any:
            container = operand(a)
            if type(container) is dict or isinstance(container, Mapping):
                return container.get(k, ERROR)
            return ERROR

        return entry

    def index(a: Attributes) -> Any:
        container, k = operand(a), key(a)
        if isinstance(container, Mapping):
            return container.get(k, ERROR) if type(k) in _KEYS else ERROR
        if type(container) is list and type(k) is int and -1 < k < len(container):
            return container[k]
        return ERROR

    return index


def _has(target: Select) -> Expr:
    operand = compile_node(target.operand)
    path = _path(target)
    full = ".".join(path) if path is not None else None
    name = target.field

    def has(a: Attributes) -> Any:
        if full is not None and a.get(full) is not None:
            return True
        container = operand(a)
        if isinstance(container, Mapping):
            return container.get(name) is not None
        return False if container is ERROR else ERROR

    return has


def _list(items: list[Any]) -> Any:
    return ERROR if any(i is ERROR for i in items) else items


# -- operators --------------------------------------------------------------------------------


def _unary(op: str, operand: Expr) -> Expr:
    if op == "!":
        return lambda a: _not(operand(a))
    return lambda a: _negate(operand(a))


def _not(v: Any) -> Any:
    return (not v) if type(v) is bool else ERROR


def _negate(v: Any) -> Any:
    return _int_range(-v) if _is_num(v) else ERROR


def _int_range(v: Any) -> Any:
    if type(v) is int and not _INT64[0] <= v <= _INT64[1]:
        return ERROR  # CEL: integer overflow is an error
    return v


def _and(left: Expr, right: Expr) -> Expr:
    def both(a: Attributes) -> Any:
        lv = left(a)
        if lv is False:
            return False
        rv = right(a)
        if rv is False:
            return False
        return True if lv is True and rv is True else ERROR

    return both


def _or(left: Expr, right: Expr) -> Expr:
    def either(a: Attributes) -> Any:
        lv = left(a)
        if lv is True:
            return True
        rv = right(a)
        if rv is True:
            return True
        return False if lv is False and rv is False else ERROR

    return either


def _equal(lv: Any, rv: Any) -> Any:
    if lv is ERROR or rv is ERROR:
        return ERROR
    if (type(lv) is bool) != (type(rv) is bool):
        return False  # CEL's heterogeneous equality: true != 1
    return bool(lv == rv)


_ORDER = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


def _ordered(op: str) -> Callable[[Any, Any], Any]:
    compare = _ORDER[op]

    def order(lv: Any, rv: Any) -> Any:
        if (_is_num(lv) and _is_num(rv)) or (type(lv) is type(rv) and type(lv) in (str, bool)):
            return bool(compare(lv, rv))
        return ERROR

    return order


def _add(lv: Any, rv: Any) -> Any:
    if _is_num(lv) and _is_num(rv):
        return _int_range(lv + rv)
    if type(lv) is type(rv) and type(lv) in (str, list):
        return lv + rv
    return ERROR


def _arith(op: str) -> Callable[[Any, Any], Any]:
    def arith(lv: Any, rv: Any) -> Any:
        if not (_is_num(lv) and _is_num(rv)):
            return ERROR
        if op == "-":
            return _int_range(lv - rv)
        if op == "*":
            return _int_range(lv * rv)
        if type(lv) is int and type(rv) is int:
            if rv == 0:
                return ERROR
            q = abs(lv) // abs(rv) * (1 if (lv < 0) == (rv < 0) else -1)  # truncates toward zero
            return _int_range(q) if op == "/" else lv - rv * q
        if op == "%":
            return ERROR  # CEL has no double modulo
        try:
            return lv / rv
        except ZeroDivisionError:
            return float("nan") if lv == 0 or lv != lv else float("inf") if lv > 0 else float("-inf")

    return arith


def _in(lv: Any, rv: Any) -> Any:
    if lv is ERROR:
        return ERROR
    if type(rv) is list:
        return any(_equal(lv, item) is True for item in rv)
    if isinstance(rv, Mapping):
        return type(lv) in _KEYS and lv in rv
    return ERROR


def _binary(op: str, left: Expr, right: Expr) -> Expr:
    if op == "&&":
        return _and(left, right)
    if op == "||":
        return _or(left, right)
    if op in ("==", "!="):
        if op == "==":
            return lambda a: _equal(left(a), right(a))
        return lambda a: _not(_equal(left(a), right(a)))
    fn = _ordered(op) if op in _ORDER else _add if op == "+" else _in if op == "in" else _arith(op)
    return lambda a: fn(left(a), right(a))


def _cond(test: Expr, yes: Expr, no: Expr) -> Expr:
    def cond(a: Attributes) -> Any:
        t = test(a)
        if t is True:
            return yes(a)
        if t is False:
            return no(a)
        return ERROR

    return cond


# -- functions --------------------------------------------------------------------------------


def _size(v: Any) -> Any:
    return len(v) if type(v) in (str, list) or isinstance(v, Mapping) else ERROR


def _string(v: Any) -> Any:
    if type(v) is str:
        return v
    if type(v) in (int, float, bool):
        return label(v)
    return ERROR


def _int(v: Any) -> Any:
    if type(v) is int:
        return v
    if type(v) is float:
        return _int_range(int(v)) if v == v and abs(v) != float("inf") else ERROR
    if type(v) is str:
        return _int_range(int(v)) if _DECIMAL.fullmatch(v) else ERROR
    return ERROR


def _double(v: Any) -> Any:
    if type(v) in (int, float):
        return float(v)
    if type(v) is str:
        try:
            return float(v)
        except ValueError:
            return ERROR
    return ERROR


def _strings(fn: Callable[[str, str], bool]) -> Callable[[Any, Any], Any]:
    return lambda s, x: fn(s, x) if type(s) is str and type(x) is str else ERROR


@lru_cache(maxsize=128)
def _regex(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern)
    except re.error:
        return None


def _matches(s: Any, pattern: Any) -> Any:
    if type(s) is not str or type(pattern) is not str:
        return ERROR
    rx = _regex(pattern)
    return ERROR if rx is None else rx.search(s) is not None  # CEL: RE2 partial match


_UNARY_FNS: dict[str, Callable[[Any], Any]] = {
    "size": _size,
    "string": _string,
    "int": _int,
    "double": _double,
}
_BINARY_FNS: dict[str, Callable[[Any, Any], Any]] = {
    "startsWith": _strings(str.startswith),
    "endsWith": _strings(str.endswith),
    "contains": _strings(str.__contains__),
    "matches": _matches,
}


def _call(node: Call) -> Expr:
    args = [compile_node(n) for n in ((node.target,) if node.target is not None else ()) + node.args]
    if node.function == "matches" and isinstance(node.args[-1], Lit):
        pattern = node.args[-1].value
        if not isinstance(pattern, str) or _regex(pattern) is None:
            raise CelSyntaxError(f"matches(): {pattern!r} is not a regular expression")
    if len(args) == 1:
        fn1, (x,) = _UNARY_FNS[node.function], args
        return lambda a: _guard(fn1, x(a))
    fn2, (x, y) = _BINARY_FNS[node.function], args
    return lambda a: _guard(fn2, x(a), y(a))


def _guard(fn: Callable[..., Any], *values: Any) -> Any:
    return ERROR if any(v is ERROR for v in values) else fn(*values)
