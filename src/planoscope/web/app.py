"""The HTTP app on the UI/API port: the dashboard UI, the query API (``routes/``), ``/metrics``,
``/healthz``. Everything it shows comes from the components handed to ``create_web_app``, kept on
``app.state`` for the routes (``deps.py``)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CollectorRegistry

from .. import __version__
from ..forward.forwarder import Forwarder
from ..ingest.admission import Ingest
from ..ingest.writer import SpanWriter
from ..metrics.cumulative import Cumulative
from ..net.auth import Credentials, RequireAuth
from ..promql import Limits
from ..promql.cache import ResultCache
from ..query.dashboards import DASHBOARDS, Dashboard, Dashboards
from ..query.panels import DEFAULT_MAX_SERIES
from ..query.params import QueryError
from ..scrape.scraper import Scraper
from ..store import SpanStore, StoreError
from ..store.retention import Retention
from .routes import alerts, api, exposition, health, prometheus

STATIC = Path(__file__).parent / "static"


def create_web_app(
    store: SpanStore,
    metrics: Sequence[Cumulative],
    writer: SpanWriter,
    scraper: Scraper | None = None,
    credentials: Credentials | None = None,
    ingest: Ingest | None = None,
    retention: Retention | None = None,
    forwarders: Sequence[Forwarder] = (),
    max_series_per_panel: int = DEFAULT_MAX_SERIES,
    dashboards: Sequence[Dashboard] = DASHBOARDS,
    promql_limits: Limits | None = None,
) -> FastAPI:
    """The FastAPI app for ``--listen``. With ``credentials``, everything but ``/healthz``
    (liveness probes carry no secrets) requires them. A dashboard panel draws at most
    ``max_series_per_panel`` series (the rest as one "other"). ``dashboards``: the top bar's,
    native and Grafana ones (``grafana.dashboard.all_dashboards``). A PromQL query (of the
    Prometheus API, ``/prometheus/api/v1``, or of a Grafana dashboard's panel) uses at most
    ``promql_limits``."""
    app = FastAPI(title="planoscope", version=__version__, docs_url="/docs", redoc_url=None)
    registry = CollectorRegistry(auto_describe=False)
    for collector in (*metrics, scraper, ingest, writer):
        if collector is not None:
            registry.register(collector)
    app.state.store, app.state.scraper, app.state.writer = store, scraper, writer
    app.state.retention, app.state.forwarders, app.state.registry = retention, list(forwarders), registry
    app.state.started, app.state.max_series_per_panel = time.time(), max_series_per_panel
    app.state.dashboards = Dashboards(dashboards)
    app.state.rules = None  # the rule evaluator, when the process has one (routes/alerts.py)
    app.state.promql_limits = promql_limits or prometheus.limits(Limits().max_samples, Limits().max_series)
    changes = getattr(store, "sample_changes", None)  # a store that knows where its samples changed
    app.state.promql_cache = ResultCache(changes) if changes is not None else None
    app.add_middleware(ReadAfterWrite, writer=writer)  # inside the auth check, added after it
    if credentials is not None and credentials.required:
        app.add_middleware(RequireAuth, credentials=credentials, open_paths=frozenset({"/healthz"}))
    app.include_router(api)
    app.include_router(exposition.router)
    app.include_router(prometheus.router)
    app.include_router(alerts.router)
    app.include_router(health.router)

    @app.exception_handler(RequestValidationError)
    async def bad_parameter(request: Request, exc: RequestValidationError) -> JSONResponse:
        # One clear sentence per bad parameter, as 400 like every other client error here.
        problems = [f"{'.'.join(str(x) for x in e['loc'][1:]) or e['loc'][0]}: {e['msg']}" for e in exc.errors()]
        return JSONResponse({"detail": "; ".join(problems)}, status_code=400)

    @app.exception_handler(QueryError)
    async def bad_query(request: Request, exc: QueryError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    # The store did not answer a read (ClickHouse down, refusing, slow): asking again may work.
    @app.exception_handler(StoreError)
    async def store_unavailable(request: Request, exc: StoreError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503)

    # The UI's pages; everything else it loads is a static file. No build step.
    @app.get("/traces", include_in_schema=False)
    def trace_search_page() -> FileResponse:
        return FileResponse(STATIC / "traces.html")

    @app.get("/trace", include_in_schema=False)
    def trace_page() -> FileResponse:
        return FileResponse(STATIC / "trace.html")

    @app.get("/alerts", include_in_schema=False)
    def alerts_page() -> FileResponse:
        return FileResponse(STATIC / "alerts.html")

    @app.get("/sessions", include_in_schema=False)
    def sessions_page() -> FileResponse:
        return FileResponse(STATIC / "sessions.html")

    # The id is URL-encoded in the path (it may hold a slash): the page reads it from its URL.
    @app.get("/sessions/{session_id:path}", include_in_schema=False)
    def session_page(session_id: str) -> FileResponse:
        return FileResponse(STATIC / "session.html")

    # Mounted last so the routes above take precedence.
    app.mount("/", StaticFiles(directory=STATIC, html=True), name="ui")
    return app


class ReadAfterWrite:
    """Before a read of the API or /metrics, wait until the spans acknowledged so far are in the
    store (they are journaled first and inserted in batches, see ``ingest/writer.py``): what a client was
    told is stored, a query finds. Costs nothing while no span waits.

    The wait is bounded: when ingest runs flat out the inserts lag by seconds, and reads that
    waited for all of it took 1-10 s (8 clients, ~40k spans/s here). A read waits 2 s at most,
    /healthz 0.25 s (a liveness probe must answer within its timeout, 1 s by default in
    Kubernetes, whatever the inserts' lag); they then answer without the last seconds' spans."""

    def __init__(self, app, writer: SpanWriter):
        self.app = app
        self.writer = writer

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            path = scope["path"]
            if path.startswith("/api/") or path == "/metrics":
                await self.writer.sync(timeout=2.0)
            elif path == "/healthz":
                await self.writer.sync(timeout=0.25)
        await self.app(scope, receive, send)
