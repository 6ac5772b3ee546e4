"""Process lifecycle of ``medsecrets server``: flags, start, serve, graceful stop.

``main(argv)`` parses the server flags, loads ``Settings`` and calls
``serve``; it returns the exit code: 0 after a clean stop, 2 for a bad setting
(one line on stderr naming it), 1 when the start fails for another reason
(one line: the error code and message, never a value).

``serve(settings)``:

1. configures JSON logging, logs a warning at every start without TLS;
2. checks the TLS files load (``tls.server_context``: TLS 1.3 only);
3. builds the core (``bootstrap.build_core``) and the API app (with the
   request timeout), starts the expired-secret sweeper;
4. serves with the chosen backend and, in dev mode, prints the
   ``export MEDSECRETS_ADDR=... MEDSECRETS_TOKEN=...`` line on stdout once
   the socket is bound;
5. on SIGTERM or SIGINT stops accepting connections, lets in-flight requests
   finish for up to ``shutdown_grace_period`` seconds, stops the sweeper and
   closes (seals) the store (with ``workers``, each worker process does so for
   itself, and one not exited after the grace period (whole seconds, at least 1) is
   killed: ``reaping_mp_server``). A second signal stops at once. SIGHUP is logged
   and ignored (settings are read at start only). A SIGTERM or SIGINT that
   comes during the start is acted on when the start is done: nothing is
   served, and what was built is closed as after a stop (exit 0).

Backends (chosen by measurement, see docs/configuration.md): ``granian``
(default, through its native RSGI interface) runs one worker embedded in this
process, or ``workers`` worker processes built by the factory ``worker_app``;
``uvicorn`` (ASGI) runs one worker in
this process with the ``ssl.SSLContext`` from ``tls.server_context``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, ClassVar

from medsecrets.errors import ConfigError, MedsecretsError
from medsecrets.server.config import Settings, load_settings
from medsecrets.server.heap import settle_heap
from medsecrets.server.logsetup import (
    configure_logging,
    flush_logging,
    granian_log_config,
    route_server_loggers,
)
from medsecrets.wakeloop import new_loop

if TYPE_CHECKING:  # the heavy modules load only when a server really starts
    from granian.server.mp import MPServer

    from medsecrets.api.app import ApiApp, Receive, Scope, Send
    from medsecrets.catalog.model import Catalog
    from medsecrets.core.audit import AuditAdmin, AuditHook
    from medsecrets.seal.latch import SealLatch
    from medsecrets.server.auditsetup import AuditStack
    from medsecrets.server.bootstrap import DevInfo
    from medsecrets.server.monitorprocess import MonitorProcess
    from medsecrets.server.placement import Placement
    from medsecrets.server.sweeper import Sweeper
    from medsecrets.store import SecretStore

__all__ = ["build_parser", "main", "reaping_mp_server", "serve", "worker_app"]

log = logging.getLogger("medsecrets.server")

#: Environment variable handing the validated settings to granian worker processes.
WORKER_SETTINGS_ENV = "_MEDSECRETS_WORKER_SETTINGS"

#: Environment variable handing the path of the shared seal latch to the workers.
LATCH_ENV = "_MEDSECRETS_SEAL_LATCH"

#: Seconds between a worker's looks at the seal latch when no request comes.
LATCH_TICK = 0.1


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``medsecrets server`` / ``python -m medsecrets.server``."""
    parser = argparse.ArgumentParser(
        prog="medsecrets server",
        description="Run the medsecrets server (settings: docs/configuration.md).",
    )
    parser.add_argument("--dev", action="store_true", default=None, help="dev mode")
    parser.add_argument("--data-dir", metavar="DIR", help="data directory (dev: ./.medsecrets)")
    parser.add_argument("--listen", metavar="HOST:PORT", help="address to listen on")
    parser.add_argument("--config", metavar="FILE", help="TOML settings file")
    parser.add_argument("--tls-cert", metavar="FILE", help="TLS certificate (PEM)")
    parser.add_argument("--tls-key", metavar="FILE", help="TLS private key (PKCS#8 PEM)")
    return parser


@dataclass(frozen=True, slots=True)
class _Built:
    app: ApiApp
    dev: DevInfo | None
    sweeper: Sweeper
    store: SecretStore
    close: Callable[[], None]


