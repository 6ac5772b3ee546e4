"""Labelled synthetic access logs: realistic normal behaviour plus injected anomalies.

This generator is deliberately separate from the detectors (it does not import
``medsecrets.monitor.detectors``): it encodes what normal and abnormal access
*look like*, and the recall test measures the detectors against it.

``generate(seed, normal, per_kind)`` returns ``(records, labels)``:

- ``records``: dicts in our audit record vocabulary (``time``, ``request_id``,
  ``principal``, ``auth``, ``remote``, ``user_agent``, ``operation`` (a route
  name), ``path``, ``environment``, ``category``, ``status``, ``outcome``,
  ``error``, ``emergency``), sorted by time: exactly ``normal`` normal records
  and, for every kind in ``KINDS``, ``per_kind`` anomaly episodes;
- ``labels``: ``{"seed", "normal", "per_kind", "start", "warmup_end",
  "honeytokens", "anomalies": [{"kind", "principal", "ids"}]}``, one entry per
  episode, ``ids`` being the request ids of its records.

Normal behaviour over three weeks from Monday ``START`` (UTC):

- eight services read the secrets of their own categories day and night at a
  steady rate with ±30% jitter, each from three or four addresses of its own
  /24 network; now and then a token expires (a 401, then a new token) or a
  call fails (503), or the service reads its metadata;
- a backup job reads 8-14 production secrets over about three minutes every
  night (many secrets, but slower than a bulk grab);
- eight people work Monday to Friday inside their own hours (one of them in
  a far time zone), each from a desk address, or on a fixed weekday from the
  VPN network, in sessions of 1-8 actions a few seconds to a minute apart;
  they read (most), inspect metadata, list, write, check their token, and
  sometimes are refused (403) or ask for a missing secret (404), always
  within their own categories;
- a monitoring job calls ``sys.health`` steadily.

Anomaly episodes start after ``warmup_end`` (the detectors learn baselines
during the first week) and keep apart from other episodes of the same
principal: 10 minutes between bursts of different kinds, 65 minutes (more
than the detectors' one-hour alert repeat period) between episodes of the
same kind and around single-event anomalies, so each episode stands on its
own. Services misbehave at any hour, people inside their working hours
(except ``unusual_time``). The episodes are:

- ``rate``: 52-62 reads of the principal's own secrets within 100-280 s;
- ``bulk``: 21-30 distinct secrets read within 15-50 s;
- ``enumeration``: 21-30 list calls, or metadata reads of 21-30 distinct
  secrets one by one (half the episodes each), within 15-50 s;
- ``failed_burst``: 6-10 refused calls within 10-45 s, by a known principal
  from its own address or, unauthenticated, from an outside address;
- ``unusual_time``: a person's read at least two hours outside any hour they
  work, or at a weekend;
- ``new_source``: reads from an outside network the principal never used;
- ``first_category``: a read in a category the principal never touched;
- ``emergency``: 1-3 accesses with an emergency (break-glass) token;
- ``honeytoken``: a read of a decoy secret (``HONEYTOKENS``).

``write(out, fmt, records, labels)`` renders the records as our hash-chained
audit log (request and response records), as CloudTrail log files
(``{"Records": [...]}``, one gzip file per hour, with unrelated KMS events as
noise) or as a Vault file audit log (request and response entries), plus
``labels.json``. From the command line::

    python -m medsecrets.testing.anomalies --out DIR --format ours|cloudtrail|vault \\
        --seed N --normal 10000 --per-kind 200

Everything is deterministic for a seed. The data is synthetic: no value in it
is a secret (tokens and HMAC keys are derived from the seed).
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import gzip
import hashlib
import hmac
import json
import random
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

from medsecrets.audit.record import (
    GENESIS,
    AuditEvent,
    Salter,
    outcome_for,
    render_line,
    split_path,
)

__all__ = [
    "DAYS",
    "HONEYTOKENS",
    "KINDS",
    "PREFIX",
    "START",
    "generate",
    "main",
    "write",
]

KINDS: Final = (
    "rate",
    "bulk",
    "enumeration",
    "failed_burst",
    "unusual_time",
    "new_source",
    "first_category",
    "emergency",
    "honeytoken",
)
PREFIX: Final = "medessence"
START: Final = dt.datetime(2025, 3, 3, tzinfo=dt.UTC)  # a Monday
DAYS: Final = 21
WARMUP_DAYS: Final = 8
"""Anomalies start after this many days (the detectors' default warm-up is 7 days)."""
HONEYTOKENS: Final = (
    "production/database/legacy-admin",
    "production/auth/root-signing-key",
    "staging/external-services/old-backup",
)
"""Decoy secret paths, relative to ``PREFIX`` (as a catalog's ``honeytokens`` lists them)."""

SECRETS: Final = {
    "database": ("primary", "replica", "analytics", "reporting"),
    "ai-providers": ("openai", "anthropic", "google", "azure"),
    "medical-encryption": ("phi", "records", "files"),
    "auth": ("jwt", "sessions"),
    "external-services": ("smtp", "slack", "sentry", "backup"),
}
ENVIRONMENTS: Final = ("production", "staging", "development")
ACCOUNT: Final = "111122223333"
_SPAN = DAYS * 86400.0
_ANOMALY_START = WARMUP_DAYS * 86400.0
_OUTSIDE_OCTETS: Final = (23, 31, 45, 52, 63, 77, 91, 103, 145, 178, 185, 203, 212)


@dataclass(frozen=True, slots=True)
class _Service:
    name: str
    paths: tuple[str, ...]
    addresses: tuple[str, ...]

    @property
    def principal(self) -> str:
        return f"svc-{self.name}"

    @property
    def categories(self) -> frozenset[str]:
        return frozenset(p.split("/")[2] for p in self.paths)


@dataclass(frozen=True, slots=True)
class _Person:
    name: str
    categories: tuple[str, ...]
    environments: tuple[str, ...]
    start: float  # working hours (UTC, hours): [start, end)
    end: float
    remote_day: int  # weekday (0 = Monday) worked from the VPN
    desk: str

    @property
    def principal(self) -> str:
        return self.name


def _path(environment: str, category: str, name: str) -> str:
    return f"{PREFIX}/{environment}/{category}/{name}"


def _population(rng: random.Random) -> tuple[list[_Service], list[_Person]]:
    plans = (
        ("api-gateway", "production", (("auth", "jwt"), ("auth", "sessions"))),
        ("ml-inference", "production", (("ai-providers", "openai"), ("ai-providers", "anthropic"))),
        ("ehr-sync", "production", (("database", "primary"), ("medical-encryption", "phi"))),
        ("billing-worker", "production", (("database", "primary"), ("external-services", "smtp"))),
        ("report-builder", "production", (("database", "reporting"), ("database", "analytics"))),
        ("notifier", "production", (("external-services", "slack"), ("external-services", "smtp"))),
        ("records-api", "production", (("medical-encryption", "records"), ("database", "replica"))),
        ("staging-api", "staging", (("auth", "jwt"), ("database", "primary"))),
    )
    services = []
    for number, (name, environment, secrets) in enumerate(plans, 1):
        hosts = rng.sample(range(10, 250), rng.randint(3, 4))
        services.append(
            _Service(
                name,
                tuple(_path(environment, c, n) for c, n in secrets),
                tuple(f"10.30.{number}.{h}" for h in hosts),
            )
        )
    all_categories = tuple(SECRETS)
    people_plans = (
        ("alice", all_categories[:4], ("production", "staging"), 8.0, 17.0, 4),
        ("bob", ("database", "medical-encryption"), ("production",), 7.0, 16.0, 2),
        ("carol", ("ai-providers", "database"), ("staging", "development"), 9.0, 18.0, 0),
        ("dan", ("auth", "external-services", "medical-encryption"), ("production",), 8.0, 17.0, 3),
        (
            "erin",
            ("auth", "database", "external-services"),
            ("staging", "development"),
            10.0,
            19.0,
            1,
        ),
        ("frank", ("database",), ("production", "staging"), 8.0, 17.0, 4),
        ("grace", ("database", "auth", "external-services"), ("production",), 7.0, 16.0, 0),
        ("heidi", ("medical-encryption",), ("production",), 13.0, 22.0, 2),
    )
    people = [
        _Person(name, cats, envs, start, end, remote, f"10.1.0.{20 + i}")
        for i, (name, cats, envs, start, end, remote) in enumerate(people_plans)
    ]
    return services, people


class _Builder:
    """Accumulates records and the per-principal episode calendar."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)  # noqa: S311 - synthetic test data, not security
        self.records: list[tuple[float, dict[str, object]]] = []
        self.services, self.people = _population(self.rng)
        self._busy: dict[str, list[tuple[float, float, str]]] = {}
        self._vpn: dict[tuple[str, int], str] = {}
        self._outside: set[str] = set()
        self._paths = [
            _path(env, cat, name)
            for env in ENVIRONMENTS
            for cat, names in SECRETS.items()
            for name in names
        ]

    # --- records -------------------------------------------------------------------------

    def new_id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def add(
        self,
        ts: float,
        principal: str,
        remote: str,
        operation: str,
        path: str = "",
        *,
        status: int = 200,
        auth: str = "token",
        agent: str = "medsecrets-sdk/0.1",
        emergency: bool = False,
    ) -> str:
        environment, category = split_path(path, PREFIX) if path else (None, None)
        request_id = self.new_id()
        self.records.append(
            (
                ts,
                {
                    "time": "",
                    "request_id": request_id,
                    "principal": principal,
                    "auth": auth if principal else None,
                    "remote": remote,
                    "user_agent": agent,
                    "operation": operation,
                    "path": path,
                    "environment": environment,
                    "category": category,
                    "status": status,
                    "outcome": outcome_for(status),
                    "error": _ERRORS.get(status),
                    "emergency": emergency,
                },
            )
        )
        return request_id

    def vpn(self, person: _Person, day: int) -> str:
        key = (person.name, day)
        if key not in self._vpn:
            self._vpn[key] = f"10.8.0.{self.rng.randint(2, 254)}"
        return self._vpn[key]

    def source(self, principal: _Service | _Person, ts: float) -> str:
        """The address this principal uses at ``ts`` in normal life."""
        if isinstance(principal, _Service):
            return self.rng.choice(principal.addresses)
        day = int(ts // 86400)
        weekday = (START.weekday() + day) % 7
        return self.vpn(principal, day) if weekday == principal.remote_day else principal.desk

    def outside(self) -> str:
        """A fresh address in an outside /24 never used before."""
        while True:
            octets = (self.rng.choice(_OUTSIDE_OCTETS), self.rng.randint(0, 255))
            network = f"{octets[0]}.{octets[1]}.{self.rng.randint(0, 255)}"
            if network not in self._outside:
                self._outside.add(network)
                return f"{network}.{self.rng.randint(1, 254)}"

    # --- normal behaviour ------------------------------------------------------------------

    def normal(self, count: int) -> None:
        monitoring = max(1, count * 3 // 100)
        people = count * 30 // 100
        backups = self._backups(count * 3 // 100)
        services = count - monitoring - people - backups
        shares = [services // len(self.services)] * len(self.services)
        shares[0] += services - sum(shares)
        for service, share in zip(self.services, shares, strict=True):
            self._service(service, share)
        self._people(people)
        period = _SPAN / monitoring
        for k in range(monitoring):
            ts = (k + 0.5 + self.rng.uniform(-0.2, 0.2)) * period
            self.add(ts, "svc-monitoring", "10.40.0.5", "sys.health", agent="prometheus/2.51")

    def _backups(self, budget: int) -> int:
        """A nightly backup job: 8-14 production secrets read over about three minutes."""
        production = [p for p in self._paths if p.split("/")[1] == "production"]
        done = 0
        for day in range(DAYS):
            ts = day * 86400.0 + 2 * 3600.0 + self.rng.uniform(-600.0, 600.0)
            batch = self.rng.sample(production, self.rng.randint(8, 14))
            if done + len(batch) > budget:
                break
            for path in batch:
                self.add(ts, "svc-backup-agent", "10.30.9.5", "secrets.read", path)
                ts += self.rng.uniform(8.0, 20.0)
            done += len(batch)
        return done

    def _service(self, service: _Service, count: int) -> None:
        period = _SPAN / count
        done = 0
        k = 0
        while done < count:
            ts = (k + 0.5 + self.rng.uniform(-0.3, 0.3)) * period
            k += 1
            remote = self.source(service, ts)
            path = self.rng.choice(service.paths)
            roll = self.rng.random()
            if roll < 0.003 and done + 2 <= count:  # token expired: refused, then a new token
                self.add(ts, service.principal, remote, "secrets.read", path, status=401)
                self.add(ts + 0.2, service.principal, remote, "tokens.create", auth="approle")
                done += 2
                continue
            if roll < 0.006:
                self.add(ts, service.principal, remote, "secrets.read", path, status=503)
            elif roll < 0.02:
                self.add(ts, service.principal, remote, "metadata.read", path)
            else:
                self.add(ts, service.principal, remote, "secrets.read", path)
            done += 1

    def _people(self, count: int) -> None:
        workdays = [d for d in range(DAYS) if (START.weekday() + d) % 7 < 5]
        hours = {
            (p.name, d): (
                p.start + self.rng.uniform(-0.5, 0.5),
                p.end + self.rng.uniform(-0.5, 0.5),
            )
            for p in self.people
            for d in workdays
        }
        shares = [count // len(self.people)] * len(self.people)
        shares[0] += count - sum(shares)
        for person, share in zip(self.people, shares, strict=True):
            done = 0
            while done < share:  # sessions: 1-8 actions a few seconds to a minute apart
                day = self.rng.choice(workdays)
                begin, end = hours[(person.name, day)]
                ts = day * 86400.0 + self.rng.uniform(begin, end) * 3600.0
                for _ in range(min(self.rng.randint(1, 8), share - done)):
                    self._person_action(person, ts)
                    ts += self.rng.uniform(3.0, 60.0)
                    done += 1

    def _person_action(self, person: _Person, ts: float) -> None:
        rng = self.rng
        remote = self.source(person, ts)
        environment = rng.choice(person.environments)
        category = rng.choice(person.categories)
        path = _path(environment, category, rng.choice(SECRETS[category]))
        agent = "medsecrets-cli/0.1"
        roll = rng.random()
        if roll < 0.64:
            self.add(ts, person.name, remote, "secrets.read", path, auth="oidc", agent=agent)
        elif roll < 0.74:
            self.add(ts, person.name, remote, "metadata.read", path, auth="oidc", agent=agent)
        elif roll < 0.81:
            listing = f"{PREFIX}/{environment}/{category}"
            self.add(ts, person.name, remote, "metadata.list", listing, auth="oidc", agent=agent)
        elif roll < 0.87:
            self.add(ts, person.name, remote, "secrets.write", path, auth="oidc", agent=agent)
        elif roll < 0.91:
            self.add(ts, person.name, remote, "tokens.self", auth="oidc", agent=agent)
        elif roll < 0.93:
            self.add(ts, person.name, remote, "secrets.validate", path, auth="oidc", agent=agent)
        elif roll < 0.95:
            self.add(ts, person.name, remote, "secrets.read", path, status=403, auth="oidc")
        else:
            missing = _path(environment, category, f"{rng.choice(SECRETS[category])}-old")
            self.add(ts, person.name, remote, "secrets.read", missing, status=404, auth="oidc")

    # --- anomalies ---------------------------------------------------------------------------

    def slot(self, principal: str, kind: str, duration: float, pick: Callable[[], float]) -> float:
        """A start time from ``pick`` when ``principal`` is free (see module docstring)."""
        busy = self._busy.setdefault(principal, [])
        for _ in range(20_000):
            start = pick()
            end = start + duration
            if all(end + _gap(kind, k) <= s or start - _gap(kind, k) >= e for s, e, k in busy):
                busy.append((start, end, kind))
                return start
        raise RuntimeError(f"no free slot for {principal} ({kind}): too many episodes asked")

    def any_time(self) -> float:
        return self.rng.uniform(_ANOMALY_START, _SPAN - 3600.0)

    def working_time(self, person: _Person) -> float:
        """A time well inside the person's working hours on a weekday after warm-up."""
        days = [d for d in range(WARMUP_DAYS, DAYS) if (START.weekday() + d) % 7 < 5]
        day = self.rng.choice(days)
        return day * 86400.0 + self.rng.uniform(person.start + 0.5, person.end - 1.0) * 3600.0

    def off_hours(self, person: _Person) -> float:
        """A weekend time, or a weekday hour two or more hours away from the person's hours."""
        while True:
            day = self.rng.randrange(WARMUP_DAYS, DAYS)
            hour = self.rng.randrange(24)
            weekend = (START.weekday() + day) % 7 >= 5
            if weekend or hour <= person.start - 3 or hour >= person.end + 2:
                return day * 86400.0 + (hour + self.rng.uniform(0.05, 0.95)) * 3600.0

    def actor(
        self, exclude: Callable[[_Service | _Person], bool] | None = None
    ) -> _Service | _Person:
        """Who misbehaves: a service 80% of the time, else a person."""
        while True:
            pool: Sequence[_Service | _Person] = (
                self.services if self.rng.random() < 0.8 else self.people
            )
            found = self.rng.choice(pool)
            if exclude is None or not exclude(found):
                return found

    def own_paths(self, actor: _Service | _Person) -> list[str]:
        if isinstance(actor, _Service):
            return list(actor.paths)
        return [
            _path(env, cat, name)
            for env in actor.environments
            for cat in actor.categories
            for name in SECRETS[cat]
        ]

    def start_for(self, actor: _Service | _Person, kind: str, duration: float) -> float:
        """Services misbehave at any hour; people inside their working hours."""
        if isinstance(actor, _Person):
            person = actor
            return self.slot(person.name, kind, duration, lambda: self.working_time(person))
        return self.slot(actor.principal, kind, duration, self.any_time)

    def burst(
        self,
        actor: _Service | _Person,
        kind: str,
        operation: str,
        paths: Sequence[str],
        duration: float,
        *,
        status: int = 200,
    ) -> tuple[str, list[str]]:
        """``paths`` accessed in turn, evenly over ``duration``, from the actor's own address."""
        start = self.start_for(actor, kind, duration)
        remote = self.source(actor, start)
        step = duration / len(paths)
        principal = actor.principal
        ids = [
            self.add(start + step * i, principal, remote, operation, path, status=status)
            for i, path in enumerate(paths)
        ]
        return principal, ids

    def rate(self) -> tuple[str, list[str]]:
        actor = self.actor()
        own = self.own_paths(actor)
        favourites = self.rng.sample(own, min(2, len(own)))
        paths = [self.rng.choice(favourites) for _ in range(self.rng.randint(52, 62))]
        return self.burst(actor, "rate", "secrets.read", paths, self.rng.uniform(100.0, 280.0))

    def bulk(self) -> tuple[str, list[str]]:
        paths = self.rng.sample(self._paths, self.rng.randint(21, 30))
        duration = self.rng.uniform(15.0, 50.0)
        return self.burst(self.actor(), "bulk", "secrets.read", paths, duration)

    def enumeration(self) -> tuple[str, list[str]]:
        if self.rng.random() < 0.5:  # the metadata of distinct secrets, one by one
            paths = self.rng.sample(self._paths, self.rng.randint(21, 30))
            duration = self.rng.uniform(15.0, 50.0)
            return self.burst(self.actor(), "enumeration", "metadata.read", paths, duration)
        listings = [f"{PREFIX}/{env}/{cat}" for env in ENVIRONMENTS for cat in SECRETS]
        paths = [self.rng.choice(listings) for _ in range(self.rng.randint(21, 30))]
        duration = self.rng.uniform(15.0, 50.0)
        return self.burst(self.actor(), "enumeration", "metadata.list", paths, duration)

    def failed_burst(self) -> tuple[str, list[str]]:
        rng = self.rng
        paths = [rng.choice(self._paths) for _ in range(rng.randint(6, 10))]
        duration = rng.uniform(10.0, 45.0)
        if rng.random() < 0.5:
            actor = self.actor()
            return self.burst(actor, "failed_burst", "secrets.read", paths, duration, status=403)
        remote = self.outside()  # unauthenticated, from outside
        start = self.slot(f"outside:{remote}", "failed_burst", duration, self.any_time)
        step = duration / len(paths)
        ids = [
            self.add(start + step * i, "", remote, "secrets.read", path, status=401, agent="curl/8")
            for i, path in enumerate(paths)
        ]
        return "", ids

    def unusual_time(self) -> tuple[str, list[str]]:
        person = self.rng.choice(self.people)
        start = self.slot(person.name, "unusual_time", 1.0, lambda: self.off_hours(person))
        path = self.rng.choice(self.own_paths(person))
        return person.name, [
            self.add(start, person.name, self.source(person, start), "secrets.read", path)
        ]

    def new_source(self) -> tuple[str, list[str]]:
        actor = self.actor()
        start = self.start_for(actor, "new_source", 60.0)
        remote = self.outside()
        own = self.own_paths(actor)
        ids = [
            self.add(
                start + 30.0 * i, actor.principal, remote, "secrets.read", self.rng.choice(own)
            )
            for i in range(self.rng.randint(1, 2))
        ]
        return actor.principal, ids

    def first_category(self) -> tuple[str, list[str]]:
        actor = self.actor(exclude=lambda a: len(_categories(a)) == len(SECRETS))
        start = self.start_for(actor, "first_category", 1.0)
        category = self.rng.choice(sorted(set(SECRETS) - _categories(actor)))
        environment = self.rng.choice(ENVIRONMENTS[:2])
        path = _path(environment, category, self.rng.choice(SECRETS[category]))
        remote = self.source(actor, start)
        return actor.principal, [self.add(start, actor.principal, remote, "secrets.read", path)]

    def emergency(self) -> tuple[str, list[str]]:
        principal = f"break-glass-{self.rng.randint(1, 4)}"
        start = self.slot(principal, "emergency", 120.0, self.any_time)
        ids = []
        for i in range(self.rng.randint(1, 3)):
            ids.append(
                self.add(
                    start + i * 40.0,
                    principal,
                    "10.1.0.250",
                    "secrets.write" if i == 2 else "secrets.read",
                    self.rng.choice(self._paths),
                    agent="medsecrets-cli/0.1",
                    emergency=True,
                )
            )
        return principal, ids

    def honeytoken(self) -> tuple[str, list[str]]:
        actor = self.actor()
        start = self.start_for(actor, "honeytoken", 1.0)
        path = f"{PREFIX}/{self.rng.choice(HONEYTOKENS)}"
        remote = self.source(actor, start)
        return actor.principal, [self.add(start, actor.principal, remote, "secrets.read", path)]

    def episode(self, kind: str) -> tuple[str, list[str]]:
        """One anomaly episode of ``kind``: ``(principal, request ids)``."""
        if kind not in KINDS:
            raise ValueError(f"unknown anomaly kind {kind!r}")
        method: Callable[[], tuple[str, list[str]]] = getattr(self, kind)
        return method()


_SINGLE: Final = frozenset(
    {"unusual_time", "new_source", "first_category", "emergency", "honeytoken"}
)


def _gap(kind: str, other: str) -> float:
    """Seconds kept between two episodes of one principal (see module docstring)."""
    return 3900.0 if kind == other or kind in _SINGLE or other in _SINGLE else 600.0


def _categories(actor: _Service | _Person) -> frozenset[str]:
    return actor.categories if isinstance(actor, _Service) else frozenset(actor.categories)


_ERRORS: Final = {
    401: "authentication_failed",
    403: "permission_denied",
    404: "not_found",
    503: "unavailable",
}


def _iso(ts: float) -> str:
    return (START + dt.timedelta(seconds=ts)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def generate(
    seed: int, normal: int = 10_000, per_kind: int = 200
) -> tuple[list[dict[str, object]], dict[str, object]]:
    """``(records, labels)`` for ``seed`` (see module docstring)."""
    if normal < 100 or per_kind < 1:
        raise ValueError("ask for at least 100 normal records and 1 episode per kind")
    builder = _Builder(seed)
    builder.normal(normal)
    anomalies = []
    for kind in KINDS:
        for _ in range(per_kind):
            principal, ids = builder.episode(kind)
            anomalies.append({"kind": kind, "principal": principal, "ids": ids})
    builder.records.sort(key=lambda item: item[0])
    records = []
    for ts, record in builder.records:
        record["time"] = _iso(ts)
        records.append(record)
    labels: dict[str, object] = {
        "seed": seed,
        "normal": normal,
        "per_kind": per_kind,
        "start": _iso(0.0),
        "warmup_end": _iso(_ANOMALY_START),
        "honeytokens": list(HONEYTOKENS),
        "anomalies": anomalies,
    }
    return records, labels


# --- writers -------------------------------------------------------------------------------------


def _str(record: dict[str, object], key: str) -> str:
    value = record.get(key)
    return value if isinstance(value, str) else ""


def _status(record: dict[str, object]) -> int:
    value = record.get("status")
    return value if isinstance(value, int) else 200


def _key(seed: int, purpose: str) -> bytes:
    return hashlib.sha256(f"medsecrets-anomalies/{seed}/{purpose}".encode()).digest()


def _write_ours(path: Path, records: Iterable[dict[str, object]], seed: int) -> None:
    """Our hash-chained audit log: a request and a response record per access."""
    salter = Salter(_key(seed, "audit-hmac"))
    prev = GENESIS
    seq = 0
    with path.open("wb") as out:
        for record in records:
            principal = _str(record, "principal")
            time = dt.datetime.fromisoformat(_str(record, "time"))
            request = AuditEvent(
                kind="request",
                time=time,
                request_id=_str(record, "request_id"),
                principal=principal or None,
                token=f"synthetic-token-{principal}" if principal else None,
                auth=_str(record, "auth") or None,
                remote=_str(record, "remote"),
                user_agent=_str(record, "user_agent"),
                operation=_str(record, "operation"),
                path=_str(record, "path"),
                environment=_str(record, "environment") or None,
                category=_str(record, "category") or None,
                emergency=record.get("emergency") is True,
            )
            response = replace(
                request,
                kind="response",
                time=time + dt.timedelta(milliseconds=3),
                status=_status(record),
                error=_str(record, "error") or None,
            )
            for event in (request, response):
                seq += 1
                line, prev = render_line(
                    event, seq=seq, prev=prev, node="synthetic-1", device="file", salter=salter
                )
                out.write(line)


_CLOUDTRAIL_NAMES: Final = {
    "secrets.read": "GetSecretValue",
    "metadata.list": "ListSecrets",
    "secrets.write": "PutSecretValue",
    "secrets.delete": "DeleteSecret",
    "metadata.read": "DescribeSecret",
    "secrets.validate": "ValidateResourcePolicy",
}
"""Our routes as Secrets Manager calls; the rest (tokens, health) as ``GetRandomPassword``."""
_CLOUDTRAIL_ERRORS: Final = {
    401: ("AccessDenied", "User is not authorized to perform this operation"),
    403: ("AccessDenied", "User is not authorized to perform this operation"),
    404: ("ResourceNotFoundException", "Secrets Manager can't find the specified secret."),
    503: ("InternalServiceError", "An error occurred on the server side."),
}


def _short(seed: int, text: str, size: int) -> str:
    """``size`` hex digits derived from ``seed`` and ``text`` (stable synthetic ids)."""
    return hashlib.sha256(f"{seed}/{text}".encode()).hexdigest()[:size]


def _session_epoch(principal: str, time: str, seed: int) -> int:
    """When a service's current credentials were made: the AWS SDK assumes its role again
    every hour (at an offset of its own) and names each session ``botocore-session-<epoch>``."""
    ts = dt.datetime.fromisoformat(time.replace("Z", "+00:00")).timestamp()
    offset = int(_short(seed, "refresh/" + principal, 4), 16) % 3600
    return int((ts - offset) // 3600 * 3600 + offset)


@functools.lru_cache(maxsize=4096)
def _aws_identity(principal: str, seed: int, epoch: int = 0) -> dict[str, object]:
    """A CloudTrail ``userIdentity`` for one of the generator's principals (a service's session
    made at ``epoch``)."""
    if not principal:
        return {"type": "AWSAccount", "accountId": "444455556666"}
    if principal.startswith("svc-"):
        role, session = f"{principal[4:]}-task", f"botocore-session-{epoch}"
    elif principal.startswith("break-glass-"):
        role, session = "BreakGlassAdmin", principal
    else:
        role, session = (
            "AWSReservedSSO_Engineer_5f2c1d9e0a7b3c4d",
            f"{principal}@medessence.example",
        )
    role_id = "AROA" + _short(seed, role, 16).upper()
    return {
        "type": "AssumedRole",
        "principalId": f"{role_id}:{session}",
        "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/{role}/{session}",
        "accountId": ACCOUNT,
        "accessKeyId": "ASIA" + _short(seed, session, 16).upper(),
        "sessionContext": {
            "sessionIssuer": {
                "type": "Role",
                "principalId": role_id,
                "arn": f"arn:aws:iam::{ACCOUNT}:role/{role}",
                "accountId": ACCOUNT,
                "userName": role,
            },
            "attributes": {"creationDate": "2025-03-03T00:00:00Z", "mfaAuthenticated": "false"},
        },
    }


def _secret_arn(path: str, seed: int) -> str:
    suffix = _short(seed, path, 6)
    return f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:{path}-{suffix}"


def _cloudtrail_records(record: dict[str, object], seed: int) -> list[dict[str, object]]:
    """The CloudTrail record of one access, plus (sometimes) the KMS call it caused."""
    route = _str(record, "operation")
    name = _CLOUDTRAIL_NAMES.get(route, "GetRandomPassword")
    path = _str(record, "path")
    principal = _str(record, "principal")
    params: dict[str, object] = {"excludePunctuation": True}
    if name == "ListSecrets":
        params = {"filters": [{"key": "name", "values": [path + "/"]}], "maxResults": 100}
    elif name != "GetRandomPassword":
        # services name secrets by ARN, people by name
        params = {"secretId": _secret_arn(path, seed) if principal.startswith("svc-") else path}
    time = _str(record, "time")[:19] + "Z"
    request_id = _str(record, "request_id")
    epoch = _session_epoch(principal, time, seed) if principal.startswith("svc-") else 0
    event: dict[str, object] = {
        "eventVersion": "1.09",
        "userIdentity": _aws_identity(principal, seed, epoch),
        "eventTime": time,
        "eventSource": "secretsmanager.amazonaws.com",
        "eventName": name,
        "awsRegion": "us-east-1",
        "sourceIPAddress": _str(record, "remote"),
        "userAgent": _str(record, "user_agent"),
        "requestParameters": params,
        "responseElements": None,
        "requestID": str(uuid.UUID(_short(seed, request_id, 32))),
        "eventID": request_id,
        "readOnly": name not in ("PutSecretValue", "DeleteSecret"),
        "eventType": "AwsApiCall",
        "managementEvent": True,
        "recipientAccountId": ACCOUNT,
        "eventCategory": "Management",
        "tlsDetails": {
            "tlsVersion": "TLSv1.3",
            "cipherSuite": "TLS_AES_128_GCM_SHA256",
            "clientProvidedHostHeader": "secretsmanager.us-east-1.amazonaws.com",
        },
    }
    error = _CLOUDTRAIL_ERRORS.get(_status(record))
    if error is not None:
        event["errorCode"], event["errorMessage"] = error
    if name != "GetSecretValue" or error is not None or int(request_id[:2], 16) % 4:
        return [event]
    decrypt: dict[str, object] = {
        "eventVersion": "1.09",
        "userIdentity": {"type": "AWSService", "invokedBy": "secretsmanager.amazonaws.com"},
        "eventTime": time,
        "eventSource": "kms.amazonaws.com",
        "eventName": "Decrypt",
        "awsRegion": "us-east-1",
        "sourceIPAddress": "secretsmanager.amazonaws.com",
        "userAgent": "secretsmanager.amazonaws.com",
        "requestParameters": {
            "encryptionContext": {"SecretARN": _secret_arn(path, seed)},
            "encryptionAlgorithm": "SYMMETRIC_DEFAULT",
        },
        "responseElements": None,
        "eventID": str(uuid.UUID(_short(seed, "kms" + request_id, 32))),
        "readOnly": True,
        "eventType": "AwsApiCall",
        "managementEvent": True,
        "recipientAccountId": ACCOUNT,
        "eventCategory": "Management",
    }
    return [event, decrypt]


def _write_cloudtrail(folder: Path, records: Iterable[dict[str, object]], seed: int) -> list[Path]:
    """CloudTrail log files: one gzip ``{"Records": [...]}`` document per hour."""
    folder.mkdir(parents=True, exist_ok=True)
    hours: dict[str, list[dict[str, object]]] = {}
    for record in records:
        hours.setdefault(_str(record, "time")[:13], []).extend(_cloudtrail_records(record, seed))
    files = []
    for hour, events in hours.items():
        stamp = hour.replace("-", "") + "00Z"
        name = f"{ACCOUNT}_CloudTrail_us-east-1_{stamp}_{_short(seed, hour, 16)}.json.gz"
        path = folder / name
        with gzip.open(path, "wb", compresslevel=1) as out:
            out.write(json.dumps({"Records": events}, separators=(",", ":")).encode())
        files.append(path)
    return files


_VAULT_ERRORS: Final = {
    401: "1 error occurred:\n\t* permission denied\n\n",
    403: "1 error occurred:\n\t* permission denied\n\n",
    503: "internal error",
}


def _vault_request(route: str, path: str) -> tuple[str, str, str, str]:
    """``(operation, path, mount point, mount type)`` of one of our routes in Vault."""
    if route == "secrets.read":
        return "read", f"secret/data/{path}", "secret/", "kv"
    if route == "secrets.write":
        return "update", f"secret/data/{path}", "secret/", "kv"
    if route == "secrets.delete":
        return "delete", f"secret/data/{path}", "secret/", "kv"
    if route == "metadata.read":
        return "read", f"secret/metadata/{path}", "secret/", "kv"
    if route == "metadata.list":
        return "list", f"secret/metadata/{path}/", "secret/", "kv"
    if route == "tokens.create":
        return "update", "auth/approle/login", "auth/approle/", "approle"
    if route.startswith("tokens."):
        return "read", "auth/token/lookup-self", "auth/token/", "token"
    return "read", "sys/" + route.replace(".", "/"), "sys/", "system"


_UNNAMED_TOKENS: Final = frozenset({"svc-backup-agent", "svc-monitoring"})
"""Jobs given a token made with ``vault token create`` and no ``-display-name``: Vault names
every such token ``token`` (and gives it no entity)."""


def _vault_auth(principal: str, emergency: bool, token: str, seed: int) -> dict[str, object]:
    if not principal:
        return {}
    auth: dict[str, object] = {
        "accessor": token.replace("hmac-sha256:", "hmac-sha256:0"),
        "client_token": token,
        "token_type": "service",
        "token_ttl": 3600,
    }
    if principal in _UNNAMED_TOKENS:
        policies = ["default", principal[4:]]
        auth.update(display_name="token")
    elif principal.startswith("svc-"):
        policies = ["default", principal[4:]]
        auth.update(display_name="approle", metadata={"role_name": principal[4:]})
    elif emergency:
        policies = ["default", "break-glass"]
        auth.update(display_name=f"token-{principal}", metadata={"emergency": "true"})
    else:
        policies = ["default", "engineer"]
        auth.update(display_name=f"oidc-{principal}", metadata={"username": principal})
    if principal not in _UNNAMED_TOKENS and not emergency:  # logins make an entity
        auth["entity_id"] = str(uuid.UUID(_short(seed, "entity/" + principal, 32)))
    auth["policies"] = auth["token_policies"] = policies
    auth["policy_results"] = {
        "allowed": True,
        "granting_policies": [{"name": policies[-1], "namespace_id": "root", "type": "acl"}],
    }
    return auth


def _write_vault(path: Path, records: Iterable[dict[str, object]], seed: int) -> None:
    """A Vault file audit log: a request and a response entry per access, members in the
    order Vault writes them (``audit/types.go``: ``time``, ``auth``, ``error``, ``request``,
    ``response``, and ``type`` last)."""
    key = _key(seed, "vault-hmac")

    def hashed(text: str) -> str:
        return "hmac-sha256:" + hmac.new(key, text.encode(), hashlib.sha256).hexdigest()

    dumps = json.JSONEncoder(separators=(",", ":")).encode
    with path.open("w", encoding="utf-8") as out:
        for record in records:
            principal = _str(record, "principal")
            operation, vault_path, mount, mount_type = _vault_request(
                _str(record, "operation"), _str(record, "path")
            )
            token = hashed(f"token-{principal}")
            auth = _vault_auth(principal, record.get("emergency") is True, token, seed)
            request = {
                "id": _str(record, "request_id"),
                "client_id": _short(seed, "client/" + principal, 16) if principal else "",
                "operation": operation,
                "mount_point": mount,
                "mount_type": mount_type,
                "client_token": token if principal else "",
                "client_token_accessor": auth.get("accessor", ""),
                "namespace": {"id": "root"},
                "path": vault_path,
                "remote_address": _str(record, "remote"),
                "remote_port": 40000 + int(_str(record, "request_id")[:3], 16) % 20000,
            }
            time = _str(record, "time")[:-1] + "123Z"  # RFC 3339 with nanoseconds
            out.write(dumps({"time": time, "auth": auth, "request": request, "type": "request"}))
            out.write("\n")
            response: dict[str, object] = {"time": time, "auth": auth}
            status = _status(record)
            error = _VAULT_ERRORS.get(status)
            if error is not None:
                response["error"] = error
            response["request"] = request
            response["response"] = {"mount_point": mount, "mount_type": mount_type}
            if status < 400 and operation == "read" and mount_type == "kv":
                response["response"] = {
                    "mount_point": mount,
                    "mount_type": mount_type,
                    "data": {"data": {"value": hashed(vault_path)}},
                }
            response["type"] = "response"
            out.write(dumps(response))
            out.write("\n")


def write(
    out: str | Path, fmt: str, records: Sequence[dict[str, object]], labels: dict[str, object]
) -> list[Path]:
    """Write ``records`` in format ``fmt`` under ``out`` plus ``labels.json``; the log files.

    ``ours`` → ``audit.log``; ``cloudtrail`` → ``cloudtrail/*.json.gz``;
    ``vault`` → ``vault_audit.log``.
    """
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    seed = labels.get("seed")
    seed = seed if isinstance(seed, int) else 0
    if fmt == "ours":
        files = [folder / "audit.log"]
        _write_ours(files[0], records, seed)
    elif fmt == "cloudtrail":
        files = _write_cloudtrail(folder / "cloudtrail", records, seed)
    elif fmt == "vault":
        files = [folder / "vault_audit.log"]
        _write_vault(files[0], records, seed)
    else:
        raise ValueError(f"unknown format {fmt!r} (known: ours, cloudtrail, vault)")
    document = {**labels, "format": fmt, "files": [str(f.relative_to(folder)) for f in files]}
    (folder / "labels.json").write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    return files


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point (see module docstring)."""
    parser = argparse.ArgumentParser(
        prog="python -m medsecrets.testing.anomalies",
        description="Write a labelled synthetic access log (normal behaviour + anomalies).",
    )
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--format", choices=("ours", "cloudtrail", "vault"), default="ours")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--normal", type=int, default=10_000, help="normal records")
    parser.add_argument("--per-kind", type=int, default=200, help="anomaly episodes per kind")
    args = parser.parse_args(argv)
    try:
        records, labels = generate(args.seed, args.normal, args.per_kind)
    except (ValueError, RuntimeError) as exc:
        parser.error(str(exc))
    files = write(args.out, args.format, records, labels)
    episodes = len(labels["anomalies"])  # type: ignore[arg-type]
    print(
        f"wrote {len(records)} records ({args.normal} normal, {episodes} anomaly episodes "
        f"of {len(KINDS)} kinds) as {args.format} to {len(files)} file(s) in {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
