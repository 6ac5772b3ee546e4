"""The HTTP API v1: a thin ASGI (Starlette) translation layer over ``medsecrets.core``.

``create_app(core)`` builds the app; see docs/api.md for the contract.
"""

from medsecrets.api.app import create_app

__all__ = ["create_app"]
