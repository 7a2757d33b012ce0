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

import aiohttp
import asyncpg

from service.context import Context
from service.reload import watch as reloader
from service.store import Store
from tests.conftest import ADMIN_TOKEN, make_settings
from tests.processes import start

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


# --- rule files are untrusted text ---------------------------------------------------------

ALIAS = "a: &a [*a]\n"  # measured: a 500, a dead reloader, then a crash-looping process


def _copy_rules(tmp_path: Path) -> Path:
    rules = tmp_path / "rules"
    shutil.copytree(REPO / "rules", rules)
    return rules


async def test_the_watcher_survives_an_alias_and_keeps_the_previous_set(
    ctx: Context, tmp_path: Path
) -> None:
    rules = _copy_rules(tmp_path)
    settings = make_settings(
        ctx.settings.data_dir,
        ctx.settings.database_url,
        rules_dir=rules,
        rules_poll_interval=timedelta(milliseconds=100),
    )
    context = Context(settings=settings, store=Store(ctx.pool), keys=ctx.keys)
    holder = reloader.load(context)
    good = holder.current
    assert good is not None
    stop = asyncio.Event()
    task = asyncio.create_task(reloader.watch(context, stop))
    try:
        (rules / "alias.yaml").write_text(ALIAS)
        await _until(lambda: bool(holder.last_errors) or task.done())
        assert not task.done(), task
        assert holder.last_errors == [
            f"{rules}/alias.yaml:1: YAML anchors (&a) are not allowed; write the value out"
        ]
        assert holder.current is good
        # A FIFO would block the reader forever; it is refused without being opened.
        (rules / "alias.yaml").unlink()
        os.mkfifo(rules / "pipe.yaml")
        await _until(lambda: "pipe.yaml" in " ".join(holder.last_errors) or task.done())
        assert not task.done(), task
        assert holder.last_errors == [f"{rules}/pipe.yaml:1: not a regular file"]
        (rules / "pipe.yaml").unlink()
        await _until(lambda: not holder.last_errors or task.done())
        assert not task.done() and holder.current is not good
    finally:
        stop.set()
        await task


def _serve_env(tmp_path: Path, database_url: str, rules: Path) -> dict[str, str]:
    return {
        "MOMENTCAST_DATABASE_URL": database_url,
        "MOMENTCAST_DATA_DIR": str(tmp_path / "data"),
        "MOMENTCAST_RULES_DIR": str(rules),
        "MOMENTCAST_ADMIN_TOKEN": ADMIN_TOKEN,
        "MOMENTCAST_HOST": "127.0.0.1",
        "MOMENTCAST_PORT": "0",
        "MOMENTCAST_RULES_POLL_INTERVAL": "1",
    }


async def test_a_served_reload_of_an_alias_is_422_and_the_process_lives_on(
    tmp_path: Path, database_url: str, clean_db: asyncpg.Pool
) -> None:
    rules = _copy_rules(tmp_path)
    proc = start(["serve"], _serve_env(tmp_path, database_url, rules))
    try:
        await asyncio.to_thread(proc.wait_banner)
        assert proc.url is not None
        (rules / "alias.yaml").write_text(ALIAS)
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        async with aiohttp.ClientSession() as http:
            async with http.post(proc.url + "/v1/rules/reload", headers=admin) as resp:
                assert resp.status == 422, await resp.text()
                body = await resp.json()
            assert body["error"]["details"] == [
                f"{rules}/alias.yaml:1: YAML anchors (&a) are not allowed; write the value out"
            ]
            assert "alias.yaml" in body["error"]["message"]
            # The poller sees the file too; the process must not die of it.
            await asyncio.sleep(2.5)
            assert proc.proc.poll() is None, proc.stderr()
            async with http.get(proc.url + "/readyz") as resp:
                assert resp.status == 200
            async with http.get(proc.url + "/v1/rules", headers=admin) as resp:
                status = await resp.json()
            assert status["status"] == "errors" and len(status["rules"]) == 6
    finally:
        assert proc.stop() == 0, proc.stderr()


def test_start_up_with_a_bad_rule_set_is_one_line_and_exit_2(
    tmp_path: Path, database_url: str, clean_db: asyncpg.Pool
) -> None:
    rules = _copy_rules(tmp_path)
    (rules / "alias.yaml").write_text(ALIAS)
    (rules / "junk.yaml").write_bytes(b"\xff\xfe\x00junk")
    proc = start(["serve"], _serve_env(tmp_path, database_url, rules), cwd=tmp_path)
    _, err = proc.proc.communicate(timeout=120)
    assert proc.proc.returncode == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines == [
        f"momentcast: configuration error: MOMENTCAST_RULES_DIR: 2 errors in {rules}, "
        f"the first: {rules}/alias.yaml:1: YAML anchors (&a) are not allowed; write the value "
        "out (momentcast rules check lists them all)"
    ], err


def test_rules_check_names_the_alias_at_file_line(tmp_path: Path) -> None:
    rules = _copy_rules(tmp_path)
    (rules / "anchor.yaml").write_text("description: x\nwho: &who {topics: [a]}\n")
    (rules / "recursive.yaml").write_text(ALIAS)
    proc = start(["rules", "check", str(rules)], {}, cwd=tmp_path)
    _, err = proc.proc.communicate(timeout=120)
    assert proc.proc.returncode == 1, err
    assert "Traceback" not in err
    assert err.splitlines() == [
        f"{rules}/anchor.yaml:2: YAML anchors (&who) are not allowed; write the value out",
        f"{rules}/recursive.yaml:1: YAML anchors (&a) are not allowed; write the value out",
        "2 error(s), 0 warnings; nothing was changed",
    ]
