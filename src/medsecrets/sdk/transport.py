"""The sans-IO half of the SDK: settings, calls, retry policy, failover, decoding.

``Client`` and ``AsyncClient`` are thin drivers over this module: they send
what a ``Call`` describes to the address an ``Attempts`` picks, feed the
outcome back (``after_response`` / ``after_transport_error``) and sleep for
the delay it returns, so both behave the same by construction.

Retry contract (see ``Call.retry_safe``):

- a connection that could not be opened (refused, unreachable, connect
  timeout, no free pooled connection) never reached a server: every call is
  retried, first on the next address (failover, no delay), and after a full
  round of addresses with backoff;
- HTTP 503 (sealed, not initialised, audit refused) and failures after the
  request was sent (read/write errors, read timeout, dropped connection) are
  retried only for ``retry_safe`` calls, with backoff;
- backoff before retry *n* (0-based) is ``min(backoff_max, backoff * 2**n)``
  scaled by a jitter factor in ``[0.5, 1.0)`` ("equal jitter");
- at most ``retries`` backoff delays per call; then the last error is raised;
- a failed TLS handshake (untrusted certificate, protocol refused, a client
  certificate missing or refused) is never retried: it raises
  ``ServerUnavailableError`` at once, saying which of these it was. A TLS 1.3
  server refuses a client certificate after the request has started, and the
  alert can be lost with the connection (``refusal_probe_wanted``): an
  ``https://`` connection that broke is probed once for it before the rules
  above apply.

A client certificate (mutual TLS, for a server with ``tls.client_ca``) is
loaded into the same ``SSLContext`` as the CA (``client_identity``); a file
that cannot be used is a ``ClientCertificateError`` naming the file, never its
content.

Answers are read within bounds (``AnswerBody``, ``AttemptDeadline``), so a
broken or hostile peer costs bounded memory and time: a success body holds at
most ``max_response_bytes`` (more: ``UnexpectedResponseError``), only the
first ``MAX_ERROR_BYTES`` of an error body are read, and the body is read as
sent (the client asks for no content coding). Each attempt has two budgets of
``timeout`` seconds: the answer's head (status line and headers) must be
complete within ``timeout`` of the attempt's start (taking or opening a
connection and sending the request included), and its body within
``timeout`` of the head. httpx's own timeouts bound each network operation,
not a sequence of them, so the clients' transports (the default ones, and an
``httpx.HTTPTransport`` or ``AsyncHTTPTransport`` given as ``transport=``:
``bind_budgets``) cut every connect, read and write to what is left of the
budget under way (``bounded``); one with nothing left fails as a connect, read
or write timeout, so a peer that drips its head or body byte by byte (each byte
in time) ends like one that stopped answering, under the same retry rules (a
read timeout: retried only for ``retry_safe`` calls). An attempt thus lasts at
most about twice ``timeout`` (a wait for a free pooled connection counts in the
head's budget). Over another transport given as ``transport=``, the
``AsyncClient`` cancels the wait for the head when its budget is spent (a read
timeout); the ``Client`` cannot interrupt it (a blocked thread cannot be
stopped), so only a head that comes too late is refused (``AnswerBody``).
A redirect is never followed (the token would go with it): it is an
``UnexpectedResponseError`` naming the status.

The address that worked is kept (sticky) for later calls of the same client.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import json
import math
import os
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Generic, Literal, TypeVar

import httpx

from medsecrets.cabundle import ca_context
from medsecrets.errors import InvalidRequest, MedsecretsError
from medsecrets.fdio import open_regular
from medsecrets.sdk.errors import (
    ClientCertificateError,
    ServerUnavailableError,
    UnexpectedResponseError,
    error_from_response,
)
from medsecrets.sdk.fdpaths import fd_paths
from medsecrets.sensitive import MASK, Sensitive

__all__ = [
    "DEFAULT_ADDR",
    "ENV_ADDR",
    "ENV_CACERT",
    "ENV_CLIENT_CERT",
    "ENV_CLIENT_KEY",
    "ENV_CLIENT_KEY_PASSWORD",
    "ENV_TOKEN",
    "MAX_ERROR_BYTES",
    "MAX_RESPONSE_BYTES",
    "AddressRing",
    "AnswerBody",
    "AttemptDeadline",
    "Attempts",
    "Call",
    "ClientSettings",
    "RetryPolicy",
    "SettingNames",
    "attempt_deadline",
    "bind_budgets",
    "bounded",
    "bounded_pause",
    "checked_token",
    "client_identity",
    "decode",
    "encode",
    "is_unicode",
    "probe_refusal",
    "refusal_probe_wanted",
    "require_transport",
    "resolve_settings",
]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

DEFAULT_ADDR = "http://127.0.0.1:8200"
ENV_ADDR = "MEDSECRETS_ADDR"
ENV_TOKEN = "MEDSECRETS_TOKEN"  # noqa: S105 - the name of a variable, not a token
ENV_CACERT = "MEDSECRETS_CACERT"
ENV_CLIENT_CERT = "MEDSECRETS_CLIENT_CERT"
ENV_CLIENT_KEY = "MEDSECRETS_CLIENT_KEY"
ENV_CLIENT_KEY_PASSWORD = "MEDSECRETS_CLIENT_KEY_PASSWORD"  # noqa: S105 - a variable's name
USER_AGENT = "medsecrets-sdk/0.1"
MAX_RESPONSE_BYTES = 64 * 1024 * 1024
"""Default bound on the body of a success answer (``max_response_bytes``)."""
MAX_ERROR_BYTES = 64 * 1024
"""Bytes of an error answer's body that are read (an ``{"error": ...}`` body is far smaller)."""


