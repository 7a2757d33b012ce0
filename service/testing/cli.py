"""``momentcast testing push-service``: the strict test push service as a local push sink.

Client developers point momentcast at it instead of a browser vendor's push service: it
makes browser-like subscriptions (``POST /subscriptions``), checks each push as a real push
service does (RFC 8030 headers, the RFC 8292 VAPID token, the size limit), decrypts it with the
subscription's private key (RFC 8291) and logs its title, or why it refused it. It runs until
Ctrl-C (SIGINT) or SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from typing import Any, TextIO

from service.errors import ConfigError
from service.testing.pushservice import BrowserSubscription, PushService, Received
from service.webpush.base64url import b64url_decode

log = logging.getLogger(__name__)


def check_public_key(key: str) -> str:
    """A VAPID public key as momentcast prints it: a base64url, uncompressed P-256 point."""
    try:
        raw = b64url_decode(key)
    except ValueError:
        raw = b""
    if len(raw) != 65 or raw[0] != 4:
        raise ConfigError(
            "--vapid-public-key must be a base64url P-256 public key (65 bytes), "
            "as `momentcast vapid` or GET /v1/vapid-public-key prints it"
        )
    return key


def title_of(message: Any) -> str | None:
    """The notification title of a decrypted push: Declarative Web Push or a flat message."""
    if not isinstance(message, dict):
        return None
    notification = message.get("notification")
    if isinstance(notification, dict) and isinstance(notification.get("title"), str):
        return str(notification["title"])
    title = message.get("title")
    return title if isinstance(title, str) else None


def _on_receive(sub: BrowserSubscription, received: Received) -> None:
    # The title only: bodies, URLs and the per-delivery data may be personal.
    try:
        title = title_of(received.json())
    except ValueError:
        title = None
    headers = received.headers
    log.info(
        "push to subscription %s: %s (urgency %s, TTL %s s%s, %d bytes)",
        sub.id,
        repr(title) if title is not None else "no title (not a notification message)",
        headers.get("Urgency", "normal"),
        headers.get("TTL"),
        f", topic {headers['Topic']}" if "Topic" in headers else "",
        len(received.plaintext),
    )


def _on_reject(sub: BrowserSubscription | None, status: int, reason: str) -> None:
    log.warning(
        "refused a push to %s with %d: %s",
        f"subscription {sub.id}" if sub is not None else "an unknown subscription",
        status,
        reason,
    )


async def run(
    host: str,
    port: int,
    vapid_public_key: str | None,
    *,
    out: TextIO = sys.stdout,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM (or ``stop``)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    service = PushService(
        vapid_public_key, host=host, port=port, on_receive=_on_receive, on_reject=_on_reject
    )
    try:
        try:
            await service.start()
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        origin = service.origin
        print(f"test push service listening on {origin}", file=out)
        print(
            f"new subscription: POST {origin}/subscriptions answers a PushSubscriptionJSON "
            "to register with momentcast's POST /v1/subscriptions",
            file=out,
        )
        print(f"momentcast sends here when MOMENTCAST_PUSH_HOSTS lists {origin}", file=out)
        if vapid_public_key:
            print(f"VAPID: only pushes signed with {vapid_public_key} are accepted", file=out)
        else:
            print(
                "VAPID: any correctly signed key is accepted "
                "(--vapid-public-key requires momentcast's)",
                file=out,
            )
        print("Ctrl-C stops it.", file=out, flush=True)
        await stop.wait()
    finally:
        await service.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
    log.info("test push service stopped after %d pushes", len(service.all_received()))


def main(host: str, port: int, vapid_public_key: str | None) -> int:
    key = check_public_key(vapid_public_key) if vapid_public_key else None
    asyncio.run(run(host, port, key))
    return 0
