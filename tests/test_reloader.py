"""Hot reload: polling picks up edits, SIGHUP forces a reload, a broken set never wins."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import time
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


def _many_places(n: int) -> dict[str, object]:
    features = []
    for i in range(n):
        lat, lon = 52.3 + (i % 100) * 0.004, 13.1 + (i // 100) * 0.006
        ring = [[lon, lat], [lon + 0.001, lat], [lon + 0.001, lat + 0.001], [lon, lat + 0.001]]
        features.append(
            {
                "type": "Feature",
                "properties": {"id": f"p{i}", "name": f"Place {i}", "category": "restaurant"},
                "geometry": {"type": "Polygon", "coordinates": [[*ring, ring[0]]]},
            }
        )
    return {"type": "FeatureCollection", "features": features}


async def test_reload_runs_off_the_event_loop(ctx: Context, tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(REPO / "rules", rules)
    # Enough places that loading takes a while: the API, worker and sender must keep running.
    (rules / "places" / "restaurants.geojson").write_text(json.dumps(_many_places(8000)))
    settings = make_settings(ctx.settings.data_dir, ctx.settings.database_url, rules_dir=rules)
    holder = reloader.load(Context(settings=settings, store=Store(ctx.pool), keys=ctx.keys))
    assert holder.current is not None and not holder.last_errors

    gaps: list[float] = []

    async def ticker() -> None:
        while True:
            started = time.monotonic()
            await asyncio.sleep(0.005)
            gaps.append(time.monotonic() - started)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.02)
    started = time.monotonic()
    errors = await reloader.reload_rules(holder)
    took = time.monotonic() - started
    task.cancel()
    assert errors == []
    print(f"reload {took:.3f} s, longest loop gap {max(gaps):.3f} s")
    assert took > 0.2, f"the reload took {took:.3f} s; the test needs a slower one"
    # Sync on the loop, the ticker would wait the whole reload once.
    assert max(gaps) < took / 2, (max(gaps), took)
