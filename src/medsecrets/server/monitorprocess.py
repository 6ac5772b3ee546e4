"""The shared monitor of a multi-worker server: one set of detectors over every worker.

``MonitorProcess`` (in the server process, before granian starts the workers)
starts ``python -m medsecrets.server.monitorprocess`` and keeps it running: a
monitor process that exits is started again (after 0.5 s, doubling to at most
10 s while it keeps failing), and the workers' links reconnect by themselves.
It gives the workers the socket's address and a random cookie through
``LINK_ENV`` (``server.monitorlink``); ``stop()`` ends the process (it saves the
detectors' state first) and removes its directory.

The monitor process itself reads its settings as one JSON line on stdin
(``socket``, ``cookie``, ``monitor``: ``auditprocess.monitor_settings``,
``log_level``, ``log_file``), listens on a Unix socket in a directory only the
server's user can enter, says ``ready`` on stdout, and serves until stdin
closes (the server stopped, or died: the kernel then also kills it). A
connection is admitted when its peer runs as the same user (``SO_PEERCRED``)
and its first 32 bytes are the cookie; anything else is closed unread. Then:

* ``("keys", hmac_key)`` / ``("forget",)``: the audit device's HMAC key, from
  which the key sealing the detectors' saved state is derived (as in an audit
  process);
* ``("events", [packed events])``: the detectors run over them at once
  (``auditprocess.observer``: the same code as an audit process's), and the
  alerts they raise go back *to the connection that sent the events* as
  ``("alerts", docs, counts)``; that worker dispatches and audits them.

One thread serves every connection in turn, so the detectors see each
worker's batches whole and one after the other. A worker that does not read
its alerts (over 16 MiB waiting) is disconnected.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import os
import select
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from typing import IO, Final, cast

from medsecrets.audit.channel import FrameError, FrameReader, Message, encode
from medsecrets.audit.record import Salter
from medsecrets.audit.sidecar import PackedEvent, Watcher, unpack_event
from medsecrets.logs import log_json
from medsecrets.server.auditprocess import observer
from medsecrets.server.monitorlink import COOKIE_BYTES, LinkAddress

__all__ = ["MonitorProcess", "main"]

_log = logging.getLogger("medsecrets.monitor")

_RESTART: Final = (0.5, 10.0)
_START_TIMEOUT: Final = 30.0
_MAX_OUT: Final = 16 << 20
_MAX_FRAME: Final = 64 << 20
_CREDENTIALS: Final = struct.Struct("3i")


class MonitorProcess:
    """The server's side (see module docstring)."""

    def __init__(
        self, monitor: Mapping[str, object], *, log_level: str, log_file: str | None
    ) -> None:
        self._directory = tempfile.mkdtemp(prefix="medsecrets-monitor-")  # 0700
        self.address = LinkAddress(
            os.path.join(self._directory, "monitor.sock"), os.urandom(COOKIE_BYTES)
        )
        self._config = json.dumps(
            {
                "socket": self.address.socket,
                "cookie": self.address.cookie.hex(),
                "monitor": dict(monitor),
                "log_level": log_level,
                "log_file": log_file,
            }
        )
        self._process: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # no restart while stopping
        self._keeper: threading.Thread | None = None
        self.restarts = 0

    def __repr__(self) -> str:
        pid = self._process.pid if self._process is not None else None
        return f"MonitorProcess(pid={pid}, restarts={self.restarts})"

    @property
    def pid(self) -> int | None:
        """The running monitor process's pid."""
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        """Start the monitor process, wait until it listens, and keep it running."""
        self._process = self._spawn()
        self._keeper = threading.Thread(target=self._keep, name="monitor-keeper", daemon=True)
        self._keeper.start()

    def stop(self, timeout: float = 5.0) -> None:
        """End the monitor process (it saves the detectors' state) and clean up."""
        with self._lock:
            self._stopping.set()
            process = self._process
        if process is not None:
            with contextlib.suppress(OSError):
                assert process.stdin is not None
                process.stdin.close()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._keeper is not None:
            self._keeper.join(timeout)
        shutil.rmtree(self._directory, ignore_errors=True)

    def _spawn(self) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [sys.executable, "-m", "medsecrets.server.monitorprocess"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
        )
        assert process.stdin is not None and process.stdout is not None
        try:
            process.stdin.write(self._config.encode() + b"\n")
            process.stdin.flush()
            ready = _read_line(process.stdout, _START_TIMEOUT)
        except OSError:
            ready = b""
        if ready.strip() != b"ready":
            process.kill()
            process.wait()
            raise RuntimeError("the monitor process did not start")
        return process

    def _keep(self) -> None:
        """Start the monitor process again whenever it exits before ``stop``."""
        wait = _RESTART[0]
        while True:
            process = self._process
            assert process is not None
            started = time.monotonic()
            code = process.wait()
            if self._stopping.is_set():
                return
            if time.monotonic() - started > 60:  # it ran a while: not a failing start
                wait = _RESTART[0]
            _log.error("monitor process exited (status %s): starting it again", code)
            while True:
                if self._stopping.wait(wait):
                    return
                wait = min(wait * 2, _RESTART[1])
                with self._lock:
                    if self._stopping.is_set():
                        return
                    try:
                        self._process = self._spawn()
                    except (OSError, RuntimeError) as exc:
                        _log.error("monitor process: restart failed (%s)", type(exc).__name__)
                        continue
                self.restarts += 1
                break


def _read_line(stream: IO[bytes], timeout: float) -> bytes:
    """One line of ``stream`` within ``timeout`` s (``b""`` if none came)."""
    ready, _, _ = select.select([stream], [], [], timeout)
    return stream.readline() if ready else b""


# -- the monitor process --------------------------------------------------------------------


