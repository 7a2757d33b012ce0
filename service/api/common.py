"""Helpers the route modules share: the app context key, JSON in and out, authentication."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from service.context import Context
from service.errors import BadRequest, Unauthorized, Unprocessable, UnsupportedMediaType

CONTEXT = web.AppKey("context", Context)

M = TypeVar("M", bound=BaseModel)


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        text=json.dumps(data, default=str),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def validation_details(
    exc: ValidationError, prefix: tuple[str | int, ...] = (), skip: int = 0
) -> list[dict[str, Any]]:
    """Pydantic errors as ``{"field": "signals.3.lat", "message": ...}`` entries.

    ``skip`` drops leading location parts that are no field (a union's tag).
    """
    details = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = [*prefix, *err["loc"][skip:]]
        # A check across fields (a model validator) names the field it found missing.
        field = (err.get("ctx") or {}).get("field")
        if isinstance(field, str):
            loc.append(field)
        details.append(
            {
                "field": ".".join(str(p) for p in loc) or "(body)",
                "message": err["msg"].removeprefix("Value error, "),
                "type": err["type"],
            }
        )
    return details


def invalid(
    exc: ValidationError, prefix: tuple[str | int, ...] = (), skip: int = 0
) -> Unprocessable:
    details = validation_details(exc, prefix, skip)
    first = details[0]
    more = f" (and {len(details) - 1} more)" if len(details) > 1 else ""
    return Unprocessable(f"{first['field']}: {first['message']}{more}", details=details)


JSON_ONLY = ("application/json",)


def require_json(request: web.Request, accepted: tuple[str, ...] = JSON_ONLY) -> None:
    """415 unless the body is declared as one of ``accepted`` (JSON unless said otherwise)."""
    if request.content_type not in accepted:
        also = f" (or {', '.join(accepted[1:])})" if len(accepted) > 1 else ""
        raise UnsupportedMediaType(
            f"expected Content-Type: {accepted[0]}{also}, got {request.content_type or 'none'}"
        )


def json_body_error(exc: ValidationError, skip: int = 0) -> BadRequest | Unprocessable:
    """A body validated straight from JSON bytes: 400 if it was no JSON, else 422."""
    errors = exc.errors(include_url=False, include_input=False)
    if errors and errors[0]["type"] == "json_invalid":
        return BadRequest(f"malformed JSON: {errors[0]['msg'].removeprefix('Invalid JSON: ')}")
    return invalid(exc, skip=skip)


async def read_json(request: web.Request, accepted: tuple[str, ...] = JSON_ONLY) -> Any:
    """The body as JSON: 415 for another content type, 400 for malformed JSON."""
    require_json(request, accepted)
    raw = await request.read()
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None


async def read_model(
    request: web.Request, model: type[M], accepted: tuple[str, ...] = JSON_ONLY
) -> M:
    data = await read_json(request, accepted)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid(exc) from None


def bearer_token(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        raise Unauthorized(
            "missing Authorization: Bearer token", headers={"WWW-Authenticate": "Bearer"}
        )
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized(
            "malformed Authorization header; expected 'Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return token.strip()


def is_admin(request: web.Request, token: str) -> bool:
    return request.app[CONTEXT].keys.admin.check(token)


def require_admin(request: web.Request) -> None:
    if not is_admin(request, bearer_token(request)):
        raise Unauthorized("invalid admin token", headers={"WWW-Authenticate": "Bearer"})