def _create_app(
    settings: Settings,
    *,
    worker: bool,
    audit_cpus: frozenset[int] | None = None,
    latch: SealLatch | None = None,
) -> _Built:
    from medsecrets.api.app import create_app
    from medsecrets.core.audit import NullAuditHook
    from medsecrets.server.auditsetup import build_audit
    from medsecrets.server.bootstrap import build_core
    from medsecrets.server.sweeper import Sweeper
    from medsecrets.server.telemetry import build_metrics

    stacks: list[AuditStack] = []

    def audit_hook(store: SecretStore) -> tuple[AuditHook, AuditAdmin]:
        stack = build_audit(settings, store, worker=worker, audit_cpus=audit_cpus)
        stacks.append(stack)
        return (stack.broker if stack.broker is not None else NullAuditHook()), stack

    core, dev = build_core(settings, worker=worker, audit=audit_hook, latch=latch)
    stack = stacks[0]

    def close() -> None:
        stack.stop()
        core.store.close()

    try:
        stack.start()
        api = create_app(
            core,
            max_body_bytes=settings.max_body_bytes,
            metrics=build_metrics(core, stack),
            metrics_unauthenticated=settings.metrics_unauthenticated,
            request_timeout=settings.request_timeout,
        )
        app = api
        sweeper = Sweeper(core.store, interval=settings.sweep_interval, tokens=core.tokens)
    except BaseException:
        close()
        raise
    return _Built(app=app, dev=dev, sweeper=sweeper, store=core.store, close=close)


def _announce(settings: Settings, dev: DevInfo | None) -> None:
    log.info(
        "listening",
        extra={"addr": settings.public_addr, "backend": settings.backend, "pid": os.getpid()},
    )
    if dev is not None:
        print(dev.export_line(), flush=True)
        log.info(
            "dev mode ready",
            extra={
                "data_dir": dev.data_dir,
                "token_file": dev.token_file,
                "first": dev.first_start,
            },
        )


def _warn_tls(settings: Settings) -> None:
    if settings.tls.enabled:
        return
    if settings.tls_disable:
        log.warning(
            "TLS is disabled (tls_disable = true): tokens and secrets cross the network in clear"
        )
    else:
        log.warning("dev mode without TLS: plain HTTP; never use dev mode for real secrets")


_STOP_REQUESTED: list[int] = []
"""Stop signals received before the serving loop's own handlers took over."""


def _stop_after_start(signum: int, frame: FrameType | None) -> None:
    """SIGTERM/SIGINT during the start: remembered, and acted on once the start is done
    (``serve`` then closes what it built instead of serving). Killed by the default action
    instead, the server left its store open and its audit process orphaned, writing a
    traceback. A second signal exits at once."""
    if _STOP_REQUESTED:
        os._exit(1)
    _STOP_REQUESTED.append(signum)


def _stopped_during_start() -> bool:
    if _STOP_REQUESTED:
        log.info(
            "stop requested during the start: not serving", extra={"signal": _STOP_REQUESTED[0]}
        )
    return bool(_STOP_REQUESTED)


def serve(settings: Settings) -> None:
    """Run the server until SIGTERM/SIGINT (see the module docstring)."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _stop_after_start)
    configure_logging(settings.log_level, file=settings.log_file)
    for warning in settings.warnings:
        log.warning(warning)
    _warn_tls(settings)
    if settings.tls.enabled:
        from medsecrets.server.tls import check_pkcs8_key, server_context

        server_context(settings.tls)
        if settings.backend == "granian" and settings.tls.key_file is not None:
            check_pkcs8_key(settings.tls.key_file)
    claim_listen(settings)
    _check_listen(settings)
    from medsecrets.server.bootstrap import claim_data_dir

    claim_data_dir(settings)  # before anything is written there: one server per data directory
    from medsecrets.server.auditsetup import check_audit_paths

    check_audit_paths(settings)  # before the store opens or dev mode sets anything up
    if settings.backend == "granian" and settings.workers > 1:
        _serve_granian_workers(settings)
        return
    from medsecrets.server.placement import pin_serving, plan

    placement = plan(settings)
    built = _create_app(
        settings, worker=False, audit_cpus=placement.audit if placement is not None else None
    )
    if placement is not None and pin_serving(placement):  # before the server starts its threads
        log.info(
            "cpu placement",
            extra={"server_cpus": sorted(placement.serving), "audit_cpus": sorted(placement.audit)},
        )
    built.sweeper.start()
    settle_heap()
    try:
        if _stopped_during_start():
            pass
        elif settings.backend == "uvicorn":
            _serve_uvicorn(built.app, settings, built.dev)
        else:
            with asyncio.Runner(loop_factory=new_loop) as runner:  # woken only while asleep
                runner.run(_serve_granian_embedded(built.app, settings, built.dev, placement))
    finally:
        built.sweeper.stop(timeout=settings.shutdown_grace_period + 1)
        built.close()
        flush_logging()
        log.info("stopped")


_CLAIMS: list[object] = []
"""The sockets that hold this process's claims on its listen addresses (``claim_listen``)."""