@dataclass(frozen=True, slots=True)
class Call(Generic[T_co]):
    """One API call, transport-free: what to send and how to read the 2xx answer.

    ``retry_safe``: repeating the call after it may have reached the server
    cannot do harm (reads, idempotent writes). ``subject`` is the secret path
    the call is about, used in errors. ``auth``: send the token. The ``repr``
    leaves out ``body`` (values, unseal shares, tokens).
    """

    method: Literal["GET", "PUT", "POST", "PATCH", "DELETE"]
    path: str
    parse: Callable[[object], T_co]
    body: object = field(default=None, repr=False)  # may hold secret values, shares, tokens
    params: tuple[tuple[str, str], ...] = ()
    auth: bool = True
    retry_safe: bool = True
    subject: str = ""

    def __post_init__(self) -> None:
        """``InvalidRequest`` for a query parameter that is not Unicode text (a lone
        surrogate): httpx raised a bare ``UnicodeEncodeError`` while sending."""
        if not all(is_unicode(name) and is_unicode(value) for name, value in self.params):
            raise InvalidRequest("a query parameter must be valid Unicode text")


def is_unicode(text: str) -> bool:
    """Whether ``text`` can be encoded as UTF-8 (it holds no lone surrogate)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Capped, jittered exponential backoff (see the module docstring)."""

    retries: int = 3
    backoff: float = 0.1
    backoff_max: float = 2.0

    def __post_init__(self) -> None:
        if self.retries < 0 or self.backoff < 0 or self.backoff_max < 0:
            raise ValueError("retries, backoff and backoff_max must not be negative")

    def delay(self, retry: int, jitter: float) -> float:
        """Seconds to wait before retry number ``retry`` (0-based); ``jitter`` in [0, 1)."""
        cap = min(self.backoff_max, self.backoff * (2.0 ** min(retry, 62)))
        return cap * (0.5 + jitter / 2.0)


class AddressRing:
    """Server addresses in order of preference, with a sticky current one (thread-safe)."""

    __slots__ = ("_addresses", "_index", "_lock")

    def __init__(self, addresses: Sequence[str]) -> None:
        if not addresses:
            raise ValueError("at least one server address is needed")
        self._addresses = tuple(addresses)
        self._index = 0
        self._lock = threading.Lock()

    @property
    def addresses(self) -> tuple[str, ...]:
        """Every address, in configured order."""
        return self._addresses

    @property
    def current(self) -> int:
        """Index of the address calls start with."""
        return self._index

    def address(self, index: int) -> str:
        """The address at ``index`` (modulo the ring size)."""
        return self._addresses[index % len(self._addresses)]

    def fail(self, index: int) -> int:
        """Report ``index`` unreachable; returns the index to try next (and sticks to it)."""
        nxt = (index + 1) % len(self._addresses)
        with self._lock:
            if self._index == index % len(self._addresses):
                self._index = nxt
        return nxt

    def __len__(self) -> int:
        return len(self._addresses)


@dataclass(frozen=True, slots=True)
class SettingNames:
    """How messages name the settings a user has to fix: the SDK's own (its arguments and
    variables) unless a program that takes them under other names (the CLI's
    ``--client-cert``) passes its own (``setting_names``), so its users read what they
    can type. Each is the whole text put in the message (``"a / b"`` for either)."""

    cacert: str = "cacert / MEDSECRETS_CACERT"
    client_cert: str = "client_cert / MEDSECRETS_CLIENT_CERT"
    client_key: str = "client_key / MEDSECRETS_CLIENT_KEY"
    client_key_password: str = "MEDSECRETS_CLIENT_KEY_PASSWORD (or client_key_password)"  # noqa: S105 - names


SDK_NAMES: Final = SettingNames()
"""The SDK's own names (the default)."""


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """Resolved client settings (arguments first, then ``MEDSECRETS_*``, then defaults)."""

    addresses: tuple[str, ...]
    token: Sensitive[str] | None = field(repr=False)
    verify: ssl.SSLContext | bool = field(repr=False)
    timeout: float
    policy: RetryPolicy
    max_response_bytes: int = MAX_RESPONSE_BYTES
    names: SettingNames = SDK_NAMES

    def headers(self, call: Call[object], token: Sensitive[str] | None) -> dict[str, str]:
        """Request headers for ``call`` (the token only where the route needs one)."""
        headers = {
            "Accept": "application/json",
            "Accept-Encoding": "identity",  # bodies are read raw, with a bound on their size
            "User-Agent": USER_AGENT,
        }
        if call.body is not None:
            headers["Content-Type"] = "application/json"
        if call.auth and token is not None:
            headers["Authorization"] = f"Bearer {token.reveal()}"
        return headers


