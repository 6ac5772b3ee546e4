"""The public surface of ``medsecrets`` is pinned, resolves, and costs nothing to import."""

from __future__ import annotations

import json
import subprocess
import sys

import medsecrets

HEAVY = ("httpx", "starlette", "granian", "cryptography", "boto3", "yaml", "uvicorn")


def test_public_names_are_pinned() -> None:
    assert medsecrets.__all__ == [
        "AlreadyExistsError",
        "AlreadyInitializedError",
        "AsyncClient",
        "AuditFailure",
        "AuthenticationError",
        "AwsKmsSealConfig",
        "CasConflictError",
        "CatalogError",
        "Client",
        "ConfigError",
        "ConflictError",
        "DecryptionError",
        "InvalidRequest",
        "InvalidShareError",
        "KeyFileSealConfig",
        "LeaseLostError",
        "MedsecretsError",
        "NotFoundError",
        "NotInitializedError",
        "PermissionDenied",
        "ProviderError",
        "ScheduledForDeletion",
        "SealedError",
        "Secret",
        "SecretCache",
        "SecretStore",
        "ServerError",
        "ServerUnavailableError",
        "ShamirSealConfig",
        "StorageError",
        "StorageUnavailable",
        "TooLargeError",
        "UnexpectedResponseError",
        "ValidationError",
        "__version__",
    ]


def test_every_name_resolves_to_the_defining_object() -> None:
    import medsecrets.errors
    from medsecrets.schema.secrets import SecretVersion
    from medsecrets.sdk.aclient import AsyncClient
    from medsecrets.sdk.cache import SecretCache
    from medsecrets.sdk.client import Client
    from medsecrets.store import SecretStore

    for name in medsecrets.__all__:
        value = getattr(medsecrets, name)
        assert value is not None and (name == "__version__" or value.__doc__), name
    assert medsecrets.Client is Client
    assert medsecrets.AsyncClient is AsyncClient
    assert medsecrets.SecretCache is SecretCache
    assert medsecrets.SecretStore is SecretStore
    assert medsecrets.Secret is SecretVersion
    errors = set(medsecrets.errors.__all__)
    assert errors <= set(medsecrets.__all__)
    for name in errors:
        assert getattr(medsecrets, name) is getattr(medsecrets.errors, name)
        assert issubclass(getattr(medsecrets, name), medsecrets.MedsecretsError)
    assert issubclass(medsecrets.ServerUnavailableError, medsecrets.MedsecretsError)


def test_version_matches_the_package_metadata() -> None:
    from importlib.metadata import version

    assert medsecrets.__version__ == version("medsecrets")


def test_unknown_names_raise_attribute_error() -> None:
    assert not hasattr(medsecrets, "NoSuchThing")
    assert "Client" in dir(medsecrets)


def _modules_after(code: str) -> list[str]:
    """``sys.modules`` of a fresh interpreter after running ``code``."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    loaded: list[str] = json.loads(done.stdout.splitlines()[-1])
    return loaded


def _roots(modules: list[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


def test_import_medsecrets_loads_no_third_party_package() -> None:
    loaded = _modules_after("import medsecrets")
    assert not _roots(loaded) & set(HEAVY)
    ours = {m for m in loaded if m.startswith("medsecrets")}
    assert ours == {"medsecrets", "medsecrets.lazy"}


def test_the_probe_sees_heavy_imports() -> None:
    """The check above can fail: touching ``Client`` loads httpx."""
    loaded = _modules_after("import medsecrets\nmedsecrets.Client")
    assert "httpx" in _roots(loaded)
