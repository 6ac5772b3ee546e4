"""SLIP-39 Shamir shares of the unseal key, via the maintained ``shamir-mnemonic``.

No field arithmetic here: splitting, checksums and recombination are the
library's. This module only adapts it: values travel as ``Sensitive``, and
every library error becomes ``InvalidShareError`` with our own message (the
library's messages quote share words, so they never propagate).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import shamir_mnemonic

from medsecrets.errors import InvalidShareError
from medsecrets.sensitive import Sensitive

__all__ = ["ShareInfo", "combine_shares", "parse_share", "split_secret"]

# The unseal key is 256 random bits, so SLIP-39's passphrase stretching adds
# nothing; use the cheapest setting to keep unseal fast.
_ITERATION_EXPONENT = 0


@dataclass(frozen=True, slots=True)
class ShareInfo:
    """Public metadata of one share (no share value)."""

    identifier: int
    index: int
    threshold: int
    group_index: int
    group_threshold: int
    group_count: int


def split_secret(
    secret: Sensitive[bytes], *, shares: int, threshold: int
) -> tuple[Sensitive[str], ...]:
    """Split ``secret`` (16+ bytes, even length) into ``shares`` mnemonics, any
    ``threshold`` of which recover it."""
    groups = shamir_mnemonic.generate_mnemonics(
        group_threshold=1,
        groups=[(threshold, shares)],
        master_secret=secret.reveal(),
        passphrase=b"",
        extendable=True,
        iteration_exponent=_ITERATION_EXPONENT,
    )
    return tuple(Sensitive(m) for m in groups[0])


def _text(share: str | Sensitive[str]) -> str:
    value = share.reveal() if isinstance(share, Sensitive) else share
    if not isinstance(value, str):
        raise InvalidShareError("a share must be a string of words")
    return " ".join(value.split())


def parse_share(share: str | Sensitive[str]) -> ShareInfo:
    """Decode and checksum one share; ``InvalidShareError`` if it is malformed."""
    try:
        parsed = shamir_mnemonic.Share.from_mnemonic(_text(share))
    except (shamir_mnemonic.MnemonicError, ValueError, IndexError):
        raise InvalidShareError(
            "malformed share: unknown words, wrong length or bad checksum"
        ) from None
    return ShareInfo(
        identifier=parsed.identifier,
        index=parsed.index,
        threshold=parsed.member_threshold,
        group_index=parsed.group_index,
        group_threshold=parsed.group_threshold,
        group_count=parsed.group_count,
    )


def combine_shares(shares: Sequence[str | Sensitive[str]]) -> Sensitive[bytes]:
    """Recover the secret from a threshold of shares; ``InvalidShareError`` if they
    do not combine (wrong set, inconsistent or corrupted shares)."""
    try:
        secret = shamir_mnemonic.combine_mnemonics([_text(s) for s in shares])
    except (shamir_mnemonic.MnemonicError, ValueError, IndexError):
        raise InvalidShareError("the shares do not combine") from None
    return Sensitive(secret)
