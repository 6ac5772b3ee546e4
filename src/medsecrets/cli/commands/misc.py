"""``medsecrets generate | validate | provision``.

``generate`` is offline (``medsecrets.catalog.generators``, the OS CSPRNG);
``validate`` asks the server to check a stored secret against the catalog;
``provision`` creates an environment's catalog secrets, one request per
category so a progress bar can follow, then prints a table.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from medsecrets.cli.commands.connection import (
    AddrOption,
    CacertOption,
    OutputOption,
    TokenOption,
    connection,
    open_client,
    read_catalog,
)
from medsecrets.cli.errors import CliError, ExitCode, exit_code_for
from medsecrets.cli.inputs import read_text
from medsecrets.cli.output import (
    OutputFormat,
    emit_json,
    kv_table,
    print_table,
    rows_table,
    wire,
    write_line,
)
from medsecrets.errors import MedsecretsError
from medsecrets.wire import JSON

__all__ = ["register"]


def _coerce_param(kind: str, name: str, text: str) -> int | float | str | bool:
    """``text`` as the declared type of generator parameter ``name`` (errors name it)."""
    from medsecrets.catalog.generators import GENERATORS

    generator = GENERATORS.get(kind)
    spec = (
        None if generator is None else next((p for p in generator.params if p.name == name), None)
    )
    if spec is None or spec.type is str:
        return text
    if spec.type is bool:
        lowered = text.lower()
        if lowered in ("true", "yes", "1", "on"):
            return True
        if lowered in ("false", "no", "0", "off"):
            return False
        raise CliError(f"parameter {name!r} must be true or false", ExitCode.USAGE)
    try:
        return spec.type(text)
    except ValueError:
        raise CliError(
            f"parameter {name!r} must be {'an integer' if spec.type is int else 'a number'}",
            ExitCode.USAGE,
        ) from None


def generate(
    *,
    kind: Annotated[
        str,
        typer.Argument(
            help="password, token, hex, jwt-secret, aes-256-key, aes-iv or uuid.",
            show_default=False,
        ),
    ],
    length: Annotated[
        int | None, typer.Option("--length", "-l", help="password: characters.")
    ] = None,
    nbytes: Annotated[
        int | None, typer.Option("--bytes", help="hex, token, jwt-secret: random bytes.")
    ] = None,
    symbols: Annotated[
        bool | None,
        typer.Option(
            "--symbols/--no-symbols", help="password: include symbols.", show_default=False
        ),
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="Any generator parameter as NAME=VALUE (repeatable)."),
    ] = None,
    count: Annotated[int, typer.Option("--count", "-n", min=1, max=1000, help="How many.")] = 1,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Generate random values offline (no server): the bare values, one per line."""
    from medsecrets.catalog.generators import generate as make

    params: dict[str, int | float | str | bool] = {}
    if length is not None:
        params["length"] = length
    if nbytes is not None:
        params["bytes"] = nbytes
    if symbols is not None:
        params["symbols"] = symbols
    for item in param or []:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise CliError("--param expects NAME=VALUE", ExitCode.USAGE)
        params[name] = _coerce_param(kind, name, text)
    values = [make(kind, **params).reveal() for _ in range(count)]
    if output is OutputFormat.json:
        if count == 1:
            emit_json({"kind": kind, "value": values[0]})
        else:
            emit_json({"kind": kind, "values": values})
        return
    for value in values:
        write_line(value)


def validate(
    *,
    path: Annotated[str, typer.Argument(help="Secret path.", show_default=False)],
    output: OutputOption = OutputFormat.table,
    addr: AddrOption = None,
    token: TokenOption = None,
    cacert: CacertOption = None,
) -> None:
    """Check a stored secret's current value against the catalog (server-side, no values).

    Exits with 0 when valid, 1 when a field breaks a rule.
    """
    with open_client(connection(addr, token, cacert)) as client:
        data = wire(client.validate(path))
    if not isinstance(data, dict):
        raise CliError("unexpected validation report from the server")
    if output is OutputFormat.json:
        emit_json(data)
    else:
        problems = data.get("problems")
        print_table(kv_table(None, {"path": data.get("path"), "valid": data.get("valid")}))
        if isinstance(problems, list) and problems:
            rows = [p for p in problems if isinstance(p, dict)]
            print_table(rows_table("problems", rows, ("field", "rule")))
    if data.get("valid") is not True:
        raise typer.Exit(ExitCode.OTHER)


def _read_provided(source: str | None) -> dict[str, dict[str, str]]:
    """``--provided``: a JSON object ``{category: {field: value}}`` from a file or ``-`` (stdin)."""
    if source is None:
        return {}
    try:
        data = json.loads(read_text(source, what="--provided"))
    except (ValueError, RecursionError):
        raise CliError("--provided: not valid JSON", ExitCode.USAGE) from None
    if not isinstance(data, dict) or not all(
        isinstance(fields, dict) and all(isinstance(v, str) for v in fields.values())
        for fields in data.values()
    ):
        raise CliError("--provided: expected an object {category: {field: string}}", ExitCode.USAGE)
    return {str(c): {str(k): v for k, v in f.items()} for c, f in data.items()}


