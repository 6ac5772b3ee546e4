"""``medsecrets secrets``: write, read, describe, list, delete and restore secrets.

Values are printed only by ``get`` (asked for). ``put`` takes ``field=value``
pairs (warned about: the command line is visible to other users),
``field=@file`` (the file's exact content) and ``-`` (a JSON object of strings
on stdin); later sources override earlier ones. Parse errors name the argument
position or field, never the value.
"""

from __future__ import annotations

import json
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
from medsecrets.cli.errors import CliError, ExitCode
from medsecrets.cli.inputs import read_text, stdin_is_terminal
from medsecrets.cli.output import (
    GetFormat,
    OutputFormat,
    check_env_prefix,
    emit,
    emit_json,
    env_lines,
    kv_table,
    print_table,
    rows_table,
    warn,
    wire,
    write_line,
)
from medsecrets.errors import NotFoundError
from medsecrets.schema.catalog import CategoryInfo
from medsecrets.wire import JSON

__all__ = ["app", "parse_fields"]

app = typer.Typer(help="Write, read, list and delete secrets.", no_args_is_help=True)

PathArg = Annotated[
    str,
    typer.Argument(
        help="Secret path: <prefix>/<environment>/<category>, optionally followed by /<name>.",
        show_default=False,
    ),
]

MAX_FIELD_BYTES: Final = 64 * 1024
"""Largest ``FIELD=@FILE`` read: the server refuses a value over 64 KiB serialized anyway."""
_META_KEYS = (
    "path",
    "id",
    "environment",
    "category",
    "description",
    "owner",
    "tags",
    "rotation",
    "current_version",
    "created_at",
    "updated_at",
    "last_rotated_at",
    "next_rotation_due",
    "last_accessed_at",
    "deleted_at",
    "purge_at",
)
_VERSION_COLUMNS = ("number", "id", "created_at", "stages", "destroyed", "kek_version")
_VERSION_HEADERS = ("version", "id", "created", "stages", "destroyed", "kek")


def _dict(value: object) -> dict[str, JSON]:
    data = wire(value)
    if not isinstance(data, dict):
        raise CliError("unexpected answer from the server")
    return data


def _read_stdin_object() -> dict[str, str]:
    try:
        data = json.loads(read_text("-", what="stdin"))
    except (ValueError, RecursionError):
        raise CliError("stdin: expected a JSON object of strings", ExitCode.USAGE) from None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise CliError("stdin: expected a JSON object of strings", ExitCode.USAGE)
    return data


def parse_fields(args: list[str]) -> tuple[dict[str, str], bool]:
    """Fields from ``put``'s arguments, and whether a value came on the command line.

    Errors name the argument's position or the field, never a value.
    """
    fields: dict[str, str] = {}
    inline = False
    for position, arg in enumerate(args, start=1):
        if arg == "-":
            fields.update(_read_stdin_object())
            continue
        name, sep, value = arg.partition("=")
        if not sep or not name:
            raise CliError(
                f"argument {position}: expected FIELD=VALUE, FIELD=@FILE or - (JSON on stdin)",
                ExitCode.USAGE,
            )
        if value.startswith("@"):
            fields[name] = read_text(value[1:], what=f"field {name!r}", limit=MAX_FIELD_BYTES)
        else:
            fields[name] = value
            inline = True
    return fields, inline


def _tags(items: list[str] | None) -> dict[str, str] | None:
    if not items:
        return None
    tags: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError("--tag expects KEY=VALUE", ExitCode.USAGE)
        tags[key] = value
    return tags


