"""Prometheus's promqltest, ported: reads the ``*.test`` scripts of Prometheus's own suite (``load``,
``clear``, ``eval instant at …``, ``eval range from … to … step …``, ``eval_fail``, ``eval_ordered``)
and runs each ``eval`` against planoscope's engine, as ``promql/promqltest/test.go`` (v2.53) does:
the instant query, the same query as a range query around it, and — unless the expression uses a
time-dependent function — the query with ``@`` pinned at the evaluation time, run at other times.

``python tests/promql/promqltest.py`` prints each file's cases passed / listed in skips.txt.
"""

from __future__ import annotations

import dataclasses
import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from planoscope.promql import STALE_NAN, Engine, Limits, Matrix, MemoryStorage, PromQLError, Scalar, Vector, syntax
from planoscope.promql.engine import AT_UNSAFE
from planoscope.promql.values import Labels, format_labels, labels_of

HERE = Path(__file__).parent
TESTDATA = HERE / "testdata"
SKIPS = HERE / "skips.txt"

EPSILON = 1e-6  # relative error allowed for sample values
MIN_NORMAL = 2.2250738585072014e-308
MAX_SAMPLES = 10_000  # promqltest.DefaultMaxSamplesPerQuery

PAT_LOAD = re.compile(r"^load\s+(.+?)$")
PAT_EVAL_INSTANT = re.compile(r"^eval(?:_(fail|ordered))?\s+instant\s+(?:at\s+(.+?))?\s+(.+)$")
PAT_EVAL_RANGE = re.compile(r"^eval(?:_(fail))?\s+range\s+from\s+(.+)\s+to\s+(.+)\s+step\s+(.+?)\s+(.+)$")


class ScriptError(Exception):
    """The script uses something this runner (or the engine's data model) cannot represent."""


def almost_equal(a: float, b: float) -> bool:
    """Prometheus's ``almost.Equal`` with the test epsilon."""
    if math.isnan(a) and math.isnan(b):
        return True
    if a == b:
        return True
    abs_sum = abs(a) + abs(b)
    diff = abs(a - b)
    if a == 0 or b == 0 or abs_sum < MIN_NORMAL:
        return diff < EPSILON * MIN_NORMAL
    return diff / min(abs_sum, sys.float_info.max) < EPSILON


def parse_duration(s: str) -> int:
    """Prometheus's model.ParseDuration, in ms (the engine's), a script's error otherwise."""
    try:
        return syntax.parse_duration(s)
    except ValueError as e:
        raise ScriptError(str(e)) from None


# --- series descriptions: metric{l="v"} 1+2x3 _ stale … -------------------------------------------

# No hexadecimal numbers in series descriptions: "3+0x10" is 3, +0, ten times (Prometheus's lexer).
_NUM = r"(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[iI][nN][fF]|[nN][aA][nN])"
PAT_ITEM = re.compile(rf"^(?P<a>[+-]?{_NUM})(?:(?P<sign>[+-])(?P<b>{_NUM}))?(?:x(?P<n>\d+))?$")
PAT_BLANK = re.compile(r"^_(?:x(?P<n>\d+))?$")
PAT_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
PAT_LABEL = re.compile(r"\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*")

OMITTED = None  # a "_" in a series: no sample at that step


def _number(s: str) -> float:
    return float(s)


def _go_unquote(s: str, i: int) -> tuple[str, int]:
    """A Go/PromQL string literal starting at s[i]; returns the value and the index after it."""
    quote = s[i]
    j = i + 1
    if quote == "`":
        end = s.index("`", j)
        return s[j:end], end + 1
    out = []
    simple = {
        "a": "\a",
        "b": "\b",
        "f": "\f",
        "n": "\n",
        "r": "\r",
        "t": "\t",
        "v": "\v",
        "\\": "\\",
        '"': '"',
        "'": "'",
    }
    while j < len(s):
        c = s[j]
        if c == quote:
            return "".join(out), j + 1
        if c == "\\":
            e = s[j + 1]
            if e in simple:
                out.append(simple[e])
                j += 2
            elif e in "xuU":
                width = {"x": 2, "u": 4, "U": 8}[e]
                out.append(chr(int(s[j + 2 : j + 2 + width], 16)))
                j += 2 + width
            elif e in "01234567":
                out.append(chr(int(s[j + 1 : j + 4], 8)))
                j += 4
            else:
                raise ScriptError(f"unknown escape \\{e}")
            continue
        out.append(c)
        j += 1
    raise ScriptError("unterminated string")


