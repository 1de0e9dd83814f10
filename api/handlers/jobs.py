"""Submit and read jobs."""

from aiohttp import web

from api.context import context
from api.middleware import REQUEST_ID, TENANT
from api.submission import accept_job
from api.uploads import read_submit_request
from api.views import public_status
from pixq import names
from pixq.errors import ErrorCode, PixqError
from pixq.jobs import JobStatus, JobType
from pixq.tenants import OPEN_TENANT

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
        accepted = await accept_job(ctx, job_type, submit, request[TENANT], request[REQUEST_ID], idempotency_key)
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


async def visible_job(request: web.Request) -> dict:
    """The status record of the job in the path, if the caller's tenant may see it.

    The id is checked to be a UUID before any use. Another tenant's job answers exactly like
    a job that does not exist (404), so existence never leaks; an admin sees every tenant."""
    job_id = request.match_info["job_id"]
    record = await context(request).deps.status.get(job_id) if names.is_job_id(job_id) else None
    tenant = request[TENANT]
    if record is None or not (tenant.is_admin or owner_of(record) == tenant.name):
        raise PixqError(ErrorCode.NOT_FOUND, "no such job")
    return record


def owner_of(record: dict) -> str:
    """Records written before tenants existed belong to the open tenant."""
    return record.get("tenant") or OPEN_TENANT


async def get_job(request: web.Request) -> web.Response:
    record = await visible_job(request)
    return web.json_response(public_status(context(request), request, record))
