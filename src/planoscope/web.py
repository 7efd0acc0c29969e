"""The HTTP app on the UI/API port: the dashboard UI, the query API, ``/metrics``, ``/healthz``."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from . import __version__
from .api import create_api
from .auth import Credentials, RequireAuth
from .forward import Forwarder
from .ingest import Ingest
from .retention import Retention
from .scraper import Scraper
from .spanmetrics import SpanMetrics
from .store import DuckDBStore
from .writer import SpanWriter


STATIC = Path(__file__).parent / "static"


def create_web_app(store: DuckDBStore, metrics: SpanMetrics, writer: SpanWriter,
                   scraper: Scraper | None = None, credentials: Credentials | None = None,
                   ingest: Ingest | None = None, retention: Retention | None = None,
                   forwarders: Sequence[Forwarder] = ()) -> FastAPI:
    """The FastAPI app for ``--listen``; everything it shows comes from its arguments. With
    ``credentials``, everything but ``/healthz`` (liveness probes carry no secrets) requires them."""
    app = FastAPI(title="planoscope", version=__version__, docs_url="/docs", redoc_url=None)
    app.add_middleware(ReadAfterWrite, writer=writer)  # inside the auth check, added after it
    if credentials is not None and credentials.required:
        app.add_middleware(RequireAuth, credentials=credentials, open_paths=frozenset({"/healthz"}))
    app.include_router(create_api(store, scraper))

    @app.exception_handler(RequestValidationError)
    async def bad_parameter(request: Request, exc: RequestValidationError) -> JSONResponse:
        # One clear sentence per bad parameter, as 400 like every other client error here.
        problems = [f"{'.'.join(str(x) for x in e['loc'][1:]) or e['loc'][0]}: {e['msg']}" for e in exc.errors()]
        return JSONResponse({"detail": "; ".join(problems)}, status_code=400)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics)
    for collector in (scraper, ingest):
        if collector is not None:
            registry.register(collector)
    started = time.time()

    @app.get("/metrics", include_in_schema=False)
    def prometheus_metrics(request: Request) -> Response:
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encoder(registry), media_type=content_type)

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        """Liveness: 200 while the writer can commit; also what the data directory holds."""
        alive = writer.alive
        oldest_span, oldest_sample = store.oldest()
        return JSONResponse(
            {
                "status": "ok" if alive else "writer stopped",
                "version": __version__,
                "uptime_s": round(time.time() - started, 3),
                "spans_written": writer.spans_written,
                "commits": writer.commits,
                "disk_bytes": store.disk_bytes(),
                "oldest_span": _unix(oldest_span),
                "oldest_sample": _unix(oldest_sample),
                "retention_s": retention.keep_s if retention else None,
                "retention_last_run": retention.last_run if retention else None,
                "retention_deleted": {"spans": retention.spans_deleted, "samples": retention.samples_deleted}
                if retention else None,
                "forwarding": [f.health() for f in forwarders],
            },
            status_code=200 if alive else 503,
        )

    # The UI's pages; everything else it loads is a static file. No build step.
    @app.get("/traces", include_in_schema=False)
    def trace_search_page() -> FileResponse:
        return FileResponse(STATIC / "traces.html")

    @app.get("/trace", include_in_schema=False)
    def trace_page() -> FileResponse:
        return FileResponse(STATIC / "trace.html")

    # Mounted last so the routes above take precedence.
    app.mount("/", StaticFiles(directory=STATIC, html=True), name="ui")
    return app


class ReadAfterWrite:
    """Before a read of the API or /metrics, wait until the spans acknowledged so far are in the
    store (they are journaled first and inserted in batches, see writer.py): what a client was
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


def _unix(t: datetime | None) -> float | None:
    """A naive UTC timestamp from the store as unix seconds."""
    return None if t is None else t.replace(tzinfo=timezone.utc).timestamp()
