"""The public surface of ``medsecrets.sdk`` is pinned."""

from __future__ import annotations

import medsecrets.sdk as sdk
from medsecrets.schema.secrets import SecretVersion


def test_public_names_are_pinned() -> None:
    assert sorted(sdk.__all__) == [
        "AsyncClient",
        "Client",
        "ClientCertificateError",
        "RequestTimedOut",
        "Secret",
        "SecretCache",
        "ServerError",
        "ServerUnavailableError",
        "UnexpectedResponseError",
    ]
    for name in sdk.__all__:
        assert getattr(sdk, name).__doc__
    assert sdk.Secret is SecretVersion
