"""TLS for the server: TLS 1.3 only.

``server_context(tls)`` builds the ``ssl.SSLContext`` the uvicorn backend
serves with, and is also how every backend checks at start that the
certificate, key and client CA load and match (granian terminates TLS in Rust
with ``ssl_protocol_min = tls1.3``, the same policy). The context refuses
every protocol version below TLS 1.3, and requires a client certificate
signed by ``client_ca`` when one is configured.

Checked at start, each failure a ``ConfigError`` naming the setting (the
message carries the reason, never key material): the certificate file is a
PEM chain whose first certificate has not expired; the key file grants no
permission to other users (group-readable is fine: an ``ssl-cert`` group) and
is not protected by a passphrase (nobody is there to type it: OpenSSL used to
prompt on the terminal); the key matches the certificate; the client CA is a
PEM bundle.
"""

from __future__ import annotations

import datetime as dt
import os
import ssl
import stat
from typing import Final

from medsecrets.errors import ConfigError
from medsecrets.server.config import TlsSettings

__all__ = ["check_pkcs8_key", "server_context"]

_MAX_PEM_BYTES: Final = 1 << 20


def server_context(tls: TlsSettings) -> ssl.SSLContext:
    """A server ``SSLContext`` for ``tls`` with ``minimum_version = TLSv1_3``."""
    if tls.cert_file is None or tls.key_file is None:
        raise ConfigError("setting 'tls.cert_file': TLS needs tls.cert_file and tls.key_file")
    _check_certificate(tls.cert_file)
    _check_key_mode(tls.key_file)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.options |= ssl.OP_NO_COMPRESSION
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file, password=_no_passphrase)
    except _PassphraseProtected:
        raise ConfigError(
            "setting 'tls.key_file': the key is protected by a passphrase; an unencrypted "
            "PKCS#8 PEM key is needed (convert with: openssl pkcs8 -topk8 -nocrypt)"
        ) from None
    except ssl.SSLError as exc:
        raise ConfigError(
            f"setting 'tls.cert_file'/'tls.key_file': cannot load the certificate and key "
            f"({exc.reason or 'SSL error'})"
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"setting 'tls.cert_file'/'tls.key_file': cannot read ({exc.strerror})"
        ) from None
    if tls.client_ca is not None:
        try:
            context.load_verify_locations(cafile=tls.client_ca)
        except (ssl.SSLError, OSError) as exc:
            reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or "error"
            raise ConfigError(f"setting 'tls.client_ca': cannot load the CA ({reason})") from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class _PassphraseProtected(Exception):
    """Raised by ``_no_passphrase``: OpenSSL asked for the key's passphrase."""


def _no_passphrase() -> bytes:
    """``load_cert_chain``'s password callback: never a passphrase (and never a prompt)."""
    raise _PassphraseProtected


def _check_certificate(cert_file: str) -> None:
    """The file is a PEM certificate chain whose first (the server's) certificate is in date."""
    from cryptography import x509

    try:
        with open(cert_file, "rb") as handle:
            pem = handle.read(_MAX_PEM_BYTES)
    except OSError as exc:
        raise ConfigError(f"setting 'tls.cert_file': cannot read ({exc.strerror})") from None
    try:
        leaf = x509.load_pem_x509_certificates(pem)[0]
    except ValueError:
        raise ConfigError(
            "setting 'tls.cert_file': not a PEM certificate chain ('BEGIN CERTIFICATE')"
        ) from None
    expired = leaf.not_valid_after_utc
    if expired <= dt.datetime.now(dt.UTC):
        raise ConfigError(
            f"setting 'tls.cert_file': the certificate expired at {expired:%Y-%m-%d %H:%M:%S} UTC"
        )


def _check_key_mode(key_file: str) -> None:
    """The private key file grants nothing to other users (chmod 600, or 640 for a group)."""
    try:
        mode = stat.S_IMODE(os.stat(key_file).st_mode)
    except OSError as exc:
        raise ConfigError(f"setting 'tls.key_file': cannot read ({exc.strerror})") from None
    if mode & 0o007:
        raise ConfigError(
            f"setting 'tls.key_file': other users may access the private key (mode {mode:04o}); "
            "chmod 600 it (640 for a group)"
        )


def check_pkcs8_key(key_file: str) -> None:
    """Refuse a key that granian cannot read: it needs an unencrypted PKCS#8 PEM key."""
    try:
        with open(key_file, "rb") as handle:
            head = handle.read(4096)
    except OSError as exc:
        raise ConfigError(f"setting 'tls.key_file': cannot read ({exc.strerror})") from None
    if b"-----BEGIN PRIVATE KEY-----" not in head:
        raise ConfigError(
            "setting 'tls.key_file': must be an unencrypted PKCS#8 PEM key "
            "('BEGIN PRIVATE KEY'; convert with: openssl pkcs8 -topk8 -nocrypt)"
        )
