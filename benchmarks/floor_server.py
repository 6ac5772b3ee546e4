"""The durable-audit floor: the least a durably audited read can cost on our server stack.

``python benchmarks/floor_server.py PORT BODY_FILE LOG_FILE`` serves every request
with the bytes of ``BODY_FILE`` through granian's RSGI interface (our transport, one
worker) after the request's record is durable: each loop iteration's records go as one
``marshal`` frame over a pipe to a child process, which renders each as two JSON lines (a
request and a response record: ``orjson``, an HMAC-SHA256 of the token, a SHA-256 chain),
appends a batch to ``LOG_FILE``, ``fdatasync``s it and answers how many it wrote; the
answer waits for that. Nothing else: no token check, no storage, no metrics, no access
log. It is the ceiling of ``medsecrets``'s audited read in ``benchmarks.http`` (the same
machine, transport, load and durability) and a test bed for the audit channel's design.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import hmac
import marshal
import os
import struct
import subprocess
import sys
import time
from typing import Any

_LENGTH = struct.Struct("<I")
_KEY = b"medsecrets-benchmark-floor-hmac-k"


def _child(requests: int, answers: int, log_file: str) -> None:
    """Render, append and fdatasync what arrives on ``requests``; answer counts on ``answers``."""
    import orjson

    out = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    prev, seq, pending = "0" * 64, 0, b""
    while data := os.read(requests, 1 << 20):
        pending += data
        lines: list[bytes] = []
        done = 0
        while len(pending) >= _LENGTH.size:
            (size,) = _LENGTH.unpack_from(pending)
            if len(pending) < _LENGTH.size + size:
                break
            items = marshal.loads(pending[_LENGTH.size : _LENGTH.size + size])
            pending = pending[_LENGTH.size + size :]
            for at, path, token, agent, remote in items:
                accessor = hmac.new(_KEY, token.encode(), hashlib.sha256).hexdigest()
                for kind in ("request", "response"):
                    seq += 1
                    record = {
                        "prev": prev,
                        "seq": seq,
                        "kind": kind,
                        "time": at,
                        "accessor": "hmac-sha256:" + accessor,
                        "remote": remote,
                        "user_agent": agent,
                        "operation": "secrets.read",
                        "path": path,
                    }
                    line = orjson.dumps(record)
                    prev = hashlib.sha256(line).hexdigest()
                    lines.append(line[:-1] + b',"hash":"' + prev.encode() + b'"}\n')
                done += 1
        if lines:
            os.write(out, b"".join(lines))
            os.fdatasync(out)
            os.write(answers, _LENGTH.pack(done))


class _Audit:
    """The server's side: records queued per loop iteration, futures answered in order."""

    def __init__(self, log_file: str) -> None:
        to_child, self._requests = os.pipe()
        self._answers, from_child = os.pipe()
        self._child = subprocess.Popen(
            [sys.executable, __file__, "child", str(to_child), str(from_child), log_file],
            pass_fds=(to_child, from_child),
        )
        os.close(to_child)
        os.close(from_child)
        self._queued: list[tuple[float, str, str, str, str]] = []
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()
        self._unread = b""
        self._loop: asyncio.AbstractEventLoop | None = None

    def record(self, item: tuple[float, str, str, str, str]) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
            loop.add_reader(self._answers, self._answered)
        if not self._queued:
            loop.call_soon(self._send)
        self._queued.append(item)
        future = loop.create_future()
        self._waiting.append(future)
        return future

    def _send(self) -> None:
        frame = marshal.dumps(self._queued)
        self._queued = []
        data = _LENGTH.pack(len(frame)) + frame
        while data:
            data = data[os.write(self._requests, data) :]

    def _answered(self) -> None:
        data = self._unread + os.read(self._answers, 1 << 16)
        while len(data) >= _LENGTH.size:
            (count,) = _LENGTH.unpack_from(data)
            data = data[_LENGTH.size :]
            for _ in range(count):
                self._waiting.popleft().set_result(None)
        self._unread = data


def _serve(port: int, body_file: str, log_file: str) -> None:
    from granian.constants import Interfaces
    from granian.http import HTTP1Settings
    from granian.server.embed import Server

    with open(body_file, "rb") as found:
        body = found.read()
    headers = [("content-type", "application/json")]
    audit = _Audit(log_file)

    async def app(scope: Any, protocol: Any) -> None:
        get = scope.headers.get
        token, agent = get("authorization", ""), get("user-agent", "")
        await audit.record((time.time(), scope.path, token, agent, scope.client))
        protocol.response_bytes(200, headers, body)

    server = Server(
        app,
        address="127.0.0.1",
        port=port,
        interface=Interfaces.RSGI,
        log_access=False,
        websockets=False,
        http1_settings=HTTP1Settings(header_read_timeout=30_000),
    )
    from medsecrets.wakeloop import new_loop  # the loop our server runs on

    with asyncio.Runner(loop_factory=new_loop) as runner:
        runner.run(server.serve())


if __name__ == "__main__":
    if sys.argv[1] == "child":
        _child(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    else:
        _serve(int(sys.argv[1]), sys.argv[2], sys.argv[3])
