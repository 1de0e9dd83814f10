"""``AsyncClient``: every route of the pixq API (api/routes.py) as one typed async method.

    async with AsyncClient("http://127.0.0.1:8080", api_key="...") as pixq:
        accepted = await pixq.resize("photo.jpg", ResizeParams(width=512))
        done = await pixq.wait_for_job(accepted.job_id)
        await pixq.download(done.result.url, "small.jpg")

Inputs: a local file (path, bytes, binary file object) is uploaded as multipart; a
``StorageKeyInput``, ``UploadIdInput`` or ``UrlInput`` is sent as JSON. Parameters are the
server's own request models (pixq.spec: ResizeParams, CropParams, PipelineSpec,
AnalyzeOptions) or plain mappings; answers are the server's response models (pixq.schemas).

Retries (pixq.client.retry): every submit carries an ``Idempotency-Key`` (the caller's, or a
uuid4 made once per call) and is retried with that same key, so a retry can only ever return
the job the first attempt created. A batch gives each item without a key ``<key>-<index>``.
GETs and DELETEs are retried; DLQ replays, which are not idempotent, only after a 429.
"""

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from pydantic import BaseModel

from pixq.client import sse
from pixq.client.errors import EventsUnsupported, PixqClientError
from pixq.client.files import FileSource, image_type, local_file
from pixq.client.models import JobVersion, Uploaded
from pixq.client.retry import RetryPolicy
from pixq.client.sse import ServerEvent, StreamPolicy
from pixq.client.transport import Answer, Transport
from pixq.schemas import (BatchAccepted, BatchDocument, BatchItem, DeadJobEntry, DeadJobPage, DeliveryPage, Health,
                          JobAccepted, JobDocument, JobPage, JsonInput, Priority, PurgeAll, PurgeOne,
                          ReplayManyResult, ReplayResult, StorageKeyInput, StreamToken, UploadGrant, UploadIdInput,
                          UrlInput)
from pixq.spec import AnalyzeOptions, CropParams, PipelineSpec, ResizeParams

Model = TypeVar("Model", bound=BaseModel)
Source = FileSource | StorageKeyInput | UploadIdInput | UrlInput
Parameters = BaseModel | Mapping[str, Any]

TERMINAL = frozenset({"completed", "failed"})
POLL_SECONDS = 0.5
"""Between reads of a job on a server that has neither SSE nor long-poll (an old pixq)."""
LONG_POLL = "30s"
LONG_POLL_TIMEOUT = 75.0
"""Bound on one long-poll request: the server holds it at most 60 s."""
DEFAULT_TIMEOUT = 300.0
"""Bound on one request (a large upload included); streams and long-polls have their own."""


def _dump(parameters: Parameters | None) -> dict[str, Any]:
    """What the caller set (a model's defaults stay the server's to apply)."""
    if parameters is None:
        return {}
    if isinstance(parameters, BaseModel):
        return parameters.model_dump(mode="json", exclude_unset=True)
    return dict(parameters)


