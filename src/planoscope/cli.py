"""The command line. It only parses: flags, environment and config file become one
``Settings``, which is handed to the app. Every ``serve`` option is generated from the
``Settings`` fields, so the flags, the environment variables and the docs cannot drift apart.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
import time
from pathlib import Path

import click

from . import __version__
from .net.fds import raise_limit as raise_fd_limit
from .settings import ConfigError, Settings, build_settings, env_name


def _default_text(value) -> str:
    if isinstance(value, list):
        return ",".join(str(int(v)) if isinstance(v, float) and v == int(v) else str(v) for v in value)
    return str(value) if value != "" else '""'


def settings_options(func):
    """Add one ``--flag`` per ``Settings`` field, defaulting to None (= not given). A list's flag
    may be repeated (``--scrape A --scrape B``), each value comma-separated or not."""
    for name, field in reversed(list(Settings.model_fields.items())):
        help_text = f"{field.description} [default: {_default_text(field.default)}; env: {env_name(name)}]"
        flag = "--" + name.replace("_", "-")
        if isinstance(field.default, bool):  # a switch: --insecure, no value
            func = click.option(flag, name, is_flag=True, flag_value=True, default=None, help=help_text)(func)
            continue
        many = isinstance(field.default, list)
        func = click.option(
            flag, name, default=None, metavar="VALUE", multiple=many, help=help_text + (" (repeatable)" if many else "")
        )(func)
    return click.option(
        "--config",
        "config_file",
        type=click.Path(path_type=Path),
        default=None,
        help=f"YAML file of settings (same names as the options, with underscores). [env: {env_name('config')}]",
    )(func)


def load_settings(config_file: Path | None, flags: dict) -> Settings:
    if config_file is None and os.environ.get(env_name("config")):
        config_file = Path(os.environ[env_name("config")])
    flags = {k: (",".join(v) if v else None) if isinstance(v, tuple) else v for k, v in flags.items()}
    try:
        return build_settings(config_file, os.environ, flags)
    except ConfigError as e:
        fail(str(e))


def fail(message: str) -> None:
    click.echo(f"planoscope: error: {message}", err=True)
    sys.exit(2)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="planoscope")
def main() -> None:
    """planoscope: the Plano LLM gateway's observability stack in one process.

    Receives OTLP traces (gRPC and HTTP), stores them in DuckDB, and serves span metrics
    compatible with the OpenTelemetry Collector's spanmetrics connector on /metrics.
    Settings come from --config FILE, PLANOSCOPE_* environment variables and flags, in
    rising precedence.
    """
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # before grpc loads: its INFO lines are noise here


@main.command()
@settings_options
def serve(config_file: Path | None, **flags) -> None:
    """Receive, store and serve Plano's traces until Ctrl-C or SIGTERM.

    Point Plano's tracing.opentracing_grpc_endpoint at http://127.0.0.1:4317.
    """
    settings = load_settings(config_file, flags)
    sys.exit(run_server(settings))


def setup_process(settings: Settings) -> None:
    """What the planoscope process sets once, for serve and demo alike."""
    logging.basicConfig(level=settings.log_level.upper(), format="planoscope: %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per scrape; the scraper logs what matters
    # Every connection takes a descriptor: the common soft limit of 1,024 is a few idle clients away.
    raise_fd_limit()


def freeze_start_objects() -> None:
    """Take what the start made (modules, settings, the price table, the app: ~120 k objects)
    out of the cyclic garbage collector's reach. Each full collection walked them all, ~80 ms
    on this VM, and a dashboard refresh allocates enough to set one off about every other
    time: the LLM Usage dashboard's 1 h refresh over HTTP took 160–200 ms with them, ~70 ms
    without (benchmarks/dashboard.py). They live as long as the process anyway."""
    gc.collect()
    gc.freeze()


def stop_event() -> asyncio.Event:
    """An event set by SIGINT (Ctrl-C) or SIGTERM: the process' signal to stop cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def listening_lines(settings: Settings, app) -> list[str]:
    """The start-up lines scripts and tests parse: one per listener."""
    a = app.addresses
    store = app.store.describe()
    return [
        f"planoscope {__version__}: data in {settings.data_dir.resolve()} ({app.store.span_count()} spans)",
        *([f"planoscope: spans stored in ClickHouse at {store['url']}"] if store["kind"] == "clickhouse" else []),
        f"planoscope: OTLP/gRPC listening on {a['otlp_grpc']}",
        f"planoscope: OTLP/HTTP listening on http://{a['otlp_http']}/v1/traces",
        f"planoscope: UI, API and /metrics on http://{a['listen']}",
    ]


