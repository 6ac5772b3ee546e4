"""Parsers: our audit log, CloudTrail and Vault audit logs become the same ``AccessEvent``s."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import random
from pathlib import Path

import pytest

from medsecrets.audit.record import GENESIS, AuditEvent, Salter, render_line
from medsecrets.monitor.analyze import analyze, in_time_order
from medsecrets.monitor.events import AccessEvent, parse_time
from medsecrets.monitor.sources import (
    LogFormatError,
    detect_format,
    event_from_record,
    events_from_cloudtrail,
    read_cloudtrail,
    read_events,
    read_ours,
    read_vault,
)

T0 = dt.datetime(2025, 3, 4, 10, 15, 30, 250000, tzinfo=dt.UTC)
SALTER = Salter(b"k" * 32)
TOKEN = "s.CANARY-token-7Q9x"


# --- ours --------------------------------------------------------------------------------------


def audit_log(path: Path, events: list[AuditEvent], *, compress: bool = False) -> Path:
    prev, lines = GENESIS, []
    for seq, event in enumerate(events, 1):
        line, prev = render_line(event, seq=seq, prev=prev, node="n1", device="file", salter=SALTER)
        lines.append(line)
    data = b"".join(lines)
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def pair(
    request_id: str, operation: str, path: str, status: int, **extra: object
) -> list[AuditEvent]:
    parts = path.split("/")
    common: dict[str, object] = {
        "time": T0,
        "request_id": request_id,
        "principal": "svc-billing",
        "token": TOKEN,
        "auth": "token",
        "remote": "10.30.4.17",
        "user_agent": "medsecrets-sdk/0.1",
        "operation": operation,
        "path": path,
        "environment": parts[1] if len(parts) > 1 else None,
        "category": parts[2] if len(parts) > 2 else None,
        "data": {"value": "CANARY-secret-value"},
        **extra,
    }
    return [
        AuditEvent(kind="request", **common),  # type: ignore[arg-type]
        AuditEvent(kind="response", status=status, **common),  # type: ignore[arg-type]
    ]


@pytest.mark.parametrize("compress", [False, True])
def test_our_log_yields_one_event_per_response(tmp_path: Path, compress: bool) -> None:
    events = pair("r1", "secrets.read", "medessence/production/database/primary", 200)
    events += pair("r2", "metadata.list", "medessence/production/database", 403)
    events += pair("r3", "sys.health", "", 200, emergency=True)
    events.append(AuditEvent(kind="checkpoint", time=T0, extra={"covers": 6, "signature": "x"}))
    path = audit_log(
        tmp_path / ("audit.log.gz" if compress else "audit.log"), events, compress=compress
    )
    assert detect_format(path) == "ours"
    parsed = list(read_ours(path))
    assert [e.request_id for e in parsed] == ["r1", "r2", "r3"]
    read, listing, health = parsed
    assert read == AccessEvent(
        T0.timestamp(),
        "svc-billing",
        "10.30.4.17",
        "read",
        "secrets.read",
        "medessence/production/database/primary",
        "production",
        "database",
        "success",
        False,
        "r1",
    )
    assert read.time == T0
    assert (listing.operation, listing.outcome, listing.category) == ("list", "denied", "database")
    assert (health.operation, health.path, health.environment, health.emergency) == (
        "other",
        "",
        None,
        True,
    )
    assert "CANARY" not in repr(parsed)


def test_event_from_record_takes_live_records() -> None:
    record = {"time": T0, "operation": "tokens.create", "status": 401, "principal": None}
    event = event_from_record(record)
    assert event is not None
    assert (event.operation, event.outcome, event.principal, event.ts) == (
        "auth",
        "denied",
        "",
        T0.timestamp(),
    )
    assert event_from_record({"kind": "request", "time": T0}) is None
    with pytest.raises(LogFormatError, match="time"):
        event_from_record({"kind": "response", "time": "yesterday"})


def test_a_broken_line_is_named_by_file_and_line(tmp_path: Path) -> None:
    good = audit_log(tmp_path / "a.log", pair("r1", "secrets.read", "medessence/p/db", 200))
    path = tmp_path / "broken.log"
    path.write_bytes(good.read_bytes() + b'{"kind":"response","time": nope}\n')
    with pytest.raises(LogFormatError) as info:
        list(read_ours(path))
    assert (info.value.file, info.value.line) == (str(path), 3)


def test_parse_time_fast_path_agrees_with_fromisoformat() -> None:
    for text in (
        "2025-03-04T10:15:30.250000Z",
        "2025-03-04T10:15:30Z",
        "2025-03-04T10:15:30.250000123Z",
        "2025-03-04T11:15:30.25+01:00",
        "2025-03-04T10:15:30.25",
        "2024-02-29T23:59:59.999999Z",
    ):
        slow = dt.datetime.fromisoformat(text[:26].rstrip("Z") if "+" not in text else text)
        if slow.tzinfo is None:
            slow = slow.replace(tzinfo=dt.UTC)
        assert parse_time(text) == pytest.approx(slow.timestamp(), abs=1e-6), text
    assert parse_time("2025-03-04T10:15:30.250000Z") == T0.timestamp()
    with pytest.raises(ValueError):
        parse_time("not a time at all, really")


# --- CloudTrail --------------------------------------------------------------------------------

ACCOUNT = "111122223333"
ROLE_ARN = f"arn:aws:sts::{ACCOUNT}:assumed-role/billing-task/billing"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/billing-task"
"""The principal of the role's sessions (its ``sessionIssuer``)."""
SECRET_ARN = (
    f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:medessence/production/database-AbC9eF"
)