def claim_listen(settings: Settings) -> None:
    """Claim ``listen`` for this process, host-wide, until it exits (Linux).

    granian binds its listener with ``SO_REUSEPORT``, so two servers started at
    the same moment on one address could both bind it and split the requests
    between their stores. The claim is an abstract Unix socket named after the
    address (``medsecrets/listen/<host>:<port>``): binding it is atomic, the
    kernel drops it when the process dies, and a second server's claim fails.
    Raises ``ConfigError`` naming ``listen`` when another process holds it.
    """
    import socket

    if not sys.platform.startswith("linux"):
        return
    claim = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        claim.bind(f"\0medsecrets/listen/{settings.host}:{settings.port}")
    except OSError as exc:
        claim.close()
        raise ConfigError(
            f"setting 'listen': cannot listen on {settings.listen} (another medsecrets server "
            f"on this host has claimed it: {exc.strerror or exc})"
        ) from None
    _CLAIMS.append(claim)


def _check_listen(settings: Settings) -> None:
    """Fail early, naming ``listen``, when the address cannot be bound (before any set-up)."""
    import socket

    host, port = settings.host, settings.port
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as exc:
        raise ConfigError(
            f"setting 'listen': cannot listen on {settings.listen} ({exc.strerror or exc})"
        ) from None


def _granian_kwargs(settings: Settings) -> dict[str, object]:
    """granian's settings, the same for the embedded server and the worker processes.

    Connection limits are set on purpose (granian's embedded default was 128
    connections held up to 30 s each: 128 idle or half-open sockets from one
    client starved every other): ``max_connections`` connections served at once
    per worker (``backpressure``; more wait in the ``listen_backlog``), and a
    connection that has not sent a whole request head within
    ``header_read_timeout`` is closed, which also bounds an idle keep-alive
    connection and one that sends nothing at all. HTTP/1.1 only: granian's
    HTTP/2 detection reads a new connection's first bytes with no timeout.
    """
    from granian.constants import HTTPModes, Interfaces
    from granian.http import HTTP1Settings
    from granian.log import LogLevels

    kwargs: dict[str, object] = {
        "address": settings.host,
        "port": settings.port,
        "interface": Interfaces.RSGI,
        "http": HTTPModes.http1,
        "backlog": settings.listen_backlog,
        "backpressure": settings.max_connections,
        "log_enabled": True,
        # incremental: granian's dictConfig would close every handler there is (the
        # access-line batcher's flushing thread too)
        "log_dictconfig": granian_log_config(),
        # granian's own info lines cost every request a trip through logging: warnings up only.
        "log_level": LogLevels(settings.log_level if settings.log_level != "info" else "warning"),
        "log_access": False,
        "websockets": False,
        "http1_settings": HTTP1Settings(
            header_read_timeout=max(1, round(settings.header_read_timeout * 1000))
        ),
    }
    if settings.tls.enabled:
        from granian.constants import SSLProtocols

        kwargs["ssl_cert"] = Path(str(settings.tls.cert_file))
        kwargs["ssl_key"] = Path(str(settings.tls.key_file))
        kwargs["ssl_protocol_min"] = SSLProtocols.tls13
        if settings.tls.client_ca is not None:
            kwargs["ssl_ca"] = Path(settings.tls.client_ca)
            kwargs["ssl_client_verify"] = True
    return kwargs


