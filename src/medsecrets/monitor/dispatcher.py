"""``AlertDispatcher``: deduplicates, rate-limits, records and delivers alerts.

Contract:

* ``raise_(alert)`` is cheap and never blocks on a peer: it decides, under one
  lock, whether the alert is a duplicate, which channels are over their rate
  limit, records it in the ring of recent alerts, and enqueues the work. All
  I/O happens on daemon threads: one per channel (so a slow or failing
  channel never delays the others) and one for the ``on_alert`` hook.
* Deduplication: an alert with the same ``(detector, key)`` as one raised less
  than ``dedup_window`` seconds (by ``clock``) after that first one is a
  duplicate (one ``note``d too, but for the noted alert itself raised here:
  its delivery is this process's now, see ``note``). It is not delivered and
  not passed to ``on_alert``; the kept alert's ``count`` grows by the
  duplicate's ``count`` (visible in ``recent()``). The window is fixed from
  the first alert, so an ongoing condition is re-notified once per window.
  Only the ``ring_size`` newest alerts are remembered for deduplication
  (memory stays bounded).
* Rate limiting: each channel sends at most ``rate_per_minute`` alerts that
  are not ``critical`` in any 60 s (sliding window by ``clock``; the alerts
  another worker of the server delivers count too: see ``note``); an alert
  over the limit is not sent to that channel, is kept in the ring with the
  channel's status ``rate_limited`` and counted in ``stats()``. ``critical``
  alerts (rare: a honeytoken read, an emergency token, an audit device's
  alarm) are never limited nor counted, so a flood of lesser alerts cannot
  hide them. A channel whose ``rate_limited`` attribute is ``False`` (the
  log: alerts go to the log always) takes every alert.
* Nothing is limited away silently: once a channel's window has room again
  (checked at the next alert, and about every ``_TICK`` seconds by the
  channel's thread) it is sent one summary alert, detector
  ``rate_limited`` and key the channel's name, taking one of the window's
  places: how many alerts it missed since when, by detector and severity,
  pointing to ``medsecrets alerts list``. The summary goes to that channel
  only, is kept in the ring and passed to ``on_alert`` (audited) like any
  alert, and is never a duplicate. At ``stop`` a summary still to come is
  sent whatever the window says (one alert over the limit, at the end).
* ``on_alert(alert)`` is called once per non-duplicate alert (rate-limited
  ones included), off the caller's thread; the server uses it to write an
  ``alert`` audit record. Its failures are logged, never raised.
* Delivery: ``channel.send`` is retried on failure up to ``max_attempts``
  times with capped, jittered exponential backoff (``backoff * 2**n``, at most
  ``backoff_cap``, times a random factor in [0.5, 1]); an
  ``AlertDeliveryError`` with ``retryable=False`` stops at once. While
  stopping, waits are cut short and no further attempts are made.
* Each channel queue holds at most ``queue_size`` alerts; beyond that an alert
  is dropped for that channel (status ``dropped``) rather than blocking. The
  last tenth of every queue (the channels' and the ``on_alert`` hook's) is kept
  for ``critical`` alerts: a flood of lesser alerts into a slow channel, or a
  slow audit hook, cannot make a honeytoken or emergency alert be dropped from
  the log or go unaudited (a flood of critical alerts still can: counted).
* Logs (``medsecrets.monitor.dispatcher``) carry channel names, alert ids and
  error messages of medsecrets errors (which hold no values by contract) or
  only the type of foreign exceptions; never an alert's secrets (it has none)
  nor a channel's credentials.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import random
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, cast, get_args

from medsecrets.errors import ConfigError, MedsecretsError
from medsecrets.monitor.alert import Alert, Severity, critical_reserve
from medsecrets.monitor.channels import AlertChannel, AlertDeliveryError

__all__ = ["SUMMARY_DETECTOR", "AlertDispatcher", "DeliveryStatus"]

_log = logging.getLogger("medsecrets.monitor.dispatcher")

DeliveryStatus = Literal[
    "pending", "retrying", "sent", "failed", "rate_limited", "dropped", "interrupted"
]
"""``interrupted``: the server stopped before the delivery ended (an alert restored from
an earlier run whose delivery was ``pending`` or ``retrying`` when it was last saved)."""
"""Where an alert stands on one channel."""

_RATE_WINDOW: Final = 60.0
_HOOK: Final = "on_alert"
_TICK: Final = 1.0
"""Seconds between a limited channel's checks for a summary to send (``_Lane``)."""
SUMMARY_DETECTOR: Final = "rate_limited"
"""The ``detector`` of the summary of a channel's rate-limited alerts."""
_SEVERITIES: Final[tuple[Severity, ...]] = get_args(Severity)


