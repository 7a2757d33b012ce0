"""Durable group commit for signals: one writer per process, one INSERT + COMMIT per batch.

Requests hand their rows to :class:`SignalWriter` and wait. The writer takes everything that
queued up while the previous batch was committing, stores it with a single ``unnest`` INSERT
and one COMMIT, and only then answers each waiting request. So every 202 means "committed",
yet the cost of a commit (and of its fsync) is shared by all requests that arrived meanwhile.
A batch is all-or-nothing: if its COMMIT fails, every request in it gets the error and none of
their rows exist. The rows of one request never span two batches.

A signal may carry a client-chosen id: one whose id is already stored for its subscription (a
client's retry), or repeated earlier in the batch, is a duplicate and not stored again. Each
request learns how many of its signals were new and how many duplicates, even when the same id
comes twice in one request or in two requests of one batch.

One ``NOTIFY momentcast_signals`` per committed batch wakes the workers (PostgreSQL delivers
it at COMMIT, never for a rolled-back batch).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from service.errors import IngestUnavailable
from service.metrics import SIGNALS_DUPLICATE
from service.queue import SIGNALS_CHANNEL
from service.store.signals import IngestedBatch, SignalQueries, SignalRequest

log = logging.getLogger(__name__)

# Upper bound of rows per statement: keeps one statement's parameters and latency bounded.
MAX_BATCH_ROWS = 20_000
# How long a batch may take before its requests are told to retry.
COMMIT_TIMEOUT_S = 10.0
# Batches committing at once. One would leave PostgreSQL idle while this process parses the
# next requests and the answer of the last commit travels back; a few overlap those waits.
# Each batch is still one statement and one COMMIT, and still all-or-nothing.
MAX_IN_FLIGHT = 2


@dataclass(slots=True)
class IngestResult:
    known: bool  # the token belongs to a subscription
    stored: bool  # False when that subscription is paused or gave no location consent
    consent_refused: bool = False  # a location came without location consent
    accepted: int = 0  # signals stored now (for a paused subscription: taken and dropped)
    duplicates: int = 0  # signals whose client id was already stored or repeated


@dataclass(slots=True)
class _Pending:
    request: SignalRequest
    done: asyncio.Future[IngestResult] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class SignalWriter:
    """The single writer task of a process; start it before and stop it after serving."""

    def __init__(self, store: SignalQueries, *, linger_s: float = 0.0) -> None:
        self._store = store
        self._linger_s = linger_s
        self._next_commit = 0.0
        self._queue: list[_Pending] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        # Observability for tests and the benchmark.
        self.batches = 0
        self.rows = 0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="signal-writer")

    async def stop(self) -> None:
        """Commit what is queued, then end the task."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def submit(self, request: SignalRequest) -> IngestResult:
        """Queue one request's signals; return once the COMMIT holding them succeeded."""
        if self._closing or self._task is None or self._task.done():
            raise IngestUnavailable("the signal writer is not running")
        pending = _Pending(request)
        self._queue.append(pending)
        self._wake.set()
        # Not shielded: a client that goes away cancels only its wait; the writer skips
        # answering it, and its rows are committed with the batch like everyone else's.
        return await pending.done

    async def _run(self) -> None:
        try:
            await self._loop()
        except BaseException as exc:
            # Whatever ended the writer, no request may wait for it forever: the queued ones
            # are answered now, and submit() refuses new ones (503) from here on.
            log.error("signal writer stopped: %r; signals are refused until restart", exc)
            self._fail(self._queue, IngestUnavailable("the signal writer stopped"))
            self._queue.clear()
            raise

    async def _loop(self) -> None:
        in_flight: set[asyncio.Task[None]] = set()
        while True:
            await self._wake.wait()
            self._wake.clear()
            delay = self._next_commit - time.monotonic()
            if delay > 0 and self._queue and not self._closing:
                # Coalescing (INGEST_LINGER_MS): a commit starts no sooner than this after the
                # last one began, so that requests coming a few ms apart share one.
                await asyncio.sleep(delay)
            while self._queue and len(in_flight) < MAX_IN_FLIGHT:
                self._next_commit = time.monotonic() + self._linger_s
                task = asyncio.create_task(self._commit(self._take()))
                in_flight.add(task)
                task.add_done_callback(self._finished(in_flight))
            if self._closing and not self._queue and not in_flight:
                return

    def _finished(self, in_flight: set[asyncio.Task[None]]) -> Callable[[asyncio.Task[None]], None]:
        def done(task: asyncio.Task[None]) -> None:
            in_flight.discard(task)
            # A free slot: commit what queued meanwhile (and let stop() see the end).
            self._wake.set()

        return done

    def _take(self) -> list[_Pending]:
        # Everything queued so far, up to MAX_BATCH_ROWS; a request is never split.
        end, count = 0, 0
        while end < len(self._queue):
            size = len(self._queue[end].request.signals)
            if end and count + size > MAX_BATCH_ROWS:
                break
            count += size
            end += 1
        taken = self._queue[:end]
        del self._queue[:end]
        return taken

    async def _commit(self, batch: list[_Pending]) -> None:
        try:
            async with asyncio.timeout(COMMIT_TIMEOUT_S):
                committed = await self._store.ingest_signals(
                    requests=[item.request for item in batch], channel=SIGNALS_CHANNEL
                )
        except BaseException as exc:
            # CancelledError too: a request must never wait for a batch that is gone.
            log.warning(
                "signal batch of %d requests not committed: %s", len(batch), type(exc).__name__
            )
            self._fail(batch, IngestUnavailable("signals could not be stored; retry later"))
            if not isinstance(exc, Exception):
                raise
            return
        self.batches += 1
        self.rows += committed.stored
        SIGNALS_DUPLICATE.inc(committed.duplicates)
        for number, item in enumerate(batch):
            if not item.done.done():
                item.done.set_result(_result(committed, item.request, number))

    @staticmethod
    def _fail(batch: list[_Pending], error: IngestUnavailable) -> None:
        for item in batch:
            if not item.done.done():
                item.done.set_exception(error)
                # Mark retrieved: a request cancelled by its client would log it otherwise.
                item.done.exception()


def _result(batch: IngestedBatch, request: SignalRequest, number: int) -> IngestResult:
    known = request.token_hash in batch.known
    refused = number in batch.consent_refused
    paused = request.token_hash in batch.paused
    stored = known and not refused and not paused
    if stored:
        accepted = batch.accepted[number]
    elif paused:
        # Nothing is stored for a paused subscription; its answer counts the request's own
        # signals as the database would have (an id repeated within the request counts once).
        ids = [s.client_id for s in request.signals if s.client_id is not None]
        accepted = len(request.signals) - len(ids) + len(set(ids))
    else:
        accepted = 0
    duplicates = len(request.signals) - accepted if stored or paused else 0
    return IngestResult(known, stored, refused, accepted, duplicates)
