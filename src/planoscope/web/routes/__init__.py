"""The ``/api/v1`` routes, one ``APIRouter`` module per resource (FastAPI's "bigger applications"
layout); each takes what it needs from the app through ``web/deps.py``."""

from fastapi import APIRouter

from . import metrics, panels, sessions, targets, traces

api = APIRouter(prefix="/api/v1")
for _module in (panels, targets, metrics, traces, sessions):
    api.include_router(_module.router)
