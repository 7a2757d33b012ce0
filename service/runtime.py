"""Process lifecycle: start the database, migrate, run the chosen components, stop cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any, TextIO

from aiohttp import web

from service import __version__, fingerprints, tokens
from service.api import create_app, create_metrics_app
from service.api.middleware import AccessLogger
from service.context import Context, Keys
from service.errors import ComponentFailed, ConfigError, DatabaseError
from service.settings import ENV_PREFIX, Settings
from service.store import Store, migrations
from service.store.db import EmbeddedPostgres, create_pool, resolve_database
from service.waiting import wait_any

log = logging.getLogger(__name__)

# A background component: runs until ``stop`` is set, then returns after finishing its work.
Component = Callable[[Context, asyncio.Event], Coroutine[Any, Any, None]]

API = "api"
WORKER = "worker"
SENDER = "sender"
FANOUT = "fanout"
MAINTENANCE = "maintenance"
RULES_WATCH = "rules-watch"
EMBEDDED_WATCH = "embedded-postgres"
EMBEDDED_WATCH_INTERVAL_S = 1.0
POOL_CLOSE_TIMEOUT_S = 5.0


def background_components(names: Iterable[str]) -> dict[str, Component]:
    """The coroutine of each requested non-HTTP component."""
    from service import fanout, maintenance, push, worker
    from service.reload import watch as reloader

    available: dict[str, Component] = {
        WORKER: worker.run,
        FANOUT: fanout.run,
        SENDER: push.run,
        MAINTENANCE: maintenance.run,
        RULES_WATCH: reloader.watch,
    }
    return {name: available[name] for name in names if name in available}


def bound_port(runner: web.AppRunner) -> int:
    """The port the runner's site listens on (PORT=0 asks the OS for a free one)."""
    return int(runner.addresses[0][1])


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def listen_error(host: str, port: int, exc: OSError, port_setting: str = "PORT") -> ConfigError:
    """One line naming the setting to fix, for an address that cannot be listened on."""
    where = _address(host, port)
    if isinstance(exc, socket.gaierror):
        return ConfigError(f"{ENV_PREFIX}HOST: cannot resolve {host!r} ({exc.strerror})")
    if exc.errno == errno.EADDRINUSE:
        reason = "the address is in use (another process listens there)"
        return ConfigError(f"{ENV_PREFIX}{port_setting}: cannot listen on {where}: {reason}")
    if exc.errno == errno.EACCES:
        reason = "permission denied (ports below 1024 need privileges)"
        return ConfigError(f"{ENV_PREFIX}{port_setting}: cannot listen on {where}: {reason}")
    if exc.errno == errno.EADDRNOTAVAIL:
        reason = "not an address of this machine"
    else:
        reason = exc.strerror or str(exc)
    return ConfigError(f"{ENV_PREFIX}HOST: cannot listen on {where}: {reason}")


