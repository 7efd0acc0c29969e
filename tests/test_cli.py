"""The command line: bad settings and failed starts end with exit code 2 or 1 and one clear
line on stderr; settings come from file < environment < flags; ``--help`` lists every setting.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from opentelemetry.trace import SpanKind

from conftest import now_base_ns, sdk_export
from planoscope.settings import ConfigError, Settings, build_settings

FREE_PORTS = ["--otlp-grpc", "127.0.0.1:0", "--otlp-http", "127.0.0.1:0", "--listen", "127.0.0.1:0"]
TIMEOUT_S = 60


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLANOSCOPE_")}
    env.update(extra)
    return env


@dataclass
class Run:
    args: list[str]
    env: dict[str, str] = field(default_factory=clean_env)
    returncode: int | None = None
    stdout: str = ""
    stderr: str = ""

    def error_lines(self) -> list[str]:
        """stderr without planoscope's own INFO/DEBUG log lines."""
        return [
            ln
            for ln in self.stderr.splitlines()
            if ln.strip() and not ln.startswith(("planoscope: INFO ", "planoscope: DEBUG "))
        ]

    def __str__(self) -> str:
        return (
            f"planoscope {' '.join(self.args)}\nexit code {self.returncode}\n"
            f"--- stdout\n{self.stdout}--- stderr\n{self.stderr}"
        )


