"""`momentcast serve --processes N`: N children share the port, one parent supervises them.

The parent does no request work. Before any child starts it does, once, what N processes
starting together would race on: create DATA_DIR, check the addresses, start the embedded
PostgreSQL (when DATABASE_URL is unset), migrate, generate the VAPID key pair, the admin token
and the secret key, and record their fingerprints. It reserves PORT (resolving ``0`` to a free
port) with a bound socket that never listens, then starts the children as
``momentcast serve --child INDEX`` with DATABASE_URL, PORT and METRICS_PORT set to what it
resolved.

Each child runs what a one-process ``serve`` runs - the API, a worker, a sender and the rules
watcher - and listens on PORT with SO_REUSEPORT, so the kernel spreads new connections over
them. The campaign fan-out and the maintenance run in child 0 only: their own locks (a
campaign's row lock, the roll-up's advisory lock) already keep several processes from doing
the same work twice, and one process keeps the others from even trying (nor counting it in
their metrics). With METRICS_PORT set, child i serves its own metrics on METRICS_PORT + i
(``0``: a free port each); prometheus_client's multiprocess mode is out of scope.

The parent prints one banner once every child is ready. SIGINT and SIGTERM are passed on to
every child, which stops as a one-process ``serve`` does (finishing the pushes in flight
within SHUTDOWN_GRACE); then the embedded PostgreSQL stops. SIGHUP is passed on (rules
reload). A child that exits on its own stops the group: one log line names it and how it
ended, the others are stopped, and the parent exits with 1, so that an orchestrator restarts
the whole group. A child whose parent is gone (SIGKILL) stops itself within a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import TextIO

from service import __version__, fingerprints, runtime
from service.context import Context, Keys
from service.errors import ConfigError, SupervisorGone
from service.settings import ENV_PREFIX, Settings
from service.store import migrations, open_store
from service.store.db import EmbeddedPostgres, resolve_database
from service.waiting import wait_any

log = logging.getLogger(__name__)

# Run in child 0 only (see the module's docstring).
ONCE = (runtime.FANOUT, runtime.MAINTENANCE)
PARENT_WATCH = "parent-watch"
# How often the parent looks at its children and the embedded server (a child's exit and a
# signal wake it at once).
POLL_S = 0.5
# How often a child checks that its parent is still there.
PARENT_WATCH_S = 1.0
# Beyond SHUTDOWN_GRACE, what a stopping child may take to close its pool and exit before
# the parent kills it.
STOP_MARGIN_S = runtime.POOL_CLOSE_TIMEOUT_S + 5.0
BANNER_END = "admin token:"
# The connections a child opens beside its pool: LISTEN for the worker, the sender and (in
# child 0) the fan-out.
LISTEN_CONNECTIONS = 3


@dataclass
class Child:
    """One ``serve --child`` process and the banner it printed."""

    index: int
    proc: subprocess.Popen[str]
    wake: threading.Event
    banner: list[str] = field(default_factory=list)
    ready: bool = False

    def __post_init__(self) -> None:
        threading.Thread(target=self._read, name=f"child-{self.index}", daemon=True).start()

    def _read(self) -> None:
        # The banner goes to the parent; the pipe is drained to the end so that it never fills.
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if self.ready:
                sys.stdout.write(line)
                continue
            self.banner.append(line.rstrip("\n"))
            if line.startswith(BANNER_END):
                self.ready = True
                self.wake.set()
        self.wake.set()

    def ended(self) -> str:
        """How it ended, for the one log line."""
        code = self.proc.returncode
        if code is not None and code < 0:
            return f"was killed by {signal.Signals(-code).name}"
        return f"exited with code {code}"


def metrics_ports(settings: Settings, count: int) -> list[int] | None:
    """Child i's METRICS_PORT: METRICS_PORT + i (``0``: any free port for each)."""
    base = settings.metrics_port
    if base is None:
        return None
    if base == 0:
        return [0] * count
    if base + count - 1 > 65535:
        raise ConfigError(
            f"{ENV_PREFIX}METRICS_PORT: {count} processes need ports {base} to "
            f"{base + count - 1}, beyond 65535"
        )
    ports = [base + i for i in range(count)]
    if settings.port in ports:
        raise ConfigError(
            f"{ENV_PREFIX}METRICS_PORT: {count} processes take ports {base} to "
            f"{base + count - 1}, which holds {ENV_PREFIX}PORT ({settings.port})"
        )
    return ports