def run_server(settings: Settings) -> int:
    setup_process(settings)
    return asyncio.run(_serve(settings))


async def _serve(settings: Settings) -> int:
    from .app import Planoscope
    from .net.listen import StartupError

    stop = stop_event()
    app = Planoscope(settings)
    try:
        await app.__aenter__()
    except StartupError as e:
        print(f"planoscope: error: {e}", file=sys.stderr, flush=True)
        return 1
    except Exception as e:  # unforeseen: still one line (the traceback at --log-level debug)
        logging.getLogger("planoscope").debug("the start failed", exc_info=True)
        print(f"planoscope: error: cannot start: {_one_line(e)}", file=sys.stderr, flush=True)
        return 1
    freeze_start_objects()
    try:
        print("\n".join([*listening_lines(settings, app), "planoscope: ready"]), flush=True)
        await stop.wait()
        print("planoscope: stopping: finishing in-flight requests", flush=True)
    finally:
        await app.__aexit__(None, None, None)
    return stopped(app)


def stopped(app) -> int:
    """The last line of a stop and its exit code: 0 only when every acknowledged span is in the store."""
    left = app.left_in_journal()
    if left:
        print(f"planoscope: error: {left}", file=sys.stderr, flush=True)
        return 1
    print("planoscope: stopped", flush=True)
    return 0


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


