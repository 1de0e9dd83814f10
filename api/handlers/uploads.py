"""Direct uploads (being built): ``POST /api/v1/uploads`` hands out a presigned POST (S3) or a
signed pixq upload URL (local storage); ``POST /uploads/{token}`` is that local endpoint."""

from aiohttp import web


async def create_upload(request: web.Request) -> web.Response:
    raise web.HTTPNotImplemented()


async def receive_upload(request: web.Request) -> web.Response:
    raise web.HTTPNotImplemented()
