"""deploy/grafana-direct/: Grafana with planoscope as its Prometheus datasource, no Prometheus
container. Checked without a Docker engine as deploy/ is (tests/test_deploy.py): Debian's
docker-compose reads the stack, planoscope's CLI parser its command line, and the Grafana files
must be what `planoscope grafana export` writes for planoscope's /prometheus."""

from __future__ import annotations

import filecmp
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from planoscope.cli import load_settings, serve

STACK = Path(__file__).resolve().parent.parent / "deploy" / "grafana-direct"
EXPORT_ARGS = ["--prometheus-url", "http://planoscope:9000/prometheus", "--planoscope-url", "http://127.0.0.1:9000"]


def _compose() -> dict:
    return yaml.safe_load((STACK / "docker-compose.yaml").read_text())


def test_docker_compose_config_accepts_the_stack_without_prometheus():
    compose = shutil.which("docker-compose")
    assert compose, "make test installs Debian's docker-compose to validate deploy/"
    r = subprocess.run(
        [compose, "-f", str(STACK / "docker-compose.yaml"), "config"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    assert set(yaml.safe_load(r.stdout)["services"]) == {"planoscope", "grafana"}
    for name, svc in _compose()["services"].items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond this host"


def test_planoscope_scrapes_envoy_and_brightstaff_and_serves_grafana():
    args = _compose()["services"]["planoscope"]["command"]
    ctx = serve.make_context("serve", list(args[1:]))
    params = dict(ctx.params)
    settings = load_settings(params.pop("config_file"), params)
    assert settings.listen == "0.0.0.0:9000" and settings.insecure
    assert [t.split("=")[0] for t in settings.scrape] == ["envoy", "brightstaff"]


def test_grafanas_datasource_is_planoscopes_prometheus_api(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "planoscope", "grafana", "export", str(tmp_path), *EXPORT_ARGS],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    deployed = sorted(
        p.relative_to(STACK / "grafana").as_posix() for p in (STACK / "grafana").rglob("*") if p.is_file()
    )
    stale = f"deploy/grafana-direct/grafana is stale: rerun planoscope grafana export deploy/grafana-direct/grafana {' '.join(EXPORT_ARGS)}"
    assert deployed == written, stale
    for rel in written:
        assert filecmp.cmp(tmp_path / rel, STACK / "grafana" / rel, shallow=False), stale
    (source,) = yaml.safe_load((STACK / "grafana/provisioning/datasources/planoscope.yaml").read_text())["datasources"]
    assert (source["type"], source["url"]) == ("prometheus", "http://planoscope:9000/prometheus")
    mounts = _compose()["services"]["grafana"]["volumes"]
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in mounts
    assert "./grafana/dashboards:/var/lib/grafana/dashboards:ro" in mounts
