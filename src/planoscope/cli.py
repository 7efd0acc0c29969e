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


@main.command()
@settings_options
def serve(config_file: Path | None, **flags) -> None:
    """Receive, store and serve Plano's traces until Ctrl-C or SIGTERM.

    Point Plano's tracing.opentracing_grpc_endpoint at http://127.0.0.1:4317.
    """
    settings = load_settings(config_file, flags)
    sys.exit(run_server(settings))


def run_server(settings: Settings) -> int:
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
