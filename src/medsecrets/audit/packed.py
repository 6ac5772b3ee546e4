"""Audit events as tuples of builtin values: the form the broker hands to every lane.

An ``AuditEvent`` and a ``Completion`` are convenient to read, but building one costs a
dataclass of eighteen fields and a ``datetime`` a record, twice a request, on the event
loop. The broker therefore builds the tuples directly (``PackedEvent``,
``PackedCompletion``): the audit process's channel carries them as they are
(``audit.channel`` frames, ``audit.sidecar``), and a lane keeps them as they are: it
renders a request and its response from the tuples (``render_exchange``) and turns a lone
event back into an ``AuditEvent`` (``unpack_event``) only to render it. A time is POSIX
seconds and microseconds (``stamp()`` for now).

``pack_event(e)`` and ``unpack_event`` are inverses (``unpack_event(pack_event(e)) == e``),
as are ``pack_completion`` and ``unpack_completion``; ``responded(event, completion)`` is
``pack_event(unpack_event(event).responded(unpack_completion(completion)))``, built
directly, and ``render_exchange`` renders what ``record.render_exchange`` renders for the
unpacked objects, byte for byte, without building them (in the audit process, where every
read's two records are rendered).
"""

from __future__ import annotations

import datetime as dt
import time
from typing import cast

from medsecrets.audit.record import (
    REFUSED_CODE,
    AuditEvent,
    Completion,
    Kind,
    Salter,
    format_stamp,
    record_data,
    render_pair,
    shared_fields,
)

__all__ = [
    "Item",
    "PackedCompletion",
    "PackedEvent",
    "pack_completion",
    "pack_event",
    "refused",
    "render_exchange",
    "responded",
    "stamp",
    "stamp_of",
    "unpack_completion",
    "unpack_event",
]

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

PackedEvent = tuple[
    str,  # kind
    int,  # time: POSIX seconds
    int,  # time: microseconds
    str,  # request_id
    str | None,  # principal
    str | None,  # token
    str | None,  # auth
    str,  # remote
    str,  # user_agent
    str,  # operation
    str,  # path
    str | None,  # environment
    str | None,  # category
    int | None,  # version
    int | None,  # status
    str | None,  # error
    bool,  # emergency
    object,  # data
    "dict[str, object] | None",  # extra
]
"""An ``AuditEvent`` as builtin values (``pack_event``)."""

PackedCompletion = tuple[int, int, int, str | None, int | None]
"""A ``Completion`` as builtin values: POSIX seconds, microseconds, status, error, version."""

Item = tuple[bool, PackedEvent, PackedCompletion | None]
"""One item of an ``events`` message: ``(wait, event, completion)`` (see module docstring)."""


def stamp() -> tuple[int, int]:
    """Now, as ``(POSIX seconds, microseconds)`` (the system clock, as ``datetime.now``)."""
    micro = time.time_ns() // 1000
    return micro // 1_000_000, micro % 1_000_000


def stamp_of(when: dt.datetime) -> tuple[int, int]:
    """``when`` as ``(POSIX seconds, microseconds)``, exactly: the seconds are floored
    (before 1970 too), the microseconds never negative. A naive ``when`` is local time, as
    ``datetime.timestamp()`` takes it."""
    if when.tzinfo is None:
        when = when.astimezone(dt.UTC)
    since = when - _EPOCH
    return since.days * 86_400 + since.seconds, since.microseconds


def responded(event: PackedEvent, completion: PackedCompletion) -> PackedEvent:
    """The response event of a packed request event (see ``AuditEvent.responded``)."""
    seconds, micro, status, error, version = completion
    return (
        "response",
        seconds,
        micro,
        event[3],
        event[4],
        event[5],
        event[6],
        event[7],
        event[8],
        event[9],
        event[10],
        event[11],
        event[12],
        event[13] if version is None else version,
        status,
        error,
        event[16],
        None,
        None,
    )


def refused(completion: PackedCompletion) -> PackedCompletion:
    """``record.refused`` of a packed completion (503 ``audit_failure``, no version)."""
    return (completion[0], completion[1], 503, REFUSED_CODE, None)


def render_exchange(
    request: PackedEvent,
    completion: PackedCompletion,
    *,
    seq: int,
    prev: str,
    node: str,
    device: str,
    salter: Salter | None,
) -> tuple[bytes, str, bytes, str]:
    """``record.render_exchange`` of ``unpack_event(request)`` and
    ``unpack_completion(completion)``, the same bytes."""
    done_seconds, done_micro, status, error, served = completion
    return render_pair(
        shared_fields(request[3:13], node=node, device=device, salter=salter),
        (format_stamp(request[1], request[2]), format_stamp(done_seconds, done_micro)),
        seq=seq,
        prev=prev,
        version=request[13],
        status=status,
        error=error,
        served=served,
        emergency=request[16],
        data=record_data(request[17], salter),
    )


def pack_event(event: AuditEvent) -> PackedEvent:
    """``event`` as a tuple of builtin values (its time to the microsecond)."""
    seconds, micro = stamp_of(event.time)
    return (
        event.kind,
        seconds,
        micro,
        event.request_id,
        event.principal,
        event.token,
        event.auth,
        event.remote,
        event.user_agent,
        event.operation,
        event.path,
        event.environment,
        event.category,
        event.version,
        event.status,
        event.error,
        event.emergency,
        event.data,
        dict(event.extra) if event.extra is not None else None,
    )


def pack_completion(completion: Completion) -> PackedCompletion:
    """``completion`` as a tuple of builtin values (its time to the microsecond)."""
    seconds, micro = stamp_of(completion.time)
    return (
        seconds,
        micro,
        completion.status,
        completion.error,
        completion.version,
    )


def _time(seconds: int, micro: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(seconds=seconds, microseconds=micro)


def unpack_event(packed: PackedEvent) -> AuditEvent:
    """The ``AuditEvent`` of ``pack_event(event)`` (equal to ``event``)."""
    (
        kind,
        seconds,
        micro,
        request_id,
        principal,
        token,
        auth,
        remote,
        user_agent,
        operation,
        path,
        environment,
        category,
        version,
        status,
        error,
        emergency,
        data,
        extra,
    ) = packed
    return AuditEvent(
        kind=cast(Kind, kind),
        time=_time(seconds, micro),
        request_id=request_id,
        principal=principal,
        token=token,
        auth=auth,
        remote=remote,
        user_agent=user_agent,
        operation=operation,
        path=path,
        environment=environment,
        category=category,
        version=version,
        status=status,
        error=error,
        emergency=emergency,
        data=data,
        extra=extra,
    )


def unpack_completion(packed: PackedCompletion) -> Completion:
    """The ``Completion`` of ``pack_completion(completion)``."""
    seconds, micro, status, error, version = packed
    return Completion(_time(seconds, micro), status, error, version)
