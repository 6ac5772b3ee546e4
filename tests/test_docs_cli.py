"""docs/cli.md says what the CLI does: checked against a real dev server.

Each test reads the claim from the document (a table row of the "Commands" section, a quoted
message) and runs the commands it describes, so a change of either side shows here.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from medsecrets.auth import CAPABILITIES
from medsecrets.testing.serverproc import ServerProcess

ROOT = Path(__file__).resolve().parents[1]
CLI_MD = (ROOT / "docs" / "cli.md").read_text()


def command_row(command: str) -> str:
    """The row of the "Commands" table whose first cell starts with ``command``."""
    table = CLI_MD.split("\n## Commands\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith(f"| `{command}")]
    assert len(rows) == 1, f"docs/cli.md has {len(rows)} rows for {command!r}"
    return rows[0]


def cli(
    server: ServerProcess, *args: str, token: str | None = None, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    env: Mapping[str, str] = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MEDSECRETS_")},
        "MEDSECRETS_ADDR": server.addr,
        "MEDSECRETS_TOKEN": token or server.token or "",
    }
    return subprocess.run(
        [sys.executable, "-m", "medsecrets.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def one_error(done: subprocess.CompletedProcess[str], code: int) -> str:
    """The one ``error:`` line of a failure with exit ``code``."""
    assert done.returncode == code, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A dev server of the test's own (a key-file seal, `development` provisioned)."""
    with ServerProcess(tmp_path / "data", dev=True) as started:
        yield started


def _token(server: ServerProcess, *args: str) -> str:
    done = cli(server, "token", "create", *args, "-o", "json")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # -o json: no warning, as the document says
    token = json.loads(done.stdout)["token"]
    assert isinstance(token, str)
    return token


def test_token_create_lists_every_capability_the_server_knows() -> None:
    row = command_row("token create")
    listed = re.search(r"capabilities C \(([^:]*):", row)
    assert listed is not None, row
    assert re.findall(r"`(\w+)`", listed.group(1)) == list(CAPABILITIES)


def test_a_token_limited_to_a_path_lists_with_its_prefix_not_env(server: ServerProcess) -> None:
    row = command_row("secrets list")
    assert "`secrets list medessence/development/`, not `--env development`" in row
    reader = _token(server, "--path", "medessence/development/", "-c", "list")
    listed = cli(server, "secrets", "list", "medessence/development/", "-o", "json", token=reader)
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)) == 5
    refused = cli(server, "secrets", "list", "--env", "development", token=reader)
    assert one_error(refused, 4).startswith("error: permission denied")


def test_a_key_file_seal_is_undone_only_by_a_restart(server: ServerProcess) -> None:
    quoted = re.search(r"a share given is refused: `([^`]+)`", command_row("operator unseal"))
    assert quoted is not None
    assert cli(server, "operator", "seal").returncode == 0
    refused = cli(server, "operator", "unseal", "-", stdin="any share\n")
    assert quoted.group(1) in one_error(refused, 2)
    assert cli(server, "operator", "status", "-o", "json").stdout.count('"sealed": true') == 1
    server.stop()
    server.start()
    status = cli(server, "operator", "status", "-o", "json")
    assert json.loads(status.stdout)["sealed"] is False


def test_shown_once_warnings_are_in_table_output_only(server: ServerProcess) -> None:
    assert "with a warning on stderr in table output" in CLI_MD
    assert "`-o json` prints no warning" in CLI_MD
    table = cli(server, "token", "create", "--path", "medessence/", "-c", "read")
    assert table.returncode == 0, table.stderr
    assert table.stderr.startswith("WARNING: the token is shown ONCE")
    _token(server, "--path", "medessence/", "-c", "read")  # -o json: stderr empty
