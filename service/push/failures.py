"""Failed pushes as an operator sees them: one log line per push-service origin and failure
class a minute, with the count since the previous line; the metric counts every one.

A push service on a bad day fails thousands of pushes a second the same way; one line a
minute per (origin, class) says which service, what kind of failure and how many, without
drowning the log. Lines name the origin (``scheme://host[:port]``), never an endpoint's path:
that is each subscriber's capability URL.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from service.push.metrics import NO_ORIGIN, PUSH_FAILURES, REFUSED_ORIGIN, child

# One line per (origin, failure class) per this many seconds.
LOG_INTERVAL = 60.0


class Failure(enum.StrEnum):
    """The failure classes: the ``failure`` label of the metric, ``[class]`` in log lines."""

    CONNECTION = "connection_error"
    TLS = "tls_error"  # the TLS handshake failed: an untrusted or mismatched certificate
    TIMEOUT = "timeout"
    SERVER_ERROR = "server_error"  # 5xx
    RATE_LIMITED = "rate_limited"  # 429
    AUTH_REJECTED = "auth_rejected"  # 401/403: our VAPID credentials (the ALARM)
    PAYLOAD_TOO_LARGE = "payload_too_large"  # 413, or too large to encrypt
    CLIENT_ERROR = "client_error"  # 400 and the other 4xx
    REDIRECT = "redirect_refused"  # 3xx, never followed
    REFUSED = "endpoint_refused"  # PUSH_HOSTS policy or resolver: no request made
    BAD_KEYS = "bad_subscription_keys"
    INTERNAL = "internal_error"  # a bug in the sender; the delivery is retried


# What each class says about the push service (after its origin), how loud it is (ERROR for
# what needs our fix: credentials, payloads, requests, bugs; WARNING for the weather), and
# what to do about it, where that is not obvious.
_WORDING: dict[Failure, tuple[int, str, str]] = {
    Failure.CONNECTION: (logging.WARNING, "cannot be reached", ""),
    Failure.TLS: (
        logging.WARNING,
        "failed TLS verification",
        "Public push services have publicly trusted certificates; a test or staging push "
        "service on a private CA needs MOMENTCAST_PUSH_CA_FILE.",
    ),
    Failure.TIMEOUT: (logging.WARNING, "timed out", ""),
    Failure.SERVER_ERROR: (logging.WARNING, "answered a server error", ""),
    Failure.RATE_LIMITED: (logging.WARNING, "throttles us", ""),
    Failure.AUTH_REJECTED: (
        logging.ERROR,
        "rejected our VAPID credentials",
        "Check MOMENTCAST_VAPID_PRIVATE_KEY (subscriptions are bound to the key they were made "
        "with) and MOMENTCAST_VAPID_SUBJECT. Subscribers are kept.",
    ),
    Failure.PAYLOAD_TOO_LARGE: (logging.ERROR, "refused a payload as too large", ""),
    Failure.CLIENT_ERROR: (logging.ERROR, "refused a request as malformed", ""),
    Failure.REDIRECT: (logging.WARNING, "answered a redirect, which is not followed", ""),
    Failure.REFUSED: (logging.WARNING, "is refused by MOMENTCAST_PUSH_HOSTS or the resolver", ""),
    Failure.BAD_KEYS: (logging.WARNING, "has a subscription whose keys are unusable", ""),
    Failure.INTERNAL: (
        logging.ERROR,
        "hit an internal error of the sender",
        "The delivery is retried; this is a bug, please report it.",
    ),
}


@dataclass
class _Tally:
    logged_at: float
    unlogged: int = 0
    detail: str = ""


class FailureLog:
    """Counts every failure in ``momentcast_push_failures_total`` and logs one line per origin
    and class every ``interval`` seconds; a later line carries the count since the last one."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval: float = LOG_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self.interval = interval
        self._clock = clock
        self._tallies: dict[tuple[str, Failure], _Tally] = {}

    def note(
        self,
        origin: str,
        failure: Failure,
        detail: str,
        *,
        exc_info: BaseException | None = None,
    ) -> None:
        child(PUSH_FAILURES, origin, failure.value).inc()
        now = self._clock()
        key = (origin, failure)
        tally = self._tallies.get(key)
        if tally is not None and now - tally.logged_at < self.interval:
            tally.unlogged += 1
            tally.detail = detail
            return
        self._tallies[key] = _Tally(now)
        if tally is None:
            self._write(origin, failure, detail, None, 0.0, exc_info)
        else:
            self._write(
                origin, failure, detail, tally.unlogged + 1, now - tally.logged_at, exc_info
            )

    def flush(self) -> None:
        """Log what was counted but not logged yet (a stopping sender's last word)."""
        now = self._clock()
        for (origin, failure), tally in self._tallies.items():
            if tally.unlogged:
                self._write(origin, failure, tally.detail, tally.unlogged, now - tally.logged_at)
                tally.logged_at, tally.unlogged = now, 0

    def _write(
        self,
        origin: str,
        failure: Failure,
        detail: str,
        count: int | None,
        since: float,
        exc_info: BaseException | None = None,
    ) -> None:
        level, wording, advice = _WORDING[failure]
        if count is None:
            tail = "first; at most one line a minute for this origin and class"
        else:
            tail = f"{count} since the last line {since:.0f} s ago"
        if origin == REFUSED_ORIGIN:
            subject = "an endpoint"
        elif origin == NO_ORIGIN:
            subject = "a delivery"
        else:
            subject = f"push service {origin}"
        self._log.log(
            level,
            "%s%s %s [%s]: %s (%s)%s",
            "ALARM: " if failure is Failure.AUTH_REJECTED else "sender: ",
            subject,
            wording,
            failure.value,
            detail,
            tail,
            f" {advice}" if advice else "",
            exc_info=exc_info,
            extra={"origin": origin, "failure": failure.value, "count": count or 1},
        )
