"""deploy/: the compose stack for teams that already run Prometheus and Grafana. There is no
Docker engine here, so it is checked by the tools that read each file: Debian's docker-compose
(`config`), Prometheus' promtool, planoscope's own CLI parser for planoscope's command line, and
`planoscope grafana export` for the Grafana files (which must be what the export writes)."""

from __future__ import annotations

import filecmp
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from planoscope.cli import load_settings, serve

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
COMPOSE = DEPLOY / "docker-compose.yaml"
EXPORT_ARGS = [
    "--prometheus-url",
    "http://prometheus:9090",
    "--tempo-url",
    "http://tempo:3200",
    "--planoscope-url",
    "http://127.0.0.1:9000",
]


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_docker_compose_config_accepts_the_stack():
    compose = shutil.which("docker-compose")
    assert compose, "make test installs Debian's docker-compose to validate deploy/"
    r = subprocess.run([compose, "-f", str(COMPOSE), "config"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    resolved = yaml.safe_load(r.stdout)
    assert set(resolved["services"]) == {"planoscope", "prometheus", "grafana", "tempo"}


def test_every_port_is_published_on_loopback_only():
    for name, svc in _compose()["services"].items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond this host"


def test_planoscope_command_is_valid_and_forwards_to_tempo():
    args = _compose()["services"]["planoscope"]["command"]
    assert args[0] == "serve"
    ctx = serve.make_context("serve", list(args[1:]))
    params = dict(ctx.params)
    settings = load_settings(params.pop("config_file"), params)
    assert settings.forward_otlp == ["grpc://tempo:4317"]
    assert settings.listen == "0.0.0.0:9000" and settings.insecure
    assert settings.scrape == [
        "envoy=http://host.docker.internal:9901/stats/prometheus",
        "brightstaff=http://host.docker.internal:9092/metrics",
    ]


def test_prometheus_config_is_valid_and_scrapes_planoscope_and_envoy():
    promtool = shutil.which("promtool") or "/usr/bin/promtool"
    r = subprocess.run(
        [promtool, "check", "config", str(DEPLOY / "prometheus.yaml")], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stdout + r.stderr
    jobs = {j["job_name"]: j for j in yaml.safe_load((DEPLOY / "prometheus.yaml").read_text())["scrape_configs"]}
    assert jobs["planoscope"]["static_configs"][0]["targets"] == ["planoscope:9000"]
    assert jobs["envoy"]["metrics_path"] == "/stats/prometheus"


def test_grafana_files_are_what_the_export_writes(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "planoscope", "grafana", "export", str(tmp_path), *EXPORT_ARGS],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    # Every file the export writes (one per dashboard), and nothing else.
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    deployed = sorted(
        p.relative_to(DEPLOY / "grafana").as_posix() for p in (DEPLOY / "grafana").rglob("*") if p.is_file()
    )
    assert "dashboards/plano-requests.json" in written
    assert deployed == written, (
        f"deploy/grafana is stale: rerun planoscope grafana export deploy/grafana {' '.join(EXPORT_ARGS)}"
    )
    for rel in written:
        assert filecmp.cmp(tmp_path / rel, DEPLOY / "grafana" / rel, shallow=False), (
            f"deploy/grafana/{rel} is stale: rerun planoscope grafana export deploy/grafana {' '.join(EXPORT_ARGS)}"
        )
    mounts = _compose()["services"]["grafana"]["volumes"]
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in mounts
    assert "./grafana/dashboards:/var/lib/grafana/dashboards:ro" in mounts


def test_tempo_receives_otlp_grpc_where_planoscope_forwards():
    tempo = yaml.safe_load((DEPLOY / "tempo.yaml").read_text())
    assert tempo["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"] == "0.0.0.0:4317"
