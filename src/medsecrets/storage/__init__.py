"""Storage backends: untrusted, durable key → bytes stores (see ``base``).

The names below load lazily (PEP 562): importing the package imports none of its
modules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medsecrets.lazy import resolve

if TYPE_CHECKING:
    from medsecrets.storage.base import (
        DefersDurability,
        Delete,
        Expect,
        Lease,
        ListPage,
        Operation,
        Put,
        StorageBackend,
        WriteLockBusy,
    )

__all__ = [
    "DefersDurability",
    "Delete",
    "Expect",
    "Lease",
    "ListPage",
    "Operation",
    "Put",
    "StorageBackend",
    "WriteLockBusy",
]

_EXPORTS = {
    "DefersDurability": "medsecrets.storage.base",
    "Delete": "medsecrets.storage.base",
    "Expect": "medsecrets.storage.base",
    "Lease": "medsecrets.storage.base",
    "ListPage": "medsecrets.storage.base",
    "Operation": "medsecrets.storage.base",
    "Put": "medsecrets.storage.base",
    "StorageBackend": "medsecrets.storage.base",
    "WriteLockBusy": "medsecrets.storage.base",
}


def __getattr__(name: str) -> object:
    return resolve(__name__, _EXPORTS, name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
