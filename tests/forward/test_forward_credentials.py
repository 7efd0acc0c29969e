"""Forwarding credentials: given as headers (``forward_otlp_headers``) they authenticate at a
second planoscope that requires ``--otlp-token``; given in a URL (``USER:PASSWORD@``) they are
sent as basic auth; in neither case does /healthz (open without auth), /metrics, the log, the
start-up lines, a settings error or the state file ever show them."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from conftest import _wait, grpc_export, pb_request, pb_span
from planoscope.forward.forwarder import ForwardState, parse_destination
from planoscope.net.otlp import parse_header
from planoscope.settings import ConfigError, build_settings
from support.ports import free_port

PASSWORD = "pw-Zq8-never-shown"
TOKEN = "otlp-token-0123456789abcdef"
WEB_TOKEN = "web-token-0123456789abcdef"


def _send(srv, n: int, first: int = 1) -> None:
    base = time.time_ns() - 30 * 10**9
    spans = [
        pb_span(i.to_bytes(16, "big"), i.to_bytes(8, "big"), "s", base, base + 10**6) for i in range(first, first + n)
    ]
    grpc_export(srv.grpc_target, pb_request(({"service.name": "svc"}, spans)))


def _forwarding(srv) -> dict:
    (f,) = srv.healthz()["forwarding"]
    return f


def _output(srv) -> str:
    """Everything the server printed, every run (not the harness' own lines: its command line)."""
    return "\n".join(line for line in srv.history if line.startswith(("out| ", "err| ")))


def _everything_shown(srv, data_dir) -> str:
    """/healthz, /metrics, the server's output so far and the forwarding state file."""
    with httpx.Client(timeout=30) as c:
        healthz = c.get(srv.web_url + "/healthz").text
        metrics = c.get(srv.web_url + "/metrics", headers={"authorization": f"Bearer {WEB_TOKEN}"})
    assert metrics.status_code == 200
    return "\n".join([healthz, metrics.text, _output(srv), (data_dir / "forward-state.json").read_text()])


def test_a_password_in_a_url_is_never_shown(server_factory, tmp_path):
    port = free_port()  # nothing listens: every attempt fails, and is logged and shown
    url = f"http://user:{PASSWORD}@127.0.0.1:{port}/v1/traces"
    front = server_factory(tmp_path / "a", "--forward-otlp", url, "--auth-token", WEB_TOKEN, "--log-level", "debug")
    _send(front, 3)
    _wait(lambda: _forwarding(front)["last_error"], 30, "a failed attempt")
    f = _forwarding(front)
    assert f["url"] == f"http://127.0.0.1:{port}/v1/traces"
    assert f["last_error"] == f"http://127.0.0.1:{port}/v1/traces is unavailable"
    front.restart()
    _wait(lambda: _forwarding(front)["last_error"], 30, "a failed attempt after the restart")
    assert _forwarding(front)["pending"] == 3  # the cursor was kept, under the URL as shown
    shown = _everything_shown(front, tmp_path / "a")
    front.stop()
    shown += "\n" + _output(front)
    assert "forwarding to http://127.0.0.1:" in shown  # the log line is there, without the password
    assert PASSWORD not in shown and "user:" not in shown


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_forward_headers_authenticate_at_a_planoscope_that_requires_a_token(server_factory, tmp_path, protocol):
    backend = server_factory(tmp_path / "b", "--otlp-token", TOKEN)
    url = f"grpc://{backend.grpc_target}" if protocol == "grpc" else backend.http_traces_url
    front = server_factory(
        tmp_path / "a",
        "--forward-otlp",
        url,
        "--forward-otlp-headers",
        f"authorization=Bearer {TOKEN},x-tenant=team-a",
        "--auth-token",
        WEB_TOKEN,
    )
    _send(front, 40)
    _wait(lambda: backend.healthz()["spans_written"] == 40, 30, "the spans at the backend")
    _wait(lambda: _forwarding(front)["forwarded"] == 40, 30, "the front to count them")
    f = _forwarding(front)
    assert (f["pending"], f["dropped"], f["last_error"]) == (0, 0, None)
    # Without the header the backend refuses them (and the front says so, without the token).
    bare = server_factory(tmp_path / "c", "--forward-otlp", url, "--auth-token", WEB_TOKEN)
    _send(bare, 5, first=1000)
    _wait(lambda: _forwarding(bare)["dropped"] == 5, 30, "the refusal")
    assert "refused 5 spans" in _forwarding(bare)["last_error"]
    assert backend.healthz()["spans_written"] == 40
    assert TOKEN not in _everything_shown(front, tmp_path / "a")


class _Capture(BaseHTTPRequestHandler):
    """An OTLP/HTTP receiver that records each request's Authorization header."""

    seen: list[str | None] = []

    def do_POST(self):  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers["Content-Length"]))
        type(self).seen.append(self.headers.get("Authorization"))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")  # an empty ExportTraceServiceResponse
        self.end_headers()

    def log_message(self, *args):
        pass


