"""Rule files in Prometheus's format, loaded and checked as Prometheus (and ``promtool check
rules``) checks them: ``groups`` of ``name``, optional ``interval`` and ``limit``, and ``rules``,
each either ``alert`` (with ``expr``, ``for``, ``keep_firing_for``, ``labels``, ``annotations``) or
``record`` (with ``expr``, ``labels``). Every ``expr`` is parsed by the engine's parser and every
template parsed (``template.py``), so a file that loads evaluates.

A problem is a ``RuleError`` of one line naming the file, the group and the rule::

    rules file /etc/plano.yml: group "llm", rule 2 (alert "HighLatency"): expr: unexpected token …

``plano`` names the file planoscope ships (Plano's alerts, ``plano.rules.yml``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..promql import PromQLError, parse
from ..promql.syntax import Expr, parse_duration, value_type
from .template import Template, TemplateError

PLANO = "plano"
PLANO_FILE = Path(__file__).with_name("plano.rules.yml")
_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_GROUP_KEYS = {"name", "interval", "limit", "rules"}
_RULE_KEYS = {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}


class RuleError(ValueError):
    """A rule file that cannot be used, said in one line."""


@dataclass(frozen=True)
class Rule:
    """One rule: ``kind`` "alert" or "record", ``name`` the alert's or the recorded series' name."""

    kind: str
    name: str
    query: str
    expr: Expr = field(repr=False, compare=False)
    for_ms: int = 0
    keep_firing_for_ms: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    label_templates: dict[str, Template] = field(default_factory=dict, repr=False, compare=False)
    annotation_templates: dict[str, Template] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Group:
    """A group: its rules are evaluated in order every ``interval_ms`` (None: evaluation_interval),
    each seeing the series the rules before it recorded at the same evaluation."""

    file: str
    name: str
    rules: tuple[Rule, ...]
    interval_ms: int | None = None
    limit: int = 0  # at most this many alerts or series per rule; 0: no limit


def resolve(path: str) -> Path:
    """``plano`` → the shipped file; anything else a path."""
    return PLANO_FILE if path == PLANO else Path(path)


def load_files(paths: list[str]) -> list[Group]:
    """Every group of every file, in order; ``RuleError`` for the first problem. Group names are
    unique within a file, as Prometheus requires."""
    groups: list[Group] = []
    for p in paths:
        groups += load_file(p)
    return groups


def load_file(path: str) -> list[Group]:
    """The groups of one rule file (``plano``: the shipped one)."""
    where = f"rules file {path}"
    try:
        text = resolve(path).read_text()
    except OSError as e:
        raise RuleError(f"{where}: cannot read it: {e.strerror or e}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise RuleError(f"{where}: not valid YAML" + (f" at line {mark.line + 1}" if mark else "")) from None
    if doc is None:
        return []
    if not isinstance(doc, dict) or set(doc) - {"groups"}:
        extra = sorted(set(doc) - {"groups"}) if isinstance(doc, dict) else None
        raise RuleError(f"{where}: " + (f"unknown field {extra[0]!r}" if extra else "must be a mapping with groups"))
    raw_groups = doc.get("groups") or []
    if not isinstance(raw_groups, list):
        raise RuleError(f"{where}: groups must be a list")
    out, names = [], set()
    for gi, g in enumerate(raw_groups, 1):
        if not isinstance(g, dict):
            raise RuleError(f"{where}: group {gi} must be a mapping")
        name = g.get("name")
        gwhere = f'{where}: group "{name}"' if name else f"{where}: group {gi}"
        if not isinstance(name, str) or not name:
            raise RuleError(f"{gwhere}: has no name")
        if name in names:
            raise RuleError(f"{gwhere}: the name is used by another group of the file")
        names.add(name)
        unknown = sorted(set(g) - _GROUP_KEYS)
        if unknown:
            raise RuleError(f"{gwhere}: unknown field {unknown[0]!r}")
        try:
            interval = parse_duration(g["interval"]) if g.get("interval") is not None else None
        except ValueError as e:
            raise RuleError(f"{gwhere}: interval: {e}") from None
        if interval == 0:
            raise RuleError(f"{gwhere}: interval must be more than 0")
        limit = g.get("limit") or 0
        if not isinstance(limit, int) or limit < 0:
            raise RuleError(f"{gwhere}: limit must be a whole number, 0 or more")
        rules = g.get("rules") or []
        if not isinstance(rules, list):
            raise RuleError(f"{gwhere}: rules must be a list")
        parsed = tuple(_rule(r, f"{gwhere}, rule {ri}") for ri, r in enumerate(rules, 1))
        out.append(Group(str(path), name, parsed, interval, limit))
    return out


def _rule(r: object, where: str) -> Rule:
    if not isinstance(r, dict):
        raise RuleError(f"{where}: must be a mapping")
    alert, record = r.get("alert"), r.get("record")
    if alert is not None and record is not None:
        raise RuleError(f"{where}: only one of record and alert may be set")
    if alert is None and record is None:
        raise RuleError(f"{where}: one of record or alert must be set")
    kind, name = ("alert", alert) if alert is not None else ("record", record)
    where = f'{where} ({kind} "{name}")'
    if not isinstance(name, str) or not name:
        raise RuleError(f"{where}: {kind} must be a non-empty string")
    if kind == "record" and not _METRIC_NAME.match(name):
        raise RuleError(f"{where}: invalid recording rule name: {name}")
    unknown = sorted(set(r) - _RULE_KEYS)
    if unknown:
        raise RuleError(f"{where}: unknown field {unknown[0]!r}")
    if kind == "record":
        for key in ("for", "keep_firing_for", "annotations"):
            if r.get(key) is not None:
                raise RuleError(f"{where}: invalid field {key!r} in recording rule")
    query = r.get("expr")
    if not isinstance(query, (str, int, float)) or not str(query).strip():
        raise RuleError(f"{where}: field 'expr' must be set in rule")
    query = str(query)
    try:
        expr = parse(query)
    except PromQLError as e:
        raise RuleError(f"{where}: expr: {_first_line(str(e))}") from None
    if value_type(expr) not in ("vector", "scalar"):  # as promtool: a rule's result is a vector
        raise RuleError(f"{where}: expr: invalid rule expression type: {value_type(expr)} (want a vector)")
    durations = {}
    for key in ("for", "keep_firing_for"):
        try:
            durations[key] = parse_duration(r[key]) if r.get(key) is not None else 0
        except ValueError as e:
            raise RuleError(f"{where}: {key}: {e}") from None
    labels = _labels(r.get("labels"), where, "labels")
    annotations = _labels(r.get("annotations"), where, "annotations")
    for key in labels:
        if key == "__name__":
            raise RuleError(f"{where}: invalid label name: __name__")
    try:
        label_t = {k: Template(v) for k, v in labels.items()}
        annot_t = {k: Template(v) for k, v in annotations.items()}
    except TemplateError as e:
        raise RuleError(f"{where}: template: {e}") from None
    return Rule(
        kind,
        name,
        query,
        expr,
        durations["for"],
        durations["keep_firing_for"],
        labels,
        annotations,
        label_t,
        annot_t,
    )


def _labels(raw: object, where: str, what: str) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise RuleError(f"{where}: {what} must be a mapping")
    out = {}
    for k, v in raw.items():
        if not isinstance(k, str) or not _LABEL_NAME.match(k):
            raise RuleError(f"{where}: invalid {what[:-1]} name: {k}")
        if isinstance(v, (dict, list)) or v is None:
            raise RuleError(f"{where}: {what[:-1]} {k} must be a string")
        out[k] = v if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v)
    return out


def _first_line(message: str) -> str:
    return " ".join(message.split())
