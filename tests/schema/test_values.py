"""Every API value type is a frozen, slotted dataclass that survives the wire unchanged.

Round trips go through ``medsecrets.wire`` and real JSON text; the key order of
the JSON objects is the documented one (docs/api.md).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib
import json
from pathlib import Path

import pytest

import medsecrets.schema
from medsecrets.schema.audit import (
    AlertList,
    AuditDeviceHealth,
    AuditDevices,
    AuditHash,
    AuditPublicKey,
    AuditRead,
    AuditReads,
    AuditRecords,
    AuditVerification,
)
from medsecrets.schema.catalog import (
    CatalogInfo,
    CategoryInfo,
    FieldInfo,
    Generated,
    GeneratorInfo,
    KekInfo,
    RotationPolicyInfo,
    ValidatorInfo,
)
from medsecrets.schema.keys import KekVersion, KeyRotation, KeyVersions, RewrapReport
from medsecrets.schema.provision import ProvisionItem, ProvisionReport
from medsecrets.schema.seal import (
    InitResponse,
    InitResult,
    RekeyCancel,
    SealStatus,
    ShamirSealConfig,
)
from medsecrets.schema.secrets import (
    PutResponse,
    RotationInfo,
    SecretMetadata,
    SecretPage,
    SecretVersion,
    ValidationProblem,
    ValidationReport,
    VersionInfo,
)
from medsecrets.schema.system import Health, KeyringInfo
from medsecrets.schema.tokens import CreatedToken, Revoked, TokenInfo, covers
from medsecrets.sensitive import SecretFields, Sensitive
from medsecrets.wire import from_wire, to_wire

T0 = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
CANARY = "CANARY-value-7c4e1a"

VERSION = VersionInfo(
    number=2, id="v2", created_at=T0, stages=("current",), destroyed=False, kek_version=1
)
METADATA = SecretMetadata(
    path="medessence/production/database",
    id="s1",
    environment="production",
    category="database",
    description="db",
    owner="ops",
    tags={"team": "core"},
    rotation=RotationInfo(interval_days=90, strategy="regenerate", overridden=False),
    created_at=T0,
    updated_at=T0,
    last_rotated_at=None,
    next_rotation_due=T0 + dt.timedelta(days=90),
    last_accessed_at=None,
    current_version=2,
    versions=(VERSION,),
    deleted_at=None,
    purge_at=None,
)
TOKEN = TokenInfo(
    accessor="a" * 32,
    display_name="ci",
    paths=("medessence/production/",),
    capabilities=("read", "list"),
    created_at=T0,
    expires_at=T0 + dt.timedelta(hours=1),
    parent=None,
    root=False,
)
CATEGORY = CategoryInfo(
    name="database",
    description="PostgreSQL",
    fields=(
        FieldInfo(
            name="password",
            description="",
            source="generated",
            generator=GeneratorInfo(kind="password", params={"length": 32}),
            validators=(ValidatorInfo(kind="min_length", params={"length": 16}),),
            template=None,
        ),
    ),
    rotation=RotationPolicyInfo(interval_days=90, strategy="regenerate", keep_previous=False),
    kek=KekInfo(provider="local", key_id=None),
)

# every response value, with the JSON keys docs/api.md lists, in that order
SAMPLES: list[tuple[object, list[str]]] = [
    (Health(initialized=True, sealed=False, version="0.1.0", server_time=T0),
     ["initialized", "sealed", "version", "server_time"]),
    (SealStatus(True, False, "shamir", 5, 3, 0, 1),
     ["initialized", "sealed", "seal_type", "shares", "threshold", "progress", "term",
      "rekey_pending"]),
    (InitResponse(shares=(Sensitive("s1"),), threshold=1, seal_type="shamir",
                  root_token=Sensitive("ms.t")),
     ["shares", "threshold", "seal_type", "root_token"]),
    (InitResult(shares=(Sensitive("s1"), Sensitive("s2")), threshold=2, seal_type="shamir",
                verify=True),
     ["shares", "threshold", "seal_type", "verify"]),
    (RekeyCancel(cancelled=True), ["cancelled"]),
    (KeyringInfo(term=2, terms=2, installed_at=T0, encryptions=5, rotation_threshold=1000),
     ["term", "terms", "installed_at", "encryptions", "rotation_threshold"]),
    (KeyVersions(category="database", versions=(KekVersion("database", 1, T0, "k"),)),
     ["category", "versions"]),
    (KeyRotation(category="database", version=2), ["category", "version"]),
    (RewrapReport(secrets=3, rewrapped=2, already_current=1, total=3, next_after="p"),
     ["secrets", "rewrapped", "already_current", "total", "next_after"]),
    (PutResponse(version=VERSION), ["version"]),
    (SecretVersion(path=METADATA.path, number=2, id="v2", created_at=T0, stages=("current",),
                   fields=SecretFields({"password": CANARY})),
     ["path", "number", "id", "created_at", "stages", "fields"]),
    (METADATA,
     ["path", "id", "environment", "category", "description", "owner", "tags", "rotation",
      "created_at", "updated_at", "last_rotated_at", "next_rotation_due", "last_accessed_at",
      "current_version", "versions", "deleted_at", "purge_at"]),
    (SecretPage(items=(METADATA,), next_after=None), ["items", "next_after"]),
    (ValidationReport(path=METADATA.path, valid=False,
                      problems=(ValidationProblem(field="password", rule="min_length"),)),
     ["path", "valid", "problems"]),
    (CatalogInfo(prefix="medessence", development_environments=("dev",), categories=(CATEGORY,)),
     ["prefix", "development_environments", "categories"]),
    (CATEGORY, ["name", "description", "fields", "rotation", "kek"]),
    (Generated(kind="password", value=Sensitive(CANARY)), ["kind", "value"]),
    (ProvisionReport(environment="dev", development=True,
                     items=(ProvisionItem(METADATA.path, "database", "created", 1, ("host",)),)),
     ["environment", "development", "items"]),
    (TOKEN,
     ["accessor", "display_name", "paths", "capabilities", "created_at", "expires_at", "parent",
      "root", "emergency"]),
    (CreatedToken(token=Sensitive("ms.CANARY"), info=TOKEN), ["token", "info"]),
    (Revoked(revoked=True), ["revoked"]),
    (AuditHash(device="file", hash="hmac-sha256:00"), ["device", "hash"]),
    (AuditDevices(devices=(AuditDeviceHealth("file", True, True, 10, 0, 0, 0, 10, None),)),
     ["devices"]),
    (AuditRecords(device="file", records=({"kind": "response"},), truncated=False),
     ["device", "records", "truncated", "unreadable"]),
    (AuditReads(device="file", path=METADATA.path,
                reads=(AuditRead("2026-01-01T00:00:00.000000Z", "app", "hmac-sha256:00",
                                 "10.0.0.1", "sdk", METADATA.path, 2, "r1"),)),
     ["device", "path", "reads", "unreadable"]),
    (AuditPublicKey(key_id="ab", public_key_pem="-----BEGIN PUBLIC KEY-----"),
     ["key_id", "public_key_pem"]),
    (AlertList(alerts=({"detector": "rate"},)), ["alerts"]),
    (AuditVerification(device="file", ok=False, records=3, checkpoints_verified=1,
                       first_bad_index=3, first_bad_seq=4, problem="hash mismatch", last_seq=3),
     ["device", "ok", "records", "checkpoints_verified", "first_bad_index", "first_bad_seq",
      "problem", "last_seq"]),
]  # fmt: skip


def _public_types() -> list[type]:
    found: list[type] = []
    for path in sorted(Path(medsecrets.schema.__file__).parent.glob("*.py")):
        module = importlib.import_module(f"medsecrets.schema.{path.stem}")
        for name in getattr(module, "__all__", ()):
            value = getattr(module, name)
            if isinstance(value, type):
                found.append(value)
    return found


def test_every_type_is_a_frozen_slotted_dataclass_with_a_docstring() -> None:
    types = _public_types()
    assert len(types) >= 30
    for cls in types:
        assert dataclasses.is_dataclass(cls), cls
        assert cls.__dataclass_params__.frozen, cls  # type: ignore[attr-defined]
        assert "__slots__" in cls.__dict__, cls
        assert cls.__doc__ and not cls.__doc__.startswith(f"{cls.__name__}("), cls


def test_every_response_type_has_a_sample() -> None:
    sampled = {type(value) for value, _ in SAMPLES}
    configs = {"ShamirSealConfig", "KeyFileSealConfig", "AwsKmsSealConfig"}
    nested = {
        *("VersionInfo", "RotationInfo", "ValidationProblem", "KekVersion", "ProvisionItem"),
        *("FieldInfo", "GeneratorInfo", "ValidatorInfo", "RotationPolicyInfo", "KekInfo"),
        *("AuditDeviceHealth", "AuditRead"),
    }
    missing = {cls.__name__ for cls in _public_types()} - {c.__name__ for c in sampled}
    assert missing == configs | nested


@pytest.mark.parametrize(("value", "keys"), SAMPLES, ids=lambda v: type(v).__name__)
def test_wire_round_trip_keeps_value_and_documented_keys(value: object, keys: list[str]) -> None:
    text = json.dumps(to_wire(value))
    data = json.loads(text)
    assert list(data) == keys
    again = from_wire(type(value), data)
    assert to_wire(again) == data
    if not isinstance(value, SecretVersion):  # SecretFields compare by identity
        assert again == value


def test_values_are_masked_in_reprs_but_revealed_on_the_wire() -> None:
    for value, _ in SAMPLES:
        assert CANARY not in repr(value) and "ms.t" not in repr(value)
    secret = next(v for v, _ in SAMPLES if isinstance(v, SecretVersion))
    assert CANARY in json.dumps(to_wire(secret))


def test_seal_config_wire_form() -> None:
    assert to_wire(ShamirSealConfig()) == {"shares": 5, "threshold": 3}


def test_helpers() -> None:
    assert TOKEN.allows("read", "medessence/production/database")
    assert not TOKEN.allows("write", "medessence/production/database")
    assert not TOKEN.allows("read", "medessence/staging/database")
    assert TOKEN.allows("list", None)
    assert not TOKEN.expired(T0) and TOKEN.expired(T0 + dt.timedelta(hours=1))
    assert covers("*", "anything") and not covers("a/", "b/c")
    assert not METADATA.scheduled_for_deletion
    assert dataclasses.replace(METADATA, purge_at=T0).scheduled_for_deletion
    report = next(v for v, _ in SAMPLES if isinstance(v, ProvisionReport))
    assert report.created == 1
