"""``SecretsEngine``: versioned, staged, soft-deletable secrets above the barrier.

Storage layout (every record is encrypted by the barrier; values additionally
by the envelope, with a data key per version):

- ``secrets/meta/<path>``: one JSON metadata record per secret (versions,
  stages, timestamps, deletion state) plus an inline copy of the current
  version's sealed value, so reading the current version costs one storage
  read;
- ``secrets/data/<secret id>/<version:010d>``: the sealed value of each version.

Every change is one atomic storage batch guarded by ``Expect`` on the metadata
record, so concurrent writers (threads, processes, nodes) never lose an update:
a check-and-set write that lost its race raises ``CasConflictError``, any other
write retries.

Stages follow AWS Secrets Manager's staging labels: moving ``current`` to a
version moves the old current to ``previous``; a version that becomes current
loses ``pending``. At most ``max_versions`` versions are kept; the oldest
unstaged ones are pruned first, a staged version never.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from medsecrets.barrier.base import SecureStorage
from medsecrets.catalog.model import Catalog
from medsecrets.clock import Clock, SystemClock
from medsecrets.engines.secrets.paths import (
    SecretPath,
    check_field_name,
    check_prefix,
    check_segments,
    parse_path,
)
from medsecrets.errors import (
    CasConflictError,
    ConflictError,
    InvalidRequest,
    NotFoundError,
    NotInitializedError,
    ScheduledForDeletion,
    SealedError,
    StorageError,
    TooLargeError,
)
from medsecrets.ids import new_id
from medsecrets.keys.envelope import Envelope, Opener, SealedValue
from medsecrets.schema.keys import RewrapReport
from medsecrets.schema.secrets import (
    STAGES,
    RotationInfo,
    SecretMetadata,
    SecretPage,
    SecretVersion,
    Stage,
    VersionInfo,
)
from medsecrets.sensitive import SecretFields
from medsecrets.storage.base import Delete, Expect, Operation, Put

__all__ = ["MAX_VALUE_BYTES", "SecretsEngine"]

log = logging.getLogger("medsecrets.engines.secrets")

MAX_VALUE_BYTES = 64 * 1024
META = "secrets/meta/"
DATA = "secrets/data/"
_RETRIES = 50
_MAX_TAGS = 50
_CACHE_SIZE = 8192
_TOUCH_RETRY = 60.0  # seconds before a failed (or concurrent) access-time write is tried again


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _dt(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value is not None else None


@dataclass(slots=True)
class _Version:
    number: int
    id: str
    created_at: str
    destroyed: bool = False
    kek_version: int = 0


@dataclass(slots=True)
class _Record:
    """The mutable in-memory form of a metadata record (never leaves this module)."""

    id: str
    path: str
    environment: str
    category: str
    created_at: str
    updated_at: str
    description: str = ""
    owner: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    rotation_days: int | None = None
    last_rotated_at: str | None = None
    last_accessed_at: str | None = None
    next_number: int = 1
    versions: list[_Version] = field(default_factory=list)
    stages: dict[str, int] = field(default_factory=dict)
    inline: dict[str, Any] | None = None  # {"n": number, "v": sealed json}
    deleted_at: str | None = None
    purge_at: str | None = None

    def dumps(self) -> bytes:
        doc = {
            "id": self.id,
            "path": self.path,
            "env": self.environment,
            "cat": self.category,
            "created": self.created_at,
            "updated": self.updated_at,
            "desc": self.description,
            "owner": self.owner,
            "tags": self.tags,
            "rot_days": self.rotation_days,
            "rotated": self.last_rotated_at,
            "accessed": self.last_accessed_at,
            "next": self.next_number,
            "versions": [
                [v.number, v.id, v.created_at, v.destroyed, v.kek_version] for v in self.versions
            ],
            "stages": self.stages,
            "inline": self.inline,
            "deleted": self.deleted_at,
            "purge": self.purge_at,
        }
        return orjson.dumps(doc)

    @classmethod
    def loads(cls, raw: bytes) -> _Record:
        doc = orjson.loads(raw)
        return cls(
            id=doc["id"],
            path=doc["path"],
            environment=doc["env"],
            category=doc["cat"],
            created_at=doc["created"],
            updated_at=doc["updated"],
            description=doc["desc"],
            owner=doc["owner"],
            tags=doc["tags"],
            rotation_days=doc["rot_days"],
            last_rotated_at=doc["rotated"],
            last_accessed_at=doc["accessed"],
            next_number=doc["next"],
            versions=[_Version(*v) for v in doc["versions"]],
            stages=doc["stages"],
            inline=doc["inline"],
            deleted_at=doc["deleted"],
            purge_at=doc["purge"],
        )

    def version(self, number: int) -> _Version:
        for v in self.versions:
            if v.number == number:
                return v
        raise NotFoundError(f"secret {self.path!r} has no version {number}")

    def stages_of(self, number: int) -> tuple[Stage, ...]:
        return tuple(s for s in STAGES if self.stages.get(s) == number)


class _Ready:
    """A view's current version, ready to decrypt on every read (no plaintext kept)."""

    __slots__ = ("created_at", "id", "number", "opener", "path", "stages")

    def __init__(self, record: _Record, number: int, opener: Opener) -> None:
        info = record.version(number)
        self.path = record.path
        self.number = number
        self.id = info.id
        self.created_at = dt.datetime.fromisoformat(info.created_at)
        self.stages = record.stages_of(number)
        self.opener = opener

    def __repr__(self) -> str:
        return f"_Ready(path={self.path!r}, number={self.number})"

    def version(self) -> SecretVersion:
        """The version with its fields freshly decrypted."""
        fields = SecretFields(orjson.loads(self.opener.open()))
        # positional: 0.3 µs less than keywords on a frozen dataclass, on every uncached read
        return SecretVersion(self.path, self.number, self.id, self.created_at, self.stages, fields)


