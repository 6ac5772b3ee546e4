"""Catalog routes (any valid token), one-value generation (``generate``) and
provisioning of an environment (``write`` on ``<prefix>/<environment>/``).

The catalog is shown through the view types of ``medsecrets.schema.catalog``
(docs/api.md): honeytoken flags and development dummies stay in the server.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from medsecrets.catalog.generators import generate as generate_value
from medsecrets.catalog.model import Catalog, Category
from medsecrets.core.routes.base import Call, Context, RouteSpec
from medsecrets.engines.secrets.paths import check_segments
from medsecrets.errors import InvalidRequest
from medsecrets.schema.catalog import (
    CatalogInfo,
    CategoryInfo,
    FieldInfo,
    Generated,
    GeneratorInfo,
    KekInfo,
    ParamValue,
    RotationPolicyInfo,
    ValidatorInfo,
)
from medsecrets.schema.provision import ProvisionReport

__all__ = ["GenerateBody", "ProvisionBody", "category_info", "routes"]


@dataclass(frozen=True, slots=True)
class GenerateBody:
    """``POST /v1/generate``."""

    kind: str
    params: Mapping[str, ParamValue] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ProvisionBody:
    """``POST /v1/provision``: ``provided`` maps category → fields a person supplies."""

    environment: str
    provided: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    categories: tuple[str, ...] | None = None


def category_info(catalog: Catalog, category: Category) -> CategoryInfo:
    """The public view of ``category``."""
    return CategoryInfo(
        name=category.name,
        description=category.description,
        fields=tuple(
            FieldInfo(
                name=f.name,
                description=f.description,
                source=f.source,
                generator=(
                    GeneratorInfo(kind=f.generator.kind, params=dict(f.generator.params))
                    if f.generator is not None
                    else None
                ),
                validators=tuple(
                    ValidatorInfo(kind=v.kind, params=dict(v.params)) for v in f.validators
                ),
                template=f.template,
            )
            for f in category.fields
        ),
        rotation=RotationPolicyInfo(
            interval_days=category.rotation.interval_days,
            strategy=category.rotation.strategy,
            keep_previous=category.rotation.keep_previous,
        ),
        kek=KekInfo(provider=category.kek.provider, key_id=catalog.kek_key_id(category.name)),
    )


def show_catalog(ctx: Context, call: Call) -> CatalogInfo:
    catalog = ctx.store.catalog
    return CatalogInfo(
        prefix=catalog.prefix,
        development_environments=tuple(sorted(catalog.development_environments)),
        categories=tuple(category_info(catalog, c) for c in catalog.categories.values()),
    )


def show_category(ctx: Context, call: Call) -> CategoryInfo:
    catalog = ctx.store.catalog
    return category_info(catalog, catalog.category(call.path))


def generate(ctx: Context, call: Call) -> Generated:
    body = call.body
    assert isinstance(body, GenerateBody)
    return Generated(kind=body.kind, value=generate_value(body.kind, **body.params))


def provision(ctx: Context, call: Call) -> ProvisionReport:
    body = call.body
    assert isinstance(body, ProvisionBody)
    return ctx.store.provision(body.environment, provided=body.provided, categories=body.categories)


def _provision_path(ctx_prefix: str, call: Call) -> str:
    body = call.body
    assert isinstance(body, ProvisionBody)
    segments = check_segments(body.environment, what="environment")
    if len(segments) != 1:
        raise InvalidRequest("environment must be a single path segment")
    return f"{ctx_prefix}/{body.environment}/"


def routes(prefix: str) -> tuple[RouteSpec, ...]:
    """The catalog, generate and provision route specs (``prefix``: the catalog's)."""
    return (
        RouteSpec(
            name="catalog.read",
            method="GET",
            url="/v1/catalog",
            handler=show_catalog,
            summary="The secrets catalog (any valid token)",
            response=CatalogInfo,
            statuses=(),
        ),
        RouteSpec(
            name="catalog.category",
            method="GET",
            url="/v1/catalog/{category}",
            handler=show_category,
            summary="One catalog category (any valid token)",
            response=CategoryInfo,
            statuses=(),  # an unknown category: 404, as for every URL parameter
        ),
        RouteSpec(
            name="generate",
            method="POST",
            url="/v1/generate",
            handler=generate,
            summary="Generate one value (never stored)",
            capability="generate",
            body=GenerateBody,
            body_required=True,
            response=Generated,
            returns_secret=True,
            statuses=(),  # an unknown kind or a bad parameter: 400
        ),
        RouteSpec(
            name="provision",
            method="POST",
            url="/v1/provision",
            handler=provision,
            summary="Create every catalog secret of an environment",
            capability="write",
            authz_path=lambda call: _provision_path(prefix, call),
            body=ProvisionBody,
            body_required=True,
            response=ProvisionReport,
            # races: a secret created and purged faster than the engine's retries (409),
            # one deleted meanwhile (410); a provided field missing or failing a validator
            # (422); a KMS (502)
            statuses=(409, 410, 422, 502),
        ),
    )
