"""Alerting: Prometheus rule files (``rules``) evaluated by the PromQL engine over the stored
samples (``evaluator``), Prometheus's alert state machine (``state``) and the alerts sent to
Alertmanager (``notifier``) or to webhooks in Alertmanager's format (``webhook``)."""
