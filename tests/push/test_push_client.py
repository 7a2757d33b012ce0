"""The sender's HTTP/1.1 client against a scripted server on loopback: what it writes, how it
reads each way an answer can end (Content-Length, chunked, the connection's close), which
connections it reuses, its per-origin cap, its timeouts and the guard at connect time."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from service.errors import AddressRefused, PushConnectionError
from service.push.client import PushClient
from service.webpush.endpoints import EndpointTarget, GuardedResolver, check_endpoint

CREATED = b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"
HEADERS = {"TTL": "60", "Urgency": "normal", "Content-Encoding": "aes128gcm"}


@dataclass
class Request:
    head: bytes
    body: bytes
    connection: int


@dataclass
class Server:
    """Reads whole requests (Content-Length bodies) and answers each with what ``answer``
    returns for it: bytes to write, then the connection is closed if ``close`` says so."""

    answer: Callable[[Request], bytes] = lambda _: CREATED
    close: Callable[[Request], bool] = lambda _: False
    delay: float = 0.0
    requests: list[Request] = field(default_factory=list)
    connections: int = 0
    open_now: int = 0
    most_open: int = 0
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                request = Request(head, await reader.readexactly(length), number)
                self.requests.append(request)
                if self.delay:
                    await asyncio.sleep(self.delay)
                writer.write(self.answer(request))
                await writer.drain()
                if self.close(request):
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self.open_now -= 1
            writer.close()


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    state = Server()
    listening = await asyncio.start_server(state.handle, "127.0.0.1", 0)
    state.port = listening.sockets[0].getsockname()[1]
    yield state
    listening.close()


def make_client(
    push_hosts: list[str] | None = None, *, per_origin: int = 8, read_timeout: float = 2.0
) -> PushClient:
    return PushClient(
        tls=ssl.create_default_context(),
        resolver=GuardedResolver(push_hosts or ["http://127.0.0.1"]),
        connect_timeout=2.0,
        read_timeout=read_timeout,
        per_origin=per_origin,
    )


def target(server: Server, path: str = "/push/a?x=1") -> EndpointTarget:
    return check_endpoint(f"http://127.0.0.1:{server.port}{path}", ["http://127.0.0.1"])


async def test_one_request_shape_over_one_kept_alive_connection(server: Server) -> None:
    client = make_client()
    try:
        for body in (b"first", b"\x00" * 4096, b"third"):
            answer = await client.post(target(server), HEADERS, body)
            assert (answer.status, answer.body, answer.retry_after) == (201, b"", None)
    finally:
        await client.close()
    assert [r.body for r in server.requests] == [b"first", b"\x00" * 4096, b"third"]
    assert {r.connection for r in server.requests} == {1}
    lines = server.requests[0].head.decode().split("\r\n")
    assert lines[0] == "POST /push/a?x=1 HTTP/1.1"
    assert f"Host: 127.0.0.1:{server.port}" in lines
    assert "TTL: 60" in lines and "Content-Encoding: aes128gcm" in lines
    assert "Content-Length: 5" in lines


async def test_connection_close_answers_are_not_reused(server: Server) -> None:
    server.answer = lambda _: (
        b"HTTP/1.1 201 Created\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    )
    server.close = lambda _: True
    client = make_client()
    try:
        answers = [await client.post(target(server), HEADERS, b"x") for _ in range(3)]
    finally:
        await client.close()
    assert [(a.status, a.body) for a in answers] == [(201, b"ok")] * 3
    assert [r.connection for r in server.requests] == [1, 2, 3]


async def test_chunked_and_interim_answers_are_read_by_the_parser(server: Server) -> None:
    def answer(request: Request) -> bytes:
        return (
            b"HTTP/1.1 100 Continue\r\n\r\n"
            b"HTTP/1.1 429 Too Many Requests\r\nTransfer-Encoding: chunked\r\n"
            b"retry-after: 7\r\n\r\n"
            b"5\r\nslow \r\n5;ext=1\r\ndown!\r\n0\r\nX-Trailer: y\r\n\r\n"
        )

    server.answer = answer
    client = make_client()
    try:
        first = await client.post(target(server), HEADERS, b"a")
        second = await client.post(target(server), HEADERS, b"b")
    finally:
        await client.close()
    assert (first.status, first.body, first.retry_after) == (429, b"slow down!", "7")
    assert second == first
    assert {r.connection for r in server.requests} == {1}  # the chunked end was found


async def test_an_answer_that_ends_with_the_connection_keeps_its_status(server: Server) -> None:
    # No Content-Length, no chunks: the body runs to the close (RFC 9112 6.3).
    server.answer = lambda _: b"HTTP/1.1 410 Gone\r\nConnection: close\r\n\r\nsubscription expired"
    server.close = lambda _: True
    client = make_client()
    try:
        answer = await client.post(target(server), HEADERS, b"x")
        again = await client.post(target(server), HEADERS, b"x")
    finally:
        await client.close()
    assert (answer.status, answer.body) == (410, b"subscription expired")
    assert again.status == 410 and [r.connection for r in server.requests] == [1, 2]


async def test_garbage_and_a_cut_connection_are_connection_errors(server: Server) -> None:
    server.answer = lambda r: b"SMTP ready\r\n\r\n" if r.body == b"garbage" else b""
    server.close = lambda r: r.body == b"cut"
    client = make_client()
    try:
        with pytest.raises(PushConnectionError, match="malformed answer"):
            await client.post(target(server), HEADERS, b"garbage")
        with pytest.raises(PushConnectionError, match="closed before an answer"):
            await client.post(target(server), HEADERS, b"cut")
        server.answer = lambda _: CREATED
        assert (await client.post(target(server), HEADERS, b"fine")).status == 201
    finally:
        await client.close()
    # Each failure discarded its connection: three requests, three connections.
    assert [r.connection for r in server.requests] == [1, 2, 3]


async def test_a_late_answer_is_never_read_as_the_next_ones(server: Server) -> None:
    server.answer = lambda r: b"HTTP/1.1 %s OK\r\nContent-Length: 0\r\n\r\n" % r.body
    server.delay = 0.5
    client = make_client(read_timeout=0.2)
    try:
        with pytest.raises(TimeoutError):
            await client.post(target(server), HEADERS, b"500")
        server.delay = 0.0
        assert (await client.post(target(server), HEADERS, b"202")).status == 202
    finally:
        await client.close()
    assert [r.connection for r in server.requests] == [1, 2]


async def test_at_most_per_origin_connections_to_one_origin(server: Server) -> None:
    server.delay = 0.1
    client = make_client(per_origin=2)
    try:
        answers = await asyncio.gather(
            *(client.post(target(server, f"/push/{i}"), HEADERS, b"x") for i in range(7))
        )
    finally:
        await client.close()
    assert [a.status for a in answers] == [201] * 7
    assert server.connections == 2 and server.most_open == 2


async def test_a_cancelled_request_frees_its_place(server: Server) -> None:
    server.delay = 0.3
    client = make_client(per_origin=1)
    try:
        slow = asyncio.create_task(client.post(target(server), HEADERS, b"x"))
        while not server.requests:
            await asyncio.sleep(0.01)
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        server.delay = 0.0
        assert (await client.post(target(server), HEADERS, b"y")).status == 201
    finally:
        await client.close()
    assert [r.connection for r in server.requests] == [1, 2]


async def test_names_connect_only_to_addresses_the_guard_passed(server: Server) -> None:
    # localhost:PORT as a plain pattern passes the URL policy; the guard refuses its
    # loopback address, so no connection is made. Listed as http://localhost it is reached.
    url = f"https://localhost:{server.port}/push/a"
    refused = make_client([f"localhost:{server.port}"])
    try:
        with pytest.raises(AddressRefused, match="non-public"):
            await refused.post(check_endpoint(url, [f"localhost:{server.port}"]), HEADERS, b"x")
    finally:
        await refused.close()
    assert server.connections == 0
    listed = make_client(["http://localhost"])
    plain = f"http://localhost:{server.port}/push/a"
    try:
        answer = await listed.post(check_endpoint(plain, ["http://localhost"]), HEADERS, b"x")
    finally:
        await listed.close()
    assert answer.status == 201 and server.connections == 1
    assert f"Host: localhost:{server.port}" in server.requests[0].head.decode()


def test_the_client_runs_on_uvloop_as_serve_and_worker_do() -> None:
    # uvloop's transports are its own classes, not asyncio.Transport subclasses.
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> list[int]:
        state = Server()
        listening = await asyncio.start_server(state.handle, "127.0.0.1", 0)
        state.port = listening.sockets[0].getsockname()[1]
        client = make_client()
        try:
            return [(await client.post(target(state), HEADERS, b"x")).status for _ in range(2)]
        finally:
            await client.close()
            listening.close()

    assert uvloop.run(scenario()) == [201, 201]


async def test_a_name_that_does_not_resolve_is_a_connection_error() -> None:
    # ".invalid" never resolves (RFC 2606): a connection error to retry, not an internal one.
    hosts = ["http://nonexistent.invalid"]
    client = make_client(hosts)
    try:
        with pytest.raises(PushConnectionError, match=r"cannot resolve nonexistent\.invalid"):
            await client.post(check_endpoint("http://nonexistent.invalid/p", hosts), HEADERS, b"x")
    finally:
        await client.close()