def _describe(exc: BaseException) -> str:
    """An error description safe to log and show: our messages, or only a foreign type."""
    if isinstance(exc, MedsecretsError):
        return exc.message
    return type(exc).__name__


@dataclass(slots=True)
class _Delivery:
    status: DeliveryStatus = "pending"
    attempts: int = 0
    error: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {"status": self.status, "attempts": self.attempts, "error": self.error}


@dataclass(slots=True)
class _Entry:
    """One kept (non-duplicate) alert in the ring."""

    id: int
    alert: Alert
    first_seen: float
    count: int
    last_time: dt.datetime
    deliveries: dict[str, _Delivery] = field(default_factory=dict)
    elsewhere: bool = False
    """Noted only (``note``): another process delivers and audits it."""
    counted_at: float | None = None
    """When a noted alert was counted in the channels' rate windows (``note``)."""
    counted_in: tuple[str, ...] = ()
    """The channels whose rate windows counted the noted alert (``note``)."""

    def to_dict(self) -> dict[str, object]:
        out = self.alert.to_dict()
        out["count"] = self.count
        out["id"] = self.id
        out["last_time"] = self.last_time.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
        out["delivery"] = {name: d.to_dict() for name, d in self.deliveries.items()}
        if self.elsewhere:
            out["delivered_by"] = "another worker"
        return out


def _interrupted(doc: Mapping[str, object]) -> dict[str, object]:
    """``doc`` (a restored alert) with its unfinished deliveries ``interrupted``."""
    found = dict(doc)
    delivery = found.get("delivery")
    if isinstance(delivery, Mapping):
        found["delivery"] = {
            name: (
                {**state, "status": "interrupted"}
                if isinstance(state, Mapping) and state.get("status") in ("pending", "retrying")
                else state
            )
            for name, state in delivery.items()
        }
    return found


@dataclass(slots=True)
class _Suppressed:
    """A channel's rate-limited alerts since its last summary."""

    since: dt.datetime
    """The (event) time of the first one."""
    counts: dict[tuple[str, Severity], int] = field(default_factory=dict)
    """By (detector, severity)."""

    def add(self, alert: Alert) -> None:
        key = (alert.detector, alert.severity)
        self.counts[key] = self.counts.get(key, 0) + 1

    def summary(self, channel: str) -> Alert:
        """The summary alert for ``channel`` (see the module docstring)."""
        total = sum(self.counts.values())
        since = self.since.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
        by = ", ".join(
            f"{count} {detector}/{severity}"
            for (detector, severity), count in sorted(self.counts.items())
        )
        worst = max((severity for _, severity in self.counts), key=_SEVERITIES.index)
        counts: dict[str, dict[str, int]] = {}
        for (detector, severity), count in sorted(self.counts.items()):
            counts.setdefault(detector, {})[severity] = count
        return Alert(
            detector=SUMMARY_DETECTOR,
            severity=worst,
            time=dt.datetime.now(dt.UTC),
            summary=(
                f"{total} alert{'s' if total != 1 else ''} not sent to {channel} "
                f"(rate limit) since {since}: {by}; see `medsecrets alerts list`"
            ),
            key=channel,
            count=total,
            details={"channel": channel, "since": since, "suppressed": total, "counts": counts},
        )


@dataclass(slots=True)
class _ChannelStats:
    sent: int = 0
    failed: int = 0
    retries: int = 0
    rate_limited: int = 0
    dropped: int = 0
    pending: int = 0
    """Deliveries queued, being sent or waiting for a retry (not yet sent or given up)."""

    def to_dict(self) -> dict[str, int]:
        return {
            "sent": self.sent,
            "failed": self.failed,
            "retries": self.retries,
            "rate_limited": self.rate_limited,
            "dropped": self.dropped,
            "pending": self.pending,
        }


