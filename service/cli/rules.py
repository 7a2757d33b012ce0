"""`momentcast rules init|check|schema|replay|preview|backtest` - the marketer's tools.

The reports are made by the rules package (service/rules/replay.py, preview.py) and, for the
backtest, by service/reports/backtest.py on the configured database; this module parses,
formats and sets the exit code.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from collections.abc import Callable
from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from service.durations import parse_duration
from service.errors import RuleLoadError, TraceError

# The rules (and with them numpy, shapely and the time-zone finder) are imported by the
# commands that use them, not when the parser tree is built: `momentcast --version`, `vapid`
# or `serve` pay nothing for them here.
if TYPE_CHECKING:
    from service.rules.ruleset import Ruleset

# What `rules init` writes: policy, one location rule, its places (shipped in the wheel).

_LOCATED = re.compile(r"^(?P<file>.*?):(?P<line>\d+): (?P<message>.*)$", re.S)


def _split(entry: str) -> dict[str, Any]:
    m = _LOCATED.match(entry)
    if not m:
        return {"file": None, "line": None, "message": entry}
    # In JSON the list a finding is in says what it is.
    message = m["message"].removeprefix("warning: ")
    return {"file": m["file"], "line": int(m["line"]), "message": message}


DESCRIPTION = "Check, describe, preview and replay rule files."


def _parser() -> argparse.ArgumentParser:
    """The `rules` commands on their own (what ``main`` parses)."""
    ap = argparse.ArgumentParser(prog="momentcast rules", description=DESCRIPTION)
    add_commands(ap)
    return ap


def add_commands(ap: argparse.ArgumentParser) -> None:
    """The `rules` commands, under ``ap`` (`momentcast rules`' parser in the one tree)."""
    sub = ap.add_subparsers(dest="command", required=True)
    init = sub.add_parser(
        "init", help="write a starter rule set (policy, one example rule, places) to edit"
    )
    init.add_argument(
        "dir",
        nargs="?",
        default=None,
        help="a new or empty folder (default: $MOMENTCAST_RULES_DIR or rules)",
    )
    check = sub.add_parser("check", help="load every file and report all errors and warnings")
    check.add_argument(
        "dir",
        nargs="?",
        default=None,
        help="rules directory (default: $MOMENTCAST_RULES_DIR or rules), or one file in it: "
        "its folder is checked and that file reported",
    )
    check.add_argument("--json", action="store_true", help="machine-readable output")
    check.add_argument(
        "--strict", action="store_true", help="warnings are errors (exit 1), e.g. in CI"
    )
    schema = sub.add_parser("schema", help="print the JSON Schema of rule files")
    schema.add_argument("--policy", action="store_true", help="the schema of policy.yaml")
    replay = sub.add_parser("replay", help="what a recorded trace would have triggered")
    replay.add_argument(
        "trace", help=".gpx, .geojson or .csv (lat,lon,time[,accuracy_m,speed_mps,moment])"
    )
    replay.add_argument(
        "--profile", help="YAML/JSON subscriber profile: timezone, topics, attributes, paused"
    )
    replay.add_argument("--rules", default=None, help="rules directory")
    replay.add_argument("--json", action="store_true", help="machine-readable output")
    preview = sub.add_parser(
        "preview", help="a rule's notification as the phone would show it, for every variant"
    )
    preview.add_argument("rule", help="a rule id, or the path of a rule file")
    preview.add_argument("--place", help="a place id of the rule (default: its first place)")
    preview.add_argument(
        "--profile", help="YAML/JSON subscriber profile: timezone, locale, topics, attributes"
    )
    preview.add_argument(
        "--locale", help="the subscriber's locale, e.g. de-DE (over the profile's)"
    )
    preview.add_argument("--rules", default=None, help="rules directory")
    preview.add_argument("--json", action="store_true", help="machine-readable output")
    backtest = sub.add_parser(
        "backtest",
        help="the stored signals of a period against DIR's rules, beside what the live rules "
        "sent; writes nothing",
    )
    backtest.add_argument(
        "dir", nargs="?", default=None, help="rules directory (default: $MOMENTCAST_RULES_DIR)"
    )
    backtest.add_argument(
        "--since",
        default="24h",
        help="how far back, e.g. 6h or 2d (default 24h; signals are kept SIGNAL_RETENTION)",
    )
    backtest.add_argument("--json", action="store_true", help="machine-readable output")


# Runs a backtest of a rule set over a period on the stored signals (service/reports/backtest.py,
# on the configured database); `momentcast rules backtest` hands one in.
Backtester = Callable[["Ruleset", timedelta], dict[str, Any]]


def main(
    argv: list[str],
    out: TextIO | None = None,
    err: TextIO | None = None,
    *,
    rules_dir: str | os.PathLike[str] = "rules",
    backtest: Backtester | None = None,
) -> int:
    """``rules_dir``: the default folder, MOMENTCAST_RULES_DIR as the settings read it;
    ``backtest``: what reads the stored signals (``momentcast rules backtest`` has one)."""
    return run(_parser().parse_args(argv), out, err, rules_dir=rules_dir, backtest=backtest)


def run(
    args: argparse.Namespace,
    out: TextIO | None = None,
    err: TextIO | None = None,
    *,
    rules_dir: str | os.PathLike[str] = "rules",
    backtest: Backtester | None = None,
) -> int:
    """One parsed `rules` command."""
    from service.rules.models import json_schema, policy_json_schema

    stdout = out or sys.stdout
    stderr = err or sys.stderr
    command = args.command
    if command == "schema":
        doc = policy_json_schema() if args.policy else json_schema()
        stdout.write(json.dumps(doc, indent=2) + "\n")
        return 0
    if command == "init":
        return _init(Path(args.dir or rules_dir), stdout, stderr)
    if command == "check":
        return _check(args.dir or str(rules_dir), args.json, args.strict, stdout, stderr)
    if command == "preview":
        return _preview(args, str(rules_dir), stdout, stderr)
    if command == "backtest":
        return _backtest(args, str(rules_dir), backtest, stdout, stderr)
    return _replay(args, str(rules_dir), stdout, stderr)


def _init(target: Path, stdout: TextIO, stderr: TextIO) -> int:
    """Copy the starter set into a new or empty folder; never over a marketer's files."""
    starter = Path(str(resources.files("service.rules") / "starter"))
    if target.exists() and not target.is_dir():
        stderr.write(f"momentcast rules init: {target} is not a folder; name a new one\n")
        return 1
    if target.is_dir() and any(target.iterdir()):
        stderr.write(
            f"momentcast rules init: {target} is not empty; name a new or empty folder "
            "(nothing was written)\n"
        )
        return 1
    try:
        # shutil.copy, not copy2: fresh mtimes, so a running service's poll sees new files.
        shutil.copytree(
            starter,
            target,
            dirs_exist_ok=True,
            copy_function=shutil.copy,
            ignore=shutil.ignore_patterns("__pycache__"),
        )
    except OSError as exc:
        stderr.write(f"momentcast rules init: cannot write {target}: {exc.strerror or exc}\n")
        return 1
    files = sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file())
    stdout.write(
        f"wrote a starter rule set to {target}: {', '.join(files)}\n"
        f"next: put your places in {target / 'places'}, edit the rule, then run "
        f"`momentcast rules check {target}` (docs/rules.md)\n"
    )
    return 0


