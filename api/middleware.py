"""Request id, error envelope, metrics and API-key auth: the cross-cutting parts of every request."""

import asyncio
import time
import uuid

import structlog
from aiohttp import web

from api.context import context
from api.metrics import REQUEST_SECONDS, REQUESTS
from pixq.errors import ErrorCode, PixqError

log = structlog.get_logger("pixq.api")

class InFlight:
    """Counts requests being handled, so a SIGTERM can wait for them (api.main)."""

    def __init__(self) -> None:
        self.count = 0
        self.idle = asyncio.Event()
        self.idle.set()

    def enter(self) -> None:
        self.count += 1
        self.idle.clear()

    def leave(self) -> None:
        self.count -= 1
        if self.count == 0:
            self.idle.set()


IN_FLIGHT = web.AppKey("in_flight", InFlight)
REQUEST_ID = web.RequestKey("request_id", str)
API_KEY_NAME = web.RequestKey("api_key_name", str)

_HTTP_CODES = {400: ErrorCode.INVALID_REQUEST, 401: ErrorCode.UNAUTHORIZED, 403: ErrorCode.FORBIDDEN,
               404: ErrorCode.NOT_FOUND, 405: ErrorCode.METHOD_NOT_ALLOWED,
               413: ErrorCode.PAYLOAD_TOO_LARGE, 415: ErrorCode.UNSUPPORTED_MEDIA_TYPE}


def error_response(error: PixqError, request_id: str) -> web.Response:
    response = web.json_response(error.to_body(), status=error.http_status)
    response.headers["X-Request-ID"] = request_id
    return response


def _route_name(request: web.Request) -> str:
    """Route template (not the raw path) as the metrics label, so job ids do not explode cardinality."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def observe(request: web.Request, handler) -> web.StreamResponse:
    """Outermost: assigns the request id, renders every error in the one envelope, counts requests."""
    request_id = request.headers.get("X-Request-ID", "")[:128] or uuid.uuid4().hex
    request[REQUEST_ID] = request_id
    structlog.contextvars.bind_contextvars(request_id=request_id)
    started = time.perf_counter()
    in_flight = request.app[IN_FLIGHT]
    in_flight.enter()
    try:
        response = await handler(request)
        response.headers["X-Request-ID"] = request_id
    except PixqError as exc:
        response = error_response(exc, request_id)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, ErrorCode.INVALID_REQUEST)
        response = error_response(PixqError(code, exc.reason or code.value), request_id)
    except Exception:
        log.exception("unhandled_error", path=request.path)
        response = error_response(PixqError(ErrorCode.INTERNAL_ERROR, "internal error"), request_id)
    finally:
        in_flight.leave()
        structlog.contextvars.unbind_contextvars("request_id")
    route = _route_name(request)
    REQUESTS.labels(request.method, route, str(response.status)).inc()
    REQUEST_SECONDS.labels(request.method, route).observe(time.perf_counter() - started)
    return response


def _bearer(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


@web.middleware
async def authenticate(request: web.Request, handler) -> web.StreamResponse:
    """API_KEYS guards /api/v1; ADMIN_API_KEYS guards the admin routes (the DLQ). Unset means open."""
    settings = context(request).settings
    path = request.path
    if not path.startswith("/api/v1"):
        return await handler(request)
    token = _bearer(request)
    if path.startswith("/api/v1/dlq"):
        if settings.admin_api_keys:
            if not token:
                raise PixqError(ErrorCode.UNAUTHORIZED, "admin routes need Authorization: Bearer <admin key>")
            if token not in settings.admin_api_keys:
                raise PixqError(ErrorCode.FORBIDDEN, "this key is not an admin key")
            request[API_KEY_NAME] = settings.admin_api_keys[token]
        return await handler(request)
    if settings.api_keys:
        if token in settings.api_keys:
            request[API_KEY_NAME] = settings.api_keys[token]
        elif token in settings.admin_api_keys:
            request[API_KEY_NAME] = settings.admin_api_keys[token]
        else:
            raise PixqError(ErrorCode.UNAUTHORIZED, "missing or unknown API key (Authorization: Bearer <key>)")
    return await handler(request)