def trail_record(**changes: object) -> dict[str, object]:
    """A GetSecretValue record in the shape CloudTrail documents."""
    record: dict[str, object] = {
        "eventVersion": "1.09",
        "userIdentity": {
            "type": "AssumedRole",
            "principalId": "AROAEXAMPLEID:billing",
            "arn": ROLE_ARN,
            "accountId": ACCOUNT,
            "accessKeyId": "ASIAEXAMPLEKEYID",
            "sessionContext": {
                "sessionIssuer": {
                    "type": "Role",
                    "principalId": "AROAEXAMPLEID",
                    "arn": f"arn:aws:iam::{ACCOUNT}:role/billing-task",
                    "accountId": ACCOUNT,
                    "userName": "billing-task",
                },
                "attributes": {"creationDate": "2025-03-04T09:00:00Z", "mfaAuthenticated": "false"},
            },
        },
        "eventTime": "2025-03-04T10:15:30Z",
        "eventSource": "secretsmanager.amazonaws.com",
        "eventName": "GetSecretValue",
        "awsRegion": "us-east-1",
        "sourceIPAddress": "10.30.4.17",
        "userAgent": "aws-sdk-go-v2/1.25.0",
        "requestParameters": {"secretId": SECRET_ARN},
        "responseElements": None,
        "requestID": "0b1c2d3e-0000-4000-8000-000000000001",
        "eventID": "e-1",
        "readOnly": True,
        "eventType": "AwsApiCall",
        "managementEvent": True,
        "recipientAccountId": ACCOUNT,
        "eventCategory": "Management",
    }
    record.update(changes)
    return record


def test_cloudtrail_get_secret_value() -> None:
    (event,) = events_from_cloudtrail(trail_record())
    assert event == AccessEvent(
        dt.datetime(2025, 3, 4, 10, 15, 30, tzinfo=dt.UTC).timestamp(),
        ROLE,
        "10.30.4.17",
        "read",
        "GetSecretValue",
        "medessence/production/database",
        "production",
        "database",
        "success",
        False,
        "e-1",
    )


