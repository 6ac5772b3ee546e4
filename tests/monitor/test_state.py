"""The detectors' state across restarts (``DetectorSet.state``/``restore``, ``monitor.state``).

The labelled synthetic data set is observed with a "restart" at several points: the state
is saved to a signed file, a new ``DetectorSet`` restores it and observes the rest. The
alerts must be exactly those of one uninterrupted run (and differ without the restore,
so the check can fail), under the default and a tight configuration (tables trimmed
mid-run). An edited, unsigned, wrongly keyed, malformed or partly malformed file, or one
saved under other thresholds, restores nothing and is reported in the log.
"""

from __future__ import annotations

import itertools
import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from tests.monitor.test_batch_detectors import TIGHT

from medsecrets.audit.record import Salter
from medsecrets.monitor import detectors as detectors_module
from medsecrets.monitor import sealed as sealed_module
from medsecrets.monitor.alert import Alert
from medsecrets.monitor.detectors import DetectorConfig, DetectorSet, config_fingerprint
from medsecrets.monitor.engine import MonitorEngine
from medsecrets.monitor.events import AccessEvent
from medsecrets.monitor.sources import event_from_record
from medsecrets.monitor.state import (
    KEY_LABEL,
    MAGIC,
    StateKeeper,
    load_state,
    save_state,
    state_key,
)
from medsecrets.testing.anomalies import generate

KEY = b"k" * 32
T0 = 1_741_003_200.0  # Monday 2025-03-03 12:00 UTC


@pytest.fixture(scope="module")
def records() -> list[dict[str, object]]:
    return generate(20261205, normal=3000, per_kind=10)[0]


@pytest.fixture(scope="module")
def events(records: list[dict[str, object]]) -> list[AccessEvent]:
    found = [event_from_record(record) for record in records]
    return [event for event in found if event is not None]


def _alerts(found: list[tuple[int, Alert]]) -> list[dict[str, object]]:
    return [alert.to_dict() for _, alert in found]


@pytest.mark.parametrize("config", [DetectorConfig(), TIGHT], ids=["default", "tight"])
def test_a_restart_with_the_saved_state_raises_the_alerts_of_an_uninterrupted_run(
    tmp_path: Path,
    events: list[AccessEvent],
    is_honeytoken: Callable[[str], bool],
    config: DetectorConfig,
) -> None:
    whole = _alerts(DetectorSet.default(config, is_honeytoken).observe_many(events))
    cuts = [0, len(events) // 5, len(events) // 2, len(events) - 7, len(events)]
    path = tmp_path / "detectors.state"
    got: list[dict[str, object]] = []
    forgetful: list[dict[str, object]] = []
    for start, end in itertools.pairwise(cuts):
        detectors = DetectorSet.default(config, is_honeytoken)
        assert load_state(path, detectors, KEY) is (start > 0)
        got += _alerts(detectors.observe_many(events[start:end]))
        save_state(path, detectors, KEY)
        fresh = DetectorSet.default(config, is_honeytoken)
        forgetful += _alerts(fresh.observe_many(events[start:end]))
    assert got == whole
    assert forgetful != whole  # the state matters: without it the alerts differ


def test_the_file_is_private_sealed_and_replaced_whole(
    tmp_path: Path, events: list[AccessEvent]
) -> None:
    detectors = DetectorSet.default()
    detectors.observe_many(events[:500])
    path = tmp_path / "monitor" / "detectors.state"
    path.parent.mkdir()
    path.write_text("an older, world-readable file")
    path.chmod(0o644)
    save_state(path, detectors, KEY)
    save_state(path, detectors, KEY)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert sorted(os.listdir(path.parent)) == ["detectors.state"]  # no temporary file left
    data = path.read_bytes()
    assert data.startswith(MAGIC)
    principal = next(e.principal for e in events[:500] if e.principal)
    assert principal.encode() not in data  # sealed: no principal, address or path in clear


def test_a_failed_save_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, events: list[AccessEvent], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = _saved(tmp_path, events)
    before = path.read_bytes()

    def full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError):
        save_state(path, DetectorSet.default(), KEY)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["detectors.state"]


def _saved(tmp_path: Path, events: list[AccessEvent]) -> tuple[Path, dict[str, object]]:
    detectors = DetectorSet.default()
    detectors.observe_many(events[:1500])
    path = tmp_path / "detectors.state"
    save_state(path, detectors, KEY)
    return path, detectors.state()


def _seal(body: bytes, key: bytes = KEY) -> bytes:
    nonce = os.urandom(12)
    return MAGIC + nonce + AESGCM(key).encrypt(nonce, body, MAGIC)


