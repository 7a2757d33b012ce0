"""``momentcast campaign send FILE [--dry-run] | list | show ID | cancel ID``.

The commands run on the configured database (service/cli/database.py), as ``momentcast
migrate`` does - no API process and no admin token are needed, and the campaign is checked,
stored and cancelled by the use cases behind the admin API (service/campaigns/usecases.py), so
both say the same. The fan-out of a running ``serve`` or ``worker`` is woken (NOTIFY) and
sends the campaign at its moment.

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
from typing import TYPE_CHECKING, Any, TextIO

from pydantic import BaseModel

from service.campaigns.models import (
    CampaignCancelled,
    CampaignDryRun,
    CampaignExperiment,
    CampaignResult,
    CampaignVariantResult,
    Schedule,
)
from service.errors import CampaignError, CampaignInvalid, RuleLoadError, SourceError
from service.settings import Settings

if TYPE_CHECKING:
    from service.rules.units import Window

DESCRIPTION = "Send, list, show and cancel campaigns (on the configured database)."


def _parser() -> argparse.ArgumentParser:
    """The `campaign` commands on their own."""
    ap = argparse.ArgumentParser(prog="momentcast campaign", description=DESCRIPTION)
    add_commands(ap)
    return ap


def add_commands(ap: argparse.ArgumentParser) -> None:
    """The `campaign` commands, under ``ap`` (`momentcast campaign`' parser in the one tree)."""
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
    return run(_parser().parse_args(argv), settings, out)


def run(args: argparse.Namespace, settings: Settings, out: TextIO | None = None) -> int:
    """One parsed `campaign` command."""
    stdout = out or sys.stdout
    command = args.command
    from service.rules.source import load_located

    located = None
    raw = ""
    if command == "send":
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
        result = asyncio.run(_run(command, args, settings, raw))
    except CampaignInvalid as exc:
        if located is None or not exc.errors:
            print(f"momentcast: {exc}", file=sys.stderr)
            return 1
        for field, message in exc.errors:
            line = located.line_of(_path_of(field))
            print(f"{args.file}:{line}: {field}: {message}", file=sys.stderr)
        return 1
    except CampaignError as exc:
        print(f"momentcast: {exc}", file=sys.stderr)
        return 1
    if args.json:
        doc = (
            [c.model_dump(mode="json") for c in result]
            if isinstance(result, list)
            else result.model_dump(mode="json")
        )
        stdout.write(json.dumps(doc, indent=2, default=str) + "\n")
    else:
        _print(command, result, stdout)
    return 0


async def _run(
    command: str, args: argparse.Namespace, settings: Settings, raw: str
) -> BaseModel | list[CampaignResult]:
    from service.campaigns import usecases
    from service.cli.database import configured_store

    quiet = _quiet(settings, raw) if command == "send" else None
    async with configured_store(settings, migrate=True) as store:
        now = datetime.now(UTC)
        if command == "send" and args.dry_run:
            return await usecases.dry_run(store, raw, now=now, quiet=quiet)
        if command == "send":
            row = await usecases.create(store, raw, now=now, quiet=quiet)
            return await usecases.result(store, row.id)
        if command == "list":
            return await usecases.results(store)
        if command == "show":
            return await usecases.result(store, args.id)
        return await usecases.cancel(store, args.id)


def _quiet(settings: Settings, raw: str) -> Window | None:
    """For send_at.optimal, the quiet hours of the policy in the rules folder (MOMENTCAST_
    RULES_DIR, as the server reads it), which the plan avoids; None when it does not load
    (the fan-out still holds pushes through the running server's quiet hours)."""
    send_at = json.loads(raw).get("send_at") if raw else None
    if not isinstance(send_at, dict) or "optimal" not in send_at:
        return None
    from service.rules.loader import load_ruleset

    try:
        return load_ruleset(settings.rules_dir).policy.quiet_hours
    except (RuleLoadError, OSError):
        return None


def _counts(c: CampaignResult | CampaignVariantResult) -> str:
    parts = [f"{c.queued} queued", f"{c.sent} sent"]
    for name, n in (
        ("failed", c.failed),
        ("gone", c.gone),
        ("expired", c.expired),
        ("cancelled", c.cancelled),
    ):
        if n:
            parts.append(f"{n} {name}")
    if c.suppressed:
        parts.append("suppressed " + ", ".join(f"{r} {n}" for r, n in c.suppressed.items()))
    parts.append(f"{c.shown} shown, {c.clicked} clicked, {c.converted} converted")
    return "; ".join(parts)


def _when(send_at: str | dict[str, str]) -> str:
    if isinstance(send_at, dict) and "optimal" in send_at:
        return (
            f"each subscriber's best local hour of {send_at['optimal']} within "
            f"{send_at['window']}, else {send_at['fallback']} (late: {send_at['late']})"
        )
    if isinstance(send_at, dict):
        return f"{send_at['local']} in each subscriber's time zone (late: {send_at['late']})"
    return str(send_at)


def _schedule(s: Schedule | None, out: TextIO) -> None:
    if s is None:
        return
    hours = ", ".join(f"{h}:00 {n}" for h, n in sorted(s.by_local_hour.items()))
    out.write(
        f"  schedule: {s.personal} personal, {s.fallback} fallback; "
        f"by local hour: {hours or 'none'}\n"
    )


def _print_dry_run(d: CampaignDryRun, out: TextIO) -> None:
    out.write(
        f"campaign {d.id} (dry run, nothing stored): audience {d.audience}, "
        f"at {_when(d.send_at)}, ttl {d.ttl_s} s\n"
    )
    for s in d.samples:
        n = s.notification
        who = "an audience member" if s.from_audience else "no audience member"
        out.write(
            f"  variant {s.variant}, locale {s.locale or 'default'} ({who}): "
            f"{n['title']!r}" + (f" / {n['body']!r}" if n.get("body") else "") + "\n"
        )
    _schedule(d.schedule, out)


def _print(command: str, result: BaseModel | list[CampaignResult], out: TextIO) -> None:
    if isinstance(result, CampaignDryRun):
        _print_dry_run(result, out)
        return
    if isinstance(result, list):
        if not result:
            out.write("no campaigns\n")
        for c in result:
            out.write(
                f"{c.id}: {c.status}, audience {c.audience}, {_when(c.send_at)}\n  {_counts(c)}\n"
            )
        return
    assert isinstance(result, CampaignResult)
    c = result
    if isinstance(c, CampaignCancelled):
        out.write(f"campaign {c.id} {c.status}: {c.cancelled_now} queued pushes cancelled\n")
    elif command == "send":
        out.write(f"campaign {c.id} {c.status}: audience {c.audience}\n")
    else:
        out.write(f"campaign {c.id}: {c.status}, audience {c.audience}\n")
    out.write(f"  at {_when(c.send_at)}\n  {_counts(c)}\n")
    _schedule(c.schedule, out)
    if len(c.variants) > 1:
        for v in c.variants:
            out.write(f"  variant {v.variant}: {_counts(v)}\n")
        if c.experiment:
            _print_experiment(c.experiment, out)
            for comparison in c.experiment.comparisons:
                out.write(f"  {comparison.a} vs {comparison.b}: {comparison.verdict}\n")


def _print_experiment(e: CampaignExperiment, out: TextIO) -> None:
    """A campaign experiment's phase, winner and each variant's probability of being best."""
    if e.phase is None or e.prob_best is None:
        return
    setup = f"test share {e.test_share:g}, metric {e.metric}"
    if e.phase == "decided":
        out.write(
            f"  experiment: decided, winner {e.winner} ({setup}, decided at {e.decided_at})\n"
        )
    else:
        when = f"decides at {e.decide_at}" if e.decide_at else "decides after the test starts"
        out.write(f"  experiment: testing ({setup}, {when})\n")
    out.write("  prob_best " + ", ".join(f"{v} {p:g}" for v, p in e.prob_best.items()) + "\n")