def _ca_context(ca: str) -> ssl.SSLContext:
    """A TLS context trusting only the PEM certificates of the file ``ca``
    (``cabundle.ca_context``); ``ValueError`` naming the file otherwise."""
    try:
        return ca_context(ca)
    except ValueError as exc:
        raise ValueError(f"cannot use the CA file {ca!r}: {exc}") from None


MAX_PEM_FILE_BYTES: Final = 1 << 20
"""Largest client certificate or key file read (a chain of a few certificates is ~10 KiB)."""

_PEM_CERTIFICATE: Final = b"-----BEGIN CERTIFICATE-----"
_PEM_PRIVATE_KEY: Final = b" PRIVATE KEY-----"  # PKCS#8, encrypted PKCS#8, EC and RSA keys
_PEM_ENCRYPTED: Final = (b"-----BEGIN ENCRYPTED PRIVATE KEY-----", b"Proc-Type: 4,ENCRYPTED")
_REFUSED_CERTIFICATE: Final = {
    "TLSV1_ALERT_UNKNOWN_CA": "it is not signed by a CA the server trusts (tls.client_ca)",
    "SSLV3_ALERT_BAD_CERTIFICATE": "",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "it has expired or is not valid yet",
    "SSLV3_ALERT_CERTIFICATE_REVOKED": "it is revoked",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "",
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE": "it is not one for client authentication",
    "TLSV1_ALERT_ACCESS_DENIED": "",
}
"""Alerts with which a server refuses the client certificate it was given, and what
each says of it (``""``: nothing more than the alert's name)."""


def _pem_head(path: str, what: str) -> bytes:
    """The bytes of the regular file ``path`` (at most ``MAX_PEM_FILE_BYTES``), read with
    the same care as the CA file; ``ClientCertificateError`` naming ``what`` and the file."""
    try:
        with open_regular(path) as handle:
            data = handle.read(MAX_PEM_FILE_BYTES + 1)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ClientCertificateError(f"cannot use the {what} {path!r}: {reason}") from None
    except ValueError:  # a NUL in the path
        raise ClientCertificateError(f"cannot use the {what} {path!r}: not a file name") from None
    if len(data) > MAX_PEM_FILE_BYTES:
        raise ClientCertificateError(f"cannot use the {what} {path!r}: larger than 1 MiB")
    return data


def _not_pem(data: bytes) -> str:
    """Why a file without the expected PEM block cannot be used (binary DER or PKCS#12
    named as such: the SDK reads PEM only)."""
    if data[:1] == b"\x30":  # an ASN.1 SEQUENCE: DER, of which PKCS#12 is one
        return " (it is binary DER or PKCS#12: convert it to PEM with openssl)"
    return ""


def _certificates_readable(data: bytes) -> bool:
    """Whether every PEM certificate in ``data`` can be parsed (to say which of the two
    files OpenSSL's bare "PEM lib" error is about; the key is never parsed here)."""
    from cryptography import x509  # only when a file was refused

    try:
        x509.load_pem_x509_certificates(data)
    except ValueError:
        return False
    return True


class _KeyPasswordProblem(Exception):
    """Raised by the password callback instead of handing OpenSSL a password: none was
    given (OpenSSL never prompts), or it cannot be given (``problem``: why)."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


MAX_KEY_PASSWORD_BYTES: Final = 1024
"""The longest key password OpenSSL takes through Python's ``ssl`` (``PEM_BUFSIZE``)."""


def _password_bytes(
    password: Sensitive[str] | None, key_file: str, names: SettingNames = SDK_NAMES
) -> bytes:
    """``password`` as the bytes OpenSSL takes; ``_KeyPasswordProblem`` (naming no part of
    it) when there is none, it is not Unicode text or it is too long."""
    if password is None:
        raise _KeyPasswordProblem(
            f"the client key {key_file!r} is encrypted: give its password with"
            f" {names.client_key_password}"
        )
    try:
        data = password.reveal().encode()
    except UnicodeEncodeError:  # its message shows a character of the password: dropped
        data = None
    if data is None:
        raise _KeyPasswordProblem(
            f"the password of the client key {key_file!r} is not valid Unicode text"
        )
    if len(data) > MAX_KEY_PASSWORD_BYTES:
        raise _KeyPasswordProblem(
            f"the password of the client key {key_file!r} is longer than"
            f" {MAX_KEY_PASSWORD_BYTES} bytes (the most OpenSSL takes)"
        )
    return data


