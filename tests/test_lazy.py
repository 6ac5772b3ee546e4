"""PEP 562 lazy re-exports: packages load their modules on first use, never at import."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import types

import pytest

from medsecrets.lazy import resolve

# package -> third-party roots its import must not load
LAZY_PACKAGES = {
    "medsecrets.api": ("starlette", "httpx", "cryptography"),
    "medsecrets.auth": ("cryptography",),
    "medsecrets.barrier": ("cryptography",),
    "medsecrets.catalog": ("yaml",),
    "medsecrets.core": ("cryptography", "yaml"),
    "medsecrets.sdk": ("httpx", "asyncio", "cryptography", "yaml"),
    "medsecrets.seal": ("cryptography", "shamir_mnemonic", "boto3"),
    "medsecrets.storage": ("sqlite3", "psycopg"),
}


def test_resolve_loads_caches_and_refuses_unknown_names() -> None:
    package = types.ModuleType("medsecrets_probe_package")
    sys.modules[package.__name__] = package
    try:
        exports = {"dumps": "json"}
        assert resolve(package.__name__, exports, "dumps") is json.dumps
        assert package.dumps is json.dumps  # cached on the package
        with pytest.raises(AttributeError, match="no attribute 'loads'"):
            resolve(package.__name__, exports, "loads")
    finally:
        del sys.modules[package.__name__]


@pytest.mark.parametrize("name", sorted(LAZY_PACKAGES))
def test_every_exported_name_resolves(name: str) -> None:
    package = importlib.import_module(name)
    assert package.__all__ == sorted(package.__all__, key=_ruff_order)
    for export in package.__all__:
        assert getattr(package, export) is not None, f"{name}.{export}"
        assert export in dir(package)
    with pytest.raises(AttributeError):
        package.NoSuchThing  # noqa: B018


def _ruff_order(name: str) -> tuple[int, str]:
    """The isort-style order ruff keeps ``__all__`` in: constants, classes, functions."""
    if name.isupper():
        return (0, name)
    return (1, name) if name[0].isupper() else (2, name)


@pytest.mark.parametrize("name", sorted(LAZY_PACKAGES))
def test_importing_the_package_loads_none_of_its_modules(name: str) -> None:
    probe = f"import {name}, json, sys\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = set(json.loads(done.stdout.splitlines()[-1]))
    heavy = {m for m in loaded if m.split(".")[0] in LAZY_PACKAGES[name]}
    assert not heavy, heavy
    submodules = {m for m in loaded if m.startswith(f"{name}.")}
    assert not submodules, submodules


def test_the_cli_entry_point_imports_no_client_or_server_module() -> None:
    """``medsecrets --help`` and offline commands pay for neither the SDK nor the server."""
    probe = "import medsecrets.cli.app, json, sys\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = set(json.loads(done.stdout.splitlines()[-1]))
    heavy = ("httpx", "cryptography", "yaml", "starlette", "granian", "boto3")
    assert not {m for m in loaded if m.split(".")[0] in heavy}
    ours = {m.split(".")[1] for m in loaded if m.startswith("medsecrets.")}
    layers = {"api", "barrier", "core", "engines", "keys", "sdk", "seal", "server", "storage"}
    assert not ours & (layers | {"store"}), ours & layers
