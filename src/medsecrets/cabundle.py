"""``ca_context``: a client TLS context that trusts the system store or one PEM CA bundle.

Shared by the clients that reach out over TLS: the SDK (and so the CLI) and the
audit trail's SIEM forwarder. A CA bundle names *the only* CAs trusted, so it is
read with care: a regular file only (``cafile=`` would wait for ever on a FIFO and
read a device without end), at most ``MAX_CA_FILE_BYTES``, and holding at least one
PEM certificate. An empty file in particular is refused: ``cadata=""`` would quietly
fall back to the system store, trusting every public CA where one private CA was meant.
"""

from __future__ import annotations

import ssl
from typing import Final

from medsecrets.fdio import open_regular

__all__ = ["MAX_CA_FILE_BYTES", "ca_context"]

MAX_CA_FILE_BYTES: Final = 16 << 20
"""Largest CA bundle read (a system bundle of every public root is ~0.3 MiB)."""

_PEM_CERTIFICATE: Final = b"-----BEGIN CERTIFICATE-----"


def ca_context(ca_file: str | None) -> ssl.SSLContext:
    """A client context (TLS 1.2 at least, host names checked) trusting the system store,
    or with ``ca_file`` only the PEM certificates of that file.

    Raises ``ValueError`` saying why the file cannot be used (unreadable, not a regular
    file, larger than ``MAX_CA_FILE_BYTES``, not PEM text, no certificate in it); the
    message holds neither the file's path nor its content: callers name the file.
    """
    if ca_file is None:
        context = ssl.create_default_context()
    else:
        try:
            with open_regular(ca_file) as handle:
                data = handle.read(MAX_CA_FILE_BYTES + 1)
        except OSError as exc:
            raise ValueError(f"cannot be read ({exc.strerror or type(exc).__name__})") from None
        if len(data) > MAX_CA_FILE_BYTES:
            raise ValueError("is larger than 16 MiB")
        if _PEM_CERTIFICATE not in data:
            raise ValueError("is not a PEM certificate bundle ('BEGIN CERTIFICATE')")
        try:
            context = ssl.create_default_context(cadata=data.decode("ascii"))
        except UnicodeDecodeError:
            raise ValueError("is not PEM text (not ASCII)") from None
        except ssl.SSLError as exc:
            raise ValueError(f"holds no usable certificate ({exc.reason or 'SSL error'})") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
