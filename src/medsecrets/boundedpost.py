"""``BoundedPoster``: an HTTP POST that ends within a deadline and reads little of the answer.

httpx's ``timeout`` bounds each network operation, not a request: a peer that
answers at a drip (a byte at a time, each in time) holds a POST for as long
as it likes, and a plain ``client.post`` reads the whole answer into memory,
so an endless body grows the process without bound. Senders that only need
the status of the answer (the SIEM forwarder, the alert webhooks) post
through a ``BoundedPoster`` instead:

- ``post`` streams the request and reads at most ``MAX_ANSWER`` bytes of the
  answer's body, raw (never decompressed); the rest is left unread and the
  connection closed. It returns the answer with its status and headers only.
- A POST has ``deadline`` seconds in all (connecting, TLS, sending, the
  answer): past it a watchdog shuts the connection's socket down, which ends
  any read or write on it at once, and ``post`` raises ``DeadlineExceeded``
  (an ``httpx.TimeoutException``). A connection that completes after the
  deadline is shut down as it completes.
- ``cut()`` does the same now, from any thread (a ``close`` that cannot wait
  for the POST in flight).

A poster owns its ``httpx.Client`` (it watches that client's connections) and
sends one POST at a time. Errors are httpx's (``httpx.HTTPError``).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Mapping
from typing import Any, Final

import httpcore
import httpx

__all__ = ["MAX_ANSWER", "BoundedPoster", "DeadlineExceeded"]

MAX_ANSWER: Final = 4096
"""Bytes of an answer's body that are read; the rest is left unread (the connection closed)."""


class DeadlineExceeded(httpx.TimeoutException):
    """A POST ran past its deadline (or was cut): its connection was shut down."""


class BoundedPoster:
    """POSTs through ``client``, each within a deadline (see the module docstring)."""

    def __init__(self, client: httpx.Client) -> None:
        self._client = client
        self._lock = threading.Lock()
        self._inflight: threading.Event | None = None  # the POST in flight (its watchdog's token)
        self._stream: httpcore.NetworkStream | None = None  # the connection it uses

    def post(
        self,
        url: httpx.URL | str,
        *,
        content: bytes,
        deadline: float,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """POST ``content`` to ``url`` within ``deadline`` seconds; the (closed) answer.

        Raises ``DeadlineExceeded`` when the deadline cut the POST (or ``cut``
        did), else whatever ``httpx.HTTPError`` ended it. An answer that was
        complete before the deadline is returned even if the watchdog fired
        just after.
        """
        token = threading.Event()
        watchdog = threading.Timer(max(0.0, deadline), self._expire, args=(token,))
        watchdog.daemon = True
        with self._lock:
            self._inflight = token
        watchdog.start()
        try:
            with self._client.stream(
                "POST", url, content=content, headers=headers, extensions={"trace": self._trace}
            ) as response:
                _read_answer(response)
        except httpx.HTTPError:
            if token.is_set():
                raise DeadlineExceeded("past the deadline") from None
            raise
        finally:
            watchdog.cancel()
            with self._lock:
                self._inflight = None
        return response

    def cut(self) -> None:
        """Cut the POST in flight now (if any): it fails with ``DeadlineExceeded``."""
        with self._lock:
            token = self._inflight
        if token is not None:
            self._expire(token)

    def _trace(self, event: str, info: Mapping[str, Any]) -> None:
        """httpcore's trace hook: remember the stream of the connection being used, and
        shut it down at once if the POST's deadline passed while it was being opened."""
        if event == "connection.connect_tcp.started":
            stream = None
        elif event in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
            stream = info.get("return_value")
        else:
            return
        with self._lock:
            self._stream = stream if isinstance(stream, httpcore.NetworkStream) else None
            late = self._inflight is not None and self._inflight.is_set()
            if late:
                self._shutdown()

    def _expire(self, token: threading.Event) -> None:
        """The POST ``token`` is past its deadline: cut its connection (if still in flight)."""
        with self._lock:
            if self._inflight is not token:
                return
            token.set()
            self._shutdown()

    def _shutdown(self) -> None:
        """Shut the remembered connection's socket down (the caller holds ``_lock``).

        ``socket.socket.shutdown`` also for a TLS socket: the TLS object stays
        intact for the thread reading it, which sees the end of the stream.
        """
        sock = self._stream.get_extra_info("socket") if self._stream is not None else None
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _read_answer(response: httpx.Response) -> None:
    """Read (and discard) at most ``MAX_ANSWER`` bytes of ``response``'s body, undecoded."""
    read = 0
    for chunk in response.iter_raw():
        read += len(chunk)
        if read >= MAX_ANSWER:
            return
