"""``Client``: the synchronous medsecrets SDK (one method per endpoint of ``docs/api.md``).

>>> with Client("https://vault.example:8200", token) as client:  # doctest: +SKIP
...     secret = client.get("medessence/production/database")
...     secret.fields["password"]

Settings default to ``MEDSECRETS_ADDR`` (a comma-separated list of addresses
to fail over between), ``MEDSECRETS_TOKEN``, ``MEDSECRETS_CACERT`` and, for a
server that asks for a client certificate, ``MEDSECRETS_CLIENT_CERT``,
``MEDSECRETS_CLIENT_KEY`` and ``MEDSECRETS_CLIENT_KEY_PASSWORD``. Errors
are the classes of ``medsecrets.errors`` (one table:
``medsecrets.sdk.errors.ERROR_TABLE``) plus ``ServerUnavailableError``. Retries and
failover follow ``medsecrets.sdk.transport``; ``sleep`` and ``random`` are
injectable so tests move no real time. The token never shows in ``repr``.
"""

from __future__ import annotations

import datetime as dt
import random as _random
import ssl
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import httpcore
import httpx

from medsecrets.schema.audit import (
    AuditDeviceHealth,
    AuditHash,
    AuditPublicKey,
    AuditReads,
    AuditRecords,
    AuditVerification,
)
from medsecrets.schema.catalog import CatalogInfo, CategoryInfo, ParamValue
from medsecrets.schema.keys import KekVersion, RewrapReport
from medsecrets.schema.provision import ProvisionReport
from medsecrets.schema.seal import (
    InitResponse,
    InitResult,
    SealConfig,
    SealStatus,
    ShamirSealConfig,
)
from medsecrets.schema.secrets import (
    SecretMetadata,
    SecretPage,
    SecretVersion,
    Stage,
    ValidationReport,
    VersionInfo,
)
from medsecrets.schema.system import Health, KeyringInfo
from medsecrets.schema.tokens import CreatedToken, TokenInfo
from medsecrets.sdk import endpoints as ep
from medsecrets.sdk.base import ClientBase
from medsecrets.sdk.transport import (
    MAX_RESPONSE_BYTES,
    AnswerBody,
    Attempts,
    Call,
    SettingNames,
    attempt_deadline,
    bind_budgets,
    bounded,
    bounded_pause,
    decode,
    encode,
    probe_refusal,
    refusal_probe_wanted,
    require_transport,
)
from medsecrets.sensitive import Sensitive

__all__ = ["Client"]

T = TypeVar("T")


