"""Secret routes: write, read, describe, list, update metadata, stages, delete, restore,
destroy and validate.

Every route acts on a secret path and needs its capability on a prefix of it
(``GET /v1/metadata`` on its ``prefix`` query parameter).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from medsecrets.core.routes.base import Call, Context, QueryParam, RouteSpec, quote
from medsecrets.engines.secrets.paths import check_prefix
from medsecrets.errors import InvalidRequest, PermissionDenied
from medsecrets.schema.secrets import (
    STAGES,
    PutResponse,
    SecretMetadata,
    SecretPage,
    SecretVersion,
    Stage,
    ValidationProblem,
    ValidationReport,
)
from medsecrets.sensitive import SecretFields

__all__ = ["MAX_CAS", "DestroyBody", "MetadataBody", "PutBody", "StageBody", "routes"]

MAX_CAS = 2**63 - 1
"""Largest ``cas`` a write accepts (a signed 64-bit integer: any client's integer type)."""


# -- bodies ------------------------------------------------------------------------------
def _check_version(version: int | None) -> None:
    """Version numbers start at 1: 0 or below is a malformed request (400, as
    ``?version=0`` is), not a version that happens to be missing (404)."""
    if version is not None and version < 1:
        raise InvalidRequest("body.version: must be 1 or more")


@dataclass(frozen=True, slots=True)
class PutBody:
    """``PUT /v1/secrets/{path}``: ``cas`` 0 creates only; n requires version n to be the newest."""

    fields: SecretFields
    cas: int | None = None
    stage: Literal["current", "pending"] = "current"
    description: str | None = None
    owner: str | None = None
    tags: Mapping[str, str] | None = None

    def __post_init__(self) -> None:
        # No version is negative: a malformed value, not a lost check-and-set (409 would
        # tell a client to read and retry, forever).
        if self.cas is not None and not 0 <= self.cas <= MAX_CAS:
            raise InvalidRequest(f"body.cas: must be from 0 to {MAX_CAS}")


@dataclass(frozen=True, slots=True)
class MetadataBody:
    """``PATCH /v1/metadata/{path}``."""

    description: str | None = None
    owner: str | None = None
    tags: Mapping[str, str] | None = None
    rotation_days: int | None = None
    clear_rotation_override: bool = False


@dataclass(frozen=True, slots=True)
class StageBody:
    """``POST /v1/stages/{path}``: move ``stage`` to ``version``, or ``remove`` it."""

    stage: Stage
    version: int | None = None
    remove: bool = False

    def __post_init__(self) -> None:
        _check_version(self.version)


@dataclass(frozen=True, slots=True)
class DestroyBody:
    """``POST /v1/destroy/{path}``."""

    version: int

    def __post_init__(self) -> None:
        _check_version(self.version)


_NO_CHANGE = MetadataBody()


# -- handlers ------------------------------------------------------------------------------
def put(ctx: Context, call: Call) -> PutResponse:
    body = call.body
    assert isinstance(body, PutBody)
    info = ctx.store.secrets.put(
        call.path,
        body.fields,
        cas=body.cas,
        stage=body.stage,
        description=body.description,
        owner=body.owner,
        tags=body.tags,
    )
    return PutResponse(version=info)


def _version_json(secret: SecretVersion) -> dict[str, object]:
    """The wire form of ``secret`` (what ``to_wire`` gives, built directly: the hot path)."""
    return {
        "path": secret.path,
        "number": secret.number,
        "id": secret.id,
        "created_at": secret.created_at.isoformat(),
        "stages": list(secret.stages),
        "fields": secret.fields.to_dict(),
    }


def read(ctx: Context, call: Call) -> dict[str, object]:
    q = call.query
    if not q:
        return _version_json(ctx.store.secrets.get(call.path))
    stage = q.get("stage")
    version = q.get("version")
    version_id = q.get("version_id")
    if sum(x is not None for x in (stage, version, version_id)) > 1:
        raise InvalidRequest("give at most one of stage, version and version_id")
    secret = ctx.store.secrets.get(
        call.path,
        stage=stage,  # type: ignore[arg-type]  # checked by its QueryParam enum
        version=version if isinstance(version, int) else None,
        version_id=version_id if isinstance(version_id, str) else None,
    )
    return _version_json(secret)


def describe(ctx: Context, call: Call) -> SecretMetadata:
    return ctx.store.secrets.describe(call.path)


def update_metadata(ctx: Context, call: Call) -> SecretMetadata:
    body = call.body
    assert isinstance(body, MetadataBody)
    if body.clear_rotation_override and body.rotation_days is not None:
        raise InvalidRequest("give either rotation_days or clear_rotation_override, not both")
    if body == _NO_CHANGE:
        # An empty change would only move updated_at and hand the metadata to a token
        # that may write but not list (GET /v1/metadata/{path} needs list).
        raise InvalidRequest(
            "body: give at least one of description, owner, tags, rotation_days and "
            "clear_rotation_override"
        )
    return ctx.store.secrets.update_metadata(
        call.path,
        description=body.description,
        owner=body.owner,
        tags=body.tags,
        rotation_days=body.rotation_days,
        clear_rotation_override=body.clear_rotation_override,
    )


def _tags(values: object) -> dict[str, str]:
    tags: dict[str, str] = {}
    if not isinstance(values, tuple):
        return tags
    for item in values:
        assert isinstance(item, str)
        key, sep, value = item.partition(":")
        if not sep or not key:
            raise InvalidRequest("query parameter 'tag' must look like key:value")
        if key in tags:  # every tag must match: a key twice could mean neither
            raise InvalidRequest(f"query parameter 'tag' names the key {quote(key)} twice")
        tags[key] = value
    return tags


def list_secrets(ctx: Context, call: Call) -> SecretPage:
    q = call.query
    prefix = q.get("prefix", "")
    after = q.get("after")
    environment = q.get("environment")
    category = q.get("category")
    limit = q.get("limit", 100)
    assert isinstance(prefix, str) and isinstance(limit, int)
    return ctx.store.secrets.list(
        prefix,
        environment=environment if isinstance(environment, str) else None,
        category=category if isinstance(category, str) else None,
        tags=_tags(q.get("tag")) or None,
        include_deleted=q.get("include_deleted") is True,
        after=after if isinstance(after, str) and after else None,
        limit=limit,
    )


def stages(ctx: Context, call: Call) -> SecretMetadata:
    body = call.body
    assert isinstance(body, StageBody)
    if body.remove:
        if body.version is not None:
            raise InvalidRequest("give either version or remove, not both")
        return ctx.store.secrets.remove_stage(call.path, body.stage)
    if body.version is None:
        raise InvalidRequest("body: missing field 'version' (or 'remove': true)")
    return ctx.store.secrets.move_stage(call.path, body.stage, body.version)


def delete(ctx: Context, call: Call) -> SecretMetadata:
    q = call.query
    force = q.get("force") is True
    days = q.get("recovery_days")
    if force and days is not None:
        raise InvalidRequest("give either recovery_days or force, not both")
    principal = call.principal
    if force and principal is not None and not principal.allows("destroy", call.path):
        # an erase with no recovery is what ``destroy`` gates, not ``delete``
        raise PermissionDenied("permission denied: force=true needs the 'destroy' capability")
    return ctx.store.secrets.delete(
        call.path, recovery_days=days if isinstance(days, int) else 30, force=force
    )


def restore(ctx: Context, call: Call) -> SecretMetadata:
    return ctx.store.secrets.restore(call.path)


def destroy(ctx: Context, call: Call) -> SecretMetadata:
    body = call.body
    assert isinstance(body, DestroyBody)
    return ctx.store.secrets.destroy(call.path, body.version)


def validate(ctx: Context, call: Call) -> ValidationReport:
    """Check the stored current value against the catalog, collecting every problem
    (``Category.problems``: at most one per field, each derived field checked on its own)."""
    secret = ctx.store.secrets.get(call.path)
    category = ctx.store.catalog.category(ctx.store.secrets.parse(call.path).category)
    problems = tuple(
        ValidationProblem(field=name, rule=rule) for name, rule in category.problems(secret.fields)
    )
    return ValidationReport(path=secret.path, valid=not problems, problems=problems)


def _path(call: Call) -> str:
    return call.path


def _list_path(call: Call) -> str:
    """The listing's prefix, checked before authorization (as a secret path is): a
    malformed one is 400 for every token, not 403 for some and an empty page for others."""
    prefix = call.query.get("prefix", "")
    return check_prefix(prefix) if isinstance(prefix, str) else ""


def _list_scope(prefix: str) -> Callable[[Call], str | None]:
    """A listing's scope by its filters: ``<prefix>/<environment>`` (and ``/<category>``),
    every path it can list lying there; ``None`` without an environment (a category alone
    spans environments) or for a value that is not one path segment."""

    def scope(call: Call) -> str | None:
        environment = call.query.get("environment")
        if not isinstance(environment, str) or not _segment(environment):
            return None
        category = call.query.get("category")
        if isinstance(category, str) and _segment(category):
            return f"{prefix}/{environment}/{category}"
        return f"{prefix}/{environment}"

    return scope


def _segment(value: str) -> bool:
    return bool(value) and "/" not in value and value not in (".", "..")


_STAGE = QueryParam(
    "stage",
    str,
    description="read the version with this stage",
    enum=STAGES,
)


def routes(prefix: str) -> tuple[RouteSpec, ...]:
    """The secret route specs; ``prefix`` is the catalog's path prefix."""
    return (
        RouteSpec(
            name="secrets.write",
            method="PUT",
            url="/v1/secrets/{path}",
            handler=put,
            summary="Write a new version of a secret",
            capability="write",
            authz_path=_path,
            body=PutBody,
            body_required=True,
            response=PutResponse,
            loop_write=True,
            statuses=(
                409,
                410,
                422,
                502,
            ),  # cas or a race; scheduled for deletion; a validator; KMS
        ),
        RouteSpec(
            name="secrets.read",
            method="GET",
            url="/v1/secrets/{path}",
            handler=read,
            summary="Read one version of a secret (current unless told otherwise)",
            capability="read",
            authz_path=_path,
            query=(
                _STAGE,
                QueryParam("version", int, description="version number", minimum=1),
                QueryParam("version_id", str, description="version id"),
            ),
            response=SecretVersion,
            returns_secret=True,
            statuses=(410, 502),  # scheduled for deletion; a KMS key
        ),
        RouteSpec(
            name="secrets.delete",
            method="DELETE",
            url="/v1/secrets/{path}",
            handler=delete,
            summary="Schedule a secret for deletion (or purge it now with force)",
            capability="delete",
            authz_path=_path,
            query=(
                QueryParam(
                    "recovery_days",
                    int,
                    description="recovery window in days",
                    minimum=7,
                    maximum=30,
                ),
                QueryParam("force", bool, description="purge now, without recovery"),
            ),
            response=SecretMetadata,
            loop_write=True,
            statuses=(409, 410),  # a race; scheduled already (force purges it)
        ),
        RouteSpec(
            name="metadata.read",
            method="GET",
            url="/v1/metadata/{path}",
            handler=describe,
            summary="Metadata of a secret (never values)",
            capability="list",
            authz_path=_path,
            response=SecretMetadata,
            statuses=(),
        ),
        RouteSpec(
            name="metadata.update",
            method="PATCH",
            url="/v1/metadata/{path}",
            handler=update_metadata,
            summary="Change a secret's description, owner, tags or rotation interval",
            capability="write",
            authz_path=_path,
            body=MetadataBody,
            body_required=True,
            response=SecretMetadata,
            loop_write=True,
            statuses=(409, 410),  # a race; scheduled for deletion
        ),
        RouteSpec(
            name="metadata.list",
            method="GET",
            url="/v1/metadata",
            handler=list_secrets,
            summary="List and search secrets (metadata only), paginated",
            capability="list",
            authz_path=_list_path,
            lists=True,
            list_scope=_list_scope(prefix),
            query=(
                QueryParam("prefix", str, description="path prefix"),
                QueryParam("environment", str, description="only this environment"),
                QueryParam("category", str, description="only this category"),
                QueryParam("tag", str, description="key:value (repeatable)", repeatable=True),
                QueryParam("include_deleted", bool, description="include scheduled deletions"),
                QueryParam("after", str, description="continue after this path"),
                QueryParam("limit", int, description="page size", minimum=1, maximum=1000),
            ),
            response=SecretPage,
            statuses=(),
        ),
        RouteSpec(
            name="stages.update",
            method="POST",
            url="/v1/stages/{path}",
            handler=stages,
            summary="Move a stage to a version, or remove the pending/previous stage",
            capability="write",
            authz_path=_path,
            body=StageBody,
            body_required=True,
            response=SecretMetadata,
            loop_write=True,
            statuses=(409, 410),  # a destroyed or the current version, a race; scheduled
        ),
        RouteSpec(
            name="secrets.restore",
            method="POST",
            url="/v1/restore/{path}",
            handler=restore,
            summary="Cancel a scheduled deletion",
            capability="delete",
            authz_path=_path,
            response=SecretMetadata,
            loop_write=True,
            statuses=(409,),  # not scheduled for deletion, a race
        ),
        RouteSpec(
            name="secrets.destroy",
            method="POST",
            url="/v1/destroy/{path}",
            handler=destroy,
            summary="Erase one (non-current) version for good",
            capability="destroy",
            authz_path=_path,
            body=DestroyBody,
            body_required=True,
            response=SecretMetadata,
            loop_write=True,
            statuses=(409,),  # the current version, a race
        ),
        RouteSpec(
            name="secrets.validate",
            method="GET",
            url="/v1/validate/{path}",
            handler=validate,
            summary="Check the stored current value against the catalog (no values returned)",
            capability="read",
            authz_path=_path,
            response=ValidationReport,
            statuses=(410, 502),  # scheduled for deletion; a KMS key
        ),
    )
