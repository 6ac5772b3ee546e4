"""``medsecrets secrets ...`` end to end against a real dev server process."""

from __future__ import annotations

import json
import shlex
import uuid
from pathlib import Path

import pytest

WARNING = "visible to other users"


def test_put_get_round_trip_with_every_output(ms, secret_path, canary):
    put = ms("secrets", "put", secret_path, f"smtp_password={canary}", "monitoring_tokens=t1")
    put.ok()
    assert WARNING in put.stderr and canary not in put.stderr and canary not in put.stdout
    assert "version 1" in put.stdout

    assert (
        ms("secrets", "get", secret_path, "--field", "smtp_password").ok().stdout == canary + "\n"
    )
    data = ms("secrets", "get", secret_path, "-o", "json").ok().json()
    assert data["fields"] == {"smtp_password": canary, "monitoring_tokens": "t1"}
    assert data["number"] == 1 and data["stages"] == ["current"]
    table = ms("secrets", "get", secret_path).ok().stdout
    assert canary in table and "monitoring_tokens" in table
    env_out = ms("secrets", "get", secret_path, "-o", "env").ok().stdout.splitlines()
    assert f"SMTP_PASSWORD={canary}" in env_out and "MONITORING_TOKENS=t1" in env_out


def test_env_output_is_shell_quoted(ms, secret_path):
    tricky = 'it\'s $HOME `x` "q" & more'
    ms("secrets", "put", secret_path, "-", input=json.dumps({"smtp_password": tricky})).ok()
    line = ms("secrets", "get", secret_path, "-o", "env", "--env-prefix", "app_").ok().stdout
    key, _, quoted = line.strip().partition("=")
    assert key == "APP_SMTP_PASSWORD"
    assert shlex.split(quoted) == [tricky]


def test_put_from_file_and_stdin_does_not_warn(ms, secret_path, tmp_path: Path, canary):
    value_file = tmp_path / "pw"
    value_file.write_text(canary + "-file\n", encoding="utf-8")
    # the file's exact content: the trailing line break too, which a text field refuses
    refused = ms("secrets", "put", secret_path, f"smtp_password=@{value_file}").error(2)
    assert "smtp_password" in refused and canary not in refused
    value_file.write_text(canary + "-file", encoding="utf-8")
    result = ms("secrets", "put", secret_path, f"smtp_password=@{value_file}").ok()
    assert WARNING not in result.stderr
    got = ms("secrets", "get", secret_path, "-f", "smtp_password").ok().stdout
    assert got == canary + "-file\n"  # the file's exact content, then the CLI's newline

    result = ms("secrets", "put", secret_path, "-", input=json.dumps({"smtp_password": canary}))
    assert WARNING not in result.ok().stderr
    # later sources override earlier ones; stdin and a file together
    ms(
        "secrets",
        "put",
        secret_path,
        "-",
        f"monitoring_tokens=@{value_file}",
        input=json.dumps({"smtp_password": canary, "monitoring_tokens": "x"}),
    ).ok()
    fields = ms("secrets", "get", secret_path, "-o", "json").ok().json()["fields"]
    assert fields == {"smtp_password": canary, "monitoring_tokens": canary + "-file"}


def test_put_input_errors_never_echo_values(ms, secret_path, canary):
    assert "argument 1" in ms("secrets", "put", secret_path, canary).error(2)
    line = ms("secrets", "put", secret_path, "-", input=f'{{"smtp_password": 1, "x": "{canary}"}}')
    assert canary not in line.error(2)
    line = ms("secrets", "put", secret_path, "-", input=f"not json {canary}").error(2)
    assert canary not in line
    missing = ms("secrets", "put", secret_path, "smtp_password=@/nonexistent/file").error(2)
    assert "smtp_password" in missing
    # the server rejects the value (a validator): 2, and the value is not echoed
    short = ms("secrets", "put", secret_path, "smtp_password=shrt").error(2)
    assert "smtp_password" in short and "shrt" not in short
    # an undeclared field
    assert "nope" in ms("secrets", "put", secret_path, f"nope={canary}").error(2)
    assert ms("secrets", "describe", secret_path).code == 3


