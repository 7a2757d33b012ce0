"""``momentcast demo``: the whole pipeline, for real, against simulated subscribers.

What runs: PostgreSQL on a throwaway database, never the configured one (on a server,
MOMENTCAST_DATABASE_URL names the real data, which five fake subscribers must not join): a
new database on that server, dropped afterwards, or, without it or without the privilege to
create one, an embedded PostgreSQL in a temporary directory. Then the API, the
worker and the sender on a loopback port, and the strict test push service
(service.testing) standing in for the subscribers' browsers: it checks the VAPID token and
decrypts every push with the subscriber's private key. Simulated subscribers register through
POST /v1/subscriptions, walk routes through the places of the demo's own rules (Berlin,
service/demo_rules/, shipped in the package) sending POST /v1/signals, and report
``shown``/``clicked`` with the event token found inside each decrypted push, as the service
worker would.

Rules use Berlin's local time. When it is not a weekday lunchtime in Berlin right now, the
demo runs on a temporary copy of its rules whose lunch window covers the present hour (and
without quiet hours at night) and says so: the API only takes signals from the last 24 hours,
so faking the clock instead would be a lie the rules would see through.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import itertools
import json
import math
import secrets
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import aiohttp
import yaml

from service import runtime
from service.errors import DatabaseError
from service.rules.units import Window, parse_window
from service.settings import Settings
from service.store import open_store
from service.store.db import (
    EmbeddedPostgres,
    create_throwaway_database,
    drop_throwaway_database,
)
from service.testing import BrowserSubscription, Fault, PushService

BERLIN = ZoneInfo("Europe/Berlin")
WALK_MPS = 1.3
STEP_S = 15  # one signal every 15 s of walking
STEP_M = WALK_MPS * STEP_S
# The demo's own rules and places, shipped in the package (a copy of the example rules/ that
# the walkers' routes are built for).
DEMO_RULES = Path(str(resources.files("service") / "demo_rules"))
LUNCH = parse_window("11:30-14:00")
WEEKDAYS = range(5)
QUIET = parse_window("21:00-08:00")


@dataclass
class Walker:
    """A simulated subscriber: a profile, a route through places and how its browser acts."""

    name: str
    topics: list[str]
    route: list[str]  # place ids; the walk starts 250 m south of the first one
    moment: str | None = None
    gone: bool = False  # the browser dropped the subscription: the push service answers 410
    clicks: bool = True


WALKERS = [
    Walker("Ada", ["food"], ["rest-01", "rest-02"]),
    Walker("Ben", ["culture"], ["lm-fernsehturm", "rest-01"], clicks=False),
    Walker("Cem", ["food", "shopping"], ["shop-03", "rest-03"], moment="buy"),
    Walker("Dana", ["food"], ["rest-04", "lm-gendarmenmarkt"]),
    Walker("Emil", ["food"], ["rest-02", "rest-03"], gone=True),
]


@dataclass
class Summary:
    signals: int = 0
    accepted: int = 0
    matched: int = 0
    decisions: int = 0
    suppressed: dict[str, int] = field(default_factory=dict)
    sent: int = 0
    gone: int = 0
    failed: int = 0
    expired: int = 0
    delivered: int = 0  # what the push service decrypted
    shown: int = 0
    clicked: int = 0
    by_rule: dict[str, int] = field(default_factory=dict)


def _in_window(local: datetime, window: Window) -> bool:
    # Minute resolution, as the rule files write their windows.
    return window.contains(local.hour * 3600 + local.minute * 60)


def prepare_rules(source: Path, target: Path, now: datetime) -> list[str]:
    """Copy ``source`` to ``target``, adapted so the lunch rule can fire now; say what changed."""
    # copyfile, not copy2: the package's files may be read-only, the copy is rewritten below.
    shutil.copytree(source, target, copy_function=shutil.copyfile)
    local = now.astimezone(BERLIN)
    notes = []
    # The walks start up to ~8 minutes ago: the window must hold all of them.
    early = local - timedelta(minutes=10)
    lunch_now = (
        local.weekday() in WEEKDAYS
        and early.weekday() in WEEKDAYS
        and _in_window(early, LUNCH)
        and _in_window(local, LUNCH)
    )
    if not lunch_now:
        path = target / "lunch-nearby.yaml"
        rule = yaml.safe_load(path.read_text(encoding="utf-8"))
        start = (local - timedelta(hours=1)).strftime("%H:%M")
        end = (local + timedelta(hours=1)).strftime("%H:%M")
        rule["when"] = {"between": f"{start}-{end}"}
        path.write_text(yaml.safe_dump(rule, sort_keys=False, allow_unicode=True), encoding="utf-8")
        notes.append(
            f"It is {local:%a %H:%M} in Berlin, not a weekday lunchtime: the demo uses a "
            f"copy of its rules where lunch-nearby runs {start}-{end} every day."
        )
    if _in_window(local, QUIET) or _in_window(early, QUIET):
        path = target / "policy.yaml"
        policy = yaml.safe_load(path.read_text(encoding="utf-8"))
        policy.pop("quiet_hours", None)
        path.write_text(yaml.safe_dump(policy, sort_keys=False), encoding="utf-8")
        notes.append(
            "Berlin is in its quiet hours (21:00-08:00): the copy of policy.yaml "
            "has no quiet hours."
        )
    return notes


def _free_port() -> int:
    # The sender writes events_url from PUBLIC_URL, so the port must be known before start.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _offset(lat: float, lon: float, north_m: float, east_m: float) -> tuple[float, float]:
    return (lat + north_m / 111_320.0, lon + east_m / (111_320.0 * math.cos(math.radians(lat))))


def _distance_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    dy = (b[0] - a[0]) * 111_320.0
    dx = (b[1] - a[1]) * 111_320.0 * math.cos(math.radians(a[0]))
    return math.hypot(dx, dy)


def walk(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Positions every STEP_M metres along straight lines through ``points``."""
    out = [points[0]]
    for a, b in itertools.pairwise(points):
        steps = max(1, round(_distance_m(a, b) / STEP_M))
        out.extend(
            (a[0] + (b[0] - a[0]) * i / steps, a[1] + (b[1] - a[1]) * i / steps)
            for i in range(1, steps + 1)
        )
    return out


