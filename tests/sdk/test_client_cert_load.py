"""What ``client_identity`` loads is exactly what it checked (``sdk/fdpaths.py``).

The client certificate and key files used to be read and checked, and then opened
again by path by OpenSSL (``load_cert_chain(path)``): what was at the path by then
(another certificate, a FIFO, which hangs, or nothing) was what got loaded. Each case
runs with Linux's in-memory file (``memfd``) and with the pipe used where there is
none. The certificate presented is the one a real TLS server sees on a socket pair.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.sdk import test_client_cert as cert_cases
from tests.sdk.mtls import KEY_PASSWORD, ClientCertificates, write_client_certificates

from medsecrets.sdk import Client, transport
from medsecrets.sensitive import Sensitive


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> ClientCertificates:
    return write_client_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(params=["memfd", "pipe"])
def way(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """How the checked bytes reach OpenSSL: a pipe where ``memfd_create`` is missing."""
    if request.param == "memfd" and not hasattr(os, "memfd_create"):
        pytest.skip("no memfd_create on this platform")
    if request.param == "pipe":
        monkeypatch.delattr(os, "memfd_create", raising=False)
    return str(request.param)


def _copies(certs: ClientCertificates, tmp: Path, *, combined: bool = False) -> tuple[str, str]:
    """A copy of the client's certificate and key (``combined``: both in the first)."""
    cert, key = str(tmp / "client.pem"), str(tmp / "client-key.pem")
    shutil.copyfile(certs.combined if combined else certs.cert, cert)
    shutil.copyfile(certs.key, key)
    return cert, key


def _after_check(monkeypatch: pytest.MonkeyPatch, change: Callable[[], None]) -> list[str]:
    """Run ``change`` once the key was read (the last file the check reads, before
    anything is loaded); returns the paths read, in order."""
    read: list[str] = []
    real = transport._pem_head

    def reading(path: str, what: str) -> bytes:
        data = real(path, what)
        read.append(path)
        if what == "client key file":
            change()
        return data

    monkeypatch.setattr(transport, "_pem_head", reading)
    return read


def _context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _presented(context: ssl.SSLContext, certs: ClientCertificates) -> bytes:
    """The certificate (DER) a TLS server that trusts only the client CA sees from a
    client using ``context``; ``AssertionError`` if it refused it (or saw none)."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(certs.server.cert_file, certs.server.key_file)
    server.load_verify_locations(certs.client_ca)
    server.verify_mode = ssl.CERT_REQUIRED
    ours, theirs = socket.socketpair()
    seen: list[Any] = []

    def serve() -> None:
        try:
            with server.wrap_socket(theirs, server_side=True) as tls:
                seen.append(tls.getpeercert(binary_form=True))
                tls.sendall(b"ok")
        except (ssl.SSLError, OSError) as exc:
            seen.append(exc)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with context.wrap_socket(ours) as tls:
            tls.recv(2)  # (TLS 1.3: the server's verdict comes after the client's handshake)
    except (ssl.SSLError, OSError):
        pass
    thread.join()
    assert isinstance(seen[0], bytes), f"the server refused the certificate: {seen[0]!r}"
    return seen[0]


def _der(path: str) -> bytes:
    return ssl.PEM_cert_to_DER_cert(Path(path).read_text())


def test_the_checked_certificate_is_loaded_when_others_are_swapped_in_after_the_check(
    certs: ClientCertificates, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, way: str
) -> None:
    """Another CA's certificate and key put at both names after the check: OpenSSL
    loaded them (the server refused them), not the pair that was checked."""
    cert, key = _copies(certs, tmp_path)

    def swap() -> None:
        os.replace(shutil.copyfile(certs.other_cert, tmp_path / "c.new"), cert)
        os.replace(shutil.copyfile(certs.other_key, tmp_path / "k.new"), key)

    _after_check(monkeypatch, swap)
    context = _context()
    transport.client_identity(context, cert, key, None)
    assert _presented(context, certs) == _der(certs.cert)


def test_the_files_may_be_gone_once_checked(
    certs: ClientCertificates, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, way: str
) -> None:
    """No second open by path: removing both files after the check changes nothing (it
    was "No such file or directory")."""
    cert, key = _copies(certs, tmp_path)

    def remove() -> None:
        os.unlink(cert)
        os.unlink(key)

    _after_check(monkeypatch, remove)
    context = _context()
    transport.client_identity(context, cert, key, None)
    assert _presented(context, certs) == _der(certs.cert)


@pytest.mark.timeout(30)
def test_a_fifo_swapped_in_after_the_check_cannot_hang_the_load(
    certs: ClientCertificates, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, way: str
) -> None:
    """OpenSSL's open of a FIFO without a writer waited for ever."""
    cert, key = _copies(certs, tmp_path)

    def fifo() -> None:
        os.unlink(key)
        os.mkfifo(key)

    _after_check(monkeypatch, fifo)
    context = _context()
    transport.client_identity(context, cert, key, None)
    assert _presented(context, certs) == _der(certs.cert)


def test_a_combined_file_is_read_once(
    certs: ClientCertificates, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, way: str
) -> None:
    """The certificate file that holds the key too was read a second time for the key."""
    cert, _ = _copies(certs, tmp_path, combined=True)
    read = _after_check(monkeypatch, lambda: None)
    context = _context()
    transport.client_identity(context, cert, None, None)
    assert read == [cert]
    assert _presented(context, certs) == _der(certs.cert)


class _Recording(ssl.SSLContext):
    """Records what each path handed to ``load_cert_chain`` names (``os.readlink``: a
    regular file's path is no link, ``OSError``)."""

    opened: list[str]

    def load_cert_chain(self, certfile: Any, keyfile: Any = None, password: Any = None) -> None:
        self.opened = [os.readlink(path) for path in (certfile, keyfile)]
        super().load_cert_chain(certfile, keyfile, password)


def test_no_file_on_a_disk_holds_the_key_for_openssl(
    certs: ClientCertificates, tmp_path: Path, way: str
) -> None:
    """OpenSSL is given an anonymous in-memory file or a pipe, never a path of a file,
    and an encrypted key still opens with its password."""
    context = _Recording(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    transport.client_identity(context, certs.cert, certs.encrypted_key, Sensitive(KEY_PASSWORD))
    expected = "/memfd:medsecrets-pem" if way == "memfd" else "pipe:["
    assert all(target.startswith(expected) for target in context.opened), context.opened
    assert _presented(context, certs) == _der(certs.cert)


def test_refused_files_are_the_same_errors_and_leave_no_thread(
    certs: ClientCertificates, tmp_path: Path, way: str
) -> None:
    """Every case of ``test_client_cert``'s unusable files (a wrong password stops the read
    of the key half way: the pipe's feeding thread still ends)."""
    cert_cases.test_files_that_cannot_be_used_are_one_clear_error(certs, tmp_path, Client)
    assert not [t for t in threading.enumerate() if t.name == "medsecrets-pem-feed"]
