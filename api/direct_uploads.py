"""Direct uploads: clients put images straight into storage, then name them in a job.

``issue`` answers ``POST /api/v1/uploads``: a presigned POST to S3, or (local storage) the API's
own ``POST /uploads/{token}``, for exactly ``uploads/<tenant>/<upload_id>``. The bytes never
pass through an API pod on S3, which is the point (a multipart upload costs the API CPU).

``claim`` runs at submit for ``{"input": {"upload_id": ...}}``, before the job is queued:

1. The key is formed from the *caller's* tenant, so another tenant's upload id answers exactly
   like one never issued (INPUT_NOT_FOUND), with no lookup that could leak it.
2. The first claim copies the upload to ``inputs/<tenant>/upload-<upload_id>`` (a server-side
   copy on S3, a hard link locally) and every job reads that copy. The copy is what gets
   checked, so the object a job reads is the object that was checked: a client re-posting to
   its still-valid upload URL after a claim changes nothing for claimed jobs. And the copy
   lives under ``inputs/``, which upload expiry (lifecycle rule, local sweep) never touches,
   so a job queued, retried or replayed from the DLQ days later still finds its input.
3. An upload may be claimed by any number of jobs (several presets on one photo): later
   claims find the frozen copy and only re-check it against their own spec.
4. Checks, as for a multipart upload (api.submission._store_upload): size (HEAD) within
   MAX_INPUT_BYTES, then magic bytes and a header-only load (pixq.sniff) on the first
   HEAD_READ_BYTES of the copy (the whole object when the header lies further in, as a
   TIFF's may), then ``check_spec_fits``. A copy that is not an acceptable image is deleted.
"""

import asyncio
import time
import uuid
from datetime import datetime, timezone
from typing import Any

import structlog

from api.context import ApiContext
from pixq import names
from pixq.errors import ErrorCode, PixqError
from pixq.sniff import ImageInfo, check_spec_fits, sniff_bytes
from pixq.spec import PipelineSpec
from pixq.storage import upload_tokens
from pixq.tenants import Tenant

log = structlog.get_logger("pixq.uploads")

HEAD_READ_BYTES = 256 * 1024
"""Bytes of an upload read to check it: every header pixq reads (JPEG SOF after EXIF, ICC and
XMP segments; PNG IHDR; WebP, GIF, AVIF/HEIF boxes) is normally well inside it. When libvips
cannot read the header from this prefix, the whole object (≤ MAX_INPUT_BYTES) is read instead."""


def _not_found(upload_id: str) -> PixqError:
    """One answer for unknown, another tenant's, expired and not-yet-uploaded uploads."""
    return PixqError(ErrorCode.INPUT_NOT_FOUND,
                     f"no uploaded object for upload_id {upload_id[:64]!r} (not uploaded yet, expired, "
                     "or not this tenant's)")


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def issue(ctx: ApiContext, origin: str, tenant: Tenant, content_type: str | None) -> dict[str, Any]:
    """``{upload_id, url, fields, expires_at}`` for one new upload of ``tenant``."""
    upload_id = str(uuid.uuid4())
    key = names.upload_object_key(tenant.name, upload_id)
    ttl, max_bytes = ctx.settings.upload_ttl, ctx.limits.max_input_bytes
    post = ctx.deps.storage.presigned_post(key, ttl, max_bytes, content_type)
    if post is not None:
        url, fields, expires_at = post.url, post.fields, int(time.time() + max(1, int(ttl)))
    else:
        token, expires_at = upload_tokens.mint(ctx.settings.signing_key(), tenant.name, upload_id, ttl, content_type)
        url = f"{origin}/uploads/{token}"
        fields = {"key": key, **({"Content-Type": content_type} if content_type else {})}
    log.info("upload_issued", upload_id=upload_id, tenant=tenant.name, direct=post is not None)
    return {"upload_id": upload_id, "url": url, "fields": fields, "expires_at": _iso(expires_at)}


async def claim(ctx: ApiContext, tenant: Tenant, upload_id: str, spec: PipelineSpec) -> str:
    """The storage key a job naming ``upload_id`` reads, once the object passed every check."""
    if not names.is_job_id(upload_id):
        raise _not_found(upload_id)
    storage, max_bytes = ctx.deps.storage, ctx.limits.max_input_bytes
    frozen = names.claimed_upload_key(tenant.name, upload_id)
    size = await storage.size(frozen)
    created = False
    if size is None:
        upload = names.upload_object_key(tenant.name, upload_id)
        size = await storage.size(upload)
        if size is None:
            raise _not_found(upload_id)
        _check_size(size, max_bytes)
        try:
            await storage.copy(upload, frozen)
        except PixqError as exc:
            if exc.code is ErrorCode.INPUT_NOT_FOUND:  # deleted (swept) between HEAD and copy
                raise _not_found(upload_id) from None
            raise
        created = True
        size = await storage.size(frozen)
        if size is None:
            raise _not_found(upload_id)
    try:
        _check_size(size, max_bytes)
        info = await _sniff_object(ctx, frozen, size)
    except PixqError as exc:
        if created and not exc.transient:
            await storage.delete(frozen)  # never an acceptable input: keep nothing of it
        raise
    check_spec_fits(spec, info)
    log.info("upload_claimed", upload_id=upload_id, tenant=tenant.name, first_claim=created, size=size,
             format=info.format)
    return frozen


def _check_size(size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise PixqError(ErrorCode.PAYLOAD_TOO_LARGE, f"upload is {size} bytes, over MAX_INPUT_BYTES={max_bytes}")
    if size == 0:
        raise PixqError(ErrorCode.UNSUPPORTED_MEDIA_TYPE, "upload is empty, not an image")


async def _sniff_object(ctx: ApiContext, key: str, size: int) -> ImageInfo:
    """pixq.sniff on the object's first HEAD_READ_BYTES, or on all of it when the header lies
    beyond (only INVALID_IMAGE on a prefix is retried whole: every other verdict is final)."""
    head = await ctx.deps.storage.read_head(key, HEAD_READ_BYTES)
    try:
        return await _sniff_bytes(ctx, head)
    except PixqError as exc:
        if exc.code is not ErrorCode.INVALID_IMAGE or size <= len(head):
            raise
    whole = await ctx.deps.storage.get_bytes(key, ctx.limits.max_input_bytes)
    return await _sniff_bytes(ctx, whole)


async def _sniff_bytes(ctx: ApiContext, data: bytes) -> ImageInfo:
    return await asyncio.to_thread(sniff_bytes, data, ctx.limits)
