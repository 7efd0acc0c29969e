"""Hostile query values for the schemathesis run over the query API (``test_fuzz.py``).

Values drawn from the OpenAPI schema alone rarely hold what broke the API before: attribute keys
with quotes and backslashes (pasted into a JSON path, a 500), integers past int64 for ``offset``
(a 500 from DuckDB), durations past int64 nanoseconds or of 400 digits (an OverflowError), more
``attr`` filters than a query should scan for. Each operation gets them for the parameters it
has, one at a time, instead of what schemathesis generates for it."""

from __future__ import annotations

import schemathesis
from hypothesis import strategies as st

NASTY = st.text(alphabet=st.sampled_from(list("\"\\'$.[]*~/@=ü \x00ab")), max_size=12)
BIG_INT = st.one_of(st.just(2**63), st.just(2**63 - 1), st.integers(2**62, 2**80), st.integers(-3, 3))
DURATION = st.one_of(
    st.sampled_from(["1" + "0" * 400 + "ms", "1" + "0" * 400, "100000000000000000000h", "10000000000000h", "1e400ms"]),
    st.from_regex(r"\d{1,25}(\.\d{0,3})?(ns|us|ms|s|m|h)?", fullmatch=True),
)
SECONDS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(-(2**70), 2**70), st.just("1" + "0" * 400)
)
HOSTILE = {
    "attr": st.lists(st.one_of(NASTY, st.tuples(NASTY, NASTY).map("=".join)), max_size=25),
    "offset": BIG_INT,
    "limit": BIG_INT,
    "min_duration": DURATION,
    "max_duration": DURATION,
    "start": SECONDS,
    "end": SECONDS,
    "step": SECONDS,
    "service": NASTY,
    "name": NASTY,
    "model": NASTY,
    "agent": NASTY,
    "trace_id": NASTY,
    "sort": NASTY,
    "user": NASTY,
}


@schemathesis.hook
def flatmap_query(context, query):
    """One hostile parameter per case, alone or among the generated ones: with several, the first
    bad one answers 400 and the rest are never reached."""
    op = context.operation
    names = [n for n in HOSTILE if op is not None and n in op.query]
    if not names:
        return st.just(query)
    base = st.sampled_from([{}, dict(query or {})])
    return st.tuples(base, st.sampled_from(names)).flatmap(
        lambda b: HOSTILE[b[1]].map(lambda value: {**b[0], b[1]: value})
    )
