"""Export audit records for a SIEM: JSON lines, CSV or CEF, one record per line.

- ``jsonl``: each record as compact JSON (ASCII), exactly the fields it has.
- ``csv``: a fixed header, ``CSV_COLUMNS`` (``seq``, ``kind``, the record
  ``FIELDS`` but ``data``, then an alert's ``detector``, ``severity``,
  ``summary`` and ``count`` and a checkpoint's ``covers``); an alert's row
  takes principal, remote (its source), path, category and environment from
  the alert; a record without a column leaves it empty;
  ``None`` is empty, booleans are ``true``/``false``. Every cell is quoted
  (``csv.QUOTE_ALL``). A text cell starting with ``=``, ``+``, ``-``, ``@``,
  tab, carriage return or NUL is prefixed with ``'``, and so is any such character
  (or a ``"``) that follows a ``;``, tab or line break inside a text cell, so a
  spreadsheet never evaluates it (user agents and principals come from
  clients), not even one that splits the file on ``;`` (the list separator of
  many locales, which loses track of the quotes: each ``;`` then starts a cell,
  each line break a row). Open ``out`` with ``newline=""``.
- ``cef``: ArcSight Common Event Format,
  ``CEF:0|MedEssenceAI|medsecrets|<version>|<signature id>|<name>|<severity>|<extension>``.
  Header values escape ``\\`` and ``|`` (CR and LF become spaces); extension
  values escape ``\\`` and ``=`` and encode LF as ``\\n`` and CR as ``\\r``. CEF has
  no escape for any other control character, so in both every other C0 and C1
  control (tab, vertical tab, form feed, NEL U+0085, ...), the line and paragraph
  separators U+2028/U+2029 and a lone surrogate are written as ``\\uXXXX`` (four
  lower-case hex digits; a ``\\`` of the value is doubled, so the text stays
  unambiguous): each event is exactly one line, whether it is split on LF
  bytes or on every line break ``str.splitlines`` knows.
  Extension keys (standard CEF keys; empty values are left out):

  ======================  =========================================
  ``rt``                  record time, epoch milliseconds
  ``cat``                 record kind
  ``act``                 operation
  ``outcome``             success, denied, error or failure
  ``suser``               principal
  ``src`` / ``shost``     source address (``shost`` if not an IP)
  ``request``             secret path
  ``requestClientApplication``  user agent
  ``dvchost``             node id
  ``deviceFacility``      audit device name
  ``externalId``          record seq
  ``msg``                 alert summary, or what a checkpoint covers
  ``cnt``                 alert count
  ``cs1``..``cs6``        requestId, accessor, category, environment,
                          errorCode, authMethod (``csNLabel`` names them)
  ``cn1``..``cn3``        status, version, emergency (1/0)
  ======================  =========================================

  The signature id is the operation (``alert.<detector>`` for alerts,
  ``audit.<kind>`` for other records); severity (0-10): success 3, error 4,
  failure 5, denied 7, emergency-token use 8; alerts by their severity (info
  1, low 3, medium 5, high 8, critical 10); checkpoints 1.

Records hold no secret values (they are HMAC'd when rendered); CSV and CEF
leave out ``data`` (the HMAC'd request body) altogether.
"""

from __future__ import annotations

import csv
import datetime as dt
import ipaddress
import json
import re
from collections.abc import Iterable, Mapping
from typing import Final, Literal, TextIO

from medsecrets import __version__
from medsecrets.audit.query import record_field, record_time
from medsecrets.audit.record import FIELDS
from medsecrets.errors import InvalidRequest

__all__ = ["CSV_COLUMNS", "ExportFormat", "cef_line", "export"]

ExportFormat = Literal["jsonl", "csv", "cef"]

_ALERT_COLUMNS: Final = ("detector", "severity", "summary", "count")
CSV_COLUMNS: Final = (
    "seq",
    "kind",
    *(name for name in FIELDS if name != "data"),
    *_ALERT_COLUMNS,
    "covers",
)

