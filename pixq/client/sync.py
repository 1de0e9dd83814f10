"""``Client``: the blocking client, the same code as AsyncClient run on a private event loop.

One implementation: each method below hands its AsyncClient call to an event loop running in a
background thread and waits for the answer; event streams and job listings become ordinary
iterators, one item fetched per step. So retries, errors and models are exactly the async
client's, and a Client works in any thread, also one that runs an event loop of its own.

    with Client("http://127.0.0.1:8080", api_key="...") as pixq:
        accepted = pixq.resize("photo.jpg", ResizeParams(width=512))
        done = pixq.wait_for_job(accepted.job_id, timeout=60)
        pixq.download(done.result.url, "small.jpg")
"""

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pixq.client.aio import DEFAULT_TIMEOUT, AsyncClient, Source
from pixq.client.files import FileSource
from pixq.client.models import JobVersion, Uploaded
from pixq.client.retry import RetryPolicy
from pixq.client.sse import ServerEvent, StreamPolicy
from pixq.schemas import (BatchAccepted, BatchDocument, BatchItem, DeadJobEntry, DeadJobPage, DeliveryPage, Health,
                          JobAccepted, JobDocument, JobPage, Priority, PurgeAll, PurgeOne, ReplayManyResult,
                          ReplayResult, StreamToken, UploadGrant)
from pixq.spec import AnalyzeOptions, CropParams, PipelineSpec, ResizeParams

T = TypeVar("T")


