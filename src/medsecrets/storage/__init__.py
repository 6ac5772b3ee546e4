"""Storage backends: untrusted, durable key → bytes stores (see ``base``)."""

from medsecrets.storage.base import (
    Delete,
    Expect,
    Lease,
    ListPage,
    Operation,
    Put,
    StorageBackend,
)

__all__ = ["Delete", "Expect", "Lease", "ListPage", "Operation", "Put", "StorageBackend"]