def client_identity(
    context: ssl.SSLContext,
    cert: str,
    key: str | None,
    password: Sensitive[str] | None,
    names: SettingNames = SDK_NAMES,
) -> None:
    """Load the client certificate chain ``cert`` (PEM) and its private key into ``context``
    (``SSLContext.load_cert_chain``); ``key`` ``None``: the key is in ``cert``.

    An encrypted key is opened with ``password`` (``MEDSECRETS_CLIENT_KEY_PASSWORD``);
    without one it is refused (OpenSSL never prompts on the terminal). Both files must
    be regular files of at most ``MAX_PEM_FILE_BYTES``; each is opened once, and what
    is loaded is exactly the bytes checked (handed to OpenSSL through
    ``fdpaths.fd_paths``, never written to a disk), so a file swapped in after the
    check (another certificate, a FIFO) changes nothing. Every failure (a missing or
    unreadable file, no PEM certificate or key in it (DER and PKCS#12 named as such),
    a damaged one, an encrypted key without its password, with a wrong one, one that
    is not Unicode or longer than ``MAX_KEY_PASSWORD_BYTES``, a key that does not
    match the certificate, of its type or not) is a ``ClientCertificateError`` naming
    the file(s) and the problem: never the files' content or the password, and raised
    with no exception context from ``ssl``. The certificate's dates are not checked
    here: a server that asks for a certificate checks them (and says so, ``_tls_problem``).
    """
    key_file = key if key is not None else cert
    cert_pem = _pem_head(cert, "client certificate file")
    if _PEM_CERTIFICATE not in cert_pem:
        raise ClientCertificateError(
            f"cannot use the client certificate file {cert!r}: no PEM certificate in it"
            f" ('BEGIN CERTIFICATE'){_not_pem(cert_pem)}"
        )
    key_pem = cert_pem if key is None else _pem_head(key_file, "client key file")
    if _PEM_PRIVATE_KEY not in key_pem:
        hint = _not_pem(key_pem)
        if key is None:
            hint = f" (give the key with {names.client_key})"
        raise ClientCertificateError(
            f"cannot use the client key file {key_file!r}: no PEM private key in it{hint}"
        )
    encrypted = any(mark in key_pem for mark in _PEM_ENCRYPTED)

    def give_password() -> bytes:
        return _password_bytes(password, key_file, names)

    problem: str | None = None
    reason: str | None = None  # OpenSSL's, when it refused the files
    try:
        # OpenSSL reads the bytes checked above, not the paths again (fd_paths)
        with fd_paths(cert_pem, key_pem) as (checked_cert, checked_key):
            context.load_cert_chain(checked_cert, checked_key, password=give_password)
    except _KeyPasswordProblem as exc:
        problem = exc.problem
    except ssl.SSLError as exc:
        reason = str(exc.reason or "")
    except OSError as exc:
        if exc.errno == errno.ESPIPE:  # over fd_paths' pipe, OpenSSL's reason is lost
            reason = _reason_over_pipe(cert_pem, key_pem, password if encrypted else None)
        else:
            cause = exc.strerror or type(exc).__name__
            problem = f"cannot use the client certificate {cert!r} and key {key_file!r}: {cause}"
    del key_pem
    if reason is not None:  # told here, outside the handler: no ssl context kept
        problem = _refused_files(
            reason, cert, key_file, cert_pem, encrypted=encrypted, password=password
        )
    if problem is not None:
        raise ClientCertificateError(problem)


def _refused_files(
    reason: str,
    cert: str,
    key_file: str,
    cert_pem: bytes,
    *,
    encrypted: bool,
    password: Sensitive[str] | None,
) -> str:
    """What OpenSSL's ``reason`` (``""``: its bare "PEM lib") for refusing the client
    certificate ``cert`` and key ``key_file`` means, naming the file at fault."""
    if reason in ("KEY_VALUES_MISMATCH", "NO_CERTIFICATE_ASSIGNED"):
        # (the second: a key of another type than the certificate's, RSA for EC)
        return f"the client key {key_file!r} does not match the certificate {cert!r}"
    if not _certificates_readable(cert_pem):
        return (
            f"cannot use the client certificate file {cert!r}: a PEM certificate in it"
            " cannot be read (damaged or truncated?)"
        )
    if encrypted and password is not None:
        return f"cannot decrypt the client key {key_file!r} (is the password right?)"
    if not reason:  # the certificate read, so the key
        return (
            f"cannot use the client key file {key_file!r}: its PEM private key cannot"
            " be read (damaged or truncated?)"
        )
    return f"cannot use the client certificate {cert!r} and key {key_file!r} ({reason})"


def _reason_over_pipe(cert_pem: bytes, key_pem: bytes, password: Sensitive[str] | None) -> str:
    """OpenSSL's reason for refusing a key read from a pipe (``fd_paths`` where there is no
    memfd), which Python's ``ssl`` replaces by the ``ESPIPE`` of a seek OpenSSL tried:
    ``"KEY_VALUES_MISMATCH"`` when the key opens (with ``password``) and is not the
    first certificate's, else ``""`` (a damaged file or a wrong password, told apart as
    for OpenSSL's bare "PEM lib")."""
    from cryptography import x509  # only when a file was refused, and only off Linux
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    try:
        secret = None if password is None else _password_bytes(password, "")
        key = serialization.load_pem_private_key(key_pem, secret).public_key()
        first = x509.load_pem_x509_certificates(cert_pem)[0].public_key()
    except (ValueError, TypeError, UnsupportedAlgorithm, _KeyPasswordProblem):
        return ""
    return "" if key.public_bytes(*spki) == first.public_bytes(*spki) else "KEY_VALUES_MISMATCH"


