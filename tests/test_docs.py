"""The docs cannot drift from the code: README's configuration table lists every setting with
its default, and ``serve --help`` lists every option of ``serve``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from planoscope.cli import serve
from planoscope.settings import Settings

README = Path(__file__).resolve().parent.parent / "README.md"


def config_table() -> dict[str, str]:
    """``{setting: default text}`` from the table under README's "## Configuration"."""
    text = README.read_text()
    section = text.split("\n## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        m = re.match(r"^\|\s*`([a-z_]+)`\s*\|\s*(.*?)\s*\|", line)
        if m:
            rows[m.group(1)] = m.group(2)
    return rows


def test_readme_table_lists_exactly_the_settings():
    table = config_table()
    assert set(table) == set(Settings.model_fields), (
        f"missing from README: {sorted(set(Settings.model_fields) - set(table))}; "
        f"not settings: {sorted(set(table) - set(Settings.model_fields))}"
    )


@pytest.mark.parametrize("name", list(Settings.model_fields))
def test_readme_default_matches_the_code(name):
    """The documented default, read as the environment variable would be, is the code's default."""
    doc = config_table()[name].strip("`")
    value = "" if doc == "empty" else doc
    assert getattr(Settings.model_validate({name: value}), name) == getattr(Settings(), name), doc


@pytest.fixture(scope="module")
def serve_help() -> str:
    r = subprocess.run(
        [sys.executable, "-m", "planoscope", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "100"},
    )
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_every_setting_is_a_serve_option():
    opts = {o for p in serve.params for o in p.opts}
    for name in Settings.model_fields:
        assert "--" + name.replace("_", "-") in opts, name


@pytest.mark.parametrize("option", sorted({o for p in serve.params for o in p.opts if o.startswith("--")}))
def test_every_serve_option_is_in_help(serve_help, option):
    assert re.search(rf"(^|[\s,]){re.escape(option)}\b", serve_help, re.M), option