async def _serve_granian_embedded(
    app: ApiApp, settings: Settings, dev: DevInfo | None, placement: Placement | None = None
) -> None:
    from granian.server.embed import Server

    server = Server(app, **_granian_kwargs(settings))  # type: ignore[arg-type]
    route_server_loggers()
    server.on_startup(lambda: _announce(settings, dev))
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()

    def on_signal(signum: int) -> None:
        if stopping.is_set():
            log.warning("second signal: stopping now", extra={"signal": signum})
            os._exit(1)
        log.info("shutting down: finishing in-flight requests", extra={"signal": signum})
        stopping.set()
        server.stop()  # type: ignore[no-untyped-call]

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    if _STOP_REQUESTED:  # came between serve's last look and these handlers
        on_signal(_STOP_REQUESTED[0])
    # SIGHUP (a closed terminal, a habit from servers that reload) would kill the process
    # with no graceful stop; settings are read at start only, so it is logged and ignored
    loop.add_signal_handler(signal.SIGHUP, _ignore_hangup)
    from medsecrets.server.placement import thread_ids

    before = thread_ids()
    task = asyncio.ensure_future(server.serve())
    placing = asyncio.ensure_future(_place_io(before, placement)) if placement else None
    try:
        await _bound(task, settings)
        await stopping.wait()
        try:
            await asyncio.wait_for(asyncio.shield(task), settings.shutdown_grace_period or None)
        except TimeoutError:
            log.warning(
                "shutdown grace period over: dropping unfinished requests",
                extra={"grace_seconds": settings.shutdown_grace_period},
            )
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    finally:
        if placing is not None:
            placing.cancel()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(signum)


def _ignore_hangup() -> None:
    log.warning("SIGHUP ignored: settings are read at start (restart to apply them)")


async def _place_io(before: frozenset[int], placement: Placement) -> None:
    """Put granian's I/O thread with the audit processes once it runs (``placement``).

    It is the thread granian started (not there ``before``, not a Python thread) that
    waits in ``epoll``; looked for every 50 ms for 2 s, then given up with a warning.
    """
    from medsecrets.server.placement import io_threads, place_threads, thread_ids

    for _ in range(40):
        await asyncio.sleep(0.05)
        python = {thread.native_id for thread in threading.enumerate()}
        found = io_threads(thread_ids() - before - python)
        if found:
            if place_threads(found, placement.audit):
                log.info(
                    "cpu placement: transport I/O",
                    extra={"threads": len(found), "cpus": sorted(placement.audit)},
                )
            else:
                log.warning("cannot place the transport's I/O thread: left on the server CPUs")
            return
    log.warning("transport I/O thread not found: left on the server CPUs")


async def _bound(task: asyncio.Future[None], settings: Settings) -> None:
    """Surface a bind failure (the serve task ends early) as a ``ConfigError``."""
    await asyncio.sleep(0)
    if task.done():
        exc = task.exception()
        if isinstance(exc, OSError):
            raise ConfigError(
                f"setting 'listen': cannot listen on {settings.listen} ({exc.strerror or exc})"
            ) from None
        if exc is not None:
            raise exc


def _serve_uvicorn(app: ApiApp, settings: Settings, dev: DevInfo | None) -> None:
    import uvicorn

    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace_period) or None,
        # as with granian: the listen backlog, and idle keep-alive connections closed after
        # header_read_timeout (uvicorn caps no connection count: max_connections is granian's)
        backlog=settings.listen_backlog,
        timeout_keep_alive=max(1, math.ceil(settings.header_read_timeout)),
        lifespan="auto",
        ssl_certfile=settings.tls.cert_file,
        ssl_keyfile=settings.tls.key_file,
    )
    config.load()
    if settings.tls.enabled:
        from medsecrets.server.tls import server_context

        config.ssl = server_context(settings.tls)
    route_server_loggers()

    class Server(uvicorn.Server):
        """uvicorn's server without re-raising the stop signal after a graceful stop
        (so the store is closed and the exit code is 0, as with granian)."""

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if self.should_exit:
                self.force_exit = True
            else:
                log.info("shutting down: finishing in-flight requests", extra={"signal": sig})
            self.should_exit = True

    server = Server(config)

    async def run() -> None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, _ignore_hangup)
        sockets = [config.bind_socket()]
        _announce(settings, dev)
        await server.serve(sockets=sockets)

    try:
        asyncio.run(run())
    except OSError as exc:
        raise ConfigError(
            f"setting 'listen': cannot listen on {settings.listen} ({exc.strerror or exc})"
        ) from None