def _flip(data: bytes) -> bytes:
    at = len(MAGIC) + 40
    return data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda data: data[:-20], "cannot be authenticated"),
        (_flip, "cannot be authenticated"),
        (lambda data: data[len(MAGIC) :], "not a file of this kind"),
        (lambda data: b"", "not a file of this kind"),
        (lambda data: data.replace(b"state/1", b"state/9", 1), "not a file of this kind"),
        (lambda data: "\u00e9t\u00e9\n{}".encode(), "not a file of this kind"),
        (lambda data: _seal(b"[1, 2"), "malformed"),
        (lambda data: _seal(b'{"rate": {}}'), "malformed"),
        (lambda data: _seal(b"{}", b"x" * 32), "cannot be authenticated"),
    ],
    ids=[
        "cut", "edited", "no-magic", "empty", "format", "junk", "not-json", "incomplete",
        "another-key",
    ],
)  # fmt: skip
def test_a_damaged_file_restores_nothing_and_says_why(
    tmp_path: Path,
    events: list[AccessEvent],
    caplog: pytest.LogCaptureFixture,
    damage: Callable[[bytes], bytes],
    message: str,
) -> None:
    path, _ = _saved(tmp_path, events)
    path.write_bytes(damage(path.read_bytes()))
    detectors = DetectorSet.default()
    untouched = detectors.state()
    with caplog.at_level(logging.WARNING, logger="medsecrets.monitor"):
        assert load_state(path, detectors, KEY) is False
    assert detectors.state() == untouched
    assert message in caplog.text


