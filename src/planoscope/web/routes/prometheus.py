"""``/prometheus/api/v1``: the Prometheus HTTP API over the stored scraped samples (planoscope's
own ``/metrics`` included, job ``planoscope``), so that Grafana's Prometheus datasource works
with the URL ``http://HOST:9000/prometheus``.

The endpoints Grafana calls, with Prometheus 2.x's parameters and JSON: ``query`` and
``query_range`` (GET, or POST form-encoded as Grafana sends them), ``series``, ``labels``,
``label/<name>/values``, ``metadata`` and ``status/buildinfo`` (and ``query_exemplars``, always
empty: no exemplars are stored). Answers are
``{"status": "success", "data": …}``; errors ``{"status": "error", "errorType", "error"}`` with
Prometheus's codes: ``bad_data`` 400, ``execution`` 422, ``timeout`` and ``unavailable`` (the
store did not answer) 503. Times are unix seconds or RFC 3339, durations float seconds or
Prometheus durations (``1m30s``); ``timeout`` shortens a query's 2 minutes.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import replace
from datetime import datetime
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ...promql import Engine, Limits, PromQLError, parse, render
from ...promql.panels import PanelSeries
from ...promql.syntax import VectorSelector, unwrap
from ...promql.syntax import parse_duration as prometheus_duration
from ...query.params import MAX_POINTS
from ...store import StoreError
from ..deps import promql_series

router = APIRouter(prefix="/prometheus/api/v1", tags=["prometheus"])

# Grafana reads the version to pick its Prometheus behaviour; 2.x is what the engine implements.
BUILD_INFO = {
    "version": "2.53.0",
    "revision": "planoscope",
    "branch": "planoscope",
    "buildUser": "planoscope",
    "buildDate": "20240618-00:00:00",
    "goVersion": "go1.22.4",
}
STATUS = {"bad_data": 400, "execution": 422, "timeout": 503, "unavailable": 503}
# Prometheus's "all time" for series and label listings without start/end, within every store's timestamps.
MIN_MS, MAX_MS = 0, 4_102_444_800_000  # 2100-01-01


class BadData(Exception):
    """A parameter Prometheus would refuse: ``bad_data``, 400."""


def parse_time(name: str, value: str) -> int:
    """Unix seconds (float) or RFC 3339 as milliseconds, as Prometheus's ``parseTime``."""
    try:
        seconds = float(value)
        if math.isfinite(seconds):
            return round(seconds * 1000)
    except ValueError:
        try:
            return round(datetime.fromisoformat(value).timestamp() * 1000)
        except ValueError:
            pass
    raise BadData(f'invalid parameter "{name}": cannot parse "{value}" to a valid timestamp')


def parse_duration(name: str, value: str) -> int:
    """Float seconds or a Prometheus duration (``5m``, ``1h30m``) as milliseconds."""
    try:
        seconds = float(value)
        if math.isfinite(seconds) and abs(seconds) < 2**53 / 1000:
            return round(seconds * 1000)
    except ValueError:
        try:
            return prometheus_duration(value)
        except ValueError:
            pass
    raise BadData(f'invalid parameter "{name}": cannot parse "{value}" to a valid duration')


async def _params(request: Request) -> dict[str, list[str]]:
    """The query string's parameters and a form-encoded body's, as Prometheus's ``r.Form``."""
    pairs = parse_qsl(request.url.query, keep_blank_values=True)
    if request.method == "POST" and request.headers.get("content-type", "").startswith(
        "application/x-www-form-urlencoded"
    ):
        pairs += parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
    out: dict[str, list[str]] = {}
    for k, v in pairs:
        out.setdefault(k, []).append(v)
    return out


def _one(params: dict[str, list[str]], name: str) -> str | None:
    return params[name][0] if params.get(name) else None


def _success(data) -> JSONResponse:
    return JSONResponse({"status": "success", "data": data})


def _error(kind: str, message: str) -> JSONResponse:
    return JSONResponse({"status": "error", "errorType": kind, "error": message}, status_code=STATUS[kind])


async def _answer(request: Request, work) -> JSONResponse:
    """``work(params, engine, queryable)`` in a thread (queries are CPU work), its errors as Prometheus's."""
    state = request.app.state
    try:
        params = await _params(request)
        limits = state.promql_limits
        if raw := _one(params, "timeout"):  # a query's own timeout, within the server's
            limits = replace(limits, timeout_s=min(limits.timeout_s, max(parse_duration("timeout", raw), 0) / 1000))
        queryable = promql_series(request, limits)
        data = await asyncio.to_thread(work, params, Engine(limits=limits), queryable)
    except BadData as e:
        return _error("bad_data", str(e))
    except PromQLError as e:
        return _error(e.kind, str(e))
    except StoreError as e:
        return _error("unavailable", str(e))
    return _success(data)


def _query(params, engine: Engine, queryable: PanelSeries) -> dict:
    raw = _one(params, "time")
    at = parse_time("time", raw) if raw is not None else round(time.time() * 1000)
    return render(engine.instant_query(queryable, _expr(params), at))


