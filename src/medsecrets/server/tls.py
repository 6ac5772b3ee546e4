"""TLS for the server: TLS 1.3 only.

``server_context(tls)`` builds the ``ssl.SSLContext`` the uvicorn backend
serves with, and is also how every backend checks at start that the
certificate, key and client CA load and match (granian terminates TLS in Rust
with ``ssl_protocol_min = tls1.3``, the same policy). The context refuses
every protocol version below TLS 1.3, and requires a client certificate
signed by ``client_ca`` when one is configured.

Failures raise ``ConfigError`` naming the setting; the message carries the
OpenSSL reason, never key material.
"""

from __future__ import annotations

import ssl

from medsecrets.errors import ConfigError
from medsecrets.server.config import TlsSettings

__all__ = ["check_pkcs8_key", "server_context"]


def server_context(tls: TlsSettings) -> ssl.SSLContext:
    """A server ``SSLContext`` for ``tls`` with ``minimum_version = TLSv1_3``."""
    if tls.cert_file is None or tls.key_file is None:
        raise ConfigError("setting 'tls.cert_file': TLS needs tls.cert_file and tls.key_file")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.options |= ssl.OP_NO_COMPRESSION
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file)
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
