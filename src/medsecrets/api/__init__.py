"""The HTTP API v1: a thin ASGI (Starlette) translation layer over ``medsecrets.core``.

``create_app(core)`` builds the app; see docs/api.md for the contract. It loads
lazily (PEP 562): importing the package imports neither Starlette nor the core.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medsecrets.lazy import resolve

if TYPE_CHECKING:
    from medsecrets.api.app import create_app

__all__ = [
    "create_app",
]

_EXPORTS = {
    "create_app": "medsecrets.api.app",
}


def __getattr__(name: str) -> object:
    return resolve(__name__, _EXPORTS, name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
