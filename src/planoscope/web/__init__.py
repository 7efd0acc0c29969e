"""The web port: the UI, the JSON API under /api/v1, /metrics and /healthz."""
