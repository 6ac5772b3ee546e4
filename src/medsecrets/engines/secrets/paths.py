"""Secret paths and field names: parsing and validation with errors that name the rule.

A secret lives at ``<prefix>/<environment>/<category>[/<name>...]``. Rules:

- at most ``MAX_PATH_LENGTH`` characters and ``MAX_DEPTH`` segments;
- no empty segment, no ``.`` or ``..`` segment, no control characters;
- every segment matches ``[A-Za-z0-9][A-Za-z0-9._-]*`` (at most 128 characters);
- the environment is lower case ``[a-z0-9][a-z0-9-]*`` (at most 64 characters);
- the prefix is the configured one and the category one the catalog declares.

Field names match ``[A-Za-z_][A-Za-z0-9_.-]*`` (at most 128 characters).
Error messages quote at most the first 64 characters of what they reject.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass

from medsecrets.errors import InvalidRequest

__all__ = [
    "MAX_DEPTH",
    "MAX_PATH_LENGTH",
    "SecretPath",
    "check_field_name",
    "check_prefix",
    "check_segments",
    "parse_path",
]

MAX_PATH_LENGTH = 512
MAX_DEPTH = 10
MAX_SEGMENT = 128
MAX_FIELD_NAME = 128

_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_ENVIRONMENT = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _quote(text: str) -> str:
    shown = text if len(text) <= 64 else text[:64] + "…"
    return repr(_CONTROL.sub("?", shown))


@dataclass(frozen=True, slots=True)
class SecretPath:
    """A validated secret path."""

    prefix: str
    environment: str
    category: str
    name: tuple[str, ...] = ()

    def __str__(self) -> str:
        return "/".join((self.prefix, self.environment, self.category, *self.name))


def check_segments(path: str, *, what: str = "path") -> list[str]:
    """Split ``path`` on ``/`` and check the generic rules (length, characters, dots)."""
    if not isinstance(path, str):
        raise InvalidRequest(f"{what} must be a string")
    if _CONTROL.search(path):
        raise InvalidRequest(f"{what} contains a control character")
    if len(path) > MAX_PATH_LENGTH:
        raise InvalidRequest(f"{what} is longer than {MAX_PATH_LENGTH} characters")
    segments = path.strip("/").split("/") if path.strip("/") else []
    if len(segments) > MAX_DEPTH:
        raise InvalidRequest(f"{what} has more than {MAX_DEPTH} segments")
    for segment in segments:
        if segment in (".", ".."):
            raise InvalidRequest(f"{what} segment {segment!r} is not allowed")
        if not segment:
            raise InvalidRequest(f"{what} has an empty segment ('//')")
        if len(segment) > MAX_SEGMENT:
            raise InvalidRequest(f"{what} segment longer than {MAX_SEGMENT} characters")
        if not _SEGMENT.fullmatch(segment):
            raise InvalidRequest(
                f"{what} segment {_quote(segment)} may only contain letters, digits, '.', '_' "
                "and '-', and must start with a letter or digit"
            )
    return segments


def check_prefix(prefix: str) -> str:
    """Validate a listing's string ``prefix`` (the beginning of paths, its last segment
    possibly cut short) and return it.

    It may end with one ``/`` (a segment boundary) but not start with one, and has no
    empty segment: such a prefix could name no secret, and a page that is silently
    empty reads as "nothing there" (``InvalidRequest`` names the rule instead).
    """
    if not isinstance(prefix, str):
        raise InvalidRequest("prefix must be a string")
    body = prefix[:-1] if prefix.endswith("/") else prefix
    if prefix and (not body or body.startswith("/") or "//" in prefix):
        raise InvalidRequest(
            "prefix: no leading '/' and no empty segment ('//'); it may end with one '/'"
        )
    check_segments(body, what="prefix")
    return prefix


def parse_path(path: str, *, prefix: str, categories: Collection[str] | None) -> SecretPath:
    """Validate ``path`` and split it into its parts; ``InvalidRequest`` names the rule.

    ``categories=None`` takes any category name (a query about the past: the
    category may have left the catalog since).
    """
    segments = check_segments(path)
    if len(segments) < 3:
        raise InvalidRequest(
            f"secret path {_quote(path)} must look like {prefix}/<environment>/<category>[/<name>]"
        )
    head, environment, category, *name = segments
    if head != prefix:
        raise InvalidRequest(f"secret path must start with {prefix!r}, not {_quote(head)}")
    if not _ENVIRONMENT.fullmatch(environment):
        raise InvalidRequest(
            f"environment {_quote(environment)} must be lower case letters, digits and '-' "
            "(at most 64 characters)"
        )
    if categories is not None and category not in categories:
        known = ", ".join(sorted(categories))
        raise InvalidRequest(f"category {_quote(category)} is not in the catalog (known: {known})")
    return SecretPath(prefix=prefix, environment=environment, category=category, name=tuple(name))


def check_field_name(name: str) -> str:
    """Validate a field name; ``InvalidRequest`` names the rule."""
    if not isinstance(name, str) or not name:
        raise InvalidRequest("field names must be non-empty strings")
    if len(name) > MAX_FIELD_NAME:
        raise InvalidRequest(f"field name longer than {MAX_FIELD_NAME} characters")
    if not _FIELD.fullmatch(name):
        raise InvalidRequest(
            f"field name {_quote(name)} may only contain letters, digits, '_', '.' and '-', "
            "and must start with a letter or '_'"
        )
    return name