@main.command()
@click.option(
    "--target",
    required=True,
    metavar="HOST:PORT",
    help="OTLP endpoint: HOST:PORT for gRPC; HOST:PORT or a URL for HTTP (path /v1/traces).",
)
@click.option("--protocol", type=click.Choice(["grpc", "http"]), default="grpc", show_default=True)
@click.option(
    "--spans",
    type=click.IntRange(min=1),
    default=None,
    help="Send this many spans, then stop. [default: 100000 unless --duration is given]",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0.1),
    default=None,
    metavar="SECONDS",
    help="Send for this many seconds, then stop.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=1),
    default=None,
    metavar="SPANS_PER_S",
    help="Send at most this many spans per second. [default: as fast as acknowledged]",
)
@click.option(
    "--batch", type=click.IntRange(1, 100_000), default=512, show_default=True, help="Spans per export request."
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 256),
    default=4,
    show_default=True,
    help="Export requests in flight at once.",
)
@click.option("--gzip", is_flag=True, help="Compress requests with gzip.")
def load(
    target: str,
    protocol: str,
    spans: int | None,
    duration: float | None,
    rate: float | None,
    batch: int,
    concurrency: int,
    gzip: bool,
) -> None:
    """Send Plano-shaped OTLP spans (~16 attributes each, one service a request, as Plano sends
    them) to TARGET and report what was acknowledged.

    Each span gets fresh ids, so nothing is de-duplicated away. Retryable errors are retried with
    backoff. Example: planoscope load --target 127.0.0.1:4317 --duration 30
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .demo.loadgen import run_load

    console = Console(stderr=True)
    total = spans if spans is not None else (None if duration else 100_000)
    columns = [
        TextColumn("[bold]load[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("spans acked"),
        TimeElapsedColumn(),
    ]
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("load", total=total)
        res = asyncio.run(
            run_load(
                target,
                protocol,
                spans,
                duration,
                rate,
                batch,
                concurrency,
                gzip,
                progress=lambda n: progress.advance(task, n),
            )
        )
    click.echo(f"sent:         {res.sent}")
    click.echo(f"acknowledged: {res.acknowledged}")
    click.echo(f"rejected:     {res.rejected}")
    click.echo(f"retried:      {res.retried} requests")
    click.echo(f"failed:       {res.failed}" + (f" ({res.errors})" if res.errors else ""))
    click.echo(f"seconds:      {res.seconds:.2f}")
    click.echo(f"acked spans/s: {res.acked_per_s:,.0f}")
    if res.failed:
        sys.exit(1)


DEMO_DATA_DIR = Path("planoscope-data/demo")  # its own database, never serve's (and git-ignored with it)


@main.command()
@settings_options
@click.option(
    "--rate",
    type=click.FloatRange(min=0.01, max=1000),
    default=5.0,
    show_default=True,
    metavar="REQUESTS_PER_S",
    help="Average simulated gateway requests (traces) per second. Bursts and a slow drift "
    "(time of day, tens of minutes) vary the rate around it.",
)
@click.option(
    "--mix",
    default="llm=0.65,agent=0.3,routing=0.05",
    show_default=True,
    metavar="KIND=SHARE,...",
    help="Shares of the request kinds, normalized: llm (a direct LLM call: plano(llm) → "
    "plano(routing), plano(outbound)), agent (plano(inbound) → plano(orchestrator) → "
    "plano(filter)s, plano(agent) → plano(llm)s) and routing (/routing/*: a plano(routing) "
    "routing_decision). A kind left out is not sent.",
)
@click.option(
    "--seed",
    type=int,
    default=None,
    help="Seed of the simulation: the same seed sends the same traffic for the same time "
    "(and the same span ids, so re-sent traffic is stored once). [default: random, printed]",
)
@click.option(
    "--protocol",
    type=click.Choice(["grpc", "http"]),
    default="grpc",
    show_default=True,
    help="OTLP transport of the simulated gateway.",
)
@click.option(
    "--envoy-port",
    type=click.IntRange(0, 65535),
    default=9901,
    show_default=True,
    help="Port of the fake Envoy admin endpoint (/stats/prometheus) on 127.0.0.1; 0 picks a free one.",
)
@click.option(
    "--brightstaff-port",
    type=click.IntRange(0, 65535),
    default=9092,
    show_default=True,
    help="Port of the fake brightstaff metrics endpoint (/metrics) on 127.0.0.1; 0 picks a free one.",
)
@click.option(
    "--backfill",
    default=None,
    metavar="DURATION",
    help="At start, also send the traffic of this much time before now (e.g. 1h), so the "
    "charts start full.  [default: 15m into an empty store, else 0s]",
)
def demo(
    config_file: Path | None,
    rate: float,
    mix: str,
    seed: int | None,
    protocol: str,
    envoy_port: int,
    brightstaff_port: int,
    backfill: str,
    **flags,
) -> None:
    """Run planoscope with simulated Plano traffic: a live dashboard without Plano.

    Starts the server (the options of serve; the data goes to planoscope-data/demo unless a data
    directory is given) and a simulated Plano 0.4.28+ gateway: brightstaff's and Envoy's spans as
    Plano sends them (one OTLP export per service, batched every ~5 s), a fake Envoy admin
    endpoint with the WASM filter's rate-limit and LLM metrics, and a fake brightstaff /metrics;
    the server scrapes both. The traffic has bursts, 429s, upstream errors and, every few
    minutes, an incident (a rate-limit storm, a provider outage or slowdown); the plano alert rules
    are evaluated (--rules plano), so its 429 storms fire alerts within minutes. Stops on Ctrl-C or
    SIGTERM.

    Example: planoscope demo --rate 10 --mix llm=0.5,agent=0.5 --seed 42 --backfill 15m
    """
    import random

    from .demo.simulate import Simulation, parse_mix
    from .settings import parse_duration

    settings = load_settings(config_file, flags)
    if "data_dir" not in settings.model_fields_set:
        settings = settings.model_copy(update={"data_dir": DEMO_DATA_DIR})
    try:
        shares = parse_mix(mix)
    except ValueError as e:
        fail(f"bad value for --mix: {e}")
    try:
        backfill_s = None if backfill is None else parse_duration(backfill)
    except ValueError as e:
        fail(f"bad value for --backfill: {e}")
    seed = random.SystemRandom().randrange(1_000_000) if seed is None else seed
    # A storm of 429s from a minute in: the shipped rules fire an alert within minutes of a first look.
    sim = Simulation(rate=rate, mix=shares, seed=seed, opening_at=time.time())
    setup_process(settings)
    sys.exit(asyncio.run(_demo(settings, sim, protocol, envoy_port, brightstaff_port, backfill_s)))


DEMO_BACKFILL_S = 900.0


def _scraping(settings: Settings, envoy_url: str, brightstaff_url: str) -> Settings:
    """The demo scrapes its fake Envoy and brightstaff and evaluates the plano rules, unless told
    which targets to scrape or which rules."""
    update = {}
    if "scrape" not in settings.model_fields_set:
        update["scrape"] = [f"envoy={envoy_url}", f"brightstaff={brightstaff_url}"]
    if "rules" not in settings.model_fields_set:  # its 429 storms and outages fire Plano's alerts
        update["rules"] = ["plano"]
    return settings.model_copy(update=update)


async def _demo(
    settings: Settings, sim, protocol: str, envoy_port: int, brightstaff_port: int, backfill_s: float | None
) -> int:
    from .app import Planoscope
    from .demo.brightstaff import BrightstaffStats, FakeBrightstaff
    from .demo.envoy import EnvoyStats, FakeEnvoyAdmin
    from .demo.simulate import OtlpExporter, Player
    from .net.listen import StartupError, split_address

    stop = stop_event()
    stats, bstats = EnvoyStats(), BrightstaffStats()
    try:
        # The fakes first: with a port of 0 their URLs, which the server scrapes, are known only once bound.
        async with (
            FakeEnvoyAdmin(stats, f"127.0.0.1:{envoy_port}") as envoy,
            FakeBrightstaff(bstats, f"127.0.0.1:{brightstaff_port}") as brightstaff,
            Planoscope(_scraping(settings, envoy.url, brightstaff.url)) as app,
        ):
            a = app.addresses
            if backfill_s is None:  # a first look should show full charts; a restart must not double up
                backfill_s = 0.0 if app.store.span_count() else DEMO_BACKFILL_S
            address = a["otlp_grpc"] if protocol == "grpc" else a["otlp_http"]
            host, port = split_address(address)
            if host in ("0.0.0.0", "::"):  # a wildcard listens everywhere; send over loopback
                host = "127.0.0.1" if host == "0.0.0.0" else "[::1]"
            elif ":" in host:
                host = f"[{host}]"
            target = f"{host}:{port}" if protocol == "grpc" else f"http://{host}:{port}/v1/traces"
            mix = ", ".join(f"{k} {v:.0%}" for k, v in sim.mix.items() if v)
            freeze_start_objects()
            print(
                "\n".join(
                    [
                        *listening_lines(settings, app),
                        f"planoscope: fake Envoy admin on {envoy.url}",
                        f"planoscope: fake brightstaff metrics on {brightstaff.url}",
                        f"planoscope: simulating Plano: {sim.rate:g} requests/s ({mix}), seed {sim.seed}, "
                        f"OTLP/{protocol} to {target}" + (f", backfilling {backfill_s:g} s" if backfill_s else ""),
                    ]
                ),
                flush=True,
            )
            async with OtlpExporter(target, protocol) as exporter:
                player = Player(sim, exporter, stats, bstats)
                playing = asyncio.create_task(player.run(stop, backfill_s))
                print("planoscope: ready", flush=True)
                stopping = asyncio.create_task(stop.wait())
                await asyncio.wait({playing, stopping}, return_when=asyncio.FIRST_COMPLETED)
                print("planoscope: stopping: the simulator, then the server", flush=True)
                stop.set()
                await playing  # re-raises if the simulator failed
            print(
                f"planoscope: simulated {player.traces} requests; spans acknowledged {exporter.acknowledged}, "
                f"rejected {exporter.rejected}, failed {exporter.failed}",
                flush=True,
            )
    except StartupError as e:
        print(f"planoscope: error: {e}", file=sys.stderr, flush=True)
        return 1
    return stopped(app)


@main.group()
def rules() -> None:
    """Alerting and recording rules: Prometheus rule files."""


@rules.command("check")
@click.argument("files", metavar="FILE...", nargs=-1, required=True)
def rules_check(files: tuple[str, ...]) -> None:
    """Check rule files as planoscope loads them (plano: the shipped file); exit 1 if one is bad.

    Each file's problem is one line naming the file, the group and the rule, as a start with
    --rules would say it.

    Example: planoscope rules check plano my-rules.yml
    """
    from .alerting.rules import RuleError, load_file

    bad = 0
    for f in files:
        try:
            groups = load_file(f)
        except RuleError as e:
            click.echo(f"planoscope: error: {e}", err=True)
            bad += 1
            continue
        n = sum(len(g.rules) for g in groups)
        click.echo(f"{f}: {n} rules in {len(groups)} groups")
    sys.exit(1 if bad else 0)


@main.group()
def grafana() -> None:
    """Grafana: export planoscope's dashboard for a Grafana over Prometheus."""


