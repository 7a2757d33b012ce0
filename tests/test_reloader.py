"""Hot reload: polling picks up edits, SIGHUP forces a reload, a broken set never wins."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from datetime import timedelta
from pathlib import Path

from service import reloader
from service.context import Context
from service.store import Store
from tests.conftest import make_settings

REPO = Path(__file__).resolve().parent.parent


async def _until(predicate, timeout: float = 10) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)


async def test_poll_and_sighup_reload_and_broken_set_keeps_old(
    ctx: Context, tmp_path: Path
) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(REPO / "rules", rules)
    settings = make_settings(
        ctx.settings.data_dir,
        ctx.settings.database_url,
        rules_dir=rules,
        rules_poll_interval=timedelta(milliseconds=100),
    )
    context = Context(settings=settings, store=Store(ctx.pool), keys=ctx.keys)
    holder = reloader.load(context)
    stop = asyncio.Event()
    task = asyncio.create_task(reloader.watch(context, stop))
    try:

        def priority() -> int:
            assert holder.current is not None
            return next(r.priority for r in holder.current.rules if r.id == "lunch-nearby")

        lunch = rules / "lunch-nearby.yaml"
        lunch.write_text(lunch.read_text().replace("priority: 10", "priority: 42"))
        await _until(lambda: priority() == 42)

        good = holder.current
        lunch.write_text(lunch.read_text().replace("trigger: enter", "trigger: teleport"))
        await _until(lambda: bool(holder.last_errors))
        assert holder.current is good
        assert any("lunch-nearby.yaml:" in e and "trigger" in e for e in holder.last_errors)

        # SIGHUP reloads even when the poller saw nothing new.
        lunch.write_text(lunch.read_text().replace("trigger: teleport", "trigger: enter"))
        holder._fingerprint = holder.fingerprint()
        os.kill(os.getpid(), signal.SIGHUP)
        await _until(lambda: not holder.last_errors and holder.current is not good)
    finally:
        stop.set()
        await task
