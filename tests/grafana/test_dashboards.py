"""Grafana dashboards read and drawn: Plano's brightstaff dashboard read from the file Plano ships
(tests/reference holds the same file), a user's file and its errors, and the panels evaluated by
the PromQL engine as Grafana draws them (legends, reducers, template variables, errors)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from planoscope.grafana.dashboard import DashboardError, all_dashboards, builtin_dashboards, load_dashboard
from planoscope.grafana.render import evaluate_promql, fill_variables, legend
from planoscope.promql import MemoryStorage
from planoscope.query.dashboards import DASHBOARDS, Dashboards
from planoscope.query.panels import Panel, PromQL, Target

REFERENCE = Path(__file__).resolve().parents[1] / "reference" / "brightstaff-dashboard.json"


def test_the_brightstaff_dashboard_is_plano_s_file_read_panel_by_panel():
    (board,) = builtin_dashboards()
    doc = json.loads(REFERENCE.read_text())
    assert (board.id, board.title, board.source) == ("brightstaff", doc["title"], "grafana")
    assert [p.id for p in board.panels] == [f"brightstaff:{p['id']}" for p in doc["panels"]]
    for panel, raw in zip(board.panels, doc["panels"]):
        assert panel.title == raw["title"]
        g = raw["gridPos"]
        assert panel.grid == ((0, g["y"], 24, 1) if raw["type"] == "row" else (g["x"], g["y"], g["w"], g["h"]))
        assert [(t.expr, t.legend) for t in panel.targets] == [
            (t["expr"], t["legendFormat"]) for t in raw.get("targets", [])
        ]
    by_title = {p.title: p for p in board.panels}
    assert [p.title for p in board.panels if p.kind == "row"] == [
        "HTTP RED",
        "LLM upstream",
        "Routing service",
        "Process & Envoy link",
    ]
    errors = by_title["Errors — brightstaff 5xx rate"]
    assert (errors.kind, errors.display, errors.unit) == ("stat", "tiles", "percentunit")
    assert errors.thresholds == ((None, "green"), (0.01, "yellow"), (0.05, "red"))
    assert by_title["Model selection distribution (last 15m)"].display == "bars"
    assert by_title["Token throughput by provider / model / kind"].unit == "suffix:tokens/s"  # a custom unit
    assert by_title["Duration — p50 / p95 / p99 by handler"].unit == "s"
    process = by_title["Brightstaff process RSS / CPU"]  # no unit of its own: per-series overrides
    assert process.unit == "bytes" and [(m.id, m.unit) for m in process.measures] == [("CPU", "percentunit")]


def test_every_dashboard_has_unique_panel_ids():
    boards = Dashboards(all_dashboards())
    assert [d.id for d in boards.all] == [d.id for d in DASHBOARDS] + ["brightstaff"]
    assert len(boards.panels) == sum(len(d.panels) for d in boards.all)


def _write(tmp_path: Path, doc, name: str = "mine.json") -> Path:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def _doc(**extra) -> dict:
    return {
        "title": "My gateway",
        "uid": "My Gateway!",
        "panels": [
            {
                "type": "row",
                "title": "Folded",
                "collapsed": True,
                "gridPos": {"x": 0, "y": 0, "w": 24, "h": 1},
                "panels": [
                    {
                        "id": 7,
                        "type": "gauge",
                        "title": "Up",
                        "gridPos": {"x": 0, "y": 1, "w": 6, "h": 4},
                        "targets": [{"expr": "up", "legendFormat": "{{job}}"}],
                        "options": {"reduceOptions": {"calcs": ["max"]}},
                    }
                ],
            },
            {"id": 8, "type": "text", "title": "Notes", "gridPos": {"x": 6, "y": 1, "w": 6, "h": 4}},
            {"id": 9, "type": "table", "title": "Hidden", "targets": [{"expr": "up", "hide": True}]},
        ],
        **extra,
    }


def test_a_users_file_with_a_collapsed_row_and_grafanas_export_wrapper(tmp_path):
    board = load_dashboard(_write(tmp_path, {"dashboard": _doc()}), taken={"my-gateway"})
    assert (board.id, board.title) == ("my-gateway-2", "My gateway")  # from its uid, unlike a taken one
    assert board.source == f"file:{tmp_path / 'mine.json'}"
    # The row's folded panel is laid out below it; a text panel and a panel of hidden targets are left out.
    assert [(p.id, p.kind, p.display) for p in board.panels] == [
        ("my-gateway-2:1", "row", "tiles"),
        ("my-gateway-2:7", "stat", "tiles"),
    ]
    assert board.panels[1].query == PromQL("max") and board.panels[1].unit == "short"


@pytest.mark.parametrize(
    "content, says",
    [
        ("{not json", "cannot read it as JSON"),
        ('["a list"]', "not a Grafana dashboard"),
        ({"title": "x", "panels": [{"type": "text", "title": "only words"}]}, "no panel planoscope can draw"),
        ({"panels": [{"type": "stat", "gridPos": {"x": "left"}, "targets": [{"expr": "up"}]}]}, "gridPos"),
    ],
)
def test_a_file_planoscope_cannot_use_is_one_line_naming_it(tmp_path, content, says):
    path = _write(tmp_path, content)
    with pytest.raises(DashboardError) as e:
        all_dashboards([path])
    assert str(path) in str(e.value) and says in str(e.value) and "\n" not in str(e.value)


def test_a_missing_file_is_an_error_too(tmp_path):
    with pytest.raises(DashboardError, match="no-such.json"):
        load_dashboard(tmp_path / "no-such.json")


# --- drawing ---------------------------------------------------------------------------------

T0 = 1_800_000_000  # unix seconds


def _storage() -> MemoryStorage:
    """Two handlers' request counters, scraped every 15 s for 20 minutes: 2 and 0.5 requests/s."""
    s = MemoryStorage()
    ts = [(T0 + 15 * i) * 1000 for i in range(81)]
    for handler, per_s in (("chat", 2.0), ("models", 0.5)):
        s.add(
            {"__name__": "http_requests_total", "job": "brightstaff", "handler": handler},
            ts,
            [per_s * 15 * i for i in range(81)],
        )
    return s