def _in_file(entry_file: str | None, only: Path) -> bool:
    return entry_file is not None and Path(entry_file).resolve() == only


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _check(target: str, as_json: bool, strict: bool, out: TextIO, err: TextIO) -> int:
    from service.rules.loader import load_ruleset
    from service.rules.preview import folder_of

    directory, only = folder_of(target)
    rs: Ruleset | None = None
    try:
        rs = load_ruleset(directory)
        errors, warnings = [], list(rs.warnings)
    except RuleLoadError as exc:
        errors, warnings = list(exc.errors), list(exc.warnings)
    rules = rs.rules if rs is not None else []
    elsewhere = 0
    if only is not None:
        mine = [e for e in errors if _in_file(_split(e)["file"], only)]
        elsewhere = len(errors) - len(mine)
        errors = mine
        warnings = [w for w in warnings if _in_file(_split(w)["file"], only)]
        rules = [r for r in rules if Path(r.file).resolve() == only]
    failed = rs is None or (strict and bool(warnings))
    if as_json:
        doc: dict[str, Any] = {
            "ok": not failed,
            "strict": strict,
            "version": rs.version if rs is not None else None,
            "errors": [_split(e) for e in errors],
            "warnings": [_split(w) for w in warnings],
            "rules": [
                {
                    "id": r.id,
                    "file": r.file,
                    "description": r.description,
                    "priority": r.priority,
                    "trigger": r.trigger,
                    "places": len(r.place_idx),
                    "summary": r.summary(rs.places),
                }
                for r in rules
                if rs is not None
            ],
        }
        if only is not None:
            doc["file"] = target
            doc["errors_in_other_files"] = elsewhere
        out.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
        return 1 if failed else 0
    for line in [*errors, *warnings]:
        err.write(line + "\n")
    if rs is None:
        if elsewhere:
            err.write(
                f"{_count(elsewhere, 'error')} in other files of {directory} "
                f"(momentcast rules check {directory} lists them)\n"
            )
        scope = f" in {target}" if only is not None else ""
        err.write(
            f"{len(errors)} error(s), {_count(len(warnings), 'warning')}{scope}; "
            "nothing was changed\n"
        )
        return 1
    for r in rules:
        out.write(r.summary(rs.places) + "\n")
        if r.description:
            out.write(f"    {r.description}\n")
    what = _count(len(rules), "rule") if only is None or rules else target
    if strict and warnings:
        err.write(f"{what}, {_count(len(warnings), 'warning')}; --strict makes warnings errors\n")
        return 1
    out.write(f"{what} OK, {_count(len(warnings), 'warning')}\n")
    return 0


