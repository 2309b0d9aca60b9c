"""The small CEL subset Telemetry `tagOverrides` values use, over Envoy's request attributes.

Supported: attribute paths (`request.host`, `upstream_peer.labels['app'].value`), string and
number literals, `string(x)`, `has(x)`, `x == y`, `x != y`, `c ? a : b`, and the seed's retired
Mixer syntax `a | b` (first non-empty), kept so the seed's YAML still works. Expressions compile
once to closures; evaluating never raises (a missing attribute is "unknown", Istio's value)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

Attributes = Mapping[str, Any]
Expr = Callable[[Attributes], Any]

_TOKEN = re.compile(
    r"""\s*(?:(?P<str>'[^']*'|"[^"]*")|(?P<num>\d+)|(?P<op>==|!=|\|\||&&|[?:|()\[\].])|(?P<name>[A-Za-z_][A-Za-z0-9_]*))"""
)


class CelError(ValueError):
    pass


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise CelError(f"unexpected character at {pos} in {text!r}")
        kind = m.lastgroup
        assert kind is not None
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


_MISSING = object()


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.i = 0
        self.text = text

    def peek(self) -> str | None:
        return self.toks[self.i][1] if self.i < len(self.toks) else None

    def take(self, expected: str | None = None) -> tuple[str, str]:
        if self.i >= len(self.toks):
            raise CelError(f"unexpected end of {self.text!r}")
        tok = self.toks[self.i]
        if expected is not None and tok[1] != expected:
            raise CelError(f"expected {expected!r}, got {tok[1]!r} in {self.text!r}")
        self.i += 1
        return tok

    def parse(self) -> Expr:
        expr = self.ternary()
        if self.i != len(self.toks):
            raise CelError(f"unexpected {self.toks[self.i][1]!r} in {self.text!r}")
        return expr

    def ternary(self) -> Expr:
        cond = self.alternative()
        if self.peek() != "?":
            return cond
        self.take("?")
        yes = self.ternary()
        self.take(":")
        no = self.ternary()
        return lambda a: yes(a) if _truthy(cond(a)) else no(a)

    def alternative(self) -> Expr:
        left = self.compare()
        while self.peek() == "|":
            self.take("|")
            right = self.compare()
            left = _first_non_empty(left, right)
        return left

    def compare(self) -> Expr:
        left = self.primary()
        op = self.peek()
        if op in ("==", "!="):
            self.take()
            right = self.primary()
            if op == "==":
                return lambda a: _value(left(a)) == _value(right(a))
            return lambda a: _value(left(a)) != _value(right(a))
        return left

    def primary(self) -> Expr:
        kind, tok = self.take()
        if kind == "str":
            s = tok[1:-1]
            return lambda a: s
        if kind == "num":
            n = int(tok)
            return lambda a: n
        if tok == "(":
            inner = self.ternary()
            self.take(")")
            return inner
        if kind != "name":
            raise CelError(f"unexpected {tok!r} in {self.text!r}")
        if tok in ("true", "false"):
            b = tok == "true"
            return lambda a: b
        if tok in ("string", "has") and self.peek() == "(":
            self.take("(")
            if tok == "has":
                path = self.path(self.take()[1])
                self.take(")")
                return lambda a: _lookup(a, path) is not _MISSING
            inner = self.ternary()
            self.take(")")
            return lambda a: str(_value(inner(a)))
        path = self.path(tok)
        return lambda a: _lookup(a, path)

    def path(self, first: str) -> tuple[str, ...]:
        parts = [first]
        while self.peek() in (".", "["):
            if self.take()[1] == ".":
                parts.append(self.take()[1])
            else:
                kind, key = self.take()
                if kind != "str":
                    raise CelError(f"map keys must be string literals in {self.text!r}")
                parts.append(key[1:-1])
                self.take("]")
        return tuple(parts)


def _lookup(attrs: Attributes, path: tuple[str, ...]) -> Any:
    """Attributes are flat: "request.host", "upstream_peer.labels" (a dict). `.value` after a
    map lookup is CEL's way of unwrapping Istio's peer metadata; it is the value itself here."""
    if path[-1] == "value" and len(path) > 2:
        path = path[:-1]
    for split in range(len(path), 0, -1):
        key = ".".join(path[:split])
        if key in attrs:
            value = attrs[key]
            for part in path[split:]:
                if not isinstance(value, Mapping) or part not in value:
                    return _MISSING
                value = value[part]
            return value
    return _MISSING


def _value(v: Any) -> Any:
    return "unknown" if v is _MISSING or v is None else v


def _truthy(v: Any) -> bool:
    return v is not _MISSING and bool(v)


def _first_non_empty(left: Expr, right: Expr) -> Expr:
    def pick(a: Attributes) -> Any:
        v = left(a)
        return v if v is not _MISSING and v not in ("", None) else right(a)

    return pick


def _compile(text: str) -> Expr:
    mixer = text.split("|")
    if len(mixer) > 1 and "||" not in text and re.fullmatch(r"\s*[A-Za-z_][\w-]*\s*", mixer[-1]):
        # a bare word after the Mixer `|` (`x | unknown`) is the literal default, as Mixer read it
        default = mixer[-1].strip()
        return _first_non_empty(_compile("|".join(mixer[:-1])), lambda a: default)
    return _Parser(text).parse()


@lru_cache(maxsize=256)
def compile_expr(text: str) -> Expr:
    """A callable evaluating `text` over attributes; raises CelError for what it cannot parse."""
    raw = _compile(text)
    return lambda a: _value(raw(a))


def evaluate(text: str, attrs: Attributes) -> str:
    return str(compile_expr(text)(attrs))
