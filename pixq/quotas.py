"""Per-tenant quotas at submit: jobs in flight (MAX_JOBS_IN_FLIGHT) and a monthly megapixel budget.

Jobs in flight are counted by the status store itself (pixq.status): each tenant has a
sorted set of its jobs that are queued, processing or retrying, kept by the one Lua script
every status write goes through, so the set changes in the same atomic step as the status.
There is no separate counter that a crashed API or worker could leave wrong. The set can
still hold members that no longer count: a job whose status hash expired or was deleted, a
terminal status written around the script, or a batch item's reservation (``r:<job id>``)
whose API died before creating the job. The create script drops those when, and only when,
the tenant is at its cap (looking at the ``PRUNE_LIMIT`` oldest members), so no crash
leaves a tenant short: at most a dead API's reservations count, for
``RESERVATION_GRACE_SECONDS``.

The monthly budget (a tenant's ``megapixels_per_month`` in TENANTS_FILE) counts the input
megapixels of completed jobs: the completing status write adds them to the tenant's key for
the current UTC month (pixq.names.megapixels_key), once, in the same script. A submit is
refused once the month's usage has reached the budget; jobs already in flight still run, so
usage can pass the budget by what they add.

This module holds the policy (which caps apply, what a refusal says); the counting is in
pixq.status, where it cannot be bypassed.
"""

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from pixq.errors import ErrorCode, PixqError

if TYPE_CHECKING:  # pixq.status raises these; it must not import the tenants' module at run time
    from pixq.settings import Settings
    from pixq.tenants import Tenant

PRUNE_LIMIT = 100
"""Oldest members looked at when a tenant is at its cap: bounds the create script's work
(~100 HGETs), so a refused submit costs Redis about what an accepted one does."""
RESERVATION_GRACE_SECONDS = 120
"""How long a batch item's reservation counts without its job being created: a batch of 100
items is accepted in seconds (MAX_REQUEST_BYTES bounds its uploads); after that it can only
be a dead API's, and is dropped."""
USAGE_TTL_SECONDS = 40 * 86400
"""A month's usage key outlives its month by about ten days, then expires."""
IN_FLIGHT_RETRY_AFTER = 5
"""Retry-After (s) of a QUOTA_EXCEEDED for jobs in flight: a slot frees when any of the
tenant's jobs finishes, which the API cannot predict; a few seconds is about one job."""


class QuotaExceeded(PixqError):
    """429 QUOTA_EXCEEDED with the seconds after which a retry may succeed (the envelope's
    ``Retry-After``, api.middleware.error_response) and the quota that refused."""

    def __init__(self, message: str, retry_after: int, quota: str) -> None:
        super().__init__(ErrorCode.QUOTA_EXCEEDED, message, retry_after=retry_after)
        self.quota = quota
        """Which quota refused: the ``quota`` label of pixq_quota_refusals_total."""


@dataclass(frozen=True)
class TenantQuota:
    """What a tenant's new jobs are held to (pixq.status ``create`` and ``reserve_in_flight``)."""

    tenant: str
    max_jobs_in_flight: int
    megapixels_per_month: float | None = None


def quota_of(settings: "Settings", tenant: "Tenant") -> TenantQuota:
    """The tenant's ``max_jobs_in_flight`` from TENANTS_FILE, else MAX_JOBS_IN_FLIGHT; its
    ``megapixels_per_month`` (no budget when unset)."""
    return TenantQuota(tenant.name, tenant.settings.max_jobs_in_flight or settings.max_jobs_in_flight,
                       tenant.settings.megapixels_per_month)


def month_of(moment: datetime) -> str:
    """``YYYY-MM`` of a moment in UTC: the budget's period. (Formatted by hand: strftime was
    1 % of a worker's event-loop samples, on every completed job.)"""
    utc = moment.astimezone(timezone.utc)
    return f"{utc.year:04d}-{utc.month:02d}"


def seconds_to_next_month(moment: datetime) -> int:
    """Whole seconds from ``moment`` to the next UTC month, when a used-up budget renews."""
    moment = moment.astimezone(timezone.utc)
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    return max(1, int((datetime(year, month, 1, tzinfo=timezone.utc) - moment).total_seconds() + 0.999))


def input_megapixels(result: Any) -> float | None:
    """Megapixels a completed job's input counts for: width x height from its header
    (``result.input``, pixq.jobs.JobResult), in millions; None when unknown. One frame, as
    the worker decodes only the first page or frame (worker.imaging.load)."""
    header = result.get("input") if isinstance(result, dict) else None
    if not isinstance(header, dict):
        return None
    width, height = header.get("width"), header.get("height")
    if not all(isinstance(value, int) and not isinstance(value, bool) and value > 0 for value in (width, height)):
        return None
    return width * height / 1_000_000


def jobs_in_flight_exceeded(tenant: str, cap: int, wanted: int = 1) -> QuotaExceeded:
    """The refusal of ``wanted`` new jobs (a submit: 1, a batch: its items) past ``cap``."""
    what = "one more job" if wanted == 1 else f"{wanted} more jobs"
    return QuotaExceeded(f"{what} would take tenant {tenant!r} over its cap of {cap} jobs in flight "
                         "(queued, processing or retrying; MAX_JOBS_IN_FLIGHT or the tenant's "
                         "max_jobs_in_flight): retry when some finish", IN_FLIGHT_RETRY_AFTER, "jobs_in_flight")


def megapixels_exceeded(tenant: str, budget: float, now: datetime) -> QuotaExceeded:
    """The refusal once this month's input megapixels reached the tenant's budget."""
    return QuotaExceeded(f"tenant {tenant!r} has used its budget of {budget:g} input megapixels for "
                         f"{month_of(now)} (megapixels_per_month); it renews on the 1st (UTC)",
                         seconds_to_next_month(now), "megapixels")