@app.command("put")
def put(
    *,
    path: PathArg,
    values: Annotated[
        list[str] | None,
        typer.Argument(
            help="FIELD=VALUE (visible to other users!), FIELD=@FILE, or - for a JSON object "
            "on stdin.",
            show_default=False,
        ),
    ] = None,
    cas: Annotated[
        int | None,
        typer.Option("--cas", min=0, help="Write only if the latest version is this (0: new)."),
    ] = None,
    stage: Annotated[
        str, typer.Option("--stage", help="Stage of the new version: current or pending.")
    ] = "current",
    description: Annotated[
        str | None, typer.Option("--description", help="Description.", show_default=False)
    ] = None,
    owner: Annotated[str | None, typer.Option("--owner", help="Owner.", show_default=False)] = None,
    tag: Annotated[
        list[str] | None, typer.Option("--tag", help="KEY=VALUE tag (repeatable).")
    ] = None,
    merge: Annotated[
        bool,
        typer.Option(
            "--merge",
            help="Keep the current version's other fields: the fields given replace only "
            "those of the same name, and derived fields not given are rendered again from the "
            "result; written only if the current version is still the newest (needs read and "
            "write).",
        ),
    ] = False,
    output: OutputOption = OutputFormat.table,
    addr: AddrOption = None,
    token: TokenOption = None,
    cacert: CacertOption = None,
) -> None:
    """Write a new version of a secret (its fields are the ones given, unless --merge)."""
    if stage not in ("current", "pending"):
        raise CliError("--stage must be current or pending", ExitCode.USAGE)
    if merge and cas is not None:
        raise CliError("give either --merge or --cas (--merge checks the version itself)",
                       ExitCode.USAGE)  # fmt: skip
    fields, inline = parse_fields(values or [])
    if not fields:
        raise CliError("no fields given: FIELD=VALUE, FIELD=@FILE or -", ExitCode.USAGE)
    if inline:
        warn(
            "secret values given on the command line are visible to other users (ps, shell "
            "history); prefer FIELD=@FILE or - (JSON on stdin)"
        )
    with open_client(connection(addr, token, cacert)) as client:
        if merge:  # the version read is the one the write must follow (check-and-set)
            current = client.get(path)
            merged = {**current.fields.to_dict(), **fields}
            try:  # any valid token may read the catalog
                category = client.category(path.strip("/").split("/")[2])
            except NotFoundError:  # dropped from the catalog: the write is refused anyway
                fields = merged
            else:
                fields = _rederive(category, merged, fields)
            cas = current.number
        info = _dict(
            client.put(
                path,
                fields,
                cas=cas,
                stage="pending" if stage == "pending" else "current",
                description=description,
                owner=owner,
                tags=_tags(tag),
            )
        )
    emit(
        info,
        output,
        lambda: write_line(f"Wrote {path} version {info.get('number')} ({_stages(info)})."),
    )


def _rederive(
    category: CategoryInfo, merged: dict[str, str], given: Mapping[str, str]
) -> dict[str, str]:
    """``merged`` with every derived field that was not ``given`` rendered again from its
    template, as a complete write derives it (dependencies first); a derived field whose
    inputs are not all present is left as it is (the server checks it)."""
    from medsecrets.catalog.templates import parse_template  # only --merge needs it

    templates = {
        f.name: parse_template(f.template)
        for f in category.fields
        if f.source == "derived" and f.template is not None and f.name not in given
    }
    result = dict(merged)
    todo = dict(templates)
    while todo:
        ready = [n for n, t in todo.items() if not (t.fields & todo.keys())]
        if not ready:  # a cycle: the catalog refuses those; leave the values alone
            break
        for name in ready:
            template = todo.pop(name)
            if name in result and all(dep in result for dep in template.fields):
                result[name] = template.render(result)
    return result


def _stages(info: dict[str, JSON]) -> str:
    """``current, previous`` or ``no stage`` for a version's stages."""
    stages = info.get("stages")
    return ", ".join(str(s) for s in stages) if isinstance(stages, list) and stages else "no stage"


