"""The aws-kms provider leaves no KMS key behind that lost a race (a real moto server process).

Two providers over one barrier stand for two processes over one store; a race is driven at
a chosen moment by ``_Hooked``, a real KMS client whose chosen call first runs another
process's step. Afterwards the keys made during the test are listed: every enabled one is a
KEK version of the store, every other one is pending deletion, and no recorded key is.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence

import pytest
from botocore.exceptions import ClientError
from tests.keys import test_awskms
from tests.keys.test_awskms import kms_client

from medsecrets.barrier.base import SecureStorage
from medsecrets.keys.awskms import AwsKmsKekProvider
from medsecrets.sensitive import Sensitive
from medsecrets.storage.base import Operation
from medsecrets.store import SecretStore
from medsecrets.testing.motoserver import MotoServer

moto = test_awskms.moto  # the moto server process (module-scoped), and a store using it
kms_store = test_awskms.kms_store

_DEK = b"k" * 32
_CONTEXT = {"path": "p", "version": "1", "category": "database"}


class _Hooked:
    """A real KMS client whose first call of ``method`` runs ``step`` (another process's
    step at the worst moment) before it, or just after it with ``after``; every other call
    goes straight through."""

    def __init__(
        self, client, method: str, step: Callable[[], object], *, after: bool = False
    ) -> None:  # type: ignore[no-untyped-def]
        self._client = client
        self._method = method
        self._step: Callable[[], object] | None = step
        self._after = after

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        call = getattr(self._client, name)
        if name != self._method:
            return call

        def hooked(**kwargs):  # type: ignore[no-untyped-def]
            step, self._step = self._step, None
            if step is not None and not self._after:
                step()
            answer = call(**kwargs)
            if step is not None and self._after:
                step()
            return answer

        return hooked


class _HookedBatch:
    """A process's store (the real barrier) whose first ``batch`` (its version table's
    check-and-set write) first runs ``step``, another process's steps at that moment."""

    def __init__(self, secure: SecureStorage, step: Callable[[], object]) -> None:
        self._secure = secure
        self._step: Callable[[], object] | None = step

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self._secure, name)

    def batch(self, ops: Sequence[Operation]) -> dict[str, bytes]:
        step, self._step = self._step, None
        if step is not None:
            step()
        return self._secure.batch(ops)


class _Refusing:
    """A fake: a real KMS client whose ``method`` is refused with ``AccessDeniedException``;
    with ``after_doing`` the call is made first (its answer lost: a timeout after the work)."""

    def __init__(self, client, method: str, *, after_doing: bool = False) -> None:  # type: ignore[no-untyped-def]
        self._client = client
        self._method = method
        self._after_doing = after_doing

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        call = getattr(self._client, name)
        if name != self._method:
            return call

        def refused(**kwargs):  # type: ignore[no-untyped-def]
            if self._after_doing:
                call(**kwargs)
            error = {"Error": {"Code": "AccessDeniedException", "Message": "not allowed"}}
            raise ClientError(error, name)  # type: ignore[arg-type]

        return refused


@pytest.fixture
def new_keys(moto: MotoServer) -> Iterator[Callable[[], dict[str, str]]]:
    """A function giving the state (``Enabled``, ``PendingDeletion``) of every KMS key made
    since the test began, by ARN."""
    client = kms_client(moto)
    before = {k["KeyArn"] for k in client.list_keys(Limit=1000)["Keys"]}

    def states() -> dict[str, str]:
        arns = {k["KeyArn"] for k in client.list_keys(Limit=1000)["Keys"]} - before
        return {arn: str(client.describe_key(KeyId=arn)["KeyMetadata"]["KeyState"]) for arn in arns}

    yield states


def _providers(
    store: SecretStore,
    moto: MotoServer,
    method: str,
    step: Callable[[AwsKmsKekProvider], object],
    *,
    after: bool = False,
) -> tuple[AwsKmsKekProvider, AwsKmsKekProvider, str]:
    """``(mine, other, alias)``: two providers of one store's barrier and one alias; mine's
    first ``method`` call runs ``step(other)`` before it (or after it, with ``after``)."""
    alias = f"alias/{store.kms_prefix}-database"  # type: ignore[attr-defined]
    other = AwsKmsKekProvider(store.barrier, kms_client(moto), alias_for=lambda c: alias)
    hooked = _Hooked(kms_client(moto), method, lambda: step(other), after=after)
    mine = AwsKmsKekProvider(store.barrier, hooked, alias_for=lambda c: alias)  # type: ignore[arg-type]
    return mine, other, alias