def _query_range(params, engine: Engine, queryable: PanelSeries) -> dict:
    bounds = {}
    for name in ("start", "end", "step"):
        raw = _one(params, name)
        if raw is None:
            raise BadData(
                f'invalid parameter "{name}": cannot parse "" to a valid '
                + ("duration" if name == "step" else "timestamp")
            )
        bounds[name] = parse_duration(name, raw) if name == "step" else parse_time(name, raw)
    start, end, step = bounds["start"], bounds["end"], bounds["step"]
    if end < start:
        raise BadData('invalid parameter "end": end timestamp must not be before start time')
    if step <= 0:
        raise BadData(
            'invalid parameter "step": zero or negative query resolution step widths are not accepted. '
            "Try a positive integer"
        )
    if (end - start) // step > MAX_POINTS:
        raise BadData(
            f"exceeded maximum resolution of {MAX_POINTS:,} points per timeseries. "
            "Try decreasing the query resolution (?step=XX)"
        )
    return render(engine.range_query(queryable, _expr(params), start, end, step))


def _expr(params):
    try:
        return parse(_one(params, "query") or "")
    except PromQLError as e:
        raise BadData(f'invalid parameter "query": {e}') from None


def _range(params) -> tuple[int, int]:
    start, end = _one(params, "start"), _one(params, "end")
    lo = parse_time("start", start) if start else MIN_MS
    hi = parse_time("end", end) if end else MAX_MS
    return max(lo, MIN_MS), min(hi, MAX_MS)


def _matchers(params, required: bool) -> list:
    """``match[]``: each a series selector, as its matchers."""
    selectors = params.get("match[]", [])
    if required and not selectors:
        raise BadData("no match[] parameter provided")
    out = []
    for s in selectors:
        try:
            e = unwrap(parse(s))
        except PromQLError as err:
            raise BadData(f'invalid parameter "match[]": {err}') from None
        if not isinstance(e, VectorSelector):
            raise BadData(f'invalid parameter "match[]": {s!r} is not a series selector')
        out.append(list(e.matchers))
    return out


def _series(params, engine: Engine, queryable: PanelSeries) -> list:
    return queryable.series(_matchers(params, required=True), *_range(params))


def _labels(params, engine: Engine, queryable: PanelSeries) -> list:
    return queryable.label_names(_matchers(params, required=False), *_range(params))


@router.api_route("/query", methods=["GET", "POST"])
async def query(request: Request) -> JSONResponse:
    """An instant query (``query``, ``time``: default now), as Prometheus's ``/api/v1/query``."""
    return await _answer(request, _query)


@router.api_route("/query_range", methods=["GET", "POST"])
async def query_range(request: Request) -> JSONResponse:
    """A range query (``query``, ``start``, ``end``, ``step``; at most 11,000 points a series)."""
    return await _answer(request, _query_range)


@router.api_route("/series", methods=["GET", "POST"])
async def series(request: Request) -> JSONResponse:
    """The label sets of the series matching any ``match[]`` in ``start``..``end``."""
    return await _answer(request, _series)


@router.api_route("/labels", methods=["GET", "POST"])
async def labels(request: Request) -> JSONResponse:
    """The label names of the series (matching ``match[]``, if given) in ``start``..``end``."""
    return await _answer(request, _labels)


@router.get("/label/{name}/values")
async def label_values(request: Request, name: str) -> JSONResponse:
    """The values of label ``name`` (``__name__``: the metric names) on the series matching ``match[]``."""

    def work(params, engine: Engine, queryable: PanelSeries) -> list:
        return queryable.label_values(name, _matchers(params, required=False), *_range(params))

    return await _answer(request, work)


@router.api_route("/query_exemplars", methods=["GET", "POST"])
async def query_exemplars(request: Request) -> JSONResponse:
    """No exemplars are stored: an empty list for a valid query (Grafana asks when a panel shows them)."""

    def work(params, engine: Engine, queryable: PanelSeries) -> list:
        _expr(params)
        _range(params)
        return []

    return await _answer(request, work)


@router.get("/metadata")
async def metadata(request: Request) -> JSONResponse:
    """Each metric family's type, help and unit, as the scrape targets last gave them (``metric``:
    one family; ``limit``: at most that many families)."""
    params = await _params(request)
    scraper = request.app.state.scraper
    found = scraper.metadata() if scraper else {}
    metric, limit = _one(params, "metric"), _one(params, "limit")
    if metric:
        found = {k: v for k, v in found.items() if k == metric}
    if limit:
        try:
            n = int(limit)
        except ValueError:
            return _error("bad_data", f'invalid parameter "limit": cannot parse "{limit}"')
        if n >= 0:
            found = dict(list(found.items())[:n])
    return _success(found)


@router.get("/status/buildinfo")
def buildinfo() -> JSONResponse:
    """Prometheus's build information; the 2.x version makes Grafana treat this as Prometheus 2."""
    return _success(BUILD_INFO)


def limits(max_samples: int, max_series: int) -> Limits:
    """The engine's limits for the API's queries (Prometheus's timeout, 2 minutes)."""
    return Limits(max_samples=max_samples, max_series=max_series, max_points=MAX_POINTS, timeout_s=120.0)