def test_a_url_password_is_sent_as_basic_auth(server_factory, tmp_path):
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), _Capture)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        port = receiver.server_address[1]
        # Percent-encoded, as a URL must carry @ and : in a user or password.
        url = f"http://us%40er:{PASSWORD}%3Ax@127.0.0.1:{port}/v1/traces"
        front = server_factory(tmp_path / "a", "--forward-otlp", url)
        _send(front, 2)
        _wait(lambda: _forwarding(front)["forwarded"] == 2, 30, "the spans forwarded")
    finally:
        receiver.shutdown()
        receiver.server_close()
    assert set(_Capture.seen) == {"Basic " + base64.b64encode(f"us@er:{PASSWORD}:x".encode()).decode()}
    assert PASSWORD not in _output(front) + json.dumps(front.healthz())


def test_a_cursor_stored_under_a_url_with_its_password_moves_to_the_url_shown(tmp_path):
    url = f"grpc://tempo:{PASSWORD}@tempo:4317"
    (tmp_path / "forward-state.json").write_text(json.dumps({"cursors": {url: "2025-01-02T03:04:05"}}))
    dest = parse_destination(url)
    assert dest.shown == "grpc://tempo:4317" and PASSWORD not in repr(dest)
    state = ForwardState(tmp_path)
    assert state.cursor(dest).isoformat() == "2025-01-02T03:04:05"
    text = (tmp_path / "forward-state.json").read_text()
    assert PASSWORD not in text and json.loads(text) == {"cursors": {"grpc://tempo:4317": "2025-01-02T03:04:05"}}


@pytest.mark.parametrize(
    "flags, needle",
    [
        ({"forward_otlp": [f"http://u:{PASSWORD}@tempo:99999"]}, "'http://tempo:99999' has an invalid port"),
        ({"forward_otlp": [f"grpc://u:{PASSWORD}@tempo"]}, "'grpc://tempo' needs a port"),
        ({"forward_otlp": [f"ftp://u:{PASSWORD}@tempo"]}, "'ftp://tempo' is not an OTLP URL"),
        # A malformed password (an unencoded /) must not leak either.
        ({"forward_otlp": [f"http://u:{PASSWORD}/x@tempo:99999"]}, "'http://tempo:99999' has an invalid port"),
        ({"forward_otlp": [f"grpc://a:{PASSWORD}@t:1", f"grpc://b:{PASSWORD}x@t:1"]}, "'grpc://t:1' is given twice"),
        ({"forward_otlp_headers": [f"authorization Bearer {PASSWORD}"]}, "NAME=VALUE"),
        ({"forward_otlp_headers": [f"content-type=x{PASSWORD}"]}, "set by the OTLP client"),
        ({"forward_otlp_headers": [f"x-key=a\x01{PASSWORD}"]}, "printable ASCII"),
        ({"forward_otlp_headers": [f"a b={PASSWORD}"]}, "a header name is"),
        ({"forward_otlp_headers": [f"authorization: Bearer {PASSWORD}="]}, "a header name is"),
    ],
)
def test_settings_errors_never_show_the_secret(flags, needle):
    with pytest.raises(ConfigError) as e:
        build_settings(None, {}, flags)
    assert needle in str(e.value) and PASSWORD not in str(e.value)


def test_headers_parse():
    assert parse_header("Authorization=Bearer a=b") == ("authorization", "Bearer a=b")
    s = build_settings(None, {"PLANOSCOPE_FORWARD_OTLP_HEADERS": "authorization=Bearer all,x-scope-orgid=t1"}, {})
    assert s.forward_otlp_headers == ["authorization=Bearer all", "x-scope-orgid=t1"]
    assert dict(parse_destination("grpc://h:1", [parse_header(h) for h in s.forward_otlp_headers]).headers) == {
        "authorization": "Bearer all",
        "x-scope-orgid": "t1",
    }
    dest = parse_destination("http://u:p@h:1", [parse_header(h) for h in s.forward_otlp_headers])
    assert dict(dest.headers) == {"authorization": "Basic dTpw", "x-scope-orgid": "t1"}  # the URL's wins
    assert dest.target == "http://h:1/v1/traces"


def test_the_command_line_error_never_shows_the_password(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "planoscope", "serve", "--data-dir", str(tmp_path / "d")]
        + ["--forward-otlp", f"grpc://user:{PASSWORD}@tempo"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "needs a port" in r.stderr
    assert PASSWORD not in r.stdout + r.stderr