def _centre(geometry: dict[str, Any]) -> tuple[float, float]:
    if geometry["type"] == "Point":
        lon, lat = geometry["coordinates"][:2]
        return float(lat), float(lon)
    ring = (
        geometry["coordinates"][0]
        if geometry["type"] == "Polygon"
        else geometry["coordinates"][0][0]
    )
    return (sum(p[1] for p in ring) / len(ring), sum(p[0] for p in ring) / len(ring))


class Demo:
    def __init__(self, out: TextIO, walkers: list[Walker]) -> None:
        self.out = out
        self.walkers = walkers
        self.admin_token = "demo-" + secrets.token_urlsafe(24)
        self.summary = Summary()
        self.received: list[dict[str, Any]] = []

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    async def run(self, settings: Settings, dsn: str) -> Summary:
        ready, stop = asyncio.Event(), asyncio.Event()
        server = asyncio.create_task(
            runtime.run(
                settings,
                dsn,
                [runtime.API, runtime.WORKER, runtime.SENDER],
                out=io.StringIO(),
                ready=ready,
                stop=stop,
            )
        )
        push: PushService | None = None
        try:
            await asyncio.wait(
                [server, asyncio.create_task(ready.wait())], return_when=asyncio.FIRST_COMPLETED
            )
            if server.done():
                server.result()  # start-up failed: raise its error
            base = settings.base_url
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{base}/v1/vapid-public-key") as r:
                    key = (await r.json())["public_key"]
                push = await PushService(key).start()
                self.say(
                    f"momentcast on {base}; push service (the subscribers' browsers) on "
                    f"{push.origin}"
                )
                places = await self._places(http, base)
                await self._walk_all(http, base, push, places)
                await self._wait_idle(dsn, push, http)
                await self._summarise(http, base)
        finally:
            stop.set()
            with contextlib.suppress(Exception):
                await server
            if push is not None:
                await push.close()
        return self.summary

    def _admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}

    async def _places(
        self, http: aiohttp.ClientSession, base: str
    ) -> dict[str, tuple[str, tuple[float, float]]]:
        async with http.get(f"{base}/v1/dashboard", headers=self._admin()) as r:
            data = await r.json()
        if data["status"] != "ok":
            raise RuntimeError(f"rules did not load: {data['errors']}")
        places = {}
        for rule in data["rules"]:
            for f in rule["places"]["features"]:
                places[f["properties"]["id"]] = (f["properties"]["name"], _centre(f["geometry"]))
        return places

    async def _walk_all(
        self,
        http: aiohttp.ClientSession,
        base: str,
        push: PushService,
        places: dict[str, tuple[str, tuple[float, float]]],
    ) -> None:
        self.browsers: dict[str, BrowserSubscription] = {}
        for w in self.walkers:
            sub = push.subscribe(Fault(status=410) if w.gone else None)
            body = {
                "subscription": sub.to_json(),
                "topics": w.topics,
                "timezone": "Europe/Berlin",
                "location_consent": True,
            }
            async with http.post(f"{base}/v1/subscriptions", json=body) as r:
                if r.status != 201:
                    raise RuntimeError(f"registration failed: {r.status} {await r.text()}")
                reg = await r.json()
            self.browsers[w.name] = sub
            first = places[w.route[0]][1]
            points = [_offset(*first, -250.0, 0.0)] + [places[p][1] for p in w.route]
            path = walk(points)
            now = datetime.now(UTC)
            # The walk ends now, so every signal is fresh when the worker judges it.
            signals = []
            for i, (lat, lon) in enumerate(path):
                at = now - timedelta(seconds=STEP_S * (len(path) - 1 - i))
                signal: dict[str, Any] = {
                    "lat": round(lat, 6),
                    "lon": round(lon, 6),
                    "accuracy_m": 12,
                    "speed_mps": WALK_MPS,
                    "at": at.isoformat(),
                }
                if w.moment:
                    signal["moment"] = w.moment
                signals.append(signal)
            async with http.post(
                f"{base}/v1/signals",
                json={"signals": signals},
                headers={"Authorization": f"Bearer {reg['token']}"},
            ) as r:
                if r.status != 202:
                    raise RuntimeError(f"signals refused: {r.status} {await r.text()}")
                self.summary.accepted += (await r.json())["accepted"]
            self.summary.signals += len(signals)
            route = " -> ".join(places[p][0] for p in w.route)
            extra = f", moment {w.moment}" if w.moment else ""
            gone = " (browser unsubscribed: push service answers 410)" if w.gone else ""
            self.say(
                f"{w.name:5} topics {','.join(w.topics)}{extra}: walks {len(signals)} "
                f"signals, {_distance_m(path[0], path[-1]):.0f} m, to {route}{gone}"
            )

    async def _on_received(
        self, http: aiohttp.ClientSession, name: str, message: dict[str, Any], clicks: bool
    ) -> None:
        # A declarative push message: the notification, as a browser would show it.
        message = message.get("notification", message)
        data = message.get("data", {})
        self.received.append({"subscriber": name, **message})
        self.say(
            f"  push to {name:5} [{data.get('rule')}/{data.get('variant')}] "
            f"{message.get('title')!r}: {message.get('body')!r}"
        )
        # What the service worker does: report shown, then clicked when the user taps it.
        for kind in ["shown", "clicked"] if clicks else ["shown"]:
            body = {"delivery_id": data["delivery_id"], "token": data["event_token"], "type": kind}
            async with http.post(
                data["events_url"], data=json.dumps(body), headers={"Content-Type": "text/plain"}
            ) as r:
                if r.status == 202:
                    setattr(self.summary, kind, getattr(self.summary, kind) + 1)

    async def _wait_idle(
        self, dsn: str, push: PushService, http: aiohttp.ClientSession, limit_s: float = 40.0
    ) -> None:
        """Print pushes as they are decrypted until nothing is left to decide or send."""
        self.say("")
        self.say("Notifications, as the receiving browser decrypts them:")
        seen: dict[str, int] = {w.name: 0 for w in self.walkers}
        clicks = {w.name: w.clicks for w in self.walkers}
        store = await open_store(dsn, max_size=1)
        deadline = time.monotonic() + limit_s
        try:
            while True:
                for name, sub in self.browsers.items():
                    messages = sub.messages()
                    for message in messages[seen[name] :]:
                        await self._on_received(http, name, message, clicks[name])
                    seen[name] = len(messages)
                busy = await store.backlog()
                if busy == 0 and all(
                    len(s.messages()) == seen[n] for n, s in self.browsers.items()
                ):
                    return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the pipeline did not settle within {limit_s:.0f} s")
                await asyncio.sleep(0.1)
        finally:
            await store.close()

    async def _summarise(self, http: aiohttp.ClientSession, base: str) -> None:
        async with http.get(f"{base}/v1/stats", headers=self._admin()) as r:
            stats = await r.json()
        s = self.summary
        for row in stats["rules"]:
            s.matched += row["matched"]
            for reason, n in row["suppressed"].items():
                s.suppressed[reason] = s.suppressed.get(reason, 0) + n
            s.sent += row["sent"]
            s.gone += row["gone"]
            s.failed += row["failed"]
            s.expired += row["expired"]
            outcomes = row["sent"] + row["gone"] + row["failed"] + row["expired"]
            if outcomes:
                s.by_rule[row["rule"]] = s.by_rule.get(row["rule"], 0) + outcomes
        s.decisions = sum(s.by_rule.values())
        s.delivered = len(self.received)
        self.say("")
        self.say("Summary (from GET /v1/stats; 'delivered' is what the push service decrypted):")
        self.say(f"  signals sent        {s.signals} ({s.accepted} accepted)")
        self.say(f"  rule matches        {s.matched}")
        self.say(
            f"  decisions (pushes)  {s.decisions}: "
            + ", ".join(f"{k} {v}" for k, v in sorted(s.by_rule.items()))
        )
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(s.suppressed.items())) or "none"
        self.say(f"  suppressed          {sum(s.suppressed.values())}: {reasons}")
        self.say(
            f"  push outcomes       sent {s.sent}, gone {s.gone}, failed {s.failed}, "
            f"expired {s.expired}"
        )
        self.say(f"  pushes delivered    {s.delivered}")
        self.say(f"  events reported     shown {s.shown}, clicked {s.clicked}")


