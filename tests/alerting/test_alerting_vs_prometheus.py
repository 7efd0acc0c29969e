"""The same rule file evaluated by Debian's Prometheus and by planoscope, both scraping the same
target (every 0.5 s, rules every 1 s): the same alerts, with the same labels and annotations,
go pending, fire and resolve at about the same time. Each scrapes and evaluates on its own clock,
so "about" is one evaluation interval plus one scrape interval (1.5 s)."""

from __future__ import annotations

import json
import subprocess
import time

import httpx
import pytest

from support.alerting import RULES, GaugeTarget, free_port, serve, wait_for

PROMETHEUS = "/usr/bin/prometheus"
SLACK_S = 1.5  # one evaluation interval (1 s) and one scrape interval (0.5 s), plus the watch's polling


@pytest.fixture
def prometheus(tmp_path):
    target = GaugeTarget()
    rules = tmp_path / "rooms.yml"
    rules.write_text(RULES)
    config = {
        "global": {"scrape_interval": "500ms", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": [{"job_name": "rooms", "static_configs": [{"targets": [f"127.0.0.1:{target.port}"]}]}],
    }
    (tmp_path / "prometheus.yml").write_text(json.dumps(config))
    port = free_port()
    log = open(tmp_path / "prometheus.log", "w")
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"

    def ready():
        assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()
        try:
            return httpx.get(url + "/-/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(ready, 60, "Prometheus to be ready")
        yield url, target, rules
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
        target.close()


def _alerts(url: str) -> dict[tuple, dict]:
    r = httpx.get(url + "/api/v1/alerts", timeout=10)
    assert r.status_code == 200, r.text
    return {tuple(sorted(a["labels"].items())): a for a in r.json()["data"]["alerts"]}


def _up(url: str) -> bool:
    r = httpx.get(url + "/api/v1/query", params={"query": 'up{job="rooms"} == 1'}, timeout=10).json()
    return bool(r["data"]["result"])


def test_prometheus_and_planoscope_fire_and_resolve_the_same_alerts_together(server_factory, tmp_path, prometheus):
    prom, target, rules = prometheus
    target.values = {"a": 10.0, "b": 25.0}
    srv = serve(server_factory, tmp_path, target, rules)
    sides = {"prometheus": prom, "planoscope": srv.web_url + "/prometheus"}
    wait_for(lambda: all(_up(u) for u in sides.values()), 30, "both to scrape the target")
    wait_for(lambda: all(len(_alerts(u)) == 1 for u in sides.values()), 30, "RoomWarm pending on both")

    seen: dict[tuple[str, tuple, str], float] = {}  # (side, labels, state) → first time seen
    gone: dict[tuple[str, tuple], float] = {}
    passes = [0.0]  # the longest pass over both sides: a change is seen up to one pass late

    def watch(until):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            began = time.monotonic()
            for side, url in sides.items():
                now = time.monotonic()
                current = _alerts(url)
                for key, a in current.items():
                    seen.setdefault((side, key, a["state"]), now)
                for side_, key, _ in list(seen):
                    if side_ == side and key not in current:
                        gone.setdefault((side, key), now)
            if until():
                return
            time.sleep(0.1)
            passes[0] = max(passes[0], time.monotonic() - began)
        raise AssertionError(f"timed out: seen {sorted(seen)}")

    hot = (("alertname", "RoomHot"), ("room", "a"), ("severity", "page"))
    target.values = {"a": 35.0, "b": 25.0}
    watch(lambda: all((s, hot, "firing") in seen for s in sides))
    target.values = {"a": 10.0, "b": 10.0}
    watch(lambda: all((s, hot) in gone for s in sides))

    for state in ("pending", "firing"):
        p, q = seen[("prometheus", hot, state)], seen[("planoscope", hot, state)]
        print(f"RoomHot {state}: planoscope - prometheus = {q - p:+.2f} s")
        assert abs(p - q) <= SLACK_S + passes[0], (state, q - p, passes[0])
    resolved = gone[("planoscope", hot)] - gone[("prometheus", hot)]
    print(f"RoomHot resolved: planoscope - prometheus = {resolved:+.2f} s")
    assert abs(resolved) <= SLACK_S + passes[0], (resolved, passes[0])

    # Same alerts in the same states (RoomWarm's pending ones included).
    def states(side):
        return {(k[1], k[2]) for k in seen if k[0] == side}

    assert states("prometheus") == states("planoscope")


def test_both_expand_the_annotations_alike(server_factory, tmp_path, prometheus):
    prom, target, rules = prometheus
    target.values = {"a": 35.5}
    srv = serve(server_factory, tmp_path, target, rules)
    sides = [prom, srv.web_url + "/prometheus"]

    def firing():
        found = [{k: a for k, a in _alerts(u).items() if a["state"] == "firing"} for u in sides]
        return found if all(found) else None

    p, q = wait_for(firing, 60, "RoomHot firing on both")
    assert p.keys() == q.keys()
    for key in p:
        assert (
            p[key]["annotations"]
            == q[key]["annotations"]
            == {"summary": "a is 35.5 degrees", "runbook": "open the window"}
        )
        assert p[key]["value"] == q[key]["value"]
