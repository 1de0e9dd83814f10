"""Direct uploads: ``POST /api/v1/uploads`` hands out a presigned POST (S3) or a signed pixq
upload URL (local storage); ``POST /uploads/{token}`` is that local endpoint.

The local endpoint takes the same form as S3's POST Object: multipart/form-data with the
returned ``fields`` (``key``, and ``Content-Type`` unless the client adds its own), then a
``file`` part; parts after ``file`` are ignored, as S3 ignores them. It enforces what the S3
policy enforces: the exact key, a ``Content-Type`` field starting with ``image/`` (or equal to
the one named when the upload was requested), 1..MAX_INPUT_BYTES bytes counted while
streaming, and the expiry. It answers 204, as S3 does by default. Only /api/v1 is
authenticated by API key: this route is authorized by its token alone.
"""

import os
import re

import structlog
from aiohttp import web

from api import direct_uploads
from api.context import context
from api.middleware import TENANT
from api.multipart import FormStream
from api.uploads import _decode_text, _json_object, _malformed_multipart, open_form, read_form_field, spool_part
from pixq import names
from pixq.errors import ErrorCode, PixqError
from pixq.storage import LocalStorage
from pixq.storage import upload_tokens
from pixq.tenants import OPEN_TENANT

IMAGE_TYPE = re.compile(r"^image/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$")
"""A Content-Type an upload may declare: image/<subtype>, plain ASCII (it becomes metadata)."""
MAX_FIELDS = 32
log = structlog.get_logger("pixq.uploads")


def _content_type(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not IMAGE_TYPE.match(value):
        raise PixqError(ErrorCode.INVALID_PARAMETERS, "content_type must be an image/* media type")
    return value


async def create_upload(request: web.Request) -> web.Response:
    """``POST /api/v1/uploads`` with an optional JSON body ``{"content_type": "image/jpeg"}``:
    naming the type binds the upload to it (and puts it in ``fields``); without it the
    client sends its own ``Content-Type`` field, which must start with ``image/``."""
    ctx = context(request)
    raw = await request.read()
    body = _json_object(_decode_text(raw, "utf-8"), "body") if raw.strip() else {}
    unknown = sorted(set(body) - {"content_type"})
    if unknown:
        raise PixqError(ErrorCode.INVALID_PARAMETERS, f"unknown field(s): {', '.join(unknown)[:200]}")
    answer = direct_uploads.issue(ctx, str(request.url.origin()), request[TENANT],
                                  _content_type(body.get("content_type")))
    return web.json_response(answer, status=201)


def _refused() -> PixqError:
    return PixqError(ErrorCode.FORBIDDEN, "upload URL is invalid or expired; request a new one (POST /api/v1/uploads)")


async def receive_upload(request: web.Request) -> web.Response:
    """``POST /uploads/{token}``: store one upload for the token's tenant and upload id."""
    ctx = context(request)
    storage = ctx.deps.storage
    if not isinstance(storage, LocalStorage):
        raise PixqError(ErrorCode.NOT_FOUND, "uploads go to object storage directly")
    grant = upload_tokens.verify(ctx.settings.signing_key(), request.match_info["token"])
    if grant is None or not names.is_job_id(grant.upload_id) or not names.TENANT_RE.match(grant.tenant):
        raise _refused()
    if not (grant.tenant in ctx.tenants.tenants or (ctx.tenants.open and grant.tenant == OPEN_TENANT)):
        raise _refused()  # the tenant was removed since: its URLs stop working
    key = names.upload_object_key(grant.tenant, grant.upload_id)
    media_type = request.headers.get("Content-Type", "").partition(";")[0].strip().lower()
    if media_type != "multipart/form-data":
        raise PixqError(ErrorCode.UNSUPPORTED_MEDIA_TYPE, "send multipart/form-data: the fields, then 'file'")
    form = open_form(request, ctx.settings.max_request_bytes)  # parsed as a submit's upload is (api.uploads)
    fields: dict[str, str] = {}
    while True:
        with _malformed_multipart():
            part = await form.next_part()
        if part is None:
            raise PixqError(ErrorCode.INVALID_REQUEST, "the form needs a 'file' part (after the fields)")
        name = part.name
        if not name or part.headers.get("Content-Type", "").lower().startswith("multipart/"):
            raise PixqError(ErrorCode.INVALID_REQUEST, "every part needs a name")
        if name == "file":
            break
        if len(fields) >= MAX_FIELDS:
            raise PixqError(ErrorCode.INVALID_REQUEST, "too many form fields")
        text = await read_form_field(form, part, name[:64])  # too long: 400, before it is held whole
        fields[name.lower()] = text  # S3 form field names are case-insensitive
    if fields.get("key") != key:
        raise PixqError(ErrorCode.FORBIDDEN, "the 'key' field does not match this upload URL")
    declared = fields.get("content-type", "")
    if not IMAGE_TYPE.match(declared) or (grant.content_type and declared != grant.content_type):
        raise PixqError(ErrorCode.UNSUPPORTED_MEDIA_TYPE,
                        f"the 'Content-Type' field must be {grant.content_type or 'an image/* type'}")
    size = await _store(storage, key, form, ctx.limits.max_input_bytes)
    log.info("upload_received", upload_id=grant.upload_id, tenant=grant.tenant, size=size, content_type=declared)
    return web.Response(status=204)


async def _store(storage: LocalStorage, key: str, form: FormStream, max_bytes: int) -> int:
    """Stream the file part into a temp file beside its target (413 past ``max_bytes``), then
    rename it into place: a reader never sees half an upload."""
    target = storage.path_of(key)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staged = await spool_part(form, max_bytes, target.parent, ".part-")
    except OSError as exc:
        raise PixqError(ErrorCode.STORAGE_UNAVAILABLE, f"cannot store upload: {exc}") from None
    try:
        size = staged.stat().st_size
        os.replace(staged, target)
        return size
    except OSError as exc:
        staged.unlink(missing_ok=True)
        raise PixqError(ErrorCode.STORAGE_UNAVAILABLE, f"cannot store upload: {exc}") from None
