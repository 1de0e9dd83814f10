"""SSE streams of job events, and the short-lived tokens browsers use to open them.

``GET /api/v1/jobs/{id}/events``: the job's current status at once, then each change, then
the server closes the stream after the terminal event.

``GET /api/v1/events``: every event of the caller's tenant (an admin: every tenant, or one
with ``?tenant=``), optionally filtered with ``?status=`` (queued, processing, retrying,
completed, failed) and ``?type=`` (resize, crop, pipeline); each takes several values,
comma-separated or repeated. Filters select *job* events; a ``batch.completed`` event passes
when there is no ``type`` filter (a batch has no job type) and the ``status`` filter, if any,
includes ``completed``. Without Last-Event-ID the stream starts at the live end.

Every event's ``id:`` is its PIXQ_EVENTS stream sequence and its ``data:`` the full envelope
(pixq.events) with fresh download URLs. A reconnect with ``Last-Event-ID`` (or
``?last_event_id=``) gets exactly the events after that id, read back from JetStream, then
the live tail: none lost, none repeated, whichever replica it reaches. Events the filters
drop are skipped again on a resume. An id older than the stream keeps (EVENTS_MAX_AGE),
or one it never issued, cannot be resumed from: the stream first sends ``event: reset``
(``data: {"reason": "expired"|"unknown", "first_id"}``), then continues as follows — the
tenant stream from the oldest event kept, the job stream from the job's current status.

On the job stream the first event is the job's latest stored event (its real id) once it
matches the status store; only if the status store is ahead and the event does not arrive
within SNAPSHOT_WAIT_SECONDS is the status sent with the stream's last id at the time
(pixq.events publishes after the status write, so every event up to that id is at or
before that status; a resume from it may then show that one status again, with the same
``position``). A resume on the job stream after its terminal event closes at once.

A stream ends when the process shuts down or when its client falls more than
api.events_hub.LISTENER_QUEUE_MAX events behind; EventSource reconnects after ``retry:``
and resumes with Last-Event-ID. A token bound to a job opens only that job's stream.
"""

import asyncio
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import StrEnum
from typing import Any

import structlog
from aiohttp import web

from api.context import ApiContext, context
from api.events_hub import ALL, EventHub, HubEvent, Listener, StreamEnded, hub_of
from api.handlers.jobs import owner_of, visible_job
from api.middleware import STREAM_GRANT, TENANT, tenant_query
from api.sse import EventStream, encode, last_event_id
from api.views import minter
from pixq import events, names, stream_tokens
from pixq.documents import with_urls
from pixq.errors import ErrorCode, PixqError
from pixq.jobs import JobStatus, JobType

log = structlog.get_logger("pixq.api.events")

SNAPSHOT_WAIT_SECONDS = 2.0
"""How long a new job stream waits for the event of a status the store already shows (it is
published right after the write) before sending the status with an approximate id."""
IN_FLIGHT_SECONDS = 30.0
"""A status written longer ago than this has no event in flight (only one that expired): no
wait. Generous, as the writer's clock (a worker's) is not the API's."""
MAX_BODY_BYTES = 4096


# --- Filters and scopes -----------------------------------------------------------------


def _choices(request: web.Request, name: str, allowed: type[StrEnum]) -> frozenset[str] | None:
    """``?name=a,b`` or ``?name=a&name=b``; None when absent; INVALID_PARAMETERS for an unknown value."""
    if name not in request.query:
        return None
    values = {value.strip() for raw in request.query.getall(name) for value in raw.split(",")}
    known = {member.value for member in allowed}
    if not values or not values <= known:
        raise PixqError(ErrorCode.INVALID_PARAMETERS, f"{name} must be one or more of {', '.join(sorted(known))}")
    return frozenset(values)


@dataclass(frozen=True)
class EventFilter:
    statuses: frozenset[str] | None = None
    types: frozenset[str] | None = None

    def matches(self, event: HubEvent) -> bool:
        if event.kind == "batch":
            return self.types is None and (self.statuses is None or JobStatus.COMPLETED.value in self.statuses)
        data = event.envelope.get("data") or {}
        return ((self.statuses is None or data.get("status") in self.statuses)
                and (self.types is None or data.get("type") in self.types))


def _tenant_scope(request: web.Request) -> tuple[tuple[str, str], str]:
    """(hub key, subject filter): the caller's tenant; an admin's every tenant, or ``?tenant=``."""
    tenant = tenant_query(request, "events")
    return (("tenant", tenant) if tenant else ALL), names.tenant_events_filter(tenant)


@dataclass(frozen=True)
class Urls:
    """How one stream's download URLs are minted, and for which origin: every stream of one
    origin would mint the same URLs for an event, so its frame is built once and shared."""

    mint: Callable[[str], str]
    origin: str


def urls_for(ctx: ApiContext, request: web.Request) -> Urls:
    return Urls(minter(ctx, request), str(request.url.origin()))


def _outgoing(envelope: dict[str, Any], mint: Callable[[str], str]) -> dict[str, Any]:
    """The envelope as sent: a job's document gets fresh download URLs (stored events have none)."""
    data = envelope.get("data")
    if not envelope["type"].startswith("job.") or not isinstance(data, dict):
        return envelope
    return {**envelope, "data": with_urls(data, mint)}


