"""`planoscope grafana export DIR`: every dashboard's JSON and the provisioning files, generated from
the panel definitions, against the reference stack's own dashboard and Grafana's structure. (The
LLM Usage dashboard's PromQL is checked by a real Prometheus in test_llm_prometheus.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from planoscope.grafana.export import export, file_name
from planoscope.query.dashboards import DASHBOARDS, Dashboard
from planoscope.query.panels import PANELS, Panel, Target

REFERENCE = Path(__file__).resolve().parents[1] / "reference"  # copies, see its README
SHARED = Path(__file__).resolve().parents[3] / "shared" / "reference" / "seed-stack" / "grafana"


def _export(out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "planoscope", "grafana", "export", str(out), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_export_writes_the_reference_dashboard_and_provisioning(tmp_path):
    r = _export(tmp_path / "g", "--prometheus-url", "http://localhost:9090")
    assert r.returncode == 0, r.stderr
    files = sorted(p.relative_to(tmp_path / "g").as_posix() for p in (tmp_path / "g").rglob("*") if p.is_file())
    assert files == sorted(
        [
            *(f"dashboards/{file_name(d)}" for d in DASHBOARDS),
            "provisioning/dashboards/planoscope.yaml",
            "provisioning/datasources/planoscope.yaml",
        ]
    )
    assert "dashboards/plano-requests.json" in files
    assert r.stdout.count("wrote ") == len(DASHBOARDS) + 2

    ours = json.loads((tmp_path / "g" / "dashboards" / "plano-requests.json").read_text())
    ref = json.loads((REFERENCE / "plano-requests.json").read_text())
    # Everything but the panels is the reference's, uid and datasource variable included, so it
    # replaces the reference dashboard in a Grafana that has it.
    assert {k: v for k, v in ours.items() if k != "panels"} == {k: v for k, v in ref.items() if k != "panels"}
    assert len(ours["panels"]) == len(PANELS) >= len(ref["panels"])
    for mine, theirs in zip(ours["panels"], ref["panels"]):
        strip = lambda p: {k: v for k, v in p.items() if k not in ("id", "description")}  # noqa: E731
        assert strip(mine) == strip(theirs), mine["title"]

    ds = yaml.safe_load((tmp_path / "g" / "provisioning" / "datasources" / "planoscope.yaml").read_text())
    assert ds["datasources"] == [
        {
            "name": "Prometheus",
            "type": "prometheus",
            "access": "proxy",
            "url": "http://localhost:9090",
            "isDefault": True,
            "editable": True,
        }
    ]
    prov = yaml.safe_load((tmp_path / "g" / "provisioning" / "dashboards" / "planoscope.yaml").read_text())
    ref_prov = yaml.safe_load((REFERENCE / "dashboards.yaml").read_text())
    assert prov == ref_prov


def test_every_dashboard_has_grafanas_structure(tmp_path):
    assert _export(tmp_path / "g").returncode == 0
    uids = set()
    for d in DASHBOARDS:
        dash = json.loads((tmp_path / "g" / "dashboards" / file_name(d)).read_text())
        assert isinstance(dash["schemaVersion"], int) and dash["uid"] and dash["title"] == d.title
        uids.add(dash["uid"])
        assert len(dash["panels"]) == len(d.panels)
        ids = [p["id"] for p in dash["panels"]]
        assert len(set(ids)) == len(ids) and all(isinstance(i, int) for i in ids)
        cells = set()
        for p in dash["panels"]:
            assert p["type"] in ("timeseries", "stat", "text")
            g = p["gridPos"]
            assert all(isinstance(g[k], int) for k in "xywh") and 0 <= g["x"] and g["x"] + g["w"] <= 24
            mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
            assert not cells & mine, f"{p['title']} overlaps another panel"
            cells |= mine
            if p["type"] == "text":  # a panel /metrics cannot answer
                assert "targets" not in p and p["options"]["content"]
                continue
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            refs = [t["refId"] for t in p["targets"]]
            assert refs and refs == [chr(ord("A") + i) for i in range(len(refs))]
            for t in p["targets"]:
                assert t["expr"] and t["datasource"] == p["datasource"]
            assert p["fieldConfig"]["defaults"]["unit"]
        (var,) = dash["templating"]["list"]
        assert var["type"] == "datasource" and var["name"] == "datasource" and var["query"] == "prometheus"
    assert len(uids) == len(DASHBOARDS)
    requests = json.loads((tmp_path / "g" / "dashboards" / "plano-requests.json").read_text())
    assert {p["fieldConfig"]["defaults"]["unit"] for p in requests["panels"]} <= {"reqps", "ms", "short"}


def test_each_dashboard_is_its_own_file_and_a_panel_without_promql_a_text_panel(tmp_path):
    """A dashboard other than the reference's gets uid and file plano-{id}; a panel /metrics cannot
    answer (no targets) becomes a text panel with its description and a link to planoscope."""
    panels = (
        Panel("tokens", "Tokens", "suffix: tok/s", "timeseries", (0, 0, 12, 8), None, (Target("sum(x)", "x"),)),
        Panel("sessions", "Sessions", "currencyUSD", "stat", (12, 0, 12, 8), None, (), "Not on /metrics."),
    )
    written = export(
        tmp_path,
        "http://p:9090",
        "/d",
        "http://plano-host:9000/",
        dashboards=[DASHBOARDS[0], Dashboard("x", "X", panels)],
    )
    assert (
        tmp_path / "dashboards" / "plano-x.json" in written
        and tmp_path / "dashboards" / "plano-requests.json" in written
    )
    dash = json.loads((tmp_path / "dashboards" / "plano-x.json").read_text())
    assert (dash["uid"], dash["title"]) == ("plano-x", "X")
    tokens, sessions = dash["panels"]
    assert tokens["fieldConfig"]["defaults"]["unit"] == "suffix: tok/s"
    assert tokens["fieldConfig"]["defaults"]["custom"]["axisLabel"] == "tok/s"
    assert sessions["type"] == "text" and sessions["gridPos"] == {"h": 8, "w": 12, "x": 12, "y": 0}
    assert sessions["options"] == {
        "mode": "markdown",
        "content": "Not on /metrics.\n\n[Open it in planoscope](http://plano-host:9000/)",
    }


def test_planoscope_link_and_bad_arguments(tmp_path):
    assert _export(tmp_path / "g", "--planoscope-url", "http://plano-host:9000/").returncode == 0
    dash = json.loads((tmp_path / "g" / "dashboards" / "plano-requests.json").read_text())
    assert [(link["title"], link["url"]) for link in dash["links"]] == [
        ("Traces in planoscope", "http://plano-host:9000/traces")
    ]
    r = _export(tmp_path / "h", "--prometheus-url", "prometheus:9090")
    assert r.returncode == 2 and "--prometheus-url must be an http:// or https:// URL" in r.stderr
    assert not (tmp_path / "h").exists()
    (tmp_path / "file").write_text("x")
    r = _export(tmp_path / "file")
    assert r.returncode == 2 and "is a file" in r.stderr
    r = _export(tmp_path / "file" / "sub")
    assert r.returncode == 2 and "planoscope: error: cannot write to" in r.stderr and "Traceback" not in r.stderr


def test_the_reference_copies_match_the_shared_reference():
    """Where the shared reference sits next to the checkout (the development machines), the
    copies in tests/reference must not have drifted from it."""
    if not SHARED.is_dir():  # a clean clone elsewhere: nothing to compare with, the copies stand
        return
    assert (REFERENCE / "plano-requests.json").read_bytes() == (
        SHARED / "dashboards" / "plano-requests.json"
    ).read_bytes()
    assert (REFERENCE / "dashboards.yaml").read_bytes() == (
        SHARED / "provisioning" / "dashboards" / "dashboards.yaml"
    ).read_bytes()
