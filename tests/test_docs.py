"""The docs cannot drift from the code: README's configuration table lists every setting with
its default, ``serve --help`` lists every option of ``serve``, every relative link in README.md
and docs/*.md leads to a file (and heading) that exists, every path and module the docs name
exists, and README stays a short front page with its screenshots.
"""

from __future__ import annotations

import importlib.util
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from planoscope.cli import serve
from planoscope.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]
SCREENSHOTS = [
    ROOT / "docs" / "img" / f"{name}.png"
    for name in ("dashboard", "llm-usage", "brightstaff", "trace", "sessions", "session")
]


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


# --- the docs' own honesty: links, paths, the front page ---------------------------------------

_FENCE = re.compile(r"^```.*?^```", re.S | re.M)
_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _prose(text: str) -> str:
    """The text without fenced blocks and inline code: what Markdown renders as links and headings."""
    return _CODE.sub("", _FENCE.sub("", text))


def _anchors(page: Path) -> set[str]:
    """The ids GitHub gives the page's headings: lowercased, punctuation dropped, spaces to dashes."""
    seen: dict[str, int] = {}
    out = set()
    for title in re.findall(r"^#{1,6}\s+(.+?)\s*$", _FENCE.sub("", page.read_text()), re.M):
        slug = re.sub(r"[^\w\- ]", "", title.replace("`", "").lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def _links(page: Path) -> list[str]:
    return [t for t in _LINK.findall(_prose(page.read_text())) if not re.match(r"^[a-z]+:", t)]


def test_the_link_check_sees_links_and_headings(tmp_path):
    # The checks below are only as good as these helpers: links in prose count, links in code do
    # not, and headings get GitHub's ids (duplicates numbered).
    page = tmp_path / "p.md"
    page.write_text(
        "# A, b `c`\n## /metrics and /healthz\n## A, b c\n"
        "[x](y.md#z) ![i](img/a.png) [web](https://x.io) `[no](code.md)`\n```\n[no](fence.md)\n# not\n```\n"
    )
    assert _links(page) == ["y.md#z", "img/a.png"]
    assert _anchors(page) == {"a-b-c", "metrics-and-healthz", "a-b-c-1"}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_lead_somewhere(page):
    broken = []
    for target in _links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest}")
        elif anchor and (dest.suffix != ".md" or anchor not in _anchors(dest)):
            broken.append(f"{target}: no heading #{anchor} in {dest.name}")
    assert not broken, broken


_PACKAGES = {p.name for p in (ROOT / "src" / "planoscope").iterdir() if p.is_dir() and not p.name.startswith("_")}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_named_paths_and_modules_exist(page):
    """A file the docs name (``tests/…``, ``benchmarks/…``, ``query/panels.py``) or a module
    (``planoscope.ingest._otlp``) exists: files move, and the docs must follow."""
    missing = []
    for code in re.findall(r"`([^`\n]+)`", page.read_text()):
        for word in code.split():
            word = word.strip("(),;:")
            top = word.split("/")[0]
            if "/" in word and top in {"tests", "benchmarks", "deploy", "docs", "src"}:
                if "*" not in word and not (ROOT / word).exists():
                    missing.append(word)
            elif "/" in word and top in _PACKAGES and re.fullmatch(r"[\w/]+\.(py|c)|[\w/]+/", word):
                if not (ROOT / "src" / "planoscope" / word).exists():
                    missing.append(word)
            elif m := re.fullmatch(r"planoscope\.(\w+)(\.\w+)*", word):
                if (m.group(1) in _PACKAGES or m.group(1).startswith("_")) and not importlib.util.find_spec(word):
                    missing.append(word)
    assert not missing, missing


def test_readme_is_a_front_page():
    lines = README.read_text().splitlines()
    assert len(lines) <= 300, f"README.md has {len(lines)} lines: move detail to docs/"
    quick = README.read_text().split("\n## Quick start", 1)[1].split("\n## ", 1)[0]
    targets = re.findall(r"^([a-z]+):", (ROOT / "Makefile").read_text(), re.M)
    for command in ("make run", "make test"):
        assert command in quick and command.split()[1] in targets, command


def test_every_docs_page_is_in_the_index():
    index = ROOT / "docs" / "README.md"
    linked = {(index.parent / t.partition("#")[0]).resolve() for t in _links(index)}
    assert {p for p in DOCS if p != index} <= linked, "docs/README.md must list every page"


@pytest.mark.parametrize("png", SCREENSHOTS, ids=lambda p: p.name)
def test_screenshots_exist_and_are_shown(png):
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{png.name} is not a PNG (make screenshots)"
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
    assert width >= 1200 and height >= 800, (width, height)
    shown = f"docs/img/{png.name}" in README.read_text() or any(f"(img/{png.name})" in p.read_text() for p in DOCS)
    assert shown, f"{png.name} is shown neither in README.md nor in docs/"
