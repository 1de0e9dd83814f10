"""The retry policy as pure functions: one immediate retry, then exponential backoff, then the DLQ.

``attempt`` is JetStream's delivery count (1 for the first try). MAX_RETRIES retries follow
the first attempt, so a job gets MAX_RETRIES + 1 attempts in all. An outage of storage, Redis
or NATS adds no delivery: the worker holds the attempt on its delivery and runs it again in
place (worker.outage), so the delivery count stays a count of the job's own failures (and of
crashes) for up to OUTAGE_HOLD_MAX of outage per delivery.
"""

from datetime import datetime, timedelta, timezone


def is_final_attempt(attempt: int, max_retries: int) -> bool:
    return attempt >= max_retries + 1


def retry_delay(attempt: int, backoff: list[float]) -> float:
    """Delay before attempt ``attempt + 1``: RETRY_BACKOFF's entry for this retry, the last repeating."""
    return backoff[min(max(attempt, 1) - 1, len(backoff) - 1)]


def next_attempt_at(delay: float, now: datetime | None = None) -> str:
    moment = (now or datetime.now(timezone.utc)) + timedelta(seconds=delay)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