async def _send(stream: EventStream, event: HubEvent, urls: Urls) -> None:
    """Send one event, its frame (URLs included) built once per origin for every stream.

    Measured with 1,000 streams on one process: 134 µs of API CPU per event delivered when
    every stream built its own, 95 µs shared (docs/benchmarks.md, section 7)."""
    frame = event.frames.get(urls.origin)
    if frame is None:
        frame = event.frames[urls.origin] = encode(event.envelope["type"], _outgoing(event.envelope, urls.mint),
                                                   event.sequence)
    await stream.write_frame(frame)


# --- Streams ----------------------------------------------------------------------------


class Resume:
    """Where a resume starts: after ``last_id``, or from the oldest kept event with a reset first."""

    def __init__(self, last_id: int | None, first: int, last: int) -> None:
        self.reset_reason: str | None = None
        self.first_kept = first or last + 1
        if last_id is None:
            self.start = None
        elif last_id > last:
            self.reset_reason, self.start = "unknown", self.first_kept
        elif last_id + 1 < self.first_kept:
            self.reset_reason, self.start = "expired", self.first_kept
        else:
            self.start = last_id + 1

    async def announce(self, stream: EventStream) -> None:
        if self.reset_reason:
            await stream.send("reset", {"reason": self.reset_reason, "first_id": self.first_kept}, None)


async def _next(stream: EventStream, listener: Listener) -> HubEvent | None:
    """The listener's next event, writing heartbeats while there is none; None once it ended."""
    while True:
        try:
            event = await listener.next(stream.until_heartbeat())
        except StreamEnded as ended:
            if ended.reason == "lagged":
                log.info("sse_stream_lagged", stream=stream.stream)  # the client resumes from JetStream
            return None
        if event is not None:
            return event
        if stream.until_heartbeat() == 0:
            await stream.heartbeat()


async def _serve(stream: EventStream, body, logger=log) -> None:
    """Run an open stream until it ends, the client goes, or the process stops; errors after
    the headers were sent can only end the stream (the client reconnects and resumes)."""
    try:
        if stream.request.method == "HEAD":
            body.close()  # the headers say all a HEAD asks
        else:
            await body
    except ConnectionError:
        pass  # the client went away
    except PixqError as exc:
        logger.warning("sse_stream_failed", stream=stream.stream, code=exc.code.value, error=exc.message)
    except Exception:
        logger.exception("sse_stream_failed", stream=stream.stream)
    finally:
        await stream.close()


async def tenant_events(request: web.Request) -> web.StreamResponse:
    if (grant := request.get(STREAM_GRANT)) is not None and grant.job_id is not None:
        raise PixqError(ErrorCode.FORBIDDEN, "this access_token opens one job's events only")
    key, subject_filter = _tenant_scope(request)
    event_filter = EventFilter(_choices(request, "status", JobStatus), _choices(request, "type", JobType))
    last_id = last_event_id(request)
    ctx, hub = context(request), hub_of(request)
    async with hub.listen(key) as listener:
        first, last = await hub.bounds()
        resume = Resume(last_id, first, last)
        stream = EventStream(request, ctx.settings.events_heartbeat, "tenant")
        await stream.open()
        await _serve(stream, _tenant_stream(stream, listener, hub, resume, subject_filter, event_filter,
                                            urls_for(ctx, request), last))
    return stream.response


async def _tenant_stream(stream: EventStream, listener: Listener, hub: EventHub, resume: Resume,
                         subject_filter: str, event_filter: EventFilter, urls: Urls, last: int) -> None:
    await resume.announce(stream)
    sent = last  # without Last-Event-ID: from the live end
    if resume.start is not None and resume.start <= last:
        async with contextlib.aclosing(hub.replay(subject_filter, resume.start, last)) as replayed:
            async for event in replayed:
                if event_filter.matches(event):
                    await _send(stream, event, urls)
                sent = max(sent, event.sequence)
    while (event := await _next(stream, listener)) is not None:
        if event.sequence <= sent:
            continue  # stored before the stream started, or buffered while replaying and sent
        if event_filter.matches(event):
            await _send(stream, event, urls)
        sent = event.sequence


async def job_events(request: web.Request) -> web.StreamResponse:
    record = await visible_job(request)
    job_id = record["job_id"]
    if (grant := request.get(STREAM_GRANT)) is not None and grant.job_id not in (None, job_id):
        raise PixqError(ErrorCode.FORBIDDEN, "this access_token opens another job's events")
    last_id = last_event_id(request)
    ctx, hub = context(request), hub_of(request)
    job_filter = names.job_events_filter(owner_of(record), job_id)
    async with hub.listen(("job", job_id)) as listener:
        first, last = await hub.bounds()
        resume = Resume(last_id, first, last)
        stream = EventStream(request, ctx.settings.events_heartbeat, "job")
        await stream.open()
        await _serve(stream, _job_stream(stream, listener, hub, ctx, resume, job_filter, job_id, last,
                                         urls_for(ctx, request)), log.bind(job_id=job_id))
    return stream.response