def _split_addresses(addr: str | Sequence[str]) -> tuple[str, ...]:
    items = addr.split(",") if isinstance(addr, str) else list(addr)
    out = tuple(a.strip().rstrip("/") for a in items if a.strip())
    for a in out:
        if "@" in a.partition("://")[2].partition("/")[0]:  # checked first: never echoed
            raise ValueError(
                "a server address must not hold a user name or password (the token authenticates)"
            )
        if not a.startswith(("http://", "https://")):
            raise ValueError(f"server address {a!r} must start with http:// or https://")
        try:
            url = httpx.URL(a)
            port = url.port
        except httpx.InvalidURL as exc:
            raise ValueError(f"server address {a!r} is not a valid URL ({exc})") from None
        if not url.host or (port is not None and not 0 < port < 65536):
            raise ValueError(f"server address {a!r} is not a valid URL (host or port)")
    return out


def checked_token(token: str | Sensitive[str] | None) -> Sensitive[str] | None:
    """``token`` as ``Sensitive``; ``ValueError`` (naming no part of it) unless it is printable
    ASCII without spaces, as every token is (it travels in an HTTP header)."""
    found = as_sensitive(token)
    if found is not None:
        text = found.reveal()
        if not (text.isascii() and text.isprintable()) or " " in text:
            raise ValueError("the token is not printable ASCII (is MEDSECRETS_TOKEN right?)")
    return found


def resolve_settings(
    addr: str | Sequence[str] | None,
    token: str | Sensitive[str] | None,
    *,
    cacert: str | None,
    verify: bool,
    timeout: float,
    policy: RetryPolicy,
    max_response_bytes: int = MAX_RESPONSE_BYTES,
    env: Mapping[str, str] | None = None,
    client_cert: str | None = None,
    client_key: str | None = None,
    client_key_password: str | Sensitive[str] | None = None,
    names: SettingNames = SDK_NAMES,
) -> ClientSettings:
    """Settings from arguments, falling back to ``MEDSECRETS_ADDR`` (comma-separated),
    ``MEDSECRETS_TOKEN``, ``MEDSECRETS_CACERT``, ``MEDSECRETS_CLIENT_CERT``,
    ``MEDSECRETS_CLIENT_KEY`` and ``MEDSECRETS_CLIENT_KEY_PASSWORD``, then to
    ``DEFAULT_ADDR`` (an empty variable counts as unset).

    A client certificate is loaded into the one ``SSLContext`` that also holds the
    trusted CAs (``client_identity``: ``ClientCertificateError`` for a file that
    cannot be used); a client key without a certificate is a ``ClientCertificateError``
    too. ``ValueError`` for the other bad settings."""
    environ = os.environ if env is None else env
    if not (isinstance(timeout, int | float) and math.isfinite(timeout) and timeout > 0):
        raise ValueError("timeout must be a positive number of seconds")
    if not (isinstance(max_response_bytes, int) and max_response_bytes > 0):
        raise ValueError("max_response_bytes must be a positive number of bytes")
    addresses = _split_addresses(addr if addr is not None else environ.get(ENV_ADDR, ""))
    raw_token = token if token is not None else environ.get(ENV_TOKEN) or None
    ca = cacert if cacert is not None else environ.get(ENV_CACERT) or None
    tls: ssl.SSLContext | bool = verify
    if verify and ca is not None:
        tls = _ca_context(ca)
    cert = client_cert if client_cert is not None else environ.get(ENV_CLIENT_CERT) or None
    key = client_key if client_key is not None else environ.get(ENV_CLIENT_KEY) or None
    if cert is not None:
        if not isinstance(tls, ssl.SSLContext):  # the system's CAs (or none: verify=False)
            tls = httpx.create_ssl_context(verify=tls, trust_env=False)
        raw_password = client_key_password
        if raw_password is None:
            raw_password = environ.get(ENV_CLIENT_KEY_PASSWORD) or None
        client_identity(tls, cert, key, as_sensitive(raw_password), names)
    elif key is not None:
        raise ClientCertificateError(f"a client key needs its certificate ({names.client_cert})")
    return ClientSettings(
        addresses=addresses or (DEFAULT_ADDR,),
        token=checked_token(raw_token),
        verify=tls,
        timeout=timeout,
        policy=policy,
        max_response_bytes=max_response_bytes,
        names=names,
    )


def as_sensitive(token: str | Sensitive[str] | None) -> Sensitive[str] | None:
    """``token`` wrapped in ``Sensitive`` (``None`` stays ``None``)."""
    if token is None or isinstance(token, Sensitive):
        return token
    return Sensitive(token)


def masked(token: Sensitive[str] | None) -> str:
    """How a token shows in a ``repr``."""
    return "None" if token is None else repr(MASK)


_UNSENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_SENT = (
    httpx.ReadError,
    httpx.WriteError,
    httpx.ReadTimeout,
    httpx.WriteTimeout,
    httpx.RemoteProtocolError,
)


def _tls_failure(exc: BaseException) -> str | None:
    """The OpenSSL reason (``""`` if none) when ``exc`` comes from a failed TLS handshake
    (retrying cannot help), else ``None``."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLError):
            return str(seen.reason or "")
        seen = seen.__cause__ or seen.__context__
    return None


def _tls_problem(reason: str, names: SettingNames) -> str:
    """What a failed handshake's OpenSSL ``reason`` means, and which setting to look at."""
    if reason == "TLSV13_ALERT_CERTIFICATE_REQUIRED":
        return f"the server requires a client certificate; see {names.client_cert}"
    if reason in _REFUSED_CERTIFICATE:
        meaning = _REFUSED_CERTIFICATE[reason]
        return (
            f"the server refused the client certificate: {reason.lower()}"
            f"{', ' if meaning else ''}{meaning}; see {names.client_cert}"
        )
    return f"untrusted certificate or protocol; see {names.cacert}"


_BROKEN = (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)


def refusal_probe_wanted(address: str, exc: BaseException) -> bool:
    """Whether the drivers should probe (``GET /v1/sys/health`` on ``address``) for a
    client certificate refused or missing behind ``exc`` before handling it.

    With TLS 1.3 a server checks the client certificate (or its absence) after the
    client's side of the handshake, so the request is already being sent when the
    refusal (a TLS alert) comes; when the server closes the connection while a
    request body is still being written, the alert is lost with it (asyncio drops
    what it had not read; so may the kernel), and the call only sees a broken
    connection (``ReadError``: nearly every write of the ``AsyncClient``, by timing).
    So when an ``https://`` connection broke (not timed out) with no TLS reason, the
    drivers make one small request on a connection of its own (no token, no body,
    its answer not read), which sees the alert if there is one (``probe_refusal``),
    so that both clients name a refused or missing certificate alike."""
    return address.startswith("https://") and isinstance(exc, _BROKEN) and _tls_failure(exc) is None


def probe_refusal(exc: BaseException) -> bool:
    """Whether the probe failed because the server refused the client certificate (or
    asked for one): then its error replaces the broken connection's."""
    reason = _tls_failure(exc)
    return reason == "TLSV13_ALERT_CERTIFICATE_REQUIRED" or reason in _REFUSED_CERTIFICATE


class Attempts:
    """The retry/failover state of one call (sans-IO; one per call, not shared).

    Drivers loop: send to ``address``; then ``after_response(status)`` or
    ``after_transport_error(exc)`` returns the delay before the next attempt,
    or raises the error that ends the call.
    """

    __slots__ = (
        "_call",
        "_index",
        "_jitter",
        "_names",
        "_policy",
        "_retries",
        "_ring",
        "_round_failures",
    )

    def __init__(
        self,
        call: Call[object],
        ring: AddressRing,
        policy: RetryPolicy,
        jitter: Callable[[], float],
        names: SettingNames = SDK_NAMES,
    ) -> None:
        self._call = call
        self._names = names
        self._ring = ring
        self._policy = policy
        self._jitter = jitter
        self._index = ring.current
        self._retries = 0
        self._round_failures = 0

    @property
    def address(self) -> str:
        """The base address for the next attempt."""
        return self._ring.address(self._index)

    def _backoff(self, error: MedsecretsError) -> float:
        if self._retries >= self._policy.retries:
            raise error
        delay = self._policy.delay(self._retries, self._jitter())
        self._retries += 1
        return delay

    def after_response(self, status: int, content: bytes) -> float | None:
        """``None`` for a success (decode it); a delay to retry; else raises the mapped error
        (``UnexpectedResponseError`` for a redirect or another status below 400 but not 2xx)."""
        self._round_failures = 0
        if 200 <= status < 300:
            return None
        if status < 400:
            raise UnexpectedResponseError(
                f"the server at {self.address} answered HTTP {status}, which the client does not"
                " follow (a redirect would take the token along; is the address right?)"
            )
        error = error_from_response(status, content, subject=self._call.subject)
        if status == 503 and self._call.retry_safe:
            return self._backoff(error)
        raise error

    def after_transport_error(self, exc: httpx.TransportError | ssl.SSLError) -> float:
        """A delay before the next attempt, or raises ``ServerUnavailableError`` (at once
        for a failed TLS handshake: an ``ssl.SSLError`` in ``exc`` or its causes)."""
        address = self.address
        reason = type(exc).__name__
        tls_reason = _tls_failure(exc)
        if tls_reason is not None:
            raise ServerUnavailableError(
                f"TLS handshake with {address} failed ({_tls_problem(tls_reason, self._names)})"
            ) from None
        if isinstance(exc, httpx.ReadTimeout | httpx.WriteTimeout):
            what = f"the server at {address} did not answer in time ({reason})"
        elif isinstance(exc, _SENT):
            what = f"the connection to the server at {address} broke ({reason})"
        else:
            what = f"cannot reach the server at {address} ({reason})"
        error = ServerUnavailableError(what)
        if isinstance(exc, _UNSENT):
            self._index = self._ring.fail(self._index)
            self._round_failures += 1
            if self._round_failures < len(self._ring):
                return 0.0  # fail over to the next address at once
            self._round_failures = 0
            return self._backoff(error)
        if isinstance(exc, _SENT) and self._call.retry_safe:
            return self._backoff(error)
        raise error


