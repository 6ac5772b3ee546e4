"""``from_wire``'s messages name where a bad value is without echoing hostile keys."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pytest

from medsecrets.errors import InvalidRequest
from medsecrets.wire import from_wire


@dataclass(frozen=True)
class _Tagged:
    tags: Mapping[str, str] = field(default_factory=dict)


def test_a_plain_key_is_named_as_a_member() -> None:
    with pytest.raises(InvalidRequest, match=r"^body\.tags\.team: expected a string$"):
        from_wire(_Tagged, {"tags": {"team": 1}}, where="body")


def test_a_hostile_key_is_quoted_cut_and_without_control_characters() -> None:
    key = "a\nb\x1b[31m" + "x" * 5000
    with pytest.raises(InvalidRequest) as raised:
        from_wire(_Tagged, {"tags": {key: 1}}, where="body")
    message = str(raised.value)
    assert message.startswith("body.tags['a?b?[31mxxx")
    assert message.endswith("…']: expected a string")
    assert "\n" not in message and "\x1b" not in message
    assert len(message) < 120
