"""Prometheus metrics, one registry for the process, served at /metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

HTTP_REQUESTS = Counter(
    "momentcast_http_requests_total",
    "HTTP requests answered, by route and status",
    ["method", "route", "status"],
    registry=REGISTRY,
)
HTTP_LATENCY = Histogram(
    "momentcast_http_request_seconds",
    "HTTP request latency by route",
    ["route"],
    registry=REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
RULES_LOADED = Gauge("momentcast_rules_loaded", "Rules in the active rule set", registry=REGISTRY)
RULES_LOAD_ERRORS = Counter(
    "momentcast_rules_load_errors_total",
    "Rule reloads rejected because the new set had errors",
    registry=REGISTRY,
)
EVENTS_REJECTED = Counter(
    "momentcast_events_rejected_total",
    "Engagement events refused because their event token does not match its delivery "
    "(all of them: MOMENTCAST_SECRET_KEY differs between the API and the sender)",
    registry=REGISTRY,
)
DATABASE_ERRORS_TOTAL = Counter(
    "momentcast_database_errors_total",
    "Database errors a background component lived through (a lost or half-open connection, "
    "a timeout, an outage) before backing off and retrying, by component",
    ["component"],
    registry=REGISTRY,
)
SIGNALS_STALE = Counter(
    "momentcast_signals_stale_total",
    "Signals older than the policy's stale_after when the worker took them in: they updated "
    "presence and triggered nothing (a lagging queue, or clients sending old positions)",
    registry=REGISTRY,
)
SIGNALS_DUPLICATE = Counter(
    "momentcast_signals_duplicate_total",
    "Signals not stored because their client-chosen id was already stored (retries)",
    registry=REGISTRY,
)
# The health of sending (GET /v1/stats' health): set by the maintenance pass every
# HEALTH_INTERVAL_S (service/maintenance.py), not on scrape, so a scrape never runs the query.
INTERACTION_RATE = Gauge(
    "momentcast_interaction_rate",
    "Pushes with an interaction (clicked or converted) per push sent over the last 7 days, "
    "from 0 to 1 (0 when none was sent); browsers revoke the permission of senders whose "
    "pushes nobody opens",
    registry=REGISTRY,
)
INTERACTION_SENT = Gauge(
    "momentcast_interaction_sent_pushes",
    "Pushes sent over the last 7 days (rules' and campaigns', test pushes aside): the "
    "denominator of momentcast_interaction_rate",
    registry=REGISTRY,
)
