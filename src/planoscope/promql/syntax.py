"""The expression tree: ``parse()`` runs the maintained parser (promql-parser) and turns its AST into
small frozen dataclasses with durations and times in milliseconds, so the engine depends on nothing
of the binding and can rewrite trees (``dataclasses.replace``).

Constructs that parse but that this engine does not evaluate are refused here, by name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import promql_parser as pp

from .storage import Matcher
from .values import METRIC_NAME, ParseError, Unsupported

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DURATION = re.compile(r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$")
_UNITS_MS = (365 * 86_400_000, 7 * 86_400_000, 86_400_000, 3_600_000, 60_000, 1000, 1)
_MS = timedelta(milliseconds=1)


@dataclass(frozen=True)
class At:
    """An ``@`` modifier: a fixed time, or the query's ``start()`` / ``end()``."""

    kind: str  # "at", "start", "end"
    ms: int = 0


@dataclass(frozen=True)
class VectorSelector:
    name: str | None
    matchers: tuple[Matcher, ...]
    offset: int = 0
    at: At | None = None


@dataclass(frozen=True)
class MatrixSelector:
    selector: VectorSelector
    range: int


@dataclass(frozen=True)
class Subquery:
    expr: Expr
    range: int
    step: int  # 0: the engine's default subquery step
    offset: int = 0
    at: At | None = None


@dataclass(frozen=True)
class Call:
    func: str
    args: tuple[Expr, ...]
    type: str  # the function's return type


@dataclass(frozen=True)
class Aggregate:
    op: str
    expr: Expr
    param: Expr | None
    grouping: tuple[str, ...]
    without: bool


@dataclass(frozen=True)
class Binary:
    op: str
    lhs: Expr
    rhs: Expr
    bool: bool = False
    card: str = "one-to-one"  # "many-to-one" (group_left), "one-to-many" (group_right), "many-to-many"
    on: bool = False
    matching: tuple[str, ...] = ()
    include: tuple[str, ...] = ()  # group_left/group_right labels


@dataclass(frozen=True)
class Unary:
    expr: Expr  # always a negation: the parser drops unary plus


@dataclass(frozen=True)
class Paren:
    expr: Expr


@dataclass(frozen=True)
class Number:
    value: float


@dataclass(frozen=True)
class String:
    value: str


Expr = VectorSelector | MatrixSelector | Subquery | Call | Aggregate | Binary | Unary | Paren | Number | String

AGGREGATIONS = {
    "sum",
    "avg",
    "min",
    "max",
    "count",
    "group",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
}
SET_OPS = {"and", "or", "unless"}
COMPARISONS = {"==", "!=", ">", "<", ">=", "<="}

# Prometheus 2.x functions promql-parser (which follows 3.x) no longer knows.
_EXTRA = [
    pp.Function("holt_winters", [pp.ValueType.Matrix, pp.ValueType.Scalar, pp.ValueType.Scalar], pp.ValueType.Vector)
]


def parse_duration(text: object) -> int:
    """A Prometheus duration (``30s``, ``1h30m``, ``0``; units largest first, as Prometheus's
    ``model.ParseDuration``) in milliseconds; ValueError otherwise."""
    s = str(text)
    if s == "0":
        return 0
    m = _DURATION.match(s)
    if not s or not m:
        raise ValueError(f"not a valid duration string: {s!r}")
    return sum(int(g) * unit for g, unit in zip(m.groups(), _UNITS_MS) if g)


def _register_extra() -> None:
    for f in _EXTRA:
        try:
            pp.register_extra_functions([f])
        except ValueError:  # registered already (the registry is process-wide)
            pass


_register_extra()


def parse(query: str) -> Expr:
    """Parse a PromQL expression.

    >>> parse('rate(http_requests_total{job="api"}[5m])').func
    'rate'
    """
    try:
        tree = pp.parse(query)
    except ValueError as e:
        raise ParseError(str(e)) from None
    except BaseException as e:  # the binding panics (a Rust panic) on a few inputs
        if isinstance(e, KeyboardInterrupt | SystemExit):
            raise
        raise ParseError(f"cannot parse {query!r}: {e}") from None
    return _convert(tree)


def _ms(td: timedelta | None) -> int:
    return 0 if td is None else td // _MS


