"""Provisioning on the wire: what ``POST /v1/provision`` did, secret by secret (no values)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["ProvisionItem", "ProvisionReport"]


@dataclass(frozen=True, slots=True)
class ProvisionItem:
    """What happened to one category's secret."""

    path: str
    category: str
    status: Literal["created", "exists"]
    version: int | None
    dummy_fields: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ProvisionReport:
    """The outcome of provisioning one environment."""

    environment: str
    development: bool
    items: tuple[ProvisionItem, ...]

    @property
    def created(self) -> int:
        """How many secrets were created."""
        return sum(item.status == "created" for item in self.items)
