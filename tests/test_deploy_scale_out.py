"""deploy/scale-out/: planoscope scaled out on ClickHouse (docs/scale-out.md). No Docker engine
here either, so each file is checked by the tool that reads it: Debian's docker-compose
(`config`, with and without the passwords' env file), HAProxy's `haproxy -c`, Prometheus'
promtool, planoscope's own settings for each instance's command line and environment, and
`planoscope grafana export` for the Grafana files."""

from __future__ import annotations

import filecmp
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from planoscope.cli import serve
from planoscope.settings import build_settings
from planoscope.store.clickhouse_url import ClickHouseURL

STACK = Path(__file__).resolve().parent.parent / "deploy" / "scale-out"
COMPOSE = STACK / "docker-compose.yaml"
EXPORT_ARGS = ["--prometheus-url", "http://prometheus:9090", "--planoscope-url", "http://127.0.0.1:9000"]
INGEST = ("ingest-1", "ingest-2")
PASSWORD = "c0ffee15a7e57pa55w0rd"


def _config(tmp_path, env_text: str) -> subprocess.CompletedProcess:
    env_file = tmp_path / "stack.env"
    env_file.write_text(env_text)
    compose = shutil.which("docker-compose")
    assert compose, "make test installs Debian's docker-compose to validate deploy/"
    environ = {k: v for k, v in os.environ.items() if not k.endswith("_PASSWORD")}
    return subprocess.run(
        [compose, "--env-file", str(env_file), "-f", str(COMPOSE), "config"],
        capture_output=True,
        text=True,
        timeout=60,
        env=environ,
    )


def _resolved(tmp_path) -> dict:
    r = _config(tmp_path, f"CLICKHOUSE_PASSWORD={PASSWORD}\nGRAFANA_ADMIN_PASSWORD=grafana-{PASSWORD}\n")
    assert r.returncode == 0, r.stderr
    return yaml.safe_load(r.stdout)["services"]


def _settings(svc: dict):
    """The settings the container's planoscope runs with: its command line and its environment."""
    args = svc["command"]
    assert args[0] == "serve"
    ctx = serve.make_context("serve", list(args[1:]))
    params = dict(ctx.params)
    flags = {k: (",".join(v) if v else None) if isinstance(v, tuple) else v for k, v in params.items()}
    return build_settings(params.pop("config_file"), svc.get("environment", {}), flags)


def test_docker_compose_config_accepts_the_stack(tmp_path):
    services = _resolved(tmp_path)
    assert set(services) == {"clickhouse", *INGEST, "otlp", "planoscope", "prometheus", "grafana"}
    assert services["otlp"]["image"].startswith("haproxy:")


def test_no_password_in_the_compose_file_and_none_by_default(tmp_path):
    raw = yaml.safe_load(COMPOSE.read_text())
    assert raw["services"]["clickhouse"]["environment"]["CLICKHOUSE_PASSWORD"].startswith("${CLICKHOUSE_PASSWORD:?")
    assert "${CLICKHOUSE_PASSWORD:?" in raw["x-planoscope"]["environment"]["PLANOSCOPE_STORE"]
    assert raw["services"]["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"].startswith(
        "${GRAFANA_ADMIN_PASSWORD:?"
    )
    # The example env file as copied (empty values), or no env file: compose refuses to start.
    example = (STACK / ".env.example").read_text()
    for env_text in (example, ""):
        r = _config(tmp_path, env_text)
        assert r.returncode != 0 and "set CLICKHOUSE_PASSWORD in deploy/scale-out/.env" in r.stderr, r.stderr
    gitignore = (STACK.parent.parent / ".gitignore").read_text().split()
    assert "deploy/scale-out/.env" in gitignore


def test_ports_are_on_loopback_only_and_clickhouse_and_ingest_publish_none(tmp_path):
    services = _resolved(tmp_path)
    published = {}
    for name, svc in services.items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond this host"
            published.setdefault(name, []).append(str(port).split(":")[1])
    assert published == {"otlp": ["4317", "4318"], "planoscope": ["9000"], "prometheus": ["9090"], "grafana": ["3000"]}


def test_every_instance_uses_the_clickhouse_database_with_its_password(tmp_path):
    services = _resolved(tmp_path)
    ch = services["clickhouse"]["environment"]
    volumes = set()
    for name in (*INGEST, "planoscope"):
        svc = services[name]
        assert not any(PASSWORD in a for a in svc["command"]), f"{name}'s password would show in ps"
        s = _settings(svc)
        url = ClickHouseURL.parse(s.store)
        assert (url.user, url.password, url.host, url.port, url.database) == (
            ch["CLICKHOUSE_USER"],
            PASSWORD,
            "clickhouse",
            8123,
            ch["CLICKHOUSE_DB"],
        )
        assert svc["depends_on"]["clickhouse"]["condition"] == "service_healthy"
        assert str(s.data_dir) == "/data" and s.listen == "0.0.0.0:9000" and s.insecure
        volumes |= {v.split(":")[0] for v in svc["volumes"] if v.endswith(":/data:rw")}
    assert len(volumes) == 3, "each instance needs a data directory (journal, state file) of its own"