class _Lane:
    """A queue and the daemon thread that drains it into one callable; ``idle`` (if any)
    is called whenever the queue stayed empty for ``_TICK`` seconds."""

    def __init__(
        self,
        name: str,
        size: int,
        work: Callable[[_Entry], None],
        idle: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.size = size
        self.reserve = critical_reserve(size)
        """Places only a critical alert may take (see the module docstring)."""
        self.queue: queue.Queue[_Entry | None] = queue.Queue()  # None: stop
        self._work = work
        self._idle = idle
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        if self.thread is None:
            self.thread = threading.Thread(
                target=self._run, name=f"medsecrets-alerts-{self.name}", daemon=True
            )
            self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                item = self.queue.get(timeout=_TICK if self._idle is not None else None)
            except queue.Empty:
                assert self._idle is not None
                self._idle()
                continue
            if item is None:
                return
            self._work(item)


class AlertDispatcher:
    """Fans alerts out to channels (see the module docstring for the contract).

    ``clock`` gives monotonic seconds for dedup and rate windows (tests pass a
    ``ManualClock().monotonic``). ``stop()`` / ``flush()`` / ``start()`` and the
    context manager are for the server's lifecycle and for tests.
    """

    def __init__(
        self,
        channels: Iterable[AlertChannel],
        *,
        dedup_window: float = 300.0,
        rate_per_minute: int = 30,
        ring_size: int = 1000,
        on_alert: Callable[[Alert], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_attempts: int = 4,
        backoff: float = 1.0,
        backoff_cap: float = 30.0,
        queue_size: int = 10_000,
    ) -> None:
        self._channels: dict[str, AlertChannel] = {}
        for channel in channels:
            if channel.name in self._channels or channel.name == _HOOK:
                raise ConfigError(f"alert channel name {channel.name!r}: must be unique")
            self._channels[channel.name] = channel
        if dedup_window < 0:
            raise ConfigError("alert dedup_window: must be >= 0 seconds")
        if rate_per_minute < 1:
            raise ConfigError("alert rate_per_minute: must be >= 1")
        if ring_size < 1 or queue_size < 1:
            raise ConfigError("alert ring_size/queue_size: must be >= 1")
        if max_attempts < 1:
            raise ConfigError("alert max_attempts: must be >= 1")
        if backoff < 0 or backoff_cap < 0:
            raise ConfigError("alert backoff: must be >= 0 seconds")
        self._dedup_window = dedup_window
        self._ring_size = ring_size
        self._rate = rate_per_minute
        self._on_alert = on_alert
        self._clock = clock
        self._max_attempts = max_attempts
        self._backoff = backoff
        self._backoff_cap = backoff_cap

        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._started = False
        self._ring: deque[_Entry] = deque(maxlen=ring_size)
        self._open: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self._sent_at: dict[str, deque[float]] = {name: deque() for name in self._channels}
        self._suppressed: dict[str, _Suppressed] = {}
        self._unlimited = frozenset(
            name
            for name, channel in self._channels.items()
            if getattr(channel, "rate_limited", True) is False
        )
        self._stats: dict[str, _ChannelStats] = {name: _ChannelStats() for name in self._channels}
        self._raised = 0
        self._alerts = 0
        self._duplicates = 0
        self._hook_failures = 0
        self._pending = 0
        self._next_id = 1
        self._history: list[dict[str, object]] = []
        self._lanes: dict[str, _Lane] = {
            name: _Lane(
                name,
                queue_size,
                self._deliver_to(channel),
                None if name in self._unlimited else self._summarize_to(name),
            )
            for name, channel in self._channels.items()
        }
        self._hook_lane = _Lane(_HOOK, queue_size, self._call_hook)

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Start the delivery threads (idempotent). Alerts raised before are queued."""
        with self._lock:
            if self._started:
                return
            self._started = True
        for lane in (*self._lanes.values(), self._hook_lane):
            lane.start()

    def stop(self, timeout: float = 5.0) -> bool:
        """Deliver what is queued (no more retry waits), stop the threads, close channels.

        A channel's rate-limited alerts not yet summed up get their summary first, even
        if the channel's window is full: the operator learns of them before the server
        stops (a stopping server would otherwise lose them silently).

        Returns ``True`` if every thread finished within ``timeout`` seconds
        (channels are closed only then). Alerts raised after ``stop`` are
        recorded but not delivered.
        """
        with self._lock:  # the summaries still to come go now, whatever their windows say
            for name in list(self._suppressed):
                self._summarize(name, self._clock(), last=True)
        self._stopping.set()
        lanes = (*self._lanes.values(), self._hook_lane)
        for lane in lanes:
            lane.queue.put(None)
        deadline = time.monotonic() + timeout
        for lane in lanes:
            if lane.thread is not None:
                lane.thread.join(max(0.0, deadline - time.monotonic()))
        done = all(lane.thread is None or not lane.thread.is_alive() for lane in lanes)
        if done:
            for channel in self._channels.values():
                try:
                    channel.close()
                except Exception as exc:
                    _log.warning(
                        "alert channel close failed",
                        extra={"channel": channel.name, "error": _describe(exc)},
                    )
        return done

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued delivery and hook call finished; ``False`` on timeout."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def __enter__(self) -> AlertDispatcher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----------------------------------------------------------------- raising

    def raise_(self, alert: Alert) -> None:
        """Record ``alert`` and queue its delivery; never blocks on I/O, never raises."""
        now = self._clock()
        with self._lock:
            self._raised += 1
            self._expire(now)
            entry = self._take_over(alert)
            if entry is None:
                if self._merge(alert):
                    self._duplicates += 1
                    return
                entry = self._keep(alert, now)
                self._index(entry)
            if self._stopping.is_set():
                return
            targets = [name for name in self._channels if self._admit(name, now, entry)]
            for name in targets:
                self._enqueue(self._lanes[name], entry, name)
            if self._on_alert is not None:
                self._enqueue(self._hook_lane, entry, None)

    def note(self, alert: Alert) -> None:
        """Show ``alert`` in ``recent()`` and count it for deduplication, without delivering
        or auditing it: another process (another worker of the server) does. Never raises.
        A later alert with its detector and key within ``dedup_window`` is a duplicate here
        too, so the workers of one server do not each send the same alert; ``alert``
        itself raised here later (``raise_``, equal) is not: the worker that was to
        deliver it did not (it stopped first), so this one delivers and audits it.

        A noted alert that is not ``critical`` takes a place in every rate-limited
        channel's window that has room, as if raised here: so the workers of one server
        together send at most ``rate_per_minute`` alerts to a channel, not that many
        each. One noted while the window is full takes none (its worker, whose window
        holds the same alerts, found it over the limit too and did not send it), so the
        window empties 60 s after its last place was taken and a storm of alerts is
        still heard of every minute (alerts, or each worker's summary). Each worker sums
        up only the alerts it held back itself, never a noted one: a worker cannot tell
        whether another is still there to send a summary (one that stopped or was killed
        sends none, and is told of to nobody), nor whether a noted alert it found over the
        limit was held back (its worker's window may have had room: one that joined
        mid-window, or the alert reached the two at a window's edge). So a channel may
        get one summary a worker, never none for alerts a running worker held back.
        (Two workers raising at the same moment, before either is told of the other's,
        may each take the last place; each sends its own summary.)"""
        now = self._clock()
        with self._lock:
            self._expire(now)
            if self._merge(alert):
                return
            entry = self._keep(alert, now, elsewhere=True)
            self._index(entry)
            if alert.severity == "critical":
                return  # never limited, never counted
            counted = []
            for name in self._sent_at:
                if name not in self._unlimited:
                    sent_at = self._window(name, now)
                    if len(sent_at) < self._rate:
                        sent_at.append(now)
                        counted.append(name)
            if counted:
                entry.counted_at, entry.counted_in = now, tuple(counted)

    def _take_over(self, alert: Alert) -> _Entry | None:
        """The noted entry of this very ``alert``, now this process's to deliver and audit
        (the worker that was to deliver it did not: the shared monitor gave it here); else
        ``None``. The caller holds ``_lock``."""
        kept = self._open.get((alert.detector, alert.key))
        if kept is None or not kept.elsewhere or kept.alert != alert:
            return None
        kept.elsewhere = False
        self._alerts += 1
        if kept.counted_at is not None:  # counted when noted: admitted afresh, not twice
            for name in kept.counted_in:
                sent_at = self._sent_at[name]
                if kept.counted_at in sent_at:  # not yet out of the window
                    sent_at.remove(kept.counted_at)
            kept.counted_at, kept.counted_in = None, ()
        return kept

    def _merge(self, alert: Alert) -> bool:
        """Count ``alert`` into the kept alert with its detector and key, if one is kept
        for deduplication; whether it was (the caller holds ``_lock``)."""
        kept = self._open.get((alert.detector, alert.key))
        if kept is None:
            return False
        kept.count += alert.count
        if alert.time.timestamp() > kept.last_time.timestamp():
            kept.last_time = alert.time
        return True

    def _keep(self, alert: Alert, now: float, *, elsewhere: bool = False) -> _Entry:
        """A new entry for ``alert`` in the ring (the caller holds ``_lock``);
        ``elsewhere``: noted only, not counted as this process's."""
        entry = _Entry(
            id=self._next_id,
            alert=alert,
            first_seen=now,
            count=alert.count,
            last_time=alert.time,
            elsewhere=elsewhere,
        )
        self._next_id += 1
        if not elsewhere:
            self._alerts += 1
        self._ring.append(entry)
        return entry

    def _index(self, entry: _Entry) -> None:
        """Deduplicate later alerts against ``entry`` (the caller holds ``_lock``)."""
        self._open[(entry.alert.detector, entry.alert.key)] = entry
        if len(self._open) > self._ring_size:  # bounded: only ring entries dedup
            self._open.popitem(last=False)

    def _expire(self, now: float) -> None:
        """Forget dedup keys whose window ended (insertion order is first-seen order)."""
        while self._open:
            entry = next(iter(self._open.values()))
            if now - entry.first_seen < self._dedup_window:
                return
            self._open.popitem(last=False)

    def _admit(self, name: str, now: float, entry: _Entry) -> bool:
        """Apply the channel's rate limit (a summary due goes first); record the entry's
        status for it (the caller holds ``_lock``)."""
        if name in self._unlimited or entry.alert.severity == "critical":
            entry.deliveries[name] = _Delivery()
            return True
        self._summarize(name, now)
        sent_at = self._window(name, now)
        if len(sent_at) >= self._rate:
            entry.deliveries[name] = _Delivery(status="rate_limited")
            self._stats[name].rate_limited += 1
            suppressed = self._suppressed.get(name)
            if suppressed is None:
                suppressed = self._suppressed[name] = _Suppressed(since=entry.alert.time)
            suppressed.add(entry.alert)
            return False
        sent_at.append(now)
        entry.deliveries[name] = _Delivery()
        return True

    def _window(self, name: str, now: float) -> deque[float]:
        """When ``name`` sent its alerts of the last 60 s (older ones forgotten)."""
        sent_at = self._sent_at[name]
        while sent_at and now - sent_at[0] >= _RATE_WINDOW:
            sent_at.popleft()
        return sent_at

    def _summarize(self, name: str, now: float, *, last: bool = False) -> None:
        """Queue the summary of ``name``'s rate-limited alerts, if any and if its window
        has room, or whatever the window says if it is the ``last`` (at ``stop``: one
        alert over the limit, rather than held-back alerts nobody is told of); the caller
        holds ``_lock`` (see the module docstring)."""
        suppressed = self._suppressed.get(name)
        if suppressed is None or self._stopping.is_set():
            return
        sent_at = self._window(name, now)
        if len(sent_at) >= self._rate and not last:
            return
        del self._suppressed[name]
        sent_at.append(now)
        entry = self._keep(suppressed.summary(name), now)
        entry.deliveries[name] = _Delivery()
        self._enqueue(self._lanes[name], entry, name)
        if self._on_alert is not None:
            self._enqueue(self._hook_lane, entry, None)

    def _summarize_to(self, name: str) -> Callable[[], None]:
        """The idle check of ``name``'s lane: its summary, once its window has room."""

        def summarize() -> None:
            try:
                with self._lock:
                    self._summarize(name, self._clock())
            except Exception as exc:  # never end the channel's thread
                _log.error("alert summary failed", extra={"channel": name, "error": _describe(exc)})

        return summarize

    def _enqueue(self, lane: _Lane, entry: _Entry, channel: str | None) -> None:
        room = lane.size if entry.alert.severity == "critical" else lane.size - lane.reserve
        if lane.queue.qsize() >= room:
            if channel is not None:
                entry.deliveries[channel] = _Delivery(status="dropped", error="queue full")
                self._stats[channel].dropped += 1
            else:
                self._hook_failures += 1
            _log.error("alert queue full: alert dropped", extra={"lane": lane.name, "id": entry.id})
            return
        lane.queue.put_nowait(entry)
        self._pending += 1
        if channel is not None:
            self._stats[channel].pending += 1

    def _done(self, channel: str | None = None) -> None:
        with self._idle:
            self._pending -= 1
            if channel is not None:
                self._stats[channel].pending -= 1
            if not self._pending:
                self._idle.notify_all()

    # ----------------------------------------------------------------- workers

    def _deliver_to(self, channel: AlertChannel) -> Callable[[_Entry], None]:
        def deliver(entry: _Entry) -> None:
            try:
                self._deliver(channel, entry)
            finally:
                self._done(channel.name)

        return deliver

    def _deliver(self, channel: AlertChannel, entry: _Entry) -> None:
        name = channel.name
        for attempt in range(1, self._max_attempts + 1):
            with self._lock:
                entry.deliveries[name].attempts = attempt
            try:
                channel.send(entry.alert)
            except Exception as exc:
                error = _describe(exc)
                retryable = not (isinstance(exc, AlertDeliveryError) and not exc.retryable)
                last = attempt == self._max_attempts or not retryable or self._stopping.is_set()
                with self._lock:
                    delivery = entry.deliveries[name]
                    delivery.error = error
                    delivery.status = "failed" if last else "retrying"
                    if last:
                        self._stats[name].failed += 1
                    else:
                        self._stats[name].retries += 1
                _log.warning(
                    "alert delivery failed",
                    extra={
                        "channel": name,
                        "id": entry.id,
                        "attempt": attempt,
                        "final": last,
                        "error": error,
                    },
                )
                if last:
                    return
                self._stopping.wait(self._delay(attempt))
                continue
            with self._lock:
                entry.deliveries[name].status = "sent"
                self._stats[name].sent += 1
            return

    def _delay(self, attempt: int) -> float:
        """Capped exponential backoff with jitter in [0.5, 1] of the step."""
        step = min(self._backoff_cap, self._backoff * 2.0 ** (attempt - 1))
        return step * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not security

    def _call_hook(self, entry: _Entry) -> None:
        try:
            if self._on_alert is not None:
                self._on_alert(entry.alert)
        except Exception as exc:
            with self._lock:
                self._hook_failures += 1
            _log.error("on_alert hook failed", extra={"id": entry.id, "error": _describe(exc)})
        finally:
            self._done()

    # ----------------------------------------------------------------- queries

    @property
    def ring_size(self) -> int:
        """How many alerts ``recent`` can show."""
        return self._ring_size

    def recent(self, limit: int = 50) -> list[dict[str, object]]:
        """Up to ``limit`` kept alerts, newest first, as JSON-ready dicts.

        Each is ``Alert.to_dict()`` with ``count`` including duplicates, plus
        ``id`` (increasing), ``last_time`` (event time of the latest
        duplicate) and ``delivery``: ``{channel: {"status", "attempts",
        "error"}}`` with status one of ``DeliveryStatus``.
        """
        with self._lock:
            entries = list(self._ring)[::-1][: max(0, limit)]
            found = [entry.to_dict() for entry in entries]
            earlier = [dict(doc) for doc in self._history[: max(0, limit - len(found))]]
            return found + earlier

    def restore(self, history: Sequence[Mapping[str, object]]) -> None:
        """Show ``history`` (``recent()`` of an earlier run: its alerts, newest first, as
        they were last seen) after this run's alerts in ``recent()``, up to the ring's
        size. This run's alerts, those raised already included, are numbered after the
        restored ids; a delivery still ``pending`` or ``retrying`` when the history was
        saved is ``interrupted``. Entries that are not JSON objects with an integer ``id``
        are left out."""
        kept = [
            _interrupted(doc)
            for doc in history
            if isinstance(doc, Mapping) and type(doc.get("id")) is int
        ][: self._ring_size]
        with self._lock:
            self._history = kept
            if not kept:
                return
            next_id = max(cast(int, doc["id"]) for doc in kept) + 1
            for entry in self._ring:  # oldest first: the order of ids is kept
                entry.id = next_id
                next_id += 1
            self._next_id = next_id

    def stats(self) -> dict[str, object]:
        """Counters: ``raised`` (calls), ``alerts`` (kept), ``duplicates``,
        ``hook_failures``, ``pending`` (queued deliveries and hook calls) and
        per channel ``sent``, ``failed``, ``retries``, ``rate_limited``, ``dropped`` and
        ``pending`` (deliveries queued, being sent or waiting for a retry)."""
        with self._lock:
            return {
                "raised": self._raised,
                "alerts": self._alerts,
                "duplicates": self._duplicates,
                "hook_failures": self._hook_failures,
                "pending": self._pending,
                "channels": {name: s.to_dict() for name, s in self._stats.items()},
            }

    def __repr__(self) -> str:
        return f"AlertDispatcher(channels={list(self._channels)!r})"
