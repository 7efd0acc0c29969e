"""Settings: one typed object, built once at the edge from a YAML file, ``PLANOSCOPE_*``
environment variables and command-line flags (in rising precedence).

Every setting has the same name in all three places: ``data_dir`` in YAML is
``PLANOSCOPE_DATA_DIR`` in the environment and ``--data-dir`` on the command line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from .llm.prices import parse_override
from .metrics.spanmetrics import DEFAULT_BUCKETS_MS, DEFAULT_CARDINALITY_LIMIT, DEFAULT_DIMENSIONS
from .query.panels import DEFAULT_MAX_SERIES

ENV_PREFIX = "PLANOSCOPE_"


class ConfigError(ValueError):
    """A one-line, user-facing description of a bad setting."""


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_duration(v: Any) -> float:
    """``90``, ``"90s"``, ``"10m"``, ``"7d"`` → seconds."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    m = _DURATION.match(str(v))
    if not m:
        raise ValueError(f"not a duration: {v!r} (use e.g. 30s, 10m, 7d)")
    return float(m.group(1)) * _UNITS[m.group(2)]


def _split_list(v: Any) -> Any:
    if isinstance(v, str):
        return [x.strip() for x in v.split(",") if x.strip()]
    return v


def parse_address(v: Any) -> str:
    """``host:port`` (``[v6]:port`` for IPv6); port 0 picks a free one."""
    s = str(v).strip()
    m = re.match(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$", s)
    if not m or int(m.group(2)) > 65535:
        raise ValueError(f"not a HOST:PORT address: {v!r}")
    return s


def scrape_target(v: str) -> tuple[str, str]:
    """``"http://h:9901/stats/prometheus"`` → ``("h:9901", url)``; ``"edge=http://…"`` → ``("edge", url)``."""
    label, sep, url = v.partition("=")
    if not sep or "://" in label:
        label, url = "", v
    m = re.match(r"^https?://([^/?#@\s]+)(?:[/?#]\S*)?$", url.strip())
    if not m:
        raise ValueError(f"not an http(s) URL: {url!r}")
    return (label.strip() or m.group(1)), url.strip()


Duration = Annotated[float, BeforeValidator(parse_duration)]
Address = Annotated[str, BeforeValidator(parse_address)]
StrList = Annotated[list[str], BeforeValidator(_split_list)]
FloatList = Annotated[list[float], BeforeValidator(_split_list)]


def _price_list(v: Any) -> Any:
    """Prices as ``MODEL=IN/OUT[/CACHED[/WRITE]]`` strings (comma-separated, or a list of them), or,
    in a config file, a mapping of model to ``{input, output, cached_input, cache_write}``."""
    if isinstance(v, dict):
        out = []
        for model, p in v.items():
            if not isinstance(p, dict):
                raise ValueError(
                    f"the price of {model!r} must be a mapping of input, output, cached_input, cache_write"
                )
            unknown = set(p) - {"input", "output", "cached_input", "cache_write"}
            if unknown:
                raise ValueError(f"unknown price field {sorted(unknown)[0]!r} for {model!r}")
            parts = [p.get(k) for k in ("input", "output", "cached_input", "cache_write")]
            out.append(f"{model}=" + "/".join("" if x is None else str(x) for x in parts))
        v = out
    v = _split_list(v)
    for text in v if isinstance(v, list) else []:
        parse_override(str(text))
    return v


PriceList = Annotated[list[str], BeforeValidator(_price_list)]


class Settings(BaseModel):
    """Everything planoscope can be told. Field descriptions are the reference documentation."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    data_dir: Path = Field(
        Path("planoscope-data"), description="Directory of the database and the journal; created on first run."
    )
    store: str = Field(
        "duckdb",
        repr=False,
        description="Where spans go: duckdb (a file in data_dir) or clickhouse://[USER[:PASSWORD]@]HOST:PORT/DATABASE "
        "(ClickHouse's HTTP interface; clickhouses:// for TLS), in the OpenTelemetry Collector ClickHouse "
        "exporter's otel_traces tables, which any number of planoscope instances and collectors share "
        "(docs/scale-out.md). The password is never shown; prefer the environment or the config file to a flag.",
    )
    otlp_grpc: Address = Field("127.0.0.1:4317", description="OTLP/gRPC listen address (HOST:PORT; port 0 picks one).")
    otlp_http: Address = Field("127.0.0.1:4318", description="OTLP/HTTP listen address for POST /v1/traces.")
    listen: Address = Field("127.0.0.1:9000", description="Address of the UI, the query API, /metrics and /healthz.")
    metrics_namespace: str = Field(
        "",
        description="Prefix of span-metric names: empty gives calls_total (collector 0.102, the reference "
        "dashboard); traces_span_metrics gives the names of newer collectors.",
    )
    metrics_dimensions: StrList = Field(
        list(DEFAULT_DIMENSIONS),
        description="Span (or resource) attributes added as span-metric labels, dots turned into underscores.",
    )
    metrics_buckets_ms: FloatList = Field(
        list(DEFAULT_BUCKETS_MS), description="Upper bounds of the span-duration histogram, in milliseconds."
    )
    metrics_cardinality_limit: int = Field(
        DEFAULT_CARDINALITY_LIMIT,
        ge=1,
        description="Series per metric of the span metrics and of the LLM metrics, as the spanmetrics "
        "connector's aggregation_cardinality_limit: beyond it, spans of a series not seen before are counted "
        'in one series labelled otel_metric_overflow="true" (known series keep counting).',
    )
    dashboard: StrList = Field(
        [],
        description="Grafana dashboard JSON files whose panels query a Prometheus datasource, shown "
        "beside the built-in dashboards and drawn through planoscope's PromQL engine.",
    )
    max_series_per_panel: int = Field(
        DEFAULT_MAX_SERIES,
        ge=1,
        le=1000,
        description="Series a dashboard panel draws: the top ones by value over the range, "
        "the rest summed into one series named other (the latency panel: top models by requests, the "
        "quantiles of all other models' spans together; LLM Usage: the top models by calls on every panel).",
    )
    dedupe_window: Duration = Field(
        "10m",
        validate_default=True,
        description="How long a stored span's id is remembered, so a client's retry is not stored twice.",
    )
    retention: Duration = Field(
        "7d",
        validate_default=True,
        ge=0,
        description="Spans (by start time) and scraped samples older than this "
        "are deleted in the background; 0 keeps everything.",
    )
    dedupe_max_spans: int = Field(
        1_000_000, ge=0, description="At most this many span ids are remembered (about 100 bytes each)."
    )
    max_request_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, description="Largest OTLP request accepted, after decompression."
    )
    max_queued_bytes: int = Field(
        256 * 1024 * 1024,
        ge=1024,
        description="Bytes of OTLP requests accepted and not yet in the database "
        "(being decoded, journaled, or acknowledged and waiting to be inserted); beyond it a request is refused "
        "with a retryable error and a retry delay (gRPC UNAVAILABLE, HTTP 503).",
    )
    max_concurrent_requests: int = Field(
        64,
        ge=1,
        description="OTLP requests each receiver takes at once, from their headers to their answer; more are "
        "refused before their body is read, with a retryable error (gRPC RESOURCE_EXHAUSTED, HTTP 503).",
    )
    otlp_request_timeout: Duration = Field(
        "30s",
        validate_default=True,
        gt=0,
        le=3600,
        description="Time an OTLP client may take to send one request once its headers are in (gRPC: the "
        "message, HTTP: the body); slower ones are refused (gRPC DEADLINE_EXCEEDED, HTTP 408), and one still "
        "sending gives its place to a new request when all max_concurrent_requests are taken.",
    )
    overload_retry_delay: Duration = Field(
        "1s",
        validate_default=True,
        gt=0,
        le=60,
        description="The retry delay suggested to a client refused for overload (jittered by \u00b150%).",
    )
    max_spans_per_request: int = Field(
        100_000, ge=1, description="A request holding more spans is refused whole (gRPC INVALID_ARGUMENT, HTTP 400)."
    )
    max_attribute_value_bytes: int = Field(
        8192,
        ge=16,
        description="An attribute value longer than this (in UTF-8 bytes of its string form) is cut "
        "to it and marked with a trailing \u2026; the client is told through partial success.",
    )
    max_attributes_per_span: int = Field(
        128,
        ge=1,
        description="Attributes kept per span (and per resource, event and link); the rest are "
        "dropped and the client told through partial success (the OpenTelemetry SDKs' default limit).",
    )
    scrape: StrList = Field(
        ["envoy=http://127.0.0.1:9901/stats/prometheus", "brightstaff=http://127.0.0.1:9092/metrics"],
        description="Prometheus-format targets scraped for samples (Envoy's admin /stats/prometheus, "
        "brightstaff's /metrics), each URL or LABEL=URL (the label is the samples' job); empty: no scraping.",
    )
    scrape_interval: Duration = Field(
        "15s", validate_default=True, gt=0, description="Time between two scrapes of a target."
    )
    scrape_timeout: Duration = Field(
        "10s", validate_default=True, gt=0, description="A scrape slower than this (or than scrape_interval) fails."
    )
    scrape_metrics: StrList = Field(
        ["envoy_wasmcustom_*", "envoy_cluster_upstream_rq*", "brightstaff_*", "process_*"],
        description="Globs of the sample names kept from a scrape (* keeps all): by default what the "
        "Requests Overview and Plano's brightstaff dashboard query.",
    )
    scrape_max_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="A scrape whose body is larger than this fails."
    )
    scrape_self_metrics: StrList = Field(
        ["*"],
        description="Globs of planoscope's own /metrics sample names stored every scrape_interval as job "
        "planoscope, as a Prometheus scraping it would (for the Prometheus API); empty: none stored.",
    )
    promql_max_samples: int = Field(
        10_000_000,
        ge=1,
        description="Samples one PromQL query (/prometheus/api/v1) may load or hold at once; a query over "
        "more fails with Prometheus's error (422). Prometheus's --query.max-samples, lower: loading a sample "
        "takes ~85 bytes at the peak here (850 MB at this default; a day of 1,000 series every 15 s is 5.8 M).",
    )
    promql_max_series: int = Field(
        100_000,
        ge=1,
        description="Series one PromQL query, series or label listing may select from the store; more fails "
        "with Prometheus's error (422).",
    )
    rules: StrList = Field(
        [],
        description="Prometheus rule files (alerting and recording rules) evaluated over the stored samples "
        "every evaluation_interval; plano: the alerts planoscope ships for Plano (docs/alerting.md).",
    )
    evaluation_interval: Duration = Field(
        "15s", validate_default=True, gt=0, description="Time between two evaluations of a rule group."
    )
    alertmanager_url: StrList = Field(
        [],
        description="Alertmanagers firing and resolved alerts are sent to (their v2 API, e.g. "
        "http://127.0.0.1:9093), as Prometheus sends them.",
    )
    alert_resend_delay: Duration = Field(
        "1m",
        validate_default=True,
        gt=0,
        description="How often a firing alert is sent to the Alertmanagers again (Prometheus's "
        "--rules.alert.resend-delay).",
    )
    alert_webhook: StrList = Field(
        [],
        description="URLs sent Alertmanager's webhook notifications without an Alertmanager: alerts grouped "
        "by alert_group_by, after alert_group_wait, repeated every alert_repeat_interval.",
    )
    alert_group_by: StrList = Field(["alertname"], description="Labels whose values group alerts for alert_webhook.")
    alert_group_wait: Duration = Field(
        "30s", validate_default=True, ge=0, description="How long a new group waits for more alerts before it is sent."
    )
    alert_group_interval: Duration = Field(
        "5m", validate_default=True, gt=0, description="How often a group is sent again when its alerts change."
    )
    alert_repeat_interval: Duration = Field(
        "4h", validate_default=True, gt=0, description="How often a firing group is sent again when nothing changed."
    )
    external_url: str = Field(
        "",
        description="planoscope's URL as the receivers of alerts reach it (their links); empty: http://LISTEN.",
    )
    llm_cost_budget_usd_per_hour: float = Field(
        0.0,
        ge=0,
        description="LLM spend per hour the plano rules alert beyond (exposed on /metrics as "
        "planoscope_llm_cost_budget_usd_per_hour); 0: no budget.",
    )
    forward_otlp: StrList = Field(
        [],
        description="OTLP endpoints every stored span is passed on to (Tempo, Jaeger, a collector): "
        "grpc://HOST:PORT, grpcs://HOST:PORT or http(s)://HOST:PORT[/v1/traces]. Retried from the store "
        "until acknowledged.",
    )
    llm_prices: PriceList = Field(
        [],
        description="Prices of models, overriding the genai-prices table (or adding models it does not know) "
        "for calls sent without a cost: MODEL=INPUT/OUTPUT[/CACHED_INPUT[/CACHE_WRITE]] in USD per million "
        "tokens, MODEL as sent (openai/gpt-4o) or without its provider prefix; e.g. my-model=0.5/1.5. "
        "Calls of a model neither knows have no estimated cost.",
    )
    forward_otlp_headers: StrList = Field(
        [],
        description="Headers sent with every forwarded request (gRPC metadata or HTTP headers), each "
        "NAME=VALUE, e.g. authorization=Bearer TOKEN; for all forward_otlp destinations. A URL's USER:PASSWORD@ "
        "is sent as basic auth instead and never shown. Prefer the environment or the config file to a flag.",
    )
    auth_token: str = Field(
        "",
        description="Bearer token the UI, the API and /metrics require (Authorization: Bearer TOKEN); "
        "empty: none. Prefer the environment or the config file to a flag, which other users can see in ps.",
    )
    auth_basic: str = Field(
        "",
        description="USER:PASSWORD the UI, the API and /metrics require as HTTP basic auth (browsers "
        "prompt for it); empty: none. Either auth setting allows a non-loopback --listen address.",
    )
    otlp_token: str = Field(
        "",
        description="Bearer token both OTLP receivers require (gRPC metadata or HTTP header "
        "authorization: Bearer TOKEN); empty: OTLP is open to whoever reaches its ports.",
    )
    insecure: bool = Field(
        False,
        description="Serve the UI, the API and /metrics on a non-loopback --listen address without "
        "authentication (refused otherwise, unless auth_token or auth_basic is set: anyone who can reach the "
        "port reads every trace).",
    )
    log_level: str = Field("info", description="debug, info, warning or error.")

    @field_validator("metrics_buckets_ms")
    @classmethod
    def _increasing(cls, v: list[float]) -> list[float]:
        if not v or any(b <= a for a, b in zip(v, v[1:])) or v[0] <= 0:
            raise ValueError("must be positive and strictly increasing")
        return v

    @field_validator("metrics_namespace")
    @classmethod
    def _namespace(cls, v: str) -> str:
        if v and not re.match(r"^[A-Za-z_][A-Za-z0-9_.]*$", v):
            raise ValueError("must start with a letter or _ and hold only letters, digits, _ and .")
        return v

    @field_validator("scrape")
    @classmethod
    def _targets(cls, v: list[str]) -> list[str]:
        labels = [scrape_target(t)[0] for t in v]
        dup = next((x for x in labels if labels.count(x) > 1), None)
        if dup:
            raise ValueError(f"two targets are labelled {dup!r}; name them LABEL=URL")
        return v

    @field_validator("alertmanager_url", "alert_webhook", "external_url")
    @classmethod
    def _http_urls(cls, v):
        for url in [v] if isinstance(v, str) else v:
            if url and not re.match(r"^https?://[^/\s]+", url):
                raise ValueError(f"{url!r} is not an http:// or https:// URL")
        return v

    @field_validator("forward_otlp")
    @classmethod
    def _destinations(cls, v: list[str]) -> list[str]:
        from .forward.forwarder import parse_destination

        dests = [parse_destination(u) for u in v]
        shown = [d.shown for d in dests]  # never the URL's password, even in an error
        dup = next((u for u in shown if shown.count(u) > 1), None)
        if dup:
            raise ValueError(f"{dup!r} is given twice")
        return [d.url for d in dests]

    @field_validator("store")
    @classmethod
    def _store(cls, v: str) -> str:
        from .store.clickhouse_url import ClickHouseURL, is_clickhouse

        if v.strip().lower() == "duckdb":
            return "duckdb"
        if is_clickhouse(v):
            ClickHouseURL.parse(v)  # a ValueError that never holds the password
            return v.strip()
        scheme, sep, rest = v.strip().partition("://")
        shown = f"{scheme}://{rest.rpartition('@')[2]}" if sep else v.strip().rpartition("@")[2]
        raise ValueError(f"{shown!r}: use duckdb or clickhouse://[USER[:PASSWORD]@]HOST:PORT/DATABASE")

    @field_validator("forward_otlp_headers")
    @classmethod
    def _headers(cls, v: list[str]) -> list[str]:
        from .net.otlp import parse_header

        for h in v:
            parse_header(h)
        return v

    @field_validator("auth_token", "otlp_token")
    @classmethod
    def _token(cls, v: str) -> str:
        if v and not re.match(r"^[\x21-\x7e]+$", v):
            raise ValueError("must be printable ASCII without spaces (it is sent in an HTTP header)")
        if v and len(v) < 16:
            raise ValueError("must be at least 16 characters long (try: openssl rand -hex 16)")
        return v

    @field_validator("auth_basic")
    @classmethod
    def _user_password(cls, v: str) -> str:
        user, sep, password = v.partition(":")
        if v and (not sep or not user or not password):
            raise ValueError("must be USER:PASSWORD, both non-empty")
        if v and any(ord(c) < 0x20 or ord(c) == 0x7F for c in v):
            raise ValueError("must not contain control characters")
        return v

    @field_validator("log_level")
    @classmethod
    def _level(cls, v: str) -> str:
        if v.lower() not in ("debug", "info", "warning", "error"):
            raise ValueError("must be debug, info, warning or error")
        return v.lower()


def env_name(key: str) -> str:
    return ENV_PREFIX + key.upper()


def load_yaml(path: Path) -> dict[str, Any]:
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}" if where else ""
        raise ConfigError(f"config file {path} is not valid YAML{at}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError(f"config file {path} must be a mapping of setting: value")
    return doc


def build_settings(config_file: Path | None, environ: Mapping[str, str], flags: Mapping[str, Any]) -> Settings:
    """Merge file < environment < flags into ``Settings``; raises ``ConfigError`` naming the key."""
    fields = Settings.model_fields
    sources: dict[str, str] = {}
    merged: dict[str, Any] = {}
    if config_file is not None:
        for key, value in load_yaml(config_file).items():
            if key not in fields:
                raise ConfigError(f"unknown setting {key!r} in {config_file} (known: {', '.join(fields)})")
            merged[key] = value
            sources[key] = str(config_file)
    for key in fields:
        if env_name(key) in environ:
            merged[key] = environ[env_name(key)]
            sources[key] = env_name(key)
    for key, value in flags.items():
        if value is not None:
            merged[key] = value
            sources[key] = "--" + key.replace("_", "-")
    try:
        return Settings.model_validate(merged)
    except ValidationError as e:
        err = e.errors()[0]
        key = str(err["loc"][0]) if err["loc"] else "?"
        msg = err["msg"].removeprefix("Value error, ")
        src = sources.get(key)
        raise ConfigError(f"bad value for {key}" + (f" (from {src})" if src else "") + f": {msg}") from None
