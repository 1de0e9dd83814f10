"""What the client raises: one exception per way a call can fail, each saying enough to act on.

``ApiError`` is the server's answer (its stable ``code`` from docs/errors.md, the HTTP status,
the message and the request id to quote in a bug report); ``ConnectionFailed`` means no answer
came at all, so the caller cannot know whether a non-idempotent request took effect.
"""

from pixq.errors import ErrorCode


class PixqClientError(Exception):
    """Every error the client raises (catch this one to catch them all)."""


class ApiError(PixqClientError):
    """The API answered with an error envelope (or a non-2xx status without one)."""

    def __init__(self, status: int, code: ErrorCode | str, message: str, request_id: str | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        """An ErrorCode; a plain string only for a code this client version does not know."""
        self.message = message
        self.request_id = request_id
        self.retry_after = retry_after
        """Seconds from ``Retry-After`` (429, 503), when the server sent it."""


class ConnectionFailed(PixqClientError):
    """No HTTP answer: refused, reset, timed out or a DNS failure (after any retries)."""


class EventsUnsupported(ApiError):
    """The server refused an event stream with 4xx/501, or answered something that is not an
    event stream (an older server, or an unknown job): a caller may fall back to polling."""


class StreamLost(PixqClientError):
    """An event stream dropped, timed out or ended more often in a row than the policy allows
    (each time without a new event in between)."""


class WebhookVerificationFailed(PixqClientError):
    """A webhook's signature, timestamp or headers do not verify against any of the secrets."""


def error_code(raw: object) -> ErrorCode | str:
    """The ErrorCode for ``raw``, or ``raw`` itself when this client does not know it."""
    try:
        return ErrorCode(raw)
    except ValueError:
        return str(raw)
