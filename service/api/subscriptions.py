"""GET /v1/vapid-public-key (what a browser subscribes with), POST /v1/subscriptions and
GET|PATCH|DELETE /v1/subscriptions/{id} (and its export)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field, ValidationError

from service import tokens
from service.api.common import (
    CONTEXT,
    bearer_token,
    is_admin,
    json_body_error,
    json_response,
    require_admin,
    require_json,
)
from service.api.models import (
    ProfilePatch,
    PushSubscriptionJSON,
    SubscriptionCreate,
    SubscriptionCreated,
    SubscriptionProfile,
)
from service.api.openapi import Op, Param, document
from service.errors import (
    EndpointRefused,
    EndpointRegistered,
    Forbidden,
    NotFound,
    Unauthorized,
    Unprocessable,
)
from service.store.subscriptions import (
    KEEP,
    ProfileChange,
    ProfileRow,
    Registration,
)
from service.webpush.encryption import encrypt
from service.webpush.endpoints import check_endpoint

routes = web.RouteTableDef()

_PROBE = b"momentcast key check"


async def read_body(request: web.Request, model: type[Any]) -> Any:
    """Validate the raw body against ``model``: 415, 400 (malformed JSON) or 422 (invalid)."""
    require_json(request)
    raw = await request.read()
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise json_body_error(exc) from None


def prove_keys_usable(keys_p256dh: str, keys_auth: str) -> None:
    """Encrypt a test message to the keys (RFC 8291), as a real push would be.

    Validation already proved the point is on the curve; this catches whatever else would make
    every later push fail, at the moment the client can still be told.
    """
    try:
        # The sender's own encryption, so what passes here is what pushes will use.
        encrypt(_PROBE, keys_p256dh, keys_auth)
    except Exception as exc:
        raise Unprocessable(
            "subscription.keys: the keys cannot encrypt a push message",
            details=[
                {
                    "field": "subscription.keys",
                    "message": str(exc) or type(exc).__name__,
                    "type": "unusable_keys",
                }
            ],
        ) from None


def _check_endpoint(request: web.Request, sub: PushSubscriptionJSON) -> None:
    try:
        check_endpoint(sub.endpoint, request.app[CONTEXT].settings.push_hosts)
    except EndpointRefused as exc:
        raise Unprocessable(
            f"subscription.endpoint: {exc.message}",
            details=[
                {
                    "field": "subscription.endpoint",
                    "message": exc.message,
                    "type": "endpoint_refused",
                }
            ],
        ) from None


def _profile(row: ProfileRow) -> dict[str, Any]:
    return SubscriptionProfile.model_validate(row, from_attributes=True).model_dump(mode="json")


def _presented_token(request: web.Request) -> str | None:
    """The bearer token of a registration, if it carries one. Registering needs none, so a
    missing or malformed header is no error here; it just proves nothing."""
    try:
        return bearer_token(request)
    except Unauthorized:
        return None


@dataclass
class Caller:
    admin: bool
    subscription_id: uuid.UUID | None


async def authenticate(request: web.Request) -> Caller:
    """The admin, or the subscription a device token belongs to; 401 for anything else."""
    token = bearer_token(request)
    if is_admin(request, token):
        return Caller(admin=True, subscription_id=None)
    # The lookup is by SHA-256 of the token: learning how much of a hash matched tells an
    # attacker nothing about a token. The final comparison is constant time regardless.
    digest = tokens.hash_token(token)
    found = await request.app[CONTEXT].store.device_token(token_hash=digest)
    if found is None or not tokens.tokens_equal(token, found.token_hash):
        raise Unauthorized("unknown device token", headers={"WWW-Authenticate": "Bearer"})
    return Caller(admin=False, subscription_id=found.subscription_id)


def _path_id(request: web.Request) -> uuid.UUID | None:
    try:
        return uuid.UUID(request.match_info["id"])
    except ValueError:
        return None


async def own_subscription(request: web.Request, *, admin_ok: bool = False) -> uuid.UUID:
    """The path's subscription id if the caller may act on it (401, 403, 404 otherwise)."""
    caller = await authenticate(request)
    wanted = _path_id(request)
    if caller.admin:
        if not admin_ok:
            raise Forbidden("the admin token does not open device endpoints; use the device token")
        if wanted is None:
            raise NotFound("no such subscription")
        return wanted
    # Another device's id, existing or not, is 403: a device learns nothing about other ids.
    if wanted is None or wanted != caller.subscription_id:
        raise Forbidden("this device token does not open that subscription")
    return wanted


