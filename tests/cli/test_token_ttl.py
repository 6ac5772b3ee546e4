"""The CLI refuses what it can tell is wrong before, and after, asking a server.

``token create --ttl`` takes only a finite number of seconds (or with s/m/h/d) within the
server's range: ``nan``, ``inf`` or ``1e400s`` are usage errors (exit 2) and nothing is
sent (JSON has no such numbers). ``catalog show --remote`` refuses an answer that is not a
catalog (or category) with one ``unexpected answer from the server`` line (exit 1),
where it used to print an empty table and exit 0.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from medsecrets.cli.commands.token import MAX_TTL, MIN_TTL, parse_ttl
from medsecrets.cli.errors import CliError, ExitCode

from .conftest import run_cli


@dataclass
class FakeServer:
    """An HTTP server answering every request with ``status`` and ``body`` (JSON)."""

    addr: str
    body: bytes = b"{}"
    status: int = 200
    requests: list[str] = field(default_factory=list)


@pytest.fixture
def fake_server() -> Iterator[FakeServer]:
    state: dict[str, FakeServer] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            server = state["server"]
            server.requests.append(f"{self.command} {self.path}")
            length = int(self.headers.get("content-length") or 0)
            if length:
                self.rfile.read(length)
            self.send_response(server.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(server.body)))
            self.end_headers()
            self.wfile.write(server.body)

        do_GET = do_POST = _answer

        def log_message(self, format: str, *args: object) -> None:
            return None

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state["server"] = FakeServer(addr=f"http://127.0.0.1:{httpd.server_address[1]}")
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state["server"]
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def _env(server: FakeServer) -> dict[str, str]:
    return {"MEDSECRETS_ADDR": server.addr, "MEDSECRETS_TOKEN": "ms." + "A" * 43}


# -- token create --ttl ---------------------------------------------------------------------
BAD_TTLS = [
    "nan",
    "NaN",
    "-nan",
    "inf",
    "-inf",
    "infinity",
    "infs",
    "1e400",
    "1e400s",
    "1e308d",
    "0",
    "-5",
    "0.5",
    "0.5s",
    "32d",
    "2678401",
    "",
    "s",
    "soon",
    "1w",
]


def test_the_server_range_is_the_cli_range() -> None:
    from medsecrets.auth import tokens

    assert (MIN_TTL, MAX_TTL) == (tokens.MIN_TTL, tokens.MAX_TTL)


@pytest.mark.parametrize("text", BAD_TTLS)
def test_parse_ttl_refuses_non_finite_and_out_of_range_values(text: str) -> None:
    with pytest.raises(CliError) as caught:
        parse_ttl(text)
    assert caught.value.exit_code is ExitCode.USAGE
    assert caught.value.message.startswith("--ttl ")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1", 1.0), ("90s", 90.0), ("15m", 900.0), ("1.5h", 5400.0), ("31d", MAX_TTL)],
)
def test_parse_ttl_accepts_the_server_range(text: str, seconds: float) -> None:
    assert parse_ttl(text) == seconds


@pytest.mark.parametrize("text", ["nan", "inf", "1e400s", "32d"])
def test_token_create_refuses_a_bad_ttl_before_sending_anything(
    text: str, fake_server: FakeServer
) -> None:
    result = run_cli(
        "token", "create", "-p", "*", "-c", "read", "--ttl", text, env=_env(fake_server)
    )
    line = result.error(ExitCode.USAGE)
    assert "--ttl" in line and "JSON" not in line
    assert fake_server.requests == []


# -- catalog show --remote ------------------------------------------------------------------
WRONG_SHAPES = [
    {"x": 1},
    {"unexpected": [1, 2, 3]},
    {"prefix": "medessence", "development_environments": [], "categories": "none"},
    {"prefix": "medessence", "development_environments": [], "categories": [{"name": 1}]},
    {"prefix": 5, "development_environments": [], "categories": []},
]


@pytest.mark.parametrize("body", WRONG_SHAPES)
def test_catalog_show_remote_refuses_an_answer_of_the_wrong_shape(
    body: object, fake_server: FakeServer
) -> None:
    fake_server.body = json.dumps(body).encode()
    for extra in ((), ("-o", "json")):
        line = run_cli("catalog", "show", "--remote", *extra, env=_env(fake_server)).error(
            ExitCode.OTHER
        )
        assert "unexpected" in line and "server" in line


@pytest.mark.parametrize("body", [{"x": 1}, {"name": "database", "fields": "none"}, []])
def test_catalog_show_remote_category_refuses_an_answer_of_the_wrong_shape(
    body: object, fake_server: FakeServer
) -> None:
    fake_server.body = json.dumps(body).encode()
    line = run_cli("catalog", "show", "database", "--remote", env=_env(fake_server)).error(
        ExitCode.OTHER
    )
    assert "unexpected" in line
    assert fake_server.requests == ["GET /v1/catalog/database"]


def test_catalog_show_remote_takes_a_catalog_with_fields_it_does_not_know(
    fake_server: FakeServer,
) -> None:
    category = {
        "name": "database",
        "description": "d",
        "fields": [
            {
                "name": "username",
                "description": "u",
                "source": "provided",
                "generator": None,
                "validators": [],
                "template": None,
                "added_later": True,
            }
        ],
        "rotation": {"interval_days": 90, "strategy": "manual", "keep_previous": True},
        "kek": {"provider": "local", "key_id": None},
    }
    fake_server.body = json.dumps(
        {
            "prefix": "medessence",
            "development_environments": ["development"],
            "categories": [category],
            "added_later": 1,
        }
    ).encode()
    shown = run_cli("catalog", "show", "--remote", "-o", "json", env=_env(fake_server)).ok()
    assert json.loads(shown.stdout)["categories"][0]["name"] == "database"