def _form_value(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _csv(values: str | Sequence[str] | None) -> str | None:
    return values if values is None or isinstance(values, str) else ",".join(values)


def _clean(query: Mapping[str, Any]) -> dict[str, str]:
    return {name: _form_value(value) for name, value in query.items() if value is not None}


class AsyncClient:
    """The pixq API over one aiohttp session; use ``async with`` (or ``close``) to release it."""

    def __init__(self, base_url: str = "http://127.0.0.1:8080", api_key: str | None = None, *,
                 retry: RetryPolicy | None = None, stream_policy: StreamPolicy | None = None,
                 timeout: float = DEFAULT_TIMEOUT, session: aiohttp.ClientSession | None = None) -> None:
        """``session``: share one the caller owns (it is then not closed by ``close``)."""
        self.transport = Transport(base_url, api_key, retry or RetryPolicy(), timeout, session)
        self.stream_policy = stream_policy or sse.DEFAULT_STREAM_POLICY

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.transport.close()

    # --- Submits ----------------------------------------------------------------------------

    async def resize(self, source: Source, parameters: ResizeParams | Mapping[str, Any] | None = None, *,
                     callback_url: str | None = None, priority: Priority | None = None,
                     idempotency_key: str | None = None, filename: str | None = None) -> JobAccepted:
        return await self.submit("/api/v1/resize", source, _dump(parameters), callback_url=callback_url,
                                 priority=priority, idempotency_key=idempotency_key, filename=filename)

    async def crop(self, source: Source, parameters: CropParams | Mapping[str, Any] | None = None, *,
                   callback_url: str | None = None, priority: Priority | None = None,
                   idempotency_key: str | None = None, filename: str | None = None) -> JobAccepted:
        return await self.submit("/api/v1/crop", source, _dump(parameters), callback_url=callback_url,
                                 priority=priority, idempotency_key=idempotency_key, filename=filename)

    async def pipeline(self, source: Source, spec: PipelineSpec | Mapping[str, Any] | None = None, *,
                       preset: str | None = None, callback_url: str | None = None, priority: Priority | None = None,
                       idempotency_key: str | None = None, filename: str | None = None) -> JobAccepted:
        """``POST /api/v1/jobs``: a ``spec`` (steps, variants) or a ``preset`` (``name`` or ``name@version``)."""
        if (spec is None) == (preset is None):
            raise ValueError("give exactly one of spec or preset")
        extra = {"preset": preset} if preset is not None else {"spec": _dump(spec)}
        return await self.submit("/api/v1/jobs", source, {}, extra=extra, callback_url=callback_url,
                                 priority=priority, idempotency_key=idempotency_key, filename=filename)

    async def analyze(self, source: Source, parameters: AnalyzeOptions | Mapping[str, Any] | None = None, *,
                      callback_url: str | None = None, priority: Priority | None = None,
                      idempotency_key: str | None = None, filename: str | None = None) -> JobAccepted:
        return await self.submit("/api/v1/analyze", source, _dump(parameters), callback_url=callback_url,
                                 priority=priority, idempotency_key=idempotency_key, filename=filename)

    async def submit(self, path: str, source: Source, parameters: dict[str, Any], *,
                     extra: dict[str, Any] | None = None, callback_url: str | None = None,
                     priority: Priority | None = None, idempotency_key: str | None = None,
                     filename: str | None = None) -> JobAccepted:
        """Any submit route: multipart for a local file, JSON for a named input. ``extra`` holds
        top-level fields (a pipeline's ``spec`` or ``preset``)."""
        headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
        top = {**(extra or {}), **_clean({"callback_url": callback_url, "priority": priority})}
        if isinstance(source, (StorageKeyInput, UploadIdInput, UrlInput)):
            document: dict[str, Any] = {"input": source.model_dump(mode="json"), **top}
            if not extra:  # a pipeline's spec or preset stands instead of parameters
                document["parameters"] = parameters
            answer = await self.transport.request("POST", path, idempotent=True, json_body=document, headers=headers)
        else:
            upload = local_file(source, filename)
            fields = {**{name: _form_value(value) for name, value in parameters.items()},
                      **{name: json.dumps(value) if name == "spec" else str(value) for name, value in top.items()}}

            def body(files: contextlib.ExitStack) -> aiohttp.FormData:
                form = aiohttp.FormData()
                form.add_field("file", upload.open(files), filename=upload.name, content_type=upload.content_type())
                for name, value in fields.items():
                    form.add_field(name, value)
                return form

            answer = await self.transport.request("POST", path, idempotent=True, body=body, headers=headers)
        return JobAccepted.model_validate(answer.body)

    async def submit_batch(self, jobs: Sequence[BatchItem | Mapping[str, Any]], *,
                           files: Mapping[str, FileSource] | None = None, callback_url: str | None = None,
                           idempotency_key: str | None = None) -> BatchAccepted:
        """``POST /api/v1/jobs/batch``: up to 100 items. ``files`` maps part names to local files
        that items name with ``"input": {"part": name}`` (then the batch is multipart). Items
        without an ``idempotency_key`` get ``<key>-<index>``, so a retried batch replays them."""
        key = idempotency_key or str(uuid.uuid4())
        items = []
        for index, job in enumerate(jobs):
            item = job.model_dump(mode="json", exclude_none=True) if isinstance(job, BaseModel) else dict(job)
            item.setdefault("idempotency_key", f"{key}-{index}")
            items.append(item)
        document: dict[str, Any] = {"jobs": items, **_clean({"callback_url": callback_url})}
        if not files:
            answer = await self.transport.request("POST", "/api/v1/jobs/batch", idempotent=True, json_body=document)
            return BatchAccepted.model_validate(answer.body)
        parts = {name: local_file(source) for name, source in files.items()}

        def body(opened: contextlib.ExitStack) -> aiohttp.FormData:
            form = aiohttp.FormData()
            form.add_field("jobs", json.dumps(document), content_type="application/json")
            for name, part in parts.items():
                form.add_field(name, part.open(opened), filename=part.name, content_type=part.content_type())
            return form

        answer = await self.transport.request("POST", "/api/v1/jobs/batch", idempotent=True, body=body)
        return BatchAccepted.model_validate(answer.body)

    # --- Direct uploads -----------------------------------------------------------------------

    async def create_upload(self, content_type: str | None = None) -> UploadGrant:
        """``POST /api/v1/uploads``: where to send the bytes. Repeating it is harmless (an unused
        grant expires), so it is retried like a read."""
        document = {"content_type": content_type} if content_type else None
        answer = await self.transport.request("POST", "/api/v1/uploads", idempotent=True, json_body=document)
        return UploadGrant.model_validate(answer.body)

    async def upload(self, source: FileSource, content_type: str | None = None,
                     filename: str | None = None) -> Uploaded:
        """A direct upload: the grant, then the grant's fields and the file POSTed to its URL
        (S3 itself, or the API's ``/uploads/{token}``) without the API key, which the signed
        form replaces (S3 refuses a foreign Authorization header). Submit it with
        ``UploadIdInput(upload_id=...)``."""
        upload = local_file(source, filename)
        if content_type is None:
            content_type = image_type(upload.head(), upload.name)
        grant = await self.create_upload(content_type)

        def body(files: contextlib.ExitStack) -> aiohttp.FormData:
            form = aiohttp.FormData()
            for name, value in grant.fields.items():
                form.add_field(name, value)
            if not any(name.lower() == "content-type" for name in grant.fields):
                form.add_field("Content-Type", content_type)
            form.add_field("file", upload.open(files), filename=upload.name, content_type=content_type)
            return form

        await self.transport.request("POST", grant.url, idempotent=True, body=body, authorized=False)
        return Uploaded(upload_id=grant.upload_id, storage_key=grant.fields.get("key"), expires_at=grant.expires_at)

    # --- Jobs ---------------------------------------------------------------------------------

    async def get_job(self, job_id: str) -> JobDocument:
        return await self._get(JobDocument, f"/api/v1/jobs/{job_id}")

    async def poll_job(self, job_id: str, etag: str | None = None, wait: str | float | None = None) -> JobVersion:
        """A conditional GET: with ``etag`` (a previous JobVersion's) the answer has no document
        while the job has not moved on; with ``wait`` as well (``"30s"``, at most 60 s) the
        server holds the request until it moves on or the wait ends (long-poll)."""
        headers = {"If-None-Match": etag} if etag else {}
        params = {"wait": f"{wait}s" if isinstance(wait, (int, float)) else wait} if wait and etag else {}
        answer = await self.transport.request("GET", f"/api/v1/jobs/{job_id}", idempotent=True, params=params,
                                              headers=headers, ok=frozenset({304}),
                                              timeout=LONG_POLL_TIMEOUT if params else None)
        document = None if answer.status == 304 else JobDocument.model_validate(answer.body)
        return JobVersion(document=document, etag=answer.headers.get("ETag"))

    async def list_jobs(self, *, limit: int | None = None, cursor: str | None = None, status: str | None = None,
                        type: str | None = None, created_after: str | None = None,
                        created_before: str | None = None, tenant: str | None = None) -> JobPage:
        """One page of the caller's jobs, newest first; ``next_cursor`` continues it."""
        query = _clean({"limit": limit, "cursor": cursor, "status": status, "type": type,
                        "created_after": created_after, "created_before": created_before, "tenant": tenant})
        return await self._get(JobPage, "/api/v1/jobs", query)

    async def iter_jobs(self, *, page_size: int = 100, cursor: str | None = None, status: str | None = None,
                        type: str | None = None, created_after: str | None = None,
                        created_before: str | None = None, tenant: str | None = None) -> AsyncIterator[JobDocument]:
        """Every job, newest first, following ``next_cursor`` page after page."""
        while True:
            page = await self.list_jobs(limit=page_size, cursor=cursor, status=status, type=type,
                                        created_after=created_after, created_before=created_before, tenant=tenant)
            for item in page.items:
                yield item
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    async def wait_for_job(self, job_id: str, timeout: float | None = None) -> JobDocument:
        """The job once completed or failed, read afresh (its download URLs are new). Follows
        the job's event stream; on a server without one, long-polls. ``asyncio.TimeoutError``
        after ``timeout`` seconds."""
        async def finish() -> None:
            try:
                async with contextlib.aclosing(self.job_events(job_id)) as events:
                    async for _ in events:
                        pass
            except EventsUnsupported:
                await self._poll_until_terminal(job_id)

        await asyncio.wait_for(finish(), timeout)
        return await self.get_job(job_id)

    async def _poll_until_terminal(self, job_id: str) -> None:
        version = await self.poll_job(job_id)
        while version.document is None or version.document.status not in TERMINAL:
            asked = time.monotonic()
            version = await self.poll_job(job_id, version.etag, LONG_POLL) if version.etag else \
                await self.poll_job(job_id)
            if version.document is not None and version.document.status not in TERMINAL \
                    and time.monotonic() - asked < POLL_SECONDS:
                await asyncio.sleep(POLL_SECONDS)  # a server that does not hold long-polls

    async def download(self, url: str, target: str | Path | None = None) -> bytes | Path:
        """A result's ``url`` (presigned S3, or the API's signed ``/files/...``): its bytes, or
        written to ``target`` (parents created) which is returned."""
        chunks: list[bytes] = []
        await self.transport.fetch(url, chunks.append)
        data = b"".join(chunks)
        if target is None:
            return data
        path = Path(target)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    # --- Events -------------------------------------------------------------------------------

    async def job_events(self, job_id: str, last_event_id: str | None = None) -> AsyncIterator[ServerEvent]:
        """``GET /api/v1/jobs/{id}/events``: the job's current status, then each change, ending
        after the terminal event; dropped connections are resumed with Last-Event-ID. A
        ``reset`` event (``event.event == "reset"``) says a resume point had expired.
        EventsUnsupported when the server has no stream for it (unknown job, older server)."""
        path = f"/api/v1/jobs/{job_id}/events"
        async with contextlib.aclosing(self._stream(path, {}, last_event_id, None)) as events:
            async for event in events:
                yield event
                if event.event.startswith("job.") and event.json().get("data", {}).get("status") in TERMINAL:
                    return

    async def tenant_events(self, *, status: str | Sequence[str] | None = None, type: str | Sequence[str] | None = None,
                            tenant: str | None = None, last_event_id: str | None = None,
                            on_open: Callable[[], None] | None = None) -> AsyncIterator[ServerEvent]:
        """``GET /api/v1/events``: every event of the caller's tenant from now (or after
        ``last_event_id``), filtered by job ``status``/``type``; endless. ``on_open`` is called
        each time a connection is established."""
        query = _clean({"status": _csv(status), "type": _csv(type), "tenant": tenant})
        async with contextlib.aclosing(self._stream("/api/v1/events", query, last_event_id, on_open)) as events:
            async for event in events:
                yield event

    def _stream(self, path: str, query: dict[str, str], last_event_id: str | None,
                on_open: Callable[[], None] | None) -> AsyncIterator[ServerEvent]:
        return sse.resuming(lambda last_id: self.transport.events(path, query, last_id, on_open), path,
                            last_event_id, self.stream_policy)

    async def create_stream_token(self, job_id: str | None = None) -> StreamToken:
        """A short-lived ``?access_token=`` for the SSE routes (for browsers' EventSource)."""
        document = {"job_id": job_id} if job_id else None
        answer = await self.transport.request("POST", "/api/v1/events/token", idempotent=True, json_body=document)
        return StreamToken.model_validate(answer.body)

    # --- Batches and deliveries --------------------------------------------------------------

    async def get_batch(self, batch_id: str) -> BatchDocument:
        return await self._get(BatchDocument, f"/api/v1/batches/{batch_id}")

    async def job_deliveries(self, job_id: str) -> DeliveryPage:
        return await self._get(DeliveryPage, f"/api/v1/jobs/{job_id}/deliveries")

    async def batch_deliveries(self, batch_id: str) -> DeliveryPage:
        return await self._get(DeliveryPage, f"/api/v1/batches/{batch_id}/deliveries")

    # --- Dead-letter queue (admin keys) --------------------------------------------------------

    async def list_dead(self, *, limit: int | None = None, offset: int | None = None, error_code: str | None = None,
                        type: str | None = None) -> DeadJobPage:
        query = _clean({"limit": limit, "offset": offset, "error_code": error_code, "type": type})
        return await self._get(DeadJobPage, "/api/v1/dlq", query)

    async def get_dead(self, job_id: str) -> DeadJobEntry:
        return await self._get(DeadJobEntry, f"/api/v1/dlq/{job_id}")

    async def replay_dead(self, job_id: str) -> ReplayResult:
        """Not idempotent (a second replay is a second run): retried only after a 429."""
        answer = await self.transport.request("POST", f"/api/v1/dlq/{job_id}/replay", idempotent=False)
        return ReplayResult.model_validate(answer.body)

    async def replay_dead_many(self, *, error_code: str | None = None, type: str | None = None) -> ReplayManyResult:
        query = _clean({"error_code": error_code, "type": type})
        answer = await self.transport.request("POST", "/api/v1/dlq/replay", idempotent=False, params=query)
        return ReplayManyResult.model_validate(answer.body)

    async def purge_dead(self, job_id: str) -> PurgeOne:
        answer = await self.transport.request("DELETE", f"/api/v1/dlq/{job_id}", idempotent=True)
        return PurgeOne.model_validate(answer.body)

    async def purge_dead_all(self) -> PurgeAll:
        answer = await self.transport.request("DELETE", "/api/v1/dlq", idempotent=True)
        return PurgeAll.model_validate(answer.body)

    # --- System -------------------------------------------------------------------------------

    async def health_live(self) -> Health:
        return await self._get(Health, "/health/live")

    async def health_ready(self) -> Health:
        """The readiness document, also when it says ``unavailable`` (503): that is an answer."""
        answer = await self.transport.request("GET", "/health/ready", idempotent=True, ok=frozenset({503}))
        return Health.model_validate(answer.body)

    async def metrics(self) -> str:
        """The Prometheus exposition text of ``/metrics``."""
        answer = await self.transport.request("GET", "/metrics", idempotent=True)
        return answer.body if isinstance(answer.body, str) else json.dumps(answer.body)

    async def _get(self, model: type[Model], path: str, params: Mapping[str, str] | None = None) -> Model:
        answer: Answer = await self.transport.request("GET", path, idempotent=True, params=params)
        if not isinstance(answer.body, dict):
            raise PixqClientError(f"GET {path} answered {answer.status} without a JSON object")
        return model.model_validate(answer.body)


__all__ = ["AsyncClient", "JsonInput", "Parameters", "Source"]
