"""``AwsKmsKekProvider``: one AWS KMS key per category and KEK version.

Version *n* of a category's KEK is a KMS key; the category's alias (by default
``alias/medessence-<category>``) points at the newest. The version → key id
table lives through the barrier at ``keys/aws-kms/<category>``. Data keys are
wrapped with KMS ``Encrypt`` under the version's key id and the encryption
context (path, version, category), which KMS binds cryptographically; a wrong
context fails ``Decrypt`` and surfaces as ``DecryptionError``.

boto3 is an optional extra (``medsecrets[aws]``); the client is injected.
``kek_kms_client`` makes the default one, whose waits are bounded: a KMS that never
answers or keeps throttling fails a wrap or unwrap (and the request making it) as a
``ProviderError`` after ``KEK_KMS_ATTEMPTS`` attempts of at most ``KEK_KMS_TIMEOUT``
seconds to connect and as long for each read (boto3's own defaults are 60 s each).

A KMS key this process made that nobody else can know of, and that no version records, is
scheduled for deletion (``DISCARD_PENDING_DAYS``, KMS's minimum window; its description says
why): the key of a first use whose ``CreateAlias`` lost to another process's (which takes
that key) or failed (kept if the alias names it after all), and the key of a version whose
check-and-set write lost (a rotation racing another). A rotation points the alias at its
key only *after* its version is recorded, so a key that lost was never named by the alias:
another category or store whose catalog names the same alias, taking the key it names at
its first use, can never have taken it (it used to: such a key was scheduled for deletion
while it wrapped the other category's data keys). A key the alias named at some time, or
that was taken from the alias, is never scheduled. The cleanup never fails the caller's
operation: its outcome is logged with the key's ARN and AWS's error code only
(``medsecrets.keys.awskms``); so is a rotation's ``UpdateAlias`` that fails after its
version was recorded (the rotation stands, the alias still names an older version's key).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Final, TypeVar

from medsecrets.barrier.base import Barrier, SecureStorage
from medsecrets.clock import Clock, SystemClock
from medsecrets.errors import DecryptionError, ProviderError
from medsecrets.keys.base import WrappedKey
from medsecrets.keys.table import Entry, VersionTable
from medsecrets.schema.keys import KekVersion
from medsecrets.sensitive import Sensitive

if TYPE_CHECKING:
    from mypy_boto3_kms import KMSClient

__all__ = [
    "DISCARD_PENDING_DAYS",
    "KEK_KMS_ATTEMPTS",
    "KEK_KMS_TIMEOUT",
    "AwsKmsKekProvider",
    "default_alias",
    "kek_kms_client",
]

KEK_KMS_TIMEOUT: Final = 3.0
"""Seconds the default KEK client waits to connect, and for each read of an answer."""
KEK_KMS_ATTEMPTS: Final = 2
"""Attempts of one KEK KMS call in all (a retry after a timeout or a throttle): about 13 s
at most per wrap or unwrap."""

DISCARD_PENDING_DAYS: Final = 7
"""Days a KMS key made for a version nobody records waits, pending deletion, before KMS
deletes it (KMS's minimum: until then ``CancelKeyDeletion`` brings it back)."""

log = logging.getLogger(__name__)

_DECRYPT_FAILURES = {"InvalidCiphertextException", "IncorrectKeyException"}
T = TypeVar("T")


def _blob(value: object) -> bytes:
    """The non-empty bytes of a KMS answer's blob field; ``ValueError`` for anything else
    (``_call`` makes it a "malformed answer")."""
    if not isinstance(value, bytes | bytearray) or not value:
        raise ValueError("not a blob")
    return bytes(value)


def kek_kms_client(
    *, timeout: float = KEK_KMS_TIMEOUT, max_attempts: int = KEK_KMS_ATTEMPTS
) -> KMSClient:
    """A KMS client from boto3's default chain (credentials, region, ``AWS_ENDPOINT_URL_KMS``)
    that waits ``timeout`` seconds to connect and for each read, and makes ``max_attempts``
    attempts of a call in all; ``ProviderError`` without boto3 or a usable region."""
    try:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError
    except ImportError:  # pragma: no cover - depends on the installed extras
        raise ProviderError("the aws-kms KEK provider needs medsecrets[aws] (boto3)") from None
    config = Config(
        connect_timeout=timeout,
        read_timeout=timeout,
        # total_max_attempts counts the first attempt (botocore's max_attempts does not)
        retries={"total_max_attempts": max_attempts, "mode": "standard"},
    )
    try:
        client: KMSClient = boto3.session.Session().client("kms", config=config)
    except (ValueError, BotoCoreError) as exc:  # no region, a region botocore refuses
        raise ProviderError(f"AWS KMS client: {type(exc).__name__}") from None
    return client


def default_alias(category: str) -> str:
    """The strategy's naming: ``alias/medessence-<category>``."""
    return f"alias/medessence-{category}"


class AwsKmsKekProvider:
    """Per-category KEKs held in AWS KMS."""

    def __init__(
        self,
        secure: SecureStorage,
        client: KMSClient,
        *,
        alias_for: Callable[[str], str] = default_alias,
        clock: Clock | None = None,
    ) -> None:
        self._client = client
        self._alias_for = alias_for
        self._table = VersionTable(
            secure,
            "keys/aws-kms/",
            clock=clock or SystemClock(),
            make_entry=self._make_entry,
            on_lost=self._on_lost,
        )
        # keys made here for a rotation and named by no alias yet: only they may be discarded
        self._unpublished: set[str] = set()
        self._unpublished_lock = threading.Lock()
        if isinstance(secure, Barrier):
            secure.on_seal(self.forget)

    @property
    def name(self) -> str:
        return "aws-kms"

    def __repr__(self) -> str:
        return f"AwsKmsKekProvider(categories={self._table.categories()!r})"

    def forget(self) -> None:
        """Drop the cached version table (called when the store seals; runs by itself on
        the barrier's seal)."""
        self._table.forget()

    def _make_entry(self, category: str, number: int) -> dict[str, str]:
        if number == 1:
            return {"key_id": self._first_key(category)}
        arn = self._create_key(category)
        with self._unpublished_lock:
            self._unpublished.add(arn)
        return {"key_id": arn}

    def _call(self, operation: str, fn: Callable[[], T]) -> T:
        """``fn()``, its failures as ``ProviderError`` naming ``operation`` and AWS's error
        code only (``DecryptionError`` for a ciphertext KMS refuses); an answer ``fn`` finds
        no usable value in (a peer answering garbage) is a "malformed answer"."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn()
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", "unknown"))
            if operation == "Decrypt" and code in _DECRYPT_FAILURES:
                raise DecryptionError() from None
            raise ProviderError(f"AWS KMS {operation} failed: {code}") from None
        except BotoCoreError as exc:
            raise ProviderError(f"AWS KMS {operation} failed: {type(exc).__name__}") from None
        except (KeyError, TypeError, ValueError):
            raise ProviderError(f"AWS KMS {operation} failed: malformed answer") from None

    def _alias_target(self, alias: str) -> str | None:
        """The ARN of the key ``alias`` names, ``None`` without that alias (run in ``_call``,
        which names any other failure's code)."""
        from botocore.exceptions import ClientError

        try:
            meta = self._client.describe_key(KeyId=alias)["KeyMetadata"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "NotFoundException":
                return None
            raise
        return str(meta["Arn"])

    def _create_alias(self, alias: str, arn: str) -> str:
        """Point the new ``alias`` at ``arn`` and return ``arn``; if another process made the
        alias meanwhile (its first use of the category), the key that alias names."""
        from botocore.exceptions import ClientError

        try:
            self._client.create_alias(AliasName=alias, TargetKeyId=arn)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "AlreadyExistsException":
                raise
            existing = self._alias_target(alias)
            if existing is None:  # made and removed meanwhile: not ours to guess
                raise
            return existing
        return arn

    def _create_key(self, category: str) -> str:
        """A new KMS key for ``category``, its ARN (named by no alias)."""
        return self._call(
            "CreateKey",
            lambda: self._client.create_key(
                Description=f"medsecrets KEK for category {category}",
                KeyUsage="ENCRYPT_DECRYPT",
                Tags=[{"TagKey": "medsecrets:category", "TagValue": category}],
            )["KeyMetadata"]["Arn"],
        )

    def _first_key(self, category: str) -> str:
        """The key of the category's version 1: the one its alias names already, or a new
        one the alias is made to name (or, if another process's ``CreateAlias`` won
        meanwhile, the key that one names, and the key made here is discarded). A key made
        here whose ``CreateAlias`` fails is discarded (unless the alias names it) before the
        ``ProviderError`` goes on."""
        alias = self._alias_for(category)
        existing = self._call("DescribeKey", lambda: self._alias_target(alias))
        if existing is not None:
            return existing
        arn = self._create_key(category)
        try:
            target = self._call("CreateAlias", lambda: self._create_alias(alias, arn))
        except ProviderError as exc:
            self._discard(category, arn, f"unused: {exc}")
            raise
        if target != arn:
            self._discard(category, arn, "unused: lost the race to be the first key")
        return target

    def _point_alias(self, category: str, entry: Entry) -> None:
        """Point the category's alias at ``entry``'s key, a version just recorded; a failure
        is a warning (the version stands, the alias names an older version's key)."""
        alias = self._alias_for(category)
        arn = entry["key_id"]
        with self._unpublished_lock:
            self._unpublished.discard(arn)
        try:
            self._call(
                "UpdateAlias", lambda: self._client.update_alias(AliasName=alias, TargetKeyId=arn)
            )
        except ProviderError as exc:
            log.warning(
                "KMS alias %s does not name the key of %s version %s (%s): %s",
                alias,
                category,
                entry["version"],
                arn,
                exc,
            )

    def _on_lost(self, category: str, lost: Sequence[Entry], stored: Sequence[Entry]) -> None:
        """``VersionTable``'s ``on_lost``: discard the keys made here for rotations whose
        write lost (no alias ever named them, so nobody else can hold them), never one that
        ``stored`` records. A first use's key is never discarded here: it came from the
        alias, or the alias was made to name it, so another category or store naming the
        same alias may have taken it."""
        recorded = {entry["key_id"] for entry in stored}
        for entry in lost:
            with self._unpublished_lock:
                unpublished = entry["key_id"] in self._unpublished
                self._unpublished.discard(entry["key_id"])
            if unpublished and entry["key_id"] not in recorded:
                why = f"unused: lost the race to be version {entry['version']}"
                self._discard(category, entry["key_id"], why)

    def _discard(self, category: str, arn: str, why: str) -> None:
        """Schedule ``arn``, a key made here that no version records, for deletion after
        ``DISCARD_PENDING_DAYS``, its description saying ``why`` first (if KMS lets it);
        keep it (with a warning) while the category's alias names it, or if that cannot be
        read. Never raises: the outcome is logged (info when scheduled, else a warning)
        with the ARN and AWS's error code only."""
        alias = self._alias_for(category)
        # the key id, not the ARN: both name a key of this account and region to AWS;
        # moto's ScheduleKeyDeletion takes only the id
        key_id = arn.rsplit("/", 1)[-1]
        description = f"medsecrets KEK for category {category}, {why}: scheduled for deletion"
        note = ""
        try:
            if self._call("DescribeKey", lambda: self._alias_target(alias)) == arn:
                log.warning("KMS key %s (%s) is left enabled: %s names it", arn, why, alias)
                return
            try:
                self._call(
                    "UpdateKeyDescription",
                    lambda: self._client.update_key_description(
                        KeyId=key_id, Description=description
                    ),
                )
            except ProviderError as exc:  # a description is no reason to keep the key
                note = f"; its description is unchanged: {exc}"
            self._call(
                "ScheduleKeyDeletion",
                lambda: self._client.schedule_key_deletion(
                    KeyId=key_id, PendingWindowInDays=DISCARD_PENDING_DAYS
                ),
            )
        except ProviderError as exc:
            log.warning("KMS key %s (%s) is left enabled: %s", arn, why, exc)
        except Exception as exc:  # on_lost must not raise; nothing but the type is logged
            log.warning("KMS key %s (%s) is left enabled: %s", arn, why, type(exc).__name__)
        else:
            log.log(
                logging.WARNING if note else logging.INFO,
                "KMS key %s (%s) is scheduled for deletion in %d days%s",
                arn,
                why,
                DISCARD_PENDING_DAYS,
                note,
            )

    # -- KekProvider -----------------------------------------------------------
    def current_version(self, category: str) -> int:
        return int(self._table.newest(category)["version"])

    def versions(self, category: str) -> tuple[KekVersion, ...]:
        return tuple(
            KekVersion(
                category=category,
                version=int(e["version"]),
                created_at=dt.datetime.fromisoformat(e["created_at"]),
                key_id=e["key_id"],
            )
            for e in self._table.entries(category, refresh=True)
        )

    def wrap(self, category: str, dek: Sensitive[bytes], context: Mapping[str, str]) -> WrappedKey:
        newest = self._table.newest(category)
        blob = self._call(
            "Encrypt",
            lambda: _blob(
                self._client.encrypt(
                    KeyId=newest["key_id"], Plaintext=dek.reveal(), EncryptionContext=dict(context)
                )["CiphertextBlob"]
            ),
        )
        return WrappedKey(provider=self.name, kek_version=int(newest["version"]), blob=blob)

    def unwrap(
        self, category: str, wrapped: WrappedKey, context: Mapping[str, str]
    ) -> Sensitive[bytes]:
        if wrapped.provider != self.name:
            raise DecryptionError()
        key_id = self._table.find(category, wrapped.kek_version)["key_id"]
        plaintext = self._call(
            "Decrypt",
            lambda: _blob(
                self._client.decrypt(
                    CiphertextBlob=wrapped.blob, KeyId=key_id, EncryptionContext=dict(context)
                )["Plaintext"]
            ),
        )
        return Sensitive(plaintext)

    def rotate(self, category: str) -> int:
        """Record a new version (a new KMS key), then point the category's alias at it."""
        newest = self._table.add(category)[-1]
        self._point_alias(category, newest)
        return int(newest["version"])
