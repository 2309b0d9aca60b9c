"""CEL text -> syntax tree, for the subset docs/sidecar.md ("Tag overrides: the CEL subset") lists.

The tokenizer and grammar follow CEL's language definition (precedence, from loosest:
`?:`, `||`, `&&`, relations and `in`, `+ -`, `* / %`, unary `! -`, member access). Text that is
CEL but outside the subset (maps, comprehension macros, bytes/raw/unsigned literals, unknown
functions) raises `CelUnsupported`; text that is not CEL at all raises `CelSyntaxError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Nesting deeper than this is refused: a tag value is a short expression, and the limit keeps the
# recursive parser and the compiled closures far from Python's recursion limit.
MAX_DEPTH = 48


class CelError(ValueError):
    """An expression the sidecar cannot run; `kind` says why ("syntax" or "unsupported")."""

    kind = "syntax"


class CelSyntaxError(CelError):
    kind = "syntax"


class CelUnsupported(CelError):
    kind = "unsupported"


# -- syntax tree ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lit:
    value: str | int | float | bool | None


@dataclass(frozen=True)
class Ident:
    name: str


@dataclass(frozen=True)
class Select:
    operand: Node
    field: str


@dataclass(frozen=True)
class Index:
    operand: Node
    key: Node


@dataclass(frozen=True)
class Has:
    target: Select


@dataclass(frozen=True)
class Call:
    function: str
    target: Node | None  # receiver of a method call (`x.startsWith(y)`)
    args: tuple[Node, ...]


@dataclass(frozen=True)
class ListLit:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Unary:
    op: str
    operand: Node


@dataclass(frozen=True)
class Binary:
    op: str
    left: Node
    right: Node


@dataclass(frozen=True)
class Cond:
    test: Node
    yes: Node
    no: Node


Node = Lit | Ident | Select | Index | Has | Call | ListLit | Unary | Binary | Cond

# function name -> (global arity or None, method arity or None)
FUNCTIONS: dict[str, tuple[int | None, int | None]] = {
    "size": (1, 0),
    "string": (1, None),
    "int": (1, None),
    "double": (1, None),
    "startsWith": (None, 1),
    "endsWith": (None, 1),
    "contains": (None, 1),
    "matches": (2, 1),
}
# CEL's standard functions and macros meshtrace does not evaluate: recognised so that they are
# reported as outside the subset rather than as unknown.
_CEL_OTHER = {
    "all", "exists", "exists_one", "map", "filter", "uint", "bytes", "bool", "type", "dyn",
    "timestamp", "duration", "getFullYear", "getMonth", "getDate", "getDayOfMonth", "getDayOfWeek",
    "getDayOfYear", "getHours", "getMinutes", "getSeconds", "getMilliseconds",
}  # fmt: skip
RESERVED = {
    "as", "break", "const", "continue", "else", "for", "function", "if", "import", "let", "loop",
    "package", "namespace", "return", "var", "void", "while",
}  # fmt: skip

_TOKEN = re.compile(
    r"""(?P<space>\s+)
    |(?P<prefixed>[bBrR]{1,2}(?='|"))
    |(?P<str>'''|\"\"\"|'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*")
    |(?P<num>0[xX][0-9a-fA-F]+[uU]?|(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?[uU]?)
    |(?P<op>==|!=|<=|>=|&&|\|\||[-+*/%!<>?:.,()\[\]{}|])
    |(?P<name>[A-Za-z_][A-Za-z0-9_]*)""",
    re.VERBOSE,
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"', "`": "`", "?": "?", "a": "\a",
            "b": "\b", "f": "\f", "v": "\v"}  # fmt: skip
_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|[0-3][0-7]{2}|.)", re.DOTALL)


def _unescape(body: str) -> str:
    def one(m: re.Match[str]) -> str:
        e = m.group(1)
        if e[0] in "xuU":
            return chr(int(e[1:], 16))
        if e[0].isdigit():
            return chr(int(e, 8))
        if e not in _ESCAPES:
            raise CelSyntaxError(f"invalid escape sequence \\{e}")
        return _ESCAPES[e]

    try:
        return _ESCAPE.sub(one, body)
    except ValueError as exc:  # chr() of a surrogate or out-of-range code point
        if isinstance(exc, CelError):
            raise
        raise CelSyntaxError(f"invalid escape sequence in {body!r}") from exc


Token = tuple[str, str, int]  # kind, text, offset


def tokens(text: str, mixer: bool = False) -> list[Token]:
    """`text` as tokens; `mixer` lets the retired Mixer `|` through (for `mixer_to_cel`)."""
    out: list[Token] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise CelSyntaxError(f"unexpected character {text[pos]!r} at {pos}")
        kind = m.lastgroup
        assert kind is not None
        tok = m.group(kind)
        if kind == "prefixed":
            raise CelUnsupported(f"bytes and raw string literals ({tok}'...') are outside the subset")
        if kind == "str" and tok in ("'''", '"""'):
            raise CelUnsupported("triple-quoted strings are outside the subset")
        if tok == "|" and not mixer:
            raise CelSyntaxError(f"'|' at {pos} is not CEL (the retired Mixer fallback); use has(a) ? a : b")
        if kind != "space":
            out.append((kind, tok, pos))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = tokens(text)
        self.i = 0
        self.depth = 0

    def peek(self) -> str | None:
        return self.toks[self.i][1] if self.i < len(self.toks) else None

    def take(self, expected: str | None = None) -> Token:
        if self.i >= len(self.toks):
            raise CelSyntaxError(
                "unexpected end of expression" + (f", expected {expected!r}" if expected else "")
            )
        tok = self.toks[self.i]
        if expected is not None and tok[1] != expected:
            raise CelSyntaxError(f"expected {expected!r} at {tok[2]}, got {tok[1]!r}")
        self.i += 1
        return tok

    def parse(self) -> Node:
        if not self.toks:
            raise CelSyntaxError("empty expression")
        node = self.expr()
        if self.i != len(self.toks):
            _, tok, pos = self.toks[self.i]
            raise CelSyntaxError(f"unexpected {tok!r} at {pos}")
        return node

    def expr(self) -> Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise CelUnsupported(f"nested deeper than {MAX_DEPTH} levels")
        test = self.binary(0)
        if self.peek() == "?":
            self.take()
            yes = self.binary(0)
            self.take(":")
            test = Cond(test, yes, self.expr())
        self.depth -= 1
        return test

    _LEVELS: tuple[tuple[str, ...], ...] = (
        ("||",),
        ("&&",),
        ("==", "!=", "<", "<=", ">", ">=", "in"),
        ("+", "-"),
        ("*", "/", "%"),
    )

    def binary(self, level: int) -> Node:
        if level == len(self._LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        while self.peek() in self._LEVELS[level]:
            op = self.take()[1]
            left = Binary(op, left, self.binary(level + 1))
        return left

    def unary(self) -> Node:
        op = self.peek()
        if op in ("!", "-") and self.toks[self.i][0] == "op":
            self.take()
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise CelUnsupported(f"nested deeper than {MAX_DEPTH} levels")
            inner = self.unary()
            self.depth -= 1
            if op == "-" and isinstance(inner, Lit) and type(inner.value) in (int, float):
                assert isinstance(inner.value, (int, float))
                return Lit(-inner.value)
            return Unary(op, inner)
        return self.member()

    def member(self) -> Node:
        node = self.primary()
        while self.peek() in (".", "["):
            if self.take()[1] == ".":
                kind, name, pos = self.take()
                if kind != "name":
                    raise CelSyntaxError(f"expected a field name after '.' at {pos}, got {name!r}")
                node = self.call(name, node) if self.peek() == "(" else Select(node, name)
            else:
                node = Index(node, self.expr())
                self.take("]")
        return node

    def args(self) -> tuple[Node, ...]:
        self.take("(")
        out: list[Node] = []
        while self.peek() != ")":
            out.append(self.expr())
            if self.peek() != ")":
                self.take(",")
        self.take(")")
        return tuple(out)

    def call(self, name: str, target: Node | None) -> Node:
        args = self.args()
        if name == "has" and target is None:
            if len(args) != 1 or not isinstance(args[0], Select):
                raise CelSyntaxError(
                    "invalid argument to has(): it takes a field selection such as has(request.host)"
                )
            return Has(args[0])
        arity = FUNCTIONS.get(name)
        if arity is None:
            if name in _CEL_OTHER:
                raise CelUnsupported(f"{name}() is CEL but outside the subset meshtrace's sidecar evaluates")
            raise CelUnsupported(f"unknown function {name}()")
        want = arity[0] if target is None else arity[1]
        if want is None or len(args) != want:
            form = f"{name}(...)" if target is None else f"x.{name}(...)"
            raise CelUnsupported(f"{form} with {len(args)} argument(s) is not a function of the subset")
        return Call(name, target, args)

    def primary(self) -> Node:
        kind, tok, pos = self.take()
        if kind == "str":
            return Lit(_unescape(tok[1:-1]))
        if kind == "num":
            return Lit(_number(tok))
        if tok == "(":
            inner = self.expr()
            self.take(")")
            return inner
        if tok == "[":
            items: list[Node] = []
            while self.peek() != "]":
                items.append(self.expr())
                if self.peek() != "]":
                    self.take(",")
            self.take("]")
            return ListLit(tuple(items))
        if tok == "{":
            raise CelUnsupported("map literals are outside the subset")
        if tok == "." and self.peek() is not None:
            raise CelUnsupported("leading-dot names are outside the subset")
        if kind != "name":
            raise CelSyntaxError(f"unexpected {tok!r} at {pos}")
        if tok in RESERVED:
            raise CelSyntaxError(f"{tok!r} at {pos} is a reserved word")
        if tok in ("true", "false"):
            return Lit(tok == "true")
        if tok == "null":
            return Lit(None)
        if self.peek() == "(":
            return self.call(tok, None)
        return Ident(tok)


def _number(tok: str) -> int | float:
    if tok[-1] in "uU":
        raise CelUnsupported(f"unsigned literal {tok} is outside the subset")
    if tok[:2] in ("0x", "0X"):
        value: int | float = int(tok, 16)
    elif any(c in tok for c in ".eE"):
        value = float(tok)
    else:
        value = int(tok)
    if isinstance(value, int) and not -(2**63) <= value < 2**63:
        raise CelSyntaxError(f"integer literal {tok} out of int64 range")
    return value


def parse(text: str) -> Node:
    """The syntax tree of `text`; raises CelSyntaxError / CelUnsupported."""
    tree = _Parser(text).parse()
    # Chains (`a + b + c`, `a.b.c`) nest without recursing in the parser: bound the tree itself,
    # which compiling, evaluating and printing walk recursively.
    stack: list[tuple[Node, int]] = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise CelUnsupported(f"nested deeper than {MAX_DEPTH} levels")
        stack += [(child, depth + 1) for child in children(node)]
    return tree


def children(node: Node) -> list[Node]:
    if isinstance(node, (Select, Unary)):
        return [node.operand]
    if isinstance(node, Index):
        return [node.operand, node.key]
    if isinstance(node, Has):
        return [node.target]
    if isinstance(node, Call):
        return [*([node.target] if node.target is not None else []), *node.args]
    if isinstance(node, ListLit):
        return list(node.items)
    if isinstance(node, Binary):
        return [node.left, node.right]
    if isinstance(node, Cond):
        return [node.test, node.yes, node.no]
    return []


def roots(node: Node) -> set[str]:
    """The attribute names (first identifiers) an expression reads."""
    out: set[str] = set()
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, Ident):
            out.add(n.name)
        stack += children(n)
    return out


def quote(s: str) -> str:
    """`s` as a CEL string literal."""
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n").replace("\r", "\\r") + "'"


def unparse(node: Node) -> str:
    """CEL text for `node` (compound operands parenthesised), parsing back to the same tree."""
    if isinstance(node, Lit):
        v = node.value
        if isinstance(v, str):
            return quote(v)
        if isinstance(v, bool):
            return "true" if v else "false"
        if v is None:
            return "null"
        return repr(v) if isinstance(v, float) else str(v)
    if isinstance(node, Ident):
        return node.name
    if isinstance(node, Select):
        return f"{_receiver(node.operand)}.{node.field}"
    if isinstance(node, Index):
        return f"{_receiver(node.operand)}[{unparse(node.key)}]"
    if isinstance(node, Has):
        return f"has({unparse(node.target)})"
    if isinstance(node, Call):
        args = ", ".join(unparse(a) for a in node.args)
        prefix = f"{_receiver(node.target)}." if node.target is not None else ""
        return f"{prefix}{node.function}({args})"
    if isinstance(node, ListLit):
        return "[" + ", ".join(unparse(i) for i in node.items) + "]"
    if isinstance(node, Unary):
        return f"{node.op}{operand_text(node.operand)}"
    if isinstance(node, Binary):
        return f"{operand_text(node.left)} {node.op} {operand_text(node.right)}"
    return f"{operand_text(node.test)} ? {operand_text(node.yes)} : {operand_text(node.no)}"


def operand_text(node: Node) -> str:
    """`node` as CEL text to use as an operand (parenthesised when compound)."""
    text = unparse(node)
    if isinstance(node, (Binary, Cond, Unary)) or (isinstance(node, Lit) and text.startswith("-")):
        return f"({text})"
    return text


def _receiver(node: Node) -> str:
    """`node` before `.` or `[`: a number is parenthesised too (`(1).size()`, not `1.size()`)."""
    if isinstance(node, Lit) and type(node.value) in (int, float):
        return f"({unparse(node)})"
    return operand_text(node)
