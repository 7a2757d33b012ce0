"""The store of the configured database (MOMENTCAST_DATABASE_URL, or the embedded one under
DATA_DIR) for the commands that work on it directly, as the API's use cases do: no API
process and no admin token are needed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from service import runtime
from service.settings import Settings
from service.store import Store, migrations, open_store
from service.store.db import resolve_database


@asynccontextmanager
async def configured_store(
    settings: Settings, *, migrate: bool, max_size: int = 2
) -> AsyncIterator[Store]:
    """The store, closed (and an embedded database stopped) on the way out; ``migrate``:
    apply pending migrations first (a command that writes), or not (a report that reads)."""
    if settings.database_url is None:  # the embedded database lives in DATA_DIR
        runtime.prepare_data_dir(settings)
    target = await asyncio.to_thread(resolve_database, settings)
    try:
        if migrate:
            await migrations.migrate(target.dsn, settings.migrations_dir)
        store = await open_store(target.dsn, max_size=max_size)
        try:
            yield store
        finally:
            await store.close()
    finally:
        await asyncio.to_thread(target.close)
