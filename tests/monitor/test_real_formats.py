"""``audit analyze`` on CloudTrail and Vault logs in the shapes AWS and HashiCorp write them.

Every file is built here, in ``tmp_path``, in the documented shapes (field names and order
only): Vault's file audit device as it writes entries now (``audit/types.go``: ``time``,
``auth``, ``error``, ``request``, ``response``, ``type`` last; ``entity_id``, ``accessor``,
HMAC'd values), its syslog and ``prefix`` framing; CloudTrail's ``{"Records": [...]}`` files
under ``AWSLogs/<account>/CloudTrail/<region>/Y/M/D/`` with the canonical file name, its
``userIdentity`` variants and digest files.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

import pytest

from medsecrets.cli.app import main
from medsecrets.monitor import sources
from medsecrets.monitor.analyze import AnalysisReport, analyze
from medsecrets.monitor.sources import read_events

ACCOUNT = "111122223333"


def hashed(text: str) -> str:
    return "hmac-sha256:" + hashlib.sha256(text.encode()).hexdigest()


def cli_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[dict[str, object], str]:
    """``medsecrets audit analyze ARGS -o json``: its JSON and its stderr (exit 0)."""
    capsys.readouterr()
    assert main(["audit", "analyze", *args, "-o", "json"]) == 0
    out, err = capsys.readouterr()
    return json.loads(out), err


def alerts(report: AnalysisReport) -> dict[str, int]:
    return {name: count for name, count in report.counts.items() if count}


# --- Vault ---------------------------------------------------------------------------------------


def vault_auth(
    display: str, accessor: str, *, entity: str = "", policies: Iterable[str] = ("default",)
) -> dict[str, object]:
    auth: dict[str, object] = {
        "accessor": hashed("accessor/" + accessor),
        "client_token": hashed("token/" + accessor),
        "display_name": display,
        "policies": list(policies),
        "token_policies": list(policies),
        "policy_results": {"allowed": True},
        "token_type": "service",
        "token_ttl": 3600,
    }
    if entity:
        auth["entity_id"] = entity
    return auth


def vault_pair(
    time: str, auth: dict[str, object], request_id: str, path: str, *, source: str = "10.0.0.11"
) -> list[str]:
    """A request entry and its response entry, members in the order Vault writes them."""
    request = {
        "id": request_id,
        "client_id": "c1",
        "operation": "read",
        "mount_point": "secret/",
        "mount_type": "kv",
        "client_token": auth["client_token"],
        "client_token_accessor": auth["accessor"],
        "namespace": {"id": "root"},
        "path": f"secret/data/{path}",
        "remote_address": source,
        "remote_port": 51234,
    }
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    return [
        dumps({"time": time, "auth": auth, "request": request, "type": "request"}),
        dumps(
            {
                "time": time,
                "auth": auth,
                "request": request,
                "response": {"mount_type": "kv", "data": {"data": {"v": hashed(path)}}},
                "type": "response",
            }
        ),
    ]


def vault_file(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def two_ci_tokens(count: int = 30) -> list[str]:
    """Two CI systems, each with its own unnamed token (display name ``token``), each reading
    ``count`` secrets in about 4 minutes: neither is over the rate limit."""
    one = vault_auth("token", "ci-one", policies=("default", "ci-deploy"))
    two = vault_auth("token", "ci-two", policies=("default", "ci-backup"))
    lines: list[str] = []
    for i in range(count):
        at = f"2025-03-03T09:{i // 10:02d}:{i % 10 * 6:02d}.5Z"
        lines += vault_pair(at, one, f"a{i}", f"medessence/production/database/app{i % 3}")
        at = f"2025-03-03T09:{i // 10:02d}:{i % 10 * 6 + 1:02d}.5Z"
        lines += vault_pair(at, two, f"b{i}", f"medessence/production/storage/bk{i % 3}")
    return lines


def test_unnamed_vault_tokens_are_told_apart_by_their_accessor(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = vault_file(tmp_path / "audit.log", two_ci_tokens())
    events = list(read_events(path, "vault"))
    principals = {event.principal for event in events}
    assert len(events) == 60 and len(principals) == 2
    assert all(p.startswith("token#") and len(p) == len("token#") + 12 for p in principals)
    data, _ = cli_json(capsys, "--format", "vault", str(path))
    assert data["counts"]["rate"] == 0  # type: ignore[index]


def test_vault_principals_are_keyed_by_entity_and_root_by_accessor(tmp_path: Path) -> None:
    alice = vault_auth("oidc-alice", "a1", entity="7d3f0c1e-aaaa-bbbb-cccc-000000000001")
    alice_again = vault_auth("oidc-alice", "a2", entity="7d3f0c1e-aaaa-bbbb-cccc-000000000001")
    other = vault_auth("oidc-alice", "a3", entity="9e21aa07-aaaa-bbbb-cccc-000000000002")
    root_one, root_two = vault_auth("root", "r1"), vault_auth("root", "r2")
    lines = []
    for n, auth in enumerate((alice, alice_again, other, root_one, root_two)):
        lines += vault_pair(f"2025-03-03T09:00:0{n}Z", auth, f"r{n}", "medessence/production/x")
    found = [e.principal for e in read_events(vault_file(tmp_path / "a.log", lines), "vault")]
    assert found[:3] == [
        "entity#7d3f0c1e-aaaa-bbbb-cccc-000000000001",
        "entity#7d3f0c1e-aaaa-bbbb-cccc-000000000001",
        "entity#9e21aa07-aaaa-bbbb-cccc-000000000002",
    ]
    assert found[3] != found[4] and all(p.startswith("root#") for p in found[3:])


def test_one_vault_identity_through_two_auth_methods_is_one_principal(tmp_path: Path) -> None:
    """Vault ties the logins of one person through OIDC and userpass to one entity, while the
    display names differ: 30 reads through each method are 60 reads of one principal (a rate
    alert at 51), not two principals of 30 whose counts never add up."""
    entity = "7d3f0c1e-aaaa-bbbb-cccc-000000000001"
    oidc = vault_auth("oidc-alice", "a1", entity=entity)
    userpass = vault_auth("userpass-alice", "a2", entity=entity)
    lines = []
    for n in range(60):
        auth = oidc if n % 2 else userpass
        at = f"2025-03-03T09:{n // 30:02d}:{n * 2 % 60:02d}Z"
        lines += vault_pair(at, auth, f"r{n}", "medessence/production/x")
    report = analyze(vault_file(tmp_path / "a.log", lines), "vault")
    assert report.counts["rate"] == 1
    assert report.alerts[0].principal == f"entity#{entity}"


def test_request_entries_are_skipped_unparsed_whatever_the_field_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    modern = two_ci_tokens(5)
    old = []
    for line in modern:  # the order older Vault wrote: time, type first
        entry = json.loads(line)
        entry = {"time": entry.pop("time"), "type": entry.pop("type"), **entry}
        old.append(json.dumps(entry, separators=(",", ":")))
    parsed: list[bytes] = []
    real = sources._object

    def counting(line: bytes) -> object:
        parsed.append(line)
        return real(line)

    monkeypatch.setattr(sources, "_object", counting)
    for name, lines in (("modern", modern), ("old", old)):
        parsed.clear()
        events = list(read_events(vault_file(tmp_path / f"{name}.log", lines), "vault"))
        assert len(events) == 10
        assert len(parsed) == 10, name  # the responses only
        assert all(b'"type":"response"' in line for line in parsed)


@pytest.mark.parametrize(
    "shape",
    [
        "a duplicate type after a leading request type",
        "a nested type request first",
        "a nested type request last",
    ],
)
def test_a_response_is_never_skipped_as_a_request(tmp_path: Path, shape: str) -> None:
    modern = two_ci_tokens(1)[1]
    response = json.loads(modern)
    if shape == "a duplicate type after a leading request type":  # the last member wins
        line = modern.replace('Z","auth":', 'Z","type":"request","auth":', 1)
        assert line.startswith('{"time":"2025-03-03T09:00:00.5Z","type":"request",')
        assert line.endswith(',"type":"response"}')
    elif shape == "a nested type request first":
        entry = {"x": {"type": "request"}, **response}
        line = json.dumps(entry, separators=(",", ":"))
    else:
        entry = {**response, "zz": {"type": "request"}}
        del entry["type"]
        entry = {"type": "response", **entry}
        line = json.dumps(entry, separators=(",", ":"))
        assert line.endswith('{"type":"request"}}')
    events = list(read_events(vault_file(tmp_path / "r.log", [line]), "vault"))
    assert [event.request_id for event in events] == ["a0"]


@pytest.mark.parametrize(
    "frame",
    ["Mar  3 09:00:00 vault-0 vault[812]: ", "@cee: ", "<134>1 2025-03-03T09:00:00Z vault-0 - "],
)
def test_syslog_and_prefix_framing_is_stripped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], frame: str
) -> None:
    lines = two_ci_tokens(3)
    plain = list(read_events(vault_file(tmp_path / "plain.log", lines), "vault"))
    framed = vault_file(tmp_path / "framed.log", [frame + line for line in lines])
    assert list(read_events(framed, "vault")) == plain and len(plain) == 6
    data, _ = cli_json(capsys, str(framed))  # sniffed as vault too
    assert (data["events"], data["formats"]) == (6, {str(framed): "vault"})


@pytest.mark.parametrize(
    "line",
    [
        '[{"time":"2025-03-03T09:00:00Z","type":"response"}]',
        'say "hi" {"time":"2025-03-03T09:00:00Z","type":"response"}',
        "x" * 300 + ' {"time":"2025-03-03T09:00:00Z","type":"response"}',
    ],
    ids=["a JSON array", "a frame with quotes", "a frame too long"],
)
def test_what_is_no_frame_is_still_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str
) -> None:
    path = vault_file(tmp_path / "bad.log", [*two_ci_tokens(1), line])
    capsys.readouterr()
    assert main(["audit", "analyze", "--format", "vault", str(path)]) == 2
    err = [text for text in capsys.readouterr().err.splitlines() if text.strip()]
    assert err == [f"error: {path}:5: not a JSON audit entry"]


# --- CloudTrail ----------------------------------------------------------------------------------


def assumed_role(role: str, session: str, **context: object) -> dict[str, object]:
    """An AssumedRole ``userIdentity`` (a role ``path/Name`` is written as given)."""
    name = role.rpartition("/")[2]
    return {
        "type": "AssumedRole",
        "principalId": f"AROAEXAMPLEROLEID1234:{session}",
        "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/{name}/{session}",
        "accountId": ACCOUNT,
        "accessKeyId": "ASIAEXAMPLE" + hashlib.sha256(session.encode()).hexdigest()[:8].upper(),
        "sessionContext": {
            "sessionIssuer": {
                "type": "Role",
                "principalId": "AROAEXAMPLEROLEID1234",
                "arn": f"arn:aws:iam::{ACCOUNT}:role/{role}",
                "accountId": ACCOUNT,
                "userName": name,
            },
            "attributes": {"creationDate": "2025-03-03T08:00:00Z", "mfaAuthenticated": "false"},
            **context,
        },
    }


def trail_event(
    time: str,
    identity: dict[str, object],
    secret_id: str,
    *,
    source: str = "198.51.100.7",
    region: str = "eu-central-1",
    event_id: str = "",
) -> dict[str, object]:
    return {
        "eventVersion": "1.09",
        "userIdentity": identity,
        "eventTime": time,
        "eventSource": "secretsmanager.amazonaws.com",
        "eventName": "GetSecretValue",
        "awsRegion": region,
        "sourceIPAddress": source,
        "userAgent": "aws-sdk-java/2.25.0",
        "requestParameters": {"secretId": secret_id, "versionStage": "AWSCURRENT"},
        "responseElements": None,
        "requestID": event_id or hashlib.sha256(time.encode()).hexdigest()[:32],
        "eventID": event_id or hashlib.sha256((time + secret_id).encode()).hexdigest()[:32],
        "readOnly": True,
        "eventType": "AwsApiCall",
        "managementEvent": True,
        "recipientAccountId": ACCOUNT,
        "eventCategory": "Management",
    }


def secret_arn(name: str, suffix: str = "AbCdEf", region: str = "eu-central-1") -> str:
    return f"arn:aws:secretsmanager:{region}:{ACCOUNT}:secret:{name}" + (
        f"-{suffix}" if suffix else ""
    )


def trail_file(path: Path, records: list[dict[str, object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(json.dumps({"Records": records}).encode()))
    return path


def test_an_assumed_role_is_its_role_whatever_the_session(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """60 reads in 2 minutes by one task role, the SDK making a new session for each: one
    principal (the role), so rate and bulk alert."""
    records = [
        trail_event(
            f"2025-03-03T10:{i // 30:02d}:{i % 30 * 2:02d}Z",
            assumed_role("billing-task", f"botocore-session-{1740990000 + i}"),
            secret_arn(f"medessence/production/database/s{i}"),
        )
        for i in range(60)
    ]
    path = trail_file(
        tmp_path / f"{ACCOUNT}_CloudTrail_eu-central-1_20250303T1005Z_a1.json.gz", records
    )
    principals = {event.principal for event in read_events(path, "cloudtrail")}
    assert principals == {f"arn:aws:iam::{ACCOUNT}:role/billing-task"}
    data, _ = cli_json(capsys, "--format", "cloudtrail", str(path))
    assert data["counts"]["rate"] == 1 and data["counts"]["bulk"] >= 1  # type: ignore[index]


def test_source_identity_identity_center_and_break_glass_roles(tmp_path: Path) -> None:
    role = f"arn:aws:iam::{ACCOUNT}:role/deploy"
    records = [
        trail_event(
            "2025-03-03T10:00:00Z", assumed_role("deploy", "s1", sourceIdentity="alice"), "x"
        ),
        trail_event(
            "2025-03-03T10:00:01Z", assumed_role("deploy", "s2", sourceIdentity="bob"), "x"
        ),
        trail_event("2025-03-03T10:00:02Z", assumed_role("deploy", "s3"), "x"),
        trail_event(
            "2025-03-03T10:00:03Z",
            assumed_role(
                "aws-reserved/sso.amazonaws.com/eu-west-1/AWSReservedSSO_Admin_5f2c1d9e0a7b3c4d",
                "carol@medessence.example",
            ),
            "x",
        ),
        trail_event("2025-03-03T10:00:04Z", assumed_role("ops/BreakGlassAdmin", "dan"), "x"),
        trail_event("2025-03-03T10:00:05Z", assumed_role("BreakGlass-ish-app/x", "e"), "x"),
    ]
    path = trail_file(tmp_path / "trail.json.gz", records)
    events = list(read_events(path, "cloudtrail"))
    assert [e.principal for e in events[:4]] == [
        f"{role}/alice",
        f"{role}/bob",
        role,
        f"arn:aws:sts::{ACCOUNT}:assumed-role/AWSReservedSSO_Admin_5f2c1d9e0a7b3c4d/"
        "carol@medessence.example",
    ]
    # a break-glass role is assumed by hand: its session names the person, as for SSO
    assert events[4].principal == f"arn:aws:sts::{ACCOUNT}:assumed-role/BreakGlassAdmin/dan"
    assert [e.emergency for e in events] == [False, False, False, False, True, False]


def test_a_partial_arn_read_of_a_honeytoken_is_caught(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    decoy = "medessence/staging/external-services/old-backup"
    mallory = {
        "type": "IAMUser",
        "principalId": "AIDAEXAMPLEMALLORY",
        "arn": f"arn:aws:iam::{ACCOUNT}:user/mallory",
        "accountId": ACCOUNT,
        "userName": "mallory",
    }
    partial = trail_event("2025-03-03T11:00:00Z", mallory, secret_arn(decoy, suffix=""))
    path = trail_file(tmp_path / "partial.json.gz", [partial])
    data, _ = cli_json(capsys, "--format", "cloudtrail", str(path), "--honeytoken", decoy)
    assert data["counts"]["honeytoken"] == 1  # type: ignore[index]
    (alert,) = data["alerts"]  # type: ignore[misc]
    assert alert["path"] == decoy
    # a full ARN still loses its suffix; a partial ARN of another secret is read as before
    full = trail_event("2025-03-03T11:00:01Z", mallory, secret_arn(decoy))
    other = trail_event("2025-03-03T11:00:02Z", mallory, secret_arn("medessence/x/db-backup", ""))
    both = trail_file(tmp_path / "both.json.gz", [full, other])
    found = [e.path for e in read_events(both, "cloudtrail", decoy=lambda p: p == decoy)]
    assert found == [decoy, "medessence/x/db"]


def test_a_document_of_empty_objects_is_refused_before_it_is_parsed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "bomb.json.gz"
    count = (8 << 20) // 3
    path.write_bytes(gzip.compress(b'{"Records":[' + b"{}," * (count - 1) + b"{}]}", 9))
    assert path.stat().st_size < 64 << 10
    parsed: list[int] = []
    real = sources.orjson.loads

    def counting(data: bytes) -> object:
        parsed.append(len(data))
        return real(data)

    monkeypatch.setattr(sources.orjson, "loads", counting)
    capsys.readouterr()
    assert main(["audit", "analyze", "--format", "cloudtrail", str(path)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err == [
        f"error: {path}: more than one JSON object or array per 64 bytes "
        "(not a CloudTrail log file)"
    ]
    assert parsed == []
    # real records, however many, are read
    records = [
        trail_event(f"2025-03-03T10:00:{i % 60:02d}Z", assumed_role("app", "s"), f"x{i}")
        for i in range(3000)
    ]
    real_file = trail_file(tmp_path / "real.json.gz", records)
    assert len(gzip.decompress(real_file.read_bytes())) > 1 << 20
    assert len(list(read_events(real_file, "cloudtrail"))) == 3000


def test_a_digest_file_among_the_logs_is_skipped_with_a_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logs = tmp_path / "AWSLogs" / ACCOUNT
    day = "eu-central-1/2025/03/03"
    log = trail_file(
        logs / "CloudTrail" / day / f"{ACCOUNT}_CloudTrail_eu-central-1_20250303T1005Z_a1.json.gz",
        [trail_event("2025-03-03T10:00:00Z", assumed_role("app", "s"), "medessence/x/y")],
    )
    digest = (
        logs
        / "CloudTrail-Digest"
        / day
        / (f"{ACCOUNT}_CloudTrail-Digest_eu-central-1_trail_eu-central-1_20250303T100131Z.json.gz")
    )
    digest.parent.mkdir(parents=True)
    digest.write_bytes(
        gzip.compress(
            json.dumps(
                {
                    "awsAccountId": ACCOUNT,
                    "digestStartTime": "2025-03-03T09:01:31Z",
                    "digestEndTime": "2025-03-03T10:01:31Z",
                    "digestS3Bucket": "trail-bucket",
                    "digestS3Object": "AWSLogs/…/digest.json.gz",
                    "digestPublicKeyFingerprint": "0" * 32,
                    "digestSignatureAlgorithm": "SHA256withRSA",
                    "newestEventTime": "2025-03-03T10:00:27Z",
                    "oldestEventTime": "2025-03-03T09:02:27Z",
                    "previousDigestS3Bucket": "trail-bucket",
                    "previousDigestS3Object": "AWSLogs/…/previous.json.gz",
                    "previousDigestHashValue": "a" * 64,
                    "previousDigestHashAlgorithm": "SHA-256",
                    "previousDigestSignature": "b" * 512,
                    "logFiles": [
                        {
                            "s3Bucket": "trail-bucket",
                            "s3Object": "AWSLogs/…/a1.json.gz",
                            "hashValue": "c" * 64,
                            "hashAlgorithm": "SHA-256",
                            "newestEventTime": "2025-03-03T10:00:27Z",
                            "oldestEventTime": "2025-03-03T09:02:27Z",
                        }
                    ],
                }
            ).encode()
        )
    )
    data, err = cli_json(capsys, "--format", "cloudtrail", str(digest), str(log))
    assert data["events"] == 1 and data["digest_files"] == [str(digest)]
    assert "digest" in err and str(digest) in err


def region_major_trail(root: Path) -> list[Path]:
    """A multi-region trail's files for 2 days, listed region first (as a glob sorts them):
    one app reads its secret every 5 minutes in two regions; a file every 10 minutes, with
    the events of the 10 minutes before its delivery stamp."""
    files = []
    identity = assumed_role("orders-app", "orders-app")
    for region, source, second in (("eu-central-1", "10.0.1.5", 7), ("us-east-1", "10.9.1.5", 9)):
        for day in range(1, 3):
            folder = root / "AWSLogs" / ACCOUNT / "CloudTrail" / region / f"2025/03/{day:02d}"
            for minute in range(0, 24 * 60, 10):
                stamp = f"202503{day:02d}T{minute // 60:02d}{minute % 60:02d}Z"
                records = [
                    trail_event(
                        f"2025-03-{day:02d}T{(minute + m) // 60:02d}:{(minute + m) % 60:02d}:"
                        f"{second:02d}Z",
                        identity,
                        secret_arn("medessence/production/database/orders", region=region),
                        source=source,
                        region=region,
                    )
                    for m in (0, 5)
                ]
                name = f"{ACCOUNT}_CloudTrail_{region}_{stamp}_{region[:2]}{day}{minute}.json.gz"
                files.append(trail_file(folder / name, records))
    return files


def test_cloudtrail_files_are_read_in_delivery_order_whatever_the_order_given(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = region_major_trail(tmp_path)
    data, err = cli_json(capsys, "--format", "cloudtrail", *map(str, files))
    assert data["events"] == 2 * 2 * 24 * 12
    assert {k: v for k, v in data["counts"].items() if v} == {}  # type: ignore[union-attr]
    assert data["late_events"] == 0 and "out of time order" not in err


def test_events_later_than_the_reorder_horizon_are_counted_and_said(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = region_major_trail(tmp_path)
    for number, path in enumerate(files):  # names without a stamp keep the order given
        files[number] = path.rename(path.with_name(f"f{number:04d}.json.gz"))
    data, err = cli_json(capsys, "--format", "cloudtrail", *map(str, files))
    late = data["late_events"]  # us-east-1's, but those within 15 min of eu-central-1's last
    assert isinstance(late, int) and 2 * 24 * 12 - 4 <= late < 2 * 24 * 12
    assert f"{late} event(s) came more than 15 min out of time order" in err
    # a straggler does not fill the rate window of the times after it
    assert data["counts"]["rate"] == 0  # type: ignore[index]
