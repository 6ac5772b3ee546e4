"""Templates for *derived* catalog fields.

A template is literal text with placeholders naming other fields of the same
category::

    postgresql://{username|urlquote}:{password|urlquote}@{host}:{port}/{database|urlquote}

Syntax (deliberately tiny, no expressions, no attribute access):

- ``{name}`` inserts the value of field ``name`` unchanged;
- ``{name|filter}`` (filters may be chained: ``{name|f1|f2}``) transforms it first;
- ``{{`` and ``}}`` are a literal ``{`` and ``}``.

Field names are ``[a-z][a-z0-9_]*``. Filters:

- ``urlquote``: percent-encodes every character except the RFC 3986 unreserved
  ones (``A-Z a-z 0-9 - . _ ~``), so the result is safe inside any URL
  component (user info, password, path segment, query value).

Quoting is explicit, never implied: a template author writes ``|urlquote`` for
every component that may hold URL-reserved characters (``@ : / ? #``...).
Components that cannot (a validated port, a validated host name) may be left
raw. ``parse_template`` raises ``InvalidRequest`` naming the problem and its
column; it never echoes field values because it never sees any.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache

from medsecrets.errors import InvalidRequest

__all__ = ["FILTERS", "Placeholder", "Template", "parse_template"]

_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")


def _urlquote(value: str) -> str:
    return urllib.parse.quote(value, safe="")


FILTERS: Mapping[str, Callable[[str], str]] = {"urlquote": _urlquote}
"""Filter name → function. Filters never fail and never log."""


@dataclass(frozen=True, slots=True)
class Placeholder:
    """One ``{field|filter...}`` occurrence."""

    field: str
    filters: tuple[str, ...] = ()

    def render(self, value: str) -> str:
        """Apply the filters, in order, to ``value``."""
        for name in self.filters:
            value = FILTERS[name](value)
        return value


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed template: literal strings and placeholders, in order."""

    text: str
    parts: tuple[str | Placeholder, ...]

    @property
    def fields(self) -> frozenset[str]:
        """The names of the fields this template reads."""
        return frozenset(p.field for p in self.parts if isinstance(p, Placeholder))

    def render(self, values: Mapping[str, str]) -> str:
        """Render with ``values``; ``InvalidRequest`` names a missing field (never a value)."""
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            if part.field not in values:
                raise InvalidRequest(f"template needs field {part.field!r}, which has no value")
            out.append(part.render(values[part.field]))
        return "".join(out)


@lru_cache(maxsize=256)
def parse_template(text: str) -> Template:
    """Parse ``text``; raise ``InvalidRequest`` naming the problem and its column (1-based)."""
    parts: list[str | Placeholder] = []
    literal: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "{" and text.startswith("{{", i):
            literal.append("{")
            i += 2
        elif ch == "}" and text.startswith("}}", i):
            literal.append("}")
            i += 2
        elif ch == "}":
            raise InvalidRequest(f"template: unmatched '}}' at column {i + 1} (write '}}}}')")
        elif ch == "{":
            end = text.find("}", i + 1)
            if end < 0:
                raise InvalidRequest(f"template: unclosed '{{' at column {i + 1}")
            parts_text = text[i + 1 : end].split("|")
            name, filters = parts_text[0].strip(), tuple(f.strip() for f in parts_text[1:])
            if not _NAME.match(name):
                raise InvalidRequest(
                    f"template: bad field name {name!r} at column {i + 1} "
                    "(expected [a-z][a-z0-9_]*)"
                )
            for f in filters:
                if f not in FILTERS:
                    known = ", ".join(sorted(FILTERS))
                    raise InvalidRequest(
                        f"template: unknown filter {f!r} at column {i + 1} (known: {known})"
                    )
            if literal:
                parts.append("".join(literal))
                literal = []
            parts.append(Placeholder(name, filters))
            i = end + 1
        else:
            literal.append(ch)
            i += 1
    if literal:
        parts.append("".join(literal))
    return Template(text, tuple(parts))
