"""The shared monitor of a multi-worker server: one set of detectors over every worker.

``MonitorProcess`` (in the server process, before granian starts the workers)
starts ``python -m medsecrets.server.monitorprocess`` and keeps it running: a
monitor process that exits is started again (after 0.5 s, doubling to at most
10 s while it keeps failing), and the workers' links reconnect by themselves.
It gives the workers the socket's address and a random cookie through
``LINK_ENV`` (``server.monitorlink``). The process sends a heartbeat (a byte on
its stdout, about every second, from its serving loop); one silent for
``hang_after`` s (10: hung, or stopped by ``SIGSTOP``) is killed (``SIGKILL``,
counted in ``hangs``) and started again like one that exited. ``stop()`` ends
the process and removes its directory: one that answers is given ``timeout`` s
to save the detectors' state; one still starting (a restart under way) or
silent for over 3 s is killed at once. A process that cannot start is a
``RuntimeError`` saying why (a socket path too long for ``AF_UNIX``: a shorter
``TMPDIR``).

The monitor process itself reads its settings as one JSON line on stdin
(``socket``, ``cookie``, ``monitor``: ``auditprocess.monitor_settings``,
``log_level``, ``log_file``, ``cookie_wait``), listens on a Unix socket in a
directory only the server's user can enter, says ``ready`` on stdout (or
``error <reason>``; heartbeats follow), and serves until stdin closes (the server stopped, or
died); then it removes the socket and the directory. A connection is admitted
when its peer runs as the same user (``SO_PEERCRED``) and its first 32 bytes,
within ``cookie_wait`` s (2), are the cookie; anything else is closed unread.
Cookies are read as they come, beside the workers' frames: a connection that
is slow to show one holds up nobody (at most 64 wait at once; more are closed).
Then, anything but these messages, of these shapes (an event of
``pack_event``'s types, a key of at least 32 bytes), closes the connection,
never the process:

* ``("keys", hmac_key)`` / ``("forget",)``: the audit device's HMAC key, from
  which the key sealing the detectors' saved state is derived (as in an audit
  process);
* ``("events", [packed events])``: the detectors run over them at once
  (``auditprocess.observer``: the same code as an audit process's), and the
  alerts they raise go back *to the connection that sent the events* as
  ``("alerts", docs, counts, number)``; that worker dispatches and audits them.
  Every other connection gets them as ``("noted", docs, counts)``: shown in its
  ``alerts list`` and deduplicated against, not sent again. When the sender's
  connection is gone (the worker died after sending its events) or it does not
  read, the first other connection that takes them gets them as ``alerts``
  instead (with none, the next one admitted), so an alert is not lost while the
  others take it for delivered;
* ``("ack", number)``: the worker took the ``alerts`` of that number (handed them
  to its dispatcher). The monitor keeps each ``alerts`` message until then (at
  most 1024 per connection, the oldest forgotten): when the connection ends
  first (the worker stopped with them unread, or died), they go as ``alerts`` to
  another connected worker (which delivers them though it had them noted:
  ``AlertDispatcher.note``), or, with none connected, to the next one admitted
  (at most 1024 wait). So delivery is at least once: a worker that stops between
  taking an alert and acknowledging it leaves it to be delivered twice.

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
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from typing import IO, Final, cast

from medsecrets.audit.channel import FrameError, FrameReader, Message, encode
from medsecrets.audit.packed import PackedEvent
from medsecrets.audit.record import Salter
from medsecrets.audit.sidecar import Watcher
from medsecrets.logs import log_json
from medsecrets.server.auditprocess import observer
from medsecrets.server.monitorlink import COOKIE_BYTES, LinkAddress

__all__ = ["MonitorProcess", "main"]

_log = logging.getLogger("medsecrets.monitor")

_RESTART: Final = (0.5, 10.0)
_START_TIMEOUT: Final = 30.0
_MAX_OUT: Final = 16 << 20
_MAX_FRAME: Final = 64 << 20
_CREDENTIALS: Final = struct.Struct("=iII")
"""``struct ucred``: pid (signed), uid and gid (unsigned)."""
_COOKIE_WAIT: Final = 2.0
"""Seconds a new connection has to show the whole cookie (``cookie_wait``)."""
_MAX_CANDIDATES: Final = 64
"""Connections showing their cookie at once; more are refused at once."""
_BEAT: Final = 1.0
"""Seconds between the monitor process's heartbeats (a byte on its stdout)."""
_HANG_AFTER: Final = 10.0
"""Seconds of silence after which the server kills a monitor process as hung."""
_SILENT: Final = 3 * _BEAT
"""Seconds of silence after which ``stop`` takes a monitor process for hung."""
_MAX_UNACKED: Final = 1024
"""Unacknowledged ``alerts`` messages kept per worker (``_Book``)."""