def parse_series(line: str) -> tuple[Labels, list[float | None]]:
    """A series description: its label set and values (None where omitted), as ParseSeriesDesc."""
    i = 0
    labels: dict[str, str] = {}
    m = PAT_NAME.match(line, i)
    if m:
        labels["__name__"] = m.group(0)
        i = m.end()
    if i < len(line) and line[i] == "{":
        i += 1
        while True:
            while i < len(line) and line[i] in " \t,":
                i += 1
            if line[i] == "}":
                i += 1
                break
            m = PAT_LABEL.match(line, i)
            if not m:
                raise ScriptError(f"bad label set in {line!r}")
            value, i = _go_unquote(line, m.end())
            labels[m.group(1)] = value
    rest = line[i:]
    if "{{" in rest:
        raise ScriptError("native histogram samples are not supported")
    values: list[float | None] = []
    for item in rest.split():
        if item == "stale":
            values.append(STALE_NAN)
            continue
        b = PAT_BLANK.match(item)
        if b:
            values.extend([OMITTED] * (int(b.group("n")) if b.group("n") else 1))
            continue
        m = PAT_ITEM.match(item)
        if not m:
            raise ScriptError(f"bad series value {item!r}")
        start = _number(m.group("a"))
        if m.group("n") is None:
            if m.group("b") is not None:
                raise ScriptError(f"bad series value {item!r}")
            values.append(start)
            continue
        delta = _number(m.group("b")) * (-1 if m.group("sign") == "-" else 1) if m.group("b") else 0.0
        for _ in range(int(m.group("n")) + 1):  # one more value for time 0
            values.append(start)
            start += delta
    return labels_of(labels), values


def parse_number(s: str) -> float | None:
    """Go's ParseInt(s, 0, 64), then ParseFloat: the expected value of a scalar result."""
    try:
        return float(int(s, 0))
    except ValueError:
        pass
    if re.fullmatch(r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[iI][nN][fF](?:inity)?|[nN][aA][nN])", s):
        return float(s)
    return None


# --- commands ----------------------------------------------------------------------------------


@dataclass
class Load:
    gap: int
    series: list[tuple[Labels, list[float | None]]]
    unsupported: str | None = None


@dataclass
class Clear:
    pass


@dataclass
class Eval:
    expr: str
    line: int
    start: int
    end: int = 0
    step: int = 0
    is_range: bool = False
    fail: bool = False
    ordered: bool = False
    scalar: float | None = None
    metrics: dict[Labels, tuple[int, list[float | None]]] = field(default_factory=dict)
    unsupported: str | None = None


def lines_of(text: str) -> list[str]:
    out = []
    for line in text.split("\n"):
        line = line.strip()
        out.append("" if line.startswith("#") else line)
    return out


def parse_script(text: str) -> list[Load | Clear | Eval]:
    lines = lines_of(text)
    cmds: list[Load | Clear | Eval] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line:
            i += 1
            continue
        word = re.split(r"[\t ]+", line, maxsplit=1)[0].lower()
        if word == "clear":
            cmds.append(Clear())
        elif word == "load":
            m = PAT_LOAD.match(line)
            if not m:
                raise ScriptError(f"line {i + 1}: invalid load command")
            load = Load(parse_duration(m.group(1)), [])
            while i + 1 < len(lines) and lines[i + 1]:
                i += 1
                try:
                    load.series.append(parse_series(lines[i]))
                except ScriptError as e:
                    load.unsupported = f"line {i + 1}: {e}"
            cmds.append(load)
        elif word.startswith("eval"):
            cmd, i = _parse_eval(lines, i)
            cmds.append(cmd)
        else:
            raise ScriptError(f"line {i + 1}: invalid command {line!r}")
        i += 1
    return cmds


def _parse_eval(lines: list[str], i: int) -> tuple[Eval, int]:
    line = lines[i]
    inst, rng = PAT_EVAL_INSTANT.match(line), PAT_EVAL_RANGE.match(line)
    if inst:
        mod, at, expr = inst.groups()
        cmd = Eval(expr, i + 1, parse_duration(at))
    elif rng:
        mod, start, end, step, expr = rng.groups()
        cmd = Eval(expr, i + 1, parse_duration(start), parse_duration(end), parse_duration(step), is_range=True)
    else:
        raise ScriptError(f"line {i + 1}: invalid evaluation command")
    cmd.fail = mod == "fail"
    cmd.ordered = mod == "ordered"
    pos = 1
    while i + 1 < len(lines) and lines[i + 1]:
        i += 1
        number = parse_number(lines[i])
        if number is not None:
            cmd.scalar = number
            break
        try:
            labels, values = parse_series(lines[i])
        except ScriptError as e:
            cmd.unsupported = f"line {i + 1}: {e}"
            continue
        if len(values) > 1 and not cmd.is_range:
            raise ScriptError(f"line {i + 1}: expecting multiple values in instant evaluation not allowed")
        cmd.metrics[labels] = (pos, values)
        pos += 1
    return cmd, i


# --- running -----------------------------------------------------------------------------------


