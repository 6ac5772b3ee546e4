"""`make run` on a fresh clone starts a usable server, and the README's tour works against it.

The tour is read from README.md itself (every ``sh`` and ``python`` block under "A short
tour"), so the README and this test cannot drift apart. It runs as a new user would: ``make run``
with the README's own way of choosing a port, the shell blocks in one bash session each (so the
README's ``. .venv/bin/activate`` and variables carry over, and a ``medsecrets`` that is not the
clone's is a failure), every Python snippet twice (a reader runs them again), then the seal the
README shows and the restart it says undoes it. A command whose comment starts with ``exit N``
must exit with N and say why in one ``error:`` line; every other must succeed. The clone gets its
own virtual environment from ``make run`` (pip's cache keeps that quick after the first time).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from medsecrets.testing.serverproc import EXPORT_LINE, free_port

ROOT = Path(__file__).resolve().parents[1]

_EXPECTED_EXIT = re.compile(r"^exit (\d+)\b")
_PORT_ARGS = re.compile(r"`make run\s+ARGS='--listen 127\.0\.0\.1:(\d+)'`")


@dataclass(frozen=True)
class Command:
    """One line of a README shell block and the exit code its comment promises (0 if none)."""

    line: str
    exit_code: int


def readme_section(readme: str, title: str) -> str:
    """The text of the ``## title`` section, up to the next ``## `` heading."""
    return readme.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def shell_commands(block: str) -> list[Command]:
    """The commands of one ``sh`` block, their comments read for an ``exit N``."""
    commands = []
    for raw in block.splitlines():
        line, _, comment = raw.partition("  #")
        if line.strip():
            expected = _EXPECTED_EXIT.match(comment.strip())
            commands.append(Command(line.strip(), int(expected.group(1)) if expected else 0))
    return commands


def tour_blocks(readme: str) -> tuple[list[list[Command]], list[str]]:
    """The shell blocks and the Python snippets of the README's tour, in order."""
    section = readme_section(readme, "A short tour")
    shells = [shell_commands(b) for b in re.findall(r"```sh\n(.*?)```", section, re.S)]
    snippets = re.findall(r"```python\n(.*?)```", section, re.S)
    assert shells and snippets
    return shells, snippets


def make_run_args(readme: str, port: int) -> str:
    """The README's ``make run ARGS=...`` for another port, with ``port`` in it."""
    match = _PORT_ARGS.search(" ".join(readme.split()))
    assert match is not None, "README.md no longer says how to run on another port"
    return shlex.split(match.group(0).strip("`"))[2].replace(match.group(1), str(port))


def test_tour_blocks_are_found() -> None:
    readme = (ROOT / "README.md").read_text()
    shells, snippets = tour_blocks(readme)
    tour = shells[0]
    assert len(tour) >= 5
    assert tour[0].line == ". .venv/bin/activate"  # the second shell finds `medsecrets`
    assert all(re.match(r"(\S+=\S+ )*(medsecrets|echo|\.|\w+=\$\()", c.line) for c in tour)
    assert {c.exit_code for c in tour} >= {0, 2, 4}
    assert "Client" in snippets[0] and "SecretStore" in snippets[1]
    assert shells[1][0].line == "medsecrets operator seal" and shells[1][-1].exit_code == 5
    assert make_run_args(readme, 1234) == "ARGS=--listen 127.0.0.1:1234"


def _user_path(tmp_path: Path) -> str:
    """PATH without any virtual environment, led by a ``medsecrets`` that only complains.

    The tour must find the clone's CLI through its own ``. .venv/bin/activate``, not through
    the environment this suite happens to run in.
    """
    stub_dir = tmp_path / "not-the-clone"
    stub_dir.mkdir()
    stub = stub_dir / "medsecrets"
    stub.write_text(
        "#!/bin/sh\necho 'error: this medsecrets is not the one of the clone' >&2\nexit 99\n"
    )
    stub.chmod(0o755)
    dirs = [
        d
        for d in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep)
        if d and not (Path(d).parent / "pyvenv.cfg").exists()
    ]
    return os.pathsep.join([str(stub_dir), *dirs])