def test_cloudtrail_names_errors_lists_batches_and_break_glass() -> None:
    denied = trail_record(errorCode="AccessDenied", errorMessage="User: x is not authorized")
    assert events_from_cloudtrail(denied)[0].outcome == "denied"
    missing = trail_record(errorCode="ResourceNotFoundException")
    assert events_from_cloudtrail(missing)[0].outcome == "error"
    by_name = trail_record(requestParameters={"secretId": "medessence/staging/auth/jwt-abcdef"})
    assert events_from_cloudtrail(by_name)[0].path == "medessence/staging/auth/jwt-abcdef"
    listing = trail_record(
        eventName="ListSecrets",
        requestParameters={"filters": [{"key": "name", "values": ["medessence/production/"]}]},
    )
    (event,) = events_from_cloudtrail(listing)
    assert (event.operation, event.path, event.environment, event.category) == (
        "list",
        "medessence/production",
        "production",
        None,
    )
    batch = trail_record(
        eventName="BatchGetSecretValue",
        requestParameters={
            "secretIdList": ["medessence/production/auth", "medessence/production/database"]
        },
    )
    # AWS logs a GetSecretValue entry per secret of a batch: the batch itself is no read
    (batched,) = events_from_cloudtrail(batch)
    assert (batched.operation, batched.path) == ("other", "")
    glass = trail_record(
        userIdentity={
            "type": "AssumedRole",
            "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/BreakGlassAdmin/ops",
        }
    )
    assert events_from_cloudtrail(glass)[0].emergency is True
    assert events_from_cloudtrail(trail_record(eventSource="kms.amazonaws.com")) == []
    anonymous = trail_record(userIdentity={"type": "AWSAccount", "accountId": "444455556666"})
    assert events_from_cloudtrail(anonymous)[0].principal == ""


def test_cloudtrail_root_user_and_break_glass_iam_users_are_emergency_credentials() -> None:
    """The root user's use of a secret is a break-glass use; so is an IAM user named like an
    emergency role. Other IAM users are not."""
    root = trail_record(
        userIdentity={
            "type": "Root",
            "principalId": ACCOUNT,
            "arn": f"arn:aws:iam::{ACCOUNT}:root",
            "accountId": ACCOUNT,
            "accessKeyId": "ASIAEXAMPLEKEYID",
        }
    )
    (event,) = events_from_cloudtrail(root)
    assert (event.principal, event.emergency) == (f"arn:aws:iam::{ACCOUNT}:root", True)

    def user(name: str) -> dict[str, object]:
        return {
            "type": "IAMUser",
            "principalId": "AIDAEXAMPLEID",
            "arn": f"arn:aws:iam::{ACCOUNT}:user/ops/{name}",
            "accountId": ACCOUNT,
            "userName": name,
        }

    (glass,) = events_from_cloudtrail(trail_record(userIdentity=user("BreakGlass-alice")))
    assert (glass.principal, glass.emergency) == (
        f"arn:aws:iam::{ACCOUNT}:user/ops/BreakGlass-alice",
        True,
    )
    no_name = user("emergency-bob")
    del no_name["userName"]  # the name is then taken from the ARN
    assert events_from_cloudtrail(trail_record(userIdentity=no_name))[0].emergency is True
    (plain,) = events_from_cloudtrail(trail_record(userIdentity=user("deploy")))
    assert plain.emergency is False
    # through the detectors: the root user's read raises the critical emergency alert
    from medsecrets.monitor.detectors import DetectorSet

    alerts = DetectorSet.default().observe(event)
    assert [(a.detector, a.severity) for a in alerts] == [("emergency", "critical")]


def test_a_cross_account_call_logged_in_both_accounts_counts_once(tmp_path: Path) -> None:
    """CloudTrail delivers a cross-account call to the caller's account and to the secret
    owner's, with one ``sharedEventID`` and two ``eventID``s: an organisation trail holds
    both. 30 reads were 60 events (a false rate alert at 51); now 30, and the same events
    from another trail (the same ``eventID``s) add nothing either."""
    caller = "222233334444"

    def copy(i: int, recipient: str) -> dict[str, object]:
        return trail_record(
            eventTime=f"2025-03-04T10:{i // 60:02d}:{i % 60:02d}Z",
            eventID=f"{recipient}-{i}",
            sharedEventID=f"shared-{i}",
            recipientAccountId=recipient,
            userIdentity={
                "type": "AssumedRole",
                "arn": f"arn:aws:sts::{caller}:assumed-role/app/s",
                "accountId": caller,
                "sessionContext": {
                    "sessionIssuer": {"type": "Role", "arn": f"arn:aws:iam::{caller}:role/app"}
                },
            },
        )

    files = []
    for account in (ACCOUNT, caller):
        name = f"{account}_CloudTrail_us-east-1_20250304T1015Z_{account}.json"
        path = tmp_path / name
        path.write_text(json.dumps({"Records": [copy(i * 4, account) for i in range(30)]}))
        files.append(path)
    own = tmp_path / "own-trail"  # the owner's own trail beside the organisation's
    own.mkdir()
    again = own / files[0].name
    again.write_bytes(files[0].read_bytes())
    report = analyze([*files, again])
    assert report.events == 30
    assert report.duplicate_events == 60  # the other account's 30, the own trail's 30
    assert report.alerts == ()
    # a reader given no Skipped remembers nothing: every record of the file is read
    assert len(list(read_cloudtrail(files[0]))) == 30


