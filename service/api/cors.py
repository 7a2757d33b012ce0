"""CORS for browser clients: allowed origins come from the CORS_ORIGINS setting.

The CORS middleware wraps the error handling (``handle_errors``), so error answers carry the
CORS headers too; without them a page could not read why its request failed. It calls that
handling directly rather than through a second middleware, one layer per request fewer.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.web_response import StreamResponse

from service.api.common import CONTEXT
from service.api.middleware import Handler, error_response, handle_errors, route_name

ALLOW_METHODS = "GET, POST, PATCH, DELETE, OPTIONS"
ALLOW_HEADERS = "Authorization, Content-Type"
EXPOSE_HEADERS = "Retry-After, WWW-Authenticate"
MAX_AGE_S = "600"


def origin_allowed(origin: str, allowed: list[str]) -> bool:
    return "*" in allowed or origin in allowed


@web.middleware
async def cors_middleware(request: web.Request, handler: Handler) -> StreamResponse:
    origin = request.headers.get("Origin")
    if origin is None:
        # Not a browser's cross-origin call (devices, servers, same-origin pages): no CORS.
        return await handle_errors(request, handler)
    allowed = origin_allowed(origin, request.app[CONTEXT].settings.cors_origins)
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        route_name(request)  # for the access log: a preflight skips handle_errors
        if not allowed:
            return error_response(403, f"origin {origin} is not allowed (CORS_ORIGINS)")
        # Bearer tokens, not cookies: credentials mode is never needed.
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Methods": ALLOW_METHODS,
                "Access-Control-Allow-Headers": ALLOW_HEADERS,
                "Access-Control-Max-Age": MAX_AGE_S,
                "Vary": "Origin",
            },
        )
    response = await handle_errors(request, handler)
    if allowed:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
        response.headers.add("Vary", "Origin")
    return response