async def _job_stream(stream: EventStream, listener: Listener, hub: EventHub, ctx: ApiContext, resume: Resume,
                      job_filter: str, job_id: str, last: int, urls: Urls) -> None:
    await resume.announce(stream)
    shown: tuple[int, ...] | None = None
    """The position of the latest status the client has seen."""
    if resume.start is not None and not resume.reset_reason:
        if resume.start <= last:
            async with contextlib.aclosing(hub.replay(job_filter, resume.start, last)) as replayed:
                async for event in replayed:
                    if shown is None or event.position > shown:
                        await _send(stream, event, urls)
                        shown = event.position
                        if events.is_terminal(event.envelope):
                            return
        if shown is None:  # nothing after the client's id: has it seen the job's latest stored event?
            latest = await hub.last_event(job_filter)
            if latest is not None and latest.sequence < resume.start:
                if events.is_terminal(latest.envelope):
                    return
                shown = latest.position
    if shown is None:  # a new stream, a reset, or a resume with no stored event to go by
        current = await _current(listener, hub, ctx, job_filter, job_id, last)
        if current is None:
            return  # the job's status expired meanwhile
        await _send(stream, current, urls)
        if events.is_terminal(current.envelope):
            return
        shown = current.position
    while (event := await _next(stream, listener)) is not None:
        if event.position <= shown:
            continue  # positions only move forward: an older or repeated status
        await _send(stream, event, urls)
        shown = event.position
        if events.is_terminal(event.envelope):
            return


async def _current(listener: Listener, hub: EventHub, ctx: ApiContext, job_filter: str, job_id: str,
                   last: int) -> HubEvent | None:
    """The job's current status as an event: its latest stored event when that is what the
    status store shows, else (a write whose event is in flight) that event as it arrives, else
    the stored status with id ``last`` (read before the status, see the module docstring).
    Events taken from the listener meanwhile are older ones."""
    record = await ctx.deps.status.get(job_id)
    if record is None:
        return None
    current = events.position(record)
    latest = await hub.last_event(job_filter)
    if latest is not None and latest.position >= current:
        return latest
    snapshot = HubEvent(sequence=last, tenant=owner_of(record), kind="job", target=job_id,
                        envelope=events.job_event(record))
    if _age_seconds(record.get("updated_at")) > IN_FLIGHT_SECONDS:
        return snapshot  # its event expired long ago: nothing to wait for
    with contextlib.suppress(TimeoutError, StreamEnded):
        async with asyncio.timeout(SNAPSHOT_WAIT_SECONDS):
            while True:
                event = await listener.next(None)
                if event is not None and event.position >= current:
                    return event
    return snapshot


def _age_seconds(timestamp: str | None) -> float:
    """How long ago a status was written (by the writer's clock); 0 when unreadable."""
    try:
        written = datetime.fromisoformat((timestamp or "").replace("Z", "+00:00"))
        return (datetime.now(timezone.utc) - written).total_seconds()
    except ValueError:
        return 0.0


# --- Tokens -----------------------------------------------------------------------------


async def create_token(request: web.Request) -> web.Response:
    """``{"token", "expires_at"}``: a stream token for the caller's tenant, bound to one job
    when the optional JSON body names it (``{"job_id": ...}``, a job the caller may see)."""
    ctx = context(request)
    tenant = request[TENANT]
    job_id = await _token_job(request, ctx)
    token, expires_at = stream_tokens.mint(ctx.settings.signing_key(), tenant.name, tenant.role.value, job_id,
                                           ctx.settings.events_token_ttl)
    expires = datetime.fromtimestamp(expires_at, timezone.utc).isoformat().replace("+00:00", "Z")
    return web.json_response({"token": token, "expires_at": expires, "job_id": job_id},
                             headers={"Cache-Control": "no-store"})


async def _token_job(request: web.Request, ctx: ApiContext) -> str | None:
    if not request.can_read_body:
        return None
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise PixqError(ErrorCode.PAYLOAD_TOO_LARGE, f"the body must be at most {MAX_BODY_BYTES} bytes")
    raw = await request.content.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise PixqError(ErrorCode.PAYLOAD_TOO_LARGE, f"the body must be at most {MAX_BODY_BYTES} bytes")
    if not raw.strip():
        return None
    try:
        body = json.loads(raw)
    except ValueError:
        raise PixqError(ErrorCode.INVALID_REQUEST, "the body must be JSON: {} or {\"job_id\": \"...\"}") from None
    if not isinstance(body, dict) or set(body) - {"job_id"}:
        raise PixqError(ErrorCode.INVALID_PARAMETERS, "the body may only hold job_id")
    job_id = body.get("job_id")
    if job_id is None:
        return None
    if not isinstance(job_id, str) or not names.is_job_id(job_id):
        raise PixqError(ErrorCode.INVALID_PARAMETERS, "job_id must be a job id")
    record = await ctx.deps.status.get(job_id)
    tenant = request[TENANT]
    if record is None or not (tenant.is_admin or owner_of(record) == tenant.name):
        raise PixqError(ErrorCode.NOT_FOUND, "no such job")
    return job_id
