from __future__ import annotations

import itertools

import pytest

from medsecrets.errors import InvalidShareError
from medsecrets.seal.shamir import combine_shares, parse_share, split_secret
from medsecrets.sensitive import Sensitive

SECRET = Sensitive(bytes(range(32)))
MESSAGE = "malformed share: unknown words, wrong length or bad checksum"
MESSAGE_WORDS = frozenset(MESSAGE.split(" "))


def test_any_threshold_subset_recovers_the_secret() -> None:
    shares = split_secret(SECRET, shares=4, threshold=2)
    assert len(shares) == 4 and all(isinstance(s, Sensitive) for s in shares)
    for pair in itertools.permutations(shares, 2):
        assert combine_shares(list(pair)) == SECRET
    infos = [parse_share(s) for s in shares]
    assert len({i.identifier for i in infos}) == 1
    assert sorted(i.index for i in infos) == [0, 1, 2, 3]
    assert {i.threshold for i in infos} == {2}


def test_single_share() -> None:
    (share,) = split_secret(SECRET, shares=1, threshold=1)
    assert combine_shares([share]) == SECRET


def test_malformed_shares_are_refused_without_echoing_words() -> None:
    share = split_secret(SECRET, shares=2, threshold=2)[0].reveal()
    words = share.split()
    swapped = " ".join([*words[:-1], "academic" if words[-1] != "academic" else "acid"])
    for bad in (swapped, " ".join(words[:-1]), "not a share at all", "", share + " zzzz"):
        with pytest.raises(InvalidShareError) as info:
            parse_share(bad)
        message = str(info.value)
        # No word of the share is echoed (a word the fixed message itself uses, such as
        # "unknown" or "length", can be a share word too: those are left out of the check).
        assert not {w for w in words if w not in MESSAGE_WORDS} & set(message.split())
        assert message == MESSAGE


def test_shares_of_different_sets_do_not_combine() -> None:
    a = split_secret(SECRET, shares=2, threshold=2)
    b = split_secret(SECRET, shares=2, threshold=2)
    with pytest.raises(InvalidShareError):
        combine_shares([a[0], b[1]])
    with pytest.raises(InvalidShareError):
        combine_shares([a[0]])
