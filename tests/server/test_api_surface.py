"""The HTTP surface through a real server: what a client sends as raw bytes and gets back.

Bodies a strict reader must refuse, the error shape of every answer (the
request timeout's too) and the statuses the OpenAPI document lists.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from medsecrets.testing.serverproc import ServerProcess

SECRET = "/v1/secrets/medessence/development/database"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("surface")
    with ServerProcess(base / "data", log_dir=base / "logs") as running:
        yield running


def _token(server: ServerProcess) -> str:
    assert server.token is not None
    return server.token


def _raw(
    server: ServerProcess, data: bytes, timeout: float = 10.0
) -> tuple[int, dict[str, str], bytes]:
    """Send ``data`` as is on a new connection; the status, headers and body of the answer."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def _request(
    server: ServerProcess, method: str, target: str, body: bytes = b"", *, token: bool = True
) -> tuple[int, dict[str, str], bytes]:
    head = [f"{method} {target} HTTP/1.1", "Host: x", "Connection: close"]
    if token:
        head.append(f"X-Medsecrets-Token: {_token(server)}")
    if body:
        head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return _raw(server, ("\r\n".join(head) + "\r\n\r\n").encode() + body)


def _error(status: int, headers: dict[str, str], body: bytes) -> str:
    """The code of an error answer, checking the documented shape."""
    assert headers["content-type"] == "application/json"
    answer = json.loads(body)
    assert set(answer) == {"error", "request_id"}, answer
    assert set(answer["error"]) == {"code", "message"}
    assert answer["request_id"] == headers["x-request-id"]
    code: str = answer["error"]["code"]
    return code


# -- request timeout -----------------------------------------------------------------------
def test_the_timeout_answer_carries_the_request_id_like_every_error(tmp_path: Path) -> None:
    """A body that never finishes: 503 ``timeout`` after ``request_timeout``, in the
    documented error shape (the request id in the body too, not only in the header)."""
    env = {"MEDSECRETS_REQUEST_TIMEOUT": "0.5"}
    with ServerProcess(tmp_path / "data", env=env, log_dir=tmp_path / "l") as slow:
        head = (
            f"PUT {SECRET}/never-finished HTTP/1.1\r\nHost: x\r\n"
            f"X-Medsecrets-Token: {_token(slow)}\r\nX-Request-Id: timed-out-1\r\n"
            "Content-Type: application/json\r\nContent-Length: 100\r\nConnection: close\r\n\r\n"
        )
        status, headers, payload = _raw(slow, head.encode() + b'{"fields":')
        assert status == 503, payload
        assert _error(status, headers, payload) == "timeout"
        assert json.loads(payload)["request_id"] == "timed-out-1"


# -- cas ---------------------------------------------------------------------------------
@pytest.mark.parametrize("cas", [-1, -5, 2**63, 2**64 - 1])
def test_a_cas_out_of_range_is_invalid_not_a_conflict(server: ServerProcess, cas: int) -> None:
    path = f"{SECRET}/cas-range"
    ok = _request(server, "PUT", path, b'{"fields":{"username":"a"}}')
    assert ok[0] == 200, ok
    body = json.dumps({"fields": {"username": "b"}, "cas": cas}).encode()
    status, headers, payload = _request(server, "PUT", path, body)
    assert status == 400, payload
    assert _error(status, headers, payload) == "invalid_request"
    assert b"body.cas" in payload


def test_cas_zero_and_the_current_version_still_work(server: ServerProcess) -> None:
    path = f"{SECRET}/cas-ok"
    first = _request(server, "PUT", path, b'{"fields":{"username":"a"},"cas":0}')
    assert first[0] == 200, first
    again = _request(server, "PUT", path, b'{"fields":{"username":"b"},"cas":0}')
    assert again[0] == 409 and _error(*again) == "cas_conflict"
    second = _request(server, "PUT", path, b'{"fields":{"username":"b"},"cas":1}')
    assert second[0] == 200, second


# -- repeated keys -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "body",
    [
        b'{"fields":{"username":"first"},"fields":{"username":"second"}}',
        b'{"fields":{"username":"first","username":"second"}}',
        b'{"fields":{"username":"a","\\u0075sername":"b"}}',  # the same key, escaped
        b'{"fields":{"username":"a"},"tags":{"t":"1","t":"2"}}',
        b'{"fields":{"url":"postgres://h:5432/db","url":"https://x:1/"}}',  # ':' in values too
        b'{"fields":{"username":"a"},"cas":0 , "cas":1}',
    ],
)
def test_a_key_repeated_within_an_object_is_invalid_json(
    server: ServerProcess, body: bytes
) -> None:
    """orjson keeps the last of repeated keys; a proxy or policy layer that keeps the first
    would see another request than the one run. 400, nothing written, no value echoed."""
    path = f"{SECRET}/dup-{abs(hash(body))}"
    status, headers, payload = _request(server, "PUT", path, body)
    assert status == 400, payload
    assert _error(status, headers, payload) == "invalid_json"
    assert b"repeats the key" in payload
    for value in (b"first", b"second", b"postgres", b"https"):
        assert value not in payload
    assert _request(server, "GET", path)[0] == 404


