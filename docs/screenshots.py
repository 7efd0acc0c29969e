"""Make the README's screenshots from the demo: ``make screenshots`` (or ``python docs/screenshots.py``).

Starts ``planoscope demo`` (a fixed seed, 15 minutes of backfill, free ports, a temporary data
directory), waits until the backfill is stored and the fake Envoy has been scraped for a minute,
drives Debian's Chromium through Playwright to the three dashboards, to one agent trace, to the
sessions list, to one conversation and to the alerts, writes ``docs/img/dashboard.png``, ``llm-usage.png``, ``brightstaff.png``,
``trace.png``, ``sessions.png``, ``session.png`` and ``alerts.png`` and stops the demo with SIGTERM. It fails, and
replaces no picture, when a page reports an error: a broken page never lands in the docs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote, urlencode

from playwright.sync_api import sync_playwright

IMG = Path(__file__).resolve().parent / "img"
SEED = 42
RATE = 20  # requests/s: dense enough that the rare 429s draw a line, not a dot
SCRAPED_S = 60  # of live scrapes before the picture
BACKFILL_S = 900
VIEWPORT = {"width": 1440, "height": 900}

# The browser the tests drive (tests/conftest.py's CHROMIUM and ARGS, copied: a script does not
# import the tests): Debian's Chromium, never a downloaded build; as root in a closed network,
# no sandbox and no background calls that would be refused.
CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def wait_for(what: str, check, timeout: float = 240.0, every: float = 0.5):
    """``check()``'s first truthy value, polled until ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise SystemExit(f"screenshots: timed out waiting for {what}")


class Demo:
    """``planoscope demo`` as a subprocess; ``url`` is its web address once it is ready."""

    def __init__(self, data_dir: Path):
        cmd = [
            sys.executable,
            "-m",
            "planoscope",
            "demo",
            f"--seed={SEED}",
            f"--rate={RATE}",
            f"--backfill={BACKFILL_S}s",
            "--otlp-grpc=127.0.0.1:0",
            "--otlp-http=127.0.0.1:0",
            "--listen=127.0.0.1:0",
            "--envoy-port=0",
            "--brightstaff-port=0",
            f"--data-dir={data_dir}",
            # Scraped samples are live only (the backfill is spans): scrape often so that the
            # rate-limited panel has a line within seconds.
            "--scrape-interval=5s",
        ]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        self.url = ""
        self.started = time.time()
        for line in self.proc.stdout:
            print(line, end="", flush=True)
            if "UI, API and /metrics on " in line:
                self.url = line.rsplit(" ", 1)[1].strip()
            if line.strip() == "planoscope: ready":
                break
        if not self.url or self.proc.poll() is not None:
            raise SystemExit("screenshots: the demo did not start")

    def get(self, path: str, **params) -> dict:
        url = self.url + path + ("?" + urlencode(params) if params else "")
        with urllib.request.urlopen(url, timeout=30) as r:
            return json.load(r)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        for line in self.proc.stdout:
            print(line, end="", flush=True)
        if self.proc.wait(timeout=60) != 0:
            raise SystemExit(f"screenshots: the demo exited {self.proc.returncode}")


def ready(demo: Demo) -> bool:
    """True once the backfill's oldest traces are stored and the fake Envoy has been scraped long
    enough for the rate-limited panel to draw more than a dot."""
    now = time.time()
    oldest = demo.get("/api/v1/traces", start=now - BACKFILL_S - 60, end=now, sort="start", order="asc", limit=1)
    if not oldest["traces"] or oldest["traces"][0]["start"] > now - BACKFILL_S + 60:
        return False
    targets = demo.get("/api/v1/targets")
    return bool(targets) and all(t["up"] for t in targets) and time.time() - demo.started >= SCRAPED_S


def agent_trace(demo: Demo) -> tuple[str, str | None]:
    """An agent trace of several spans, complete (its root arrived), and the id of an LLM span in it."""
    now = time.time()
    found = demo.get("/api/v1/traces", start=now - BACKFILL_S, end=now, service="plano(orchestrator)", limit=200)
    whole = [t for t in found["traces"] if t["has_root"] and 6 <= t["span_count"] <= 12]
    if not whole:
        raise SystemExit("screenshots: no complete agent trace of 6-12 spans in the demo's data")
    trace = max(whole, key=lambda t: (t["span_count"], t["trace_id"]))
    doc = demo.get(f"/api/v1/traces/{trace['trace_id']}")
    llm = [
        s["spanId"]
        for rs in doc["resourceSpans"]
        for ss in rs["scopeSpans"]
        for s in ss["spans"]
        if any(a["key"] == "llm.model" for a in s["attributes"])
    ]
    return trace["trace_id"], (llm[0] if llm else None)


