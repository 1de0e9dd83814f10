"""What the API and workers need from object storage.

Every method is async and raises PixqError: STORAGE_UNAVAILABLE for outages (transient,
retried by workers, 503 at the API) and INPUT_NOT_FOUND for a missing object. The two blocking
forms, ``read_bytes`` and ``write_bytes``, are for code already on a worker thread: a worker's
attempt reads its input, runs libvips and stores the outputs in one trip to its thread pool
(worker.execute), not three.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class PresignedPost:
    """A browser-style form upload straight to storage: POST ``url`` as multipart/form-data
    with every one of ``fields``, then the ``file`` part (S3's POST Object shape)."""

    url: str
    fields: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ObjectHead:
    """What one stat (S3: one HEAD) of an object says."""

    size: int
    etag: str
    """A version tag that changes whenever the object's bytes do (S3's ETag; locally size and
    mtime_ns): part of /img's cache keys (pixq.imgcache)."""


class Storage(Protocol):
    async def ensure_ready(self) -> None:
        """Create the bucket or directory if missing."""

    async def ping(self) -> bool:
        """True while the backend answers (readiness)."""

    async def put_file(self, key: str, path: Path, content_type: str) -> None:
        """Store a local file (streamed, never read whole into memory)."""

    async def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        """Store bytes; overwriting is fine (outputs have deterministic keys)."""

    async def get_bytes(self, key: str, max_bytes: int) -> bytes:
        """Read an object; PAYLOAD_TOO_LARGE when it is larger than max_bytes."""

    def read_bytes(self, key: str, max_bytes: int) -> bytes:
        """get_bytes, blocking: only on a worker thread, never on the event loop."""

    def write_bytes(self, key: str, data: bytes, content_type: str) -> None:
        """put_bytes, blocking: only on a worker thread, never on the event loop."""

    async def size(self, key: str) -> int | None:
        """Object size in bytes, or None when it does not exist."""

    async def delete(self, key: str) -> None:
        """Remove an object; missing is fine."""

    async def head(self, key: str) -> ObjectHead | None:
        """The object's size and version tag in one stat, or None when it does not exist: /img
        needs both for a miss (the cache key, then the submit's size check)."""

    async def delete_prefix(self, prefix: str) -> int:
        """Remove every object whose key starts with ``prefix`` (a folder, ending in "/"); the
        number removed. /img's purge by source (pixq.imgcache)."""

    def presigned_url(self, key: str, ttl: float, response_headers: dict[str, str] | None = None) -> str | None:
        """A direct download URL, or None when the API must serve the object itself.
        ``response_headers``: S3's ``response-*`` overrides (Content-Type, Cache-Control) that
        the store answers the download with."""

    async def read_head(self, key: str, max_bytes: int) -> bytes:
        """The object's first ``max_bytes`` bytes (all of it when shorter); INPUT_NOT_FOUND if missing."""

    async def copy(self, source: str, target: str) -> None:
        """Copy an object inside the store (server-side on S3, a hard link locally);
        INPUT_NOT_FOUND when ``source`` is missing."""

    def presigned_post(self, key: str, ttl: float, max_bytes: int, content_type: str | None) -> PresignedPost | None:
        """A direct-upload form for exactly ``key``, or None when the API must receive it itself."""
