"""Binary operators: arithmetic, comparisons (filtering, or 0/1 with ``bool``), ``and``/``or``/
``unless``, and vector matching (``on``/``ignoring``, ``group_left``/``group_right``), as in
Prometheus's ``VectorBinop``, ``VectorAnd`` … — for all steps at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .syntax import COMPARISONS, SET_OPS, Binary, value_type
from .values import METRIC_NAME, EvalError, Labels, Steps, drop_name, format_labels, get, merge

if TYPE_CHECKING:
    from .engine import Evaluator

ARITHMETIC = {
    "+": np.add,
    "-": np.subtract,
    "*": np.multiply,
    "/": np.divide,
    "%": np.fmod,  # Go's math.Mod: the sign of the dividend
    "^": np.power,
    "atan2": np.arctan2,
}
COMPARE = {
    "==": np.equal,
    "!=": np.not_equal,
    ">": np.greater,
    "<": np.less,
    ">=": np.greater_equal,
    "<=": np.less_equal,
}


def evaluate(ev: Evaluator, e: Binary, times: np.ndarray):
    lhs = ev.eval(e.lhs, times)
    rhs = ev.eval(e.rhs, times)
    lt, rt = value_type(e.lhs), value_type(e.rhs)
    if lt == "scalar" and rt == "scalar":
        if e.op in COMPARISONS:
            return COMPARE[e.op](lhs, rhs).astype(np.float64)
        return ARITHMETIC[e.op](lhs, rhs)
    if rt == "scalar":
        return _vector_scalar(e, lhs, rhs, swap=False)
    if lt == "scalar":
        return _vector_scalar(e, rhs, lhs, swap=True)
    if e.op in SET_OPS:
        return _set_op(e, lhs, rhs)
    return _vector_vector(e, lhs, rhs, ev.reserve)


def _vector_scalar(e: Binary, vec: Steps, scalar: np.ndarray, *, swap: bool) -> Steps:
    s = scalar[None, :]
    a, b = (s, vec.values) if swap else (vec.values, s)
    if e.op in COMPARISONS:
        keep = COMPARE[e.op](a, b)
        if e.bool:
            return merge([drop_name(ls) for ls in vec.labels], keep.astype(np.float64), vec.present.copy())
        # A comparison keeps the vector's sample, whichever side it is on.
        return merge(list(vec.labels), vec.values, vec.present & keep)
    values = np.broadcast_to(ARITHMETIC[e.op](a, b), vec.values.shape)
    return merge([drop_name(ls) for ls in vec.labels], np.array(values), vec.present.copy())


def signature(labels: Labels, on: bool, names: tuple[str, ...]) -> Labels:
    """The labels two series are matched on."""
    if on:
        return tuple(p for p in labels if p[0] in names)
    return tuple(p for p in labels if p[0] != METRIC_NAME and p[0] not in names)


def _set_op(e: Binary, lhs: Steps, rhs: Steps) -> Steps:
    lsig = [signature(ls, e.on, e.matching) for ls in lhs.labels]
    rsig = [signature(ls, e.on, e.matching) for ls in rhs.labels]
    steps = lhs.present.shape[1]

    def any_present(sigs: list[Labels], present: np.ndarray) -> dict[Labels, np.ndarray]:
        out: dict[Labels, np.ndarray] = {}
        for i, s in enumerate(sigs):
            out[s] = out[s] | present[i] if s in out else present[i].copy()
        return out

    none = np.zeros(steps, bool)
    if e.op == "and":
        right = any_present(rsig, rhs.present)
        present = _stack([lhs.present[i] & right.get(s, none) for i, s in enumerate(lsig)], steps)
        return merge(list(lhs.labels), lhs.values, present)
    if e.op == "unless":
        right = any_present(rsig, rhs.present)
        present = _stack([lhs.present[i] & ~right.get(s, none) for i, s in enumerate(lsig)], steps)
        return merge(list(lhs.labels), lhs.values, present)
    # or: everything on the left; on the right, what no left series of its signature covers.
    left = any_present(lsig, lhs.present)
    rpresent = _stack([rhs.present[i] & ~left.get(s, none) for i, s in enumerate(rsig)], steps)
    return merge(
        list(lhs.labels) + list(rhs.labels),
        np.concatenate([lhs.values, rhs.values]),
        np.concatenate([lhs.present, rpresent]),
    )


def _stack(rows: list[np.ndarray], steps: int) -> np.ndarray:
    return np.array(rows, bool).reshape(len(rows), steps)


def _result_labels(e: Binary, many: Labels, one: Labels) -> Labels:
    out = dict(many)
    if e.op in ARITHMETIC:
        out.pop(METRIC_NAME, None)
    if e.card == "one-to-one":
        if e.on:
            out = {k: v for k, v in out.items() if k in e.matching}
        else:
            for k in e.matching:
                out.pop(k, None)
    for name in e.include:  # copied from the "one" side
        v = get(one, name)
        if v:
            out[name] = v
        else:
            out.pop(name, None)
    if e.bool:
        out.pop(METRIC_NAME, None)
    return tuple(sorted(out.items()))


def _vector_vector(e: Binary, lhs: Steps, rhs: Steps, reserve) -> Steps:
    steps = lhs.present.shape[1]
    swapped = e.card == "one-to-many"
    many, one = (rhs, lhs) if swapped else (lhs, rhs)
    msig = [signature(ls, e.on, e.matching) for ls in many.labels]
    osig: dict[Labels, list[int]] = {}
    for j, ls in enumerate(one.labels):
        osig.setdefault(signature(ls, e.on, e.matching), []).append(j)

    # The "one" side may hold a signature only once per step (where the other side has samples).
    many_any = many.present.any(axis=0)
    for sig, rows in osig.items():
        if len(rows) > 1:
            dup = (one.present[rows].sum(axis=0) > 1) & many_any
            if dup.any():
                j0, j1 = [j for j in rows if one.present[j][dup.argmax()]][:2]
                side = "left" if swapped else "right"
                raise EvalError(
                    f"found duplicate series for the match group {format_labels(sig)} on the {side} hand-side of "
                    f"the operation: [{format_labels(one.labels[j1])}, {format_labels(one.labels[j0])}];"
                    "many-to-many matching not allowed: matching labels must be unique on one side"
                )

    pairs = [(i, j) for i, s in enumerate(msig) for j in osig.get(s, ())]
    reserve(len(pairs), steps)
    if not pairs:
        return Steps.empty(steps)
    mi = np.array([p[0] for p in pairs])
    oj = np.array([p[1] for p in pairs])
    present = many.present[mi] & one.present[oj]
    left, right = many.values[mi], one.values[oj]
    if swapped:
        left, right = right, left
    if e.op in COMPARISONS:
        keep = COMPARE[e.op](left, right)
        if e.bool:
            values = keep.astype(np.float64)
        else:
            values = left
            present &= keep
    else:
        values = ARITHMETIC[e.op](left, right)

    labels = [_result_labels(e, many.labels[i], one.labels[j]) for i, j in pairs]
    # One-to-one: a signature may match once per step; many-to-one: once per result label set.
    keys = [msig[i] for i, _ in pairs] if e.card == "one-to-one" else list(zip([msig[i] for i, _ in pairs], labels))
    index: dict = {}
    group = np.array([index.setdefault(k, len(index)) for k in keys])
    counts = np.zeros((len(index), steps), np.int64)
    np.add.at(counts, group, present)
    if (counts > 1).any():
        if e.card == "one-to-one":
            raise EvalError(
                "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)"
            )
        raise EvalError("multiple matches for labels: grouping labels must ensure unique matches")
    return merge(labels, values, present)
