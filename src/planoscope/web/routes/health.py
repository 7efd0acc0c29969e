"""``/healthz``: liveness, and what the data directory holds."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ... import __version__

router = APIRouter()


@router.get("/healthz")
def healthz(request: Request) -> JSONResponse:
    """Liveness: 200 while the writer runs, 503 once it has stopped (a restart helps then);
    ``status`` is ``ok``, ``degraded`` (inserts fail: a full disk, an I/O error; ``problems``
    says why) or ``writer stopped``. Degraded stays 200: a restart frees no disk space and a
    start on a full disk fails, while this process keeps the acknowledged spans in its journal
    and inserts them once the store takes writes again. Also what the data directory holds."""
    state = request.app.state
    store, writer, retention = state.store, state.writer, state.retention
    health = writer.health()
    alive = health["status"] != "writer stopped"
    oldest_span, oldest_sample = store.oldest()
    return JSONResponse(
        {
            **health,
            "version": __version__,
            "uptime_s": round(time.time() - state.started, 3),
            "store": store.describe(),
            "spans_written": writer.spans_written,
            "commits": writer.commits,
            "disk_bytes": store.disk_bytes(),
            "oldest_span": _unix(oldest_span),
            "oldest_sample": _unix(oldest_sample),
            "retention_s": retention.keep_s if retention else None,
            "retention_last_run": retention.last_run if retention else None,
            "retention_deleted": {"spans": retention.spans_deleted, "samples": retention.samples_deleted}
            if retention
            else None,
            "forwarding": [f.health() for f in state.forwarders],
        },
        status_code=200 if alive else 503,
    )


def _unix(t: datetime | None) -> float | None:
    """A naive UTC timestamp from the store as unix seconds."""
    return None if t is None else t.replace(tzinfo=UTC).timestamp()