def test_what_is_not_a_regular_file_is_refused_unread(
    tmp_path: Path,
    events: list[AccessEvent],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    saved, _ = _saved(tmp_path, events)
    link = tmp_path / "link.state"
    link.symlink_to(saved)
    fifo = tmp_path / "fifo.state"
    os.mkfifo(fifo)  # a reader of a FIFO would wait for a writer for ever
    detectors = DetectorSet.default()
    with caplog.at_level(logging.ERROR, logger="medsecrets.monitor"):
        assert load_state(link, detectors, KEY) is False
        assert "cannot open it" in caplog.text
        assert load_state(fifo, detectors, KEY) is False
        assert "not a regular file" in caplog.text
        monkeypatch.setattr(sealed_module, "MAX_BYTES", saved.stat().st_size - 1)
        assert load_state(saved, detectors, KEY) is False
        assert "over" in caplog.text
    assert load_state(tmp_path / "missing.state", detectors, KEY) is False
    assert detectors.state() == DetectorSet.default().state()


def test_changed_thresholds_restart_only_the_detectors_that_use_them(
    tmp_path: Path, events: list[AccessEvent], caplog: pytest.LogCaptureFixture
) -> None:
    path, saved = _saved(tmp_path, events)
    other = DetectorSet.default(DetectorConfig(rate_limit=60, bulk_window=90))
    with caplog.at_level(logging.WARNING, logger="medsecrets.monitor"):
        assert load_state(path, other, KEY) is True
    assert "rate, bulk start afresh" in caplog.text
    fresh = DetectorSet.default(DetectorConfig(rate_limit=60, bulk_window=90)).state()
    state = other.state()
    for name in ("rate", "bulk"):
        assert state[name] == fresh[name]
    for name in ("unusual_time", "new_source", "first_category", "failed_burst"):
        assert state[name] == saved[name], name  # baselines and other windows kept


def test_equal_thresholds_written_differently_are_equal() -> None:
    assert DetectorConfig(rate_window=300, warmup_days=7) == DetectorConfig()
    assert config_fingerprint(DetectorConfig(repeat_after=3600)) == config_fingerprint(
        DetectorConfig()
    )


def test_a_partly_malformed_state_changes_nothing(
    tmp_path: Path, events: list[AccessEvent]
) -> None:
    _, saved = _saved(tmp_path, events)
    broken = orjson.loads(orjson.dumps(saved))
    broken["honeytoken"]["parts"]["quiet"] = {"k": "not a time"}  # the last detector read
    detectors = DetectorSet.default()
    untouched = detectors.state()
    with pytest.raises(ValueError, match="malformed"):
        detectors.restore(broken)
    assert detectors.state() == untouched
    broken = orjson.loads(orjson.dumps(saved))
    broken["rate"]["config"] = "0" * 32
    del broken["emergency"]
    assert detectors.restore(broken) == ["rate", "emergency"]
    assert detectors.state()["new_source"] == saved["new_source"]


def test_tables_are_saved_up_to_their_newest_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """An attack from many addresses fills the per-address window; a save keeps
    ``STATE_KEYS`` keys (those in the window, then the newest), so its size and time stay
    bounded."""
    monkeypatch.setattr(detectors_module, "STATE_KEYS", 100)
    burst = [
        AccessEvent(
            float(n), "", f"10.{n // 65536}.{n // 256 % 256}.{n % 256}", "read",
            "secrets.read", "medessence/production/auth/x", "production", "auth", "denied",
            False, f"r{n}",
        )
        for n in range(1000)
    ]  # fmt: skip
    detectors = DetectorSet.default()
    detectors.observe_many(burst)
    counts = detectors.state()["failed_burst"]["parts"]["counts"]  # type: ignore[index]
    assert len(counts) == 100
    assert "source:10.0.3.231" in counts and "source:10.0.0.1" not in counts


def _read(ts: float, principal: str, path: str = "medessence/production/database/a") -> AccessEvent:
    return AccessEvent(
        ts, principal, "10.0.0.1", "read", "secrets.read", path, "production", "database",
        "success", False, f"r{ts}",
    )  # fmt: skip


def _denied(ts: float, source: str) -> AccessEvent:
    return AccessEvent(
        ts, "", source, "read", "secrets.read", "medessence/production/auth/x", "production",
        "auth", "denied", False, f"r{ts}",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("detector", "key", "attack", "noise"),
    [
        ("rate", "mallory", lambda t, i: _read(t, "mallory"), lambda t, i: _read(t, f"svc{i}")),
        (
            "bulk",
            "mallory",
            lambda t, i: _read(t, "mallory", f"medessence/production/database/s{i}"),
            lambda t, i: _read(t, f"svc{i}"),
        ),
        (
            "failed_burst",
            "source:203.0.113.9",
            lambda t, i: _denied(t, "203.0.113.9"),
            lambda t, i: _denied(t, f"198.51.{i >> 8}.{i & 255}"),
        ),
    ],
    ids=["rate", "bulk", "failed_burst"],
)
def test_a_flood_of_new_keys_before_a_restart_does_not_drop_the_busy_window(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    detector: str,
    key: str,
    attack: Callable[[float, int], AccessEvent],
    noise: Callable[[float, int], AccessEvent],
) -> None:
    """Just under a threshold, the attacker makes more keys of their own than a state
    keeps (``STATE_KEYS``), one event each, then the server restarts: the saved state kept
    the newest keys, the attacker's busy window was not saved and went on without an
    alert. A state keeps what a trim keeps: the busiest keys (ties: the newest)."""
    monkeypatch.setattr(detectors_module, "STATE_KEYS", 100)
    threshold = {"rate": 50, "bulk": 20, "failed_burst": 5}[detector]
    before = DetectorSet.default()
    assert before.observe_many([attack(T0 + i * 0.1, i) for i in range(threshold - 2)]) == []
    before.observe_many([noise(T0 + 10 + i * 0.01, i) for i in range(150)])
    save_state(tmp_path / "state", before, KEY)
    after = DetectorSet.default()
    assert load_state(tmp_path / "state", after, KEY)
    alerts = after.observe_many([attack(T0 + 20 + i, threshold + i) for i in range(3)])
    assert [a.key for _, a in alerts if a.detector == detector] == [key]


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_keeper_restores_once_with_a_key_and_saves_when_due(
    tmp_path: Path, events: list[AccessEvent]
) -> None:
    path, saved = _saved(tmp_path, events)
    detectors = DetectorSet.default()
    key: list[bytes | None] = [None]
    clock = _Clock()
    keeper = StateKeeper(detectors, path, lambda: key[0], every=60.0, clock=clock)
    keeper.before()  # sealed: nothing read
    assert not keeper.restored
    assert detectors.state() == DetectorSet.default().state()
    key[0] = KEY
    keeper.before()
    assert keeper.restored
    assert detectors.state() == saved
    detectors.observe_many(events[1500:1600])
    keeper.before()  # once only: the batch just observed is not undone
    assert detectors.state() != saved
    keeper.after()  # the first save: at once
    assert keeper.saves == 1
    detectors.observe_many(events[1600:1700])
    clock.now = 59.0
    keeper.after()
    assert keeper.saves == 1
    clock.now = 60.0
    keeper.after()
    assert keeper.saves == 2
    again = DetectorSet.default()
    assert load_state(path, again, KEY)
    assert again.state() == detectors.state()
    key[0] = None  # sealed again: nothing written
    keeper.close()
    assert keeper.saves == 2


def test_a_keeper_that_cannot_write_logs_and_goes_on(
    tmp_path: Path, events: list[AccessEvent], caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    keeper = StateKeeper(DetectorSet.default(), blocker / "detectors.state", lambda: KEY)
    keeper.before()
    with caplog.at_level(logging.ERROR, logger="medsecrets.monitor"):
        keeper.close()
    assert keeper.saves == 0
    assert "not saved" in caplog.text


def test_the_monitor_engine_keeps_its_state_across_a_restart(
    tmp_path: Path, records: list[dict[str, object]], is_honeytoken: Callable[[str], bool]
) -> None:
    """Two engines one after the other, the second restoring what the first saved on stop,
    raise the alerts of one engine over all the records (and forgetful ones do not)."""
    path = tmp_path / "detectors.state"
    half = len(records) // 2

    def run(part: list[dict[str, object]], keeper: bool) -> list[Alert]:
        raised: list[Alert] = []
        detectors = DetectorSet.default(None, is_honeytoken)
        engine = MonitorEngine(
            detectors,
            raised.append,
            keeper=StateKeeper(detectors, path, lambda: KEY) if keeper else None,
        )
        engine.start()
        for record in part:
            engine.submit(record)
        engine.drain()
        assert engine.stop(10)
        return raised

    whole = [a.to_dict() for a in run(records, keeper=False)]
    forgetful = run(records[:half], keeper=False) + run(records[half:], keeper=False)
    restarted = run(records[:half], keeper=True) + run(records[half:], keeper=True)
    assert [a.to_dict() for a in restarted] == whole
    assert [a.to_dict() for a in forgetful] != whole


def test_the_signing_key_is_derived_from_the_device_key_and_never_a_logged_hash() -> None:
    salter = Salter(b"d" * 32)
    key = state_key(lambda: salter)()
    assert key == salter.derive(KEY_LABEL)
    assert key is not None and len(key) == 32
    assert key != Salter(b"e" * 32).derive(KEY_LABEL)
    assert salter.derive("another use") != key
    assert key.hex() not in salter.hash(KEY_LABEL)  # HKDF, not a hash of the label
    assert state_key(lambda: None)() is None


def test_a_failing_keeper_never_stops_the_detectors(
    tmp_path: Path,
    records: list[dict[str, object]],
    is_honeytoken: Callable[[str], bool],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A key source that raises, and a state JSON cannot hold: logged, and the monitor
    thread goes on raising alerts."""

    def broken() -> bytes:
        raise RuntimeError("barrier trouble")

    raised: list[Alert] = []
    detectors = DetectorSet.default(None, is_honeytoken)
    keeper = StateKeeper(detectors, tmp_path / "detectors.state", broken, every=0.0)
    engine = MonitorEngine(detectors, raised.append, keeper=keeper)
    with caplog.at_level(logging.ERROR, logger="medsecrets.monitor"):
        engine.start()
        for record in records:
            engine.submit(record)
        engine.drain()
        assert engine.stop(10)
    assert raised and engine.events > 3000
    assert "not restored (RuntimeError)" in caplog.text

    huge = DetectorSet.default()
    huge.observe_many(
        [AccessEvent(1e23, "p", "10.0.0.1", "read", "secrets.read", "x", None, None, "success")]
    )
    keeper = StateKeeper(huge, tmp_path / "huge.state", lambda: KEY)
    keeper.before()
    keeper.save()  # an hour of 1e23 s is over 64 bits: orjson refuses it
    assert keeper.saves == 0
    assert "not saved (TypeError)" in caplog.text


def test_a_changed_repeat_after_restarts_only_the_quiet_periods(
    tmp_path: Path, events: list[AccessEvent]
) -> None:
    """Break-glass used at t=0 under ``repeat_after`` 3600 s, again at t=60 after a restart:
    quiet under the same setting; alerted under ``repeat_after`` 0 (as a fresh run would),
    the baselines kept either way."""

    def emergency(ts: float) -> AccessEvent:
        return AccessEvent(
            ts, "ops", "10.0.0.9", "read", "secrets.read", "medessence/production/auth/x",
            "production", "auth", "success", True, f"r{ts}",
        )  # fmt: skip

    path = tmp_path / "detectors.state"
    before = DetectorSet.default(DetectorConfig(repeat_after=3600))
    before.observe_many(events[:1500])
    assert [a.detector for _, a in before.observe_many([emergency(0.0)])] == ["emergency"]
    save_state(path, before, KEY)
    for repeat_after, raised in ((3600.0, []), (0.0, ["emergency"])):
        after = DetectorSet.default(DetectorConfig(repeat_after=repeat_after))
        assert after.restore(orjson.loads(orjson.dumps(before.state()))) == []
        learned = [d.state()["new_source"]["parts"]["learned"] for d in (after, before)]  # type: ignore[index]
        assert learned[0] == learned[1]
        assert [a.detector for _, a in after.observe_many([emergency(60.0)])] == raised


def test_a_sealed_file_s_new_directory_is_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        sealed_module.write_sealed(tmp_path / "monitor" / "state", b"MSx1", b"{}", bytes(32))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "monitor").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "monitor" / "state").stat().st_mode) == 0o600