def run_shell_block(
    commands: list[Command], *, cwd: Path, env: dict[str, str], scratch: Path
) -> None:
    """Run ``commands`` in one bash session, as typed; check each one's exit and stderr."""
    scratch.mkdir()
    script = ["set -o pipefail"]
    for i, command in enumerate(commands):
        out, err, rc = (scratch / f"{i}.{kind}" for kind in ("out", "err", "rc"))
        script.append(f"{{ {command.line}\n}} >{out} 2>{err} </dev/null; echo $? >{rc}")
    subprocess.run(["bash", "-c", "\n".join(script)], check=True, cwd=cwd, env=env, timeout=600)
    for i, command in enumerate(commands):
        code = int((scratch / f"{i}.rc").read_text())
        stderr = (scratch / f"{i}.err").read_text()
        assert code == command.exit_code, f"{command.line!r} exited {code}: {stderr}"
        assert "Traceback" not in stderr, f"{command.line!r}: {stderr}"
        if command.exit_code:  # a failure is one readable line
            errors = [line for line in stderr.splitlines() if not line.startswith("warning:")]
            assert len(errors) == 1 and errors[0].startswith("error: "), stderr


class MakeRun:
    """``make run`` in the clone, as the README says, its output in a file."""

    def __init__(self, clone: Path, args: str, env: dict[str, str], out: Path) -> None:
        self.out = out
        with out.open("w") as sink:
            self.proc = subprocess.Popen(
                ["make", "run", args],
                cwd=clone,
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def export_line(self, timeout: float) -> tuple[str, str]:
        """The address and token of the export line, once printed."""
        deadline = time.monotonic() + timeout
        while True:
            match = EXPORT_LINE.search(self.out.read_text())
            if match is not None:
                return match.group(1), match.group(2)
            assert self.proc.poll() is None, self.out.read_text()[-3000:]
            assert time.monotonic() < deadline, "make run did not print the export line"
            time.sleep(0.5)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


@pytest.mark.slow
def test_make_run_on_a_fresh_clone_serves_the_readme_tour(tmp_path: Path) -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    readme = (clone / "README.md").read_text()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDSECRETS_")}
    env.pop("VIRTUAL_ENV", None)
    env["PATH"] = _user_path(tmp_path)
    env["PYTHON"] = sys.executable  # the interpreter this suite runs on makes the clone's venv
    port = free_port()
    args = make_run_args(readme, port)
    server = MakeRun(clone, args, env, tmp_path / "make-run.out")
    try:
        addr, token = server.export_line(900)  # a first venv install may download packages
        assert addr == f"http://127.0.0.1:{port}"
        assert (clone / ".medsecrets").is_dir()  # the README's data directory
        tour_env = dict(env, MEDSECRETS_ADDR=addr, MEDSECRETS_TOKEN=token)  # the pasted line
        shells, snippets = tour_blocks(readme)
        tour, seal = shells
        run_shell_block(tour, cwd=clone, env=tour_env, scratch=tmp_path / "tour")
        python_dir = tmp_path / "python"
        python_dir.mkdir()
        for snippet in snippets:
            for _ in range(2):
                done = subprocess.run(
                    [str(clone / ".venv" / "bin" / "python"), "-c", snippet],
                    check=False,
                    cwd=python_dir,
                    env=tour_env,
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
                assert done.returncode == 0, done.stderr
                assert "**********" in done.stdout  # secrets print masked
        activated = [Command(". .venv/bin/activate", 0), *seal]
        run_shell_block(activated, cwd=clone, env=tour_env, scratch=tmp_path / "seal")
        server.stop(signal.SIGINT)  # Ctrl-C
        assert server.proc.returncode is not None
        server = MakeRun(clone, args, env, tmp_path / "make-run-again.out")
        assert server.export_line(120) == (addr, token)  # same data, same token
        cli = str(clone / ".venv" / "bin" / "medsecrets")
        done = subprocess.run(
            [cli, "secrets", "list", "--env", "test", "-o", "json"],
            check=False,
            cwd=clone,
            env=tour_env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr  # unsealed again, the tour's secrets kept
        assert '"medessence/test/auth"' in done.stdout
    finally:
        server.stop()