@contextlib.contextmanager
def reserve_port(host: str, port: int) -> Iterator[int]:
    """Hold ``host:port`` with a bound socket that never listens (so it takes no connection)
    and has SO_REUSEPORT (so the children can listen beside it); yield the port (``0``
    resolved to a free one)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            raise runtime.listen_error(host, port, exc) from None
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


async def prepare(settings: Settings, dsn: str, count: int) -> None:
    """What every child would otherwise race on at its first start: the migrations, the
    keys DATA_DIR generates, and the deployment's fingerprints of them. Warns when the
    children may open more connections than the server allows."""
    await migrations.migrate(dsn, settings.migrations_dir)
    keys = Keys.load(settings)
    store = await open_store(dsn, max_size=1)
    try:
        await fingerprints.check(store, keys.vapid_public_b64, keys.secret_key)
        room = await store.connection_room()
    finally:
        await store.close()
    each = settings.db_pool_max + LISTEN_CONNECTIONS
    if count * each > room:
        # A warning, not an error: the pools seldom fill, and other clients share the server.
        log.warning(
            "%d processes may open %d database connections (%sDB_POOL_MAX %d + %d for LISTEN "
            "each) and the server allows %d: lower %sPROCESSES or %sDB_POOL_MAX, or raise "
            "max_connections (docs/operations.md, Every core of a host)",
            count,
            count * each,
            ENV_PREFIX,
            settings.db_pool_max,
            LISTEN_CONNECTIONS,
            room,
            ENV_PREFIX,
            ENV_PREFIX,
        )


def serve(settings: Settings, components: Sequence[str], count: int) -> int:
    """The parent of ``serve --processes COUNT``; its exit code."""
    runtime.prepare_data_dir(settings)
    runtime.check_listen(settings.host, settings.port)
    ports = metrics_ports(settings, count)
    for port in sorted(set(ports or ()) - {0}):
        runtime.check_listen(settings.host, port, "METRICS_PORT")
    with reserve_port(settings.host, settings.port) as port:
        target = resolve_database(settings)
        try:
            asyncio.run(prepare(settings, target.dsn, count))
            group = Group(settings, list(components), count, target.dsn, port, ports)
            return group.run(target.embedded)
        finally:
            target.close()


@dataclass
class Group:
    """The children and what the parent does with them: start, watch, stop."""

    settings: Settings
    components: list[str]
    count: int
    dsn: str
    port: int
    metrics_ports: list[int] | None
    out: TextIO = field(default_factory=lambda: sys.stdout)
    children: list[Child] = field(default_factory=list)
    wake: threading.Event = field(default_factory=threading.Event)
    requested: signal.Signals | None = None

    def _env(self, index: int) -> dict[str, str]:
        env = dict(os.environ)
        env[f"{ENV_PREFIX}DATABASE_URL"] = self.dsn
        env[f"{ENV_PREFIX}PORT"] = str(self.port)
        env[f"{ENV_PREFIX}PROCESSES"] = "1"
        if self.metrics_ports is not None:
            env[f"{ENV_PREFIX}METRICS_PORT"] = str(self.metrics_ports[index])
        return env

    def _start(self, index: int) -> Child:
        proc = subprocess.Popen(  # noqa: S603 - this interpreter, our own arguments
            [sys.executable, "-m", "service", "serve", "--child", str(index)],
            env=self._env(index),
            stdout=subprocess.PIPE,
            text=True,
            # Its own process group: a terminal's Ctrl-C reaches the parent only, which passes
            # it on once (twice, a child could get the second after it removed its handler).
            process_group=0,
        )
        return Child(index, proc, self.wake)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        sig = signal.Signals(signum)
        if sig == signal.SIGHUP:
            for child in self.children:
                if child.ready and child.proc.poll() is None:
                    child.proc.send_signal(sig)
            return
        if self.requested is None:
            self.requested = sig
        self.wake.set()

    def run(self, embedded: EmbeddedPostgres | None) -> int:
        handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in handled}
        try:
            self.children = [self._start(i) for i in range(self.count)]
            code = self._supervise(embedded)
            return self._stop(code)
        finally:
            # Whatever went wrong in the parent, no child is left behind.
            for child in self.children:
                if child.proc.poll() is None:
                    child.proc.kill()
                    child.proc.wait()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _supervise(self, embedded: EmbeddedPostgres | None) -> int | None:
        """Until a signal (None) or a failure (its exit code)."""
        announced = False
        while self.requested is None:
            for child in self.children:
                if child.proc.poll() is not None:
                    log.error(
                        "process %d (pid %d) %s; stopping the other processes",
                        child.index,
                        child.proc.pid,
                        child.ended(),
                        extra={"child": child.index, "exit_code": child.proc.returncode},
                    )
                    # A configuration error while starting (rules with errors) stays exit 2.
                    return 2 if not announced and child.proc.returncode == 2 else 1
            if embedded is not None and not embedded.is_running():
                log.error(
                    "the embedded PostgreSQL in %s stopped; stopping the processes",
                    embedded.pgdata,
                )
                return 1
            if not announced and all(child.ready for child in self.children):
                self._announce(embedded)
                announced = True
            self.wake.wait(POLL_S)
            self.wake.clear()
        log.info("momentcast stopping: %s", self.requested.name)
        return None

    def _announce(self, embedded: EmbeddedPostgres | None) -> None:
        first = self.children[0].banner
        for line in first:
            if line.startswith("momentcast listening on"):
                print(f"{line} ({self.count} processes)", file=self.out)
        for child in self.children:
            for line in child.banner:
                if line.startswith("metrics on"):
                    print(f"{line} (process {child.index})", file=self.out)
        for line in first:
            if not line.startswith(("momentcast listening on", "metrics on")):
                print(line, file=self.out)
        self.out.flush()
        pids = [child.proc.pid for child in self.children]
        database = "external" if embedded is None else "embedded"
        log.info(
            "momentcast %s started %d processes (pids %s); database %s",
            __version__,
            self.count,
            ", ".join(map(str, pids)),
            database,
            extra={"version": __version__, "pids": pids, "database": database},
        )

    def _stop(self, code: int | None) -> int:
        """Stop every child within SHUTDOWN_GRACE (and its pool's close); the exit code."""
        sig = self.requested or signal.SIGTERM
        for child in self.children:
            if child.proc.poll() is None:
                child.proc.send_signal(sig)
        deadline = time.monotonic() + self.settings.shutdown_grace.total_seconds() + STOP_MARGIN_S
        clean = True
        for child in self.children:
            try:
                child.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error(
                    "process %d (pid %d) did not stop in time; killing it",
                    child.index,
                    child.proc.pid,
                )
                child.proc.kill()
                child.proc.wait()
            # One stopped before it was ready (a stop during the start) ended as asked.
            clean = clean and (child.proc.returncode == 0 or not child.ready)
        if code is not None:
            return code
        return 0 if clean else 1


def run_child(settings: Settings, components: Sequence[str], index: int) -> None:
    """``serve --child INDEX``: what a one-process ``serve`` runs (the fan-out and the
    maintenance in child 0 only), on the parent's database and port."""
    if settings.database_url is None:
        raise ConfigError("serve --child is started by `momentcast serve --processes N`")
    names = [name for name in components if index == 0 or name not in ONCE]
    parent = os.getppid()
    runtime.run_event_loop(
        runtime.run(
            settings,
            settings.database_url,
            names,
            child=index,
            extra={PARENT_WATCH: _watch_parent(parent)},
        )
    )


def _watch_parent(pid: int) -> runtime.Component:
    async def watch(ctx: Context, stop: asyncio.Event) -> None:
        # A parent killed with SIGKILL cannot stop its children: they stop themselves, with an
        # error, rather than serve on unsupervised (and hold the embedded database).
        while not stop.is_set():
            if os.getppid() != pid:
                raise SupervisorGone(f"the supervising parent (pid {pid}) is gone")
            await wait_any(stop, seconds=PARENT_WATCH_S)

    return watch
