"""TokenStore: random tokens kept only as keyed hashes, TTLs, children, revocation."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest

from medsecrets.auth.tokens import (
    ACCESSORS,
    CAPABILITIES,
    HMAC_KEY,
    TOKENS,
    TokenStore,
)
from medsecrets.clock import ManualClock
from medsecrets.errors import AuthenticationError, InvalidRequest, NotFoundError, PermissionDenied
from medsecrets.schema.tokens import TokenInfo
from medsecrets.storage.sqlite import SqliteStorage
from medsecrets.store import SecretStore

TOKEN_RE = re.compile(r"ms\.[A-Za-z0-9_-]{43}")


@pytest.fixture
def tokens(store: SecretStore, clock: ManualClock) -> TokenStore:
    return TokenStore(store.barrier, clock=clock)


def make(tokens: TokenStore, **kw: object) -> tuple[str, TokenInfo]:
    args: dict[str, object] = {
        "paths": ["medessence/production/"],
        "capabilities": ["read"],
        "ttl": 3600,
        "display_name": "ci",
        "parent": None,
    }
    args.update(kw)
    token, info = tokens.create(**args)  # type: ignore[arg-type]
    return token.reveal(), info


def test_tokens_are_random_256_bit_and_well_formed(tokens: TokenStore) -> None:
    seen = set()
    for _ in range(20):
        token, info = make(tokens)
        assert TOKEN_RE.fullmatch(token)
        assert re.fullmatch(r"[0-9a-f]{32}", info.accessor)
        seen.add(token)
    assert len(seen) == 20


def test_create_root_has_everything_and_no_expiry(tokens: TokenStore) -> None:
    token, info = tokens.create_root()
    assert info.root and info.paths == ("*",) and info.capabilities == CAPABILITIES
    assert info.expires_at is None and info.parent is None
    assert tokens.authenticate(token.reveal()) == info


def test_token_is_stored_only_as_keyed_hash(
    tokens: TokenStore, store: SecretStore, tmp_path: Path
) -> None:
    token, info = make(tokens)
    keys = store.barrier.list("auth/").keys
    assert HMAC_KEY in keys
    assert f"{ACCESSORS}{info.accessor}" in keys
    token_keys = [k for k in keys if k.startswith(TOKENS)]
    assert len(token_keys) == 1
    digest = token_keys[0][len(TOKENS) :]
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    # Neither the plaintext records nor the raw database hold the token.
    for key in keys:
        value = store.barrier.get(key)
        assert value is not None
        assert token.encode() not in value
        assert token not in key
    raw = (tmp_path / "store.db").read_bytes()
    assert token.encode() not in raw
    assert token[3:].encode() not in raw


def test_authenticate_refuses_garbage_unknown_and_wrong_types(tokens: TokenStore) -> None:
    make(tokens)
    for bad in ["", "garbage", "ms.", "ms." + "A" * 43, "Ms." + "A" * 43, "ms." + "A" * 44]:
        with pytest.raises(AuthenticationError):
            tokens.authenticate(bad)
    with pytest.raises(AuthenticationError):
        tokens.authenticate(None)  # type: ignore[arg-type]


def test_ttl_bounds(tokens: TokenStore) -> None:
    for bad in [0, 0.5, -1, 31 * 86400 + 1, float("nan"), True, "60"]:
        with pytest.raises(InvalidRequest):
            make(tokens, ttl=bad)
    _, short = make(tokens, ttl=1)
    _, long = make(tokens, ttl=31 * 86400)
    assert short.expires_at is not None and long.expires_at is not None
    assert long.expires_at - long.created_at == dt.timedelta(days=31)
    _, default = make(tokens, ttl=None)
    assert default.expires_at is not None
    assert default.expires_at - default.created_at == dt.timedelta(hours=24)


def test_expired_tokens_are_refused_even_when_cached(
    tokens: TokenStore, clock: ManualClock
) -> None:
    token, _ = make(tokens, ttl=10)
    tokens.authenticate(token)  # now cached
    clock.advance(9)
    tokens.authenticate(token)
    clock.advance(1)
    with pytest.raises(AuthenticationError):
        tokens.authenticate(token)


def test_bad_input_is_refused(tokens: TokenStore) -> None:
    cases: list[dict[str, object]] = [
        {"paths": []},
        {"paths": "medessence/"},
        {"paths": ["medessence/../prod/"]},
        {"paths": ["medessence//x"]},
        {"paths": ["/medessence"]},
        {"paths": ["medessence/\x00"]},
        {"paths": ["a" * 600]},
        {"capabilities": []},
        {"capabilities": ["root"]},
        {"capabilities": "read"},
        {"display_name": "x" * 200},
        {"display_name": "bad\nname"},
    ]
    for case in cases:
        with pytest.raises(InvalidRequest):
            make(tokens, **case)


def test_children_never_exceed_their_parent(tokens: TokenStore, clock: ManualClock) -> None:
    _, parent = make(
        tokens, paths=["medessence/production/"], capabilities=["read", "token"], ttl=100
    )
    with pytest.raises(PermissionDenied):
        make(tokens, parent=parent, capabilities=["read", "write"])
    with pytest.raises(PermissionDenied):
        make(tokens, parent=parent, paths=["*"])
    with pytest.raises(PermissionDenied):
        make(tokens, parent=parent, paths=["medessence/staging/"])
    with pytest.raises(PermissionDenied):
        make(tokens, parent=parent, paths=["medessence/"])
    _, child = make(tokens, parent=parent, paths=["medessence/production/db"], ttl=10_000)
    assert child.parent == parent.accessor
    assert child.expires_at == parent.expires_at  # capped at the parent's


def test_a_delegated_token_cannot_pass_for_another(tokens: TokenStore) -> None:
    """The display name is the principal of audit records: a child of a token that is not
    root carries its parent's name, so a CI token cannot name its child ``dev-root``."""
    _, root = tokens.create_root("dev-root")
    _, ci = tokens.create(
        paths=["*"], capabilities=["read", "token"], ttl=600, display_name="ci", parent=root
    )
    assert ci.display_name == "ci"  # named by root: as given
    _, child = tokens.create(
        paths=["*"], capabilities=["read"], ttl=600, display_name="dev-root", parent=ci
    )
    assert child.display_name == "ci/dev-root"
    with pytest.raises(InvalidRequest, match="display_name"):
        tokens.create(
            paths=["*"], capabilities=["read"], ttl=600, display_name="x" * 250, parent=ci
        )