def _rules_failed(exc: RuleLoadError, err: TextIO) -> int:
    for line in exc.errors:
        err.write(line + "\n")
    err.write("fix the rules first (momentcast rules check)\n")
    return 1


def _write_report(
    report: dict[str, Any], as_json: bool, text: Callable[[dict[str, Any]], str], out: TextIO
) -> int:
    out.write(json.dumps(report, indent=2, ensure_ascii=False) + "\n" if as_json else text(report))
    return 0


def _replay(args: argparse.Namespace, default_dir: str, out: TextIO, err: TextIO) -> int:
    from service.rules.replay import replay

    try:
        report = replay(args.rules or default_dir, args.trace, args.profile)
    except RuleLoadError as exc:
        return _rules_failed(exc, err)
    except (TraceError, OSError) as exc:
        err.write(f"{args.trace}: {exc}\n")
        return 1
    return _write_report(report, args.json, format_report, out)


def _at(x: dict[str, Any]) -> str:
    return f"{x['rule']}@{x['place']}" if x["place"] else str(x["rule"])


def format_report(report: dict[str, Any]) -> str:
    lines = []
    for r in report["rows"]:
        head = f"{r['time'][:19].replace('T', ' ')}  {r['lat']:.5f},{r['lon']:.5f}  "
        events = " ".join([*(f"+{x}" for x in r["entered"]), *(f"-{x}" for x in r["left"])])
        d = r["decision"]
        if d is not None:
            # A location-free rule's decision has no place and no distance.
            where = f" @ {d['place']}" if d["place"] else ""
            metres = f"{d['distance_m']:.0f} m, " if d["distance_m"] is not None else ""
            what = (
                f"SEND {d['rule']}{where} ({metres}variant "
                f"{d['variant']}, ttl {d['ttl_s']}s): {d['title']}"
            )
        elif r["note"]:
            what = f"({r['note']}: nothing triggered)"
        else:
            what = "-"
        supp = "; ".join(f"{x['rule']}@{x['place']}: {x['reason']}" for x in r["suppressed"])
        shadow = ", ".join(_at(x) for x in r["shadow"])
        why = "; ".join(f"{x['rule']}: {x['reason']}" for x in r["not_matched"])
        quiet = "; ".join(f"{_at(x)}: {x['reason']}" for x in r["silent"] if not r["note"])
        lines.append(
            head
            + what
            + (f"  [shadow {shadow}]" if shadow else "")
            + (f"  [suppressed {supp}]" if supp else "")
            + (f"  [matched, {quiet}]" if quiet else "")
            + (f"  [not matched {why}]" if why else "")
            + (f"  {events}" if events else "")
        )
    s = report["summary"]
    why = ", ".join(f"{k} {v}" for k, v in s["suppressed"].items()) or "none"
    shadow = f", {s['shadow_sent']} shadow (not sent)" if s["shadow_sent"] else ""
    silent = ", ".join(f"{k} {v}" for k, v in s["silent"].items())
    lines.append(
        f"{s['signals']} signals, {s['sent']} pushes{shadow}, suppressed: {why}"
        + (f"; matched but silent: {silent}" if silent else "")
    )
    return "\n".join(lines) + "\n"


