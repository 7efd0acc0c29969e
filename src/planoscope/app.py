"""The planoscope process: every long-running part entered on one ``AsyncExitStack`` and torn
down in reverse (receivers stop taking requests, then the writer drains, then the store closes).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import sys
import threading
from datetime import timedelta

from prometheus_client import Gauge
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from .alerting.evaluator import RuleEvaluator
from .alerting.notifier import Alertmanager
from .alerting.rules import RuleError, load_files
from .alerting.webhook import Webhook
from .forward.forwarder import Forwarder, forward_state, parse_destination
from .grafana.dashboard import DashboardError, all_dashboards
from .ingest.admission import Ingest
from .ingest.decode import Decoder, Limits
from .ingest.dedupe import RecentSpans
from .ingest.grpc import GrpcReceiver
from .ingest.http import otlp_http_app
from .ingest.journal import Journal, JournalError
from .ingest.writer import SpanWriter, WriterUnavailable
from .llm.prices import Prices, parse_override
from .metrics.cumulative import Cumulative
from .metrics.llm import LlmMetrics
from .metrics.spanmetrics import SpanMetrics
from .net import fds
from .net.auth import Credentials
from .net.httpserver import HttpServer
from .net.listen import StartupError, bind, bound_address, split_address
from .net.otlp import parse_header
from .scrape.scraper import Scraper
from .settings import Settings, scrape_target
from .store import SpanStore, StoreError, open_store
from .store.retention import Retention
from .store.rollups import Compaction
from .web.app import create_web_app
from .web.routes import prometheus

log = logging.getLogger("planoscope")

# How long a thread may hold the GIL while another waits for it. DuckDB's Python binding takes
# the GIL back after every task of a query to check for Ctrl-C (~8 times a commit), and each time
# the writer waits for whichever thread runs Python: up to 5 ms with Python's default. At 1 ms,
# 7 interleaved pairs of 20 s loads (8 clients) gave a median of 39.0k spans/s against 36.4k.
GIL_SWITCH_INTERVAL = 0.001
SELF_JOB = "planoscope"  # the job label of planoscope's own metrics, as a Prometheus job scraping it would name it


class Planoscope:
    """The running server. Example::

    async with Planoscope(Settings(data_dir=tmp, listen="127.0.0.1:0")) as p:
        print(p.addresses["listen"])
    """

    def __init__(self, settings: Settings):
        self.settings = settings
        self.addresses: dict[str, str] = {}
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Planoscope:
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, *exc) -> None:
        await self._stack.aclose()

    def left_in_journal(self) -> str | None:
        """After the stop: what it could not insert into the store (acknowledged spans kept only
        in the journal, for the next start), or None when everything is in."""
        writer = getattr(self, "writer", None)
        if writer is None or not writer.pending_spans:
            return None
        reason = f" (the store could not be written: {writer.last_error})" if writer.last_error else ""
        return (
            f"{writer.pending_spans} acknowledged spans are still only in the journal{reason}; "
            "they will be inserted on the next start"
        )

    async def _start(self) -> None:
        s = self.settings
        stack = self._stack
        sys.setswitchinterval(GIL_SWITCH_INTERVAL)
        try:  # first: a bad rule file stops the start before anything is opened
            rule_groups = load_files(s.rules)
        except RuleError as e:
            raise StartupError(str(e)) from None
        try:
            dashboards = all_dashboards(s.dashboard)
        except DashboardError as e:
            raise StartupError(str(e)) from None
        try:
            self.store = store = open_store(s.store, s.data_dir, s.retention)
        except StoreError as e:
            raise StartupError(str(e)) from None
        stack.callback(store.close)
        prices = Prices(parse_override(p) for p in s.llm_prices)
        try:
            with store.starting():
                _fill_new_columns(store, prices)
        except StoreError as e:
            raise StartupError(str(e)) from None
        self.metrics = metrics = SpanMetrics(
            s.metrics_namespace, s.metrics_dimensions, s.metrics_buckets_ms, s.metrics_cardinality_limit
        )
        self.llm_metrics = LlmMetrics(s.metrics_cardinality_limit)
        metric_sets: list[Cumulative] = [metrics, self.llm_metrics]
        recent = RecentSpans(s.dedupe_window, s.dedupe_max_spans)
        try:
            with store.starting():  # every read before the first write: a corrupt file fails unchanged
                watermarks = [_restore_metrics(store, m) for m in metric_sets]
                recent.add(store.recent_span_keys(timedelta(seconds=s.dedupe_window), s.dedupe_max_spans // 2))
                for m, mark in zip(metric_sets, watermarks):
                    store.save_metric_totals(m.snapshot(), mark, m.fingerprint, replace=True, name=m.name)
        except StoreError as e:
            raise StartupError(str(e)) from None
        watermark = max((w for w in watermarks if w is not None), default=None)

        _check_exposure(s)
        # Bind every port before serving anything, so a taken port fails the start cleanly.
        web_sock = bind(s.listen, "the UI, API and /metrics")
        stack.callback(web_sock.close)
        http_sock = bind(s.otlp_http, "OTLP/HTTP")
        stack.callback(http_sock.close)

        limits = Limits(s.max_attribute_value_bytes, s.max_attributes_per_span, s.max_spans_per_request)
        decoder = Decoder(metrics.dimensions, limits=limits, prices=prices, maps=store.attribute_maps)
        try:
            journal = Journal(s.data_dir / "journal")
        except OSError as e:
            raise StartupError(f"cannot create the journal in {s.data_dir}: {e.strerror}") from None
        except JournalError as e:
            raise StartupError(str(e)) from None
        try:
            with store.starting():
                writer = SpanWriter(
                    store,
                    metric_sets,
                    recent,
                    journal,
                    decoder,
                    apply_bytes=s.max_queued_bytes // 2,
                    watermark=watermark,
                )
            self.writer = await stack.enter_async_context(writer)
        except (StoreError, WriterUnavailable) as e:  # the journal's leftovers could not go in
            store.failed = True  # a full disk or a damaged file: nothing more is written into it
            raise StartupError(str(e)) from None
        except JournalError as e:
            raise StartupError(str(e)) from None
        except OSError as e:  # the journal cannot be read
            raise StartupError(f"cannot read the journal in {journal.directory}: {e.strerror or e}") from None
        if store.samples_head is not None:  # PromQL's last hours in memory, read while the rest starts
            threading.Thread(target=store.samples_head.ensure_loaded, name="samples-head", daemon=True).start()
        self.retention = retention = await stack.enter_async_context(Retention(writer, store, s.retention))
        rollups = getattr(store, "rollups", None)  # the samples thinned for long PromQL ranges (DuckDB)
        if rollups is not None:
            await stack.enter_async_context(Compaction(writer, store.compact_rollups))
        self.scraper = scraper = Scraper(
            writer,
            [scrape_target(t) for t in s.scrape],
            s.scrape_interval,
            s.scrape_timeout,
            s.scrape_metrics,
            s.scrape_max_bytes,
        )
        ingest = await stack.enter_async_context(
            Ingest(writer, decoder, max_queued_bytes=s.max_queued_bytes, retry_delay=s.overload_retry_delay)
        )
        try:
            state = forward_state(store)
        except ValueError as e:
            raise StartupError(str(e)) from None
        headers = [parse_header(h) for h in s.forward_otlp_headers]
        self.forwarders = forwarders = [
            Forwarder(store, parse_destination(url, headers), state, ingesting=lambda: writer.spans_written)
            for url in s.forward_otlp
        ]
        web_auth = Credentials(token=s.auth_token, basic=s.auth_basic)
        otlp_auth = Credentials(token=s.otlp_token)
        # Each listener holds at most its share of the file descriptors, so that no flood of
        # connections to one port leaves the others unable to accept.
        shares = fds.listener_shares()
        stack.enter_context(fds.throttled_accept_errors(asyncio.get_running_loop()))
        web_app = create_web_app(
            store,
            metric_sets,
            writer,
            scraper,
            web_auth,
            ingest,
            retention,
            forwarders,
            s.max_series_per_panel,
            dashboards,
            prometheus.limits(s.promql_max_samples, s.promql_max_series),
        )
        # What a Prometheus scraping /metrics would store, for the Prometheus API: read in process
        # (no HTTP, so auth is no obstacle), job "planoscope", instance the address it would scrape.
        if s.scrape_self_metrics:
            scraper.add_local(SELF_JOB, bound_address(web_sock), web_app.state.registry.collect, s.scrape_self_metrics)
        if s.llm_cost_budget_usd_per_hour:  # what the plano rules compare the hourly spend with
            Gauge(
                "planoscope_llm_cost_budget_usd_per_hour",
                "The LLM spend per hour the alerting rules allow (llm_cost_budget_usd_per_hour)",
                registry=web_app.state.registry,
            ).set(s.llm_cost_budget_usd_per_hour)
        if store.samples_head is not None:
            head = store.samples_head
            Gauge(
                "planoscope_samples_head_samples",
                "Samples of the last hours held in memory for PromQL (0 until read on start, or past its limit)",
                registry=web_app.state.registry,
            ).set_function(lambda: head.held if head.loaded else 0)
        if rollups is not None:
            watermark = Gauge(
                "planoscope_samples_rollup_watermark_seconds",
                "Where the samples thinned for PromQL end, per resolution in seconds (0: none yet)",
                ["resolution"],
                registry=web_app.state.registry,
            )
            for r in rollups.resolutions:
                watermark.labels(str(r // 1000)).set_function(lambda r=r: (rollups.watermark(r) or 0) / 1000)
        external_url = s.external_url or f"http://{bound_address(web_sock)}"
        senders: list = [Alertmanager(url) for url in s.alertmanager_url]
        senders += [
            Webhook(
                url,
                s.alert_group_by,
                s.alert_group_wait,
                s.alert_group_interval,
                s.alert_repeat_interval,
                external_url,
            )
            for url in s.alert_webhook
        ]
        self.rules = RuleEvaluator(
            rule_groups,
            store,
            writer,
            s.evaluation_interval,
            senders,
            scraper.instances,
            prometheus.limits(s.promql_max_samples, s.promql_max_series),
            external_url,
            s.alert_resend_delay,
        )
        web_app.state.rules = self.rules
        if rule_groups:
            web_app.state.registry.register(self.rules)
        await stack.enter_async_context(HttpServer(web_app, web_sock, shares.http, "UI"))
        otlp_http = await stack.enter_async_context(
            HttpServer(
                otlp_http_app(
                    ingest, s.max_request_bytes, otlp_auth, s.max_concurrent_requests, s.otlp_request_timeout
                ),
                http_sock,
                shares.http,
                "OTLP/HTTP",
            )
        )
        if not s.otlp_grpc.endswith(":0"):
            bind(s.otlp_grpc, "OTLP/gRPC").close()  # gRPC's own bind error says little: check first
        try:
            grpc_rx = await stack.enter_async_context(
                GrpcReceiver(
                    s.otlp_grpc,
                    ingest,
                    s.max_request_bytes,
                    otlp_auth,
                    s.max_concurrent_requests,
                    s.otlp_request_timeout,
                    shares.grpc,
                )
            )
        except OSError as e:
            raise StartupError(f"{e} (OTLP/gRPC)") from None
        # On stop, both receivers stop taking requests at once, then finish what is in flight
        # (one after the other, the second would take new requests while the first drained).
        stack.push_async_callback(_stop_receiving, grpc_rx, otlp_http)
        await stack.enter_async_context(scraper)  # last: a start that fails has scraped nothing
        for forwarder in forwarders:
            await stack.enter_async_context(forwarder)
        for sender in senders:
            await stack.enter_async_context(sender)
        if rule_groups:
            await stack.enter_async_context(self.rules)
        host = s.otlp_grpc.rpartition(":")[0]
        self.addresses = {
            "otlp_grpc": f"{host}:{grpc_rx.port}",
            "otlp_http": bound_address(http_sock),
            "listen": bound_address(web_sock),
        }


def _fill_new_columns(store: SpanStore, prices: Prices) -> None:
    """Fill the columns this version added for the spans an earlier one stored, with a progress
    bar on the terminal: a one-time job on the first start after an upgrade (a 10 M-span store
    takes about a minute), resumed where it was if the start is killed."""
    pending = store.fill_pending()
    if not pending:
        return
    log.info("filling the new columns of %d spans stored by an earlier version (once)", pending)
    columns = [
        TextColumn("[bold]upgrading the store[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("spans"),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("fill", total=pending)
        store.fill(prices.estimate, lambda done, total: bar.update(task, completed=done, total=total))


def _restore_metrics(store: SpanStore, metrics: Cumulative):
    """Load the stored totals of ``metrics`` and count the spans the last snapshot missed (all of
    them when none are stored for these settings); returns the watermark to store them with."""
    stored = store.metric_totals(metrics.fingerprint, metrics.name)
    if stored is None and store.span_count():
        log.info("%s settings changed (or new): recomputing %s from the stored spans", metrics.title, metrics.title)
    totals, watermark = stored or ([], None)
    metrics.load(totals)
    if stored is None:  # a recount of everything: one batch (see Cumulative.replay)
        metrics.replay(metrics.scan(store))
    else:  # the commits the last snapshot missed, one by one as they were counted
        metrics.replay_commits(metrics.scan(store, after=watermark, by_commit=True))
    # Retention may have deleted the spans ingested last: the watermark never goes back.
    return max((w for w in (store.last_ingested(), watermark) if w is not None), default=None)


async def _stop_receiving(grpc_rx: GrpcReceiver, otlp_http: HttpServer) -> None:
    await asyncio.gather(grpc_rx.__aexit__(None, None, None), otlp_http.__aexit__(None, None, None))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def _check_exposure(s: Settings) -> None:
    """Secure by default: the UI and API show every trace, so they stay on loopback unless they
    require credentials or are told to go without."""
    for name, address in (("OTLP/gRPC", s.otlp_grpc), ("OTLP/HTTP", s.otlp_http)):
        if not s.otlp_token and not _is_loopback(split_address(address)[0]):
            log.warning(
                "%s on %s accepts spans from anyone who can reach it: set otlp_token to require a token", name, address
            )
    if s.auth_token or s.auth_basic or _is_loopback(split_address(s.listen)[0]):
        return
    if not s.insecure:
        raise StartupError(
            f"refusing to serve the UI, API and /metrics on {s.listen} without authentication: anyone who can "
            "reach it reads every trace. Set auth_token or auth_basic (PLANOSCOPE_AUTH_TOKEN, "
            "PLANOSCOPE_AUTH_BASIC), listen on 127.0.0.1 behind an authenticating proxy, "
            "or pass --insecure (PLANOSCOPE_INSECURE=true) to serve it anyway"
        )
    log.warning("serving the UI, API and /metrics on %s without authentication (--insecure)", s.listen)
