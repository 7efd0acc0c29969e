"""The command line. It only parses: flags, environment and config file become one
``Settings``, which is handed to the app. Every ``serve`` option is generated from the
``Settings`` fields, so the flags, the environment variables and the docs cannot drift apart.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

import click

from . import __version__
from .settings import ConfigError, Settings, build_settings, env_name


def _default_text(value) -> str:
    if isinstance(value, list):
        return ",".join(str(int(v)) if isinstance(v, float) and v == int(v) else str(v) for v in value)
    return str(value) if value != "" else '""'


def settings_options(func):
    """Add one ``--flag`` per ``Settings`` field, defaulting to None (= not given)."""
    for name, field in reversed(list(Settings.model_fields.items())):
        help_text = f"{field.description} [default: {_default_text(field.default)}; env: {env_name(name)}]"
        func = click.option("--" + name.replace("_", "-"), name, default=None, metavar="VALUE",
                            help=help_text)(func)
    return click.option(
        "--config", "config_file", type=click.Path(path_type=Path), default=None,
        help="YAML file of settings (same names as the options, with underscores). "
        f"[env: {env_name('config')}]")(func)


def load_settings(config_file: Path | None, flags: dict) -> Settings:
    if config_file is None and os.environ.get(env_name("config")):
        config_file = Path(os.environ[env_name("config")])
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


def run_server(settings: Settings) -> int:
    # The writer thread hands the GIL back and forth with DuckDB many times per commit; with the
    # default 5 ms switch interval each hand-back can wait for a decoding thread's full slice.
    sys.setswitchinterval(0.0005)
    logging.basicConfig(level=settings.log_level.upper(), format="planoscope: %(levelname)s %(name)s: %(message)s")
    return asyncio.run(_serve(settings))


async def _serve(settings: Settings) -> int:
    from .app import Planoscope
    from .httpserver import StartupError

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with Planoscope(settings) as app:
            a = app.addresses
            spans = app.store.span_count()
            lines = [
                f"planoscope {__version__}: data in {settings.data_dir.resolve()} ({spans} spans)",
                f"planoscope: OTLP/gRPC listening on {a['otlp_grpc']}",
                f"planoscope: OTLP/HTTP listening on http://{a['otlp_http']}/v1/traces",
                f"planoscope: UI, API and /metrics on http://{a['listen']}",
                "planoscope: ready",
            ]
            print("\n".join(lines), flush=True)
            await stop.wait()
            print("planoscope: stopping: finishing in-flight requests", flush=True)
    except StartupError as e:
        print(f"planoscope: error: {e}", file=sys.stderr, flush=True)
        return 1
    print("planoscope: stopped", flush=True)
    return 0


@main.command()
@click.option("--target", required=True, metavar="HOST:PORT",
              help="OTLP endpoint: HOST:PORT for gRPC; HOST:PORT or a URL for HTTP (path /v1/traces).")
@click.option("--protocol", type=click.Choice(["grpc", "http"]), default="grpc", show_default=True)
@click.option("--spans", type=click.IntRange(min=1), default=None,
              help="Send this many spans, then stop. [default: 100000 unless --duration is given]")
@click.option("--duration", type=click.FloatRange(min=0.1), default=None, metavar="SECONDS",
              help="Send for this many seconds, then stop.")
@click.option("--rate", type=click.FloatRange(min=1), default=None, metavar="SPANS_PER_S",
              help="Send at most this many spans per second. [default: as fast as acknowledged]")
@click.option("--batch", type=click.IntRange(1, 100_000), default=512, show_default=True,
              help="Spans per export request.")
@click.option("--concurrency", type=click.IntRange(1, 256), default=4, show_default=True,
              help="Export requests in flight at once.")
@click.option("--gzip", is_flag=True, help="Compress requests with gzip.")
def load(target: str, protocol: str, spans: int | None, duration: float | None, rate: float | None,
         batch: int, concurrency: int, gzip: bool) -> None:
    """Send Plano-shaped OTLP spans (~15 attributes each) to TARGET and report what was acknowledged.

    Each span gets fresh ids, so nothing is de-duplicated away. Retryable errors are retried with
    backoff. Example: planoscope load --target 127.0.0.1:4317 --duration 30
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .loadgen import run_load

    console = Console(stderr=True)
    total = spans if spans is not None else (None if duration else 100_000)
    columns = [TextColumn("[bold]load[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("spans acked"),
               TimeElapsedColumn()]
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("load", total=total)
        res = asyncio.run(run_load(target, protocol, spans, duration, rate, batch, concurrency, gzip,
                                   progress=lambda n: progress.advance(task, n)))
    click.echo(f"sent:         {res.sent}")
    click.echo(f"acknowledged: {res.acknowledged}")
    click.echo(f"rejected:     {res.rejected}")
    click.echo(f"retried:      {res.retried} requests")
    click.echo(f"failed:       {res.failed}" + (f" ({res.errors})" if res.errors else ""))
    click.echo(f"seconds:      {res.seconds:.2f}")
    click.echo(f"acked spans/s: {res.acked_per_s:,.0f}")
    if res.failed:
        sys.exit(1)
