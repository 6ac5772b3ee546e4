"""The ``medsecrets`` command line: a Typer app over the SDK, and ``main`` (the console script).

``main`` runs the app without Click's standalone handling so that every
failure ends as one ``error: <message>`` line on stderr with a documented exit
code (``medsecrets.cli.errors``), never a stack trace. Shell completion comes
from Typer (``--install-completion`` / ``--show-completion``).
"""

from __future__ import annotations

import os
import re
import sys
import traceback
from collections.abc import Sequence

import typer

from medsecrets import __version__
from medsecrets.cli.commands import (
    alerts,
    audit,
    catalog,
    misc,
    operator,
    secrets,
    server,
    token,
)
from medsecrets.cli.commands.connection import (
    ClientCertOption,
    ClientKeyOption,
    accept_client_certificate_options,
    remember_client_certificate,
)
from medsecrets.cli.errors import (
    EXIT_CODE_TABLE,
    CliError,
    ExitCode,
    click_module,
    exit_code_for,
)
from medsecrets.cli.output import error, write_line
from medsecrets.errors import MedsecretsError

__all__ = ["app", "main"]

INTERRUPTED = 130
"""The exit code after Ctrl-C (128 + SIGINT, as shells report it)."""

app = typer.Typer(
    name="medsecrets",
    help=(
        "medsecrets: encrypted, versioned, audited secrets.\n\n"
        "Server commands read MEDSECRETS_ADDR, MEDSECRETS_TOKEN and MEDSECRETS_CACERT "
        "(or --addr/--token/--cacert), and for a server that asks for a client certificate "
        "MEDSECRETS_CLIENT_CERT and MEDSECRETS_CLIENT_KEY (or --client-cert/--client-key, "
        "before the command or, where --cacert is, after it)."
    ),
    epilog=EXIT_CODE_TABLE,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        write_line(f"medsecrets {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    client_cert: ClientCertOption = None,
    client_key: ClientKeyOption = None,
) -> None:
    """medsecrets: encrypted, versioned, audited secrets."""
    remember_client_certificate(client_cert, client_key)


app.add_typer(operator.app, name="operator")
app.add_typer(secrets.app, name="secrets")
app.add_typer(catalog.app, name="catalog")
app.add_typer(token.app, name="token")
app.add_typer(audit.app, name="audit")
app.add_typer(alerts.app, name="alerts")
misc.register(app)
server.register(app)

_EXTRA_ARGS = re.compile(r"^(Got unexpected extra argument)", re.IGNORECASE)


def _usage_message(error: Exception) -> str:
    """Click's message, minus stray arguments it would echo (they may be secret values)."""
    message = str(getattr(error, "format_message", error.__str__)())
    if _EXTRA_ARGS.match(message):
        message = "got unexpected extra argument(s)"
    context = getattr(error, "ctx", None)
    path = getattr(context, "command_path", None)
    hint = f" (see '{path} --help')" if path else ""
    if message.startswith(("No such option: --client-cert", "No such option: --client-key")):
        # a command without --cacert (it reaches no server) or a group: say where it goes
        hint = (
            " (it goes before the command, e.g. medsecrets --client-cert c.pem secrets list,"
            " or after a command that takes --cacert)"
        )
    return f"{message}{hint}"


def _fail(message: str, code: int) -> int:
    error(message)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (the console script exits with it)."""
    click = click_module()
    aborts: tuple[type[BaseException], ...] = (typer.Abort,)
    if hasattr(click.exceptions, "Abort"):  # Click proper; vendored Click uses typer.Abort
        aborts += (click.exceptions.Abort,)
    try:
        command = typer.main.get_command(app)
        accept_client_certificate_options(command)  # also after the command, as --cacert
        result = command.main(
            args=list(argv) if argv is not None else None,
            prog_name="medsecrets",
            standalone_mode=False,
        )
    except click.exceptions.NoArgsIsHelpError as exc:
        sys.stdout.write(exc.ctx.get_help() + "\n")
        return ExitCode.USAGE
    except click.exceptions.UsageError as exc:
        return _fail(_usage_message(exc), ExitCode.USAGE)
    except aborts:
        return _fail("aborted", ExitCode.OTHER)
    except click.exceptions.ClickException as exc:
        return _fail(exc.format_message(), exc.exit_code)
    except (CliError, MedsecretsError) as exc:
        return _fail(exc.message, exit_code_for(exc))
    except KeyboardInterrupt:  # while the commands are built; later Typer returns 130 itself
        return INTERRUPTED
    except BrokenPipeError:
        return ExitCode.OTHER
    except Exception as exc:  # the last line of defence: one line, no values
        if os.environ.get("MEDSECRETS_DEBUG"):
            traceback.print_exc()
        return _fail(
            f"unexpected {type(exc).__name__} (set MEDSECRETS_DEBUG=1 for a traceback)",
            ExitCode.OTHER,
        )
    if isinstance(result, int):
        return result
    return ExitCode.OK
