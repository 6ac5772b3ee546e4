"""Provisioning: create every catalog secret of an environment in one step.

Every category's value is built (and validated), its report entry computed and its
category's keys tried (a data key wrapped by its KEK provider and dropped:
``SecretsEngine.check_keys``), before anything is written, so a missing ``provided``
field in a production-like environment, any other bad input, or a KEK provider that
cannot wrap (an AWS KMS key out of reach) stops the run with nothing written. A failure
during the writes themselves (a provider lost meanwhile, a secret deleted between its
check and its write) stops the run after the secrets already created: run it again. Secrets
that exist already are left untouched, so a run can be repeated. In development
environments, ``provided`` fields that were not given are filled with values
clearly marked as dummies; the report names exactly those fields (``dummy_fields``,
always empty elsewhere). The report (``ProvisionReport``) is an API value type:
``medsecrets.schema.provision``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from medsecrets.catalog.model import Catalog
from medsecrets.engines.secrets.engine import SecretsEngine
from medsecrets.engines.secrets.paths import SecretPath
from medsecrets.errors import AlreadyExistsError, CasConflictError, InvalidRequest, NotFoundError
from medsecrets.schema.provision import ProvisionItem, ProvisionReport

__all__ = ["provision"]


@dataclass(frozen=True, slots=True)
class _Plan:
    """One category's secret: its path, and the value to create (None: it exists)."""

    path: str
    category: str
    value: dict[str, str] | None
    dummy_fields: tuple[str, ...]


def provision(
    engine: SecretsEngine,
    catalog: Catalog,
    environment: str,
    *,
    provided: Mapping[str, Mapping[str, str]] | None = None,
    categories: tuple[str, ...] | None = None,
    on_progress: Callable[[int, int, str], None] | None = None,
) -> ProvisionReport:
    """Create ``<prefix>/<environment>/<category>`` for every catalog category.

    ``provided`` maps category → fields a person supplies. ``categories`` limits
    the run to those categories (None: every one); an empty tuple or a repeated
    name is ``InvalidRequest``, as is an unknown category. ``on_progress(done,
    total, path)`` is called after each secret. Every value is built and validated, and
    its category's keys tried, before the first write, so such an error leaves the
    environment as it was; a secret created meanwhile by someone else is reported
    ``exists``.
    """
    provided = provided or {}
    names = _category_names(catalog, provided, categories)
    development = catalog.is_development(environment)
    plans = [
        _plan(
            engine,
            catalog,
            environment,
            name,
            given=provided.get(name, {}),
            development=development,
        )
        for name in names
    ]
    for plan in plans:
        if plan.value is not None:
            engine.check_keys(plan.path)
    items: list[ProvisionItem] = []
    for done, plan in enumerate(plans, start=1):
        items.append(_write(engine, plan))
        if on_progress is not None:
            on_progress(done, len(plans), plan.path)
    return ProvisionReport(environment=environment, development=development, items=tuple(items))


def _category_names(
    catalog: Catalog,
    provided: Mapping[str, Mapping[str, str]],
    categories: tuple[str, ...] | None,
) -> tuple[str, ...]:
    """The categories to provision; ``InvalidRequest`` for an empty selection, a repeated
    name, or a name (selected or in ``provided``) the catalog does not declare."""
    if categories is not None and not categories:
        raise InvalidRequest("categories: name at least one category (omit it for every one)")
    names = catalog.names() if categories is None else categories
    unknown = [name for name in (*provided, *names) if name not in catalog.categories]
    if unknown:
        raise InvalidRequest(f"category {unknown[0]!r} is not in the catalog")
    repeated = next((name for i, name in enumerate(names) if name in names[:i]), None)
    if repeated is not None:
        raise InvalidRequest(f"categories: {repeated!r} is listed more than once")
    return names


def _plan(
    engine: SecretsEngine,
    catalog: Catalog,
    environment: str,
    name: str,
    *,
    given: Mapping[str, str],
    development: bool,
) -> _Plan:
    """Everything about one category that can fail, computed without writing."""
    path = str(SecretPath(prefix=catalog.prefix, environment=environment, category=name))
    engine.parse(path)
    if _exists(engine, path):
        return _Plan(path, name, None, ())
    category = catalog.category(name)
    value = category.build(given, development=development)
    return _Plan(path, name, value, category.dummy_fields(given, development=development))


def _write(engine: SecretsEngine, plan: _Plan) -> ProvisionItem:
    """Create the planned secret (``cas=0``); one that exists meanwhile is ``exists``."""
    exists = ProvisionItem(plan.path, plan.category, "exists", None, ())
    if plan.value is None:
        return exists
    description = f"provisioned {plan.category} secrets"
    try:
        info = engine.put(plan.path, plan.value, cas=0, description=description)
    except (CasConflictError, AlreadyExistsError):
        return exists
    return ProvisionItem(plan.path, plan.category, "created", info.number, plan.dummy_fields)


def _exists(engine: SecretsEngine, path: str) -> bool:
    try:
        engine.describe(path)
    except NotFoundError:
        return False
    return True
