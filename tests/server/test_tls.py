"""The TLS context: TLS 1.3 minimum, files checked at start with the setting named."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from medsecrets.errors import ConfigError
from medsecrets.server.config import TlsSettings
from medsecrets.server.tls import check_pkcs8_key, server_context
from medsecrets.testing.serverproc import TestCertificates


def test_context_is_tls13_only(certs: TestCertificates) -> None:
    context = server_context(TlsSettings(cert_file=certs.cert_file, key_file=certs.key_file))
    assert context.minimum_version is ssl.TLSVersion.TLSv1_3
    assert context.verify_mode is ssl.CERT_NONE


def test_client_ca_requires_client_certificates(certs: TestCertificates) -> None:
    tls = TlsSettings(cert_file=certs.cert_file, key_file=certs.key_file, client_ca=certs.ca_file)
    assert server_context(tls).verify_mode is ssl.CERT_REQUIRED


def test_mismatched_key_names_the_settings(certs: TestCertificates, tmp_path: Path) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key = tmp_path / "other.pem"
    key.write_bytes(
        other.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key.chmod(0o600)
    with pytest.raises(ConfigError, match=r"'tls.cert_file'/'tls.key_file'"):
        server_context(TlsSettings(cert_file=certs.cert_file, key_file=str(key)))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(ConfigError, match=r"'tls.client_ca'"):
        server_context(
            TlsSettings(cert_file=certs.cert_file, key_file=certs.key_file, client_ca=str(garbage))
        )


def test_pkcs8_check(certs: TestCertificates, tmp_path: Path) -> None:
    check_pkcs8_key(certs.key_file)
    traditional = tmp_path / "rsa.pem"
    traditional.write_bytes(
        rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(ConfigError, match=r"'tls.key_file': must be an unencrypted PKCS#8"):
        check_pkcs8_key(str(traditional))
