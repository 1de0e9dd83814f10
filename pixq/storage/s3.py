"""S3 storage through the minio SDK (MinIO in the cluster, or any S3).

The SDK is synchronous, so calls run in threads. Its HTTP client (pixq.transport) gets
short timeouts and few retries: an outage must surface quickly as STORAGE_UNAVAILABLE so
the worker can hand the job back to JetStream for a delayed retry instead of blocking a
slot. It verifies HTTPS certificates against STORAGE_CA_FILE when set. Every write asks
for the server-side encryption STORAGE_SSE names.
"""

import asyncio
import io
from datetime import datetime, timedelta, timezone
from pathlib import Path

import urllib3
from minio import Minio
from minio.commonconfig import CopySource
from minio.datatypes import PostPolicy
from minio.error import S3Error

from pixq.errors import ErrorCode, PixqError
from pixq.settings import Settings
from pixq.storage.base import ObjectHead, PresignedPost
from pixq.transport import s3_http_client, s3_sse

_MISSING = {"NoSuchKey", "NoSuchObject", "NotFound"}


class S3Storage:
    def __init__(self, settings: Settings) -> None:
        self.bucket = settings.bucket_name
        self.client = Minio(settings.storage_endpoint, access_key=settings.minio_access_key,
                            secret_key=settings.minio_secret_key, secure=settings.storage_secure,
                            region=settings.storage_region, http_client=s3_http_client(settings))
        public = settings.storage_public_endpoint or settings.storage_endpoint
        # Presigning is local computation (the region is given), so the signer never connects.
        self.signer = Minio(public, access_key=settings.minio_access_key,
                            secret_key=settings.minio_secret_key, secure=settings.storage_secure,
                            region=settings.storage_region, http_client=s3_http_client(settings))
        self.sse = s3_sse(settings)
        self.public_base = f"{'https' if settings.storage_secure else 'http'}://{public}"

    async def _call(self, what: str, func, *args, **kwargs):
        return await asyncio.to_thread(self._call_blocking, what, func, *args, **kwargs)

    def _call_blocking(self, what: str, func, *args, **kwargs):
        """``func(*args, **kwargs)`` with minio's and urllib3's errors as PixqError."""
        try:
            return func(*args, **kwargs)
        except S3Error as exc:
            if exc.code in _MISSING:
                raise PixqError(ErrorCode.INPUT_NOT_FOUND, f"no object at {args[1] if len(args) > 1 else '?'}") from None
            raise PixqError(ErrorCode.STORAGE_UNAVAILABLE, f"storage {what} failed: {exc.code}") from None
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            raise PixqError(ErrorCode.STORAGE_UNAVAILABLE, f"storage {what} failed: {type(exc).__name__}") from None

    async def ensure_ready(self) -> None:
        if not await self._call("bucket check", self.client.bucket_exists, self.bucket):
            try:
                await self._call("bucket create", self.client.make_bucket, self.bucket)
            except PixqError:
                if not await self._call("bucket check", self.client.bucket_exists, self.bucket):
                    raise

    async def ping(self) -> bool:
        try:
            return bool(await self._call("ping", self.client.bucket_exists, self.bucket))
        except PixqError:
            return False

    async def put_file(self, key: str, path: Path, content_type: str) -> None:
        await self._call("upload", self.client.fput_object, self.bucket, key, str(path),
                         content_type=content_type, sse=self.sse)

    async def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        await asyncio.to_thread(self.write_bytes, key, data, content_type)

    def write_bytes(self, key: str, data: bytes, content_type: str) -> None:
        self._call_blocking("upload", self.client.put_object, self.bucket, key, io.BytesIO(data),
                            len(data), content_type=content_type, sse=self.sse)

    async def get_bytes(self, key: str, max_bytes: int) -> bytes:
        return await asyncio.to_thread(self.read_bytes, key, max_bytes)

    def read_bytes(self, key: str, max_bytes: int) -> bytes:
        def read() -> bytes:
            response = self.client.get_object(self.bucket, key)
            try:
                return response.read(max_bytes + 1)
            finally:
                response.close()
                response.release_conn()

        data = self._call_blocking("download", lambda *_: read(), self.bucket, key)
        if len(data) > max_bytes:
            raise PixqError(ErrorCode.PAYLOAD_TOO_LARGE, f"input is larger than MAX_INPUT_BYTES={max_bytes}")
        return data

    async def _stat(self, key: str):
        """The object's metadata (minio's Object), or None when there is no such object."""
        try:
            return await self._call("stat", self.client.stat_object, self.bucket, key)
        except PixqError as exc:
            if exc.code is ErrorCode.INPUT_NOT_FOUND:
                return None
            raise

    async def size(self, key: str) -> int | None:
        stat = await self._stat(key)
        return stat.size if stat is not None else None

    async def delete(self, key: str) -> None:
        try:
            await self._call("delete", self.client.remove_object, self.bucket, key)
        except PixqError:
            pass

    async def head(self, key: str) -> ObjectHead | None:
        stat = await self._stat(key)
        return ObjectHead(size=stat.size, etag=stat.etag) if stat is not None else None

    async def delete_prefix(self, prefix: str) -> int:
        def remove() -> int:
            removed = 0
            for item in self.client.list_objects(self.bucket, prefix=prefix, recursive=True):
                self.client.remove_object(self.bucket, item.object_name)
                removed += 1
            return removed

        return await self._call("delete", lambda *_: remove(), self.bucket, prefix)

    def presigned_url(self, key: str, ttl: float, response_headers: dict[str, str] | None = None) -> str | None:
        return self.signer.presigned_get_object(self.bucket, key, expires=timedelta(seconds=max(1, int(ttl))),
                                                response_headers=response_headers)

    async def read_head(self, key: str, max_bytes: int) -> bytes:
        def read() -> bytes:
            response = self.client.get_object(self.bucket, key, offset=0, length=max_bytes)
            try:
                return response.read(max_bytes)
            finally:
                response.close()
                response.release_conn()

        return await self._call("download", lambda *_: read(), self.bucket, key)

    async def copy(self, source: str, target: str) -> None:
        """Server-side CopyObject: the bytes never pass through pixq."""
        await self._call("copy", self.client.copy_object, self.bucket, target, CopySource(self.bucket, source),
                         sse=self.sse)

    def presigned_post(self, key: str, ttl: float, max_bytes: int, content_type: str | None) -> PresignedPost:
        """A POST Object policy for exactly ``key``: 1..``max_bytes`` bytes, a ``Content-Type``
        field that is ``content_type`` (when the client named one) or at least ``image/``, the
        server-side encryption STORAGE_SSE asks for, valid ``ttl`` seconds. Signed by
        ``self.signer`` (STORAGE_PUBLIC_ENDPOINT, the host the client posts to) locally."""
        policy = PostPolicy(self.bucket, datetime.now(timezone.utc).replace(tzinfo=None)
                            + timedelta(seconds=max(1, int(ttl))))
        fields = {"key": key}
        policy.add_equals_condition("key", key)
        if content_type:
            policy.add_equals_condition("Content-Type", content_type)
            fields["Content-Type"] = content_type
        else:
            policy.add_starts_with_condition("Content-Type", "image/")
        policy.add_content_length_range_condition(1, max_bytes)
        for name, value in (self.sse.headers() if self.sse else {}).items():
            if name.lower().startswith("x-amz-server-side-encryption"):
                policy.add_equals_condition(name.lower(), value)
                fields[name.lower()] = value
        form = self.signer.presigned_post_policy(policy)
        return PresignedPost(url=f"{self.public_base}/{self.bucket}", fields={**fields, **form})