class AttemptDeadline:
    """The time budgets of one attempt (see the module docstring): ``timeout`` seconds
    from its start for the request and the answer's head, then (``head_received``)
    ``timeout`` seconds from the head for the body. Sans-IO: ``bound`` cuts the
    timeout of each network operation to what is left of the budget under way."""

    __slots__ = ("_end", "_timeout")

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._end = time.monotonic() + timeout

    def head_received(self) -> None:
        """The answer's head came: the body's budget starts now."""
        self._end = time.monotonic() + self._timeout

    @property
    def expired(self) -> bool:
        """Whether the budget under way is spent."""
        return time.monotonic() >= self._end

    def bound(self, timeout: float | None, late: type[Exception]) -> float:
        """``timeout`` (httpx's per-operation timeout; ``None``: none) cut to what is left of
        the budget; raises ``late`` (an httpcore timeout class) when nothing is left."""
        left = self._end - time.monotonic()
        if left <= 0:
            raise late("the server did not answer within the timeout")
        return left if timeout is None else min(timeout, left)


_ATTEMPT: contextvars.ContextVar[AttemptDeadline | None] = contextvars.ContextVar(
    "medsecrets_sdk_attempt", default=None
)


@contextlib.contextmanager
def attempt_deadline(timeout: float) -> Iterator[AttemptDeadline]:
    """Run one attempt within a new ``AttemptDeadline`` (of ``timeout`` seconds), which the
    network operations made in this context (this thread, this task) obey (``bounded``)."""
    deadline = AttemptDeadline(timeout)
    token = _ATTEMPT.set(deadline)
    try:
        yield deadline
    finally:
        _ATTEMPT.reset(token)


def bounded(timeout: float | None, late: type[Exception]) -> float | None:
    """The timeout for a network operation made in this context: ``timeout``, cut to what
    is left of the budget of the attempt under way (``attempt_deadline``), if any; raises
    ``late`` when nothing is left. Called by the clients' network streams before each
    connect, read and write: httpcore passes each the same per-operation timeout."""
    deadline = _ATTEMPT.get()
    return timeout if deadline is None else deadline.bound(timeout, late)


def bounded_pause(seconds: float, late: type[Exception]) -> float:
    """``seconds``, the pause httpcore makes before it tries to connect again (a
    transport's ``retries=``: 0, 0.5, 1, 2, ... seconds), when the attempt under way
    (if any) has that long left; else raises ``late`` at once (the pause would outlast
    the attempt's budget: the pauses were not cut, so ``retries=8`` held an attempt of
    a 0.5 s ``timeout`` for a minute against a closed port)."""
    deadline = _ATTEMPT.get()
    if deadline is not None and deadline.bound(None, late) < seconds:
        raise late("the server could not be reached within the timeout")
    return seconds


def require_transport(transport: object, base: type[object], client: str) -> None:
    """``TypeError`` naming ``transport=`` unless ``transport`` is a ``base`` (httpx's
    ``BaseTransport`` for ``Client``, ``AsyncBaseTransport`` for ``AsyncClient``): the
    other kind was taken, and failed only at the first call with an ``AttributeError``."""
    if not isinstance(transport, base):
        raise TypeError(
            f"transport= of {client} must be an httpx.{base.__name__},"
            f" not {type(transport).__name__}"
        )


B = TypeVar("B")


def bind_budgets(
    transport: object, kind: type[object], backend: type[B], wrap: Callable[[B], B]
) -> bool:
    """Make the network operations of ``transport`` obey the attempt under way (``bounded``)
    when it is a ``kind`` (httpx's ``HTTPTransport`` or ``AsyncHTTPTransport``, or a
    subclass, whatever its options: proxy, ``uds``, limits); ``False`` for another
    transport, whose network operations the client cannot reach.

    httpx bounds each network operation only (a total timeout is an open request,
    encode/httpx#1450) and lets no network backend be passed, so the ``backend`` of
    the httpcore pool it keeps (``_pool._network_backend``, private attributes) is
    replaced by ``wrap(backend)``: a backend whose connections cut every connect, read
    and write to the attempt's budget, and pass every other operation through
    unchanged (outside an attempt of a client nothing is cut, so the transport stays
    usable elsewhere). ``wrap`` returns a backend it made before as it is, so a
    transport shared by several clients is wrapped once. A transport whose pool holds
    connections before it is first wrapped is refused (``ValueError``): their streams
    are not the wrapped backend's, and a pooled one reused by the client obeyed no
    budget (a server dripping its head held the call for ever); a transport closed
    since (its pool emptied) is taken. An httpx whose transport keeps no such pool
    raises ``RuntimeError`` at once rather than silently dropping the bound. A
    per-call watchdog thread could not do this: it cannot tell which pooled
    connection an attempt uses before the answer's head, which is when it is needed."""
    if not isinstance(transport, kind):
        return False
    pool = getattr(transport, "_pool", None)
    found = getattr(pool, "_network_backend", None)
    if not isinstance(found, backend):
        raise RuntimeError(
            f"cannot bound the attempts over transport= ({type(transport).__name__}): this"
            " httpx keeps no httpcore pool with a network backend in _pool._network_backend"
        )
    wrapped = wrap(found)
    if wrapped is not found and getattr(pool, "connections", None):
        raise ValueError(
            f"transport= ({type(transport).__name__}) has connections open already, which"
            " the client cannot hold to its timeout: give it a transport not used yet"
            " (or close this one first)"
        )
    pool._network_backend = wrapped  # type: ignore[union-attr]
    return True


