"""When a failed call is tried again, and after how long (pure logic, no I/O).

Which calls are safe to repeat is the caller's (pixq.client.transport) knowledge; this
module only says whether a given failure is worth another attempt and how long to wait:

- **429** (``RATE_LIMITED``, ``QUOTA_EXCEEDED``): the server refused before doing anything, so
  every call may be retried, idempotent or not.
- **502, 503, 504** and **connection errors**: the request may have taken effect, so only
  idempotent calls (GET, DELETE, and submits carrying an Idempotency-Key) are retried.
- The wait is "full jitter" exponential backoff (uniform in ``[0, min(max_delay, base·2ⁿ)]``,
  so many clients refused together do not come back together), but never shorter than the
  server's ``Retry-After``.
- Bounded twice: at most ``attempts`` tries, and no retry whose wait would end after
  ``max_elapsed`` seconds since the first try (the last error is raised instead).
"""

import random
from dataclasses import dataclass

RETRY_ANY_CALL = frozenset({429})
RETRY_IDEMPOTENT = frozenset({502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    """Tries in all, the first included (1: never retry)."""
    max_elapsed: float = 60.0
    """No retry starts later than this many seconds after the first try."""
    base_delay: float = 0.25
    max_delay: float = 10.0
    """Cap of the exponential part (a longer Retry-After is still honoured, within max_elapsed)."""

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.max_elapsed < 0 or self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("RetryPolicy: attempts >= 1 and non-negative times")

    def should_retry(self, status: int | None, idempotent: bool) -> bool:
        """``status`` None is a connection error (no answer)."""
        if status is None:
            return idempotent
        return status in RETRY_ANY_CALL or (idempotent and status in RETRY_IDEMPOTENT)

    def delay(self, retry: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        """Seconds before retry number ``retry`` (1 for the first retry)."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** (retry - 1))
        jittered = (rng or random).uniform(0, ceiling)
        return max(jittered, retry_after or 0.0)


NO_RETRY = RetryPolicy(attempts=1)
