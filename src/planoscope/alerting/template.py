"""The templates of alert labels and annotations: the part of Go's text/template that Prometheus
rule files use, with Prometheus's variables and functions.

``{{ $labels.model }}``, ``{{ $labels }}``, ``{{ $value }}``, ``{{ $externalLabels.x }}``,
``{{ .Labels.x }}``, ``{{ .Value }}``; pipelines (``{{ $value | humanizePercentage }}``) and calls
(``{{ printf "%.2f" $value }}``) of ``humanize``, ``humanize1024``, ``humanizePercentage``,
``humanizeDuration``, ``printf``, ``toUpper``, ``toLower``, ``title``; ``{{- … -}}`` trims the
spaces around. Values print as Go prints them (``0.25``, ``1e+06``, ``map[a:b c:d]``). Anything
else (``if``, ``range``, ``query``) is refused when the rule file is loaded, so a template that
loads always expands.

>>> Template("{{ $labels.model }} at {{ $value | humanizePercentage }}").expand({"model": "gpt"}, 0.25)
'gpt at 25%'
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.S)
_TOKEN = re.compile(
    r'\s*(?:("(?:[^"\\]|\\.)*")|(`[^`]*`)|(\|)|(\$[A-Za-z_]\w*(?:\.\w+)*|\.\w+(?:\.\w+)*|\.)|([-+]?\d[\w.+-]*)|([A-Za-z_]\w*))'
)
_SI = ("", "k", "M", "G", "T", "P", "E", "Z", "Y")
_SI_SMALL = ("", "m", "u", "n", "p", "f", "a", "z", "y")


class TemplateError(ValueError):
    """A template this subset cannot expand, said in one line."""


def go_float(v: float) -> str:
    """``v`` as Go's ``%v`` prints a float64: the shortest digits that read back as ``v``, with an
    exponent when it is below -4 or from 6 on (``1e+06``, ``123456``, ``1e-05``)."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v == 0:
        return "0"
    mantissa, _, exp = np.format_float_scientific(v, unique=True, trim="-").partition("e")
    e = int(exp)
    if e < -4 or e >= 6:
        return f"{mantissa}e{'-' if e < 0 else '+'}{abs(e):02d}"
    return np.format_float_positional(v, unique=True, trim="-")


def _g4(v: float) -> str:
    """Go's ``%.4g``."""
    s = f"{v:.4g}"
    if "e" in s:
        m, _, x = s.partition("e")
        n = int(x)
        return f"{m}e{'-' if n < 0 else '+'}{abs(n):02d}"
    return s


def humanize(v: float) -> str:
    """Prometheus's ``humanize``: 1234567 → ``1.235M``, 0.0012 → ``1.2m``."""
    if v == 0 or math.isnan(v) or math.isinf(v):
        return _g4(v)
    if abs(v) >= 1:
        i = 0
        while abs(v) >= 1000 and i < len(_SI) - 1:
            v, i = v / 1000, i + 1
        return _g4(v) + _SI[i]
    i = 0
    while abs(v) < 1 and i < len(_SI_SMALL) - 1:
        v, i = v * 1000, i + 1
    return _g4(v) + _SI_SMALL[i]


def humanize1024(v: float) -> str:
    if abs(v) <= 1 or math.isnan(v) or math.isinf(v):
        return _g4(v)
    units = ("", "ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi")
    i = 0
    while abs(v) >= 1024 and i < len(units) - 1:
        v, i = v / 1024, i + 1
    return _g4(v) + units[i]


def humanize_duration(v: float) -> str:
    """Prometheus's ``humanizeDuration``: 3725 → ``1h 2m 5s``, 0.25 → ``250ms``."""
    if math.isnan(v) or math.isinf(v):
        return _g4(v)
    if v == 0:
        return "0s"
    if abs(v) < 1:
        for scale, unit in ((1e3, "ms"), (1e6, "us"), (1e9, "ns"), (1e12, "ps"), (1e15, "fs"), (1e18, "as")):
            if abs(v) * scale >= 1:
                return _g4(v * scale) + unit
        return _g4(v * 1e18) + "as"
    sign, v = ("-", -v) if v < 0 else ("", v)
    seconds = int(v)
    days, hours, minutes, secs = seconds // 86400, seconds // 3600 % 24, seconds // 60 % 60, seconds % 60
    if days:
        return f"{sign}{days}d {hours}h {minutes}m {secs}s"
    if hours:
        return f"{sign}{hours}h {minutes}m {secs}s"
    if minutes:
        return f"{sign}{minutes}m {secs}s"
    return f"{sign}{_g4(v)}s"


def go_str(x) -> str:
    """A value as Go's ``%v`` prints it."""
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, float):
        return go_float(x)
    if isinstance(x, Mapping):
        return "map[" + " ".join(f"{k}:{go_str(v)}" for k, v in sorted(x.items())) + "]"
    return str(x)


def _number(x) -> float:
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return float(x)
    try:
        return float(str(x))
    except ValueError:
        raise TemplateError(f"{x!r} is not a number") from None


def printf(fmt: str, *args) -> str:
    """Go's ``printf`` for the verbs rule files use: ``%s %v %d %f %e %g %q %x %%`` with flags."""
    out, i = [], 0
    pieces = re.split(r"(%[-+# 0]*\d*(?:\.\d+)?[a-zA-Z%])", fmt)
    for piece in pieces:
        if not piece.startswith("%") or len(piece) < 2:
            out.append(piece)
            continue
        verb, spec = piece[-1], piece[1:-1]
        if verb == "%":
            out.append("%")
            continue
        if i >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        arg = args[i]
        i += 1
        if verb in "sv":
            out.append(f"%{spec}s" % go_str(arg))
        elif verb == "q":
            out.append('"' + go_str(arg).replace("\\", "\\\\").replace('"', '\\"') + '"')
        elif verb in "dx":
            out.append(f"%{spec}{verb}" % int(_number(arg)))
        elif verb in "feEgG":
            out.append(f"%{spec}{verb}" % _number(arg))
        else:
            raise TemplateError(f"printf verb %{verb} is not supported")
    return "".join(out)


