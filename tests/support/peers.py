"""Hostile TCP peers on 127.0.0.1 for tests: ``RawPeer`` (the plumbing), ``EndlessAnswer``,
``FixedAnswer`` (and ``answer``, the bytes of a whole HTTP response)."""

from __future__ import annotations

import contextlib
import socket
import threading


def read_head(conn: socket.socket) -> bytes | None:
    """The head of the HTTP request on ``conn`` (up to its blank line, which is left out);
    ``None`` when the client closes first."""
    data = b""
    while b"\r\n\r\n" not in data:
        got = conn.recv(65536)
        if not got:
            return None
        data += got
    return data.partition(b"\r\n\r\n")[0]


class RawPeer:
    """Listens on a free 127.0.0.1 port (``port``) and serves each connection with
    ``serve`` in a thread of its own until ``stop``, which sets ``stopping`` (for
    ``serve`` loops to watch) and closes the listener. Subclasses set what ``serve``
    uses before calling ``RawPeer.__init__`` (connections may come at once)."""

    def __init__(self) -> None:
        self.stopping = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def serve(self, conn: socket.socket) -> None:
        """Talk to one client (the connection is the caller's to close)."""
        raise NotImplementedError

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:  # stopped
                return
            threading.Thread(target=self._serve_one, args=(conn,), daemon=True).start()

    def _serve_one(self, conn: socket.socket) -> None:
        with conn:
            self.serve(conn)

    def stop(self) -> None:
        self.stopping.set()
        self.listener.close()


class EndlessAnswer(RawPeer):
    """A SIEM that reads a POST, answers ``200`` and then sends its body without end.

    ``drip``: one byte every 20 ms (each read of the client gets data, so no per-read
    timeout fires); else 64 KiB every 10 ms (an unbounded body).
    """

    def __init__(self, *, drip: bool) -> None:
        self.drip = drip
        self.posts = 0
        self.posted = threading.Event()
        super().__init__()
        self.url = f"http://127.0.0.1:{self.port}/ingest"

    def serve(self, conn: socket.socket) -> None:
        chunk = b"x" if self.drip else b"x" * 65536
        frame = b"%x\r\n%s\r\n" % (len(chunk), chunk)
        with contextlib.suppress(OSError):
            data = b""
            while b"\r\n\r\n" not in data:
                got = conn.recv(65536)
                if not got:  # the client gave up before its request was whole
                    return
                data += got
            self.posts += 1
            self.posted.set()
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            while not self.stopping.wait(0.02 if self.drip else 0.01):
                conn.sendall(frame)


class FixedAnswer(RawPeer):
    """Answers every request with ``answer`` (raw bytes) and closes; records request heads.

    ``endless``: after ``answer`` (a head with ``Transfer-Encoding: chunked``), send
    64 KiB chunks until the client hangs up.
    """

    def __init__(self, answer: bytes, *, endless: bool = False) -> None:
        self.answer = answer
        self.endless = endless
        self.heads: list[bytes] = []
        super().__init__()
        self.addr = f"http://127.0.0.1:{self.port}"

    def serve(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            head = read_head(conn)
            if head is None:
                return
            self.heads.append(head)
            conn.sendall(self.answer)
            chunk = b"<p>" * 21845
            while self.endless and not self.stopping.is_set():
                conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))


def answer(status: str, body: bytes, *headers: str) -> bytes:
    head = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", "Connection: close", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body
