"""Value types for API responses that have no library type of their own.

Everything else the SDK returns is the library's own type, read with
``medsecrets.wire.from_wire``: ``SecretVersion``, ``SecretMetadata``,
``VersionInfo``, ``SecretPage`` (``medsecrets.engines.secrets.model``),
``SealStatus`` and ``InitResult`` (``medsecrets.seal.manager``),
``KeyringInfo``, ``KekVersion``, ``ProvisionReport`` and
``TokenInfo`` (``medsecrets.auth.tokens``, re-exported here).
Secret material (tokens, shares, generated values) is held in ``Sensitive``
so it is masked in every ``repr``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from medsecrets.auth.tokens import TokenInfo
from medsecrets.catalog.model import (
    FieldSource,
    GeneratorSpec,
    KekSpec,
    RotationPolicy,
    ValidatorSpec,
)
from medsecrets.engines.secrets.model import SecretVersion
from medsecrets.keys.base import KekVersion
from medsecrets.seal.config import SealType
from medsecrets.sensitive import Sensitive

__all__ = [
    "CatalogInfo",
    "CategoryInfo",
    "CreatedToken",
    "FieldInfo",
    "Generated",
    "Health",
    "InitResponse",
    "KeyRotation",
    "KeyVersions",
    "Revoked",
    "RewrapStep",
    "Secret",
    "TokenInfo",
    "ValidationProblem",
    "ValidationReport",
]

Secret = SecretVersion
"""What ``Client.get`` returns: one version of a secret; its ``fields`` mask values in ``repr``."""


@dataclass(frozen=True, slots=True)
class Health:
    """``GET /v1/sys/health``."""

    initialized: bool
    sealed: bool
    version: str
    server_time: dt.datetime


@dataclass(frozen=True, slots=True)
class InitResponse:
    """``POST /v1/sys/init``: the unseal shares (empty unless shamir) and the root token, once."""

    shares: tuple[Sensitive[str], ...]
    threshold: int
    seal_type: SealType
    root_token: Sensitive[str]


@dataclass(frozen=True, slots=True)
class KeyVersions:
    """``GET /v1/sys/keys/{category}``."""

    category: str
    versions: tuple[KekVersion, ...]


@dataclass(frozen=True, slots=True)
class KeyRotation:
    """``POST /v1/sys/keys/{category}/rotate``: the new KEK version."""

    category: str
    version: int


@dataclass(frozen=True, slots=True)
class RewrapStep:
    """``POST /v1/sys/rewrap``: one resumable step; repeat with ``next_after`` until ``None``."""

    secrets: int
    rewrapped: int
    already_current: int
    total: int
    next_after: str | None


@dataclass(frozen=True, slots=True)
class ValidationProblem:
    """One field of a stored value that fails a catalog rule (never the value)."""

    field: str
    rule: str


@dataclass(frozen=True, slots=True)
class ValidationReport:
    """``GET /v1/validate/{path}``."""

    path: str
    valid: bool
    problems: tuple[ValidationProblem, ...]


@dataclass(frozen=True, slots=True)
class FieldInfo:
    """One field of a category as the API shows it (``FieldSpec`` without its dummy)."""

    name: str
    description: str
    source: FieldSource
    generator: GeneratorSpec | None
    validators: tuple[ValidatorSpec, ...]
    template: str | None


@dataclass(frozen=True, slots=True)
class CategoryInfo:
    """``GET /v1/catalog/{category}``: a catalog category as the API shows it.

    Not ``medsecrets.catalog.model.Category``: the wire form leaves out the
    development dummies and the honeytoken flag, without which a ``Category``
    would not pass its own integrity checks.
    """

    name: str
    description: str
    fields: tuple[FieldInfo, ...]
    rotation: RotationPolicy
    kek: KekSpec


@dataclass(frozen=True, slots=True)
class CatalogInfo:
    """``GET /v1/catalog``: the server's catalog."""

    prefix: str
    development_environments: tuple[str, ...]
    categories: tuple[CategoryInfo, ...]


@dataclass(frozen=True, slots=True)
class Generated:
    """``POST /v1/generate``."""

    kind: str
    value: Sensitive[str]


@dataclass(frozen=True, slots=True)
class CreatedToken:
    """``POST /v1/auth/token/create``: the new token (shown once) and its facts."""

    token: Sensitive[str]
    info: TokenInfo


@dataclass(frozen=True, slots=True)
class Revoked:
    """``POST /v1/auth/token/revoke``."""

    revoked: bool