def _panel(kind: str, expr: str, legend_format: str = "", reducer: str = "lastNotNull") -> Panel:
    return Panel("p:1", "t", "reqps", kind, (0, 0, 12, 8), PromQL(reducer), (Target(expr, legend_format),))


def test_a_timeseries_panel_is_the_range_query_named_by_its_legend():
    start, end, step = T0 + 300, T0 + 1200, 60
    (out,) = evaluate_promql(
        _storage(),
        [_panel("timeseries", "sum by (handler) (rate(http_requests_total[$__rate_interval]))", "{{handler}} rps")],
        start,
        end,
        step,
        15,
    )
    assert [s["name"] for s in out["series"]] == ["chat rps", "models rps"]
    chat = out["series"][0]
    assert chat["labels"] == {"handler": "chat"}
    assert [t for t, _ in chat["points"]] == list(range(start, end + 1, step))
    assert all(v == pytest.approx(2.0) for _, v in chat["points"])


def test_a_stat_panel_reduces_each_series_to_one_point_at_the_end():
    (last, peak) = evaluate_promql(
        _storage(),
        [
            _panel("stat", 'http_requests_total{handler="chat"}'),
            _panel("stat", "sum(http_requests_total)", reducer="max"),
        ],
        T0,
        T0 + 600,
        60,
        15,
    )
    assert last["series"] == [
        {
            "name": 'http_requests_total{handler="chat", job="brightstaff"}',  # no legend: as Prometheus prints it
            "labels": {"__name__": "http_requests_total", "handler": "chat", "job": "brightstaff"},
            "points": [(T0 + 600, 1200.0)],
        }
    ]
    assert peak["series"][0]["points"] == [(T0 + 600, 1500.0)]


def test_a_query_the_engine_refuses_is_the_panels_notice():
    (out,) = evaluate_promql(
        _storage(), [_panel("timeseries", "sum(rate(http_requests_total[5m])")], T0, T0 + 600, 60, 15
    )
    assert out["series"] == [] and out["notice"].startswith("sum(rate(http_requests_total[5m]): ")


def test_grafanas_template_variables_and_legends():
    assert fill_variables("rate(x[$__rate_interval]) / $__interval", 0, 3600, 15, 15) == "rate(x[60s]) / 15s"
    assert fill_variables("rate(x[${__rate_interval}])", 0, 3600, 120, 15) == "rate(x[135s])"
    assert fill_variables("increase(x[$__range]) / $__range_s", 0, 3600, 60, 15) == "increase(x[3600s]) / 3600"
    assert fill_variables("$__unknown", 0, 1, 1, 1) == "$__unknown"
    assert (
        legend("{{ provider }}/{{model}} {{missing}}", (("model", "gpt-4o"), ("provider", "openai")))
        == "openai/gpt-4o "
    )
    assert legend("__auto", (("__name__", "up"),)) == "up"
    assert legend("", ()) == "{}"


def test_the_shipped_file_and_the_reference_copy_are_plano_s_unchanged():
    shipped = Path(__file__).resolve().parents[2] / "src" / "planoscope" / "grafana" / "dashboards" / "brightstaff.json"
    assert shipped.read_bytes() == REFERENCE.read_bytes()
    shared = (
        Path(__file__).resolve().parents[3] / "shared" / "reference" / "plano-telemetry" / "brightstaff-dashboard.json"
    )
    if shared.is_file():  # beside the checkout here; a clean clone elsewhere has only the copies
        assert shared.read_bytes() == REFERENCE.read_bytes()


def test_serve_shows_a_dashboard_file_and_refuses_a_bad_one_in_one_line(server_factory, tmp_path):
    good = _write(tmp_path, _doc(), "good.json")
    srv = server_factory(tmp_path / "d", "--dashboard", str(good))
    boards = srv.get("/api/v1/dashboards").json()
    assert [(b["id"], b["source"]) for b in boards[-2:]] == [("brightstaff", "grafana"), ("my-gateway", f"file:{good}")]
    (panel,) = [p for p in srv.get("/api/v1/panels?dashboard=my-gateway").json() if p["kind"] != "row"]
    assert (panel["title"], panel["source"], panel["promql"], panel["legends"]) == ("Up", "promql", ["up"], ["{{job}}"])
    data = srv.get("/api/v1/dashboard?id=my-gateway").json()
    assert [p["id"] for p in data["panels"]] == ["my-gateway:1", "my-gateway:7"]

    bad = _write(tmp_path, "{not json", "bad.json")
    srv = server_factory(tmp_path / "e", "--dashboard", str(good), "--dashboard", str(bad), start=False)
    with pytest.raises(AssertionError):
        srv.start()
    err = [ln for ln in srv.lines("err") if ln.startswith("planoscope: error:")]
    assert srv.proc.returncode == 1 and len(err) == 1 and str(bad) in err[0], srv.output()
    assert not (tmp_path / "e" / "planoscope.duckdb").exists()  # refused before the store is opened
