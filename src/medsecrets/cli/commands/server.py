"""``medsecrets server``: parse the flags and hand over to ``medsecrets.server.runner.main``."""

from __future__ import annotations

from typing import Annotated

import typer

__all__ = ["register", "server"]


def server(
    *,
    dev: Annotated[
        bool,
        typer.Option(
            "--dev", help="Development mode: SQLite in --data-dir, auto-initialised, no TLS."
        ),
    ] = False,
    data_dir: Annotated[
        str | None,
        typer.Option(
            "--data-dir", help="Data directory (dev default: ./.medsecrets).", show_default=False
        ),
    ] = None,
    listen: Annotated[
        str | None,
        typer.Option(
            "--listen", help="HOST:PORT to listen on (default 127.0.0.1:8200).", show_default=False
        ),
    ] = None,
    config: Annotated[
        str | None, typer.Option("--config", help="TOML configuration file.", show_default=False)
    ] = None,
    tls_cert: Annotated[
        str | None, typer.Option("--tls-cert", help="TLS certificate (PEM).", show_default=False)
    ] = None,
    tls_key: Annotated[
        str | None, typer.Option("--tls-key", help="TLS private key (PEM).", show_default=False)
    ] = None,
) -> None:
    """Run the server (see docs/configuration.md; MEDSECRETS_* variables apply)."""
    from medsecrets.server.runner import main

    argv: list[str] = ["--dev"] if dev else []
    for flag, value in (
        ("--data-dir", data_dir),
        ("--listen", listen),
        ("--config", config),
        ("--tls-cert", tls_cert),
        ("--tls-key", tls_key),
    ):
        if value is not None:
            argv += [flag, value]
    code = main(argv)
    if code:
        raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    """Add ``server`` to the root app."""
    app.command("server")(server)