def _recorded(provider: AwsKmsKekProvider) -> list[str]:
    return [str(v.key_id) for v in provider.versions("database")]


def _alias_target(moto: MotoServer, alias: str) -> str:
    return str(kms_client(moto).describe_key(KeyId=alias)["KeyMetadata"]["Arn"])


def test_a_first_use_that_lost_create_alias_schedules_its_key_for_deletion(
    kms_store: SecretStore,
    moto: MotoServer,
    new_keys: Callable[[], dict[str, str]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Another process's first use of the category runs between my ``DescribeKey`` (no alias
    yet) and my ``CreateKey``: its ``CreateAlias`` wins, I take its key, and mine (named by
    nothing) stayed enabled in the account for ever."""
    mine, other, alias = _providers(kms_store, moto, "create_key", lambda o: o.versions("database"))
    with caplog.at_level(logging.INFO, logger="medsecrets.keys"):
        wrapped = mine.wrap("database", Sensitive(_DEK), _CONTEXT)
    assert other.unwrap("database", wrapped, _CONTEXT).reveal() == _DEK
    [winner] = _recorded(mine)
    assert winner == _alias_target(moto, alias)
    states = new_keys()
    assert len(states) == 2
    assert states.pop(winner) == "Enabled"
    [(loser, state)] = states.items()
    assert state == "PendingDeletion"
    description = kms_client(moto).describe_key(KeyId=loser)["KeyMetadata"]["Description"]
    assert description == (
        "medsecrets KEK for category database, unused: lost the race to be the first key:"
        " scheduled for deletion"
    )
    [record] = [r for r in caplog.records if loser in r.getMessage()]
    assert "scheduled for deletion" in record.getMessage()
    assert _DEK.decode() not in caplog.text


def test_a_rotation_that_lost_its_write_schedules_its_key_for_deletion(
    kms_store: SecretStore,
    moto: MotoServer,
    new_keys: Callable[[], dict[str, str]],
) -> None:
    """Another process rotates between my ``CreateKey`` and my write: both rotations count
    (versions 2 and 3), and the key I made for a version 2 (stored by nobody) stayed enabled."""
    mine, other, alias = _providers(kms_store, moto, "create_key", lambda o: o.rotate("database"))
    first = _recorded(other)  # version 1, before the race
    assert mine.rotate("database") == 3
    recorded = _recorded(mine)
    assert recorded[0] == first[0] and len(recorded) == 3
    assert _alias_target(moto, alias) == recorded[-1]
    states = new_keys()
    assert {arn for arn, state in states.items() if state == "Enabled"} == set(recorded)
    assert sorted(states.values()) == ["Enabled"] * 3 + ["PendingDeletion"]


def test_a_lost_write_whose_key_won_through_the_alias_keeps_it(
    kms_store: SecretStore,
    moto: MotoServer,
    new_keys: Callable[[], dict[str, str]],
) -> None:
    """My ``CreateAlias`` wins, then another process's first use takes my key through the
    alias and writes version 1 before me: my write lost, but its key is the winner's, and it
    stays enabled."""
    mine, other, alias = _providers(
        kms_store, moto, "create_alias", lambda o: o.versions("database"), after=True
    )
    mine.wrap("database", Sensitive(_DEK), _CONTEXT)
    [winner] = _recorded(other)
    assert _recorded(mine) == [winner] == [_alias_target(moto, alias)]
    assert new_keys() == {winner: "Enabled"}


def test_a_cleanup_that_fails_is_logged_and_does_not_fail_the_rotation(
    kms_store: SecretStore,
    moto: MotoServer,
    new_keys: Callable[[], dict[str, str]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    alias = f"alias/{kms_store.kms_prefix}-database"  # type: ignore[attr-defined]
    other = AwsKmsKekProvider(kms_store.barrier, kms_client(moto), alias_for=lambda c: alias)
    other.versions("database")
    refusing = _Refusing(
        _Hooked(kms_client(moto), "create_key", lambda: other.rotate("database")),
        "schedule_key_deletion",
    )
    mine = AwsKmsKekProvider(kms_store.barrier, refusing, alias_for=lambda c: alias)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="medsecrets.keys"):
        assert mine.rotate("database") == 3
    states = new_keys()
    recorded = set(_recorded(mine))
    [loser] = set(states) - recorded
    [record] = [r for r in caplog.records if loser in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert "AccessDeniedException" in record.getMessage()


@pytest.mark.parametrize("after_doing", [False, True], ids=["refused", "answer-lost"])
def test_a_rotation_whose_update_alias_fails_stands_with_a_warning(
    kms_store: SecretStore,
    moto: MotoServer,
    new_keys: Callable[[], dict[str, str]],
    caplog: pytest.LogCaptureFixture,
    after_doing: bool,
) -> None:
    """The alias is pointed at a rotation's key only once its version is recorded: an
    ``UpdateAlias`` that fails then leaves the rotation standing (the version is in use, its
    key enabled) and the alias naming the older key (or the new one, the call made and its
    answer lost), with a warning naming the alias and the key."""
    alias = f"alias/{kms_store.kms_prefix}-database"  # type: ignore[attr-defined]
    refusing = _Refusing(kms_client(moto), "update_alias", after_doing=after_doing)
    mine = AwsKmsKekProvider(kms_store.barrier, refusing, alias_for=lambda c: alias)  # type: ignore[arg-type]
    [first] = _recorded(mine)
    with caplog.at_level(logging.INFO, logger="medsecrets.keys"):
        assert mine.rotate("database") == 2
    [_, made] = _recorded(mine)
    wrapped = mine.wrap("database", Sensitive(_DEK), _CONTEXT)
    assert mine.unwrap("database", wrapped, _CONTEXT).reveal() == _DEK
    assert new_keys() == {first: "Enabled", made: "Enabled"}
    assert _alias_target(moto, alias) == (made if after_doing else first)
    [record] = [r for r in caplog.records if made in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert record.getMessage() == (
        f"KMS alias {alias} does not name the key of database version 2 ({made}):"
        " AWS KMS UpdateAlias failed: AccessDeniedException"
    )


def test_a_key_the_alias_named_is_never_scheduled_though_its_rotation_lost(
    kms_store: SecretStore,
    moto: MotoServer,
    new_keys: Callable[[], dict[str, str]],
) -> None:
    """Two categories whose catalog names one alias: the second's first use takes the key
    that alias names. A rotation of the first pointed the alias at its new key *before* its
    write, which then lost to another rotation: its key was scheduled for deletion while
    the second category's version 1, wrapping its data keys, was that very key. Now the
    alias is pointed only after the write: the second category takes a recorded key."""
    alias = f"alias/{kms_store.kms_prefix}-shared"  # type: ignore[attr-defined]
    other = AwsKmsKekProvider(kms_store.barrier, kms_client(moto), alias_for=lambda c: alias)
    other.versions("database")

    def meanwhile() -> None:
        other.versions("api")  # first use: takes the key the alias names now
        other.rotate("database")  # my rotation's write loses

    hooked = _HookedBatch(kms_store.barrier, meanwhile)
    mine = AwsKmsKekProvider(hooked, kms_client(moto), alias_for=lambda c: alias)  # type: ignore[arg-type]
    assert mine.rotate("database") == 3
    wrapped = other.wrap("api", Sensitive(_DEK), _CONTEXT)
    [api_key] = [str(v.key_id) for v in other.versions("api")]
    database_keys = _recorded(mine)
    states = new_keys()
    assert states[api_key] == "Enabled"  # it was "PendingDeletion"
    assert api_key in database_keys
    assert {arn for arn, state in states.items() if state == "Enabled"} == set(database_keys)
    assert sorted(states.values()) == ["Enabled"] * 3 + ["PendingDeletion"]
    assert mine.unwrap("api", wrapped, _CONTEXT).reveal() == _DEK


def test_a_key_whose_description_cannot_be_changed_is_still_scheduled(
    kms_store: SecretStore,
    moto: MotoServer,
    new_keys: Callable[[], dict[str, str]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Without ``kms:UpdateKeyDescription`` the lost key is scheduled all the same."""
    alias = f"alias/{kms_store.kms_prefix}-database"  # type: ignore[attr-defined]
    other = AwsKmsKekProvider(kms_store.barrier, kms_client(moto), alias_for=lambda c: alias)
    other.versions("database")
    refusing = _Refusing(
        _Hooked(kms_client(moto), "create_key", lambda: other.rotate("database")),
        "update_key_description",
    )
    mine = AwsKmsKekProvider(kms_store.barrier, refusing, alias_for=lambda c: alias)  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO, logger="medsecrets.keys"):
        assert mine.rotate("database") == 3
    states = new_keys()
    [loser] = set(states) - set(_recorded(mine))
    assert states[loser] == "PendingDeletion"
    [record] = [r for r in caplog.records if loser in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert record.getMessage().endswith(
        "is scheduled for deletion in 7 days; its description is unchanged:"
        " AWS KMS UpdateKeyDescription failed: AccessDeniedException"
    )
