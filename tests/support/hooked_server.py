"""A real two-worker server (``python -m medsecrets.server --dev`` with
``MEDSECRETS_WORKERS=2``) started with a ``sitecustomize`` hook, for the tests of a
multi-worker server's start and stop (``tests/server/test_worker_stop_*.py``).

The hook is Python source put in the test's temporary directory and found first on the
server's ``PYTHONPATH``, so every process of the server (its workers too) runs it at
start. A test's hook only marks or slows a step (it changes no behaviour under test);
``MARK`` defines ``mark(name)``, which leaves the file ``<name>-<pid>`` in ``marks``, and
``wait_go()``, which holds a step until the test calls ``Server.go`` (30 s at most): a
step held until the test did its part, however slowly a loaded machine runs the test.
The server's ``shutdown_grace_period`` is ``GRACE``, every wait is bounded by ``BOUND``,
far below it: a stop that is lost shows as a wait that times out.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from medsecrets.testing.serverproc import free_port

GRACE = "60"
"""The servers' ``shutdown_grace_period``: a stop that is lost waits for all of it."""

BOUND = 30.0
"""Every wait's safety net (seconds), well under ``GRACE``."""

MARK = """
import os
import time


def mark(name):
    open(os.path.join(os.environ["MARKS"], f"{name}-{os.getpid()}"), "w").close()


def wait_go():
    go = os.path.join(os.environ["MARKS"], "go")
    for _ in range(3000):  # 30 s at most
        if os.path.exists(go):
            return
        time.sleep(0.01)
"""


@dataclass
class Server:
    """A started hooked server: its process, its ``marks`` directory and its log (stdout
    and stderr, JSON lines)."""

    process: subprocess.Popen[bytes]
    marks: Path
    log: Path

    def text(self) -> str:
        """Everything the server wrote so far."""
        return self.log.read_text()

    def wait_marks(self, prefix: str, count: int) -> list[Path]:
        """The marks named ``prefix...``, sorted, once there are ``count`` of them; the
        test fails if the server exits first or ``BOUND`` passes."""
        deadline = time.monotonic() + BOUND
        while True:
            found = sorted(m for m in self.marks.iterdir() if m.name.startswith(prefix))
            if len(found) >= count:
                return found
            assert self.process.poll() is None, self.text()[-2000:]
            assert time.monotonic() < deadline, f"no {count} {prefix!r} marks"
            time.sleep(0.05)

    def wait_log(self, line: str) -> None:
        """Wait until the log has ``line``; the test fails if the server exits first or
        ``BOUND`` passes."""
        deadline = time.monotonic() + BOUND
        while line not in self.text():
            assert self.process.poll() is None, self.text()[-2000:]
            assert time.monotonic() < deadline, f"no {line!r} in the log\n{self.text()[-2000:]}"
            time.sleep(0.05)

    def go(self) -> None:
        """Let the steps held by ``wait_go()`` go on."""
        (self.marks / "go").touch()

    def kill(self) -> None:
        """SIGKILL the server if it still runs, and reap it (a test's clean-up)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def start_hooked(tmp_path: Path, hook: str) -> Server:
    """Start a two-worker dev server (its monitor off) in ``tmp_path`` with ``hook`` as its
    ``sitecustomize``; it does not wait for the server to serve."""
    hook_dir = tmp_path / "hook"
    hook_dir.mkdir()
    (hook_dir / "sitecustomize.py").write_text(hook)
    marks = tmp_path / "marks"
    marks.mkdir()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(hook_dir), *sys.path]),
        "MARKS": str(marks),
        "MEDSECRETS_WORKERS": "2",
        "MEDSECRETS_SHUTDOWN_GRACE_PERIOD": GRACE,
        "MEDSECRETS_MONITOR_ENABLED": "false",
    }
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "medsecrets.server", "--dev", "--data-dir",
             str(tmp_path / "d"), "--listen", f"127.0.0.1:{free_port()}"],
            env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    return Server(process, marks, log)