def run_all(runs: list[Run]) -> list[Run]:
    """Run the planoscope command lines concurrently (each is a fresh interpreter)."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "planoscope", *r.args],
            env=r.env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        for r in runs
    ]
    for r, p in zip(runs, procs):
        try:
            r.stdout, r.stderr = p.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            p.kill()
            r.stdout, r.stderr = p.communicate()
            r.stderr += f"\n[test: killed after {TIMEOUT_S}s]"
        r.returncode = p.returncode
    return runs


# --------------------------------------------------------------------------------------------
# Bad settings: exit code 2, one stderr line naming the setting (and where it came from)
# --------------------------------------------------------------------------------------------


@dataclass
class BadCase:
    id: str
    args: list[str]
    must_name: list[str]
    env: dict[str, str] = field(default_factory=dict)
    config: str | None = None  # YAML text written to <tmp>/<id>.yaml, passed as --config


# End to end through the real command (exit code, stderr, no traceback)...
BAD_CASES = [
    BadCase("buckets decreasing", ["--metrics-buckets-ms", "10,5"], ["metrics_buckets_ms", "--metrics-buckets-ms"]),
    BadCase("grpc address", ["--otlp-grpc", "nonsense"], ["otlp_grpc", "nonsense"]),
    BadCase(
        "env value",
        [],
        ["metrics_buckets_ms", "PLANOSCOPE_METRICS_BUCKETS_MS"],
        env={"PLANOSCOPE_METRICS_BUCKETS_MS": "10,5"},
    ),
    BadCase("yaml unknown key", [], ["bogus_key", "{config}"], config="data_dir: x\nbogus_key: 1\n"),
    BadCase("yaml invalid", [], ["{config}", "YAML"], config="data_dir: [unclosed\nlisten: x: y\n"),
    BadCase("yaml via env", [], ["bogus_key"], env={"PLANOSCOPE_CONFIG": "{config}"}, config="bogus_key: 1\n"),
]

# ... and the rest of the validation in-process, through the same function the command uses.
BAD_VALUES = [
    ("metrics_buckets_ms", "0,5"),
    ("metrics_buckets_ms", "a,b"),
    ("metrics_buckets_ms", ""),
    ("otlp_http", "127.0.0.1:99999"),
    ("listen", "localhost"),
    ("dedupe_window", "forever"),
    ("dedupe_max_spans", "-1"),
    ("max_request_bytes", "lots"),
    ("log_level", "loud"),
    ("metrics_namespace", "9-lives"),
]


@pytest.mark.parametrize("key, value", BAD_VALUES)
def test_bad_value_is_one_line_naming_the_setting(key, value):
    with pytest.raises(ConfigError) as e:
        build_settings(None, {}, {key: value})
    msg = str(e.value)
    assert key in msg and "--" + key.replace("_", "-") in msg, msg
    assert "\n" not in msg


@pytest.mark.parametrize(
    "text, must_name",
    [
        ("- data_dir\n- listen\n", "must be a mapping"),
        ("metrics_buckets_ms: [10, 5]\n", "metrics_buckets_ms"),
    ],
)
def test_bad_config_file_is_one_line(tmp_path, text, must_name):
    config = tmp_path / "c.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError) as e:
        build_settings(config, {}, {})
    msg = str(e.value)
    assert must_name in msg and str(config) in msg, msg
    assert "\n" not in msg


def test_missing_config_file_is_one_line(tmp_path):
    with pytest.raises(ConfigError) as e:
        build_settings(tmp_path / "no-such.yaml", {}, {})
    assert "no-such.yaml" in str(e.value) and "\n" not in str(e.value)


# --------------------------------------------------------------------------------------------
# Every command line that ends on its own, run at once (each is a fresh interpreter)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def taken_port():
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield f"127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


@pytest.fixture(scope="module")
def runs(tmp_path_factory, taken_port):
    tmp = tmp_path_factory.mktemp("cli")
    out: dict[str, tuple[Run, list[str]]] = {}
    for case in BAD_CASES:
        config = tmp / (case.id.replace(" ", "-") + ".yaml")

        def fill(text: str, config: Path = config) -> str:
            return text.replace("{config}", str(config)).replace("{tmp}", str(tmp))

        args = ["serve", "--data-dir", str(tmp / case.id.replace(" ", "-")), *FREE_PORTS, *[fill(a) for a in case.args]]
        if case.config is not None:
            config.write_text(case.config)
            if "PLANOSCOPE_CONFIG" not in case.env:
                args += ["--config", str(config)]
        out[case.id] = (
            Run(args, clean_env(**{k: fill(v) for k, v in case.env.items()})),
            [fill(n) for n in case.must_name],
        )
    for flag in ("--otlp-grpc", "--otlp-http", "--listen"):
        args = list(FREE_PORTS)
        args[args.index(flag) + 1] = taken_port
        out["taken " + flag] = (Run(["serve", "--data-dir", str(tmp / flag.strip("-")), *args]), [])
    not_a_dir = tmp / "a-file"
    not_a_dir.write_text("")
    out["data dir"] = (Run(["serve", "--data-dir", str(not_a_dir / "data"), *FREE_PORTS]), [str(not_a_dir / "data")])
    out["help"] = (Run(["--help"]), [])
    out["serve help"] = (Run(["serve", "--help"]), [])
    out["version"] = (Run(["--version"]), [])
    run_all([r for r, _ in out.values()])
    return out


@pytest.mark.parametrize("case", [c.id for c in BAD_CASES])
def test_bad_setting_exits_2_with_one_line_naming_it(runs, case):
    run, must_name = runs[case]
    assert run.returncode == 2, run
    lines = run.error_lines()
    assert len(lines) == 1, run
    assert lines[0].startswith("planoscope: error: "), run
    for name in must_name:
        assert name in lines[0], f"{name!r} not named:\n{run}"
    assert "Traceback" not in run.stderr
    assert "ready" not in run.stdout


# --------------------------------------------------------------------------------------------
# Failed starts: exit code 1, one line naming what could not be had
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["--otlp-grpc", "--otlp-http", "--listen"])
def test_port_taken_exits_1_with_one_line_naming_the_address(runs, taken_port, flag):
    run, _ = runs["taken " + flag]
    assert run.returncode == 1, run
    lines = run.error_lines()
    assert len(lines) == 1, f"expected one line on stderr:\n{run}"
    assert lines[0].startswith("planoscope: error: "), run
    assert taken_port in lines[0], run
    assert "in use" in lines[0].lower(), f"the reason (address in use) is not given:\n{run}"
    assert "Traceback" not in run.stderr
    assert "ready" not in run.stdout


def test_data_dir_that_cannot_be_created_exits_1(runs):
    run, (path,) = runs["data dir"]
    assert run.returncode == 1, run
    lines = run.error_lines()
    assert len(lines) == 1, run
    assert lines[0].startswith("planoscope: error: ") and path in lines[0], run
    assert "Traceback" not in run.stderr


def test_data_dir_in_use_by_another_planoscope_exits_1(server_factory, tmp_path):
    first = server_factory(tmp_path / "data")
    (run,) = run_all([Run(["serve", "--data-dir", str(tmp_path / "data"), *FREE_PORTS])])
    assert run.returncode == 1, run
    lines = run.error_lines()
    assert len(lines) == 1, run
    assert str(tmp_path / "data") in lines[0], run
    assert "in use" in lines[0] or "already running" in lines[0], run
    assert first.running
    assert first.healthz()["status"] == "ok"


# --------------------------------------------------------------------------------------------
# A broken data directory: exit code 1, one line, and the files as they were
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def broken_starts(module_server_factory, tmp_path_factory):
    """Each case's data directory broken as a disk or an operator breaks one, then every start
    at once. Once each of these printed a 45- to 65-line traceback."""
    import hashlib
    import shutil

    tmp = tmp_path_factory.mktemp("broken")
    template = tmp / "template"
    srv = module_server_factory(template)
    base = now_base_ns()
    spans = [{"resource": {"service.name": "s"}, "name": "x", "kind": SpanKind.SERVER, "start": base, "end": base + 1}]
    for _ in range(3):
        sdk_export(srv, spans * 200)
    srv.stop()
    dirs = {}
    for case in ("truncated database", "journal on a read-only mount", "immutable journal", "a directory as a segment"):
        dirs[case] = tmp / case.replace(" ", "-")
        shutil.copytree(template, dirs[case])
    db = dirs["truncated database"] / "planoscope.duckdb"
    with open(db, "r+b") as f:
        f.truncate(db.stat().st_size // 2)
    sha = hashlib.sha256(db.read_bytes()).hexdigest()
    (dirs["a directory as a segment"] / "journal" / "00000000000000000000.log").mkdir()
    ro = dirs["journal on a read-only mount"] / "journal"
    immutable = dirs["immutable journal"] / "journal"
    full = tmp / "full"
    full.mkdir()
    dirs["full disk"] = full / "data"
    undo = []
    try:
        subprocess.run(["mount", "--bind", str(ro), str(ro)], check=True)
        undo.append(["umount", str(ro)])
        subprocess.run(["mount", "-o", "remount,ro,bind", str(ro)], check=True)
        subprocess.run(["chattr", "+i", str(immutable)], check=True)  # root ignores chmod
        undo.append(["chattr", "-i", str(immutable)])
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(full)], check=True)
        undo.append(["umount", str(full)])
        subprocess.run(["dd", "if=/dev/zero", f"of={full}/filler", "bs=64k"], capture_output=True)
        runs = {case: Run(["serve", "--data-dir", str(d), *FREE_PORTS]) for case, d in dirs.items()}
        run_all(list(runs.values()))
    finally:
        for cmd in reversed(undo):
            subprocess.run(cmd, check=True)
    return runs, dirs, hashlib.sha256(db.read_bytes()).hexdigest() == sha


@pytest.mark.parametrize(
    "case, says",
    [
        ("truncated database", "is truncated"),
        ("journal on a read-only mount", "Read-only file system"),
        ("immutable journal", "Operation not permitted"),
        ("a directory as a segment", "is not a file"),
        ("full disk", "No space left on device"),
    ],
)
def test_a_start_on_a_broken_data_directory_exits_1_with_one_line(broken_starts, case, says):
    runs, dirs, _ = broken_starts
    run = runs[case]
    assert run.returncode == 1, run
    lines = run.error_lines()
    assert len(lines) == 1, run
    assert lines[0].startswith("planoscope: error: ") and says in lines[0], run
    assert str(dirs[case]) in lines[0], run  # where: the server's own output may name paths
    assert "Traceback" not in run.stderr and "ready" not in run.stdout


def test_a_failed_start_leaves_a_corrupt_database_byte_for_byte(broken_starts):
    """Its checkpoint on close once wrote 2,632 bytes into the truncated file."""
    runs, dirs, unchanged = broken_starts
    assert runs["truncated database"].returncode == 1 and unchanged
    assert sorted(p.name for p in dirs["truncated database"].iterdir()) == ["journal", "planoscope.duckdb"]


# --------------------------------------------------------------------------------------------
# Precedence: file < environment < flags
# --------------------------------------------------------------------------------------------


def test_precedence_file_then_env_then_flags(tmp_path):
    config = tmp_path / "planoscope.yaml"
    config.write_text(
        "data_dir: /from/file\n"
        "otlp_grpc: 10.0.0.1:1111\n"
        "otlp_http: 10.0.0.1:2222\n"
        "metrics_namespace: file_ns\n"
        "metrics_dimensions: [llm.model, plano.route.name]\n"
        "dedupe_window: 2h\n"
    )
    env = {
        "PLANOSCOPE_OTLP_GRPC": "10.0.0.2:1111",
        "PLANOSCOPE_METRICS_NAMESPACE": "env_ns",
        "PLANOSCOPE_METRICS_BUCKETS_MS": "1, 2.5,100",
        "PLANOSCOPE_LOG_LEVEL": "WARNING",
        "UNRELATED": "x",
    }
    flags = {"metrics_namespace": "flag_ns", "data_dir": None, "listen": "0.0.0.0:9999", "otlp_http": None}
    s = build_settings(config, env, flags)
    assert s.data_dir == Path("/from/file")  # file (the flag was not given)
    assert s.otlp_grpc == "10.0.0.2:1111"  # env beats file
    assert s.otlp_http == "10.0.0.1:2222"  # file
    assert s.metrics_namespace == "flag_ns"  # flag beats env and file
    assert s.listen == "0.0.0.0:9999"  # flag
    assert s.metrics_dimensions == ["llm.model", "plano.route.name"]  # YAML list
    assert s.metrics_buckets_ms == [1.0, 2.5, 100.0]  # comma-separated in the environment
    assert s.dedupe_window == 7200.0
    assert s.log_level == "warning"
    assert s.dedupe_max_spans == 1_000_000  # default


def test_defaults_without_any_source():
    s = build_settings(None, {}, {})
    assert s == Settings()
    assert (s.otlp_grpc, s.otlp_http, s.listen) == ("127.0.0.1:4317", "127.0.0.1:4318", "127.0.0.1:9000")
    assert s.metrics_namespace == ""
    assert s.metrics_dimensions == ["llm.model", "agent_id", "selection.listener", "http.method", "http.status_code"]
    assert s.metrics_buckets_ms == [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000]
    assert s.dedupe_window == 600.0


def test_bad_value_names_the_setting_and_its_source(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("metrics_buckets_ms: [5, 10]\nlisten: nonsense\n")
    with pytest.raises(ConfigError) as e:
        build_settings(config, {}, {})
    assert "listen" in str(e.value) and str(config) in str(e.value)
    with pytest.raises(ConfigError) as e:
        build_settings(config, {"PLANOSCOPE_LISTEN": "also nonsense"}, {})
    assert "listen" in str(e.value) and "PLANOSCOPE_LISTEN" in str(e.value)
    with pytest.raises(ConfigError) as e:
        build_settings(config, {"PLANOSCOPE_LISTEN": "127.0.0.1:1"}, {"metrics_buckets_ms": "3,2"})
    assert "metrics_buckets_ms" in str(e.value) and "--metrics-buckets-ms" in str(e.value)
    assert "\n" not in str(e.value)


def test_precedence_through_the_real_command(server_factory, tmp_path):
    """The same order end to end, seen on /metrics: names (namespace), labels (dimensions), buckets."""
    config = tmp_path / "planoscope.yaml"
    config.write_text(
        "metrics_namespace: file_ns\nmetrics_dimensions: [plano.route.name]\nmetrics_buckets_ms: [1, 2]\n"
    )
    env = {
        "PLANOSCOPE_CONFIG": str(config),
        "PLANOSCOPE_METRICS_NAMESPACE": "env_ns",
        "PLANOSCOPE_METRICS_BUCKETS_MS": "3,4",
    }
    srv = server_factory(tmp_path / "data", "--metrics-buckets-ms", "7", env=env)
    base = now_base_ns()
    sdk_export(
        srv,
        [
            {
                "resource": {"service.name": "plano(routing)"},
                "name": "route",
                "kind": SpanKind.INTERNAL,
                "start": base,
                "end": base + 5_000_000,
                "attrs": {"plano.route.name": "code"},
            }
        ],
    )
    m = srv.metrics()
    labels = {
        "service_name": "plano(routing)",
        "span_name": "route",
        "span_kind": "SPAN_KIND_INTERNAL",
        "status_code": "STATUS_CODE_UNSET",
        "plano_route_name": "code",
    }
    assert m.value("env_ns_calls_total", labels) == 1  # namespace: env beats file; dimensions: file
    assert m.buckets("env_ns_duration_milliseconds", labels) == {"7": 1, "+Inf": 1}  # buckets: flag


# --------------------------------------------------------------------------------------------
# --help
# --------------------------------------------------------------------------------------------


def test_top_level_help_lists_serve(runs):
    run, _ = runs["help"]
    assert run.returncode == 0, run
    assert "serve" in run.stdout
    assert "PLANOSCOPE_" in run.stdout and "--config" in run.stdout


def test_serve_help_lists_every_setting_with_its_env_var(runs):
    run, _ = runs["serve help"]
    assert run.returncode == 0, run
    text = " ".join(run.stdout.split())
    for name in Settings.model_fields:
        assert "--" + name.replace("_", "-") in run.stdout, name
        assert "PLANOSCOPE_" + name.upper() in text, name
    assert "--config" in run.stdout


def test_version(runs):
    from planoscope import __version__

    run, _ = runs["version"]
    assert run.returncode == 0, run
    assert __version__ in run.stdout


def test_a_non_loopback_listen_address_is_refused_without_insecure(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "planoscope",
        "serve",
        "--data-dir",
        str(tmp_path / "d"),
        "--listen",
        "0.0.0.0:0",
        "--otlp-grpc",
        "127.0.0.1:0",
        "--otlp-http",
        "127.0.0.1:0",
        "--scrape",
        "",
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert run.returncode == 1, run
    lines = [ln for ln in run.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "refusing to serve the UI, API and /metrics on 0.0.0.0:0" in lines[0], run.stderr
    assert "--insecure" in lines[0] and "ready" not in run.stdout


def test_insecure_serves_on_every_interface_with_a_warning(server_factory, tmp_path):
    srv = server_factory(tmp_path / "d", "--listen", "0.0.0.0:0", "--insecure")
    assert srv.web_url.startswith("http://0.0.0.0:")
    assert any("without authentication (--insecure)" in ln for ln in srv.lines("err"))
    assert srv.healthz()["status"] == "ok"
