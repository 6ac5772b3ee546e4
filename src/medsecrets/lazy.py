"""PEP 562 lazy re-exports for package ``__init__`` modules.

A package that re-exports names lists them with their defining modules and
forwards its module ``__getattr__`` to ``resolve``::

    _EXPORTS = {"Client": "medsecrets.sdk.client"}

    def __getattr__(name: str) -> object:
        return resolve(__name__, _EXPORTS, name)

Contract: the defining module is imported on the first access of one of its
names (never at ``import`` of the package), the value is cached in the
package's namespace so later accesses cost nothing, and a name that is not
exported raises ``AttributeError`` (which lets ``import package.submodule``
and ``hasattr`` work as usual). Type checkers see the names through the
package's ``if TYPE_CHECKING:`` imports.
"""

from __future__ import annotations

import importlib
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing; mypy knows it
if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["resolve"]


def resolve(package: str, exports: Mapping[str, str], name: str) -> object:
    """``name`` from its defining module in ``exports``, cached on ``package``."""
    module = exports.get(name)
    if module is None:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    setattr(sys.modules[package], name, value)
    return value
