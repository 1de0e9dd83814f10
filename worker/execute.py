"""One attempt of one job: fetch the input, run the libvips pipeline in a thread, store every output.

A stored input is read, processed and its outputs stored in one call on the pool's thread
(Storage's blocking read_bytes / write_bytes), so the event loop hands each attempt to a thread
once (twice with REUSE_OUTPUTS: the fingerprint is looked up in Redis between the two).

With a ReuseIndex (REUSE_OUTPUTS), an input and spec already seen for this tenant skip the
pipeline: the earlier job's outputs are copied to this job's keys instead (worker.reuse).
"""

import asyncio
from concurrent.futures import ThreadPoolExecutor

import structlog

from pixq import formats, names
from pixq.errors import ErrorCode, PixqError
from pixq.jobs import JobMessage, JobResult, OutputInfo
from pixq.limits import Limits
from pixq.sources import SourceFetcher
from pixq.storage import Storage
from worker.imaging import Cancellation, process_job
from worker.metrics import REUSED
from worker.reuse import Earlier, ReuseIndex, fingerprint

log = structlog.get_logger("pixq.worker")


class JobRunner:
    """Runs attempts with libvips off the event loop; JOB_TIMEOUT bounds each attempt."""

    def __init__(self, storage: Storage, limits: Limits, concurrency: int, timeout: float,
                 sources: SourceFetcher | None = None, reuse: ReuseIndex | None = None) -> None:
        self.storage = storage
        self.limits = limits
        self.timeout = timeout
        self.sources = sources
        """Fetches ``input.url`` inputs; None in a runner built without settings (then such a job fails)."""
        self.reuse = reuse
        """Index of completed jobs by fingerprint; None with REUSE_OUTPUTS=false (every job is processed)."""
        # One spare thread: a timed-out attempt keeps its thread until libvips notices the kill
        # flag. Not more: every thread that allocates gets its own malloc arena (worker.memory).
        self.pool = ThreadPoolExecutor(max_workers=concurrency + 1, thread_name_prefix="vips")

    async def run(self, job: JobMessage) -> JobResult:
        cancel = Cancellation()
        try:
            # asyncio.timeout, not wait_for: no second task per job (issue 16's plumbing budget)
            async with asyncio.timeout(self.timeout):
                return await self._attempt(job, cancel)
        except TimeoutError:
            cancel.set()
            raise PixqError(ErrorCode.TIMEOUT, f"attempt exceeded JOB_TIMEOUT={self.timeout:g}s") from None
        except asyncio.CancelledError:
            cancel.set()  # shutdown past the grace: stop libvips too, or exit waits for the thread
            raise

    async def _attempt(self, job: JobMessage, cancel: Cancellation) -> JobResult:
        loop = asyncio.get_running_loop()
        # A source URL is fetched here, on the loop; a stored input is read on the pool's thread,
        # in the same trip as the work that follows (each trip costs the event loop a future, a
        # wake-up and a callback; issue 16's plumbing budget).
        data = await self.fetch_source(job) if job.input.url is not None else None
        digest = None
        if self.reuse is not None:
            data, digest = await loop.run_in_executor(self.pool, self._read_and_fingerprint, job, data)
            earlier = await self.reuse.lookup(job.tenant, digest)
            # A record naming this very job: a redelivery after the record was written. Process
            # it again rather than copy its outputs onto themselves.
            if earlier is not None and earlier.job_id != job.job_id:
                reused = await self.copy_outputs(job, earlier)
                if reused is not None:
                    REUSED.inc()
                    await self.reuse.record(job.tenant, digest, job.job_id, reused)
                    return reused
        result = await loop.run_in_executor(self.pool, self._process_and_store, job, data, cancel)
        if digest is not None:  # reuse is on; recorded only now: every output is stored
            await self.reuse.record(job.tenant, digest, job.job_id, result)
        return result

    def _stored_input(self, job: JobMessage) -> bytes:
        """The job's input from storage, blocking: on a pool thread."""
        assert job.input.storage_key is not None
        return self.storage.read_bytes(job.input.storage_key, self.limits.max_input_bytes)

    def _read_and_fingerprint(self, job: JobMessage, data: bytes | None) -> tuple[bytes, str]:
        """The input (read from storage when ``data`` is None) and its fingerprint (worker.reuse)."""
        if data is None:
            data = self._stored_input(job)
        return data, fingerprint(data, job.spec, self.limits)

    def _process_and_store(self, job: JobMessage, data: bytes | None, cancel: Cancellation) -> JobResult:
        """On a pool thread: read the stored input when ``data`` is None, run the pipeline and
        store every output. libvips' images (and a stored input read here) are freed on this
        thread, not on the event loop. A timed-out attempt (``cancel`` set) stores nothing more."""
        if data is None:
            data = self._stored_input(job)
        processed = process_job(data, job.spec, self.limits, cancel)
        del data
        outputs = []
        for output in processed.outputs:
            if cancel.is_set():
                raise PixqError(ErrorCode.TIMEOUT, "processing cancelled: job timeout")
            key = names.output_object_key(job.tenant, job.job_id, output.name, output.extension)
            self.storage.write_bytes(key, output.data, formats.mime_of(output.format))
            outputs.append(OutputInfo(name=output.name, storage_key=key, width=output.width,
                                      height=output.height, format=output.format, bytes=len(output.data)))
        return JobResult(variants=outputs, input=processed.input, analysis=processed.analysis)

    async def copy_outputs(self, job: JobMessage, earlier: Earlier) -> JobResult | None:
        """``earlier``'s outputs copied to this job's own keys (so deleting either job's outputs
        leaves the other's), as this job's result; None when one of them is gone (deleted,
        expired): the caller then processes the job, overwriting any copy made here. Another
        storage failure raises, as a failed put would."""
        outputs = []
        for output in earlier.result.variants:
            key = names.output_object_key(job.tenant, job.job_id, output.name, output.storage_key.rpartition(".")[2])
            try:
                await self.storage.copy(output.storage_key, key)
            except PixqError as exc:
                if exc.code is not ErrorCode.INPUT_NOT_FOUND:
                    raise
                log.info("reuse_outputs_gone", job_id=job.job_id, tenant=job.tenant, request_id=job.metadata.request_id,
                         earlier_job_id=earlier.job_id, storage_key=output.storage_key)
                return None
            outputs.append(output.model_copy(update={"storage_key": key}))
        return earlier.result.model_copy(update={"variants": outputs, "reused_from": earlier.job_id})

    async def fetch_source(self, job: JobMessage) -> bytes:
        """The input's bytes fetched from its source URL (pixq.sources)."""
        if self.sources is None:
            raise PixqError(ErrorCode.SOURCE_REFUSED, "this worker was started without source URL support")
        return await self.sources.fetch(job.input.url, job.tenant, job.job_id)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
