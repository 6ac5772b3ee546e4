"""Identities and tokens (``tokens``); the full policy model comes with access control.

The names below load lazily (PEP 562): importing the package imports none of its
modules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medsecrets.lazy import resolve

if TYPE_CHECKING:
    from medsecrets.auth.tokens import CAPABILITIES, TokenStore
    from medsecrets.schema.tokens import TokenInfo

__all__ = [
    "CAPABILITIES",
    "TokenInfo",
    "TokenStore",
]

_EXPORTS = {
    "CAPABILITIES": "medsecrets.auth.tokens",
    "TokenInfo": "medsecrets.schema.tokens",
    "TokenStore": "medsecrets.auth.tokens",
}


def __getattr__(name: str) -> object:
    return resolve(__name__, _EXPORTS, name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
