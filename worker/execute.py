"""One attempt of one job: fetch the input, run the libvips pipeline in a thread, store every output."""

import asyncio
from concurrent.futures import ThreadPoolExecutor

from pixq import formats, names
from pixq.errors import ErrorCode, PixqError
from pixq.jobs import JobMessage, JobResult, OutputInfo
from pixq.limits import Limits
from pixq.sources import SourceFetcher
from pixq.storage import Storage
from worker.imaging import Cancellation, process_job


class JobRunner:
    """Runs attempts with libvips off the event loop; JOB_TIMEOUT bounds each attempt."""

    def __init__(self, storage: Storage, limits: Limits, concurrency: int, timeout: float,
                 sources: SourceFetcher | None = None) -> None:
        self.storage = storage
        self.limits = limits
        self.timeout = timeout
        self.sources = sources
        """Fetches ``input.url`` inputs; None in a runner built without settings (then such a job fails)."""
        # One spare thread: a timed-out attempt keeps its thread until libvips notices the kill
        # flag. Not more: every thread that allocates gets its own malloc arena (worker.memory).
        self.pool = ThreadPoolExecutor(max_workers=concurrency + 1, thread_name_prefix="vips")

    async def run(self, job: JobMessage) -> JobResult:
        cancel = Cancellation()
        try:
            return await asyncio.wait_for(self._attempt(job, cancel), self.timeout)
        except asyncio.TimeoutError:
            cancel.set()
            raise PixqError(ErrorCode.TIMEOUT, f"attempt exceeded JOB_TIMEOUT={self.timeout:g}s") from None
        except asyncio.CancelledError:
            cancel.set()  # shutdown past the grace: stop libvips too, or exit waits for the thread
            raise

    async def _attempt(self, job: JobMessage, cancel: Cancellation) -> JobResult:
        data = await self.read_input(job)
        loop = asyncio.get_running_loop()
        processed = await loop.run_in_executor(self.pool, process_job, data, job.spec, self.limits, cancel)
        outputs = []
        for output in processed.outputs:
            key = names.output_object_key(job.tenant, job.job_id, output.name, output.extension)
            await self.storage.put_bytes(key, output.data, formats.mime_of(output.format))
            outputs.append(OutputInfo(name=output.name, storage_key=key, width=output.width,
                                      height=output.height, format=output.format, bytes=len(output.data)))
        return JobResult(variants=outputs, input=processed.input, analysis=processed.analysis)

    async def read_input(self, job: JobMessage) -> bytes:
        """The input's bytes: from storage, or fetched from its source URL (pixq.sources)."""
        if job.input.url is not None:
            if self.sources is None:
                raise PixqError(ErrorCode.SOURCE_REFUSED, "this worker was started without source URL support")
            return await self.sources.fetch(job.input.url, job.tenant, job.job_id)
        assert job.input.storage_key is not None
        return await self.storage.get_bytes(job.input.storage_key, self.limits.max_input_bytes)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