def test_revoke_revokes_descendants(tokens: TokenStore) -> None:
    root_token, root = tokens.create_root()
    a_token, a = make(tokens, parent=root, capabilities=["read", "token"])
    b_token, b = make(tokens, parent=a, capabilities=["read", "token"])
    c_token, _ = make(tokens, parent=b)
    other_token, _ = make(tokens, parent=root)
    for t in (a_token, b_token, c_token, other_token):
        tokens.authenticate(t)  # cache them all
    tokens.revoke(a.accessor)
    for t in (a_token, b_token, c_token):
        with pytest.raises(AuthenticationError):
            tokens.authenticate(t)
    tokens.authenticate(other_token)
    tokens.authenticate(root_token.reveal())
    with pytest.raises(NotFoundError):
        tokens.lookup(b.accessor)
    with pytest.raises(NotFoundError):
        tokens.revoke(a.accessor)
    assert not [k for k in tokens._secure.list("auth/children/").keys if a.accessor in k]


def test_a_child_created_while_its_parent_is_revoked_is_revoked_too(
    tokens: TokenStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race a reviewer found: a child committed after revoke listed its parent's
    children, before revoke's batch. It is found by the next pass and revoked."""
    _, root = tokens.create_root()
    _, parent = make(tokens, parent=root, capabilities=["read", "token"])
    _, kid = make(tokens, parent=parent, capabilities=["read", "token"])
    late: list[str] = []
    listed = TokenStore._children

    def children_then_create(self: TokenStore, accessor: str) -> list[str]:
        found = listed(self, accessor)
        if not late and accessor in (parent.accessor, kid.accessor):
            # another request creates a child right after the listing
            token, info = make(self, parent=kid if accessor == kid.accessor else parent)
            late.append(token)
            late.append(info.accessor)
        return found

    monkeypatch.setattr(TokenStore, "_children", children_then_create)
    tokens.revoke(parent.accessor)
    token, accessor = late
    with pytest.raises(AuthenticationError):
        tokens.authenticate(token)
    with pytest.raises(NotFoundError):
        tokens.lookup(accessor)
    assert not [
        k
        for k in tokens._secure.list("auth/children/").keys
        if parent.accessor in k or kid.accessor in k or accessor in k
    ]


def test_lookup_by_accessor_and_by_token(tokens: TokenStore, clock: ManualClock) -> None:
    token, info = make(tokens, ttl=5)
    assert tokens.lookup(info.accessor) == info
    assert tokens.lookup_token(token) == info
    clock.advance(10)
    assert tokens.lookup_token(token) == info  # expired, still visible to lookups
    for bad in ["nope", "0" * 32, "../x"]:
        with pytest.raises(NotFoundError):
            tokens.lookup(bad)
    with pytest.raises(NotFoundError):
        tokens.lookup_token("ms." + "B" * 43)


def test_descendant_check(tokens: TokenStore) -> None:
    _, root = tokens.create_root()
    _, a = make(tokens, parent=root, capabilities=["token"])
    _, b = make(tokens, parent=a, capabilities=["token"])
    _, c = make(tokens, parent=root)
    assert tokens.is_descendant(b, a.accessor)
    assert tokens.is_descendant(b, root.accessor)
    assert not tokens.is_descendant(c, a.accessor)
    assert not tokens.is_descendant(a, b.accessor)


def test_other_process_sees_revocation_after_cache_window(
    store: SecretStore, clock: ManualClock
) -> None:
    first = TokenStore(store.barrier, clock=clock, cache_seconds=5)
    second = TokenStore(store.barrier, clock=clock, cache_seconds=5)
    token, info = make(first)
    second.authenticate(token)  # the HMAC key is shared through the barrier
    first.revoke(info.accessor)
    with pytest.raises(AuthenticationError):
        first.authenticate(token)
    second.authenticate(token)  # still inside its cache window
    clock.advance(5)
    with pytest.raises(AuthenticationError):
        second.authenticate(token)


def test_forget_drops_key_and_cache(tokens: TokenStore) -> None:
    token, _ = make(tokens)
    tokens.authenticate(token)
    tokens.forget()
    assert tokens._key is None and not tokens._cache
    tokens.authenticate(token)


def test_reprs_hold_no_token(tokens: TokenStore) -> None:
    token, info = tokens.create(
        paths=["*"], capabilities=["read"], ttl=60, display_name="x", parent=None
    )
    assert token.reveal() not in repr(token) + repr(info) + repr(tokens) + str(token)


def _keys(store: SecretStore, prefix: str) -> list[str]:
    return list(store.barrier.list(prefix, limit=1000).keys)


def test_purge_expired_reclaims_expired_tokens_and_their_links(
    store: SecretStore, tokens: TokenStore, clock: ManualClock
) -> None:
    root_token, root = tokens.create_root()
    parent_token, parent = make(tokens, ttl=100, capabilities=["read", "token"])
    _, child = make(tokens, ttl=50, parent=parent)
    assert tokens.purge_expired() == 0  # nothing expired: nothing touched
    clock.advance(60)
    assert tokens.purge_expired() == 1  # the child only
    assert tokens.lookup(parent.accessor) == parent
    assert tokens.authenticate(parent_token).accessor == parent.accessor
    with pytest.raises(NotFoundError):
        tokens.lookup(child.accessor)
    assert _keys(store, f"auth/children/{parent.accessor}/") == []
    clock.advance(60)
    assert tokens.purge_expired() == 1  # now the parent
    with pytest.raises(AuthenticationError):
        tokens.authenticate(parent_token)
    assert _keys(store, ACCESSORS) == [ACCESSORS + root.accessor]  # the root never expires
    assert len(_keys(store, TOKENS)) == 1
    assert _keys(store, "auth/children/") == []
    assert tokens.authenticate(root_token.reveal()).root
    assert tokens.purge_expired() == 0


def test_purge_expired_skips_tokens_revoked_meanwhile(
    store: SecretStore, tokens: TokenStore, clock: ManualClock
) -> None:
    _, info = make(tokens, ttl=10)
    clock.advance(20)
    tokens.revoke(info.accessor)  # as another process would, before the sweep
    assert tokens.purge_expired() == 0
    assert _keys(store, ACCESSORS) == []


@pytest.mark.parametrize("revalidate", [True, False])
def test_a_revocation_elsewhere_is_seen_at_once_when_revalidating(
    tmp_path: Path, store: SecretStore, clock: ManualClock, revalidate: bool
) -> None:
    """Two stores on one SQLite file (as two server processes are): one revokes, the other
    refuses the token on its next use with ``revalidate``, or within ``cache_seconds``."""
    here = TokenStore(store.barrier, clock=clock)
    other_store = SecretStore(SqliteStorage(tmp_path / "store.db"), clock=clock)
    other_store.auto_unseal()
    there = TokenStore(other_store.barrier, clock=clock, revalidate=revalidate)
    try:
        token, info = make(here)
        assert there.authenticate(token).accessor == info.accessor  # now cached there
        assert there.authenticate(token).accessor == info.accessor
        here.revoke(info.accessor)
        if revalidate:
            with pytest.raises(AuthenticationError):
                there.authenticate(token)
        else:
            assert there.authenticate(token).accessor == info.accessor  # for up to 5 s
            clock.advance(6)
            with pytest.raises(AuthenticationError):
                there.authenticate(token)
    finally:
        other_store.close()


def test_purge_expired_leaves_an_unreadable_record_and_purges_the_rest(
    store: SecretStore, tokens: TokenStore, clock: ManualClock
) -> None:
    infos = [make(tokens, ttl=10)[1] for _ in range(4)]
    damaged = store.barrier.get(ACCESSORS + infos[0].accessor)
    assert damaged is not None
    store.storage.put(TOKENS + damaged.decode(), b"\x00" * 64)  # not a sealed record
    clock.advance(20)
    assert tokens.purge_expired() == 3
    assert _keys(store, ACCESSORS) == [ACCESSORS + infos[0].accessor]
