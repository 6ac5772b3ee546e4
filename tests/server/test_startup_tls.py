"""Hostile TLS files stop a real server start with one line naming the setting (exit 2)."""

from __future__ import annotations

import datetime as dt
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from medsecrets.errors import ConfigError
from medsecrets.server.config import TlsSettings
from medsecrets.server.tls import server_context
from medsecrets.testing.serverproc import TestCertificates
from tests.server.conftest import run_server


def _self_signed(
    directory: Path, *, days: tuple[int, int]
) -> tuple[Path, Path, ec.EllipticCurvePrivateKey]:
    """A self-signed certificate valid from ``days[0]`` to ``days[1]`` days from now, and its
    unencrypted PKCS#8 key (0600)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + dt.timedelta(days=days[0]))
        .not_valid_after(now + dt.timedelta(days=days[1]))
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return cert_file, key_file, key


def _start(tmp_path: Path, cert: Path | str, key: Path | str) -> list[str]:
    done = run_server(
        ["--dev", "--tls-cert", str(cert), "--tls-key", str(key)], cwd=tmp_path, timeout=90
    )
    assert done.code == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / ".medsecrets").exists()  # stopped before anything was set up
    return done.stderr.strip().splitlines()


def test_an_expired_certificate_stops_the_start(tmp_path: Path) -> None:
    """It was served: every client that checks dates then failed its handshake."""
    cert, key, _ = _self_signed(tmp_path, days=(-30, -1))
    last = _start(tmp_path, cert, key)[-1]
    assert last.startswith(
        "medsecrets server: config error: setting 'tls.cert_file': the certificate expired at "
    )


def test_a_world_readable_key_stops_the_start(tmp_path: Path) -> None:
    cert, key, _ = _self_signed(tmp_path, days=(-1, 30))
    key.chmod(0o644)
    assert _start(tmp_path, cert, key)[-1] == (
        "medsecrets server: config error: setting 'tls.key_file': other users may access the "
        "private key (mode 0644); chmod 600 it (640 for a group)"
    )


def test_a_group_readable_key_is_accepted(certs: TestCertificates, tmp_path: Path) -> None:
    key = tmp_path / "key.pem"
    key.write_bytes(Path(certs.key_file).read_bytes())
    key.chmod(0o640)
    server_context(TlsSettings(cert_file=certs.cert_file, key_file=str(key)))


def _tls_args(cert: Path, key: Path) -> list[str]:
    return ["--tls-cert", str(cert), "--tls-key", str(key)]


def test_a_passphrase_protected_key_stops_the_start_without_a_prompt(tmp_path: Path) -> None:
    """OpenSSL asked for the passphrase on the terminal: a start from a shell waited for it."""
    cert, _, private = _self_signed(tmp_path, days=(-1, 30))
    key = tmp_path / "encrypted.pem"
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"correct horse"),
        )
    )
    key.chmod(0o600)
    # a terminal on stdin, as in an operator's shell: the prompt would wait on it
    controller, terminal = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDSECRETS_")}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "medsecrets.server", "--dev", *_tls_args(cert, key)],
            stdin=terminal,
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
    finally:
        os.close(terminal)
        os.close(controller)
    assert done.returncode == 2
    assert "pass phrase" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "medsecrets server: config error: setting 'tls.key_file': the key is protected by a "
        "passphrase; an unencrypted PKCS#8 PEM key is needed "
        "(convert with: openssl pkcs8 -topk8 -nocrypt)"
    )


def test_a_certificate_file_that_is_not_pem_names_the_setting(
    certs: TestCertificates, tmp_path: Path
) -> None:
    """It said 'cannot load the certificate and key (SSL error)', naming no culprit."""
    der = tmp_path / "cert.der"
    der.write_bytes(
        x509.load_pem_x509_certificate(Path(certs.cert_file).read_bytes()).public_bytes(
            serialization.Encoding.DER
        )
    )
    with pytest.raises(ConfigError) as caught:
        server_context(TlsSettings(cert_file=str(der), key_file=certs.key_file))
    assert caught.value.message == (
        "setting 'tls.cert_file': not a PEM certificate chain ('BEGIN CERTIFICATE')"
    )
