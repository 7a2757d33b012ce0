"""Middlewares every route shares: JSON errors, metrics and a privacy-preserving access log."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_response import StreamResponse

from service.api.common import CONTEXT
from service.errors import ApiError, DatabaseUnavailable, RequestTooLarge
from service.metrics import HTTP_LATENCY, HTTP_REQUESTS
from service.settings import Settings
from service.store import DATABASE_ERRORS, database_unavailable

log = logging.getLogger("momentcast.api")

Handler = Callable[[web.Request], Awaitable[StreamResponse]]

# The error code of each status: errors.py's classes name the codes of the errors momentcast
# raises; these are the statuses only aiohttp (or the body timeout below) answers with.
_HTTP_CODES = {
    405: "method_not_allowed",
    406: "not_acceptable",
    408: "request_timeout",
    409: "conflict",
    411: "length_required",
    500: "internal_error",
} | {cls.status: cls.code for cls in ApiError.__subclasses__()}


def error_response(
    status: int,
    message: str,
    *,
    code: str | None = None,
    details: list[object] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body = {
        "error": {
            "code": code or _HTTP_CODES.get(status, "error"),
            "message": message,
            "details": details or [],
        }
    }
    return web.Response(
        status=status,
        text=json.dumps(body),
        content_type="application/json",
        headers=headers,
    )


# Seconds a client waits before retrying a request the database could not serve: about what
# a restart or a failover takes.
DATABASE_RETRY_AFTER = "5"


# One warning per this many seconds: during an outage every request fails the same way, and
# the access log already has a line for each.
_WARN_EVERY_S = 10.0
_last_warning = {"at": -_WARN_EVERY_S}


def _database_unavailable(request: web.Request, exc: Exception) -> DatabaseUnavailable:
    now = time.monotonic()
    if now - _last_warning["at"] >= _WARN_EVERY_S:
        _last_warning["at"] = now
        # The class (and SQLSTATE) only: a driver's message may quote stored values.
        sqlstate = getattr(exc, "sqlstate", None)
        log.warning(
            "database unavailable on %s %s: %s%s (answering 503; once per %gs)",
            request.method,
            route_name(request),
            type(exc).__name__,
            f" (SQLSTATE {sqlstate})" if sqlstate else "",
            _WARN_EVERY_S,
        )
    return DatabaseUnavailable(
        "the database is unavailable; retry after Retry-After seconds",
        headers={"Retry-After": DATABASE_RETRY_AFTER},
    )


# The route template of a request, kept for the access log. aiohttp answers some requests
# itself before routing them (a malformed request line or header: 400); those have no match
# info at all, and ``request.match_info`` asserts that it has one.
_ROUTE = web.RequestKey("momentcast_route", str)


def route_name(request: web.Request) -> str:
    """The route template, never the concrete path (paths carry subscription ids). Only for
    a routed request: the middlewares, which run after routing, name it here."""
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    request[_ROUTE] = route
    return route


# Without a context (a bare app in a unit test) bodies get the default timeout.
_DEFAULT_BODY_TIMEOUT = Settings.model_fields["body_read_timeout"].default.total_seconds()


async def _read_body_in_time(request: web.Request) -> None:
    """Read the whole body now, within BODY_READ_TIMEOUT, so a client trickling it byte by
    byte (slow-loris) cannot hold a connection and a handler for ever. aiohttp keeps the
    bytes, so the handler's own ``read()`` returns them without waiting again."""
    if not request.body_exists or request.content.is_eof():
        # Nothing to wait for: no body, or all of it arrived with the headers (nearly every
        # small request), so the handler's read() cannot block. This skips arming and
        # cancelling a timer per request, which was measurable at 10k requests/s.
        return
    ctx = request.app.get(CONTEXT)
    seconds = (
        ctx.settings.body_read_timeout.total_seconds() if ctx is not None else _DEFAULT_BODY_TIMEOUT
    )
    try:
        async with asyncio.timeout(seconds):
            await request.read()
    except TimeoutError:
        raise ApiError(
            f"request body not received within {seconds:g}s",
            status=408,
            code=_HTTP_CODES[408],
            headers={"Connection": "close"},
        ) from None


# The metric children by label values: ``labels()`` checks and joins its arguments under a
# lock on every call; a dict lookup is a third of that. As bounded as the registry's own
# children (one per method, route template and status seen).
_REQUESTS: dict[tuple[str, str, int], Any] = {}
_LATENCY: dict[str, Any] = {}


def _observe(method: str, route: str, status: int, seconds: float) -> None:
    counter = _REQUESTS.get((method, route, status))
    if counter is None:
        counter = _REQUESTS[(method, route, status)] = HTTP_REQUESTS.labels(
            method, route, str(status)
        )
    counter.inc()
    histogram = _LATENCY.get(route)
    if histogram is None:
        histogram = _LATENCY[route] = HTTP_LATENCY.labels(route)
    histogram.observe(seconds)


async def handle_errors(request: web.Request, handler: Handler) -> StreamResponse:
    """Every answer as JSON errors, counted and timed: the body of the error middleware, a
    plain coroutine so that the CORS middleware can wrap it without a second middleware
    layer (each layer costs aiohttp a call and a coroutine per request)."""
    started = time.perf_counter()
    try:
        limit = request.client_max_size
        if request.content_length is not None and request.content_length > limit:
            # Refuse before reading a byte of it.
            raise RequestTooLarge(f"request body too large (limit {limit} bytes)")
        await _read_body_in_time(request)
        response = await handler(request)
    except ApiError as exc:
        response = error_response(
            exc.status, exc.message, code=exc.code, details=exc.details, headers=exc.headers
        )
    except DATABASE_ERRORS as exc:
        # Every route that needs the database, in one place: an outage is a 503 to retry,
        # never a 500 with a traceback. A statement the server refused for what it is (a
        # constraint, a bad query) is a bug, and stays a 500 with its traceback.
        if database_unavailable(exc):
            err = _database_unavailable(request, exc)
            response = error_response(err.status, err.message, code=err.code, headers=err.headers)
        else:
            log.exception("unhandled error on %s %s", request.method, route_name(request))
            response = error_response(500, "internal server error")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = exc.reason
        if exc.status == 413:
            message = f"request body too large (limit {request.client_max_size} bytes)"
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        response = error_response(exc.status, message, headers=headers)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, route_name(request))
        response = error_response(500, "internal server error")
    _observe(request.method, route_name(request), response.status, time.perf_counter() - started)
    return response


error_middleware = web.middleware(handle_errors)


class AccessLogger(AbstractAccessLogger):
    """Method, route template, status and time: no query strings, bodies, ids or tokens."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        # Named by the middlewares; a request answered before routing never got there.
        route = request.get(_ROUTE, "unmatched")
        ms = round(time * 1000, 1)
        self.logger.info(
            "%s %s %s %.1fms",
            request.method,
            route,
            response.status,
            ms,
            extra={
                "method": request.method,
                "route": route,
                "status": response.status,
                "duration_ms": ms,
            },
        )