def storage_of(loads: list[Load]) -> MemoryStorage:
    store = MemoryStorage()
    for load in loads:
        for labels, values in load.series:
            ts = [k * load.gap for k, v in enumerate(values) if v is not OMITTED]
            store.add(dict(labels), ts, [v for v in values if v is not OMITTED])
    return store


def engine() -> Engine:
    return Engine(lookback_ms=300_000, subquery_step_ms=60_000, limits=Limits(max_samples=MAX_SAMPLES))


class Mismatch(AssertionError):
    pass


def compare(cmd: Eval, result) -> None:
    """Raises Mismatch unless the result is what the script expects (test.go's compareResult)."""
    if isinstance(result, Matrix):
        if cmd.ordered:
            raise Mismatch("expected ordered result, but query returned a matrix")
        keys = [s.labels for s in result.series]
        if keys != sorted(keys):
            raise Mismatch("matrix results should always be sorted by labels")
        seen = set()
        for s in result.series:
            if s.labels not in cmd.metrics:
                raise Mismatch(
                    f"unexpected metric {format_labels(s.labels)} in result, has {list(zip(s.timestamps, s.values))}"
                )
            seen.add(s.labels)
            _, values = cmd.metrics[s.labels]
            expected = []
            for k, v in enumerate(values):
                t = cmd.start + k * cmd.step
                if t > cmd.end:
                    raise Mismatch(
                        f"expected {len(values)} points for {format_labels(s.labels)}, but the range is shorter"
                    )
                if v is not OMITTED:
                    expected.append((t, v))
            if len(expected) != len(s.values):
                raise Mismatch(
                    f"expected {len(expected)} points for {format_labels(s.labels)}, got {list(zip(s.timestamps, s.values))}"
                )
            for (t, v), at, got in zip(expected, s.timestamps, s.values):
                if t != at:
                    raise Mismatch(f"expected a point at {t} for {format_labels(s.labels)}, got one at {at}")
                if not almost_equal(got, v):
                    raise Mismatch(f"expected {v} at {t} for {format_labels(s.labels)}, got {got}")
        for labels in cmd.metrics:
            if labels not in seen:
                raise Mismatch(f"expected metric {format_labels(labels)} not found")
    elif isinstance(result, Vector):
        seen = set()
        for pos, s in enumerate(result.samples):
            if s.labels not in cmd.metrics:
                raise Mismatch(f"unexpected metric {format_labels(s.labels)} in result, has value {s.v}")
            exp_pos, values = cmd.metrics[s.labels]
            if cmd.ordered and exp_pos != pos + 1:
                raise Mismatch(f"expected metric {format_labels(s.labels)} at position {exp_pos} but was at {pos + 1}")
            if not almost_equal(values[0], s.v):
                raise Mismatch(f"expected {values[0]} for {format_labels(s.labels)} but got {s.v}")
            seen.add(s.labels)
        missing = [ls for ls in cmd.metrics if ls not in seen]
        if missing or cmd.scalar is not None:
            what = format_labels(missing[0]) if missing else f"scalar {cmd.scalar}"
            raise Mismatch(f"expected {what} not found")
    elif isinstance(result, Scalar):
        if cmd.scalar is None or cmd.metrics:
            raise Mismatch(f"expected vector result, but got scalar {result.v}")
        if not almost_equal(cmd.scalar, result.v):
            raise Mismatch(f"expected Scalar {cmd.scalar} but got {result.v}")
    else:
        raise Mismatch(f"unexpected result type {type(result).__name__}")


def at_modifier_cases(expr: syntax.Expr, eval_ms: int) -> list[tuple[syntax.Expr, int]]:
    """The expression with ``@ eval time`` on every selector and subquery outside a pinned subquery,
    to run at other times (test.go's atModifierTestCases); none if a function depends on time."""

    def unsafe(e) -> bool:
        return (isinstance(e, syntax.Call) and e.func in AT_UNSAFE) or any(unsafe(c) for c in syntax.children(e))

    if unsafe(expr):
        return []
    at = syntax.At("at", eval_ms)

    def pin(e):
        if isinstance(e, syntax.VectorSelector):
            return e if e.at is not None and e.at.kind == "at" else dataclasses.replace(e, at=at)
        if isinstance(e, syntax.MatrixSelector):
            return dataclasses.replace(e, selector=pin(e.selector))
        if isinstance(e, syntax.Subquery):
            # Inside a pinned subquery nothing changes.
            return e if e.at is not None and e.at.kind == "at" else dataclasses.replace(e, at=at)
        if isinstance(e, syntax.Call):
            return dataclasses.replace(e, args=tuple(pin(a) for a in e.args))
        if isinstance(e, syntax.Aggregate):
            return dataclasses.replace(e, expr=pin(e.expr), param=None if e.param is None else pin(e.param))
        if isinstance(e, syntax.Binary):
            return dataclasses.replace(e, lhs=pin(e.lhs), rhs=pin(e.rhs))
        if isinstance(e, syntax.Paren | syntax.Unary):
            return dataclasses.replace(e, expr=pin(e.expr))
        return e

    pinned = pin(expr)
    times = [-1000, 0, 1000] if eval_ms == 0 else [-10 * eval_ms, 0, int(eval_ms / 5), eval_ms, 10 * eval_ms]
    return [(pinned, t) for t in times]


