"""`make run` on a fresh clone starts a usable server, and the README's tour works against it.

The tour is read from README.md itself (the ``sh`` block and the first ``python`` block under
"A short tour"), so the README and this test cannot drift apart. The clone gets its own
virtual environment from ``make run`` (pip's cache keeps that quick after the first time).
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

import pytest

from medsecrets.testing.serverproc import EXPORT_LINE, free_port

ROOT = Path(__file__).resolve().parents[1]


def tour_blocks(readme: str) -> tuple[list[str], list[str]]:
    """The shell commands and the Python snippets of the README's tour."""
    section = readme.split("## A short tour", 1)[1].split("\n## ", 1)[0]
    shell = re.search(r"```sh\n(.*?)```", section, re.S)
    snippets = re.findall(r"```python\n(.*?)```", section, re.S)
    assert shell is not None and snippets
    commands = [line.split("  #", 1)[0].strip() for line in shell.group(1).splitlines()]
    return [c for c in commands if c], snippets


def test_tour_blocks_are_found() -> None:
    commands, snippets = tour_blocks((ROOT / "README.md").read_text())
    assert len(commands) >= 5
    assert all(c.split()[0] in ("medsecrets", "echo") for c in commands)
    assert "Client" in snippets[0] and "SecretStore" in snippets[1]


@pytest.mark.slow
def test_make_run_on_a_fresh_clone_serves_the_readme_tour(tmp_path: Path) -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDSECRETS_")}
    env.pop("VIRTUAL_ENV", None)
    env["PYTHON"] = sys.executable  # the interpreter this suite runs on makes the clone's venv
    port = free_port()
    out = tmp_path / "make-run.out"
    with out.open("w") as sink:
        server = subprocess.Popen(
            ["make", "run", f"ARGS=--listen 127.0.0.1:{port}"],
            cwd=clone,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 900  # a first venv install may download packages
        match = None
        while match is None:
            assert server.poll() is None, out.read_text()[-3000:]
            assert time.monotonic() < deadline, "make run did not print the export line"
            time.sleep(0.5)
            match = EXPORT_LINE.search(out.read_text())
        addr, token = match.group(1), match.group(2)
        assert addr == f"http://127.0.0.1:{port}"
        assert (clone / ".medsecrets").is_dir()  # the README's data directory
        tour_env = dict(env, MEDSECRETS_ADDR=addr, MEDSECRETS_TOKEN=token)
        tour_env["PATH"] = f"{clone / '.venv' / 'bin'}:{env['PATH']}"
        commands, snippets = tour_blocks((clone / "README.md").read_text())
        for command in commands:
            done = subprocess.run(
                ["bash", "-c", command],
                check=False,
                cwd=clone,  # the second shell of the tour is in the repository, like make run
                env=tour_env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == 0, f"{command!r} failed: {done.stderr}"
            assert "Traceback" not in done.stderr
        for snippet in snippets:
            done = subprocess.run(
                [str(clone / ".venv" / "bin" / "python"), "-c", snippet],
                check=False,
                cwd=tmp_path,
                env=tour_env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == 0, done.stderr
            assert "**********" in done.stdout  # secrets print masked
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(10)