@app.command("get")
def get(
    *,
    path: PathArg,
    field: Annotated[
        str | None,
        typer.Option("--field", "-f", help="Print only this field's bare value (for scripts)."),
    ] = None,
    stage: Annotated[
        str | None,
        typer.Option("--stage", help="current (default), pending or previous.", show_default=False),
    ] = None,
    version: Annotated[
        int | None, typer.Option("--version", min=1, help="Version number.", show_default=False)
    ] = None,
    version_id: Annotated[
        str | None, typer.Option("--version-id", help="Version id.", show_default=False)
    ] = None,
    output: Annotated[
        GetFormat,
        typer.Option(
            "--output",
            "-o",
            envvar="MEDSECRETS_OUTPUT",
            help="table, json, or env (KEY=value lines).",
        ),
    ] = GetFormat.table,
    env_prefix: Annotated[
        str, typer.Option("--env-prefix", help="--output env: prefix for the variable names.")
    ] = "",
    addr: AddrOption = None,
    token: TokenOption = None,
    cacert: CacertOption = None,
) -> None:
    """Read a secret's values (the one command that prints them)."""
    if sum(x is not None for x in (stage, version, version_id)) > 1:
        raise CliError("use only one of --stage, --version, --version-id", ExitCode.USAGE)
    if stage is not None and stage not in ("current", "pending", "previous"):
        raise CliError("--stage must be current, pending or previous", ExitCode.USAGE)
    try:  # before the read: a bad prefix costs no secret read
        check_env_prefix(env_prefix)
    except ValueError as exc:
        raise CliError(f"--env-prefix: {exc}", ExitCode.USAGE) from None
    with open_client(connection(addr, token, cacert)) as client:
        secret = client.get(
            path,
            stage=stage,  # type: ignore[arg-type]
            version=version,
            version_id=version_id,
        )
    values = dict(secret.fields.items())
    if field is not None:
        if field not in values:
            raise NotFoundError(f"secret {path!r} has no field {field!r}")
        write_line(values[field])
        return
    if output is GetFormat.env:
        try:
            lines = env_lines(values, prefix=env_prefix)
        except ValueError as exc:
            raise CliError(f"--output env: {exc}", ExitCode.USAGE) from None
        for line in lines:
            write_line(line)
        return
    data = _dict(secret)
    if output is GetFormat.json:
        emit_json(data)
        return
    print_table(
        kv_table(
            None,
            {"path": data.get("path"), "version": data.get("number"), "stages": data.get("stages")},
        ),
        rows_table(None, [{"field": k, "value": v} for k, v in values.items()], ("field", "value")),
    )


def _describe(
    path: str, addr: str | None, token: str | None, cacert: str | None
) -> dict[str, JSON]:
    with open_client(connection(addr, token, cacert)) as client:
        return _dict(client.describe(path))


def _version_rows(data: dict[str, JSON]) -> list[dict[str, JSON]]:
    versions = data.get("versions")
    return [v for v in versions if isinstance(v, dict)] if isinstance(versions, list) else []


def _print_metadata(data: dict[str, JSON], *, title: str | None = None) -> None:
    print_table(
        kv_table(title, data, keys=_META_KEYS),
        rows_table("versions", _version_rows(data), _VERSION_COLUMNS, headers=_VERSION_HEADERS),
    )


@app.command("describe")
def describe(
    *,
    path: PathArg,
    output: OutputOption = OutputFormat.table,
    addr: AddrOption = None,
    token: TokenOption = None,
    cacert: CacertOption = None,
) -> None:
    """Show everything about a secret except its values."""
    data = _describe(path, addr, token, cacert)
    emit(data, output, lambda: _print_metadata(data))


@app.command("versions")
def versions(
    *,
    path: PathArg,
    output: OutputOption = OutputFormat.table,
    addr: AddrOption = None,
    token: TokenOption = None,
    cacert: CacertOption = None,
) -> None:
    """List a secret's versions and their stages."""
    rows = _version_rows(_describe(path, addr, token, cacert))
    emit(
        rows,
        output,
        lambda: print_table(rows_table(path, rows, _VERSION_COLUMNS, headers=_VERSION_HEADERS)),
    )


@app.command("list")
def list_(
    *,
    prefix: Annotated[
        str, typer.Argument(help="Only paths under this prefix.", show_default=False)
    ] = "",
    environment: Annotated[
        str | None, typer.Option("--env", "-e", help="Only this environment.", show_default=False)
    ] = None,
    category: Annotated[
        str | None,
        typer.Option("--category", "-c", help="Only this category.", show_default=False),
    ] = None,
    tag: Annotated[
        list[str] | None, typer.Option("--tag", help="KEY=VALUE (repeatable; all must match).")
    ] = None,
    include_deleted: Annotated[
        bool, typer.Option("--include-deleted", help="Also secrets scheduled for deletion.")
    ] = False,
    output: OutputOption = OutputFormat.table,
    addr: AddrOption = None,
    token: TokenOption = None,
    cacert: CacertOption = None,
) -> None:
    """List secrets (metadata only), following every page."""
    tags = _tags(tag)
    with open_client(connection(addr, token, cacert)) as client:
        items = [
            _dict(m)
            for m in client.iter_list(
                prefix=prefix,
                environment=environment,
                category=category,
                tags=tags,
                include_deleted=include_deleted,
            )
        ]
    if output is OutputFormat.json:
        emit_json(items)
        return
    rows = [
        {**m, "deleted": m.get("purge_at") is not None and m.get("purge_at") != ""} for m in items
    ]
    print_table(
        rows_table(
            None,
            rows,
            ("path", "category", "current_version", "updated_at", "deleted"),
            headers=("path", "category", "current", "updated", "scheduled for deletion"),
        ),
        f"{len(rows)} secret(s)",
    )


