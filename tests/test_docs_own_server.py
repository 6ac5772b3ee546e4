"""README.md's "A server of your own" works as written: server, init, restart, unseal, seal.

The commands are read from the README (its port replaced by a free one) and run against a real
server process started from the README's own command line, in a scratch directory.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from medsecrets.testing.serverproc import free_port

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
README_PORT = "127.0.0.1:8202"


def own_server_blocks(port: int) -> tuple[str, list[str]]:
    """The README's server command line and the commands of the second shell."""
    section = README.split("\n## A server of your own\n", 1)[1]
    section = section.split("\n## ", 1)[0].replace(README_PORT, f"127.0.0.1:{port}")
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    assert len(blocks) == 2, "the section has the server's shell and the second shell"
    server_line, *rest = blocks[0].strip().splitlines()
    assert not rest
    commands = [line.split("  #", 1)[0].strip() for line in blocks[1].splitlines()]
    return server_line, [c for c in commands if c]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDSECRETS_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


class Server:
    """The README's server command line, run by bash in ``cwd``."""

    def __init__(self, line: str, cwd: Path, env: dict[str, str], port: int) -> None:
        self.log = cwd / f"server-{time.monotonic_ns()}.log"
        with self.log.open("w") as sink:
            self.proc = subprocess.Popen(
                ["bash", "-c", line],
                cwd=cwd,
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.url = f"http://127.0.0.1:{port}/v1/sys/health"

    def wait_listening(self) -> None:
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, self.log.read_text()[-2000:]
            try:
                httpx.get(self.url, timeout=2)
                return
            except httpx.TransportError:
                assert time.monotonic() < deadline, self.log.read_text()[-2000:]
                time.sleep(0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def cli(
    command: str, env: dict[str, str], cwd: Path, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", command],
        check=False,
        cwd=cwd,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _printed(pattern: str, stdout: str) -> str:
    match = re.search(pattern, stdout, re.M)
    assert match is not None, f"{pattern!r} not in {stdout!r}"
    return match.group(1)


def unseal_with(shares: list[str], unseal: str, env: dict[str, str], cwd: Path) -> None:
    """Run the README's unseal command once per share, each read as the prompt reads it."""
    for i, share in enumerate(shares):
        done = cli(unseal, env, cwd, stdin=f"{share}\n")
        assert done.returncode == 0, done.stderr
        assert ("Unsealed." in done.stdout) == (i == len(shares) - 1), done.stdout


def test_the_section_is_found() -> None:
    server_line, commands = own_server_blocks(8202)
    assert "medsecrets server" in server_line and "--dev" not in server_line
    assert commands[0] == f"export MEDSECRETS_ADDR=http://{README_PORT}"
    assert commands[1].startswith("medsecrets operator init --shares")
    assert commands[2] == "medsecrets operator unseal"


@pytest.mark.slow
def test_a_server_of_your_own_as_the_readme_says(tmp_path: Path) -> None:
    port = free_port()
    server_line, (export, init, unseal) = own_server_blocks(port)
    env = _env()
    cli_env = dict(env, MEDSECRETS_ADDR=export.split("=", 1)[1])

    # without the audit device the README names, every request is refused as it says
    no_audit = re.sub(r"MEDSECRETS_AUDIT_FILE=\S+ ", "", server_line)
    server = Server(no_audit, tmp_path, env, port)
    try:
        server.wait_listening()
        refused = cli(init, cli_env, tmp_path)
        assert refused.returncode == 1
        assert refused.stderr.strip() == "error: audit unavailable: request refused"
    finally:
        server.stop()
    shutil.rmtree(tmp_path / "own")  # start as a reader would: nothing from that attempt

    server = Server(server_line, tmp_path, env, port)
    try:
        server.wait_listening()
        done = cli(init, cli_env, tmp_path)
        assert done.returncode == 0, done.stderr
        shares = re.findall(r"^Unseal share \d+: (.+)$", done.stdout, re.M)
        threshold = int(_printed(r"^Threshold: (\d+) of", done.stdout))
        token = _printed(r"^Root token: (\S+)$", done.stdout)
        assert len(shares) == int(init.split("--shares ")[1].split()[0])
        root_env = dict(cli_env, MEDSECRETS_TOKEN=token)
        provision = "medsecrets provision --env development"
        assert provision in " ".join(README.split())  # what the README suggests next
        assert cli(provision, root_env, tmp_path).returncode == 0
    finally:
        server.stop()

    server = Server(server_line, tmp_path, env, port)  # a restart: Shamir starts sealed
    try:
        server.wait_listening()
        assert cli("medsecrets secrets list", root_env, tmp_path).returncode == 5
        unseal_with(shares[:threshold], unseal, cli_env, tmp_path)
        assert cli("medsecrets operator seal", root_env, tmp_path).returncode == 0
        unseal_with(shares[-threshold:], unseal, cli_env, tmp_path)  # no restart needed
        listed = cli("medsecrets secrets list --env development -o json", root_env, tmp_path)
        assert listed.returncode == 0, listed.stderr
        assert '"medessence/development/auth"' in listed.stdout
    finally:
        server.stop()
