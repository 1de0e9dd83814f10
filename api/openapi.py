"""The OpenAPI 3.1 document, generated from api.routes.ROUTES and the pydantic models.

Every schema comes from pydantic (``models_json_schema``: request bodies, query strings and
headers in validation mode, answers in serialization mode); this module only arranges them
into operations. The result is served at ``GET /api/v1/openapi.json`` (api.handlers.docs)
and committed as docs/openapi.json, which a test keeps current:

    python -m api.openapi > docs/openapi.json      (or: make openapi)
"""

import json
import re
import sys
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

import pixq
from api.ratelimit import is_exempt
from api.routes import FORM, JSON, ROUTES, Route
from pixq.errors import HTTP_STATUS
from pixq.schemas import ErrorBody

REF = "#/components/schemas/{model}"
OPENAPI_VERSION = "3.1.0"

DESCRIPTION = """\
pixq resizes, crops, transforms and analyzes images asynchronously: a submit answers 202 with a
job id; the result is read with GET /api/v1/jobs/{job_id} (long-poll), server-sent events, or a
webhook.

Authentication: `Authorization: Bearer <API key>` on every /api/v1 route, except this document.
An admin key is needed for /api/v1/dlq. With no key configured at all (a development install)
every caller is the `default` tenant with the admin role. The two event streams also take a
short-lived `?access_token=` (POST /api/v1/events/token) for browsers' EventSource.

Errors: every error is `{"error": {"code", "message"}}` with a stable code (docs/errors.md).
Rate limits: every route but /health/*, /metrics, /docs and this document may answer 429
`RATE_LIMITED` (submits also `QUOTA_EXCEEDED`) with `Retry-After`; their answers carry the IETF
`RateLimit` and `RateLimit-Policy` headers.
"""

HEADERS: dict[str, dict[str, Any]] = {
    "Location": {"description": "URL of the created job or batch.", "required": True, "schema": {"type": "string"}},
    "Idempotent-Replayed": {"description": "`true` when an Idempotency-Key answered an earlier job.",
                            "schema": {"type": "string", "enum": ["true"]}},
    "ETag": {"description": "The job's status position, `\"<generation>-<attempt>-<phase>\"`.",
             "required": True, "schema": {"type": "string"}},
    "X-Request-ID": {"description": "The request's id (the client's X-Request-ID, else a new one); "
                            "every answer but an event stream's carries it.",
                     "schema": {"type": "string"}},
    "RateLimit": {"description": "IETF RateLimit header: the remaining quota of the policy that applied.",
                  "schema": {"type": "string"}},
    "RateLimit-Policy": {"description": "IETF RateLimit-Policy header: the limits that apply to the caller.",
                         "schema": {"type": "string"}},
    "Retry-After": {"description": "Seconds to wait before trying again.", "schema": {"type": "string"}},
}
"""Response headers (components/headers): the only hand-written part, as pydantic describes bodies."""

SECURITY_SCHEMES = {
    "apiKey": {"type": "http", "scheme": "bearer", "description": "An API key (API_KEYS, ADMIN_API_KEYS, TENANTS_FILE)."},
    "streamToken": {"type": "apiKey", "in": "query", "name": "access_token",
                    "description": "A stream token (POST /api/v1/events/token); the two SSE routes only."},
}

_PATH_PARAM = re.compile(r"{(\w+)}")


def _error_statuses(route: Route) -> list[int]:
    """The route's own error statuses, plus what every route of its kind may answer."""
    statuses = set(route.errors)
    if not is_exempt(route.path):
        statuses.add(429)
    if route.path.startswith("/api/v1"):
        if route.auth != "none":
            statuses.add(401)
        if route.auth == "admin":
            statuses.add(403)
    if route.uses_backends:
        statuses.add(503)
    return sorted(statuses)


def _codes_of(status: int) -> list[str]:
    return [code.value for code, http in HTTP_STATUS.items() if http == status]


def _models() -> list[tuple[type[BaseModel], str]]:
    pairs: dict[tuple[type[BaseModel], str], None] = {(ErrorBody, "serialization"): None}
    for route in ROUTES:
        for model in route.body.values():
            pairs[(model, "validation")] = None
        for model in (route.query, route.headers):
            if model is not None:
                pairs[(model, "validation")] = None
        for body in route.ok.values():
            if isinstance(body, type):
                pairs[(body, "serialization")] = None
    return list(pairs)


