"""The stable error codes of pixq's public surface (documented in docs/errors.md).

Each code carries its HTTP status (for the API) and whether a worker failure with it is
permanent (fail now) or transient (retry with backoff).
"""

from enum import StrEnum


class ErrorCode(StrEnum):
    # Request problems (API, at submit)
    INVALID_REQUEST = "INVALID_REQUEST"
    INVALID_PARAMETERS = "INVALID_PARAMETERS"
    UNAUTHORIZED = "UNAUTHORIZED"
    FORBIDDEN = "FORBIDDEN"
    NOT_FOUND = "NOT_FOUND"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
    INPUT_NOT_FOUND = "INPUT_NOT_FOUND"
    SOURCE_REFUSED = "SOURCE_REFUSED"
    SOURCE_REJECTED = "SOURCE_REJECTED"
    SIGNATURE_INVALID = "SIGNATURE_INVALID"
    URL_EXPIRED = "URL_EXPIRED"
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
    RATE_LIMITED = "RATE_LIMITED"
    QUOTA_EXCEEDED = "QUOTA_EXCEEDED"
    # Image problems (at submit when detectable, otherwise permanent job failures)
    INVALID_IMAGE = "INVALID_IMAGE"
    UNSUPPORTED_FORMAT = "UNSUPPORTED_FORMAT"
    IMAGE_TOO_LARGE = "IMAGE_TOO_LARGE"
    OUTPUT_TOO_LARGE = "OUTPUT_TOO_LARGE"
    TOO_MANY_FRAMES = "TOO_MANY_FRAMES"
    CROP_OUT_OF_BOUNDS = "CROP_OUT_OF_BOUNDS"
    PROCESSING_FAILED = "PROCESSING_FAILED"
    # Transient problems (retried by workers)
    STORAGE_UNAVAILABLE = "STORAGE_UNAVAILABLE"
    STATUS_UNAVAILABLE = "STATUS_UNAVAILABLE"
    QUEUE_UNAVAILABLE = "QUEUE_UNAVAILABLE"
    TIMEOUT = "TIMEOUT"
    SOURCE_UNAVAILABLE = "SOURCE_UNAVAILABLE"
    IMAGE_PENDING = "IMAGE_PENDING"
    """/img: the job making the image outlasted IMG_WAIT; it goes on, retry (Retry-After)."""
    # Terminal outcome of the retry policy
    DEAD_LETTERED = "DEAD_LETTERED"
    INTERNAL_ERROR = "INTERNAL_ERROR"


HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.INVALID_REQUEST: 400,
    ErrorCode.INVALID_PARAMETERS: 422,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorCode.INPUT_NOT_FOUND: 422,
    ErrorCode.SOURCE_REFUSED: 422,
    ErrorCode.SOURCE_REJECTED: 422,
    ErrorCode.SIGNATURE_INVALID: 403,
    ErrorCode.URL_EXPIRED: 410,
    ErrorCode.SERVICE_UNAVAILABLE: 503,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.QUOTA_EXCEEDED: 429,
    ErrorCode.INVALID_IMAGE: 422,
    ErrorCode.UNSUPPORTED_FORMAT: 415,
    ErrorCode.IMAGE_TOO_LARGE: 413,
    ErrorCode.OUTPUT_TOO_LARGE: 422,
    ErrorCode.TOO_MANY_FRAMES: 413,
    ErrorCode.CROP_OUT_OF_BOUNDS: 422,
    ErrorCode.PROCESSING_FAILED: 422,
    ErrorCode.STORAGE_UNAVAILABLE: 503,
    ErrorCode.STATUS_UNAVAILABLE: 503,
    ErrorCode.QUEUE_UNAVAILABLE: 503,
    ErrorCode.TIMEOUT: 503,
    ErrorCode.SOURCE_UNAVAILABLE: 503,
    ErrorCode.IMAGE_PENDING: 503,
    ErrorCode.DEAD_LETTERED: 500,
    ErrorCode.INTERNAL_ERROR: 500,
}

TRANSIENT_CODES = frozenset(
    {
        ErrorCode.STORAGE_UNAVAILABLE,
        ErrorCode.STATUS_UNAVAILABLE,
        ErrorCode.QUEUE_UNAVAILABLE,
        ErrorCode.TIMEOUT,
        ErrorCode.SOURCE_UNAVAILABLE,
        ErrorCode.INTERNAL_ERROR,
    }
)
"""Worker failures worth retrying; every other code fails the job at once."""


class PixqError(Exception):
    """An error with a stable public code; raised anywhere, rendered by API and worker alike."""

    def __init__(self, code: ErrorCode, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = None if retry_after is None else max(1, int(retry_after))
        """Seconds after which the same request may succeed: the answer's ``Retry-After``
        (RATE_LIMITED, QUOTA_EXCEEDED); None when the code says nothing of when."""

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.code]

    @property
    def transient(self) -> bool:
        return self.code in TRANSIENT_CODES

    def to_body(self) -> dict:
        """The one error envelope of the HTTP API."""
        return {"error": {"code": self.code.value, "message": self.message}}


def status_unavailable(exc: BaseException) -> PixqError:
    """STATUS_UNAVAILABLE for a Redis failure (a RedisError or OSError from the status store's
    client): one wording for every module that talks to Redis."""
    return PixqError(ErrorCode.STATUS_UNAVAILABLE, f"status store unavailable: {exc}")


def describe(exc: BaseException) -> str:
    """An exception's message for a log line or an error, or its type where it has none
    (many NATS and asyncio timeouts carry no text)."""
    return str(exc) or type(exc).__name__
