"""Process lifecycle: start the database, migrate, run the chosen components, stop cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, TextIO

from aiohttp import web

from service import tokens
from service.api import create_app
from service.api.middleware import AccessLogger
from service.context import Context, Keys
from service.settings import Settings
from service.store import Store, migrations
from service.store.db import create_pool, resolve_database

log = logging.getLogger(__name__)

# A background component: runs until ``stop`` is set, then returns after finishing its work.
Component = Callable[[Context, asyncio.Event], Coroutine[Any, Any, None]]

API = "api"
WORKER = "worker"
SENDER = "sender"
MAINTENANCE = "maintenance"
RULES_WATCH = "rules-watch"


def background_components(names: Iterable[str]) -> dict[str, Component]:
    """The coroutine of each requested non-HTTP component."""
    from service import maintenance, reloader, sender, worker

    available: dict[str, Component] = {
        WORKER: worker.run,
        SENDER: sender.run,
        MAINTENANCE: maintenance.run,
        RULES_WATCH: reloader.watch,
    }
    return {name: available[name] for name in names if name in available}


def site_port(site: web.TCPSite) -> int:
    """The bound port (PORT=0 asks the OS for a free one)."""
    server = site._server
    sockets = getattr(server, "sockets", None)
    if sockets:
        return int(sockets[0].getsockname()[1])
    return int(site._port)


def _banner(ctx: Context, out: TextIO, listening: str | None) -> None:
    settings = ctx.settings
    if listening:
        print(f"momentcast listening on {listening}", file=out)
    print(f"VAPID public key: {ctx.keys.vapid_public_b64}", file=out)
    if settings.admin_token:
        print("admin token: from MOMENTCAST_ADMIN_TOKEN", file=out)
    else:
        print(f"admin token: in {tokens.admin_token_path(settings.data_dir).resolve()}", file=out)
    out.flush()


async def load_rules(ctx: Context) -> None:
    """Load rules/ into the context; a broken set is reported but does not stop the process."""
    from service import reloader

    reloader.load(ctx)


async def run(
    settings: Settings,
    dsn: str,
    components: Iterable[str],
    *,
    out: TextIO = sys.stdout,
    ready: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run ``components`` until SIGINT/SIGTERM (or ``stop``), then shut down in order."""
    names = set(components)
    await migrations.migrate(dsn)
    pool = await create_pool(dsn, min_size=settings.db_pool_min, max_size=settings.db_pool_max)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    runner: web.AppRunner | None = None
    tasks: list[asyncio.Task[None]] = []
    try:
        ctx = Context(settings=settings, store=Store(pool, dsn=dsn), keys=Keys.load(settings))
        await load_rules(ctx)
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
            site = web.TCPSite(runner, settings.host, settings.port)
            await site.start()
            host = f"[{settings.host}]" if ":" in settings.host else settings.host
            port = site_port(site)
            listening = f"http://{host}:{port}"
        for name, component in background_components(names).items():
            tasks.append(asyncio.create_task(component(ctx, stop), name=name))
        _banner(ctx, out, listening)
        if ready is not None:
            ready.set()
        stopper = asyncio.create_task(stop.wait())
        # A component that dies is a bug; stop the process rather than run half of it.
        done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stopper and task.exception() is not None:
                log.error("component %s failed", task.get_name(), exc_info=task.exception())
        stop.set()
        stopper.cancel()
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
        await pool.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)


def run_blocking(settings: Settings, components: Iterable[str]) -> None:
    """Entry point of ``momentcast serve|api|worker``: owns the embedded database's lifetime."""
    target = resolve_database(settings)
    try:
        asyncio.run(run(settings, target.dsn, components))
    finally:
        target.close()
