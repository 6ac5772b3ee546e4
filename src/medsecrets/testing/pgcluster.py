"""A throwaway PostgreSQL cluster for tests and benchmarks.

``PostgresCluster`` runs ``initdb`` into a fresh temporary directory (trust
authentication, locale C, UTF8), starts the server with ``pg_ctl`` listening on
127.0.0.1 on a free port (its unix socket inside the same directory), waits
until it accepts connections, and on exit stops it and removes every file::

    with PostgresCluster() as cluster:
        dsn = cluster.create_database("t1")

PostgreSQL refuses to run as root, so when the current user is root the
server runs as the ``postgres`` system user if it exists, else ``nobody``, and
the temporary directory is handed to that user.

``find_pg_bin`` locates the server binaries (``PATH`` first, then
``/usr/lib/postgresql/*/bin``, newest version first) and returns ``None`` when
they are not installed, so callers can skip with a clear reason.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = ["ClusterError", "PostgresCluster", "find_pg_bin"]

_REQUIRED = ("initdb", "pg_ctl", "postgres")
_DEBIAN_GLOB = "/usr/lib/postgresql/*/bin"
_DB_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_SUPERUSER = "postgres"
_START_ATTEMPTS = 3


class ClusterError(RuntimeError):
    """The throwaway cluster could not be created, started or stopped."""


def _has_binaries(directory: Path) -> bool:
    return all(os.access(directory / name, os.X_OK) for name in _REQUIRED)


def _version_key(directory: Path) -> tuple[int, ...]:
    digits = re.findall(r"\d+", directory.parent.name)
    return tuple(int(d) for d in digits)


def find_pg_bin() -> Path | None:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``, or ``None``.

    ``PATH`` wins (symlinks resolved, because ``pg_ctl`` looks for
    ``postgres`` beside its real location); then the Debian layout
    ``/usr/lib/postgresql/<version>/bin``, highest version first.
    """
    found = shutil.which("initdb")
    if found is not None:
        directory = Path(found).resolve().parent
        if _has_binaries(directory):
            return directory
    candidates = sorted((Path(p) for p in glob.glob(_DEBIAN_GLOB)), key=_version_key, reverse=True)
    for directory in candidates:
        if _has_binaries(directory):
            return directory
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _service_user() -> pwd.struct_passwd | None:
    """The unprivileged account to run the server as (``None``: run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise ClusterError("running as root and neither a 'postgres' nor a 'nobody' user exists")


class PostgresCluster:
    """A private PostgreSQL server in a temporary directory (a context manager).

    ``settings`` are extra server settings passed as ``-c name=value`` (for
    example ``{"fsync": "off"}`` to test that a client refuses such a
    server). ``bin_dir`` defaults to ``find_pg_bin()``; ``base_dir`` is where
    the temporary directory is made (default: the system temp dir; it must be
    reachable by the service user when running as root).
    """

    def __init__(
        self,
        *,
        settings: Mapping[str, str] | None = None,
        bin_dir: Path | None = None,
        base_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self._settings = dict(settings or {})
        self._bin_dir = bin_dir
        self._base_dir = base_dir
        self._root: Path | None = None
        self._port: int | None = None
        self._user = _service_user()
        self._running = False

    # -- public facts ------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        """The cluster's data directory (``PGDATA``)."""
        return self._require_root() / "data"

    @property
    def socket_dir(self) -> Path:
        """The directory holding the server's unix socket."""
        return self._require_root()

    @property
    def port(self) -> int:
        """The TCP port on 127.0.0.1."""
        if self._port is None:
            raise ClusterError("cluster is not started")
        return self._port

    @property
    def dsn(self) -> str:
        """libpq connection string for the ``postgres`` database as superuser."""
        return self.dsn_for("postgres")

    @property
    def running(self) -> bool:
        """Whether the server was started and not yet stopped."""
        return self._running

    def dsn_for(self, dbname: str) -> str:
        """libpq connection string for ``dbname`` on this cluster."""
        _check_db_name(dbname)
        return f"host=127.0.0.1 port={self.port} user={_SUPERUSER} dbname={dbname}"

    # -- lifecycle ---------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Create the cluster and start the server; returns once it accepts connections."""
        if self._running:
            raise ClusterError("cluster already started")
        bin_dir = self._bin_dir or find_pg_bin()
        if bin_dir is None:
            raise ClusterError("PostgreSQL server binaries (initdb, pg_ctl) not found")
        self._bin_dir = bin_dir
        root = Path(tempfile.mkdtemp(prefix="medsecrets-pg-", dir=self._base_dir))
        self._root = root
        try:
            if self._user is not None:
                os.chown(root, self._user.pw_uid, self._user.pw_gid)
            self._run(
                [
                    str(bin_dir / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    _SUPERUSER,
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                    "--no-instructions",
                ]
            )
            self._start_server(bin_dir)
        except BaseException:
            self._cleanup()
            raise
        self._running = True

    def stop(self) -> None:
        """Stop the server (immediate mode) and remove the directory. Idempotent."""
        if self._root is None:
            return
        try:
            if self._running and self._bin_dir is not None:
                try:
                    self._run(
                        [
                            str(self._bin_dir / "pg_ctl"),
                            "-D",
                            str(self.data_dir),
                            "-m",
                            "immediate",
                            "-w",
                            "stop",
                        ]
                    )
                except ClusterError:
                    self._kill_postmaster()
        finally:
            self._running = False
            self._cleanup()

    # -- helpers for tests ---------------------------------------------------

    def processes(self) -> list[int]:
        """The postmaster and every process it started (backends, checkpointer, ...)."""
        postmaster = int((self.data_dir / "postmaster.pid").read_text().splitlines()[0])
        found = [postmaster]
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == postmaster:
                found.append(int(entry))
        return found

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """The server frozen (SIGSTOP on the postmaster and every process it started)
        inside the block, resumed (SIGCONT) when it ends: the kernel still accepts
        connections and acknowledges every packet, but nothing answers (a hung host)."""
        pids = self.processes()
        _signal_all(pids, signal.SIGSTOP)
        try:
            yield
        finally:
            _signal_all(pids, signal.SIGCONT)

    def execute(self, sql: str, *, dbname: str = "postgres") -> None:
        """Run one statement in autocommit mode (psycopg needed)."""
        import psycopg

        with psycopg.connect(self.dsn_for(dbname), autocommit=True) as conn:
            conn.execute(sql.encode())

    def create_database(self, name: str) -> str:
        """Create an empty database ``name`` (from template0); return its DSN."""
        _check_db_name(name)
        self.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.dsn_for(name)

    def drop_database(self, name: str) -> None:
        """Drop ``name``, disconnecting its sessions; no error when absent."""
        _check_db_name(name)
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    # -- internals -----------------------------------------------------------

    def _require_root(self) -> Path:
        if self._root is None:
            raise ClusterError("cluster is not started")
        return self._root

    def _start_server(self, bin_dir: Path) -> None:
        last = ""
        for _ in range(_START_ATTEMPTS):
            port = _free_port()
            options = {
                "listen_addresses": "127.0.0.1",
                "port": str(port),
                "unix_socket_directories": str(self.socket_dir),
                "max_connections": "100",
                "shared_buffers": "32MB",
                **self._settings,
            }
            opts = " ".join(f"-c {shlex.quote(f'{k}={v}')}" for k, v in options.items())
            log = self._require_root() / "server.log"
            try:
                self._run(
                    [
                        str(bin_dir / "pg_ctl"),
                        "-D",
                        str(self.data_dir),
                        "-l",
                        str(log),
                        "-o",
                        opts,
                        "-w",
                        "-t",
                        "120",
                        "start",
                    ]
                )
            except ClusterError as exc:
                last = f"{exc}\n{_tail(log)}"
                self._kill_postmaster()
                continue
            self._port = port
            return
        raise ClusterError(f"PostgreSQL did not start:\n{last}")

    def _run(self, argv: list[str]) -> None:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LC_ALL": "C",
            "LANG": "C",
            "TZ": "UTC",
        }
        user = self._user
        try:
            result = subprocess.run(
                argv,
                cwd=self._require_root(),
                env=env,
                user=None if user is None else user.pw_uid,
                group=None if user is None else user.pw_gid,
                extra_groups=None if user is None else [],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                check=False,
                timeout=300,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ClusterError(f"{Path(argv[0]).name} failed: {exc}") from exc
        if result.returncode != 0:
            raise ClusterError(
                f"{Path(argv[0]).name} exited with {result.returncode}: {result.stdout.strip()}"
            )

    def _kill_postmaster(self) -> None:
        if self._root is None:
            return
        pid_file = self.data_dir / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int(pid_file.read_text().splitlines()[0])
            os.kill(pid, signal.SIGKILL)

    def _cleanup(self) -> None:
        root, self._root = self._root, None
        self._port = None
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)


def _check_db_name(name: str) -> None:
    if not _DB_NAME.match(name):
        raise ValueError("database name must match [a-z_][a-z0-9_]*")


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
