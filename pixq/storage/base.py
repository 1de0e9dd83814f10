"""What the API and workers need from object storage.

Every method is async and raises PixqError: STORAGE_UNAVAILABLE for outages (transient,
retried by workers, 503 at the API) and INPUT_NOT_FOUND for a missing object.
"""

from pathlib import Path
from typing import Protocol


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

    async def size(self, key: str) -> int | None:
        """Object size in bytes, or None when it does not exist."""

    async def delete(self, key: str) -> None:
        """Remove an object; missing is fine."""

    def presigned_url(self, key: str, ttl: float) -> str | None:
        """A direct download URL, or None when the API must serve the object itself."""
