"""The push sender's Prometheus metrics, and a cache of their labelled children."""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Histogram

from service.metrics import REGISTRY

PUSH_REQUESTS = Counter(
    "momentcast_push_requests_total",
    "Requests to push services by origin and HTTP status (or timeout/connection_error)",
    ["origin", "status"],
    registry=REGISTRY,
)
PUSH_OUTCOMES = Counter(
    "momentcast_push_deliveries_total",
    "Delivery attempts by push-service origin and outcome "
    "(sent, gone, failed, retry, expired, cancelled, refused, deferred)",
    ["origin", "outcome"],
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

_children: dict[tuple[object, ...], Any] = {}


def child(metric: Counter | Histogram, *labels: str) -> Any:
    """``metric.labels(*labels)``, memoised: labels() validates and locks on every call,
    which shows up at thousands of pushes per second."""
    key = (id(metric), *labels)
    found = _children.get(key)
    if found is None:
        found = _children[key] = metric.labels(*labels)
    return found
