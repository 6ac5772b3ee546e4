"""The server's audit process: ``audit.sidecar`` with the detectors plugged in.

``python -m medsecrets.server.auditprocess`` is what a server with
``audit.process = true`` starts for its first file device when the monitor is
on: the audit process then also runs the detectors over every batch it wrote
(the server process keeps no monitor thread) and sends their alerts back as
``("alerts", [alert.to_dict(), ...], counts)``, where ``counts`` are the alerts
raised so far by detector. ``monitor_settings`` builds the (builtin-values)
settings it needs; ``AlertReceiver`` takes the alerts in the server and hands
them to the dispatcher, which delivers them and writes them to the audit trail.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import cast

from medsecrets.audit.channel import Message
from medsecrets.audit.record import AuditEvent
from medsecrets.audit.sidecar import main as sidecar_main
from medsecrets.catalog.model import Catalog, is_honeytoken_path
from medsecrets.monitor.alert import Alert
from medsecrets.monitor.detectors import DetectorConfig, DetectorSet
from medsecrets.monitor.engine import access_event
from medsecrets.monitor.events import AccessEvent

__all__ = ["AlertReceiver", "main", "monitor_settings", "observer"]

_log = logging.getLogger("medsecrets.monitor")


def monitor_settings(catalog: Catalog, *, rate_limit: int, rate_window: float) -> dict[str, object]:
    """What the audit process needs to run the detectors as the server would."""
    return {
        "rate_limit": rate_limit,
        "rate_window": rate_window,
        "prefix": catalog.prefix,
        "honeytokens": sorted(catalog.honeytokens),
        "honeytoken_categories": sorted(catalog.honeytoken_categories),
    }


def observer(
    settings: Mapping[str, object], send: Callable[[Message], None]
) -> Callable[[list[AuditEvent]], None]:
    """The audit process's ``Observer``: the detectors over each written batch."""
    prefix = str(settings["prefix"])
    honeytokens = frozenset(cast("list[str]", settings["honeytokens"]))
    categories = frozenset(cast("list[str]", settings["honeytoken_categories"]))

    def is_honeytoken(path: str) -> bool:
        return is_honeytoken_path(
            path, prefix=prefix, honeytokens=honeytokens, categories=categories
        )

    detectors = DetectorSet.default(
        DetectorConfig(
            rate_limit=cast(int, settings["rate_limit"]),
            rate_window=cast(float, settings["rate_window"]),
        ),
        is_honeytoken,
    )

    def observe(events: list[AuditEvent]) -> None:
        seen = [found for event in events if (found := access_event(event)) is not None]
        if not seen:
            return
        alerts = _alerts(detectors, seen)
        if alerts:
            send(("alerts", [alert.to_dict() for alert in alerts], dict(detectors.counts)))

    return observe


def _alerts(detectors: DetectorSet, events: list[AccessEvent]) -> list[Alert]:
    """The batch's alerts; a failing detector loses only its own (it is logged)."""

    def failed(detector: str, exc: Exception) -> None:
        _log.error("detector %s failed (%s)", detector, type(exc).__name__)

    return [alert for _, alert in detectors.observe_many(events, on_error=failed)]


class AlertReceiver:
    """The server's end: alerts from the audit process to ``raise_`` (the dispatcher).

    ``counts`` holds the alerts raised so far by detector, as of the last message.
    """

    def __init__(self, raise_: Callable[[Alert], None]) -> None:
        self._raise = raise_
        self.counts: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"AlertReceiver(counts={self.counts})"

    def __call__(self, message: Message) -> None:
        if message[0] != "alerts" or len(message) != 3:
            _log.error("unexpected message from the audit process: %r", message[0])
            return
        _, found, counts = message
        self.counts = {str(k): int(v) for k, v in cast("dict[str, int]", counts).items()}
        for doc in cast("list[dict[str, object]]", found):
            try:
                alert = Alert.from_dict(doc)
            except (KeyError, TypeError, ValueError):
                _log.error("a malformed alert from the audit process was dropped")
                continue
            self._raise(alert)


def main() -> None:
    """``python -m medsecrets.server.auditprocess``."""
    sidecar_main(observer)


if __name__ == "__main__":
    main()
