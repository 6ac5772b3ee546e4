"""``medsecrets.schema`` is a leaf: the standard library, ``errors`` and ``sensitive`` only."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import medsecrets.schema

SCHEMA_DIR = Path(medsecrets.schema.__file__).parent
ALLOWED = {"medsecrets.errors", "medsecrets.sensitive"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: relative import"
            assert node.module is not None
            names.add(node.module)
    return names


def _foreign(names: set[str]) -> set[str]:
    """The imports among ``names`` that are neither stdlib nor allowed medsecrets modules."""
    return {
        name
        for name in names
        if name not in ALLOWED
        and name != "__future__"
        and not name.startswith("medsecrets.schema")
        and name.split(".")[0] not in sys.stdlib_module_names
    }


def test_every_module_imports_only_stdlib_errors_and_sensitive() -> None:
    modules = sorted(SCHEMA_DIR.glob("*.py"))
    assert len(modules) >= 7
    for path in modules:
        assert not _foreign(_imports(path)), path.name


def test_the_check_notices_a_foreign_import() -> None:
    assert _foreign({"httpx", "medsecrets.wire", "datetime", "medsecrets.errors"}) == {
        "httpx",
        "medsecrets.wire",
    }


def _modules_after(code: str) -> set[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_importing_every_module_loads_nothing_else() -> None:
    names = [f"medsecrets.schema.{p.stem}" for p in sorted(SCHEMA_DIR.glob("*.py"))]
    loaded = _modules_after(f"import {', '.join(names)}") - _modules_after("pass")
    ours = {m for m in loaded if m.startswith("medsecrets")}
    assert ours - set(names) == {"medsecrets", "medsecrets.lazy", "medsecrets.schema", *ALLOWED}
    assert not {m for m in loaded - ours if m.split(".")[0] not in sys.stdlib_module_names}, (
        "a third-party package was imported"
    )
