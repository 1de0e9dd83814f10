"""How a worker records job statuses; the one place that knows a status update's position."""

from typing import Any

from pixq.jobs import JobMessage, JobStatus
from pixq.status import StatusStore


class StatusWriter:
    def __init__(self, status: StatusStore) -> None:
        self.status = status

    async def write(self, job: JobMessage, attempt: int, status: JobStatus, **fields: Any) -> bool:
        """Advance the job's status; the full identity is written too, so a status lost from
        Redis (flushed, restarted without persistence) is rebuilt from the message."""
        identity = {"job_id": job.job_id, "type": job.type.value, "created_at": job.metadata.created_at,
                    "request_id": job.metadata.request_id}
        return await self.status.advance(job.job_id, job.metadata.generation, attempt, status,
                                         **identity, **fields)