FUNCTIONS: dict[str, Callable] = {
    "humanize": lambda v: humanize(_number(v)),
    "humanize1024": lambda v: humanize1024(_number(v)),
    "humanizePercentage": lambda v: _g4(_number(v) * 100) + "%",
    "humanizeDuration": lambda v: humanize_duration(_number(v)),
    "printf": printf,
    "toUpper": lambda s: go_str(s).upper(),
    "toLower": lambda s: go_str(s).lower(),
    "title": lambda s: go_str(s).title(),
}


@dataclass(frozen=True)
class _Operand:
    kind: str  # var, field, str, num, func
    value: object


class Template:
    """One label value or annotation, parsed once (``TemplateError`` if it is outside the subset)."""

    def __init__(self, text: str):
        self.text = text
        self._parts: list[str | list[list[_Operand]]] = []
        pos = 0
        for m in _ACTION.finditer(text):
            literal = text[pos : m.start()]
            if m.group(1):
                literal = literal.rstrip()
            if self._parts and isinstance(self._parts[-1], str) and self._parts[-1] == "\x00trim":
                self._parts.pop()
                literal = literal.lstrip()
            self._parts.append(literal)
            inner = m.group(2).strip()
            if not inner.startswith("/*"):  # a comment expands to nothing
                self._parts.append(self._pipeline(inner))
            if m.group(3):
                self._parts.append("\x00trim")
            pos = m.end()
        rest = text[pos:]
        if self._parts and self._parts[-1] == "\x00trim":
            self._parts.pop()
            rest = rest.lstrip()
        if "{{" in rest:
            raise TemplateError(f"unclosed action in {text!r}")
        self._parts.append(rest)

    def _pipeline(self, inner: str) -> list[list[_Operand]]:
        if re.match(r"^(if|else|end|range|with|define|template|block)\b", inner) or ":=" in inner:
            raise TemplateError(f"{{{{ {inner} }}}}: control structures and variables are not supported")
        commands: list[list[_Operand]] = [[]]
        pos = 0
        while pos < len(inner):
            m = _TOKEN.match(inner, pos)
            if not m or m.end() == pos:
                raise TemplateError(f"cannot parse {{{{ {inner} }}}} at {inner[pos:]!r}")
            pos = m.end()
            s, raw, pipe, var, num, ident = m.groups()
            if pipe:
                commands.append([])
            elif s:
                commands[-1].append(_Operand("str", _unquote(s)))
            elif raw:
                commands[-1].append(_Operand("str", raw[1:-1]))
            elif var:
                commands[-1].append(_Operand("var", _variable(var, inner)))
            elif num:
                commands[-1].append(_Operand("num", _number(num)))
            elif ident:
                if ident not in FUNCTIONS:
                    raise TemplateError(f"function {ident!r} is not supported (in {{{{ {inner} }}}})")
                commands[-1].append(_Operand("func", ident))
            if inner[pos:].strip() == "":
                break
        for i, command in enumerate(commands):
            if not command:
                raise TemplateError(f"missing command in {{{{ {inner} }}}}")
            if command[0].kind != "func" and (len(command) > 1 or i > 0):
                raise TemplateError(f"{{{{ {inner} }}}}: only a function takes arguments")
        return commands

    def expand(self, labels: Mapping[str, str], value: float, external: Mapping[str, str] | None = None) -> str:
        """The text with each action replaced by its value; a missing label is ``<no value>`` as in Go."""
        scope = {"labels": dict(labels), "value": value, "externalLabels": dict(external or {})}
        out = []
        for part in self._parts:
            if isinstance(part, str):
                out.append(part)
                continue
            result = None
            for n, command in enumerate(part):
                args = [_eval(o, scope) for o in command[1:]] if command[0].kind == "func" else []
                if n > 0:
                    args.append(result)
                result = FUNCTIONS[command[0].value](*args) if command[0].kind == "func" else _eval(command[0], scope)
            out.append(go_str(result))
        return "".join(out)


def _unquote(s: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), s[1:-1])


_FIELDS = {".Labels": "labels", ".Value": "value", ".ExternalLabels": "externalLabels"}


def _variable(token: str, inner: str) -> tuple[str, str | None]:
    """``$labels.model`` → ("labels", "model"); ``.Value`` → ("value", None)."""
    if token.startswith("$"):
        head, _, key = token[1:].partition(".")
    else:
        head = next((v for k, v in _FIELDS.items() if token == k or token.startswith(k + ".")), "")
        key = token.partition(".")[2].partition(".")[2]
    if head not in ("labels", "value", "externalLabels"):
        raise TemplateError(f"{token} is not one of $labels, $value, $externalLabels (in {{{{ {inner} }}}})")
    if "." in key or (head == "value" and key):
        raise TemplateError(f"{token}: no such field (in {{{{ {inner} }}}})")
    return head, key or None


def _eval(o: _Operand, scope: dict):
    if o.kind != "var":
        return o.value
    head, key = o.value
    v = scope[head]
    if key is None:
        return v
    return v.get(key, "<no value>")
