"""``ServerProcess``: a real ``python -m medsecrets.server`` process for tests.

Usage::

    with ServerProcess(tmp_path / "data") as server:      # dev mode by default
        httpx.get(f"{server.addr}/v1/sys/health")
        headers = {"X-Medsecrets-Token": server.token}

It starts the server on a free 127.0.0.1 port (unless ``extra_args`` has
``--listen``), waits until ``GET /v1/sys/health`` answers (and, in dev mode,
until the ``export MEDSECRETS_ADDR=... MEDSECRETS_TOKEN=...`` line is printed),
and stops it on exit (SIGTERM, then SIGKILL after ``stop_timeout``).
``kill(sig)`` sends a signal and waits for the exit; ``restart()`` starts it
again on the same port and data directory.

``preload=True`` starts servers by forking them from a helper process that
imported the server code once (like multiprocessing's forkserver): each
server is still a fresh process that only shares what is on disk with its
predecessor, and a SIGKILL ends it just the same, but a restart skips the
interpreter start and imports (most of a restart's cost; crash loops use it).

The child gets this process's environment without any ``MEDSECRETS_*``
variable, plus ``env``. Its stderr (JSON log lines) goes to ``log_path``,
its stdout to ``stdout_path``. ``ca_file`` is the CA to trust when the server
serves TLS (``https`` addresses).
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Protocol

import httpx

from medsecrets.testing.procs import children_of

__all__ = [
    "EXPORT_LINE",
    "ServerProcess",
    "TestCertificates",
    "free_port",
    "write_test_certificates",
]

EXPORT_LINE = re.compile(r"^export MEDSECRETS_ADDR=(\S+) MEDSECRETS_TOKEN=(\S+)\s*$", re.M)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True, slots=True)
class TestCertificates:
    """PEM files of a throwaway CA and a server certificate for 127.0.0.1 and localhost."""

    __test__ = False  # not a pytest test class

    ca_file: str
    cert_file: str
    key_file: str

    def server_args(self) -> tuple[str, str, str, str]:
        """The ``--tls-cert``/``--tls-key`` flags for ``ServerProcess(extra_args=...)``."""
        return ("--tls-cert", self.cert_file, "--tls-key", self.key_file)


def write_test_certificates(directory: str | os.PathLike[str]) -> TestCertificates:
    """Create a test CA and a CA-signed server certificate (EC P-256, PKCS#8 key) in
    ``directory``: ``ca.pem``, ``server.pem``, ``server-key.pem`` (0600)."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "medsecrets test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = out / "ca.pem", out / "server.pem", out / "server-key.pem"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return TestCertificates(str(ca_file), str(cert_file), str(key_file))


class _Proc(Protocol):
    """What ``ServerProcess`` needs of a child process (``subprocess.Popen`` has it)."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def send_signal(self, sig: int) -> None: ...

    def kill(self) -> None: ...


_PRELOADER = r"""
import json, os, sys, threading
import medsecrets.server.runner
import medsecrets.server.bootstrap, medsecrets.server.sweeper, medsecrets.server.tls
import medsecrets.api.app, granian.server.embed
from medsecrets.server.runner import main

lock = threading.Lock()
def report(pid):
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    with lock:
        sys.stdout.write(json.dumps({"exit": pid, "code": code}) + "\n")
        sys.stdout.flush()

for line in sys.stdin:
    order = json.loads(line)
    sys.stdout.flush()
    sys.stderr.flush()
    with lock:
        pid = os.fork()
    if pid == 0:
        code = 1
        try:
            null = os.open(os.devnull, os.O_RDONLY)
            out = os.open(order["stdout"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            err = os.open(order["stderr"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            os.dup2(null, 0)
            os.dup2(out, 1)
            os.dup2(err, 2)
            os.environ.clear()
            os.environ.update(order["env"])
            code = main(order["argv"])
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    with lock:
        sys.stdout.write(json.dumps({"pid": pid}) + "\n")
        sys.stdout.flush()
    threading.Thread(target=report, args=(pid,), daemon=True).start()
"""


class _Preloader:
    """A helper process that imported the server once and forks server processes."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-c", _PRELOADER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=dict(env),
            text=True,
        )
        self._exits: dict[int, int] = {}
        self._spawned: queue.Queue[int] = queue.Queue()
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            message = json.loads(line)
            if "pid" in message:
                self._spawned.put(message["pid"])
            else:
                with self._changed:
                    self._exits[message["exit"]] = message["code"]
                    self._changed.notify_all()

    def spawn(self, argv: list[str], env: Mapping[str, str], stdout: Path, stderr: Path) -> _Forked:
        order = {"argv": argv, "env": dict(env), "stdout": str(stdout), "stderr": str(stderr)}
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps(order) + "\n")
        self._process.stdin.flush()
        return _Forked(self, self._spawned.get(timeout=60))

    def exit_code(self, pid: int, timeout: float | None) -> int | None:
        with self._changed:
            self._changed.wait_for(lambda: pid in self._exits, timeout)
            return self._exits.get(pid)

    def close(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


class _Forked:
    """A server process forked by a ``_Preloader`` (a ``_Proc``)."""

    def __init__(self, preloader: _Preloader, pid: int) -> None:
        self._preloader = preloader
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self._preloader.exit_code(self.pid, 0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self.returncode = self._preloader.exit_code(self.pid, timeout)
        if self.returncode is None:
            raise subprocess.TimeoutExpired(f"server {self.pid}", timeout or 0)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class ServerProcess:
    """A medsecrets server subprocess (context manager; ``start``/``stop`` also public)."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        dev: bool = True,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        ca_file: str | os.PathLike[str] | None = None,
        client_cert: tuple[str | os.PathLike[str], str | os.PathLike[str]] | None = None,
        startup_timeout: float = 60.0,
        stop_timeout: float = 30.0,
        log_dir: str | os.PathLike[str] | None = None,
        preload: bool = False,
        python: str | os.PathLike[str] | None = None,
    ) -> None:
        if preload and python is not None:
            raise ValueError("preload forks this interpreter: it cannot run another python")
        self.python = sys.executable if python is None else os.fspath(python)
        """The interpreter that runs the server (another one serves another build of the
        code: ``benchmarks.paired``)."""
        self.data_dir = Path(data_dir)
        self.dev = dev
        self.extra_args = tuple(extra_args)
        self.env = dict(env or {})
        self.ca_file = None if ca_file is None else os.fspath(ca_file)
        self.client_cert = (
            None if client_cert is None else (os.fspath(client_cert[0]), os.fspath(client_cert[1]))
        )
        """``(certificate, key)`` PEM paths presented by the readiness check (a server with
        ``tls.client_ca`` refuses a client without one)."""
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self._log_dir = (
            Path(log_dir)
            if log_dir is not None
            else Path(tempfile.mkdtemp(prefix="medsecrets-server-"))
        )
        self.preload = preload
        self._preloader: _Preloader | None = None
        self._process: _Proc | None = None
        self._files: list[IO[bytes]] = []
        self._starts = 0
        self.port = self._listen_port() or free_port()
        self.scheme = "https" if "--tls-cert" in self.extra_args else "http"
        self.token: str | None = None
        self.log_path = self._log_dir / "server.log"
        self.stdout_path = self._log_dir / "stdout.txt"

    # -- facts ---------------------------------------------------------------
    @property
    def addr(self) -> str:
        """``http(s)://127.0.0.1:<port>``."""
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The server's process id."""
        if self._process is None:
            raise RuntimeError("the server is not running")
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        """The exit code once the process ended, else ``None``."""
        return None if self._process is None else self._process.poll()

    def __repr__(self) -> str:
        return f"ServerProcess(addr={self.addr!r}, running={self.running})"

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self._process is not None and self._process.poll() is None

    def children(self, *, monitor: bool = False) -> list[int]:
        """The processes the server started, sorted: its granian workers with
        ``workers > 1`` (and its shared monitor process with ``monitor``)."""
        return [
            child.pid
            for child in children_of(self.pid)
            if monitor or b"monitorprocess" not in child.cmdline
        ]

    def log_text(self) -> str:
        """Everything the server wrote to stderr (all starts)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stdout_text(self) -> str:
        """Everything the server wrote to stdout (all starts)."""
        return self.stdout_path.read_text(errors="replace") if self.stdout_path.exists() else ""

    def _listen_port(self) -> int | None:
        args = list(self.extra_args)
        if "--listen" in args:
            return int(args[args.index("--listen") + 1].rpartition(":")[2])
        return None

    def command(self) -> list[str]:
        """The command line of the server."""
        cmd = [self.python, "-m", "medsecrets.server", "--data-dir", str(self.data_dir)]
        if "--listen" not in self.extra_args:
            cmd += ["--listen", f"127.0.0.1:{self.port}"]
        if self.dev:
            cmd.append("--dev")
        return cmd + list(self.extra_args)

    def child_env(self) -> dict[str, str]:
        """The environment of the server process.

        A non-dev server gets ``MEDSECRETS_AUDIT_FILE`` (an audit file in
        its data directory) unless ``env`` says otherwise.
        """
        base = {k: v for k, v in os.environ.items() if not k.startswith("MEDSECRETS_")}
        if not self.dev:  # a non-dev server serves nothing without an audit device
            base["MEDSECRETS_AUDIT_FILE"] = str(self.data_dir / "audit" / "audit.jsonl")
        base.update(self.env)
        return base

    # -- lifecycle -------------------------------------------------------------
    def start(self, *, wait: bool = True) -> None:
        """Start the process and (with ``wait``) wait until it serves.

        If the port picked at construction was taken meanwhile (another process
        grabbed it), the first start moves to a new free port, up to 5 times.
        """
        movable = self._starts == 0 and self._listen_port() is None
        for attempt in range(5):
            self._start_once()
            if not wait:
                return
            try:
                self.wait_ready()
                return
            except RuntimeError:
                taken = "cannot listen" in self._tail(5)
                if not (movable and taken and not self.running) or attempt == 4:
                    raise
                self.port = free_port()

    def _start_once(self) -> None:
        if self.running:
            raise RuntimeError("the server is already running")
        self._close_files()
        self._log_dir.mkdir(parents=True, exist_ok=True)
        stdout = open(self.stdout_path, "ab")  # noqa: SIM115 - closed in _close_files
        stderr = open(self.log_path, "ab")  # noqa: SIM115 - closed in _close_files
        self._files = [stdout, stderr]
        self._stdout_offset = self.stdout_path.stat().st_size
        self._starts += 1
        if self.preload:
            if self._preloader is None:
                self._preloader = _Preloader(self.child_env())
            self._process = self._preloader.spawn(
                self.command()[3:], self.child_env(), self.stdout_path, self.log_path
            )
        else:
            self._process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                env=self.child_env(),
            )

    def _client(self) -> httpx.Client:
        verify: ssl.SSLContext | bool = True
        if self.ca_file is not None or self.client_cert is not None:
            verify = ssl.create_default_context(cafile=self.ca_file)
            if self.client_cert is not None:
                verify.load_cert_chain(*self.client_cert)
        return httpx.Client(verify=verify, timeout=5.0)

    def wait_ready(self) -> None:
        """Wait until health answers and (dev) the export line is out; ``RuntimeError`` if
        the process exits first or ``startup_timeout`` passes (with the log tail)."""
        deadline = time.monotonic() + self.startup_timeout
        with self._client() as client:
            while True:
                if not self.running:
                    raise RuntimeError(
                        f"the server exited with {self.returncode} during start:\n{self._tail()}"
                    )
                if self._ready(client):
                    return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the server did not start in time:\n{self._tail()}")
                time.sleep(0.02)

    def _ready(self, client: httpx.Client) -> bool:
        if self.dev:
            text = self.stdout_path.read_bytes()[self._stdout_offset :].decode(errors="replace")
            match = EXPORT_LINE.search(text)
            if match is None:
                return False
            self.token = match.group(2)
        try:
            response = client.get(f"{self.addr}/v1/sys/health")
        except httpx.TransportError:
            return False
        return response.status_code == 200

    def _tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def kill(self, sig: int = signal.SIGKILL) -> int | None:
        """Send ``sig`` and wait (up to ``stop_timeout``) for the exit; returns the exit code."""
        if self._process is None:
            return None
        if self._process.poll() is None:
            self._process.send_signal(sig)
            try:
                self._process.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        return self._process.returncode

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` without waiting."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(sig)

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the process to exit; returns its exit code."""
        if self._process is None:
            raise RuntimeError("the server was never started")
        return self._process.wait(timeout)

    def stop(self) -> int | None:
        """Graceful stop (SIGTERM; SIGKILL after ``stop_timeout``)."""
        code = self.kill(signal.SIGTERM)
        self._close_files()
        if self._preloader is not None:
            self._preloader.close()
            self._preloader = None
        return code

    def restart(self, *, sig: int = signal.SIGTERM) -> None:
        """Stop (with ``sig``) if running, then start again on the same port and data."""
        self.kill(sig)
        deadline = time.monotonic() + self.startup_timeout
        while True:
            self.start(wait=False)
            try:
                self.wait_ready()
                return
            except RuntimeError:
                # the port can stay busy a moment after a kill: retry until the deadline
                busy = "cannot listen" in self._tail(5)
                if self.running or not busy or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def _close_files(self) -> None:
        for handle in self._files:
            handle.close()
        self._files = []

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