def test_cloudtrail_files_documents_lines_gzip_and_eventbridge(tmp_path: Path) -> None:
    document = tmp_path / f"{ACCOUNT}_CloudTrail_us-east-1_20250304T1015Z_x.json.gz"
    records = [trail_record(eventID=f"e-{i}") for i in range(3)]
    records.append(trail_record(eventSource="kms.amazonaws.com", eventName="Decrypt"))
    document.write_bytes(gzip.compress(json.dumps({"Records": records}, indent=2).encode()))
    assert detect_format(document) == "cloudtrail"
    assert [e.request_id for e in read_cloudtrail(document)] == ["e-0", "e-1", "e-2"]
    lines = tmp_path / "events.jsonl"
    envelope = {"detail-type": "AWS API Call via CloudTrail", "detail": trail_record(eventID="e-9")}
    lines.write_text(json.dumps(trail_record(eventID="e-8")) + "\n" + json.dumps(envelope) + "\n")
    assert detect_format(lines) == "cloudtrail"
    assert [e.request_id for e in read_events(lines)] == ["e-8", "e-9"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"Records": []}) + "\n\n{oops\n")
    with pytest.raises(LogFormatError) as info:
        list(read_cloudtrail(bad))
    assert info.value.line == 3


# --- Vault -------------------------------------------------------------------------------------


def vault_entry(kind: str, operation: str, path: str, **changes: object) -> dict[str, object]:
    """A Vault file audit device entry in the documented shape."""
    entry: dict[str, object] = {
        "time": "2025-03-04T10:15:30.250000123Z",
        "type": kind,
        "auth": {
            "client_token": "hmac-sha256:aa",
            "accessor": "hmac-sha256:bb",
            "display_name": "approle",
            "policies": ["default", "billing"],
            "token_policies": ["default", "billing"],
            "metadata": {"role_name": "billing"},
            "entity_id": "5b1d",
            "token_type": "service",
        },
        "request": {
            "id": "v-1",
            "operation": operation,
            "mount_point": "secret/",
            "mount_type": "kv",
            "client_token": "hmac-sha256:aa",
            "client_token_accessor": "hmac-sha256:bb",
            "namespace": {"id": "root"},
            "path": path,
            "remote_address": "10.30.4.17",
            "remote_port": 51234,
        },
    }
    if kind == "response":
        entry["response"] = {"mount_type": "kv", "data": {"data": {"password": "hmac-sha256:cc"}}}
    entry.update(changes)
    return entry


def vault_log(path: Path, entries: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(e, separators=(",", ":")) + "\n" for e in entries))
    return path


def test_vault_kv2_read_list_and_denial(tmp_path: Path) -> None:
    entries = [
        vault_entry("request", "read", "secret/data/medessence/production/database"),
        vault_entry("response", "read", "secret/data/medessence/production/database"),
        vault_entry("response", "list", "secret/metadata/medessence/production/"),
        vault_entry(
            "response",
            "read",
            "secret/data/medessence/production/auth/jwt",
            error="1 error occurred:\n\t* permission denied\n\n",
        ),
        vault_entry("response", "update", "auth/approle/login", auth={}),
    ]
    path = vault_log(tmp_path / "vault_audit.log", entries)
    assert detect_format(path) == "vault"
    read, listing, denied, login = read_vault(path)
    assert read == AccessEvent(
        parse_time("2025-03-04T10:15:30.250000123Z"),
        "entity#5b1d",
        "10.30.4.17",
        "read",
        "read",
        "medessence/production/database",
        "production",
        "database",
        "success",
        False,
        "v-1",
    )
    assert (listing.operation, listing.path, listing.category) == (
        "list",
        "medessence/production",
        None,
    )
    assert (denied.outcome, denied.category) == ("denied", "auth")
    assert (login.operation, login.principal, login.path) == ("auth", "", "")


