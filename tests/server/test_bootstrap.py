"""Bootstrap in process: dev mode set-up and reuse, seal start states, the sweeper."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from medsecrets.auth.tokens import TokenStore
from medsecrets.clock import ManualClock
from medsecrets.errors import AuthenticationError, ConfigError, NotFoundError
from medsecrets.schema.seal import KeyFileSealConfig, ShamirSealConfig
from medsecrets.seal.latch import SharedLatch
from medsecrets.server.bootstrap import DEV_TOKEN_FILE, build_core, build_store, create_latch
from medsecrets.server.config import Settings, load_settings
from medsecrets.server.sweeper import Sweeper
from medsecrets.store import SecretStore


def _settings(data: Path, **overrides: object) -> Settings:
    return load_settings(None, env={}, overrides={"data_dir": str(data), **overrides})


def test_dev_first_and_second_start(tmp_path: Path) -> None:
    settings = _settings(tmp_path / "d", dev=True)
    core, dev = build_core(settings)
    try:
        assert dev is not None
        assert dev.first_start
        token = dev.root_token.reveal()
        assert "ms." not in repr(dev)
        assert dev.export_line() == (
            f"export MEDSECRETS_ADDR=http://127.0.0.1:8200 MEDSECRETS_TOKEN={token}"
        )
        info = core.tokens.authenticate(token)
        assert info.root
        assert core.store.secrets.describe("medessence/development/database").current_version == 1
    finally:
        core.store.close()
    token_file = tmp_path / "d" / DEV_TOKEN_FILE
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    core, dev = build_core(settings)
    try:
        assert dev is not None
        assert not dev.first_start
        assert dev.root_token.reveal() == token
        assert core.store.secrets.describe("medessence/development/database").current_version == 1
        # a revoked dev token is replaced on the next start
        core.tokens.revoke(core.tokens.authenticate(token).accessor)
    finally:
        core.store.close()
    core, dev = build_core(settings)
    try:
        assert dev is not None
        assert dev.root_token.reveal() != token
        core.tokens.authenticate(dev.root_token.reveal())
    finally:
        core.store.close()


def test_keyfile_store_auto_unseals(tmp_path: Path) -> None:
    settings = _settings(tmp_path / "d", tls_disable=True)
    store = build_store(settings)
    store.initialize(KeyFileSealConfig(str(tmp_path / "unseal.key")))
    store.close()
    core, dev = build_core(settings)
    try:
        assert dev is None
        assert core.store.status().sealed is False
    finally:
        core.store.close()
    with pytest.raises(ConfigError, match=r"'seal.type'.*'keyfile' seal"):
        build_core(
            _settings(
                tmp_path / "d", tls_disable=True, **{"seal.type": "awskms", "seal.kms_key_id": "k"}
            )
        )


def test_shamir_store_starts_sealed(tmp_path: Path) -> None:
    settings = _settings(tmp_path / "d", tls_disable=True)
    store = build_store(settings)
    store.initialize(ShamirSealConfig(shares=1, threshold=1))
    store.close()
    core, _ = build_core(settings)
    try:
        assert core.store.status().sealed is True
    finally:
        core.store.close()
    with pytest.raises(ConfigError, match=r"'data_dir'.*dev mode needs a keyfile seal"):
        build_core(_settings(tmp_path / "d", dev=True))


def test_uninitialised_store_waits(tmp_path: Path) -> None:
    core, _ = build_core(_settings(tmp_path / "d", tls_disable=True))
    try:
        assert core.store.status().initialized is False
    finally:
        core.store.close()


def test_sweeper_purges_expired(store: SecretStore, clock: ManualClock) -> None:
    path = "medessence/test/ai-providers/old"
    store.secrets.put(path, {"azure_cognitive_key": "ab" * 16})
    store.secrets.delete(path, recovery_days=7)
    sweeper = Sweeper(store, interval=3600)
    assert sweeper.sweep_once() == ()
    clock.advance(days=8)
    assert sweeper.sweep_once() == (path,)
    store.seal()
    assert sweeper.sweep_once() == ()  # sealed: skipped quietly


def test_sweeper_thread_stops(store: SecretStore) -> None:
    sweeper = Sweeper(store, interval=3600)
    sweeper.start()
    sweeper.stop(timeout=10)
    assert "running=False" in repr(sweeper)


def test_sweeper_purges_expired_tokens(store: SecretStore, clock: ManualClock) -> None:
    tokens = TokenStore(store.barrier, clock=clock)
    token, info = tokens.create(
        paths=["medessence/"], capabilities=["read"], ttl=60, display_name="ci", parent=None
    )
    sweeper = Sweeper(store, interval=3600, tokens=tokens)
    sweeper.sweep_once()
    assert tokens.lookup(info.accessor) == info
    clock.advance(61)
    sweeper.sweep_once()
    with pytest.raises(NotFoundError):
        tokens.lookup(info.accessor)
    with pytest.raises(AuthenticationError):
        tokens.authenticate(token.reveal())


def test_worker_processes_on_sqlite_see_a_revocation_at_once(tmp_path: Path) -> None:
    settings = _settings(tmp_path / "d", dev=True)
    first, dev = build_core(settings)
    second, _ = build_core(settings, worker=True)  # as a second worker process does
    try:
        assert dev is not None
        token, _ = first.tokens.create(
            paths=["medessence/"], capabilities=["read"], ttl=600, display_name="ci", parent=None
        )
        info = second.tokens.authenticate(token.reveal())  # cached in the second worker
        first.tokens.revoke(info.accessor)
        with pytest.raises(AuthenticationError):
            second.tokens.authenticate(token.reveal())
    finally:
        second.store.close()
        first.store.close()


def test_a_failing_token_purge_leaves_the_secret_purge_standing(
    store: SecretStore, clock: ManualClock
) -> None:
    class BrokenTokens(TokenStore):
        """A test double: a token store whose purge fails."""

        def purge_expired(self) -> int:
            raise OSError("disk trouble")

    path = "medessence/test/ai-providers/old"
    store.secrets.put(path, {"azure_cognitive_key": "ab" * 16})
    store.secrets.delete(path, recovery_days=7)
    clock.advance(days=8)
    sweeper = Sweeper(store, interval=3600, tokens=BrokenTokens(store.barrier, clock=clock))
    assert sweeper.sweep_once() == (path,)


def test_a_failing_secret_purge_leaves_the_token_purge_running(
    store: SecretStore, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens = TokenStore(store.barrier, clock=clock)
    _, info = tokens.create(
        paths=["medessence/"], capabilities=["read"], ttl=60, display_name="ci", parent=None
    )

    def broken() -> list[str]:  # an injected failure of the secrets' purge
        raise OSError("disk trouble")

    monkeypatch.setattr(store.secrets, "purge_expired", broken)
    clock.advance(61)
    assert Sweeper(store, interval=3600, tokens=tokens).sweep_once() == ()
    with pytest.raises(NotFoundError):
        tokens.lookup(info.accessor)


def test_a_worker_started_after_an_operator_seal_stays_sealed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _settings(tmp_path / "d", tls_disable=True)
    store = build_store(settings)
    store.initialize(KeyFileSealConfig(str(tmp_path / "unseal.key")))
    store.close()
    latch = create_latch(settings)
    latch.set()
    core, _ = build_core(settings, worker=True, latch=SharedLatch.open(latch.path))
    try:
        assert core.store.barrier.sealed
        assert "an operator sealed the server" in caplog.text
    finally:
        core.store.close()
    latch.clear()
    core, _ = build_core(settings, worker=True, latch=SharedLatch.open(latch.path))
    try:
        assert not core.store.barrier.sealed
    finally:
        core.store.close()


def test_create_latch_names_the_data_dir_setting(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="'data_dir'"):
        create_latch(_settings(blocker / "d", tls_disable=True))
    made = create_latch(_settings(tmp_path / "new", tls_disable=True))
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o700
    assert Path(made.path).parent == tmp_path / "new"
