"""The SDK's request builders send what the server's route parsers accept (no shared code)."""

from __future__ import annotations

import json

import pytest

from medsecrets.core.routes import route_table
from medsecrets.schema.seal import (
    AwsKmsSealConfig,
    KeyFileSealConfig,
    SealConfig,
    ShamirSealConfig,
    seal_type,
)
from medsecrets.sdk import endpoints as ep
from medsecrets.wire import to_wire

CONFIGS: list[SealConfig] = [
    ShamirSealConfig(),
    ShamirSealConfig(shares=1, threshold=1),
    KeyFileSealConfig("/var/lib/medsecrets/unseal.key"),
    AwsKmsSealConfig("alias/root"),
    AwsKmsSealConfig("k", region="eu-west-1", endpoint_url="http://127.0.0.1:5000"),
]


@pytest.mark.parametrize("config", CONFIGS, ids=repr)
def test_init_body_parses_on_the_server_as_the_same_config(config: SealConfig) -> None:
    call = ep.init(config)
    assert (call.method, call.path, call.auth, call.retry_safe) == (
        "POST",
        "/v1/sys/init",
        False,
        False,
    )
    body = json.loads(json.dumps(call.body))
    assert list(body["seal"]) == ["type", *to_wire(config)]
    spec = route_table("medessence")[("POST", "sys.init")]
    parsed = spec.parse(body)
    assert to_wire(parsed) == {"seal": {"type": seal_type(config), **to_wire(config)}}


def test_a_revoke_is_not_repeated_after_it_may_have_been_applied() -> None:
    """A retried revoke that had reached the server answers 404 for the revocation it made."""
    call = ep.token_revoke(accessor="a" * 32, token=None)
    assert (call.method, call.path, call.retry_safe) == ("POST", "/v1/auth/token/revoke", False)
    assert ep.token_lookup(accessor="a" * 32, token=None).retry_safe


def test_rekey_verify_and_cancel_reach_their_routes() -> None:
    """Verify is never repeated (a repeat after a lost answer finds nothing pending); the
    cancel is idempotent; the verify body parses on the server."""
    verify = ep.rekey_verify(("share one", "share two"))
    assert (verify.method, verify.path, verify.retry_safe) == (
        "POST",
        "/v1/sys/rekey/verify",
        False,
    )
    spec = route_table("medessence")[("POST", "sys.rekey.verify")]
    parsed = spec.parse(json.loads(json.dumps(verify.body)))
    assert [s.reveal() for s in parsed.shares] == ["share one", "share two"]
    cancel = ep.rekey_cancel()
    assert (cancel.method, cancel.path, cancel.retry_safe) == ("DELETE", "/v1/sys/rekey", True)
    assert "share" not in repr(verify)
