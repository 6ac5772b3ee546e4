"""Mutual-TLS test material, shared by ``tests/sdk`` and ``tests/cli``.

``write_client_certificates(directory)`` makes, beside the server's throwaway CA
and certificate (``write_test_certificates``), a client CA (the server's
``tls.client_ca``), a client certificate it signed (key apart, key inside, key
encrypted; the same as DER and as PKCS#12), an expired certificate it signed, a
client certificate of another CA and an RSA key (the certificates' keys are EC).
``MutualTlsServer`` is a ``ServerProcess`` that asks for client certificates (its
readiness check presents the client certificate).
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from medsecrets.testing.serverproc import ServerProcess, TestCertificates, write_test_certificates

KEY_PASSWORD = "correct horse battery staple"  # a throwaway test key's password


@dataclass(frozen=True)
class ClientCertificates:
    """Paths of the PEM files ``write_client_certificates`` made."""

    server: TestCertificates
    client_ca: str
    cert: str
    key: str
    combined: str
    encrypted_key: str
    other_cert: str
    other_key: str
    expired_cert: str
    expired_key: str
    der_cert: str
    pkcs12: str
    rsa_key: str

    def key_lines(self) -> list[str]:
        """The base64 lines of the client's private key (to check no message holds one)."""
        text = Path(self.key).read_text()
        return [line for line in text.splitlines() if line and not line.startswith("-----")]


def _ca(name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    now = dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _client(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, *, expired: bool = False
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    now = dt.datetime.now(dt.UTC) - (dt.timedelta(days=3) if expired else dt.timedelta())
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "medsecrets client")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, password: str | None = None
) -> bytes:
    encryption: serialization.KeySerializationEncryption = serialization.NoEncryption()
    if password is not None:
        encryption = serialization.BestAvailableEncryption(password.encode())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def _write(path: Path, data: bytes) -> str:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return str(path)


def write_client_certificates(directory: Path) -> ClientCertificates:
    """The server's certificates and the client material (see the module docstring)."""
    server = write_test_certificates(directory)
    ca_key, ca_cert = _ca("medsecrets test client CA")
    key, cert = _client(ca_key, ca_cert)
    other_ca_key, other_ca_cert = _ca("another CA")
    other_key, other_cert = _client(other_ca_key, other_ca_cert)
    expired_key, expired_cert = _client(ca_key, ca_cert, expired=True)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pkcs12_data = pkcs12.serialize_key_and_certificates(
        b"client", key, cert, None, serialization.BestAvailableEncryption(KEY_PASSWORD.encode())
    )
    return ClientCertificates(
        server=server,
        client_ca=_write(directory / "client-ca.pem", _cert_pem(ca_cert)),
        cert=_write(directory / "client.pem", _cert_pem(cert)),
        key=_write(directory / "client-key.pem", _key_pem(key)),
        combined=_write(directory / "client-combined.pem", _cert_pem(cert) + _key_pem(key)),
        encrypted_key=_write(directory / "client-key-enc.pem", _key_pem(key, KEY_PASSWORD)),
        other_cert=_write(directory / "other.pem", _cert_pem(other_cert)),
        other_key=_write(directory / "other-key.pem", _key_pem(other_key)),
        expired_cert=_write(directory / "expired.pem", _cert_pem(expired_cert)),
        expired_key=_write(directory / "expired-key.pem", _key_pem(expired_key)),
        der_cert=_write(directory / "client.der", cert.public_bytes(serialization.Encoding.DER)),
        pkcs12=_write(directory / "client.p12", pkcs12_data),
        rsa_key=_write(directory / "rsa-key.pem", _key_pem(rsa_key)),
    )


class MutualTlsServer(ServerProcess):
    """A dev-mode TLS server with ``tls.client_ca`` (see the module docstring)."""

    def __init__(self, directory: Path, certs: ClientCertificates) -> None:
        super().__init__(
            directory / "data",
            extra_args=certs.server.server_args(),
            env={"MEDSECRETS_TLS_CLIENT_CA": certs.client_ca},
            ca_file=certs.server.ca_file,
            client_cert=(certs.cert, certs.key),
            log_dir=directory / "logs",
        )
        self.certs = certs