def _parameters(route: Route, schemas: dict[str, Any], names: dict) -> list[dict[str, Any]]:
    parameters = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                  for name in _PATH_PARAM.findall(route.path)]
    for model, where in ((route.query, "query"), (route.headers, "header")):
        if model is None:
            continue
        properties = schemas[names[(model, "validation")]]["properties"]
        for name, info in model.model_fields.items():
            key = info.alias or name
            schema = _not_null({k: v for k, v in properties[key].items() if k not in ("title", "description")})
            parameter = {"name": key, "in": where, "required": info.is_required(), "schema": schema}
            if info.description:
                parameter["description"] = info.description
            parameters.append(parameter)
    return parameters


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A parameter's schema without pydantic's ``| None`` branch: a query string or header is
    absent or a string, never null."""
    branches = [branch for branch in schema.get("anyOf", ()) if branch != {"type": "null"}]
    if "anyOf" not in schema or len(branches) != 1:
        return schema
    rest = {k: v for k, v in schema.items() if k != "anyOf" and not (k == "default" and v is None)}
    return {**branches[0], **rest}


def _content(body: Any, names: dict) -> dict[str, Any]:
    if body is None:
        return {}
    if isinstance(body, type):
        return {"content": {JSON: {"schema": {"$ref": REF.format(model=names[(body, "serialization")])}}}}
    schema = {"type": "object"} if body == JSON else {"type": "string"}  # the OpenAPI document itself
    return {"content": {body: {"schema": schema}}}


def _headers(route: Route, status: int) -> dict[str, Any]:
    names = [*route.response_headers.get(status, ()), "X-Request-ID"]
    if not is_exempt(route.path):
        names += ["RateLimit", "RateLimit-Policy"]
        if status == 429:
            names.append("Retry-After")
    return {name: {"$ref": f"#/components/headers/{name}"} for name in names}


def _operation(route: Route, schemas: dict[str, Any], names: dict) -> dict[str, Any]:
    operation: dict[str, Any] = {"operationId": route.handler.__name__, "summary": route.summary,
                                 "tags": [route.tag]}
    if route.description:
        operation["description"] = route.description
    if route.auth == "none":
        operation["security"] = []
    else:
        operation["security"] = [{"apiKey": []}]
        if "access_token" in getattr(route.query, "model_fields", {}):
            operation["security"].append({"streamToken": []})
    if parameters := _parameters(route, schemas, names):
        operation["parameters"] = parameters
    if route.body:
        content: dict[str, Any] = {}
        for media, model in route.body.items():
            content[media] = {"schema": {"$ref": REF.format(model=names[(model, "validation")])}}
            if media == FORM:
                content[media]["encoding"] = {"file": {"contentType": "application/octet-stream"}}
        operation["requestBody"] = {"required": route.body_required, "content": content}
    responses: dict[str, Any] = {}
    for status, body in route.ok.items():
        responses[str(status)] = {"description": _description(status), **_content(body, names),
                                  **({"headers": h} if (h := _headers(route, status)) else {})}
    for status in _error_statuses(route):
        responses[str(status)] = {
            "description": f"{_description(status)}: {', '.join(_codes_of(status))}",
            **_content(ErrorBody, names),
            **({"headers": h} if (h := _headers(route, status)) else {})}
    operation["responses"] = responses
    return operation


def _description(status: int) -> str:
    from http import HTTPStatus

    return HTTPStatus(status).phrase


def build() -> dict[str, Any]:
    """The whole document (plain JSON data)."""
    refs, top = models_json_schema(_models(), ref_template=REF)
    names = {key: ref["$ref"].rsplit("/", 1)[-1] for key, ref in refs.items()}
    schemas = top.get("$defs", {})
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, schemas, names)
    parameter_models = {names[(m, "validation")] for r in ROUTES for m in (r.query, r.headers) if m is not None}
    for name in parameter_models:  # inlined as parameters above; referenced from nowhere else
        schemas.pop(name, None)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "pixq", "version": pixq.__version__, "description": DESCRIPTION,
                 "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"}},
        "tags": [{"name": tag} for tag in dict.fromkeys(route.tag for route in ROUTES)],
        "paths": paths,
        "components": {"schemas": dict(sorted(schemas.items())), "headers": HEADERS,
                       "securitySchemes": SECURITY_SCHEMES},
    }


def render() -> str:
    """docs/openapi.json's exact text."""
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
