"""``audit analyze`` on CloudTrail and Vault logs in the shapes AWS and HashiCorp write them.

Every file is built here, in ``tmp_path``, in the documented shapes (field names and order
only): Vault's file audit device as it writes entries now (``audit/types.go``: ``time``,
``auth``, ``error``, ``request``, ``response``, ``type`` last; ``entity_id``, ``accessor``,
HMAC'd values), its syslog and ``prefix`` framing; CloudTrail's ``{"Records": [...]}`` files
under ``AWSLogs/<account>/CloudTrail/<region>/Y/M/D/`` with the canonical file name, its
``userIdentity`` variants and digest files.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

import pytest

from medsecrets.cli.app import main
from medsecrets.monitor import sources
from medsecrets.monitor.analyze import AnalysisReport
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
    assert found[:3] == ["oidc-alice#7d3f0c1e", "oidc-alice#7d3f0c1e", "oidc-alice#9e21aa07"]
    assert found[3] != found[4] and all(p.startswith("root#") for p in found[3:])


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
