"""``momentcast``: a thin command line over the service's core."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import sys
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from service import __version__, logs, runtime
from service.errors import ConfigError, MomentcastError
from service.settings import Settings, load_settings, unknown_settings
from service.webpush import vapid

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey

    from service.rules.ruleset import Ruleset


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="momentcast",
        description="Location- and context-aware Web Push for micro-moments.",
    )
    parser.add_argument("--version", action="version", version=f"momentcast {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("serve", help="run the API, the worker and the sender in one process")
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
    rules = sub.add_parser(
        "rules",
        help="init, check, describe, preview, replay and backtest rule files",
        add_help=False,
    )
    rules.add_argument("args", nargs=argparse.REMAINDER)
    campaign = sub.add_parser(
        "campaign", help="send, list, show and cancel campaigns", add_help=False
    )
    campaign.add_argument("args", nargs=argparse.REMAINDER)
    demo = sub.add_parser(
        "demo", help="run the whole pipeline against simulated subscribers", add_help=False
    )
    demo.add_argument("args", nargs=argparse.REMAINDER)
    testing = sub.add_parser("testing", help="tools for client developers (no browser needed)")
    tools = testing.add_subparsers(dest="tool", required=True, metavar="TOOL")
    push_service = tools.add_parser(
        "push-service",
        help="run the strict test push service as a local push sink; it logs each push's title",
        description="A local stand-in for browsers' push services: it checks VAPID, decrypts "
        "each push and logs its title until Ctrl-C (see docs/clients.md).",
    )
    push_service.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    push_service.add_argument(
        "--port", type=int, default=8081, help="port to listen on (default 8081; 0: any free one)"
    )
    push_service.add_argument(
        "--vapid-public-key",
        metavar="KEY",
        help="accept only pushes signed with this key (`momentcast vapid` prints it)",
    )
    return parser


def _migrate(settings: Settings) -> int:
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


def _backtest(settings: Settings, ruleset: Ruleset, period: timedelta) -> dict[str, Any]:
    """`rules backtest`: on the configured database (or the embedded one), like migrate; it
    migrates nothing and writes nothing."""
    from service.backtest import run_backtest
    from service.store import open_store
    from service.store.db import resolve_database

    async def run() -> dict[str, Any]:
        if settings.database_url is None:  # the embedded database lives in DATA_DIR
            runtime.prepare_data_dir(settings)
        target = await asyncio.to_thread(resolve_database, settings)
        try:
            store = await open_store(target.dsn, max_size=2)
            try:
                return await run_backtest(
                    store, ruleset, period, retention=settings.signal_retention
                )
            finally:
                await store.close()
        finally:
            await asyncio.to_thread(target.close)

    return asyncio.run(run())


def _vapid(settings: Settings, generate: bool, private: bool) -> int:
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


def main(argv: Sequence[str] | None = None) -> int:
    # `rules`, `campaign` and `demo` hand their options to their own parsers.
    args, rest = _parser().parse_known_args(argv)
    if rest and args.command not in ("rules", "demo", "campaign"):
        _parser().error(f"unrecognized arguments: {' '.join(rest)}")
    warned = False
    try:
        # Every command reads the settings (and .env), so a bad one stops each the same way.
        settings = load_settings()
        logs.configure(settings.log_level, settings.log_format)
        warned = True
        for warning in unknown_settings():
            logging.getLogger("service.settings").warning("%s", warning)
        if args.command == "rules":
            from service.rules import cli as rules_cli

            return int(
                rules_cli.main(
                    [*args.args, *rest],
                    rules_dir=settings.rules_dir,
                    backtest=functools.partial(_backtest, settings),
                )
            )
        if args.command == "campaign":
            from service import campaign_cli

            return campaign_cli.main([*args.args, *rest], settings)
        if args.command == "testing":
            from service.testing import cli as testing_cli

            return testing_cli.main(args.host, args.port, args.vapid_public_key)
        if args.command == "demo":
            from service import demo

            return int(demo.main([*args.args, *rest], server=settings.database_url))
        if args.command == "migrate":
            return _migrate(settings)
        if args.command == "vapid":
            return _vapid(settings, args.generate, args.private)
        components = {
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
        }[args.command]
        if getattr(args, "no_sender", False):
            components.remove(runtime.SENDER)
        runtime.run_blocking(settings, components)
        return 0
    except ConfigError as exc:
        if not warned:
            # The settings failed before logging was set up; a misspelt name is the likely
            # cause (MOMENTCAST_PROT left PORT at its default), so say it beside the error.
            with contextlib.suppress(OSError, ValueError):  # an unreadable .env: the error says
                for warning in unknown_settings():
                    print(f"momentcast: warning: {warning}", file=sys.stderr)
        print(f"momentcast: configuration error: {exc}", file=sys.stderr)
        return 2
    except MomentcastError as exc:
        print(f"momentcast: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
