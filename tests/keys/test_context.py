"""The canonical encryption context: its bytes are fixed forever (stored ciphertexts use them)."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from medsecrets.keys.context import canonical_context, secret_context

# Any text UTF-8 can carry (no lone surrogates): control characters, quotes,
# backslashes, non-BMP characters, U+2028 and friends included.
_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


def _reference(context: dict[str, str]) -> bytes:
    """The original definition: the standard library's canonical JSON."""
    return json.dumps(context, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def test_known_answer() -> None:
    context = {"path": "medessence/prod/auth/api", "version": "7", "category": "auth"}
    assert canonical_context(context) == (
        b'{"category":"auth","path":"medessence/prod/auth/api","version":"7"}'
    )
    assert canonical_context(context, kek_version="2") == (
        b'{"category":"auth","kek_version":"2","path":"medessence/prod/auth/api","version":"7"}'
    )
    assert secret_context("medessence/prod/auth/api", 7, "auth") == canonical_context(context)


def test_escapes_and_non_ascii_are_the_standard_librarys() -> None:
    context = {"é": '\x00\x1f\x7f"\\/\n\t\u2028\U0001f600', "\uffff": "a", "\U00010000": "b"}
    assert canonical_context(context) == _reference(context)


@given(st.dictionaries(_TEXT, _TEXT, max_size=6), _TEXT)
def test_same_bytes_as_the_standard_library(context: dict[str, str], extra: str) -> None:
    assert canonical_context(context) == _reference(context)
    assert canonical_context(context, kek_version=extra) == _reference(
        {**context, "kek_version": extra}
    )
