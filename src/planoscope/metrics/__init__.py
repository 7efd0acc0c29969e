"""Span metrics: the OpenTelemetry Collector spanmetrics connector's counters and histograms, on /metrics."""
