"""The OpenAPI 3.1 document: valid, committed current, served without a key, with an offline docs page.

The live API's conformance to it is tests/test_conformance.py.
"""

import json
import re
from pathlib import Path

from openapi_spec_validator import OpenAPIV31SpecValidator

from api.openapi import build, render
from api.ratelimit import is_exempt
from api.routes import ROUTES
from tests.conftest import running_api

COMMITTED = Path(__file__).parent.parent / "docs" / "openapi.json"
USER_KEY = "user-key-openapi"


def test_the_generated_document_is_valid_openapi_3_1():
    document = build()
    assert document["openapi"].startswith("3.1.")
    errors = [error.message for error in OpenAPIV31SpecValidator(document).iter_errors()]
    assert errors == []


def test_the_committed_document_is_current():
    assert COMMITTED.read_text() == render(), (
        "docs/openapi.json is stale: regenerate it with `make openapi` "
        "(or `python -m api.openapi > docs/openapi.json`) and commit it")


def test_every_route_is_one_operation_and_api_routes_document_their_errors():
    document = build()
    operations = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    assert operations == {(route.method, route.path) for route in ROUTES}
    ids = [op["operationId"] for item in document["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))
    for path, item in document["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            if not is_exempt(path):
                assert "429" in responses, (method, path)
                for status, response in responses.items():
                    assert "RateLimit" in response.get("headers", {}), (method, path, status)
                assert "Retry-After" in responses["429"]["headers"]
            if operation["security"]:
                assert "401" in responses, (method, path)
            if path.startswith("/api/v1/dlq"):
                assert "403" in responses, (method, path)


def test_request_bodies_are_closed_where_the_api_refuses_unknown_keys():
    schemas = build()["components"]["schemas"]
    for name in ("ResizeParams", "CropParams", "PipelineSpec", "AnalyzeOptions", "ResizeJsonRequest",
                 "StreamTokenRequest", "UploadRequest"):
        assert schemas[name]["additionalProperties"] is False, name
    # the error envelope lists every stable code of pixq.errors
    from pixq.errors import ErrorCode

    assert set(schemas["ErrorCode"]["enum"]) == {code.value for code in ErrorCode}


async def test_document_and_docs_page_need_no_key_and_use_no_cdn(make_settings):
    settings = make_settings(api_keys={USER_KEY: "team-a"})
    async with running_api(settings) as client:
        reply = await client.get("/api/v1/openapi.json")
        assert reply.status == 200 and reply.content_type == "application/json"
        assert await reply.json() == json.loads(render())
        page = await client.get("/docs")
        assert page.status == 200 and page.content_type == "text/html"
        html = await page.text()
        assets = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert "/docs/static/swagger-ui-bundle.js" in assets
        assert all(asset.startswith("/docs/static/") for asset in assets), assets  # nothing from a CDN
        for asset in assets:
            served = await client.get(asset)
            assert served.status == 200, asset
        bundle = await (await client.get("/docs/static/swagger-ui-bundle.js")).text()
        assert re.search(r'"5\.\d+\.\d+"', bundle)  # Swagger UI 5: the major that renders OpenAPI 3.1
        assert (await client.get("/api/v1/jobs")).status == 401  # every other /api/v1 route still needs a key