def _serve_granian_workers(settings: Settings) -> None:
    """``workers`` granian worker processes, each built by the factory ``worker_app``."""
    from medsecrets.server.bootstrap import build_core, create_latch
    from medsecrets.wire import to_wire

    core, dev = build_core(settings)  # dev set-up once, in the parent
    seal_type = core.store.status().seal_type
    core.store.close()
    if _stopped_during_start():
        return
    if seal_type == "shamir":  # each worker would need the shares
        raise ConfigError(
            "setting 'workers': more than one worker needs an auto-unseal seal "
            "(keyfile or awskms), and the store has a shamir seal"
        )
    latch = create_latch(settings)  # one operator seal seals every worker
    os.environ[WORKER_SETTINGS_ENV] = json.dumps(to_wire(settings))
    os.environ[LATCH_ENV] = latch.path
    monitor: MonitorProcess | None = None
    try:
        monitor = _shared_monitor(settings, core.store.catalog)
        kwargs = _granian_kwargs(settings)
        server = reaping_mp_server()(
            "medsecrets.server.runner:worker_app",
            factory=True,
            workers=settings.workers,
            workers_kill_timeout=max(1, int(settings.shutdown_grace_period)) or None,
            # a worker that dies (the OOM killer, a crash) is replaced, not the server
            # stopped; the new one finds the seal latch as the others left it
            respawn_failed_workers=True,
            **kwargs,  # type: ignore[arg-type]
        )
        route_server_loggers()
        server.on_startup(lambda: _announce(settings, dev))
        server.serve()
    finally:
        latch.remove()
        if monitor is not None:
            monitor.stop()


