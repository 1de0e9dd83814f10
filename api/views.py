"""Public documents with download URLs minted for the request at hand (pixq.documents)."""

from typing import Any

from aiohttp import web

from api.context import ApiContext
from pixq import documents
from pixq.signing import signed_path


def download_url(ctx: ApiContext, request: web.Request, storage_key: str) -> str:
    url = ctx.deps.storage.presigned_url(storage_key, ctx.settings.url_ttl)
    if url is not None:
        return url
    return f"{request.url.origin()}{signed_path(ctx.settings.signing_key(), storage_key, ctx.settings.url_ttl)}"


def minter(ctx: ApiContext, request: web.Request) -> documents.Mint:
    return lambda storage_key: download_url(ctx, request, storage_key)


def public_status(ctx: ApiContext, request: web.Request, record: dict[str, Any]) -> dict[str, Any]:
    """The job's public document with fresh URLs (see pixq.documents.public_status)."""
    return documents.public_status(record, minter(ctx, request))