def test_a_repeated_key_deep_in_a_body_is_found(server: ServerProcess) -> None:
    tokens = b'{"paths":["medessence/development/"],"capabilities":["read"],"ttl":60,"paths":["*"]}'
    status, headers, payload = _request(server, "POST", "/v1/auth/token/create", tokens)
    assert status == 400 and _error(status, headers, payload) == "invalid_json", payload
    assert b"'paths'" in payload
    provision = (
        b'{"environment":"development","provided":{"database":{"host":"a","host":"b"}},'
        b'"categories":["database"]}'
    )
    status, headers, payload = _request(server, "POST", "/v1/provision", provision)
    assert status == 400 and _error(status, headers, payload) == "invalid_json", payload
    nested = b'{"x":[[{"a":1}],[{"b":{"c":[{"d":1,"d":2}]}}]]}'
    status, headers, payload = _request(server, "PUT", f"{SECRET}/dup-nested", nested)
    assert status == 400 and _error(status, headers, payload) == "invalid_json", payload


def test_bodies_with_colons_in_values_and_equal_keys_apart_are_fine(
    server: ServerProcess,
) -> None:
    """A ':' inside strings, and the same key in different objects, repeat nothing."""
    body = (
        b'{"fields":{"slack_webhook_url":"https://hooks.slack.invalid:443/services/T0:x",'
        b'"smtp_password":"pass:word:with:colons","monitoring_tokens":"a:b"},'
        rb'"tags":{"host":"a:b"},"description":"a \"quoted\": colon \u003a"}'
    )
    path = "/v1/secrets/medessence/development/external-services/colons"
    status, _, payload = _request(server, "PUT", path, body)
    assert status == 200, payload
    status, _, payload = _request(server, "GET", path)
    assert status == 200, payload
    assert json.loads(payload)["fields"]["smtp_password"] == "pass:word:with:colons"


# -- init --------------------------------------------------------------------------------
def test_init_refuses_a_relative_key_file_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store records the path as given: a relative one would name another file once the
    server starts from another working directory. 400 naming the field, nothing written."""
    cwd = tmp_path / "cwd"  # the server's working directory: a scratch one
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    config = tmp_path / "server.toml"
    config.write_text("tls_disable = true\n", encoding="utf-8")
    with ServerProcess(
        tmp_path / "data", dev=False, extra_args=("--config", str(config)), log_dir=tmp_path / "l"
    ) as server:
        for path in ("unseal.key", "keys/unseal.key", "./unseal.key", ""):
            body = json.dumps({"seal": {"type": "keyfile", "path": path}}).encode()
            status, headers, payload = _request(server, "POST", "/v1/sys/init", body, token=False)
            assert status == 400, payload
            assert _error(status, headers, payload) == "invalid_request"
            assert b"body.seal.path" in payload
        assert list(cwd.iterdir()) == []
        key = tmp_path / "unseal.key"
        body = json.dumps({"seal": {"type": "keyfile", "path": str(key)}}).encode()
        status, _, payload = _request(server, "POST", "/v1/sys/init", body, token=False)
        assert status == 200, payload
        assert key.is_file()


# -- OpenAPI -------------------------------------------------------------------------------
def test_the_openapi_document_lists_403_for_unseal_after_an_operator_seal(
    tmp_path: Path,
) -> None:
    with ServerProcess(tmp_path / "data", log_dir=tmp_path / "l") as fresh:
        status, headers, payload = _request(fresh, "GET", "/v1/openapi.json", token=False)
        assert status == 200
        unseal = json.loads(payload)["paths"]["/v1/sys/unseal"]["post"]["responses"]
        assert _request(fresh, "POST", "/v1/sys/seal")[0] == 200
        status, headers, payload = _request(fresh, "POST", "/v1/sys/unseal", b"{}", token=False)
        assert status == 403 and _error(status, headers, payload) == "permission_denied"
        assert "403" in unseal
        status, headers, payload = _request(fresh, "POST", "/v1/sys/unseal", b"{", token=False)
        assert status == 400 and "400" in unseal