class _Peer:
    """One worker's connection."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.frames = FrameReader(sock.fileno(), chunk=1 << 20, max_frame=_MAX_FRAME)
        self.out = bytearray()


class _Keys:
    """The key material the workers sent last (``None``: sealed or not yet sent)."""

    def __init__(self) -> None:
        self.current: Salter | None = None

    def __call__(self) -> Salter | None:
        return self.current


def serve(settings: Mapping[str, object], stop_fd: int) -> int:
    """Serve the workers (see module docstring) until ``stop_fd`` reads end of file."""
    path = str(settings["socket"])
    cookie = bytes.fromhex(str(settings["cookie"]))
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        listener.bind(path)
    finally:
        os.umask(old)
    listener.listen(64)
    listener.setblocking(False)
    keys = _Keys()
    current: list[_Peer] = []

    def send(message: Message) -> None:
        if current:
            _queue(current[0], encode(message))

    watch = observer(cast("Mapping[str, object]", settings["monitor"]), send, keys)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, None)
    selector.register(stop_fd, selectors.EVENT_READ, "stop")
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    peers: dict[int, _Peer] = {}
    try:
        while True:
            for key, mask in selector.select(timeout=1.0):
                if key.data == "stop":
                    if not os.read(stop_fd, 4096):
                        return 0
                    continue
                if key.data is None:
                    _admit(listener, cookie, selector, peers)
                    continue
                peer = cast(_Peer, key.data)
                if mask & selectors.EVENT_WRITE and not _flush(peer):
                    _drop(peer, selector, peers)
                    continue
                if mask & selectors.EVENT_READ:
                    current[:] = [peer]
                    ok = _take(peer, keys, watch)
                    current.clear()
                    if not ok:
                        _drop(peer, selector, peers)
                        continue
                if peer.out:
                    if len(peer.out) > _MAX_OUT:
                        _log.error("monitor process: a worker does not read its alerts: dropped")
                        _drop(peer, selector, peers)
                        continue
                    selector.modify(peer.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, peer)
                else:
                    selector.modify(peer.sock, selectors.EVENT_READ, peer)
    finally:
        for peer in list(peers.values()):
            _drop(peer, selector, peers)
        listener.close()
        with contextlib.suppress(OSError):
            os.unlink(path)
        try:
            watch.close()
        except Exception as exc:  # ending never fails on the detectors' account
            _log.error(
                "monitor process: saving the detectors' state failed (%s)", type(exc).__name__
            )


def _admit(
    listener: socket.socket,
    cookie: bytes,
    selector: selectors.BaseSelector,
    peers: dict[int, _Peer],
) -> None:
    """Accept a connection from a worker of this server (same user, the cookie)."""
    try:
        sock, _ = listener.accept()
    except OSError:
        return
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CREDENTIALS.size)
        uid = _CREDENTIALS.unpack(creds)[1]
        sock.settimeout(2.0)
        presented = b""
        while len(presented) < COOKIE_BYTES:
            chunk = sock.recv(COOKIE_BYTES - len(presented))
            if not chunk:
                break
            presented += chunk
    except OSError:
        sock.close()
        return
    if uid != os.getuid() or not hmac.compare_digest(presented, cookie):
        _log.error("monitor process: refused a connection that is not a worker's")
        sock.close()
        return
    sock.setblocking(False)
    peer = _Peer(sock)
    peers[sock.fileno()] = peer
    selector.register(sock, selectors.EVENT_READ, peer)


def _take(peer: _Peer, keys: _Keys, watch: Watcher) -> bool:
    """Handle what the peer sent; ``False`` once its connection is over or broken."""
    try:
        messages = peer.frames.read_ready()
    except (EOFError, OSError, FrameError):
        return False
    for message in messages:
        kind = message[0]
        if kind == "events" and len(message) == 2 and type(message[1]) is list:
            try:
                events = [unpack_event(cast(PackedEvent, item)) for item in message[1]]
            except (TypeError, ValueError):
                _log.error("monitor process: malformed events from a worker: dropped")
                return False
            try:
                watch(events)
            except Exception as exc:  # the detectors never stop the monitor
                _log.error("monitor process: detectors failed (%s)", type(exc).__name__)
        elif kind == "keys" and len(message) == 2 and type(message[1]) is bytes:
            keys.current = Salter(message[1])
        elif kind == "forget":
            keys.current = None
        else:
            _log.error("monitor process: unknown message from a worker: dropped")
            return False
    return True


def _queue(peer: _Peer, frame: bytes) -> None:
    peer.out += frame
    _flush(peer)


def _flush(peer: _Peer) -> bool:
    """Send what waits for the peer; ``False`` if its connection broke."""
    while peer.out:
        try:
            sent = peer.sock.send(peer.out)
        except BlockingIOError:
            return True
        except OSError:
            return False
        del peer.out[:sent]
    return True


def _drop(peer: _Peer, selector: selectors.BaseSelector, peers: dict[int, _Peer]) -> None:
    with contextlib.suppress(KeyError, ValueError):
        selector.unregister(peer.sock)
    peers.pop(peer.sock.fileno(), None)
    peer.sock.close()


def main() -> None:
    """``python -m medsecrets.server.monitorprocess`` (started by ``MonitorProcess``)."""
    # The server ends this process by closing stdin: a Ctrl-C or a TERM sent to the whole
    # process group must not cut it short before it saved the detectors' state.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    log_json("warning")
    line = sys.stdin.buffer.readline()
    try:
        settings = json.loads(line)
    except ValueError:
        sys.exit(2)
    with contextlib.suppress(OSError):
        log_json(str(settings.get("log_level") or "warning"), file=settings.get("log_file"))
    sys.exit(serve(settings, sys.stdin.fileno()))


if __name__ == "__main__":
    main()