@pytest.mark.slow
def test_describe_versions_promote_destroy(ms, secret_path, canary):
    ms("secrets", "put", secret_path, f"smtp_password={canary}-1").ok()
    ms("secrets", "put", secret_path, f"smtp_password={canary}-2", "--stage", "pending").ok()
    meta = ms("secrets", "describe", secret_path, "-o", "json").ok().json()
    assert meta["path"] == secret_path and meta["category"] == "external-services"
    assert meta["current_version"] == 1
    described = ms("secrets", "describe", secret_path).ok().stdout
    assert secret_path in described and canary not in described

    versions = ms("secrets", "versions", secret_path, "-o", "json").ok().json()
    assert [(v["number"], v["stages"]) for v in versions] == [(1, ["current"]), (2, ["pending"])]
    assert "pending" in ms("secrets", "versions", secret_path).ok().stdout

    pending = ms("secrets", "get", secret_path, "--stage", "pending", "-f", "smtp_password")
    assert pending.ok().stdout.strip() == f"{canary}-2"
    ms("secrets", "promote", secret_path, "--version", "2").ok()
    assert ms("secrets", "get", secret_path, "-f", "smtp_password").ok().stdout.strip() == (
        f"{canary}-2"
    )
    old = ms("secrets", "get", secret_path, "--version", "1", "-f", "smtp_password").ok()
    assert old.stdout.strip() == f"{canary}-1"

    refused = ms("secrets", "destroy", secret_path, "--version", "1")
    assert "--yes" in refused.error(2)
    ms("secrets", "destroy", secret_path, "--version", "1", "--yes").ok()
    versions = ms("secrets", "versions", secret_path, "-o", "json").ok().json()
    assert versions[0]["destroyed"] is True
    gone = ms("secrets", "get", secret_path, "--version", "1")
    assert gone.code in (3, 6) and canary not in gone.stderr
    gone.error(gone.code)


def test_cas_conflict_exits_6(ms, secret_path):
    ms("secrets", "put", secret_path, "smtp_password=@/dev/null", "--cas", "0").error(2)
    ms("secrets", "put", secret_path, "-", "--cas", "0", input='{"smtp_password": "longenough"}')
    line = ms(
        "secrets", "put", secret_path, "-", "--cas", "0", input='{"smtp_password": "longenough"}'
    ).error(6)
    assert line.startswith("error: ")


def test_not_found_exits_3(ms, secret_path):
    assert secret_path in ms("secrets", "get", secret_path).error(3)
    ms("secrets", "describe", secret_path).error(3)
    ms("secrets", "get", "medessence/development/database", "-f", "nope").error(3)


def test_bad_path_is_rejected_input(ms):
    ms("secrets", "get", "medessence/development/../database").error(2)


@pytest.mark.slow
def test_delete_restore_and_scheduled_for_deletion(ms, secret_path, canary):
    ms("secrets", "put", secret_path, "-", input=json.dumps({"smtp_password": canary})).ok()
    out = ms("secrets", "delete", secret_path, "--recovery-days", "7").ok().stdout
    assert "Scheduled" in out
    line = ms("secrets", "get", secret_path).error(6)
    assert "scheduled for deletion" in line and canary not in line
    assert ms("secrets", "describe", secret_path, "-o", "json").ok().json()["purge_at"]
    listed = ms("secrets", "list", "medessence/cli/", "-o", "json").ok().json()
    assert secret_path not in [m["path"] for m in listed]
    listed = ms("secrets", "list", "medessence/cli/", "--include-deleted", "-o", "json").ok().json()
    assert secret_path in [m["path"] for m in listed]
    ms("secrets", "restore", secret_path).ok()
    assert ms("secrets", "get", secret_path, "-f", "smtp_password").ok().stdout.strip() == canary

    assert "--yes" in ms("secrets", "delete", secret_path, "--force").error(2)
    ms("secrets", "delete", secret_path, "--force", "--yes").ok()
    ms("secrets", "describe", secret_path).error(3)


def test_list_filters_and_json(ms, secret_path):
    ms("secrets", "put", secret_path, "-", "--tag", "team=cli", input='{"monitoring_tokens": "a"}')
    ms("secrets", "describe", secret_path).ok()
    items = ms("secrets", "list", "--env", "development", "-o", "json").ok().json()
    assert {m["category"] for m in items} >= {"database", "auth"}
    assert all(m["environment"] == "development" for m in items)
    tagged = ms("secrets", "list", "--tag", "team=cli", "-o", "json").ok().json()
    assert secret_path in [m["path"] for m in tagged]
    table = ms("secrets", "list", "--category", "database").ok().stdout
    assert "medessence/development/database" in table and "secret(s)" in table
    assert all("fields" not in m for m in items)