@grafana.command("export")
@click.argument("out_dir", metavar="DIR", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--prometheus-url",
    default="http://prometheus:9090",
    show_default=True,
    help="URL Grafana reaches the Prometheus API at: a Prometheus that scrapes planoscope's /metrics "
    "(and Envoy), or planoscope's own, http://HOST:9000/prometheus.",
)
@click.option(
    "--dashboards-path",
    default="/var/lib/grafana/dashboards",
    show_default=True,
    help="Where Grafana finds DIR/dashboards (the provisioning provider's path).",
)
@click.option(
    "--planoscope-url",
    default=None,
    metavar="URL",
    help="planoscope's UI as Grafana users reach it: adds a 'Traces in planoscope' link.",
)
@click.option(
    "--tempo-url",
    default=None,
    metavar="URL",
    help="Adds a Tempo datasource at URL (a Tempo that planoscope forwards spans to).",
)
def grafana_export(
    out_dir: Path, prometheus_url: str, dashboards_path: str, planoscope_url: str | None, tempo_url: str | None
) -> None:
    """Write the dashboards' JSON and Grafana provisioning files into DIR.

    DIR/dashboards/ gets each of planoscope's dashboards, generated from the same panel
    definitions as planoscope's own: plano-requests.json is "Plano - Requests Overview" (the
    reference stack's six panels, same uid, PromQL and layout), plano-llm-usage.json "Plano - LLM
    Usage" (its PromQL over the LLM metrics on /metrics). DIR/provisioning/{datasources,
    dashboards}/planoscope.yaml provision a Prometheus datasource and load the dashboards: mount
    DIR/provisioning as /etc/grafana/provisioning and DIR/dashboards as --dashboards-path.

    Example: planoscope grafana export grafana --prometheus-url http://localhost:9090
    """
    from .grafana.export import export

    for url, name in (
        (prometheus_url, "--prometheus-url"),
        (planoscope_url, "--planoscope-url"),
        (tempo_url, "--tempo-url"),
    ):
        if url is not None and not url.startswith(("http://", "https://")):
            fail(f"{name} must be an http:// or https:// URL, not {url!r}")
    try:
        written = export(out_dir, prometheus_url, dashboards_path, planoscope_url, tempo_url)
    except OSError as e:
        fail(f"cannot write to {out_dir}: {e.strerror or e}")
    for path in written:
        click.echo(f"wrote {path}")
