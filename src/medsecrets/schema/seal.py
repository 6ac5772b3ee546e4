"""The seal on the wire: configurations, status, and the shares handed out once.

``SealConfig`` is one of:

- ``ShamirSealConfig(shares, threshold)``: an unseal key split into SLIP-39
  shares; ``threshold`` of them unseal. ``1 <= threshold <= shares <= 16`` and
  threshold 1 only with a single share (a SLIP-39 rule).
- ``KeyFileSealConfig(path)``: the unseal key lives in a 0600 file (auto-unseal).
- ``AwsKmsSealConfig(key_id, region, endpoint_url)``: the root key is encrypted
  by AWS KMS (auto-unseal).

Configs check themselves on construction (``InvalidRequest`` naming the
field and the rule, never echoing the value), so the API, the CLI and a stored
config share one set of rules: a key-file ``path`` is text of at most 4095
UTF-8 bytes without NUL or other control characters; a ``key_id`` is at most
2048 printable ASCII characters without spaces; a ``region`` is lower-case
letters, digits and inner hyphens (``eu-west-1``); an ``endpoint_url`` is an
``http``/``https`` URL with a host (a DNS name or an IP address), an optional
port, and no user or password. Their stored form (``core/seal-config``) is
``medsecrets.seal.config``'s business; their request form is
``{"type": seal_type(config), **fields}``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import urlsplit

from medsecrets.errors import InvalidRequest
from medsecrets.sensitive import Sensitive

__all__ = [
    "MAX_SHARES",
    "AwsKmsSealConfig",
    "InitResponse",
    "InitResult",
    "KeyFileSealConfig",
    "RekeyCancel",
    "SealConfig",
    "SealStatus",
    "SealType",
    "ShamirSealConfig",
    "seal_type",
]

MAX_SHARES = 16

SealType = Literal["shamir", "keyfile", "awskms"]


@dataclass(frozen=True, slots=True)
class ShamirSealConfig:
    """Split the unseal key into ``shares`` SLIP-39 shares; any ``threshold`` unseal."""

    shares: int = 5
    threshold: int = 3

    def __post_init__(self) -> None:
        if type(self.shares) is not int or type(self.threshold) is not int:
            raise InvalidRequest("shares and threshold must be integers")
        if not 1 <= self.threshold <= self.shares <= MAX_SHARES:
            raise InvalidRequest(f"need 1 <= threshold <= shares <= {MAX_SHARES}")
        if self.threshold == 1 and self.shares != 1:
            raise InvalidRequest("threshold 1 is only allowed with a single share")


@dataclass(frozen=True, slots=True)
class KeyFileSealConfig:
    """Keep the unseal key in the file at ``path`` (mode 0600, created at init)."""

    path: str

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not self.path:
            raise InvalidRequest("path: the key file path must be a non-empty string")
        if _CONTROL.search(self.path):
            raise InvalidRequest(
                "path: the key file path must not contain NUL or control characters"
            )
        try:
            size = len(self.path.encode("utf-8"))
        except UnicodeEncodeError:
            raise InvalidRequest("path: the key file path must be valid Unicode text") from None
        if size > _MAX_PATH:
            raise InvalidRequest(f"path: the key file path is longer than {_MAX_PATH} bytes")


@dataclass(frozen=True, slots=True)
class AwsKmsSealConfig:
    """Encrypt the root key with the AWS KMS key ``key_id`` (auto-unseal)."""

    key_id: str
    region: str = "us-east-1"
    endpoint_url: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.key_id, str) or not self.key_id:
            raise InvalidRequest("key_id: the KMS key id must be a non-empty string")
        if not _KEY_ID.fullmatch(self.key_id):
            raise InvalidRequest(
                "key_id: the KMS key id must be at most 2048 printable ASCII characters, "
                "without spaces (a key id, key ARN, alias/NAME or alias ARN)"
            )
        if not isinstance(self.region, str) or not self.region:
            raise InvalidRequest("region: the AWS region must be a non-empty string")
        if not _REGION.fullmatch(self.region):
            raise InvalidRequest(
                "region: the AWS region must be lower-case letters, digits and inner "
                "hyphens, as eu-west-1"
            )
        if self.endpoint_url is not None and not _valid_endpoint(self.endpoint_url):
            raise InvalidRequest(
                "endpoint_url: must be an http or https URL with a host (a DNS name or an "
                "IP address) and no user or password, as https://kms.eu-west-1.amazonaws.com"
            )


_MAX_PATH: Final = 4095
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
_KEY_ID: Final = re.compile(r"[\x21-\x7e]{1,2048}")
_REGION: Final = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_LABEL: Final = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_URL_CHARS: Final = re.compile(r"[\x21-\x7e]{1,2048}")


def _valid_endpoint(url: object) -> bool:
    """An ``http``/``https`` URL with a DNS name or IP address, an optional port, no userinfo
    (the rules botocore checks when it builds a client, and no credentials in a stored URL)."""
    if not isinstance(url, str) or not _URL_CHARS.fullmatch(url):
        return False
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not one
        host = parts.hostname
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not host or "@" in parts.netloc:
        return False
    if parts.netloc.startswith("["):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return False
        return True
    name = host[:-1] if host.endswith(".") else host
    return len(name) <= 253 and all(_LABEL.fullmatch(label) for label in name.split("."))


SealConfig = ShamirSealConfig | KeyFileSealConfig | AwsKmsSealConfig


def seal_type(config: SealConfig) -> SealType:
    """The stable name of the seal type of ``config``."""
    if isinstance(config, ShamirSealConfig):
        return "shamir"
    if isinstance(config, KeyFileSealConfig):
        return "keyfile"
    return "awskms"


@dataclass(frozen=True, slots=True)
class SealStatus:
    """Public seal state (works while sealed). ``term`` is ``None`` while sealed.

    ``rekey_pending``: a Shamir rekey made new shares that wait for
    ``POST /v1/sys/rekey/verify`` (until then the current shares open the store). It
    defaults to false, so an answer without it (an older server) still reads.
    """

    initialized: bool
    sealed: bool
    seal_type: SealType | None
    shares: int
    threshold: int
    progress: int
    term: int | None
    rekey_pending: bool = False


@dataclass(frozen=True, slots=True)
class InitResult:
    """What init and rekey hand out once: the unseal shares (empty unless shamir).

    ``POST /v1/sys/rekey`` answers with it as it is. ``verify`` is true when the
    shares take effect only once a threshold of them is given back
    (``POST /v1/sys/rekey/verify``): until then the current shares keep working.
    It defaults to false, so an answer without it (an older server) still reads.
    """

    shares: tuple[Sensitive[str], ...]
    threshold: int
    seal_type: SealType
    verify: bool = False


@dataclass(frozen=True, slots=True)
class InitResponse:
    """``POST /v1/sys/init``: the unseal shares (empty unless shamir) and the root token, once."""

    shares: tuple[Sensitive[str], ...]
    threshold: int
    seal_type: SealType
    root_token: Sensitive[str]


@dataclass(frozen=True, slots=True)
class RekeyCancel:
    """``DELETE /v1/sys/rekey``: whether a pending rekey was dropped (false: none was)."""

    cancelled: bool