_VENDOR: Final = "MedEssenceAI"
_PRODUCT: Final = "medsecrets"
_OUTCOME_SEVERITY: Final = {"success": 3, "error": 4, "failure": 5, "denied": 7}
_ALERT_SEVERITY: Final = {"info": 1, "low": 3, "medium": 5, "high": 8, "critical": 10}
_FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r", "\0")
"""OWASP's and ASVS 5.0 1.2.10's: LibreOffice Calc drops a leading NUL and evaluates the rest."""
_SEPARATED_FORMULA: Final = re.compile(r"([;\t\r\n])(?=[=+\-@\t\r\0\"])")
"""A ``;``, tab or line break before a formula's first character (or a quote)."""
_UNESCAPED: Final = re.compile(r"[\x00-\x09\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
"""What CEF has no escape for and a reader may take for a line break or a terminal control:
every C0/C1 control but CR and LF, U+2028, U+2029 and lone surrogates (not text)."""
_LABELLED: Final = (
    ("cs1", "requestId", "request_id"),
    ("cs2", "accessor", "accessor"),
    ("cs3", "category", "category"),
    ("cs4", "environment", "environment"),
    ("cs5", "errorCode", "error"),
    ("cs6", "authMethod", "auth"),
    ("cn1", "status", "status"),
    ("cn2", "version", "version"),
)


def export(records: Iterable[Mapping[str, object]], fmt: ExportFormat, out: TextIO) -> int:
    """Write ``records`` to ``out`` in ``fmt`` (see module docstring); the count written.

    Raises ``InvalidRequest`` for an unknown format (before writing anything).
    """
    if fmt == "jsonl":
        return _write_lines((_json_line(record) for record in records), out)
    if fmt == "cef":
        return _write_lines((cef_line(record) for record in records), out)
    if fmt == "csv":
        writer = csv.writer(out, quoting=csv.QUOTE_ALL)
        writer.writerow(CSV_COLUMNS)
        count = 0
        for record in records:
            writer.writerow([_csv_cell(_csv_value(record, column)) for column in CSV_COLUMNS])
            count += 1
        return count
    raise InvalidRequest(f"unknown export format {fmt!r}: use jsonl, csv or cef")


def _write_lines(lines: Iterable[str], out: TextIO) -> int:
    count = 0
    for line in lines:
        out.write(line)
        out.write("\n")
        count += 1
    return count


def _json_line(record: Mapping[str, object]) -> str:
    return json.dumps(dict(record), ensure_ascii=True, separators=(",", ":"))


def _csv_value(record: Mapping[str, object], column: str) -> object:
    """A record's value for a CSV column: an alert's own fields fill its row."""
    if column in _ALERT_COLUMNS:
        alert = record.get("alert")
        return alert.get(column) if isinstance(alert, Mapping) else None
    return record_field(record, column)


def _csv_cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = _SEPARATED_FORMULA.sub(r"\1'", value)
        return "'" + text if text.startswith(_FORMULA_START) else text
    if isinstance(value, int | float):
        return str(value)
    return _csv_cell(json.dumps(value, ensure_ascii=True, separators=(",", ":")))


def _unicode_escape(found: re.Match[str]) -> str:
    return f"\\u{ord(found.group()):04x}"


def _header(value: object) -> str:
    """A CEF header value: ``\\`` and ``|`` escaped, CR and LF made spaces, every other
    control or line break as ``\\uXXXX``."""
    text = str(value)
    text = text.replace("\\", "\\\\").replace("|", "\\|")
    text = text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")
    return _UNESCAPED.sub(_unicode_escape, text)


def _extension(value: object) -> str:
    """A CEF extension value: ``\\`` and ``=`` escaped, CR and LF as ``\\r``/``\\n``,
    every other control or line break as ``\\uXXXX``."""
    text = str(value)
    text = text.replace("\\", "\\\\").replace("=", "\\=")
    text = text.replace("\r", "\\r").replace("\n", "\\n")
    return _UNESCAPED.sub(_unicode_escape, text)


def _text(value: object) -> str | None:
    """``value`` as extension text, ``None`` when empty."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def cef_line(record: Mapping[str, object]) -> str:
    """One record as a CEF line (no line break; see module docstring)."""
    kind = str(record.get("kind") or "record")
    fields: list[tuple[str, object]] = []
    time = record_time(record)
    if time is not None:
        fields.append(("rt", int(time.astimezone(dt.UTC).timestamp() * 1000)))
    fields.append(("cat", kind))
    alert = record.get("alert")
    if kind == "alert" and isinstance(alert, Mapping):
        signature, name, severity = _alert_header(alert, fields)
    elif kind == "checkpoint":
        signature, name, severity = "audit.checkpoint", "audit checkpoint", 1
        fields.append(("msg", f"covers seq {record.get('covers')}"))
    else:
        signature, name, severity = _request_header(kind, record, fields)
    fields.append(("dvchost", record.get("node")))
    fields.append(("deviceFacility", record.get("device")))
    fields.append(("externalId", record.get("seq")))
    for key, label, source in _LABELLED:
        value = record_field(record, source)
        if _text(value) is not None:
            fields.append((f"{key}Label", label))
            fields.append((key, value))
    if kind in ("request", "response"):
        fields.append(("cn3Label", "emergency"))
        fields.append(("cn3", bool(record.get("emergency"))))
    extension = " ".join(
        f"{key}={_extension(text)}" for key, value in fields if (text := _text(value)) is not None
    )
    header = "|".join(
        _header(part)
        for part in ("CEF:0", _VENDOR, _PRODUCT, __version__, signature, name, severity)
    )
    return f"{header}|{extension}"


def _source(fields: list[tuple[str, object]], address: object) -> None:
    """``src`` for an IP address, ``shost`` for anything else."""
    if not isinstance(address, str) or not address:
        return
    try:
        ipaddress.ip_address(address)
    except ValueError:
        fields.append(("shost", address))
    else:
        fields.append(("src", address))


def _request_header(
    kind: str, record: Mapping[str, object], fields: list[tuple[str, object]]
) -> tuple[str, str, int]:
    operation = str(record.get("operation") or f"audit.{kind}")
    outcome = record.get("outcome")
    fields.append(("act", operation))
    fields.append(("outcome", outcome))
    fields.append(("suser", record.get("principal")))
    _source(fields, record.get("remote"))
    fields.append(("request", record.get("path")))
    fields.append(("requestClientApplication", record.get("user_agent")))
    severity = _OUTCOME_SEVERITY.get(str(outcome), 3)
    if record.get("emergency") is True:
        severity = max(severity, 8)
    name = f"{kind} {operation}" + (f" {outcome}" if outcome else "")
    return operation, name, severity


def _alert_header(
    alert: Mapping[str, object], fields: list[tuple[str, object]]
) -> tuple[str, str, int]:
    detector = str(alert.get("detector") or "unknown")
    fields.append(("act", "alert"))
    fields.append(("suser", alert.get("principal")))
    _source(fields, alert.get("source"))
    fields.append(("request", alert.get("path")))
    fields.append(("msg", alert.get("summary")))
    fields.append(("cnt", alert.get("count")))
    severity = _ALERT_SEVERITY.get(str(alert.get("severity")), 5)
    return f"alert.{detector}", f"alert {detector}", severity