class _View:
    """A parsed record for reads (never mutated), with its current version prepared
    (``ready``) and, when values are cached, decrypted (``current``) once read."""

    __slots__ = ("current", "purge_at", "ready", "record", "touch_at")

    def __init__(self, record: _Record, granularity: dt.timedelta, clock: Clock) -> None:
        self.record = record
        last = _dt(record.last_accessed_at)
        self.touch_at = -math.inf
        """When (``clock.monotonic()``) a read should record its access time again."""
        if last is not None:
            self.touch_at = clock.monotonic() + (last + granularity - clock.now()).total_seconds()
        self.purge_at = _dt(record.purge_at)
        self.current: SecretVersion | None = None
        self.ready: _Ready | None = None

    def __repr__(self) -> str:
        return f"_View(path={self.record.path!r})"


def _check_not_deleted(record: _Record) -> None:
    purge_at = _dt(record.purge_at)
    if purge_at is not None:
        raise ScheduledForDeletion(record.path, purge_at)


class SecretsEngine:
    """Versioned secrets with stages, check-and-set, soft delete and envelope encryption."""

    def __init__(
        self,
        secure: SecureStorage,
        *,
        catalog: Catalog,
        envelope: Envelope,
        clock: Clock | None = None,
        max_versions: int = 100,
        access_granularity: dt.timedelta = dt.timedelta(hours=1),
        id_factory: Callable[[], str] = new_id,
        cache_values: bool = True,
    ) -> None:
        """``cache_values``: keep the decrypted current version of a secret read (until
        its record changes or the store seals) so that the next read of it decrypts
        nothing; ``False`` decrypts on every read and keeps no value in memory."""
        if max_versions < 3:
            raise InvalidRequest("max_versions must be at least 3 (one per stage)")
        self._secure = secure
        self._catalog = catalog
        self._envelope = envelope
        self._clock = clock or SystemClock()
        self._max_versions = max_versions
        self._access_granularity = access_granularity
        self._new_id = id_factory
        self._cache_values = cache_values
        self._paths: dict[str, tuple[SecretPath, str]] = {}  # valid for the current catalog
        self._stored_paths: dict[str, tuple[SecretPath, str]] = {}  # a category it lacks
        self._views: dict[str, tuple[bytes, _View]] = {}  # storage key -> (record, view)
        self._written: dict[str, tuple[bytes, bytes]] = {}  # path -> (record, etag) we wrote
        self._generation = 0  # forgets so far: a fill that saw one come undoes itself

    def __repr__(self) -> str:
        return f"SecretsEngine(prefix={self._catalog.prefix!r}, max_versions={self._max_versions})"

    # -- helpers -------------------------------------------------------------
    def parse(self, path: str) -> SecretPath:
        """Validate ``path`` against the naming rules and the catalog (valid paths are cached)."""
        return self._parse_keyed(path)[0]

    def _parse_keyed(self, path: str, *, stored: bool = False) -> tuple[SecretPath, str]:
        """``parse`` plus the metadata storage key (both cached for valid paths).

        ``stored``: the path of a secret that may already exist, so any category is
        taken (one the catalog has dropped since the secret was written); the
        caller refuses it with the strict rule when nothing is stored there. New
        writes always parse strictly.
        """
        entry = self._paths.get(path)
        if entry is None and stored:
            entry = self._stored_paths.get(path)
        if entry is None:
            categories = self._catalog.categories
            parsed = parse_path(
                path, prefix=self._catalog.prefix, categories=None if stored else categories
            )
            cache = self._paths if parsed.category in categories else self._stored_paths
            if len(cache) >= _CACHE_SIZE:
                cache.clear()
            entry = cache[path] = (parsed, META + str(parsed))
        return entry

    def _missing(self, path: str) -> NotFoundError:
        """The error for a secret that is not stored: a path that is not valid for the
        catalog (an unknown category) is refused with its rule (``InvalidRequest``)."""
        self._parse_keyed(path)
        return NotFoundError(f"secret {path!r} not found")

    def _view(self, path: str, *, listed: bool = False) -> _View:
        """The read view of an existing secret, cached by storage key with its sealed record.

        A cached view serves only the very record it was parsed from (compared
        byte for byte), so it can never serve stale or foreign data. Views are
        shared: never mutate. ``listed``: a path just listed from storage (gone
        since: ``NotFoundError``, whatever its category).
        """
        key = self._parse_keyed(path, stored=True)[1]
        generation = self._generation  # before the barrier's seal check
        raw = self._secure.get_record(key)
        if raw is None:
            raise NotFoundError(f"secret {path!r} not found") if listed else self._missing(path)
        known = self._views.get(key)
        if known is not None and (known[0] is raw or known[0] == raw):
            return known[1]
        view = _View(
            _Record.loads(self._secure.open_record(key, raw)),
            self._access_granularity,
            self._clock,
        )
        if len(self._views) >= _CACHE_SIZE:
            self._views.clear()
        self._views[key] = (raw, view)
        if self._generation != generation:  # sealed since the record was read: keep nothing
            self._views.pop(key, None)
        return view

    def _remember(self, path: str, body: bytes, etag: bytes, generation: int) -> None:
        """Keep the metadata record this engine just wrote, for its next write, unless
        ``forget`` ran since ``generation`` was read (before the write's seal check)."""
        if len(self._written) >= _CACHE_SIZE:
            self._written.clear()
        self._written[path] = (body, etag)
        if self._generation != generation:  # sealed since the write: keep nothing
            self._written.pop(path, None)

    def forget(self) -> None:
        """Drop cached views and decrypted values (called when the store seals).

        A read or write under way keeps nothing it decrypted before: each fill
        of a cache checks afterwards that no ``forget`` came since its seal
        check (a generation count, raised here before the caches are cleared).
        Views handed out before stay with their callers only.
        """
        self._generation += 1
        self._views.clear()
        self._written.clear()

    def _now(self) -> str:
        return self._clock.now().isoformat()

    def _load(self, path: str) -> tuple[_Record | None, bytes | None]:
        raw, etag = self._secure.get_with_etag(META + path)
        if raw is None:
            return None, None
        return _Record.loads(raw), etag

    def _require(self, path: str, *, allow_deleted: bool = False) -> tuple[_Record, bytes]:
        """Load an existing record (a private copy) and its etag."""
        raw, etag = self._secure.get_with_etag(self._parse_keyed(path, stored=True)[1])
        if raw is None or etag is None:
            raise self._missing(path)
        record = _Record.loads(raw)
        if not allow_deleted:
            _check_not_deleted(record)
        return record, etag

    def _mutate(
        self,
        path: str,
        change: Callable[[_Record], list[Operation]],
        *,
        allow_deleted: bool = False,
        touch_updated: bool = True,
    ) -> _Record:
        """Apply ``change`` (edits the record, returns extra ops) atomically; retry races.

        ``touch_updated=False``: bookkeeping (the access time), not a change of the
        secret, so ``updated_at`` stays as it was. A ``change`` that leaves the record
        as it was and adds no operation (a stage moved where it is, a stage removed that
        no version holds) writes nothing: ``updated_at`` moves only with a change.
        """
        for _ in range(_RETRIES):
            generation = self._generation
            record, etag = self._require(path, allow_deleted=allow_deleted)
            before = record.dumps()
            extra = change(record)
            if not extra and record.dumps() == before:
                return record
            if touch_updated:
                record.updated_at = self._now()
            body = record.dumps()
            try:
                etags = self._secure.batch(
                    [Expect(META + record.path, etag), Put(META + record.path, body), *extra]
                )
            except ConflictError:
                continue
            self._remember(record.path, body, etags[META + record.path], generation)
            return record
        raise ConflictError(f"secret {path!r} is changing too fast; try again")

    def _data_key(self, record: _Record, number: int) -> str:
        return f"{DATA}{record.id}/{number:010d}"

    def _check_fields(self, category: str, fields: Mapping[str, str]) -> bytes:
        if not isinstance(fields, Mapping) or not fields:
            raise InvalidRequest("a secret value must be a non-empty object of string fields")
        for name, value in fields.items():
            check_field_name(name)
            if not isinstance(value, str):
                raise InvalidRequest(f"field {name!r} must be a string")
        self._catalog.category(category).validate(fields, complete=False)
        try:
            plaintext = orjson.dumps(dict(fields))
        except orjson.JSONEncodeError:  # a lone surrogate: not encodable as UTF-8
            raise InvalidRequest("field values must be valid Unicode text") from None
        if len(plaintext) > MAX_VALUE_BYTES:
            raise TooLargeError(f"secret value is larger than {MAX_VALUE_BYTES} bytes serialized")
        return plaintext

    def _metadata(self, record: _Record) -> SecretMetadata:
        category = self._catalog.categories.get(record.category)
        if category is not None:
            policy_days, strategy = category.rotation.interval_days, category.rotation.strategy
        else:  # a category the catalog has dropped since: no policy (only an override)
            policy_days, strategy = 0, "manual"
        days = record.rotation_days if record.rotation_days is not None else policy_days
        last_rotated = _dt(record.last_rotated_at)
        created = _dt(record.created_at)
        assert created is not None
        base = last_rotated or created
        updated = _dt(record.updated_at)
        assert updated is not None
        return SecretMetadata(
            path=record.path,
            id=record.id,
            environment=record.environment,
            category=record.category,
            description=record.description,
            owner=record.owner,
            tags=dict(record.tags),
            rotation=RotationInfo(
                interval_days=days,
                strategy=strategy,
                overridden=record.rotation_days is not None,
            ),
            created_at=created,
            updated_at=updated,
            last_rotated_at=last_rotated,
            next_rotation_due=base + dt.timedelta(days=days) if days > 0 else None,
            last_accessed_at=_dt(record.last_accessed_at),
            current_version=record.stages.get("current"),
            versions=tuple(self._version_info(record, v) for v in record.versions),
            deleted_at=_dt(record.deleted_at),
            purge_at=_dt(record.purge_at),
        )

    @staticmethod
    def _version_info(record: _Record, v: _Version) -> VersionInfo:
        created = _dt(v.created_at)
        assert created is not None
        return VersionInfo(
            number=v.number,
            id=v.id,
            created_at=created,
            stages=record.stages_of(v.number),
            destroyed=v.destroyed,
            kek_version=v.kek_version,
        )

    @staticmethod
    def _check_tags(tags: Mapping[str, str]) -> dict[str, str]:
        if len(tags) > _MAX_TAGS:
            raise InvalidRequest(f"at most {_MAX_TAGS} tags")
        for key, value in tags.items():
            check_field_name(key)
            if not isinstance(value, str) or len(value) > 256:
                raise InvalidRequest(f"tag {key!r} must be a string of at most 256 characters")
        return dict(tags)

    @staticmethod
    def _check_text(name: str, value: str, limit: int = 1024) -> str:
        if not isinstance(value, str) or len(value) > limit:
            raise InvalidRequest(f"{name} must be a string of at most {limit} characters")
        return value

    # -- writes --------------------------------------------------------------
    def check_keys(self, path: str) -> None:
        """Raise what a write to ``path`` would raise for its category's keys now (a KEK
        provider that cannot wrap: ``ProviderError``), writing nothing: a fresh data key is
        wrapped for it and dropped. For runs of several writes that must fail before the
        first (``provision``)."""
        parsed = self.parse(path)
        self._envelope.seal(b"", path=str(parsed), version=1, category=parsed.category)

    def put(
        self,
        path: str,
        fields: Mapping[str, str],
        *,
        cas: int | None = None,
        stage: Stage = "current",
        description: str | None = None,
        owner: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> VersionInfo:
        """Write a new version and give it ``stage``.

        ``cas=0`` requires that the secret does not exist; ``cas=n`` that its
        newest version is ``n`` (``CasConflictError`` otherwise). Writing to a
        secret scheduled for deletion raises ``ScheduledForDeletion``.
        """
        parsed = self.parse(path)
        key = str(parsed)
        if stage not in ("current", "pending"):
            raise InvalidRequest("a new version can only be staged as 'current' or 'pending'")
        plaintext = self._check_fields(parsed.category, fields)
        if description is not None:
            self._check_text("description", description)
        if owner is not None:
            self._check_text("owner", owner, 256)
        clean_tags = self._check_tags(tags) if tags is not None else None
        # The record this engine wrote last is tried first, saving a read; the
        # Expect in the batch catches a stale one, and only a fresh read may fail.
        generation = self._generation
        known = self._written.pop(key, None)
        for _ in range(_RETRIES):
            fresh = known is None
            record: _Record | None
            etag: bytes | None
            if known is not None:
                record, etag = _Record.loads(known[0]), known[1]
                known = None
            else:
                record, etag = self._load(key)
            now = self._now()
            if record is None:
                if cas not in (None, 0):
                    raise CasConflictError(
                        f"secret {key!r} does not exist (expected version {cas})"
                    )
                record = _Record(
                    id=self._new_id(),
                    path=key,
                    environment=parsed.environment,
                    category=parsed.category,
                    created_at=now,
                    updated_at=now,
                )
            else:
                if not fresh and (
                    record.purge_at is not None
                    or (cas is not None and cas != record.next_number - 1)
                ):
                    continue  # decide on a fresh read
                if record.purge_at is not None:
                    purge_at = _dt(record.purge_at)
                    assert purge_at is not None
                    raise ScheduledForDeletion(key, purge_at)
                latest = record.next_number - 1
                if cas is not None and cas != latest:
                    raise CasConflictError(
                        f"secret {key!r} is at version {latest}, not {cas} (check-and-set)"
                    )
            number = record.next_number
            sealed = self._envelope.seal(
                plaintext, path=key, version=number, category=record.category
            )
            record.next_number += 1
            record.versions.append(
                _Version(
                    number=number,
                    id=self._new_id(),
                    created_at=now,
                    kek_version=sealed.wrapped.kek_version,
                )
            )
            record.updated_at = now
            if description is not None:
                record.description = description
            if owner is not None:
                record.owner = owner
            if clean_tags is not None:
                record.tags = clean_tags
            sealed_doc = sealed.to_json()
            ops: list[Operation] = [Put(self._data_key(record, number), orjson.dumps(sealed_doc))]
            if stage == "current":
                if "current" in record.stages:
                    record.last_rotated_at = now
                self._move_current(record, number, sealed_doc)
            else:
                record.stages["pending"] = number
            ops += self._prune(record)
            body = record.dumps()
            ops = [Expect(META + key, etag), Put(META + key, body), *ops]
            try:
                etags = self._secure.batch(ops)
            except ConflictError:
                # The record changed since it was read: decide again on a fresh read. With
                # ``cas`` that read fails it only if a version was added meanwhile (a
                # metadata change, an access-time write, is no reason to refuse it).
                continue
            self._remember(key, body, etags[META + key], generation)
            return self._version_info(record, record.versions[-1])
        raise ConflictError(f"secret {key!r} is changing too fast; try again")

    def _move_current(self, record: _Record, number: int, sealed: Mapping[str, str | int]) -> None:
        """Give ``number`` the ``current`` stage; its ``sealed`` value (JSON form) goes inline."""
        old = record.stages.get("current")
        if old is not None and old != number:
            record.stages["previous"] = old
        record.stages["current"] = number
        if record.stages.get("pending") == number:
            del record.stages["pending"]
        if record.stages.get("previous") == number:
            del record.stages["previous"]
        record.inline = {"n": number, "v": sealed}

    def _prune(self, record: _Record) -> list[Operation]:
        ops: list[Operation] = []
        staged = set(record.stages.values())
        while len(record.versions) > self._max_versions:
            victim = next((v for v in record.versions if v.number not in staged), None)
            if victim is None:
                break
            record.versions.remove(victim)
            ops.append(Delete(self._data_key(record, victim.number)))
        return ops

    def move_stage(self, path: str, stage: Stage, version: int) -> SecretMetadata:
        """Attach ``stage`` to ``version`` (AWS semantics for ``current``).

        Moving ``current`` to a version newer than the current one (promoting a
        pending version) is a rotation, as a write as ``current`` is; a rollback
        to an older version is not (it brings back a value already rotated out).
        """
        if stage not in STAGES:
            raise InvalidRequest(f"unknown stage {stage!r} (one of {', '.join(STAGES)})")

        def change(record: _Record) -> list[Operation]:
            target = record.version(version)
            if target.destroyed:
                raise ConflictError(f"version {version} of {record.path!r} was destroyed")
            if stage == "current":
                raw = self._secure.get(self._data_key(record, version))
                if raw is None:
                    raise NotFoundError(f"secret {record.path!r} has no version {version}")
                old = record.stages.get("current")
                if old is not None and version > old:  # a promotion (a newer value): a rotation
                    record.last_rotated_at = self._now()
                self._move_current(record, version, SealedValue.loads(raw).to_json())
            else:
                if record.stages.get("current") == version:
                    raise ConflictError(f"version {version} is current; it cannot also be {stage}")
                record.stages[stage] = version
            return []

        return self._metadata(self._mutate(path, change))

    def remove_stage(self, path: str, stage: Stage) -> SecretMetadata:
        """Detach ``pending`` or ``previous`` (``current`` can only be moved)."""
        if stage not in ("pending", "previous"):
            raise InvalidRequest("only the 'pending' and 'previous' stages can be removed")

        def change(record: _Record) -> list[Operation]:
            record.stages.pop(stage, None)
            return []

        return self._metadata(self._mutate(path, change))

    def update_metadata(
        self,
        path: str,
        *,
        description: str | None = None,
        owner: str | None = None,
        tags: Mapping[str, str] | None = None,
        rotation_days: int | None = None,
        clear_rotation_override: bool = False,
    ) -> SecretMetadata:
        """Change descriptive metadata or override the catalog's rotation interval."""
        if rotation_days is not None and not (
            isinstance(rotation_days, int) and 0 <= rotation_days <= 3650
        ):
            raise InvalidRequest("rotation_days must be a whole number from 0 to 3650")
        clean_tags = self._check_tags(tags) if tags is not None else None

        def change(record: _Record) -> list[Operation]:
            if description is not None:
                record.description = self._check_text("description", description)
            if owner is not None:
                record.owner = self._check_text("owner", owner, 256)
            if clean_tags is not None:
                record.tags = clean_tags
            if clear_rotation_override:
                record.rotation_days = None
            if rotation_days is not None:
                record.rotation_days = rotation_days
            return []

        return self._metadata(self._mutate(path, change))

    def delete(self, path: str, *, recovery_days: int = 30, force: bool = False) -> SecretMetadata:
        """Schedule deletion after ``recovery_days`` (7 to 30), or purge now with ``force``."""
        if force:
            record, _ = self._require(path, allow_deleted=True)
            self.purge(record.path)
            return self._metadata(record)
        if not isinstance(recovery_days, int) or not 7 <= recovery_days <= 30:
            raise InvalidRequest("recovery window must be from 7 to 30 days")

        def change(record: _Record) -> list[Operation]:
            now = self._clock.now()
            record.deleted_at = now.isoformat()
            record.purge_at = (now + dt.timedelta(days=recovery_days)).isoformat()
            return []

        return self._metadata(self._mutate(path, change))

    def restore(self, path: str) -> SecretMetadata:
        """Cancel a scheduled deletion; every version comes back intact."""

        def change(record: _Record) -> list[Operation]:
            if record.purge_at is None:
                raise ConflictError(f"secret {record.path!r} is not scheduled for deletion")
            record.deleted_at = None
            record.purge_at = None
            return []

        return self._metadata(self._mutate(path, change, allow_deleted=True))

    def destroy(self, path: str, version: int) -> SecretMetadata:
        """Erase one version's material for good (not the current version)."""

        def change(record: _Record) -> list[Operation]:
            target = record.version(version)
            if record.stages.get("current") == version:
                raise ConflictError(
                    f"version {version} of {record.path!r} is current; move 'current' first"
                )
            target.destroyed = True
            for stage in record.stages_of(version):
                del record.stages[stage]
            return [Delete(self._data_key(record, version))]

        return self._metadata(self._mutate(path, change, allow_deleted=True))

    def purge(self, path: str, *, expired_by: dt.datetime | None = None) -> bool:
        """Remove a secret and all its versions now (no recovery); whether it was removed.

        ``expired_by`` (the sweeper): only if its recovery window had ended by then,
        judged on the record the removal is conditioned on, so a restore (or a new
        write) that won the race keeps the secret.
        """
        for _ in range(_RETRIES):
            record, etag = self._load(path)
            if record is None:
                return False
            if expired_by is not None:
                purge_at = _dt(record.purge_at)
                if purge_at is None or purge_at > expired_by:
                    return False
            ops: list[Operation] = [Expect(META + path, etag), Delete(META + path)]
            ops += [Delete(self._data_key(record, v.number)) for v in record.versions]
            try:
                self._secure.batch(ops)
            except ConflictError:
                continue
            return True
        raise ConflictError(f"secret {path!r} is changing too fast; try again")

    def purge_expired(self) -> list[str]:
        """The sweeper: purge every secret whose recovery window has ended; returns their paths.

        One secret failing to purge is logged (path and error type) and skipped, so it
        never keeps the others; a sealed store stops the pass.
        """
        now = self._clock.now()
        purged = []
        for record in self._records(""):
            purge_at = _dt(record.purge_at)
            if purge_at is None or purge_at > now:
                continue
            try:
                if self.purge(record.path, expired_by=now):
                    purged.append(record.path)
            except (SealedError, NotInitializedError):
                raise
            except Exception as exc:  # the next pass tries it again
                log.error(
                    "purging an expired secret failed",
                    extra={"path": record.path, "error": type(exc).__name__},
                )
        return purged

    # -- reads ---------------------------------------------------------------
    def get(
        self,
        path: str,
        *,
        stage: Stage | None = None,
        version: int | None = None,
        version_id: str | None = None,
    ) -> SecretVersion:
        """Read one version by ``stage`` (default ``current``), ``version`` or ``version_id``."""
        given = (stage is not None) + (version is not None) + (version_id is not None)
        if given > 1:
            raise InvalidRequest("give at most one of stage, version and version_id")
        if stage is not None and stage not in STAGES:
            raise InvalidRequest(f"unknown stage {stage!r} (one of {', '.join(STAGES)})")
        view = self._view(path)
        record = view.record
        if view.purge_at is not None:
            raise ScheduledForDeletion(record.path, view.purge_at)
        if given == 0 or stage == "current":
            current = view.current
            if current is not None:  # the hot path: the current version, decrypted before
                self._touch(view)
                return current  # immutable (frozen, read-only fields): safe to share
            ready = view.ready
            if ready is not None:  # values not cached: decrypted again, its key unwrapped before
                result = ready.version()
                self._touch(view)
                return result
        if version_id is not None:
            match = next((v for v in record.versions if v.id == version_id), None)
            if match is None:
                raise NotFoundError(f"secret {record.path!r} has no version id {version_id!r}")
            number = match.number
        elif version is not None:
            number = version
        else:
            wanted = stage or "current"
            staged = record.stages.get(wanted)
            if staged is None:
                raise NotFoundError(f"secret {record.path!r} has no {wanted!r} version")
            number = staged
        info = record.version(number)
        if info.destroyed:
            raise NotFoundError(f"version {number} of {record.path!r} was destroyed")
        ready = _Ready(record, number, self._opener(record, number))
        result = ready.version()
        if number == record.stages.get("current"):  # kept for the next reads of the view
            view.ready = ready
            if self._cache_values:
                view.current = result
        self._touch(view)
        return result

    def _opener(self, record: _Record, number: int) -> Opener:
        """Version ``number``'s value (inline copy or its data record), ready to decrypt."""
        if record.inline is not None and record.inline["n"] == number:
            sealed = SealedValue.from_json(record.inline["v"])
        else:
            raw = self._secure.get(self._data_key(record, number))
            if raw is None:
                raise NotFoundError(f"secret {record.path!r} has no version {number}")
            sealed = SealedValue.loads(raw)
        return self._envelope.opener(
            sealed, path=record.path, version=number, category=record.category
        )

    def _touch(self, view: _View) -> None:
        """Record a coarse last-access time (at most one write per ``access_granularity``).

        Best effort, never the read's failure: a concurrent change wins, and a write
        the storage refuses (its write lock held elsewhere, a failed fsync, a read-only
        database) is skipped. The view is claimed first, so concurrent reads do not
        all try, and a failed attempt is not made again for ``_TOUCH_RETRY`` seconds.
        """
        mono = self._clock.monotonic()
        if mono < view.touch_at:
            return
        view.touch_at = mono + _TOUCH_RETRY
        now = self._clock.now()

        def change(rec: _Record) -> list[Operation]:
            rec.last_accessed_at = now.isoformat()
            return []

        with contextlib.suppress(ConflictError, NotFoundError, ScheduledForDeletion, StorageError):
            self._mutate(view.record.path, change, touch_updated=False)

    def describe(self, path: str) -> SecretMetadata:
        """Metadata (never values), also for secrets scheduled for deletion."""
        return self._metadata(self._view(path).record)

    def versions(self, path: str) -> tuple[VersionInfo, ...]:
        """Every kept version, oldest first."""
        return self.describe(path).versions

    def _records(self, prefix: str, *, after: str = "") -> Iterator[_Record]:
        cursor = after
        while True:
            page = self._secure.list(META + prefix, after=cursor, limit=500)
            for key in page.keys:
                with contextlib.suppress(NotFoundError):  # deleted since listed
                    yield self._view(key[len(META) :], listed=True).record
            if page.next_after is None:
                return
            cursor = page.next_after

    def list(
        self,
        prefix: str = "",
        *,
        environment: str | None = None,
        category: str | None = None,
        tags: Mapping[str, str] | None = None,
        include_deleted: bool = False,
        after: str | None = None,
        limit: int = 100,
    ) -> SecretPage:
        """Metadata of secrets under ``prefix`` matching the filters, sorted by path, paginated."""
        if not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise InvalidRequest("limit must be from 1 to 1000")
        check_prefix(prefix)
        if after is not None:
            check_segments(after, what="after")
        items: list[SecretMetadata] = []
        last = ""
        for record in self._records(prefix, after=META + after if after else ""):
            if environment is not None and record.environment != environment:
                continue
            if category is not None and record.category != category:
                continue
            if tags and any(record.tags.get(k) != v for k, v in tags.items()):
                continue
            if record.purge_at is not None and not include_deleted:
                continue
            if len(items) == limit:
                return SecretPage(items=tuple(items), next_after=last)
            items.append(self._metadata(record))
            last = record.path
        return SecretPage(items=tuple(items), next_after=None)

    # -- key management --------------------------------------------------------
    def rewrap(
        self,
        *,
        after: str = "",
        limit: int | None = None,
        on_progress: Callable[[int, int, str], None] | None = None,
    ) -> RewrapReport:
        """Re-wrap every data key under its category's newest KEK version.

        Safe while readers and writers run (each secret is one checked batch,
        retried on conflict) and resumable: it visits secrets in path order
        after ``after``, at most ``limit`` of them (all when ``None``), and
        ``next_after`` in the report continues the pass (``None``: done).
        ``on_progress(done, total, path)`` is called after each secret;
        ``total`` counts the secrets after ``after``. A secret already on the
        newest KEK is skipped.

        A secret whose category the catalog no longer has is passed over (logged,
        counted in ``total`` only): its KEK provider is found through the catalog.
        """
        if limit is not None and not (isinstance(limit, int) and limit >= 1):
            raise InvalidRequest("limit must be a positive whole number")
        total = self._count(after)
        done = rewrapped = 0
        last: str | None = None
        for record in self._records("", after=META + after if after else ""):
            if limit is not None and done == limit:
                return RewrapReport(done, rewrapped, done - rewrapped, total, last)
            if record.category not in self._catalog.categories:
                log.warning(
                    "rewrap passes over a secret whose category is not in the catalog",
                    extra={"path": record.path, "category": record.category},
                )
                continue
            rewrapped += self._rewrap_one(record.path)
            done += 1
            last = record.path
            if on_progress is not None:
                on_progress(done, total, record.path)
        return RewrapReport(done, rewrapped, done - rewrapped, total, None)

    def _count(self, after: str) -> int:
        count, cursor = 0, META + after if after else ""
        while True:
            page = self._secure.list(META, after=cursor, limit=1000)
            count += len(page.keys)
            if page.next_after is None:
                return count
            cursor = page.next_after

    def _rewrap_one(self, path: str) -> bool:
        for _ in range(_RETRIES):
            record, etag = self._load(path)
            if record is None or etag is None:
                return False
            ops: list[Operation] = []
            for v in record.versions:
                if v.destroyed:
                    continue
                key = self._data_key(record, v.number)
                raw, data_etag = self._secure.get_with_etag(key)
                if raw is None:
                    continue
                sealed = SealedValue.loads(raw)
                if not self._envelope.needs_rewrap(sealed, category=record.category):
                    continue
                fresh = self._envelope.rewrap(
                    sealed, path=record.path, version=v.number, category=record.category
                )
                v.kek_version = fresh.wrapped.kek_version
                ops += [Expect(key, data_etag), Put(key, fresh.dumps())]
                if record.inline is not None and record.inline["n"] == v.number:
                    record.inline = {"n": v.number, "v": fresh.to_json()}
            if not ops:
                return False
            try:
                self._secure.batch(
                    [Expect(META + path, etag), Put(META + path, record.dumps()), *ops]
                )
            except ConflictError:
                continue
            return True
        raise ConflictError(f"secret {path!r} is changing too fast to rewrap; try again")
