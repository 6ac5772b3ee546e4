"""``medsecrets alerts``: the anomaly alerts the server's monitor raised.

``alerts list`` shows the server's recent alerts (newest first) and how each
was delivered per channel (``sent``, ``failed``, ``rate_limited``,
``dropped``, ``pending``). Needs ``sudo`` on ``sys/alerts``. Alerts carry
names, paths, addresses and counts: never a secret value or a token.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Final

import typer

from medsecrets.cli.commands.connection import (
    AddrOption,
    CacertOption,
    OutputOption,
    TokenOption,
    connection,
    open_client,
)
from medsecrets.cli.output import OutputFormat, emit, print_table, rows_table, wire
from medsecrets.wire import JSON

__all__ = ["app", "delivery_text"]

app = typer.Typer(help="Anomaly alerts raised by the server's monitor.", no_args_is_help=True)

_COLUMNS: Final = ("time", "severity", "detector", "summary", "count", "delivery")


def delivery_text(delivery: JSON) -> str:
    """``channel: status`` per channel (``slack: failed (3 attempts)``), comma-separated."""
    if not isinstance(delivery, Mapping):
        return ""
    parts = []
    for channel, state in delivery.items():
        if isinstance(state, Mapping):
            status = str(state.get("status"))
            attempts = state.get("attempts")
            if status != "sent" and isinstance(attempts, int) and attempts > 1:
                status += f" ({attempts} attempts)"
            parts.append(f"{channel}: {status}")
    return ", ".join(parts)


def _elsewhere(alert: Mapping[str, object]) -> str:
    """``by another worker`` for an alert another worker of the server delivered."""
    by = alert.get("delivered_by")
    return f"by {by}" if isinstance(by, str) else ""


@app.command("list")
def list_(
    *,
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, max=1000, help="Most alerts shown.")
    ] = 50,
    output: OutputOption = OutputFormat.table,
    addr: AddrOption = None,
    token: TokenOption = None,
    cacert: CacertOption = None,
) -> None:
    """Recent alerts, newest first, with their delivery per channel."""
    with open_client(connection(addr, token, cacert)) as client:
        found = wire(list(client.alerts(limit=limit)))
    alerts = [a for a in found if isinstance(a, dict)] if isinstance(found, list) else []

    def show() -> None:
        rows = [
            {**a, "delivery": delivery_text(a.get("delivery")) or _elsewhere(a)} for a in alerts
        ]
        print_table(rows_table(None, rows, _COLUMNS), f"{len(rows)} alert(s)")

    emit({"alerts": alerts}, output, show)
