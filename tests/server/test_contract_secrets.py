"""docs/api.md, "Secrets": writes, reads, versions, stages, check-and-set, deletion,
restore and destroy, statement by statement, against one real server process.

Each test works on its own secret path, so the tests share the server but not state.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from medsecrets.testing.serverproc import ServerProcess

TEXT = "monitoring_tokens"  # a free-text field of the external-services category


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    base = tmp_path_factory.mktemp("contract-secrets")
    with ServerProcess(base / "data", log_dir=base / "logs") as server:
        headers = {"Authorization": f"Bearer {server.token}"}
        with httpx.Client(base_url=server.addr, headers=headers, timeout=30) as client:
            yield client


def _secret(name: str) -> str:
    return f"medessence/contract/external-services/{name}"


def _put(api: httpx.Client, path: str, value: str = "v", **extra: Any) -> httpx.Response:
    return api.put(f"/v1/secrets/{path}", json={"fields": {TEXT: value}, **extra})


def _error(r: httpx.Response, status: int, code: str) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"]["code"] == code, r.text
    assert body["request_id"]
    message: str = body["error"]["message"]
    return message


def _versions(api: httpx.Client, path: str) -> list[tuple[int, list[str], bool]]:
    meta = api.get(f"/v1/metadata/{path}").json()
    return [(v["number"], v["stages"], v["destroyed"]) for v in meta["versions"]]


# -- PUT and GET ---------------------------------------------------------------------------
def test_write_answers_version_info_and_read_answers_secret_version(api: httpx.Client) -> None:
    path = _secret("shapes")
    r = _put(api, path, "one")
    assert r.status_code == 200, r.text
    info = r.json()["version"]
    assert set(info) == {"number", "id", "created_at", "stages", "destroyed", "kek_version"}
    assert info["number"] == 1 and info["stages"] == ["current"] and info["destroyed"] is False
    read = api.get(f"/v1/secrets/{path}").json()
    assert set(read) == {"path", "number", "id", "created_at", "stages", "fields"}
    assert read["fields"] == {TEXT: "one"} and read["id"] == info["id"]
    assert read["created_at"].endswith("+00:00")  # ISO 8601 UTC
    by_id = api.get(f"/v1/secrets/{path}", params={"version_id": info["id"]})
    assert by_id.json()["number"] == 1


def test_read_selectors_and_their_edges(api: httpx.Client) -> None:
    path = _secret("selectors")
    for value in ("a", "b"):
        _put(api, path, value)
    _put(api, path, "c", stage="pending")
    url = f"/v1/secrets/{path}"
    assert api.get(url, params={"stage": "previous"}).json()["fields"] == {TEXT: "a"}
    assert api.get(url, params={"stage": "pending"}).json()["fields"] == {TEXT: "c"}
    assert api.get(url, params={"stage": "current"}).json()["fields"] == {TEXT: "b"}
    assert api.get(url, params={"version": 1}).json()["stages"] == ["previous"]
    # version 0 and below are malformed (N >= 1), a missing version is 404
    message = _error(api.get(url, params={"version": 0}), 400, "invalid_request")
    assert message.endswith("must be 1 or more")
    _error(api.get(url, params={"version": 99}), 404, "not_found")
    _error(api.get(url, params={"version_id": "nope"}), 404, "not_found")
    _error(api.get(url, params={"stage": "bogus"}), 400, "invalid_request")
    _error(api.get(url, params={"stage": "current", "version": 1}), 400, "invalid_request")
    _error(api.get("/v1/secrets/" + _secret("never-written")), 404, "not_found")


def test_a_version_number_too_long_for_64_bits_names_the_bounds(api: httpx.Client) -> None:
    """'an integer out of range names its bounds', also one past 64 bits (16 digits or
    more were 'not an integer')."""
    path = _secret("long-number")
    _put(api, path)
    for value in ("1" * 20, "9" * 40):
        message = _error(
            api.get(f"/v1/secrets/{path}", params={"version": value}), 400, "invalid_request"
        )
        assert message == "query parameter 'version' must be from 1 to 9223372036854775807"
    r = api.get("/v1/metadata", params={"limit": "1" * 20})
    assert _error(r, 400, "invalid_request").endswith("must be from 1 to 1000")
    r = api.delete(f"/v1/secrets/{path}", params={"recovery_days": "-" + "9" * 30})
    assert _error(r, 400, "invalid_request").endswith("must be from 7 to 30")


def test_value_size_limit_is_64_kib_serialized(api: httpx.Client) -> None:
    path = _secret("size")
    room = 64 * 1024 - len(f'{{"{TEXT}":""}}')
    assert _put(api, path, "a" * room).status_code == 200
    message = _error(_put(api, path, "a" * (room + 1)), 413, "too_large")
    assert "65536" in message
    # UTF-8 bytes count, not characters
    assert _put(api, path, "é" * (room // 2)).status_code == 200
    _error(_put(api, path, "é" * (room // 2 + 1)), 413, "too_large")
    _error(_put(api, path, "a" * (1024 * 1024 + 1)), 413, "too_large")  # the 1 MiB body
    assert len(_versions(api, path)) == 2  # nothing half-written


def test_write_body_errors(api: httpx.Client) -> None:
    url = "/v1/secrets/" + _secret("bodies")
    _error(api.put(url, json={}), 400, "invalid_request")
    _error(api.put(url, json={"fields": {}}), 400, "invalid_request")
    _error(api.put(url, json={"fields": {TEXT: 1}}), 400, "invalid_request")
    _error(api.put(url, json={"fields": {TEXT: "v"}, "extra": 1}), 400, "invalid_request")
    _error(api.put(url, json={"fields": {TEXT: "v"}, "stage": "previous"}), 400, "invalid_request")
    _error(api.put(url, json={"fields": {"undeclared": "v"}}), 422, "validation_failed")
    _error(api.put(url, content=b"{}", headers={"Content-Type": "text/plain"}), 415,
           "unsupported_media_type")  # fmt: skip
    _error(api.get(url), 404, "not_found")  # nothing was written


def test_descriptive_fields_take_unicode_within_their_limits(api: httpx.Client) -> None:
    path = _secret("unicode")
    text = {"description": "Überweisung 😀", "owner": "Zoë", "tags": {"team": "ärzte 🏥"}}
    assert _put(api, path, **text).status_code == 200
    meta = api.get(f"/v1/metadata/{path}").json()
    assert {k: meta[k] for k in text} == text
    listed = api.get("/v1/metadata", params={"tag": "team:ärzte 🏥"}).json()["items"]
    assert [m["path"] for m in listed] == [path]
    for bad in (
        {"description": "d" * 1025},
        {"owner": "o" * 257},
        {"tags": {"k": "v" * 257}},
        {"tags": {f"t{i}": "v" for i in range(51)}},
        {"tags": {"tëam": "v"}},  # tag keys follow the field-name rule
    ):
        _error(_put(api, path, **bad), 400, "invalid_request")
    assert _put(api, path, description="d" * 1024, owner="o" * 256).status_code == 200


# -- check-and-set -------------------------------------------------------------------------
def test_cas(api: httpx.Client) -> None:
    path = _secret("cas")
    assert _put(api, path, cas=0).status_code == 200
    _error(_put(api, path, cas=0), 409, "cas_conflict")
    _error(_put(api, path, cas=2), 409, "cas_conflict")
    assert _put(api, path, cas=1).status_code == 200
    # "the newest" counts a pending version too
    assert _put(api, path, stage="pending", cas=2).status_code == 200
    _error(_put(api, path, cas=2), 409, "cas_conflict")
    assert _put(api, path, cas=3).json()["version"]["number"] == 4
    for bad in (-1, 2**63, True, 1.0):
        _error(_put(api, path, cas=bad), 400, "invalid_request")
    _error(_put(api, _secret("cas-missing"), cas=3), 409, "cas_conflict")


# -- stages ----------------------------------------------------------------------------------
def test_stage_moves_and_their_edges(api: httpx.Client) -> None:
    path = _secret("stages")
    url = f"/v1/stages/{path}"
    for value in ("1", "2", "3"):
        _put(api, path, value)
    _put(api, path, "4", stage="pending")
    assert _versions(api, path) == [
        (1, [], False),
        (2, ["previous"], False),
        (3, ["current"], False),
        (4, ["pending"], False),
    ]
    _error(api.post(url, json={"stage": "pending", "version": 3}), 409, "conflict")  # current
    _error(api.post(url, json={"stage": "pending", "version": 99}), 404, "not_found")
    _error(api.post(url, json={"stage": "current", "remove": True}), 400, "invalid_request")
    _error(api.post(url, json={"stage": "pending"}), 400, "invalid_request")
    _error(api.post(url, json={"stage": "pending", "version": 4, "remove": True}), 400,
           "invalid_request")  # fmt: skip
    r = api.post(url, json={"stage": "current", "version": 4})  # promote
    assert r.status_code == 200 and r.json()["current_version"] == 4
    assert r.json()["last_rotated_at"] is not None
    assert _versions(api, path)[2:] == [(3, ["previous"], False), (4, ["current"], False)]
    for _ in range(2):  # removing a stage that is not there is a success
        r = api.post(url, json={"stage": "pending", "remove": True})
        assert r.status_code == 200, r.text


@pytest.mark.parametrize("version", [0, -1])
def test_a_version_number_below_1_in_a_body_is_malformed(api: httpx.Client, version: int) -> None:
    """As ``?version=0`` and ``cas: -1`` are: 400, not 404 'has no version -1'."""
    path = _secret(f"version-below-one{-version}")
    _put(api, path)
    _put(api, path)
    before = api.get(f"/v1/metadata/{path}").json()
    for url, body in (
        (f"/v1/destroy/{path}", {"version": version}),
        (f"/v1/stages/{path}", {"stage": "pending", "version": version}),
        (f"/v1/stages/{path}", {"stage": "current", "version": version}),
    ):
        message = _error(api.post(url, json=body), 400, "invalid_request")
        assert message == "body.version: must be 1 or more"
    assert api.get(f"/v1/metadata/{path}").json() == before


# -- destroy --------------------------------------------------------------------------------
def test_destroy_edges_and_idempotency(api: httpx.Client) -> None:
    path = _secret("destroy")
    url = f"/v1/destroy/{path}"
    for value in ("1", "2", "3"):
        _put(api, path, value)
    _error(api.post(url, json={"version": 3}), 409, "conflict")  # the current version
    _error(api.post(url, json={"version": 99}), 404, "not_found")
    _error(api.post(url, json={}), 400, "invalid_request")
    for _ in range(2):  # a repeated destroy answers as the first
        r = api.post(url, json={"version": 2})
        assert r.status_code == 200 and r.json()["current_version"] == 3
    # destroying a version removes the stages it held
    assert _versions(api, path) == [(1, [], False), (2, [], True), (3, ["current"], False)]
    _error(api.get(f"/v1/secrets/{path}", params={"version": 2}), 404, "not_found")
    _error(api.get(f"/v1/secrets/{path}", params={"stage": "previous"}), 404, "not_found")
    # a stage cannot point at a destroyed version
    _error(api.post(f"/v1/stages/{path}", json={"stage": "current", "version": 2}), 409,
           "conflict")  # fmt: skip
    _error(api.post(f"/v1/stages/{path}", json={"stage": "previous", "version": 2}), 409,
           "conflict")  # fmt: skip


# -- deletion and restore ----------------------------------------------------------------------
def test_delete_schedules_and_refuses_everything_but_metadata(api: httpx.Client) -> None:
    path = _secret("deleted")
    _put(api, path, "1")
    _put(api, path, "2")
    url = f"/v1/secrets/{path}"
    both = {"recovery_days": 7, "force": "true"}
    for params in ({"recovery_days": 6}, {"recovery_days": 31}, both):
        _error(api.delete(url, params=params), 400, "invalid_request")
    r = api.delete(url, params={"recovery_days": 7})
    assert r.status_code == 200, r.text
    meta = r.json()
    assert meta["deleted_at"] is not None and meta["purge_at"] is not None
    # repeated: 410 naming the date, the window unchanged
    message = _error(api.delete(url), 410, "scheduled_for_deletion")
    assert meta["purge_at"][:10] in message
    assert api.get(f"/v1/metadata/{path}").json()["purge_at"] == meta["purge_at"]
    # reads, writes (cas 0 too), stage moves and metadata changes: 410
    _error(api.get(url), 410, "scheduled_for_deletion")
    _error(api.get(url, params={"version": 1}), 410, "scheduled_for_deletion")
    _error(api.get(f"/v1/validate/{path}"), 410, "scheduled_for_deletion")
    _error(_put(api, path), 410, "scheduled_for_deletion")
    _error(_put(api, path, cas=0), 410, "scheduled_for_deletion")
    _error(api.patch(f"/v1/metadata/{path}", json={"owner": "x"}), 410, "scheduled_for_deletion")
    _error(api.post(f"/v1/stages/{path}", json={"stage": "current", "version": 1}), 410,
           "scheduled_for_deletion")  # fmt: skip
    # destroy works in the window (erasing sooner is what it is for)
    assert api.post(f"/v1/destroy/{path}", json={"version": 1}).status_code == 200
    # restore brings it back, every kept version intact; a second restore is 409
    r = api.post(f"/v1/restore/{path}")
    assert r.status_code == 200 and r.json()["purge_at"] is None
    _error(api.post(f"/v1/restore/{path}"), 409, "conflict")
    assert api.get(url).json()["fields"] == {TEXT: "2"}


def test_restore_of_a_secret_never_deleted_and_of_none(api: httpx.Client) -> None:
    path = _secret("live")
    _put(api, path)
    message = _error(api.post(f"/v1/restore/{path}"), 409, "conflict")
    assert "not scheduled for deletion" in message
    _error(api.post("/v1/restore/" + _secret("nothing-here")), 404, "not_found")


def test_force_delete_purges_at_once_even_in_the_window(api: httpx.Client) -> None:
    path = _secret("forced")
    _put(api, path)
    api.delete(f"/v1/secrets/{path}")
    r = api.delete(f"/v1/secrets/{path}", params={"force": "true"})
    assert r.status_code == 200 and r.json()["path"] == path
    _error(api.get(f"/v1/metadata/{path}"), 404, "not_found")
    _error(api.delete(f"/v1/secrets/{path}", params={"force": "true"}), 404, "not_found")
    _error(api.post(f"/v1/restore/{path}"), 404, "not_found")
    # the name is free again: a new secret, numbered from 1
    assert _put(api, path, cas=0).json()["version"]["number"] == 1


def test_metadata_patch(api: httpx.Client) -> None:
    path = _secret("patch")
    _put(api, path)
    url = f"/v1/metadata/{path}"
    r = api.patch(url, json={"rotation_days": 0})
    assert r.json()["rotation"] == {
        "interval_days": 0,
        "strategy": "manual",
        "overridden": True,
    }
    assert r.json()["next_rotation_due"] is None
    for bad in ({"rotation_days": -1}, {"rotation_days": 3651}, {},
                {"rotation_days": 5, "clear_rotation_override": True}):  # fmt: skip
        _error(api.patch(url, json=bad), 400, "invalid_request")
    r = api.patch(url, json={"clear_rotation_override": True})
    assert r.json()["rotation"]["overridden"] is False
    r = api.patch(url, json={"tags": {"a": "b"}})
    assert r.json()["tags"] == {"a": "b"}
    assert api.patch(url, json={"tags": {}}).json()["tags"] == {}  # replaces, so {} clears


def test_a_stage_change_that_changes_nothing_leaves_updated_at(api: httpx.Client) -> None:
    """'updated_at is the last change of the secret or its metadata': moving a stage where
    it is, or removing one no version holds, is no change (it moved updated_at)."""
    path = _secret("noop-stage")
    _put(api, path)
    url = f"/v1/stages/{path}"
    before = api.get(f"/v1/metadata/{path}").json()
    for body in (
        {"stage": "pending", "remove": True},
        {"stage": "previous", "remove": True},
        {"stage": "current", "version": 1},
    ):
        r = api.post(url, json=body)
        assert r.status_code == 200, r.text
        assert r.json() == before
    assert api.get(f"/v1/metadata/{path}").json() == before
    r = api.patch(f"/v1/metadata/{path}", json={"owner": "ops"})  # a real change moves it
    assert r.json()["updated_at"] > before["updated_at"]
