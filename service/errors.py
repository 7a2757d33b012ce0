"""One exception hierarchy for the whole service."""

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

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class BadRequest(ApiError):
    status = 400
    code = "bad_request"


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"


class Forbidden(ApiError):
    status = 403
    code = "forbidden"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class PayloadTooLarge(ApiError):
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
