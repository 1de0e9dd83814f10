"""The outage gate: a worker pauses, and holds its jobs, while one of pixq's own dependencies is down.

Why: a storage, Redis or NATS outage is not the job's fault, yet before this gate every attempt
that met one was nak'ed with RETRY_BACKOFF, and an outage longer than the whole backoff
(7 s with ``1s,2s,4s``) dead-lettered healthy jobs. JetStream counts every nak as a delivery, so
the only way to spend no delivery is not to hand the message back at all. So:

- A probe (``run``: every PROBE_DOWN_SECONDS during an outage, every PROBE_UP_SECONDS otherwise;
  and on demand, after a failed attempt or for /health/ready) asks each dependency whether
  it answers (pixq.deps.Dependencies.check: Redis and storage pings, the NATS connection).
  While any is down the consumer pulls no new job and /health/ready answers 503.
- An attempt that fails with a dependency's error code (DEPENDENCY_OF) asks ``hold``: when the
  probe confirms an outage, the attempt waits (its message kept alive by in-progress acks)
  until every dependency answers again, then runs again in place on the same delivery.
- A hold is bounded by OUTAGE_HOLD_MAX: past it the failure counts as an attempt under the
  ordinary retry policy (worker.retry), so one outage costs at most one retry per OUTAGE_HOLD_MAX.

An error the probe does not confirm (the dependency answers a ping right after) is the job's
own failure and follows the retry policy: a bucket or key that refuses one job must not hold it
forever. SOURCE_UNAVAILABLE (a tenant's source URL) is never a dependency error.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog

from pixq.errors import ErrorCode, PixqError
from worker.metrics import DEPENDENCY_UP, OUTAGE_HOLDS

log = structlog.get_logger("pixq.worker")

DEPENDENCIES = ("nats", "redis", "storage")
PROBE_DOWN_SECONDS = 1.0
"""How often the gate asks during an outage: the longest a held job waits after recovery."""
PROBE_UP_SECONDS = 5.0
"""How often it asks while all is well: one storage request per worker every 5 s (S3 bills
requests). A failing attempt probes at once, so this only bounds how late an idle worker, or
one whose jobs do not touch the failed dependency, stops pulling."""
DEPENDENCY_OF: dict[ErrorCode, str] = {
    ErrorCode.STORAGE_UNAVAILABLE: "storage",
    ErrorCode.STATUS_UNAVAILABLE: "redis",
    ErrorCode.QUEUE_UNAVAILABLE: "nats",
}
"""Error codes that name one of pixq's own dependencies (not SOURCE_UNAVAILABLE: that is the job's)."""


class OutageGate:
    def __init__(self, check: Callable[[], Awaitable[dict[str, bool]]], hold_max: float) -> None:
        self.check = check
        self.hold_max = hold_max
        self.state: dict[str, bool] = {name: True for name in DEPENDENCIES}
        self._up = asyncio.Event()
        self._up.set()
        self._probing: asyncio.Task | None = None

    @property
    def all_up(self) -> bool:
        return self._up.is_set()

    async def probe(self) -> dict[str, bool]:
        """Ask every dependency now (one probe at a time; concurrent callers share it)."""
        if self._probing is None or self._probing.done():
            self._probing = asyncio.ensure_future(self.check())
        checks = await asyncio.shield(self._probing)
        self._apply(checks)
        return dict(checks)

    def _apply(self, checks: dict[str, bool]) -> None:
        for name, up in checks.items():
            if self.state.get(name) != up:
                (log.info if up else log.warning)("dependency_up" if up else "dependency_down", dependency=name)
            self.state[name] = up
            DEPENDENCY_UP.labels(name).set(1 if up else 0)
        if all(self.state.values()):
            self._up.set()
        else:
            self._up.clear()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.probe()
            try:
                await asyncio.wait_for(stop.wait(), PROBE_UP_SECONDS if self.all_up else PROBE_DOWN_SECONDS)
            except asyncio.TimeoutError:
                pass

    async def wait_up(self, timeout: float) -> bool:
        """Wait until every dependency answers; False when ``timeout`` passes first."""
        if timeout <= 0:
            return self.all_up
        try:
            await asyncio.wait_for(self._up.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    async def hold(self, error: PixqError, held_since: float, job_log) -> bool:
        """After an attempt failed with ``error``: True when it was an outage that is now over
        and the attempt should run again in place; False when the error is to count as an
        attempt (not a dependency's, not confirmed by the probe, or held past OUTAGE_HOLD_MAX)."""
        dependency = DEPENDENCY_OF.get(error.code)
        if dependency is None:
            return False
        if all((await self.probe()).values()):
            return False
        remaining = self.hold_max - (time.monotonic() - held_since)
        OUTAGE_HOLDS.labels(dependency).inc()
        job_log.warning("job_held_for_outage", dependency=dependency, error_code=error.code.value,
                        error=error.message, hold_left_seconds=round(max(remaining, 0.0), 1))
        if await self.wait_up(remaining):
            job_log.info("job_resumed_after_outage", dependency=dependency,
                         held_seconds=round(time.monotonic() - held_since, 1))
            return True
        job_log.warning("outage_hold_expired", dependency=dependency, hold_max_seconds=self.hold_max)
        return False