def test_ingest_instances_take_otlp_and_the_ui_instance_does_not(tmp_path):
    services = _resolved(tmp_path)
    for name in INGEST:
        s = _settings(services[name])
        assert (s.otlp_grpc, s.otlp_http) == ("0.0.0.0:4317", "0.0.0.0:4318")
        assert s.scrape == []  # samples would be stored once per scraper
    ui = _settings(services["planoscope"])
    # on the container's loopback: no other container, nor the host (not published), reaches them
    assert (ui.otlp_grpc, ui.otlp_http) == ("127.0.0.1:4317", "127.0.0.1:4318")
    assert ui.scrape == [
        "envoy=http://host.docker.internal:9901/stats/prometheus",
        "brightstaff=http://host.docker.internal:9092/metrics",
    ]


def test_haproxy_config_is_valid_and_balances_over_both_ingest_instances():
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    assert Path(haproxy).exists(), "make test installs Debian's haproxy to validate deploy/scale-out/"
    cfg = STACK / "haproxy.cfg"
    r = subprocess.run([haproxy, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "Configuration file is valid" in r.stdout, r.stdout + r.stderr
    # The only warnings: the instances' names, which resolve inside the compose network only.
    warnings = [ln for ln in r.stderr.splitlines() if "[WARNING]" in ln or "[ALERT]" in ln]
    assert warnings and all("could not resolve address 'ingest-" in ln for ln in warnings), r.stderr
    sections: dict[str, list[str]] = {}
    for line in cfg.read_text().splitlines():
        line = line.split("#")[0].rstrip()
        if line and not line[0].isspace():
            current = sections.setdefault(line, [])
        elif line:
            current.append(line.strip())
    assert "bind :4317 proto h2" in sections["frontend otlp_grpc"]  # HTTP/2: a balance per request
    assert "bind :4318" in sections["frontend otlp_http"]
    servers = {
        backend: [ln.split()[2] for ln in lines if ln.startswith("server ")]
        for backend, lines in sections.items()
        if backend.startswith("backend ")
    }
    assert servers == {
        "backend ingest_grpc": ["ingest-1:4317", "ingest-2:4317"],
        "backend ingest_http": ["ingest-1:4318", "ingest-2:4318"],
    }
    assert all(ln.endswith("proto h2") for ln in sections["backend ingest_grpc"] if ln.startswith("server "))
    assert "retry-on conn-failure" in sections["defaults"]  # never a request an instance may have taken


def test_prometheus_scrapes_both_ingest_instances(tmp_path):
    promtool = shutil.which("promtool") or "/usr/bin/promtool"
    r = subprocess.run(
        [promtool, "check", "config", str(STACK / "prometheus.yaml")], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stdout + r.stderr
    jobs = {j["job_name"]: j for j in yaml.safe_load((STACK / "prometheus.yaml").read_text())["scrape_configs"]}
    services = _resolved(tmp_path)
    listens = [f"{name}:{_settings(services[name]).listen.rpartition(':')[2]}" for name in INGEST]
    assert jobs["planoscope"]["static_configs"][0]["targets"] == listens
    assert jobs["envoy"]["metrics_path"] == "/stats/prometheus"


def test_grafana_files_are_what_the_export_writes_and_sum_the_instances(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "planoscope", "grafana", "export", str(tmp_path / "g"), *EXPORT_ARGS],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    out, deployed_dir = tmp_path / "g", STACK / "grafana"
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    deployed = sorted(p.relative_to(deployed_dir).as_posix() for p in deployed_dir.rglob("*") if p.is_file())
    stale = f"deploy/scale-out/grafana is stale: rerun planoscope grafana export deploy/scale-out/grafana {' '.join(EXPORT_ARGS)}"
    assert deployed == written, stale
    for rel in written:
        assert filecmp.cmp(out / rel, deployed_dir / rel, shallow=False), stale
    # Each instance counts its own spans: every span-metric query sums over the instances.
    for rel in written:
        if rel.startswith("dashboards/"):
            exprs = re.findall(r'"expr": "([^"\\]*(?:\\.[^"\\]*)*)"', (out / rel).read_text())
            span_metric = [e for e in exprs if not e.startswith("rate(envoy_")]
            assert span_metric and all("sum(" in e for e in span_metric), rel
    mounts = _resolved(tmp_path)["grafana"]["volumes"]
    assert f"{deployed_dir}/provisioning:/etc/grafana/provisioning:ro" in mounts
    assert f"{deployed_dir}/dashboards:/var/lib/grafana/dashboards:ro" in mounts
