"""``GET /api/v1/openapi.json`` and the ``/docs`` page: the contract, readable offline.

Neither needs an API key (api.middleware.PUBLIC_ROUTES): the document describes routes, it
holds no data. The page is Swagger UI 5 (renders OpenAPI 3.1) from the ``swagger-ui-py``
package's static files, served by this API under ``/docs/static/``: clusters are often
offline, so nothing is fetched from a CDN.
"""

import json
from functools import cache
from pathlib import Path

import swagger_ui
from aiohttp import web

STATIC_DIR = Path(swagger_ui.__file__).parent / "static"
"""Swagger UI's dist files, as the package ships them."""

PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>pixq API</title>
  <link rel="stylesheet" href="/docs/static/swagger-ui.css">
  <link rel="icon" type="image/png" href="/docs/static/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/static/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({url: "/api/v1/openapi.json", dom_id: "#swagger-ui", deepLinking: true});
  </script>
</body>
</html>
"""


@cache
def _document() -> bytes:
    """Built once per process: the document depends only on the code."""
    from api.openapi import build  # api.openapi reads api.routes, which imports this module

    return json.dumps(build(), separators=(",", ":")).encode()


async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(body=_document(), content_type="application/json")


async def docs_page(request: web.Request) -> web.Response:
    return web.Response(text=PAGE, content_type="text/html")
