"""Request id, error envelope, metrics and API-key auth: the cross-cutting parts of every request."""

import asyncio
import time
import uuid

import structlog
from aiohttp import web

from api.context import context
from api.metrics import REQUEST_SECONDS, REQUESTS, REQUESTS_IN_FLIGHT
from api.params import is_utf8
from pixq import names, stream_tokens
from pixq.errors import ErrorCode, PixqError
from pixq.stream_tokens import StreamGrant
from pixq.tenants import Tenant

log = structlog.get_logger("pixq.api")

class InFlight:
    """Counts requests being handled, so a SIGTERM can wait for them (api.main)."""

    def __init__(self) -> None:
        self.count = 0
        self.idle = asyncio.Event()
        self.idle.set()

    def enter(self) -> None:
        self.count += 1
        REQUESTS_IN_FLIGHT.inc()
        self.idle.clear()

    def leave(self) -> None:
        self.count -= 1
        REQUESTS_IN_FLIGHT.dec()
        if self.count == 0:
            self.idle.set()


IN_FLIGHT = web.AppKey("in_flight", InFlight)
REQUEST_ID = web.RequestKey("request_id", str)
TENANT = web.RequestKey("tenant", Tenant)
"""The caller's tenant, set by ``authenticate`` on every /api/v1 request."""
ADMIN_PREFIXES = ("/api/v1/dlq",)
"""Routes only an admin tenant may call (once any key is configured)."""
PUBLIC_ROUTES = frozenset({"/api/v1/openapi.json"})
"""/api/v1 routes that need no key: the contract describes routes and holds no data."""
SSE_ROUTES = frozenset({"/api/v1/jobs/{job_id}/events", "/api/v1/events"})
"""The only routes that accept ``?access_token=`` (a stream token) instead of the Authorization header."""
STREAM_GRANT = web.RequestKey("stream_grant", StreamGrant)
"""Set when the request was authenticated by a stream token: the handler checks its job binding."""

_HTTP_CODES = {400: ErrorCode.INVALID_REQUEST, 401: ErrorCode.UNAUTHORIZED, 403: ErrorCode.FORBIDDEN,
               404: ErrorCode.NOT_FOUND, 405: ErrorCode.METHOD_NOT_ALLOWED,
               413: ErrorCode.PAYLOAD_TOO_LARGE, 415: ErrorCode.UNSUPPORTED_MEDIA_TYPE}


def error_response(error: PixqError, request_id: str) -> web.Response:
    response = web.json_response(error.to_body(), status=error.http_status)
    response.headers["X-Request-ID"] = request_id
    if error.retry_after is not None:
        response.headers["Retry-After"] = str(error.retry_after)
    return response


def _route_name(request: web.Request) -> str:
    """Route template (not the raw path) as the metrics label, so job ids do not explode cardinality."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def observe(request: web.Request, handler) -> web.StreamResponse:
    """Outermost: assigns the request id, renders every error in the one envelope, counts requests."""
    request_id = request.headers.get("X-Request-ID", "")[:128]
    if not (request_id.isascii() and request_id.isprintable()):
        request_id = ""  # invalid UTF-8 arrives as lone surrogates, which Redis and NATS cannot encode
    request_id = request_id or uuid.uuid4().hex
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
        structlog.contextvars.unbind_contextvars("request_id", "tenant")
    route = _route_name(request)
    REQUESTS.labels(request.method, route, f"{response.status // 100}xx").inc()  # status class: 2xx..5xx
    REQUEST_SECONDS.labels(request.method, route).observe(time.perf_counter() - started)
    return response


def _bearer(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip() if scheme.lower() == "bearer" else ""
    return token if is_utf8(token) else ""  # no key can match invalid UTF-8


def is_admin_route(path: str) -> bool:
    return any(path == prefix or path.startswith(prefix + "/") for prefix in ADMIN_PREFIXES)


@web.middleware
async def authenticate(request: web.Request, handler) -> web.StreamResponse:
    """Every /api/v1 request gets its tenant from the bearer key; admin routes need an admin tenant.

    With no key configured at all, every caller is the open ``default`` tenant (admin role).
    Once any key exists, a missing or unknown key is 401, and an admin route called with a
    user key is 403 — also when no admin key is configured, so the DLQ never opens by accident.
    The two SSE routes (SSE_ROUTES, only those) also accept a stream token in
    ``?access_token=`` (pixq.stream_tokens: browsers' EventSource cannot send headers).
    Only the tenant's name is logged, never the key or the token."""
    route = _route_name(request)
    target = request.path if route == "unmatched" else route  # the matched route: no spelling slips past
    if not target.startswith("/api/v1") or target in PUBLIC_ROUTES:
        return await handler(request)
    tenants = context(request).tenants
    if tenants.open:
        tenant = tenants.open_tenant()
    elif target in SSE_ROUTES and "access_token" in request.query and "Authorization" not in request.headers:
        tenant = _stream_token_tenant(request)
    else:
        tenant = tenants.authenticate(_bearer(request))
        if tenant is None:
            raise PixqError(ErrorCode.UNAUTHORIZED, "missing or unknown API key (Authorization: Bearer <key>)")
    structlog.contextvars.bind_contextvars(tenant=tenant.name)
    if is_admin_route(target) and not tenant.is_admin:
        raise PixqError(ErrorCode.FORBIDDEN, "this route needs an admin key")
    request[TENANT] = tenant
    return await handler(request)


def _stream_token_tenant(request: web.Request) -> Tenant:
    """The tenant a stream token speaks for, if it is genuine, unexpired, and that tenant
    still exists with the same role; 401 otherwise."""
    ctx = context(request)
    grant = stream_tokens.verify(ctx.settings.signing_key(), request.query["access_token"])
    tenant = ctx.tenants.tenants.get(grant.tenant) if grant else None
    if grant is None or tenant is None or tenant.role.value != grant.role:
        raise PixqError(ErrorCode.UNAUTHORIZED, "access_token is invalid or expired; request a new one "
                        "(POST /api/v1/events/token)")
    request[STREAM_GRANT] = grant
    return tenant


def tenant_query(request: web.Request, what: str) -> str | None:
    """Whose ``what`` (jobs, events) a request looks at: a user's own tenant; an admin's every
    tenant (None), or the one named by ``?tenant=``. FORBIDDEN for a user naming another."""
    tenant, wanted = request[TENANT], request.query.get("tenant")
    if not tenant.is_admin:
        if wanted is not None and wanted != tenant.name:
            raise PixqError(ErrorCode.FORBIDDEN, f"only an admin key may see another tenant's {what}")
        return tenant.name
    if wanted is not None and not names.TENANT_RE.match(wanted):
        raise PixqError(ErrorCode.INVALID_PARAMETERS, "tenant is not a tenant name")
    return wanted