def _confirm(what: str, yes: bool) -> None:
    """Ask before an irreversible step; without a terminal, ``--yes`` is required."""
    if yes:
        return
    if not stdin_is_terminal():
        raise CliError(f"{what} cannot be undone: pass --yes to confirm", ExitCode.USAGE)
    if not typer.confirm(f"{what} cannot be undone. Continue?", default=False):
        raise CliError("aborted")


@app.command("delete")
def delete(
    *,
    path: PathArg,
    recovery_days: Annotated[
        int | None,
        typer.Option("--recovery-days", min=7, max=30, help="Recovery window (default 30)."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Purge now, with no recovery window.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    output: OutputOption = OutputFormat.table,
    addr: AddrOption = None,
    token: TokenOption = None,
    cacert: CacertOption = None,
) -> None:
    """Schedule a secret for deletion (restorable during the recovery window)."""
    if force and recovery_days is not None:
        raise CliError("use either --force or --recovery-days, not both", ExitCode.USAGE)
    if force:
        _confirm(f"purging {path}", yes)
    with open_client(connection(addr, token, cacert)) as client:
        data = _dict(client.delete(path, recovery_days=recovery_days, force=force))
    if output is OutputFormat.json:
        emit_json(data)
    elif force:
        write_line(f"Purged {path}.")
    else:
        write_line(
            f"Scheduled {path} for deletion on {data.get('purge_at')}; restore with "
            f"'medsecrets secrets restore {path}'."
        )


@app.command("restore")
def restore(
    *,
    path: PathArg,
    output: OutputOption = OutputFormat.table,
    addr: AddrOption = None,
    token: TokenOption = None,
    cacert: CacertOption = None,
) -> None:
    """Cancel a scheduled deletion."""
    with open_client(connection(addr, token, cacert)) as client:
        data = _dict(client.restore(path))
    emit(data, output, lambda: write_line(f"Restored {path}."))


@app.command("destroy")
def destroy(
    *,
    path: PathArg,
    version: Annotated[int, typer.Option("--version", min=1, help="Version to destroy.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    output: OutputOption = OutputFormat.table,
    addr: AddrOption = None,
    token: TokenOption = None,
    cacert: CacertOption = None,
) -> None:
    """Destroy one version's values for good (its metadata stays)."""
    _confirm(f"destroying version {version} of {path}", yes)
    with open_client(connection(addr, token, cacert)) as client:
        data = _dict(client.destroy(path, version))
    emit(data, output, lambda: write_line(f"Destroyed version {version} of {path}."))


@app.command("promote")
def promote(
    *,
    path: PathArg,
    version: Annotated[int, typer.Option("--version", min=1, help="Version to move the stage to.")],
    stage: Annotated[
        str, typer.Option("--stage", help="Stage to move: current, pending or previous.")
    ] = "current",
    output: OutputOption = OutputFormat.table,
    addr: AddrOption = None,
    token: TokenOption = None,
    cacert: CacertOption = None,
) -> None:
    """Move a stage (default: current) to a version, e.g. promote a pending version."""
    if stage not in ("current", "pending", "previous"):
        raise CliError("--stage must be current, pending or previous", ExitCode.USAGE)
    with open_client(connection(addr, token, cacert)) as client:
        data = _dict(client.move_stage(path, stage, version))  # type: ignore[arg-type]
    if output is OutputFormat.json:
        emit_json(data)
    else:
        write_line(f"{path}: {stage} is now version {version}.")
