"""``/metrics``: planoscope's own metrics (span metrics, LLM metrics, ingest, scrapes) in Prometheus' text or
OpenMetrics format, as the client asks with ``Accept``."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client.exposition import choose_encoder

router = APIRouter()


@router.get("/metrics", include_in_schema=False)
def prometheus_metrics(request: Request) -> Response:
    encoder, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encoder(request.app.state.registry), media_type=content_type)
