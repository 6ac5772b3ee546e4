"""``medsecrets catalog show | check``: the secrets catalog, offline or from the server.

``show`` reads the packaged default catalog (or ``--file``) without a server,
or asks the server with ``--remote``; ``check`` loads a catalog file and prints
``OK`` or the located problem (``file:line: problem``, exit code 1).
"""

from __future__ import annotations

from pathlib import Path
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
from medsecrets.cli.errors import CliError, ExitCode
from medsecrets.cli.output import (
    OutputFormat,
    emit_json,
    kv_table,
    print_table,
    rows_table,
    wire,
    write_line,
)
from medsecrets.wire import JSON

__all__ = ["app"]


app = typer.Typer(help="Show and check the secrets catalog.", no_args_is_help=True)


def _as_dict(data: JSON) -> dict[str, JSON]:
    if not isinstance(data, dict):
        raise CliError("unexpected catalog data from the server")
    return data


def _spec_text(spec: JSON) -> str:
    """``kind(k=v, ...)`` for a generator/validator spec in wire form."""
    if isinstance(spec, str):
        return spec
    if not isinstance(spec, dict):
        return "-"
    params = spec.get("params") or {}
    args = ", ".join(f"{k}={v}" for k, v in params.items()) if isinstance(params, dict) else ""
    return f"{spec.get('kind')}({args})" if args else str(spec.get("kind"))


def _show_category(data: dict[str, JSON]) -> None:
    rotation = data.get("rotation")
    kek = data.get("kek")
    head = {
        "name": data.get("name"),
        "description": data.get("description"),
        "rotation": rotation,
        "kek": kek,
    }
    fields = data.get("fields")
    rows: list[dict[str, JSON]] = []
    for f in fields if isinstance(fields, list) else []:
        if not isinstance(f, dict):
            continue
        validators = f.get("validators")
        rows.append(
            {
                "name": f.get("name"),
                "source": f.get("source"),
                "generator": _spec_text(f.get("generator")) if f.get("generator") else None,
                "template": f.get("template"),
                "validators": [_spec_text(v) for v in validators]
                if isinstance(validators, list)
                else None,
                "description": f.get("description"),
            }
        )
    print_table(
        kv_table(f"category {data.get('name')}", head),
        rows_table(
            "fields",
            rows,
            ("name", "source", "generator", "template", "validators", "description"),
        ),
    )


def _show_catalog(data: dict[str, JSON]) -> None:
    categories = data.get("categories")
    rows: list[dict[str, JSON]] = []
    for c in categories if isinstance(categories, list) else []:
        if not isinstance(c, dict):
            continue
        fields = c.get("fields")
        rotation = c.get("rotation")
        kek = c.get("kek")
        rows.append(
            {
                "name": c.get("name"),
                "fields": [f.get("name") for f in fields if isinstance(f, dict)]
                if isinstance(fields, list)
                else None,
                "rotation": (
                    f"{rotation.get('interval_days')}d {rotation.get('strategy')}"
                    if isinstance(rotation, dict)
                    else None
                ),
                "kek": kek.get("provider") if isinstance(kek, dict) else None,
                "description": c.get("description"),
            }
        )
    print_table(
        kv_table(
            None,
            {
                "prefix": data.get("prefix"),
                "development environments": data.get("development_environments"),
            },
        ),
        rows_table("categories", rows, ("name", "fields", "rotation", "kek", "description")),
    )


def _offline(file: Path | None) -> dict[str, JSON]:
    """The catalog (default or ``file``) in the API's wire shape."""
    from medsecrets.catalog.loader import default_catalog, load_catalog

    catalog = load_catalog(file) if file is not None else default_catalog()
    environments: list[JSON] = [str(e) for e in sorted(catalog.development_environments)]
    return {
        "prefix": catalog.prefix,
        "development_environments": environments,
        "categories": [wire(c) for c in catalog.categories.values()],
    }


def _category(catalog: dict[str, JSON], name: str) -> dict[str, JSON]:
    """Category ``name`` of a catalog in wire form; ``NotFoundError`` naming the known ones."""
    from medsecrets.errors import NotFoundError

    categories = catalog.get("categories")
    found = [c for c in categories if isinstance(c, dict)] if isinstance(categories, list) else []
    for c in found:
        if c.get("name") == name:
            return c
    known = ", ".join(str(c.get("name")) for c in found)
    raise NotFoundError(f"unknown secret category {name!r} (known: {known})")


@app.command("show")
def show(
    *,
    category: Annotated[
        str | None, typer.Argument(help="Show only this category.", show_default=False)
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option("--file", "-f", help="Catalog YAML file (default: the packaged catalog)."),
    ] = None,
    remote: Annotated[
        bool, typer.Option("--remote", help="Ask the server for the catalog it uses.")
    ] = False,
    output: OutputOption = OutputFormat.table,
    addr: AddrOption = None,
    token: TokenOption = None,
    cacert: CacertOption = None,
) -> None:
    """Show the catalog's categories, or one category's fields (offline unless --remote)."""
    if remote and file is not None:
        raise CliError("use either --remote or --file, not both", ExitCode.USAGE)
    data: dict[str, JSON]
    if remote:
        with open_client(connection(addr, token, cacert)) as client:
            data = read_catalog(client, category)
    else:
        data = _offline(file)
        if category:
            data = _category(data, category)
    if output is OutputFormat.json:
        emit_json(data)
    elif category:
        _show_category(data)
    else:
        _show_catalog(data)


@app.command("check")
def check(
    file: Annotated[Path, typer.Argument(help="Catalog YAML file to check.")],
    output: OutputOption = OutputFormat.table,
) -> None:
    """Load a catalog file offline: print OK, or the problem with its file and line."""
    from medsecrets.catalog.loader import load_catalog

    catalog = load_catalog(file)
    if output is OutputFormat.json:
        emit_json(
            {
                "file": str(file),
                "valid": True,
                "prefix": catalog.prefix,
                "categories": catalog.names(),
            }
        )
    else:
        write_line(
            f"OK: {file} ({len(catalog.categories)} categories: {', '.join(catalog.names())})"
        )
