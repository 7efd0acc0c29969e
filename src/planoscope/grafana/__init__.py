"""Grafana: the dashboards exported as Grafana JSON with their provisioning files."""
