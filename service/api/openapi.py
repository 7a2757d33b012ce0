"""OpenAPI 3.1 document built from the pydantic models the handlers validate with."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

F = TypeVar("F")

_OPERATIONS: list[Op] = []

_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "details"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "details": {"type": "array"},
            },
        }
    },
}

_STATUS_TEXT = {
    400: "Malformed request",
    401: "Missing or invalid token",
    403: "Token does not open this",
    404: "Not found",
    413: "Body too large",
    415: "Wrong content type",
    422: "Invalid request",
    429: "Too many requests",
    503: "Temporarily unavailable (database_unavailable: the database is down; retry after "
    "Retry-After)",
}


@dataclass(frozen=True)
class Param:
    """A query parameter (a string), required unless said otherwise."""

    name: str
    description: str
    required: bool = True


@dataclass
class Op:
    method: str
    path: str
    summary: str
    request: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    auth: str | None = None  # None, "device", "admin" or "device_or_admin"
    errors: list[int] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    content_type: str = "application/json"
    request_schema: dict[str, Any] | None = None
    # Several accepted body shapes (``oneOf``), each a model that validates it.
    request_models: tuple[type[BaseModel], ...] = ()
    # Other success answers than ``status`` (e.g. 200 for an update of an existing resource).
    extra_responses: dict[int, type[BaseModel]] = field(default_factory=dict)
    # Required query parameters, and other success answers that are pages (status -> type).
    query: list[Param] = field(default_factory=list)
    pages: dict[int, str] = field(default_factory=dict)
    # Whether the route needs the database: then it documents 503 database_unavailable (the
    # answer of every such route while the database is down). True unless said otherwise,
    # so that a new route cannot leave it out.
    database: bool = True


def document(op: Op) -> Callable[[F], F]:
    """Register ``op`` for /openapi.json; the decorated handler is returned unchanged."""
    _OPERATIONS.append(op)

    def wrap(handler: F) -> F:
        return handler

    return wrap


# The JSON schema of a model, as a reference into components/schemas.
_Ref = Callable[[type[BaseModel]], dict[str, Any]]


def build_spec(version: str) -> dict[str, Any]:
    """The OpenAPI document of every registered operation."""
    components, ref = _component_schemas(_OPERATIONS)
    paths: dict[str, dict[str, Any]] = {}
    for op in sorted(_OPERATIONS, key=lambda o: (o.path, o.method)):
        paths.setdefault(op.path, {})[op.method] = _operation(op, ref)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "momentcast",
            "version": version,
            "description": "Location- and context-aware Web Push for micro-moments.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _component_schemas(ops: list[Op]) -> tuple[dict[str, Any], _Ref]:
    """The schemas of every model the operations name, and how to refer to one."""
    models: set[type[BaseModel]] = set()
    for op in ops:
        models.update(m for m in (op.request, op.response) if m is not None)
        models.update(op.request_models)
        models.update(op.extra_responses.values())
    ordered = sorted(models, key=lambda m: m.__name__)
    keyed, schema = models_json_schema(
        [(m, "validation") for m in ordered], ref_template="#/components/schemas/{model}"
    )
    components: dict[str, Any] = dict(schema.get("$defs", {}))
    components["Error"] = _ERROR_SCHEMA

    def ref(model: type[BaseModel]) -> dict[str, Any]:
        return keyed[(model, "validation")]

    return components, ref


def _operation(op: Op, ref: _Ref) -> dict[str, Any]:
    """The OpenAPI operation object of one route."""
    operation: dict[str, Any] = {
        "summary": op.summary,
        "operationId": op.method + "_" + re.sub(r"[^a-z0-9]+", "_", op.path.lower()).strip("_"),
        "tags": op.tags,
    }
    params = _parameters(op)
    if params:
        operation["parameters"] = params
    has_body = op.request is not None or op.request_schema is not None or bool(op.request_models)
    if has_body:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _body_schema(op, ref)}},
        }
    operation["responses"] = _responses(op, ref, has_body)
    if op.auth:
        operation["security"] = [{"bearer": []}]
    return operation


def _parameters(op: Op) -> list[dict[str, Any]]:
    """The path parameters, then the query parameters, of one route."""
    params = [
        {"name": part[1:-1], "in": "path", "required": True, "schema": {"type": "string"}}
        for part in op.path.split("/")
        if part.startswith("{")
    ]
    params += [
        {
            "name": p.name,
            "in": "query",
            "required": p.required,
            "description": p.description,
            "schema": {"type": "string"},
        }
        for p in op.query
    ]
    return params


def _body_schema(op: Op, ref: _Ref) -> dict[str, Any]:
    """The schema of the request body of a route that takes one."""
    if op.request_models:
        return {"oneOf": [ref(m) for m in op.request_models]}
    if op.request_schema is not None:
        return op.request_schema
    return ref(op.request)  # type: ignore[arg-type]


def _responses(op: Op, ref: _Ref, has_body: bool) -> dict[str, Any]:
    """The success answers, then the error answers, of one route."""
    ok: dict[str, Any] = {"description": "OK"}
    if op.status in (301, 302, 303, 307, 308):
        location = {"schema": {"type": "string", "format": "uri"}}
        ok = {"description": "Redirect", "headers": {"Location": location}}
    elif op.status != 204:
        schema_ = ref(op.response) if op.response is not None else {}
        ok["content"] = {op.content_type: {"schema": schema_}}
    responses: dict[str, Any] = {str(op.status): ok}
    for status, model in op.extra_responses.items():
        responses[str(status)] = {
            "description": "OK",
            "content": {"application/json": {"schema": ref(model)}},
        }
    for status, content_type in op.pages.items():
        responses[str(status)] = {
            "description": "OK",
            "content": {content_type: {"schema": {"type": "string"}}},
        }
    for status in sorted(_error_statuses(op, has_body)):
        responses[str(status)] = {
            "description": _STATUS_TEXT.get(status, "Error"),
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
    return responses


def _error_statuses(op: Op, has_body: bool) -> set[int]:
    """The error statuses a route can answer with."""
    errors = set(op.errors)
    if has_body:
        errors |= {400, 413, 415, 422}
    if op.auth:
        errors |= {401}
    if op.auth in ("device", "device_or_admin"):
        errors |= {403}
    if op.database:
        errors |= {503}
    return errors