@functools.cache
def reaping_mp_server() -> type[MPServer]:
    """granian's ``MPServer`` whose graceful stop waits for a worker that exits in time.

    granian reaps each worker process twice: a watcher thread waits for it
    (``waitpid``), and the stop joins it with ``workers_kill_timeout``. When the
    worker exits, the join's ``waitpid`` can lose that race (``ECHILD``: the
    watcher took the exit status and has not stored it yet), so the worker looks
    alive: granian logged "Killing worker-N after it refused to gracefully stop"
    for a worker that had stopped cleanly milliseconds before, and sent SIGKILL to
    its process id, which by then could be another process's. Here a worker is
    joined through its watcher thread, which ends only once the exit status is
    stored: a worker that exits within the timeout is never killed, one that
    does not is killed as before. Its signals are the single-process server's: a
    second SIGTERM/SIGINT kills the workers and exits 1 at once, SIGHUP is logged
    and ignored, a stop that came before granian's handlers is acted on. A granian
    whose worker class has no such watcher (its internals changed) gets its own
    ``MPServer`` unchanged.
    """
    from granian.server.mp import MPServer, WorkerProcess

    if not all(callable(getattr(WorkerProcess, name, None)) for name in ("_watch", "_watcher")):
        return MPServer

    class ReapedWorker(WorkerProcess):
        """A granian worker process joined through the thread that reaps it."""

        _reaper: threading.Thread | None = None

        def _watch(self) -> None:
            self._reaper = threading.Thread(
                target=self._watcher, name=f"granian-reaper-{self.idx + 1}"
            )
            self._reaper.start()

        def join(self, timeout: float | None = None) -> None:
            if self._reaper is None:  # not started
                super().join(timeout)  # type: ignore[no-untyped-call]
            else:
                self._reaper.join(timeout)

    class ReapingMPServer(MPServer):
        worker_class: ClassVar[type[WorkerProcess]] = ReapedWorker
        """The class of its workers."""

        def _spawn_workers(self, *args: Any, **kwargs: Any) -> None:
            """granian's spawn of the workers, at its start, once its signal handlers are
            in place. A stop signal that came after ``serve``'s last look and before
            them (``_stop_after_start`` remembered it) is acted on here instead: no
            worker is spawned, the server stops (it was lost: the server served on)."""
            if _STOP_REQUESTED:
                self.signal_handler_interrupt(_STOP_REQUESTED[0], None)
                return
            super()._spawn_workers(*args, **kwargs)  # type: ignore[no-untyped-call]

        def signal_handler_interrupt(
            self, signum: int = signal.SIGTERM, frame: FrameType | None = None
        ) -> None:
            """SIGTERM/SIGINT. In the server: the first starts granian's graceful stop, a
            second kills the workers and exits at once (exit 1; granian's own handler
            only set its flag again, and the stop went on for the whole grace period).

            A forked worker inherits this handler until granian installs its own
            (after the worker's app is built): there it only set the worker's copy of
            the server's flag, and the stop was lost (the worker served on until
            killed). In a worker it is remembered instead, and re-sent once granian's
            handlers are in place (``_StopAware``)."""
            if self.pid is not None and os.getpid() != self.pid:
                _PENDING_STOP.append(True)
                return
            if self.interrupt_signal:
                log.warning("second signal: stopping now", extra={"signal": signum})
                for worker in list(self.wrks):
                    with contextlib.suppress(Exception):
                        worker.kill()  # type: ignore[no-untyped-call]
                flush_logging()
                os._exit(1)
            super().signal_handler_interrupt(signum, frame)  # type: ignore[no-untyped-call]

        def signal_handler_reload(self, *args: Any, **kwargs: Any) -> None:
            """SIGHUP: logged and ignored, as by a single-process server (settings are read
            at start only); granian's own handler respawned every worker. Ignored quietly
            in a worker, which keeps this inherited handler."""
            if self.pid is not None and os.getpid() == self.pid:
                _ignore_hangup()

        def _spawn_worker(self, *args: Any, **kwargs: Any) -> WorkerProcess:
            worker = super()._spawn_worker(*args, **kwargs)
            worker.__class__ = ReapedWorker  # before its start: the reaper is ours
            return worker

    return ReapingMPServer


def _shared_monitor(settings: Settings, catalog: Catalog) -> MonitorProcess | None:
    """With the monitor on, the one monitor process every worker feeds (started; its
    address in ``LINK_ENV`` for the workers), so thresholds count over all of them."""
    if not (settings.monitor.enabled and settings.audit.enabled):
        return None
    from medsecrets.server.auditprocess import monitor_settings
    from medsecrets.server.monitorlink import LINK_ENV
    from medsecrets.server.monitorprocess import MonitorProcess

    state = Path(settings.data_dir, "monitor", "detectors.state")
    monitor = MonitorProcess(
        monitor_settings(catalog, detectors=settings.monitor.detectors, state_path=str(state)),
        log_level=settings.log_level,
        log_file=settings.log_file,
    )
    try:
        monitor.start()
    except (OSError, RuntimeError) as exc:
        raise ConfigError(f"cannot start the monitor process ({exc})") from None
    os.environ[LINK_ENV] = monitor.address.to_env()
    log.info(
        "monitor: one monitor process watches every worker's requests",
        extra={"workers": settings.workers, "pid": monitor.pid},
    )
    return monitor


def worker_app() -> ApiApp:
    """Factory run in each granian worker process: its own core over the shared storage."""
    import multiprocessing.util

    from medsecrets.seal.latch import SharedLatch
    from medsecrets.wire import from_wire

    _die_with_parent()
    settings = from_wire(Settings, json.loads(os.environ[WORKER_SETTINGS_ENV]))
    configure_logging(settings.log_level, file=settings.log_file)
    try:
        latch = SharedLatch.open(os.environ[LATCH_ENV])
        built = _create_app(settings, worker=True, latch=latch)
    except Exception:  # one log record (foreign messages dropped), not a raw traceback
        log.exception("the worker failed to start")
        flush_logging()
        raise SystemExit(1) from None
    built.sweeper.start()
    threading.Thread(
        target=_follow_latch, args=(built.store,), name="seal-latch", daemon=True
    ).start()
    settle_heap()
    # granian does not tell an embedded factory's app that the worker stops: flush the audit
    # devices (records nobody waits for: alerts, errors) and close them at exit. Not with
    # atexit: a multiprocessing worker ends with os._exit, which never runs it (no worker
    # closed anything); multiprocessing runs its own finalizers once the worker's target
    # returned or raised, with fork and spawn alike.
    multiprocessing.util.Finalize(None, _close_worker, args=(built, settings), exitpriority=10)
    return _StopAware(built.app)


