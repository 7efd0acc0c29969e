"""A PromQL engine with Prometheus 2.x semantics, evaluating against any ``Queryable``.

>>> from planoscope.promql import Engine, MemoryStorage, render
>>> store = MemoryStorage()
>>> store.add({"__name__": "requests_total", "job": "api"}, [0, 60_000, 120_000], [0, 60, 120])
>>> render(Engine().instant_query(store, "rate(requests_total[2m])", 120_000))
{'resultType': 'vector', 'result': [{'metric': {'job': 'api'}, 'value': [120, '1']}]}
"""

from .engine import Engine, Limits
from .storage import STALE_NAN, Matcher, MemoryStorage, Queryable, metric_name
from .syntax import parse
from .values import (
    EvalError,
    LimitExceeded,
    Matrix,
    ParseError,
    PromQLError,
    Sample,
    Scalar,
    Series,
    String,
    Timeout,
    Unsupported,
    Value,
    Vector,
    render,
)

__all__ = [
    "STALE_NAN",
    "Engine",
    "EvalError",
    "LimitExceeded",
    "Limits",
    "Matcher",
    "Matrix",
    "MemoryStorage",
    "ParseError",
    "PromQLError",
    "Queryable",
    "Sample",
    "Scalar",
    "Series",
    "String",
    "Timeout",
    "Unsupported",
    "Value",
    "Vector",
    "metric_name",
    "parse",
    "render",
]
