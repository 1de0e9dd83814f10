"""Submit and read jobs."""

from aiohttp import web

from api.context import context
from api.middleware import REQUEST_ID
from api.submission import accept_job
from api.uploads import read_submit_request
from api.views import public_status
from pixq.errors import ErrorCode, PixqError
from pixq.jobs import JobStatus, JobType

IDEMPOTENCY_KEY_MAX = 255


async def _submit(request: web.Request, job_type: JobType) -> web.Response:
    ctx = context(request)
    idempotency_key = request.headers.get("Idempotency-Key") or None
    if idempotency_key and len(idempotency_key) > IDEMPOTENCY_KEY_MAX:
        raise PixqError(ErrorCode.INVALID_REQUEST, f"Idempotency-Key is longer than {IDEMPOTENCY_KEY_MAX}")
    json_fields = frozenset({"spec"}) if job_type is JobType.PIPELINE else frozenset()
    submit = await read_submit_request(request, ctx.limits.max_input_bytes, json_fields)
    if job_type is JobType.PIPELINE:
        submit.parameters = submit.extra.get("spec", submit.parameters)
        if not isinstance(submit.parameters, dict):
            submit.discard()
            raise PixqError(ErrorCode.INVALID_REQUEST, "'spec' must be a JSON object")
    try:
        accepted = await accept_job(ctx, job_type, submit, request[REQUEST_ID], idempotency_key)
    finally:
        submit.discard()
    location = f"/api/v1/jobs/{accepted.job_id}"
    body = {"job_id": accepted.job_id, "status": JobStatus.QUEUED.value}
    headers = {"Location": location}
    if accepted.replayed:
        record = await ctx.deps.status.get(accepted.job_id)
        body["status"] = record["status"] if record else JobStatus.QUEUED.value
        headers["Idempotent-Replayed"] = "true"
    return web.json_response(body, status=202, headers=headers)


async def submit_resize(request: web.Request) -> web.Response:
    return await _submit(request, JobType.RESIZE)


async def submit_crop(request: web.Request) -> web.Response:
    return await _submit(request, JobType.CROP)


async def submit_pipeline(request: web.Request) -> web.Response:
    return await _submit(request, JobType.PIPELINE)


async def get_job(request: web.Request) -> web.Response:
    ctx = context(request)
    job_id = request.match_info["job_id"]
    record = await ctx.deps.status.get(job_id) if len(job_id) <= 64 else None
    if record is None:
        raise PixqError(ErrorCode.NOT_FOUND, f"no job {job_id}")
    return web.json_response(public_status(ctx, request, record))
