from __future__ import annotations

import http.server
import threading
from typing import Any

import pytest

from medsecrets.errors import ProviderError
from medsecrets.seal.kms import AwsCredentials, AwsKmsClient
from medsecrets.sensitive import Sensitive
from medsecrets.testing.motoserver import MotoServer

from .conftest import CREDENTIALS, REGION

PLAINTEXT = b"KMS-CANARY-0123456789abcdef"


@pytest.fixture
def client(moto_server: MotoServer) -> AwsKmsClient:
    return AwsKmsClient(
        region=REGION, endpoint_url=moto_server.endpoint_url, credentials=CREDENTIALS
    )


def test_roundtrip_with_context(client: AwsKmsClient, boto_kms: Any) -> None:
    key_id = boto_kms.create_key()["KeyMetadata"]["KeyId"]
    blob = client.encrypt(key_id, Sensitive(PLAINTEXT), {"medsecrets": "test"})
    assert PLAINTEXT not in blob
    plain = client.decrypt(blob, {"medsecrets": "test"}, key_id=key_id)
    assert isinstance(plain, Sensitive) and plain.reveal() == PLAINTEXT
    assert client.decrypt(blob, {"medsecrets": "test"}).reveal() == PLAINTEXT


def test_failures_are_provider_errors_without_secrets(client: AwsKmsClient, boto_kms: Any) -> None:
    key_id = boto_kms.create_key()["KeyMetadata"]["KeyId"]
    blob = client.encrypt(key_id, Sensitive(PLAINTEXT), {"medsecrets": "a"})
    failures = []
    with pytest.raises(ProviderError) as wrong_context:
        client.decrypt(blob, {"medsecrets": "b"})
    failures.append(wrong_context.value)
    with pytest.raises(ProviderError) as unknown_key:
        client.encrypt("alias/does-not-exist", Sensitive(PLAINTEXT), {})
    failures.append(unknown_key.value)
    with pytest.raises(ProviderError) as corrupted:
        client.decrypt(blob[:-1] + bytes([blob[-1] ^ 1]), {"medsecrets": "a"})
    failures.append(corrupted.value)
    for exc in failures:
        assert exc.__cause__ is None
        assert "KMS" in str(exc)
        assert PLAINTEXT.decode() not in str(exc) and blob.hex() not in str(exc)


def test_unreachable_endpoint_is_a_provider_error() -> None:
    client = AwsKmsClient(
        region=REGION,
        endpoint_url="http://127.0.0.1:9",
        credentials=AwsCredentials("x", Sensitive("y")),
        timeout=2,
        max_attempts=1,
    )
    with pytest.raises(ProviderError):
        client.encrypt("k", Sensitive(PLAINTEXT), {})


def test_reprs_hide_credentials(client: AwsKmsClient) -> None:
    creds = AwsCredentials("AKIAEXAMPLE", Sensitive("wJalrXUtnFEMI-secret"), Sensitive("tok"))
    assert "wJalrXUtnFEMI-secret" not in repr(creds) and "tok'" not in repr(creds)
    assert "testing" not in repr(client)


def test_moto_server_lifecycle() -> None:
    server = MotoServer()
    with pytest.raises(RuntimeError):
        _ = server.endpoint_url
    with server:
        assert server.endpoint_url.startswith("http://127.0.0.1:")
    with pytest.raises(RuntimeError):
        _ = server.endpoint_url


class _Garbage(http.server.BaseHTTPRequestHandler):
    """A local HTTP peer answering every KMS call ``200`` with the server's ``body``."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        body: bytes = self.server.body  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.mark.parametrize(
    "body",
    [b"{}", b"not json", b'{"Plaintext": 5, "CiphertextBlob": 5}', b'{"Plaintext": "!!!"}'],
)
def test_a_kms_answering_garbage_is_a_provider_error(body: bytes) -> None:
    """A KMS (or something in its place) that answers 200 without a usable value: the
    caller gets ``ProviderError`` (502), not a ``KeyError`` or ``TypeError`` (a 500, a
    traceback at start)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Garbage)
    server.body = body  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        client = AwsKmsClient(
            region=REGION,
            endpoint_url=f"http://127.0.0.1:{server.server_port}",
            credentials=AwsCredentials("x", Sensitive("y")),
            timeout=5,
            max_attempts=1,
        )
        with pytest.raises(ProviderError, match="KMS Decrypt failed: malformed answer"):
            client.decrypt(b"blob", {"medsecrets": "root-key"}, key_id="k")
        with pytest.raises(ProviderError, match="KMS Encrypt failed: malformed answer"):
            client.encrypt("k", Sensitive(PLAINTEXT), {"medsecrets": "root-key"})
    finally:
        server.shutdown()
        server.server_close()
