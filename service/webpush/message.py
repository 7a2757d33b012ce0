"""The push message of one delivery: its Declarative Web Push payload and its RFC 8030 headers.

The payload is the JSON the browser shows (or hands to sw.js); the headers tell the push
service how long to keep it (TTL), how urgent it is and which older message it replaces
(Topic). Encryption and the VAPID Authorization value come from :mod:`.encryption` and
:mod:`.vapid`.
"""

from __future__ import annotations

import hashlib
import json
import math
from datetime import datetime
from typing import Any
from urllib.parse import quote

from service.vocabulary import PUSH_TOPIC, URGENCIES
from service.webpush.base64url import b64url

# Declarative Web Push (W3C Push API, "declarative push message"): a push whose JSON says
# ``"web_push": 8030`` is shown by the browser itself where it supports the format (Safari
# 18.4+) - no service worker has to run, and Safari drops the subscriptions of sites whose
# worker fails to show pushes. ``mutable`` lets our sw.js, where one runs, show it instead
# and report ``shown``.
DECLARATIVE_MAGIC = 8030
# The action of GET /c/{delivery_id}/{action} that stands for the notification itself; an
# action button may not take this name.
OPEN_ACTION = "open"
# Names of action buttons: letters, digits, "_" and "-" (a URL path segment without escaping).
ACTION_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
# Optional notification members copied from the stored message when it has them.
_OPTIONAL = ("tag", "icon", "image")
# What render_payload adds at most, for a rule's worst-case size (see rendered_size_bound).
BASE_URL_BUDGET = 246  # PUBLIC_URL; events_url is then at most 256 characters
_WORST_DATA: dict[str, Any] = {
    "delivery_id": 2**63 - 1,
    "events_url": "x" * (BASE_URL_BUDGET + len("/v1/events")),
    "event_token": "x" * 32,  # tokens.event_token: 24 bytes, base64url
}


def delivery_tag(delivery_id: int) -> str:
    """``mc-<delivery id>``: the notification tag of a push whose message sets none, and the
    Topic of one whose rule sets none. A push sent again (a sender killed before it recorded
    the outcome) then replaces the first one, at the push service and on the device."""
    return f"mc-{delivery_id}"


def click_url(base_url: str, delivery_id: int, action: str, token: str) -> str:
    """``{base}/c/{delivery_id}/{action}?t=<event token>``: records the click, then redirects."""
    return f"{base_url}/c/{delivery_id}/{quote(action, safe='')}?t={token}"


def declarative_message(
    payload: dict[str, Any], data: dict[str, Any], *, base_url: str
) -> dict[str, Any]:
    """The declarative push message of one delivery.

    ``payload`` is the stored message (``title``, ``body``, ``url``?, ``icon``?, ``image``?,
    ``tag``?, ``lang``?, ``actions``?: ``[{"action", "title", "url"}]``); ``data`` holds the
    per-delivery values (``delivery_id``, ``rule`` or ``campaign``, ``variant``,
    ``events_url``, ``event_token``). ``navigate`` and every action's ``navigate`` go through
    GET /c/... on ``base_url``, which counts the click where no service worker runs; the
    target URLs themselves stay with the delivery (only ``data.url`` travels, for sw.js).
    """
    delivery_id = data["delivery_id"]
    token = data["event_token"]
    notification: dict[str, Any] = {
        "title": payload.get("title") or "",
        "body": payload.get("body") or "",
        "navigate": click_url(base_url, delivery_id, OPEN_ACTION, token),
        "lang": payload.get("lang") or "",
    }
    for key in _OPTIONAL:
        value = payload.get(key)
        if value is not None:
            notification[key] = value
    if not notification.get("tag"):
        # One notification per delivery on the device, however often it was sent; the copy
        # replaces the first without a second alert.
        notification["tag"] = delivery_tag(delivery_id)
        notification["renotify"] = False
    actions = payload.get("actions")
    if actions:
        notification["actions"] = [
            {
                "action": a["action"],
                "title": a.get("title") or "",
                "navigate": click_url(base_url, delivery_id, a["action"], token),
            }
            for a in actions
        ]
    stored = payload.get("data")
    extra = stored if isinstance(stored, dict) else {}
    notification["data"] = {**extra, **data, "url": payload.get("url")}
    return {"web_push": DECLARATIVE_MAGIC, "notification": notification, "mutable": True}


def render_payload(payload: dict[str, Any], data: dict[str, Any], *, base_url: str) -> bytes:
    """The plaintext of one push: :func:`declarative_message` as compact UTF-8 JSON.

    The size limit (MAX_PLAINTEXT) is :func:`service.webpush.encryption.encrypt`'s: it raises
    PushPayloadTooLarge.
    """
    message = declarative_message(payload, data, base_url=base_url)
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def rendered_size_bound(payload: dict[str, Any], *, rule: str, variant: str) -> int:
    """An upper bound of ``len(render_payload(payload, ...))`` over every delivery id, event
    token and PUBLIC_URL of up to BASE_URL_BUDGET characters: what a rule's worst-case
    check adds to its rendered texts (pass them as they render at their longest)."""
    data = {**_WORST_DATA, "rule": rule, "variant": variant}
    return len(render_payload(payload, data, base_url="x" * BASE_URL_BUDGET))


def topic_header(topic: str | None) -> str | None:
    """A valid RFC 8030 Topic derived from the rule's topic (None when it has none).

    Topics that already fit (<= 32 URL-safe characters) pass unchanged so they stay readable
    in push-service dashboards; others are hashed so the mapping stays deterministic and a
    newer message with the same rule topic still replaces an undelivered older one.
    """
    if not topic:
        return None
    if PUSH_TOPIC.match(topic):
        return topic
    return b64url(hashlib.sha256(topic.encode("utf-8")).digest())[:32]


def ttl_seconds(expires_at: datetime, now: datetime) -> int:
    """Whole seconds left; rounding down so the push service never keeps a message too long.

    0 means the delivery has expired and must not be sent (a TTL of 0 would ask the push
    service to try once and drop it, which is not what the rule asked for).
    """
    remaining = (expires_at - now).total_seconds()
    return max(0, math.floor(remaining))


def build_headers(
    *, authorization: str, ttl: int, urgency: str = "normal", topic: str | None = None
) -> dict[str, str]:
    """Request headers of one push message."""
    if ttl < 1:
        raise ValueError("ttl must be at least 1 second; expired deliveries are not sent")
    if urgency not in URGENCIES:
        raise ValueError(f"urgency must be one of {list(URGENCIES)}")
    headers = {
        "TTL": str(ttl),
        "Urgency": urgency,
        "Content-Encoding": "aes128gcm",
        "Content-Type": "application/octet-stream",
        "Authorization": authorization,
    }
    topic_value = topic_header(topic)
    if topic_value is not None:
        headers["Topic"] = topic_value
    return headers
