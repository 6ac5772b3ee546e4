"""The handler remembers URL paths it has checked and routed (``_ROUTED_KEPT`` of them):
the same secrets are read over and over, and checking and routing a path again cost a
read ~3% of its rate (session 22, ``make bench-paired``). What it remembers must change
nothing: a refused path is refused every time, every method of a path still reaches its
own route, and the table stays bounded whatever paths a client makes up.
"""

from __future__ import annotations

from collections.abc import Callable

from medsecrets.api.app import _ROUTED_KEPT

from .conftest import P, RawResponse, SyncClient

AUTH = "Authorization"


def test_every_method_of_a_remembered_path_reaches_its_own_route(
    client: SyncClient, auth: dict[str, str]
) -> None:
    url = f"/v1/secrets/{P}"
    assert client.get(url, headers=auth).status_code == 404  # routed: no such secret yet
    written = client.put(url, headers=auth, json={"fields": {"username": "app_user"}})
    assert written.status_code == 200, written.text
    first = client.get(url, headers=auth)
    again = client.get(url, headers=auth)
    assert first.status_code == again.status_code == 200
    assert first.json()["number"] == again.json()["number"] == 1
    assert client.get(f"/v1/metadata/{P}", headers=auth).json()["path"] == P
    assert client.delete(url, headers=auth).status_code in (200, 204)
    assert client.get(url, headers=auth).status_code == 410  # the read route: deleted


def test_a_refused_path_is_refused_every_time(
    asgi: Callable[..., RawResponse], auth: dict[str, str]
) -> None:
    headers = [(b"authorization", auth[AUTH].encode())]
    # (the catalog's: a category named ".." would otherwise reach its route and be a 404)
    for raw in (b"/v1/catalog/..", b"/v1/secrets/a/../b", b"/v1/secrets/a%00b", b"/v1/secrets/a/."):
        for _ in range(3):
            status, _heads, payload = asgi("GET", raw, headers=headers)
            assert status == 400, (raw, payload)
            assert b'"code":"invalid_request"' in payload


def test_an_unknown_url_is_not_remembered_and_stays_404(
    client: SyncClient, auth: dict[str, str]
) -> None:
    for _ in range(3):
        assert client.get("/v1/nothing/here", headers=auth).status_code == 404


def test_the_remembered_paths_stay_bounded(
    client: SyncClient, auth: dict[str, str], app: object
) -> None:
    routed = app._routed  # type: ignore[attr-defined]
    for n in range(_ROUTED_KEPT + 40):
        url = f"/v1/secrets/medessence/development/database/made-up-{n}"
        assert client.get(url, headers=auth).status_code == 404
        assert len(routed) <= _ROUTED_KEPT
    assert 0 < len(routed) <= _ROUTED_KEPT