class AnswerBody:
    """The body of one answer, read within bounds (sans-IO: drivers ``add`` each chunk
    while ``wanted``).

    A success answer (status below 400) may hold at most ``limit`` bytes: past
    it ``add`` raises ``UnexpectedResponseError``. Of an error answer only the
    first ``MAX_ERROR_BYTES`` are kept; then ``wanted`` turns false: stop
    reading (the rest stays unread and the connection is closed, not reused).
    The body must come as sent: a content coding (``encoding``, which the
    client never asks for) is refused for a success (``UnexpectedResponseError``)
    and not read for an error (it is mapped by its status), so no compressed
    bomb is ever inflated. An ``AnswerBody`` is made when the answer's head came:
    a head that came after its budget was spent raises ``httpx.ReadTimeout`` (the
    clients cut the head at its budget already, except over a sync transport they
    cannot reach, ``bind_budgets``: this check makes its late head count as none);
    else it starts the body's budget of ``deadline`` (``head_received``), and a chunk
    that comes after that budget is spent raises ``httpx.ReadTimeout`` (the
    default transports' reads are cut at the budget already: this check holds
    for any transport), so a body dripped byte by byte (each read in time) ends
    like a read that timed out, under the same retry rules.
    """

    __slots__ = ("_chunks", "_deadline", "_error", "_limit", "_size")

    def __init__(
        self, status: int, encoding: str, *, limit: int, deadline: AttemptDeadline
    ) -> None:
        self._chunks: list[bytes] = []
        self._size = 0
        self._error = status >= 400
        self._limit = MAX_ERROR_BYTES if self._error else limit
        self._deadline = deadline
        if deadline.expired:
            raise httpx.ReadTimeout("the answer's head did not come within the timeout")
        deadline.head_received()
        if encoding.strip().lower() not in ("", "identity"):
            if not self._error:
                raise UnexpectedResponseError(
                    "the server's answer has a content coding the client did not ask for"
                )
            self._limit = 0

    @property
    def wanted(self) -> bool:
        """Whether more of the body is to be read."""
        return self._size < self._limit or not self._error

    def add(self, chunk: bytes) -> None:
        """Take the next chunk of the body."""
        if self._deadline.expired:
            raise httpx.ReadTimeout("the answer's body did not end within the timeout")
        room = self._limit - self._size
        if len(chunk) > room and not self._error:
            raise UnexpectedResponseError(
                f"the server's answer is over {self._limit} bytes (see max_response_bytes)"
            )
        self._chunks.append(chunk[:room])
        self._size += min(len(chunk), room)

    @property
    def content(self) -> bytes:
        """The bytes kept."""
        return b"".join(self._chunks)


def encode(body: object) -> bytes:
    """The JSON bytes of a request body.

    ``InvalidRequest`` for text that is not Unicode (a lone surrogate) and for
    numbers JSON cannot hold (NaN, infinities), before anything is sent. It
    names nothing of the body and is raised outside the failed encoding's
    handler, so no exception context keeps the body (it may hold secret values).
    """
    try:
        text = json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        return text.encode()
    except UnicodeEncodeError:
        problem = "the request holds text that is not valid Unicode"
    except ValueError:
        problem = "the request holds a number JSON cannot hold (NaN or infinity)"
    raise InvalidRequest(problem)


def decode(call: Call[T], content: bytes) -> T:
    """The value of a 2xx answer to ``call``; ``UnexpectedResponseError`` if it does not fit
    (not JSON, nested deeper than the parser goes, or not the expected shape).

    The error is raised outside the failed parse's handler, so its context
    keeps neither the parser's error (a ``JSONDecodeError`` holds the whole
    document, which may hold secret values) nor the body.
    """
    try:
        data = json.loads(content) if content else None
        return call.parse(data)
    except MedsecretsError as exc:
        detail = exc.message
    except (ValueError, TypeError, RecursionError):
        detail = "not valid JSON"
    raise UnexpectedResponseError(f"unexpected answer to {call.method} {call.path}: {detail}")
