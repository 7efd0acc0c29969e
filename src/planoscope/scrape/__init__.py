"""Scraping: Prometheus-format targets (Envoy's admin /stats/prometheus) stored as samples."""