class _BoundedStream(httpcore.NetworkStream):
    """A connection whose reads and writes obey the attempt under way (``bounded``)."""

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, bounded(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, bounded(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        timeout = bounded(timeout, httpcore.ConnectTimeout)
        return _BoundedStream(self._stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _BoundedBackend(httpcore.NetworkBackend):
    """A network backend (``backend``) whose connections are ``_BoundedStream``s."""

    def __init__(self, backend: httpcore.NetworkBackend) -> None:
        self._backend = backend

    @classmethod
    def around(cls, backend: httpcore.NetworkBackend) -> httpcore.NetworkBackend:
        """``backend`` wrapped, unless it is one of these already."""
        return backend if isinstance(backend, cls) else cls(backend)

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        timeout = bounded(timeout, httpcore.ConnectTimeout)
        stream = self._backend.connect_tcp(host, port, timeout, local_address, socket_options)
        return _BoundedStream(stream)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        timeout = bounded(timeout, httpcore.ConnectTimeout)
        return _BoundedStream(self._backend.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        # (httpcore's pause between tries to connect: within the attempt's budget too)
        self._backend.sleep(bounded_pause(seconds, httpcore.ConnectTimeout))


def _bounded_transport(transport: httpx.BaseTransport) -> httpx.BaseTransport:
    """``transport``, its network operations made to obey the attempt's budgets when it is
    an ``httpx.HTTPTransport`` (``bind_budgets``); another one is used as it is: no
    thread can be interrupted, so only its late head is caught (``AnswerBody``)."""
    require_transport(transport, httpx.BaseTransport, "Client")
    bind_budgets(transport, httpx.HTTPTransport, httpcore.NetworkBackend, _BoundedBackend.around)
    return transport


class Client(ClientBase):
    """A synchronous client for one medsecrets server (or a failover list of them)."""

    def __init__(
        self,
        addr: str | Sequence[str] | None = None,
        token: str | Sensitive[str] | None = None,
        *,
        cacert: str | None = None,
        client_cert: str | None = None,
        client_key: str | None = None,
        client_key_password: str | Sensitive[str] | None = None,
        verify: bool = True,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.1,
        backoff_max: float = 2.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        random: Callable[[], float] = _random.random,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        env: Mapping[str, str] | None = None,
        setting_names: SettingNames | None = None,
    ) -> None:
        """``timeout``: seconds for each network step (connecting, each read and write),
        and in all for each attempt's request and answer head, then again for the
        answer's body (``medsecrets.sdk.transport``); ``max_response_bytes``: the
        largest success body read; ``transport`` replaces the default one: an
        ``httpx.HTTPTransport`` (any options) has its network steps cut to those
        budgets as the default's are (its pool's network backend is wrapped, once:
        ``transport.bind_budgets``); another transport cannot be cut short (a thread
        cannot be interrupted): a head it gives too late is still a read timeout, and
        its body is checked per chunk; ``env`` replaces ``os.environ`` for the
        ``MEDSECRETS_*`` defaults (tests).

        ``client_cert`` (``MEDSECRETS_CLIENT_CERT``): a PEM certificate chain to present
        to a server that asks for one (``tls.client_ca``); ``client_key``
        (``MEDSECRETS_CLIENT_KEY``): its private key, unless ``client_cert`` holds it;
        ``client_key_password`` (``MEDSECRETS_CLIENT_KEY_PASSWORD``): the password of an
        encrypted key (without one such a key is refused). A file that cannot be used
        raises ``medsecrets.sdk.errors.ClientCertificateError`` here, naming the file.
        ``setting_names``: how messages name these settings (``transport.SettingNames``;
        default: the arguments' and variables' names), for a program that takes them
        under names of its own (the CLI's ``--client-cert``)."""
        super().__init__(
            addr,
            token,
            cacert=cacert,
            verify=verify,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            backoff_max=backoff_max,
            random=random,
            max_response_bytes=max_response_bytes,
            env=env,
            client_cert=client_cert,
            client_key=client_key,
            client_key_password=client_key_password,
            setting_names=setting_names,
        )
        self._sleep = sleep
        self._http = httpx.Client(
            transport=_bounded_transport(
                transport or httpx.HTTPTransport(verify=self._settings.verify, trust_env=False)
            ),
            timeout=self._settings.timeout,
            follow_redirects=False,
            trust_env=False,
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool. Idempotent."""
        self._http.close()

    def call(self, call: Call[T]) -> T:
        """Send ``call`` with retries and failover; its decoded answer or the mapped error.
        Then the ``on_secret_change`` listeners hear of a call that may have changed a secret."""
        attempts = Attempts(
            call, self._ring, self._settings.policy, self._random, self._settings.names
        )
        headers = self._settings.headers(call, self._token)
        body = None if call.body is None else encode(call.body)
        try:
            while True:
                url = attempts.address + call.path
                failure: httpx.TransportError | None = None
                try:
                    status, content = self._exchange(call, url, body, headers)
                except httpx.TransportError as exc:
                    failure = exc  # handled below, outside this block: no chained context
                if failure is not None:
                    if refusal_probe_wanted(attempts.address, failure):
                        failure = self._refusal(attempts.address) or failure
                    # the httpx error holds the request and its token header: never chain it
                    delay = attempts.after_transport_error(failure)
                else:
                    wait = attempts.after_response(status, content)
                    if wait is None:
                        return decode(call, content)
                    delay = wait
                if delay > 0:
                    self._sleep(delay)
        finally:
            self._changed(call)  # a write may have changed the secret, even if it failed

    def _refusal(self, address: str) -> httpx.TransportError | None:
        """The probe of ``transport.refusal_probe_wanted``: the error of a ``GET
        /v1/sys/health`` to ``address`` (its answer not read) if the server refused
        the client certificate in it, else ``None``."""
        probe = ep.health()
        headers = self._settings.headers(probe, None)
        refused: httpx.TransportError | None = None
        try:
            with (
                attempt_deadline(self._settings.timeout),
                self._http.stream(probe.method, address + probe.path, headers=headers),
            ):
                pass
        except httpx.TransportError as exc:
            if probe_refusal(exc):
                refused = exc
        return refused

    def _exchange(
        self, call: Call[T], url: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        """One attempt: the answer's status and body, read within bounds (``AnswerBody``)
        and budgets (``attempt_deadline``)."""
        with (
            attempt_deadline(self._settings.timeout) as deadline,
            self._http.stream(
                call.method, url, params=call.params, content=body, headers=headers
            ) as response,
        ):
            answer = AnswerBody(
                response.status_code,
                response.headers.get("content-encoding", ""),
                limit=self._settings.max_response_bytes,
                deadline=deadline,
            )
            if answer.wanted:  # (bytes as sent: AnswerBody refuses any content coding)
                for chunk in response.iter_bytes():
                    answer.add(chunk)
                    if not answer.wanted:
                        break  # the rest stays unread; the connection is closed, not reused
            return response.status_code, answer.content

    # -- system --------------------------------------------------------------------
    def health(self) -> Health:
        """``GET /v1/sys/health`` (no token needed)."""
        return self.call(ep.health())

    def seal_status(self) -> SealStatus:
        """``GET /v1/sys/seal-status`` (no token needed)."""
        return self.call(ep.seal_status())

    def init(self, seal: SealConfig | None = None) -> InitResponse:
        """Initialise the server (default: 5 Shamir shares, threshold 3); the root token, once."""
        return self.call(ep.init(seal or ShamirSealConfig()))

    def unseal(self, share: str | Sensitive[str]) -> SealStatus:
        """Submit one unseal share."""
        return self.call(ep.unseal(share))

    def auto_unseal(self) -> SealStatus:
        """Ask a key-file or AWS KMS seal to unseal itself (``POST /v1/sys/unseal`` with
        ``{}``; no token needed); the seal status. See ``endpoints.auto_unseal``."""
        return self.call(ep.auto_unseal())

    def unseal_reset(self) -> SealStatus:
        """Forget the shares submitted so far."""
        return self.call(ep.unseal_reset())

    def seal(self) -> SealStatus:
        """Seal the server (``sudo``)."""
        return self.call(ep.seal())

    def rotate(self) -> KeyringInfo:
        """Add a barrier keyring term (``sudo``)."""
        return self.call(ep.rotate())

    def rekey(
        self,
        shares: Sequence[str | Sensitive[str]],
        *,
        new_shares: int = 5,
        new_threshold: int = 3,
    ) -> InitResult:
        """New Shamir shares given a threshold of the current ones (``sudo``).

        The new shares are pending (``verify`` true in the answer): the current ones
        keep working until ``rekey_verify`` is given a threshold of the new ones."""
        return self.call(
            ep.rekey(tuple(shares), new_shares=new_shares, new_threshold=new_threshold)
        )

    def rekey_verify(self, shares: Sequence[str | Sensitive[str]]) -> SealStatus:
        """Make the pending rekey take effect with a threshold of its NEW shares (``sudo``);
        from then on only the new shares unseal."""
        return self.call(ep.rekey_verify(tuple(shares)))

    def rekey_cancel(self) -> bool:
        """Drop a pending rekey (``sudo``); whether one was pending."""
        return (self.call(ep.rekey_cancel())).cancelled

    def key_versions(self, category: str) -> tuple[KekVersion, ...]:
        """Every KEK version of ``category`` (``sudo``)."""
        return self.call(ep.key_versions(category)).versions

    def rotate_key(self, category: str) -> int:
        """Add a KEK version for ``category``; its number (``sudo``)."""
        return self.call(ep.rotate_key(category)).version

    def rewrap_step(self, *, after: str = "", limit: int = 100) -> RewrapReport:
        """One resumable rewrap step (``sudo``); repeat with ``next_after`` until ``None``."""
        return self.call(ep.rewrap_step(after=after, limit=limit))

    # -- secrets -------------------------------------------------------------------
    def put(
        self,
        path: str,
        fields: Mapping[str, str],
        *,
        cas: int | None = None,
        stage: Stage = "current",
        description: str | None = None,
        owner: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> VersionInfo:
        """Write a new version (``cas=0``: must not exist; ``cas=n``: newest must be ``n``)."""
        return self.call(
            ep.put(
                path,
                fields,
                cas=cas,
                stage=stage,
                description=description,
                owner=owner,
                tags=tags,
            )
        )

    def get(
        self,
        path: str,
        *,
        stage: Stage | None = None,
        version: int | None = None,
        version_id: str | None = None,
    ) -> SecretVersion:
        """Read one version (default: ``current``); values masked in ``repr``."""
        return self.call(ep.get(path, stage=stage, version=version, version_id=version_id))

    def describe(self, path: str) -> SecretMetadata:
        """Everything about a secret except its values."""
        return self.call(ep.describe(path))

    def versions(self, path: str) -> tuple[VersionInfo, ...]:
        """Every kept version of a secret (from ``describe``)."""
        return self.describe(path).versions

    def update_metadata(
        self,
        path: str,
        *,
        description: str | None = None,
        owner: str | None = None,
        tags: Mapping[str, str] | None = None,
        rotation_days: int | None = None,
        clear_rotation_override: bool = False,
    ) -> SecretMetadata:
        """Change description, owner, tags or the rotation interval."""
        return self.call(
            ep.update_metadata(
                path,
                description=description,
                owner=owner,
                tags=tags,
                rotation_days=rotation_days,
                clear_rotation_override=clear_rotation_override,
            )
        )

    def list(
        self,
        prefix: str = "",
        *,
        environment: str | None = None,
        category: str | None = None,
        tags: Mapping[str, str] | None = None,
        include_deleted: bool = False,
        after: str | None = None,
        limit: int = 100,
    ) -> SecretPage:
        """One page of secret metadata; continue with ``after=page.next_after``."""
        return self.call(
            ep.list_page(
                prefix,
                environment=environment,
                category=category,
                tags=tags,
                include_deleted=include_deleted,
                after=after,
                limit=limit,
            )
        )

    def iter_list(
        self,
        prefix: str = "",
        *,
        environment: str | None = None,
        category: str | None = None,
        tags: Mapping[str, str] | None = None,
        include_deleted: bool = False,
        limit: int = 100,
    ) -> Iterator[SecretMetadata]:
        """Every matching secret's metadata, page after page."""
        after: str | None = None
        while True:
            page = self.list(
                prefix,
                environment=environment,
                category=category,
                tags=tags,
                include_deleted=include_deleted,
                after=after,
                limit=limit,
            )
            yield from page.items
            if page.next_after is None:
                return
            after = page.next_after

    def move_stage(self, path: str, stage: Stage, version: int) -> SecretMetadata:
        """Give ``stage`` to ``version``."""
        return self.call(ep.move_stage(path, stage, version))

    def promote(self, path: str, version: int) -> SecretMetadata:
        """Make ``version`` the ``current`` one."""
        return self.move_stage(path, "current", version)

    def remove_stage(self, path: str, stage: Stage) -> SecretMetadata:
        """Take ``stage`` (``pending`` or ``previous``) off its version."""
        return self.call(ep.remove_stage(path, stage))

    def delete(
        self, path: str, *, recovery_days: int | None = None, force: bool = False
    ) -> SecretMetadata:
        """Schedule for deletion (recovery window 7-30 days) or, with ``force``, purge now."""
        return self.call(ep.delete(path, recovery_days=recovery_days, force=force))

    def restore(self, path: str) -> SecretMetadata:
        """Cancel a scheduled deletion."""
        return self.call(ep.restore(path))

    def destroy(self, path: str, version: int) -> SecretMetadata:
        """Destroy the value of one version for good."""
        return self.call(ep.destroy(path, version))

    def validate(self, path: str) -> ValidationReport:
        """Check the stored current value against the catalog (no values returned)."""
        return self.call(ep.validate(path))

    # -- catalog, generate, provision ------------------------------------------------
    def catalog(self) -> CatalogInfo:
        """The server's catalog."""
        return self.call(ep.catalog())

    def category(self, name: str) -> CategoryInfo:
        """One catalog category."""
        return self.call(ep.category(name))

    def generate(self, kind: str, /, **params: ParamValue) -> Sensitive[str]:
        """One value from the server's generator ``kind`` (masked in ``repr``)."""
        return self.call(ep.generate(kind, params))

    def provision(
        self,
        environment: str,
        *,
        provided: Mapping[str, Mapping[str, str]] | None = None,
        categories: Sequence[str] | None = None,
    ) -> ProvisionReport:
        """Create every catalog secret of ``environment`` that does not exist yet."""
        cats = None if categories is None else tuple(categories)
        return self.call(ep.provision(environment, provided=provided, categories=cats))

    # -- tokens ----------------------------------------------------------------------
    def token_create(
        self,
        *,
        paths: Sequence[str],
        capabilities: Sequence[str],
        ttl: float | None = None,
        display_name: str = "",
        emergency: bool = False,
    ) -> CreatedToken:
        """Issue a child token (shown once, masked in ``repr``); ``emergency``: a
        break-glass token, whose every use is flagged in the audit trail and alerted."""
        return self.call(
            ep.token_create(
                paths=tuple(paths),
                capabilities=tuple(capabilities),
                ttl=ttl,
                display_name=display_name,
                emergency=emergency,
            )
        )

    def token_lookup_self(self) -> TokenInfo:
        """Facts about the client's own token."""
        return self.call(ep.token_lookup_self())

    def token_lookup(
        self, *, accessor: str | None = None, token: str | Sensitive[str] | None = None
    ) -> TokenInfo:
        """Facts about a token given its accessor or the token itself."""
        return self.call(ep.token_lookup(accessor=accessor, token=token))

    def token_revoke(
        self, *, accessor: str | None = None, token: str | Sensitive[str] | None = None
    ) -> None:
        """Revoke a token (and its children) given its accessor or the token itself."""
        self.call(ep.token_revoke(accessor=accessor, token=token))

    # -- audit and alerts (``sudo`` on ``sys/audit``, ``sys/alerts``) -------------------
    def audit_hash(self, value: str | Sensitive[str], *, device: str | None = None) -> AuditHash:
        """The ``hmac-sha256:...`` that ``device`` (default: the first) writes for ``value``."""
        return self.call(ep.audit_hash(value, device=device))

    def audit_devices(self) -> tuple[AuditDeviceHealth, ...]:
        """Every audit device and its health."""
        return self.call(ep.audit_devices()).devices

    def audit_search(
        self,
        *,
        principal: str | None = None,
        path_prefix: str | None = None,
        category: str | None = None,
        environment: str | None = None,
        operation: str | None = None,
        outcome: str | None = None,
        kind: str | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        limit: int = 100,
    ) -> AuditRecords:
        """Audit records matching every filter given, oldest first, at most ``limit``
        (1-10,000; ``truncated`` says whether more matched). Naive datetimes are UTC."""
        return self.call(
            ep.audit_search(
                principal=principal,
                path_prefix=path_prefix,
                category=category,
                environment=environment,
                operation=operation,
                outcome=outcome,
                kind=kind,
                since=since,
                until=until,
                limit=limit,
            )
        )

    def audit_who_read(self, path: str, *, since: dt.datetime | None = None) -> AuditReads:
        """Every successful read of ``path`` (any version) since ``since``, oldest first."""
        return self.call(ep.audit_who_read(path, since=since))

    def audit_verify(self, *, device: str | None = None) -> AuditVerification:
        """Have the server verify a device's hash chain and signed checkpoints."""
        return self.call(ep.audit_verify(device=device))

    def audit_public_key(self) -> AuditPublicKey:
        """The Ed25519 key (PEM) that signs audit checkpoints."""
        return self.call(ep.audit_public_key())

    def alerts(self, *, limit: int = 50) -> tuple[Mapping[str, object], ...]:
        """Recent anomaly alerts, newest first, with their delivery status per channel."""
        return self.call(ep.alerts(limit=limit)).alerts
