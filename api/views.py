"""The public JSON shape of a job status, with download URLs minted at read time.

URLs are not stored: presigned S3 URLs and local signed links expire, so each GET mints
fresh ones valid for URL_TTL.
"""

from typing import Any

from aiohttp import web

from api.context import ApiContext
from pixq.jobs import JobType
from pixq.signing import signed_path


def download_url(ctx: ApiContext, request: web.Request, storage_key: str) -> str:
    url = ctx.deps.storage.presigned_url(storage_key, ctx.settings.url_ttl)
    if url is not None:
        return url
    return f"{request.url.origin()}{signed_path(ctx.settings.signing_key(), storage_key, ctx.settings.url_ttl)}"


def public_status(ctx: ApiContext, request: web.Request, record: dict[str, Any]) -> dict[str, Any]:
    """``{job_id, type, status, attempts, created_at, updated_at, result, error, error_code}``."""
    result = None
    stored = record.get("result")
    if stored and stored.get("variants"):
        variants = [{"name": v["name"], "url": download_url(ctx, request, v["storage_key"]),
                     **{k: v[k] for k in ("storage_key", "width", "height", "format", "bytes")}}
                    for v in stored["variants"]]
        first = variants[0]
        result = {k: first[k] for k in ("url", "storage_key", "width", "height", "format", "bytes")}
        if record.get("type") == JobType.PIPELINE.value:
            result["variants"] = variants
    body = {
        "job_id": record["job_id"],
        "type": record.get("type"),
        "status": record.get("status"),
        "attempts": record.get("attempts", 0),
        "created_at": record.get("created_at"),
        "updated_at": record.get("updated_at"),
        "result": result,
        "error": record.get("error"),
        "error_code": record.get("error_code"),
    }
    if record.get("next_attempt_at"):
        body["next_attempt_at"] = record["next_attempt_at"]
    return body
