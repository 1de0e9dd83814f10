"""Public documents with download URLs minted for the request at hand (pixq.documents)."""

from typing import Any

from aiohttp import web

from api.context import ApiContext
from pixq import documents


def minter(ctx: ApiContext, request: web.Request) -> documents.Mint:
    """Download URLs for this request: signed links point back at the origin it came to."""
    return documents.download_minter(ctx.deps.storage, ctx.settings, str(request.url.origin()))


def public_status(ctx: ApiContext, request: web.Request, record: dict[str, Any]) -> dict[str, Any]:
    """The job's public document with fresh URLs (see pixq.documents.public_status)."""
    return documents.public_status(record, minter(ctx, request))