@contextlib.asynccontextmanager
async def throwaway_database(
    server: str | None, root: Path, say: Callable[[str], None]
) -> AsyncIterator[str]:
    """A database the demo may fill and forget; never ``server``'s own database."""
    if server:
        try:
            dsn = await create_throwaway_database(server, "momentcast_demo")
        except DatabaseError as exc:
            say(f"MOMENTCAST_DATABASE_URL: {exc}; the demo uses an embedded PostgreSQL instead.")
        else:
            name = urlsplit(dsn).path.lstrip("/")
            say(
                f"Starting PostgreSQL (throwaway database {name} on MOMENTCAST_DATABASE_URL's "
                "server, dropped afterwards), API, worker and sender..."
            )
            try:
                yield dsn
            finally:
                await drop_throwaway_database(server, dsn)
            return
    say("Starting PostgreSQL (embedded, temporary), API, worker and sender...")
    embedded = EmbeddedPostgres(root / "pg")
    try:
        yield await asyncio.to_thread(embedded.start)
    finally:
        await asyncio.to_thread(embedded.stop)


def main(argv: list[str], out: TextIO = sys.stdout, server: str | None = None) -> int:
    """``server``: the configured DATABASE_URL, whose server may hold the demo's own
    throwaway database (never its own database)."""
    parser = argparse.ArgumentParser(prog="momentcast demo", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rules",
        type=Path,
        default=DEMO_RULES,
        help="rules directory to copy (default: the demo's Berlin rules in the package)",
    )
    parser.add_argument(
        "--summary-json",
        type=Path,
        help="also write the summary and every decrypted push to this file",
    )
    # `momentcast demo -- --summary-json F`: the CLI's argparse needs "--" before options.
    args = parser.parse_args(argv[1:] if argv[:1] == ["--"] else argv)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="momentcast-demo-") as tmp:
        root = Path(tmp)
        demo = Demo(out, WALKERS)
        for note in prepare_rules(args.rules, root / "rules", datetime.now(UTC)):
            demo.say(note)
        port = _free_port()
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            database_url=None,  # the demo runs on throwaway_database()'s, never this one
            data_dir=root / "data",
            host="127.0.0.1",
            port=port,
            public_url=f"http://127.0.0.1:{port}",
            rules_dir=root / "rules",
            admin_token=demo.admin_token,
            push_hosts=["http://127.0.0.1"],
            worker_poll_interval=timedelta(milliseconds=200),
            log_level="WARNING",
            rules_poll_interval=timedelta(hours=1),
        )

        async def run() -> Summary:
            async with throwaway_database(server, root, demo.say) as dsn:
                return await demo.run(settings, dsn)

        summary = asyncio.run(run())
    demo.say(f"Done in {time.monotonic() - started:.1f} s.")
    if args.summary_json:
        args.summary_json.write_text(
            json.dumps(
                {"summary": summary.__dict__, "received": demo.received}, indent=2, default=str
            )
        )
    return 0
