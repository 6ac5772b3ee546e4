"""The RSGI face of the API, through a real server (granian speaks RSGI to it).

The ASGI face is covered request by request in tests/api; these check what
differs on the RSGI side: the URL path (percent-decoded once, by granian, before
the dot segment check; never twice), header lookup, the client address, a
streamed body without a Content-Length, and the request id.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from medsecrets.testing.serverproc import ServerProcess

BASE = "/v1/secrets/medessence/development/database"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("rsgi") / "data") as running:
        yield running


def _raw(server: ServerProcess, head: str, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """Send ``head`` (request line and headers, no blank line) as is; status, headers, body."""
    url = urlsplit(server.addr)
    with socket.create_connection((url.hostname or "", url.port or 80), timeout=10) as sock:
        sock.sendall(head.encode("latin-1") + b"\r\nConnection: close\r\n\r\n" + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    header_block, _, payload = data.partition(b"\r\n\r\n")
    lines = header_block.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    return status, headers, payload


def _token(server: ServerProcess) -> str:
    assert server.token is not None
    return server.token


@pytest.mark.parametrize(
    "target",
    [
        f"{BASE}/a/%2e%2e/b",
        f"{BASE}/a/%2E%2E",
        f"{BASE}/a/../b",
        f"{BASE}/a/./b",
        f"{BASE}/a%00b",
        f"{BASE}/a%2F..%2Fb",
    ],
)
def test_dot_segments_and_control_characters_are_refused(
    server: ServerProcess, target: str
) -> None:
    status, headers, payload = _raw(
        server, f"GET {target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {_token(server)}"
    )
    assert status == 400, payload
    assert json.loads(payload)["error"]["code"] == "invalid_request"
    assert headers["content-type"] == "application/json"


@pytest.mark.parametrize("encoded", ["%252F", "%2562"])
def test_a_path_is_percent_decoded_once(server: ServerProcess, encoded: str) -> None:
    """``%252F`` is the text ``%2F``, not a ``/``: decoded twice, it read another secret."""
    auth = f"Authorization: Bearer {_token(server)}"
    status, _, payload = _raw(server, f"GET {BASE}{encoded}x HTTP/1.1\r\nHost: x\r\n{auth}")
    assert status == 400, payload
    assert "may only contain" in json.loads(payload)["error"]["message"]
    status, _, payload = _raw(server, f"GET {BASE}%2Fx HTTP/1.1\r\nHost: x\r\n{auth}")
    assert status == 404, payload  # decoded once: medessence/development/database/x


def test_headers_request_id_and_both_token_headers(server: ServerProcess) -> None:
    token = _token(server)
    with httpx.Client(base_url=server.addr) as http:
        put = http.put(
            f"{BASE}/rsgi-app",
            json={"fields": {"username": "u", "password": "Kx7#mQ2&vL9!pR4@wT6^zB1*"}},
            headers={"X-Medsecrets-Token": token, "X-Request-Id": "my-request-1"},
        )
        assert put.status_code == 200, put.text
        assert put.headers["x-request-id"] == "my-request-1"
        got = http.get(f"{BASE}/rsgi-app", headers={"Authorization": f"Bearer {token}"})
        assert got.status_code == 200
        assert got.json()["fields"]["username"] == "u"
        assert got.headers["cache-control"] == "no-store"
        bad_id = http.get(
            f"{BASE}/rsgi-app",
            headers={"Authorization": f"Bearer {token}", "X-Request-Id": "not ok!"},
        )
        assert bad_id.headers["x-request-id"] != "not ok!"
        assert http.get(f"{BASE}/rsgi-app", headers={"Authorization": "Basic x"}).status_code == 401
        assert http.delete("/v1/openapi.json").status_code == 405
        assert http.get("/v1/openapi.json").json()["openapi"].startswith("3.")


def test_client_address_reaches_the_audit_log(server: ServerProcess) -> None:
    token = _token(server)
    with httpx.Client(base_url=server.addr) as http:
        put = http.put(
            f"{BASE}/rsgi-audit",
            json={"fields": {"username": "audited"}},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert put.status_code == 200, put.text
        got = http.get(  # a success: its records are durable before the answer leaves
            f"{BASE}/rsgi-audit",
            headers={"Authorization": f"Bearer {token}", "X-Request-Id": "rsgi-audit-1"},
        )
        assert got.status_code == 200
    log = server.data_dir / "audit" / "audit.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines() if "rsgi-audit-1" in line]
    assert records, "no audit record for the request"
    assert {r["remote"] for r in records} == {"127.0.0.1"}


def test_a_streamed_body_over_the_limit_is_413(server: ServerProcess) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(20):
            yield b"a" * 65536  # 1.25 MiB in all, no Content-Length: chunked

    with httpx.Client(base_url=server.addr) as http:
        response = http.put(
            f"{BASE}/rsgi-big",
            content=chunks(),
            headers={
                "Authorization": f"Bearer {_token(server)}",
                "Content-Type": "application/json",
            },
        )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_large"


def test_wrong_media_type_and_bad_json(server: ServerProcess) -> None:
    auth = f"Authorization: Bearer {_token(server)}"
    status, _, payload = _raw(
        server,
        f"PUT {BASE}/rsgi-x HTTP/1.1\r\nHost: x\r\n{auth}\r\n"
        "Content-Type: text/plain\r\nContent-Length: 2",
        b"{}",
    )
    assert status == 415, payload
    status, _, payload = _raw(
        server,
        f"PUT {BASE}/rsgi-x HTTP/1.1\r\nHost: x\r\n{auth}\r\n"
        "Content-Type: application/json\r\nContent-Length: 5",
        b"{nope",
    )
    assert status == 400
    assert json.loads(payload)["error"]["code"] == "invalid_json"
