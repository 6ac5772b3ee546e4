"""``fd_paths``' pipe (where there is no memfd) and a fork meanwhile: real processes.

Another thread's ``os.fork`` (``multiprocessing``) while a client loads its
certificate gives the child a copy of every descriptor open then: the pipes' write
ends (OpenSSL in the parent never saw the end of the certificate chain) and the read
end OpenSSL opened by path (the feeding thread of a key file OpenSSL stops reading
half way never got its ``EPIPE``, and the parent joined it). Either held the client's
constructor for as long as the child lived. Here the fork is made in the loading
thread itself, at the two moments; the child lives until the test lets it go, and
the test checks that the constructor returned while it still lived.
"""

from __future__ import annotations

import contextlib
import os
import select
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.sdk.mtls import KEY_PASSWORD, ClientCertificates, write_client_certificates

from medsecrets.sdk import transport
from medsecrets.sensitive import Sensitive

CHILD_SECONDS = 30  # how long a child waits to be let go (then the test has failed)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> ClientCertificates:
    return write_client_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def children(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], None]]:
    """``fork()``: a child that lives until the test ends (or ``CHILD_SECONDS``); the
    pipe is used (no memfd). The test's assertions see ``alive()``."""
    monkeypatch.delattr(os, "memfd_create", raising=False)
    let_go, wait = os.pipe()[::-1]
    pids: list[int] = []

    def fork() -> None:
        pid = os.fork()
        if pid == 0:  # the child: wait to be let go, touch nothing else
            try:
                os.close(let_go)  # (so that the parent's close is the end of the pipe)
                select.select([wait], [], [], CHILD_SECONDS)
            finally:
                os._exit(0)
        pids.append(pid)

    fork.pids = pids  # type: ignore[attr-defined]
    yield fork
    os.close(let_go)  # every child's wait ends
    os.close(wait)
    for pid in pids:
        with contextlib.suppress(ChildProcessError):  # (reaped by _alive already)
            os.waitpid(pid, 0)


def _alive(fork: Callable[[], None]) -> bool:
    pids: list[int] = fork.pids  # type: ignore[attr-defined]
    assert len(pids) == 1, "no fork was made: the test no longer tests it"
    return os.waitpid(pids[0], os.WNOHANG) == (0, 0)


def _big_combined(certs: ClientCertificates, tmp: Path, key: str) -> str:
    """The key ``key`` first, then the certificate and 256 KiB of comment lines: OpenSSL
    stops reading the key's copy after the key, with far more than a pipe holds left."""
    path = tmp / "combined.pem"
    padding = (b"#" * 1023 + b"\n") * 256
    path.write_bytes(Path(key).read_bytes() + Path(certs.cert).read_bytes() + padding)
    return str(path)


def _context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@pytest.mark.timeout(3 * CHILD_SECONDS)
def test_a_fork_before_openssl_reads_does_not_hold_the_load(
    certs: ClientCertificates,
    tmp_path: Path,
    children: Callable[[], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The child's copies of the pipes' write ends kept OpenSSL reading the certificate
    chain (to its end) until the child exited."""
    real = ssl.SSLContext.load_cert_chain

    def forking(self: ssl.SSLContext, *args: Any, **kwargs: Any) -> None:
        children()
        real(self, *args, **kwargs)

    monkeypatch.setattr(ssl.SSLContext, "load_cert_chain", forking)
    transport.client_identity(_context(), _big_combined(certs, tmp_path, certs.key), None, None)
    assert _alive(children), "the load waited for the forked child to exit"


@pytest.mark.timeout(3 * CHILD_SECONDS)
def test_a_fork_while_openssl_reads_the_key_does_not_hold_the_load(
    certs: ClientCertificates,
    tmp_path: Path,
    children: Callable[[], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Forked while OpenSSL holds the key's pipe open (it asks for the password): the
    child's copy of that read end kept the feeding thread blocked, and it was joined."""
    real = transport._password_bytes

    def forking(*args: Any) -> bytes:
        children()
        return real(*args)

    monkeypatch.setattr(transport, "_password_bytes", forking)
    combined = _big_combined(certs, tmp_path, certs.encrypted_key)
    transport.client_identity(_context(), combined, None, Sensitive(KEY_PASSWORD))
    assert _alive(children), "the load waited for the forked child to exit"
