"""Hostile TCP peers on 127.0.0.1 for tests: ``RawPeer`` (the plumbing), ``EndlessAnswer``."""

from __future__ import annotations

import contextlib
import socket
import threading


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
