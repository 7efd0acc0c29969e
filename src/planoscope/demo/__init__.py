"""The demo: simulated Plano traffic, a fake Envoy admin endpoint and a load generator (used by the CLI only)."""
