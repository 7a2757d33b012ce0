"""The store and the listener when connections die under them: terminated by the server
(``pg_terminate_backend``), or silent (a half-open connection behind a frozen proxy)."""

from __future__ import annotations

import asyncio
import secrets
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest

from service.queue import Listener
from service.store import DATABASE_ERRORS, Store
from service.store.db import (
    KEEPALIVE_COUNT,
    KEEPALIVE_IDLE_S,
    KEEPALIVE_INTERVAL_S,
    USER_TIMEOUT_MS,
    create_pool,
)
from tests.faults.dbfaults import (
    FreezingProxy,
    own_connection,
    postgres_address,
    storm,
    terminate_backends,
    with_app_name,
)

CHANNEL = "momentcast_test_lost"


async def until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)


@pytest.fixture
async def proxy(database_url: str) -> AsyncIterator[FreezingProxy]:
    p = await FreezingProxy(postgres_address(database_url)).start()
    yield p
    await p.close()


async def test_terminated_connections_raise_database_errors_and_are_not_handed_out_again(
    database_url: str, clean_db: asyncpg.Pool
) -> None:
    app = "mc-storm-" + secrets.token_hex(3)
    pool = await create_pool(with_app_name(database_url, app), min_size=4, max_size=4)
    store = Store(pool)
    stop = asyncio.Event()
    seen: Counter[str] = Counter()
    unexpected: list[BaseException] = []

    async def user(i: int) -> None:
        while not stop.is_set():
            try:
                if i % 2:
                    await store.ping()
                else:
                    async with store.transaction() as tx:
                        await tx.processing_lag()
                        await tx.ping()
                seen["ok"] += 1
            except DATABASE_ERRORS as exc:
                seen[type(exc).__name__] += 1
            except Exception as exc:
                unexpected.append(exc)
            await asyncio.sleep(0.001)

    try:
        storming = asyncio.create_task(storm(database_url, stop, every_s=0.02, app=app))
        users = [asyncio.create_task(user(i)) for i in range(8)]
        await asyncio.sleep(4)
        stop.set()
        terminated = await storming
        await asyncio.gather(*users)
        assert not unexpected, [repr(e) for e in unexpected[:5]]
        assert terminated > 20 and seen["ok"] > 20, (terminated, seen)
        assert sum(seen.values()) > seen["ok"], f"the storm hit nothing: {seen}"
        # Whatever state the storm left them in, every connection the pool hands out works.
        for _ in range(10):
            await asyncio.gather(*(store.ping() for _ in range(4)))
    finally:
        pool.terminate()


async def test_a_listener_comes_back_each_time_its_backend_is_terminated(
    database_url: str, clean_db: asyncpg.Pool
) -> None:
    app = "mc-listen-" + secrets.token_hex(3)
    store = Store(clean_db, dsn=with_app_name(database_url, app))
    wake, stop = asyncio.Event(), asyncio.Event()
    listener = Listener(store, CHANNEL, wake, retry_s=0.1)
    task = asyncio.create_task(listener.run(stop))
    conn = await own_connection(database_url)
    try:
        await asyncio.wait_for(listener.connected.wait(), 10)
        for n in range(1, 4):
            assert await terminate_backends(conn, app) == 1

            def back(n: int = n) -> bool:
                return listener.reconnects == n and listener.connected.is_set()

            await until(back, 10, f"the listener did not come back after termination {n}")
            wake.clear()
            await conn.execute(f"NOTIFY {CHANNEL}")
            await asyncio.wait_for(wake.wait(), 5)
        assert not task.done(), "the listener ended before it was asked to"
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await conn.close()


async def test_a_listener_on_a_half_open_connection_is_replaced(
    database_url: str, clean_db: asyncpg.Pool, proxy: FreezingProxy
) -> None:
    store = Store(clean_db, dsn=proxy.dsn(database_url))
    wake, stop = asyncio.Event(), asyncio.Event()
    listener = Listener(store, CHANNEL, wake, retry_s=0.1, check_s=0.3, check_timeout_s=0.5)
    task = asyncio.create_task(listener.run(stop))
    try:
        await asyncio.wait_for(listener.connected.wait(), 10)
        assert proxy.freeze() == 1
        # A NOTIFY now goes nowhere: the old connection is silent.
        await until(lambda: listener.reconnects == 1, 10, "the silent connection was kept")
        await until(listener.connected.is_set, 10, "no new LISTEN")
        wake.clear()
        await clean_db.execute(f"NOTIFY {CHANNEL}")
        await asyncio.wait_for(wake.wait(), 5)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_a_statement_on_a_half_open_connection_times_out_and_the_pool_starts_afresh(
    database_url: str, clean_db: asyncpg.Pool, proxy: FreezingProxy
) -> None:
    pool = await create_pool(proxy.dsn(database_url), min_size=3, max_size=3, db_timeout=1.0)
    store = Store(pool, timeout=1.0)
    try:
        await asyncio.gather(*(store.ping() for _ in range(3)))
        assert proxy.freeze() == 3
        with pytest.raises(TimeoutError):
            await store.ping()
        # The pool's other idle connections are just as silent; they were dropped with the
        # one that timed out instead of failing the next callers one DB_TIMEOUT at a time.
        for _ in range(3):
            await asyncio.gather(*(store.ping() for _ in range(3)))
    finally:
        pool.terminate()


async def test_connections_over_tcp_have_keepalive_and_a_user_timeout(
    database_url: str, clean_db: asyncpg.Pool, proxy: FreezingProxy
) -> None:
    conn = await Store(clean_db, dsn=proxy.dsn(database_url)).connect()
    try:
        sock = conn._transport.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == KEEPALIVE_IDLE_S
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == KEEPALIVE_INTERVAL_S
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == KEEPALIVE_COUNT
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == USER_TIMEOUT_MS
        # 1 + 3 probes: a silent peer is given up within 25 s, as is unacknowledged data.
        assert KEEPALIVE_IDLE_S + KEEPALIVE_COUNT * KEEPALIVE_INTERVAL_S <= 25
    finally:
        await conn.close()
