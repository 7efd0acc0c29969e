"""Access control: the UI/API port takes a bearer token and/or basic credentials, the OTLP
receivers a token of their own; a non-loopback --listen needs credentials or --insecure.

Against the real ``planoscope serve``, with the OpenTelemetry SDK's exporters as OTLP clients and
a real Chromium for the browser's basic-auth prompt.
"""

from __future__ import annotations

import base64
import socket
import subprocess
import sys

import grpc
import httpx
import pytest
from opentelemetry.trace import SpanKind

from conftest import grpc_export, http_post, now_base_ns, pb_request, pb_span, read_spans, spans_by_id
from planoscope.net.auth import Credentials

TOKEN = "web-token-0123456789abcdef"
OTLP_TOKEN = "otlp-token-0123456789abcdef"
USER, PASSWORD = "admin", "pä:ss word"  # a colon and non-ASCII in the password
MS = 1_000_000


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def own_address() -> str:
    """The machine's own non-loopback IPv4 address (the route a packet to a public address would
    take; nothing is sent), or 127.0.0.1 on a machine without one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))
            return s.getsockname()[0]
        except OSError:
            return "127.0.0.1"


# --- Credentials, in-process ------------------------------------------------------------------


@pytest.mark.parametrize(
    "header, ok",
    [
        (f"Bearer {TOKEN}", True),
        (f"bearer  {TOKEN} ", True),
        (basic(USER, PASSWORD), True),
        (None, False),
        ("", False),
        (f"Bearer {TOKEN}x", False),
        (f"Bearer {TOKEN[:-1]}", False),
        (f"Basic {TOKEN}", False),
        (basic(USER, "wrong"), False),
        (basic("other", PASSWORD), False),
        ("Basic !!!not-base64", False),
        (f"Token {TOKEN}", False),
        (basic(USER, PASSWORD) + "=", False),
    ],
)
def test_credentials_accept_only_the_configured_token_or_user(header, ok):
    assert Credentials(token=TOKEN, basic=f"{USER}:{PASSWORD}").check(header) is ok


def test_no_credentials_configured_lets_everything_through():
    assert Credentials().check(None) and not Credentials().required
    assert not Credentials(token=TOKEN).check(basic(USER, PASSWORD))  # basic is not configured
    assert not Credentials(basic=f"{USER}:{PASSWORD}").check(f"Bearer {TOKEN}")


# --- the UI/API port ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def guarded(module_server_factory, tmp_path_factory):
    """Every listener on every interface, each guarded: web by token and basic, OTLP by its token."""
    data_dir = tmp_path_factory.mktemp("auth")
    srv = module_server_factory(
        data_dir,
        "--listen",
        "0.0.0.0:0",
        "--otlp-grpc",
        "0.0.0.0:0",
        "--otlp-http",
        "0.0.0.0:0",
        env={
            "PLANOSCOPE_AUTH_TOKEN": TOKEN,
            "PLANOSCOPE_AUTH_BASIC": f"{USER}:{PASSWORD}",
            "PLANOSCOPE_OTLP_TOKEN": OTLP_TOKEN,
        },
    )
    host = own_address()
    port = srv.web_url.rsplit(":", 1)[1]
    srv.own_url = f"http://{host}:{port}"  # reached through the machine's own address, not loopback
    srv.own_grpc = f"{host}:{srv.grpc_target.rsplit(':', 1)[1]}"
    srv.own_traces = f"http://{host}:{srv.http_traces_url.rsplit(':', 1)[1]}"
    return srv


PATHS = [
    "/",
    "/index.html",
    "/app.js",
    "/api/v1/panels",
    "/api/v1/dashboard",
    "/metrics",
    "/docs",
    "/openapi.json",
    "/api/v1/targets",
    "/no/such/page",
]


@pytest.mark.parametrize("path", PATHS)
def test_without_credentials_every_path_is_401_with_a_challenge(guarded, path):
    r = httpx.get(guarded.own_url + path, timeout=30)
    assert r.status_code == 401, (r.status_code, r.text[:200])
    challenges = r.headers.get_list("www-authenticate")
    assert challenges[0].startswith('Basic realm="planoscope"') and any(c.startswith("Bearer") for c in challenges)
    assert r.json() == {"detail": "authentication required"}


@pytest.mark.parametrize("path", PATHS[:-1])
@pytest.mark.parametrize("how", ["token", "basic"])
def test_with_credentials_every_path_is_served(guarded, path, how):
    header = f"Bearer {TOKEN}" if how == "token" else basic(USER, PASSWORD)
    r = httpx.get(guarded.own_url + path, headers={"Authorization": header}, timeout=30)
    assert r.status_code == 200, (r.status_code, r.text[:200])


@pytest.mark.parametrize("header", [f"Bearer {OTLP_TOKEN}", f"Bearer {TOKEN[:-1]}", basic(USER, "x"), "Basic"])
def test_wrong_credentials_are_401(guarded, header):
    r = httpx.get(guarded.own_url + "/api/v1/panels", headers={"Authorization": header}, timeout=30)
    assert r.status_code == 401 and r.json() == {"detail": "wrong credentials"}


def test_healthz_stays_open_for_probes(guarded):
    r = httpx.get(guarded.own_url + "/healthz", timeout=30)
    assert r.status_code == 200 and r.json()["status"] == "ok"


def test_no_warning_about_exposure_when_everything_is_guarded(guarded):
    err = "\n".join(guarded.lines("err"))
    assert "without authentication" not in err and "accepts spans from anyone" not in err, err


def test_the_browser_prompts_for_basic_credentials_and_the_dashboard_works(guarded):
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    from conftest import ARGS, CHROMIUM

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            ctx = browser.new_context(http_credentials={"username": USER, "password": PASSWORD})
            page = ctx.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(guarded.own_url + "/")
            page.wait_for_selector("body[data-loaded]", timeout=15_000)
            assert page.locator(".panel h2").count() == 6
            assert errors == []
            # Without credentials the browser is challenged (headless Chromium cannot prompt, so it fails).
            anonymous = browser.new_context().new_page()
            statuses: list[int] = []
            anonymous.on("response", lambda r: statuses.append(r.status))
            with pytest.raises(PlaywrightError, match="ERR_INVALID_AUTH_CREDENTIALS"):
                anonymous.goto(guarded.own_url + "/")
            assert statuses == [401]
        finally:
            browser.close()


# --- the OTLP receivers ---------------------------------------------------------------------------


def _request(span_id: str):
    base = now_base_ns()
    return pb_request(({"service.name": "auth-test"}, [pb_span("ab" * 16, span_id, "s", base, base + MS)]))


def test_grpc_without_or_with_a_wrong_token_is_unauthenticated(guarded):
    with pytest.raises(grpc.RpcError) as e:
        grpc_export(guarded.own_grpc, _request("a000000000000001"))
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    body = _request("a000000000000002").SerializeToString()
    with grpc.insecure_channel(guarded.own_grpc) as ch:
        call = ch.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
        for token in (TOKEN, OTLP_TOKEN + "x", ""):
            with pytest.raises(grpc.RpcError) as e:
                call(body, timeout=30, metadata=[("authorization", f"Bearer {token}")])
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        call(body, timeout=30, metadata=[("authorization", f"Bearer {OTLP_TOKEN}")])  # a0…02 stored


def test_http_without_or_with_a_wrong_token_is_401(guarded):
    body = _request("a000000000000003").SerializeToString()
    for headers in ({}, {"Authorization": f"Bearer {TOKEN}"}, {"Authorization": basic(USER, PASSWORD)}):
        r = http_post(guarded.own_traces, body, headers=headers)
        assert r.status_code == 401, r
        assert r.headers["www-authenticate"] == 'Bearer realm="planoscope"'
    r = http_post(guarded.own_traces, body, "text/plain")  # nothing, not even a 415, before the token
    assert r.status_code == 401
    r = http_post(guarded.own_traces, body, headers={"Authorization": f"Bearer {OTLP_TOKEN}"})
    assert r.status_code == 200, r  # a0…03 stored


def _sdk_spans(n: int):
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    mem = InMemorySpanExporter()
    tp = TracerProvider(resource=Resource({"service.name": "auth-sdk"}), shutdown_on_exit=False)
    tp.add_span_processor(SimpleSpanProcessor(mem))
    for i in range(n):
        tp.get_tracer("t").start_span(f"op{i}", kind=SpanKind.CLIENT).end()
    tp.shutdown()
    return list(mem.get_finished_spans())


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_sdk_exporters_need_the_otlp_token(guarded, protocol):
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
    from opentelemetry.sdk.trace.export import SpanExportResult

    def exporter(headers):
        if protocol == "grpc":
            return GrpcExporter(endpoint=guarded.own_grpc, insecure=True, timeout=10, headers=headers)
        return HttpExporter(endpoint=guarded.own_traces, timeout=10, headers=headers)

    refused, accepted = _sdk_spans(2), _sdk_spans(3)
    for headers in (None, {"authorization": f"Bearer {TOKEN}"}):
        e = exporter(headers)
        assert e.export(refused) == SpanExportResult.FAILURE  # not retried: UNAUTHENTICATED / 401 are final
        e.shutdown()
    e = exporter({"authorization": f"Bearer {OTLP_TOKEN}"})
    assert e.export(accepted) == SpanExportResult.SUCCESS
    e.shutdown()
    guarded.sdk_ids = getattr(guarded, "sdk_ids", set()) | {f"{s.context.span_id:016x}" for s in accepted}


def test_only_authenticated_exports_were_stored(guarded):
    guarded.stop()
    stored = set(spans_by_id(read_spans(guarded.data_dir)))
    assert stored == {"a000000000000002", "a000000000000003"} | guarded.sdk_ids


# --- which listen addresses need what --------------------------------------------------------------


def _serve(tmp_path, *args: str, env=None) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "planoscope",
        "serve",
        "--data-dir",
        str(tmp_path / "d"),
        "--otlp-grpc",
        "127.0.0.1:0",
        "--otlp-http",
        "127.0.0.1:0",
        "--scrape",
        "",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)


def test_own_address_without_credentials_is_refused(tmp_path):
    run = _serve(tmp_path, "--listen", f"{own_address()}:0")
    if own_address() == "127.0.0.1":  # no other interface: loopback is allowed, so force the refusal
        run = _serve(tmp_path, "--listen", "0.0.0.0:0")
    assert run.returncode == 1 and "refusing to serve" in run.stderr and "auth_basic" in run.stderr, run


@pytest.mark.parametrize("flags", [["--auth-basic", "u:p"], ["--auth-token", TOKEN]])
def test_either_auth_setting_allows_every_interface(server_factory, tmp_path, flags):
    srv = server_factory(tmp_path / "d", "--listen", "0.0.0.0:0", *flags)
    assert not any("without authentication" in ln for ln in srv.lines("err"))
    assert httpx.get(srv.web_url + "/api/v1/panels", timeout=30).status_code == 401
    header = basic("u", "p") if flags[0] == "--auth-basic" else f"Bearer {TOKEN}"
    assert httpx.get(srv.web_url + "/api/v1/panels", headers={"Authorization": header}, timeout=30).status_code == 200


def test_loopback_with_a_token_still_requires_it_and_open_otlp_is_warned_about(server_factory, tmp_path):
    srv = server_factory(tmp_path / "d", "--auth-token", TOKEN, "--otlp-http", "0.0.0.0:0")
    assert httpx.get(srv.web_url + "/metrics", timeout=30).status_code == 401
    assert any("OTLP/HTTP on 0.0.0.0:0 accepts spans from anyone" in ln for ln in srv.lines("err"))
    base = now_base_ns()
    req = pb_request(({}, [pb_span("cd" * 16, "c000000000000001", "s", base, base + MS)]))
    assert http_post(srv.http_traces_url, req.SerializeToString()).status_code == 200  # OTLP open by default


@pytest.mark.parametrize(
    "key, value, reason",
    [
        ("AUTH_TOKEN", "short", "at least 16"),
        ("AUTH_TOKEN", "has space 0123456789", "without spaces"),
        ("OTLP_TOKEN", "tab\t0123456789abcdef", "without spaces"),
        ("AUTH_BASIC", "nocolon", "USER:PASSWORD"),
        ("AUTH_BASIC", ":password", "USER:PASSWORD"),
        ("AUTH_BASIC", "user:", "USER:PASSWORD"),
    ],
)
def test_bad_credentials_settings_stop_the_start(tmp_path, key, value, reason):
    import os

    run = _serve(tmp_path, env={**os.environ, f"PLANOSCOPE_{key}": value})
    assert run.returncode == 2 and f"bad value for {key.lower()}" in run.stderr and reason in run.stderr, run