def _at(at) -> At | None:
    if at is None:
        return None
    kind = str(at.type).rsplit(".", 1)[-1]
    if kind == "Start":
        return At("start")
    if kind == "End":
        return At("end")
    try:
        when = at.at
    except BaseException as e:  # the binding panics on times before 1970
        if isinstance(e, KeyboardInterrupt | SystemExit):
            raise
        raise Unsupported("@ modifier times before 1970 are not supported") from None
    return At("at", (when - _EPOCH) // _MS)


_OPS = {"Equal": "=", "NotEqual": "!=", "Re": "=~", "NotRe": "!~"}


def _selector(node) -> VectorSelector:
    if node.matchers.or_matchers:
        raise Unsupported("'or' inside a label matcher set (a Prometheus 3 feature) is not supported")
    matchers = [Matcher(m.name, _OPS[str(m.op).rsplit(".", 1)[-1]], m.value) for m in node.matchers.matchers]
    if node.name is not None and not any(m.name == METRIC_NAME for m in matchers):
        matchers.insert(0, Matcher(METRIC_NAME, "=", node.name))
    return VectorSelector(node.name, tuple(matchers), _ms(node.offset), _at(node.at))


def _convert(node) -> Expr:
    if isinstance(node, pp.VectorSelector):
        return _selector(node)
    if isinstance(node, pp.MatrixSelector):
        return MatrixSelector(_selector(node.vector_selector), _ms(node.range))
    if isinstance(node, pp.SubqueryExpr):
        return Subquery(_convert(node.expr), _ms(node.range), _ms(node.step), _ms(node.offset), _at(node.at))
    if isinstance(node, pp.NumberLiteral):
        return Number(float(node.val))
    if isinstance(node, pp.StringLiteral):
        return String(node.val)
    if isinstance(node, pp.ParenExpr):
        return Paren(_convert(node.expr))
    if isinstance(node, pp.UnaryExpr):
        return Unary(_convert(node.expr))
    if isinstance(node, pp.Call):
        return Call(node.func.name, tuple(_convert(a) for a in node.args), _vtype(node.func.return_type))
    if isinstance(node, pp.AggregateExpr):
        op = str(node.op)
        if op not in AGGREGATIONS:
            raise Unsupported(f"aggregation {op}() is not supported")
        mod = node.modifier
        without = mod is not None and str(mod.type).endswith("Without")
        grouping = tuple(sorted(mod.labels)) if mod is not None else ()
        param = _convert(node.param) if node.param is not None else None
        return Aggregate(op, _convert(node.expr), param, grouping, without)
    if isinstance(node, pp.BinaryExpr):
        return _binary(node)
    raise Unsupported(f"expression {type(node).__name__} is not supported")


_CARD = {"OneToOne": "one-to-one", "ManyToOne": "many-to-one", "OneToMany": "one-to-many", "ManyToMany": "many-to-many"}


def _binary(node) -> Binary:
    op = str(node.op)
    lhs, rhs = _convert(node.lhs), _convert(node.rhs)
    mod = node.modifier
    if mod is None:
        card = "many-to-many" if op in SET_OPS else "one-to-one"
        return Binary(op, lhs, rhs, card=card)
    fill = getattr(mod, "fill_values", None)
    if fill is not None and (fill.lhs is not None or fill.rhs is not None):
        raise Unsupported("fill modifiers in vector matching are not supported")
    card = _CARD[str(mod.card).rsplit(".", 1)[-1]]
    on, matching = False, ()
    if mod.matching is not None:
        on = str(mod.matching.type).endswith("Include")
        matching = tuple(mod.matching.labels)
    return Binary(op, lhs, rhs, bool(mod.return_bool), card, on, matching, tuple(mod.group_labels or ()))


def _vtype(t) -> str:
    return {"Vector": "vector", "Scalar": "scalar", "Matrix": "matrix", "String": "string"}[str(t).rsplit(".", 1)[-1]]


def value_type(e: Expr) -> str:
    """``vector``, ``scalar``, ``matrix`` or ``string``, as Prometheus types the expression."""
    if isinstance(e, VectorSelector | Aggregate):
        return "vector"
    if isinstance(e, MatrixSelector | Subquery):
        return "matrix"
    if isinstance(e, Number):
        return "scalar"
    if isinstance(e, String):
        return "string"
    if isinstance(e, Call):
        return e.type
    if isinstance(e, Paren | Unary):
        return value_type(e.expr)
    return "scalar" if value_type(e.lhs) == "scalar" and value_type(e.rhs) == "scalar" else "vector"


def unwrap(e: Expr) -> Expr:
    while isinstance(e, Paren):
        e = e.expr
    return e


def children(e: Expr) -> tuple[Expr, ...]:
    if isinstance(e, MatrixSelector):
        return (e.selector,)
    if isinstance(e, Subquery | Paren | Unary):
        return (e.expr,)
    if isinstance(e, Call):
        return e.args
    if isinstance(e, Aggregate):
        return (e.expr,) if e.param is None else (e.param, e.expr)
    if isinstance(e, Binary):
        return (e.lhs, e.rhs)
    return ()
