"""Exports for a SIEM: JSON lines, CSV (parsed back with ``csv``) and CEF (parsed back by regex)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from pathlib import Path

import pytest

from medsecrets import __version__
from medsecrets.audit.checkpoint import CheckpointSigner
from medsecrets.audit.export import CSV_COLUMNS, cef_line, export
from medsecrets.audit.query import read_records
from medsecrets.audit.record import FIELDS, AuditEvent
from medsecrets.errors import InvalidRequest
from medsecrets.monitor.alert import Alert
from tests.audit.chainmaker import BASE_TIME, ChainMaker, parse

ALERT_COLUMNS = ("detector", "severity", "summary", "count")

NASTY_AGENT = "=cmd|' /C calc'!A0 a=b \\ back\nslash\r\nend"
CEF = re.compile(
    r"^CEF:0\|MedEssenceAI\|medsecrets\|(?P<version>(?:[^|\\]|\\.)*)"
    r"\|(?P<signature>(?:[^|\\]|\\.)*)\|(?P<name>(?:[^|\\]|\\.)*)"
    r"\|(?P<severity>10|[0-9])\|(?P<extension>.*)$"
)
PAIR = re.compile(r"(?:^| )([A-Za-z0-9]+)=((?:[^\\=]|\\[\\=nr])*?)(?= [A-Za-z0-9]+=|$)")


def unescape_extension(value: str) -> str:
    return re.sub(r"\\([\\=nr])", lambda m: {"n": "\n", "r": "\r"}.get(m[1], m[1]), value)


def parse_cef(line: str) -> tuple[dict[str, str], dict[str, str]]:
    """The header parts and the extension of one CEF line (unescaped)."""
    match = CEF.match(line)
    assert match, line
    extension = match["extension"]
    pairs = PAIR.findall(extension)
    assert " ".join(f"{k}={v}" for k, v in pairs) == extension, "unparsed extension text"
    assert "\n" not in line and "\r" not in line
    header = {k: re.sub(r"\\([\\|])", r"\1", v) for k, v in match.groupdict().items()}
    return header, {k: unescape_extension(v) for k, v in pairs}


@pytest.fixture(scope="module")
def records() -> list[dict[str, object]]:
    maker = ChainMaker(seed=9, signer=CheckpointSigner.generate())
    maker.add_traffic(20)
    maker.request_pair(
        time=BASE_TIME,
        principal="-alice",
        remote="10.1.2.3",
        user_agent=NASTY_AGENT,
        operation="secrets.read",
        path="medessence/production/database/main",
        version=3,
        status=200,
    )
    maker.request_pair(principal="bob", remote="build-host.local", status=403)
    maker.append(
        AuditEvent(
            kind="request",
            time=BASE_TIME,
            principal="break-glass",
            operation="secrets.read",
            emergency=True,
        )
    )
    alert = Alert(
        detector="honeytoken",
        severity="critical",
        time=BASE_TIME,
        summary="read of decoy a=b|c",
        key="mallory",
        principal="mallory",
        source="10.9.9.9",
        path="medessence/production/decoy",
        category="decoy",
        count=2,
    )
    maker.append(AuditEvent(kind="alert", time=BASE_TIME, extra={"alert": alert.to_dict()}))
    maker.checkpoint()
    return [parse(line) for line in maker.lines]


def run(records: list[dict[str, object]], fmt: str) -> tuple[int, str]:
    out = io.StringIO(newline="")
    count = export(records, fmt, out)  # type: ignore[arg-type]
    return count, out.getvalue()


def test_jsonl_round_trips(records: list[dict[str, object]], tmp_path: Path) -> None:
    count, text = run(records, "jsonl")
    assert count == len(records) == text.count("\n")
    assert [json.loads(line) for line in text.splitlines()] == records
    path = tmp_path / "export.jsonl"
    path.write_text(text)
    assert list(read_records([path])) == records


def test_csv_parses_back_with_the_csv_module(records: list[dict[str, object]]) -> None:
    count, text = run(records, "csv")
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert count == len(rows) == len(records)
    assert tuple(rows[0]) == CSV_COLUMNS
    assert set(CSV_COLUMNS) == {"seq", "kind", *FIELDS, *ALERT_COLUMNS, "covers"} - {"data"}
    for row, record in zip(rows, records, strict=True):
        assert row["seq"] == str(record["seq"])
        assert row["kind"] == record["kind"]
        assert row["time"] == record["time"]
    read = rows[21]  # the response of the request_pair with the nasty user agent
    assert (read["kind"], read["path"], read["version"], read["status"]) == (
        "response",
        "medessence/production/database/main",
        "3",
        "200",
    )
    assert read["user_agent"] == "'" + NASTY_AGENT  # a spreadsheet never runs it
    assert read["principal"] == "'-alice"
    assert read["emergency"] == "false"
    assert read["error"] == ""
    assert rows[20]["status"] == ""  # requests have none
    assert rows[-3]["emergency"] == "true"
    assert rows[-1]["kind"] == "checkpoint"
    assert rows[-1]["principal"] == ""
    assert rows[-1]["covers"] == str(records[-1]["covers"])
    alert = rows[-2]  # its row carries the alert, not only seq, kind and time
    assert alert["kind"] == "alert"
    assert (alert["detector"], alert["severity"], alert["count"]) == ("honeytoken", "critical", "2")
    assert alert["summary"] == "read of decoy a=b|c"
    assert (alert["principal"], alert["remote"], alert["path"]) == (
        "mallory",
        "10.9.9.9",
        "medessence/production/decoy",
    )
    assert alert["category"] == "decoy"


# Client-controlled text with a formula after a separator: in many locales (de, fr, es,
# it, nl, ...) a spreadsheet opens a .csv by splitting it on ";" and loses track of the
# quotes, so each ";" starts a cell (and each line break a row).
SEPARATED = {
    "a;=cmd|' /C calc'!A0;b": "a;'=cmd|' /C calc'!A0;b",
    'x;"=1+1";y': 'x;\'"=1+1";y',
    "curl/8;+1;-2;@SUM(A1)": "curl/8;'+1;'-2;'@SUM(A1)",
    "tab\t=1+1": "tab\t'=1+1",
    "line\n=1+1\r=2+2": "line\n'=1+1\r'=2+2",
    ";=first": ";'=first",
    "Mozilla/5.0 (X11; Linux x86_64)": "Mozilla/5.0 (X11; Linux x86_64)",
    # LibreOffice Calc 7.4 drops a leading NUL and evaluates the rest (=1+1 became 2)
    "\0=1+1": "'\0=1+1",
    "curl;\0=1+1": "curl;'\0=1+1",
    "line\n\0=1+1": "line\n'\0=1+1",
}
FORMULA = ("=", "+", "-", "@", "\t", "\r", "\0")


def test_csv_quotes_every_cell_and_no_separator_starts_a_formula(
    records: list[dict[str, object]],
) -> None:
    rows = [
        {"seq": n, "kind": "request", "time": BASE_TIME.isoformat(), "user_agent": agent,
         "principal": agent, "operation": "sys.health"}
        for n, agent in enumerate(SEPARATED, 1)
    ]  # fmt: skip
    _, text = run([*records, *rows], "csv")
    assert re.fullmatch(r'(?:"(?:[^"]|"")*"(?:,|\r\n))+', text), "a cell is not quoted"
    parsed = list(csv.DictReader(io.StringIO(text, newline="")))[len(records) :]
    assert [row["user_agent"] for row in parsed] == list(SEPARATED.values())
    assert [row["principal"] for row in parsed] == list(SEPARATED.values())
    for separator in (";", "\t"):  # the cells a spreadsheet splitting on it would see
        for line in re.split(r"\r\n|\r|\n", text):
            for cell in line.split(separator):
                assert not cell.lstrip('"').startswith(FORMULA), (separator, cell)
        for row in csv.reader(io.StringIO(text, newline=""), delimiter=separator):
            assert not any(cell.startswith(FORMULA) for cell in row), row


def test_cef_lines_match_the_format_and_escape(records: list[dict[str, object]]) -> None:
    count, text = run(records, "cef")
    lines = text.split("\n")
    assert lines.pop() == ""
    assert count == len(lines) == len(records)
    parsed = [parse_cef(line) for line in lines]
    for (header, extension), record in zip(parsed, records, strict=True):
        assert header["version"] == __version__
        assert extension["externalId"] == str(record["seq"])
        assert extension["cat"] == record["kind"]
        when = dt.datetime.fromisoformat(str(record["time"]))
        assert extension["rt"] == str(int(when.timestamp() * 1000))

    header, ext = parsed[21]
    assert (header["signature"], header["name"], header["severity"]) == (
        "secrets.read",
        "response secrets.read success",
        "3",
    )
    assert ext["requestClientApplication"] == NASTY_AGENT
    assert ext["suser"] == "-alice"
    assert ext["src"] == "10.1.2.3"
    assert ext["request"] == "medessence/production/database/main"
    assert ext["outcome"] == "success"
    assert ext["act"] == "secrets.read"
    assert (ext["cs1Label"], ext["cs1"]) == ("requestId", records[21]["request_id"])
    assert (ext["cn1Label"], ext["cn1"], ext["cn2Label"], ext["cn2"]) == (
        "status",
        "200",
        "version",
        "3",
    )
    assert ext["cs2"].startswith("hmac-sha256:")
    assert ext["dvchost"] == "node-1"
    raw = lines[21]
    assert "a\\=b \\\\ back\\nslash\\r\\nend" in raw  # escaped on the wire

    _, denied = parsed[23]
    assert (denied["shost"], denied["outcome"]) == ("build-host.local", "denied")
    assert "src" not in denied
    assert parse_cef(lines[23])[0]["severity"] == "7"

    emergency_header, emergency = parsed[-3]
    assert (emergency_header["severity"], emergency["cn3"]) == ("8", "1")

    alert_header, alert = parsed[-2]
    assert (alert_header["signature"], alert_header["severity"]) == ("alert.honeytoken", "10")
    assert alert["msg"] == "read of decoy a=b|c"
    assert (alert["suser"], alert["src"], alert["cnt"]) == ("mallory", "10.9.9.9", "2")
    assert (alert["cs3Label"], alert["cs3"]) == ("category", "decoy")

    checkpoint_header, checkpoint = parsed[-1]
    assert checkpoint_header["signature"] == "audit.checkpoint"
    assert checkpoint["msg"] == f"covers seq {len(records) - 1}"


def test_cef_header_escapes_pipes_and_backslashes() -> None:
    record = {
        "kind": "response",
        "seq": 1,
        "time": "2026-01-05T08:00:00.000000Z",
        "operation": "odd|op\\x",
        "outcome": "error",
        "principal": "eve",
    }
    line = cef_line(record)
    assert "|odd\\|op\\\\x|response odd\\|op\\\\x error|4|" in line
    header, extension = parse_cef(line)
    assert (header["signature"], header["name"]) == ("odd|op\\x", "response odd|op\\x error")
    assert extension["act"] == "odd|op\\x"  # pipes need no escape in the extension


def test_an_unknown_format_is_refused_before_writing(records: list[dict[str, object]]) -> None:
    out = io.StringIO()
    with pytest.raises(InvalidRequest, match="unknown export format"):
        export(records, "xml", out)  # type: ignore[arg-type]
    assert out.getvalue() == ""


def test_exports_leave_the_request_body_out(records: list[dict[str, object]]) -> None:
    writes = [r for r in records if r.get("data")]
    assert writes, "the fixture has a write with a (salted) body"
    salted = [r["data"]["value"]["password"] for r in writes]  # type: ignore[index]
    assert all(str(value).startswith("hmac-sha256:") for value in salted)
    for fmt in ("csv", "cef"):
        _, text = run(records, fmt)
        assert not any(str(value) in text for value in salted)


# Every character str.splitlines() breaks at, and other C0/C1 controls CEF has no escape for.
BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
CONTROLS = "\x00\x01\x07\x08\t\x1b\x7f\x80\x9b\x9f"
ODD = "x" + BREAKS + CONTROLS + "\\u000b|=y"  # and a literal "\u000b" text: not confused


def unescape_cef(value: str, *, header: bool = False) -> str:
    """The text of a CEF value as ``export`` escapes it (``\\uXXXX`` included)."""
    simple = "\\\\|" if header else "\\\\=nr"
    return re.sub(
        rf"\\(?:([{simple}])|u([0-9a-f]{{4}}))",
        lambda m: chr(int(m[2], 16)) if m[2] else {"n": "\n", "r": "\r"}.get(m[1], m[1]),
        value,
    )


def one_event(line: str) -> None:
    """``line`` is one line however it is split, and holds no control character."""
    assert line.splitlines() == [line]
    assert line.encode().split(b"\n") == [line.encode()]
    assert not any(char in line for char in BREAKS + CONTROLS), repr(line)


def test_cef_escapes_every_line_break_and_control_in_every_field() -> None:
    request = {
        "kind": "response",
        "seq": ODD,
        "time": "2026-01-05T08:00:00.000000Z",
        **{name: ODD for name in ("node", "device", "request_id", "principal", "accessor")},
        **{name: ODD for name in ("auth", "remote", "user_agent", "operation", "path")},
        **{name: ODD for name in ("environment", "category", "outcome", "error")},
        "version": ODD,
        "status": ODD,
        "emergency": False,
    }
    alert = {
        "kind": "alert",
        "seq": 2,
        "time": "2026-01-05T08:00:00.000000Z",
        "node": ODD,
        "device": ODD,
        "alert": {
            **{name: ODD for name in ("detector", "severity", "summary", "principal")},
            **{name: ODD for name in ("source", "path", "category", "environment", "count")},
        },
    }
    checkpoint = {"kind": "checkpoint", "seq": 3, "node": ODD, "device": ODD, "covers": ODD}
    odd_kind = {"kind": ODD, "seq": 4, "node": "n", "device": "d"}
    count, text = run([request, alert, checkpoint, odd_kind], "cef")  # type: ignore[list-item]
    assert count == 4
    lines = text.split("\n")
    assert lines.pop() == ""
    assert len(lines) == 4 and text.splitlines() == lines
    extensions = []
    for line in lines:
        one_event(line)
        match = CEF.match(line)
        assert match, line
        pairs = re.findall(
            r"(?:^| )([A-Za-z0-9]+)=((?:[^\\=]|\\(?:[\\=nr]|u[0-9a-f]{4}))*?)(?= [A-Za-z0-9]+=|$)",
            match["extension"],
        )
        assert " ".join(f"{k}={v}" for k, v in pairs) == match["extension"]
        extensions.append({k: unescape_cef(v) for k, v in pairs})
        header = {k: unescape_cef(v, header=True) for k, v in match.groupdict().items()}
        extensions[-1].update({f"header.{k}": v for k, v in header.items()})
    lossy = ODD.replace("\r", " ").replace("\n", " ")  # CR and LF are spaces in a header
    ext = extensions[0]
    for key in ("act", "outcome", "suser", "shost", "request", "requestClientApplication"):
        assert ext[key] == ODD, key
    for key in ("dvchost", "deviceFacility", "externalId", "cs1", "cs2", "cs3", "cs4"):
        assert ext[key] == ODD, key
    for key in ("cs5", "cs6", "cn1", "cn2"):
        assert ext[key] == ODD, key
    assert ext["header.signature"] == lossy
    assert ext["header.name"] == f"response {lossy} {lossy}"
    ext = extensions[1]
    for key in ("suser", "shost", "request", "msg", "cnt", "cs3", "cs4", "dvchost"):
        assert ext[key] == ODD, key
    assert (ext["header.signature"], ext["header.name"]) == (f"alert.{lossy}", f"alert {lossy}")
    assert extensions[2]["msg"] == f"covers seq {ODD}"
    assert extensions[3]["cat"] == ODD
    assert extensions[3]["header.name"] == f"{lossy} audit.{lossy}"