def run_eval(cmd: Eval, store: MemoryStorage) -> None:
    """Raises AssertionError (Mismatch) or an engine error unless the case holds."""
    ng = engine()
    expr = syntax.parse(cmd.expr)
    if cmd.is_range:
        try:
            result = ng.range_query(store, expr, cmd.start, cmd.end, cmd.step)
        except PromQLError:
            if cmd.fail:
                return
            raise
        if cmd.fail:
            raise Mismatch(f"expected error evaluating query {cmd.expr!r} but got none")
        compare(cmd, result)
        return
    for query, at in [(expr, cmd.start), *at_modifier_cases(expr, cmd.start)]:
        try:
            result = ng.instant_query(store, query, at)
        except PromQLError:
            if cmd.fail:
                continue
            raise
        if cmd.fail:
            raise Mismatch(f"expected error evaluating query {cmd.expr!r} at {at} but got none")
        compare(cmd, result)
        # The same query as a range query must give the same result at its middle step.
        matrix = ng.range_query(store, query, at - 60_000, at + 60_000, 60_000)
        if cmd.ordered:
            continue
        keys = [s.labels for s in matrix.series]
        if keys != sorted(keys):
            raise Mismatch("range query result not sorted by labels")
        samples = []
        for s in matrix.series:
            hit = np.flatnonzero(s.timestamps == at)
            if len(hit):
                samples.append((s.labels, float(s.values[hit[0]])))
        if isinstance(result, Scalar):
            mid = Scalar(at, samples[0][1])
        else:
            from planoscope.promql import Sample

            mid = Vector([Sample(ls, at, v) for ls, v in samples])
        try:
            compare(cmd, mid)
        except Mismatch as e:
            raise Mismatch(f"range mode: {e}") from None


@dataclass
class Case:
    file: str
    line: int
    expr: str
    run: Callable[[], None]

    @property
    def id(self) -> str:
        return f"{self.file}:{self.line}"


def cases(path: Path) -> list[Case]:
    """Every eval of a script, each with the storage its loads have built by then."""
    out = []
    loads: list[Load] = []
    store: MemoryStorage | None = None
    for cmd in parse_script(path.read_text()):
        if isinstance(cmd, Clear):
            loads, store = [], None
        elif isinstance(cmd, Load):
            loads.append(cmd)
            store = None
        else:
            if store is None:
                store = storage_of(loads)
            unsupported = cmd.unsupported or next((ld.unsupported for ld in loads if ld.unsupported), None)
            out.append(Case(path.name, cmd.line, cmd.expr, _runner(cmd, store, unsupported)))
    return out


def _runner(cmd: Eval, store: MemoryStorage, unsupported: str | None) -> Callable[[], None]:
    def run() -> None:
        if unsupported:
            raise ScriptError(f"the case's data cannot be represented ({unsupported})")
        run_eval(cmd, store)

    return run


def all_cases() -> list[Case]:
    return [c for path in sorted(TESTDATA.glob("*.test")) for c in cases(path)]


def read_skips() -> dict[str, str]:
    """skips.txt: ``file:line reason`` per case that is known to fail, and why."""
    out = {}
    for line in SKIPS.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, reason = line.partition(" ")
            if not reason.strip():
                raise ScriptError(f"skips.txt: {key} has no reason")
            out[key] = reason.strip()
    return out


def outcome(case: Case) -> str | None:
    """None when the case passes, else why not."""
    try:
        case.run()
    except Exception as e:  # the runner reports any failure, like test.go's error return
        return f"{type(e).__name__}: {e}"
    return None


if __name__ == "__main__":
    skips = read_skips() if SKIPS.exists() else {}
    per_file: dict[str, list[int]] = {}
    for case in all_cases():
        passed, skipped, failed = per_file.setdefault(case.file, [0, 0, 0]) and per_file[case.file]
        err = outcome(case)
        if err is None:
            per_file[case.file][0] += 1
        elif case.id in skips:
            per_file[case.file][1] += 1
        else:
            per_file[case.file][2] += 1
            if "-v" in sys.argv:
                print(f"{case.id} {case.expr}\n    {err}")
    for name, (p, s, f) in per_file.items():
        print(f"{name:28} {p:4} passed {s:4} skipped {f:4} failed")
