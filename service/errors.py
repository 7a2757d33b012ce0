"""One exception hierarchy for the whole service (model: httpx ``_exceptions.py``).

Every error momentcast raises on purpose derives from :class:`MomentcastError`::

    MomentcastError
    ├── ConfigError              a setting is missing or invalid (start-up exits 2)
    ├── DatabaseError            PostgreSQL cannot be reached or set up
    │   └── MigrationError       a migration file is malformed or failed to apply
    ├── ComponentFailed          a component of a running process died (exit 1)
    ├── SupervisorGone           the parent of a ``serve --processes`` child died (exit 1)
    ├── IngestUnavailable        a signal batch was not committed (the API answers 503)
    ├── RulesError               rule files, places and traces
    │   ├── RuleLoadError        a rule set with errors; ``errors`` holds ``file:line: message``
    │   ├── SourceError          a YAML file that cannot be parsed at all (with its line)
    │   ├── PlaceError           a GeoJSON feature that cannot be used
    │   ├── TemplateError        a message template with an unknown or malformed field
    │   ├── TraceError           a replay trace that cannot be read
    │   └── CampaignInvalid      a campaign body that cannot be sent; ``errors`` holds
    │                            ``(field, message)`` pairs
    ├── PushError                sending to push services
    │   ├── EndpointRefused      an endpoint the SSRF policy refuses (a 422 at registration)
    │   ├── AddressRefused       a push host that resolves only to non-public addresses
    │   ├── PushConnectionError  a push request got no answer: cannot connect, cut, garbled
    │   │   └── PushTLSError     the TLS handshake failed (an untrusted certificate)
    │   └── PushPayloadTooLarge  a rendered payload over one 4096-byte record
    └── ApiError                 answered to an HTTP client as ``{"error": {...}}``
        ├── BadRequest              400 bad_request
        ├── Unauthorized            401 unauthorized
        ├── Forbidden               403 forbidden
        │   └── ConsentRequired     403 consent_required
        ├── NotFound                404 not_found
        ├── Conflict                409 conflict
        │   └── EndpointRegistered  409 endpoint_registered
        ├── RequestTooLarge         413 payload_too_large
        ├── UnsupportedMediaType    415 unsupported_media_type
        ├── Unprocessable           422 invalid
        ├── TooManyRequests         429 rate_limited
        └── ServiceUnavailable      503 unavailable
            └── DatabaseUnavailable 503 database_unavailable

Rule-file errors are also ``ValueError`` and the address refusal an ``OSError``, as the
libraries that raise through them (PyYAML, the event loop's connect path) expect.
"""

from __future__ import annotations

from typing import Any


class MomentcastError(Exception):
    """Base class of every error momentcast raises on purpose."""


class ConfigError(MomentcastError):
    """A setting is missing or invalid; start-up stops with this message."""


class DatabaseError(MomentcastError):
    """The database could not be reached or set up."""


class MigrationError(DatabaseError):
    """A migration file is malformed or failed to apply."""


class ComponentFailed(MomentcastError):
    """A component of ``serve``/``api``/``worker`` raised or returned before being stopped."""

    def __init__(self, component: str, reason: str) -> None:
        super().__init__(f"component {component} {reason}")
        self.component = component


class SupervisorGone(MomentcastError):
    """A child of ``serve --processes`` lost its parent (killed): it stops, unsupervised."""


class IngestUnavailable(MomentcastError):
    """The batch holding these rows was not committed; nothing of it is stored."""


class RulesError(MomentcastError, ValueError):
    """Rule files, places, templates and traces."""


class RuleLoadError(RulesError):
    """The rule set has errors; ``errors`` holds every ``file:line: message``."""

    def __init__(self, errors: list[str], warnings: list[str] | None = None) -> None:
        super().__init__(f"{len(errors)} error(s) in rules:\n" + "\n".join(errors))
        self.errors = errors
        self.warnings = warnings or []


class SourceError(RulesError):
    """A file that cannot be parsed at all; carries the line of the problem."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


class PlaceError(RulesError):
    """A feature that cannot be used; the message names the problem."""


class TemplateError(RulesError):
    """A message template with an unknown or malformed field."""


class TraceError(RulesError):
    """A replay trace that cannot be read."""


class CampaignInvalid(RulesError):
    """A campaign body with errors; ``errors`` holds ``(field, message)`` pairs."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = errors
        first = f"{errors[0][0]}: {errors[0][1]}" if errors else "invalid campaign"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(first + more)


class CampaignError(MomentcastError):
    """A campaign use case (service/campaigns/) refused; the API answers each with its HTTP
    status, the CLI prints the message. (A body with errors is :class:`CampaignInvalid`.)"""


class CampaignMalformed(CampaignError, ValueError):
    """A campaign body that is not JSON at all (400)."""


class CampaignExists(CampaignError):
    """A campaign with this id exists; campaigns are not changed once created (409)."""


class CampaignNotFound(CampaignError):
    """No campaign with this id (404)."""


class PushError(MomentcastError):
    """Sending to push services."""


class EndpointRefused(PushError, ValueError):
    """The endpoint is not one momentcast may send to; the message says why (for a 422)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class AddressRefused(PushError, OSError):
    """A push host resolved only to addresses we must not connect to."""


class PushConnectionError(PushError):
    """A push request got no answer: the connection could not be made, was cut before the
    answer, or the answer was not HTTP/1.1 (the request may or may not have arrived)."""


class PushTLSError(PushConnectionError):
    """The TLS handshake with a push service failed; ``cause`` is the ssl module's error."""

    def __init__(self, host: str, port: int, cause: BaseException) -> None:
        super().__init__(f"{host}:{port}: {cause}")
        self.host = host
        self.port = port
        self.cause = cause


class PushPayloadTooLarge(PushError, ValueError):
    """The rendered payload does not fit one record of a 4096-byte push message."""


class ApiError(MomentcastError):
    """An error answered to an HTTP client in the DESIGN.md error format."""

    status = 400
    code = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        details: list[Any] | None = None,
        status: int | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        self.headers = headers or {}


class BadRequest(ApiError):
    status = 400
    code = "bad_request"


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"


class Forbidden(ApiError):
    status = 403
    code = "forbidden"


class ConsentRequired(Forbidden):
    """A location from a subscription that has not consented to location use."""

    code = "consent_required"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class Conflict(ApiError):
    status = 409
    code = "conflict"


class EndpointRegistered(Conflict):
    """A registration of a push endpoint that is already registered, without the proof that
    the caller holds that subscription (its keys.auth or its device token)."""

    code = "endpoint_registered"


class RequestTooLarge(ApiError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(ApiError):
    status = 415
    code = "unsupported_media_type"


class Unprocessable(ApiError):
    status = 422
    code = "invalid"


class TooManyRequests(ApiError):
    status = 429
    code = "rate_limited"


class ServiceUnavailable(ApiError):
    status = 503
    code = "unavailable"


class DatabaseUnavailable(ServiceUnavailable):
    """The database did not answer (down, restarting, unreachable, a connection lost): the
    request may be retried after ``Retry-After``."""

    code = "database_unavailable"