def _close_worker(built: _Built, settings: Settings) -> None:
    """A worker's last step after a graceful stop: the sweeper stopped, then the audit
    devices flushed and closed and the store closed (sealed), as ``serve`` does."""
    try:
        built.sweeper.stop(timeout=settings.shutdown_grace_period + 1)
        built.close()
    except Exception as exc:  # exiting anyway: one line, no traceback
        log.warning("closing the worker failed (%s)", type(exc).__name__)
    flush_logging()


_PENDING_STOP: list[bool] = []
"""In a worker: a stop signal came before granian's own handlers were in place (a list:
appending is all a signal handler may safely do)."""


class _StopAware:
    """A worker's app as granian runs it: the app's ``__call__`` and ``__rsgi__``, and an
    ``__rsgi_init__`` that makes sure a stop signal that reached this worker while it
    started is acted on: it sends it again once granian serves, so the worker stops
    gracefully as if the signal came then.

    Two windows lost such a signal: before granian installs the worker's handlers (the
    server's handler, inherited: ``ReapingMPServer``), and from then until granian's
    loop runs, which is only once it serves (uvloop drops a signal that comes while it
    does not run). ``__rsgi_init__`` is called in the second window: until the loop
    runs, a stop signal is remembered here."""

    def __init__(self, app: ApiApp) -> None:
        self._app = app
        self.__rsgi__ = app.__rsgi__

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        granians: dict[int, Any] = {
            signum: signal.signal(signum, _remember_stop) for signum in _STOP_SIGNALS
        }
        loop.call_soon(_serving, granians)  # the first thing the loop does once it runs


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _remember_stop(signum: int, frame: FrameType | None) -> None:
    _PENDING_STOP.append(True)


def _serving(granians: dict[int, Any]) -> None:
    """granian's loop runs (its server serves): its handlers back, and a stop that came
    while the worker started sent again, now that they see it."""
    for signum, handler in granians.items():
        if handler is not None:
            signal.signal(signum, handler)
    if _PENDING_STOP:
        log.info("stopping: the stop came while this worker started")
        os.kill(os.getpid(), signal.SIGTERM)


def _follow_latch(store: SecretStore) -> None:
    """A worker's thread: drop the keys within ``LATCH_TICK`` s of an operator's seal
    served by another worker, even when no request comes (requests check it themselves)."""
    while True:
        time.sleep(LATCH_TICK)
        try:
            store.follow_latch()
        except Exception as exc:  # the next request checks again and refuses
            log.warning("following the seal latch failed (%s)", type(exc).__name__)


def _die_with_parent() -> None:
    """Linux: have the kernel SIGKILL this worker when the server process dies. A server
    that died before (while this worker started) is not noticed by the kernel: the
    worker exits at once instead of serving on, orphaned."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import multiprocessing

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:
        log.warning("the server exited while this worker started: exiting")
        flush_logging()
        os._exit(1)


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    return {
        "dev": args.dev,
        "data_dir": args.data_dir,
        "listen": args.listen,
        "tls.cert_file": args.tls_cert,
        "tls.key_file": args.tls_key,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``medsecrets server`` and ``python -m medsecrets.server``."""
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    config_file = args.config or os.environ.get("MEDSECRETS_SERVER_CONFIG") or None
    try:
        settings = load_settings(config_file, env=os.environ, overrides=_overrides(args))
        serve(settings)
    except ConfigError as exc:
        print(f"medsecrets server: config error: {exc.message}", file=sys.stderr)
        return 2
    except MedsecretsError as exc:
        print(f"medsecrets server: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception:
        log.exception("the server failed")
        print("medsecrets server: internal error (details in the log)", file=sys.stderr)
        return 1
    return 0
