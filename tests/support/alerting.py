"""Real parts for the alerting tests: a scrape target whose gauges the test sets, a webhook
receiver (a small HTTP server recording what it is sent, able to refuse), and Debian's
Alertmanager run on free ports with a temporary storage path."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from support.ports import free_port

ALERTMANAGER = "/usr/bin/prometheus-alertmanager"

# A recording rule an alert of the same group reads at the same evaluation; a fast alert and a
# slow one (pending for 10 minutes).
RULES = """
groups:
  - name: rooms
    rules:
      - record: room:temp:max
        expr: max by (room) (room_temp)
      - alert: RoomHot
        expr: room:temp:max > 30
        for: 2s
        labels: {severity: page}
        annotations:
          summary: "{{ $labels.room }} is {{ $value }} degrees"
          runbook: "open the window"
      - alert: RoomWarm
        expr: room_temp > 20
        for: 10m
"""


def serve(server_factory, tmp_path, target, rules_file, *extra, env=None):
    """A ``planoscope serve`` scraping ``target`` every 0.5 s as job ``rooms`` and evaluating
    ``rules_file`` every second (``env``: e.g. its ``PLANOSCOPE_STORE``)."""
    return server_factory(
        tmp_path / "data",
        "--scrape",
        f"rooms={target.url}",
        "--scrape-interval",
        "0.5s",
        "--scrape-metrics",
        "room_*",
        "--scrape-self-metrics",
        "",
        "--rules",
        str(rules_file),
        "--evaluation-interval",
        "1s",
        *extra,
        env=env,
    )


def wait_for(cond, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


class _Server:
    def _serve(self, handler) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class GaugeTarget(_Server):
    """A Prometheus-format target: ``values[room]`` is served as ``room_temp{room="…"}``."""

    def __init__(self):
        self.values: dict[str, float] = {}
        target = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                lines = ["# TYPE room_temp gauge"]
                lines += [f'room_temp{{room="{k}"}} {v}' for k, v in sorted(dict(target.values).items())]
                body = ("\n".join(lines) + "\n").encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self._serve(Handler)
        self.url = f"http://127.0.0.1:{self.port}/metrics"


class WebhookReceiver(_Server):
    """Records every POST body (``received``: (monotonic time, JSON)); ``status`` is what it
    answers (500 to refuse); ``refused`` counts the bodies it refused. ``hang``: requests wait
    (``hung`` counts them) until it is cleared."""

    def __init__(self):
        self.received: list[tuple[float, dict]] = []
        self.refused = self.hung = 0
        self.status = 200
        self.hang = threading.Event()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if receiver.hang.is_set():
                    receiver.hung += 1
                    while receiver.hang.is_set():
                        time.sleep(0.05)
                with receiver._lock:
                    status = receiver.status
                    if status == 200:
                        receiver.received.append((time.monotonic(), body))
                    else:
                        receiver.refused += 1
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self._serve(Handler)
        self.url = f"http://127.0.0.1:{self.port}/hook"

    def close(self) -> None:
        self.hang.clear()
        super().close()

    def bodies(self) -> list[dict]:
        with self._lock:
            return [b for _, b in self.received]


class Alertmanager:
    """Debian's Alertmanager on a free port, no cluster, its storage in ``directory``; one route
    to a webhook that nobody needs to answer (its API is what the tests read)."""

    def __init__(self, directory: Path, port: int | None = None):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = self.directory / "alertmanager.yml"
        config.write_text(
            "route:\n  receiver: none\n  group_wait: 1s\n  group_interval: 1s\nreceivers:\n  - name: none\n"
        )
        assert shutil.which(ALERTMANAGER), "install prometheus-alertmanager (make test does)"
        self.log = open(self.directory / "alertmanager.log", "w")
        self.proc = subprocess.Popen(
            [
                ALERTMANAGER,
                f"--config.file={config}",
                f"--storage.path={self.directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_for(self._ready, 30, "Alertmanager to be ready")

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError("Alertmanager exited:\n" + (self.directory / "alertmanager.log").read_text())
        try:
            return httpx.get(self.url + "/-/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def alerts(self) -> list[dict]:
        """``GET /api/v2/alerts``: the alerts it holds that have not ended."""
        r = httpx.get(self.url + "/api/v2/alerts", timeout=10)
        assert r.status_code == 200, r.text
        return r.json()

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
