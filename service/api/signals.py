"""POST /v1/signals: validate, rate-limit, then wait for the group commit that stores them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

from aiohttp import web
from pydantic import ValidationError

from service import tokens
from service.api.common import (
    CONTEXT,
    bearer_token,
    is_admin,
    json_body_error,
    require_json,
)
from service.api.models import Accepted, SignalBatchBody, SignalBody, parse_signals
from service.api.openapi import Op, document
from service.errors import (
    ConsentRequired,
    DatabaseUnavailable,
    Forbidden,
    IngestUnavailable,
    TooManyRequests,
    Unauthorized,
)
from service.ingest import SignalWriter
from service.ratelimit import TokenBucketLimiter
from service.store.signals import SignalRequest, SignalRow

routes = web.RouteTableDef()

WRITER = web.AppKey("signal_writer", SignalWriter)
LIMITER = web.AppKey("signal_limiter", TokenBucketLimiter)


async def signal_ingest(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the writer lives exactly as long as the app serves requests."""
    ctx = app[CONTEXT]
    writer = SignalWriter(ctx.store, linger_s=ctx.settings.ingest_linger_ms / 1000)
    app[WRITER] = writer
    app[LIMITER] = TokenBucketLimiter(
        ctx.settings.signal_rate_burst, ctx.settings.signal_rate_per_second
    )
    await writer.start()
    yield
    # aiohttp runs this after in-flight requests finished (or the grace ran out).
    await writer.stop()


def _rows(body: SignalBody | SignalBatchBody) -> list[SignalRow]:
    # A signal without "at" is stored with the request's time of receipt (SignalRequest's).
    signals = body.signals if isinstance(body, SignalBatchBody) else [body]
    return [
        SignalRow(s.at, s.lat, s.lon, s.accuracy_m, s.speed_mps, s.moment, s.context, s.id)
        for s in signals
    ]


@document(
    Op(
        "post",
        "/v1/signals",
        "Send one signal or a batch of up to 500",
        request_models=(SignalBody, SignalBatchBody),
        response=Accepted,
        status=202,
        auth="device",
        errors=[403, 429, 503],
        tags=["signals"],
    )
)
@routes.post("/v1/signals")
async def post_signals(request: web.Request) -> web.Response:
    token = bearer_token(request)
    if is_admin(request, token):
        raise Forbidden("signals come from a device; the admin token has no subscription")
    digest = tokens.hash_token(token)
    wait = request.app[LIMITER].acquire(digest)
    if wait:
        raise TooManyRequests(
            "too many signal requests from this device; slow down",
            headers={"Retry-After": TokenBucketLimiter.retry_after(wait)},
        )
    require_json(request)
    try:
        body = parse_signals(await request.read())
    except ValidationError as exc:
        # The first location part is the union tag ("single"/"batch"), not a field.
        raise json_body_error(exc, skip=1) from None
    rows = _rows(body)
    try:
        # The token is checked inside the batch statement: one round trip for all requests.
        result = await request.app[WRITER].submit(
            SignalRequest(digest, rows, received_at=datetime.now(UTC))
        )
    except IngestUnavailable as exc:
        # The batch was not committed (the database is away, or refused the commit): the one
        # 503 of every route that needs the database, so a client handles a single code.
        raise DatabaseUnavailable(str(exc), headers={"Retry-After": "1"}) from None
    if not result.known:
        raise Unauthorized("unknown device token", headers={"WWW-Authenticate": "Bearer"})
    if result.consent_refused:
        raise ConsentRequired(
            "this subscription has not consented to location use: PATCH its location_consent "
            "to true once the user agreed, or send signals without lat/lon; nothing was stored"
        )
    return web.Response(
        body=b'{"accepted": %d, "duplicates": %d}' % (result.accepted, result.duplicates),
        status=202,
        content_type="application/json",
        charset="utf-8",
    )