@document(
    Op(
        "get",
        "/v1/vapid-public-key",
        "The VAPID public key for applicationServerKey",
        tags=["subscriptions"],
        database=False,
    )
)
@routes.get("/v1/vapid-public-key")
async def vapid_public_key(request: web.Request) -> web.Response:
    return json_response({"public_key": request.app[CONTEXT].keys.vapid_public_b64})


@document(
    Op(
        "post",
        "/v1/subscriptions",
        "Register a browser push subscription",
        request=SubscriptionCreate,
        response=SubscriptionCreated,
        status=201,
        tags=["subscriptions"],
        errors=[409],
        extra_responses={200: SubscriptionCreated},
    )
)
@routes.post("/v1/subscriptions")
async def create_subscription(request: web.Request) -> web.Response:
    body: SubscriptionCreate = await read_body(request, SubscriptionCreate)
    sub = body.subscription
    _check_endpoint(request, sub)
    prove_keys_usable(sub.keys.p256dh, sub.keys.auth)
    token = tokens.new_token()
    presented = _presented_token(request)
    registration = Registration(
        endpoint=sub.endpoint,
        p256dh=sub.keys.p256dh,
        auth=sub.keys.auth,
        token_hash=tokens.hash_token(token),
        timezone=body.timezone,
        locale=body.locale,
        topics=body.topics,
        attributes=body.attributes,
        location_consent=body.location_consent,
        presented_token_hash=None if presented is None else tokens.hash_token(presented),
    )
    registered = await request.app[CONTEXT].store.register(registration=registration)
    if registered is None:
        # Nothing tells the caller whose it is: no id, no token, nothing stored.
        raise EndpointRegistered(
            "this push endpoint is already registered; re-register it with the same "
            "subscription (keys.auth) or with the device token it was given "
            "(Authorization: Bearer <device token>)"
        )
    # 200 tells a re-registering browser it kept its id; its old token no longer works.
    status = 201 if registered.created else 200
    created = SubscriptionCreated(id=registered.id, token=token)
    return json_response(created.model_dump(mode="json"), status=status)


@document(
    Op(
        "get",
        "/v1/subscriptions/{id}",
        "This device's profile (never its keys)",
        response=SubscriptionProfile,
        auth="device",
        tags=["subscriptions"],
    )
)
@routes.get("/v1/subscriptions/{id}")
async def get_subscription(request: web.Request) -> web.Response:
    sub_id = await own_subscription(request)
    row = await request.app[CONTEXT].store.subscription_profile(subscription_id=sub_id)
    if row is None:  # erased between the token check and now
        raise NotFound("no such subscription")
    return json_response(_profile(row))


@document(
    Op(
        "patch",
        "/v1/subscriptions/{id}",
        "Change this device's profile",
        request=ProfilePatch,
        response=SubscriptionProfile,
        auth="device",
        tags=["subscriptions"],
    )
)
@routes.patch("/v1/subscriptions/{id}")
async def patch_subscription(request: web.Request) -> web.Response:
    sub_id = await own_subscription(request)
    patch: ProfilePatch = await read_body(request, ProfilePatch)
    given = patch.model_fields_set  # only the fields the body names change
    change = ProfileChange(
        timezone=patch.timezone if "timezone" in given else KEEP,
        locale=patch.locale if "locale" in given else KEEP,
        topics=patch.topics if "topics" in given else KEEP,
        attributes=patch.attributes if "attributes" in given else KEEP,
        paused=patch.paused if "paused" in given else KEEP,
        # null withdraws the consent, as false does
        location_consent=bool(patch.location_consent) if "location_consent" in given else KEEP,
    )
    row = await request.app[CONTEXT].store.change_profile(subscription_id=sub_id, change=change)
    if row is None:
        raise NotFound("no such subscription")
    return json_response(_profile(row))