def test_unauthenticated_and_denied_exit_4(ms, secret_path, canary):
    ms("secrets", "put", secret_path, "-", input=json.dumps({"smtp_password": canary})).ok()
    line = ms("secrets", "get", secret_path, env={"MEDSECRETS_TOKEN": "ms.garbage"}).error(4)
    assert canary not in line
    ms("secrets", "list", env={"MEDSECRETS_TOKEN": ""}).error(4)
    created = (
        ms("token", "create", "--path", "medessence/other/", "--capability", "read", "-o", "json")
        .ok()
        .json()
    )
    narrow = {"MEDSECRETS_TOKEN": created["token"]}
    line = ms("secrets", "get", secret_path, env=narrow).error(4)
    assert canary not in line
    ms("secrets", "put", "medessence/other/auth", "jwt_secret=x" * 1, env=narrow).error(4)


def test_token_option_warns(ms, dev_server, secret_path):
    result = ms("secrets", "list", "--token", dev_server.token, env={"MEDSECRETS_TOKEN": ""})
    assert "--token" in result.ok().stderr and dev_server.token not in result.stderr


def test_put_merge_keeps_the_other_fields(ms, secret_path, canary):
    first = json.dumps({"smtp_password": "first-pass", "monitoring_tokens": "kept"})
    ms("secrets", "put", secret_path, "-", input=first).ok()
    ms("secrets", "put", "--merge", secret_path, "-",
       input=json.dumps({"smtp_password": canary})).ok()  # fmt: skip
    fields = ms("secrets", "get", secret_path, "-o", "json").ok().json()["fields"]
    assert fields == {"smtp_password": canary, "monitoring_tokens": "kept"}
    assert "--merge or --cas" in ms(
        "secrets", "put", "--merge", "--cas", "1", secret_path, "-", input="{}"
    ).error(2)
    missing = secret_path + "-missing"
    assert (
        ms(
            "secrets", "put", "--merge", missing, "-", input=json.dumps({"smtp_password": "x" * 9})
        ).code
        != 0
    )


def test_put_merge_renders_derived_fields_again(ms, canary):
    """Changing a field a derived field reads (the database password) re-renders it from the
    merged fields, as a complete write would; a derived field given explicitly is checked."""
    from medsecrets.catalog.loader import default_catalog

    database = default_catalog().category("database")
    path = f"medessence/cli/database/t{uuid.uuid4().hex[:12]}"
    first = database.build({"username": "app_user", "host": "db.internal"}, development=True)
    ms("secrets", "put", path, "-", input=json.dumps(first)).ok()
    new_password = f"{canary}:/@?#"  # URL-reserved characters: the template quotes them
    merged = ms("secrets", "put", "--merge", path, "-",
                input=json.dumps({"password": new_password}))  # fmt: skip
    assert canary not in merged.ok().stdout + merged.stderr
    fields = ms("secrets", "get", path, "-o", "json").ok().json()["fields"]
    inputs = {k: v for k, v in first.items() if k != "connection_string"}
    expected = database.build({**inputs, "password": new_password}, development=True)
    assert fields == expected
    assert fields["encryption_key"] == first["encryption_key"]  # the other fields are kept
    stale = json.dumps({"host": "db2.internal", "connection_string": first["connection_string"]})
    line = ms("secrets", "put", "--merge", path, "-", input=stale).error(2)
    assert "connection_string" in line and canary not in line
    assert ms("secrets", "get", path, "-o", "json").ok().json()["number"] == 2  # nothing written


def test_put_merge_needs_only_read_and_write(ms, secret_path, canary):
    """--merge takes its check-and-set version from the read, not from a listing (no 'list'
    capability); a newer pending version makes it refuse (exit 6) rather than write past it."""
    first = json.dumps({"smtp_password": "first-pass", "monitoring_tokens": "kept"})
    ms("secrets", "put", secret_path, "-", input=first).ok()
    created = ms("token", "create", "--path", secret_path, "--capability", "read",
                 "--capability", "write", "-o", "json").ok().json()  # fmt: skip
    narrow = {"MEDSECRETS_TOKEN": created["token"]}
    ms("secrets", "put", "--merge", secret_path, "-", env=narrow,
       input=json.dumps({"smtp_password": canary})).ok()  # fmt: skip
    got = ms("secrets", "get", secret_path, "-o", "json", env=narrow).ok().json()
    assert got["fields"] == {"smtp_password": canary, "monitoring_tokens": "kept"}
    assert got["number"] == 2
    ms("secrets", "put", secret_path, "--stage", "pending", "-", env=narrow,
       input=json.dumps({"smtp_password": "pending-pass"})).ok()  # fmt: skip
    line = ms("secrets", "put", "--merge", secret_path, "-", env=narrow,
              input=json.dumps({"monitoring_tokens": "changed"})).error(6)  # fmt: skip
    assert "check-and-set" in line
    versions = ms("secrets", "versions", secret_path, "-o", "json").ok().json()
    assert [v["number"] for v in versions] == [1, 2, 3]  # nothing written past the pending one
