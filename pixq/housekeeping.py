"""One loop shape for the API's background chores (sweeping unclaimed uploads, inputs of
submits that never finished, jobs recorded but maybe never published): run the chore at once,
then every ``interval`` seconds until ``stop``. A failure the chore expects (an outage) is
logged and tried again next time: housekeeping never stops the process."""

import asyncio
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger("pixq.housekeeping")


async def every(interval: float, stop: asyncio.Event, chore: Callable[[], Awaitable[object]], name: str,
                expected: tuple[type[BaseException], ...]) -> None:
    """Run ``chore()`` until ``stop`` is set; ``expected`` failures (outages) are logged as
    ``<name>_failed``, anything else as ``<name>_crashed`` with its traceback."""
    while not stop.is_set():
        try:
            await chore()
        except expected as exc:
            log.warning(f"{name}_failed", error=str(exc))
        except Exception:  # noqa: BLE001 - a bug: logged with its traceback, the chore goes on
            log.exception(f"{name}_crashed")
        try:
            await asyncio.wait_for(stop.wait(), interval)
        except asyncio.TimeoutError:
            pass