@document(
    Op(
        "delete",
        "/v1/subscriptions/{id}",
        "Unsubscribe and erase: the subscription, its signals, presence and the "
        "personal fields of its deliveries",
        status=204,
        auth="device_or_admin",
        errors=[404],
        tags=["subscriptions"],
    )
)
@routes.delete("/v1/subscriptions/{id}")
async def delete_subscription(request: web.Request) -> web.Response:
    sub_id = await own_subscription(request, admin_ok=True)
    if not await request.app[CONTEXT].store.erase_subscription(subscription_id=sub_id):
        raise NotFound("no such subscription")
    return web.Response(status=204)


@document(
    Op(
        "get",
        "/v1/subscriptions/{id}/export",
        "Everything stored about one subscription, for a data-subject access request: the "
        "profile (never the keys), its signals within retention, presence, and its deliveries "
        "with payloads and events",
        auth="admin",
        errors=[404],
        tags=["subscriptions"],
    )
)
@routes.get("/v1/subscriptions/{id}/export")
async def export_subscription(request: web.Request) -> web.Response:
    require_admin(request)
    sub_id = _path_id(request)
    found = (
        None
        if sub_id is None
        else await request.app[CONTEXT].store.export_subscription(subscription_id=sub_id)
    )
    if found is None:
        raise NotFound("no such subscription")
    return json_response(
        {
            "profile": _profile(found.profile),
            "signals": found.signals,
            "presence": found.presence,
            "deliveries": found.deliveries,
            "shadow_sends": found.shadow_sends,
            "campaign_suppressions": found.campaign_suppressions,
            "fatigue": found.fatigue,
        }
    )


# ---- The dashboard's test recipients: GET /v1/subscriptions (admin).

RECENT_DEFAULT = 20
RECENT_MAX = 100
# The push services of the browsers, by the host of their endpoints; any other is "other" (a
# self-hosted push service's host could name its owner).
PUSH_SERVICES = {
    "fcm.googleapis.com": "Chrome (FCM)",
    "android.googleapis.com": "Chrome (FCM)",
    "updates.push.services.mozilla.com": "Firefox",
    "web.push.apple.com": "Safari",
}


def push_service(host: str) -> str:
    host = host.lower().rsplit("@", 1)[-1].split(":", 1)[0]
    if host.endswith(".notify.windows.com"):
        return "Edge (WNS)"
    return PUSH_SERVICES.get(host, "other")


class RecentSubscription(BaseModel):
    id: uuid.UUID
    created_at: str = Field(description="when it registered, RFC 3339")
    last_seen_at: str | None = Field(description="its newest signal's time, or null (none yet)")
    push_service: str = Field(
        description="the browser's push service: 'Chrome (FCM)', 'Firefox', 'Safari', "
        "'Edge (WNS)' or 'other' (never the endpoint)"
    )
    locale: str | None
    topics: list[str]
    location_consent: bool


class RecentSubscriptions(BaseModel):
    subscriptions: list[RecentSubscription]


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit", "").strip()
    if not raw:
        return RECENT_DEFAULT
    if raw.isascii() and raw.isdigit() and 1 <= int(raw) <= RECENT_MAX:
        return int(raw)
    message = f"must be a whole number from 1 to {RECENT_MAX}"
    raise Unprocessable(
        f"limit: {message}", details=[{"field": "limit", "message": message, "type": "limit"}]
    )


@document(
    Op(
        "get",
        "/v1/subscriptions",
        "The active, unpaused subscriptions seen or registered last, newest first (the "
        "dashboard's test recipients): never an endpoint, key, token or position",
        response=RecentSubscriptions,
        auth="admin",
        errors=[422],
        tags=["subscriptions"],
        query=[
            Param(
                "limit",
                f"how many, 1 to {RECENT_MAX} (default {RECENT_DEFAULT})",
                required=False,
            )
        ],
    )
)
@routes.get("/v1/subscriptions")
async def recent_subscriptions(request: web.Request) -> web.Response:
    require_admin(request)
    rows = await request.app[CONTEXT].store.recent_subscriptions(limit=_limit(request))
    listed = [
        {
            "id": str(r.id),
            "created_at": r.created_at.isoformat(),
            "last_seen_at": None if r.last_seen_at is None else r.last_seen_at.isoformat(),
            "push_service": push_service(r.push_host),
            "locale": r.locale,
            "topics": sorted(r.topics),
            "location_consent": r.location_consent,
        }
        for r in rows
    ]
    return json_response({"subscriptions": listed})
