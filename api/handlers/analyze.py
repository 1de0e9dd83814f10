"""``POST /api/v1/analyze``: a job that describes its image instead of transforming it (being built)."""

from aiohttp import web


async def submit_analyze(request: web.Request) -> web.Response:
    raise web.HTTPNotImplemented()
