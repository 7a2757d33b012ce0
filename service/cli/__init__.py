"""``momentcast``: one parser tree for every command, each calling the functions the API
calls (the campaign use cases, the rules' reports, the backtest). The CLI never imports
service.api.

- ``serve``: serve, api, worker, migrate, vapid (and the database half of rules backtest);
- ``rules``: init, check, schema, replay, preview, backtest;
- ``campaigns``: campaign send, list, show, cancel;
- ``demo`` and ``testing push-service`` hand over to service/demo.py and service/testing/.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import sys
from collections.abc import Sequence

from service import __version__, logs
from service.cli import campaigns, rules, serve
from service.errors import ConfigError, MomentcastError
from service.settings import load_settings, unknown_settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="momentcast",
        description="Location- and context-aware Web Push for micro-moments.",
    )
    parser.add_argument("--version", action="version", version=f"momentcast {__version__}")
    # `program`: the `rules` and `campaign` parsers name their own subcommand `command` (argparse
    # says "argument command: invalid choice" with it).
    sub = parser.add_subparsers(dest="program", required=True, metavar="COMMAND")
    serve.add_commands(sub)
    rules.add_commands(
        sub.add_parser(
            "rules",
            help="init, check, describe, preview, replay and backtest rule files",
            description=rules.DESCRIPTION,
        )
    )
    campaigns.add_commands(
        sub.add_parser(
            "campaign",
            help="send, list, show and cancel campaigns",
            description=campaigns.DESCRIPTION,
        )
    )
    # The demo is a program of its own (service/demo.py parses its options).
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


def main(argv: Sequence[str] | None = None) -> int:
    # `demo` hands its options to its own parser.
    args, rest = _parser().parse_known_args(argv)
    if rest and args.program != "demo":
        _parser().error(f"unrecognized arguments: {' '.join(rest)}")
    warned = False
    try:
        # Every command reads the settings (and .env), so a bad one stops each the same way.
        settings = load_settings()
        logs.configure(settings.log_level, settings.log_format)
        warned = True
        # The children of `serve --processes` read what their parent warned of already.
        for warning in unknown_settings() if getattr(args, "child", None) is None else []:
            logging.getLogger("service.settings").warning("%s", warning)
        if args.program == "rules":
            return rules.run(
                args,
                rules_dir=settings.rules_dir,
                backtest=functools.partial(serve.backtest, settings),
            )
        if args.program == "campaign":
            return campaigns.run(args, settings)
        if args.program == "testing":
            from service.testing import cli as testing_cli

            return testing_cli.main(args.host, args.port, args.vapid_public_key)
        if args.program == "demo":
            from service import demo

            return int(demo.main([*args.args, *rest], server=settings.database_url))
        return serve.run(args, settings)
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