def _preview(args: argparse.Namespace, default_dir: str, out: TextIO, err: TextIO) -> int:
    from service.rules.preview import preview

    try:
        report = preview(
            args.rules or default_dir, args.rule, args.place, args.profile, args.locale
        )
    except RuleLoadError as exc:
        return _rules_failed(exc, err)
    except (TraceError, OSError) as exc:
        err.write(f"{exc}\n")
        return 1
    return _write_report(report, args.json, format_preview, out)


def format_preview(report: dict[str, Any]) -> str:
    where = "no places" if report["place"] is None else f"@ {report['place']}"
    if report["place_name"] and report["place_name"] != report["place"]:
        where += f" ({report['place_name']})"
    locale = report["locale"] or "none"
    lines = [f"{report['rule']} {where}, profile {report['profile']}, locale {locale}"]
    for v in report["variants"]:
        n = v["notification"]
        lines.append(f"variant {v['variant']} (weight {v['weight']}):")
        lines.append(f"  title:   {n['title']}")
        lines.append(f"  body:    {n['body']}")
        for name in ("url", "icon", "image"):
            if n.get(name):
                lines.append(f"  {name + ':':<8} {n[name]}")
        for a in n["actions"]:
            lines.append(f"  action:  [{a['action']}] {a['title']} -> {a['url']}")
        lines.append(f"  locale:  {n['locale'] or 'default'}")
    return "\n".join(lines) + "\n"


def _backtest(
    args: argparse.Namespace,
    default_dir: str,
    backtester: Backtester | None,
    out: TextIO,
    err: TextIO,
) -> int:
    from service.rules.loader import load_ruleset

    if backtester is None:
        err.write("the backtest reads the database: run it as momentcast rules backtest\n")
        return 2
    try:
        period = parse_duration(args.since)
    except ValueError as exc:
        err.write(f"--since: {exc}\n")
        return 2
    directory = args.dir or default_dir
    try:
        rs = load_ruleset(directory)
    except RuleLoadError as exc:
        return _rules_failed(exc, err)
    report = {"rules_dir": directory, **backtester(rs, period)}
    return _write_report(report, args.json, format_backtest, out)


def _reasons(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda x: -x[1])) or "-"


def format_backtest(report: dict[str, Any]) -> str:
    since, until = (report[k][:19].replace("T", " ") for k in ("since", "until"))
    lines = [
        f"backtest of {report['rules_dir']} on {_count(report['signals'], 'stored signal')} of "
        f"{_count(report['subscribers'], 'subscriber')}, {since} to {until} UTC "
        "(from fresh presence; nothing written)"
    ]
    for note in report["notes"]:
        lines.append(f"note: {note}")
    for r in report["rules"]:
        mode = " [shadow]" if r["mode"] == "shadow" else ""
        would = f"would send {r['would_send']}"
        if r["shadow_sent"]:
            would += f", shadow {r['shadow_sent']}"
        lines.append(
            f"{r['rule']}{mode}: {would} (live: {r['live']['decided']} decided, "
            f"{r['live']['sent']} sent); matched {r['matched']}"
        )
        lines.append(f"    suppressed: {_reasons(r['suppressed'])}")
        if r["silent"]:
            lines.append(f"    matched but silent: {_reasons(r['silent'])}")
        lines.append(f"    not matched: {_reasons(r['not_matched'])}")
    for x in report["live_only"]:
        lines.append(
            f"{x['rule']}: not in {report['rules_dir']} (live: {x['decided']} decided, "
            f"{x['sent']} sent)"
        )
    t = report["totals"]
    pushes = f"{t['would_send']} push{'' if t['would_send'] == 1 else 'es'}"
    lines.append(
        f"{_count(report['signals'], 'signal')}: {pushes} would be sent; "
        f"the live rules decided {t['live_decided']} and sent {t['live_sent']}"
    )
    return "\n".join(lines) + "\n"
