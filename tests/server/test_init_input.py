"""Bad ``sys/init`` input is ``400 invalid_request`` naming the field, never a 500.

A real server process (not initialised): each body is refused, the store stays
uninitialised, no key file is created, and the server log has no traceback.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from medsecrets.errors import InvalidRequest
from medsecrets.schema.seal import AwsKmsSealConfig, KeyFileSealConfig
from medsecrets.seal.kms import AwsKmsClient
from medsecrets.testing.serverproc import ServerProcess

BAD_BODIES = [
    ({"type": "keyfile", "path": "/tmp/medsecrets-x\u0000y.key"}, "path"),
    ({"type": "keyfile", "path": "/tmp/medsecrets-x\ny.key"}, "path"),
    ({"type": "keyfile", "path": "/" + "x" * 5000}, "path"),
    ({"type": "awskms", "key_id": "alias/x", "endpoint_url": "not a url"}, "endpoint_url"),
    ({"type": "awskms", "key_id": "alias/x", "endpoint_url": "ftp://kms.local"}, "endpoint_url"),
    ({"type": "awskms", "key_id": "alias/x", "endpoint_url": "http://h:99999"}, "endpoint_url"),
    ({"type": "awskms", "key_id": "alias/x", "endpoint_url": "http://u:p@h"}, "endpoint_url"),
    ({"type": "awskms", "key_id": "alias/x", "endpoint_url": "http://a_b..c"}, "endpoint_url"),
    ({"type": "awskms", "key_id": "alias/x", "region": "../../x"}, "region"),
    ({"type": "awskms", "key_id": "alias/x", "region": "-us"}, "region"),
    ({"type": "awskms", "key_id": "alias/x", "region": "US-EAST-1"}, "region"),
    ({"type": "awskms", "key_id": "alias/x\u0000"}, "key_id"),
    ({"type": "awskms", "key_id": "a b"}, "key_id"),
]


def test_every_bad_init_field_is_a_400_naming_it(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    config.write_text("tls_disable = true\n")
    logs = tmp_path / "logs"
    with (
        ServerProcess(
            tmp_path / "data", dev=False, extra_args=["--config", str(config)], log_dir=logs
        ) as server,
        httpx.Client(timeout=30) as client,
    ):
        for seal, field in BAD_BODIES:
            answer = client.post(  # ASCII JSON: a lone surrogate goes as its escape
                f"{server.addr}/v1/sys/init",
                content=json.dumps({"seal": seal}),
                headers={"Content-Type": "application/json"},
            )
            assert answer.status_code == 400, (seal, answer.text)
            error = answer.json()["error"]
            assert error["code"] == "invalid_request"
            assert field in error["message"], (seal, error)
        status = client.get(f"{server.addr}/v1/sys/seal-status").json()
        assert status["initialized"] is False
    assert not list(Path("/tmp").glob("medsecrets-x*"))
    text = "".join(p.read_text(errors="replace") for p in logs.rglob("*") if p.is_file())
    assert "Traceback" not in text


@pytest.mark.parametrize(
    ("region", "endpoint"), [("../../x", None), ("us-east-1", "not a url"), ("-x", None)]
)
def test_the_kms_client_refuses_what_botocore_refuses_without_echoing_it(
    region: str, endpoint: str | None
) -> None:
    """The backstop behind the schema: botocore's ValueError/InvalidRegionError is an
    ``InvalidRequest`` that does not repeat the value."""
    with pytest.raises(InvalidRequest) as refused:
        AwsKmsClient(region=region, endpoint_url=endpoint)
    assert region not in refused.value.message or region == "us-east-1"
    assert endpoint is None or endpoint not in refused.value.message


def test_the_cli_and_the_api_share_the_rules() -> None:
    with pytest.raises(InvalidRequest, match=r"^path: "):
        KeyFileSealConfig("/tmp/a\x00b")
    with pytest.raises(InvalidRequest, match=r"^path: "):
        KeyFileSealConfig("/tmp/\ud800")  # (the API refuses such JSON before: invalid_json)
    with pytest.raises(InvalidRequest, match=r"^key_id: "):
        AwsKmsSealConfig("alias/\ud800")
    with pytest.raises(InvalidRequest, match=r"^region: "):
        AwsKmsSealConfig("alias/x", region="../../x")
    with pytest.raises(InvalidRequest, match=r"^endpoint_url: "):
        AwsKmsSealConfig("alias/x", endpoint_url="not a url")
    assert AwsKmsSealConfig("alias/x", "eu-west-1", "http://[::1]:4566").region == "eu-west-1"
    assert AwsKmsSealConfig("alias/x", endpoint_url="https://kms.eu-west-1.amazonaws.com.")
