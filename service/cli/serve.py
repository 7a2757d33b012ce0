"""The commands that run the service or set up its database and keys: `serve`, `api`,
`worker`, `migrate`, `vapid`; and the database half of `rules backtest`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from service import runtime
from service.errors import ConfigError
from service.settings import Settings, parse_processes
from service.webpush import vapid

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey

    from service.rules.ruleset import Ruleset

# The components each long-running command assembles.
COMPONENTS = {
    "serve": [
        runtime.API,
        runtime.WORKER,
        runtime.FANOUT,
        runtime.SENDER,
        runtime.MAINTENANCE,
        runtime.RULES_WATCH,
    ],
    "api": [runtime.API, runtime.MAINTENANCE, runtime.RULES_WATCH],
    "worker": [runtime.WORKER, runtime.FANOUT, runtime.SENDER, runtime.RULES_WATCH],
}


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = sub.add_parser(
        "serve",
        help="run the API, the worker and the sender in one process (or N with --processes)",
    )
    serve.add_argument(
        "--processes",
        metavar="N|auto",
        help="run N processes sharing the port, each with the API, a worker and a sender, "
        "under one supervising parent; auto: one per usable core (default: "
        "MOMENTCAST_PROCESSES, else 1)",
    )
    # The children of --processes: started by the parent, never by hand.
    serve.add_argument("--child", type=int, metavar="INDEX", help=argparse.SUPPRESS)
    sub.add_parser("api", help="run the HTTP API only")
    worker = sub.add_parser("worker", help="run the worker and the sender (no HTTP)")
    worker.add_argument(
        "--no-sender", action="store_true", help="only decide; leave sending to other processes"
    )
    sub.add_parser("migrate", help="apply pending database migrations and exit")
    vapid_cmd = sub.add_parser("vapid", help="print the VAPID public key (or the private key)")
    vapid_cmd.add_argument(
        "--generate",
        action="store_true",
        help="replace the key kept in DATA_DIR with a new pair (existing subscriptions break)",
    )
    vapid_cmd.add_argument(
        "--private",
        action="store_true",
        help="print the private key instead, one line (what MOMENTCAST_VAPID_PRIVATE_KEY takes)",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    """`serve`, `api`, `worker` (until stopped), `migrate` or `vapid`."""
    if args.program == "migrate":
        return migrate(settings)
    if args.program == "vapid":
        return vapid_key(settings, args.generate, args.private)
    components = list(COMPONENTS[args.program])
    if getattr(args, "no_sender", False):
        components.remove(runtime.SENDER)
    if args.program == "serve":
        return _serve(args, settings, components)
    runtime.run_blocking(settings, components)
    return 0


def _serve(args: argparse.Namespace, settings: Settings, components: list[str]) -> int:
    """One process, or a supervised group of them (service/supervisor.py)."""
    from service import supervisor

    if args.child is not None:
        supervisor.run_child(settings, components, args.child)
        return 0
    if args.processes is not None:
        try:
            processes = parse_processes(args.processes)
        except ValueError as exc:
            raise ConfigError(f"--processes: {exc}") from None
        settings = settings.model_copy(update={"processes": processes})
    count = settings.process_count
    if count == 1:
        runtime.run_blocking(settings, components)
        return 0
    return supervisor.serve(settings, components, count)


def migrate(settings: Settings) -> int:
    from service.store import migrations
    from service.store.db import resolve_database

    if settings.database_url is None:  # the embedded database lives in DATA_DIR
        runtime.prepare_data_dir(settings)
    target = resolve_database(settings)
    try:
        applied = asyncio.run(migrations.migrate(target.dsn, settings.migrations_dir))
    finally:
        target.close()
    if applied:
        for migration in applied:
            print(f"applied {migration.path.name}")
    else:
        print("database is up to date")
    return 0


def backtest(settings: Settings, ruleset: Ruleset, period: timedelta) -> dict[str, Any]:
    """`rules backtest`: the report GET /v1/backtest answers, on the configured database (or
    the embedded one), like migrate; it migrates nothing and writes nothing."""
    from service.cli.database import configured_store
    from service.reports.backtest import run_backtest

    async def run() -> dict[str, Any]:
        async with configured_store(settings, migrate=False) as store:
            return await run_backtest(store, ruleset, period, retention=settings.signal_retention)

    return asyncio.run(run())


def vapid_key(settings: Settings, generate: bool, private: bool) -> int:
    runtime.prepare_data_dir(settings)
    if generate:
        if settings.vapid_private_key:
            raise ConfigError(
                "MOMENTCAST_VAPID_PRIVATE_KEY is set; generate a key with "
                "`momentcast vapid --generate` without it, or replace the variable yourself"
            )
        key = asyncio.run(_rotate_vapid(settings))
        print(
            f"generated a new VAPID key pair in {settings.data_dir / vapid.KEY_FILE}",
            file=sys.stderr,
        )
    else:
        key = vapid.load_or_create(settings.data_dir, settings.vapid_private_key)
    # One line either way, so that `MOMENTCAST_VAPID_PRIVATE_KEY=$(momentcast vapid --private)`
    # works: the private key alone, or the public key alone.
    print(vapid.private_key_to_b64url(key) if private else vapid.public_key_b64url(key))
    return 0


async def _rotate_vapid(settings: Settings) -> EllipticCurvePrivateKey:
    """Replace the kept key pair and make it the deployment's in the database (which
    remembers its fingerprint). The database comes first: when it cannot be reached, the old
    key stays, rather than a new one that every process would then refuse to start with."""
    from service import fingerprints
    from service.store import migrations, open_store
    from service.store.db import resolve_database

    target = await asyncio.to_thread(resolve_database, settings)
    try:
        await migrations.migrate(target.dsn, settings.migrations_dir)
        store = await open_store(target.dsn, max_size=1)
        try:
            key = vapid.rotate(settings.data_dir)
            await fingerprints.record_vapid_rotation(store, vapid.public_key_b64url(key))
        finally:
            await store.close()
    finally:
        await asyncio.to_thread(target.close)
    return key
