"""The push sender's Prometheus metrics, and a cache of their labelled children."""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Histogram

from service.metrics import REGISTRY

PUSH_REQUESTS = Counter(
    "momentcast_push_requests_total",
    "Requests to push services by origin and HTTP status (or timeout/connection_error); "
    "an endpoint refused by the policy or the resolver is no request and is not counted",
    ["origin", "status"],
    registry=REGISTRY,
)
PUSH_OUTCOMES = Counter(
    "momentcast_push_deliveries_total",
    "Claimed deliveries by push-service origin and what became of them "
    "(sent, gone, failed, retry, expired, cancelled, refused, deferred, error)",
    ["origin", "outcome"],
    registry=REGISTRY,
)
PUSH_FAILURES = Counter(
    "momentcast_push_failures_total",
    "Failed push attempts by push-service origin and failure class (connection_error, "
    "timeout, server_error, rate_limited, auth_rejected, payload_too_large, client_error, "
    "redirect_refused, endpoint_refused, bad_subscription_keys, internal_error)",
    ["origin", "failure"],
    registry=REGISTRY,
)
PUSH_AUTH_REJECTED = Counter(
    "momentcast_push_auth_rejected_total",
    "ALARM: a push service answered 401/403, so our VAPID key or subject is not accepted",
    ["origin"],
    registry=REGISTRY,
)
PUSH_VAPID_SIGNATURES = Counter(
    "momentcast_push_vapid_signatures_total",
    "VAPID JWTs signed, by push-service origin (one per origin every few hours is normal)",
    ["origin"],
    registry=REGISTRY,
)
PUSH_LATENCY = Histogram(
    "momentcast_push_request_seconds",
    "Push service response time by origin",
    ["origin"],
    registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

# Label for rows whose endpoint fails the policy: their URL must not become a label value.
REFUSED_ORIGIN = "refused"
# Label for rows that never got as far as a push service (cancelled, or an internal error
# before the endpoint was checked).
NO_ORIGIN = "none"

_children: dict[tuple[object, ...], Any] = {}


def child(metric: Counter | Histogram, *labels: str) -> Any:
    """``metric.labels(*labels)``, memoised: labels() validates and locks on every call,
    which shows up at thousands of pushes per second."""
    key = (id(metric), *labels)
    found = _children.get(key)
    if found is None:
        found = _children[key] = metric.labels(*labels)
    return found