class Client:
    def __init__(self, base_url: str = "http://127.0.0.1:8080", api_key: str | None = None, *,
                 retry: RetryPolicy | None = None, stream_policy: StreamPolicy | None = None,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="pixq-client", daemon=True)
        self._thread.start()
        self.aio = AsyncClient(base_url, api_key, retry=retry, stream_policy=stream_policy, timeout=timeout)
        """The async client doing the work (its HTTP session lives on this client's loop)."""

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP session and stop the loop's thread (idempotent)."""
        if self._loop.is_closed():
            return
        self._run(self.aio.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def _run(self, call: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(call, self._loop).result()

    def _iterate(self, stream: AsyncIterator[T]) -> Iterator[T]:
        """An async iterator as a blocking one; leaving the loop early closes the stream."""
        try:
            while True:
                try:
                    item = self._run(anext(stream))
                except StopAsyncIteration:
                    return
                yield item
        finally:
            if not self._loop.is_closed():
                self._run(stream.aclose())  # type: ignore[attr-defined]

    # --- Submits (see AsyncClient for each) ---------------------------------------------------

    def resize(self, source: Source, parameters: ResizeParams | Mapping[str, Any] | None = None, *,
               callback_url: str | None = None, priority: Priority | None = None,
               idempotency_key: str | None = None, filename: str | None = None) -> JobAccepted:
        return self._run(self.aio.resize(source, parameters, callback_url=callback_url, priority=priority,
                                         idempotency_key=idempotency_key, filename=filename))

    def crop(self, source: Source, parameters: CropParams | Mapping[str, Any] | None = None, *,
             callback_url: str | None = None, priority: Priority | None = None,
             idempotency_key: str | None = None, filename: str | None = None) -> JobAccepted:
        return self._run(self.aio.crop(source, parameters, callback_url=callback_url, priority=priority,
                                       idempotency_key=idempotency_key, filename=filename))

    def pipeline(self, source: Source, spec: PipelineSpec | Mapping[str, Any] | None = None, *,
                 preset: str | None = None, callback_url: str | None = None, priority: Priority | None = None,
                 idempotency_key: str | None = None, filename: str | None = None) -> JobAccepted:
        return self._run(self.aio.pipeline(source, spec, preset=preset, callback_url=callback_url, priority=priority,
                                           idempotency_key=idempotency_key, filename=filename))

    def analyze(self, source: Source, parameters: AnalyzeOptions | Mapping[str, Any] | None = None, *,
                callback_url: str | None = None, priority: Priority | None = None,
                idempotency_key: str | None = None, filename: str | None = None) -> JobAccepted:
        return self._run(self.aio.analyze(source, parameters, callback_url=callback_url, priority=priority,
                                          idempotency_key=idempotency_key, filename=filename))

    def submit_batch(self, jobs: Sequence[BatchItem | Mapping[str, Any]], *,
                     files: Mapping[str, FileSource] | None = None, callback_url: str | None = None,
                     idempotency_key: str | None = None) -> BatchAccepted:
        return self._run(self.aio.submit_batch(jobs, files=files, callback_url=callback_url,
                                               idempotency_key=idempotency_key))

    # --- Direct uploads -----------------------------------------------------------------------

    def create_upload(self, content_type: str | None = None) -> UploadGrant:
        return self._run(self.aio.create_upload(content_type))

    def upload(self, source: FileSource, content_type: str | None = None, filename: str | None = None) -> Uploaded:
        return self._run(self.aio.upload(source, content_type, filename))

    # --- Jobs ---------------------------------------------------------------------------------

    def get_job(self, job_id: str) -> JobDocument:
        return self._run(self.aio.get_job(job_id))

    def poll_job(self, job_id: str, etag: str | None = None, wait: str | float | None = None) -> JobVersion:
        return self._run(self.aio.poll_job(job_id, etag, wait))

    def list_jobs(self, *, limit: int | None = None, cursor: str | None = None, status: str | None = None,
                  type: str | None = None, created_after: str | None = None, created_before: str | None = None,
                  tenant: str | None = None) -> JobPage:
        return self._run(self.aio.list_jobs(limit=limit, cursor=cursor, status=status, type=type,
                                            created_after=created_after, created_before=created_before,
                                            tenant=tenant))

    def iter_jobs(self, *, page_size: int = 100, cursor: str | None = None, status: str | None = None,
                  type: str | None = None, created_after: str | None = None, created_before: str | None = None,
                  tenant: str | None = None) -> Iterator[JobDocument]:
        return self._iterate(self.aio.iter_jobs(page_size=page_size, cursor=cursor, status=status, type=type,
                                                created_after=created_after, created_before=created_before,
                                                tenant=tenant))

    def wait_for_job(self, job_id: str, timeout: float | None = None) -> JobDocument:
        return self._run(self.aio.wait_for_job(job_id, timeout))

    def download(self, url: str, target: str | Path | None = None) -> bytes | Path:
        return self._run(self.aio.download(url, target))

    # --- Events -------------------------------------------------------------------------------

    def job_events(self, job_id: str, last_event_id: str | None = None) -> Iterator[ServerEvent]:
        return self._iterate(self.aio.job_events(job_id, last_event_id))

    def tenant_events(self, *, status: str | Sequence[str] | None = None, type: str | Sequence[str] | None = None,
                      tenant: str | None = None, last_event_id: str | None = None,
                      on_open: Callable[[], None] | None = None) -> Iterator[ServerEvent]:
        return self._iterate(self.aio.tenant_events(status=status, type=type, tenant=tenant,
                                                    last_event_id=last_event_id, on_open=on_open))

    def create_stream_token(self, job_id: str | None = None) -> StreamToken:
        return self._run(self.aio.create_stream_token(job_id))

    # --- Batches and deliveries ---------------------------------------------------------------

    def get_batch(self, batch_id: str) -> BatchDocument:
        return self._run(self.aio.get_batch(batch_id))

    def job_deliveries(self, job_id: str) -> DeliveryPage:
        return self._run(self.aio.job_deliveries(job_id))

    def batch_deliveries(self, batch_id: str) -> DeliveryPage:
        return self._run(self.aio.batch_deliveries(batch_id))

    # --- Dead-letter queue (admin keys) --------------------------------------------------------

    def list_dead(self, *, limit: int | None = None, offset: int | None = None, error_code: str | None = None,
                  type: str | None = None) -> DeadJobPage:
        return self._run(self.aio.list_dead(limit=limit, offset=offset, error_code=error_code, type=type))

    def get_dead(self, job_id: str) -> DeadJobEntry:
        return self._run(self.aio.get_dead(job_id))

    def replay_dead(self, job_id: str) -> ReplayResult:
        return self._run(self.aio.replay_dead(job_id))

    def replay_dead_many(self, *, error_code: str | None = None, type: str | None = None) -> ReplayManyResult:
        return self._run(self.aio.replay_dead_many(error_code=error_code, type=type))

    def purge_dead(self, job_id: str) -> PurgeOne:
        return self._run(self.aio.purge_dead(job_id))

    def purge_dead_all(self) -> PurgeAll:
        return self._run(self.aio.purge_dead_all())

    # --- System -------------------------------------------------------------------------------

    def health_live(self) -> Health:
        return self._run(self.aio.health_live())

    def health_ready(self) -> Health:
        return self._run(self.aio.health_ready())

    def metrics(self) -> str:
        return self._run(self.aio.metrics())
