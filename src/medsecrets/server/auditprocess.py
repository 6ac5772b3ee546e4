"""The server's audit process: ``audit.sidecar`` with the detectors plugged in.

``python -m medsecrets.server.auditprocess`` is what a server with
``audit.process = true`` starts for its first file device when the monitor is
on: the audit process then also runs the detectors over every batch it wrote
(the server process keeps no monitor thread) and sends their alerts back as
``("alerts", [alert.to_dict(), ...], counts)``, where ``counts`` are the alerts
raised so far by detector. ``monitor_settings`` builds the (builtin-values)
settings it needs; ``AlertReceiver`` takes the alerts in the server and hands
them to the dispatcher, which delivers them and writes them to the audit trail.
With ``state_path`` in its settings the audit process keeps the detectors' state
there across restarts (``monitor.state``), signed with a key derived from the
device's HMAC key.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast

from medsecrets.audit.channel import Message
from medsecrets.audit.packed import PackedEvent
from medsecrets.audit.record import Salter
from medsecrets.audit.sidecar import Watcher
from medsecrets.audit.sidecar import main as sidecar_main
from medsecrets.catalog.model import Catalog, is_honeytoken_path
from medsecrets.monitor.alert import Alert
from medsecrets.monitor.detectors import DetectorConfig, DetectorSet
from medsecrets.monitor.engine import packed_access_event
from medsecrets.monitor.events import AccessEvent
from medsecrets.monitor.state import StateKeeper, state_key

__all__ = ["AlertReceiver", "main", "monitor_settings", "observer"]

_log = logging.getLogger("medsecrets.monitor")


def monitor_settings(
    catalog: Catalog, *, detectors: DetectorConfig, state_path: str | None = None
) -> dict[str, object]:
    """What the audit process needs to run the detectors as the server would, with the
    thresholds ``detectors`` (with ``state_path``, it keeps their state there across
    restarts: ``monitor.state``)."""
    return {
        "detectors": detectors.values(),
        "prefix": catalog.prefix,
        "honeytokens": sorted(catalog.honeytokens),
        "honeytoken_categories": sorted(catalog.honeytoken_categories),
        "state_path": state_path,
    }


def observer(
    settings: Mapping[str, object],
    send: Callable[[Message], None],
    salter: Callable[[], Salter | None],
) -> Watcher:
    """The audit process's ``Observer``: the detectors over each written batch."""
    prefix = str(settings["prefix"])
    honeytokens = frozenset(cast("list[str]", settings["honeytokens"]))
    categories = frozenset(cast("list[str]", settings["honeytoken_categories"]))

    def is_honeytoken(path: str) -> bool:
        return is_honeytoken_path(
            path, prefix=prefix, honeytokens=honeytokens, categories=categories
        )

    detectors = DetectorSet.default(
        DetectorConfig(**cast("dict[str, Any]", settings["detectors"])), is_honeytoken
    )
    state_path = settings.get("state_path")
    keeper = (
        StateKeeper(detectors, Path(str(state_path)), state_key(salter)) if state_path else None
    )
    return _Watcher(detectors, send, keeper)


class _Watcher:
    """The detectors over each batch, their alerts sent to the server, their state kept."""

    def __init__(
        self,
        detectors: DetectorSet,
        send: Callable[[Message], None],
        keeper: StateKeeper | None,
    ) -> None:
        self._detectors = detectors
        self._send = send
        self._keeper = keeper

    def __call__(self, events: list[PackedEvent]) -> None:
        seen = [found for event in events if (found := packed_access_event(event)) is not None]
        if not seen:
            return
        keeper = self._keeper
        if keeper is not None:
            keeper.before()
        detectors = self._detectors
        alerts = _alerts(detectors, seen)
        if alerts:
            self._send(("alerts", [alert.to_dict() for alert in alerts], dict(detectors.counts)))
        if keeper is not None:
            keeper.after()

    def close(self) -> None:
        if self._keeper is not None:
            self._keeper.close()


def _alerts(detectors: DetectorSet, events: list[AccessEvent]) -> list[Alert]:
    """The batch's alerts; a failing detector loses only its own (it is logged)."""

    def failed(detector: str, exc: Exception) -> None:
        _log.error("detector %s failed (%s)", detector, type(exc).__name__)

    return [alert for _, alert in detectors.observe_many(events, on_error=failed)]


class AlertReceiver:
    """The server's end: alerts from the audit process (or the shared monitor process of a
    multi-worker server) to ``raise_`` (the dispatcher).

    ``("alerts", docs, counts)``: alerts this process delivers and audits (``raise_``);
    ``("noted", docs, counts)``: alerts another worker raised, for ``note`` (shown by
    ``alerts list``, deduplicated against, neither delivered nor audited here; dropped
    without ``note``). ``counts`` holds the alerts raised so far by detector, as of the
    last message; ``malformed`` the alerts dropped because they could not be read
    (logged; the ``alerts`` ones are in the ``medsecrets_alerts_unaudited_total`` metric).
    """

    def __init__(
        self, raise_: Callable[[Alert], None], note: Callable[[Alert], None] | None = None
    ) -> None:
        self._raise = raise_
        self._note = note
        self.counts: dict[str, int] = {}
        self.malformed = 0

    def __repr__(self) -> str:
        return f"AlertReceiver(counts={self.counts}, malformed={self.malformed})"

    def __call__(self, message: Message) -> None:
        if message[0] not in ("alerts", "noted") or len(message) != 3:
            _log.error("unexpected message from the audit process: %r", message[0])
            return
        kind, found, counts = message
        self.counts = {str(k): int(v) for k, v in cast("dict[str, int]", counts).items()}
        take = self._raise if kind == "alerts" else self._note
        if take is None:
            return
        for doc in cast("list[dict[str, object]]", found):
            try:
                alert = Alert.from_dict(doc)
            except (KeyError, TypeError, ValueError):
                if kind == "alerts":
                    self.malformed += 1
                _log.error("a malformed alert from the audit process was dropped")
                continue
            take(alert)


def main() -> None:
    """``python -m medsecrets.server.auditprocess``."""
    sidecar_main(observer)


if __name__ == "__main__":
    main()
