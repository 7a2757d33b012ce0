"""The sender's HTTP/1.1 client: one request shape (a POST with a few headers and a body),
keep-alive connections pooled per push-service origin.

Why not aiohttp's client: a push is one small POST whose answer is a status and a few
bytes, and aiohttp's request path (request and response objects, header multidicts, payload
writers, timers, the streams) cost 105-148 us of CPU per request on loopback, most of the
sender's own share. Here a connection is an :class:`asyncio.Protocol` that writes the request
in one ``write`` (the origin's fixed lines serialised once) and hands what it reads to
httptools' response parser (llhttp, the C parser uvicorn uses): 19-26 us per request.
The parser, not this module, decides where an answer ends (``Content-Length``, chunked) and
whether the connection may be reused (``Connection: close``, HTTP/1.0).

What it keeps from the aiohttp set-up it replaces:

- **The SSRF guard at connect time.** A host name is resolved through
  :class:`~service.webpush.endpoints.GuardedResolver` (which drops non-public addresses) and
  the connection is made to an address it returned: the name is never resolved a second time
  by the connect call, so DNS cannot point it elsewhere in between. IP literals were checked
  by :func:`~service.webpush.endpoints.check_endpoint`.
- **TLS with SNI and hostname verification** (the context of ``push_tls_context``).
- **Timeouts:** ``connect_timeout`` for a connection (waiting for a place in the origin's
  pool, resolving, connecting, the TLS handshake), ``read_timeout`` from the request written
  to the whole answer read.
- **At most ``per_origin`` connections to one origin**, so one slow push service cannot
  hold every connection; a request waits for a free one.
- **No redirects followed, no decompression:** the status is the answer.

A connection that fails in any way (an error, a timeout, a cancelled request, an answer
that is not HTTP) is closed and never reused. Idle connections are closed after
``KEEPALIVE`` seconds unused.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections import deque
from dataclasses import dataclass
from typing import cast

import httptools

from service.errors import AddressRefused, PushConnectionError, PushTLSError
from service.webpush.endpoints import EndpointTarget, GuardedResolver

# An idle connection unused for this long is closed rather than reused (aiohttp's default;
# push services close theirs after a minute or more).
KEEPALIVE = 15.0
# Resolved addresses are reused for this long (aiohttp's ttl_dns_cache was 60 s).
DNS_TTL = 60.0
# The most of an answer's body kept (the sender logs its first 200 characters).
BODY_LIMIT = 1024


@dataclass(frozen=True, slots=True)
class Answer:
    """A push service's answer: the status, the start of the body, ``Retry-After``."""

    status: int
    body: bytes
    retry_after: str | None


