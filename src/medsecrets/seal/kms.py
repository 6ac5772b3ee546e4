"""A thin, typed wrapper over AWS KMS (boto3 imported lazily: ``medsecrets[aws]``).

``KmsClient`` is the seam (tests and other providers implement it);
``AwsKmsClient`` is the boto3 implementation. Every AWS failure becomes
``ProviderError`` naming the operation and the AWS error code only: never
plaintext, ciphertext or the request; so does an answer without a usable value
(a peer answering garbage: "malformed answer").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Protocol

from medsecrets.errors import InvalidRequest, ProviderError
from medsecrets.sensitive import Sensitive

if TYPE_CHECKING:
    from mypy_boto3_kms import KMSClient

__all__ = ["SEAL_KMS_ATTEMPTS", "SEAL_KMS_TIMEOUT", "AwsCredentials", "AwsKmsClient", "KmsClient"]

SEAL_KMS_TIMEOUT: Final = 3.0
"""Seconds the seal's KMS client waits to connect, and for each read of an answer."""
SEAL_KMS_ATTEMPTS: Final = 2
"""Attempts of one seal KMS call (a retry after a timeout or a throttle): about 13 s at most
in all, in the thread that unseals (a worker answers ``sealed`` meanwhile)."""


class KmsClient(Protocol):
    """Encrypt and decrypt small secrets with a KMS key, bound to an encryption context."""

    def encrypt(
        self, key_id: str, plaintext: Sensitive[bytes], context: Mapping[str, str]
    ) -> bytes:
        """Ciphertext blob of ``plaintext`` under ``key_id`` bound to ``context``."""
        ...

    def decrypt(
        self, blob: bytes, context: Mapping[str, str], *, key_id: str | None = None
    ) -> Sensitive[bytes]:
        """Plaintext of ``blob``; ``context`` must equal the one used to encrypt."""
        ...


@dataclass(frozen=True, slots=True)
class AwsCredentials:
    """Static AWS credentials (the secret parts masked in ``repr``)."""

    access_key_id: str
    secret_access_key: Sensitive[str] = field(repr=False)
    session_token: Sensitive[str] | None = field(default=None, repr=False)


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        error = response.get("Error")
        if isinstance(error, dict):
            code = error.get("Code")
            if isinstance(code, str):
                return code
    return type(exc).__name__


class AwsKmsClient:
    """``KmsClient`` over boto3. Credentials: ``credentials`` or boto3's default chain.

    ``timeout``: seconds to connect and for each read of an answer; ``max_attempts``:
    attempts of a call in all, the first one included.
    """

    def __init__(
        self,
        *,
        region: str,
        endpoint_url: str | None = None,
        credentials: AwsCredentials | None = None,
        timeout: float = 10.0,
        max_attempts: int = 3,
    ) -> None:
        try:
            import boto3
            from botocore.config import Config
            from botocore.exceptions import BotoCoreError
        except ImportError:
            raise ProviderError("AWS KMS needs boto3: install medsecrets[aws]") from None
        config = Config(
            connect_timeout=timeout,
            read_timeout=timeout,
            # total_max_attempts counts the first attempt (botocore's max_attempts does not)
            retries={"total_max_attempts": max_attempts, "mode": "standard"},
        )
        self._region = region
        self._endpoint_url = endpoint_url
        secret = credentials.secret_access_key.reveal() if credentials else None
        try:
            self._client: KMSClient = boto3.session.Session().client(
                "kms",
                region_name=region,
                endpoint_url=endpoint_url,
                aws_access_key_id=credentials.access_key_id if credentials else None,
                aws_secret_access_key=secret,
                aws_session_token=(
                    credentials.session_token.reveal()
                    if credentials and credentials.session_token
                    else None
                ),
                config=config,
            )
        except (ValueError, BotoCoreError):  # a region or endpoint botocore refuses
            # (AwsKmsSealConfig checks them first); the exception text could echo them
            raise InvalidRequest("AWS KMS: the region or endpoint_url is not valid") from None

    def __repr__(self) -> str:
        return f"AwsKmsClient(region={self._region!r}, endpoint_url={self._endpoint_url!r})"

    def encrypt(
        self, key_id: str, plaintext: Sensitive[bytes], context: Mapping[str, str]
    ) -> bytes:
        """KMS ``Encrypt``; ``ProviderError`` (AWS error code only) on failure."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self._client.encrypt(
                KeyId=key_id, Plaintext=plaintext.reveal(), EncryptionContext=dict(context)
            )
            blob = response.get("CiphertextBlob")
        except (ClientError, BotoCoreError) as exc:
            raise ProviderError(f"KMS Encrypt failed: {_error_code(exc)}") from None
        except (KeyError, TypeError, ValueError):  # an answer botocore could not read
            raise ProviderError("KMS Encrypt failed: malformed answer") from None
        return _blob(blob, "Encrypt")

    def decrypt(
        self, blob: bytes, context: Mapping[str, str], *, key_id: str | None = None
    ) -> Sensitive[bytes]:
        """KMS ``Decrypt``; ``ProviderError`` (AWS error code only) on failure."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            if key_id is None:
                response = self._client.decrypt(
                    CiphertextBlob=blob, EncryptionContext=dict(context)
                )
            else:
                response = self._client.decrypt(
                    CiphertextBlob=blob, EncryptionContext=dict(context), KeyId=key_id
                )
            plain = response.get("Plaintext")
        except (ClientError, BotoCoreError) as exc:
            raise ProviderError(f"KMS Decrypt failed: {_error_code(exc)}") from None
        except (KeyError, TypeError, ValueError):  # an answer botocore could not read
            raise ProviderError("KMS Decrypt failed: malformed answer") from None
        return Sensitive(_blob(plain, "Decrypt"))


def _blob(value: object, operation: str) -> bytes:
    """The non-empty bytes of a KMS answer's blob field; ``ProviderError`` for anything else."""
    if not isinstance(value, bytes | bytearray) or not value:
        raise ProviderError(f"KMS {operation} failed: malformed answer")
    return bytes(value)
