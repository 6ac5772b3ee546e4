"""Token lookup and revoke by the token itself, on a real server: a caller learns nothing
about a token it may not touch (whether it is live) from the answer.

By accessor this held already; by value, a token outside the caller's tree answered
differently from an unknown one (another message with the ``token`` capability; 403 against
404 without it), so any token could test whether a string was a live (or expired) token
without ever presenting it as its own credential.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from medsecrets.testing.serverproc import ServerProcess

UNKNOWN = "ms." + "B" * 43


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp: Path = tmp_path_factory.mktemp("authz-tokens")
    with ServerProcess(tmp / "data", log_dir=tmp / "logs") as proc:
        yield proc


def _mint(server: ServerProcess, auth: str, capabilities: list[str]) -> tuple[str, str]:
    """A new token (and its accessor) made by the holder of ``auth``."""
    r = httpx.post(
        f"{server.addr}/v1/auth/token/create",
        json={"paths": ["medessence/"], "capabilities": capabilities, "ttl": 600},
        headers={"Authorization": f"Bearer {auth}"},
    )
    assert r.status_code == 200, r.text
    return r.json()["token"], r.json()["info"]["accessor"]


def _ask(server: ServerProcess, route: str, caller: str, token: str) -> tuple[int, object]:
    r = httpx.post(
        f"{server.addr}/v1/auth/token/{route}",
        json={"token": token},
        headers={"Authorization": f"Bearer {caller}"},
    )
    return r.status_code, r.json().get("error")


@pytest.mark.parametrize("capabilities", [["read", "token"], ["read"]])
@pytest.mark.parametrize("route", ["lookup", "revoke"])
def test_a_live_token_outside_the_tree_answers_as_an_unknown_one(
    server: ServerProcess, route: str, capabilities: list[str]
) -> None:
    assert server.token is not None
    caller, _ = _mint(server, server.token, capabilities)
    stranger, _ = _mint(server, server.token, ["read"])  # a sibling: not the caller's to touch
    live = _ask(server, route, caller, stranger)
    unknown = _ask(server, route, caller, UNKNOWN)
    assert live == unknown
    assert live[0] in (403, 404)
    # and the stranger was left alone
    me = httpx.get(
        f"{server.addr}/v1/auth/token/self", headers={"Authorization": f"Bearer {stranger}"}
    )
    assert me.status_code == 200


def test_self_and_descendants_by_value_still_answer(server: ServerProcess) -> None:
    assert server.token is not None
    parent, _ = _mint(server, server.token, ["read", "token"])
    child, child_accessor = _mint(server, parent, ["read"])
    # a token without the token capability looks itself up and revokes itself by value
    status, _ = _ask(server, "lookup", child, child)
    assert status == 200
    # the parent looks up its child by value
    r = httpx.post(
        f"{server.addr}/v1/auth/token/lookup",
        json={"token": child},
        headers={"Authorization": f"Bearer {parent}"},
    )
    assert r.status_code == 200 and r.json()["accessor"] == child_accessor
    status, _ = _ask(server, "revoke", child, child)
    assert status == 200
    assert _ask(server, "lookup", parent, child)[0] == 404  # revoked: gone
