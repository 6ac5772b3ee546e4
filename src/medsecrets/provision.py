"""Provisioning: create every catalog secret of an environment in one step.

Every category's value is built (and validated) before anything is written,
so a missing ``provided`` field in a production-like environment stops the
run with nothing written. Secrets that exist already are left untouched, so a
run can be repeated. In development environments, ``provided`` fields that
were not given are filled with values clearly marked as dummies. The report
(``ProvisionReport``) is an API value type: ``medsecrets.schema.provision``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from medsecrets.catalog.model import Catalog
from medsecrets.engines.secrets.engine import SecretsEngine
from medsecrets.engines.secrets.paths import SecretPath
from medsecrets.errors import AlreadyExistsError, CasConflictError, InvalidRequest, NotFoundError
from medsecrets.schema.provision import ProvisionItem, ProvisionReport

__all__ = ["provision"]


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

    ``provided`` maps category → fields a person supplies. ``on_progress(done,
    total, path)`` is called after each secret.
    """
    provided = provided or {}
    names = categories or catalog.names()
    unknown = [name for name in (*provided, *names) if name not in catalog.names()]
    if unknown:
        raise InvalidRequest(f"category {unknown[0]!r} is not in the catalog")
    development = catalog.is_development(environment)
    plans: list[tuple[str, str, dict[str, str] | None]] = []
    for name in names:
        path = str(SecretPath(prefix=catalog.prefix, environment=environment, category=name))
        engine.parse(path)
        built = None
        if not _exists(engine, path):
            built = catalog.category(name).build(provided.get(name, {}), development=development)
        plans.append((path, name, built))
    items: list[ProvisionItem] = []
    for done, (path, name, value) in enumerate(plans, start=1):
        if value is None:
            items.append(ProvisionItem(path, name, "exists", None, ()))
        else:
            dummies = tuple(
                sorted(f for f, v in value.items() if catalog.category(name).is_dummy(v))
            )
            try:
                info = engine.put(path, value, cas=0, description=f"provisioned {name} secrets")
            except (CasConflictError, AlreadyExistsError):
                items.append(ProvisionItem(path, name, "exists", None, ()))
            else:
                items.append(ProvisionItem(path, name, "created", info.number, dummies))
        if on_progress is not None:
            on_progress(done, len(plans), path)
    return ProvisionReport(environment=environment, development=development, items=tuple(items))


def _exists(engine: SecretsEngine, path: str) -> bool:
    try:
        engine.describe(path)
    except NotFoundError:
        return False
    return True
