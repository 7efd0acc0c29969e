"""RE2 regular expressions (Prometheus's syntax) run on Python's ``re``.

The two agree on everyday patterns; where they differ, this translates (flags set in the middle of
a pattern, POSIX classes, ``\\z``, ``\\Q…\\E``, ``(?<name>…)``, ASCII-only ``\\d \\w \\s \\b``) or refuses
(Unicode classes, ungreedy mode, look-arounds, back-references) rather than match differently.
"""

from __future__ import annotations

import functools
import re

POSIX = {
    "alnum": "0-9A-Za-z",
    "alpha": "A-Za-z",
    "ascii": "\\x00-\\x7f",
    "blank": "\\t ",
    "cntrl": "\\x00-\\x1f\\x7f",
    "digit": "0-9",
    "graph": "!-~",
    "lower": "a-z",
    "print": " -~",
    "punct": "!-/:-@\\[-`{-~",
    "space": "\\t\\n\\v\\f\\r ",
    "upper": "A-Z",
    "word": "0-9A-Za-z_",
    "xdigit": "0-9A-Fa-f",
}


class RegexError(ValueError):
    pass


def translate(pattern: str) -> str:
    """The Python equivalent of an RE2 pattern, or RegexError."""
    out: list[str] = []
    # Per open group (the first entry is the whole pattern): the flags set inside it, each of which
    # became a "(?flags:" group that closes with it and around each "|" alternative.
    groups: list[list[str]] = [[]]
    i, n = 0, len(pattern)
    multiline = False
    while i < n:
        c = pattern[i]
        if c == "\\":
            i, text = _escape(pattern, i, in_class=False)
            out.append(text)
            continue
        if c == "[":
            i, text = _char_class(pattern, i)
            out.append(text)
            continue
        if c == "(":
            if pattern.startswith("(?", i):
                m = re.compile(r"\(\?([imsU-]*)(\)|:)").match(pattern, i)
                if m:
                    flags = m.group(1)
                    if "U" in flags:
                        raise RegexError("ungreedy mode (?U) is not supported")
                    multiline |= "m" in flags.split("-")[0]
                    if m.group(2) == ")":
                        # RE2 applies the flags to the rest of the enclosing group.
                        out.append(f"(?{flags}:")
                        groups[-1].append(flags)
                        i = m.end()
                        continue
                    out.append(m.group(0))
                    groups.append([])
                    i = m.end()
                    continue
                if pattern.startswith("(?P<", i) or pattern.startswith("(?<", i):
                    m = re.compile(r"\(\?P?<([A-Za-z_][A-Za-z0-9_]*)>").match(pattern, i)
                    if not m:
                        raise RegexError(f"invalid named group in {pattern!r}")
                    out.append(f"(?P<{m.group(1)}>")
                    groups.append([])
                    i = m.end()
                    continue
                raise RegexError(f"unsupported group syntax in {pattern!r}")
            out.append("(")
            groups.append([])
            i += 1
            continue
        if c == ")":
            if len(groups) == 1:
                raise RegexError(f"unexpected ) in {pattern!r}")
            out.append(")" * (len(groups.pop()) + 1))
            i += 1
            continue
        if c == "|" and groups[-1]:
            flags = groups[-1]
            out.append(")" * len(flags) + "|" + "".join(f"(?{f}:" for f in flags))
            i += 1
            continue
        if c == "$" and not multiline:
            out.append("\\Z")
            i += 1
            continue
        out.append(c)
        i += 1
    if len(groups) > 1:
        raise RegexError(f"missing ) in {pattern!r}")
    return "".join(out) + ")" * len(groups[0])


def _escape(p: str, i: int, *, in_class: bool) -> tuple[int, str]:
    if i + 1 >= len(p):
        raise RegexError("trailing backslash")
    c = p[i + 1]
    if c in "pP":
        raise RegexError("Unicode classes (\\p) are not supported")
    if c == "z":
        return i + 2, "\\Z"
    if c == "Q":
        end = p.find("\\E", i + 2)
        lit = p[i + 2 :] if end < 0 else p[i + 2 : end]
        return (len(p) if end < 0 else end + 2), re.escape(lit)
    if c.isdigit() and c != "0":
        raise RegexError("back-references are not supported")
    if c in "AbBdDsSwWfnrtv" or not c.isalnum():
        return i + 2, "\\" + c
    if c == "x":
        m = re.compile(r"\\x(\{[0-9A-Fa-f]+\}|[0-9A-Fa-f]{2})").match(p, i)
        if not m:
            raise RegexError("invalid \\x escape")
        h = m.group(1).strip("{}")
        return m.end(), f"\\U{int(h, 16):08x}"
    if c == "0":
        m = re.compile(r"\\([0-7]{1,3})").match(p, i)
        return m.end(), f"\\x{int(m.group(1), 8):02x}"
    raise RegexError(f"invalid escape \\{c}")


def _char_class(p: str, i: int) -> tuple[int, str]:
    out = ["["]
    i += 1
    if i < len(p) and p[i] == "^":
        out.append("^")
        i += 1
    first = True
    while i < len(p):
        c = p[i]
        if c == "]" and not first:
            out.append("]")
            return i + 1, "".join(out)
        first = False
        if p.startswith("[:", i):
            end = p.find(":]", i + 2)
            name = p[i + 2 : end] if end > 0 else ""
            if name.startswith("^"):
                raise RegexError("negated POSIX classes are not supported")
            if name not in POSIX:
                raise RegexError(f"invalid POSIX class [:{name}:]")
            out.append(POSIX[name])
            i = end + 2
            continue
        if c == "\\":
            i, text = _escape(p, i, in_class=True)
            out.append(text)
            continue
        if c == "[":
            out.append("\\[")
        elif c == "]":
            out.append("\\]")
        else:
            out.append(c)
        i += 1
    raise RegexError("missing closing ]")


@functools.lru_cache(maxsize=4096)
def compile_anchored(pattern: str) -> re.Pattern[str]:
    """The pattern matching whole strings only, as Prometheus anchors ``=~`` and label_replace."""
    try:
        return re.compile(f"(?:{translate(pattern)})\\Z", re.ASCII)
    except re.error as e:
        raise RegexError(str(e)) from None