class MonitorProcess:
    """The server's side (see module docstring)."""

    def __init__(
        self,
        monitor: Mapping[str, object],
        *,
        log_level: str,
        log_file: str | None,
        cookie_wait: float = 2.0,
        hang_after: float = _HANG_AFTER,
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
                "cookie_wait": cookie_wait,
            }
        )
        self._hang_after = hang_after
        self._process: subprocess.Popen[bytes] | None = None
        self._ready = False
        """Whether ``_process`` said ``ready`` (it may hold detector state to save)."""
        self._heard = 0.0
        """When ``_process`` was last heard of (``time.monotonic``)."""
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # no process launched once stopping
        self._keeper: threading.Thread | None = None
        self.restarts = 0
        self.hangs = 0
        """Monitor processes killed because they stopped answering."""

    def __repr__(self) -> str:
        pid = self._process.pid if self._process is not None else None
        return f"MonitorProcess(pid={pid}, restarts={self.restarts})"

    @property
    def pid(self) -> int | None:
        """The running (or starting) monitor process's pid."""
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        """Start the monitor process, wait until it listens, and keep it running;
        ``RuntimeError`` (saying why, when the process could) if it did not start, its
        directory then removed."""
        try:
            self._launch()
        except BaseException:
            shutil.rmtree(self._directory, ignore_errors=True)
            raise
        self._keeper = threading.Thread(target=self._keep, name="monitor-keeper", daemon=True)
        self._keeper.start()

    def stop(self, timeout: float = 5.0) -> None:
        """End the monitor process and clean up; never starts another. A process that
        answers is given ``timeout`` s to save the detectors' state and exit; one still
        starting (a restart under way), or silent for over ``_SILENT`` s (hung), has no
        state to save or will not save it, and is killed at once."""
        self._stopping.set()
        with self._lock:  # a launch under way has registered its process
            process = self._process
        if process is not None:
            answering = self._ready and time.monotonic() - self._heard <= _SILENT
            _close(process.stdin)
            try:
                process.wait(timeout if answering else 0)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._keeper is not None:
            self._keeper.join(timeout)
        shutil.rmtree(self._directory, ignore_errors=True)

    def _launch(self) -> None:
        """Start a monitor process as ``_process`` and wait until it says ``ready``;
        ``RuntimeError`` (it then ended) if it does not, or if ``stop`` was called. The
        wait holds no lock: ``stop`` ends a process still starting."""
        with self._lock:
            if self._stopping.is_set():
                raise RuntimeError("the monitor process is stopping")
            process = subprocess.Popen(
                [sys.executable, "-m", "medsecrets.server.monitorprocess"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                close_fds=True,
                bufsize=0,
            )
            self._process, self._ready = process, False
        assert process.stdin is not None and process.stdout is not None
        try:
            config = memoryview(self._config.encode() + b"\n")
            while config:
                config = config[process.stdin.write(config) or 0 :]
            ready = _read_line(process.stdout.fileno(), _START_TIMEOUT)
        except (OSError, ValueError):  # ValueError: stop() closed the pipe meanwhile
            ready = b""
        if ready.strip() != b"ready":
            process.kill()
            process.wait()
            _close(process.stdin)
            _close(process.stdout)
            reason = ready.decode(errors="replace").strip()
            if reason.startswith("error "):
                raise RuntimeError(f"the monitor process did not start: {reason[6:]}")
            raise RuntimeError("the monitor process did not start")
        self._heard, self._ready = time.monotonic(), True

    def _keep(self) -> None:
        """Start the monitor process again whenever it exits, or is killed for being
        silent over ``hang_after`` s (``_watch``), before ``stop``."""
        wait = _RESTART[0]
        while True:
            process = self._process
            assert process is not None and process.stdout is not None
            started = time.monotonic()
            if self._watch(process.stdout.fileno()) and not self._stopping.is_set():
                self.hangs += 1
                _log.error("monitor process: silent for over %s s (hung): killed", self._hang_after)
                process.kill()
            code = process.wait()
            _close(process.stdin)  # its ends of the pipes: no descriptor kept per restart
            _close(process.stdout)
            if self._stopping.is_set():
                return
            if time.monotonic() - started > 60:  # it ran a while: not a failing start
                wait = _RESTART[0]
            _log.error("monitor process exited (status %s): starting it again", code)
            while True:
                if self._stopping.wait(wait):
                    return
                wait = min(wait * 2, _RESTART[1])
                try:
                    self._launch()
                except (OSError, RuntimeError) as exc:
                    if self._stopping.is_set():
                        return
                    _log.error("monitor process: restart failed (%s)", type(exc).__name__)
                    continue
                self.restarts += 1
                break

    def _watch(self, fd: int) -> bool:
        """Read the process's heartbeats until its stdout ends (``False``: it exited) or
        it is silent for ``hang_after`` s (``True``: hung, or stopped by a signal)."""
        while True:
            ready, _, _ = select.select([fd], [], [], self._hang_after)
            if not ready:
                return True
            try:
                if not os.read(fd, 4096):
                    return False
            except OSError:
                return False
            self._heard = time.monotonic()


def _close(stream: IO[bytes] | None) -> None:
    """Close one end of a pipe to a monitor process (already closed, or broken: fine)."""
    if stream is not None:
        with contextlib.suppress(OSError, ValueError):
            stream.close()


def _read_line(fd: int, timeout: float) -> bytes:
    """One line from ``fd`` within ``timeout`` s (``b""`` if none came; what follows the
    line, heartbeats, is dropped)."""
    deadline = time.monotonic() + timeout
    line = b""
    while b"\n" not in line:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        chunk = os.read(fd, 4096) if ready else b""
        if not chunk:
            return b""
        line += chunk
    return line.split(b"\n", 1)[0] + b"\n"


# -- the monitor process --------------------------------------------------------------------


_Alerts = tuple[object, object]
"""The docs and counts of one ``alerts`` message."""


class _Peer:
    """One worker's connection."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.frames = FrameReader(sock.fileno(), chunk=1 << 20, max_frame=_MAX_FRAME)
        self.out = bytearray()
        self.unacked: OrderedDict[int, _Alerts] = OrderedDict()
        """The ``alerts`` sent to it that it has not said it took, by number."""
        self.forgetting = False
        """Whether some of its unacknowledged alerts were forgotten (logged once)."""


class _Book:
    """The ``alerts`` messages given to workers to deliver until each says it took them
    (``("ack", number)``): those of a worker whose connection ends first (it stopped with
    them unread, or died) go to another connected worker, or, with none connected, to the
    next one admitted. At most ``_MAX_UNACKED`` are kept per worker, and as many for the
    next one; beyond that the oldest are forgotten, logged once a connection and once until
    a worker takes those waiting (a flood of lines, one an alert, would bury the cause)."""

    def __init__(self) -> None:
        self._next = 0
        self._waiting: deque[_Alerts] = deque()
        self._forgetting = False

    def give(self, peer: _Peer, alerts: _Alerts) -> bool:
        """Queue ``alerts`` for ``peer`` to deliver; whether it will have them (``_queue``)."""
        self._next += 1
        if not _queue(peer, encode(("alerts", *alerts, self._next))):
            return False
        peer.unacked[self._next] = alerts
        if len(peer.unacked) > _MAX_UNACKED:
            peer.unacked.popitem(last=False)
            if not peer.forgetting:
                peer.forgetting = True
                _log.error(
                    "monitor process: a worker does not acknowledge its alerts: the oldest"
                    " are forgotten (logged once a connection)"
                )
        return True

    def hand_over(
        self,
        gone: _Peer,
        peers: Mapping[int, _Peer | _Candidate],
        selector: selectors.BaseSelector,
    ) -> None:
        """Give what ``gone`` (dropped: no longer in ``peers``) did not acknowledge to the
        connected workers."""
        if gone.unacked:
            _log.warning(
                "monitor process: a worker left with alerts it had not taken: another"
                " worker delivers them"
            )
        self.keep(gone.unacked.values())
        gone.unacked.clear()
        self.hand_out(peers, selector)

    def keep(self, found: Iterable[_Alerts]) -> None:
        """Keep ``found`` for the next worker admitted (``hand_out``); beyond
        ``_MAX_UNACKED`` waiting, the oldest are forgotten (logged)."""
        self._waiting.extend(found)
        while len(self._waiting) > _MAX_UNACKED:
            self._waiting.popleft()
            if not self._forgetting:
                self._forgetting = True
                _log.error(
                    "monitor process: no worker to deliver alerts: the oldest are forgotten"
                    " (logged once until a worker takes them)"
                )

    def hand_out(
        self, peers: Mapping[int, _Peer | _Candidate], selector: selectors.BaseSelector
    ) -> None:
        """Give the alerts no worker took yet to the connected workers."""
        live = [p for p in peers.values() if isinstance(p, _Peer)]
        while self._waiting:
            alerts = self._waiting[0]
            taker = next((p for p in live if self.give(p, alerts)), None)
            if taker is None:
                return  # kept for the next worker admitted
            self._waiting.popleft()
            self._forgetting = False
            _interest(taker, selector)


class _Candidate:
    """A connection of the server's user that has not shown the whole cookie yet."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.presented = b""


class _Keys:
    """The key each worker sent last (``None`` for a worker that said ``forget``): the
    state's key is the latest one a worker holds, so one worker's storage trouble (its
    ``forget``) does not stop the state being saved while the others hold the key; an
    operator's seal, which seals every worker, does. A connection that is gone leaves its
    key (the state is saved once more when the server stops, after its workers) until a
    worker says ``forget``: that drops the keys of every gone connection too (a worker
    that reconnected, or one that died and was replaced, held them; they used to keep the
    state saved after every connected worker forgot). ``live`` holds the connections."""

    _KEPT: Final = 1024

    def __init__(self, live: Mapping[int, object]) -> None:
        self._held: dict[int, Salter | None] = {}
        self._live = live

    def __call__(self) -> Salter | None:
        for salter in reversed(self._held.values()):
            if salter is not None:
                return salter
        return None

    def set(self, peer: object, salter: Salter | None) -> None:
        """What ``peer`` (a connection) holds now, ``None`` once it forgot."""
        if salter is None:
            live = {id(found) for found in self._live.values()}
            self._held = {at: held for at, held in self._held.items() if at in live}
        self._held.pop(id(peer), None)  # latest last
        self._held[id(peer)] = salter
        if len(self._held) > self._KEPT:  # connections over a long life: the oldest go
            del self._held[next(iter(self._held))]


def serve(settings: Mapping[str, object], stop_fd: int) -> int:
    """Serve the workers (see module docstring) until ``stop_fd`` reads end of file; then
    remove the socket and its directory (the server stopped or died: nobody else will).
    A socket it cannot listen on is said on stdout (``error <reason>``), status 1."""
    path = str(settings["socket"])
    cookie = bytes.fromhex(str(settings["cookie"]))
    cookie_wait = float(cast(float, settings.get("cookie_wait", _COOKIE_WAIT)))
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        listener.bind(path)
        listener.listen(64)
    except OSError as exc:
        listener.close()
        sys.stdout.write(f"error cannot listen on {path} ({exc.strerror or exc})\n")
        sys.stdout.flush()
        return 1
    finally:
        os.umask(old)
    listener.setblocking(False)
    current: list[_Peer] = []
    selector = selectors.DefaultSelector()
    peers: dict[int, _Peer | _Candidate] = {}
    keys = _Keys(peers)
    book = _Book()

    def send(message: Message) -> None:
        """The alerts of ``current``'s events: to it, and as ``noted`` to every other; to
        the first other that takes them instead when ``current``'s connection is gone."""
        if not current:
            return
        owner = current[0]
        if message[0] != "alerts" or len(message) != 3:
            _queue(owner, encode(message))
            return
        alerts = (message[1], message[2])
        others = [p for p in peers.values() if isinstance(p, _Peer) and p is not owner]
        if not book.give(owner, alerts):
            _log.warning(
                "monitor process: the worker whose events raised alerts is gone:"
                " another worker delivers them"
            )
            taker = next((other for other in others if book.give(other, alerts)), None)
            if taker is None:  # none connected (or none reads): the next one admitted
                book.keep([alerts])
            else:
                owner = taker
                _watch_writes(taker, selector, peers, book)
        noted = encode(("noted", *alerts))
        for other in others:
            if other is not owner:
                _queue(other, noted)
                _watch_writes(other, selector, peers, book)

    watch = observer(cast("Mapping[str, object]", settings["monitor"]), send, keys)
    selector.register(listener, selectors.EVENT_READ, None)
    selector.register(stop_fd, selectors.EVENT_READ, "stop")
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    beat = _Heartbeat(sys.stdout.fileno())
    ended = False
    try:
        while True:
            beat()
            for key, mask in selector.select(timeout=_BEAT):
                if key.data == "stop":
                    if not os.read(stop_fd, 4096):
                        ended = True
                        return 0
                    continue
                if key.data is None:
                    _accept(listener, selector, peers, cookie_wait)
                    continue
                if peers.get(key.fd) is not key.data:
                    continue  # dropped earlier in this round (its number may be reused)
                if isinstance(key.data, _Candidate):
                    _admit(key.data, cookie, selector, peers, book)
                    continue
                peer = cast(_Peer, key.data)
                if mask & selectors.EVENT_WRITE and not _flush(peer):
                    _drop(peer, selector, peers, book)
                    continue
                if mask & selectors.EVENT_READ:
                    current[:] = [peer]
                    ok = _take(peer, keys, watch)
                    current.clear()
                    if not ok:
                        _drop(peer, selector, peers, book)
                        continue
                _watch_writes(peer, selector, peers, book)
            _expire(selector, peers, time.monotonic())
    finally:
        for left in list(peers.values()):
            _drop(left, selector, peers)
        listener.close()
        with contextlib.suppress(OSError):
            os.unlink(path)
        if ended:
            with contextlib.suppress(OSError):
                os.rmdir(os.path.dirname(path))
        try:
            watch.close()
        except Exception as exc:  # ending never fails on the detectors' account
            _log.error(
                "monitor process: saving the detectors' state failed (%s)", type(exc).__name__
            )


class _Heartbeat:
    """A byte on ``fd`` (the server's pipe) at most every ``_BEAT`` s, from the serving
    loop: a loop that stops turning (a hung process, or one stopped by a signal) goes
    silent, and the server kills it (``MonitorProcess``). Never blocks: a beat the pipe
    has no room for is skipped (the server reads them all while it runs)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._last = 0.0
        os.set_blocking(fd, False)

    def __call__(self) -> None:
        now = time.monotonic()
        if now - self._last < _BEAT:
            return
        self._last = now
        with contextlib.suppress(OSError):  # full (BlockingIOError) or closed: no beat
            os.write(self._fd, b".")


def _watch_writes(
    peer: _Peer,
    selector: selectors.BaseSelector,
    peers: dict[int, _Peer | _Candidate],
    book: _Book,
) -> None:
    """Have the loop send what still waits for ``peer`` once it can; drop a peer that
    does not read (over ``_MAX_OUT`` waiting)."""
    if len(peer.out) > _MAX_OUT:
        _log.error("monitor process: a worker does not read its alerts: dropped")
        _drop(peer, selector, peers, book)
    else:
        _interest(peer, selector)


def _interest(peer: _Peer, selector: selectors.BaseSelector) -> None:
    """Watch ``peer`` for reads, and for writes while something waits for it."""
    if peer.sock.fileno() >= 0:
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if peer.out else 0)
        selector.modify(peer.sock, events, peer)


def _accept(
    listener: socket.socket,
    selector: selectors.BaseSelector,
    peers: dict[int, _Peer | _Candidate],
    cookie_wait: float,
) -> None:
    """Take a connection of the server's user (``SO_PEERCRED``) as a candidate, which has
    ``cookie_wait`` s to show the cookie; the loop never waits for it (``_admit``)."""
    try:
        sock, _ = listener.accept()
    except OSError:
        return
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CREDENTIALS.size)
        uid = _CREDENTIALS.unpack(creds)[1]
        sock.setblocking(False)
    except OSError:
        sock.close()
        return
    waiting = sum(isinstance(found, _Candidate) for found in peers.values())
    if uid != os.getuid() or waiting >= _MAX_CANDIDATES:
        _log.error("monitor process: refused a connection that is not a worker's")
        sock.close()
        return
    candidate = _Candidate(sock, time.monotonic() + cookie_wait)
    peers[sock.fileno()] = candidate
    selector.register(sock, selectors.EVENT_READ, candidate)


def _admit(
    candidate: _Candidate,
    cookie: bytes,
    selector: selectors.BaseSelector,
    peers: dict[int, _Peer | _Candidate],
    book: _Book,
) -> None:
    """Read what the candidate sent of the cookie (never past it); a whole, right cookie
    makes it a worker's connection (given the alerts no worker took yet), anything else
    closes it unread."""
    try:
        chunk = candidate.sock.recv(COOKIE_BYTES - len(candidate.presented))
    except BlockingIOError:
        return
    except OSError:
        chunk = b""
    candidate.presented += chunk
    if chunk and len(candidate.presented) < COOKIE_BYTES:
        return
    if not hmac.compare_digest(candidate.presented, cookie):
        _log.error("monitor process: refused a connection that is not a worker's")
        _drop(candidate, selector, peers)
        return
    peer = _Peer(candidate.sock)
    peers[peer.sock.fileno()] = peer
    selector.modify(peer.sock, selectors.EVENT_READ, peer)
    book.hand_out(peers, selector)


def _expire(
    selector: selectors.BaseSelector, peers: dict[int, _Peer | _Candidate], now: float
) -> None:
    """Close the candidates whose time to show the cookie is over."""
    late = [c for c in peers.values() if isinstance(c, _Candidate) and c.deadline <= now]
    for candidate in late:
        _log.error("monitor process: refused a connection that is not a worker's")
        _drop(candidate, selector, peers)


_KINDS: Final = frozenset(("request", "response", "checkpoint", "alert"))
_LATEST: Final = 253402300799
"""The last second of the year 9999: a later time is no event's."""


def _event(item: object) -> PackedEvent:
    """One packed event from a worker, checked; ``ValueError`` unless it has
    ``pack_event``'s shape and types. Its token, request body and extra fields are
    dropped: the detectors read none of them."""
    if type(item) is not tuple or len(item) != _PACKED_FIELDS:
        raise ValueError("not a packed event")
    for value, kinds in zip(item, _PACKED_TYPES, strict=True):
        if type(value) not in kinds:
            raise ValueError("a packed event of the wrong types")
    kind, seconds, micro = item[0], item[1], item[2]
    if kind not in _KINDS or not 0 <= seconds <= _LATEST or not 0 <= micro < 1_000_000:
        raise ValueError("a packed event out of range")
    return cast(PackedEvent, (*item[:5], None, *item[6:17], None, None))


_STR: Final = (str,)
_OPTIONAL_STR: Final = (str, type(None))
_OPTIONAL_INT: Final = (int, type(None))
_ANY: Final = (type(None), bool, int, float, str, bytes, tuple, list, dict)
_PACKED_TYPES: Final[tuple[tuple[type, ...], ...]] = (
    _STR,  # kind
    (int,),  # time: POSIX seconds
    (int,),  # time: microseconds
    _STR,  # request_id
    _OPTIONAL_STR,  # principal
    _OPTIONAL_STR,  # token (dropped)
    _OPTIONAL_STR,  # auth
    _STR,  # remote
    _STR,  # user_agent
    _STR,  # operation
    _STR,  # path
    _OPTIONAL_STR,  # environment
    _OPTIONAL_STR,  # category
    _OPTIONAL_INT,  # version
    _OPTIONAL_INT,  # status
    _OPTIONAL_STR,  # error
    (bool,),  # emergency
    _ANY,  # data (dropped)
    (dict, type(None)),  # extra (dropped)
)
_PACKED_FIELDS: Final = len(_PACKED_TYPES)


def _take(peer: _Peer, keys: _Keys, watch: Watcher) -> bool:
    """Handle what the peer sent; ``False`` once its connection is over or broken, or it
    sent something that is not one of the messages above (logged)."""
    try:
        messages = peer.frames.read_ready()
    except (EOFError, OSError, FrameError):
        return False
    for message in messages:
        kind = message[0]
        if kind == "events" and len(message) == 2 and type(message[1]) is list:
            try:
                events = [_event(item) for item in message[1]]
            except ValueError:
                _log.error("monitor process: malformed events from a worker: dropped")
                return False
            try:
                watch(events)
            except Exception as exc:  # the detectors never stop the monitor
                _log.error("monitor process: detectors failed (%s)", type(exc).__name__)
        elif kind == "keys" and len(message) == 2 and type(message[1]) is bytes:
            try:
                keys.set(peer, Salter(message[1]))
            except ValueError:
                _log.error("monitor process: a malformed key from a worker: dropped")
                return False
        elif kind == "forget" and len(message) == 1:
            keys.set(peer, None)
        elif kind == "ack" and len(message) == 2 and type(message[1]) is int:
            peer.unacked.pop(message[1], None)
        else:
            _log.error("monitor process: unknown message from a worker: dropped")
            return False
    return True


def _queue(peer: _Peer, frame: bytes) -> bool:
    """Queue ``frame`` for the peer and send what it can; whether the peer will have it
    (``False``: its connection broke, or it does not read and is to be dropped)."""
    peer.out += frame
    return _flush(peer) and len(peer.out) <= _MAX_OUT


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


def _drop(
    peer: _Peer | _Candidate,
    selector: selectors.BaseSelector,
    peers: dict[int, _Peer | _Candidate],
    book: _Book | None = None,
) -> None:
    """Close ``peer``'s connection; with ``book``, what it did not acknowledge goes to
    another worker (``_Book.hand_over``)."""
    with contextlib.suppress(KeyError, ValueError):
        selector.unregister(peer.sock)
    peers.pop(peer.sock.fileno(), None)
    peer.sock.close()
    if book is not None and isinstance(peer, _Peer):
        book.hand_over(peer, peers, selector)


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
