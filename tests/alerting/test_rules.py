"""Rule files: what loads, what is refused (one line naming the file, the group and the rule, the
same at ``serve`` and at ``planoscope rules check``), the templates as Prometheus expands them,
and Debian's ``promtool check rules`` agreeing on the shipped file and on the refused ones."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from planoscope.alerting.rules import PLANO_FILE, RuleError, load_file, load_files
from planoscope.alerting.template import Template, TemplateError, go_float, humanize, humanize_duration

PROMTOOL = "/usr/bin/promtool"
ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}

GOOD = """
groups:
  - name: llm
    interval: 30s
    rules:
      - record: model:calls:rate5m
        expr: sum by (model) (rate(calls_total[5m]))
        labels: {team: plano}
      - alert: Slow
        expr: histogram_quantile(0.95, sum by (le, model) (rate(latency_bucket[5m]))) > 2
        for: 5m
        keep_firing_for: 1m
        labels: {severity: page}
        annotations:
          summary: "{{ $labels.model }} p95 is {{ $value | humanizeDuration }}"
"""

# (file text, what the one line must say after the file name); each also refused by promtool.
BAD = [
    (
        "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: rate(x[5m]\n",
        'group "g", rule 1 (alert "A"): expr:',
    ),
    (
        "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up\n        for: 5 minutes\n",
        'group "g", rule 1 (alert "A"): for:',
    ),
    ("groups:\n  - name: g\n    rules:\n      - expr: up\n", 'group "g", rule 1: one of record or alert must be set'),
    (
        "groups:\n  - name: g\n    rules:\n      - record: 'bad name'\n        expr: up\n",
        'group "g", rule 1 (record "bad name"): invalid recording rule name',
    ),
    (
        "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up\n        severity: page\n",
        "unknown field 'severity'",
    ),
    (
        "groups:\n  - name: g\n    rules: []\n  - name: g\n    rules: []\n",
        'group "g": the name is used by another group',
    ),
    (
        "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up\n        annotations:\n          x: '{{ $value'\n",
        'group "g", rule 1 (alert "A"): template:',
    ),
    (
        "groups:\n  - name: g\n    rules:\n      - record: r\n        expr: up\n        for: 1m\n",
        "invalid field 'for' in recording rule",
    ),
]


def test_a_good_file_loads_with_every_field(tmp_path):
    path = tmp_path / "good.yml"
    path.write_text(GOOD)
    [group] = load_files([str(path)])
    assert (group.name, group.interval_ms, group.file) == ("llm", 30_000, str(path))
    record, alert = group.rules
    assert (record.kind, record.name, record.labels) == ("record", "model:calls:rate5m", {"team": "plano"})
    assert (alert.kind, alert.for_ms, alert.keep_firing_for_ms, alert.labels) == (
        "alert",
        300_000,
        60_000,
        {"severity": "page"},
    )
    assert alert.annotation_templates["summary"].expand({"model": "gpt"}, 3725.0) == "gpt p95 is 1h 2m 5s"


@pytest.mark.parametrize("text,said", BAD)
def test_a_bad_file_is_one_line_naming_file_group_and_rule(tmp_path, text, said):
    path = tmp_path / "bad.yml"
    path.write_text(text)
    with pytest.raises(RuleError) as e:
        load_file(str(path))
    message = str(e.value)
    assert "\n" not in message and message.startswith(f"rules file {path}: ") and said in message, message
    promtool = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True)
    assert promtool.returncode == 1, promtool.stdout + promtool.stderr


def test_a_rule_whose_result_is_not_a_vector_is_refused_at_load(tmp_path):
    # Stricter than promtool 2.42, which loads it and fails at every evaluation.
    path = tmp_path / "range.yml"
    path.write_text("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up[5m]\n")
    with pytest.raises(RuleError, match=r'group "g", rule 1 \(alert "A"\): expr: invalid rule expression type: matrix'):
        load_file(str(path))


def test_a_bad_file_stops_serve_with_that_line(tmp_path):
    path = tmp_path / "bad.yml"
    path.write_text(BAD[0][0])
    r = subprocess.run(
        [sys.executable, "-m", "planoscope", "serve", "--data-dir", str(tmp_path / "d"), "--rules", str(path)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=60,
    )
    assert r.returncode != 0
    errors = [line for line in r.stderr.splitlines() if "error" in line]
    assert errors == [
        f'planoscope: error: rules file {path}: group "g", rule 1 (alert "A"): expr: unclosed left parenthesis'
    ], r.stderr
    assert not (tmp_path / "d" / "planoscope.duckdb").exists()  # stopped before opening anything


def test_rules_check_command(tmp_path):
    good, bad = tmp_path / "good.yml", tmp_path / "bad.yml"
    good.write_text(GOOD)
    bad.write_text(BAD[1][0])
    ok = subprocess.run(
        [sys.executable, "-m", "planoscope", "rules", "check", "plano", str(good)],
        capture_output=True,
        text=True,
        env=ENV,
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines() == ["plano: 8 rules in 2 groups", f"{good}: 2 rules in 1 groups"]
    no = subprocess.run(
        [sys.executable, "-m", "planoscope", "rules", "check", str(good), str(bad)],
        capture_output=True,
        text=True,
        env=ENV,
    )
    assert no.returncode == 1
    assert no.stderr.strip().startswith(f'planoscope: error: rules file {bad}: group "g", rule 1 (alert "A"): for:')


def test_promtool_accepts_the_shipped_rules_and_planoscope_loads_them():
    r = subprocess.run([PROMTOOL, "check", "rules", str(PLANO_FILE)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS: 8 rules found" in r.stdout
    groups = load_files(["plano"])
    alerts = [rule for g in groups for rule in g.rules if rule.kind == "alert"]
    assert len(alerts) == 8 and all(rule.annotations.get("runbook") for rule in alerts)


def test_promtool_accepts_a_good_file(tmp_path):
    path = tmp_path / "good.yml"
    path.write_text(GOOD)
    r = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize(
    "text,labels,value,out",
    [
        ("{{ $labels.model }}", {"model": "gpt-4o"}, 1.0, "gpt-4o"),
        ("{{ $value }}", {}, 0.25, "0.25"),
        ("{{ $value }}", {}, 1e6, "1e+06"),
        ("{{ $value }}", {}, 123456.0, "123456"),
        ("{{ $labels }}", {"b": "2", "a": "1"}, 0.0, "map[a:1 b:2]"),
        ("{{ .Labels.job }} {{ .Value }}", {"job": "envoy"}, 3.0, "envoy 3"),
        ("{{ $value | humanizePercentage }}", {}, 0.1234, "12.34%"),
        ("{{ humanize $value }}", {}, 1234567.0, "1.235M"),
        ("{{ $value | humanize }}", {}, 0.0012, "1.2m"),
        ('{{ printf "%.2f" $value }} USD', {}, 3.14159, "3.14 USD"),
        ('{{ $value | printf "%.1f" }}', {}, 2.26, "2.3"),
        ("{{ $labels.missing }}", {}, 0.0, "<no value>"),
        ('a  {{- " b" -}}  c', {}, 0.0, "a bc"),
        ("{{ $labels.x | toUpper }}", {"x": "up"}, 0.0, "UP"),
        ("{{/* a comment */}}x", {}, 0.0, "x"),
    ],
)
def test_templates_expand_as_prometheus(text, labels, value, out):
    assert Template(text).expand(labels, value) == out


@pytest.mark.parametrize(
    "text", ["{{ if $value }}x{{ end }}", '{{ query "up" }}', "{{ $x := 1 }}", "{{ $foo }}", "{{ $value"]
)
def test_templates_outside_the_subset_are_refused_at_load(text):
    with pytest.raises(TemplateError):
        Template(text)


def test_go_formatting_of_numbers():
    assert [go_float(v) for v in (0.0, -2.5, 1e-5, 0.0001, 1234567.0, float("inf"))] == [
        "0",
        "-2.5",
        "1e-05",
        "0.0001",
        "1.234567e+06",
        "+Inf",
    ]
    assert humanize(0) == "0" and humanize(1000) == "1k" and humanize_duration(0.25) == "250ms"
    assert humanize_duration(59) == "59s" and humanize_duration(90061) == "1d 1h 1m 1s"
