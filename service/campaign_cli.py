"""``momentcast campaign send FILE [--dry-run] | list | show ID | cancel ID``.

The commands run on the database of ``MOMENTCAST_DATABASE_URL`` (or the embedded one under
DATA_DIR), as ``momentcast migrate`` does - no API process and no admin token are needed, and
the campaign is checked, stored and cancelled by the very functions behind the admin API
(service/api/campaigns.py), so both say the same. The fan-out of a running ``serve`` or
``worker`` is woken (NOTIFY) and sends the campaign at its moment.

A campaign file is the body of POST /v1/campaigns in YAML (or JSON); errors name the field
and the line: ``lunch.yaml:7: audience.attributes.visits: this condition can never hold``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TextIO

from service.errors import ApiError, SourceError
from service.settings import Settings


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="momentcast campaign",
        description="Send, list, show and cancel campaigns (on the configured database).",
    )
    sub = ap.add_subparsers(dest="command", required=True)
    send = sub.add_parser("send", help="check a campaign file and schedule it")
    send.add_argument("file", help="the campaign in YAML or JSON (the POST /v1/campaigns body)")
    send.add_argument(
        "--dry-run",
        action="store_true",
        help="store nothing: print the audience size and a rendered sample per locale",
    )
    send.add_argument("--json", action="store_true", help="machine-readable output")
    ls = sub.add_parser("list", help="every campaign with its progress")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    show = sub.add_parser("show", help="one campaign's results, per variant")
    show.add_argument("id")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    cancel = sub.add_parser("cancel", help="stop a campaign; what was not sent is cancelled")
    cancel.add_argument("id")
    cancel.add_argument("--json", action="store_true", help="machine-readable output")
    return ap


def _plain(value: Any) -> Any:
    """YAML's dates and timestamps as the JSON text the API reads."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _path_of(field: str) -> tuple[str | int, ...]:
    return tuple(int(p) if p.isdigit() else p for p in field.split("."))


def main(argv: list[str], settings: Settings, out: TextIO | None = None) -> int:
    stdout = out or sys.stdout
    args = _parser().parse_args(argv)
    from service.rules.source import load_located

    located = None
    raw = ""
    if args.command == "send":
        path = Path(args.file)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            print(f"{path}: cannot read: {exc}", file=sys.stderr)
            return 1
        try:
            located = load_located(text)
        except SourceError as exc:
            print(f"{path}:{exc.line}: {exc.message}", file=sys.stderr)
            return 1
        raw = json.dumps(_plain(located.data))
    try:
        result = asyncio.run(_run(args, settings, raw))
    except ApiError as exc:
        if located is not None and exc.details:
            for d in exc.details:
                line = located.line_of(_path_of(str(d.get("field", ""))))
                print(f"{args.file}:{line}: {d['field']}: {d['message']}", file=sys.stderr)
        else:
            print(f"momentcast: {exc.message}", file=sys.stderr)
        return 1
    if args.json:
        stdout.write(json.dumps(result, indent=2, default=str) + "\n")
    else:
        _print(args.command, getattr(args, "dry_run", False), result, stdout)
    return 0


async def _run(args: argparse.Namespace, settings: Settings, raw: str) -> Any:
    from service.api import campaigns
    from service.store import migrations, open_store
    from service.store.db import resolve_database

    if settings.database_url is None:
        from service.runtime import prepare_data_dir

        prepare_data_dir(settings)
    target = await asyncio.to_thread(resolve_database, settings)
    try:
        await migrations.migrate(target.dsn, settings.migrations_dir)
        store = await open_store(target.dsn, max_size=2)
        try:
            now = datetime.now(UTC)
            if args.command == "send" and args.dry_run:
                return await campaigns.dry_run(store, raw, now=now)
            if args.command == "send":
                row = await campaigns.create(store, raw, now=now)
                return await campaigns.result(store, row.id)
            if args.command == "list":
                return await campaigns.results(store)
            if args.command == "show":
                return await campaigns.result(store, args.id)
            return await campaigns.cancel(store, args.id)
        finally:
            await store.close()
    finally:
        await asyncio.to_thread(target.close)


def _counts(c: dict[str, Any]) -> str:
    parts = [f"{c['queued']} queued", f"{c['sent']} sent"]
    for name in ("failed", "gone", "expired", "cancelled"):
        if c[name]:
            parts.append(f"{c[name]} {name}")
    suppressed = c["suppressed"]
    if suppressed:
        parts.append("suppressed " + ", ".join(f"{reason} {n}" for reason, n in suppressed.items()))
    parts.append(f"{c['shown']} shown, {c['clicked']} clicked, {c['converted']} converted")
    return "; ".join(parts)


def _when(send_at: Any) -> str:
    if isinstance(send_at, dict):
        return f"{send_at['local']} in each subscriber's time zone (late: {send_at['late']})"
    return str(send_at)


def _print(command: str, dry_run: bool, result: Any, out: TextIO) -> None:
    if command == "send" and dry_run:
        out.write(
            f"campaign {result['id']} (dry run, nothing stored): audience {result['audience']}, "
            f"at {_when(result['send_at'])}, ttl {result['ttl_s']} s\n"
        )
        for s in result["samples"]:
            n = s["notification"]
            who = "an audience member" if s["from_audience"] else "no audience member"
            out.write(
                f"  variant {s['variant']}, locale {s['locale'] or 'default'} ({who}): "
                f"{n['title']!r}" + (f" / {n['body']!r}" if n.get("body") else "") + "\n"
            )
        return
    if command == "list":
        if not result:
            out.write("no campaigns\n")
        for c in result:
            out.write(
                f"{c['id']}: {c['status']}, audience {c['audience']}, {_when(c['send_at'])}\n"
                f"  {_counts(c)}\n"
            )
        return
    c = result
    verb = {"send": "scheduled", "cancel": "cancelled"}.get(command)
    if verb == "scheduled":
        out.write(f"campaign {c['id']} {c['status']}: audience {c['audience']}\n")
    elif verb == "cancelled":
        out.write(
            f"campaign {c['id']} {c['status']}: {c['cancelled_now']} queued pushes cancelled\n"
        )
    else:
        out.write(f"campaign {c['id']}: {c['status']}, audience {c['audience']}\n")
    out.write(f"  at {_when(c['send_at'])}\n  {_counts(c)}\n")
    if len(c["variants"]) > 1:
        for v in c["variants"]:
            out.write(f"  variant {v['variant']}: {_counts(v)}\n")
        experiment = c.get("experiment")
        if experiment:
            for comparison in experiment["comparisons"]:
                out.write(f"  {comparison['a']} vs {comparison['b']}: {comparison['verdict']}\n")
