"""The package tree is the architecture: imports flow one way, down the data flow.

Each top-level package or module of ``planoscope`` sits on a layer; a module may import from its
own package and from lower layers only, never from a layer above it nor from another package
on its own layer. The demo (simulated Plano) is used by the command line only.
"""

from __future__ import annotations

import ast
from pathlib import Path

import planoscope

ROOT = Path(planoscope.__file__).parent

# Bottom to top. A newcomer reads the data flow off this list.
LAYERS = [
    {"net"},  # sockets, the HTTP server, credentials, the OTLP client
    {"llm"},  # what LLM calls cost: the price table
    {"store"},  # schema, DuckDB, retention
    {"metrics"},  # span metrics
    {"ingest"},  # receivers, admission, decode, journal, writer
    {"scrape"},  # Envoy samples, written through ingest's writer
    {"query"},  # panels, their evaluation, trace search
    {"promql"},  # the PromQL engine, over any Queryable
    {"alerting"},  # rule files, their evaluation, alerts to Alertmanager and webhooks
    {"forward", "grafana"},  # outward: OTLP forwarding, Grafana export
    {"web"},  # UI and API
    {"demo"},  # simulated Plano, fake Envoy, load generator
    {"settings"},
    {"app"},
    {"cli"},
    {"__main__"},
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _unit(module: str) -> str:
    """``planoscope.ingest.writer`` → ``ingest``; ``planoscope.cli`` → ``cli``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(module: str, path: Path) -> set[str]:
    """Every planoscope module ``module`` imports, at the top or inside a function."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("planoscope")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("planoscope"):
                found.add(target)
    return found


def test_every_unit_has_a_layer():
    units = {_unit(m) for m in _modules()} - {""}
    assert units <= set(RANK), f"put {sorted(units - set(RANK))} on a layer in LAYERS"


def test_imports_flow_down_the_layers():
    wrong = []
    for module, path in sorted(_modules().items()):
        me = _unit(module)
        for target in sorted(_imports(module, path)):
            them = _unit(target)
            if not them or them == me:
                continue
            if RANK[them] >= RANK[me]:
                wrong.append(f"{module} imports {target}: {them!r} is not below {me!r}")
    assert not wrong, "\n".join(wrong)


def test_only_the_cli_uses_the_demo():
    users = {m for m, p in _modules().items() if _unit(m) != "demo" and any(_unit(t) == "demo" for t in _imports(m, p))}
    assert users <= {"planoscope.cli"}, users


def test_the_walk_sees_relative_and_lazy_imports():
    # The checks above are only as good as _imports: it must resolve ``from ..x import`` and
    # imports inside functions (the CLI imports the app lazily).
    mods = _modules()
    assert "planoscope.store" in _imports("planoscope.ingest.writer", mods["planoscope.ingest.writer"])
    assert "planoscope.app" in _imports("planoscope.cli", mods["planoscope.cli"])
