"""Crash safety: SIGKILL during concurrent HTTP writes never loses an acknowledged write.

Each cycle, four writers PUT new versions of their own secret as fast as the
server answers; after a random number of 2xx answers (1-24) the server process
gets SIGKILL while the writers are still writing. After the restart every
write that got a 2xx is read back by its version number with the same value.
The cycle count is ``CRASH_CYCLES`` (default 50). Servers are forked from a
preloaded helper (``ServerProcess(preload=True)``) so a restart costs the
server's own start, not the interpreter's imports.
"""

from __future__ import annotations

import os
import random
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from medsecrets.testing.serverproc import ServerProcess

WRITERS = 4


@dataclass(frozen=True, slots=True)
class Ack:
    path: str
    version: int
    value: str


class Writers:
    """Writer threads that record every acknowledged write."""

    def __init__(self, server: ServerProcess, cycle: int, target: int) -> None:
        self.server = server
        self.cycle = cycle
        self.target = target
        self.acks: list[Ack] = []
        self.errors: list[str] = []
        self.reached = threading.Event()
        self.lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self.write, args=(i,), daemon=True) for i in range(WRITERS)
        ]

    def write(self, writer: int) -> None:
        path = f"medessence/crash/ai-providers/c{self.cycle}-w{writer}"
        headers = {"X-Medsecrets-Token": str(self.server.token)}
        with httpx.Client(base_url=self.server.addr, headers=headers, timeout=30) as client:
            while True:
                value = os.urandom(16).hex()
                try:
                    response = client.put(
                        f"/v1/secrets/{path}", json={"fields": {"azure_cognitive_key": value}}
                    )
                except httpx.TransportError:
                    return  # the server is gone
                if response.status_code != 200:
                    with self.lock:
                        self.errors.append(f"{response.status_code} {response.text[:200]}")
                    self.reached.set()
                    return
                version = response.json()["version"]["number"]
                with self.lock:
                    self.acks.append(Ack(path, version, value))
                    if len(self.acks) >= self.target:
                        self.reached.set()

    def run_until_killed(self) -> None:
        for thread in self.threads:
            thread.start()
        assert self.reached.wait(120), "the writers got no answers"
        self.server.kill(signal.SIGKILL)
        for thread in self.threads:
            thread.join(60)
            assert not thread.is_alive()


def _check(client: httpx.Client, acks: list[Ack]) -> None:
    for ack in acks:
        read = client.get(f"/v1/secrets/{ack.path}", params={"version": ack.version})
        assert read.status_code == 200, (ack, read.text)
        assert read.json()["fields"] == {"azure_cognitive_key": ack.value}, ack


@pytest.mark.slow
def test_sigkill_during_concurrent_writes_keeps_every_acknowledged_write(tmp_path: Path) -> None:
    cycles = int(os.environ.get("CRASH_CYCLES", "50"))
    rng = random.Random(0x5EC2E7)
    every: list[Ack] = []
    data, logs = tmp_path / "data", tmp_path / "logs"
    with ServerProcess(data, log_dir=logs, preload=True) as server:
        for cycle in range(cycles):
            writers = Writers(server, cycle, target=rng.randint(1, 24))
            writers.run_until_killed()
            assert writers.errors == []
            assert server.returncode == -signal.SIGKILL
            server.restart()
            headers = {"X-Medsecrets-Token": str(server.token)}
            with httpx.Client(base_url=server.addr, headers=headers, timeout=30) as client:
                _check(client, writers.acks)
            every += writers.acks
        with httpx.Client(base_url=server.addr, headers=headers, timeout=30) as client:
            _check(client, every)
    assert len(every) >= cycles