def conversation(demo: Demo) -> str:
    """The id of a costly conversation of several turns in which the router changed the model."""
    now = time.time()
    listed = demo.get("/api/v1/sessions", start=now - BACKFILL_S - 60, end=now, limit=20)["sessions"]
    for s in sorted(listed, key=lambda s: -s["llm_calls"]):
        calls = demo.get("/api/v1/sessions/" + quote(s["session_id"], safe=""))["calls"]
        if len(calls) >= 6 and any(c["requested_model"] != c["resolved_model"] for c in calls if c["model"]):
            return s["session_id"]
    raise SystemExit("screenshots: no session of 6 turns or more with a routed call in the demo's data")


PICTURES = (
    "dashboard.png",
    "llm-usage.png",
    "brightstaff.png",
    "trace.png",
    "sessions.png",
    "session.png",
    "alerts.png",
)


def shoot(demo: Demo, out: Path) -> str:
    """Write ``PICTURES`` into ``out``; returns the trace's id."""
    trace_id, span_id = agent_trace(demo)
    session_id = conversation(demo)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport=VIEWPORT)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

        page.goto(demo.url + "/?range=15m&refresh=off")
        page.wait_for_selector("body[data-loaded]", timeout=30_000)
        page.wait_for_selector("#refresh-now:not(.spinning)")
        page.wait_for_function("document.querySelectorAll('.panel canvas').length >= 5")
        page.mouse.move(0, 0)  # no crosshair or tooltip in the picture
        check(page, errors, "the dashboard")
        page.screenshot(path=str(out / "dashboard.png"), full_page=True)

        page.goto(demo.url + "/?dashboard=llm-usage&range=15m&refresh=off")
        page.wait_for_selector("body[data-loaded]", timeout=30_000)
        page.wait_for_selector("#refresh-now:not(.spinning)")
        page.wait_for_function("document.querySelectorAll('.panel canvas').length >= 8")
        page.mouse.move(0, 0)
        check(page, errors, "the LLM Usage dashboard")
        page.screenshot(path=str(out / "llm-usage.png"), full_page=True)

        page.goto(demo.url + "/?dashboard=brightstaff&range=5m&refresh=off")  # its fakes count live traffic only
        page.wait_for_selector("body[data-loaded]", timeout=30_000)
        page.wait_for_selector("#refresh-now:not(.spinning)")
        page.wait_for_function("document.querySelectorAll('.panel canvas').length >= 12")
        page.mouse.move(0, 0)
        check(page, errors, "the brightstaff dashboard")
        page.screenshot(path=str(out / "brightstaff.png"), full_page=True)

        query = {"id": trace_id} | ({"span": span_id} if span_id else {})
        page.goto(demo.url + "/trace?" + urlencode(query))
        page.wait_for_selector("body[data-loaded]", timeout=30_000)
        page.wait_for_selector(".wf-row")
        check(page, errors, f"trace {trace_id}")
        page.screenshot(path=str(out / "trace.png"))

        page.goto(demo.url + "/sessions?range=1h")
        page.wait_for_selector("body[data-loaded]", timeout=30_000)
        page.wait_for_selector("#rows tr")
        check(page, errors, "the sessions list")
        page.screenshot(path=str(out / "sessions.png"))

        page.goto(demo.url + "/sessions/" + quote(session_id, safe=""))
        page.wait_for_selector("body[data-loaded]", timeout=30_000)
        page.wait_for_selector(".turn")
        page.mouse.move(0, 0)
        check(page, errors, f"session {session_id}")
        page.screenshot(path=str(out / "session.png"))

        page.goto(demo.url + "/alerts")  # the demo evaluates Plano's rules
        page.wait_for_selector("body[data-loaded]", timeout=30_000)
        page.wait_for_selector("#rule-rows tr[data-rule]")
        check(page, errors, "the alerts")
        page.screenshot(path=str(out / "alerts.png"))
        browser.close()
    return trace_id


def check(page, errors: list[str], what: str) -> None:
    if errors:
        raise SystemExit(f"screenshots: errors in {what}: {errors}")
    if page.locator("#error").is_visible():
        raise SystemExit(f"screenshots: {what} shows an error: {page.locator('#error').inner_text()}")


def main() -> None:
    # The demo runs this checkout's code, even where the venv's planoscope is installed from another.
    src = str(Path(__file__).resolve().parents[1] / "src")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory(prefix="planoscope-screenshots-") as tmp:
        demo = Demo(Path(tmp) / "data")
        try:
            wait_for("the demo's backfill and scrapes", lambda: ready(demo))
            trace_id = shoot(demo, Path(tmp))
        finally:
            if demo.proc.poll() is None:
                demo.stop()
        IMG.mkdir(exist_ok=True)
        for name in PICTURES:  # all or none
            shutil.move(Path(tmp) / name, IMG / name)
    print(f"screenshots: wrote {', '.join(str(IMG / n) for n in PICTURES)} (trace {trace_id})")


if __name__ == "__main__":
    main()