def prepare_data_dir(settings: Settings) -> None:
    """Create DATA_DIR (keys, the embedded database) or say in one line why it cannot be."""
    path = settings.data_dir
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(f"{ENV_PREFIX}DATA_DIR: cannot create {path}: {reason}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"{ENV_PREFIX}DATA_DIR: {path} is not writable")


def check_listen(host: str, port: int, port_setting: str = "PORT") -> None:
    """Fail before anything starts when ``host:port`` cannot be listened on: bind (without
    listening) every address the host resolves to, as the server will, then let go."""
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError as exc:
        raise listen_error(host, port, exc, port_setting) from None
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                raise listen_error(host, port, exc, port_setting) from None


async def _start_site(site: web.TCPSite, host: str, port: int, port_setting: str) -> None:
    try:
        await site.start()
    except OSError as exc:  # taken between check_listen and now
        raise listen_error(host, port, exc, port_setting) from None


def _banner(ctx: Context, out: TextIO, listening: str | None, metrics: str | None) -> None:
    settings = ctx.settings
    if listening:
        print(f"momentcast listening on {listening}", file=out)
    if metrics:
        print(f"metrics on {metrics}", file=out)
    print(f"VAPID public key: {ctx.keys.vapid_public_b64}", file=out)
    if settings.admin_token:
        print("admin token: from MOMENTCAST_ADMIN_TOKEN", file=out)
    else:
        print(f"admin token: in {tokens.admin_token_path(settings.data_dir).resolve()}", file=out)
    out.flush()


async def load_rules(ctx: Context) -> None:
    """Load rules/ into the context (``run`` refuses to start on a set with errors)."""
    from service.reload import watch as reloader

    reloader.load(ctx)


async def run(
    settings: Settings,
    dsn: str,
    components: Iterable[str],
    *,
    out: TextIO = sys.stdout,
    ready: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
    embedded: EmbeddedPostgres | None = None,
    child: int | None = None,
    extra: Mapping[str, Component] | None = None,
) -> None:
    """Run ``components`` until SIGINT/SIGTERM (or ``stop``), then shut down in order.

    ``child``: this is process ``child`` of ``serve --processes`` (service/supervisor.py),
    whose parent migrated and warned already, and which shares PORT with its siblings through
    SO_REUSEPORT. ``extra``: more components (a child's watch on its parent)."""
    names = set(components)
    if child is None:
        await migrations.migrate(dsn, settings.migrations_dir)
    db_timeout = settings.db_timeout.total_seconds()
    pool = await create_pool(
        dsn, min_size=settings.db_pool_min, max_size=settings.db_pool_max, db_timeout=db_timeout
    )
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    stop_reason = "stop requested"

    def on_signal(sig: signal.Signals) -> None:
        nonlocal stop_reason
        stop_reason = sig.name
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal, sig)
    runner: web.AppRunner | None = None
    metrics_runner: web.AppRunner | None = None
    tasks: list[asyncio.Task[None]] = []
    failure: ComponentFailed | None = None
    try:
        store = Store(pool, dsn=dsn, timeout=db_timeout)
        ctx = Context(settings=settings, store=store, keys=Keys.load(settings))
        # Before anything serves or sends: keys that differ from the deployment's stop here.
        await fingerprints.check(ctx.store, ctx.keys.vapid_public_b64, ctx.keys.secret_key)
        await load_rules(ctx)
        if ctx.rules is not None and ctx.rules.current is None:
            from service.reload import watch as reloader

            raise reloader.start_up_error(ctx.rules)
        listening = None
        if API in names:
            app = create_app(ctx)
            runner = web.AppRunner(
                app,
                access_log_class=AccessLogger,
                handle_signals=False,
                shutdown_timeout=settings.shutdown_grace.total_seconds(),
            )
            await runner.setup()
            site = web.TCPSite(runner, settings.host, settings.port, reuse_port=child is not None)
            await _start_site(site, settings.host, settings.port, "PORT")
            listening = "http://" + _address(settings.host, bound_port(runner))
        metrics = None
        if settings.metrics_port is not None:
            # Scrapes are not access-logged: one line every 15 s per process says nothing.
            metrics_runner = web.AppRunner(
                create_metrics_app(), handle_signals=False, access_log=None
            )
            await metrics_runner.setup()
            site = web.TCPSite(metrics_runner, settings.host, settings.metrics_port)
            await _start_site(site, settings.host, settings.metrics_port, "METRICS_PORT")
            metrics = f"http://{_address(settings.host, bound_port(metrics_runner))}/metrics"
        background = background_components(names)
        if embedded is not None:
            background[EMBEDDED_WATCH] = _watch_embedded(embedded)
        background.update(extra or {})
        for name, component in background.items():
            tasks.append(asyncio.create_task(component(ctx, stop), name=name))
        _banner(ctx, out, listening, metrics)
        subject_warning = settings.vapid_subject_warning() if SENDER in names else None
        if subject_warning and not child:  # a group says it once, in process 0
            log.warning("%s", subject_warning)
        database = "embedded" if settings.database_url is None else "external"
        if child is not None:
            database = "the supervising parent's"
        log.info(
            "momentcast %s %sstarted: %s; database %s",
            __version__,
            "" if child is None else f"process {child} ",
            ", ".join(sorted(names)),
            database,
            extra={"version": __version__, "components": sorted(names), "database": database},
        )
        if ready is not None:
            ready.set()
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        # A component that ends before it was asked to is a bug or an unrecoverable error:
        # stop the whole process with an error rather than run half of it, so that a
        # supervisor restarts it.
        failed = [task for task in done if task is not stopper]
        if failed and not stop.is_set():
            task = failed[0]
            error = task.exception()
            reason = f"failed: {error!r}" if error is not None else "stopped unexpectedly"
            log.error("component %s %s; stopping", task.get_name(), reason, exc_info=error)
            failure = ComponentFailed(task.get_name(), reason)
            stop_reason = str(failure)
        stop.set()
        log.info("momentcast stopping: %s", stop_reason, extra={"reason": stop_reason})
    finally:
        stop.set()
        if runner is not None:
            await runner.cleanup()
        if tasks:
            grace = settings.shutdown_grace.total_seconds()
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if metrics_runner is not None:
            await metrics_runner.cleanup()
        try:
            # Gracefully if the connections answer; one stuck on a half-open connection
            # must not hold the exit for long.
            async with asyncio.timeout(POOL_CLOSE_TIMEOUT_S):
                await pool.close()
        except TimeoutError:
            pool.terminate()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
    if failure is not None:
        raise failure


def _watch_embedded(embedded: EmbeddedPostgres) -> Component:
    async def watch(ctx: Context, stop: asyncio.Event) -> None:
        # Without its database the process can only fail requests; ending with an error lets
        # a supervisor restart both (the next start restarts the embedded server).
        while not stop.is_set():
            if not embedded.is_running():
                raise DatabaseError(f"the embedded PostgreSQL in {embedded.pgdata} stopped")
            await wait_any(stop, seconds=EMBEDDED_WATCH_INTERVAL_S)

    return watch


def run_event_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on uvloop where it is installed (every platform but Windows): the API's
    per-request cost is mostly the event loop's and the sockets' (docs/performance.md, Signal
    ingest); aiohttp and asyncpg both support it. Elsewhere asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)


def run_blocking(settings: Settings, components: Iterable[str]) -> None:
    """Entry point of ``momentcast serve|api|worker``: owns the embedded database's lifetime."""
    components = list(components)
    prepare_data_dir(settings)
    if API in components:
        check_listen(settings.host, settings.port)
    if settings.metrics_port is not None:
        check_listen(settings.host, settings.metrics_port, "METRICS_PORT")
    target = resolve_database(settings)
    try:
        run_event_loop(run(settings, target.dsn, components, embedded=target.embedded))
    finally:
        target.close()
