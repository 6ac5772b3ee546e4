"""One ``Call`` builder per endpoint of ``docs/api.md`` (sans-IO, shared by both clients).

Each function validates nothing the server validates: it only shapes the
request and names the type the answer is read into. ``retry_safe`` is set per
endpoint; the POST routes marked safe are those where repeating a request
that may have been applied leaves the same state: ``sys/seal``,
``sys/unseal`` with ``{}`` (auto-unseal) or a reset,
``sys/rewrap`` (resumable), ``stages`` with an explicit version or a removal,
``destroy`` of a version, ``provision`` (leaves existing secrets alone),
``generate`` (no state), ``sys/audit/hash`` (no state) and ``token/lookup``,
and ``DELETE sys/rekey`` (idempotent).
Never retried after they may have been applied: ``init``, ``unseal``,
``sys/rotate``, ``rekey``, ``rekey/verify`` (a repeat after a lost answer would
find nothing pending), key rotation, ``restore``, ``token/create``,
``token/revoke`` (a repeat after a lost answer would report the revocation it made
as ``NotFoundError``), and the secret writes ``PUT`` and ``DELETE`` (a repeat
after a lost answer would add a second version, or report the deletion it made
as ``ScheduledForDeletion``):
those are retried only when the request never left (no connection), and a
lost answer surfaces as an error, to be checked by a read.

Every path goes into the URL as it is: a ``.`` or ``..`` segment, a ``%`` and
text that is not Unicode are refused here (``InvalidRequest``) before anything
is sent (see ``_seg``): HTTP clients resolve dot segments, older servers
decoded an escaped ``%`` again, and either way the request would reach another
route or secret.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import TypeVar
from urllib.parse import quote

from medsecrets.errors import InvalidRequest
from medsecrets.schema.audit import (
    AlertList,
    AuditDevices,
    AuditHash,
    AuditPublicKey,
    AuditReads,
    AuditRecords,
    AuditVerification,
)
from medsecrets.schema.catalog import CatalogInfo, CategoryInfo, ParamValue
from medsecrets.schema.keys import KeyRotation, KeyVersions, RewrapReport
from medsecrets.schema.provision import ProvisionReport
from medsecrets.schema.seal import (
    InitResponse,
    InitResult,
    KeyFileSealConfig,
    RekeyCancel,
    SealConfig,
    SealStatus,
    ShamirSealConfig,
)
from medsecrets.schema.secrets import (
    SecretMetadata,
    SecretPage,
    SecretVersion,
    Stage,
    ValidationReport,
    VersionInfo,
)
from medsecrets.schema.system import Health, KeyringInfo
from medsecrets.schema.tokens import CreatedToken, Revoked, TokenInfo
from medsecrets.sdk.transport import Call, is_unicode
from medsecrets.sensitive import SecretFields, Sensitive
from medsecrets.wire import from_wire, to_wire

__all__ = [
    "alerts",
    "audit_devices",
    "audit_hash",
    "audit_public_key",
    "audit_search",
    "audit_who_read",
    "auto_unseal",
    "catalog",
    "category",
    "delete",
    "describe",
    "destroy",
    "generate",
    "get",
    "health",
    "init",
    "key_versions",
    "list_page",
    "move_stage",
    "provision",
    "put",
    "rekey",
    "rekey_cancel",
    "rekey_verify",
    "remove_stage",
    "restore",
    "rewrap_step",
    "rotate",
    "rotate_key",
    "seal",
    "seal_status",
    "token_create",
    "token_lookup",
    "token_lookup_self",
    "token_revoke",
    "unseal",
    "unseal_reset",
    "update_metadata",
    "validate",
]

T = TypeVar("T")


def _reader(cls: type[T]) -> Callable[[object], T]:
    def read(data: object) -> T:
        return from_wire(cls, data)

    return read


def _member(cls: type[T], key: str) -> Callable[[object], T]:
    def read(data: object) -> T:
        if not isinstance(data, dict) or key not in data:
            raise InvalidRequest(f"response: missing field {key!r}")
        return from_wire(cls, data[key], where=f"response.{key}")

    return read


def _seg(path: str) -> str:
    """``path`` for the URL: ``/``-separated, every other reserved character escaped.

    ``InvalidRequest`` for a ``.`` or ``..`` segment (it would be resolved away,
    and the request would reach another route), for a ``%`` (no secret path,
    category or name holds one, and servers before commit d2d5888 decoded the
    path once more: an escaped ``%2F`` arrived as ``/`` and read another secret) and
    for text that is not Unicode (a lone surrogate), before anything is sent.
    """
    if not isinstance(path, str):
        raise InvalidRequest("a path must be a string")
    if any(segment in (".", "..") for segment in path.split("/")):
        raise InvalidRequest("a path must not have a '.' or '..' segment")
    if "%" in path:
        raise InvalidRequest("a path must not hold '%' (no path or name has one)")
    if not is_unicode(path):
        raise InvalidRequest("a path must be valid Unicode text")
    return quote(path, safe="/")


def _reveal(value: str | Sensitive[str]) -> str:
    return value.reveal() if isinstance(value, Sensitive) else value


# -- system ----------------------------------------------------------------------
def health() -> Call[Health]:
    return Call("GET", "/v1/sys/health", _reader(Health), auth=False)


def seal_status() -> Call[SealStatus]:
    return Call("GET", "/v1/sys/seal-status", _reader(SealStatus), auth=False)


def _seal_body(config: SealConfig) -> dict[str, object]:
    """The ``seal`` object of ``POST /v1/sys/init`` for ``config``."""
    if isinstance(config, ShamirSealConfig):
        return {"type": "shamir", "shares": config.shares, "threshold": config.threshold}
    if isinstance(config, KeyFileSealConfig):
        return {"type": "keyfile", "path": config.path}
    return {
        "type": "awskms",
        "key_id": config.key_id,
        "region": config.region,
        "endpoint_url": config.endpoint_url,
    }


def init(config: SealConfig) -> Call[InitResponse]:
    return Call(
        "POST", "/v1/sys/init", _reader(InitResponse), body={"seal": _seal_body(config)},
        auth=False, retry_safe=False,
    )  # fmt: skip


def unseal(share: str | Sensitive[str]) -> Call[SealStatus]:
    return Call(
        "POST", "/v1/sys/unseal", _reader(SealStatus), body={"share": _reveal(share)},
        auth=False, retry_safe=False,
    )  # fmt: skip


def auto_unseal() -> Call[SealStatus]:
    """``POST /v1/sys/unseal`` with ``{}``: a key-file or AWS KMS seal unseals itself.

    An unsealed server answers its status (nothing happens), so repeating the call is
    harmless (retried). Refused after an operator's ``sys/seal`` until the server
    restarts (``PermissionDenied``, 403: an emergency seal holds against anyone who
    reaches the port); a Shamir seal takes shares (``InvalidRequest``, 400); a key
    file or KMS key that cannot be used is the server's error for it (a KMS failure:
    ``ProviderError``, 502).
    """
    return Call("POST", "/v1/sys/unseal", _reader(SealStatus), body={}, auth=False)


def unseal_reset() -> Call[SealStatus]:
    return Call("POST", "/v1/sys/unseal", _reader(SealStatus), body={"reset": True}, auth=False)


def seal() -> Call[SealStatus]:
    return Call("POST", "/v1/sys/seal", _reader(SealStatus))


def rotate() -> Call[KeyringInfo]:
    return Call("POST", "/v1/sys/rotate", _reader(KeyringInfo), retry_safe=False)


def rekey(
    shares: tuple[str | Sensitive[str], ...], *, new_shares: int, new_threshold: int
) -> Call[InitResult]:
    body = {
        "shares": [_reveal(s) for s in shares],
        "new_shares": new_shares,
        "new_threshold": new_threshold,
    }
    return Call("POST", "/v1/sys/rekey", _reader(InitResult), body=body, retry_safe=False)


def rekey_verify(shares: tuple[str | Sensitive[str], ...]) -> Call[SealStatus]:
    body = {"shares": [_reveal(s) for s in shares]}
    return Call("POST", "/v1/sys/rekey/verify", _reader(SealStatus), body=body, retry_safe=False)


def rekey_cancel() -> Call[RekeyCancel]:
    return Call("DELETE", "/v1/sys/rekey", _reader(RekeyCancel))


def key_versions(category: str) -> Call[KeyVersions]:
    return Call("GET", f"/v1/sys/keys/{_seg(category)}", _reader(KeyVersions))


def rotate_key(category: str) -> Call[KeyRotation]:
    path = f"/v1/sys/keys/{_seg(category)}/rotate"
    return Call("POST", path, _reader(KeyRotation), retry_safe=False)


def rewrap_step(*, after: str, limit: int) -> Call[RewrapReport]:
    body = {"after": after, "limit": limit}
    return Call("POST", "/v1/sys/rewrap", _reader(RewrapReport), body=body)


# -- secrets ---------------------------------------------------------------------
def put(
    path: str,
    fields: Mapping[str, str],
    *,
    cas: int | None,
    stage: Stage,
    description: str | None,
    owner: str | None,
    tags: Mapping[str, str] | None,
) -> Call[VersionInfo]:
    plain = fields.to_dict() if isinstance(fields, SecretFields) else dict(fields)
    body: dict[str, object] = {"fields": plain, "stage": stage}
    if cas is not None:
        body["cas"] = cas
    if description is not None:
        body["description"] = description
    if owner is not None:
        body["owner"] = owner
    if tags is not None:
        body["tags"] = dict(tags)
    return Call(
        "PUT", f"/v1/secrets/{_seg(path)}", _member(VersionInfo, "version"), body=body,
        subject=path, retry_safe=False,
    )  # fmt: skip


def get(
    path: str, *, stage: Stage | None, version: int | None, version_id: str | None
) -> Call[SecretVersion]:
    params: list[tuple[str, str]] = []
    if stage is not None:
        params.append(("stage", stage))
    if version is not None:
        params.append(("version", str(version)))
    if version_id is not None:
        params.append(("version_id", version_id))
    return Call(
        "GET", f"/v1/secrets/{_seg(path)}", _reader(SecretVersion), params=tuple(params),
        subject=path,
    )  # fmt: skip


def describe(path: str) -> Call[SecretMetadata]:
    return Call("GET", f"/v1/metadata/{_seg(path)}", _reader(SecretMetadata), subject=path)


def update_metadata(
    path: str,
    *,
    description: str | None,
    owner: str | None,
    tags: Mapping[str, str] | None,
    rotation_days: int | None,
    clear_rotation_override: bool,
) -> Call[SecretMetadata]:
    body: dict[str, object] = {}
    if description is not None:
        body["description"] = description
    if owner is not None:
        body["owner"] = owner
    if tags is not None:
        body["tags"] = dict(tags)
    if rotation_days is not None:
        body["rotation_days"] = rotation_days
    if clear_rotation_override:
        body["clear_rotation_override"] = True
    return Call(
        "PATCH", f"/v1/metadata/{_seg(path)}", _reader(SecretMetadata), body=body, subject=path
    )


def list_page(
    prefix: str,
    *,
    environment: str | None,
    category: str | None,
    tags: Mapping[str, str] | None,
    include_deleted: bool,
    after: str | None,
    limit: int,
) -> Call[SecretPage]:
    params: list[tuple[str, str]] = []
    if prefix:
        params.append(("prefix", prefix))
    if environment is not None:
        params.append(("environment", environment))
    if category is not None:
        params.append(("category", category))
    for key, value in (tags or {}).items():
        params.append(("tag", f"{key}:{value}"))
    if include_deleted:
        params.append(("include_deleted", "true"))
    if after is not None:
        params.append(("after", after))
    params.append(("limit", str(limit)))
    return Call("GET", "/v1/metadata", _reader(SecretPage), params=tuple(params))


def move_stage(path: str, stage: Stage, version: int) -> Call[SecretMetadata]:
    body = {"stage": stage, "version": version}
    return Call(
        "POST", f"/v1/stages/{_seg(path)}", _reader(SecretMetadata), body=body, subject=path
    )


def remove_stage(path: str, stage: Stage) -> Call[SecretMetadata]:
    body = {"stage": stage, "remove": True}
    return Call(
        "POST", f"/v1/stages/{_seg(path)}", _reader(SecretMetadata), body=body, subject=path
    )


def delete(path: str, *, recovery_days: int | None, force: bool) -> Call[SecretMetadata]:
    params: list[tuple[str, str]] = []
    if recovery_days is not None:
        params.append(("recovery_days", str(recovery_days)))
    if force:
        params.append(("force", "true"))
    return Call(
        "DELETE", f"/v1/secrets/{_seg(path)}", _reader(SecretMetadata), params=tuple(params),
        subject=path, retry_safe=False,
    )  # fmt: skip


def restore(path: str) -> Call[SecretMetadata]:
    return Call(
        "POST", f"/v1/restore/{_seg(path)}", _reader(SecretMetadata), subject=path,
        retry_safe=False,
    )  # fmt: skip


def destroy(path: str, version: int) -> Call[SecretMetadata]:
    return Call(
        "POST", f"/v1/destroy/{_seg(path)}", _reader(SecretMetadata), body={"version": version},
        subject=path,
    )  # fmt: skip


def validate(path: str) -> Call[ValidationReport]:
    return Call("GET", f"/v1/validate/{_seg(path)}", _reader(ValidationReport), subject=path)


# -- catalog, generate, provision --------------------------------------------------
def catalog() -> Call[CatalogInfo]:
    return Call("GET", "/v1/catalog", _reader(CatalogInfo))


def category(name: str) -> Call[CategoryInfo]:
    return Call("GET", f"/v1/catalog/{_seg(name)}", _reader(CategoryInfo))


def _generated(data: object) -> Sensitive[str]:
    value = data.get("value") if isinstance(data, dict) else None
    if not isinstance(value, str):
        raise InvalidRequest("response.value: expected a string")
    return Sensitive(value)


def generate(kind: str, params: Mapping[str, ParamValue]) -> Call[Sensitive[str]]:
    body = {"kind": kind, "params": dict(params)}
    return Call("POST", "/v1/generate", _generated, body=body)


def provision(
    environment: str,
    *,
    provided: Mapping[str, Mapping[str, str]] | None,
    categories: tuple[str, ...] | None,
) -> Call[ProvisionReport]:
    body: dict[str, object] = {"environment": environment}
    if provided is not None:
        body["provided"] = to_wire(provided)
    if categories is not None:
        body["categories"] = list(categories)
    return Call("POST", "/v1/provision", _reader(ProvisionReport), body=body)


# -- tokens ----------------------------------------------------------------------
def token_create(
    *,
    paths: tuple[str, ...],
    capabilities: tuple[str, ...],
    ttl: float | None,
    display_name: str,
    emergency: bool = False,
) -> Call[CreatedToken]:
    body: dict[str, object] = {
        "paths": list(paths),
        "capabilities": list(capabilities),
        "display_name": display_name,
    }
    if emergency:
        body["emergency"] = True
    if ttl is not None:
        body["ttl"] = ttl
    return Call("POST", "/v1/auth/token/create", _reader(CreatedToken), body=body, retry_safe=False)


def token_lookup_self() -> Call[TokenInfo]:
    return Call("GET", "/v1/auth/token/self", _reader(TokenInfo))


def _token_ref(accessor: str | None, token: str | Sensitive[str] | None) -> dict[str, str]:
    if (accessor is None) == (token is None):
        raise InvalidRequest("give exactly one of accessor and token")
    if accessor is not None:
        return {"accessor": accessor}
    assert token is not None
    return {"token": _reveal(token)}


def token_lookup(*, accessor: str | None, token: str | Sensitive[str] | None) -> Call[TokenInfo]:
    body = _token_ref(accessor, token)
    return Call("POST", "/v1/auth/token/lookup", _reader(TokenInfo), body=body)


def token_revoke(*, accessor: str | None, token: str | Sensitive[str] | None) -> Call[Revoked]:
    body = _token_ref(accessor, token)
    return Call("POST", "/v1/auth/token/revoke", _reader(Revoked), body=body, retry_safe=False)


# -- audit and alerts --------------------------------------------------------------
def _iso(value: dt.datetime) -> str:
    """``value`` as ISO 8601 for a query (a naive datetime is taken as UTC)."""
    return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).isoformat()


def audit_hash(value: str | Sensitive[str], *, device: str | None) -> Call[AuditHash]:
    body: dict[str, object] = {"input": _reveal(value)}
    if device is not None:
        body["device"] = device
    return Call("POST", "/v1/sys/audit/hash", _reader(AuditHash), body=body)


def audit_devices() -> Call[AuditDevices]:
    return Call("GET", "/v1/sys/audit/devices", _reader(AuditDevices))


def audit_search(
    *,
    principal: str | None,
    path_prefix: str | None,
    category: str | None,
    environment: str | None,
    operation: str | None,
    outcome: str | None,
    kind: str | None,
    since: dt.datetime | None,
    until: dt.datetime | None,
    limit: int,
) -> Call[AuditRecords]:
    texts = {
        "principal": principal,
        "path_prefix": path_prefix,
        "category": category,
        "environment": environment,
        "operation": operation,
        "outcome": outcome,
        "kind": kind,
        "since": None if since is None else _iso(since),
        "until": None if until is None else _iso(until),
    }
    params = [(name, value) for name, value in texts.items() if value is not None]
    params.append(("limit", str(limit)))
    return Call("GET", "/v1/sys/audit/search", _reader(AuditRecords), params=tuple(params))


def audit_who_read(path: str, *, since: dt.datetime | None) -> Call[AuditReads]:
    params = [("path", path)]
    if since is not None:
        params.append(("since", _iso(since)))
    return Call(
        "GET", "/v1/sys/audit/who-read", _reader(AuditReads), params=tuple(params), subject=path
    )


def audit_verify(*, device: str | None) -> Call[AuditVerification]:
    params = (("device", device),) if device is not None else ()
    return Call("GET", "/v1/sys/audit/verify", _reader(AuditVerification), params=params)


def audit_public_key() -> Call[AuditPublicKey]:
    return Call("GET", "/v1/sys/audit/public-key", _reader(AuditPublicKey))


def alerts(*, limit: int) -> Call[AlertList]:
    return Call("GET", "/v1/sys/alerts", _reader(AlertList), params=(("limit", str(limit)),))
