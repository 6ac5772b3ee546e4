"""``render_line``: every request/response record is the ``FIELDS``-ordered JSON of its event.

Thousands of random events (odd characters, ``None``s, both kinds, repeats with one field
changed, two keys) rendered and compared with a reference built here from the whole dict in
``FIELDS`` order, byte for byte: the layout ``audit verify`` and every reader rely on.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import random
import string

import orjson

from medsecrets.audit.record import (
    FIELDS,
    GENESIS,
    AuditEvent,
    Salter,
    format_time,
    outcome_for,
    render_line,
)

_ALPHABET = string.ascii_letters + string.digits + ' "\\/\n\t\x00\x1f-_.:é中😀'


def _text(rng: random.Random) -> str:
    return "".join(rng.choice(_ALPHABET) for _ in range(rng.randint(0, 12)))


def _maybe(rng: random.Random, value: object) -> object:
    return None if rng.random() < 0.25 else value


def _event(rng: random.Random, pool: list[AuditEvent]) -> AuditEvent:
    if pool and rng.random() < 0.5:  # a repeat of an earlier client and secret
        base = rng.choice(pool)
        if rng.random() < 0.5:  # ... with one field of the middle changed
            base = dataclasses.replace(base, **_one_change(rng, base))
        return AuditEvent(
            kind=base.kind,
            time=dt.datetime.now(dt.UTC) + dt.timedelta(microseconds=rng.randint(0, 10**7)),
            request_id=_text(rng),
            principal=base.principal,
            token=base.token,
            auth=base.auth,
            remote=base.remote,
            user_agent=base.user_agent,
            operation=base.operation,
            path=base.path,
            environment=base.environment,
            category=base.category,
            version=base.version,
            status=base.status,
            error=base.error,
            emergency=base.emergency,
        )
    event = AuditEvent(
        kind=rng.choice(["request", "response"]),
        time=dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        + dt.timedelta(microseconds=rng.randint(0, 10**12)),
        request_id=_text(rng),
        principal=_maybe(rng, _text(rng)),  # type: ignore[arg-type]
        token=_maybe(rng, _text(rng)),  # type: ignore[arg-type]
        auth=_maybe(rng, "token"),  # type: ignore[arg-type]
        remote=_text(rng),
        user_agent=_text(rng),
        operation=_text(rng),
        path=_text(rng),
        environment=_maybe(rng, _text(rng)),  # type: ignore[arg-type]
        category=_maybe(rng, _text(rng)),  # type: ignore[arg-type]
        version=_maybe(rng, rng.randint(0, 10**9)),  # type: ignore[arg-type]
        status=_maybe(rng, rng.choice([200, 204, 401, 403, 404, 409, 503])),  # type: ignore[arg-type]
        error=_maybe(rng, _text(rng)),  # type: ignore[arg-type]
        emergency=rng.random() < 0.1,
    )
    pool.append(event)
    return event


_CHANGEABLE = (
    *("kind", "principal", "token", "auth", "remote", "user_agent", "operation", "path"),
    *("environment", "category", "version", "status", "error", "emergency"),
)


def _one_change(rng: random.Random, event: AuditEvent) -> dict[str, object]:
    name = rng.choice(_CHANGEABLE)
    if name == "kind":
        return {"kind": "response" if event.kind == "request" else "request"}
    if name == "emergency":
        return {"emergency": not event.emergency}
    if name == "version":
        return {"version": None if event.version is not None else 7}
    if name == "status":
        return {"status": 403 if event.status != 403 else 200}
    return {name: None if getattr(event, name) else "changed"}


def _reference(event: AuditEvent, seq: int, prev: str, salter: Salter) -> bytes:
    """The record as the format defines it: the whole dict in ``FIELDS`` order."""
    response = event.kind == "response"
    status = event.status if response else None
    values = {
        "time": format_time(event.time),
        "node": "node-é",
        "device": 'file"1',
        "request_id": event.request_id,
        "principal": event.principal,
        "accessor": salter.hash(event.token) if event.token else None,
        "auth": event.auth,
        "remote": event.remote,
        "user_agent": event.user_agent,
        "operation": event.operation,
        "path": event.path,
        "environment": event.environment,
        "category": event.category,
        "version": event.version,
        "outcome": outcome_for(status) if status is not None else None,
        "status": status,
        "error": event.error if response else None,
        "emergency": event.emergency,
        "data": None,
    }
    body = {name: values[name] for name in FIELDS}
    text = f'{{"prev":"{prev}","seq":{seq},"kind":"{event.kind}",'.encode()
    text += orjson.dumps(body)[1:-1]
    digest = hashlib.sha256(text + b"}").hexdigest()
    return text + b',"hash":"' + digest.encode() + b'"}\n'


def test_records_match_the_whole_dict_rendering_byte_for_byte() -> None:
    rng = random.Random(20261205)
    salters = [Salter(bytes(range(32))), Salter(bytes(range(1, 33)))]
    pool: list[AuditEvent] = []
    prev = GENESIS
    for seq in range(1, 12_001):
        event = _event(rng, pool)
        salter = salters[seq % 2]  # the same events under two keys: accessors differ
        line, digest = render_line(
            event, seq=seq, prev=prev, node="node-é", device='file"1', salter=salter
        )
        assert line == _reference(event, seq, prev, salter), (seq, event)
        prev = digest
