"""Derived-field templates: syntax, quoting, errors."""

from __future__ import annotations

import urllib.parse

import pytest

from medsecrets.catalog import parse_template
from medsecrets.catalog.templates import Placeholder
from medsecrets.errors import InvalidRequest


def test_plain_placeholders_and_literals() -> None:
    template = parse_template("postgresql://{user}@{host}:{port}")
    assert template.fields == frozenset({"user", "host", "port"})
    assert template.render({"user": "u", "host": "h", "port": "1"}) == "postgresql://u@h:1"


def test_urlquote_quotes_every_reserved_character() -> None:
    nasty = "p@ss:w/rd?#%[]&=+ é~._-"
    out = parse_template("{pw|urlquote}").render({"pw": nasty})
    assert all(c not in out for c in "@:/?#[]&=+ é")
    assert urllib.parse.unquote(out) == nasty
    assert out.endswith("~._-")  # unreserved characters stay as they are


def test_filters_chain() -> None:
    out = parse_template("{v|urlquote|urlquote}").render({"v": "a b"})
    assert out == "a%2520b"


def test_braces_escape() -> None:
    template = parse_template("{{literal}} {x} }}")
    assert template.fields == frozenset({"x"})
    assert template.render({"x": "1"}) == "{literal} 1 }"


def test_whitespace_inside_placeholders_is_allowed() -> None:
    assert parse_template("{ x | urlquote }").parts == (Placeholder("x", ("urlquote",)),)


def test_values_are_inserted_literally_not_reparsed() -> None:
    assert parse_template("{a}{b}").render({"a": "{b}", "b": "}}"}) == "{b}}}"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("x{y", "unclosed '{' at column 2"),
        ("x}y", "unmatched '}' at column 2"),
        ("{}", "bad field name"),
        ("{Upper}", "bad field name"),
        ("{a-b}", "bad field name"),
        ("{a|}", "unknown filter"),
        ("{a|base64}", "unknown filter 'base64'"),
    ],
)
def test_syntax_errors(text: str, problem: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_template(text)
    assert problem in str(info.value)


def test_render_names_a_missing_field_without_values() -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_template("{a}:{b}").render({"a": "SECRET-A"})
    assert "'b'" in str(info.value)
    assert "SECRET-A" not in str(info.value)
