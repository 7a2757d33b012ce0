"""Hot reload of rules/: polling for changes, SIGHUP, and the admin endpoint share this."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import TYPE_CHECKING

from service.context import Context
from service.errors import ConfigError
from service.metrics import RULES_LOAD_ERRORS, RULES_LOADED
from service.settings import ENV_PREFIX
from service.waiting import wait_any

if TYPE_CHECKING:
    from service.reload.holder import RulesHolder

log = logging.getLogger(__name__)


def _account(holder: RulesHolder, errors: list[str]) -> None:
    if errors:
        RULES_LOAD_ERRORS.inc()
        if holder.current is None:
            log.error("rules rejected, no rule set is active (%d errors)", len(errors))
        else:
            log.error("rules reload rejected, previous set stays active (%d errors)", len(errors))
        for line in errors:
            log.error("rules: %s", line)
    elif holder.current is not None:
        log.info("rules loaded: %d rules", len(holder.current.rules))
    if holder.current is not None:
        RULES_LOADED.set(len(holder.current.rules))


def _reload(holder: RulesHolder) -> list[str]:
    errors = holder.reload()
    _account(holder, errors)
    return errors


async def reload_rules(holder: RulesHolder) -> list[str]:
    """Reload now; the old set stays active when the new one has errors.

    In a thread: parsing YAML and GeoJSON, building the STRtree and sampling time zones take
    long enough with many places to stall the API, the worker and the sender of the process.
    The holder swaps the new set in with one reference assignment, under its own lock.
    """
    return await asyncio.to_thread(_reload, holder)


def _empty_warning(ctx: Context, holder: RulesHolder) -> str:
    path = holder.path
    state = "is empty" if path.is_dir() else "does not exist"
    if "rules_dir" in ctx.settings.model_fields_set:
        where = f"{ENV_PREFIX}RULES_DIR: {path} {state}"
    else:
        where = f"no rules: {path} {state} ({ENV_PREFIX}RULES_DIR is unset)"
    return (
        f"{where}; running with an empty rule set, nothing is sent until rules are added; "
        f"write a starter set with `momentcast rules init {path}`"
    )


def load(ctx: Context) -> RulesHolder:
    # The rules (and with them shapely, numpy and the time-zone finder) are imported by the
    # processes that load them, not by every importer of this module (ingest, the API).
    from service.reload.holder import RulesHolder

    holder = RulesHolder(ctx.settings.rules_dir, load_now=False)
    if holder.is_empty():
        # A fresh install has no rules yet: serve (and be ready) with none rather than wait
        # for ever, and say once how to get some. Files added later are loaded by the poll.
        holder.start_empty()
        RULES_LOADED.set(0)
        log.warning("%s", _empty_warning(ctx, holder))
    elif holder.reload():  # at start-up, before anything is served
        RULES_LOAD_ERRORS.inc()
    else:
        _account(holder, [])
    ctx.rules = holder
    return holder


def start_up_error(holder: RulesHolder) -> ConfigError:
    """A process does not start on a rule set with errors (it would serve nothing and a
    supervisor would not see why): one line, the first error and where to see them all."""
    errors = holder.last_errors
    count = f"{len(errors)} error{'' if len(errors) == 1 else 's'}"
    first = errors[0] if errors else "not loaded"
    return ConfigError(
        f"{ENV_PREFIX}RULES_DIR: {count} in {holder.path}, the first: {first} "
        "(momentcast rules check lists them all)"
    )


async def watch(ctx: Context, stop: asyncio.Event) -> None:
    """Reload when files under RULES_DIR change, and on SIGHUP.

    Nothing a file under RULES_DIR holds may end this loop: its end would stop the whole
    process (runtime treats a component that returns as failed), and the next start would
    meet the same file. A rejected set is logged and the previous one stays; anything else
    that goes wrong is logged and the next poll tries again.
    """
    holder: RulesHolder | None = ctx.rules
    if holder is None:
        return
    hup = asyncio.Event()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGHUP, hup.set)
    interval = ctx.settings.rules_poll_interval.total_seconds()
    try:
        while not stop.is_set():
            await wait_any(stop, hup, seconds=interval)
            if stop.is_set():
                break
            try:
                await _poll(holder, hup)
            except Exception:
                log.exception("rules watcher: the reload failed; the previous set stays active")
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.remove_signal_handler(signal.SIGHUP)


async def _poll(holder: RulesHolder, hup: asyncio.Event) -> None:
    if hup.is_set():
        hup.clear()
        await reload_rules(holder)
    # File scanning is blocking I/O; keep it off the event loop.
    elif await asyncio.to_thread(holder.changed):
        await reload_rules(holder)