def test_vault_kv1_people_and_emergency_tokens() -> None:
    from medsecrets.monitor.sources import event_from_vault

    kv1 = vault_entry(
        "response",
        "read",
        "kv/medessence/staging/auth",
        request={
            "id": "v-2",
            "operation": "read",
            "path": "kv/medessence/staging/auth",
            "remote_address": "10.1.0.7",
        },
    )
    event = event_from_vault(kv1)
    assert event is not None
    assert (event.operation, event.path, event.source) == (
        "read",
        "medessence/staging/auth",
        "10.1.0.7",
    )
    person = vault_entry(
        "response",
        "read",
        "secret/data/medessence/production/auth",
        auth={
            "display_name": "oidc-alice",
            "metadata": {"username": "alice"},
            "policies": ["default"],
        },
    )
    assert event_from_vault(person).principal == "oidc-alice"  # type: ignore[union-attr]
    glass = vault_entry(
        "response",
        "delete",
        "secret/data/medessence/production/auth",
        auth={"display_name": "token-ops", "policies": ["default", "break-glass"]},
    )
    found = event_from_vault(glass)
    assert found is not None
    assert (found.emergency, found.operation) == (True, "delete")
    assert event_from_vault(vault_entry("request", "read", "secret/data/x")) is None


def test_a_metadata_read_is_describe_in_every_format() -> None:
    """Our ``metadata.read``, CloudTrail's ``DescribeSecret`` and a Vault KV v2 metadata read
    are one operation, ``describe`` (the enumeration detector counts them)."""
    from medsecrets.monitor.sources import event_from_vault

    ours = event_from_record(
        {"time": T0, "operation": "metadata.read", "status": 200, "principal": "ci"}
    )
    (trail,) = events_from_cloudtrail(trail_record(eventName="DescribeSecret"))
    vault = event_from_vault(
        vault_entry("response", "read", "secret/metadata/medessence/production/database")
    )
    assert ours is not None and vault is not None
    assert [e.operation for e in (ours, trail, vault)] == ["describe"] * 3
    assert (trail.path, vault.path) == ("medessence/production/database",) * 2


# --- dispatch and ordering ---------------------------------------------------------------------


def test_unknown_formats_and_missing_files_are_refused(tmp_path: Path) -> None:
    other = tmp_path / "access.log"
    other.write_text('127.0.0.1 - - [04/Mar/2025:10:15:30 +0000] "GET / HTTP/1.1" 200\n')
    with pytest.raises(LogFormatError, match="cannot tell the log format"):
        detect_format(other)
    with pytest.raises(LogFormatError, match="cannot read"):
        detect_format(tmp_path / "absent.log")


def test_in_time_order_repairs_bounded_disorder() -> None:
    base = T0.timestamp()
    events = [
        AccessEvent(base + i * 10, "p", "", "read", "read", "", None, None, "success")
        for i in range(200)
    ]
    shuffled = list(events)
    rng = random.Random(4)
    for start in range(0, 200, 20):  # shuffle within 200-second blocks
        block = shuffled[start : start + 20]
        rng.shuffle(block)
        shuffled[start : start + 20] = block
    assert shuffled != events
    assert list(in_time_order(shuffled, 300.0)) == events


def test_analyze_reads_all_three_formats(tmp_path: Path) -> None:
    ours = audit_log(
        tmp_path / "audit.log",
        pair("r1", "secrets.read", "medessence/production/database/primary", 200, emergency=True),
    )
    trail = tmp_path / "trail.json"
    trail.write_text(json.dumps({"Records": [trail_record(eventID="e-1")]}))
    vault = vault_log(
        tmp_path / "vault.log", [vault_entry("response", "read", "secret/data/medessence/p/db")]
    )
    report = analyze([ours, trail, vault])
    assert report.events == 3
    assert report.formats == {str(ours): "ours", str(trail): "cloudtrail", str(vault): "vault"}
    assert [a.detector for a in report.alerts] == ["emergency"]
    assert report.counts["emergency"] == 1
    assert report.events_per_second > 0