class _Connection(asyncio.Protocol):
    """One keep-alive connection; at most one request in flight on it."""

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[Answer] | None = None
        self.status = 0
        self.body = bytearray()
        self.retry_after: bytes | None = None
        self.headers_done = False
        self.reusable = False
        self.idle_since = 0.0
        # Counted in its pool's limit until it is reported closed (once, whoever notices).
        self.counted = True

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's are not asyncio.Transport subclasses: no isinstance).
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.waiter is None:
            # Nothing was asked: bytes out of turn mean the peer is not speaking our HTTP.
            self.discard()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(PushConnectionError(f"malformed answer: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.reusable = False
        self.pool.forget(self)
        if self.waiter is None or self.waiter.done():
            return
        if self.headers_done:
            # The status line and headers came, the body was cut or ran to the close (an
            # answer without Content-Length): the push service has decided, so its status
            # stands. Sending the push again could deliver it twice.
            self._answer()
            return
        reason = f": {exc}" if exc is not None else ""
        self.waiter.set_exception(
            PushConnectionError(f"connection closed before an answer{reason}")
        )

    # -- httptools callbacks ---------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"retry-after":
            self.retry_after = value

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        room = BODY_LIMIT - len(self.body)
        if room > 0:
            self.body += body[:room]

    def on_message_complete(self) -> None:
        if self.status < 200:
            # An interim answer (100 Continue, 103 Early Hints): the real one follows.
            self.headers_done = False
            self.body.clear()
            return
        self.reusable = self.parser.should_keep_alive()
        self._answer()

    # -- the request -----------------------------------------------------------------------

    def send(self, request: bytes) -> asyncio.Future[Answer]:
        assert self.transport is not None
        self.status, self.retry_after, self.headers_done = 0, None, False
        self.body.clear()
        self.reusable = False
        waiter = self.waiter = self.pool.loop.create_future()
        if self.transport.is_closing():
            # The peer closed it while it was handed over: nothing was sent.
            self._fail(PushConnectionError("connection closed before the request"))
        else:
            self.transport.write(request)
        return waiter

    def timed_out(self) -> None:
        self._fail(TimeoutError())

    def discard(self) -> None:
        """Close and never reuse (a half-read answer would be taken for the next one's)."""
        self.reusable = False
        if self.transport is not None:
            self.transport.abort()

    def _answer(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            retry_after = self.retry_after.decode("latin-1") if self.retry_after else None
            waiter.set_result(Answer(self.status, bytes(self.body), retry_after))
        if not self.reusable:
            self.discard()

    def _fail(self, exc: BaseException) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.discard()


class _Pool:
    """The connections to one origin: idle ones (most recent last) and those being made or
    in use, at most ``limit`` in all; requests beyond wait in turn."""

    def __init__(self, client: PushClient, target: EndpointTarget) -> None:
        self.client = client
        self.loop = asyncio.get_running_loop()
        self.host = target.host
        self.port = target.port
        self.ip = target.ip
        self.tls = client.tls if target.scheme == "https" else None
        self.limit = client.per_origin
        self.idle: deque[_Connection] = deque()
        self.open = 0  # connections counted against the limit: idle, in use, or being made
        self.waiters: deque[asyncio.Future[_Connection | None]] = deque()
        host = target.origin.partition("://")[2]
        # The lines every request to this origin carries, serialised once.
        self.fixed = (
            f" HTTP/1.1\r\nHost: {host}\r\nConnection: keep-alive\r\nAccept: */*\r\n"
        ).encode("ascii")

    def request(self, path: str, headers: dict[str, str], body: bytes) -> bytes:
        lines = "".join([f"{name}: {value}\r\n" for name, value in headers.items()])
        return b"".join(
            [
                b"POST ",
                path.encode("ascii"),
                self.fixed,
                lines.encode("latin-1"),
                b"Content-Length: %d\r\n\r\n" % len(body),
                body,
            ]
        )

    async def acquire(self) -> _Connection:
        while self.idle:
            conn = self.idle.pop()
            if conn.transport is not None and not conn.transport.is_closing():
                return conn
            self._closed(conn)
        async with asyncio.timeout(self.client.connect_timeout):
            while self.open >= self.limit:
                waiter: asyncio.Future[_Connection | None] = self.loop.create_future()
                self.waiters.append(waiter)
                try:
                    handed = await waiter
                except BaseException:
                    if waiter.done() and not waiter.cancelled():
                        # A connection (or a place) was handed over as we were cancelled.
                        self._pass_on(waiter.result())
                    raise
                if handed is not None:
                    return handed  # a connection another request finished with
            self.open += 1
            try:
                return await self._connect()
            except BaseException:
                self._closed(None)
                raise

    def release(self, conn: _Connection) -> None:
        """Back to the pool after a whole answer: to a waiting request, or idle."""
        if (
            not conn.reusable
            or conn.transport is None
            or conn.transport.is_closing()
            or self.client.closed
        ):
            conn.discard()
            return  # forget() (connection_lost) gives its place to a waiter
        now = self.loop.time()
        while self.idle and now - self.idle[0].idle_since > KEEPALIVE:
            self.idle.popleft().discard()
        self._pass_on(conn)

    def forget(self, conn: _Connection) -> None:
        """A connection closed (by us or the peer): its place in the limit is free."""
        with contextlib.suppress(ValueError):  # not idle: in use, or popped to be discarded
            self.idle.remove(conn)
        self._closed(conn)

    def _closed(self, conn: _Connection | None) -> None:
        if conn is not None:
            if not conn.counted:
                return
            conn.counted = False
        self.open -= 1
        self._pass_on(None)

    def _pass_on(self, conn: _Connection | None) -> None:
        """Give a free connection, or a free place (None), to the first request waiting."""
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)  # None: a place, for the waiter to connect itself
                return
        if conn is not None:
            conn.idle_since = self.loop.time()
            self.idle.append(conn)

    async def _connect(self) -> _Connection:
        if self.ip is not None:
            addresses = [self.ip.compressed]  # a literal the endpoint policy accepted
        else:
            try:
                addresses = await self.client.resolve(self.host, self.port)
            except AddressRefused:
                raise  # the guard's verdict: no request, not a failure to retry
            except OSError as exc:  # the name does not resolve (now)
                raise PushConnectionError(f"cannot resolve {self.host}: {exc}") from exc
        last: Exception | None = None
        for address in addresses:
            try:
                _, conn = await self.loop.create_connection(
                    lambda: _Connection(self),
                    address,
                    self.port,
                    ssl=self.tls,
                    server_hostname=self.host if self.tls is not None else None,
                )
            except ssl.SSLError as exc:
                # The certificate, not the address: another address presents the same one.
                raise PushTLSError(self.host, self.port, exc) from exc
            except OSError as exc:
                if isinstance(exc, TimeoutError):
                    raise
                last = exc
                continue
            return conn
        raise PushConnectionError(f"cannot connect to {self.host}:{self.port}: {last}")


class PushClient:
    """POSTs push messages over pooled keep-alive connections. ``await close()`` at the end."""

    def __init__(
        self,
        *,
        tls: ssl.SSLContext,
        resolver: GuardedResolver,
        connect_timeout: float,
        read_timeout: float,
        per_origin: int,
    ) -> None:
        self.tls = tls
        self.resolver = resolver
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.per_origin = max(1, per_origin)
        self._pools: dict[str, _Pool] = {}
        self.closed = False
        self._dns: dict[tuple[str, int], tuple[float, list[str]]] = {}

    async def post(self, target: EndpointTarget, headers: dict[str, str], body: bytes) -> Answer:
        """POST ``body`` to ``target``; raises TimeoutError, PushTLSError, PushConnectionError
        or AddressRefused (the guard refused every address: nothing was sent)."""
        pool = self._pools.get(target.origin)
        if pool is None:
            pool = self._pools[target.origin] = _Pool(self, target)
        conn = await pool.acquire()
        answer = conn.send(pool.request(target.path, headers, body))
        timer = pool.loop.call_later(self.read_timeout, conn.timed_out)
        try:
            result = await answer
        except BaseException:
            conn.discard()  # an answer may still come: it must not be read as the next one's
            raise
        finally:
            timer.cancel()
        pool.release(conn)
        return result

    async def resolve(self, host: str, port: int) -> list[str]:
        """The guarded addresses of ``host``, cached for DNS_TTL seconds."""
        now = asyncio.get_running_loop().time()
        cached = self._dns.get((host, port))
        if cached is not None and cached[0] > now:
            return cached[1]
        results = await self.resolver.resolve(host, port, socket.AF_UNSPEC)
        addresses = list(dict.fromkeys(r["host"] for r in results))
        self._dns[(host, port)] = (now + DNS_TTL, addresses)
        return addresses

    async def close(self) -> None:
        """Close the idle connections; those in use are closed as their answers come."""
        self.closed = True
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            for waiter in pool.waiters:
                if not waiter.done():
                    waiter.set_exception(PushConnectionError("the client is closed"))
            while pool.idle:
                pool.idle.pop().discard()
        await self.resolver.close()