def _categories(catalog: JSON) -> dict[str, dict[str, JSON]]:
    """Category name → category (wire form) of a catalog answer."""
    categories = catalog.get("categories") if isinstance(catalog, dict) else None
    found: dict[str, dict[str, JSON]] = {}
    for c in categories if isinstance(categories, list) else []:
        if isinstance(c, dict) and isinstance(c.get("name"), str):
            found[str(c["name"])] = c
    return found


def _preflight(
    catalog: JSON, env: str, names: list[str], values: dict[str, dict[str, str]]
) -> None:
    """Refuse before writing anything when a category is unknown, or when a production-like
    environment lacks a provided field (the server would stop at that category, after the
    earlier ones were written)."""
    categories = _categories(catalog)
    development = catalog.get("development_environments") if isinstance(catalog, dict) else None
    is_dev = isinstance(development, list) and env in development
    for name in names:
        if name not in categories:
            from medsecrets.errors import NotFoundError

            known = ", ".join(categories)
            raise NotFoundError(f"unknown secret category {name!r} (known: {known})")
        if is_dev:
            continue
        fields = categories[name].get("fields")
        needed = [
            str(f.get("name"))
            for f in (fields if isinstance(fields, list) else [])
            if isinstance(f, dict) and f.get("source") == "provided"
        ]
        missing = [f for f in needed if f not in values.get(name, {})]
        if missing:
            raise CliError(
                f"environment {env!r} is not a development environment: category {name!r} "
                f"needs the provided field(s) {', '.join(missing)} (use --provided FILE)",
                ExitCode.USAGE,
            )


def provision(
    *,
    env: Annotated[str, typer.Option("--env", "-e", help="Environment to provision.")],
    category: Annotated[
        list[str] | None,
        typer.Option("--category", "-c", help="Only these categories (repeatable)."),
    ] = None,
    provided: Annotated[
        str | None,
        typer.Option(
            "--provided",
            help="JSON file (or - for stdin) with {category: {field: value}} for provided fields.",
            show_default=False,
        ),
    ] = None,
    output: OutputOption = OutputFormat.table,
    addr: AddrOption = None,
    token: TokenOption = None,
    cacert: CacertOption = None,
) -> None:
    """Create every catalog secret of an environment (existing ones are left untouched)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    values = _read_provided(provided)
    items: list[JSON] = []
    failed: tuple[str, MedsecretsError] | None = None
    development: JSON = None
    with open_client(connection(addr, token, cacert)) as client:
        catalog: JSON = read_catalog(client)
        names = list(category) if category else list(_categories(catalog))
        _preflight(catalog, env, names, values)
        with Progress(
            TextColumn("provisioning {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            transient=True,
            console=Console(stderr=True),
            disable=not sys.stderr.isatty(),
        ) as progress:
            task = progress.add_task(env, total=len(names))
            for name in names:
                progress.update(task, description=f"{env}/{name}")
                try:
                    answer = client.provision(
                        env,
                        provided={name: values[name]} if name in values else None,
                        categories=[name],
                    )
                except MedsecretsError as refused:
                    failed = (name, refused)
                    break
                report = wire(answer)
                if isinstance(report, dict):
                    development = report.get("development")
                    got = report.get("items")
                    items.extend(got if isinstance(got, list) else [])
                progress.advance(task)
    result: dict[str, JSON] = {"environment": env, "development": development, "items": items}
    if failed is not None:
        result["failed_category"] = failed[0]
    if output is OutputFormat.json:
        emit_json(result)
    else:
        rows = [i for i in items if isinstance(i, dict)]
        print_table(
            rows_table(
                f"environment {env}",
                rows,
                ("path", "status", "version", "dummy_fields"),
                headers=("path", "status", "version", "dummy fields"),
            )
        )
    if failed is not None:  # the categories before it stay provisioned: say so, then fail
        name, error = failed
        done = names.index(name)
        raise CliError(
            f"category {name!r}: {error} ({done} categor{'y' if done == 1 else 'ies'} before it "
            "provisioned, listed above; run again once fixed: existing secrets are left alone)",
            exit_code_for(error),
        )
    if output is OutputFormat.json:
        return
    created = sum(1 for r in rows if r.get("status") == "created")
    write_line(f"{created} created, {len(rows) - created} existed already")


def register(app: typer.Typer) -> None:
    """Add ``generate``, ``validate`` and ``provision`` to the root app."""
    app.command("generate")(generate)
    app.command("validate")(validate)
    app.command("provision")(provision)
