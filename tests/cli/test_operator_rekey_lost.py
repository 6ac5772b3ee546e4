"""``operator rekey`` when the answer to its verification is lost.

The server may make the new shares current and then fail to answer (killed, a
connection cut, the answer's audit record failing: 503): the CLI cannot know whether
the old or the new shares open the store, and must not tell the operator that the old
ones still work (who may then throw the new ones away). The answer is cut by
``LostAnswerRelay``, a fake network: a local TCP relay in front of a real server that
forwards every request and drops the server's answer to ``POST /v1/sys/rekey/verify``.
"""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from urllib.parse import urlsplit

import httpx
import pytest

from .conftest import run_cli

pytestmark = pytest.mark.slow

SHARE_LINE = re.compile(r"^Unseal share (\d+): (.+)$", re.M)
VERIFY = b"POST /v1/sys/rekey/verify "


def _pump(src: socket.socket, dst: socket.socket, seen: threading.Event, *, up: bool) -> None:
    """Copy ``src`` to ``dst``; upstream marks ``seen`` at a verify request, downstream
    then drops the answer and closes both ends."""
    try:
        while data := src.recv(65536):
            if up and VERIFY in data:
                seen.set()
            if not up and seen.is_set():
                break  # the verify was made: its answer is lost
            dst.sendall(data)
    except OSError:
        pass
    for sock in (src, dst):
        with suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()


@contextmanager
def lost_answer_relay(upstream: str) -> Iterator[str]:
    """A relay to ``upstream`` (an ``http://host:port``) that loses verify answers; yields
    its address."""
    target = urlsplit(upstream)
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            server = socket.create_connection((target.hostname, target.port))
            seen = threading.Event()
            for src, dst, up in ((client, server, True), (server, client, False)):
                threading.Thread(target=_pump, args=(src, dst, seen), kwargs={"up": up}).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        listener.close()


def test_a_lost_verify_answer_does_not_say_the_old_shares_still_work(shamir_server):
    addr = shamir_server.addr
    init = httpx.post(
        f"{addr}/v1/sys/init", json={"seal": {"type": "shamir", "shares": 3, "threshold": 2}}
    ).json()
    old, token = init["shares"], init["root_token"]
    with lost_answer_relay(addr) as relay:
        rekey = run_cli(
            "operator",
            "rekey",
            "--new-shares",
            "2",
            "--new-threshold",
            "2",
            input=f"{old[0]}\n{old[1]}\n",
            env={"MEDSECRETS_ADDR": relay, "MEDSECRETS_TOKEN": token},
        )
    new = [share for _, share in SHARE_LINE.findall(rekey.stdout)]
    assert len(new) == 2, rekey.stderr
    assert rekey.code != 0 and "Traceback" not in rekey.stderr
    errors = [line for line in rekey.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, rekey.stderr
    line = errors[0]
    # the verification did take effect: only the new shares open the store now
    root = {"X-Medsecrets-Token": token}
    assert httpx.post(f"{addr}/v1/sys/seal", headers=root).status_code == 200
    assert httpx.post(f"{addr}/v1/sys/unseal", json={"share": old[0]}).status_code == 400
    for share in new:
        opened = httpx.post(f"{addr}/v1/sys/unseal", json={"share": share})
    assert opened.json()["sealed"] is False
    assert "old shares still work" not in line, line
    assert "keep both" in line, line
